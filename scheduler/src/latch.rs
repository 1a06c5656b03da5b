//! The completion latch of one run: what the thread blocked in `execute` sleeps on.
//!
//! # Protocol
//!
//! A [`Latch`] holds two one-way flags, each only ever moving from `false` to `true`:
//!
//! - `done`: set exactly once, by whoever brings the run's outstanding-task counter to
//!   zero. After it is set, nobody touches the run's state any more, so the waiter may
//!   return and free it.
//! - `cancel_requested`: set by [`CancellationToken::cancel`](super::CancellationToken::cancel)
//!   (from any thread). The waiter reacts by cancelling the run; the canceller itself never
//!   touches the run, only this latch, which is reference counted for that reason.
//!
//! The waiter is either an outside thread, which sleeps on the latch's condition variable
//! (after a short spin, when the pool's [`SpinPolicy`] says spinning has been paying off),
//! a worker of the pool running a nested DAG, which sleeps in the pool's parking
//! protocol ([`sleep`](super::sleep)) and is unparked by index, or a
//! [`RunFuture`](super::RunFuture) (a run started with
//! [`ThreadPool::spawn_run`](super::ThreadPool::spawn_run)), whose task is woken through
//! an [`AtomicWaker`].
//!
//! # Keeping a spawned run alive
//!
//! A spawned run's state is owned by its future. A future dropped before the run is done
//! cannot free the state (workers still use it) and must not block, so it *parks* its
//! reference in the latch ([`Latch::park_until_done`]): under the latch's `keepalive`
//! mutex it either sees `done` already set, and drops the reference itself, or stores it;
//! [`Latch::set_done`] stores `done` first and then takes whatever is stored, under the
//! same mutex, and drops it. So exactly one of them drops the reference, and only once the
//! run is done (`loom_models::a_parked_run_is_dropped_once_after_it_is_done`).
//!
//! # Memory ordering
//!
//! A setter stores its flag (`Release`) and then locks the mutex before notifying; a
//! waiting thread loads the flags (`Acquire`) while holding the mutex and only then
//! waits, which releases the mutex atomically. So either the waiter sees the flag, or it
//! is already waiting when the setter notifies: no lost wake-up. A worker waiter relies on
//! its parker's sticky `notified` flag instead (see [`sleep`](super::sleep)).
//!
//! The `Release` store of `done` happens after the setter's `AcqRel` decrement that
//! brought the counter to zero, which in turn acquired every earlier decrement, so the
//! waiter that `Acquire`-loads `done` sees all effects of all task bodies of the run.

use std::any::Any;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

use super::sync::plain::{Condvar, Mutex};

use super::registry::Registry;
use super::sync::{AtomicBool, Ordering};

/// How long [`Latch::wait`] spins before it blocks, when it spins at all (behaviour at the
/// time of writing).
pub(crate) const WAIT_SPIN: Duration = Duration::from_micros(20);
/// Upper bound of [`SpinPolicy`]'s credit.
const MAX_CREDIT: u32 = 8;
/// With no credit left, one wait in this many spins anyway, to notice when runs got short.
const RETRY_EVERY: u32 = 16;

/// Decides whether outside callers of one pool spin before they block.
///
/// Short runs end within microseconds, and a futex sleep plus wake-up costs about as much
/// again, so spinning briefly pays. But a spinning caller takes CPU from the workers when
/// the machine is busy, and long runs never end within the spin. So the pool keeps a
/// small credit: a spin that saw the run end earns one, a spin that did not costs two;
/// callers spin while there is credit, and otherwise only every [`RETRY_EVERY`]th time.
#[derive(Debug)]
pub(crate) struct SpinPolicy {
    credit: AtomicU32,
    calls: AtomicU32,
}

impl SpinPolicy {
    pub(crate) fn new() -> SpinPolicy {
        SpinPolicy {
            credit: AtomicU32::new(MAX_CREDIT / 2),
            calls: AtomicU32::new(0),
        }
    }

    fn should_spin(&self) -> bool {
        self.credit.load(Ordering::Relaxed) > 0
            || self.calls.fetch_add(1, Ordering::Relaxed) % RETRY_EVERY == 0
    }

