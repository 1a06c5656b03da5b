//! A worker thread: its deque, its main loop, how it finds work, and how a worker that
//! calls `execute` (a nested DAG) waits.
//!
//! # Guarantees
//!
//! - **Work conservation.** A worker only parks after it found no job in its own deque,
//!   the injector, or any other worker's deque, and after announcing itself as a sleeper
//!   and looking once more (see [`sleep`](super::sleep)). So while a job is queued and a
//!   worker is idle, that worker is awake or being woken.
//! - **A worker never dies of a task.** Bodies and polls run under `catch_unwind`; a panic
//!   becomes the run's error. A panic in the scheduler itself aborts the process rather
//!   than leaving runs hanging.
//! - **Nested runs make progress.** A worker that calls `execute` on its own pool keeps
//!   running jobs (of any run) until its run is over, so nesting does not deadlock; and
//!   it gives back what it owes its run before it runs another run's job, so it never
//!   runs unrelated work after its run's last task finished (`wait_nested`).
//!
//! # Shutdown protocol
//!
//! 1. The last [`ThreadPool`](super::ThreadPool) handle is dropped. No run of the pool is in
//!    flight then: `execute` borrows a handle, so every run started through one is over.
//!    Jobs left in queues could only belong to runs in flight, so the queues are empty.
//! 2. The handle's `Drop` sets the registry's `terminate` flag (`SeqCst`), then wakes
//!    every sleeper ([`Registry::terminate`](super::registry::Registry)).
//! 3. A worker checks `terminate` whenever it finds no work: before parking and, after
//!    announcing itself as a sleeper, in the parking re-check. The flag is stored before
//!    `wake_all`'s `SeqCst` fence, and the sleeper announces itself before its own fence
//!    and re-check (Dekker's pattern, see [`sleep`](super::sleep)), so a worker either
//!    sees the flag or is announced when `wake_all` looks, and is woken.
//! 4. A worker that sees `terminate` with no work left leaves its loop and drops its
//!    registry reference and its deque.
//! 5. `Drop` joins every worker thread. If the last handle is dropped *on* a worker (a
//!    task owned it), that thread is not joined — it exits on its own right after.
//! 6. The registry is freed with its last reference (possibly held by a waker that
//!    outlived the pool); its `Drop` discards whatever the injector still holds.
//!
//! # Behaviour at the time of writing
//!
//! - Own deque is LIFO (depth-first, cache-warm); thieves take the oldest jobs, up to half
//!   of a deque in one batch (`steal_batch_and_pop`), starting from a random victim.
//! - Order of search: own deque, the own group's injector (tasks bound to the group), the
//!   global injector, other workers (those of the own steal group first, see
//!   [`affinity`](super::affinity)); every [`INJECTOR_INTERVAL`]th
//!   search starts with the injector, and a task runs at most [`INLINE_LIMIT`] successors
//!   in place before it goes back through the search, so new runs and woken futures wait
//!   for at most a bounded number of jobs of a busy worker.
//! - A worker that finds nothing searches — if fewer than the pool's cap of workers search
//!   at the time — for the rounds the pool's [`IdleSpin`](super::IdleSpin) says (by
//!   default 64 rounds of a steal attempt and a short `spin_loop` pause, then 16 with
//!   `yield_now`), then parks.
//! - A finishing task keeps one ready successor and runs it in place (no queue round
//!   trip); the others are pushed to the own deque. A root range (`Job::Roots`) is split
//!   in half whenever the own deque is empty, so idle workers always find half of what
//!   remains (lazy binary splitting).
//! - Decrements of a run's outstanding counter are batched per worker (*debt*), flushed
//!   before the worker runs another run's job and when it runs out of work.

use std::cell::Cell;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_deque::{Steal, Worker};

use super::job::Job;
use super::latch::Latch;
use super::registry::Registry;
use super::run::RunHeader;

