//! Output buffers of large tensors: one small cache of recently freed buffers per NUMA
//! node, so that the next step's output reuses memory whose pages are already mapped.
//!
//! # Why
//!
//! A fresh 64 MiB `Vec` comes from `mmap`: the kernel that first writes it takes a page
//! fault per 4 KiB page, which costs more than the arithmetic of an elementwise add. A
//! step that runs again (the common case: a training loop, a benchmark) frees its outputs
//! when the user drops the fetched tensors, and allocates the same sizes again.
//!
//! # How
//!
//! A CPU kernel asks [`output`] for a buffer of `n` elements. Below
//! [`RECYCLE_MIN_BYTES`] it gets a plain `Vec` (the allocator reuses small blocks well,
//! and scalar ops must stay cheap). Above, it gets a buffer from the cache of the node the
//! calling worker was planned on (the device's node outside a worker, or the shared
//! "no node" cache) — or a new one — and the tensor it builds with [`Output::into_tensor`]
//! carries that cache's [`BufferOrigin`]: the node (`Tensor::numa_node`) and a recycler
//! that takes the elements back when the last reference to the tensor drops.
//!
//! # Allocation
//!
//! Every output is allocated fallibly under its device's memory limit ([`Place`], made
//! from the device when the kernel is built): a request that would take the device's live
//! tensors beyond the limit, or one the allocator refuses, is a resource-exhausted error
//! naming the device and the bytes; the process never aborts. Every output is charged to
//! the device's memory account until its tensor's last reference drops (see
//! `device.rs`): [`output`] reserves the bytes before allocating, and [`adopt`], which
//! wraps an input's elements reused in place (whose old charge went with the input),
//! charges them again. Cached buffers belong to no tensor and are not charged.
//!
//! # Guarantees
//!
//! - A cached buffer is reused only for the same dtype and a capacity in
//!   `n ..= n + n / 4`, and only by the node it was first written on (one cache per node).
//! - A cache holds at most [`CACHE_LIMIT_BYTES`] and [`CACHE_LIMIT_BUFFERS`] buffers; the
//!   oldest go first. Cached bytes are not counted by the executor's memory budgets (they
//!   belong to no tensor).
//! - Results never depend on the cache: a kernel writes every element of its output.

use std::sync::{Arc, Mutex, OnceLock};

use magpie_core::kernel::KernelInit;
use magpie_core::tensor::{
    BufferOrigin, Charge, IntoShape, MemoryLimit, Recycler, Storage, StorageElement,
};
use magpie_core::{KernelError, Tensor};

/// Buffers smaller than this are plain `Vec`s, neither cached nor tagged.
pub(crate) const RECYCLE_MIN_BYTES: usize = 1 << 20;
/// Bytes one node's cache keeps at most (behaviour at the time of writing).
pub(crate) const CACHE_LIMIT_BYTES: usize = 512 << 20;
/// Buffers one node's cache keeps at most.
pub(crate) const CACHE_LIMIT_BUFFERS: usize = 16;

/// Caches by node; index [`NO_NODE`] for buffers of no known node.
const NUM_CACHES: usize = 65;
/// The cache index of "no node" (and of nodes past 63, which share it).
const NO_NODE: usize = NUM_CACHES - 1;

/// The cached buffers of one node, oldest first.
#[derive(Debug, Default)]
struct Shelf {
    buffers: Vec<Storage>,
    bytes: usize,
}

/// One node's cache: the recycler that tensors' origins point at.
#[derive(Debug)]
struct Cache {
    shelf: Mutex<Shelf>,
}

/// The capacity of a host storage's buffer, in bytes; 0 for anything else.
fn capacity_bytes(s: &Storage) -> usize {
    match s {
        Storage::F32(v) => v.capacity() * 4,
        Storage::F64(v) => v.capacity() * 8,
        Storage::I32(v) => v.capacity() * 4,
        Storage::I64(v) => v.capacity() * 8,
        Storage::Bool(v) => v.capacity(),
        _ => 0,
    }
}

