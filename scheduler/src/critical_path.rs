//! The critical-path policy's ready queue
//! ([`Policy::CriticalPath`](super::Policy::CriticalPath)): whenever a thread takes a task,
//! it takes one of the highest [`Topology::priority`](super::Topology::priority) among the
//! run's ready, not yet started tasks (ties: the lowest index).
//!
//! # Protocol
//!
//! One binary heap per run under a mutex, shared by the run's threads; the mutex gives
//! the ordering the [`ReadyQueue`] contract asks for. The roots are never copied: they sit
//! in `Topology::roots_by_priority` (decreasing priority, ties by index) behind a cursor
//! that is only moved under the mutex, and a pop compares the next root with the heap's
//! top. A finishing thread pushes its ready successors and pops in one critical section,
//! and keeps the best of them without touching the heap when none queued is better (a
//! chain never pushes).
//!
//! `empty` mirrors, outside the mutex, whether the queue holds no task (no root left and an
//! empty heap); it is updated at the end of a critical section that changes it, so it is
//! written only on transitions. A finishing task with a single ready successor that reads
//! it as `true` takes that successor without the lock: nothing was queued at that instant,
//! so the successor is the best ready task (the read is the linearization point of its
//! push and pop). A task pushed concurrently by another thread was not yet queued at that
//! instant — as with the lock, ready tasks count once they are queued. The successor's
//! data does not go through the queue, so the flag needs no ordering (`Relaxed`).

//! # Keys
//!
//! A key orders by priority, then by lower index. When every priority fits in 32 bits (any
//! topology whose costs sum below 2^32), a key is one `u64` — priority in the high half,
//! `u32::MAX - task` in the low half — which halves the heap's memory and makes each
//! comparison one instruction; otherwise it is `(priority, Reverse(task))`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::sync::plain::Mutex;

use super::policy::RunQueue;
use super::ready_queue::{QueueContext, ReadyQueue};
use super::sync::{AtomicBool, Ordering};
use super::topology::Topology;

/// A heap key: the maximum is the task to run first.
pub(crate) trait Key: Ord + Copy + Send {
    fn new(priority: u64, task: u32) -> Self;
    fn task(self) -> u32;
}

/// Priority (below 2^32) in the high half, `u32::MAX - task` in the low half.
impl Key for u64 {
    #[inline]
    fn new(priority: u64, task: u32) -> u64 {
        debug_assert!(priority <= u64::from(u32::MAX));
        (priority << 32) | u64::from(u32::MAX - task)
    }

    #[inline]
    fn task(self) -> u32 {
        u32::MAX - self as u32
    }
}

impl Key for (u64, Reverse<u32>) {
    #[inline]
    fn new(priority: u64, task: u32) -> Self {
        (priority, Reverse(task))
    }

    #[inline]
    fn task(self) -> u32 {
        self.1 .0
    }
}

/// The critical-path queue of one run, with keys of type `K`.
/// One cache line for the mutex and the flag: every thread of the run writes the former.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct CriticalPathQueue<K: Ord> {
    inner: Mutex<Inner<K>>,
    /// Whether no task is queued; updated under the mutex, on transitions only.
    empty: AtomicBool,
}

/// Roots by priority (behind a cursor), and a heap of the other ready tasks.
#[derive(Debug)]
struct Inner<K: Ord> {
    next_root: usize,
    heap: BinaryHeap<K>,
}

/// The queue for a run of `topology`, with the narrowest key its priorities fit.
pub(crate) fn new_queue(topology: &Topology) -> RunQueue {
    // The costliest path starts at a root.
    let max = topology
        .roots_by_priority()
        .first()
        .map_or(0, |&r| topology.priority(r));
    let roots = topology.roots().len();
    if max <= u64::from(u32::MAX) {
        RunQueue::Critical(Box::new(CriticalPathQueue::<u64>::new(roots)))
    } else {
        RunQueue::Dyn(Box::new(CriticalPathQueue::<(u64, Reverse<u32>)>::new(
            roots,
        )))
    }
}

