//! Conformance testkit.
pub mod reference;
