//! Shape rules of the standard ops, shared by every backend so that all of them accept
//! the same inputs and word their errors the same way. Each function returns a
//! [`KernelError::InvalidArgument`] naming the op and the shapes involved.
//!
//! They apply the rules of graph construction's shape inference
//! ([`crate::graph::shape_inference::rules`]) to actual shapes, so a graph that builds
//! fails at run time only where its shapes were not known when it was built.

use crate::graph::shape_inference::{rules, PartialShape, ShapeError};
use crate::kernel::KernelError;
use crate::tensor::Shape;

fn invalid(e: ShapeError) -> KernelError {
    KernelError::InvalidArgument(e.to_string())
}

/// A rule's result on fully known inputs, which is fully known.
fn known(op: &str, shape: PartialShape) -> Result<Shape, KernelError> {
    if let Some(s) = shape.to_shape() {
        return Ok(s);
    }
    Err(if shape.is_fully_known() {
        KernelError::InvalidArgument(format!("{op}: shape {shape} is too large"))
    } else {
        KernelError::Internal(format!("{op}: shape {shape} inferred from known shapes"))
    })
}

/// A shape attribute with every dimension known (no -1).
///
/// # Errors
/// [`KernelError::InvalidArgument`], naming the op and the attribute, when a dimension
/// is unknown (-1), negative or too large.
pub fn known_shape(op: &str, attr: &str, dims: &[i64]) -> Result<Shape, KernelError> {
    rules::known_dims(op, attr, dims).map_err(invalid)
}

/// `axis` (negative counts from the end) as an index into a shape of rank `rank`.
///
/// # Errors
/// [`KernelError::InvalidArgument`], naming the op and the shapes, when `axis` is outside
/// `-rank..rank`.
pub fn normalize_axis(op: &str, axis: i64, rank: usize) -> Result<usize, KernelError> {
    rules::normalize_axis(op, axis, rank).map_err(invalid)
}

/// The numpy broadcast of two shapes.
///
/// # Errors
/// [`KernelError::InvalidArgument`], naming the op and the shapes, when the shapes do not
/// broadcast, or the result is too large.
pub fn broadcast_shape(a: &Shape, b: &Shape) -> Result<Shape, KernelError> {
    let shape = rules::broadcast(&a.into(), &b.into()).map_err(invalid)?;
    known("broadcast", shape)
}

/// The target of a `Reshape` of a tensor of `input` shape to `spec` (one -1 inferred).
/// Every product is checked: a target whose element count overflows is an error, never
/// a shape that wraps around to the input's count.
///
/// # Errors
/// [`KernelError::InvalidArgument`], naming the op and the shapes, when `spec` is malformed
/// (two -1s, a negative dimension) or does not hold the input's element count.
pub fn reshape_target(input: &Shape, spec: &[i64]) -> Result<Shape, KernelError> {
    let shape = rules::reshape(&input.into(), spec).map_err(invalid)?;
    known("Reshape", shape)
}

/// `(m, k, n)` of `MatMul(a, b)`: after the transposes `a` is `[m, k]` and `b` is `[k, n]`.
///
/// # Errors
/// [`KernelError::InvalidArgument`], naming the op and the shapes, when an operand is not a
/// matrix or the inner dimensions differ.
pub fn matmul_dims(
    a: &Shape,
    b: &Shape,
    transpose_a: bool,
    transpose_b: bool,
) -> Result<(usize, usize, usize), KernelError> {
    let dims = rules::matmul(&a.into(), &b.into(), transpose_a, transpose_b).map_err(invalid)?;
    match (dims.m, dims.k, dims.n) {
        (Some(m), Some(k), Some(n)) => Ok((m, k, n)),
        _ => Err(KernelError::Internal(format!(
            "MatMul: dimensions of {a} and {b} inferred from known shapes"
        ))),
    }
}

