//! Tensors shaped like their input, TensorFlow's ops (every dtype): `StopGradient(x)` is
//! `x` itself (the client builds gradients; at run time it forwards, sharing the buffer)
//! and `OnesLike(x)` is ones (or `true`s) of `x`'s shape and dtype.

use magpie_core::kernel::KernelInit;
use magpie_core::tensor::{Element, StorageElement};
use magpie_core::{BoxedKernel, DType, Kernel, KernelContext, KernelError, Shape, Tensor};

use super::support::{input_dtype, sync, Factory};
use crate::buffers::{filled, Place};

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[
    ("StopGradient", stop_gradient_factory),
    ("OnesLike", ones_like_factory),
];

fn stop_gradient_factory(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    sync(Forward)
}

/// Outputs input 0.
struct Forward;

impl Kernel for Forward {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.input(0).clone();
        ctx.push_output(x);
        Ok(())
    }
}

fn ones_like_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    sync(OnesLike(input_dtype(init, 0)?, Place::of(init)))
}

/// Ones of the input's shape, in this dtype.
struct OnesLike(DType, Place);

fn ones<T: StorageElement>(shape: &Shape, place: &Place) -> Result<Tensor, KernelError> {
    filled(shape.num_elements(), <T as Element>::ONE, place)?.into_tensor(shape)
}

impl Kernel for OnesLike {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let shape = ctx.input(0).shape().clone();
        let place = &self.1;
        let out = match self.0 {
            DType::F32 => ones::<f32>(&shape, place)?,
            DType::F64 => ones::<f64>(&shape, place)?,
            DType::I32 => ones::<i32>(&shape, place)?,
            DType::I64 => ones::<i64>(&shape, place)?,
            DType::Bool => ones::<bool>(&shape, place)?,
        };
        ctx.push_output(out);
        Ok(())
    }
}
