//! Asynchronous tasks: how a future returned by a body is driven without holding a worker.
//!
//! # Guarantees
//!
//! - A pending future holds no worker thread. Its waker pushes a [`Job::Poll`] to the
//!   pool's injector and wakes a sleeper; whichever worker takes the job polls it.
//! - A future is polled by one worker at a time, and never after it resolved or was
//!   dropped. A wake that arrives while the future is being polled causes exactly one more
//!   poll; wakes that arrive after the task finished are ignored.
//! - A panic in a poll is caught and fails the run; the worker carries on.
//! - When its run is cancelled, an idle future is dropped by the canceller and a running
//!   or scheduled one by the worker that holds it; either way its task then counts as
//!   finished (without releasing successors).
//!
//! # States
//!
//! `IDLE`, `SCHEDULED`, `RUNNING`, `NOTIFIED`, `DONE`: the table and the transitions are
//! in [`async_state`](super::async_state), which the loom models check. The future itself
//! (an `UnsafeCell`) is touched only by whoever moved the state to `RUNNING` or from
//! `IDLE` to `DONE`: that party owns it.
//!
//! # Memory ordering
//!
//! All transitions are `SeqCst` (this is the slow path). The one race that matters is a
//! poll returning `Pending` while the run gets cancelled: Dekker's pattern over the
//! state and the run's cancelled flag, with a `SeqCst` fence on each side, described in
//! [`async_state`](super::async_state) and checked by the loom models. Because after
//! `RUNNING → IDLE` the worker no longer holds the task's unit, it reserves an extra unit
//! of the run first so that the run cannot end under it.
//!
//! # Lifetime
//!
//! An `AsyncTask` is reference counted (the run's list, each waker, each queued
//! `Job::Poll`). It keeps a raw pointer to its run that it dereferences only while it holds
//! its task's unit (states `SCHEDULED`, `RUNNING`, `NOTIFIED`, or `IDLE` claimed by the
//! canceller, who owns the run). A waker that outlives the run finds `DONE` and does
//! nothing; it also keeps the pool's registry alive, so it never pushes into freed memory.

use std::cell::UnsafeCell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::task::{waker_ref, ArcWake};

use super::async_state::{AfterPending, AsyncState};
use super::error::RunError;
use super::job::Job;
use super::registry::Registry;
use super::run::{drop_quietly, panic_message, RunCore, RunHeader};
use super::worker::WorkerCtx;

type TaskFuture<E> = BoxFuture<'static, Result<(), E>>;

/// The type-erased head of an [`AsyncTask`], what a [`Job::Poll`] points at.
#[repr(C)]
pub(crate) struct AsyncHeader {
    state: AsyncState,
    task: u32,
    /// The task's run. Only compared ([`Job::run`]), never dereferenced through here.
    pub(crate) run: NonNull<RunHeader>,
    /// Takes over the job's strong count and polls the task.
    pub(crate) poll: unsafe fn(NonNull<AsyncHeader>, &WorkerCtx),
    /// Gives back the job's strong count without polling.
    pub(crate) release: unsafe fn(NonNull<AsyncHeader>),
}

/// One asynchronous task of a run whose body's error type is `E`.
#[repr(C)]
pub(crate) struct AsyncTask<E> {
    header: AsyncHeader,
    run: NonNull<RunCore<E>>,
    registry: Arc<Registry>,
    future: UnsafeCell<Option<TaskFuture<E>>>,
}

// SAFETY: the future is `Send` and is accessed by one owner at a time (see the state
// table); the run pointer is dereferenced only while its run is alive (see "Lifetime"),
// and the run's shared parts are `Sync`.
unsafe impl<E: Send> Send for AsyncTask<E> {}
// SAFETY: as above: shared access goes through the atomic state only.
unsafe impl<E: Send> Sync for AsyncTask<E> {}

impl<E> fmt::Debug for AsyncTask<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncTask")
            .field("task", &self.header.task)
            .field("state", &self.header.state.raw())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AsyncHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncHeader")
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

/// Starts driving `future`, the outcome of task `task`, and polls it once right away.
/// The caller's unit of `task` passes to the asynchronous task. Returns a successor made
/// ready (and its unit) if the future resolved at once.
pub(crate) fn spawn<E: Send + 'static>(
    core: &RunCore<E>,
    run: NonNull<RunHeader>,
    task: u32,
    future: TaskFuture<E>,
    w: &WorkerCtx,
) -> Option<u32> {
    let this = Arc::new(AsyncTask {
        header: AsyncHeader {
            state: AsyncState::running(),
            task,
            run,
            poll: poll_job::<E>,
            release: release_job::<E>,
        },
        run: NonNull::from(core),
        registry: Arc::clone(w.registry()),
        future: UnsafeCell::new(Some(future)),
    });
    core.register_async(Arc::clone(&this));
    debug_assert_eq!(run, NonNull::from(&core.header));
    this.poll_running(w)
}

