//! Per-run state: pending counters, the outstanding-task counter, the first error, the
//! cancelled flag and the completion latch; and the code that runs one task and releases
//! its successors.
//!
//! # Guarantees
//!
//! - **Each task at most once, exactly once on success.** A task becomes ready when its
//!   pending counter (initialised from the topology at the start of every run) is brought
//!   to zero; exactly one predecessor observes that, so exactly one job is created for it.
//! - **Order.** A task starts only after all its predecessors finished, and sees their
//!   writes: each predecessor's decrement is a `Release`, the decrement (or load) that
//!   finds the task ready is an `Acquire`.
//! - **Completion.** `execute` returns only once the outstanding counter reached zero, so
//!   no worker touches the run's state afterwards (the lifetime protocol is in
//!   [`job`](super::job)).
//! - **Failure.** After the first error, panic, cancellation or deadline, no body starts;
//!   queued jobs of the run are drained without running, idle futures of the run are
//!   dropped, and a future that is being polled is dropped when its poll returns. A body
//!   that is running is waited for: a body that never returns cannot be interrupted.
//!   The first failure is the run's error; a body that sees
//!   [`TaskContext::is_cancelled`](super::TaskContext::is_cancelled) return `true` because
//!   of the token or the deadline records that failure itself, so a run in which a body
//!   gave up early never reports success.
//!
//! # The outstanding counter
//!
//! It counts tasks that are ready or running but not finished ("units", see
//! [`job`](super::job)), not tasks that are left: a task that finishes and makes `k`
//! successors ready changes it by `k - 1`. A chain therefore never touches it, and when
//! it reaches zero nothing can become ready any more, so the run is over (in an acyclic
//! graph, some task of an unfinished run is always ready or running). Cancelled runs reach
//! zero without walking the rest of the graph: a job skipped after cancellation releases
//! nothing.
//!
//! Workers batch their decrements ([`WorkerCtx`](super::worker) keeps a *debt* per run and
//! flushes it before it runs another run's job or runs out of work) and reserve increments
//! from that debt. The shared counter therefore is always `>=` the true count, and equal to it when
//! no worker holds debt: it cannot reach zero early.

use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Instant;

use super::sync::plain::Mutex;
use crossbeam_utils::CachePadded;
use smallvec::SmallVec;

use super::async_task::{self, AsyncTask};
use super::body::{DagBody, TaskContext, TaskOutcome};
use super::cancel::RunControl;
use super::error::RunError;
use super::job::Job;
use super::latch::Latch;
use super::observer::{Observer, TaskEvent};
use super::policy::RunQueue;
use super::ready_queue::QueueContext;
use super::sync::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use super::topology::Topology;
use super::worker::{WorkerCtx, INLINE_LIMIT};

/// `RunHeader::failure`: the run has not failed.
const NOT_FAILED: u8 = 0;
/// The first failure was a task's error or panic, stored in `RunCore::error`.
const FAILED_TASK: u8 = 1;
/// The first failure was a cancellation through the run's token.
const FAILED_CANCELLED: u8 = 2;
/// The first failure was the deadline.
const FAILED_DEADLINE: u8 = 3;

/// Runs task `task` of the run at the pointer, then any successor it makes ready and keeps.
pub(crate) type RunTaskFn = unsafe fn(NonNull<RunHeader>, u32, &WorkerCtx);

/// The type-erased part of a run: everything the hot path and the jobs need.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RunHeader {
    /// Typed entry point, `run_task::<B>` of the run's body type.
    pub(crate) run_task: RunTaskFn,
    /// Set (never cleared) once the run failed, was cancelled or passed its deadline.
    cancelled: AtomicBool,
    /// Whether some task of the topology is bound to a steal group (`affinity`).
    has_groups: bool,
    /// Which failure came first: one of the `FAILED_*` constants, or `NOT_FAILED`.
    failure: AtomicU8,
    topology: NonNull<Topology>,
    control: NonNull<RunControl>,
    /// One counter per task: predecessors that have not finished yet.
    pending: Box<[AtomicU32]>,
    /// The run's observer (`RunControl::observer`), borrowed like `control`; `None` keeps
    /// the hot path to one branch per job (`run_task`). In the header's first cache line,
    /// with the other fields every job reads.
    observer: Option<NonNull<dyn Observer>>,
    /// Ready-or-running tasks, plus workers' unflushed debt (see the module docs).
    outstanding: CachePadded<AtomicUsize>,
    /// The ready tasks of a run under a queued policy; `None` for depth-first runs.
    queue: Option<RunQueue>,
    latch: Arc<Latch>,
}

