//! The CPU kernels, one file per op family, and the list [`all`] that `register()` walks.
//!
//! Every factory checks the dtypes when the kernel is built and returns
//! [`KernelError::Unimplemented`](magpie_core::KernelError::Unimplemented) for one it has
//! no kernel for, so `compute` is monomorphised for one element type and never dispatches.
//!
//! Shared pieces: `numeric` (the element arithmetic every family uses: wrapping integers,
//! IEEE floats), `support` (factory and
//! buffer-reuse helpers), `parallel` (large loops split over the device's workers),
//! `store` (streaming stores for outputs larger than the cache). Numpy broadcasting as
//! strided rows is core's [`BroadcastLayout`](magpie_core::tensor::BroadcastLayout).

mod activations;
mod add_n;
mod binary;
mod dims;
mod gather;
mod grad_args;
mod like;
mod matmul;
mod nn;
mod numeric;
mod parallel;
mod reduce;
mod reduce_axes;
mod shape_ops;
mod source;
mod stack;
mod store;
mod support;
mod transpose;
mod unary;

pub(crate) use support::Factory;

/// Every (op, factory) pair this backend provides.
pub(crate) fn all() -> impl Iterator<Item = (&'static str, Factory)> {
    [
        source::KERNELS,
        binary::KERNELS,
        unary::KERNELS,
        matmul::KERNELS,
        reduce::KERNELS,
        shape_ops::KERNELS,
        reduce_axes::KERNELS,
        dims::KERNELS,
        stack::KERNELS,
        gather::KERNELS,
        nn::KERNELS,
        add_n::KERNELS,
        grad_args::KERNELS,
        activations::KERNELS,
        like::KERNELS,
        transpose::KERNELS,
    ]
    .into_iter()
    .flatten()
    .copied()
}
