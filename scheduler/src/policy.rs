//! Scheduling policies: in which order a run's ready tasks start.
//!
//! A policy is chosen per run ([`RunControl::policy`](super::RunControl::policy)), so one
//! pool serves runs of different policies at once. Whatever the policy, every guarantee of
//! the [scheduler](super) holds: each task runs exactly once, after its predecessors;
//! failures, cancellation and deadlines behave the same; and the pool is
//! **work-conserving** — no worker sleeps while a job it could take is queued.
//!
//! # The policies and what each promises
//!
//! - [`Policy::DepthFirst`] (the default): a worker that finishes a task runs one newly
//!   ready successor itself, in place (continuation inlining), and pushes the others to
//!   its own deque, which it pops newest first. Promise: a task that makes successors
//!   ready is followed on the same worker by one of them, without a queue round trip
//!   (up to a bounded number in a row, see [`worker`](super::worker)).
//! - [`Policy::Fifo`] (breadth-first): ready tasks go to one first-in, first-out queue
//!   per run. Promise: tasks are taken from that queue in the order they became ready —
//!   the roots first, in increasing index, then each finishing task's newly ready
//!   successors in the order of its edges. With one worker, tasks therefore *start* in
//!   exactly that order; with several, they are *taken* in it and start within the
//!   scheduling jitter of the workers.
//! - [`Policy::CriticalPath`] (HEFT-like list scheduling): ready tasks go to one priority
//!   queue per run, keyed by [`Topology::priority`](super::Topology::priority) — the
//!   costliest remaining path, by the costs given to
//!   [`TopologyBuilder::set_cost`](super::TopologyBuilder::set_cost). Promise: whenever a
//!   worker takes a task of the run, it takes one of the highest priority among the
//!   run's ready, not yet started tasks (ties: the lowest index). With one worker, every
//!   task that starts has the highest priority of all ready tasks.
//!
//! The memory-aware policy of sessions is depth-first here; the executor adds plan edges
//! that hold memory-heavy nodes back (`exec::plan`).
//!
//! # How the queued policies use the pool
//!
//! A FIFO or critical-path run keeps its ready tasks in its own [`ReadyQueue`]; the
//! workers' deques hold anonymous *pick* jobs ([`Job::Pick`](super::job::Job)), each
//! owning some units of the run (see [`job`](super::job)). Running a pick takes the task
//! at the head of the run's queue. Every task is pushed to the queue before the unit that
//! will take it exists, so a pick always finds a task: the queue never holds fewer tasks
//! than there are picks of its run. Picks are stolen and split like root ranges, which is
//! what keeps these policies work-conserving. The roots are never copied into the queue:
//! they sit in front of it (in `Topology::roots` or `roots_by_priority`) behind a cursor.
//!
//! # Behaviour at the time of writing
//!
//! The FIFO queue is a `crossbeam_deque::Injector` (lock-free); the priority queue is a
//! binary heap under a mutex, shared by all workers of the run — simple and exact, but a
//! point of contention when thousands of tiny tasks are ready at once. A finishing task
//! still takes the next task from the queue itself instead of going through its deque.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::sync::plain::Mutex;
use crossbeam_deque::{Injector, Steal};
use crossbeam_utils::CachePadded;

use super::sync::{AtomicUsize, Ordering};
use super::topology::Topology;

/// In which order a run's ready tasks start. Under every policy, each task runs exactly
/// once after its predecessors, and no worker sleeps while a job it could take is queued
/// (work conservation); failures, cancellation and deadlines behave the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Policy {
    /// Depth-first with continuation inlining (the default, and the fastest): a task that
    /// makes successors ready is followed on the same thread by one of them, without a
    /// queue round trip (a bounded number in a row); the others go to the thread's own
    /// deque, newest first.
    #[default]
    DepthFirst,
    /// Breadth-first: ready tasks are taken from one first-in, first-out queue per run in
    /// the order they became ready — the roots first, in increasing index, then each
    /// finishing task's newly ready successors in the order of its edges. Where one
    /// thread runs the run, tasks start in exactly that order; with several, they are
    /// taken in it.
    Fifo,
    /// Critical path first (HEFT-like list scheduling): whenever a thread takes a task of
    /// the run, it takes one of the highest
    /// [`Topology::priority`](super::Topology::priority) — the costliest remaining path,
    /// by [`TopologyBuilder::set_cost`](super::TopologyBuilder::set_cost) — among the
    /// run's ready tasks not yet started (ties: the lowest index).
    CriticalPath,
}

