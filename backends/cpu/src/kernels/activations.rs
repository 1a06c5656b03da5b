//! Float activations and their gradients, TensorFlow's ops (`f32`, `f64`): `Log`, `Tanh`,
//! `Sigmoid` (`1 / (1 + exp(-x))`), `TanhGrad(y, dy) = dy * (1 - y²)` and
//! `SigmoidGrad(y, dy) = dy * y * (1 - y)` (of one shape; `y` is the activation's
//! output), and `Softmax`, `exp(x - max) / sum(exp(x - max))` along the last dimension.

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError};

use super::numeric::FloatArith;
use super::support::{common_dtype, dispatch_float, input_dtype, operand, Factory};
use crate::buffers::{output, Place};

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[
    ("Log", unary_factory::<LogOp>),
    ("Tanh", unary_factory::<TanhOp>),
    ("Sigmoid", unary_factory::<SigmoidOp>),
    ("TanhGrad", grad_factory::<TanhOp>),
    ("SigmoidGrad", grad_factory::<SigmoidOp>),
    ("Softmax", softmax_factory),
];

/// An activation on elements of type `T`.
trait Activation<T>: 'static {
    fn apply(x: T) -> T;
    /// Its derivative times `dy`, from its output `y`.
    fn grad(y: T, dy: T) -> T;
}

struct LogOp;
struct TanhOp;
struct SigmoidOp;

impl<T: FloatArith> Activation<T> for LogOp {
    fn apply(x: T) -> T {
        x.ln()
    }
    fn grad(_: T, dy: T) -> T {
        dy
    }
}

impl<T: FloatArith> Activation<T> for TanhOp {
    fn apply(x: T) -> T {
        x.tanh()
    }
    fn grad(y: T, dy: T) -> T {
        dy.mul(T::ONE.sub(y.mul(y)))
    }
}

impl<T: FloatArith> Activation<T> for SigmoidOp {
    fn apply(x: T) -> T {
        T::ONE.div(T::ONE.add(x.neg().exp()))
    }
    fn grad(y: T, dy: T) -> T {
        dy.mul(y).mul(T::ONE.sub(y))
    }
}

struct UnaryKernel<T, O>(Place, PhantomData<fn() -> (T, O)>);
struct GradKernel<T, O>(Place, PhantomData<fn() -> (T, O)>);
struct SoftmaxKernel<T>(Place, PhantomData<fn() -> T>);

fn unary_factory<O>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError>
where
    O: Activation<f32> + Activation<f64>,
{
    dispatch_float!(init, input_dtype(init, 0)?, T => UnaryKernel::<T, O>(Place::of(init), PhantomData))
}

fn grad_factory<O>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError>
where
    O: Activation<f32> + Activation<f64>,
{
    dispatch_float!(init, common_dtype(init, 2)?, T => GradKernel::<T, O>(Place::of(init), PhantomData))
}

fn softmax_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_float!(init, input_dtype(init, 0)?, T => SoftmaxKernel::<T>(Place::of(init), PhantomData))
}

impl<T: FloatArith, O: Activation<T>> Kernel for UnaryKernel<T, O> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.input(0);
        let data = operand::<T>(&ctx.node().op, 0, x)?;
        let mut out = output::<T>(data.len(), &self.0)?;
        out.buf.extend(data.iter().map(|&v| O::apply(v)));
        ctx.push_output(out.into_tensor(x.shape())?);
        Ok(())
    }
}

impl<T: FloatArith, O: Activation<T>> Kernel for GradKernel<T, O> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let (y, dy) = (ctx.input(0), ctx.input(1));
        let op = &ctx.node().op;
        if y.shape() != dy.shape() {
            return Err(KernelError::InvalidArgument(format!(
                "{op} needs inputs of one shape, got {} and {}",
                y.shape(),
                dy.shape()
            )));
        }
        let (ys, ds) = (operand::<T>(op, 0, y)?, operand::<T>(op, 1, dy)?);
        let mut out = output::<T>(ys.len(), &self.0)?;
        out.buf
            .extend(ys.iter().zip(ds).map(|(&y, &d)| O::grad(y, d)));
        ctx.push_output(out.into_tensor(y.shape())?);
        Ok(())
    }
}

impl<T: FloatArith> Kernel for SoftmaxKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.input(0);
        let Some(&classes) = x.dims().last() else {
            return Err(KernelError::InvalidArgument(
                "Softmax needs logits of rank 1 or more, got a scalar".into(),
            ));
        };
        let data = operand::<T>("Softmax", 0, x)?;
        let mut out = output::<T>(data.len(), &self.0)?;
        if classes > 0 {
            for row in data.chunks_exact(classes) {
                let max = row
                    .iter()
                    .copied()
                    .fold(row[0], |m, v| if v > m { v } else { m });
                let start = out.buf.len();
                out.buf.extend(row.iter().map(|&v| v.sub(max).exp()));
                let sum = out.buf[start..].iter().fold(T::ZERO, |acc, &e| acc.add(e));
                for e in &mut out.buf[start..] {
                    *e = e.div(sum);
                }
            }
        }
        ctx.push_output(out.into_tensor(x.shape())?);
        Ok(())
    }
}
