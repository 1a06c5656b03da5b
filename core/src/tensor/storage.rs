//! The typed, immutable buffer behind a tensor.

use super::dtype::{DType, Element};

/// The elements of a tensor, one variant per dtype. Held behind an `Arc` by
/// [`Tensor`](super::Tensor), so it is never copied when a tensor is shared.
#[derive(Clone, Debug, PartialEq)]
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
}

impl Storage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F64(_) => DType::F64,
            Storage::I32(_) => DType::I32,
            Storage::I64(_) => DType::I64,
            Storage::Bool(_) => DType::Bool,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F64(v) => v.len(),
            Storage::I32(v) => v.len(),
            Storage::I64(v) => v.len(),
            Storage::Bool(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zeros (or `false`s) of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> Storage {
        match dtype {
            DType::F32 => Storage::F32(vec![0.0; n]),
            DType::F64 => Storage::F64(vec![0.0; n]),
            DType::I32 => Storage::I32(vec![0; n]),
            DType::I64 => Storage::I64(vec![0; n]),
            DType::Bool => Storage::Bool(vec![false; n]),
        }
    }

    /// The element at `i` converted to `f64` (`true` is 1).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
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
        }
    };
}
storage_element!(f32, F32);
storage_element!(f64, F64);
storage_element!(i32, I32);
storage_element!(i64, I64);
storage_element!(bool, Bool);
