//! Host-memory kernels: a Vulkan device keeps f32 tensors in its own memory and every
//! other dtype (the i32/i64 shape arithmetic of TensorFlow's graphs: `Shape`, `Prod`,
//! integer `Pack`/`Slice`/`ConcatV2`/`GatherV2`, `FloorMod` of indices, ...) in host memory,
//! as TensorFlow's GPU device does with its `HostMemory` int32 kernels. Such a node is
//! placed on the GPU device, needs no copy to or from it, and is computed on the host by
//! the same code the CPU device runs: the CPU kernel of its op from the process-wide
//! registry (device type `"CPU"`), built for this node. `Shape`, `Size` and `Rank` read
//! only their input's dimensions, so their input may be an f32 tensor in device memory.
//!
//! GPU kernels whose ops take such a host input beside f32 data (`Reshape`'s shape, `Sum`'s
//! axes, `Tile`'s multiples, ...) read it with [`host_ints`] when they launch. The copies
//! (`copy.rs`) pass host-memory dtypes through unchanged.
//!
//! The host kernel is the CPU backend's (`magpie_cpu::register`, which the facade runs):
//! without it, such a node fails to build with an error saying so.

use magpie_core::kernel::KernelInit;
use magpie_core::registry::lookup_kernel;
use magpie_core::{BoxedKernel, DType, KernelError, Tensor};

use super::support::Factory;

/// Ops with host-memory kernels only (no f32 data on the GPU).
pub(crate) const KERNELS: &[(&str, Factory)] = &[
    ("Shape", metadata_factory),
    ("Size", metadata_factory),
    ("Rank", metadata_factory),
    ("Prod", host_factory),
    ("BroadcastGradientArgs", host_factory),
];

/// Whether tensors of `dtype` live in host memory on a Vulkan device.
pub(crate) fn in_host_memory(dtype: DType) -> bool {
    dtype != DType::F32
}

/// The host-memory kernel of the node when none of its inputs and outputs is f32, else
/// `None` (the caller builds its GPU kernel, or declines).
///
/// # Errors
/// As [`host_kernel`].
pub(crate) fn for_host_dtypes(init: &KernelInit<'_>) -> Result<Option<BoxedKernel>, KernelError> {
    let all_host = init
        .input_dtypes
        .iter()
        .chain(init.node.output_dtypes.iter())
        .all(|&d| in_host_memory(d));
    if all_host {
        host_kernel(init).map(Some)
    } else {
        Ok(None)
    }
}

/// A factory for ops that run on host memory only: declines a node with f32 inputs or
/// outputs with [`KernelError::Unimplemented`].
fn host_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    match for_host_dtypes(init)? {
        Some(k) => Ok(k),
        None => Err(super::support::unimplemented(init, DType::F32)),
    }
}

/// A factory for ops that read only their input's dimensions, whatever its memory.
fn metadata_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(&d) = init
        .node
        .output_dtypes
        .iter()
        .find(|&&d| !in_host_memory(d))
    {
        return Err(super::support::unimplemented(init, d));
    }
    host_kernel(init)
}

/// The CPU kernel of the node's op, built for this node (its allocations are checked
/// against this device's memory limit).
///
/// # Errors
/// [`KernelError::Unimplemented`] naming the op when no CPU kernel is registered; the CPU
/// factory's own errors.
pub(crate) fn host_kernel(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let dtype = init
        .input_dtypes
        .first()
        .or(init.node.output_dtypes.first())
        .copied()
        .unwrap_or(DType::I32);
    let factory = lookup_kernel(&init.node.op, "CPU").ok_or_else(|| {
        tracing::debug!(op = %init.node.op, "no CPU kernel for a host-memory kernel");
        super::support::unimplemented(init, dtype)
    })?;
    factory(init)
}

/// The integers of a host-memory input (i32 or i64) of `op`, e.g. a shape or axes.
///
/// # Errors
/// [`KernelError::InvalidArgument`] when the tensor is not an integer tensor in host
/// memory.
pub(crate) fn host_ints(op: &str, what: &str, t: &Tensor) -> Result<Vec<i64>, KernelError> {
    if let Ok(v) = t.as_slice::<i32>() {
        return Ok(v.iter().map(|&x| i64::from(x)).collect());
    }
    if let Ok(v) = t.as_slice::<i64>() {
        return Ok(v.to_vec());
    }
    Err(KernelError::InvalidArgument(format!(
        "{op}: {what} must be an i32 or i64 tensor in host memory, got a {} tensor{}",
        t.dtype(),
        if t.is_on_host() {
            ""
        } else {
            " in device memory"
        }
    )))
}
