//! Neural-network layers and their gradients, TensorFlow's ops:
//!
//! - `BiasAdd(value, bias)` (numeric dtypes): `bias`, a vector as long as the channel
//!   dimension of `value` (the last with `data_format` `NHWC`, the default; dimension 1
//!   with `NCHW`), added along it; `value` has rank 2 or more;
//! - `BiasAddGrad(g)` (numeric): `g` summed over every dimension but the channel one;
//! - `ReluGrad(gradients, features)` (numeric, one shape): `gradients` where
//!   `features > 0`, else 0;
//! - `LogSoftmax(logits)` (`f32`, `f64`): along the last dimension,
//!   `x - max - ln(sum(exp(x - max)))`;
//! - `SoftmaxCrossEntropyWithLogits(features, labels)` (`f32`, `f64`; matrices
//!   `[batch, classes]` that broadcast together): with `s = features - max` per row,
//!   output 0 is `sum(labels * (ln(sum(exp(s))) - s))` per row and output 1
//!   `exp(s) / sum(exp(s)) - labels` — TensorFlow's formulas, in its order.
//!
//! Sums run in increasing index order, in the element type.

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError, Shape};

use super::numeric::{Arith, FloatArith};
use super::support::{
    common_dtype, dispatch_float, dispatch_numeric, input_dtype, operand, Factory,
};
use crate::buffers::{filled, output, Place};

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[
    ("BiasAdd", bias_add_factory),
    ("BiasAddGrad", bias_add_grad_factory),
    ("ReluGrad", relu_grad_factory),
    ("LogSoftmax", log_softmax_factory),
    ("SoftmaxCrossEntropyWithLogits", xent_factory),
];

/// A kernel over elements of `T` that knows its device and, for the bias ops, whether
/// channels come first (`NCHW`).
struct Nn<T> {
    place: Place,
    channels_first: bool,
    elem: PhantomData<fn() -> T>,
}

fn nn<T>(init: &KernelInit<'_>) -> Result<Nn<T>, KernelError> {
    let channels_first = if init.node.attrs.contains("data_format") {
        match init.node.attrs.string("data_format")?.as_str() {
            "NHWC" => false,
            "NCHW" => true,
            other => {
                return Err(KernelError::InvalidArgument(format!(
                    "{}: data_format must be \"NHWC\" or \"NCHW\", got {other:?}",
                    init.node.op
                )))
            }
        }
    } else {
        false
    };
    Ok(Nn {
        place: Place::of(init),
        channels_first,
        elem: PhantomData,
    })
}

struct BiasAddKernel<T>(Nn<T>);
struct BiasAddGradKernel<T>(Nn<T>);
struct ReluGradKernel<T>(Nn<T>);
struct LogSoftmaxKernel<T>(Nn<T>);
struct XentKernel<T>(Nn<T>);

fn bias_add_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_numeric!(init, common_dtype(init, 2)?, T => BiasAddKernel::<T>(nn(init)?))
}

fn bias_add_grad_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_numeric!(init, input_dtype(init, 0)?, T => BiasAddGradKernel::<T>(nn(init)?))
}

fn relu_grad_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_numeric!(init, common_dtype(init, 2)?, T => ReluGradKernel::<T>(nn(init)?))
}

fn log_softmax_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_float!(init, input_dtype(init, 0)?, T => LogSoftmaxKernel::<T>(nn(init)?))
}

fn xent_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_float!(init, common_dtype(init, 2)?, T => XentKernel::<T>(nn(init)?))
}

/// The channel count of `dims` and the number of elements after the channel dimension
/// (what a flat index is divided by before taking it modulo the channels).
fn channel_layout(op: &str, dims: &[usize], first: bool) -> Result<(usize, usize), KernelError> {
    if dims.len() < 2 {
        return Err(KernelError::InvalidArgument(format!(
            "{op} needs a tensor of rank 2 or more, got shape {dims:?}"
        )));
    }
    let c = if first { 1 } else { dims.len() - 1 };
    Ok((dims[c], dims[c + 1..].iter().product()))
}

impl<T: Arith> Kernel for BiasAddKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let (value, bias) = (ctx.input(0), ctx.input(1));
        let (channels, inner) = channel_layout("BiasAdd", value.dims(), self.0.channels_first)?;
        if bias.dims() != [channels] {
            return Err(KernelError::InvalidArgument(format!(
                "BiasAdd: bias of shape {} for {channels} channels of shape {}",
                bias.shape(),
                value.shape()
            )));
        }
        let (v, b) = (
            operand::<T>("BiasAdd", 0, value)?,
            operand::<T>("BiasAdd", 1, bias)?,
        );
        let mut out = output::<T>(v.len(), &self.0.place)?;
        if inner == 1 {
            for row in v.chunks_exact(channels.max(1)) {
                out.buf.extend(row.iter().zip(b).map(|(&x, &y)| x.add(y)));
            }
        } else {
            out.buf.extend(
                v.iter()
                    .enumerate()
                    .map(|(i, &x)| x.add(b[(i / inner) % channels])),
            );
        }
        ctx.push_output(out.into_tensor(value.shape())?);
        Ok(())
    }
}

