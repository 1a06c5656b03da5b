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
//! - [`Policy::Custom`]: a policy the user writes, as a [`QueuePolicy`] that makes one
//!   [`ReadyQueue`] per run ([`Policy::custom`]). Promise: the order its queue pops,
//!   exactly — the scheduler adds none of its own (see [`ready_queue`](super::ready_queue)
//!   for the contract a queue keeps).
//!
//! The memory-aware policy of sessions is depth-first here; the executor adds plan edges
//! that hold memory-heavy nodes back (`exec::plan`).
//!
//! # How the queued policies use the pool
//!
//! FIFO, critical path and custom policies go through the same [`ReadyQueue`] trait (the
//! built-in queues are called directly, a user's through the trait object): a run
//! keeps its ready tasks in its own queue, and the workers' deques hold anonymous *pick*
//! jobs ([`Job::Pick`](super::job::Job)), each owning some units of the run (see
//! [`job`](super::job)); running a pick pops the queue. Every task is pushed to the queue
//! before the unit that will take it exists, so a pick always finds a task. Picks are
//! stolen and split like root ranges, which is what keeps these policies work-conserving.
//! Depth-first uses no queue: its inline fast path never leaves the finishing worker.
//!
//! # Behaviour at the time of writing
//!
//! The FIFO queue is a `crossbeam_deque::Injector` (lock-free, `fifo.rs`); the priority
//! queue is a binary heap under a mutex shared by all workers of the run
//! (`critical_path.rs`) — simple and exact, but a point of contention when thousands of
//! tiny tasks are ready at once. Both keep the roots in the topology behind a cursor
//! instead of copying them, and let a finishing task keep a ready successor without a
//! queue round trip when nothing queued comes before it.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::critical_path::{self, CriticalPathQueue};
use super::fifo::FifoQueue;
use super::ready_queue::{pop_blocking, QueueContext, QueuePolicy, QueueSetup, ReadyQueue};
use super::topology::Topology;

/// In which order a run's ready tasks start. Under every policy, each task runs exactly
/// once after its predecessors, and no worker sleeps while a job it could take is queued
/// (work conservation); failures, cancellation and deadlines behave the same.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use magpie_scheduler::{Policy, RunControl, TaskGraph, ThreadPool};
///
/// // Three independent tasks; critical path first starts the costliest.
/// let started = Arc::new(Mutex::new(Vec::new()));
/// let mut graph = TaskGraph::new();
/// for (name, cost) in [("light", 1), ("heavy", 50), ("medium", 10)] {
///     let started = Arc::clone(&started);
///     let task = graph.add(move || started.lock().unwrap().push(name));
///     graph.task(task).cost(cost);
/// }
/// // One worker, no helping caller: the start order is the policy's order.
/// let pool = ThreadPool::builder().num_workers(1).helper_slots(0).build()?;
/// pool.run_with(&graph, &RunControl::with_policy(Policy::CriticalPath))?;
/// assert_eq!(*started.lock().unwrap(), ["heavy", "medium", "light"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
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
    /// A policy written by the user: ready tasks start in the order its per-run
    /// [`ReadyQueue`] pops them ([`Policy::custom`]).
    Custom(CustomPolicy),
}

impl Policy {
    /// [`Policy::DepthFirst`], the default.
    pub fn depth_first() -> Policy {
        Policy::DepthFirst
    }

    /// [`Policy::Fifo`].
    pub fn fifo() -> Policy {
        Policy::Fifo
    }

    /// [`Policy::CriticalPath`].
    pub fn critical_path() -> Policy {
        Policy::CriticalPath
    }

    /// A policy of the user's: `policy` makes the ready queue of each run it is used for.
    /// See [`QueuePolicy`] for an example.
    pub fn custom(policy: impl QueuePolicy + 'static) -> Policy {
        Policy::Custom(CustomPolicy(Arc::new(policy)))
    }

