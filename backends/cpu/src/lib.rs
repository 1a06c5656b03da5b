//! # magpie-cpu
//!
//! Magpie's CPU backend: the [`CpuDevice`] and a kernel for every standard op on device
//! type `"CPU"`.
//!
//! Call [`register()`] once (more calls do nothing) before building kernels, then place
//! nodes on [`cpu_device()`]. Kernels live in `kernels/`, one file per op family; the
//! dtypes each supports and its exact semantics are documented there.
//!
//! NUMA: [`MachineTopology`] (through hwloc, `topology.rs`) describes the machine;
//! [`CpuRuntime`] builds one device per NUMA node or one over the machine
//! ([`CpuLayout`]) and a scheduler pool whose workers pin themselves to PUs and steal
//! within their node first (`layout.rs`).

mod buffers;
mod conv;
mod device;
mod kernels;
mod layout;
mod topology;

use std::sync::Once;

pub use device::{cpu_device, CpuDevice};
pub use layout::{
    current_worker_node, layout_devices, select_nodes, CpuLayout, CpuOptions, CpuRuntime,
    CpuSetupError, PinningPlan, WorkerPin,
};
pub use topology::{
    machine_memory, Binder, Core, MachineTopology, NumaNode, TopologyError, TopologySource,
};

/// The device type the CPU kernels are registered for.
pub const DEVICE_TYPE: &str = "CPU";

/// Registers every CPU kernel with [`magpie_core::registry`]. Idempotent: only the
/// first call in a process registers anything.
///
/// A kernel that something else already registered for the same op on `"CPU"` is kept,
/// and ours is skipped with a warning, so a user may override one op.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (op, factory) in kernels::all() {
            if let Err(e) = magpie_core::registry::register_kernel(op, DEVICE_TYPE, factory) {
                tracing::warn!(error = %e, "CPU kernel for {op} not registered");
            }
        }
        tracing::debug!(ops = kernels::all().count(), "CPU kernels registered");
    });
}

/// The ops this backend has kernels for, in registration order.
pub fn supported_ops() -> impl Iterator<Item = &'static str> {
    kernels::all().map(|(op, _)| op)
}
