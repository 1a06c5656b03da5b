//! The shape rules of the standard ops over partial shapes: broadcasting, matrix
//! products, reshapes, reductions, axes and shape attributes.
//!
//! These are the one source of truth for the rules: graph construction applies them to
//! what it knows (the standard ops' shape functions), and the kernels apply them to
//! actual shapes through [`crate::shape_fn`], which wraps them. On fully known shapes a
//! rule gives a fully known result, and the same words in its error. Every count is
//! computed without overflow.

use smallvec::SmallVec;

use super::context::ShapeError;
use super::partial_shape::{Count, PartialShape};
use crate::tensor::Shape;

/// `axis` (negative counts from the end) as an index into a shape of rank `rank`.
///
/// # Errors
/// An axis outside `-rank..rank`.
pub fn normalize_axis(op: &str, axis: i64, rank: usize) -> Result<usize, ShapeError> {
    let r = rank as i128;
    let a = if axis < 0 {
        i128::from(axis) + r
    } else {
        i128::from(axis)
    };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(ShapeError::new(format!(
            "{op}: axis {axis} is out of range for a tensor of rank {rank}"
        )))
    }
}

/// A shape attribute with every dimension known (no -1), as `Fill` and `RandomUniform`
/// take.
///
/// # Errors
/// A negative dimension, or dimensions whose element count does not fit.
pub fn known_dims(op: &str, attr: &str, dims: &[i64]) -> Result<Shape, ShapeError> {
    let mut out = Vec::with_capacity(dims.len());
    for &d in dims {
        match usize::try_from(d) {
            Ok(d) => out.push(d),
            Err(_) => {
                return Err(ShapeError::new(format!(
                    "{op} attribute {attr:?} must have non-negative dimensions, got {dims:?}"
                )))
            }
        }
    }
    Shape::new(&out).map_err(|e| ShapeError::new(format!("{op} attribute {attr:?}: {e}")))
}

/// The numpy broadcast of two shapes. A dimension known on one side only: a 1 gives an
/// unknown result (the other side decides), anything else is the result.
///
/// # Errors
/// Two known dimensions that differ, neither being 1.
pub fn broadcast(a: &PartialShape, b: &PartialShape) -> Result<PartialShape, ShapeError> {
    let (Some(da), Some(db)) = (a.dims(), b.dims()) else {
        return Ok(PartialShape::unknown());
    };
    let rank = da.len().max(db.len());
    let at = |d: &[Option<usize>], i: usize| -> Option<usize> {
        // Missing leading dimensions are 1s.
        match (i + d.len()).checked_sub(rank) {
            Some(j) => d[j],
            None => Some(1),
        }
    };
    let mut out: SmallVec<[Option<usize>; 4]> = SmallVec::with_capacity(rank);
    for i in 0..rank {
        out.push(match (at(da, i), at(db, i)) {
            (Some(x), Some(y)) if x == y => Some(x),
            (Some(1), y) => y,
            (x, Some(1)) => x,
            (Some(x), None) | (None, Some(x)) => Some(x),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(ShapeError::new(format!(
                    "shapes {a} and {b} cannot be broadcast together"
                )))
            }
        });
    }
    Ok(PartialShape::new(&out))
}

/// The dimensions of a matrix product `[m, k] x [k, n]`, as far as known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatMulDims {
    /// Rows of the result.
    pub m: Option<usize>,
    /// The shared (contracted) dimension.
    pub k: Option<usize>,
    /// Columns of the result.
    pub n: Option<usize>,
}

impl MatMulDims {
    /// The shape of the result, `[m, n]`.
    pub fn shape(&self) -> PartialShape {
        PartialShape::new(&[self.m, self.n])
    }
}

/// `MatMul(a, b)`: after the transposes `a` is `[m, k]` and `b` is `[k, n]`.
///
/// # Errors
/// A known rank other than 2, or inner dimensions known to differ.
pub fn matmul(
    a: &PartialShape,
    b: &PartialShape,
    transpose_a: bool,
    transpose_b: bool,
) -> Result<MatMulDims, ShapeError> {
    let matrix = |s: &PartialShape| -> Result<[Option<usize>; 2], ShapeError> {
        match s.dims() {
            None => Ok([None, None]),
            Some(&[r, c]) => Ok([r, c]),
            Some(_) => Err(ShapeError::new(format!(
                "MatMul needs two matrices (rank 2), got shapes {a} and {b}"
            ))),
        }
    };
    let ([ar, ac], [br, bc]) = (matrix(a)?, matrix(b)?);
    let (m, k) = if transpose_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if transpose_b { (bc, br) } else { (br, bc) };
    if let (Some(k), Some(k2)) = (k, k2) {
        if k != k2 {
            return Err(ShapeError::new(format!(
                "MatMul shapes {a} and {b} do not match (transpose_a={transpose_a}, \
                 transpose_b={transpose_b}): {k} columns against {k2} rows"
            )));
        }
    }
    Ok(MatMulDims { m, k: k.or(k2), n })
}

