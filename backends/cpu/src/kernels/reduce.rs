//! Reductions: `Sum` and `Mean` over one axis or all of them. (With the axes as input 1,
//! TensorFlow's form, they are `reduce_axes.rs`'s.)
//!
//! Attributes: `axis` (optional int; absent means every axis, negative counts from the
//! end) and `keep_dims` (bool, default false: the reduced axes are dropped; true: they
//! stay with size 1). Dtypes: `f32`, `f64`, `i32`, `i64`.
//!
//! Each output element sums its inputs in increasing index order, in the element type
//! (integers wrap). `Mean` is that sum divided by the count; integer means truncate, and
//! an integer mean over zero elements is 0 (TensorFlow's), where a float one is NaN.

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError, Shape, Tensor};

use super::numeric::Arith;
use super::support::{dispatch_numeric, input_dtype, operand, Factory};
use crate::buffers::Place;
use crate::conv::normalize_axis;

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] =
    &[("Sum", factory::<false>), ("Mean", factory::<true>)];

fn factory<const MEAN: bool>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if init.input_dtypes.len() == 2 {
        // TensorFlow's form, the axes as input 1.
        return super::reduce_axes::factory(init);
    }
    let axis = init.node.attrs.opt_int("axis")?;
    let keep_dims = init.node.attrs.bool_or("keep_dims", false)?;
    let place = Place::of(init);
    dispatch_numeric!(init, input_dtype(init, 0)?, T => ReduceKernel::<T, MEAN> {
        axis,
        keep_dims,
        place: place.clone(),
        elem: PhantomData,
    })
}

/// `Sum` (or `Mean` when `MEAN`) over elements of type `T`.
struct ReduceKernel<T, const MEAN: bool> {
    axis: Option<i64>,
    keep_dims: bool,
    /// The device's memory limit and account (for the output).
    place: Place,
    elem: PhantomData<fn() -> T>,
}

impl<T: Arith, const MEAN: bool> Kernel for ReduceKernel<T, MEAN> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.input(0);
        let op = if MEAN { "Mean" } else { "Sum" };
        // Exactly the shape's elements: the offsets below are computed from the dims.
        let data = operand::<T>(op, 0, x)?;
        let dims = x.dims();
        let (shape, mut out, count, charge) = match self.axis {
            None => {
                let charge = self.place.memory.reserve(T::DTYPE, 1)?;
                let shape = if self.keep_dims {
                    Shape::new(&vec![1; dims.len()])?
                } else {
                    Shape::scalar()
                };
                (shape, vec![sum(data)], data.len(), charge)
            }
            Some(axis) => {
                let axis = normalize_axis(op, axis, dims.len())?;
                let mut shape = dims.to_vec();
                if self.keep_dims {
                    shape[axis] = 1;
                } else {
                    shape.remove(axis);
                }
                let outer: usize = dims[..axis].iter().product();
                let inner: usize = dims[axis + 1..].iter().product();
                // A product of the input's dimensions, which its shape checked fits.
                let charge = self.place.memory.reserve(T::DTYPE, outer * inner)?;
                let mut out = self.place.memory.zeros::<T>(outer * inner)?;
                sum_axis(data, dims[axis], inner, &mut out);
                (Shape::new(&shape)?, out, dims[axis], charge)
            }
        };
        if MEAN {
            let divisor = T::from_count(count);
            // An integer mean over no elements is its sum, 0, as in TensorFlow.
            if T::IS_INT && count == 0 {
                ctx.push_output(Tensor::from_vec_charged(shape, out, None, charge)?);
                return Ok(());
            }
            if T::IS_INT && usize::try_from(divisor.to_i64()) != Ok(count) {
                return Err(KernelError::InvalidArgument(format!(
                    "Mean over {count} elements: the count does not fit {}",
                    T::DTYPE
                )));
            }
            for v in &mut out {
                *v = v.div(divisor);
            }
        }
        ctx.push_output(Tensor::from_vec_charged(shape, out, None, charge)?);
        Ok(())
    }
}

/// The sum of every element, in index order.
fn sum<T: Arith>(data: &[T]) -> T {
    data.iter().fold(T::ZERO, |acc, &v| acc.add(v))
}

/// Sums over the middle axis of `data` viewed as `[outer, len, inner]`, giving
/// `[outer, inner]` in `out` (zeroed, `outer · inner` long); each output adds its inputs in increasing order along the axis.
fn sum_axis<T: Arith>(data: &[T], len: usize, inner: usize, out: &mut [T]) {
    if inner == 0 {
        return;
    }
    if inner == 1 {
        for (o, dst) in out.iter_mut().enumerate() {
            *dst = sum(&data[o * len..(o + 1) * len]);
        }
        return;
    }
    for (o, dst) in out.chunks_exact_mut(inner).enumerate() {
        let block = &data[o * len * inner..(o + 1) * len * inner];
        for row in block.chunks_exact(inner) {
            for (d, &v) in dst.iter_mut().zip(row) {
                *d = d.add(v);
            }
        }
    }
}
