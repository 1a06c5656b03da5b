//! # Magpie
//!
//! A runtime for dataflow graphs that run across devices and machines: build a graph of
//! ops (with device, name and control-dependency scopes), then run it in a session on a
//! work-stealing scheduler.
//!
//! ```
//! use magpie::{Graph, Tensor};
//!
//! let g = Graph::new();
//! let a = g.constant(1.0f32)?;
//! let b = g.add(a, g.constant(2.0f32)?)?;
//! let (x, y) = g.control_dependencies([a, b], |g| Ok::<_, magpie::GraphError>((
//!     g.constant(3.0f32)?,
//!     g.constant(4.0f32)?,
//! )))?;
//! let z = g.add(x, y)?;
//! let session = magpie::local_session(&g)?;
//! let out = session.run(&[], &[z], &[])?;
//! assert_eq!(f32::try_from(&out[0])?, 7.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! This crate is the facade: it re-exports [`magpie_core`] (graphs, tensors, sessions,
//! the scheduler and the backend traits) and wires in the CPU backend ([`cpu`]) and the
//! Vulkan GPU backend ([`vulkan`]), and the in-memory ([`inmem`]) and gRPC ([`grpc`])
//! transports of the distributed runtime. [`ClientSession::connect`] opens a session on
//! any target: local, `inmem://host:port`, `grpc://host:port` or `grpcs://host:port`
//! (TLS; the cluster token and CA come from options or `MAGPIE_AUTH_TOKEN_FILE` and
//! `MAGPIE_TLS_CA`, see `SECURITY.md`).
//!
//! [`guide`] walks through building and running a graph, writing a backend, and
//! benchmarking a scheduling policy.

use std::sync::Arc;

pub mod cluster;
mod connect;
pub mod guide;
mod task_devices;

pub use connect::{ClientError, ClientSession, AUTH_TOKEN_FILE_ENV, TLS_CA_ENV};

pub use magpie_core::device::Device;
pub use magpie_core::distributed::{
    MasterSession, MasterSessionOptions, ServerOptions, VariableRef,
};
pub use magpie_core::exec::chrome_trace_json;
pub use magpie_core::graph::{
    DeviceName, DeviceSpec, Graph, GraphError, NodeId, Output, PartialShape,
};
pub use magpie_core::session::{
    CancellationToken, DeviceCounter, NodeStats, RunMetadata, RunOptions, RunOutput, Session,
    SessionError, SessionOptions,
};
pub use magpie_core::tensor::{DType, Shape, Tensor, TensorError};
pub use magpie_core::{
    device, distributed, exec, graph, kernel, limits, registry, resource, scheduler, session,
    tensor, transport, StepId,
};
pub use magpie_cpu::{CpuLayout, CpuOptions};
pub use {
    magpie_core as core, magpie_cpu as cpu, magpie_grpc as grpc, magpie_inmem as inmem,
    magpie_vulkan as vulkan,
};

/// Session options with this process's CPU device as the default device, followed by
/// every Vulkan device [`vulkan::discover`] finds (`GPU:0`, `GPU:1`, ...; none without a
/// Vulkan driver: see [`gpu_status`]). Kernels of both backends are registered. Nodes
/// without a device spec stay on the CPU.
pub fn local_options() -> SessionOptions {
    register_backends();
    let mut devices: Vec<Arc<dyn Device>> = vec![magpie_cpu::cpu_device()];
    add_gpus(&mut devices);
    SessionOptions::with_devices(devices)
}

/// Session options laid over the machine's NUMA topology: the CPU devices of `layout`
/// (one over the machine, or one per NUMA node: `CPU:0`, `CPU:1`, …) and a worker pool
/// pinned to PUs with NUMA steal groups, followed by the Vulkan devices. Degrades to
/// unpinned workers (one warning) where pinning is impossible.
///
/// # Errors
///
/// Only for bad options, e.g. a NUMA node that does not exist
/// ([`cpu::CpuSetupError`]).
pub fn local_options_with(layout: CpuLayout) -> Result<SessionOptions, cpu::CpuSetupError> {
    local_options_for(&CpuOptions::with_layout(layout))
}

/// [`local_options_with`] with every CPU option (nodes, workers, pinning).
///
/// # Errors
///
/// As for [`local_options_with`].
pub fn local_options_for(options: &CpuOptions) -> Result<SessionOptions, cpu::CpuSetupError> {
    register_backends();
    let runtime = magpie_cpu::CpuRuntime::build(options)?;
    let mut session = runtime.session_options();
    add_gpus(&mut session.devices);
    Ok(session)
}

/// Registers the CPU, distributed and Vulkan kernels in the process-wide registry. A
/// kernel the user registered first under the same key is kept, with a warning naming it.
pub(crate) fn register_backends() {
    if let Err(e) = magpie_cpu::register() {
        tracing::warn!(error = %e, "a CPU kernel was not registered");
    }
    magpie_core::distributed::kernels::register_kernels();
    if let Err(e) = magpie_vulkan::register() {
        tracing::warn!(error = %e, "a Vulkan kernel was not registered");
    }
}

fn add_gpus(devices: &mut Vec<Arc<dyn Device>>) {
    if let Ok(gpus) = magpie_vulkan::discover() {
        devices.extend(gpus.into_iter().map(|d| d as Arc<dyn Device>));
    }
}

/// Why this process has no GPU device, or `None` when it has at least one.
pub fn gpu_status() -> Option<String> {
    magpie_vulkan::discover().err().map(|e| e.to_string())
}

/// A local session over `graph` on the CPU, with one worker per available core.
pub fn local_session(graph: &Graph) -> Result<Session, SessionError> {
    Session::new(graph, local_options())
}

/// The README's example, compiled and run as a doc test so it cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
