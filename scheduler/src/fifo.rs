//! The FIFO policy's ready queue ([`Policy::Fifo`](super::Policy::Fifo)): tasks are taken in
//! the order they became ready — the roots first, in increasing index, then each finishing
//! task's newly ready successors in the order of its edges.
//!
//! # Protocol
//!
//! The roots are never copied: they sit in front of the queue, in
//! [`Topology::roots`](super::Topology::roots), behind an atomic cursor. Every other task goes through a
//! `crossbeam_deque::Injector` (lock-free, linearizable; its push releases and its steal
//! acquires the slot, which is the ordering the [`ReadyQueue`] contract asks for). A pop
//! first claims a root with `fetch_add` on the cursor (`Relaxed`: the roots are immutable
//! and the claim only needs to be unique), then steals from the injector.
//!
//! A finishing task with a single ready successor that finds no root left and the injector
//! empty keeps that successor instead of pushing and popping it: pushed, it would have been
//! the queue's head, so the order is the same (the empty check is the linearization point
//! of that push and pop). This keeps chains off the injector; with several ready
//! successors the check is skipped (it would read the injector's contended head and tail
//! for nothing most of the time).

use crossbeam_deque::{Injector, Steal};
use crossbeam_utils::CachePadded;

use super::ready_queue::{pop_blocking, QueueContext, ReadyQueue};
use super::sync::{AtomicUsize, Ordering};

/// Roots (behind a cursor), then everything else in order of readiness.
#[derive(Debug)]
pub(crate) struct FifoQueue {
    next_root: CachePadded<AtomicUsize>,
    queue: Injector<u32>,
}

impl FifoQueue {
    pub(crate) fn new() -> FifoQueue {
        FifoQueue {
            next_root: CachePadded::new(AtomicUsize::new(0)),
            queue: Injector::new(),
        }
    }

    /// Whether every root has been claimed.
    #[inline]
    fn roots_taken(&self, cx: &QueueContext<'_>) -> bool {
        self.next_root.load(Ordering::Relaxed) >= cx.topology().roots().len()
    }
}

impl ReadyQueue for FifoQueue {
    #[inline]
    fn push(&self, _cx: &QueueContext<'_>, task: u32) {
        self.queue.push(task);
    }

    #[inline]
    fn pop(&self, cx: &QueueContext<'_>) -> Option<u32> {
        let roots = cx.topology().roots();
        if self.next_root.load(Ordering::Relaxed) < roots.len() {
            let i = self.next_root.fetch_add(1, Ordering::Relaxed);
            if let Some(&root) = roots.get(i) {
                return Some(root);
            }
        }
        loop {
            match self.queue.steal() {
                Steal::Success(task) => return Some(task),
                Steal::Retry => continue,
                // Only while a push that the caller's pick counts is still being
                // published: the scheduler calls again.
                Steal::Empty => return None,
            }
        }
    }

    /// The roots stay in the topology, behind the cursor.
    fn push_roots(&self, _cx: &QueueContext<'_>, _roots: &[u32]) {}

    #[inline]
    fn push_and_pop(&self, cx: &QueueContext<'_>, ready: &[u32]) -> u32 {
        if let [only] = ready {
            if self.roots_taken(cx) && self.queue.is_empty() {
                // It would be the head: keep it.
                return *only;
            }
        }
        for &task in ready {
            self.queue.push(task);
        }
        pop_blocking(self, cx)
    }
}
