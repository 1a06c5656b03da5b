//! Joining and splitting tensors, TensorFlow's ops (every dtype, inputs of one dtype):
//!
//! - `Pack` (attribute `axis`, default 0): its inputs, of one shape, stacked along a new
//!   axis `axis` (in `-rank-1..=rank`);
//! - `Unpack` (attributes `num`, `axis`): the inverse, `num` outputs, which must be the
//!   size of dimension `axis`;
//! - `ConcatV2(v_0, ..., v_{N-1}, axis)`: the values, of one rank (at least 1) and equal
//!   dimensions but along `axis`, joined along it.
//!
//! Each is a sequence of contiguous block copies: a tensor viewed as `[outer, block]`
//! around the axis.

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::tensor::StorageElement;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError, Shape};

use super::support::{dispatch_any, index_scalar, input_dtype, operand, Factory};
use crate::buffers::{output, Place};
use crate::conv::normalize_axis;

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[
    ("Pack", pack_factory),
    ("Unpack", unpack_factory),
    ("ConcatV2", concat_factory),
];

/// A kernel of one of this family's ops over elements of type `T`.
struct Join<T> {
    /// The `axis` attribute (Pack, Unpack); ConcatV2 reads its axis from the last input.
    axis: i64,
    /// The device's node and memory limit.
    place: Place,
    elem: PhantomData<fn() -> T>,
}

struct PackKernel<T>(Join<T>);
struct UnpackKernel<T>(Join<T>);
struct ConcatKernel<T>(Join<T>);

fn join<T>(init: &KernelInit<'_>) -> Result<Join<T>, KernelError> {
    Ok(Join {
        axis: init.node.attrs.opt_int("axis")?.unwrap_or(0),
        place: Place::of(init),
        elem: PhantomData,
    })
}

fn pack_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_any!(init, input_dtype(init, 0)?, T => PackKernel::<T>(join(init)?))
}

fn unpack_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_any!(init, input_dtype(init, 0)?, T => UnpackKernel::<T>(join(init)?))
}

fn concat_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_any!(init, input_dtype(init, 0)?, T => ConcatKernel::<T>(join(init)?))
}

/// The product of `dims` (a part of a valid shape's, so it fits).
fn product(dims: &[usize]) -> usize {
    dims.iter().product()
}

impl<T: StorageElement> Kernel for PackKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let n = ctx.num_inputs();
        let item = ctx.input(0).shape().clone();
        for i in 1..n {
            if ctx.input(i).shape() != &item {
                return Err(KernelError::InvalidArgument(format!(
                    "Pack needs inputs of one shape: input 0 has shape {item}, input {i} {}",
                    ctx.input(i).shape()
                )));
            }
        }
        let at = normalize_axis("Pack", self.0.axis, item.rank() + 1)?;
        let mut dims = item.dims().to_vec();
        dims.insert(at, n);
        let shape = Shape::new(&dims)?;
        let (outer, block) = (product(&item.dims()[..at]), product(&item.dims()[at..]));
        let mut out = output::<T>(shape.num_elements(), &self.0.place)?;
        let parts: Vec<&[T]> = (0..n)
            .map(|i| operand::<T>("Pack", i, ctx.input(i)))
            .collect::<Result<_, _>>()?;
        for o in 0..outer {
            for p in &parts {
                out.buf.extend_from_slice(&p[o * block..(o + 1) * block]);
            }
        }
        ctx.push_output(out.into_tensor(shape)?);
        Ok(())
    }
}

impl<T: StorageElement> Kernel for UnpackKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let num = ctx.node().attrs.int("num")?;
        let x = ctx.input(0);
        let dims = x.dims().to_vec();
        let at = normalize_axis("Unpack", self.0.axis, dims.len())?;
        if i64::try_from(dims[at]) != Ok(num) {
            return Err(KernelError::InvalidArgument(format!(
                "Unpack of num={num} along axis {} of shape {}",
                self.0.axis,
                x.shape()
            )));
        }
        let data = operand::<T>("Unpack", 0, x)?;
        let (outer, block) = (product(&dims[..at]), product(&dims[at + 1..]));
        let mut item = dims.clone();
        item.remove(at);
        let shape = Shape::new(&item)?;
        let mut outs = Vec::with_capacity(dims[at]);
        for k in 0..dims[at] {
            let mut out = output::<T>(outer * block, &self.0.place)?;
            for o in 0..outer {
                let start = (o * dims[at] + k) * block;
                out.buf.extend_from_slice(&data[start..start + block]);
            }
            outs.push(out.into_tensor(shape.clone())?);
        }
        for t in outs {
            ctx.push_output(t);
        }
        Ok(())
    }
}

impl<T: StorageElement> Kernel for ConcatKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let n = ctx.num_inputs() - 1;
        let axis = index_scalar("ConcatV2", n, ctx.input(n))?;
        let first = ctx.input(0).dims().to_vec();
        if first.is_empty() {
            return Err(KernelError::InvalidArgument(
                "ConcatV2 cannot join scalars".into(),
            ));
        }
        let at = normalize_axis("ConcatV2", axis, first.len())?;
        let mut total = 0usize;
        for i in 0..n {
            let d = ctx.input(i).dims();
            let fits = d.len() == first.len()
                && d.iter()
                    .zip(&first)
                    .enumerate()
                    .all(|(j, (a, b))| j == at || a == b);
            if !fits {
                return Err(KernelError::InvalidArgument(format!(
                    "ConcatV2 along axis {axis}: input 0 has shape {}, input {i} {}",
                    ctx.input(0).shape(),
                    ctx.input(i).shape()
                )));
            }
            total = total.checked_add(d[at]).ok_or_else(|| {
                KernelError::InvalidArgument("ConcatV2: the joined dimension overflows".into())
            })?;
        }
        let mut dims = first.clone();
        dims[at] = total;
        let shape = Shape::new(&dims)?;
        let outer = product(&first[..at]);
        let inner = product(&first[at + 1..]);
        let parts: Vec<(&[T], usize)> = (0..n)
            .map(|i| {
                let t = ctx.input(i);
                Ok((operand::<T>("ConcatV2", i, t)?, t.dims()[at] * inner))
            })
            .collect::<Result<_, KernelError>>()?;
        let mut out = output::<T>(shape.num_elements(), &self.0.place)?;
        for o in 0..outer {
            for (p, block) in &parts {
                out.buf.extend_from_slice(&p[o * block..(o + 1) * block]);
            }
        }
        ctx.push_output(out.into_tensor(shape)?);
        Ok(())
    }
}
