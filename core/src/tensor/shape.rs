//! Tensor shapes: a list of dimension sizes, empty for a scalar, whose element count is
//! known to fit.
//!
//! This is the one place where element counts and byte sizes are computed. Every
//! [`Shape`] is checked when it is made ([`Shape::new`], [`IntoShape`], `TryFrom`,
//! deserialisation, [`Shape::broadcast`]): the product of its non-zero dimensions is at
//! most [`Shape::MAX_ELEMENTS`]. So [`Shape::num_elements`] and [`Shape::strides`] never
//! overflow, and code holding a `Shape` may multiply any of its dimensions together.
//! Byte sizes ([`Shape::num_bytes`], [`byte_size`]) are checked against the largest
//! allocation Rust allows (`isize::MAX` bytes).
//!
//! Zero dimensions count as one in the check: `[0, 2^40, 2^40]` is refused, although it
//! has no elements, because its strides would overflow.

use std::fmt;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::dtype::DType;

/// Why a shape could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// The product of the dimensions does not fit [`Shape::MAX_ELEMENTS`].
    #[error(
        "shape {dims:?} is too large: the product of its dimensions exceeds {} elements",
        Shape::MAX_ELEMENTS
    )]
    TooManyElements {
        /// The dimensions asked for.
        dims: Vec<usize>,
    },
    /// More dimensions than [`Shape::MAX_RANK`].
    #[error(
        "shape of rank {rank} has too many dimensions (at most {})",
        Shape::MAX_RANK
    )]
    TooManyDims {
        /// The rank asked for.
        rank: usize,
    },
    /// The elements of a dtype would take more bytes than any allocation can hold.
    #[error("shape {shape} of {dtype} needs {bytes} bytes, more than any allocation can hold")]
    TooManyBytes {
        /// The shape.
        shape: Shape,
        /// The dtype.
        dtype: DType,
        /// The bytes it would need.
        bytes: u128,
    },
    /// Two shapes have no numpy broadcast.
    #[error("shapes {a} and {b} cannot be broadcast together")]
    Incompatible {
        /// The left shape.
        a: Shape,
        /// The right shape.
        b: Shape,
    },
}

/// The dimensions of a tensor. Rank 0 (no dimensions) is a scalar.
///
/// Always valid: see the module docs. Make one with [`Shape::new`] (or pass dimensions
/// anywhere an [`IntoShape`] is taken).
///
/// ```
/// use magpie_core::Shape;
/// let s = Shape::new(&[2, 3])?;
/// assert_eq!(s.num_elements(), 6);
/// assert!(Shape::new(&[1 << 32, 1 << 32]).is_err());
/// # Ok::<(), magpie_core::tensor::ShapeError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<usize>", into = "Vec<usize>")]
pub struct Shape {
    dims: SmallVec<[usize; 4]>,
    /// The product of `dims` (checked when made).
    elements: usize,
}

/// The product of `dims`, or an error when the product of the non-zero ones exceeds
/// [`Shape::MAX_ELEMENTS`].
fn checked_elements(dims: &[usize]) -> Result<usize, ShapeError> {
    if dims.len() > Shape::MAX_RANK {
        return Err(ShapeError::TooManyDims { rank: dims.len() });
    }
    let mut nonzero: usize = 1;
    let mut empty = false;
    for &d in dims {
        if d == 0 {
            empty = true;
            continue;
        }
        nonzero = nonzero
            .checked_mul(d)
            .filter(|&n| n <= Shape::MAX_ELEMENTS)
            .ok_or_else(|| ShapeError::TooManyElements {
                dims: dims.to_vec(),
            })?;
    }
    Ok(if empty { 0 } else { nonzero })
}

/// Bytes of `elements` elements of `dtype`, or `None` when more than `isize::MAX` (no
/// allocation can be that large).
pub fn byte_size(dtype: DType, elements: usize) -> Option<usize> {
    elements
        .checked_mul(dtype.size_of())
        .filter(|&b| b <= isize::MAX as usize)
}

impl Shape {
    /// The largest element count (and product of non-zero dimensions) a shape may have:
    /// `isize::MAX`, which is TensorFlow's `int64` limit on 64-bit targets.
    pub const MAX_ELEMENTS: usize = isize::MAX as usize;

    /// The most dimensions a shape may have: TensorFlow's limit (254). Code that walks a
    /// shape's dimensions recursively (printing, broadcasting) may rely on it.
    pub const MAX_RANK: usize = 254;

