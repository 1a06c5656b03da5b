//! The calling thread as a temporary helper: an outside thread that calls
//! [`execute`](super::ThreadPool::execute) runs its own run's work itself before it
//! blocks, so a small run never waits for a parked worker to wake up.
//!
//! # Guarantees
//!
//! - **Only its own run.** The helper borrows one of the pool's helper deques
//!   ([`Registry::claim_helper`](super::registry::Registry::claim_helper)), runs its run's
//!   first job (the roots, or the first pick) — with everything that job runs in place —
//!   and then the jobs it pushed to its own deque, newest first, until that deque is
//!   empty: all of them belong to its run. It never steals and never takes another run's
//!   job. A chain of tasks thus runs entirely on the calling thread, with no worker woken
//!   and no cache handed over; a fan-out is shared with the workers, which steal from the
//!   helper's deque.
//! - **Work conservation.** The helper's deque is a deque of the pool like any worker's:
//!   workers steal from it, a push onto it while it is empty wakes a sleeper (unless the
//!   helper is quiet: [`ThreadPool::execute_on_caller`](super::ThreadPool::execute_on_caller),
//!   whose caller runs everything it pushed itself), and the parking protocol's re-check
//!   sees it. A root range or pick count is split whenever the
//!   helper's deque is empty, so idle workers find half of what remains.
//! - **Everything else as for workers.** Tasks run through the same code as on a worker:
//!   panics are caught, the lifetime protocol of [`job`](super::job) holds (the helper
//!   holds units like a worker, and flushes its debt before it stops helping), and
//!   [`TaskContext::worker_index`](super::TaskContext::worker_index) is the pool's
//!   `num_workers`.
//! - **Cancellation and deadlines.** A token's cancellation stops the run's bodies on
//!   every thread at once (`RunHeader::is_cancelled`). The helper checks the deadline
//!   before each job after the first; once it has passed, it stops helping and wakes a
//!   worker for whatever its deque still holds, and the caller, now waiting, fails the
//!   run. A body the helper is running delays that until it returns — as on a worker, a
//!   running body is never interrupted — and bodies that poll
//!   [`TaskContext::is_cancelled`](super::TaskContext::is_cancelled) see the deadline
//!   directly.
//! - Then the caller blocks on the run's latch as a non-helping caller does (workers may
//!   still be running stolen jobs), and gives the deque back once the run is over (it is
//!   empty then). If no helper deque is free, the caller does not help.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_deque::Worker;

use super::job::Job;
use super::registry::Registry;
use super::worker::WorkerCtx;

/// A helper deque on loan to a caller of `execute`; given back by [`Helper::finish`].
#[derive(Debug)]
pub(crate) struct Helper {
    local: Worker<Job>,
}

/// Runs `first` — the first job of the caller's own run — on the calling thread, then the
/// jobs it left in its own deque, until that is empty or `deadline` passes. Returns the
/// borrowed deque, which may still hold jobs of the run for the workers to steal, or
/// gives `first` back if no helper deque was free (the caller then injects it).
///
/// A `quiet` helper wakes no sleeping worker for the jobs it pushes (it runs them all
/// itself unless an awake worker steals one first): for a run too short to be worth a
/// wake-up ([`ThreadPool::execute_on_caller`](super::ThreadPool::execute_on_caller)).
pub(crate) fn help(
    registry: &Arc<Registry>,
    first: Job,
    deadline: Option<Instant>,
    quiet: bool,
) -> Result<Helper, Job> {
    let Some(local) = registry.claim_helper() else {
        return Err(first);
    };
    let ctx = WorkerCtx::new(Arc::clone(registry), registry.num_workers(), local);
    ctx.set_quiet(quiet);
    let intra = super::parallel::enter(&ctx);
    ctx.execute(first);
    while let Some(job) = ctx.pop_local() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // Leave the rest to the workers (a job pushed without a wake-up may be
            // there: wake one), and let the caller fail the run.
            ctx.set_quiet(false);
            ctx.push(job);
            registry.sleep().notify_one();
            break;
        }
        ctx.execute(job);
    }
    drop(intra);
    ctx.flush_debt();
    Ok(Helper {
        local: ctx.into_local(),
    })
}

impl Helper {
    /// Gives the deque back to the pool. Only once the run is over: the deque then is
    /// empty, because every job in it belonged to the run.
    pub(crate) fn finish(self, registry: &Registry) {
        registry.return_helper(self.local);
    }
}
