//! The typed, immutable buffer behind a tensor: host elements of one dtype, or a buffer
//! in a device's own memory.

use std::fmt;
use std::sync::Arc;

use super::dtype::{DType, Element};
use crate::graph::DeviceName;

/// A buffer in a device's own memory (a GPU's device-local memory, say), owned by the
/// backend that made it. Core moves it between the backend's kernels without looking
/// inside; the backend's copy kernels bring it to and from the host.
pub trait DeviceBuffer: Send + Sync + fmt::Debug {
    /// The element type.
    fn dtype(&self) -> DType;
    /// The number of elements.
    fn len(&self) -> usize;
    /// Whether there are no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The device whose memory holds it.
    fn device(&self) -> &DeviceName;
    /// The buffer as `Any`, for the owning backend to downcast.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The elements of a tensor, one variant per dtype, or a device buffer. Held behind an
/// `Arc` by [`Tensor`](super::Tensor), so it is never copied when a tensor is shared.
///
/// Non-exhaustive: backends must handle a variant they do not know (with an error).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Storage {
    /// `f32` elements.
    F32(Vec<f32>),
    /// `f64` elements.
    F64(Vec<f64>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `bool` elements.
    Bool(Vec<bool>),
    /// Elements in a device's own memory.
    Device(Arc<dyn DeviceBuffer>),
}

impl PartialEq for Storage {
    /// Host storages compare by value; device buffers by identity.
    fn eq(&self, other: &Storage) -> bool {
        match (self, other) {
            (Storage::F32(a), Storage::F32(b)) => a == b,
            (Storage::F64(a), Storage::F64(b)) => a == b,
            (Storage::I32(a), Storage::I32(b)) => a == b,
            (Storage::I64(a), Storage::I64(b)) => a == b,
            (Storage::Bool(a), Storage::Bool(b)) => a == b,
            (Storage::Device(a), Storage::Device(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Storage {
    /// The dtype of the elements.
    #[inline]
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F64(_) => DType::F64,
            Storage::I32(_) => DType::I32,
            Storage::I64(_) => DType::I64,
            Storage::Bool(_) => DType::Bool,
            Storage::Device(b) => b.dtype(),
        }
    }

    /// The number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F64(v) => v.len(),
            Storage::I32(v) => v.len(),
            Storage::I64(v) => v.len(),
            Storage::Bool(v) => v.len(),
            Storage::Device(b) => b.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zeros (or `false`s) of `dtype` in host memory.
    ///
    /// # Errors
    /// When the memory cannot be had (never an abort); see
    /// [`MemoryLimit`](super::MemoryLimit) to allocate under a device's limit.
    pub fn zeros(dtype: DType, n: usize) -> Result<Storage, super::AllocError> {
        super::MemoryLimit::host().zeros_storage(dtype, n)
    }

    /// The element at `i` converted to `f64` (`true` is 1); NaN for a device buffer,
    /// whose elements are not readable from the host.
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            Storage::Device(_) => f64::NAN,
            Storage::F32(v) => f64::from(v[i]),
            Storage::F64(v) => v[i],
            Storage::I32(v) => f64::from(v[i]),
            Storage::I64(v) => v[i] as f64,
            Storage::Bool(v) => v[i].to_f64(),
        }
    }
}

/// Moves a typed vector into, and borrows it back out of, [`Storage`].
pub trait StorageElement: Element {
    /// Wraps a vector without copying it.
    fn into_storage(v: Vec<Self>) -> Storage;
    /// Borrows the elements when the storage holds this type.
    fn slice(s: &Storage) -> Option<&[Self]>;
    /// Takes the vector back when the storage holds this type.
    fn from_storage(s: Storage) -> Result<Vec<Self>, Storage>;
    /// Borrows the elements mutably when the storage holds this type.
    fn slice_mut(s: &mut Storage) -> Option<&mut [Self]> {
        let _ = s;
        None
    }
}

macro_rules! storage_element {
    ($t:ty, $v:ident) => {
        impl StorageElement for $t {
            #[inline]
            fn into_storage(v: Vec<Self>) -> Storage {
                Storage::$v(v)
            }
            #[inline]
            fn slice(s: &Storage) -> Option<&[Self]> {
                match s {
                    Storage::$v(v) => Some(v),
                    _ => None,
                }
            }
            #[inline]
            fn from_storage(s: Storage) -> Result<Vec<Self>, Storage> {
                match s {
                    Storage::$v(v) => Ok(v),
                    other => Err(other),
                }
            }
            #[inline]
            fn slice_mut(s: &mut Storage) -> Option<&mut [Self]> {
                match s {
                    Storage::$v(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
storage_element!(f32, F32);
storage_element!(f64, F64);
storage_element!(i32, I32);
storage_element!(i64, I64);
storage_element!(bool, Bool);
