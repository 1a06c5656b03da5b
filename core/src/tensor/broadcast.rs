//! Numpy broadcasting as strided views: for each element of the output of a binary op,
//! where it reads each input.
//!
//! [`BroadcastLayout`] walks the output row by row in row-major order; along a row each
//! input is either a contiguous run (stride 1) or one repeated element (stride 0), so a
//! kernel's inner loop is a plain slice loop the compiler vectorises.
//! [`BroadcastLayout::iter`] gives the same walk element by element (simpler, slower).
//!
//! Dimensions of size 1 are dropped and adjacent dimensions that both inputs walk alike
//! are merged, so `[2, 3, 4] + [4]` runs as 6 rows of 4 and `[3, 1] + [4]` as 3 rows of 4.
//!
//! ```
//! use magpie_core::tensor::{BroadcastLayout, Shape};
//!
//! let a = Shape::new(&[2, 3])?; // [[a0, a1, a2], [a3, a4, a5]]
//! let b = Shape::new(&[3])?; //    [b0, b1, b2]
//! let layout = BroadcastLayout::new(&a, &b)?;
//! assert_eq!(layout.output(), &Shape::new(&[2, 3])?);
//! let offsets: Vec<(usize, usize)> = layout.iter().collect();
//! assert_eq!(offsets, [(0, 0), (1, 1), (2, 2), (3, 0), (4, 1), (5, 2)]);
//! # Ok::<(), magpie_core::tensor::ShapeError>(())
//! ```

use smallvec::{smallvec, SmallVec};

use super::{Shape, ShapeError};

type Dims = SmallVec<[usize; 4]>;

/// How two inputs map onto their broadcast output, with as few dimensions as possible.
///
/// Every offset it gives for an input is below that input's element count, so a kernel
/// that checked its operands hold as many elements as their shapes say may index with
/// them.
#[derive(Clone, Debug)]
pub struct BroadcastLayout {
    /// The output's shape.
    output: Shape,
    /// Output dimensions after dropping ones and merging; the last is the row length.
    /// Never empty.
    dims: Dims,
    /// Strides of input `a` per dimension (0 where it is broadcast).
    a: Dims,
    /// Strides of input `b` per dimension.
    b: Dims,
}

/// Row-major strides of `shape` aligned to the right of a rank-`rank` output, 0 where
/// `shape` has no dimension or a dimension of 1.
fn aligned_strides(shape: &Shape, rank: usize) -> Dims {
    let mut out: Dims = smallvec![0; rank];
    let offset = rank - shape.rank();
    let mut stride = 1;
    for (i, &d) in shape.dims().iter().enumerate().rev() {
        if d != 1 {
            out[offset + i] = stride;
        }
        stride *= d;
    }
    out
}

/// Whether `input` broadcasts to `out` (each aligned dimension is 1 or equal).
fn broadcasts_to(input: &Shape, out: &Shape) -> bool {
    input.rank() <= out.rank()
        && input
            .dims()
            .iter()
            .rev()
            .zip(out.dims().iter().rev())
            .all(|(&i, &o)| i == 1 || i == o)
}

impl BroadcastLayout {
    /// The layout of `a` and `b` broadcast together.
    ///
    /// # Errors
    /// [`ShapeError::Incompatible`] when they do not broadcast;
    /// [`ShapeError::TooManyElements`] when the output would be too large.
    pub fn new(a: &Shape, b: &Shape) -> Result<BroadcastLayout, ShapeError> {
        let out = Shape::broadcast(a, b)?;
        Ok(BroadcastLayout::build(out, a, b))
    }

    /// The layout of `a` and `b` onto `out`, which the caller already computed (one check
    /// per dimension instead of building the shape again).
    ///
    /// # Errors
    /// [`ShapeError::Incompatible`] when `a` or `b` does not broadcast to `out`.
    pub fn with_output(out: &Shape, a: &Shape, b: &Shape) -> Result<BroadcastLayout, ShapeError> {
        if !broadcasts_to(a, out) || !broadcasts_to(b, out) {
            return Err(ShapeError::Incompatible {
                a: a.clone(),
                b: b.clone(),
            });
        }
        Ok(BroadcastLayout::build(out.clone(), a, b))
    }