/// Every this many jobs, a worker looks at the injector before its own deque.
pub(crate) const INJECTOR_INTERVAL: u32 = 61;
/// A task runs at most this many ready successors in place, one after the other, before it
/// pushes the next one to the deque (bounds how long the injector can go unchecked).
pub(crate) const INLINE_LIMIT: u32 = 256;

thread_local! {
    /// The worker context of the current thread, if it is a worker.
    static CURRENT: Cell<*const WorkerCtx> = const { Cell::new(ptr::null()) };
}

/// Everything a worker thread owns; lives on the worker's stack.
#[derive(Debug)]
pub(crate) struct WorkerCtx {
    index: usize,
    local: Worker<Job>,
    registry: Arc<Registry>,
    /// The run `debt` belongs to; may dangle while `debt` is zero.
    debt_run: Cell<*const RunHeader>,
    /// Units of `debt_run` this worker gave back locally but not yet to the shared counter.
    debt: Cell<usize>,
    rng: Cell<u32>,
    /// Counts `find_work` calls, for the periodic injector check.
    tick: Cell<u32>,
    /// The steal group (`u32::MAX` for a helping caller, which has none).
    group: u32,
    /// A helping caller that wakes nobody: its pushes leave sleepers asleep (it runs
    /// its own deque until empty, see [`helper`](super::helper)); awake workers may
    /// still steal from it. Always false for a worker.
    quiet: Cell<bool>,
}

impl WorkerCtx {
    /// The context of worker `index` (or, with `index == num_workers`, of a helping
    /// caller, see [`helper`](super::helper)) owning deque `local`.
    pub(crate) fn new(registry: Arc<Registry>, index: usize, local: Worker<Job>) -> WorkerCtx {
        let group = if index < registry.num_workers() {
            registry.steal_order().group_of(index)
        } else {
            u32::MAX
        };
        WorkerCtx {
            group,
            index,
            local,
            registry,
            debt_run: Cell::new(ptr::null()),
            debt: Cell::new(0),
            rng: Cell::new(0x9E37_79B9 ^ (index as u32).wrapping_mul(0x85EB_CA6B) | 1),
            tick: Cell::new(0),
            quiet: Cell::new(false),
        }
    }

    /// Makes this helping caller's pushes wake nobody (see `quiet`). Only for a helper:
    /// a worker's pushes must wake sleepers, or a job could wait with workers asleep.
    pub(crate) fn set_quiet(&self, quiet: bool) {
        debug_assert!(!self.is_worker() || !quiet);
        self.quiet.set(quiet);
    }

    /// Gives the own deque back; the debt must have been flushed.
    pub(crate) fn into_local(self) -> Worker<Job> {
        debug_assert_eq!(self.debt.get(), 0);
        self.local
    }

    /// The index of this worker in its pool.
    #[inline]
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// This worker's steal group; `u32::MAX` for a helping caller.
    #[inline]
    pub(crate) fn group(&self) -> u32 {
        self.group
    }

    /// Whether this worker may run a task bound to group `g` (see
    /// [`affinity`](super::affinity)); a group the pool does not have binds nothing.
    #[inline]
    pub(crate) fn may_run_group(&self, g: u32) -> bool {
        g == self.group || g as usize >= self.registry.num_groups()
    }

    /// Whether this is one of the pool's workers (not a helping caller).
    #[inline]
    pub(crate) fn is_worker(&self) -> bool {
        self.index < self.registry.num_workers()
    }

    /// Calls `f` with the current thread's worker context if it is a worker of `registry`.
    pub(crate) fn with_current<R>(
        registry: &Arc<Registry>,
        f: impl FnOnce(Option<&WorkerCtx>) -> R,
    ) -> R {
        let ptr = CURRENT.with(Cell::get);
        // SAFETY: `CURRENT` is set only by `main_loop`, to a context on that thread's
        // stack that outlives every call made from the loop; it is cleared before the
        // context goes away. We only read it on the thread that set it.
        let ctx = unsafe { ptr.as_ref() };
        f(ctx.filter(|w| Arc::ptr_eq(&w.registry, registry)))
    }