/// # Safety
///
/// `header` must come from `Arc::<AsyncTask<E>>::into_raw` (same `E`), and the caller must
/// own that strong count and the task's `SCHEDULED` state.
unsafe fn poll_job<E: Send + 'static>(header: NonNull<AsyncHeader>, w: &WorkerCtx) {
    // SAFETY: per the contract, this is the pointer (to the first field of a `repr(C)`
    // struct) of a strong count we own.
    let this = unsafe { Arc::from_raw(header.cast::<AsyncTask<E>>().as_ptr()) };
    this.header.state.begin_poll();
    if let Some(next) = this.poll_running(w) {
        // SAFETY: we hold the unit of `next`, which keeps the run alive.
        let header = unsafe { &this.run.as_ref().header };
        let run = NonNull::from(header);
        // SAFETY: `run_task` was set for this run's body type; we pass the unit of `next`.
        unsafe { (header.run_task)(run, next, w) };
    }
}

/// # Safety
///
/// As for [`poll_job`], except that the state is not touched.
unsafe fn release_job<E>(header: NonNull<AsyncHeader>) {
    // SAFETY: per the contract, we own this strong count.
    drop(unsafe { Arc::from_raw(header.cast::<AsyncTask<E>>().as_ptr()) });
}

impl<E: Send + 'static> AsyncTask<E> {
    /// Polls the future; the state must be `RUNNING` and the caller holds the task's unit.
    fn poll_running(self: &Arc<Self>, w: &WorkerCtx) -> Option<u32> {
        // SAFETY: we hold the task's unit, so the run is alive.
        let core = unsafe { self.run.as_ref() };
        let run = NonNull::from(&core.header);
        let task = self.header.task;
        if core.header.is_cancelled() {
            self.finish();
            core.header.observe_finished(task, w.index());
            w.add_debt(run, 1);
            return None;
        }
        let waker = waker_ref(self);
        let mut cx = Context::from_waker(&waker);
        let polled = panic::catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: state `RUNNING` makes us the only one touching the future.
            let future = unsafe { &mut *self.future.get() };
            future
                .as_mut()
                .expect("a running task has a future")
                .as_mut()
                .poll(&mut cx)
        }));
        match polled {
            Ok(Poll::Pending) => {
                self.after_pending(core, run, w);
                None
            }
            Ok(Poll::Ready(Ok(()))) => {
                self.finish();
                core.header.observe_finished(task, w.index());
                core.header.release(run, task, w)
            }
            Ok(Poll::Ready(Err(error))) => {
                self.finish();
                core.header.observe_finished(task, w.index());
                core.fail(RunError::Task { task, error });
                w.add_debt(run, 1);
                None
            }
            Err(payload) => {
                self.finish();
                core.header.observe_finished(task, w.index());
                core.fail(RunError::Panicked {
                    task,
                    message: panic_message(&*payload),
                });
                drop_quietly(payload);
                w.add_debt(run, 1);
                None
            }
        }
    }

    /// The poll returned `Pending`: go idle, or poll again later if woken meanwhile.
    fn after_pending(self: &Arc<Self>, core: &RunCore<E>, run: NonNull<RunHeader>, w: &WorkerCtx) {
        // Going idle gives our unit to the idle task; hold a spare one so that the run
        // stays alive until we are done looking at it.
        w.reserve(run, 1);
        match self.header.state.after_pending() {
            AfterPending::Idle => {
                if core.header.is_cancelled_seqcst() {
                    if let Some(future) = self.take_if_idle() {
                        drop_quietly(future);
                        core.header.observe_finished(self.header.task, w.index());
                        w.add_debt(run, 1);
                    }
                }
            }
            AfterPending::Reschedule => {
                self.registry.inject(Self::into_job(Arc::clone(self)));
            }
        }
        w.add_debt(run, 1);
    }

    /// A `Job::Poll` that owns this strong count.
    fn into_job(this: Arc<Self>) -> Job {
        let raw = Arc::into_raw(this).cast_mut();
        // SAFETY: `Arc::into_raw` never returns null.
        let task = unsafe { NonNull::new_unchecked(raw) };
        // `header` is the first field of the `repr(C)` task, so the cast is the header.
        Job::Poll(task.cast())
    }

    /// Moves a task we own to `DONE` and drops its future.
    fn finish(&self) {
        // SAFETY: we own the future (state `RUNNING`).
        let future = unsafe { (*self.future.get()).take() };
        self.header.state.finish();
        drop_quietly(future);
    }

    /// For the canceller: claims an idle task (`IDLE → DONE`) and returns its future to be
    /// dropped. The caller then owns the task's unit and must give it back.
    pub(crate) fn take_if_idle(&self) -> Option<TaskFuture<E>> {
        if !self.header.state.claim_idle() {
            return None;
        }
        // SAFETY: winning `IDLE → DONE` makes us the future's owner.
        unsafe { (*self.future.get()).take() }
    }
}

impl<E: Send + 'static> ArcWake for AsyncTask<E> {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if arc_self.header.state.wake() {
            // We moved it to `SCHEDULED`: a job must poll it.
            arc_self
                .registry
                .inject(Self::into_job(Arc::clone(arc_self)));
        }
    }
}

