//! Shape rules of the standard ops, shared by every backend so that all of them accept
//! the same inputs and word their errors the same way. Each function returns a
//! [`KernelError::InvalidArgument`] naming the op and the shapes involved.

use crate::kernel::KernelError;
use crate::tensor::{IntoShape, Shape};

/// A shape attribute with every dimension known (no -1) and an element count that fits.
pub fn known_shape(op: &str, attr: &str, dims: &[i64]) -> Result<Shape, KernelError> {
    let mut out = Vec::with_capacity(dims.len());
    for &d in dims {
        match usize::try_from(d) {
            Ok(d) => out.push(d),
            Err(_) => {
                return Err(KernelError::InvalidArgument(format!(
                    "{op} attribute {attr:?} must have non-negative dimensions, got {dims:?}"
                )))
            }
        }
    }
    out.into_shape()
        .map_err(|e| KernelError::InvalidArgument(format!("{op} attribute {attr:?}: {e}")))
}

/// `axis` (negative counts from the end) as an index into a shape of rank `rank`.
pub fn normalize_axis(op: &str, axis: i64, rank: usize) -> Result<usize, KernelError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(KernelError::InvalidArgument(format!(
            "{op}: axis {axis} is out of range for a tensor of rank {rank}"
        )))
    }
}

/// The numpy broadcast of two shapes.
pub fn broadcast_shape(a: &Shape, b: &Shape) -> Result<Shape, KernelError> {
    Ok(Shape::broadcast(a, b)?)
}

/// The target of a `Reshape` of a tensor of `input` shape to `spec` (one -1 inferred).
/// Every product is checked: a target whose element count overflows is an error, never
/// a shape that wraps around to the input's count.
pub fn reshape_target(input: &Shape, spec: &[i64]) -> Result<Shape, KernelError> {
    let n = input.num_elements();
    let fail = || {
        KernelError::InvalidArgument(format!(
            "cannot reshape a tensor of shape {input} ({n} elements) into shape {spec:?}"
        ))
    };
    if spec.iter().any(|d| *d < -1) || spec.iter().filter(|d| **d == -1).count() > 1 {
        return Err(fail());
    }
    let dim = |d: i64| usize::try_from(d).map_err(|_| fail());
    let dims: Vec<usize> = if spec.contains(&-1) {
        let known = spec
            .iter()
            .filter(|d| **d != -1)
            .try_fold(1usize, |acc, &d| acc.checked_mul(dim(d).ok()?))
            .ok_or_else(fail)?;
        if known == 0 || n % known != 0 {
            return Err(fail());
        }
        spec.iter()
            .map(|&d| if d == -1 { Ok(n / known) } else { dim(d) })
            .collect::<Result<_, _>>()?
    } else {
        spec.iter().map(|&d| dim(d)).collect::<Result<_, _>>()?
    };
    let shape = dims.into_shape().map_err(|_| fail())?;
    if shape.num_elements() != n {
        return Err(fail());
    }
    Ok(shape)
}

/// `(m, k, n)` of `MatMul(a, b)`: after the transposes `a` is `[m, k]` and `b` is `[k, n]`.
pub fn matmul_dims(
    a: &Shape,
    b: &Shape,
    transpose_a: bool,
    transpose_b: bool,
) -> Result<(usize, usize, usize), KernelError> {
    let ([ar, ac], [br, bc]) = match (a.dims(), b.dims()) {
        (&[ar, ac], &[br, bc]) => ([ar, ac], [br, bc]),
        _ => {
            return Err(KernelError::InvalidArgument(format!(
                "MatMul needs two matrices (rank 2), got shapes {a} and {b}"
            )))
        }
    };
    let (m, k) = if transpose_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if transpose_b { (bc, br) } else { (br, bc) };
    if k != k2 {
        return Err(KernelError::InvalidArgument(format!(
            "MatMul shapes {a} and {b} do not match (transpose_a={transpose_a}, \
             transpose_b={transpose_b}): {k} columns against {k2} rows"
        )));
    }
    Ok((m, k, n))
}

/// The output shape of `Sum`/`Mean` over `axis` (all axes when `None`), and the axis as
/// an index.
pub fn reduced_shape(
    op: &str,
    input: &Shape,
    axis: Option<i64>,
    keep_dims: bool,
) -> Result<(Shape, Option<usize>), KernelError> {
    match axis {
        None if keep_dims => Ok((vec![1; input.rank()].into_shape()?, None)),
        None => Ok((Shape::scalar(), None)),
        Some(a) => {
            let axis = normalize_axis(op, a, input.rank())?;
            let mut dims = input.dims().to_vec();
            if keep_dims {
                dims[axis] = 1;
            } else {
                dims.remove(axis);
            }
            Ok((dims.into_shape()?, Some(axis)))
        }
    }
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
        assert!(reshape_target(&Shape::new(&[0]).unwrap(), &[0, -1]).is_err());
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
