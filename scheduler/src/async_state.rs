//! The state machine of an asynchronous task ([`async_task`](super::async_task)), alone,
//! so that its transitions are the code the loom models check.
//!
//! | state       | meaning                                   | who moves it out           |
//! |-------------|-------------------------------------------|----------------------------|
//! | `IDLE`      | pending, waiting for its waker            | waker (→ `SCHEDULED`), canceller (→ `DONE`) |
//! | `SCHEDULED` | a poll job for it sits in a queue         | the worker taking the job (→ `RUNNING`) |
//! | `RUNNING`   | a worker is polling it                    | that worker (→ `IDLE`, `SCHEDULED`, `DONE`) |
//! | `NOTIFIED`  | running, and woken during the poll        | that worker (→ `SCHEDULED`) |
//! | `DONE`      | resolved or dropped; the future is gone   | nobody                     |
//!
//! Whoever moves the state to `RUNNING`, or wins `IDLE → DONE`, owns the future until it
//! moves the state on. Every transition is a `SeqCst` read-modify-write (the slow path).
//!
//! # The race with cancellation
//!
//! A poll returning `Pending` while the run is cancelled: the poller moves
//! `RUNNING → IDLE`, runs a `SeqCst` fence, and loads the run's cancelled flag; the
//! canceller stores the flag, runs a `SeqCst` fence ([`AsyncState::claim_idle`] starts
//! with it) and tries `IDLE → DONE`. This is Dekker's pattern: the two fences are ordered
//! in the single total order of `SeqCst` operations, so either the poller sees the flag or
//! the canceller sees `IDLE`, and then both race on `IDLE → DONE`, which only one wins.
//! (`SeqCst` read-modify-writes and loads alone would do in C++'s model too, but loom
//! checks `SeqCst` accesses only as acquire/release; it does model `SeqCst` fences.)

use super::sync::{fence, AtomicU8, Ordering};

const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

/// What the polling worker must do after a poll returned `Pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterPending {
    /// The task is `IDLE`: its waker (or a canceller) takes it from here.
    Idle,
    /// It was woken during the poll and is now `SCHEDULED`: the worker must queue one
    /// poll job for it.
    Reschedule,
}

/// The atomic state of one asynchronous task.
#[derive(Debug)]
pub(crate) struct AsyncState(AtomicU8);

impl AsyncState {
    /// A task being polled for the first time (its spawner owns it).
    pub(crate) fn running() -> AsyncState {
        AsyncState(AtomicU8::new(RUNNING))
    }

    /// The worker that took a poll job: `SCHEDULED → RUNNING`; it now owns the future.
    pub(crate) fn begin_poll(&self) {
        let previous = self.0.swap(RUNNING, Ordering::SeqCst);
        debug_assert_eq!(previous, SCHEDULED, "a poll job for a task not scheduled");
    }

    /// The owner after a `Pending` poll: `RUNNING → IDLE`, or `NOTIFIED → SCHEDULED`
    /// when a wake arrived during the poll. After [`AfterPending::Idle`] the caller no
    /// longer owns the future, and must then check whether the run was cancelled (the
    /// fence here orders that check; see the module docs).
    pub(crate) fn after_pending(&self) -> AfterPending {
        match self
            .0
            .compare_exchange(RUNNING, IDLE, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => {
                fence(Ordering::SeqCst);
                AfterPending::Idle
            }
            Err(state) => {
                debug_assert_eq!(state, NOTIFIED, "only a waker moves a running task");
                self.0.store(SCHEDULED, Ordering::SeqCst);
                AfterPending::Reschedule
            }
        }
    }

    /// The owner, once the future resolved or was dropped: `→ DONE`. Later wakes do
    /// nothing.
    pub(crate) fn finish(&self) {
        self.0.store(DONE, Ordering::SeqCst);
    }

    /// A waker. Returns whether the caller moved the task `IDLE → SCHEDULED` and so must
    /// queue exactly one poll job; a wake during a poll marks it `NOTIFIED` (the poller
    /// reschedules), and a wake of a scheduled, notified or finished task does nothing.
    pub(crate) fn wake(&self) -> bool {
        let mut current = self.0.load(Ordering::SeqCst);
        loop {
            let target = match current {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return false,
            };
            match self
                .0
                .compare_exchange(current, target, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return current == IDLE,
                Err(actual) => current = actual,
            }
        }
    }

    /// A canceller: claims an idle task (`IDLE → DONE`). On success the caller owns the
    /// future (to drop it) and the task's unit of its run. The caller has set the run's
    /// cancelled flag before; the fence here orders that store (see the module docs).
    pub(crate) fn claim_idle(&self) -> bool {
        fence(Ordering::SeqCst);
        self.0
            .compare_exchange(IDLE, DONE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The raw state, for `Debug`.
    pub(crate) fn raw(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}