/// The element capacity of a host storage's buffer.
fn capacity(s: &Storage) -> usize {
    match s {
        Storage::F32(v) => v.capacity(),
        Storage::F64(v) => v.capacity(),
        Storage::I32(v) => v.capacity(),
        Storage::I64(v) => v.capacity(),
        Storage::Bool(v) => v.capacity(),
        _ => 0,
    }
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shelf> {
        self.shelf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A cached buffer of `T` holding `n ..= n + n / 4` elements, emptied (length 0).
    fn take<T: StorageElement>(&self, n: usize) -> Option<Vec<T>> {
        let mut shelf = self.lock();
        let fits = |s: &Storage| {
            let c = capacity(s);
            s.dtype() == T::DTYPE && c >= n && c <= n + n / 4
        };
        let best = (0..shelf.buffers.len())
            .filter(|&i| fits(&shelf.buffers[i]))
            .min_by_key(|&i| capacity(&shelf.buffers[i]))?;
        let storage = shelf.buffers.remove(best);
        shelf.bytes -= capacity_bytes(&storage);
        drop(shelf);
        let mut v = T::from_storage(storage).ok()?;
        v.clear();
        Some(v)
    }
}

impl Recycler for Cache {
    fn recycle(&self, storage: Storage) {
        let bytes = capacity_bytes(&storage);
        if !(RECYCLE_MIN_BYTES..=CACHE_LIMIT_BYTES).contains(&bytes) {
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut shelf = self.lock();
            shelf.buffers.push(storage);
            shelf.bytes += bytes;
            while shelf.bytes > CACHE_LIMIT_BYTES || shelf.buffers.len() > CACHE_LIMIT_BUFFERS {
                let old = shelf.buffers.remove(0);
                shelf.bytes -= capacity_bytes(&old);
                evicted.push(old);
            }
        }
        // Unmapping happens outside the lock.
        drop(evicted);
    }
}

/// A node's cache and the origin its tensors carry.
#[derive(Debug)]
struct NodeCache {
    cache: Arc<Cache>,
    origin: Arc<BufferOrigin>,
}

/// The cache of NUMA node `node` (`None`: no known node).
fn cache_of(node: Option<usize>) -> &'static NodeCache {
    static CACHES: [OnceLock<NodeCache>; NUM_CACHES] = [const { OnceLock::new() }; NUM_CACHES];
    let index = node.map_or(NO_NODE, |n| n.min(NO_NODE));
    CACHES[index].get_or_init(|| {
        let cache = Arc::new(Cache {
            shelf: Mutex::new(Shelf::default()),
        });
        let node = (index != NO_NODE).then_some(index);
        let origin = Arc::new(BufferOrigin::new(
            node,
            Some(Arc::clone(&cache) as Arc<dyn Recycler>),
        ));
        NodeCache { cache, origin }
    })
}

/// An output buffer being filled: `buf` has room for the requested elements (its length
/// starts at 0), `origin` and `charge` are what the finished tensor will carry.
#[derive(Debug)]
pub(crate) struct Output<T> {
    /// The elements; capacity at least the requested count.
    pub(crate) buf: Vec<T>,
    origin: Option<&'static Arc<BufferOrigin>>,
    /// The requested elements' bytes on the device's account (given back if the output
    /// is dropped unfinished).
    charge: Option<Charge>,
}

/// Where a kernel's outputs go: its device's NUMA node, memory limit and account. Made
/// once per `CpuDevice` and shared by every kernel built for it (a plan of a million
/// nodes holds a million kernels, each one pointer here); its fields are read through
/// `Deref`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Place(Arc<PlaceOf>);

/// What a [`Place`] shares.
#[derive(Debug, Default)]
pub(crate) struct PlaceOf {
    /// The device's NUMA node (where outputs go when not computed on a worker).
    pub(crate) node: Option<usize>,
    /// The device's name, memory limit and account, for every allocation.
    pub(crate) memory: MemoryLimit,
}

impl std::ops::Deref for Place {
    type Target = PlaceOf;

    fn deref(&self) -> &PlaceOf {
        &self.0
    }
}

impl Place {
    /// Outputs on NUMA node `node` under `memory`.
    pub(crate) fn new(node: Option<usize>, memory: MemoryLimit) -> Place {
        Place(Arc::new(PlaceOf { node, memory }))
    }

    /// The place of the device `init` builds a kernel for: a `CpuDevice`'s own, shared
    /// by all its kernels; any other device's made anew.
    pub(crate) fn of(init: &KernelInit<'_>) -> Place {
        if let Some(cpu) = init.device.as_any().downcast_ref::<crate::CpuDevice>() {
            return cpu.place();
        }
        Place::new(
            init.device.numa_node(),
            MemoryLimit::of(init.device.as_ref()),
        )
    }
}

/// An empty buffer with room for `n` elements of `T`, from the cache of the current
/// worker's node (or the place's node outside a worker) when it is large (see the module
/// docs).
///
/// # Errors
/// Resource exhausted when `n` elements would take the device past its memory limit or
/// the allocator refuses them.
pub(crate) fn output<T: StorageElement>(n: usize, place: &Place) -> Result<Output<T>, KernelError> {
    let charge = place.memory.reserve(T::DTYPE, n)?;
    // Cannot overflow: `reserve` checked the bytes.
    let bytes = n * std::mem::size_of::<T>();
    if bytes < RECYCLE_MIN_BYTES {
        return Ok(Output {
            buf: place.memory.with_capacity(n)?,
            origin: None,
            charge,
        });
    }
    let node = crate::layout::current_worker_node().or(place.node);
    let nc = cache_of(node);
    let buf = match nc.cache.take::<T>(n) {
        Some(buf) => buf,
        None => place.memory.with_capacity(n)?,
    };
    Ok(Output {
        buf,
        origin: Some(&nc.origin),
        charge,
    })
}