impl<K: Key> CriticalPathQueue<K> {
    fn new(roots: usize) -> CriticalPathQueue<K> {
        CriticalPathQueue {
            inner: Mutex::new(Inner {
                next_root: 0,
                heap: BinaryHeap::new(),
            }),
            empty: AtomicBool::new(roots == 0),
        }
    }

    /// Publishes whether `q` is empty if that changed; called at the end of each critical
    /// section (under the mutex, so the updates are ordered).
    #[inline]
    fn publish(&self, q: &Inner<K>, topology: &Topology) {
        let empty = q.heap.is_empty() && q.next_root >= topology.roots().len();
        if self.empty.load(Ordering::Relaxed) != empty {
            self.empty.store(empty, Ordering::Relaxed);
        }
    }
}

impl<K: Key> Inner<K> {
    /// The key of the next root, if any is left.
    #[inline]
    fn next_root(&self, topology: &Topology) -> Option<K> {
        let roots = topology.roots_by_priority();
        roots
            .get(self.next_root)
            .map(|&r| K::new(topology.priority(r), r))
    }

    /// Takes the best of the next root and the heap's top.
    #[inline]
    fn pop(&mut self, topology: &Topology) -> Option<u32> {
        match (self.next_root(topology), self.heap.peek()) {
            (Some(root), Some(&top)) if top > root => self.heap.pop().map(K::task),
            (Some(root), _) => {
                self.next_root += 1;
                Some(root.task())
            }
            (None, _) => self.heap.pop().map(K::task),
        }
    }
}

impl<K: Key> ReadyQueue for CriticalPathQueue<K> {
    fn push(&self, cx: &QueueContext<'_>, task: u32) {
        let key = K::new(cx.priority(task), task);
        let mut q = self.inner.lock();
        q.heap.push(key);
        self.publish(&q, cx.topology());
    }

    fn pop(&self, cx: &QueueContext<'_>) -> Option<u32> {
        let mut q = self.inner.lock();
        let task = q.pop(cx.topology());
        self.publish(&q, cx.topology());
        task
    }

    /// The roots stay in the topology, behind the cursor.
    fn push_roots(&self, _cx: &QueueContext<'_>, _roots: &[u32]) {}

    #[inline]
    fn push_and_pop(&self, cx: &QueueContext<'_>, ready: &[u32]) -> u32 {
        if let [only] = ready {
            if self.empty.load(Ordering::Relaxed) {
                return *only;
            }
        }
        let topology = cx.topology();
        let key = |t: u32| K::new(topology.priority(t), t);
        let mut q = self.inner.lock();
        // The best of `ready` stays out of the heap unless something queued beats it.
        let (&first, rest) = ready
            .split_first()
            .expect("push_and_pop is given at least one task");
        let mut best = key(first);
        for &t in rest {
            let k = key(t);
            if k > best {
                q.heap.push(best);
                best = k;
            } else {
                q.heap.push(k);
            }
        }
        let queued = match (q.next_root(topology), q.heap.peek()) {
            (Some(root), Some(&top)) => Some(root.max(top)),
            (root, top) => root.or(top.copied()),
        };
        let task = match queued {
            Some(head) if head > best => {
                q.heap.push(best);
                q.pop(topology)
                    .expect("the queue's head was just seen under the lock")
            }
            _ => best.task(),
        };
        self.publish(&q, topology);
        task
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;

    use super::Key;

    #[test]
    fn packed_keys_order_by_priority_then_lower_index() {
        let k = |p, t| <u64 as Key>::new(p, t);
        assert!(k(5, 9) > k(4, 0));
        assert!(k(5, 1) > k(5, 2));
        assert!(k(u64::from(u32::MAX), u32::MAX) > k(u64::from(u32::MAX) - 1, 0));
        for t in [0, 1, 77, u32::MAX] {
            assert_eq!(k(3, t).task(), t);
            assert_eq!(<(u64, Reverse<u32>) as Key>::new(u64::MAX, t).task(), t);
        }
    }
}
