//! The calling thread as a temporary helper: an outside thread that calls
//! [`execute`](super::ThreadPool::execute) runs its own run's work itself before it
//! blocks, so a small run never waits for a parked worker to wake up.
//!
//! # Guarantees
//!
//! - **Only its own run, and only its first job.** The helper borrows one of the pool's
//!   helper deques ([`Registry::claim_helper`](super::registry::Registry::claim_helper))
//!   and runs its run's first job (the roots, or the first pick) — with everything that
//!   job runs in place, which is bounded as on a worker (`INLINE_LIMIT`). Then it stops:
//!   it never steals, and leaves whatever it pushed to its deque to the workers. A
//!   trivial run is then over before any worker wakes up, and a large one does not keep
//!   a thread more than the pool's size busy for long.
//! - **Work conservation.** The helper's deque is a deque of the pool like any worker's:
//!   workers steal from it, a push onto it while it is empty wakes a sleeper, and the
//!   parking protocol's re-check sees it. A root range or pick count is split whenever the
//!   helper's deque is empty, so idle workers find half of what remains.
//! - **Everything else as for workers.** Tasks run through the same code as on a worker:
//!   panics are caught, the lifetime protocol of [`job`](super::job) holds (the helper
//!   holds units like a worker, and flushes its debt before it stops helping), and
//!   [`TaskContext::worker_index`](super::TaskContext::worker_index) is the pool's
//!   `num_workers`.
//! - **Cancellation and deadlines.** A token's cancellation stops the run's bodies on
//!   every thread at once (`RunHeader::is_cancelled`). The deadline is enforced by the
//!   caller once it waits, i.e. after the first job: a body the helper is running delays
//!   it until it returns — as on a worker, a running body is never interrupted — and
//!   bodies that poll [`TaskContext::is_cancelled`](super::TaskContext::is_cancelled) see
//!   the deadline directly.
//! - After its job, the caller blocks on the run's latch as a non-helping caller does,
//!   and gives the deque back once the run is over (it is empty then). If no helper deque
//!   is free, the caller does not help.

use std::sync::Arc;

use crossbeam_deque::Worker;

use super::job::Job;
use super::registry::Registry;
use super::worker::WorkerCtx;

/// A helper deque on loan to a caller of `execute`; given back by [`Helper::finish`].
#[derive(Debug)]
pub(crate) struct Helper {
    local: Worker<Job>,
}

/// Runs `first` — the first job of the caller's own run — on the calling thread. Returns
/// the borrowed deque, which may still hold jobs of the run for the workers to steal, or
/// gives `first` back if no helper deque was free (the caller then injects it).
pub(crate) fn help(registry: &Arc<Registry>, first: Job) -> Result<Helper, Job> {
    let Some(local) = registry.claim_helper() else {
        return Err(first);
    };
    let ctx = WorkerCtx::new(Arc::clone(registry), registry.num_workers(), local);
    let intra = super::parallel::enter(&ctx);
    ctx.execute(first);
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
