//! The state a pool's workers share: the global injector, every worker's stealer, the
//! parking lot, the shutdown flag, and the deques lent to helping callers.
//!
//! Besides one deque per worker, a pool has a few deques (by default
//! [`DEFAULT_HELPER_SLOTS`]) for threads that call
//! [`execute`](super::ThreadPool::execute) from outside and run their own run while they
//! wait ([`helper`](super::helper)). Their stealers come after the workers' in
//! `stealers()`, so workers steal from helpers like from each other, and the parking
//! protocol's re-check (`has_work`) sees their jobs too.
//!
//! The registry is reference counted: each worker thread holds it, the user-facing
//! [`ThreadPool`](super::ThreadPool) handles hold it, and so does every asynchronous task's
//! waker (a waker may fire after the pool is gone; it then pushes into an injector nobody
//! reads, which is harmless — see [`async_task`](super::async_task) for why that cannot
//! happen while a run is in flight).

use std::sync::atomic::{AtomicBool, Ordering};

use super::sync::plain::Mutex;
use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use super::affinity::{StartHook, StealCounters, StealOrder, StealStats};
use super::idle_spin::IdleSpin;
use super::job::Job;
use super::latch::SpinPolicy;
use super::sleep::Sleep;

/// Deques a pool keeps, by default, for callers that help run their own runs (behaviour
/// at the time of writing: more concurrent outside callers than this simply do not help).
pub(crate) const DEFAULT_HELPER_SLOTS: usize = 2;

/// Shared state of one pool.
#[derive(Debug)]
pub(crate) struct Registry {
    injector: Injector<Job>,
    /// One injector per steal group, for tasks bound to that group (see
    /// [`affinity`](super::affinity)); only the group's members take from it.
    group_injectors: Box<[Injector<Job>]>,
    /// The NUMA node of each steal group, when the pool's builder named them.
    group_nodes: Option<Box<[usize]>>,
    /// The workers' stealers, then the helper deques' stealers.
    stealers: Box<[Stealer<Job>]>,
    num_workers: usize,
    /// Helper deques not lent out right now (always empty when here).
    helpers: Mutex<Vec<Worker<Job>>>,
    sleep: Sleep,
    terminate: AtomicBool,
    /// Whether outside callers spin before blocking in `execute`.
    spin_policy: SpinPolicy,
    /// Which victims each worker tries first (see [`affinity`](super::affinity)).
    steal_order: StealOrder,
    steal_counters: StealCounters,
    /// Run by each worker thread when it starts.
    on_start: Option<StartHook>,
    /// How idle workers search before they park.
    idle_spin: IdleSpin,
    /// At most this many workers search at once (`idle_spin`'s cap, else every worker).
    searching_cap: usize,
}

