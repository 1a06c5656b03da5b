//! Readable `Display` and `Debug` for tensors: numpy-like nested brackets, elided in the
//! middle when a dimension is long.
//!
//! Printing is bounded whatever the shape (tensors are printed in errors, so a hostile
//! shape must not make an error message huge or slow): a tensor without elements prints
//! as `[]`, only the shown indices of a long dimension are visited, and after
//! [`MAX_PRINTED`] elements the rest is elided.

use std::fmt;

use super::{Storage, Tensor};

/// Elements shown at each end of a long dimension.
const EDGE_ITEMS: usize = 3;
/// Dimensions longer than this are elided.
const MAX_ITEMS: usize = 2 * EDGE_ITEMS + 1;
/// Elements printed at most; the rest is `...`.
pub(crate) const MAX_PRINTED: usize = 1000;

fn write_element(f: &mut fmt::Formatter<'_>, s: &Storage, i: usize) -> fmt::Result {
    match s {
        Storage::F32(v) => write!(f, "{:?}", v[i]),
        Storage::F64(v) => write!(f, "{:?}", v[i]),
        Storage::I32(v) => write!(f, "{}", v[i]),
        Storage::I64(v) => write!(f, "{}", v[i]),
        Storage::Bool(v) => write!(f, "{}", v[i]),
        Storage::Device(_) => f.write_str("?"),
    }
}

fn write_dim(
    f: &mut fmt::Formatter<'_>,
    t: &Tensor,
    dim: usize,
    offset: usize,
    strides: &[usize],
    budget: &mut usize,
) -> fmt::Result {
    let dims = t.dims();
    if dim == dims.len() {
        *budget = budget.saturating_sub(1);
        return write_element(f, t.storage(), offset);
    }
    if *budget == 0 {
        return f.write_str("...");
    }
    f.write_str("[")?;
    let n = dims[dim];
    // Only the shown indices are visited: a dimension of 2^40 costs as much as one of 7.
    let (head, tail) = if n > MAX_ITEMS {
        (0..EDGE_ITEMS, n - EDGE_ITEMS..n)
    } else {
        (0..n, n..n)
    };
    for (k, i) in head.enumerate() {
        if k > 0 {
            f.write_str(", ")?;
        }
        write_dim(f, t, dim + 1, offset + i * strides[dim], strides, budget)?;
    }
    if !tail.is_empty() {
        f.write_str(", ...")?;
        for i in tail {
            f.write_str(", ")?;
            write_dim(f, t, dim + 1, offset + i * strides[dim], strides, budget)?;
        }
    }
    f.write_str("]")
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Storage::Device(b) = self.storage() {
            return write!(f, "<{} {} elements on {}>", b.dtype(), b.len(), b.device());
        }
        if self.num_elements() == 0 {
            return f.write_str("[]");
        }
        let strides = self.shape().strides();
        write_dim(f, self, 0, 0, &strides, &mut { MAX_PRINTED })
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}{}>(", self.dtype(), self.shape())?;
        fmt::Display::fmt(self, f)?;
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    #[test]
    fn display_of_a_long_dimension_without_elements_is_immediate() {
        // Found by the graph_run fuzz target: the printer walked every index of a long
        // dimension, so `[2^40, 0]` took minutes to print.
        let t = Tensor::from_vec([1usize << 40, 0], Vec::<f32>::new()).unwrap();
        assert_eq!(t.to_string(), "[]");
        let deep = [3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 8, 8, 0];
        let t = Tensor::from_vec(deep, Vec::<f32>::new()).unwrap();
        assert_eq!(t.to_string(), "[]");
    }

    #[test]
    fn printing_stops_after_max_printed_elements() {
        let t = Tensor::zeros(DType::I32, [4; 8]).unwrap();
        let text = t.to_string();
        assert_eq!(text.matches('0').count(), MAX_PRINTED);
        assert!(text.contains("..."), "{text}");
    }

    #[test]
    fn display_nests_and_elides() {
        assert_eq!(Tensor::scalar(7.0f32).to_string(), "7.0");
        let t = Tensor::from_vec([2, 2], vec![1i32, 2, 3, 4]).unwrap();
        assert_eq!(t.to_string(), "[[1, 2], [3, 4]]");
        assert_eq!(format!("{t:?}"), "Tensor<i32[2, 2]>([[1, 2], [3, 4]])");
        let long = Tensor::from((0..10).collect::<Vec<i64>>());
        assert_eq!(long.to_string(), "[0, 1, 2, ..., 7, 8, 9]");
    }
}
