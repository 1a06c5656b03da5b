//! The scheduling-policy contract: a [`QueuePolicy`] makes one [`ReadyQueue`] per run, and
//! the run's ready tasks go through it. FIFO and critical path are implemented this way
//! (`fifo.rs`, `critical_path.rs`), and so is any policy a user writes
//! ([`Policy::custom`](super::Policy::custom); `examples/custom_policy.rs` is a
//! shortest-job-first queue). Depth-first, the default, uses no queue.
//!
//! The contract — when each method is called, by which threads, with what memory ordering —
//! is on [`ReadyQueue`], where users of the crate read it.

use std::fmt;

use super::topology::Topology;

/// A scheduling policy that orders ready tasks through a queue: a factory of one
/// [`ReadyQueue`] per run. Pass it to a run with
/// [`Policy::custom`](super::Policy::custom).
///
/// # Example
///
/// A last-in, first-out policy (depth-first without continuation inlining):
///
/// ```
/// use std::sync::Mutex;
/// use magpie_scheduler::{
///     Policy, QueueContext, QueuePolicy, QueueSetup, ReadyQueue, RunControl, TaskGraph,
///     ThreadPool,
/// };
///
/// #[derive(Debug)]
/// struct Lifo;
///
/// struct Stack(Mutex<Vec<u32>>);
///
/// impl QueuePolicy for Lifo {
///     fn new_queue(&self, setup: &QueueSetup<'_>) -> Box<dyn ReadyQueue> {
///         Box::new(Stack(Mutex::new(Vec::with_capacity(setup.topology().len()))))
///     }
/// }
///
/// impl ReadyQueue for Stack {
///     fn push(&self, _cx: &QueueContext<'_>, task: u32) {
///         self.0.lock().unwrap().push(task);
///     }
///     fn pop(&self, _cx: &QueueContext<'_>) -> Option<u32> {
///         self.0.lock().unwrap().pop()
///     }
/// }
///
/// let mut graph = TaskGraph::new();
/// let a = graph.add(|| {});
/// let b = graph.add(|| {});
/// graph.precede(a, b);
/// let pool = ThreadPool::new(2).unwrap();
/// pool.run_with(&graph, &RunControl::with_policy(Policy::custom(Lifo))).unwrap();
/// ```
pub trait QueuePolicy: Send + Sync + fmt::Debug {
    /// Makes the ready queue of one run. Called once per run, by the thread that calls
    /// [`execute`](super::ThreadPool::execute), before any task starts.
    fn new_queue(&self, setup: &QueueSetup<'_>) -> Box<dyn ReadyQueue>;
}

/// The ready tasks of one run under a [`QueuePolicy`]: shared by all the run's threads, a
/// `pop` happens after the `push` of the task it returns.
///
/// # How the scheduler uses a ready queue
///
/// 1. [`ThreadPool::execute`](super::ThreadPool::execute) calls
///    [`QueuePolicy::new_queue`] once per run (one allocation per run, none per task),
///    then [`ReadyQueue::push_roots`] with the run's roots, before any other call.
/// 2. Whenever tasks become ready (a finishing task brought their last pending counter to
///    zero), the thread that finished it calls [`ReadyQueue::push_and_pop`] with them, in
///    the order of its edges; it runs the task that call returns.
/// 3. For every task pushed beyond the one it took, that thread queues an anonymous *pick*
///    job in its deque; whichever thread runs (or steals) a pick calls
///    [`ReadyQueue::pop`] and runs the task it returns. So every `pop` stands for a task
///    that was pushed before the pick existed, and the queue never holds fewer tasks than
///    there are picks of its run. Picks are stolen and split like any job, which keeps
///    every policy work-conserving: no worker sleeps while a task of the queue waits.
/// 4. The queue is dropped when `execute` returns, on the thread that called it.
///
/// # Concurrency contract
///
/// - **Shared by every thread of the run.** `push_roots`, `push`, `pop` and
///   `push_and_pop` take `&self` and are called concurrently from any of the run's threads,
///   so a queue is `Sync` (and `Send`): a mutex around a sequential structure is correct,
///   a lock-free structure is faster. Calls naming the same
///   [`worker`](QueueContext::worker) never overlap (one thread per index per run), so a
///   per-worker part may be touched without contention — but it still needs a `Sync`
///   cell, since other workers may read it.
/// - **Memory ordering.** A `pop` that returns a task must *happen after* the `push` that
///   gave it (a release on push, an acquire on pop — what a mutex or a crossbeam queue
///   provides). The scheduler relies on it: the finishing predecessor's writes reach the
///   task's body through the queue.
/// - **Exactly once.** Each pushed task is returned by exactly one `pop` (or
///   `push_and_pop`), and no task that was not pushed is ever returned.
/// - **`pop` may fail only transiently.** When `pop` is called the queue holds a task for
///   the caller (point 3 above), but a lock-free queue may momentarily not see a push that
///   is being published: it returns `None` and the scheduler calls it again, spinning. A
///   queue that keeps returning `None` hangs the run.
/// - **No panics.** Queue calls run outside the `catch_unwind` that guards task bodies; a
///   panic there aborts the process, like a panic in the scheduler itself.
///
/// A queue that breaks this contract cannot make the scheduler unsound — the scheduler
/// counts units, not tasks, and checks task indices — but bodies lose their guarantees
/// (each task exactly once, after its predecessors): a body whose own safety rests on
/// them (magpie-core's executor does) must only run under policies it trusts.
///
/// # Cost
///
/// Every task of a run under a user's queue costs one virtual call (`push_and_pop` by the
/// finishing thread, or `pop` by a pick; the built-in queues implement this trait too but
/// are called without one); the per-task facts a policy may want — cost, priority, steal group —
/// are read from the topology on demand through [`QueueContext`], so a policy that ignores
/// them pays nothing for them.
pub trait ReadyQueue: Send + Sync {
    /// Adds the ready task `task`.
    fn push(&self, cx: &QueueContext<'_>, task: u32);

    /// Takes a ready task: the one the policy wants to start next. The queue holds one for
    /// the caller; `None` only while a concurrent push is not yet visible (the caller
    /// retries).
    fn pop(&self, cx: &QueueContext<'_>) -> Option<u32>;

    /// Adds the run's roots (the tasks without predecessors, in increasing index); called
    /// once, before any other method. The default pushes them one by one; a queue may
    /// instead read them from [`cx.topology().roots()`](Topology::roots) when it pops.
    fn push_roots(&self, cx: &QueueContext<'_>, roots: &[u32]) {
        for &task in roots {
            self.push(cx, task);
        }
    }

    /// Adds `ready` (at least one task, in the order they became ready) and takes a task,
    /// as `push` of each then `pop` would — the finishing thread's call, which it may
    /// serve in one lock or straight from `ready`. Never returns before it has a task.
    fn push_and_pop(&self, cx: &QueueContext<'_>, ready: &[u32]) -> u32 {
        for &task in ready {
            self.push(cx, task);
        }
        pop_blocking(self, cx)
    }
}

impl fmt::Debug for dyn ReadyQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn ReadyQueue")
    }
}

/// Calls `queue.pop` until it returns a task (the caller holds a unit of the run, so the
/// queue has one for it; `None` is transient, see [`ReadyQueue::pop`]).
#[inline]
pub(crate) fn pop_blocking<Q: ReadyQueue + ?Sized>(queue: &Q, cx: &QueueContext<'_>) -> u32 {
    loop {
        if let Some(task) = queue.pop(cx) {
            return task;
        }
        std::hint::spin_loop();
    }
}

/// What [`QueuePolicy::new_queue`] is told about the run it makes a queue for.
#[derive(Clone, Copy, Debug)]
pub struct QueueSetup<'a> {
    topology: &'a Topology,
    num_workers: usize,
}

