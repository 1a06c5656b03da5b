//! Buffer pools: device-local tensor buffers and host-visible staging buffers, kept in
//! size classes and reused across steps instead of allocated per op.
//!
//! ## Size classes
//! A request for `n` f32 elements gets a block of [`class_of`]`(n)` elements: at least
//! [`MIN_CLASS`], else `n` rounded up to a quarter of its power of two (`n <= 2^k` gives
//! a multiple of `2^k / 8`), so a block wastes at most a quarter of its size and a step
//! that runs again finds the blocks its previous run gave back.
//!
//! ## Protocol (when a block may be reused)
//! A [`Lease`] hands a block out; dropping it puts the block on its class's free list.
//! The tensor that held the lease may be gone while commands that use the block are
//! still queued or running: they hold their own reference to the block's `Buffer` until
//! the GPU has run them and the fence waiter has dropped their command buffer.
//! - *Device-local blocks are reused in stream order*, at once: only the GPU touches
//!   them, and only through the device's one command stream (`stream.rs`), so every
//!   command of the new user runs after every command of the old one, with a barrier
//!   between them (vulkano's builder sees both uses of the range within a batch; the
//!   timeline semaphore orders batches). This is what lets a step reuse the buffers of
//!   its own finished nodes while its batch is still being recorded.
//! - *Staging blocks* are written and read by the host, outside the stream, so one is
//!   handed out again only when the free list holds the *only* reference to its `Buffer`
//!   (`Arc::strong_count == 1`, read under the pool's lock): no queued command uses it.
//!   Nothing can clone a reference out of the free list but the pool itself, under that
//!   lock, so the count cannot rise between the check and the reuse; it can only fall.
//!   Blocks still in use by the GPU stay on the list and are skipped.
//! - Eviction (to make room under the memory limit, or to keep the cache under
//!   [`CACHE_LIMIT_BYTES`]) drops free blocks largest first; their memory returns to the
//!   driver when the last command using them is done.
//!
//! ## Accounting
//! `in_use` counts the bytes of blocks leased out (the tensors' memory); `cached` the
//! bytes of blocks on free lists. A device pool refuses a lease when the bytes leased
//! and the request would pass the device's memory limit, and makes room for it by
//! evicting free blocks until leased and cached bytes fit the limit. Counters are
//! atomics read with `Relaxed`: they are reports, and order nothing (the free lists
//! themselves are under the mutex).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use vulkano::buffer::{Buffer, BufferCreateInfo, BufferUsage, Subbuffer};
use vulkano::memory::allocator::{AllocationCreateInfo, MemoryTypeFilter, StandardMemoryAllocator};

/// The smallest block, in elements (256 bytes).
pub(super) const MIN_CLASS: u64 = 64;
/// Bytes of free blocks one pool keeps at most (behaviour at the time of writing).
pub(super) const CACHE_LIMIT_BYTES: u64 = 1 << 30;

/// The block size, in elements, that serves a request of `n` elements.
pub(super) fn class_of(n: u64) -> u64 {
    if n <= MIN_CLASS {
        return MIN_CLASS;
    }
    let step = n.next_power_of_two() / 8;
    n.div_ceil(step).saturating_mul(step)
}

/// What kind of buffers a pool makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Device-local tensor buffers (shader storage, copied both ways).
    Device,
    /// Host-visible buffers the host writes and the GPU copies from.
    Upload,
    /// Host-visible buffers the GPU copies into and the host reads.
    Download,
}

impl Kind {
    fn create_info(self) -> (BufferUsage, MemoryTypeFilter) {
        match self {
            Kind::Device => (
                BufferUsage::STORAGE_BUFFER | BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST,
                MemoryTypeFilter::PREFER_DEVICE,
            ),
            Kind::Upload => (
                BufferUsage::TRANSFER_SRC,
                MemoryTypeFilter::PREFER_HOST | MemoryTypeFilter::HOST_SEQUENTIAL_WRITE,
            ),
            Kind::Download => (
                BufferUsage::TRANSFER_DST,
                MemoryTypeFilter::PREFER_HOST | MemoryTypeFilter::HOST_RANDOM_ACCESS,
            ),
        }
    }
}

