//! Conversions between Magpie's portable descriptions (attribute values, shapes, axes)
//! and what the CPU kernels and `matrixmultiply` take, and from `hwlocality`'s objects to
//! plain numbers. Nothing else in the crate reads raw attribute integers or builds
//! `matrixmultiply` strides; only this file and `topology.rs` name `hwlocality` types.

use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::TopologyObject;
use magpie_core::{KernelError, Shape};

/// The local memory of a NUMA node object, in bytes, if hwloc knows it.
pub(crate) fn numa_local_memory(numa: &TopologyObject) -> Option<u64> {
    match numa.attributes() {
        Some(ObjectAttributes::NUMANode(attr)) => attr.local_memory().map(|m| m.get()),
        _ => None,
    }
}

/// A shape attribute with every dimension known (no -1), as a [`Shape`].
pub(crate) fn known_shape(op: &str, attr: &str, dims: &[i64]) -> Result<Shape, KernelError> {
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
    Ok(Shape::from(out))
}

/// `axis` (negative counts from the end) as an index into a shape of rank `rank`.
pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Result<usize, KernelError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(KernelError::InvalidArgument(format!(
            "axis {axis} is out of range for a tensor of rank {rank}"
        )))
    }
}

/// The (row, column) strides, in elements, of the logical matrix read from a row-major
/// buffer of `cols` columns, transposed or not.
pub(crate) fn gemm_strides(cols: usize, transposed: bool) -> (isize, isize) {
    // A `Vec` holds at most `isize::MAX` bytes, so a column count fits.
    let cols = isize::try_from(cols).expect("a row-major buffer's column count fits an isize");
    if transposed {
        (1, cols)
    } else {
        (cols, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_count_from_either_end() {
        assert_eq!(normalize_axis(0, 3).unwrap(), 0);
        assert_eq!(normalize_axis(-1, 3).unwrap(), 2);
        assert_eq!(normalize_axis(-3, 3).unwrap(), 0);
        assert!(normalize_axis(3, 3).is_err());
        assert!(normalize_axis(-4, 3).is_err());
        assert!(normalize_axis(0, 0).is_err());
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
}