    /// Earns one credit for a spin that `paid_off`, or costs two for one that did not,
    /// within `0..=MAX_CREDIT`.
    ///
    /// A compare-exchange loop, so that concurrent records are never lost (`fetch_update`
    /// does the same, but is deprecated on nightly in favour of `try_update`, which our
    /// stable toolchain lacks). `Relaxed` throughout: the credit is a heuristic that
    /// publishes no other memory, and only its own modification order matters.
    fn record(&self, paid_off: bool) {
        let mut credit = self.credit.load(Ordering::Relaxed);
        loop {
            let next = if paid_off {
                (credit + 1).min(MAX_CREDIT)
            } else {
                credit.saturating_sub(2)
            };
            if next == credit {
                return;
            }
            match self.credit.compare_exchange_weak(
                credit,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => credit = actual,
            }
        }
    }
}

/// Completion latch plus cancellation request of one run.
#[derive(Debug)]
pub(crate) struct Latch {
    done: AtomicBool,
    cancel_requested: AtomicBool,
    mutex: Mutex<()>,
    condvar: Condvar,
    /// Who waits.
    waiter: Waiter,
}

/// Who waits on a [`Latch`].
#[derive(Debug)]
enum Waiter {
    /// An outside thread, on the condition variable.
    Thread,
    /// Worker `index` of the pool, in its parking protocol.
    Worker(Arc<Registry>, usize),
    /// A [`RunFuture`](super::RunFuture): woken through its waker; the run's state is
    /// parked in `keepalive` when the future is dropped before the run is done.
    Future {
        waker: AtomicWaker,
        keepalive: super::sync::Mutex<Option<Box<dyn Any + Send>>>,
    },
}

impl Latch {
    /// A latch whose waiter is an outside thread.
    pub(crate) fn for_thread() -> Latch {
        Latch::with_waiter(Waiter::Thread)
    }

    /// A latch whose waiter is worker `index` of `registry`.
    pub(crate) fn for_worker(registry: Arc<Registry>, index: usize) -> Latch {
        Latch::with_waiter(Waiter::Worker(registry, index))
    }

    /// A latch whose waiter is a future.
    pub(crate) fn for_future() -> Latch {
        Latch::with_waiter(Waiter::Future {
            waker: AtomicWaker::new(),
            keepalive: super::sync::Mutex::new(None),
        })
    }

    fn with_waiter(waiter: Waiter) -> Latch {
        Latch {
            done: AtomicBool::new(false),
            cancel_requested: AtomicBool::new(false),
            mutex: Mutex::new(()),
            condvar: Condvar::new(),
            waiter,
        }
    }

    /// Whether the run is over.
    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Whether a cancellation token asked the run to stop.
    #[inline]
    pub(crate) fn is_cancel_requested(&self) -> bool {
        self.cancel_requested.load(Ordering::Acquire)
    }

    /// Marks the run as over and wakes the waiter. Called once per run.
    pub(crate) fn set_done(&self) {
        self.done.store(true, Ordering::Release);
        self.wake();
        if let Waiter::Future { keepalive, .. } = &self.waiter {
            // After the `done` store: see "Keeping a spawned run alive".
            let parked = keepalive.lock().take();
            drop(parked);
        }
    }

    /// Registers the task of a future waiting on this latch, to be woken by
    /// [`set_done`](Self::set_done), a cancellation request or [`wake`](Self::wake).
    /// Check the flags after registering: a wake-up before it is not remembered.
    pub(crate) fn register_waker(&self, waker: &Waker) {
        if let Waiter::Future { waker: w, .. } = &self.waiter {
            w.register(waker);
        }
    }

    /// Keeps `run` alive until the run is done, without waiting: drops it now when the run
    /// is already done, else hands it to [`set_done`](Self::set_done). For a latch made by
    /// [`for_future`](Self::for_future); any other drops `run` at once.
    pub(crate) fn park_until_done(&self, run: Box<dyn Any + Send>) {
        let Waiter::Future { keepalive, .. } = &self.waiter else {
            return;
        };
        let mut slot = keepalive.lock();
        if self.is_done() {
            drop(slot);
            drop(run);
        } else {
            *slot = Some(run);
        }
    }

