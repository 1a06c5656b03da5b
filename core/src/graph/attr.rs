//! Node attributes: named, typed values that configure an op (`transpose_a`, `dtype`,
//! `value`, `axis`, ...).

use std::fmt;

use super::attr_def::AttrType;
use crate::tensor::{DType, Tensor};

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A dtype.
    DType(DType),
    /// A list of integers (shapes use this, with -1 for an unknown dimension).
    Ints(Vec<i64>),
    /// A list of strings.
    Strs(Vec<String>),
    /// A tensor (the value of a `Const`).
    Tensor(Tensor),
}

impl AttrValue {
    fn kind(&self) -> &'static str {
        AttrType::of(self).describe()
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Int(v) => write!(f, "{v}"),
            AttrValue::Float(v) => write!(f, "{v:?}"),
            AttrValue::Bool(v) => write!(f, "{v}"),
            AttrValue::Str(v) => write!(f, "{v:?}"),
            AttrValue::DType(v) => write!(f, "{v}"),
            AttrValue::Ints(v) => write!(f, "{v:?}"),
            AttrValue::Strs(v) => write!(f, "{v:?}"),
            AttrValue::Tensor(t) => write!(f, "{t:?}"),
        }
    }
}

macro_rules! attr_from {
    ($t:ty, $v:ident) => {
        impl From<$t> for AttrValue {
            fn from(v: $t) -> AttrValue {
                AttrValue::$v(v.into())
            }
        }
    };
}
attr_from!(i64, Int);
attr_from!(f64, Float);
attr_from!(bool, Bool);
attr_from!(String, Str);
attr_from!(&str, Str);
attr_from!(DType, DType);
attr_from!(Vec<i64>, Ints);
attr_from!(Vec<String>, Strs);
attr_from!(Tensor, Tensor);

/// A missing or mistyped attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttrError {
    /// The op needs an attribute that is not set.
    #[error("missing attribute {0:?}")]
    Missing(String),
    /// The attribute holds another kind of value.
    #[error("attribute {name:?} should be {expected}, got {got}")]
    WrongKind {
        /// Attribute name.
        name: String,
        /// Kind expected.
        expected: &'static str,
        /// Kind found.
        got: &'static str,
    },
    /// The op declares its attributes (see [`AttrDef`](super::AttrDef)) and this is not
    /// one of them.
    #[error("unknown attribute {name:?} (the op takes {})", list_names(.declared))]
    Unknown {
        /// Attribute name.
        name: String,
        /// The attributes the op declares.
        declared: Vec<String>,
    },
}

fn list_names(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    quoted.join(", ")
}

/// The attributes of one node, sorted by name.
///
/// ```
/// use magpie_core::graph::{AttrError, Attrs};
/// use magpie_core::tensor::DType;
///
/// let mut attrs = Attrs::new();
/// attrs.set("transpose_a", true);
/// attrs.set("dtype", DType::F32);
/// attrs.set("axis", 1i64);
/// assert_eq!(attrs.bool("transpose_a"), Ok(true));
/// assert_eq!(attrs.bool_or("transpose_b", false), Ok(false));
/// assert_eq!(attrs.int("missing"), Err(AttrError::Missing("missing".into())));
/// assert!(matches!(attrs.float("axis"), Err(AttrError::WrongKind { .. })));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attrs(
    /// Sorted by name, each name once; `None` rather than an empty list. A graph holds one
    /// per node (a million for a graph that size), and most nodes of Magpie's own graphs
    /// have none: empty, this is one word and allocates nothing.
    Option<Box<AttrList>>,
);

/// The attributes of a node that has any, sorted by name: boxed in [`Attrs`], so that a
/// node without attributes holds one word.
#[derive(Clone, Debug, Default, PartialEq)]
struct AttrList(Vec<(String, AttrValue)>);

macro_rules! getter {
    ($fn:ident, $t:ty, $v:ident, $kind:expr) => {
        /// The attribute as this type.
        ///
        /// # Errors
        /// [`AttrError::Missing`] when it is not set; [`AttrError::WrongKind`] when it
        /// holds another kind of value. Both name the attribute.
        pub fn $fn(&self, name: &str) -> Result<$t, AttrError> {
            match self.get(name) {
                Some(AttrValue::$v(v)) => Ok(v.clone()),
                Some(other) => Err(AttrError::WrongKind {
                    name: name.into(),
                    expected: $kind,
                    got: other.kind(),
                }),
                None => Err(AttrError::Missing(name.into())),
            }
        }
    };
}

impl Attrs {
    /// No attributes.
    pub fn new() -> Attrs {
        Attrs::default()
    }

    /// Sets an attribute, replacing any earlier value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<AttrValue>) {
        let (name, value) = (name.into(), value.into());
        let list = &mut self.0.get_or_insert_with(Box::default).0;
        match list.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(i) => list[i].1 = value,
            Err(i) => list.insert(i, (name, value)),
        }
    }

    /// The raw value, if set.
    pub fn get(&self, name: &str) -> Option<&AttrValue> {
        let list = &self.0.as_deref()?.0;
        let i = list.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok()?;
        Some(&list[i].1)
    }

    /// Whether the attribute is set.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All attributes, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AttrValue)> {
        self.0
            .as_deref()
            .into_iter()
            .flat_map(|list| &list.0)
            .map(|(k, v)| (k.as_str(), v))
    }

    getter!(int, i64, Int, "an int");
    getter!(float, f64, Float, "a float");
    getter!(bool, bool, Bool, "a bool");
    getter!(string, String, Str, "a string");
    getter!(dtype, DType, DType, "a dtype");
    getter!(ints, Vec<i64>, Ints, "a list of ints");
    getter!(strings, Vec<String>, Strs, "a list of strings");
    getter!(tensor, Tensor, Tensor, "a tensor");

    /// A boolean attribute, or `default` when it is not set.
    ///
    /// # Errors
    /// [`AttrError::WrongKind`] when it holds another kind of value.
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, AttrError> {
        if self.contains(name) {
            self.bool(name)
        } else {
            Ok(default)
        }
    }

    /// An optional integer attribute.
    ///
    /// # Errors
    /// [`AttrError::WrongKind`] when it holds another kind of value.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, AttrError> {
        if self.contains(name) {
            self.int(name).map(Some)
        } else {
            Ok(None)
        }
    }
}
