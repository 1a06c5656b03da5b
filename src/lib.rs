//! Magpie facade.
pub use magpie_core::*;
