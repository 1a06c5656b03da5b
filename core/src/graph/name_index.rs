//! [`NameIndex`]: a graph's nodes by name, without a second copy of the names.
//!
//! A graph keeps its nodes in a `Vec` and must find one by name (imports resolve every
//! input that way). A `HashMap<String, _>` would hold every name twice; this table holds
//! only each node's position (4 bytes) and compares a candidate against the name stored in
//! the node itself, which the caller passes in as a lookup function. Names are hashed with
//! the standard library's randomly keyed SipHash, so a client choosing names cannot make
//! lookups collide on purpose.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;

/// Node positions, found by the name of the node at that position.
#[derive(Default)]
pub(crate) struct NameIndex {
    table: HashTable<u32>,
    hasher: RandomState,
}

impl NameIndex {
    /// The position of the node named `name`; `name_at(i)` is the name of node `i`.
    pub(crate) fn get<'a>(&self, name: &str, name_at: impl Fn(u32) -> &'a str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.table.find(hash, |&i| name_at(i) == name).copied()
    }

    /// Records that node `index` is named `name`, which no other node is (the caller
    /// checked with [`NameIndex::get`]). `name_at` names the nodes already recorded, for
    /// rehashing when the table grows.
    pub(crate) fn insert<'a>(&mut self, name: &str, index: u32, name_at: impl Fn(u32) -> &'a str) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(name);
        self.table
            .insert_unique(hash, index, |&i| hasher.hash_one(name_at(i)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_name_and_no_other() {
        let names: Vec<String> = (0..10_000).map(|i| format!("node_{i}")).collect();
        let mut index = NameIndex::default();
        for (i, n) in names.iter().enumerate() {
            let at = |k: u32| names[k as usize].as_str();
            assert_eq!(index.get(n, at), None);
            index.insert(n, i as u32, at);
        }
        let at = |k: u32| names[k as usize].as_str();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(index.get(n, at), Some(i as u32));
        }
        assert_eq!(index.get("node_10000", at), None);
        assert_eq!(index.get("", at), None);
    }
}
