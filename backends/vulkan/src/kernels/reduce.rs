//! Sum and Mean over all axes or one axis (`axis` attribute, negative from the end), or,
//! in TensorFlow's form, over the axes of input 1 (a host-memory integer scalar or
//! vector; each dimension at most once; empty: nothing reduced, the input relabelled),
//! with `keep_dims`: `reduce.comp` on an `[outer, r, inner]` view of the input, one pass
//! per run of adjacent reduced dimensions. Integer reductions are host-memory kernels
//! (`host.rs`).
//!
//! Contiguous reductions (all axes, or the last axis) use a workgroup per output and a
//! tree in workgroup memory; when there are few rows and they are long (a sum over all
//! axes), two passes: many workgroups per row write partial sums, then a workgroup per
//! row reduces them, so a large reduction fills the GPU instead of one of its cores.
//! Other reductions use one invocation per output. The summation order
//! differs from the CPU's, so results agree to float rounding (relative 1e-5 or so for
//! well-conditioned data), not bit for bit.

use std::sync::Arc;

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, DType, KernelError, Shape, Tensor};

use super::host::{self, host_ints};
use super::support::{
    boxed, count32, device_of, gpu, normalize_axis, params, tensor, unimplemented, Factory, Launch,
    Launched, GROUP,
};
use crate::device::{GpuBuffer, Shader, VulkanDevice};

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
    if let Some(k) = host::for_host_dtypes(init)? {
        return Ok(k);
    }
    let two_inputs = init.input_dtypes.len() == 2;
    if init.input_dtypes[0] != DType::F32 {
        return Err(unimplemented(init, init.input_dtypes[0]));
    }
    if two_inputs && !host::in_host_memory(init.input_dtypes[1]) {
        return Err(unimplemented(init, init.input_dtypes[1]));
    }
    boxed(Reduce::<MEAN> {
        axis: if two_inputs {
            Axes::Input
        } else {
            Axes::Attr(init.node.attrs.opt_int("axis")?)
        },
        keep_dims: init.node.attrs.bool_or("keep_dims", false)?,
        dev: device_of(init)?,
    })
}

/// Where a reduction's axes come from.
enum Axes {
    /// Magpie's attribute `axis`: one axis, or every axis when absent.
    Attr(Option<i64>),
    /// TensorFlow's input 1: a scalar or vector of axes in host memory (empty: none).
    Input,
}

struct Reduce<const MEAN: bool> {
    dev: VulkanDevice,
    axis: Axes,
    keep_dims: bool,
}

impl<const MEAN: bool> Reduce<MEAN> {
    /// Which dimensions of `dims` are reduced, with the CPU kernels' errors.
    fn reduced(
        &self,
        op: &str,
        dims: &[usize],
        inputs: &[Tensor],
    ) -> Result<Vec<bool>, KernelError> {
        let axes: Vec<i64> = match self.axis {
            Axes::Attr(Some(a)) => vec![a],
            Axes::Attr(None) => (0..dims.len() as i64).collect(),
            Axes::Input => {
                let t = &inputs[1];
                if t.shape().rank() > 1 {
                    return Err(KernelError::InvalidArgument(format!(
                        "{op}: the axes must be a scalar or a vector, got shape {}",
                        t.shape()
                    )));
                }
                host_ints(op, "the axes", t)?
            }
        };
        let mut reduced = vec![false; dims.len()];
        for &a in &axes {
            let at = normalize_axis(op, a, dims.len())?;
            if reduced[at] {
                return Err(KernelError::InvalidArgument(format!(
                    "{op}: the axes {axes:?} name dimension {at} twice"
                )));
            }
            reduced[at] = true;
        }
        Ok(reduced)
    }
}

impl<const MEAN: bool> Launch for Reduce<MEAN> {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let op = if MEAN { "Mean" } else { "Sum" };
        let x = &inputs[0];
        let dims = x.dims();
        let reduced = self.reduced(op, dims, inputs)?;
        let out_dims: Vec<usize> = dims
            .iter()
            .zip(&reduced)
            .filter(|(_, r)| self.keep_dims || !**r)
            .map(|(&d, &r)| if r { 1 } else { d })
            .collect();
        let shape = Shape::new(&out_dims)?;
        let gx = gpu(op, x)?;
        // Each run of adjacent reduced dimensions is one pass over an [outer, r, inner]
        // view, last run first; a mean divides by each run's length (together, the
        // count of reduced elements).
        let mut cur = dims.to_vec();
        let mut buffer: Option<Arc<GpuBuffer>> = None;
        let mut end = cur.len();
        while end > 0 {
            if !reduced[end - 1] {
                end -= 1;
                continue;
            }
            let mut start = end - 1;
            while start > 0 && reduced[start - 1] {
                start -= 1;
            }
            let outer: usize = cur[..start].iter().product();
            let r: usize = cur[start..end].iter().product();
            let inner: usize = cur[end..].iter().product();
            let src = buffer.as_deref().unwrap_or(gx);
            buffer = Some(reduce_middle(&self.dev, op, src, [outer, r, inner], MEAN)?);
            for d in &mut cur[start..end] {
                *d = 1;
            }
            end = start;
        }
        let out = match buffer {
            Some(b) => tensor(shape, b)?,
            // Nothing reduced: the input, relabelled.
            None => x.reshape(shape)?,
        };
        Ok(Launched::Ready(out))
    }
}

/// Enqueues the sum (or mean, with `mean`) over the middle axis of an `[outer, r, inner]`
/// view of `gx` and returns the `[outer, inner]` output buffer (`BiasAddGrad` reuses it).
pub(crate) fn reduce_middle(
    dev: &VulkanDevice,
    op: &str,
    gx: &GpuBuffer,
    [outer, r, inner]: [usize; 3],
    mean: bool,
) -> Result<Arc<GpuBuffer>, KernelError> {
    let n_out = outer * inner;
    let out = dev.alloc(op, n_out)?;
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
            let partials = dev.alloc(op, outer * chunks as usize)?;
            let first = dev.grid_1d(op, outer as u64 * chunks)?;
            let second = dev.grid_1d(op, outer as u64)?;
            let p1 = params(&[dims[0], dims[1], 1, 0, chunks as u32]);
            let p2 = params(&[dims[0], chunks as u32, 1, u32::from(mean), 1, dims[1]]);
            dev.enqueue(op, |rec| {
                rec.dispatch(Shader::Reduce, &[gx, &partials], p1, first)?;
                rec.dispatch(Shader::Reduce, &[&partials, &out], p2, second)
            })?;
        } else {
            let groups = if inner == 1 {
                n_out as u64
            } else {
                (n_out as u64).div_ceil(GROUP)
            };
            let grid = dev.grid_1d(op, groups)?;
            let p = params(&[dims[0], dims[1], dims[2], u32::from(mean)]);
            dev.enqueue(op, |rec| rec.dispatch(Shader::Reduce, &[gx, &out], p, grid))?;
        }
    }
    Ok(out)
}