/// The ready tasks of one FIFO or critical-path run.
#[derive(Debug)]
pub(crate) enum ReadyQueue {
    Fifo(Box<FifoQueue>),
    Critical(Mutex<CriticalQueue>),
}

/// Roots (behind a cursor), then everything else in order of readiness.
#[derive(Debug)]
pub(crate) struct FifoQueue {
    next_root: CachePadded<AtomicUsize>,
    queue: Injector<u32>,
}

/// Roots by priority (behind a cursor), and a heap of the other ready tasks.
#[derive(Debug, Default)]
pub(crate) struct CriticalQueue {
    next_root: usize,
    /// `(priority, Reverse(task))`: the maximum is the highest priority, lowest index.
    heap: BinaryHeap<(u64, Reverse<u32>)>,
}

impl ReadyQueue {
    /// The queue for a run of `policy`; `None` for depth-first runs, which use no queue.
    pub(crate) fn new(policy: Policy) -> Option<ReadyQueue> {
        match policy {
            Policy::DepthFirst => None,
            Policy::Fifo => Some(ReadyQueue::Fifo(Box::new(FifoQueue {
                next_root: CachePadded::new(AtomicUsize::new(0)),
                queue: Injector::new(),
            }))),
            Policy::CriticalPath => Some(ReadyQueue::Critical(Mutex::default())),
        }
    }

    /// Pushes the tasks of `ready` (in order) and takes the head of the queue, which the
    /// caller holds a unit for.
    #[inline]
    pub(crate) fn push_and_pop(&self, topology: &Topology, ready: &[u32]) -> u32 {
        match self {
            ReadyQueue::Fifo(q) => {
                for &t in ready {
                    q.queue.push(t);
                }
                q.pop(topology)
            }
            ReadyQueue::Critical(q) => {
                let priorities = topology.priorities();
                let mut q = q.lock();
                for &t in ready {
                    q.heap.push((priorities[t as usize], Reverse(t)));
                }
                q.pop(topology)
            }
        }
    }

    /// Takes the head of the queue. The caller holds a unit (a pick) of the run, so the
    /// queue holds a task for it (see the module docs).
    #[inline]
    pub(crate) fn pop(&self, topology: &Topology) -> u32 {
        match self {
            ReadyQueue::Fifo(q) => q.pop(topology),
            ReadyQueue::Critical(q) => q.lock().pop(topology),
        }
    }
}

impl FifoQueue {
    fn pop(&self, topology: &Topology) -> u32 {
        let roots = topology.roots();
        if self.next_root.load(Ordering::Relaxed) < roots.len() {
            let i = self.next_root.fetch_add(1, Ordering::Relaxed);
            if let Some(&root) = roots.get(i) {
                return root;
            }
        }
        loop {
            match self.queue.steal() {
                Steal::Success(task) => return task,
                // `Empty` only while the push of the task that our unit counts is still
                // being published: it is pushed before the unit exists, so wait.
                Steal::Retry | Steal::Empty => std::hint::spin_loop(),
            }
        }
    }
}

impl CriticalQueue {
    fn pop(&mut self, topology: &Topology) -> u32 {
        let roots = topology.roots_by_priority();
        let root = roots.get(self.next_root).map(|&r| {
            let r_key = (topology.priorities()[r as usize], Reverse(r));
            (r, r_key)
        });
        match (root, self.heap.peek()) {
            (Some((r, key)), Some(top)) if key >= *top => {
                self.next_root += 1;
                r
            }
            (Some((r, _)), None) => {
                self.next_root += 1;
                r
            }
            (_, Some(_)) => self.heap.pop().map(|(_, Reverse(t))| t).unwrap_or_default(),
            (None, None) => unreachable!("a pick of a critical-path run found no ready task"),
        }
    }
}