    /// Pushes a job to the own deque; wakes a sleeper if the deque was empty (unless this
    /// is a quiet helper).
    #[inline]
    pub(crate) fn push(&self, job: Job) {
        let was_empty = self.local.is_empty();
        self.local.push(job);
        if was_empty && !self.quiet.get() {
            self.registry.sleep().notify_one();
        }
    }

    /// Ends this helping caller's quiet mode and wakes a sleeper if it was quiet: for a
    /// caller about to block while jobs it pushed without a wake-up (its own run's, or a
    /// `parallel_for`'s pieces it leaves to the workers) sit in its deque, which only the
    /// workers can now run.
    pub(crate) fn stop_being_quiet(&self) {
        if self.quiet.replace(false) {
            self.registry.sleep().notify_one();
        }
    }

    /// Makes `run` the run that `debt` is counted for, flushing the debt of another.
    #[inline]
    fn switch_run(&self, run: NonNull<RunHeader>) {
        if !ptr::eq(self.debt_run.get(), run.as_ptr()) {
            self.flush_debt();
            self.debt_run.set(run.as_ptr());
        }
    }

    /// Gives back `n` units of `run` (batched). The caller holds those units.
    #[inline]
    pub(crate) fn add_debt(&self, run: NonNull<RunHeader>, n: usize) {
        self.switch_run(run);
        self.debt.set(self.debt.get() + n);
    }

    /// Adds `n` units to `run`, cancelling them against debt first. The caller holds a unit.
    #[inline]
    pub(crate) fn reserve(&self, run: NonNull<RunHeader>, n: usize) {
        self.switch_run(run);
        let debt = self.debt.get();
        if debt >= n {
            self.debt.set(debt - n);
        } else {
            self.debt.set(0);
            // SAFETY: the caller holds a unit of `run`, so it is alive.
            unsafe { run.as_ref() }.add_outstanding(n - debt);
        }
    }

    /// Gives the batched units back to the shared counter.
    pub(crate) fn flush_debt(&self) {
        let debt = self.debt.replace(0);
        if debt > 0 {
            // SAFETY: while we held debt for it, the run's counter could not reach zero,
            // so the run is alive and we hold `debt` units; `complete` may end it, after
            // which we no longer touch it (`debt` is zero, so `debt_run` is not
            // dereferenced again). The pointer is non-null because `debt > 0`.
            unsafe {
                RunHeader::complete(NonNull::new_unchecked(self.debt_run.get().cast_mut()), debt)
            };
        }
    }

    /// Finds a job: own deque, then the injector, then other workers; but every
    /// [`INJECTOR_INTERVAL`]th call looks at the injector first, so that new runs and woken
    /// futures are not starved by a worker that always has local work.
    #[inline]
    pub(crate) fn find_work(&self) -> Option<Job> {
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        if tick % INJECTOR_INTERVAL == 0 {
            if let Some(job) = self.steal_group_one().or_else(|| self.steal_injector_one()) {
                return Some(job);
            }
        }
        self.local.pop().or_else(|| self.steal())
    }

    /// One job from the own group's injector (tasks bound to this group), if any.
    #[inline]
    fn steal_group_one(&self) -> Option<Job> {
        let injector = self.registry.group_injector(self.group)?;
        if injector.is_empty() {
            return None;
        }
        loop {
            match injector.steal() {
                Steal::Success(job) => return Some(job),
                Steal::Retry => continue,
                Steal::Empty => return None,
            }
        }
    }

    #[cold]
    fn steal_injector_one(&self) -> Option<Job> {
        loop {
            match self.registry.injector().steal() {
                Steal::Success(job) => return Some(job),
                Steal::Retry => continue,
                Steal::Empty => return None,
            }
        }
    }

