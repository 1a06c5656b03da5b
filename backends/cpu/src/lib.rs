//! # magpie-cpu
//!
//! Magpie's CPU backend: the [`CpuDevice`] and a kernel for every standard op on device
//! type `"CPU"`.
//!
//! Call [`register()`] (more calls do nothing; [`register_into`] fills a registry of
//! your own) before building kernels, then place nodes on [`cpu_device()`]. Kernels live in `kernels/`, one file per op family; the
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

use magpie_core::registry::{KernelKey, KernelRegistry, RegistryError};

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

/// The backend id of [`CpuDevice`]s ([`Device::backend`](magpie_core::Device::backend)).
/// The CPU kernels are host kernels that need only what the `Device` trait says (NUMA
/// node, memory limit), so they are registered for every `CPU`-type device, not for this
/// id alone: a CPU-type device of another backend gets them for the ops its backend
/// lacks.
pub const BACKEND: &str = "magpie-cpu";

/// Registers every CPU kernel in the process-wide registry for device type `"CPU"`.
/// Idempotent: later calls change nothing.
///
/// # Errors
/// [`RegistryError::AlreadyRegistered`] naming the first op for which something else
/// registered another `CPU` kernel (ours is skipped there, the others are registered; to
/// override one CPU kernel, use [`KernelRegistry::replace`] after this).
pub fn register() -> Result<(), RegistryError> {
    register_into(&KernelRegistry::global())
}

/// Registers every CPU kernel in `registry` (see [`register`]).
///
/// # Errors
/// As [`register`].
pub fn register_into(registry: &KernelRegistry) -> Result<(), RegistryError> {
    let mut first_error = None;
    for (op, factory) in kernels::all() {
        if let Err(e) = registry.register(KernelKey::new(op, DEVICE_TYPE), factory) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The ops this backend has kernels for, in registration order.
pub fn supported_ops() -> impl Iterator<Item = &'static str> {
    kernels::all().map(|(op, _)| op)
}
