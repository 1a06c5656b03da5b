//! The calling thread as a temporary helper: an outside thread that calls
//! [`execute`](super::ThreadPool::execute) runs its own run's work itself before it
//! blocks, so a small run never waits for a parked worker to wake up.
//!
//! # Guarantees
//!
//! - **Only its own run.** The helper borrows one of the pool's helper deques
//!   ([`Registry::claim_helper`](super::registry::Registry::claim_helper)), starts with
//!   its run's first job (the roots, or the first pick), and from then on pops only that
//!   deque, into which only it pushes jobs of its own run. It never steals, so it never
//!   runs another run's task.
//! - **Work conservation.** The helper's deque is a deque of the pool like any worker's:
//!   workers steal from it, a push onto it while it is empty wakes a sleeper, and the
//!   parking protocol's re-check sees it. A root range or pick count is split whenever the
//!   helper's deque is empty, so idle workers find half of what remains.
//! - **Everything else as for workers.** Tasks run through the same code as on a worker:
//!   panics are caught, the lifetime protocol of [`job`](super::job) holds (the helper
//!   holds units like a worker, and flushes its debt before it stops helping), and
//!   [`TaskContext::worker_index`](super::TaskContext::worker_index) is the pool's
//!   `num_workers`.
//! - **Cancellation and deadlines.** Between jobs, the helper checks its latch for a
//!   cancellation request and, every few jobs, the deadline; either fails the run, after
//!   which its remaining jobs are drained without running bodies. A body the helper is
//!   running delays that check until it returns — as on a worker, a body that runs is
//!   never interrupted, and bodies that poll
//!   [`TaskContext::is_cancelled`](super::TaskContext::is_cancelled) see the token and the
//!   deadline directly.
//! - The helper stops when its deque is empty; it then gives the deque back (empty) and
//!   blocks on the run's latch as a non-helping caller does. If no helper deque is free,
//!   the caller does not help.

use std::sync::Arc;
use std::time::Instant;

use super::job::Job;
use super::latch::Latch;
use super::registry::Registry;
use super::worker::WorkerCtx;

/// The deadline is checked every this many jobs (behaviour at the time of writing).
const DEADLINE_CHECK_INTERVAL: u32 = 32;

/// Runs `first` — a job of the caller's own run — and then the jobs that it pushes to the
/// helper's deque, until that deque is empty. Returns `first` back if no helper deque was
/// free (the caller then injects it). `fail(deadline)` cancels the run.
pub(crate) fn help(
    registry: &Arc<Registry>,
    first: Job,
    latch: &Latch,
    deadline: Option<Instant>,
    fail: &dyn Fn(bool),
) -> Result<(), Job> {
    let Some(local) = registry.claim_helper() else {
        return Err(first);
    };
    let ctx = WorkerCtx::new(Arc::clone(registry), registry.num_workers(), local);
    let mut failed = false;
    let mut jobs = 0u32;
    let mut next = Some(first);
    while let Some(job) = next {
        ctx.execute(job);
        jobs = jobs.wrapping_add(1);
        if !failed {
            if latch.is_done() {
                // Nothing left to cancel.
            } else if latch.is_cancel_requested() {
                fail(false);
                failed = true;
            } else if deadline.is_some()
                && jobs % DEADLINE_CHECK_INTERVAL == 0
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                fail(true);
                failed = true;
            }
        }
        next = ctx.pop_local();
    }
    ctx.flush_debt();
    registry.return_helper(ctx.into_local());
    Ok(())
}