    /// Called by a task that has run [`INLINE_LIMIT`] successors in place: pushes the next
    /// one instead, so that the worker passes through [`find_work`](Self::find_work).
    ///
    /// The push wakes nobody when this thread will pop the job right back: a helping
    /// caller always does (it runs its own deque until empty, see
    /// [`helper`](super::helper)), and a worker does when the injector is empty (its
    /// next search takes the own deque first). A sleeper woken here would only spin, or
    /// steal the chain and take its warm cache along. Work conservation holds: the one
    /// search of a worker that looks at the injector first finds it non-empty only if a
    /// job was injected since, and that push woke a sleeper, who then steals the deferred
    /// task; a helper that stops early wakes a worker for what it leaves.
    pub(crate) fn defer(&self, run: NonNull<RunHeader>, task: u32) {
        let job = Job::Task { run, task };
        if !self.is_worker() || self.registry.injector().is_empty() {
            self.local.push(job);
        } else {
            self.push(job);
        }
    }

    /// Pops the newest job of the own deque.
    pub(crate) fn pop_local(&self) -> Option<Job> {
        self.local.pop()
    }

    /// Looks for a job in the injector and in other workers' deques.
    fn steal(&self) -> Option<Job> {
        let stealers = self.registry.stealers();
        let n = stealers.len();
        loop {
            let mut retry = false;
            if let Some(job) = self.steal_group_one() {
                return Some(job);
            }
            match self.registry.injector().steal_batch_and_pop(&self.local) {
                Steal::Success(job) => return Some(job),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            if n > 1 {
                // Own steal group first, then the other workers (see `affinity`), then the
                // deques of callers helping with their runs. A helping caller (index past
                // the workers) has no group: it tries every worker. The lists are
                // precomputed per deque, so this allocates nothing.
                let is_worker = self.index < self.registry.num_workers();
                let [near, far, helpers] = self.registry.steal_order().victims(self.index);
                // `Some(local)`: the steal counts as same-group or not; helpers' deques
                // belong to no group and are not counted.
                for (victims, local) in [(near, Some(true)), (far, Some(false)), (helpers, None)] {
                    if victims.is_empty() {
                        continue;
                    }
                    let start = self.next_random() as usize % victims.len();
                    for i in 0..victims.len() {
                        let victim = victims[(start + i) % victims.len()];
                        match stealers[victim].steal_batch_and_pop(&self.local) {
                            Steal::Success(job) => {
                                if let (true, Some(local)) = (is_worker, local) {
                                    self.registry.steal_counters().record(self.index, local);
                                }
                                return Some(job);
                            }
                            Steal::Retry => retry = true,
                            Steal::Empty => {}
                        }
                    }
                }
            }
            if !retry {
                return None;
            }
        }
    }

    fn next_random(&self) -> u32 {
        // xorshift32
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.set(x);
        x
    }

    /// Flushes the debt if it belongs to another run than `job`'s; true if it did.
    ///
    /// Called before a job runs, so that units this worker already gave back locally never
    /// wait behind another run's task: the run they belong to (perhaps one whose caller is
    /// blocked on its latch, perhaps the very run a nested wait is waiting for) ends as soon
    /// as its last unit is given back, not one task later.
    #[inline]
    fn flush_debt_before(&self, job: &Job) -> bool {
        if self.debt.get() > 0 && !ptr::eq(job.run(), self.debt_run.get()) {
            self.flush_debt();
            true
        } else {
            false
        }
    }

    /// Runs one job.
    #[inline]
    pub(crate) fn execute(&self, job: Job) {
        self.flush_debt_before(&job);
        match job {
            Job::Task { run, task } => {
                // SAFETY: the job held the unit of `task`, which we now hold; the header's
                // `run_task` matches the run's body type.
                unsafe { (run.as_ref().run_task)(run, task, self) }
            }
            Job::Roots { run, start, end } => self.run_roots(run, start, end),
            Job::Pick { run, count } => self.run_picks(run, count),
            Job::Poll(task) => {
                // SAFETY: the job owned a strong count and the `SCHEDULED` state, which
                // `poll` takes over; it was set for the task's own type.
                unsafe { (task.as_ref().poll)(task, self) }
            }
        }
    }

    /// Runs roots `start..end` of `run`, splitting off the upper half whenever the own
    /// deque is empty (so that an idle worker can take it).
    fn run_roots(&self, run: NonNull<RunHeader>, mut start: u32, mut end: u32) {
        let mut budget = INLINE_LIMIT;
        while start < end {
            if budget == 0 {
                // Go back through `find_work` now and then (see `INLINE_LIMIT`).
                self.push(Job::Roots { run, start, end });
                return;
            }
            budget -= 1;
            if end - start > 1 && self.local.is_empty() {
                let mid = start + (end - start) / 2;
                self.push(Job::Roots {
                    run,
                    start: mid,
                    end,
                });
                end = mid;
            }
            // SAFETY: we hold `end - start >= 1` units of the run, so it is alive.
            let header = unsafe { run.as_ref() };
            let task = header.topology().roots()[start as usize];
            let run_task = header.run_task;
            start += 1;
            // SAFETY: we pass on the unit of this root; `run_task` matches the body type.
            unsafe { run_task(run, task, self) };
        }
    }

    /// Takes `count` tasks from the ready queue of `run` and runs them, splitting off half
    /// of the count whenever the own deque is empty (as [`run_roots`](Self::run_roots)).
    fn run_picks(&self, run: NonNull<RunHeader>, mut count: u32) {
        let mut budget = INLINE_LIMIT;
        while count > 0 {
            // SAFETY: we hold `count >= 1` units of the run, so it is alive.
            let header = unsafe { run.as_ref() };
            if header.is_cancelled() {
                self.add_debt(run, count as usize);
                return;
            }
            if budget == 0 {
                self.push(Job::Pick { run, count });
                return;
            }
            budget -= 1;
            if count > 1 && self.local.is_empty() {
                let half = count / 2;
                self.push(Job::Pick { run, count: half });
                count -= half;
            }
            let task = header.pop_queue(self);
            let run_task = header.run_task;
            count -= 1;
            // SAFETY: we pass on one unit, now the unit of `task`, taken from the queue;
            // `run_task` matches the body type.
            unsafe { run_task(run, task, self) };
        }
    }

    /// Looks for work for a while (if the pool's [`IdleSpin`](super::IdleSpin) lets it
    /// search now), then parks until woken, `stop` holds, or `deadline`. Returns a job if
    /// one was found on the way or right after waking. A worker that may not search (the
    /// cap is reached) goes to sleep at once.
    fn idle(&self, stop: &dyn Fn() -> bool, deadline: Option<Instant>) -> Option<Job> {
        self.flush_debt();
        let registry = &self.registry;
        let sleep = registry.sleep();
        let spin = registry.idle_spin();
        if spin.searches() && sleep.start_search(registry.searching_cap()) {
            let found = self.search(spin.spin_rounds(), spin.yield_rounds(), stop);
            sleep.end_search();
            match found {
                Search::Found(job) => return Some(job),
                Search::Stopped => return None,
                Search::Nothing => {}
            }
        }
        let parked = sleep.sleep(
            self.index,
            || registry.has_work_for(self.index) || stop(),
            deadline,
        );
        if !parked || stop() {
            return None;
        }
        // Woken: take a job at once, and pass the baton if more is left than this worker
        // took (pushes onto a non-empty deque wake nobody, so a burst of jobs spreads
        // through woken workers waking the next). Checking before the take would wake a
        // second worker for the one job this worker is about to run.
        let job = self.find_work();
        if job.is_some() && registry.has_work_for(self.index) {
            sleep.notify_one();
        }
        job
    }

    /// `spin` rounds of a steal attempt and a short pause, then `yields` rounds of a steal
    /// attempt and `yield_now`, until a job turns up or `stop` holds.
    fn search(&self, spin: u32, yields: u32, stop: &dyn Fn() -> bool) -> Search {
        for round in 0..spin.saturating_add(yields) {
            if let Some(job) = self.steal() {
                return Search::Found(job);
            }
            if stop() {
                return Search::Stopped;
            }
            if round < spin {
                for _ in 0..(4 << round.min(4)) {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
        }
        Search::Nothing
    }

    /// Runs jobs until `latch` is done, cancelling the run (`fail`) on a cancellation
    /// request or at `deadline`. Used when `execute` is called on a worker of the pool.
    ///
    /// While it waits, the worker runs jobs of any run (so nesting cannot deadlock), but
    /// never one of another run while it still owes the awaited run units: before such a
    /// job it flushes its debt — which may bring the awaited run to zero and set the
    /// latch — and checks the latch again. If the latch is done then, the job goes back to
    /// the own deque (for whoever runs next here, or a thief) and the wait returns at
    /// once. So the awaited run is never kept waiting by an unrelated job that this worker
    /// took after the run's last task had finished here.
    pub(crate) fn wait_nested(
        &self,
        latch: &Latch,
        deadline: Option<Instant>,
        fail: &dyn Fn(bool),
    ) {
        let mut failed = false;
        let mut jobs = 0u32;
        loop {
            if latch.is_done() {
                return;
            }
            if !failed {
                if latch.is_cancel_requested() {
                    fail(false);
                    failed = true;
                } else if deadline.is_some()
                    && jobs % 32 == 0
                    && deadline.is_some_and(|d| Instant::now() >= d)
                {
                    fail(true);
                    failed = true;
                }
            }
            let found = match self.find_work() {
                Some(job) => {
                    jobs = jobs.wrapping_add(1);
                    Some(job)
                }
                None => {
                    jobs = 0;
                    let stop = || latch.is_done() || (!failed && latch.is_cancel_requested());
                    self.idle(&stop, if failed { None } else { deadline })
                }
            };
            if let Some(job) = found {
                // `idle` flushed already; `find_work` may have found another run's job
                // while we owe the awaited run units.
                self.flush_debt_before(&job);
                if latch.is_done() {
                    self.push(job);
                    return;
                }
                self.execute(job);
            }
        }
    }
}

/// How an idle worker's search ended.
enum Search {
    /// It stole this job.
    Found(Job),
    /// The caller's stop condition held.
    Stopped,
    /// Its rounds ran out.
    Nothing,
}

/// The index of the current thread in its pool, if it is a worker (tests only).
#[cfg(test)]
pub(crate) fn current_index() -> Option<usize> {
    let ptr = CURRENT.with(Cell::get);
    // SAFETY: as in `with_current`: set by `main_loop` to a context that outlives it.
    unsafe { ptr.as_ref() }.map(WorkerCtx::index)
}

/// Aborts the process if dropped during unwinding.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("magpie scheduler: a worker thread panicked outside a task; aborting");
            std::process::abort();
        }
    }
}

