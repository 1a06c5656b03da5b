//! A work-stealing scheduler that runs DAGs of tasks — closures or futures — on a pool of
//! worker threads. It knows nothing of tensors; the dataflow executor ([`crate::exec`]) maps
//! graph nodes onto it.
//!
//! Entry points: build a [`Topology`] once, then [`ThreadPool::execute`] it any number of
//! times with a [`DagBody`]; or use the Taskflow-like [`TaskGraph`] and
//! [`ThreadPool::run`].
//!
//! # Guarantees
//!
//! - **Exactly once, in order.** A successful run runs every task exactly once, each only
//!   after all its predecessors finished and with their writes visible.
//! - **Scoped.** `execute` borrows the body and returns only when no worker can touch it.
//! - **Work conservation.** No worker sleeps while a job it could take is queued.
//! - **Idle is free.** Idle workers park; a pending future holds no thread, so a pool
//!   whose only work is waiting uses no CPU.
//! - **Failures are contained.** An error, a panic (caught), a cancellation or a deadline
//!   ends the run with [`RunError`]; workers keep serving other runs.
//! - **Independence.** Runs from many threads at once share the workers but nothing else;
//!   a task may run a nested DAG on its own pool.
//!
//! # Map
//!
//! - [`pool`]: the handle, its builder, `execute`.
//! - [`topology`]: the immutable DAG shape (CSR).
//! - [`body`]: the `DagBody` contract and the task context.
//! - [`run`]: per-run state and the per-task hot path.
//! - [`job`]: what the deques hold, and the lifetime protocol behind their raw pointers.
//! - [`worker`]: the worker loop, stealing, nested waits, shutdown.
//! - [`sleep`]: the parking protocol.
//! - [`latch`]: what `execute` blocks on.
//! - [`async_task`]: driving futures without holding a worker.
//! - [`cancel`]: cancellation tokens and run controls.
//! - [`task_graph`]: the Taskflow-like API.
//! - [`registry`], [`error`].
//!
//! Tuning figures ("behaviour at the time of writing") are in the module docs of
//! [`worker`] and [`sleep`]; they are not part of the contract.

mod async_task;
mod body;
mod cancel;
mod error;
mod job;
mod latch;
mod pool;
mod registry;
mod run;
mod sleep;
mod task_graph;
mod topology;
mod worker;

pub use body::{DagBody, TaskContext, TaskOutcome};
pub use cancel::{CancellationToken, RunControl};
pub use error::{RunError, SchedulerError};
pub use pool::{ThreadPool, ThreadPoolBuilder};
pub use task_graph::{TaskGraph, TaskId};
pub use topology::{Topology, TopologyBuilder};