/// The target of a `Reshape` of a tensor of `input` shape to `spec` (one -1 inferred when
/// the element count is known).
///
/// # Errors
/// A malformed `spec` (a dimension below -1, more than one -1, a -1 beside a 0), or an
/// element count that cannot match: different known counts, or a known count that the
/// known dimensions of `input` do not divide.
pub fn reshape(input: &PartialShape, spec: &[i64]) -> Result<PartialShape, ShapeError> {
    let total = input.element_count();
    let fail = || {
        let count = match total.and_then(Count::known) {
            Some(n) => format!(" ({n} elements)"),
            None => String::new(),
        };
        ShapeError::new(format!(
            "cannot reshape a tensor of shape {input}{count} into shape {spec:?}"
        ))
    };
    if spec.iter().any(|d| *d < -1) || spec.iter().filter(|d| **d == -1).count() > 1 {
        return Err(fail());
    }
    // Every dimension is now -1 or fits a usize.
    let dim = |d: i64| usize::try_from(d).ok();
    let wanted = spec
        .iter()
        .filter_map(|d| dim(*d))
        .fold(Count::ONE, Count::times);
    let mut dims: SmallVec<[Option<usize>; 4]> = spec.iter().map(|d| dim(*d)).collect();
    if let Some(slot) = spec.iter().position(|d| *d == -1) {
        // The inferred dimension is total / wanted, which must divide evenly. An empty
        // input into a spec with a zero is TensorFlow's case: the inferred dimension is
        // the product of the input's non-zero dimensions over the spec's, rounded down
        // (`[0, 3]` into `[-1, 0]` is `[3, 0]`).
        let inferred = match (total, wanted) {
            (Some(Count::Exact(0)), Count::Exact(0)) => {
                let nonzero = |dims: &mut dyn Iterator<Item = usize>| {
                    dims.filter(|d| *d != 0).fold(Count::ONE, Count::times)
                };
                let have = nonzero(&mut input.dims().unwrap_or_default().iter().flatten().copied());
                let per = nonzero(&mut spec.iter().filter_map(|d| dim(*d)));
                match (have, per) {
                    (Count::Exact(h), Count::Exact(p)) if p > 0 => {
                        Some(usize::try_from(h / p).map_err(|_| fail())?)
                    }
                    _ => None,
                }
            }
            // An input of unknown size may turn out empty.
            (None, Count::Exact(0)) => None,
            (_, Count::Exact(0)) => return Err(fail()),
            (Some(Count::Exact(0)), _) => Some(0),
            (Some(Count::Exact(n)), Count::Exact(w)) if n % w == 0 => {
                Some(usize::try_from(n / w).map_err(|_| fail())?)
            }
            (Some(Count::Exact(_)), _) => return Err(fail()),
            (Some(Count::Huge), _) | (None, _) => None,
        };
        dims[slot] = inferred;
        return Ok(PartialShape::new(&dims));
    }
    match total {
        Some(Count::Huge) => {}
        Some(n) if n != wanted => return Err(fail()),
        Some(_) => {}
        None if input.rank().is_some() => {
            // Unknown dimensions multiply the known ones: the wanted count must be a
            // multiple of their product (or zero).
            match (input.known_count(), wanted) {
                (_, Count::Exact(0)) | (Count::Huge, _) | (_, Count::Huge) => {}
                (Count::Exact(0), _) => return Err(fail()),
                (Count::Exact(p), Count::Exact(w)) if w % p != 0 => return Err(fail()),
                _ => {}
            }
        }
        None => {}
    }
    Ok(PartialShape::new(&dims))
}

/// The output shape of `Sum`/`Mean` over `axis` (every axis when `None`), and the axis as
/// an index when the rank is known.
///
/// # Errors
/// An axis out of range for a known rank.
pub fn reduce(
    op: &str,
    input: &PartialShape,
    axis: Option<i64>,
    keep_dims: bool,
) -> Result<(PartialShape, Option<usize>), ShapeError> {
    let Some(dims) = input.dims() else {
        return Ok(match (axis, keep_dims) {
            (None, false) => (PartialShape::scalar(), None),
            _ => (PartialShape::unknown(), None),
        });
    };
    match axis {
        None if keep_dims => Ok((PartialShape::new(&vec![Some(1); dims.len()]), None)),
        None => Ok((PartialShape::scalar(), None)),
        Some(a) => {
            let axis = normalize_axis(op, a, dims.len())?;
            let mut dims = dims.to_vec();
            if keep_dims {
                dims[axis] = Some(1);
            } else {
                dims.remove(axis);
            }
            Ok((PartialShape::new(&dims), Some(axis)))
        }
    }
}

