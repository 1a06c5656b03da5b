//! # magpie-core
//!
//! The heart of Magpie, independent of any wire, GPU or topology library:
//!
//! - [`tensor`]: dtypes, shapes and immutable shared tensors;
//! - [`graph`]: the scoped graph builder, op definitions, device specs and validation;
//! - [`device`], [`kernel`], [`transport`]: the traits backends and transports implement,
//!   and [`registry`], where kernels are registered per (op, device type);
//! - [`scheduler`]: a work-stealing scheduler that runs DAGs of tasks (closures or
//!   futures) and knows nothing of tensors;
//! - [`exec`]: the dataflow executor that maps graph nodes onto scheduler tasks;
//! - [`session`]: local sessions, `run(feeds, fetches, targets)`;
//! - [`shape_fn`]: the shape rules of the standard ops, shared by every backend;
//! - [`error`]: [`Code`], the error kinds every session-level error maps onto, the same
//!   on local, in-process and remote sessions.
//!
//! With the `testkit` feature (on in the published docs), `testkit` holds the checks any
//! [`Device`]/[`Kernel`] implementation runs to prove it behaves: the conformance suite,
//! one kernel in a line, and a custom op's kernel against a reference closure.
//!
//! # What this crate runs by itself
//!
//! Graphs, sessions, the scheduler and the distributed runtime are all here, but kernels
//! for the standard ops (`Add`, `MatMul`, ...) are not: they come from a backend —
//! `magpie-cpu`, `magpie-vulkan`, or one you write against this crate alone. The `magpie`
//! crate bundles core with the CPU and Vulkan backends. A graph of ops no registered
//! kernel implements fails when a session plans it, naming the node and device.
//!
//! ```
//! use magpie_core::graph::Graph;
//! use magpie_core::tensor::{DType, Shape};
//!
//! // Building and checking a graph needs no backend.
//! let g = Graph::new();
//! let x = g.placeholder(DType::F32, Some(&Shape::new(&[4, 3])?))?;
//! let w = g.placeholder(DType::F32, Some(&Shape::new(&[3, 2])?))?;
//! let y = g.matmul(x, w)?;
//! assert_eq!(g.shape_of(y)?.to_string(), "[4, 2]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The [`session::Session`] docs run a graph with a kernel defined on the spot; the
//! `magpie` crate's guide (`docs/` in the repository) walks through writing a backend.

pub mod cluster;
pub mod device;
pub mod distributed;
pub mod error;
pub mod exec;
pub mod graph;
pub mod kernel;
pub mod limits;
pub mod registry;
pub mod resource;
pub use magpie_scheduler as scheduler;
pub mod session;
pub mod shape_fn;
pub mod step_id;
pub mod tensor;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transport;

pub use device::{Device, DeviceError, MemorySpace};
pub use error::Code;
pub use graph::{DeviceName, DeviceSpec, Graph, GraphError, NodeId, Output};
pub use kernel::{AsyncKernel, BoxedKernel, Kernel, KernelContext, KernelError};
pub use step_id::StepId;
pub use tensor::{DType, Shape, Tensor, TensorError};
