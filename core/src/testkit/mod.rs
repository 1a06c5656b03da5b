//! Conformance testkit (feature `testkit`): checks that any [`Device`](crate::Device) and
//! its kernels — ours or a user's — behave as the executor expects.
//!
//! - [`reference`](mod@reference) is a deliberately naive, sequential interpreter of the standard op set,
//!   the oracle that results are compared with;
//! - [`check_device`] runs the suite on one device: its name, every standard op it has a
//!   kernel for (each dtype it accepts, odd shapes, against the oracle), clean errors on
//!   bad input, interleaving with asynchronous kernels, and concurrent steps;
//! - [`run_kernel`] runs one kernel on given tensors in one line (a backend's unit tests);
//! - [`OpCheck`] checks one op's kernel — a custom op's too — against a reference closure
//!   over random inputs (scalars, empty tensors, broadcasting shapes; seeded), and its
//!   shape function against the kernel's outputs;
//! - [`check_transport`] runs the transport suite (devices, push delivery, partitions,
//!   deadlines, unknown handles, unreachable tasks) that every transport passes.

mod conformance;
mod harness;
mod op_check;
pub mod reference;
mod transport;

pub use conformance::{check_device, check_device_with, ConformanceError, ConformanceReport};
pub use harness::{run_kernel, run_kernel_with};
pub use op_check::{OpCheck, OpCheckError, OpCheckReport};
pub use transport::{
    check_rendezvous_hygiene, check_transport, check_unclaimed_bound, host_task_options,
    register_receiver, HostDevice, TransportConformanceError,
};