/// `n` copies of `value` in an output buffer (see [`output`]).
///
/// # Errors
/// As [`output`].
pub(crate) fn filled<T: StorageElement>(
    n: usize,
    value: T,
    place: &Place,
) -> Result<Output<T>, KernelError> {
    let mut out = output::<T>(n, place)?;
    out.buf.resize(n, value);
    Ok(out)
}

impl<T: StorageElement> Output<T> {
    /// The tensor of shape `shape` over the filled buffer.
    #[inline]
    pub(crate) fn into_tensor(self, shape: impl IntoShape) -> Result<Tensor, KernelError> {
        Ok(Tensor::from_vec_charged(
            shape,
            self.buf,
            self.origin,
            self.charge,
        )?)
    }
}

/// Wraps a finished buffer (e.g. an input's elements, reused in place) as a tensor of
/// `place`'s device: charged to its account whatever its limit (the memory is already
/// held; taking it from the input gave its old charge back), and returning to the cache
/// of `node` when it is large.
pub(crate) fn adopt<T: StorageElement>(
    shape: impl IntoShape,
    buf: Vec<T>,
    node: Option<usize>,
    place: &Place,
) -> Result<Tensor, KernelError> {
    let out = Output {
        origin: (buf.capacity().saturating_mul(std::mem::size_of::<T>()) >= RECYCLE_MIN_BYTES)
            .then(|| &cache_of(node).origin),
        // A vector's elements never take more than `isize::MAX` bytes.
        charge: place.memory.charge(buf.len() * std::mem::size_of::<T>()),
        buf,
    };
    out.into_tensor(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(node: usize) -> Place {
        Place::new(Some(node), MemoryLimit::host())
    }

    #[test]
    fn large_outputs_come_back_to_their_nodes_cache() {
        let n = RECYCLE_MIN_BYTES; // 4 MiB of f32
        let mut out = output::<f32>(n, &on(40)).unwrap();
        out.buf.resize(n, 1.0);
        let ptr = out.buf.as_ptr();
        let t = out.into_tensor([n]).unwrap();
        assert_eq!(t.numa_node(), Some(40));
        drop(t);
        // Same node, same dtype, same size: the same memory.
        let again = output::<f32>(n, &on(40)).unwrap();
        assert_eq!(again.buf.as_ptr(), ptr);
        assert!(again.buf.is_empty());
        // Another dtype or node never gets it.
        let mut out = again;
        out.buf.resize(n, 0.0);
        drop(out.into_tensor([n]).unwrap());
        assert_ne!(output::<i32>(n, &on(40)).unwrap().buf.as_ptr(), ptr.cast());
        assert_ne!(output::<f32>(n, &on(41)).unwrap().buf.as_ptr(), ptr);
        // Small outputs are plain.
        let mut small = output::<f32>(4, &on(40)).unwrap();
        small.buf.resize(4, 0.0);
        assert_eq!(small.into_tensor([4]).unwrap().numa_node(), None);
    }

    #[test]
    fn outputs_beyond_the_limit_are_errors_naming_device_and_bytes() {
        let place = Place::new(None, MemoryLimit::new("/device:CPU:0", Some(1 << 20)));
        assert!(output::<f32>(1 << 18, &place).is_ok());
        let e = output::<f32>((1 << 18) + 1, &place).unwrap_err();
        assert_eq!(
            e.to_string(),
            "resource exhausted: cannot allocate 1048580 bytes (262145 elements of f32) on \
             /device:CPU:0: more than the device's memory limit of 1048576 bytes"
        );
        let e = filled(1 << 62, 1.0f32, &Place::default()).unwrap_err();
        assert!(matches!(e, KernelError::ResourceExhausted(_)), "{e}");
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = Cache {
            shelf: Mutex::new(Shelf::default()),
        };
        for _ in 0..CACHE_LIMIT_BUFFERS + 3 {
            cache.recycle(Storage::F32(Vec::with_capacity(RECYCLE_MIN_BYTES / 4)));
        }
        assert_eq!(cache.lock().buffers.len(), CACHE_LIMIT_BUFFERS);
        cache.recycle(Storage::F32(Vec::with_capacity(16)));
        assert_eq!(cache.lock().buffers.len(), CACHE_LIMIT_BUFFERS);
        assert!(
            cache.take::<f32>(RECYCLE_MIN_BYTES / 2).is_none(),
            "too large to fit"
        );
        assert!(cache.take::<f32>(RECYCLE_MIN_BYTES / 4).is_some());
    }
}