/// Counters of one pool (see [`VulkanDevice::memory_stats`](super::VulkanDevice::memory_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers created from the driver's memory since the device was opened.
    pub allocations: u64,
    /// Leases served from a free block instead.
    pub reuses: u64,
    /// Bytes of blocks leased out now.
    pub in_use_bytes: u64,
    /// Bytes of free blocks kept for reuse now.
    pub cached_bytes: u64,
}

/// Why a pool could not lease a block.
#[derive(Debug)]
pub(super) enum PoolError {
    /// The lease would pass the memory limit: bytes asked for, bytes leased, the limit.
    OverLimit { bytes: u64, in_use: u64, limit: u64 },
    /// The driver refused the allocation.
    Vulkan(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Free blocks by class (in elements).
#[derive(Default)]
struct Free {
    by_class: HashMap<u64, Vec<Subbuffer<[f32]>>>,
}

/// One pool of blocks of one [`Kind`].
pub(super) struct Pool {
    kind: Kind,
    memory: Arc<StandardMemoryAllocator>,
    free: Mutex<Free>,
    in_use: AtomicU64,
    cached: AtomicU64,
    allocations: AtomicU64,
    reuses: AtomicU64,
}

/// A block leased from a pool; dropping it gives the block back.
pub(super) struct Lease {
    block: Option<Subbuffer<[f32]>>,
    pool: Arc<Pool>,
}

impl Lease {
    /// The first `n` elements of the block (at least one), rounded up to a whole number
    /// of vec4s where the block has room (it has, unless its class was capped at the
    /// largest bindable buffer): the vec4 kernels need whole vec4s.
    pub(super) fn view(&self, n: u64) -> Subbuffer<[f32]> {
        let block = self
            .block
            .as_ref()
            .expect("a lease holds its block until dropped");
        let n = n.max(1);
        let rounded = n.next_multiple_of(4);
        let len = if rounded <= block.len() { rounded } else { n };
        block.clone().slice(0..len)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            self.pool.give_back(block);
        }
    }
}

/// Bytes of a block of `elements` f32s.
fn bytes_of(elements: u64) -> u64 {
    elements.saturating_mul(4)
}

impl Pool {
    pub(super) fn new(kind: Kind, memory: Arc<StandardMemoryAllocator>) -> Arc<Pool> {
        Arc::new(Pool {
            kind,
            memory,
            free: Mutex::new(Free::default()),
            in_use: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            allocations: AtomicU64::new(0),
            reuses: AtomicU64::new(0),
        })
    }

    /// The pool's counters now.
    pub(super) fn stats(&self) -> PoolStats {
        PoolStats {
            allocations: self.allocations.load(Ordering::Relaxed),
            reuses: self.reuses.load(Ordering::Relaxed),
            in_use_bytes: self.in_use.load(Ordering::Relaxed),
            cached_bytes: self.cached.load(Ordering::Relaxed),
        }
    }

