//! `AddN`: the elementwise sum of its inputs, all of one shape and dtype (`f32`, `f64`,
//! `i32`, `i64`), added in input order (integers wrap) — what TensorFlow's gradients use
//! to add up the contributions to one tensor.

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError};

use super::numeric::Arith;
use super::support::{common_dtype, dispatch_numeric, operand, Factory};
use crate::buffers::{output, Place};

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[("AddN", factory)];

fn factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let n = init.input_dtypes.len();
    dispatch_numeric!(init, common_dtype(init, n)?, T => AddNKernel::<T>(Place::of(init), PhantomData))
}

struct AddNKernel<T>(Place, PhantomData<fn() -> T>);

impl<T: Arith> Kernel for AddNKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let shape = ctx.input(0).shape().clone();
        for i in 1..ctx.num_inputs() {
            if ctx.input(i).shape() != &shape {
                return Err(KernelError::InvalidArgument(format!(
                    "AddN needs inputs of one shape: input 0 has shape {shape}, input {i} {}",
                    ctx.input(i).shape()
                )));
            }
        }
        let first = operand::<T>("AddN", 0, ctx.input(0))?;
        let mut out = output::<T>(first.len(), &self.0)?;
        out.buf.extend_from_slice(first);
        for i in 1..ctx.num_inputs() {
            let next = operand::<T>("AddN", i, ctx.input(i))?;
            for (acc, &v) in out.buf.iter_mut().zip(next) {
                *acc = acc.add(v);
            }
        }
        ctx.push_output(out.into_tensor(shape)?);
        Ok(())
    }
}