// SAFETY: the raw pointers point at a `Topology`, a `RunControl` and the observer it holds,
// all `Sync`, that `execute` borrows for longer than the header lives; everything else is
// `Sync`.
unsafe impl Sync for RunHeader {}
// SAFETY: as above; the header is only ever shared, never moved between threads.
unsafe impl Send for RunHeader {}

impl RunHeader {
    fn new(
        run_task: RunTaskFn,
        topology: &Topology,
        control: &RunControl,
        num_workers: usize,
        latch: Arc<Latch>,
    ) -> RunHeader {
        let pending = topology
            .predecessor_counts()
            .iter()
            .map(|&p| AtomicU32::new(p))
            .collect();
        RunHeader {
            run_task,
            cancelled: AtomicBool::new(false),
            has_groups: topology.has_groups(),
            failure: AtomicU8::new(NOT_FAILED),
            topology: NonNull::from(topology),
            control: NonNull::from(control),
            pending,
            outstanding: CachePadded::new(AtomicUsize::new(topology.roots().len())),
            queue: control.policy.new_queue(topology, num_workers),
            observer: control.observer.as_deref().map(NonNull::from),
            latch,
        }
    }

    #[inline]
    pub(crate) fn topology(&self) -> &Topology {
        // SAFETY: `execute` borrows the topology for the whole run, and the header does
        // not outlive the run.
        unsafe { self.topology.as_ref() }
    }

    #[inline]
    pub(crate) fn control(&self) -> &RunControl {
        // SAFETY: as for `topology`.
        unsafe { self.control.as_ref() }
    }