impl<'a> QueueSetup<'a> {
    /// The setup of a run of `topology` on a pool of `num_workers` workers (the scheduler
    /// makes these; public so that a queue can be tested outside a run).
    pub fn new(topology: &'a Topology, num_workers: usize) -> QueueSetup<'a> {
        QueueSetup {
            topology,
            num_workers,
        }
    }

    /// The DAG the run executes.
    pub fn topology(&self) -> &'a Topology {
        self.topology
    }

    /// The pool's number of workers. [`QueueContext::worker`] is in `0..=num_workers`:
    /// `num_workers` is the thread outside the pool that called `execute` and helps run
    /// its own run.
    pub fn num_workers(&self) -> usize {
        self.num_workers
    }
}

/// Who calls a [`ReadyQueue`] method, and what the queue may ask about a task.
#[derive(Clone, Copy, Debug)]
pub struct QueueContext<'a> {
    worker: usize,
    topology: &'a Topology,
}

impl<'a> QueueContext<'a> {
    /// A call from thread `worker` of a run of `topology` (the scheduler makes these;
    /// public so that a queue can be tested outside a run).
    #[inline]
    pub fn new(worker: usize, topology: &'a Topology) -> QueueContext<'a> {
        QueueContext { worker, topology }
    }

    /// The calling thread: a worker index in `0..num_workers`, or `num_workers` for the
    /// outside thread that called `execute` ([`QueueSetup::num_workers`]).
    #[inline]
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The DAG the run executes.
    #[inline]
    pub fn topology(&self) -> &'a Topology {
        self.topology
    }

    /// The cost of `task` ([`TopologyBuilder::set_cost`](super::TopologyBuilder::set_cost),
    /// 1 by default).
    #[inline]
    pub fn cost(&self, task: u32) -> u64 {
        self.topology.cost(task)
    }

    /// The priority of `task`: the cost of the costliest path from it to a sink
    /// ([`Topology::priority`]).
    #[inline]
    pub fn priority(&self, task: u32) -> u64 {
        self.topology.priority(task)
    }

    /// The steal group `task` is bound to, if any ([`Topology::group`]). A task bound to a
    /// group that the popping worker is not in is passed to its group after the pop, so a
    /// queue need not filter by group; a locality-aware one may prefer them.
    #[inline]
    pub fn group(&self, task: u32) -> Option<u32> {
        self.topology.group(task)
    }
}
