//! Where a host buffer came from, and how it goes back: [`BufferOrigin`] and
//! [`Recycler`].
//!
//! A backend's allocator may tag the buffers it hands out with an origin: the NUMA node
//! the memory was placed on (so tests and step statistics can see placement without a
//! NUMA machine) and a [`Recycler`] that takes the elements back when the last
//! [`Tensor`](super::Tensor) reference to them is dropped. A large buffer that comes back
//! this way can serve the next step's output without a fresh allocation, whose pages the
//! OS would have to fault in again on first touch.
//!
//! Tensors without an origin (the common case: feeds, scalars, anything built with
//! [`Tensor::from_vec`](super::Tensor::from_vec)) free their elements as usual. An origin
//! costs one `Arc` clone per tensor and nothing else.

use std::fmt;
use std::sync::Arc;

use super::account::Charge;
use super::storage::Storage;

/// Takes back the elements of a tensor whose last reference was dropped.
///
/// Called from whichever thread drops that reference (a scheduler worker, or a user thread
/// dropping a fetched tensor), so it must be cheap and must not block for long; it must
/// not panic.
pub trait Recycler: Send + Sync + fmt::Debug {
    /// Takes the storage back; the recycler may keep it for reuse or drop it.
    fn recycle(&self, storage: Storage);
}

/// What an allocator recorded about a host buffer it made.
#[derive(Clone, Debug, Default)]
pub struct BufferOrigin {
    numa_node: Option<usize>,
    recycler: Option<Arc<dyn Recycler>>,
}

impl BufferOrigin {
    /// An origin on `numa_node` (if known), returning its buffers to `recycler` (if any).
    pub fn new(numa_node: Option<usize>, recycler: Option<Arc<dyn Recycler>>) -> BufferOrigin {
        BufferOrigin {
            numa_node,
            recycler,
        }
    }

    /// The NUMA node the buffer's memory was placed on, if the allocator knew it.
    pub fn numa_node(&self) -> Option<usize> {
        self.numa_node
    }

    /// The recycler the buffer returns to, if any.
    pub fn recycler(&self) -> Option<&Arc<dyn Recycler>> {
        self.recycler.as_ref()
    }
}

/// The shared part of a tensor: its storage, when an allocator tagged it its origin, and
/// when a device counts its memory the charge of its bytes. Dropping the last reference
/// hands the storage to the origin's recycler and gives the charge back (the drop guard
/// of [`account`](super::account)'s protocol).
#[derive(Debug)]
pub(crate) struct Buffer {
    pub(crate) storage: Storage,
    pub(crate) origin: Option<Arc<BufferOrigin>>,
    pub(crate) charge: Option<Charge>,
}

impl Buffer {
    /// A buffer without an origin or a charge.
    #[inline]
    pub(crate) fn plain(storage: Storage) -> Buffer {
        Buffer {
            storage,
            origin: None,
            charge: None,
        }
    }

    /// Takes the storage out, leaving an empty one; forgets the origin (so that drop
    /// recycles nothing) and gives the charge back (the storage is no tensor's now).
    pub(crate) fn take(mut self) -> Storage {
        self.origin = None;
        self.charge = None;
        std::mem::replace(&mut self.storage, Storage::Bool(Vec::new()))
    }
}

impl PartialEq for Buffer {
    /// Buffers compare by their elements; the origin is bookkeeping.
    fn eq(&self, other: &Buffer) -> bool {
        self.storage == other.storage
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(recycler) = self.origin.as_ref().and_then(|o| o.recycler.as_ref()) {
            let storage = std::mem::replace(&mut self.storage, Storage::Bool(Vec::new()));
            recycler.recycle(storage);
        }
    }
}
