//! Tensors: a dtype, a shape and an immutable, reference-counted buffer.
//!
//! Cloning a [`Tensor`] clones an `Arc`: handing a tensor to the next op in the same
//! process never copies its elements. A kernel that holds the only reference may take
//! the buffer back with [`Tensor::try_into_vec`] and reuse it for its output.
//!
//! A backend's allocator may record where a buffer came from ([`BufferOrigin`]: its NUMA
//! node, and a [`Recycler`] that takes the elements back when the last reference drops);
//! see [`Tensor::from_vec_in`]. A device that counts its memory charges each buffer to
//! its [`MemoryAccount`] until the last reference drops ([`Tensor::from_vec_charged`],
//! [`account`]'s protocol).
//!
//! Shapes are checked when made ([`Shape`], [`IntoShape`]): every constructor here fails
//! with [`TensorError::Shape`] rather than overflow, and a tensor's element count always
//! equals its storage's length. Buffers are allocated fallibly ([`MemoryLimit`]).
//!
//! Kernels of binary ops walk their inputs under numpy broadcasting with
//! [`BroadcastLayout`] ([`broadcast`]).

pub mod account;
mod alloc;
pub mod broadcast;
mod credit;
mod display;
mod dtype;
mod origin;
mod shape;
pub mod step_memory;
mod storage;

use std::sync::Arc;

use origin::Buffer;

pub use account::{Charge, MemoryAccount};
pub use alloc::{AllocError, AllocFailure, MemoryLimit};
pub use broadcast::{BroadcastIter, BroadcastLayout};
pub use dtype::{DType, Element};
pub use origin::{BufferOrigin, Recycler};
pub use shape::{byte_size, IntoShape, Shape, ShapeError};
pub use step_memory::{StepMemory, StepMemoryLimit};
pub use storage::{DeviceBuffer, Storage, StorageElement};

/// Errors from building or reading a tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// The element count does not match the shape.
    #[error("shape {shape} needs {expected} elements, got {got}")]
    ElementCount {
        /// The requested shape.
        shape: Shape,
        /// Elements the shape needs.
        expected: usize,
        /// Elements supplied.
        got: usize,
    },
    /// The tensor holds another dtype than the one asked for.
    #[error("tensor holds {actual}, not {requested}")]
    DType {
        /// The dtype asked for.
        requested: DType,
        /// The dtype the tensor holds.
        actual: DType,
    },
    /// The elements live in a device's memory; copy the tensor to the host first.
    #[error("tensor is in the memory of {0}, not on the host")]
    NotOnHost(String),
    /// A scalar was asked of a tensor with more or fewer than one element.
    #[error("expected a scalar (one element), got shape {0}")]
    NotScalar(Shape),
    /// The shape is too large (its element count or byte size overflows).
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The elements could not be allocated.
    #[error(transparent)]
    Alloc(#[from] AllocError),
}

/// An n-dimensional array of one [`DType`], immutable and cheap to clone.
///
/// Elements are stored row-major, on the host ([`Storage`]) or in a device's memory
/// ([`DeviceBuffer`]). Clones share the buffer; a kernel holding the only reference may
/// take it back ([`Tensor::try_into_vec`], [`Tensor::as_mut_slice`]) and reuse it.
///
/// ```
/// use magpie_core::tensor::{DType, Tensor};
///
/// let t = Tensor::from_vec(&[2usize, 3][..], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])?;
/// assert_eq!((t.dtype(), t.dims()), (DType::F32, &[2usize, 3][..]));
/// assert_eq!(t.as_slice::<f32>()?[4], 5.0);
/// assert_eq!(t.to_string(), "[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]");
///
/// // Cloning shares the buffer; reshaping keeps the elements.
/// let flat = t.reshape(&[6usize][..])?;
/// assert!(flat.shares_buffer_with(&t));
/// // The wrong element type, or a count that does not fit the shape, is an error.
/// assert!(t.as_slice::<i32>().is_err());
/// assert!(Tensor::from_vec(&[4usize][..], vec![1.0f32]).is_err());
/// assert_eq!(f32::try_from(&Tensor::scalar(2.5f32))?, 2.5);
/// # Ok::<(), magpie_core::tensor::TensorError>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Shape,
    data: Arc<Buffer>,
}