/// The output shape of `Sum`/`Mean` over `axis` (all axes when `None`), and the axis as
/// an index.
///
/// # Errors
/// [`KernelError::InvalidArgument`], naming the op and the shapes, when `axis` is out of
/// range for the input's rank.
pub fn reduced_shape(
    op: &str,
    input: &Shape,
    axis: Option<i64>,
    keep_dims: bool,
) -> Result<(Shape, Option<usize>), KernelError> {
    let (shape, axis) = rules::reduce(op, &input.into(), axis, keep_dims).map_err(invalid)?;
    Ok((known(op, shape)?, axis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_count_from_either_end() {
        assert_eq!(normalize_axis("Sum", 0, 3).unwrap(), 0);
        assert_eq!(normalize_axis("Sum", -1, 3).unwrap(), 2);
        assert_eq!(normalize_axis("Sum", -3, 3).unwrap(), 0);
        assert!(normalize_axis("Sum", 3, 3).is_err());
        assert!(normalize_axis("Sum", -4, 3).is_err());
        let e = normalize_axis("Mean", 0, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument: Mean: axis 0 is out of range for a tensor of rank 0"
        );
    }

    #[test]
    fn shapes_reject_unknown_dimensions() {
        assert_eq!(
            known_shape("Fill", "shape", &[2, 3]).unwrap().dims(),
            &[2, 3]
        );
        let e = known_shape("Fill", "shape", &[-1, 3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument: Fill attribute \"shape\" must have non-negative dimensions, \
             got [-1, 3]"
        );
    }

    #[test]
    fn reshape_infers_one_dimension_and_names_mismatches() {
        let s = Shape::new(&[2, 6]).unwrap();
        assert_eq!(reshape_target(&s, &[3, -1]).unwrap().dims(), &[3, 4]);
        assert_eq!(reshape_target(&s, &[12]).unwrap().dims(), &[12]);
        let e = reshape_target(&s, &[5, -1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument: cannot reshape a tensor of shape [2, 6] (12 elements) into shape [5, -1]"
        );
        assert!(reshape_target(&s, &[-1, -1]).is_err());
        // TensorFlow's inference for an empty tensor into a shape with a zero.
        let empty = Shape::new(&[0]).unwrap();
        assert_eq!(reshape_target(&empty, &[0, -1]).unwrap().dims(), &[0, 1]);
        assert!(reshape_target(&Shape::new(&[3]).unwrap(), &[0, -1]).is_err());
    }

    #[test]
    fn reshape_targets_that_overflow_are_errors() {
        let four = Shape::new(&[4]).unwrap();
        // 4 * (2^62 + 1) wraps to 4 in 64 bits: it must not pass for a 4-element shape.
        let e = reshape_target(&four, &[4, (1 << 62) + 1]).unwrap_err();
        assert!(e.to_string().contains("cannot reshape"), "{e}");
        assert!(reshape_target(&four, &[1 << 32, 1 << 32, -1]).is_err());
        assert!(reshape_target(&four, &[i64::MAX, i64::MAX]).is_err());
        assert!(reshape_target(&Shape::new(&[0]).unwrap(), &[0, 1 << 62, 1 << 62]).is_err());
    }

    #[test]
    fn shape_attributes_that_overflow_are_errors() {
        let e = known_shape("Fill", "shape", &[1 << 32, 1 << 32]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid argument: Fill attribute \"shape\": shape [4294967296, 4294967296] is too large"),
            "{e}"
        );
    }

    #[test]
    fn matmul_checks_rank_and_inner_dimensions() {
        let (a, b) = (Shape::new(&[2, 3]).unwrap(), Shape::new(&[4, 3]).unwrap());
        assert_eq!(matmul_dims(&a, &b, false, true).unwrap(), (2, 3, 4));
        let e = matmul_dims(&a, &b, false, false).unwrap_err().to_string();
        assert!(e.contains("[2, 3] and [4, 3] do not match"), "{e}");
        assert!(matmul_dims(&Shape::new(&[3]).unwrap(), &b, false, false).is_err());
    }

    #[test]
    fn reductions_keep_or_drop_the_axis() {
        let s = Shape::new(&[3, 4]).unwrap();
        assert_eq!(
            reduced_shape("Sum", &s, Some(-1), false).unwrap().0.dims(),
            &[3]
        );
        assert_eq!(
            reduced_shape("Sum", &s, Some(0), true).unwrap().0.dims(),
            &[1, 4]
        );
        assert_eq!(
            reduced_shape("Sum", &s, None, true).unwrap().0.dims(),
            &[1, 1]
        );
        assert!(reduced_shape("Mean", &s, Some(2), false).is_err());
    }
}
