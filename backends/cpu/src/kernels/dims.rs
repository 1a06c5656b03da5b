//! Ops on dimensions, TensorFlow's form (every dtype; none copies elements but `Fill`):
//!
//! - `Shape` (attribute `out_type`, `i32` by default): the input's dimensions as a vector;
//!   a dimension beyond `i32` is an error for an `i32` output;
//! - `Size` (`out_type`, `i32` by default): the element count; `Rank`: the rank (`i32`);
//! - `ExpandDims(x, axis)`: `x` with a 1 inserted at `axis` (in `-rank-1..=rank`);
//! - `Squeeze` (attribute `squeeze_dims`): the listed dimensions removed, each must be 1;
//!   with none listed, every dimension of size 1;
//! - `Reshape(x, shape)`: the shape as a vector input (or a scalar, one dimension, as
//!   TensorFlow's kernel takes; at most one -1, inferred), by the
//!   same rule as Magpie's one-input form (`shape_ops.rs` sends its two-input nodes here);
//! - `Fill(dims, value)`: `value`, a scalar (or, at run time, a vector of one element, as
//!   TensorFlow's kernel takes), repeated over the shape `dims`.

use magpie_core::kernel::KernelInit;
use magpie_core::shape_fn::reshape_target;
use magpie_core::tensor::{Storage, StorageElement};
use magpie_core::{BoxedKernel, DType, Kernel, KernelContext, KernelError, Shape, Tensor};

use super::support::{dims_shape, index_scalar, index_values, index_vector, sync, Factory};
use crate::buffers::{filled, output, Place};
use crate::conv::normalize_axis;

/// The kernels of this family (`Reshape` and `Fill` come through `shape_ops.rs`).
pub(super) const KERNELS: &[(&str, Factory)] = &[
    ("Shape", shape_factory),
    ("ExpandDims", expand_dims_factory),
    ("Squeeze", squeeze_factory),
    ("Size", size_factory),
    ("Rank", rank_factory),
];

fn shape_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let out = if init.node.attrs.contains("out_type") {
        init.node.attrs.dtype("out_type")?
    } else {
        DType::I32
    };
    sync(ShapeKernel(out, Place::of(init)))
}

/// Outputs the input's dimensions in this dtype (`i32` or `i64`), on this place.
struct ShapeKernel(DType, Place);

impl Kernel for ShapeKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let dims = ctx.input(0).dims();
        let out = match self.0 {
            DType::I64 => values(dims.iter().map(|&d| d as i64), dims.len(), &self.1)?,
            DType::I32 => {
                let v: Result<Vec<i32>, _> = dims.iter().map(|&d| i32::try_from(d)).collect();
                let v = v.map_err(|_| {
                    KernelError::InvalidArgument(format!(
                        "Shape: dimensions {dims:?} do not fit out_type i32"
                    ))
                })?;
                values(v, dims.len(), &self.1)?
            }
            other => {
                return Err(KernelError::InvalidArgument(format!(
                    "Shape: out_type must be i32 or i64, got {other}"
                )))
            }
        };
        ctx.push_output(out);
        Ok(())
    }
}

fn size_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let out = if init.node.attrs.contains("out_type") {
        init.node.attrs.dtype("out_type")?
    } else {
        DType::I32
    };
    sync(SizeKernel(out, Place::of(init)))
}

/// Outputs the input's element count, a scalar of this dtype (`i32` or `i64`), on this
/// place.
struct SizeKernel(DType, Place);

impl Kernel for SizeKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let n = ctx.input(0).num_elements();
        let out = match self.0 {
            DType::I64 => scalar(n as i64, &self.1)?,
            DType::I32 => scalar(
                i32::try_from(n).map_err(|_| {
                    KernelError::InvalidArgument(format!(
                        "Size: {n} elements do not fit out_type i32"
                    ))
                })?,
                &self.1,
            )?,
            other => {
                return Err(KernelError::InvalidArgument(format!(
                    "Size: out_type must be i32 or i64, got {other}"
                )))
            }
        };
        ctx.push_output(out);
        Ok(())
    }
}

fn rank_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    sync(RankKernel(Place::of(init)))
}

/// Outputs the input's rank as an `i32` scalar, on this place.
struct RankKernel(Place);

impl Kernel for RankKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let rank = ctx.input(0).shape().rank() as i32;
        ctx.push_output(scalar(rank, &self.0)?);
        Ok(())
    }
}