impl<T: Arith> Kernel for BiasAddGradKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let g = ctx.input(0);
        let (channels, inner) = channel_layout("BiasAddGrad", g.dims(), self.0.channels_first)?;
        let data = operand::<T>("BiasAddGrad", 0, g)?;
        let mut out = filled(channels, T::ZERO, &self.0.place)?;
        if inner > 0 && channels > 0 {
            for (i, &x) in data.iter().enumerate() {
                let c = (i / inner) % channels;
                out.buf[c] = out.buf[c].add(x);
            }
        }
        ctx.push_output(out.into_tensor(Shape::new(&[channels])?)?);
        Ok(())
    }
}

impl<T: Arith> Kernel for ReluGradKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let (g, f) = (ctx.input(0), ctx.input(1));
        if g.shape() != f.shape() {
            return Err(KernelError::InvalidArgument(format!(
                "ReluGrad needs gradients and features of one shape, got {} and {}",
                g.shape(),
                f.shape()
            )));
        }
        let (gs, fs) = (
            operand::<T>("ReluGrad", 0, g)?,
            operand::<T>("ReluGrad", 1, f)?,
        );
        let mut out = output::<T>(gs.len(), &self.0.place)?;
        out.buf.extend(
            gs.iter()
                .zip(fs)
                .map(|(&g, &f)| if f > T::ZERO { g } else { T::ZERO }),
        );
        ctx.push_output(out.into_tensor(g.shape())?);
        Ok(())
    }
}

/// The largest element of a non-empty row. A NaN in the row makes every result of the
/// row NaN downstream, whichever element this picks.
fn row_max<T: FloatArith>(row: &[T]) -> T {
    row.iter()
        .copied()
        .fold(row[0], |m, x| if x > m { x } else { m })
}

impl<T: FloatArith> Kernel for LogSoftmaxKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.input(0);
        let Some(&classes) = x.dims().last() else {
            return Err(KernelError::InvalidArgument(
                "LogSoftmax needs logits of rank 1 or more, got a scalar".into(),
            ));
        };
        let data = operand::<T>("LogSoftmax", 0, x)?;
        let mut out = output::<T>(data.len(), &self.0.place)?;
        if classes > 0 {
            for row in data.chunks_exact(classes) {
                let max = row_max(row);
                let sum = row
                    .iter()
                    .fold(T::ZERO, |acc, &v| acc.add(v.sub(max).exp()));
                let log_sum = sum.ln();
                out.buf.extend(row.iter().map(|&v| v.sub(max).sub(log_sum)));
            }
        }
        ctx.push_output(out.into_tensor(x.shape())?);
        Ok(())
    }
}

impl<T: FloatArith> Kernel for XentKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let (features, labels) = (ctx.input(0), ctx.input(1));
        let (fd, ld) = (features.dims(), labels.dims());
        if fd.len() != 2 || ld.len() != 2 {
            return Err(KernelError::InvalidArgument(format!(
                "SoftmaxCrossEntropyWithLogits needs matrices, got shapes {} and {}",
                features.shape(),
                labels.shape()
            )));
        }
        let dim = |i: usize| -> Result<usize, KernelError> {
            match (fd[i], ld[i]) {
                (a, b) if a == b => Ok(a),
                (1, b) => Ok(b),
                (a, 1) => Ok(a),
                _ => Err(KernelError::InvalidArgument(format!(
                    "SoftmaxCrossEntropyWithLogits: logits of shape {} and labels of shape {} \
                     do not broadcast",
                    features.shape(),
                    labels.shape()
                ))),
            }
        };
        let (batch, classes) = (dim(0)?, dim(1)?);
        let f = operand::<T>("SoftmaxCrossEntropyWithLogits", 0, features)?;
        let l = operand::<T>("SoftmaxCrossEntropyWithLogits", 1, labels)?;
        // Element (r, c) of a matrix that may be broadcast along either dimension.
        let at = |data: &[T], dims: &[usize], r: usize, c: usize| {
            let r = if dims[0] == 1 { 0 } else { r };
            let c = if dims[1] == 1 { 0 } else { c };
            data[r * dims[1] + c]
        };
        let backprop_shape = Shape::new(&[batch, classes])?;
        let mut loss = output::<T>(batch, &self.0.place)?;
        let mut backprop = output::<T>(backprop_shape.num_elements(), &self.0.place)?;
        let mut shifted = Vec::with_capacity(classes);
        for r in 0..batch {
            shifted.clear();
            shifted.extend((0..classes).map(|c| at(f, fd, r, c)));
            if classes == 0 {
                loss.buf.push(T::ZERO);
                continue;
            }
            let max = row_max(&shifted);
            for s in shifted.iter_mut() {
                *s = s.sub(max);
            }
            let sum = shifted.iter().fold(T::ZERO, |acc, &s| acc.add(s.exp()));
            let log_sum = sum.ln();
            let mut row_loss = T::ZERO;
            for (c, &s) in shifted.iter().enumerate() {
                row_loss = row_loss.add(at(l, ld, r, c).mul(log_sum.sub(s)));
            }
            loss.buf.push(row_loss);
            backprop.buf.extend(
                shifted
                    .iter()
                    .enumerate()
                    .map(|(c, &s)| s.exp().div(sum).sub(at(l, ld, r, c))),
            );
        }
        ctx.push_output(loss.into_tensor(Shape::new(&[batch])?)?);
        ctx.push_output(backprop.into_tensor(backprop_shape)?);
        Ok(())
    }
}
