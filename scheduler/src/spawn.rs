//! Runs that nobody blocks on: [`ThreadPool::spawn_run`] starts one execution of a DAG
//! over an owned topology and body and returns a [`RunFuture`], which resolves to the
//! run's result.
//!
//! # Guarantees
//!
//! - The run is the same as [`ThreadPool::execute`]'s: every task exactly once on success,
//!   each after its predecessors, first failure wins. Its roots go to the pool's injector:
//!   the caller runs none of them, and polling the future never runs a task.
//! - The future resolves only once no worker touches the run any more (bodies that are
//!   running when the run fails are waited for, as in `execute`).
//! - Cancellation: [`RunControl::cancel`] and [`RunControl::deadline`] end the run with
//!   [`RunError::Cancelled`] / [`RunError::DeadlineExceeded`]. The deadline holds without
//!   polling: a process-wide timer thread wakes the future then ([`timer`](super::timer)).
//! - **Dropping the future cancels the run** and returns at once, without waiting for
//!   running bodies: the run's state (topology handle, body, counters) stays alive until
//!   the run is done and is then freed by the worker that finishes it (the keep-alive
//!   protocol is in [`latch`](super::latch)).
//! - The future is `Send` and `'static`, holds no thread while it waits, and may be
//!   polled by any executor.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::body::DagBody;
use super::cancel::{OwnedRegistration, RunControl};
use super::error::RunError;
use super::job::Job;
use super::latch::Latch;
use super::policy::Policy;
use super::pool::ThreadPool;
use super::run::RunState;
use super::timer::{self, TimerEntry};
use super::topology::Topology;

/// The type-erased side of a spawned run that its future uses.
trait SpawnedRun<E>: Send + Sync {
    fn fail(&self, error: RunError<E>);
    fn take_result(&self) -> Result<(), RunError<E>>;
}

/// A run's state together with what it borrows: the body and the control, boxed so that
/// their addresses never change, and the topology's owner.
struct OwnedRun<T, B: DagBody + 'static> {
    /// Borrows `*body`, `*control` and `topology`'s topology: dropped first (`Drop`).
    state: ManuallyDrop<RunState<'static, B>>,
    body: NonNull<B>,
    control: NonNull<RunControl>,
    _topology: Arc<T>,
}

// SAFETY: the state is `Sync` but for the raw pointers its header keeps to the topology,
// the control and the observer, which are `Sync` and owned here; `body` and `control` are
// owned boxes of `Send + Sync` values. Every method takes `&self`.
unsafe impl<T: Send + Sync, B: DagBody + Send + 'static> Send for OwnedRun<T, B> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync, B: DagBody + Send + 'static> Sync for OwnedRun<T, B> {}

impl<T, B: DagBody + 'static> Drop for OwnedRun<T, B> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, before what it borrows.
        unsafe { ManuallyDrop::drop(&mut self.state) };
        // SAFETY: both came from `Box::into_raw` in `spawn_run` and are freed only here,
        // after the state that borrowed them.
        unsafe {
            drop(Box::from_raw(self.body.as_ptr()));
            drop(Box::from_raw(self.control.as_ptr()));
        }
    }
}

impl<T, B> SpawnedRun<B::Error> for OwnedRun<T, B>
where
    T: Send + Sync,
    B: DagBody + Send + 'static,
{
    fn fail(&self, error: RunError<B::Error>) {
        self.state.fail(error);
    }

    fn take_result(&self) -> Result<(), RunError<B::Error>> {
        self.state.take_result()
    }
}

/// The future of a spawned run ([`ThreadPool::spawn_run`]); resolves to the run's result.
/// Dropping it cancels the run.
#[must_use = "a run future does nothing useful unless awaited, and dropping it cancels the run"]
pub struct RunFuture<E: 'static> {
    inner: Inner<E>,
}

enum Inner<E: 'static> {
    /// Decided before the run started (cancelled already, past its deadline, empty).
    Ready(Option<Result<(), RunError<E>>>),
    Running(Running<E>),
}

struct Running<E: 'static> {
    run: Option<Arc<dyn SpawnedRun<E>>>,
    latch: Arc<Latch>,
    deadline: Option<Instant>,
    /// Whether this future already failed the run (cancellation or deadline seen).
    failed: bool,
    _timer: Option<TimerEntry>,
    _registration: Option<OwnedRegistration>,
}

