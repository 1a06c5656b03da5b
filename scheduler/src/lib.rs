//! # magpie-scheduler
//!
//! A work-stealing scheduler that runs DAGs of tasks — closures or futures — on a pool of
//! worker threads. It depends on no tensor or graph code (this crate is below
//! `magpie-core` in the workspace, so the compiler checks it); magpie-core's dataflow
//! executor maps graph nodes onto it and re-exports it as `magpie_core::scheduler`.
//!
//! Entry points: build a [`Topology`] once, then [`ThreadPool::execute`] it any number of
//! times with a [`DagBody`]; or use the Taskflow-like [`TaskGraph`] and
//! [`ThreadPool::run`]. A scheduling policy of one's own is a [`QueuePolicy`], run with
//! [`Policy::custom`] (the crate's README has an example, compiled as a doc test).
//!
//! # Guarantees
//!
//! - **Exactly once, in order.** A successful run runs every task exactly once, each only
//!   after all its predecessors finished and with their writes visible.
//! - **Scoped.** `execute` borrows the body and returns only when no worker can touch it.
//! - **Work conservation.** No worker sleeps while a job it could take is queued, under
//!   every scheduling [`Policy`] (chosen per run in [`RunControl::policy`]; each policy's
//!   own promise about order is in `policy.rs`).
//! - **Idle is free.** Idle workers park after a brief search (its length and how many
//!   workers search at once are the pool's [`IdleSpin`]); a pending future holds no
//!   thread, so a pool whose only work is waiting uses no CPU.
//! - **Failures are contained.** An error, a panic (caught), a cancellation or a deadline
//!   ends the run with [`RunError`]; workers keep serving other runs.
//! - **Independence.** Runs from many threads at once share the workers but nothing else;
//!   a task may run a nested DAG on its own pool.
//! - **Observable at no cost.** A run may carry an [`Observer`] told when each task starts
//!   and finishes; a run without one pays a single predictable branch per job, none per
//!   task.
//!
//! # Map (files of `scheduler/src/`)
//!
//! - `pool.rs`: the handle, its builder, `execute`.
//! - `topology.rs`: the immutable DAG shape (CSR).
//! - `body.rs`: the `DagBody` contract and the task context.
//! - `run.rs`: per-run state and the per-task hot path.
//! - `policy.rs`: the scheduling policies (depth-first, FIFO, critical path, custom) and
//!   what each promises about order.
//! - `ready_queue.rs`: the policy contract users implement — a [`QueuePolicy`] makes one
//!   [`ReadyQueue`] per run — and its concurrency contract; `fifo.rs` and
//!   `critical_path.rs`: the built-in queues, implemented through it.
//! - `observer.rs`: the per-run [`Observer`] (task start/end, thread, time);
//!   `chrome_trace.rs`: [`ChromeTraceObserver`], Chrome trace JSON from it.
//! - `job.rs`: what the deques hold, and the lifetime protocol behind their raw pointers.
//! - `helper.rs`: an outside caller of `execute` runs its own run's work before it blocks.
//! - `worker.rs`: the worker loop, stealing, nested waits, the shutdown protocol.
//! - `sleep.rs`: the parking protocol (no lost wake-ups, no lock shared by the workers) and
//!   the cap on searching workers;
//!   `idle_spin.rs`: [`IdleSpin`], how long idle workers search and how many at once.
//! - `latch.rs`: what `execute` blocks on.
//! - `async_task.rs`: driving futures without holding a worker.
//! - `cancel.rs`: cancellation tokens and run controls.
//! - `task_graph.rs`: the Taskflow-like API (tasks with names, costs and steal groups).
//! - `affinity.rs`: the worker start hook, steal groups, tasks bound to a group, and steal
//!   counters.
//! - `parallel.rs`: `parallel_for`, intra-op parallelism as a nested run of the pool.
//! - `registry.rs`: state shared by a pool's workers; `error.rs`: the error enums.
//! - `sync.rs`: the atomics, mutex and condition variable of the hand-written protocols,
//!   swapped for loom's in model-checking builds; `loom_models.rs`: the models.
//!
//! Each file's module doc starts with what it promises; tuning figures ("behaviour at the
//! time of writing": spin counts, steal batch sizes, the caller's spin before sleeping) are
//! in the docs of `worker.rs`, `sleep.rs` and `latch.rs` and are not part of the contract.
//! Build the private docs with `cargo doc --document-private-items` to read them.

// The README's example is compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod affinity;
mod async_state;
mod async_task;
mod body;
mod cancel;
mod chrome_trace;
mod critical_path;
mod error;
mod fifo;
mod helper;
mod idle_spin;
mod job;
mod latch;
#[cfg(all(test, magpie_loom))]
mod loom_models;
mod observer;
mod parallel;
mod policy;
mod pool;
mod ready_queue;
mod registry;
mod run;
mod sleep;
mod spawn;
mod sync;
mod task_graph;
#[cfg(test)]
mod test_alloc;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
mod timer;
mod topology;
mod worker;

pub use affinity::StealStats;
pub use body::{DagBody, TaskContext, TaskOutcome};
pub use cancel::{CancellationToken, Cancelled, Forwarding, RunControl};
pub use chrome_trace::{ChromeTraceObserver, Span};
pub use error::{RunError, SchedulerError};
pub use idle_spin::{IdleSpin, ParseIdleSpinError};
pub use observer::{Observer, TaskEvent};
pub use parallel::{current_parallelism, parallel_for};
pub use policy::{CustomPolicy, Policy};
pub use pool::{ThreadPool, ThreadPoolBuilder};
pub use ready_queue::{QueueContext, QueuePolicy, QueueSetup, ReadyQueue};
pub use spawn::RunFuture;
pub use task_graph::{TaskBuilder, TaskGraph, TaskId};
pub use topology::{Topology, TopologyBuilder};
