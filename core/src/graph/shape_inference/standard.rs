//! The shape functions of the standard op set (attached to their definitions in
//! `std_ops.rs`), and [`unchanged_shape`] for any op whose output has its input's shape.

use super::context::InferenceContext;
use super::partial_shape::PartialShape;
use super::rules;
use crate::graph::error::OpDefError;

/// The shape function of an op whose one output has the shape of input 0 (elementwise
/// unary ops, `Identity`, `Cast`, `ZerosLike`); usable by custom ops.
///
/// # Errors
/// None: it only forwards what is known.
pub fn unchanged_shape(ctx: &InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError> {
    Ok(vec![ctx.input(0)])
}

/// `Const`: the shape of its `value`.
pub(crate) fn constant(ctx: &InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError> {
    Ok(vec![PartialShape::from(
        ctx.attrs().tensor("value")?.shape(),
    )])
}

/// `Placeholder`: its `shape` attribute (-1 for an unknown dimension), unknown without.
pub(crate) fn placeholder(ctx: &InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError> {
    if !ctx.attrs().contains("shape") {
        return Ok(vec![PartialShape::unknown()]);
    }
    Ok(vec![PartialShape::from_attr(&ctx.attrs().ints("shape")?)?])
}

/// `PlaceholderWithDefault`: unknown, since a feed may give it any shape.
pub(crate) fn placeholder_with_default(
    ctx: &InferenceContext<'_>,
) -> Result<Vec<PartialShape>, OpDefError> {
    Ok(ctx.unknown_outputs())
}

/// `NoOp` and other ops without outputs.
pub(crate) fn no_outputs(_: &InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError> {
    Ok(vec![])
}

/// `Add`, `Sub`, `Mul`, `Div`: the broadcast of both inputs.
pub(crate) fn broadcast(ctx: &InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError> {
    Ok(vec![rules::broadcast(&ctx.input(0), &ctx.input(1))?])
}

/// `MatMul`: `[m, k] x [k, n] = [m, n]` after the optional transposes.
pub(crate) fn matmul(ctx: &InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError> {
    let transpose_a = ctx.attrs().bool_or("transpose_a", false)?;
    let transpose_b = ctx.attrs().bool_or("transpose_b", false)?;
    let dims = rules::matmul(&ctx.input(0), &ctx.input(1), transpose_a, transpose_b)?;
    Ok(vec![dims.shape()])
}

/// `Sum`, `Mean`, `Prod`: the input without (or with a 1 at) the reduced axis. With the
/// axes as input 1 (TensorFlow's form), whose values are not known here: the input's
/// shape for no axes (an empty vector), else the rank when `keep_dims` is set or the
/// axes are one scalar.
pub(crate) fn reduction(ctx: &InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError> {
    if ctx.num_inputs() == 2 {
        let keep_dims = ctx.attrs().bool_or("keep_dims", false)?;
        let (input, axes) = (ctx.input(0), ctx.input(1));
        return Ok(vec![match (input.rank(), axes.dims()) {
            (_, Some([Some(0)])) => input,
            (Some(rank), _) if keep_dims => PartialShape::unknown_dims(rank),
            (Some(rank), Some([])) if rank > 0 => PartialShape::unknown_dims(rank - 1),
            _ => PartialShape::unknown(),
        }]);
    }
    let axis = ctx.attrs().opt_int("axis")?;
    let keep_dims = ctx.attrs().bool_or("keep_dims", false)?;
    let (shape, _) = rules::reduce(ctx.op(), &ctx.input(0), axis, keep_dims)?;
    Ok(vec![shape])
}

/// `Reshape`: the `shape` attribute, its -1 inferred when the element count is known.
/// With the shape as input 1 (TensorFlow's form), the rank when that input's length is
/// known.
pub(crate) fn reshape(ctx: &InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError> {
    if ctx.num_inputs() == 2 {
        return Ok(vec![rank_from_length(&ctx.input(1))]);
    }
    Ok(vec![rules::reshape(
        &ctx.input(0),
        &ctx.attrs().ints("shape")?,
    )?])
}

/// `Fill`: the `shape` attribute; the value must be a scalar or a one-element vector.
/// TensorFlow's form, `Fill(dims, value)`: a value of known shape must be a scalar (the
/// kernel also takes a one-element vector at run time, as TensorFlow's does), and the
/// rank is the length of `dims`.
pub(crate) fn fill(ctx: &InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError> {
    if ctx.num_inputs() == 2 {
        let value = ctx.input(1);
        if value.rank().is_some_and(|r| r != 0) {
            return Err(OpDefError::Shape(super::ShapeError::new(format!(
                "Fill needs a scalar value, got shape {value}"
            ))));
        }
        return Ok(vec![rank_from_length(&ctx.input(0))]);
    }
    rules::fill_value(&ctx.input(0))?;
    let shape = rules::known_dims(ctx.op(), "shape", &ctx.attrs().ints("shape")?)?;
    Ok(vec![PartialShape::from(shape)])
}

/// `RandomUniform`: the `shape` attribute.
pub(crate) fn random(ctx: &InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError> {
    let shape = rules::known_dims(ctx.op(), "shape", &ctx.attrs().ints("shape")?)?;
    Ok(vec![PartialShape::from(shape)])
}

/// A shape of unknown dimensions whose rank is the length of `vector` (a shape tensor),
/// when that length is known; unknown otherwise.
pub(crate) fn rank_from_length(vector: &PartialShape) -> PartialShape {
    match vector.dims() {
        Some([Some(n)]) => PartialShape::unknown_dims(*n),
        _ => PartialShape::unknown(),
    }
}