// Nothing in a `RunFuture` is pinned: the run lives behind an `Arc`.
impl<E> Unpin for RunFuture<E> {}

impl<E> fmt::Debug for RunFuture<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.inner {
            Inner::Ready(Some(_)) => "ready",
            Inner::Ready(None) => "finished",
            Inner::Running(r) if r.run.is_none() => "finished",
            Inner::Running(_) => "running",
        };
        f.debug_struct("RunFuture").field("state", &state).finish()
    }
}

impl<E: Send + 'static> Future for RunFuture<E> {
    type Output = Result<(), RunError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let r = match &mut this.inner {
            Inner::Ready(result) => {
                return Poll::Ready(result.take().expect("a RunFuture polled after it resolved"))
            }
            Inner::Running(r) => r,
        };
        let Some(run) = &r.run else {
            panic!("a RunFuture polled after it resolved");
        };
        r.latch.register_waker(cx.waker());
        if !r.latch.is_done() && !r.failed {
            if r.latch.is_cancel_requested() {
                r.failed = true;
                run.fail(RunError::Cancelled);
            } else if r.deadline.is_some_and(|d| Instant::now() >= d) {
                r.failed = true;
                run.fail(RunError::DeadlineExceeded);
            }
        }
        if !r.latch.is_done() {
            return Poll::Pending;
        }
        let run = r.run.take().expect("checked above");
        Poll::Ready(run.take_result())
    }
}

impl<E: 'static> Drop for Running<E> {
    fn drop(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        if !self.latch.is_done() && !self.failed {
            run.fail(RunError::Cancelled);
        }
        // Workers may still be using the run: it lives until the run is done.
        self.latch
            .park_until_done(Box::new(run) as Box<dyn Any + Send>);
    }
}

impl ThreadPool {
    /// Starts one execution of a DAG and returns at once with a future of its result:
    /// [`execute`](Self::execute) for callers that must not block (an async server, a
    /// client on an executor). `topology` is shared (`T` owns it: a plan that holds its
    /// topology, or the topology itself); `body` is moved into the run and dropped when
    /// the run is over.
    ///
    /// Dropping the future cancels the run without waiting for it: the run's state stays
    /// alive until the run is done and is then freed by the worker that finishes it.
    /// Polling it never runs a task: all work runs on the pool's workers.
    ///
    /// # Errors
    ///
    /// The future resolves to the run's first failure, as for `execute`; a deadline in the
    /// control whose timer thread could not start is [`RunError::Invalid`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use magpie_scheduler::{DagBody, RunControl, TaskContext, TaskOutcome, ThreadPool, Topology};
    ///
    /// struct Count(AtomicU32);
    /// impl DagBody for Count {
    ///     type Error = ();
    ///     fn run(&self, _task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<()>, ()> {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///         Ok(TaskOutcome::Done)
    ///     }
    /// }
    ///
    /// let pool = ThreadPool::new(2).unwrap();
    /// let mut b = Topology::builder(3);
    /// b.add_edge(0, 1);
    /// b.add_edge(0, 2);
    /// let topology = Arc::new(b.build().unwrap());
    /// let run = pool.spawn_run(topology, Count(AtomicU32::new(0)), RunControl::default());
    /// futures::executor::block_on(run).unwrap();
    /// ```
    pub fn spawn_run<T, B>(
        &self,
        topology: Arc<T>,
        body: B,
        control: RunControl,
    ) -> RunFuture<B::Error>
    where
        T: AsRef<Topology> + Send + Sync + 'static,
        B: DagBody + Send + 'static,
    {
        let ready = |r| RunFuture {
            inner: Inner::Ready(Some(r)),
        };
        if control.cancel.as_ref().is_some_and(|t| t.is_cancelled()) {
            return ready(Err(RunError::Cancelled));
        }
        if control.deadline.is_some_and(|d| Instant::now() >= d) {
            return ready(Err(RunError::DeadlineExceeded));
        }
        if (*topology).as_ref().is_empty() {
            return ready(Ok(()));
        }
        let latch = Arc::new(Latch::for_future());
        let timer = match control.deadline {
            Some(d) => match timer::add(d, &latch) {
                Ok(entry) => Some(entry),
                Err(e) => return ready(Err(RunError::Invalid(e))),
            },
            None => None,
        };
        let registration = match &control.cancel {
            Some(token) => match token.register_owned(Arc::clone(&latch)) {
                Some(r) => Some(r),
                None => return ready(Err(RunError::Cancelled)),
            },
            None => None,
        };
        let deadline = control.deadline;
        let policy_queued = !matches!(control.policy, Policy::DepthFirst);
        let registry = self.registry();
        let body = NonNull::from(Box::leak(Box::new(body)));
        let control = NonNull::from(Box::leak(Box::new(control)));
        // SAFETY: `body` and `control` are freed only by `OwnedRun::drop`, after the state;
        // the topology lives in the `Arc` the run holds, so it does not move either.
        let state = unsafe {
            RunState::new(
                (*topology).as_ref(),
                body.as_ref(),
                control.as_ref(),
                registry.num_workers(),
                Arc::clone(&latch),
            )
        };
        let owned = Arc::new(OwnedRun {
            state: ManuallyDrop::new(state),
            body,
            control,
            _topology: topology,
        });
        let header = &owned.state.core.header;
        let run = owned.state.header_ptr();
        let num_roots = header.topology().roots().len() as u32;
        let roots = if policy_queued {
            header.push_roots(registry.num_workers());
            Job::Pick {
                run,
                count: num_roots,
            }
        } else {
            Job::Roots {
                run,
                start: 0,
                end: num_roots,
            }
        };
        let owned: Arc<dyn SpawnedRun<B::Error>> = owned;
        // The roots hold the run's units from here on; `owned` keeps the state alive
        // until the run is done (the future, or the latch when the future is dropped).
        registry.inject(roots);
        RunFuture {
            inner: Inner::Running(Running {
                run: Some(owned),
                latch,
                deadline,
                failed: false,
                _timer: timer,
                _registration: registration,
            }),
        }
    }
}

