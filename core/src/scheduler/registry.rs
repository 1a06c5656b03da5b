//! The state a pool's workers share: the global injector, every worker's stealer, the
//! parking lot and the shutdown flag.
//!
//! The registry is reference counted: each worker thread holds it, the user-facing
//! [`ThreadPool`](super::ThreadPool) handles hold it, and so does every asynchronous task's
//! waker (a waker may fire after the pool is gone; it then pushes into an injector nobody
//! reads, which is harmless — see [`async_task`](super::async_task) for why that cannot
//! happen while a run is in flight).

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_deque::{Injector, Steal, Stealer};

use super::affinity::{StartHook, StealCounters, StealOrder, StealStats};
use super::job::Job;
use super::latch::SpinPolicy;
use super::sleep::Sleep;

/// Shared state of one pool.
#[derive(Debug)]
pub(crate) struct Registry {
    injector: Injector<Job>,
    stealers: Box<[Stealer<Job>]>,
    sleep: Sleep,
    terminate: AtomicBool,
    /// Whether outside callers spin before blocking in `execute`.
    spin_policy: SpinPolicy,
    /// Which victims each worker tries first (see [`affinity`](super::affinity)).
    steal_order: StealOrder,
    steal_counters: StealCounters,
    /// Run by each worker thread when it starts.
    on_start: Option<StartHook>,
}

impl Registry {
    pub(crate) fn new(
        stealers: Vec<Stealer<Job>>,
        steal_order: StealOrder,
        on_start: Option<StartHook>,
    ) -> Registry {
        let n = stealers.len();
        Registry {
            injector: Injector::new(),
            stealers: stealers.into_boxed_slice(),
            sleep: Sleep::new(n),
            terminate: AtomicBool::new(false),
            spin_policy: SpinPolicy::new(),
            steal_order,
            steal_counters: StealCounters::new(n),
            on_start,
        }
    }

    pub(crate) fn steal_order(&self) -> &StealOrder {
        &self.steal_order
    }

    pub(crate) fn steal_counters(&self) -> &StealCounters {
        &self.steal_counters
    }

    pub(crate) fn steal_stats(&self) -> StealStats {
        self.steal_counters.snapshot()
    }

    pub(crate) fn on_start(&self) -> Option<&StartHook> {
        self.on_start.as_ref()
    }

    /// The number of workers.
    pub(crate) fn num_workers(&self) -> usize {
        self.stealers.len()
    }

    pub(crate) fn injector(&self) -> &Injector<Job> {
        &self.injector
    }

    pub(crate) fn stealers(&self) -> &[Stealer<Job>] {
        &self.stealers
    }

    pub(crate) fn sleep(&self) -> &Sleep {
        &self.sleep
    }

    pub(crate) fn spin_policy(&self) -> &SpinPolicy {
        &self.spin_policy
    }

    /// Pushes a job from outside the workers' deques (new run roots, woken futures) and
    /// wakes a sleeper.
    pub(crate) fn inject(&self, job: Job) {
        self.injector.push(job);
        self.sleep.notify_one();
    }

    /// Whether some queue holds a job. Exact only when nobody pushes or steals at the
    /// same time; the parking protocol makes that good enough (see [`sleep`](super::sleep)).
    pub(crate) fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    /// Asks the workers to exit once they run out of work, and wakes them.
    pub(crate) fn terminate(&self) {
        self.terminate.store(true, Ordering::SeqCst);
        self.sleep.wake_all();
    }

    pub(crate) fn is_terminating(&self) -> bool {
        self.terminate.load(Ordering::SeqCst)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        loop {
            match self.injector.steal() {
                Steal::Success(job) => job.discard(),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
    }
}
