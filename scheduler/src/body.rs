//! The contract between a DAG run and the code it runs: [`DagBody`], [`TaskOutcome`] and
//! [`TaskContext`].
//!
//! A body is borrowed for one run and called from worker threads, hence `Sync`. Each
//! task of the run's topology is passed to [`DagBody::run`] at most once (exactly once if
//! the run succeeds), on some worker, after every predecessor finished; everything a
//! predecessor wrote before finishing is visible to it.

use std::fmt;
use std::time::Instant;

use futures::future::BoxFuture;

use super::run::RunHeader;

/// The work a DAG run does per task.
pub trait DagBody: Sync {
    /// What a failing task returns.
    type Error: Send + 'static;

    /// Runs task `task`.
    ///
    /// Return `Ok(TaskOutcome::Done)` when finished, or `Ok(TaskOutcome::Pending(fut))` for
    /// an asynchronous task: the scheduler then drives `fut` (polls it on a worker; while
    /// it is pending it holds no worker thread — its waker pushes the task back to the
    /// pool's injector and unparks a worker); the task counts as finished, and its
    /// successors are released, when `fut` resolves to `Ok(())`.
    ///
    /// An `Err` (returned here or by the future), or a panic, fails the run: it becomes
    /// the run's error unless an earlier failure won, and no further task starts.
    fn run(&self, task: u32, cx: &TaskContext<'_>)
        -> Result<TaskOutcome<Self::Error>, Self::Error>;
}

/// What [`DagBody::run`] did with a task.
pub enum TaskOutcome<E> {
    /// The task is finished.
    Done,
    /// The task finishes when this future resolves.
    Pending(BoxFuture<'static, Result<(), E>>),
}

impl<E> fmt::Debug for TaskOutcome<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskOutcome::Done => f.write_str("Done"),
            TaskOutcome::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}

/// What a task body may ask the scheduler while it runs.
pub struct TaskContext<'a> {
    worker_index: usize,
    run: &'a RunHeader,
}

impl<'a> TaskContext<'a> {
    #[inline]
    pub(crate) fn new(worker_index: usize, run: &'a RunHeader) -> TaskContext<'a> {
        TaskContext { worker_index, run }
    }
}

impl TaskContext<'_> {
    /// The index of the worker running this task, in `0..num_workers` of the pool; or
    /// `num_workers` when the task runs on a thread outside the pool that called
    /// [`execute`](super::ThreadPool::execute) and helps run its own run while it waits.
    #[inline]
    pub fn worker_index(&self) -> usize {
        self.worker_index
    }

    /// Whether the run was cancelled, failed, or passed its deadline. A long body may poll
    /// this and return early; the scheduler never interrupts a running body.
    ///
    /// Once this returned `true`, the run fails: a body that sees the deadline passed or
    /// the token cancelled records that as the run's error (unless an earlier one won), so
    /// a body that stops early never yields a successful run.
    pub fn is_cancelled(&self) -> bool {
        if self.run.is_cancelled() {
            return true;
        }
        let control = self.run.control();
        if control.cancel.as_ref().is_some_and(|t| t.is_cancelled()) {
            self.run.observe_cancelled();
            return true;
        }
        if control.deadline.is_some_and(|d| Instant::now() >= d) {
            self.run.observe_deadline();
            return true;
        }
        false
    }
}

impl fmt::Debug for TaskContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("worker_index", &self.worker_index)
            .field("cancelled", &self.run.is_cancelled())
            .finish()
    }
}