    /// Whether the run stopped starting bodies. A cancellation requested through the
    /// run's token counts at once: whoever notices it first records it as the run's
    /// failure, without waiting for the thread blocked in `execute` to wake up.
    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        if self.cancelled.load(Ordering::Relaxed) {
            return true;
        }
        if self.latch.is_cancel_requested() {
            self.observe_cancelled();
            return true;
        }
        false
    }

    /// Like [`is_cancelled`](Self::is_cancelled), ordered with the `SeqCst` store in `claim_failure`
    /// in the single total order of `SeqCst` operations.
    pub(crate) fn is_cancelled_seqcst(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Adds `n` units. Only a holder of a unit may call this.
    #[inline]
    pub(crate) fn add_outstanding(&self, n: usize) {
        self.outstanding.fetch_add(n, Ordering::Relaxed);
    }

    /// Gives back `n` units; the caller must not touch the run afterwards unless it still
    /// holds another unit. Sets the latch when the count reaches zero.
    ///
    /// Takes a raw pointer rather than `&self`: a reference argument would have to stay
    /// valid until this function returns, but `execute` may free the run as soon as the
    /// latch is set, before `set_done` returns.
    ///
    /// # Safety
    ///
    /// `this` must point at a live header, and the caller must hold `n` units of its run.
    #[inline]
    pub(crate) unsafe fn complete(this: NonNull<RunHeader>, n: usize) {
        // SAFETY: the caller holds `n >= 1` units, so the header is alive until the
        // decrement below gives them back.
        let outstanding = unsafe { &this.as_ref().outstanding };
        if give_back(outstanding, n) {
            // SAFETY: the count is zero but the latch is not set yet, so `execute` is still
            // waiting and the header is alive. Clone first: once the latch is set,
            // `execute` may free the header.
            let latch = Arc::clone(unsafe { &this.as_ref().latch });
            latch.set_done();
        }
    }

    /// Decrements the pending counter of `task`; true when that made it ready.
    #[inline]
    fn make_ready(&self, task: u32) -> bool {
        decrement_pending(&self.pending[task as usize])
    }

    /// The ready queue of a run under a queued policy.
    ///
    /// # Panics
    ///
    /// For a depth-first run, which has none (its jobs are never picks).
    pub(crate) fn queue(&self) -> &RunQueue {
        self.queue
            .as_ref()
            .expect("only runs under a queued policy have pick jobs")
    }

    /// Takes a task from the run's ready queue for a pick that `w` holds (a user's queue
    /// is checked to return a task of the topology).
    #[inline]
    pub(crate) fn pop_queue(&self, w: &WorkerCtx) -> u32 {
        self.queue()
            .pop(&QueueContext::new(w.index(), self.topology()))
    }

    /// Gives the run's roots to its ready queue, if it has one; called once by the
    /// thread in `execute`, before any job of the run exists. `worker` is that thread's
    /// index (`num_workers` for an outside caller).
    pub(crate) fn push_roots(&self, worker: usize) {
        if let Some(queue) = &self.queue {
            let topology = self.topology();
            queue.push_roots(&QueueContext::new(worker, topology), topology.roots());
        }
    }

    /// The run's observer, if it has one.
    #[inline]
    fn observer(&self) -> Option<&dyn Observer> {
        // SAFETY: as for `topology`: the observer is owned by the borrowed `RunControl`.
        self.observer.map(|o| unsafe { o.as_ref() })
    }

    /// Tells the observer, if any, that `task` finished on `worker` (an asynchronous task
    /// whose future resolved or was dropped while being polled).
    #[inline]
    pub(crate) fn observe_finished(&self, task: u32, worker: usize) {
        if let Some(o) = self.observer() {
            o.task_finished(&TaskEvent::new(task, worker, Instant::now()));
        }
    }

    /// Finishes `task`, which the caller holds a unit of: releases its successors, pushes
    /// all newly ready ones but one to the worker's deque and returns that one, whose unit
    /// then belongs to the caller. A FIFO or critical-path run pushes them all to its
    /// queue instead, and returns the queue's head ([`policy`](super::policy)).
    ///
    /// The common case of a depth-first run, one successor, is inlined into the task loop;
    /// the rest is [`release_general`](Self::release_general).
    #[inline(always)]
    pub(crate) fn release(&self, run: NonNull<RunHeader>, task: u32, w: &WorkerCtx) -> Option<u32> {
        if self.queue.is_none() {
            if let &[s] = self.topology().successors(task) {
                if self.make_ready(s) {
                    // The finished task's unit passes to its successor.
                    return Some(s);
                }
                w.add_debt(run, 1);
                return None;
            }
        }
        self.release_general(run, task, w)
    }

    /// [`release`](Self::release) for any run and any number of successors.
    #[inline(never)]
    fn release_general(&self, run: NonNull<RunHeader>, task: u32, w: &WorkerCtx) -> Option<u32> {
        if let Some(queue) = &self.queue {
            return self.release_queued(queue, run, task, w);
        }
        let successors = self.topology().successors(task);
        match successors.len() {
            0 => {
                w.add_debt(run, 1);
                None
            }
            1 => {
                let s = successors[0];
                if self.make_ready(s) {
                    // The finished task's unit passes to its successor.
                    Some(s)
                } else {
                    w.add_debt(run, 1);
                    None
                }
            }
            n => {
                // Reserve a unit for each job we might push before pushing any, so that a
                // thief finishing one cannot bring the counter to zero early.
                w.reserve(run, n - 1);
                let mut next = None;
                let mut released = 0;
                for &s in successors {
                    if self.make_ready(s) {
                        released += 1;
                        if let Some(prev) = next.replace(s) {
                            w.push(Job::Task { run, task: prev });
                        }
                    }
                }
                // Reserved n - 1, used max(released - 1, 0), and our own unit passes to
                // `next` when released > 0: give back what is left.
                w.add_debt(run, n - released);
                next
            }
        }
    }

    /// [`release`](Self::release) for a run with a ready queue. Never inlined, so that the
    /// depth-first path of `release` stays small.
    #[inline(never)]
    fn release_queued(
        &self,
        queue: &RunQueue,
        run: NonNull<RunHeader>,
        task: u32,
        w: &WorkerCtx,
    ) -> Option<u32> {
        let topology = self.topology();
        let ready: SmallVec<[u32; 8]> = topology
            .successors(task)
            .iter()
            .copied()
            .filter(|&s| self.make_ready(s))
            .collect();
        if ready.is_empty() {
            w.add_debt(run, 1);
            return None;
        }
        // Every ready task is queued before the picks that will take them exist, and our
        // own unit passes to the task we take; reserve units for the others first.
        let picks = ready.len() - 1;
        let next = queue.push_and_pop(&QueueContext::new(w.index(), topology), &ready);
        if picks > 0 {
            w.reserve(run, picks);
            w.push(Job::Pick {
                run,
                count: picks as u32,
            });
        }
        Some(next)
    }

    /// Records a failure of kind `FAILED_*` unless an earlier one won, and stops the run
    /// from starting bodies. True if this failure is the run's error.
    fn claim_failure(&self, kind: u8) -> bool {
        let won = self
            .failure
            .compare_exchange(NOT_FAILED, kind, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        self.cancelled.store(true, Ordering::SeqCst);
        won
    }

    /// Called by a body that noticed the token was cancelled.
    pub(crate) fn observe_cancelled(&self) {
        self.claim_failure(FAILED_CANCELLED);
    }

    /// Called by a body that noticed the deadline passed.
    pub(crate) fn observe_deadline(&self) {
        self.claim_failure(FAILED_DEADLINE);
    }
}

/// The part of a run that depends on the error type only (asynchronous tasks point here).
#[repr(C)]
pub(crate) struct RunCore<E> {
    pub(crate) header: RunHeader,
    error: Mutex<Option<RunError<E>>>,
    /// Asynchronous tasks of this run, so that cancellation can drop idle futures.
    asyncs: Mutex<Vec<Arc<AsyncTask<E>>>>,
}

impl<E: Send + 'static> RunCore<E> {
    /// Records `error` unless an earlier failure won, then cancels the run. The caller
    /// must hold a unit of the run, or be the thread that owns it (the one in `execute`).
    pub(crate) fn fail(&self, error: RunError<E>) {
        let kind = match error {
            RunError::Cancelled => FAILED_CANCELLED,
            RunError::DeadlineExceeded => FAILED_DEADLINE,
            _ => FAILED_TASK,
        };
        if self.header.claim_failure(kind) && kind == FAILED_TASK {
            *self.error.lock() = Some(error);
        } else {
            drop_quietly(error);
        }
        self.drop_idle_futures();
    }

    /// Drops the futures of idle asynchronous tasks and counts those tasks as finished.
    /// Called after the cancelled flag is set; a task that goes idle after this walk sees
    /// the flag itself (`async_task`). Walking more than once is harmless.
    fn drop_idle_futures(&self) {
        let dropped: Vec<_> = self
            .asyncs
            .lock()
            .iter()
            .filter_map(|task| task.take_if_idle())
            .collect();
        let n = dropped.len();
        drop_quietly(dropped);
        if n > 0 {
            // SAFETY: we own the `n` units of the tasks we just claimed; the caller holds
            // another unit or owns the run, so the run outlives `&self`.
            unsafe { RunHeader::complete(NonNull::from(&self.header), n) };
        }
    }

    pub(crate) fn register_async(&self, task: Arc<AsyncTask<E>>) {
        self.asyncs.lock().push(task);
    }
}

