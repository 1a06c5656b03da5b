//! # magpie-fuzz
//!
//! Structure-aware inputs for Magpie's fuzz targets (`fuzz_targets/`), built with
//! [`arbitrary`]: a random byte string becomes a graph of real op names with inputs,
//! attributes and devices that are mostly plausible and sometimes hostile (dims drawn
//! from {0, 1, 2, 2^31, 2^32, 2^62, i64::MAX, ...}, dangling and cyclic inputs, unknown
//! ops), so the fuzzer spends its time past the parsers, in planning and kernels.
//!
//! The targets promise one thing of the code they drive: whatever the input, an error or
//! an answer, never a panic, an abort, a hang or a signal. Each also checks what must
//! hold of a success (a graph that imports re-imports from its own `GraphDef`; a tensor
//! that decodes encodes to the same bytes; a cluster spec that parses round-trips).

pub mod graph_gen;
pub mod harness;
