//! Errors of the scheduler layer.
//!
//! Two enums, one per kind of failure:
//!
//! - [`SchedulerError`]: building a pool or a [`Topology`](super::Topology) failed. These are
//!   conditions the caller finds out about before anything ran.
//! - [`RunError`]: one execution of a DAG did not complete. It carries the *first* failure
//!   of the run; later failures of the same run are dropped.

use thiserror::Error;

/// A pool or a topology could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchedulerError {
    /// A pool was asked for zero worker threads.
    #[error("a thread pool needs at least one worker")]
    NoWorkers,
    /// The edges of a topology form a cycle; `task` is one task on that cycle.
    #[error("the task graph has a cycle through task {task}")]
    Cycle {
        /// A task that lies on a cycle.
        task: u32,
    },
    /// An edge names a task outside `0..num_tasks`.
    #[error("task {task} is out of range: the graph has {num_tasks} tasks")]
    TaskOutOfRange {
        /// The offending task index.
        task: u32,
        /// The number of tasks the topology was declared with.
        num_tasks: usize,
    },
    /// The operating system refused to start a worker thread.
    #[error("could not spawn a worker thread: {0}")]
    Spawn(String),
    /// The steal groups given to the pool builder do not partition its workers.
    #[error("invalid steal groups: {0}")]
    InvalidStealGroups(String),
}

/// Why one execution of a DAG did not complete.
///
/// The first failure of a run wins: once a run has failed, was cancelled or passed its
/// deadline, no further task body starts, and the error reported is that first one.
#[derive(Debug, Error)]
pub enum RunError<E> {
    /// A task body (or the future it returned) returned an error.
    #[error("task {task} failed: {error}")]
    Task {
        /// The task whose body failed.
        task: u32,
        /// The error the body returned.
        error: E,
    },
    /// A task body (or a poll of the future it returned) panicked. The panic was caught; the
    /// worker that ran it keeps serving.
    #[error("task {task} panicked: {message}")]
    Panicked {
        /// The task whose body panicked.
        task: u32,
        /// The panic message, or a placeholder when the payload was not a string.
        message: String,
    },
    /// The run's [`CancellationToken`](super::CancellationToken) was cancelled.
    #[error("the run was cancelled")]
    Cancelled,
    /// The run passed its [`RunControl::deadline`](super::RunControl::deadline).
    #[error("the run passed its deadline")]
    DeadlineExceeded,
    /// The graph could not be run at all (for a [`TaskGraph`](super::TaskGraph): a cycle).
    #[error("invalid task graph: {0}")]
    Invalid(#[source] SchedulerError),
}