/// The whole state of one run of body type `B`; lives on the stack of `execute`.
#[repr(C)]
pub(crate) struct RunState<'a, B: DagBody> {
    pub(crate) core: RunCore<B::Error>,
    body: &'a B,
}

impl<'a, B: DagBody> RunState<'a, B> {
    pub(crate) fn new(
        topology: &Topology,
        body: &'a B,
        control: &RunControl,
        num_workers: usize,
        latch: Arc<Latch>,
    ) -> RunState<'a, B> {
        RunState {
            core: RunCore {
                header: RunHeader::new(run_task::<B>, topology, control, num_workers, latch),
                error: Mutex::new(None),
                asyncs: Mutex::new(Vec::new()),
            },
            body,
        }
    }

    /// The pointer jobs carry.
    pub(crate) fn header_ptr(&self) -> NonNull<RunHeader> {
        NonNull::from(&self.core.header)
    }

    pub(crate) fn fail(&self, error: RunError<B::Error>) {
        self.core.fail(error);
    }

    /// The run's result, for a shared state ([`spawn`](super::spawn)); call once, after
    /// the latch is done.
    pub(crate) fn take_result(&self) -> Result<(), RunError<B::Error>> {
        debug_assert!(self.core.header.latch.is_done());
        match self.core.header.failure.load(Ordering::Acquire) {
            NOT_FAILED => Ok(()),
            FAILED_CANCELLED => Err(RunError::Cancelled),
            FAILED_DEADLINE => Err(RunError::DeadlineExceeded),
            _ => Err(self
                .core
                .error
                .lock()
                .take()
                .expect("a task failure stores its error before the run ends, taken once")),
        }
    }

    /// The run's result; call once the latch is done.
    pub(crate) fn into_result(self) -> Result<(), RunError<B::Error>> {
        debug_assert!(self.core.header.latch.is_done());
        match self.core.header.failure.load(Ordering::Acquire) {
            NOT_FAILED => Ok(()),
            FAILED_CANCELLED => Err(RunError::Cancelled),
            FAILED_DEADLINE => Err(RunError::DeadlineExceeded),
            _ => Err(self
                .core
                .error
                .into_inner()
                .expect("a task failure stores its error before the run ends")),
        }
    }
}