impl Tensor {
    /// A tensor from its shape and elements; fails when the counts differ.
    ///
    /// # Errors
    /// [`TensorError::Shape`] for a shape too large; [`TensorError::ElementCount`] when
    /// `data` does not hold exactly its elements.
    pub fn from_vec<T: StorageElement>(
        shape: impl IntoShape,
        data: Vec<T>,
    ) -> Result<Tensor, TensorError> {
        Tensor::from_storage(shape, T::into_storage(data))
    }

    /// A tensor from its shape and a storage; fails when the counts differ.
    ///
    /// # Errors
    /// As [`from_vec`](Self::from_vec); also [`TensorError::Shape`] when a device buffer's
    /// elements would take more bytes than any allocation holds.
    pub fn from_storage(shape: impl IntoShape, data: Storage) -> Result<Tensor, TensorError> {
        let shape = shape.into_shape()?;
        shape.num_bytes(data.dtype())?;
        let expected = shape.num_elements();
        if data.len() != expected {
            return Err(TensorError::ElementCount {
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(Tensor {
            shape,
            data: Arc::new(Buffer::plain(data)),
        })
    }

    /// A tensor from its shape and elements made by an allocator that recorded their
    /// `origin`: [`numa_node`](Self::numa_node) reports its node, and when the last
    /// reference is dropped the elements go to its [`Recycler`], if it has one. Fails when
    /// the counts differ (the elements then go back to the recycler at once).
    ///
    /// # Errors
    /// As [`from_vec`](Self::from_vec).
    pub fn from_vec_in<T: StorageElement>(
        shape: impl IntoShape,
        data: Vec<T>,
        origin: &Arc<BufferOrigin>,
    ) -> Result<Tensor, TensorError> {
        Tensor::from_vec_charged(shape, data, Some(origin), None)
    }

    /// A tensor from its shape and elements made by an allocator: `origin` as in
    /// [`from_vec_in`](Self::from_vec_in), and `charge` the bytes the elements are counted
    /// for on their device's [`MemoryAccount`] (from
    /// [`MemoryLimit::reserve`](MemoryLimit::reserve) or
    /// [`MemoryLimit::charge`](MemoryLimit::charge)), given back when the last reference
    /// drops — or at once, with the elements, when the counts differ.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use magpie_core::tensor::{MemoryAccount, MemoryLimit, Tensor};
    /// let account = Arc::new(MemoryAccount::new());
    /// let cpu = MemoryLimit::new("/device:CPU:0", None).with_account(Arc::clone(&account));
    /// let t = Tensor::from_vec_charged([2], vec![1.0f64, 2.0], None, cpu.charge(16)).unwrap();
    /// let u = t.reshape([2, 1]).unwrap(); // one buffer, one charge
    /// drop(t);
    /// assert_eq!(account.in_use(), 16);
    /// drop(u);
    /// assert_eq!(account.in_use(), 0);
    /// ```
    ///
    /// # Errors
    /// As [`from_vec`](Self::from_vec).
    pub fn from_vec_charged<T: StorageElement>(
        shape: impl IntoShape,
        data: Vec<T>,
        origin: Option<&Arc<BufferOrigin>>,
        charge: Option<Charge>,
    ) -> Result<Tensor, TensorError> {
        let buffer = Buffer {
            storage: T::into_storage(data),
            origin: origin.cloned(),
            charge,
        };
        let shape = shape.into_shape()?;
        let expected = shape.num_elements();
        if buffer.storage.len() != expected {
            return Err(TensorError::ElementCount {
                shape,
                expected,
                got: buffer.storage.len(),
            });
        }
        Ok(Tensor {
            shape,
            data: Arc::new(buffer),
        })
    }

    /// A rank-1 tensor holding a copy of `data`.
    pub fn from_slice<T: StorageElement>(data: &[T]) -> Tensor {
        Tensor {
            shape: Shape::vector(data.len()),
            data: Arc::new(Buffer::plain(T::into_storage(data.to_vec()))),
        }
    }

    /// A scalar tensor.
    pub fn scalar<T: StorageElement>(value: T) -> Tensor {
        Tensor {
            shape: Shape::scalar(),
            data: Arc::new(Buffer::plain(T::into_storage(vec![value]))),
        }
    }

    /// An empty rank-1 tensor (shape `[0]`) of `dtype`; allocates nothing.
    pub fn empty(dtype: DType) -> Tensor {
        let storage = match dtype {
            DType::F32 => Storage::F32(Vec::new()),
            DType::F64 => Storage::F64(Vec::new()),
            DType::I32 => Storage::I32(Vec::new()),
            DType::I64 => Storage::I64(Vec::new()),
            DType::Bool => Storage::Bool(Vec::new()),
        };
        Tensor {
            shape: Shape::vector(0),
            data: Arc::new(Buffer::plain(storage)),
        }
    }

    /// A tensor of zeros (or `false`s) in host memory.
    ///
    /// # Errors
    /// [`TensorError::Shape`] for a shape too large; [`TensorError::Alloc`] when the
    /// memory cannot be had (never an abort).
    pub fn zeros(dtype: DType, shape: impl IntoShape) -> Result<Tensor, TensorError> {
        Tensor::zeros_in(dtype, shape, &MemoryLimit::host())
    }

    /// A tensor of zeros allocated under `memory`'s limit (a kernel passes its device's),
    /// and charged to its account if it has one.
    ///
    /// # Errors
    /// As [`zeros`](Self::zeros); the error names `memory`'s device.
    pub fn zeros_in(
        dtype: DType,
        shape: impl IntoShape,
        memory: &MemoryLimit,
    ) -> Result<Tensor, TensorError> {
        let shape = shape.into_shape()?;
        let charge = memory.reserve(dtype, shape.num_elements())?;
        let storage = memory.zeros_storage(dtype, shape.num_elements())?;
        Ok(Tensor {
            shape,
            data: Arc::new(Buffer {
                storage,
                origin: None,
                charge,
            }),
        })
    }

    /// The dtype.
    #[inline]
    pub fn dtype(&self) -> DType {
        self.data.storage.dtype()
    }

    /// The shape.
    #[inline]
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The dimensions (empty for a scalar).
    #[inline]
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// The number of elements.
    #[inline]
    pub fn num_elements(&self) -> usize {
        self.data.storage.len()
    }

    /// Bytes the elements occupy (never overflows: checked when the tensor was made).
    #[inline]
    pub fn size_in_bytes(&self) -> usize {
        self.data.storage.len() * self.dtype().size_of()
    }

    /// The underlying storage.
    #[inline]
    pub fn storage(&self) -> &Storage {
        &self.data.storage
    }

    /// The bytes the buffer is counted for on its device's [`MemoryAccount`], if a device
    /// that counts its memory made it.
    #[inline]
    pub fn charged_bytes(&self) -> Option<u64> {
        self.data.charge.as_ref().map(Charge::bytes)
    }

    /// What the allocator recorded about the buffer, if it was made with
    /// [`from_vec_in`](Self::from_vec_in).
    pub fn origin(&self) -> Option<&Arc<BufferOrigin>> {
        self.data.origin.as_ref()
    }

    /// The NUMA node the elements were allocated on, when the allocator recorded it.
    #[inline]
    pub fn numa_node(&self) -> Option<usize> {
        self.data.origin.as_ref().and_then(|o| o.numa_node())
    }

    /// A tensor whose elements live in a device's memory.
    ///
    /// # Errors
    /// As [`from_storage`](Self::from_storage): the buffer's length must be the shape's
    /// element count.
    pub fn from_device_buffer(
        shape: impl IntoShape,
        buffer: Arc<dyn DeviceBuffer>,
    ) -> Result<Tensor, TensorError> {
        Tensor::from_storage(shape, Storage::Device(buffer))
    }

    /// The device buffer, when the elements live in a device's memory.
    #[inline]
    pub fn device_buffer(&self) -> Option<&Arc<dyn DeviceBuffer>> {
        match &self.data.storage {
            Storage::Device(b) => Some(b),
            _ => None,
        }
    }

    /// Whether the elements are in host memory (readable with [`Tensor::as_slice`]).
    #[inline]
    pub fn is_on_host(&self) -> bool {
        self.device_buffer().is_none()
    }

    /// Borrows the elements as `T`.
    ///
    /// # Errors
    /// [`TensorError::DType`] when the tensor holds another dtype than `T`'s;
    /// [`TensorError::NotOnHost`] when its elements are in a device's memory.
    #[inline]
    pub fn as_slice<T: StorageElement>(&self) -> Result<&[T], TensorError> {
        if let Some(b) = self.device_buffer() {
            return Err(TensorError::NotOnHost(b.device().to_string()));
        }
        // `ok_or_else`: the error is built only on failure (this runs twice per kernel
        // call on the executor's hot path).
        T::slice(&self.data.storage).ok_or_else(|| TensorError::DType {
            requested: T::DTYPE,
            actual: self.dtype(),
        })
    }

    /// Borrows the elements mutably, in place, when this is the only reference to them
    /// and they are host elements of type `T`; `None` otherwise (nothing is copied: clone
    /// the elements yourself to write into a shared tensor). A kernel holding an input's
    /// only reference can write its output there, with no allocation.
    #[inline]
    pub fn as_mut_slice<T: StorageElement>(&mut self) -> Option<&mut [T]> {
        T::slice_mut(&mut self.unique_buffer()?.storage)
    }

    /// The buffer, mutably, when this handle is its only reference.
    ///
    /// `Arc::get_mut` would do, but it locks the weak count with a compare-and-swap to
    /// rule out a concurrent `Arc::downgrade`; a tensor's buffer never has a weak
    /// reference (`data` is private to this module, which never downgrades it), so two
    /// loads of the strong count's and weak count's and an acquire fence suffice: the
    /// strong count cannot rise while we hold `&mut self` and are its only holder.
    #[inline]
    fn unique_buffer(&mut self) -> Option<&mut Buffer> {
        if Arc::strong_count(&self.data) != 1 || Arc::weak_count(&self.data) != 0 {
            return None;
        }
        // Pairs with the `Release` decrement of every other handle's drop: their reads
        // of the buffer happen before our writes.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        // SAFETY: this handle is the only strong reference and no weak one exists (see
        // above), so no other reference to the buffer exists or can be made while
        // `&mut self` is borrowed (a clone would need `&self`). The pointer comes from
        // `Arc::as_ptr`, which is derived from the allocation without a shared reference,
        // so writing through it is allowed (as `Arc::get_mut_unchecked` does).
        Some(unsafe { &mut *Arc::as_ptr(&self.data).cast_mut() })
    }

    /// Copies the elements out as a `Vec<T>`.
    ///
    /// # Errors
    /// As [`as_slice`](Self::as_slice).
    pub fn to_vec<T: StorageElement>(&self) -> Result<Vec<T>, TensorError> {
        self.as_slice::<T>().map(<[T]>::to_vec)
    }

    /// The single element of a scalar (or one-element) tensor.
    ///
    /// # Errors
    /// As [`as_slice`](Self::as_slice); [`TensorError::NotScalar`] when the tensor does not
    /// hold exactly one element.
    pub fn scalar_value<T: StorageElement>(&self) -> Result<T, TensorError> {
        let s = self.as_slice::<T>()?;
        match s {
            [v] => Ok(*v),
            _ => Err(TensorError::NotScalar(self.shape.clone())),
        }
    }

    /// Takes the elements back without copying when this is the only reference and the
    /// dtype is `T`; otherwise returns the tensor unchanged. The origin, if any, is
    /// forgotten: the caller owns the elements now (read [`origin`](Self::origin) first to
    /// keep it); and the charge, if any, is given back to its device's account (a kernel
    /// that makes its output of them charges them again: [`MemoryLimit::charge`]).
    ///
    /// # Errors
    /// The tensor itself, unchanged, when its dtype is not `T`'s, another reference to
    /// its elements exists, or they are in a device's memory.
    pub fn try_into_vec<T: StorageElement>(self) -> Result<Vec<T>, Tensor> {
        if T::DTYPE != self.dtype() {
            return Err(self);
        }
        let shape = self.shape;
        match Arc::try_unwrap(self.data) {
            Ok(buffer) => T::from_storage(buffer.take()).map_err(|s| Tensor {
                shape: shape.clone(),
                data: Arc::new(Buffer::plain(s)),
            }),
            Err(data) => Err(Tensor { shape, data }),
        }
    }

    /// The same elements under another shape with the same element count.
    ///
    /// # Errors
    /// [`TensorError::Shape`] for a shape too large; [`TensorError::ElementCount`] when
    /// the counts differ.
    pub fn reshape(&self, shape: impl IntoShape) -> Result<Tensor, TensorError> {
        let shape = shape.into_shape()?;
        if shape.num_elements() != self.num_elements() {
            return Err(TensorError::ElementCount {
                expected: shape.num_elements(),
                shape,
                got: self.num_elements(),
            });
        }
        Ok(Tensor {
            shape,
            data: Arc::clone(&self.data),
        })
    }

    /// Whether two tensors share one buffer (no copy was made between them).
    pub fn shares_buffer_with(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }
}

impl MemoryLimit {
    /// A tensor of shape `shape` holding the first elements of `values` (exactly as many
    /// as the shape has), allocated under this limit and charged to the account, if any,
    /// before any element is computed: how a kernel that computes its output element by
    /// element allocates it through its device.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use magpie_core::tensor::{MemoryAccount, MemoryLimit};
    /// let account = Arc::new(MemoryAccount::new());
    /// let cpu = MemoryLimit::new("/device:CPU:0", Some(64)).with_account(Arc::clone(&account));
    /// let t = cpu.collect([2, 2], (1..).map(|i| i as f32))?;
    /// assert_eq!((t.as_slice::<f32>()?, account.in_use()), (&[1.0, 2.0, 3.0, 4.0][..], 16));
    /// assert!(cpu.collect([4, 4], std::iter::repeat(0.0f64)).is_err()); // 128 bytes
    /// # Ok::<(), magpie_core::tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Shape`] for a shape too large, [`TensorError::Alloc`] as
    /// [`reserve`](Self::reserve) and [`with_capacity`](Self::with_capacity), and
    /// [`TensorError::ElementCount`] when `values` runs out first.
    pub fn collect<T: StorageElement>(
        &self,
        shape: impl IntoShape,
        values: impl IntoIterator<Item = T>,
    ) -> Result<Tensor, TensorError> {
        let shape = shape.into_shape()?;
        let n = shape.num_elements();
        let charge = self.reserve(T::DTYPE, n)?;
        let mut data = self.with_capacity::<T>(n)?;
        data.extend(values.into_iter().take(n));
        Tensor::from_vec_charged(shape, data, None, charge)
    }
}

macro_rules! scalar_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Tensor {
            fn from(v: $t) -> Tensor {
                Tensor::scalar(v)
            }
        }
        impl From<Vec<$t>> for Tensor {
            fn from(v: Vec<$t>) -> Tensor {
                Tensor { shape: Shape::vector(v.len()), data: Arc::new(Buffer::plain(<$t>::into_storage(v))) }
            }
        }
        impl From<&[$t]> for Tensor {
            fn from(v: &[$t]) -> Tensor {
                Tensor::from_slice(v)
            }
        }
        impl TryFrom<&Tensor> for $t {
            type Error = TensorError;
            fn try_from(t: &Tensor) -> Result<$t, TensorError> {
                t.scalar_value::<$t>()
            }
        }
        impl TryFrom<Tensor> for Vec<$t> {
            type Error = TensorError;
            fn try_from(t: Tensor) -> Result<Vec<$t>, TensorError> {
                match t.try_into_vec::<$t>() {
                    Ok(v) => Ok(v),
                    Err(t) => t.to_vec::<$t>(),
                }
            }
        }
    )*};
}
scalar_from!(f32, f64, i32, i64, bool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_shares_the_buffer() {
        let t = Tensor::from_vec([2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let u = t.clone();
        assert!(t.shares_buffer_with(&u));
        assert_eq!(u.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn only_a_unique_host_tensor_of_the_right_dtype_is_writable_in_place() {
        let mut t = Tensor::from_vec([2], vec![1.0f32, 2.0]).unwrap();
        t.as_mut_slice::<f32>().unwrap()[1] = 5.0;
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0, 5.0]);
        assert!(t.as_mut_slice::<i32>().is_none());
        let shared = t.clone();
        assert!(
            t.as_mut_slice::<f32>().is_none(),
            "a shared buffer is never written"
        );
        drop(shared);
        assert!(t.as_mut_slice::<f32>().is_some());
    }

    #[test]
    fn wrong_count_and_dtype_are_errors() {
        let e = Tensor::from_vec([3], vec![1i32, 2]).unwrap_err();
        assert_eq!(e.to_string(), "shape [3] needs 3 elements, got 2");
        let t = Tensor::scalar(1.5f64);
        assert_eq!(
            t.as_slice::<f32>().unwrap_err().to_string(),
            "tensor holds f64, not f32"
        );
        assert_eq!(f64::try_from(&t).unwrap(), 1.5);
    }

    #[test]
    fn unique_tensor_gives_its_buffer_back() {
        let t = Tensor::from(vec![1i64, 2, 3]);
        let v = t.try_into_vec::<i64>().unwrap();
        assert_eq!(v, vec![1, 2, 3]);
        let t = Tensor::from(vec![1i64]);
        let _u = t.clone();
        assert!(t.try_into_vec::<i64>().is_err());
    }

    #[derive(Debug, Default)]
    struct Keep(parking_lot::Mutex<Vec<Storage>>);

    impl Recycler for Keep {
        fn recycle(&self, storage: Storage) {
            self.0.lock().push(storage);
        }
    }

    #[test]
    fn the_last_reference_returns_the_buffer_to_its_recycler() {
        let keep = Arc::new(Keep::default());
        let origin = Arc::new(BufferOrigin::new(
            Some(1),
            Some(keep.clone() as Arc<dyn Recycler>),
        ));
        let t = Tensor::from_vec_in([3], vec![1.0f32, 2.0, 3.0], &origin).unwrap();
        assert_eq!(t.numa_node(), Some(1));
        let u = t.reshape([1, 3]).unwrap();
        drop(t);
        assert!(keep.0.lock().is_empty());
        drop(u);
        assert_eq!(
            keep.0.lock().as_slice(),
            &[Storage::F32(vec![1.0, 2.0, 3.0])]
        );
        // Taking the elements back forgets the origin: nothing is recycled.
        let t = Tensor::from_vec_in([1], vec![4i32], &origin).unwrap();
        assert_eq!(t.try_into_vec::<i32>().unwrap(), vec![4]);
        assert_eq!(keep.0.lock().len(), 1);
        assert_eq!(Tensor::scalar(1.0f32).numa_node(), None);
    }
}