#[cfg(all(test, not(magpie_loom)))]
mod tests {
    //! Small enough for Miri, which checks the raw pointers of `OwnedRun` and the
    //! keep-alive hand-off (`scripts/miri`).

    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{mpsc, Arc, Mutex};

    use super::*;
    use crate::body::{TaskContext, TaskOutcome};

    /// Counts tasks; task 0 first waits for a message when `gate` is set.
    struct Body {
        ran: Arc<AtomicU32>,
        gate: Option<Mutex<mpsc::Receiver<()>>>,
        started: Option<mpsc::SyncSender<()>>,
    }

    impl DagBody for Body {
        type Error = ();

        fn run(&self, task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<()>, ()> {
            if task == 0 {
                if let Some(s) = &self.started {
                    let _ = s.send(());
                }
                if let Some(g) = &self.gate {
                    let _ = g.lock().unwrap().recv();
                }
            }
            self.ran.fetch_add(1, Ordering::SeqCst);
            Ok(TaskOutcome::Done)
        }
    }

    fn topology() -> Arc<Topology> {
        let mut b = Topology::builder(3);
        b.add_edge(0, 1);
        b.add_edge(0, 2);
        Arc::new(b.build().unwrap())
    }

    #[test]
    fn a_spawned_run_completes() {
        let pool = ThreadPool::new(1).unwrap();
        let ran = Arc::new(AtomicU32::new(0));
        let body = Body {
            ran: Arc::clone(&ran),
            gate: None,
            started: None,
        };
        futures::executor::block_on(pool.spawn_run(topology(), body, RunControl::default()))
            .unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_future_dropped_mid_run_leaves_the_state_to_the_last_worker() {
        let pool = ThreadPool::new(1).unwrap();
        let ran = Arc::new(AtomicU32::new(0));
        let (release, gate) = mpsc::channel();
        let (started_tx, started) = mpsc::sync_channel(1);
        let body = Body {
            ran: Arc::clone(&ran),
            gate: Some(Mutex::new(gate)),
            started: Some(started_tx),
        };
        let run = pool.spawn_run(topology(), body, RunControl::default());
        started.recv().unwrap();
        drop(run);
        release.send(()).unwrap();
        // Dropping the pool joins its worker, which finished (and freed) the run first.
        drop(pool);
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "the cancelled run started nothing more"
        );
        assert_eq!(Arc::strong_count(&ran), 1, "the run's body was freed");
    }
}