    /// Asks the waiter to cancel the run.
    pub(crate) fn request_cancel(&self) {
        self.cancel_requested.store(true, Ordering::Release);
        self.wake();
    }

    /// Wakes the waiter, whichever kind it is (it then checks the flags, and a future its
    /// deadline).
    pub(crate) fn wake(&self) {
        match &self.waiter {
            Waiter::Thread => {
                let _guard = self.mutex.lock();
                self.condvar.notify_all();
            }
            Waiter::Worker(registry, index) => {
                {
                    let _guard = self.mutex.lock();
                    self.condvar.notify_all();
                }
                registry.sleep().unpark(*index);
            }
            Waiter::Future { waker, .. } => waker.wake(),
        }
    }

    /// Blocks an outside thread until the run is done, a cancellation is requested, or
    /// `deadline` passes. Returns at once if one of those already happened.
    ///
    /// Spins for up to [`WAIT_SPIN`] first when `policy` says spinning has been paying off.
    pub(crate) fn wait(&self, deadline: Option<Instant>, policy: &SpinPolicy) {
        if policy.should_spin() {
            let ended = self.spin();
            policy.record(ended);
            if ended {
                return;
            }
        }
        let mut guard = self.mutex.lock();
        while !self.is_done() && !self.is_cancel_requested() {
            match deadline {
                Some(d) => {
                    if Instant::now() >= d || self.condvar.wait_until(&mut guard, d).timed_out() {
                        return;
                    }
                }
                None => self.condvar.wait(&mut guard),
            }
        }
    }

    /// Spins for up to [`WAIT_SPIN`]; true if the run ended (or a cancellation was
    /// requested) meanwhile.
    fn spin(&self) -> bool {
        let start = Instant::now();
        loop {
            for _ in 0..16 {
                if self.is_done() || self.is_cancel_requested() {
                    return true;
                }
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
            }
            if start.elapsed() >= WAIT_SPIN {
                return false;
            }
        }
    }

    /// Blocks until the run is done, ignoring cancellation requests and deadlines.
    pub(crate) fn wait_done(&self) {
        let mut guard = self.mutex.lock();
        while !self.is_done() {
            self.condvar.wait(&mut guard);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{Latch, Ordering, SpinPolicy};

    #[test]
    fn a_waiter_wakes_on_done_on_cancel_and_at_its_deadline() {
        let policy = SpinPolicy::new();
        for cancel in [false, true] {
            let latch = Arc::new(Latch::for_thread());
            let setter = Arc::clone(&latch);
            let thread = std::thread::spawn(move || {
                if cancel {
                    setter.request_cancel();
                } else {
                    setter.set_done();
                }
            });
            latch.wait(None, &policy);
            assert_eq!(
                (latch.is_done(), latch.is_cancel_requested()),
                (!cancel, cancel)
            );
            thread.join().unwrap();
        }
        // Nobody sets it: the deadline ends the wait, with neither flag set.
        let latch = Latch::for_thread();
        latch.wait(Some(Instant::now() + Duration::from_millis(5)), &policy);
        assert!(!latch.is_done() && !latch.is_cancel_requested());
        // `wait_done` ignores a cancellation request and returns once done.
        let latch = Arc::new(Latch::for_thread());
        latch.request_cancel();
        let setter = Arc::clone(&latch);
        let thread = std::thread::spawn(move || setter.set_done());
        latch.wait_done();
        assert!(latch.is_done());
        thread.join().unwrap();
    }

    #[test]
    fn spin_credit_stays_in_bounds_and_loses_no_concurrent_record() {
        let policy = SpinPolicy::new();
        for _ in 0..3 {
            policy.record(false);
        }
        assert_eq!(policy.credit.load(Ordering::Relaxed), 0, "saturates at 0");
        // Four threads earn two credits each, racing: all eight count.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    policy.record(true);
                    policy.record(true);
                });
            }
        });
        assert_eq!(policy.credit.load(Ordering::Relaxed), super::MAX_CREDIT);
        policy.record(true);
        assert_eq!(
            policy.credit.load(Ordering::Relaxed),
            super::MAX_CREDIT,
            "capped at MAX_CREDIT"
        );
        assert!(policy.should_spin());
    }
}
