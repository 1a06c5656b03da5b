//! Selecting and repeating elements, TensorFlow's ops (every dtype; offsets, sizes and
//! indices `i32` or `i64`):
//!
//! - `Slice(x, begin, size)`: the block of `x` starting at `begin` with `size` (a -1 in
//!   `size` takes the rest of that dimension); it must lie inside `x`;
//! - `Tile(x, multiples)`: `x` repeated `multiples[i]` (>= 0) times along dimension `i`;
//! - `GatherV2(params, indices, axis)`: the slices of `params` at `indices` along `axis`,
//!   shaped `params.shape[..axis] + indices.shape + params.shape[axis+1..]`; an index
//!   outside `0..params.shape[axis]` is an error, as on TensorFlow's CPU.

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::tensor::StorageElement;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError, Shape};

use super::support::{
    dispatch_any, index_scalar, index_values, index_vector, input_dtype, operand, Factory,
};
use crate::buffers::{output, Place};
use crate::conv::normalize_axis;

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[
    ("Slice", slice_factory),
    ("Tile", tile_factory),
    ("GatherV2", gather_factory),
];

struct SliceKernel<T>(Place, PhantomData<fn() -> T>);
struct TileKernel<T>(Place, PhantomData<fn() -> T>);
struct GatherKernel<T>(Place, PhantomData<fn() -> T>);

fn slice_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_any!(init, input_dtype(init, 0)?, T => SliceKernel::<T>(Place::of(init), PhantomData))
}

fn tile_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_any!(init, input_dtype(init, 0)?, T => TileKernel::<T>(Place::of(init), PhantomData))
}

fn gather_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_any!(init, input_dtype(init, 0)?, T => GatherKernel::<T>(Place::of(init), PhantomData))
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Advances a row-major multi-index over `dims` (all but the last `skip_last` entries);
/// false once it wrapped around.
fn advance(index: &mut [usize], dims: &[usize]) -> bool {
    for i in (0..dims.len()).rev() {
        index[i] += 1;
        if index[i] < dims[i] {
            return true;
        }
        index[i] = 0;
    }
    false
}

impl<T: StorageElement> Kernel for SliceKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let begin = index_vector("Slice", 1, ctx.input(1))?;
        let size = index_vector("Slice", 2, ctx.input(2))?;
        let x = ctx.input(0);
        let dims = x.dims();
        if begin.len() != dims.len() || size.len() != dims.len() {
            return Err(KernelError::InvalidArgument(format!(
                "Slice of shape {} needs begin and size of length {}, got {begin:?} and {size:?}",
                x.shape(),
                dims.len()
            )));
        }
        let mut start = Vec::with_capacity(dims.len());
        let mut out_dims = Vec::with_capacity(dims.len());
        for i in 0..dims.len() {
            let d = dims[i] as i64;
            let b = begin[i];
            let s = if size[i] == -1 { d - b } else { size[i] };
            if b < 0 || s < 0 || b > d || s > d - b {
                return Err(KernelError::InvalidArgument(format!(
                    "Slice of shape {} at begin {begin:?} with size {size:?} leaves the tensor \
                     in dimension {i}",
                    x.shape()
                )));
            }
            start.push(b as usize);
            out_dims.push(s as usize);
        }
        let shape = Shape::new(&out_dims)?;
        let data = operand::<T>("Slice", 0, x)?;
        let n = shape.num_elements();
        let mut out = output::<T>(n, &self.0)?;
        if n > 0 {
            let st = strides(dims);
            let rank = dims.len();
            // Copy contiguous runs along the last dimension.
            let (outer_dims, run) = match rank {
                0 => (&[][..], 1),
                _ => (&out_dims[..rank - 1], out_dims[rank - 1]),
            };
            let mut index = vec![0usize; outer_dims.len()];
            loop {
                let mut off = 0;
                for (j, &k) in index.iter().enumerate() {
                    off += (start[j] + k) * st[j];
                }
                if rank > 0 {
                    off += start[rank - 1];
                }
                out.buf.extend_from_slice(&data[off..off + run]);
                if !advance(&mut index, outer_dims) {
                    break;
                }
            }
        }
        ctx.push_output(out.into_tensor(shape)?);
        Ok(())
    }
}

impl<T: StorageElement> Kernel for TileKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let multiples = index_vector("Tile", 1, ctx.input(1))?;
        let x = ctx.input(0);
        let dims = x.dims();
        if multiples.len() != dims.len() {
            return Err(KernelError::InvalidArgument(format!(
                "Tile of shape {} needs {} multiples, got {multiples:?}",
                x.shape(),
                dims.len()
            )));
        }
        let mut out_dims = Vec::with_capacity(dims.len());
        for (&d, &m) in dims.iter().zip(&multiples) {
            let m = usize::try_from(m).map_err(|_| {
                KernelError::InvalidArgument(format!(
                    "Tile multiples must be non-negative, got {multiples:?}"
                ))
            })?;
            out_dims.push(d.checked_mul(m).ok_or_else(|| {
                KernelError::InvalidArgument(format!(
                    "Tile of shape {} by {multiples:?} is too large",
                    x.shape()
                ))
            })?);
        }
        let shape = Shape::new(&out_dims)?;
        let data = operand::<T>("Tile", 0, x)?;
        let n = shape.num_elements();
        let mut out = output::<T>(n, &self.0)?;
        if n > 0 {
            let st = strides(dims);
            let mut index = vec![0usize; dims.len()];
            loop {
                let off: usize = index
                    .iter()
                    .zip(dims)
                    .zip(&st)
                    .map(|((&i, &d), &s)| (i % d) * s)
                    .sum();
                out.buf.push(data[off]);
                if !advance(&mut index, &out_dims) {
                    break;
                }
            }
        }
        ctx.push_output(out.into_tensor(shape)?);
        Ok(())
    }
}

impl<T: StorageElement> Kernel for GatherKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let axis = index_scalar("GatherV2", 2, ctx.input(2))?;
        let indices = index_values("GatherV2", 1, ctx.input(1))?;
        let index_dims = ctx.input(1).dims().to_vec();
        let params = ctx.input(0);
        let dims = params.dims();
        if dims.is_empty() {
            return Err(KernelError::InvalidArgument(
                "GatherV2 needs params of rank 1 or more, got a scalar".into(),
            ));
        }
        let at = normalize_axis("GatherV2", axis, dims.len())?;
        let mut out_dims = dims[..at].to_vec();
        out_dims.extend_from_slice(&index_dims);
        out_dims.extend_from_slice(&dims[at + 1..]);
        let shape = Shape::new(&out_dims)?;
        let data = operand::<T>("GatherV2", 0, params)?;
        let (outer, len) = (dims[..at].iter().product::<usize>(), dims[at]);
        let inner: usize = dims[at + 1..].iter().product();
        let mut rows = Vec::with_capacity(indices.len());
        for &i in &indices {
            match usize::try_from(i) {
                Ok(r) if r < len => rows.push(r),
                _ => {
                    return Err(KernelError::InvalidArgument(format!(
                        "GatherV2: index {i} is outside [0, {len}) along axis {axis} of \
                         shape {}",
                        params.shape()
                    )))
                }
            }
        }
        let mut out = output::<T>(shape.num_elements(), &self.0)?;
        for o in 0..outer {
            for &r in &rows {
                let start = (o * len + r) * inner;
                out.buf.extend_from_slice(&data[start..start + inner]);
            }
        }
        ctx.push_output(out.into_tensor(shape)?);
        Ok(())
    }
}
