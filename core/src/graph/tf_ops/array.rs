//! Shape and data-movement ops of TensorFlow's graphs, with TensorFlow's inputs and
//! attributes:
//!
//! - `Shape(x)`: the dimensions of `x` as a vector (`out_type`, `i32` by default);
//! - `ExpandDims(x, axis)`: a 1 inserted at `axis` (in `-rank-1..=rank`);
//! - `Squeeze(x)`: the dimensions listed in `squeeze_dims` removed (each must be 1), or
//!   every dimension of size 1 when the list is empty;
//! - `Pack(v_0, ..., v_{N-1})`: the inputs (one shape) stacked along a new `axis`;
//!   `Unpack(x)`: the inverse, `num` outputs (at most 65536);
//! - `ConcatV2(v_0, ..., v_{N-1}, axis)`: the inputs (two or more) joined along `axis`;
//! - `Slice(x, begin, size)`: the block at `begin` of `size` (-1: to the end);
//! - `Tile(x, multiples)`: `x` repeated `multiples[i]` times along dimension `i`;
//! - `GatherV2(params, indices, axis)`: the slices of `params` along `axis` at `indices`
//!   (`batch_dims` 0 only);
//! - beyond the acceptance list: `Size(x)` (the element count, `out_type`), `Rank(x)`
//!   (`i32`), `Transpose(x, perm)`, `StopGradient(x)` (`x`: gradients are built by the
//!   client) and `OnesLike(x)`.

use super::super::op_def::{Arity, OpDef};
use super::super::shape_inference::{rules, unchanged_shape, PartialShape, ShapeError};
use super::super::std_ops::index;
use super::{all_same, index_attr};
use crate::graph::error::OpDefError;

/// The most outputs an `Unpack` may have: its `num` comes from the graph, and a node's
/// outputs are allocated when it is built, so a hostile graph must not name billions.
pub(crate) const MAX_UNPACK_OUTPUTS: usize = 1 << 16;

/// A shape of unknown dimensions with the rank of `s`, or unknown.
fn same_rank(s: &PartialShape) -> PartialShape {
    s.rank()
        .map_or_else(PartialShape::unknown, PartialShape::unknown_dims)
}

