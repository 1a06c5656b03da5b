//! [`PartialShape`]: what graph construction knows about a tensor's shape — maybe not its
//! rank, maybe not some of its dimensions (TensorFlow's `PartialTensorShape`).

use std::fmt;

use smallvec::SmallVec;

use super::context::ShapeError;
use crate::tensor::Shape;

/// A shape known in part: the rank may be unknown, and so may any dimension (`None`).
///
/// A fully known partial shape describes exactly one [`Shape`]; an unknown one (the
/// [`Default`]) describes every shape. Shape functions only ever narrow what is known
/// from what their inputs know, so an unknown input never causes an error.
///
/// ```
/// use magpie_core::graph::PartialShape;
/// use magpie_core::tensor::Shape;
///
/// let batch = PartialShape::new(&[None, Some(3)]);
/// assert_eq!(batch.to_string(), "[?, 3]");
/// assert_eq!(batch.rank(), Some(2));
/// assert!(batch.is_compatible_with_shape(&Shape::new(&[8, 3])?));
/// assert!(!batch.is_compatible_with_shape(&Shape::new(&[8, 4])?));
/// assert_eq!(PartialShape::unknown().to_string(), "<unknown>");
/// # Ok::<(), magpie_core::tensor::ShapeError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct PartialShape(Option<SmallVec<[Option<usize>; 4]>>);

impl PartialShape {
    /// Nothing known, not even the rank.
    pub fn unknown() -> PartialShape {
        PartialShape(None)
    }

    /// The shape of a scalar (rank 0, fully known).
    pub fn scalar() -> PartialShape {
        PartialShape(Some(SmallVec::new()))
    }

    /// A known rank with these dimensions (`None` for an unknown one).
    pub fn new(dims: &[Option<usize>]) -> PartialShape {
        PartialShape(Some(SmallVec::from_slice(dims)))
    }

    /// A known rank with every dimension unknown.
    pub fn unknown_dims(rank: usize) -> PartialShape {
        PartialShape(Some(SmallVec::from_elem(None, rank)))
    }

    /// A shape attribute as graphs write it: one entry per dimension, `-1` for an unknown
    /// one.
    ///
    /// # Errors
    /// A dimension below `-1`.
    pub fn from_attr(dims: &[i64]) -> Result<PartialShape, ShapeError> {
        let mut out = SmallVec::with_capacity(dims.len());
        for &d in dims {
            match d {
                -1 => out.push(None),
                _ => match usize::try_from(d) {
                    Ok(d) => out.push(Some(d)),
                    Err(_) => {
                        return Err(ShapeError::new(format!(
                            "shape {dims:?} has dimension {d} (use -1 for an unknown one)"
                        )))
                    }
                },
            }
        }
        Ok(PartialShape(Some(out)))
    }

    /// The rank, if known.
    pub fn rank(&self) -> Option<usize> {
        self.0.as_ref().map(|d| d.len())
    }

    /// The dimensions, if the rank is known.
    pub fn dims(&self) -> Option<&[Option<usize>]> {
        self.0.as_deref()
    }

    /// Dimension `i`, if the rank is known, `i` is below it and the dimension is known.
    pub fn dim(&self, i: usize) -> Option<usize> {
        self.dims().and_then(|d| d.get(i).copied().flatten())
    }

    /// Whether the rank and every dimension are known.
    pub fn is_fully_known(&self) -> bool {
        self.dims().is_some_and(|d| d.iter().all(Option::is_some))
    }

    /// The shape, if fully known and representable (its element count fits: see
    /// [`Shape::new`]).
    pub fn to_shape(&self) -> Option<Shape> {
        let dims = self.dims()?;
        let known: Option<Vec<usize>> = dims.iter().copied().collect();
        Shape::new(&known?).ok()
    }

    /// The number of elements, if the shape is fully known and the count fits a `usize`.
    pub fn num_elements(&self) -> Option<usize> {
        let count = self.element_count()?;
        usize::try_from(count.known()?).ok()
    }

    /// The number of elements of a fully known shape, counted without overflow.
    pub(crate) fn element_count(&self) -> Option<Count> {
        let dims = self.dims()?;
        let mut count = Count::ONE;
        for d in dims {
            count = count.times((*d)?);
        }
        Some(count)
    }

    /// The product of the known dimensions (1 for none), counted without overflow.
    pub(crate) fn known_count(&self) -> Count {
        self.dims()
            .unwrap_or_default()
            .iter()
            .flatten()
            .fold(Count::ONE, |c, d| c.times(*d))
    }

    /// Whether some shape fits both `self` and `other`.
    pub fn is_compatible_with(&self, other: &PartialShape) -> bool {
        self.merge(other).is_some()
    }

    /// Whether `shape` is one of the shapes `self` describes.
    pub fn is_compatible_with_shape(&self, shape: &Shape) -> bool {
        self.is_compatible_with(&PartialShape::from(shape))
    }

    /// What is known from both: `None` when they contradict each other (different ranks,
    /// or a dimension known differently).
    pub fn merge(&self, other: &PartialShape) -> Option<PartialShape> {
        let (a, b) = match (self.dims(), other.dims()) {
            (None, _) => return Some(other.clone()),
            (_, None) => return Some(self.clone()),
            (Some(a), Some(b)) => (a, b),
        };
        if a.len() != b.len() {
            return None;
        }
        let mut out = SmallVec::with_capacity(a.len());
        for (x, y) in a.iter().zip(b) {
            out.push(match (x, y) {
                (Some(x), Some(y)) if x != y => return None,
                (Some(x), _) | (None, Some(x)) => Some(*x),
                (None, None) => None,
            });
        }
        Some(PartialShape(Some(out)))
    }

