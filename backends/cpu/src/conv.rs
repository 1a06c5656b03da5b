//! Conversions between Magpie's portable descriptions (attribute values, shapes, axes)
//! and what the CPU kernels and `matrixmultiply` take, and from `hwlocality`'s objects to
//! plain numbers. Nothing else in the crate reads raw attribute integers or builds
//! `matrixmultiply` strides; only this file and `topology.rs` name `hwlocality` types.

use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::TopologyObject;
pub(crate) use magpie_core::shape_fn::{known_shape, normalize_axis};

/// The local memory of a NUMA node object, in bytes, if hwloc knows it.
pub(crate) fn numa_local_memory(numa: &TopologyObject) -> Option<u64> {
    match numa.attributes() {
        Some(ObjectAttributes::NUMANode(attr)) => attr.local_memory().map(|m| m.get()),
        _ => None,
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
