//! Sum and Mean over all axes or one axis (`axis` attribute, negative from the end),
//! with `keep_dims`: `reduce.comp` on an `[outer, r, inner]` view of the input.
//!
//! Contiguous reductions (all axes, or the last axis) use a workgroup per output and a
//! tree in workgroup memory; when there are few rows and they are long (a sum over all
//! axes), two passes: many workgroups per row write partial sums, then a workgroup per
//! row reduces them, so a large reduction fills the GPU instead of one of its cores.
//! Other reductions use one invocation per output. The summation order
//! differs from the CPU's, so results agree to float rounding (relative 1e-5 or so for
//! well-conditioned data), not bit for bit.

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, KernelError, Shape, Tensor};

use super::support::{
    boxed, count32, f32_device, gpu, normalize_axis, params, tensor, Factory, Launch, Launched,
    GROUP,
};
use crate::device::{Shader, VulkanDevice};

/// Elements one workgroup of a two-pass reduction's first pass sums (behaviour at the
/// time of writing): a row longer than this is split.
const CHUNK: u64 = 2048;
/// Reductions over contiguous rows with fewer rows than this (a sum over all axes has
/// one) split each long row over several workgroups instead of one per row.
const FEW_ROWS: usize = 64;
/// The most workgroups a row is split over (the second pass reduces their partial sums
/// with one workgroup per row).
const MAX_CHUNKS: u64 = 1024;

pub(crate) const KERNELS: &[(&str, Factory)] =
    &[("Sum", factory::<false>), ("Mean", factory::<true>)];

fn factory<const MEAN: bool>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    boxed(Reduce::<MEAN> {
        axis: init.node.attrs.opt_int("axis")?,
        keep_dims: init.node.attrs.bool_or("keep_dims", false)?,
        dev: f32_device(init)?,
    })
}

struct Reduce<const MEAN: bool> {
    dev: VulkanDevice,
    axis: Option<i64>,
    keep_dims: bool,
}

impl<const MEAN: bool> Launch for Reduce<MEAN> {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let op = if MEAN { "Mean" } else { "Sum" };
        let x = &inputs[0];
        let dims = x.dims();
        let (shape, outer, r, inner) = match self.axis {
            None => {
                let shape = if self.keep_dims {
                    Shape::new(&vec![1; dims.len()])?
                } else {
                    Shape::scalar()
                };
                (shape, 1, x.num_elements(), 1)
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
                (Shape::new(&shape)?, outer, dims[axis], inner)
            }
        };
        let gx = gpu(op, x)?;
        let n_out = outer * inner;
        let out = self.dev.alloc(op, n_out)?;
        if n_out > 0 {
            let dims = [count32(op, outer)?, count32(op, r)?, count32(op, inner)?];
            let chunks = if inner == 1 && outer < FEW_ROWS {
                (r as u64).div_ceil(CHUNK).min(MAX_CHUNKS)
            } else {
                1
            };
            if chunks > 1 {
                // Two passes: `chunks` workgroups per row write partial sums, then one
                // workgroup per row reduces them (dividing a mean by the row's length).
                let partials = self.dev.alloc(op, outer * chunks as usize)?;
                let first = self.dev.grid_1d(op, outer as u64 * chunks)?;
                let second = self.dev.grid_1d(op, outer as u64)?;
                let p1 = params(&[dims[0], dims[1], 1, 0, chunks as u32]);
                let p2 = params(&[dims[0], chunks as u32, 1, u32::from(MEAN), 1, dims[1]]);
                self.dev.enqueue(op, |rec| {
                    rec.dispatch(Shader::Reduce, &[gx, &partials], p1, first)?;
                    rec.dispatch(Shader::Reduce, &[&partials, &out], p2, second)
                })?;
            } else {
                let groups = if inner == 1 {
                    n_out as u64
                } else {
                    (n_out as u64).div_ceil(GROUP)
                };
                let grid = self.dev.grid_1d(op, groups)?;
                let p = params(&[dims[0], dims[1], dims[2], u32::from(MEAN)]);
                self.dev
                    .enqueue(op, |rec| rec.dispatch(Shader::Reduce, &[gx, &out], p, grid))?;
            }
        }
        Ok(Launched::Ready(tensor(shape, out)?))
    }
}
