//! Elementwise unary math: `Neg`, `Square`, `Relu` (`f32`, `f64`, `i32`, `i64`) and
//! `Sqrt`, `Exp` (`f32`, `f64`).
//!
//! `Neg` and `Square` wrap for integers. `Relu(x)` is `0` when `x < 0` and `x` otherwise,
//! as in TensorFlow: `Relu(NaN)` is NaN and `Relu(-0.0)` is `-0.0`. `Sqrt` of a negative float is NaN.
//!
//! When the context holds the only reference to the input, its buffer becomes the output.

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError, Tensor};

use super::numeric::{Arith, FloatArith};
use super::support::{
    dispatch_float, dispatch_numeric, input_dtype, operand, take_unique, Factory,
};
use crate::buffers::{adopt, output, Place};

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[
    ("Neg", numeric_factory::<NegOp>),
    ("Square", numeric_factory::<SquareOp>),
    ("Relu", numeric_factory::<ReluOp>),
    ("Sqrt", float_factory::<SqrtOp>),
    ("Exp", float_factory::<ExpOp>),
];

/// One elementwise unary operation on elements of type `T`.
trait UnaryOp<T>: 'static {
    /// The result for one element.
    fn apply(x: T) -> T;
}

struct NegOp;
struct SquareOp;
struct ReluOp;
struct SqrtOp;
struct ExpOp;

impl<T: Arith> UnaryOp<T> for NegOp {
    #[inline(always)]
    fn apply(x: T) -> T {
        x.neg()
    }
}

impl<T: Arith> UnaryOp<T> for SquareOp {
    #[inline(always)]
    fn apply(x: T) -> T {
        x.mul(x)
    }
}

impl<T: Arith> UnaryOp<T> for ReluOp {
    #[inline(always)]
    fn apply(x: T) -> T {
        // TensorFlow's `max(x, 0)`: only what compares below zero becomes zero, so NaN
        // and -0.0 pass through.
        if x < T::ZERO {
            T::ZERO
        } else {
            x
        }
    }
}

impl<T: FloatArith> UnaryOp<T> for SqrtOp {
    #[inline(always)]
    fn apply(x: T) -> T {
        x.sqrt()
    }
}

impl<T: FloatArith> UnaryOp<T> for ExpOp {
    #[inline(always)]
    fn apply(x: T) -> T {
        x.exp()
    }
}

fn numeric_factory<O>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError>
where
    O: UnaryOp<f32> + UnaryOp<f64> + UnaryOp<i32> + UnaryOp<i64>,
{
    let place = Place::of(init);
    dispatch_numeric!(init, input_dtype(init, 0)?, T => UnaryKernel::<T, O>(place.clone(), PhantomData))
}

fn float_factory<O>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError>
where
    O: UnaryOp<f32> + UnaryOp<f64>,
{
    let place = Place::of(init);
    dispatch_float!(init, input_dtype(init, 0)?, T => UnaryKernel::<T, O>(place.clone(), PhantomData))
}

/// `O` on elements of type `T`.
struct UnaryKernel<T, O>(Place, PhantomData<fn() -> (T, O)>);

impl<T: Arith, O: UnaryOp<T>> Kernel for UnaryKernel<T, O> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let shape = ctx.input(0).shape().clone();
        let home = ctx.input(0).numa_node().or(self.0.node);
        let data = match take_unique::<T>(ctx, 0) {
            Some(Ok(mut buf)) => {
                for x in buf.iter_mut() {
                    *x = O::apply(*x);
                }
                buf
            }
            Some(Err(x)) => return push_mapped::<T, O>(ctx, &x, &self.0),
            None => {
                let x = ctx.input(0).clone();
                return push_mapped::<T, O>(ctx, &x, &self.0);
            }
        };
        // The input's elements, written in place, become the output (charged to this
        // device, and back to their node's cache when large).
        ctx.push_output(adopt(shape, data, home, &self.0)?);
        Ok(())
    }
}

/// Pushes `O` of every element of `x`, in a new buffer allocated under `place`'s limit.
fn push_mapped<T: Arith, O: UnaryOp<T>>(
    ctx: &mut KernelContext<'_>,
    x: &Tensor,
    place: &Place,
) -> Result<(), KernelError> {
    let data = operand::<T>(&ctx.node().op, 0, x)?;
    let mut out = output::<T>(data.len(), place)?;
    out.buf.extend(data.iter().map(|&v| O::apply(v)));
    ctx.push_output(out.into_tensor(x.shape())?);
    Ok(())
}