    /// Bytes of blocks leased out now.
    pub(super) fn in_use_bytes(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// A block of at least `n` elements (`max_elements` caps the class, so a request the
    /// device can bind never gets a block it cannot), within `limit` bytes in use when
    /// given.
    pub(super) fn lease(
        self: &Arc<Self>,
        n: u64,
        max_elements: u64,
        limit: Option<u64>,
    ) -> Result<Lease, PoolError> {
        let class = class_of(n).min(max_elements.max(n)).max(1);
        let bytes = bytes_of(class);
        let mut free = self.free.lock();
        if let Some(limit) = limit {
            // The tensors alone may never pass the limit, whatever the pool holds.
            let in_use = self.in_use.load(Ordering::Relaxed);
            if in_use.saturating_add(bytes) > limit {
                return Err(PoolError::OverLimit {
                    bytes,
                    in_use,
                    limit,
                });
            }
        }
        if let Some(list) = free.by_class.get_mut(&class) {
            let stream_ordered = self.kind == Kind::Device;
            if let Some(i) = list
                .iter()
                .position(|b| stream_ordered || Arc::strong_count(b.buffer()) == 1)
            {
                let block = list.swap_remove(i);
                self.cached.fetch_sub(bytes, Ordering::Relaxed);
                self.reuses.fetch_add(1, Ordering::Relaxed);
                return Ok(self.hand_out(block, bytes));
            }
        }
        if let Some(limit) = limit {
            // Free blocks hold memory too: make room for the new one.
            let in_use = self.in_use.load(Ordering::Relaxed);
            let cached = self.cached.load(Ordering::Relaxed);
            let excess = (in_use + cached)
                .saturating_add(bytes)
                .saturating_sub(limit);
            self.evict(&mut free, excess);
        }
        let cached = self.cached.load(Ordering::Relaxed);
        let excess = (cached + bytes).saturating_sub(CACHE_LIMIT_BYTES);
        self.evict(&mut free, excess);
        drop(free);
        let block = self.create(class).map_err(PoolError::Vulkan)?;
        self.allocations.fetch_add(1, Ordering::Relaxed);
        Ok(self.hand_out(block, bytes))
    }

    fn hand_out(self: &Arc<Self>, block: Subbuffer<[f32]>, bytes: u64) -> Lease {
        self.in_use.fetch_add(bytes, Ordering::Relaxed);
        Lease {
            block: Some(block),
            pool: Arc::clone(self),
        }
    }

    fn give_back(&self, block: Subbuffer<[f32]>) {
        let bytes = bytes_of(block.len());
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
        self.cached.fetch_add(bytes, Ordering::Relaxed);
        self.free
            .lock()
            .by_class
            .entry(block.len())
            .or_default()
            .push(block);
    }

    /// Drops free blocks, largest first, until `bytes` are freed or none is left.
    fn evict(&self, free: &mut Free, mut bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut classes: Vec<u64> = free.by_class.keys().copied().collect();
        classes.sort_unstable_by(|a, b| b.cmp(a));
        for class in classes {
            let list = free.by_class.get_mut(&class).expect("listed above");
            while bytes > 0 && list.pop().is_some() {
                let b = bytes_of(class);
                self.cached.fetch_sub(b, Ordering::Relaxed);
                bytes = bytes.saturating_sub(b);
            }
            if bytes == 0 {
                break;
            }
        }
        free.by_class.retain(|_, list| !list.is_empty());
    }

    fn create(
        &self,
        elements: u64,
    ) -> Result<Subbuffer<[f32]>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        let (usage, filter) = self.kind.create_info();
        Buffer::new_slice::<f32>(
            self.memory.clone(),
            BufferCreateInfo {
                usage,
                ..Default::default()
            },
            AllocationCreateInfo {
                memory_type_filter: filter,
                ..Default::default()
            },
            elements,
        )
        .map_err(|e| Box::new(e) as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_waste_at_most_a_quarter() {
        assert_eq!(class_of(0), MIN_CLASS);
        assert_eq!(class_of(1), MIN_CLASS);
        assert_eq!(class_of(64), 64);
        assert_eq!(class_of(65), 80);
        assert_eq!(class_of(1000), 1024);
        assert_eq!(class_of(1025), 1280);
        for n in [
            65u64,
            100,
            129,
            1000,
            4097,
            1 << 20,
            (1 << 20) + 1,
            123_456_789,
        ] {
            let c = class_of(n);
            assert!(c >= n && (c - n) * 4 <= c, "{n} -> {c}");
        }
    }
}
