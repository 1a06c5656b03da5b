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
//! With the `testkit` feature, `testkit` holds the conformance checks that any
//! `Device`/`Kernel` implementation runs to prove it behaves.

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