    /// The shape of a scalar.
    #[inline]
    pub fn scalar() -> Shape {
        Shape {
            dims: SmallVec::new(),
            elements: 1,
        }
    }

    /// The rank-1 shape of a slice of `len` elements (at most `isize::MAX`, which is
    /// [`Shape::MAX_ELEMENTS`]).
    pub(crate) fn vector(len: usize) -> Shape {
        Shape::new(&[len]).expect("a slice's length is at most isize::MAX")
    }

    /// A shape from its dimensions.
    ///
    /// # Errors
    /// [`ShapeError::TooManyElements`] when the product of the non-zero dimensions exceeds
    /// [`Shape::MAX_ELEMENTS`]; [`ShapeError::TooManyDims`] beyond [`Shape::MAX_RANK`]
    /// dimensions.
    pub fn new(dims: &[usize]) -> Result<Shape, ShapeError> {
        let elements = checked_elements(dims)?;
        Ok(Shape {
            dims: SmallVec::from_slice(dims),
            elements,
        })
    }

    /// The dimensions.
    #[inline]
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The number of dimensions.
    #[inline]
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// The number of elements (1 for a scalar). Never overflows: checked when the shape
    /// was made.
    #[inline]
    pub fn num_elements(&self) -> usize {
        self.elements
    }

    /// Bytes the elements take in `dtype`.
    ///
    /// # Errors
    /// [`ShapeError::TooManyBytes`] when that exceeds `isize::MAX`.
    pub fn num_bytes(&self, dtype: DType) -> Result<usize, ShapeError> {
        byte_size(dtype, self.elements).ok_or_else(|| ShapeError::TooManyBytes {
            shape: self.clone(),
            dtype,
            bytes: self.elements as u128 * dtype.size_of() as u128,
        })
    }

    /// Whether this is a scalar shape.
    pub fn is_scalar(&self) -> bool {
        self.dims.is_empty()
    }

    /// Row-major strides in elements (never overflow: each is a product of non-zero
    /// dimensions or 0).
    pub fn strides(&self) -> SmallVec<[usize; 4]> {
        let mut strides: SmallVec<[usize; 4]> = SmallVec::from_elem(1, self.dims.len());
        for i in (0..self.dims.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.dims[i + 1];
        }
        strides
    }

    /// The numpy broadcast of two shapes.
    ///
    /// # Errors
    /// [`ShapeError::Incompatible`] when a pair of dimensions differs and neither is 1;
    /// [`ShapeError::TooManyElements`] when the broadcast is too large (`[2^40, 1]` and
    /// `[1, 2^40]`).
    pub fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, ShapeError> {
        let rank = a.rank().max(b.rank());
        let mut out: SmallVec<[usize; 4]> = SmallVec::from_elem(1, rank);
        for (i, o) in out.iter_mut().enumerate() {
            let da = if i < rank - a.rank() {
                1
            } else {
                a.dims[i - (rank - a.rank())]
            };
            let db = if i < rank - b.rank() {
                1
            } else {
                b.dims[i - (rank - b.rank())]
            };
            *o = match (da, db) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => {
                    return Err(ShapeError::Incompatible {
                        a: a.clone(),
                        b: b.clone(),
                    })
                }
            };
        }
        let elements = checked_elements(&out)?;
        Ok(Shape {
            dims: out,
            elements,
        })
    }
}

/// Anything a tensor constructor accepts as a shape: a [`Shape`], or dimensions
/// (`[2, 3]`, `&[usize]`, `Vec<usize>`) checked on the way in.
pub trait IntoShape {
    /// The checked shape.
    ///
    /// # Errors
    /// [`ShapeError::TooManyElements`] for dimensions whose product is too large.
    fn into_shape(self) -> Result<Shape, ShapeError>;
}

impl IntoShape for Shape {
    #[inline]
    fn into_shape(self) -> Result<Shape, ShapeError> {
        Ok(self)
    }
}

impl IntoShape for &Shape {
    fn into_shape(self) -> Result<Shape, ShapeError> {
        Ok(self.clone())
    }
}

impl IntoShape for &[usize] {
    fn into_shape(self) -> Result<Shape, ShapeError> {
        Shape::new(self)
    }
}

impl<const N: usize> IntoShape for [usize; N] {
    fn into_shape(self) -> Result<Shape, ShapeError> {
        Shape::new(&self)
    }
}

