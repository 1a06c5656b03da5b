//! Numpy broadcasting as rows: the output is walked row by row in row-major order, and
//! each input contributes either a contiguous row (stride 1) or one repeated element
//! (stride 0), so the loop over a row is a plain slice loop the compiler vectorises.
//!
//! Dimensions of size 1 are dropped and adjacent dimensions that both inputs walk alike
//! are merged, so `[2, 3, 4] + [4]` runs as 6 rows of 4 and `[3, 1] + [4]` as 3 rows of 4.

pub(crate) use magpie_core::shape_fn::broadcast_shape;
use magpie_core::Shape;
use smallvec::{smallvec, SmallVec};

type Dims = SmallVec<[usize; 4]>;

/// How two inputs map onto their broadcast output, with as few dimensions as possible.
#[derive(Debug)]
pub(crate) struct Layout {
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

impl Layout {
    /// The layout of `a` and `b` broadcast to `out` (their broadcast shape).
    pub(crate) fn new(out: &Shape, a: &Shape, b: &Shape) -> Layout {
        let rank = out.rank();
        let sa = aligned_strides(a, rank);
        let sb = aligned_strides(b, rank);
        let mut layout = Layout {
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
        debug_assert!(layout.a_row_stride() <= 1 && layout.b_row_stride() <= 1);
        layout
    }

    /// The length of one row.
    pub(crate) fn row_len(&self) -> usize {
        self.dims[self.dims.len() - 1]
    }

    /// `a`'s stride along a row: 1 (contiguous) or 0 (one element repeated).
    pub(crate) fn a_row_stride(&self) -> usize {
        self.a[self.a.len() - 1]
    }

    /// `b`'s stride along a row: 1 or 0.
    pub(crate) fn b_row_stride(&self) -> usize {
        self.b[self.b.len() - 1]
    }

    /// Calls `f(a_offset, b_offset)` for each output row, in row-major order.
    pub(crate) fn for_each_row(&self, mut f: impl FnMut(usize, usize)) {
        let outer = &self.dims[..self.dims.len() - 1];
        let rows: usize = outer.iter().product();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(a: &[usize], b: &[usize]) -> Layout {
        let (a, b) = (Shape::new(a).unwrap(), Shape::new(b).unwrap());
        Layout::new(&broadcast_shape(&a, &b).unwrap(), &a, &b)
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

    #[test]
    fn incompatible_shapes_are_named() {
        let e =
            broadcast_shape(&Shape::new(&[3]).unwrap(), &Shape::new(&[4]).unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument: shapes [3] and [4] cannot be broadcast together"
        );
    }
}