pub(super) fn ops() -> Vec<OpDef> {
    vec![
        OpDef::new("Shape", Arity::Exact(1), |_, attrs| {
            Ok(vec![index_attr(attrs, "out_type")?])
        })
        .with_shape_fn(|ctx| Ok(vec![PartialShape::new(&[ctx.input(0).rank()])])),
        OpDef::new("ExpandDims", Arity::Exact(2), |ins, _| {
            index(ins, 1)?;
            Ok(vec![ins[0]])
        })
        .with_shape_fn(|ctx| {
            Ok(vec![ctx
                .input(0)
                .rank()
                .map_or_else(PartialShape::unknown, |r| {
                    PartialShape::unknown_dims(r + 1)
                })])
        }),
        OpDef::new("Squeeze", Arity::Exact(1), |ins, attrs| {
            if attrs.contains("squeeze_dims") {
                attrs.ints("squeeze_dims")?;
            }
            Ok(vec![ins[0]])
        })
        .with_shape_fn(|ctx| {
            let axes = if ctx.attrs().contains("squeeze_dims") {
                ctx.attrs().ints("squeeze_dims")?
            } else {
                Vec::new()
            };
            Ok(vec![squeeze_shape(&ctx.input(0), &axes)?])
        }),
        OpDef::new("Pack", Arity::AtLeast(1), |ins, attrs| {
            attrs.opt_int("axis")?;
            Ok(vec![all_same(ins, 0, ins.len())?])
        })
        .with_shape_fn(|ctx| {
            let mut item = PartialShape::unknown();
            for s in ctx.inputs() {
                item = item.merge(s).ok_or_else(|| {
                    ShapeError::new(format!(
                        "Pack needs inputs of one shape, got {item} and {s}"
                    ))
                })?;
            }
            let Some(dims) = item.dims() else {
                return Ok(vec![PartialShape::unknown()]);
            };
            let axis = ctx.attrs().opt_int("axis")?.unwrap_or(0);
            let at = rules::normalize_axis("Pack", axis, dims.len() + 1)?;
            let mut out = dims.to_vec();
            out.insert(at, Some(ctx.num_inputs()));
            Ok(vec![PartialShape::new(&out)])
        }),
        OpDef::new("Unpack", Arity::Exact(1), |ins, attrs| {
            let num = attrs.int("num")?;
            attrs.opt_int("axis")?;
            let num = usize::try_from(num)
                .ok()
                .filter(|n| *n <= MAX_UNPACK_OUTPUTS)
                .ok_or_else(|| {
                    OpDefError::Invalid(format!(
                        "Unpack needs 0 <= num <= {MAX_UNPACK_OUTPUTS}, got {num}"
                    ))
                })?;
            Ok(vec![ins[0]; num])
        })
        .with_shape_fn(|ctx| {
            let num = ctx.num_outputs();
            let input = ctx.input(0);
            let Some(dims) = input.dims() else {
                return Ok(ctx.unknown_outputs());
            };
            let axis = ctx.attrs().opt_int("axis")?.unwrap_or(0);
            let at = rules::normalize_axis("Unpack", axis, dims.len())?;
            if dims[at].is_some_and(|d| d != num) {
                return Err(OpDefError::Shape(ShapeError::new(format!(
                    "Unpack of {num} along axis {axis} of shape {input}"
                ))));
            }
            let mut out = dims.to_vec();
            out.remove(at);
            Ok(vec![PartialShape::new(&out); num])
        }),
        OpDef::new("ConcatV2", Arity::AtLeast(3), |ins, _| {
            let n = ins.len() - 1;
            index(ins, n)?;
            Ok(vec![all_same(ins, 0, n)?])
        })
        .with_shape_fn(|ctx| {
            let values = &ctx.inputs()[..ctx.num_inputs() - 1];
            let mut rank = None;
            for s in values {
                match (rank, s.rank()) {
                    (Some(r), Some(q)) if r != q => {
                        return Err(OpDefError::Shape(ShapeError::new(format!(
                            "ConcatV2 needs inputs of one rank, got ranks {r} and {q}"
                        ))))
                    }
                    (None, q) => rank = q,
                    _ => {}
                }
            }
            Ok(vec![rank.map_or_else(
                PartialShape::unknown,
                PartialShape::unknown_dims,
            )])
        }),
        OpDef::new("Slice", Arity::Exact(3), |ins, _| {
            index(ins, 1)?;
            index(ins, 2)?;
            Ok(vec![ins[0]])
        })
        .with_shape_fn(|ctx| Ok(vec![same_rank(&ctx.input(0))])),
        OpDef::new("Tile", Arity::Exact(2), |ins, _| {
            index(ins, 1)?;
            Ok(vec![ins[0]])
        })
        .with_shape_fn(|ctx| Ok(vec![same_rank(&ctx.input(0))])),
        OpDef::new("Size", Arity::Exact(1), |_, attrs| {
            Ok(vec![index_attr(attrs, "out_type")?])
        })
        .with_shape_fn(|_| Ok(vec![PartialShape::scalar()])),
        OpDef::new("Rank", Arity::Exact(1), |_, _| {
            Ok(vec![crate::tensor::DType::I32])
        })
        .with_shape_fn(|_| Ok(vec![PartialShape::scalar()])),
        OpDef::new("Transpose", Arity::Exact(2), |ins, _| {
            index(ins, 1)?;
            Ok(vec![ins[0]])
        })
        .with_shape_fn(|ctx| Ok(vec![same_rank(&ctx.input(0))])),
        OpDef::new("StopGradient", Arity::Exact(1), |ins, _| Ok(vec![ins[0]]))
            .with_shape_fn(unchanged_shape),
        OpDef::new("OnesLike", Arity::Exact(1), |ins, _| Ok(vec![ins[0]]))
            .with_shape_fn(unchanged_shape),
        OpDef::new("GatherV2", Arity::Exact(3), |ins, attrs| {
            index(ins, 1)?;
            index(ins, 2)?;
            let batch_dims = attrs.opt_int("batch_dims")?.unwrap_or(0);
            if batch_dims != 0 {
                return Err(OpDefError::Invalid(format!(
                    "GatherV2 supports batch_dims 0 only, got {batch_dims}"
                )));
            }
            Ok(vec![ins[0]])
        })
        .with_shape_fn(|ctx| {
            Ok(vec![match (ctx.input(0).rank(), ctx.input(1).rank()) {
                (Some(p), Some(i)) if p > 0 => PartialShape::unknown_dims(p - 1 + i),
                _ => PartialShape::unknown(),
            }])
        }),
    ]
}

/// The shape after `Squeeze` of `axes` (every known 1 when empty).
fn squeeze_shape(input: &PartialShape, axes: &[i64]) -> Result<PartialShape, OpDefError> {
    let Some(dims) = input.dims() else {
        return Ok(PartialShape::unknown());
    };
    if axes.is_empty() {
        if dims.iter().any(Option::is_none) {
            return Ok(PartialShape::unknown());
        }
        let out: Vec<Option<usize>> = dims.iter().copied().filter(|d| *d != Some(1)).collect();
        return Ok(PartialShape::new(&out));
    }
    let mut drop = vec![false; dims.len()];
    for &a in axes {
        let at = rules::normalize_axis("Squeeze", a, dims.len())?;
        if dims[at].is_some_and(|d| d != 1) {
            return Err(OpDefError::Shape(ShapeError::new(format!(
                "Squeeze of dimension {a} of shape {input}, which is not 1"
            ))));
        }
        drop[at] = true;
    }
    let out: Vec<Option<usize>> = dims
        .iter()
        .zip(&drop)
        .filter(|(_, d)| !**d)
        .map(|(s, _)| *s)
        .collect();
    Ok(PartialShape::new(&out))
}