impl<const N: usize> IntoShape for &[usize; N] {
    fn into_shape(self) -> Result<Shape, ShapeError> {
        Shape::new(self)
    }
}

impl IntoShape for Vec<usize> {
    fn into_shape(self) -> Result<Shape, ShapeError> {
        let elements = checked_elements(&self)?;
        Ok(Shape {
            dims: SmallVec::from_vec(self),
            elements,
        })
    }
}

impl TryFrom<&[usize]> for Shape {
    type Error = ShapeError;
    fn try_from(dims: &[usize]) -> Result<Shape, ShapeError> {
        Shape::new(dims)
    }
}

impl<const N: usize> TryFrom<[usize; N]> for Shape {
    type Error = ShapeError;
    fn try_from(dims: [usize; N]) -> Result<Shape, ShapeError> {
        Shape::new(&dims)
    }
}

impl TryFrom<Vec<usize>> for Shape {
    type Error = ShapeError;
    fn try_from(dims: Vec<usize>) -> Result<Shape, ShapeError> {
        dims.into_shape()
    }
}

impl From<Shape> for Vec<usize> {
    fn from(shape: Shape) -> Vec<usize> {
        shape.dims.into_vec()
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(dims: &[usize]) -> Shape {
        Shape::new(dims).unwrap()
    }

    #[test]
    fn broadcast_follows_numpy() {
        let b = Shape::broadcast(&s(&[3, 1]), &s(&[4])).unwrap();
        assert_eq!(b.dims(), &[3, 4]);
        assert_eq!(b.num_elements(), 12);
        let e = Shape::broadcast(&s(&[3]), &s(&[4])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shapes [3] and [4] cannot be broadcast together"
        );
        assert_eq!(
            Shape::broadcast(&Shape::scalar(), &s(&[2, 2]))
                .unwrap()
                .dims(),
            &[2, 2]
        );
    }

    #[test]
    fn a_broadcast_too_large_is_an_error() {
        let e = Shape::broadcast(&s(&[1 << 40, 1]), &s(&[1, 1 << 40])).unwrap_err();
        assert!(matches!(e, ShapeError::TooManyElements { .. }), "{e}");
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(s(&[2, 3, 4]).strides().as_slice(), &[12, 4, 1]);
        assert_eq!(s(&[0, 3, 4]).strides().as_slice(), &[12, 4, 1]);
        assert!(Shape::scalar().strides().is_empty());
    }

    #[test]
    fn element_counts_are_checked() {
        assert_eq!(s(&[]).num_elements(), 1);
        assert_eq!(s(&[2, 0, 5]).num_elements(), 0);
        assert_eq!(s(&[1 << 31, 1 << 31]).num_elements(), 1 << 62);
        for dims in [
            &[1usize << 32, 1 << 32][..],
            &[4, (1 << 62) + 1],
            &[usize::MAX],
            &[0, 1 << 40, 1 << 40],
            &[2, 1 << 62],
        ] {
            let e = Shape::new(dims).unwrap_err();
            assert_eq!(
                e,
                ShapeError::TooManyElements {
                    dims: dims.to_vec()
                }
            );
            assert!(dims.to_vec().into_shape().is_err());
            assert!(Shape::try_from(dims).is_err());
        }
        assert_eq!(
            Shape::new(&[1 << 32, 1 << 32]).unwrap_err().to_string(),
            format!(
                "shape [4294967296, 4294967296] is too large: the product of its dimensions \
                 exceeds {} elements",
                isize::MAX
            )
        );
    }

    #[test]
    fn byte_sizes_are_checked() {
        assert_eq!(s(&[3, 2]).num_bytes(DType::F64).unwrap(), 48);
        let e = s(&[1 << 62]).num_bytes(DType::F32).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shape [4611686018427387904] of f32 needs 18446744073709551616 bytes, more than \
             any allocation can hold"
        );
        assert_eq!(
            byte_size(DType::Bool, isize::MAX as usize),
            Some(isize::MAX as usize)
        );
        assert_eq!(byte_size(DType::I32, 1 << 62), None);
    }

    #[test]
    fn deserialising_checks_too() {
        let ok: Shape = serde_json::from_str("[2, 3]").unwrap();
        assert_eq!(ok.num_elements(), 6);
        assert_eq!(serde_json::to_string(&ok).unwrap(), "[2,3]");
        let bad = serde_json::from_str::<Shape>("[4294967296, 4294967296]");
        assert!(bad.is_err());
    }
}