/// Runs task `task`, and then, as long as each task makes a successor ready, that
/// successor, on the calling worker.
///
/// # Safety
///
/// `run` must point at the header of a live `RunState<'_, B>` (the same `B`), and the
/// caller must hold the unit of `task`, which this call takes over.
pub(crate) unsafe fn run_task<B: DagBody>(run: NonNull<RunHeader>, task: u32, w: &WorkerCtx) {
    // SAFETY: the caller holds the unit of `task`, so the run is alive.
    let observed = unsafe { run.as_ref() }.observer.is_some();
    // SAFETY: the caller's guarantees, passed on.
    unsafe {
        if observed {
            run_tasks::<B, true>(run, task, w)
        } else {
            run_tasks::<B, false>(run, task, w)
        }
    }
}

/// The loop of [`run_task`], compiled once with the observer calls (`OBSERVED`) and once
/// without them, so that a run without an observer runs a loop with no trace of it.
///
/// # Safety
///
/// As for [`run_task`].
#[inline(always)]
unsafe fn run_tasks<B: DagBody, const OBSERVED: bool>(
    run: NonNull<RunHeader>,
    mut task: u32,
    w: &WorkerCtx,
) {
    // SAFETY: the header is the first field of `RunCore`, itself the first field of
    // `RunState<B>`, all `repr(C)`; the caller guarantees the state is a live
    // `RunState<B>`, kept alive by the unit we hold for as long as we use it.
    let state = unsafe { run.cast::<RunState<'_, B>>().as_ref() };
    let header = &state.core.header;
    let mut inlined = 0;
    loop {
        if header.is_cancelled() {
            w.add_debt(run, 1);
            return;
        }
        if header.has_groups {
            if let Some(g) = header.topology().group(task) {
                // `pass_to_group` gives our unit away, after which the run may end and its
                // state be freed: it takes no reference into the run, and `state` and
                // `header` are not used again when it returns true.
                if !w.may_run_group(g) && pass_to_group(g, run, task, w) {
                    return;
                }
            }
        }
        let cx = TaskContext::new(w.index(), header);
        let observer = if OBSERVED { header.observer() } else { None };
        let result = match observer {
            None => panic::catch_unwind(AssertUnwindSafe(|| state.body.run(task, &cx))),
            Some(observer) => run_observed(observer, state.body, task, &cx),
        };
        let next = match result {
            Ok(Ok(TaskOutcome::Done)) => header.release(run, task, w),
            Ok(Ok(TaskOutcome::Pending(future))) => {
                async_task::spawn(&state.core, run, task, future, w)
            }
            Ok(Err(error)) => {
                state.core.fail(RunError::Task { task, error });
                w.add_debt(run, 1);
                None
            }
            Err(payload) => {
                state.core.fail(RunError::Panicked {
                    task,
                    message: panic_message(&*payload),
                });
                drop_quietly(payload);
                w.add_debt(run, 1);
                None
            }
        };
        match next {
            Some(n) => {
                inlined += 1;
                if inlined == INLINE_LIMIT {
                    w.defer(run, n);
                    return;
                }
                task = n;
            }
            None => return,
        }
    }
}

/// Runs the body of `task` between the observer's `task_started` and, unless it became an
/// asynchronous task (whose end `async_task` reports), `task_finished`.
#[cold]
#[inline(never)]
fn run_observed<B: DagBody>(
    observer: &dyn Observer,
    body: &B,
    task: u32,
    cx: &TaskContext<'_>,
) -> std::thread::Result<Result<TaskOutcome<B::Error>, B::Error>> {
    let worker = cx.worker_index();
    observer.task_started(&TaskEvent::new(task, worker, Instant::now()));
    let result = panic::catch_unwind(AssertUnwindSafe(|| body.run(task, cx)));
    if !matches!(result, Ok(Ok(TaskOutcome::Pending(_)))) {
        observer.task_finished(&TaskEvent::new(task, worker, Instant::now()));
    }
    result
}

/// Passes `task`, bound to group `g` that `w` is not in (see `affinity`), with its unit to
/// that group's injector; false (the unit stays with the caller) if the pool has no such
/// group.
///
/// Takes the run as a raw pointer only, not `&RunHeader`: once the job is in the injector
/// another worker may finish the run and `execute` free its state, while a reference
/// argument would have to stay valid until this function returns (the rule of
/// [`RunHeader::complete`]). The caller must not touch the run after `true`.
#[cold]
#[inline(never)]
fn pass_to_group(g: u32, run: NonNull<RunHeader>, task: u32, w: &WorkerCtx) -> bool {
    // `Err` is unreachable (`may_run_group` accepts groups the pool lacks); running the
    // task here would then be the safe way out.
    w.registry()
        .inject_to_group(g, Job::Task { run, task })
        .is_ok()
}

/// Decrements a task's pending counter (the number of its predecessors that have not
/// finished); true for exactly one caller, the last predecessor, which makes the task
/// ready.
///
/// When the counter reads 1, the caller is the last predecessor: nobody else will look at
/// the counter again, so the decrement can be skipped. The `Acquire` load (or the
/// `AcqRel` decrement) that finds the task ready synchronises with every other
/// predecessor's `AcqRel` decrement, so the task sees all their writes.
#[inline]
pub(crate) fn decrement_pending(pending: &AtomicU32) -> bool {
    pending.load(Ordering::Acquire) == 1 || pending.fetch_sub(1, Ordering::AcqRel) == 1
}

/// Gives `n` units back to a run's outstanding counter; true for the one caller that
/// brings it to zero, which then sets the run's latch. `AcqRel`: the caller that sees
/// zero has acquired every earlier give-back, so the latch's `Release` store of `done`
/// publishes the effects of every task of the run.
#[inline]
pub(crate) fn give_back(outstanding: &AtomicUsize, n: usize) -> bool {
    outstanding.fetch_sub(n, Ordering::AcqRel) == n
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any> (a panic payload that is not a string)".to_owned()
    }
}