    /// The shape attribute form: `-1` for an unknown dimension; `None` for an unknown
    /// rank or a dimension beyond `i64`.
    pub fn to_attr(&self) -> Option<Vec<i64>> {
        self.dims()?
            .iter()
            .map(|d| match d {
                Some(d) => i64::try_from(*d).ok(),
                None => Some(-1),
            })
            .collect()
    }
}

impl From<&Shape> for PartialShape {
    fn from(shape: &Shape) -> PartialShape {
        PartialShape(Some(shape.dims().iter().map(|d| Some(*d)).collect()))
    }
}

impl From<Shape> for PartialShape {
    fn from(shape: Shape) -> PartialShape {
        PartialShape::from(&shape)
    }
}

impl fmt::Debug for PartialShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `[2, ?, 3]`, with `?` for an unknown dimension, and `<unknown>` for an unknown rank.
/// A fully known shape prints as its [`Shape`] does.
impl fmt::Display for PartialShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(dims) = self.dims() else {
            return f.write_str("<unknown>");
        };
        f.write_str("[")?;
        for (i, d) in dims.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match d {
                Some(d) => write!(f, "{d}")?,
                None => f.write_str("?")?,
            }
        }
        f.write_str("]")
    }
}

/// An element count that never overflows: exact up to `u128::MAX`, then "more than any
/// tensor can hold" ([`Count::Huge`]), which compares unequal to every exact count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Count {
    /// Exactly this many.
    Exact(u128),
    /// More than `u128::MAX`: no tensor has this many elements.
    Huge,
}

impl Count {
    /// The empty product.
    pub(crate) const ONE: Count = Count::Exact(1);

    /// `self * d`; zero absorbs, even after an overflow.
    pub(crate) fn times(self, d: usize) -> Count {
        match self {
            _ if d == 0 => Count::Exact(0),
            Count::Exact(c) => c.checked_mul(d as u128).map_or(Count::Huge, Count::Exact),
            Count::Huge => Count::Huge,
        }
    }

    /// The exact count, if not huge.
    pub(crate) fn known(self) -> Option<u128> {
        match self {
            Count::Exact(c) => Some(c),
            Count::Huge => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fully known partial shape (which, unlike a `Shape`, may be too large).
    fn known_dims_of(d: &[usize]) -> PartialShape {
        PartialShape::new(&d.iter().map(|&x| Some(x)).collect::<Vec<_>>())
    }

    #[test]
    fn attrs_use_minus_one_for_unknown_dimensions() {
        let s = PartialShape::from_attr(&[-1, 3]).unwrap();
        assert_eq!(s, PartialShape::new(&[None, Some(3)]));
        assert_eq!(s.to_attr(), Some(vec![-1, 3]));
        let e = PartialShape::from_attr(&[2, -2]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shape [2, -2] has dimension -2 (use -1 for an unknown one)"
        );
        assert_eq!(PartialShape::unknown().to_attr(), None);
    }

    #[test]
    fn knowledge_is_reported_per_dimension() {
        let s = PartialShape::new(&[Some(2), None]);
        assert_eq!(
            (s.rank(), s.dim(0), s.dim(1), s.dim(5)),
            (Some(2), Some(2), None, None)
        );
        assert!(!s.is_fully_known());
        assert_eq!(s.to_shape(), None);
        assert_eq!(s.num_elements(), None);
        let k = known_dims_of(&[2, 3]);
        assert!(k.is_fully_known());
        assert_eq!(k.to_shape(), Shape::new(&[2, 3]).ok());
        assert_eq!(k.num_elements(), Some(6));
        assert_eq!(PartialShape::scalar().num_elements(), Some(1));
        assert_eq!(PartialShape::unknown().rank(), None);
        assert_eq!(PartialShape::unknown_dims(3).to_string(), "[?, ?, ?]");
    }

    #[test]
    fn merging_keeps_what_either_knows() {
        let a = PartialShape::new(&[Some(2), None]);
        let b = PartialShape::new(&[None, Some(3)]);
        assert_eq!(a.merge(&b), Some(known_dims_of(&[2, 3])));
        assert_eq!(a.merge(&PartialShape::unknown()), Some(a.clone()));
        assert_eq!(a.merge(&PartialShape::new(&[Some(4), None])), None);
        assert_eq!(a.merge(&PartialShape::unknown_dims(3)), None);
        assert!(a.is_compatible_with_shape(&Shape::new(&[2, 9]).unwrap()));
        assert!(!a.is_compatible_with_shape(&Shape::new(&[2]).unwrap()));
    }

    #[test]
    fn counts_never_overflow() {
        let big = known_dims_of(&[usize::MAX, usize::MAX, 2]);
        assert_eq!(big.element_count(), Some(Count::Huge));
        assert_eq!(big.num_elements(), None);
        let empty = known_dims_of(&[usize::MAX, usize::MAX, 2, 0]);
        assert_eq!(empty.element_count(), Some(Count::Exact(0)));
        let wide = known_dims_of(&[1 << 40, 1 << 40]);
        assert_eq!(wide.element_count(), Some(Count::Exact(1 << 80)));
        assert_eq!(wide.num_elements(), None);
        assert_eq!(
            PartialShape::new(&[Some(4), None, Some(5)]).known_count(),
            Count::Exact(20)
        );
    }
}