/// Checks the value of a `Fill`: a scalar, or (as TensorFlow accepts) a vector of one
/// element.
///
/// # Errors
/// A known rank above 1, or a known dimension other than 1.
pub fn fill_value(value: &PartialShape) -> Result<(), ShapeError> {
    let dims = value.dims().unwrap_or_default();
    if dims.len() > 1 || dims.iter().flatten().any(|d| *d != 1) {
        return Err(ShapeError::new(format!(
            "Fill needs a scalar value, got shape {value}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fully known partial shape (which, unlike a `Shape`, may be too large).
    fn known_dims_of(d: &[usize]) -> PartialShape {
        PartialShape::new(&d.iter().map(|&x| Some(x)).collect::<Vec<_>>())
    }

    fn p(dims: &[Option<usize>]) -> PartialShape {
        PartialShape::new(dims)
    }

    fn k(dims: &[usize]) -> PartialShape {
        known_dims_of(dims)
    }

    const U: Option<usize> = None;

    #[test]
    fn axes_count_from_either_end() {
        assert_eq!(normalize_axis("Sum", -1, 3).unwrap(), 2);
        assert!(normalize_axis("Sum", i64::MIN, 3).is_err());
        assert!(normalize_axis("Sum", i64::MAX, 3).is_err());
    }

    #[test]
    fn broadcast_known_partial_and_unknown() {
        assert_eq!(broadcast(&k(&[3, 1]), &k(&[4])).unwrap(), k(&[3, 4]));
        assert_eq!(broadcast(&k(&[]), &k(&[2, 2])).unwrap(), k(&[2, 2]));
        let e = broadcast(&k(&[3]), &k(&[4])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shapes [3] and [4] cannot be broadcast together"
        );
        // One side unknown: a known non-1 dimension wins, a 1 leaves it open.
        assert_eq!(
            broadcast(&p(&[U, Some(1)]), &p(&[Some(5), U])).unwrap(),
            p(&[Some(5), U])
        );
        assert_eq!(
            broadcast(&p(&[U]), &k(&[1, 3])).unwrap(),
            p(&[Some(1), Some(3)])
        );
        assert_eq!(broadcast(&p(&[U]), &k(&[0])).unwrap(), k(&[0]));
        assert_eq!(
            broadcast(&PartialShape::unknown(), &k(&[3])).unwrap(),
            PartialShape::unknown()
        );
        let e = broadcast(&p(&[U, Some(2)]), &k(&[3])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shapes [?, 2] and [3] cannot be broadcast together"
        );
    }

    #[test]
    fn matmul_checks_what_is_known() {
        let d = matmul(&k(&[2, 3]), &k(&[4, 3]), false, true).unwrap();
        assert_eq!((d.m, d.k, d.n), (Some(2), Some(3), Some(4)));
        assert_eq!(d.shape(), k(&[2, 4]));
        let e = matmul(&k(&[1, 2]), &k(&[3, 1]), false, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MatMul shapes [1, 2] and [3, 1] do not match (transpose_a=false, \
             transpose_b=false): 2 columns against 3 rows"
        );
        let d = matmul(&p(&[U, Some(3)]), &PartialShape::unknown(), false, false).unwrap();
        assert_eq!((d.m, d.k, d.n), (None, Some(3), None));
        let d = matmul(&p(&[U, U]), &k(&[3, 7]), false, false).unwrap();
        assert_eq!(d.shape(), p(&[U, Some(7)]));
        let e = matmul(&p(&[U]), &PartialShape::unknown(), false, false).unwrap_err();
        assert!(e.to_string().contains("rank 2"), "{e}");
        assert!(matmul(&p(&[Some(2), U]), &k(&[3, 4]), true, false).is_err());
    }

    #[test]
    fn reshape_with_known_input() {
        let s = k(&[2, 6]);
        assert_eq!(reshape(&s, &[3, -1]).unwrap(), k(&[3, 4]));
        assert_eq!(reshape(&s, &[12]).unwrap(), k(&[12]));
        let e = reshape(&s, &[5, -1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot reshape a tensor of shape [2, 6] (12 elements) into shape [5, -1]"
        );
        assert!(reshape(&s, &[5, 2]).is_err());
        assert!(reshape(&s, &[-1, -1]).is_err());
        assert!(reshape(&s, &[-2, 6]).is_err());
        assert!(reshape(&k(&[3]), &[0, -1]).is_err());
        assert_eq!(reshape(&k(&[0, 4]), &[2, -1]).unwrap(), k(&[2, 0]));
        // An empty tensor into a shape with a zero, as TensorFlow 2.21 infers it.
        for (input, spec, want) in [
            (&[0][..], &[-1][..], &[0][..]),
            (&[0, 3], &[-1, 3], &[0, 3]),
            (&[0, 3], &[0, -1], &[0, 3]),
            (&[0, 3], &[3, -1], &[3, 0]),
            (&[0, 3], &[-1, 0], &[3, 0]),
            (&[0], &[2, -1], &[2, 0]),
            (&[0, 6], &[0, -1, 2], &[0, 3, 2]),
            (&[0, 3], &[0, -1, 2], &[0, 1, 2]),
            (&[0, 4, 0], &[0, -1], &[0, 4]),
            (&[0, 4, 0], &[-1, 2, 0], &[2, 2, 0]),
            (&[2, 0], &[-1, 0, 5], &[0, 0, 5]),
            (&[0], &[-1, 0], &[1, 0]),
            (&[0, 3], &[2, -1, 0], &[2, 1, 0]),
            (&[0, 3], &[0, 0, -1], &[0, 0, 3]),
            (&[0], &[0, -1], &[0, 1]),
            (&[0, 3], &[4, -1], &[4, 0]),
        ] {
            assert_eq!(
                reshape(&k(input), spec).unwrap(),
                k(want),
                "{input:?} {spec:?}"
            );
        }
        // Counts beyond usize never wrap into a match.
        let huge = (1i64 << 62) + 1;
        assert!(reshape(&k(&[4]), &[4, huge]).is_err());
        assert!(reshape(&k(&[4]), &[huge, huge, huge, -1]).is_err());
        assert!(reshape(&k(&[4]), &[i64::MAX, i64::MAX, i64::MAX]).is_err());
    }

    #[test]
    fn reshape_with_partial_input() {
        assert_eq!(
            reshape(&p(&[U, Some(6)]), &[-1, 3]).unwrap(),
            p(&[U, Some(3)])
        );
        assert_eq!(reshape(&p(&[U, Some(6)]), &[4, 3]).unwrap(), k(&[4, 3]));
        let e = reshape(&p(&[U, Some(5)]), &[3, 4]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot reshape a tensor of shape [?, 5] into shape [3, 4]"
        );
        assert!(reshape(&p(&[U, Some(0)]), &[3]).is_err());
        assert_eq!(reshape(&p(&[U, Some(5)]), &[0]).unwrap(), k(&[0]));
        assert_eq!(
            reshape(&PartialShape::unknown(), &[-1, 2]).unwrap(),
            p(&[U, Some(2)])
        );
        assert_eq!(reshape(&PartialShape::unknown(), &[7]).unwrap(), k(&[7]));
        // The input may turn out empty: TensorFlow's rule then decides at run time.
        assert_eq!(
            reshape(&PartialShape::unknown(), &[0, -1]).unwrap(),
            p(&[Some(0), U])
        );
    }

    #[test]
    fn reductions_over_partial_shapes() {
        assert_eq!(
            reduce("Sum", &k(&[3, 4]), Some(-1), false).unwrap().0,
            k(&[3])
        );
        assert_eq!(
            reduce("Sum", &p(&[U, Some(4)]), Some(0), true).unwrap(),
            (p(&[Some(1), Some(4)]), Some(0))
        );
        assert_eq!(
            reduce("Sum", &p(&[U, U]), None, true).unwrap().0,
            k(&[1, 1])
        );
        let unknown = PartialShape::unknown();
        assert_eq!(reduce("Mean", &unknown, None, false).unwrap().0, k(&[]));
        assert_eq!(reduce("Mean", &unknown, Some(9), false).unwrap().0, unknown);
        assert_eq!(reduce("Mean", &unknown, None, true).unwrap().0, unknown);
        let e = reduce("Mean", &p(&[U, U]), Some(2), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Mean: axis 2 is out of range for a tensor of rank 2"
        );
    }

    #[test]
    fn fill_values_hold_one_element() {
        assert!(fill_value(&k(&[])).is_ok());
        assert!(fill_value(&k(&[1])).is_ok());
        assert!(fill_value(&p(&[U])).is_ok());
        // TensorFlow takes a scalar or a one-element vector, nothing of higher rank.
        assert!(fill_value(&k(&[1, 1])).is_err());
        assert!(fill_value(&PartialShape::unknown()).is_ok());
        let e = fill_value(&p(&[U, Some(2)])).unwrap_err();
        assert_eq!(e.to_string(), "Fill needs a scalar value, got shape [?, 2]");
    }

    #[test]
    fn known_dims_reject_unknown_ones() {
        assert_eq!(
            known_dims("Fill", "shape", &[2, 3]).unwrap(),
            Shape::new(&[2, 3]).unwrap()
        );
        assert!(known_dims("Fill", "shape", &[-1, 3]).is_err());
    }
}
