//! The Vulkan backend on whatever Vulkan device this machine has (lavapipe in CI): every
//! kernel against the CPU backend, mixed CPU/GPU graphs, copy counts, errors, and core's
//! conformance testkit. One test binary, so debug builds link once.
//!
//! Every test skips with a printed message when the machine has no Vulkan device at
//! all; where one exists (lavapipe counts), they all run.

mod common;
mod conformance;
mod discovery;
mod graphs;
mod kernels;
mod naming;
