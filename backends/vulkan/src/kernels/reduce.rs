//! Sum and Mean over all axes or one axis (`axis` attribute, negative from the end),
//! with `keep_dims`: `reduce.comp` on an `[outer, r, inner]` view of the input.
//!
//! Contiguous reductions (all axes, or the last axis) use a workgroup per output and a
//! tree in workgroup memory; others one invocation per output. The summation order
//! differs from the CPU's, so results agree to float rounding (relative 1e-5 or so for
//! well-conditioned data), not bit for bit.

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, KernelError, Shape, Tensor};

use super::support::{
    boxed, count32, f32_device, gpu, normalize_axis, params, tensor, Factory, Launch, Launched,
    GROUP,
};
use crate::device::{Shader, VulkanDevice};

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
            let groups = if inner == 1 {
                n_out as u64
            } else {
                (n_out as u64).div_ceil(GROUP)
            };
            let grid = self.dev.grid_1d(op, groups)?;
            let p = params(&[
                count32(op, outer)?,
                count32(op, r)?,
                count32(op, inner)?,
                u32::from(MEAN),
            ]);
            self.dev
                .enqueue(op, |rec| rec.dispatch(Shader::Reduce, &[gx, &out], p, grid))?;
        }
        Ok(Launched::Ready(tensor(shape, out)?))
    }
}