    /// Like [`custom`](Self::custom), for a policy that is already shared.
    pub fn custom_arc(policy: Arc<dyn QueuePolicy>) -> Policy {
        Policy::Custom(CustomPolicy(policy))
    }

    /// The ready queue of a run of `topology` under this policy on a pool of
    /// `num_workers` workers; `None` for depth-first, which uses none.
    pub(crate) fn new_queue(&self, topology: &Topology, num_workers: usize) -> Option<RunQueue> {
        match self {
            Policy::DepthFirst => None,
            Policy::Fifo => Some(RunQueue::Fifo(Box::new(FifoQueue::new()))),
            Policy::CriticalPath => Some(critical_path::new_queue(topology)),
            Policy::Custom(custom) => {
                let setup = QueueSetup::new(topology, num_workers);
                Some(RunQueue::Dyn(custom.0.new_queue(&setup)))
            }
        }
    }
}

/// A user's [`QueuePolicy`], shared; made by [`Policy::custom`]. Two are equal when they
/// are the same shared policy object.
#[derive(Clone)]
pub struct CustomPolicy(Arc<dyn QueuePolicy>);

impl CustomPolicy {
    /// The policy.
    pub fn get(&self) -> &Arc<dyn QueuePolicy> {
        &self.0
    }
}

impl fmt::Debug for CustomPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for CustomPolicy {
    fn eq(&self, other: &CustomPolicy) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CustomPolicy {}

impl Hash for CustomPolicy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).cast::<()>().hash(state);
    }
}

/// The ready queue of one run: a built-in queue called directly (through its
/// [`ReadyQueue`] implementation, without a virtual call), or a user's behind the trait
/// object. Boxed, so that a run's header stays small.
#[derive(Debug)]
pub(crate) enum RunQueue {
    /// [`Policy::Fifo`].
    Fifo(Box<FifoQueue>),
    /// [`Policy::CriticalPath`] with priorities that fit 32 bits.
    Critical(Box<CriticalPathQueue<u64>>),
    /// A user's queue, or critical path with wide keys.
    Dyn(Box<dyn ReadyQueue>),
}

impl RunQueue {
    /// [`ReadyQueue::push_roots`].
    pub(crate) fn push_roots(&self, cx: &QueueContext<'_>, roots: &[u32]) {
        match self {
            RunQueue::Fifo(q) => q.push_roots(cx, roots),
            RunQueue::Critical(q) => q.push_roots(cx, roots),
            RunQueue::Dyn(q) => q.push_roots(cx, roots),
        }
    }

    /// [`ReadyQueue::pop`] until it returns a task, for a pick the caller holds.
    #[inline]
    pub(crate) fn pop(&self, cx: &QueueContext<'_>) -> u32 {
        match self {
            RunQueue::Fifo(q) => pop_blocking(&**q, cx),
            RunQueue::Critical(q) => pop_blocking(&**q, cx),
            RunQueue::Dyn(q) => checked(pop_blocking(&**q, cx), cx),
        }
    }

    /// [`ReadyQueue::push_and_pop`].
    #[inline]
    pub(crate) fn push_and_pop(&self, cx: &QueueContext<'_>, ready: &[u32]) -> u32 {
        match self {
            RunQueue::Fifo(q) => q.push_and_pop(cx, ready),
            RunQueue::Critical(q) => q.push_and_pop(cx, ready),
            RunQueue::Dyn(q) => checked(q.push_and_pop(cx, ready), cx),
        }
    }
}

/// Returns `task` after checking that a user's queue gave a task of the topology; panics
/// otherwise (which aborts: this runs in the scheduler, outside any body).
#[inline]
fn checked(task: u32, cx: &QueueContext<'_>) -> u32 {
    let n = cx.topology().len();
    assert!(
        (task as usize) < n,
        "a ready queue returned task {task}, but the run has {n} tasks"
    );
    task
}