impl Registry {
    /// The registry of a pool whose workers own deques with `stealers` (tried in
    /// `steal_order`), with `helper_slots` deques for helping callers and idle workers
    /// that search as `idle_spin` says.
    pub(crate) fn new(
        stealers: Vec<Stealer<Job>>,
        steal_order: StealOrder,
        group_nodes: Option<Vec<usize>>,
        on_start: Option<StartHook>,
        helper_slots: usize,
        idle_spin: IdleSpin,
    ) -> Registry {
        let n = stealers.len();
        let helpers: Vec<Worker<Job>> = (0..helper_slots).map(|_| Worker::new_lifo()).collect();
        let stealers: Vec<Stealer<Job>> = stealers
            .into_iter()
            .chain(helpers.iter().map(Worker::stealer))
            .collect();
        Registry {
            injector: Injector::new(),
            group_injectors: (0..steal_order.num_groups())
                .map(|_| Injector::new())
                .collect(),
            group_nodes: group_nodes.map(Vec::into_boxed_slice),
            stealers: stealers.into_boxed_slice(),
            num_workers: n,
            helpers: Mutex::new(helpers),
            sleep: Sleep::new(n),
            terminate: AtomicBool::new(false),
            spin_policy: SpinPolicy::new(),
            steal_order: steal_order.with_helpers(helper_slots),
            steal_counters: StealCounters::new(n),
            on_start,
            idle_spin,
            searching_cap: idle_spin.searching_cap().unwrap_or(n),
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

    /// Jobs queued now: in the global injector, the groups' injectors and every deque
    /// (workers' and helpers'). A snapshot that concurrent pushes and steals make stale
    /// at once; for metrics.
    pub(crate) fn queued_jobs(&self) -> usize {
        self.injector.len()
            + self
                .group_injectors
                .iter()
                .map(Injector::len)
                .sum::<usize>()
            + self.stealers.iter().map(Stealer::len).sum::<usize>()
    }

    pub(crate) fn on_start(&self) -> Option<&StartHook> {
        self.on_start.as_ref()
    }

    /// The number of workers.
    pub(crate) fn num_workers(&self) -> usize {
        self.num_workers
    }

    /// Lends out an empty helper deque, if one is free.
    pub(crate) fn claim_helper(&self) -> Option<Worker<Job>> {
        self.helpers.lock().pop()
    }

    /// Takes back a helper deque; it must be empty.
    pub(crate) fn return_helper(&self, deque: Worker<Job>) {
        debug_assert!(deque.is_empty());
        self.helpers.lock().push(deque);
    }

    pub(crate) fn injector(&self) -> &Injector<Job> {
        &self.injector
    }

    /// Every deque's stealer: the workers' (by index), then the helpers'.
    pub(crate) fn stealers(&self) -> &[Stealer<Job>] {
        &self.stealers
    }

    pub(crate) fn sleep(&self) -> &Sleep {
        &self.sleep
    }

    /// How idle workers search before they park.
    pub(crate) fn idle_spin(&self) -> IdleSpin {
        self.idle_spin
    }

    /// How many workers may search at once.
    pub(crate) fn searching_cap(&self) -> usize {
        self.searching_cap
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

    /// Whether some queue that worker `w` may take from holds a job: the global injector,
    /// any deque, or `w`'s group's injector. Exact only when nobody pushes or steals at
    /// the same time; the parking protocol makes that good enough (see
    /// [`sleep`](super::sleep)).
    pub(crate) fn has_work_for(&self, w: usize) -> bool {
        !self.injector.is_empty()
            || self.stealers.iter().any(|s| !s.is_empty())
            || self
                .group_injectors
                .get(self.steal_order.group_of(w) as usize)
                .is_some_and(|i| !i.is_empty())
    }

    /// The injector of group `g`, if the pool has that group.
    #[inline]
    pub(crate) fn group_injector(&self, g: u32) -> Option<&Injector<Job>> {
        self.group_injectors.get(g as usize)
    }

    /// Pushes a job bound to group `g` to that group's injector and wakes a sleeping
    /// member. Gives the job back when the pool has no group `g`.
    pub(crate) fn inject_to_group(&self, g: u32, job: Job) -> Result<(), Job> {
        let Some(injector) = self.group_injector(g) else {
            return Err(job);
        };
        injector.push(job);
        self.sleep
            .notify_one_of(self.steal_order.members(g as usize));
        Ok(())
    }

    /// The steal group of NUMA node `node`, if the pool's builder named the groups' nodes.
    pub(crate) fn group_of_node(&self, node: usize) -> Option<u32> {
        let nodes = self.group_nodes.as_ref()?;
        nodes.iter().position(|&n| n == node).map(|g| g as u32)
    }

    /// The number of steal groups (1 without groups).
    pub(crate) fn num_groups(&self) -> usize {
        self.group_injectors.len()
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
        for injector in std::iter::once(&self.injector).chain(self.group_injectors.iter()) {
            loop {
                match injector.steal() {
                    Steal::Success(job) => job.discard(),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
    }
}
