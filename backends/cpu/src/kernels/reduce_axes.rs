//! Reductions over a set of axes given as a tensor, TensorFlow's form: `Sum`, `Mean` and
//! `Prod` with input 1 the axes (a scalar or a vector of `i32`/`i64`; negative counts
//! from the end; each dimension at most once; empty: nothing reduced). `Prod` also takes Magpie's
//! one-input form (attribute `axis`, absent for every axis). `keep_dims` keeps reduced
//! axes with size 1. Dtypes: `f32`, `f64`, `i32`, `i64`.
//!
//! Each output element accumulates its inputs in increasing index order, in the element
//! type (integers wrap). `Mean` divides the sum by the count: integers truncate, and an
//! integer mean over zero elements is 0, as TensorFlow's; a float one is NaN.

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError, Shape};

use super::numeric::Arith;
use super::support::{dispatch_numeric, index_values, input_dtype, operand, Factory};
use crate::buffers::{filled, Place};
use crate::conv::normalize_axis;

/// The kernels of this family (`Sum` and `Mean` reach [`factory`] from `reduce.rs` when
/// they have two inputs).
pub(super) const KERNELS: &[(&str, Factory)] = &[("Prod", factory)];

/// What the reduction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sum,
    Mean,
    Prod,
}

/// Builds a `Sum`, `Mean` or `Prod` kernel whose axes come from input 1, or, for `Prod`
/// with one input, from the attribute `axis`.
pub(super) fn factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let kind = match init.node.op.as_str() {
        "Sum" => Kind::Sum,
        "Mean" => Kind::Mean,
        "Prod" => Kind::Prod,
        other => {
            return Err(KernelError::Internal(format!(
                "the axes reduction kernel built for {other}"
            )))
        }
    };
    let attr_axis = if init.input_dtypes.len() == 1 {
        Some(init.node.attrs.opt_int("axis")?)
    } else {
        None
    };
    let keep_dims = init.node.attrs.bool_or("keep_dims", false)?;
    let place = Place::of(init);
    dispatch_numeric!(init, input_dtype(init, 0)?, T => AxesKernel::<T> {
        kind,
        attr_axis,
        keep_dims,
        place: place.clone(),
        elem: PhantomData,
    })
}

struct AxesKernel<T> {
    kind: Kind,
    /// `Some` for the one-input form: the `axis` attribute (`None` inside: every axis).
    attr_axis: Option<Option<i64>>,
    keep_dims: bool,
    /// The device's memory limit (for the output).
    place: Place,
    elem: PhantomData<fn() -> T>,
}

impl<T: Arith> Kernel for AxesKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let op = ctx.node().op.clone();
        let x = ctx.input(0);
        let dims = x.dims().to_vec();
        let axes: Vec<i64> = match self.attr_axis {
            Some(Some(a)) => vec![a],
            Some(None) => (0..dims.len() as i64).collect(),
            None => index_values(&op, 1, ctx.input(1))?,
        };
        if self.attr_axis.is_none() && ctx.input(1).shape().rank() > 1 {
            return Err(KernelError::InvalidArgument(format!(
                "{op}: the axes must be a scalar or a vector, got shape {}",
                ctx.input(1).shape()
            )));
        }
        let mut reduced = vec![false; dims.len()];
        for &a in &axes {
            let at = normalize_axis(&op, a, dims.len())?;
            if reduced[at] {
                return Err(KernelError::InvalidArgument(format!(
                    "{op}: the axes {axes:?} name dimension {at} twice"
                )));
            }
            reduced[at] = true;
        }
        let data = operand::<T>(&op, 0, x)?;
        let out_dims: Vec<usize> = dims
            .iter()
            .zip(&reduced)
            .filter(|(_, r)| self.keep_dims || !**r)
            .map(|(&d, &r)| if r { 1 } else { d })
            .collect();
        let out_shape = Shape::new(&out_dims)?;
        let n_out = out_shape.num_elements();
        let init = if self.kind == Kind::Prod {
            T::ONE
        } else {
            T::ZERO
        };
        let mut out = filled(n_out, init, &self.place)?;
        // Output strides per input axis (0 along reduced axes): each input element's
        // output position, walked in input order with an odometer.
        let mut strides = vec![0usize; dims.len()];
        let mut s = 1;
        for i in (0..dims.len()).rev() {
            if !reduced[i] {
                strides[i] = s;
                s *= dims[i];
            }
        }
        let mut index = vec![0usize; dims.len()];
        let mut pos = 0usize;
        for &v in data {
            let acc = &mut out.buf[pos];
            *acc = if self.kind == Kind::Prod {
                acc.mul(v)
            } else {
                acc.add(v)
            };
            for i in (0..dims.len()).rev() {
                index[i] += 1;
                pos += strides[i];
                if index[i] < dims[i] {
                    break;
                }
                pos -= strides[i] * dims[i];
                index[i] = 0;
            }
        }
        if self.kind == Kind::Mean {
            let count = data.len().checked_div(n_out).unwrap_or(0);
            if count == 0 && T::IS_INT {
                out.buf.iter_mut().for_each(|v| *v = T::ZERO);
            } else {
                let divisor = T::from_count(count);
                if T::IS_INT && usize::try_from(divisor.to_i64()) != Ok(count) {
                    return Err(KernelError::InvalidArgument(format!(
                        "{op} over {count} elements: the count does not fit {}",
                        T::DTYPE
                    )));
                }
                out.buf.iter_mut().for_each(|v| *v = v.div(divisor));
            }
        }
        ctx.push_output(out.into_tensor(out_shape)?);
        Ok(())
    }
}