/// The body of worker thread `index`.
pub(crate) fn main_loop(registry: Arc<Registry>, index: usize, local: Worker<Job>) {
    let guard = AbortOnUnwind;
    let ctx = WorkerCtx::new(registry, index, local);
    if let Some(hook) = ctx.registry.on_start() {
        hook.run(index);
    }
    CURRENT.with(|c| c.set(&ctx));
    let intra = super::parallel::enter(&ctx);
    let registry = Arc::clone(&ctx.registry);
    let stop = || registry.is_terminating();
    loop {
        while let Some(job) = ctx.find_work() {
            ctx.execute(job);
        }
        match ctx.idle(&stop, None) {
            Some(job) => ctx.execute(job),
            None => {
                if registry.is_terminating() && !registry.has_work_for(ctx.index) {
                    break;
                }
            }
        }
    }
    ctx.flush_debt();
    drop(intra);
    CURRENT.with(|c| c.set(ptr::null()));
    drop(guard);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    use crossbeam_deque::Worker;

    use super::WorkerCtx;
    use crate::affinity::StealOrder;
    use crate::job::Job;
    use crate::registry::Registry;
    use crate::{DagBody, RunControl, TaskContext, TaskOutcome, ThreadPool, Topology};

    /// Task 0 runs a one-task nested run on the same worker; task 1 is unrelated work of
    /// the outer run that sits in that worker's deque meanwhile. The nested wait must
    /// return before it runs task 1: task 1 sees that task 0's `execute` had returned.
    struct NestedThenUnrelated {
        pool: ThreadPool,
        nested_returned: AtomicBool,
        unrelated_saw_return: AtomicBool,
        nested_ran: AtomicU32,
    }

    struct One<'a>(&'a AtomicU32);

    impl DagBody for One<'_> {
        type Error = ();
        fn run(&self, _: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<()>, ()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(TaskOutcome::Done)
        }
    }

    impl DagBody for NestedThenUnrelated {
        type Error = ();
        fn run(&self, task: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<()>, ()> {
            if task == 0 {
                let topology = Topology::builder(1).build().unwrap();
                let nested = One(&self.nested_ran);
                self.pool
                    .execute(&topology, &nested, &RunControl::default())
                    .unwrap();
                self.nested_returned.store(true, Ordering::Relaxed);
            } else {
                let seen = self.nested_returned.load(Ordering::Relaxed);
                self.unrelated_saw_return.store(seen, Ordering::Relaxed);
            }
            Ok(TaskOutcome::Done)
        }
    }

    #[test]
    fn a_nested_wait_returns_before_it_runs_unrelated_work() {
        // One worker and no helping callers, so both roots run on the worker: it splits
        // the root range (task 1 goes to its deque) and runs task 0, whose nested run's
        // only task finishes on the same worker and leaves its unit as debt.
        let pool = ThreadPool::builder()
            .num_workers(1)
            .helper_slots(0)
            .build()
            .unwrap();
        for _ in 0..3 {
            let body = NestedThenUnrelated {
                pool: pool.clone(),
                nested_returned: AtomicBool::new(false),
                unrelated_saw_return: AtomicBool::new(false),
                nested_ran: AtomicU32::new(0),
            };
            let topology = Topology::builder(2).build().unwrap();
            pool.execute(&topology, &body, &RunControl::default())
                .unwrap();
            assert_eq!(body.nested_ran.load(Ordering::Relaxed), 1);
            assert!(
                body.unrelated_saw_return.load(Ordering::Relaxed),
                "the nested wait ran the outer run's other task before returning"
            );
        }
    }

    #[test]
    fn stealing_allocates_nothing() {
        // Four workers in two groups and two helper deques: every list of victims is
        // non-empty for someone. Jobs only move between deques here, never run, so a
        // dangling run pointer is fine.
        let locals: Vec<Worker<Job>> = (0..4).map(|_| Worker::new_lifo()).collect();
        let order = StealOrder::from_groups(4, &[vec![0, 1], vec![2, 3]]).unwrap();
        let registry = Arc::new(Registry::new(
            locals.iter().map(Worker::stealer).collect(),
            order,
            None,
            None,
            2,
            crate::IdleSpin::default(),
        ));
        let mut locals = locals.into_iter();
        let thief = WorkerCtx::new(Arc::clone(&registry), 0, locals.next().unwrap());
        let victim = locals.nth(2).unwrap(); // worker 3, in the other group
        let job = || Job::Task {
            run: std::ptr::NonNull::dangling(),
            task: 7,
        };
        // Warm up whatever crossbeam allocates once (its buffers grow on first use).
        victim.push(job());
        assert!(thief.steal().is_some());
        let before = crate::test_alloc::allocations();
        for round in 0..100 {
            // Empty: the path of the idle spin.
            assert!(thief.steal().is_none());
            if round % 10 == 0 {
                victim.push(job());
                assert!(matches!(thief.steal(), Some(Job::Task { task: 7, .. })));
            }
        }
        assert_eq!(crate::test_alloc::allocations() - before, 0);
        assert_eq!(registry.steal_stats().remote, 11);
    }
}
