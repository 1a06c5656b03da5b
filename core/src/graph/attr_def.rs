//! Declared attributes of an op: the name and type of each attribute an op takes and,
//! for an optional one, its default ([`AttrDef`], [`AttrType`]).
//!
//! An op that declares its attributes (with [`OpDef::attr`](super::OpDef::attr) or
//! [`OpDef::attr_default`](super::OpDef::attr_default)) has every node checked when it is
//! added to a graph, by the builder or by import: a required attribute must be set, each
//! attribute must have its declared type, defaults fill in what is not set (so kernels see
//! them), and an attribute the op does not declare is refused — a misspelt name fails at
//! build, naming the node and the attribute. Names starting with `_` are the runtime's own
//! (resource pools, output sizes) and are never checked. An op that declares nothing is
//! not checked.

use std::fmt;

use super::attr::{AttrError, AttrValue, Attrs};

/// The type of an attribute's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttrType {
    /// An integer ([`AttrValue::Int`]).
    Int,
    /// A float ([`AttrValue::Float`]).
    Float,
    /// A boolean ([`AttrValue::Bool`]).
    Bool,
    /// A string ([`AttrValue::Str`]).
    Str,
    /// A dtype ([`AttrValue::DType`]).
    DType,
    /// A list of integers ([`AttrValue::Ints`]).
    Ints,
    /// A list of strings ([`AttrValue::Strs`]).
    Strs,
    /// A tensor ([`AttrValue::Tensor`]).
    Tensor,
}

impl AttrType {
    /// The type of `value`.
    pub fn of(value: &AttrValue) -> AttrType {
        match value {
            AttrValue::Int(_) => AttrType::Int,
            AttrValue::Float(_) => AttrType::Float,
            AttrValue::Bool(_) => AttrType::Bool,
            AttrValue::Str(_) => AttrType::Str,
            AttrValue::DType(_) => AttrType::DType,
            AttrValue::Ints(_) => AttrType::Ints,
            AttrValue::Strs(_) => AttrType::Strs,
            AttrValue::Tensor(_) => AttrType::Tensor,
        }
    }

    /// The type in words, as errors say it (`"a float"`).
    pub fn describe(self) -> &'static str {
        match self {
            AttrType::Int => "an int",
            AttrType::Float => "a float",
            AttrType::Bool => "a bool",
            AttrType::Str => "a string",
            AttrType::DType => "a dtype",
            AttrType::Ints => "a list of ints",
            AttrType::Strs => "a list of strings",
            AttrType::Tensor => "a tensor",
        }
    }
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// One attribute an op declares: its name, its type and, when it is optional, the value a
/// node gets without one.
#[derive(Clone, Debug, PartialEq)]
pub struct AttrDef {
    /// The attribute's name.
    pub name: String,
    /// The type its value must have.
    pub ty: AttrType,
    /// The value a node that does not set it gets; `None` makes it required.
    pub default: Option<AttrValue>,
}

impl AttrDef {
    /// A required attribute of type `ty`.
    pub fn required(name: impl Into<String>, ty: AttrType) -> AttrDef {
        AttrDef {
            name: name.into(),
            ty,
            default: None,
        }
    }

    /// An optional attribute whose type is its default's.
    pub fn with_default(name: impl Into<String>, default: impl Into<AttrValue>) -> AttrDef {
        let default = default.into();
        AttrDef {
            name: name.into(),
            ty: AttrType::of(&default),
            default: Some(default),
        }
    }
}

/// Whether `name` is one of the runtime's own attributes, which declarations never cover.
fn is_internal(name: &str) -> bool {
    name.starts_with('_')
}

/// Checks `attrs` against the declarations `defs` and fills in defaults. Nothing is
/// checked when `defs` is empty (an op that declares no attributes).
///
/// # Errors
/// [`AttrError::Missing`] for a required attribute that is not set,
/// [`AttrError::WrongKind`] for a value of another type, [`AttrError::Unknown`] for an
/// attribute the op does not declare; each names the attribute.
pub(crate) fn check_attrs(defs: &[AttrDef], attrs: &mut Attrs) -> Result<(), AttrError> {
    if defs.is_empty() {
        return Ok(());
    }
    if let Some((name, _)) = attrs
        .iter()
        .find(|(name, _)| !is_internal(name) && !defs.iter().any(|d| d.name == *name))
    {
        return Err(AttrError::Unknown {
            name: name.to_string(),
            declared: defs.iter().map(|d| d.name.clone()).collect(),
        });
    }
    for def in defs {
        match attrs.get(&def.name) {
            Some(value) if AttrType::of(value) == def.ty => {}
            Some(value) => {
                return Err(AttrError::WrongKind {
                    name: def.name.clone(),
                    expected: def.ty.describe(),
                    got: AttrType::of(value).describe(),
                })
            }
            None => match &def.default {
                Some(default) => attrs.set(def.name.clone(), default.clone()),
                None => return Err(AttrError::Missing(def.name.clone())),
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> Vec<AttrDef> {
        vec![
            AttrDef::required("lo", AttrType::Float),
            AttrDef::with_default("alpha", 0.5f64),
        ]
    }

    #[test]
    fn defaults_fill_in_and_set_values_stay() {
        let mut attrs = Attrs::new();
        attrs.set("lo", 1.0f64);
        check_attrs(&defs(), &mut attrs).unwrap();
        assert_eq!(attrs.float("alpha"), Ok(0.5));
        attrs.set("alpha", 2.0f64);
        check_attrs(&defs(), &mut attrs).unwrap();
        assert_eq!(attrs.float("alpha"), Ok(2.0));
    }

    #[test]
    fn missing_mistyped_and_unknown_attributes_are_named() {
        let mut attrs = Attrs::new();
        assert_eq!(
            check_attrs(&defs(), &mut attrs),
            Err(AttrError::Missing("lo".into()))
        );
        attrs.set("lo", 1i64);
        assert_eq!(
            check_attrs(&defs(), &mut attrs),
            Err(AttrError::WrongKind {
                name: "lo".into(),
                expected: "a float",
                got: "an int"
            })
        );
        attrs.set("lo", 1.0f64);
        attrs.set("alpah", 1.0f64);
        let err = check_attrs(&defs(), &mut attrs).unwrap_err();
        assert!(matches!(&err, AttrError::Unknown { name, .. } if name == "alpah"));
        assert!(err.to_string().contains("\"alpha\""), "{err}");
    }

    #[test]
    fn internal_attributes_and_undeclared_ops_are_not_checked() {
        let mut attrs = Attrs::new();
        attrs.set("lo", 1.0f64);
        attrs.set("_pools", vec!["net".to_string()]);
        check_attrs(&defs(), &mut attrs).unwrap();
        let mut anything = Attrs::new();
        anything.set("whatever", 1i64);
        check_attrs(&[], &mut anything).unwrap();
    }
}