/// Runs with futures — completed from other threads, ready at once, waking themselves,
/// failing, and dropped idle by a cancellation — sized to run under Miri, which checks
/// the task's `UnsafeCell`, the `Arc` counts behind `Job::Poll` and the run pointer.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::task::Poll;

    use futures::channel::oneshot;
    use futures::FutureExt;

    use crate::{
        CancellationToken, DagBody, RunControl, RunError, TaskContext, TaskOutcome, ThreadPool,
        Topology,
    };

    /// What task `t`'s future does: `t % 4` = 0: completed by a oneshot sent from another
    /// thread; 1: ready at once; 2: wakes itself once, then completes; 3: as 0, but fails
    /// when `fail` is set.
    struct Futures {
        finished: Arc<[AtomicU32]>,
        fail: bool,
    }

    impl DagBody for Futures {
        type Error = String;
        fn run(&self, task: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
            let finished = Arc::clone(&self.finished);
            let done = move || {
                finished[task as usize].fetch_add(1, Ordering::SeqCst);
            };
            let future = match task % 4 {
                0 | 3 => {
                    let (tx, rx) = oneshot::channel::<bool>();
                    let fail = self.fail && task % 4 == 3;
                    std::thread::spawn(move || {
                        let _ = tx.send(fail);
                    });
                    async move {
                        if rx.await.map_err(|e| e.to_string())? {
                            return Err(format!("task {task} failed"));
                        }
                        done();
                        Ok(())
                    }
                    .boxed()
                }
                1 => async move {
                    done();
                    Ok(())
                }
                .boxed(),
                _ => {
                    let mut yielded = false;
                    futures::future::poll_fn(move |cx| {
                        if !yielded {
                            yielded = true;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        Poll::Ready(())
                    })
                    .map(move |()| {
                        done();
                        Ok(())
                    })
                    .boxed()
                }
            };
            Ok(TaskOutcome::Pending(future))
        }
    }

    /// A chain 0 -> 1 -> .. -> 7 plus a fan-out of 0 to 8..12.
    fn shape() -> Topology {
        let mut b = Topology::builder(12);
        for t in 0..7 {
            b.add_edge(t, t + 1);
        }
        for t in 8..12 {
            b.add_edge(0, t);
        }
        b.build().unwrap()
    }

    #[test]
    fn futures_complete_from_anywhere_and_release_their_successors() {
        let pool = ThreadPool::new(2).unwrap();
        let topology = shape();
        for _ in 0..2 {
            let body = Futures {
                finished: (0..12).map(|_| AtomicU32::new(0)).collect(),
                fail: false,
            };
            pool.execute(&topology, &body, &RunControl::default())
                .unwrap();
            assert!(body.finished.iter().all(|f| f.load(Ordering::SeqCst) == 1));
        }
        let body = Futures {
            finished: (0..12).map(|_| AtomicU32::new(0)).collect(),
            fail: true,
        };
        let err = pool
            .execute(&topology, &body, &RunControl::default())
            .unwrap_err();
        // Tasks 3, 7 and 11 fail; whichever failed first, no successor of a failed task
        // finished (3 and 7 are in the chain).
        let RunError::Task { task, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(task % 4, 3, "{task}");
        assert_eq!(body.finished[4].load(Ordering::SeqCst), 0);
    }

    /// Futures that never complete on their own: a cancellation drops them, each once.
    struct Forever {
        started: AtomicU32,
        dropped: Arc<AtomicU32>,
        token: CancellationToken,
    }

    struct CountDrop(Arc<AtomicU32>);

    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl DagBody for Forever {
        type Error = String;
        fn run(&self, task: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
            let guard = CountDrop(Arc::clone(&self.dropped));
            self.started.fetch_add(1, Ordering::SeqCst);
            if task == 3 {
                // The last of the four roots to go pending cancels from another thread.
                let token = self.token.clone();
                std::thread::spawn(move || token.cancel());
            }
            Ok(TaskOutcome::Pending(
                async move {
                    let _guard = guard;
                    futures::future::pending::<()>().await;
                    Ok(())
                }
                .boxed(),
            ))
        }
    }

    #[test]
    fn a_cancellation_drops_idle_futures_exactly_once() {
        let pool = ThreadPool::new(2).unwrap();
        let token = CancellationToken::new();
        let body = Forever {
            started: AtomicU32::new(0),
            dropped: Arc::new(AtomicU32::new(0)),
            token: token.clone(),
        };
        let topology = Topology::builder(4).build().unwrap();
        let err = pool
            .execute(&topology, &body, &RunControl::with_token(token))
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled), "{err:?}");
        // `execute` returned, so every task's unit is back: each future that a body made
        // (those that ran before the cancel; task 3's at least) was dropped, exactly once.
        let started = body.started.load(Ordering::SeqCst);
        assert!(started >= 1);
        assert_eq!(body.dropped.load(Ordering::SeqCst), started);
    }
}
