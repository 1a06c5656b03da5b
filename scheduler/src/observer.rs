//! Observing a run: an [`Observer`] is told when each task starts and finishes, on which
//! thread, at what time — enough to draw a timeline ([`ChromeTraceObserver`] writes one
//! that Perfetto and `chrome://tracing` open) or to study a policy's decisions.
//!
//! What an observer is promised is on [`Observer`], where users of the crate read it.
//!
//! [`ChromeTraceObserver`]: super::ChromeTraceObserver

use std::fmt;
use std::time::Instant;

/// One task starting or finishing, as told to an [`Observer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskEvent {
    /// The task's index in the run's topology.
    pub task: u32,
    /// The thread: a worker index, or the pool's `num_workers` for the helping caller.
    pub worker: usize,
    /// When it happened (read just before the body is called, or just after it returned or
    /// its future resolved).
    pub at: Instant,
}

impl TaskEvent {
    /// An event of `task` on `worker` at `at`.
    pub fn new(task: u32, worker: usize, at: Instant) -> TaskEvent {
        TaskEvent { task, worker, at }
    }
}

/// Told when tasks of a run start and finish; set per run in
/// [`RunControl::observer`](super::RunControl::observer).
///
/// # Guarantees
///
/// - **Zero cost when unset.** A run without an observer
///   ([`RunControl::observer`](super::RunControl::observer) is `None`) pays one predictable
///   branch per job — not per task: the loop that runs a task and the successors it runs
///   in place is compiled apart for observed runs — and reads no clock.
/// - **Once each.** Every task whose body is called gets exactly one
///   [`task_started`](Observer::task_started), just before the call, and one
///   [`task_finished`](Observer::task_finished) once it is over: when the body returns
///   (`Done`, an error or a panic), or, for an asynchronous task, when its future resolves
///   or is dropped by the worker polling it. A task skipped because its run had already
///   failed gets neither; a pending future that a cancellation drops while idle gets no
///   `task_finished`.
/// - **Order.** `task_started` of a task happens before its `task_finished`, and both
///   before the `task_started` of any successor (so `start <= end`, and a successor never
///   starts before its predecessor's end is reported). Both calls of a synchronous task
///   are made on the thread that runs it.
/// - **Which thread.** [`TaskEvent::worker`] is the worker index in `0..num_workers`, or
///   the pool's `num_workers` for the outside thread that called `execute` and helps run
///   its own run (as [`TaskContext::worker_index`](super::TaskContext::worker_index)).
///
/// Observer calls are made from many threads at once, outside the body's `catch_unwind`:
/// an observer must be `Sync`, should be quick, and must not panic (a panic there aborts
/// the process, like one in the scheduler).
///
///
/// # Example
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use magpie_scheduler::{Observer, RunControl, TaskEvent, TaskGraph, ThreadPool};
///
/// #[derive(Debug, Default)]
/// struct Count(AtomicUsize);
///
/// impl Observer for Count {
///     fn task_started(&self, _: &TaskEvent) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
///     fn task_finished(&self, _: &TaskEvent) {}
/// }
///
/// let mut graph = TaskGraph::new();
/// for _ in 0..10 {
///     graph.add(|| {});
/// }
/// let count = Arc::new(Count::default());
/// let control = RunControl { observer: Some(count.clone()), ..RunControl::default() };
/// ThreadPool::new(2).unwrap().run_with(&graph, &control).unwrap();
/// assert_eq!(count.0.load(Ordering::Relaxed), 10);
/// ```
pub trait Observer: Send + Sync + fmt::Debug {
    /// `event.task` is about to start on `event.worker`.
    fn task_started(&self, event: &TaskEvent);
    /// `event.task` is over (finished, failed or panicked).
    fn task_finished(&self, event: &TaskEvent);
}