/// Drops `value`, swallowing a panic from its destructor so that it cannot take a worker
/// down.
pub(crate) fn drop_quietly<T>(value: T) {
    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(value)));
}

/// Small runs that walk every path of the run lifecycle — roots, fan-out and fan-in,
/// chains passing units, picks of the queued policies, tasks passed to their steal group,
/// failures, panics and cancellation — sized to run under Miri, which checks the raw
/// pointers of the lifetime protocol ([`job`](super::job)) on every run.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use crate::{
        CancellationToken, DagBody, Policy, RunControl, RunError, TaskContext, TaskOutcome,
        ThreadPool, Topology,
    };

    /// Counts runs per task and checks that every predecessor ran first; fails task
    /// `fail` with an error, panics in task `panic`, cancels `cancel` in task `cancel_at`.
    struct Checked {
        ran: Vec<AtomicU32>,
        preds: Vec<Vec<u32>>,
        fail: Option<u32>,
        panic: Option<u32>,
        cancel: Option<(u32, CancellationToken)>,
    }

    impl Checked {
        fn new(topology: &Topology) -> Checked {
            let n = topology.len() as u32;
            let mut preds = vec![Vec::new(); n as usize];
            for t in 0..n {
                for &s in topology.successors(t) {
                    preds[s as usize].push(t);
                }
            }
            Checked {
                ran: (0..n).map(|_| AtomicU32::new(0)).collect(),
                preds,
                fail: None,
                panic: None,
                cancel: None,
            }
        }

        fn runs(&self) -> Vec<u32> {
            self.ran.iter().map(|r| r.load(Ordering::Relaxed)).collect()
        }
    }

    impl DagBody for Checked {
        type Error = String;
        fn run(&self, task: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
            for &p in &self.preds[task as usize] {
                assert_eq!(
                    self.ran[p as usize].load(Ordering::Relaxed),
                    1,
                    "{p} before {task}"
                );
            }
            self.ran[task as usize].fetch_add(1, Ordering::Relaxed);
            if self.panic == Some(task) {
                panic!("task {task} panics");
            }
            if let Some((at, token)) = &self.cancel {
                if *at == task {
                    token.cancel();
                }
            }
            if self.fail == Some(task) {
                return Err(format!("task {task} failed"));
            }
            Ok(TaskOutcome::Done)
        }
    }

    /// Two roots, a fan-out of 6 from root 0, a fan-in into task 8, a chain 8 -> 9 -> 10.
    fn diamond(groups: bool) -> Topology {
        let mut b = Topology::builder(11);
        for s in 2..8 {
            b.add_edge(0, s);
            b.add_edge(s, 8);
        }
        b.add_edge(1, 8);
        b.add_edge(8, 9);
        b.add_edge(9, 10);
        if groups {
            for t in 0..11 {
                b.set_group(t, t % 2);
            }
        }
        b.build().unwrap()
    }

    #[test]
    fn every_task_runs_once_in_order_under_every_policy() {
        let pool = ThreadPool::new(2).unwrap();
        let topology = diamond(false);
        for policy in [Policy::DepthFirst, Policy::Fifo, Policy::CriticalPath] {
            let body = Checked::new(&topology);
            pool.execute(&topology, &body, &RunControl::with_policy(policy.clone()))
                .unwrap();
            assert_eq!(body.runs(), vec![1; 11], "{policy:?}");
        }
    }

    #[test]
    fn tasks_bound_to_groups_are_passed_with_their_units() {
        // Every other task is bound to the other worker's group, so most releases pass a
        // task to a group injector (`pass_to_group`); the caller helps and has no group.
        let pool = ThreadPool::builder()
            .num_workers(2)
            .steal_groups(vec![vec![0], vec![1]])
            .build()
            .unwrap();
        let topology = diamond(true);
        for _ in 0..4 {
            let body = Checked::new(&topology);
            pool.execute(&topology, &body, &RunControl::default())
                .unwrap();
            assert_eq!(body.runs(), vec![1; 11]);
        }
    }

    #[test]
    fn an_error_or_a_panic_ends_the_run_and_the_pool_keeps_serving() {
        let pool = ThreadPool::new(2).unwrap();
        let topology = diamond(false);
        let mut body = Checked::new(&topology);
        body.fail = Some(8);
        let err = pool
            .execute(&topology, &body, &RunControl::default())
            .unwrap_err();
        assert!(matches!(&err, RunError::Task { task: 8, error } if error == "task 8 failed"));
        assert_eq!(
            &body.runs()[9..],
            [0, 0],
            "no successor of a failed task runs"
        );

        let mut body = Checked::new(&topology);
        body.panic = Some(0);
        let err = pool
            .execute(&topology, &body, &RunControl::default())
            .unwrap_err();
        assert!(
            matches!(&err, RunError::Panicked { task: 0, message } if message.contains("panics")),
            "{err:?}"
        );
        assert_eq!(body.runs()[2..], [0; 9]);

        let body = Checked::new(&topology);
        pool.execute(&topology, &body, &RunControl::default())
            .unwrap();
        assert_eq!(body.runs(), vec![1; 11]);
    }

    #[test]
    fn a_cancelled_run_starts_no_further_body() {
        let pool = ThreadPool::new(2).unwrap();
        let topology = diamond(false);
        let token = CancellationToken::new();
        let mut body = Checked::new(&topology);
        body.cancel = Some((8, token.clone()));
        let err = pool
            .execute(&topology, &body, &RunControl::with_token(token.clone()))
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled), "{err:?}");
        assert_eq!(body.runs()[9..], [0, 0]);
        // An already-cancelled token fails the run before it starts.
        let body = Checked::new(&topology);
        let err = pool
            .execute(&topology, &body, &RunControl::with_token(token))
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled));
        assert_eq!(body.runs(), vec![0; 11]);
    }

    #[test]
    fn a_nested_run_on_a_worker_completes() {
        struct Outer<'a>(&'a ThreadPool, AtomicU32);
        impl DagBody for Outer<'_> {
            type Error = String;
            fn run(&self, _: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
                let topology = diamond(false);
                let inner = Checked::new(&topology);
                self.0
                    .execute(&topology, &inner, &RunControl::default())
                    .map_err(|e| e.to_string())?;
                self.1
                    .fetch_add(inner.runs().iter().sum(), Ordering::Relaxed);
                Ok(TaskOutcome::Done)
            }
        }
        let pool = ThreadPool::builder()
            .num_workers(2)
            .helper_slots(0)
            .build()
            .unwrap();
        let outer = Outer(&pool, AtomicU32::new(0));
        pool.execute(
            &Topology::builder(3).build().unwrap(),
            &outer,
            &RunControl::default(),
        )
        .unwrap();
        assert_eq!(outer.1.load(Ordering::Relaxed), 33);
    }
}
