//! [`OpName`]: the op a node runs, by name, shared between the nodes of that op.
//!
//! A graph holds one per node (a million for a graph that size) and has a few dozen
//! distinct ops, so a node added to a graph shares the registered op's name (one word,
//! no allocation of its own) instead of holding a copy. Only names of registered ops are
//! shared that way: a name a client sends for an op that does not exist is never kept
//! beyond the request, so clients cannot grow a table of names.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The name of the op a node runs (`"MatMul"`). Reads as a `str` (it derefs to one and
/// compares with `&str` and `String`); clones share the name.
///
/// ```
/// use magpie_core::graph::OpName;
///
/// let op = OpName::from("MatMul");
/// assert_eq!(op, "MatMul");
/// assert!(op.starts_with("Mat"));
/// assert_eq!(op.to_string(), "MatMul");
/// ```
// A thin pointer (`Arc<String>`, not `Arc<str>`): a node is one word smaller, and the
// name is read only where a node is checked, planned or reported, never per step.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpName(Arc<String>);

impl OpName {
    /// A name of its own (not shared with any other node's until the node joins a graph).
    pub fn new(name: impl Into<String>) -> OpName {
        OpName(Arc::new(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for OpName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for OpName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for OpName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for OpName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for OpName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for OpName {
    fn from(name: &str) -> OpName {
        OpName::new(name)
    }
}

impl From<String> for OpName {
    fn from(name: String) -> OpName {
        OpName::new(name)
    }
}

impl From<&String> for OpName {
    fn from(name: &String) -> OpName {
        OpName::new(name.as_str())
    }
}

impl From<OpName> for String {
    fn from(name: OpName) -> String {
        name.as_str().to_string()
    }
}

impl PartialEq<str> for OpName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for OpName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for OpName {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<OpName> for str {
    fn eq(&self, other: &OpName) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<OpName> for &str {
    fn eq(&self, other: &OpName) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<OpName> for String {
    fn eq(&self, other: &OpName) -> bool {
        self.as_str() == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_compares_as_its_name() {
        let op = OpName::from("Add");
        assert_eq!(op, "Add");
        assert_eq!("Add", op);
        assert_eq!(op, String::from("Add"));
        assert_ne!(op, "Sub");
        assert_eq!(format!("{op} {op:?}"), "Add \"Add\"");
        assert_eq!(String::from(op.clone()), "Add");
        assert_eq!(op.len(), 3);
    }

    #[test]
    fn clones_share_the_name() {
        let op = OpName::from("MatMul");
        let other = op.clone();
        assert!(std::ptr::eq(op.as_str(), other.as_str()));
        assert_eq!(std::mem::size_of::<OpName>(), std::mem::size_of::<usize>());
    }
}