    fn build(out: Shape, a: &Shape, b: &Shape) -> BroadcastLayout {
        let rank = out.rank();
        let sa = aligned_strides(a, rank);
        let sb = aligned_strides(b, rank);
        let mut layout = BroadcastLayout {
            output: Shape::scalar(),
            dims: Dims::new(),
            a: Dims::new(),
            b: Dims::new(),
        };
        for (i, &d) in out.dims().iter().enumerate() {
            if d == 1 {
                continue;
            }
            if let (Some(pd), Some(pa), Some(pb)) = (
                layout.dims.last_mut(),
                layout.a.last_mut(),
                layout.b.last_mut(),
            ) {
                if *pa == sa[i] * d && *pb == sb[i] * d {
                    *pd *= d;
                    *pa = sa[i];
                    *pb = sb[i];
                    continue;
                }
            }
            layout.dims.push(d);
            layout.a.push(sa[i]);
            layout.b.push(sb[i]);
        }
        if layout.dims.is_empty() {
            layout.dims.push(1);
            layout.a.push(0);
            layout.b.push(0);
        }
        layout.output = out;
        debug_assert!(layout.a_row_stride() <= 1 && layout.b_row_stride() <= 1);
        layout
    }

    /// The output's shape.
    pub fn output(&self) -> &Shape {
        &self.output
    }

    /// The length of one row (the whole output is `rows × row_len` elements; an empty
    /// output has a row length of 0 or no rows).
    pub fn row_len(&self) -> usize {
        self.dims[self.dims.len() - 1]
    }

    /// `a`'s stride along a row: 1 (contiguous) or 0 (one element repeated).
    pub fn a_row_stride(&self) -> usize {
        self.a[self.a.len() - 1]
    }

    /// `b`'s stride along a row: 1 or 0.
    pub fn b_row_stride(&self) -> usize {
        self.b[self.b.len() - 1]
    }

    /// Calls `f(a_offset, b_offset)` with where each output row starts in `a` and `b`, in
    /// row-major order.
    pub fn for_each_row(&self, mut f: impl FnMut(usize, usize)) {
        let outer = &self.dims[..self.dims.len() - 1];
        let rows: usize = outer.iter().product();
        if self.row_len() == 0 {
            return;
        }
        let mut index: Dims = smallvec![0; outer.len()];
        let (mut ao, mut bo) = (0, 0);
        for _ in 0..rows {
            f(ao, bo);
            for d in (0..outer.len()).rev() {
                index[d] += 1;
                ao += self.a[d];
                bo += self.b[d];
                if index[d] < outer[d] {
                    break;
                }
                index[d] = 0;
                ao -= self.a[d] * outer[d];
                bo -= self.b[d] * outer[d];
            }
        }
    }

    /// `(a_offset, b_offset)` for each output element, in row-major order.
    pub fn iter(&self) -> BroadcastIter<'_> {
        let outer = self.dims.len() - 1;
        BroadcastIter {
            layout: self,
            index: smallvec![0; self.dims.len()],
            offsets: (0, 0),
            left: self.output.num_elements(),
            outer,
        }
    }
}

/// The offsets into both inputs of each output element: see [`BroadcastLayout::iter`].
#[derive(Debug, Clone)]
pub struct BroadcastIter<'a> {
    layout: &'a BroadcastLayout,
    index: Dims,
    offsets: (usize, usize),
    left: usize,
    outer: usize,
}

