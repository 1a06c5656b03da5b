//! The GPU kernels, one file per op family, and the list [`all`] that `register()` walks.
//!
//! Every factory checks the dtypes when the kernel is built: f32 data gets a shader
//! kernel, a node with no f32 input or output a host-memory kernel (`host.rs`), and
//! anything else is declined with
//! [`KernelError::Unimplemented`](magpie_core::KernelError::Unimplemented).
//! Kernels that compute are asynchronous (`support::Launch`): they validate shapes,
//! allocate the output and enqueue their commands on the device's stream from the
//! scheduler worker, then complete at once — the output is stream-ordered, valid for
//! every later command on the device. The host waits only in `_CopyToHost`. Identity, Reshape, ExpandDims and Squeeze only
//! relabel a buffer and run synchronously. No file here names a vulkano type: they go through `device/`.

mod binary;
mod copy;
mod gather;
mod host;
mod matmul;
mod nn;
mod reduce;
mod shape_ops;
mod source;
mod strided;
mod support;
mod unary;

pub(crate) use support::Factory;

/// Every (op, factory) pair this backend provides.
pub(crate) fn all() -> impl Iterator<Item = (&'static str, Factory)> {
    [
        copy::KERNELS,
        source::KERNELS,
        binary::KERNELS,
        unary::KERNELS,
        matmul::KERNELS,
        nn::KERNELS,
        reduce::KERNELS,
        shape_ops::KERNELS,
        strided::KERNELS,
        gather::KERNELS,
        host::KERNELS,
    ]
    .into_iter()
    .flatten()
    .copied()
}