/// A rank-1 tensor of the `n` `values`, allocated (and counted) on `place`.
pub(super) fn values<T: StorageElement>(
    values: impl IntoIterator<Item = T>,
    n: usize,
    place: &Place,
) -> Result<Tensor, KernelError> {
    let mut out = output::<T>(n, place)?;
    out.buf.extend(values.into_iter().take(n));
    if out.buf.len() != n {
        return Err(KernelError::Internal(format!(
            "expected {n} values, got {}",
            out.buf.len()
        )));
    }
    out.into_tensor([n])
}

/// A scalar tensor of `value`, allocated (and counted) on `place`.
fn scalar<T: StorageElement>(value: T, place: &Place) -> Result<Tensor, KernelError> {
    let mut out = output::<T>(1, place)?;
    out.buf.push(value);
    out.into_tensor(Shape::scalar())
}

fn expand_dims_factory(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    sync(ExpandDimsKernel)
}

struct ExpandDimsKernel;

impl Kernel for ExpandDimsKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let axis = index_scalar("ExpandDims", 1, ctx.input(1))?;
        let x = ctx.input(0);
        let at = normalize_axis("ExpandDims", axis, x.shape().rank() + 1)?;
        let mut dims = x.dims().to_vec();
        dims.insert(at, 1);
        let y = x.reshape(Shape::new(&dims)?)?;
        ctx.push_output(y);
        Ok(())
    }
}

fn squeeze_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let axes = if init.node.attrs.contains("squeeze_dims") {
        init.node.attrs.ints("squeeze_dims")?
    } else {
        Vec::new()
    };
    sync(SqueezeKernel(axes))
}

/// Removes the listed dimensions (all 1s when empty).
struct SqueezeKernel(Vec<i64>);

impl Kernel for SqueezeKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.input(0);
        let dims = x.dims();
        let mut keep = vec![true; dims.len()];
        if self.0.is_empty() {
            for (k, &d) in keep.iter_mut().zip(dims) {
                *k = d != 1;
            }
        }
        for &a in &self.0 {
            let at = normalize_axis("Squeeze", a, dims.len())?;
            if dims[at] != 1 {
                return Err(KernelError::InvalidArgument(format!(
                    "Squeeze: dimension {a} of shape {} is not 1",
                    x.shape()
                )));
            }
            keep[at] = false;
        }
        let out: Vec<usize> = dims
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(&d, _)| d)
            .collect();
        let y = x.reshape(Shape::new(&out)?)?;
        ctx.push_output(y);
        Ok(())
    }
}

/// `Reshape(x, shape)`: TensorFlow's two-input form.
pub(super) fn reshape_factory(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    sync(ReshapeToKernel)
}

struct ReshapeToKernel;

impl Kernel for ReshapeToKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        // TensorFlow's kernel also takes a scalar for a shape of one dimension.
        let spec = match ctx.input(1).shape().rank() {
            0 => index_values("Reshape", 1, ctx.input(1))?,
            _ => index_vector("Reshape", 1, ctx.input(1))?,
        };
        let x = ctx.input(0);
        let shape = reshape_target(x.shape(), &spec)?;
        let y = x.reshape(shape)?;
        ctx.push_output(y);
        Ok(())
    }
}

/// `Fill(dims, value)`: TensorFlow's two-input form.
pub(super) fn fill_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    sync(FillDimsKernel(Place::of(init)))
}

struct FillDimsKernel(Place);

fn fill<T: StorageElement>(v: &[T], shape: Shape, place: &Place) -> Result<Tensor, KernelError> {
    let first = *v.first().ok_or_else(|| {
        KernelError::InvalidArgument("Fill needs a scalar value, got none".into())
    })?;
    filled(shape.num_elements(), first, place)?.into_tensor(shape)
}

impl Kernel for FillDimsKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let shape = dims_shape("Fill", &index_vector("Fill", 0, ctx.input(0))?)?;
        let value = ctx.input(1);
        // TensorFlow's kernel also takes a vector of one element (its shape inference
        // refuses one whose rank is known).
        if !(value.shape().is_scalar() || value.dims() == [1]) {
            return Err(KernelError::InvalidArgument(format!(
                "Fill needs a scalar value, got shape {}",
                value.shape()
            )));
        }
        let place = &self.0;
        let out = match value.storage() {
            Storage::F32(v) => fill(v, shape, place)?,
            Storage::F64(v) => fill(v, shape, place)?,
            Storage::I32(v) => fill(v, shape, place)?,
            Storage::I64(v) => fill(v, shape, place)?,
            Storage::Bool(v) => fill(v, shape, place)?,
            _ => {
                return Err(KernelError::InvalidArgument(
                    "Fill's value is not in host memory".into(),
                ))
            }
        };
        ctx.push_output(out);
        Ok(())
    }
}