impl Iterator for BroadcastIter<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let current = self.offsets;
        let l = self.layout;
        for d in (0..=self.outer).rev() {
            self.index[d] += 1;
            self.offsets.0 += l.a[d];
            self.offsets.1 += l.b[d];
            if self.index[d] < l.dims[d] {
                break;
            }
            self.index[d] = 0;
            self.offsets.0 -= l.a[d] * l.dims[d];
            self.offsets.1 -= l.b[d] * l.dims[d];
        }
        Some(current)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for BroadcastIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(a: &[usize], b: &[usize]) -> BroadcastLayout {
        BroadcastLayout::new(&Shape::new(a).unwrap(), &Shape::new(b).unwrap()).unwrap()
    }

    #[test]
    fn merges_dimensions_walked_alike() {
        let l = layout(&[2, 3, 4], &[4]);
        assert_eq!(
            (l.dims.as_slice(), l.a.as_slice(), l.b.as_slice()),
            (&[6, 4][..], &[4, 1][..], &[0, 1][..])
        );
        let l = layout(&[3, 1], &[4]);
        assert_eq!(
            (l.dims.as_slice(), l.a.as_slice(), l.b.as_slice()),
            (&[3, 4][..], &[1, 0][..], &[0, 1][..])
        );
        let l = layout(&[1, 5], &[5]);
        assert_eq!(l.dims.as_slice(), &[5]);
        let l = layout(&[1, 1], &[]);
        assert_eq!(l.dims.as_slice(), &[1]);
    }

    #[test]
    fn rows_come_in_output_order() {
        let l = layout(&[2, 1, 3], &[4, 1]);
        let mut rows = Vec::new();
        l.for_each_row(|a, b| rows.push((a, b)));
        // Output [2, 4, 3]: row (i, j) reads a's row i and b's element j.
        let want: Vec<_> = (0..2)
            .flat_map(|i| (0..4).map(move |j| (i * 3, j)))
            .collect();
        assert_eq!(rows, want);
        assert_eq!((l.row_len(), l.a_row_stride(), l.b_row_stride()), (3, 1, 0));
    }

    /// The offsets of output element `flat` computed the naive way.
    fn naive(t: &Shape, out: &Shape, mut flat: usize) -> usize {
        let (mut index, mut stride) = (0, 1);
        let offset = out.rank() - t.rank();
        for d in (0..out.rank()).rev() {
            let coord = flat % out.dims()[d];
            flat /= out.dims()[d];
            if d >= offset {
                let size = t.dims()[d - offset];
                index += if size == 1 { 0 } else { coord * stride };
                stride *= size;
            }
        }
        index
    }

    #[test]
    fn the_element_walk_matches_the_naive_mapping() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 3], &[3]),
            (&[2, 1, 3], &[4, 1]),
            (&[3, 1], &[1, 4]),
            (&[1], &[5]),
            (&[], &[2, 2]),
            (&[2, 0], &[1]),
            (&[4, 1, 1, 2], &[3, 1, 2]),
        ];
        for &(a, b) in cases {
            let (sa, sb) = (Shape::new(a).unwrap(), Shape::new(b).unwrap());
            let l = BroadcastLayout::new(&sa, &sb).unwrap();
            let out = l.output().clone();
            let got: Vec<_> = l.iter().collect();
            let want: Vec<_> = (0..out.num_elements())
                .map(|i| (naive(&sa, &out, i), naive(&sb, &out, i)))
                .collect();
            assert_eq!(got, want, "{a:?} + {b:?}");
            let mut rows = 0;
            l.for_each_row(|_, _| rows += 1);
            assert_eq!(rows * l.row_len(), out.num_elements(), "{a:?} + {b:?}");
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let s = |d: &[usize]| Shape::new(d).unwrap();
        assert!(BroadcastLayout::new(&s(&[3]), &s(&[4])).is_err());
        assert!(BroadcastLayout::with_output(&s(&[3]), &s(&[4]), &s(&[3])).is_err());
        assert!(BroadcastLayout::with_output(&s(&[3]), &s(&[2, 3]), &s(&[3])).is_err());
        assert!(BroadcastLayout::with_output(&s(&[2, 3]), &s(&[1, 3]), &s(&[2, 1])).is_ok());
    }
}
