//! Walkthroughs, from building a first graph to writing a backend and measuring a
//! scheduling policy. Each is a page of `docs/` in the repository; every code block in
//! them is compiled and run as a doc test of this crate, so they stay true.

#[doc = include_str!("../docs/build-and-run-a-graph.md")]
pub mod build_and_run_a_graph {}

#[doc = include_str!("../docs/write-a-backend.md")]
pub mod write_a_backend {}

#[doc = include_str!("../docs/benchmark-a-scheduling-policy.md")]
pub mod benchmark_a_scheduling_policy {}
