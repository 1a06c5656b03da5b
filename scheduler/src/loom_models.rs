//! Loom models of the scheduler's hand-written protocols, run by `scripts/check` as its
//! own step:
//!
//! ```text
//! RUSTFLAGS="--cfg magpie_loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p magpie-scheduler --release --lib loom_models
//! ```
//!
//! Each model runs the real code (through the [`sync`](super::sync) facade) under every
//! interleaving loom can produce, up to its preemption bound:
//!
//! - the parking protocol of [`sleep`](super::sleep): a job pushed while a worker goes to
//!   sleep is never missed (a lost wake-up shows up as a deadlock, which loom reports),
//!   also when the job is for one steal group's members only (`notify_one_of`), and with
//!   a cap on searching workers (a worker that may not search sleeps at once; two
//!   workers capped to one searcher take both of two jobs, each holding its job until
//!   the other has one), when a wake by index (a nested run's latch) races a push, when
//!   a push must pass over a sleeper already woken by index, and at shutdown; and the
//!   count of announced sleepers returns to zero every time;
//! - the pending counters of [`run`](super::run): of two predecessors finishing at once,
//!   exactly one makes the task ready, and the task sees both predecessors' writes;
//! - run completion: the outstanding counter reaches zero exactly once, and the thread
//!   woken by the [`latch`](super::latch) sees every task's writes;
//! - the asynchronous task's state machine ([`async_state`](super::async_state)): a wake
//!   during a poll causes exactly one more poll; of two concurrent wakes exactly one
//!   queues a poll; a poll returning `Pending` while its run is cancelled, and a wake
//!   racing a canceller, drop the future exactly once, by its one owner;
//! - the keep-alive hand-off of a spawned run whose future was dropped
//!   ([`latch`](super::latch)): the run's state is dropped exactly once, and never before
//!   the run is done.

use loom::cell::UnsafeCell;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::async_state::{AfterPending, AsyncState};
use super::latch::Latch;
use super::run::{decrement_pending, give_back};
use super::sleep::Sleep;
use super::sync::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// A queue of at most a few anonymous jobs, standing in for the deques: a job is visible
/// once its push (a plain `Relaxed` increment, weaker than crossbeam's) is.
struct Jobs(AtomicUsize);

impl Jobs {
    fn push(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn has_work(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

#[test]
fn a_job_pushed_while_a_worker_goes_to_sleep_is_not_missed() {
    loom::model(|| {
        let sleep = Arc::new(Sleep::new(1));
        let jobs = Arc::new(Jobs(AtomicUsize::new(0)));
        let pusher = {
            let (sleep, jobs) = (Arc::clone(&sleep), Arc::clone(&jobs));
            thread::spawn(move || {
                jobs.push();
                sleep.notify_one();
            })
        };
        // The worker: take the job, or sleep until there is one.
        while !jobs.take() {
            sleep.sleep(0, || jobs.has_work(), None);
        }
        pusher.join().unwrap();
        assert_eq!(sleep.sleepers(), 0);
    });
}

#[test]
fn a_group_job_pushed_while_a_member_goes_to_sleep_is_not_missed() {
    loom::model(|| {
        // Worker 0 is the group's only member; worker 1 (never asleep here) is not one.
        let sleep = Arc::new(Sleep::new(2));
        let jobs = Arc::new(Jobs(AtomicUsize::new(0)));
        let pusher = {
            let (sleep, jobs) = (Arc::clone(&sleep), Arc::clone(&jobs));
            thread::spawn(move || {
                jobs.push();
                sleep.notify_one_of(&[0]);
            })
        };
        while !jobs.take() {
            sleep.sleep(0, || jobs.has_work(), None);
        }
        pusher.join().unwrap();
        assert_eq!(sleep.sleepers(), 0);
    });
}

#[test]
fn two_sleepers_and_two_jobs_both_get_run() {
    loom::model(|| {
        let sleep = Arc::new(Sleep::new(2));
        let jobs = Arc::new(Jobs(AtomicUsize::new(0)));
        let done = Arc::new(AtomicUsize::new(0));
        let worker = |index: usize| {
            let (sleep, jobs, done) = (Arc::clone(&sleep), Arc::clone(&jobs), Arc::clone(&done));
            thread::spawn(move || loop {
                if jobs.take() {
                    if done.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
                        sleep.wake_all(); // as at shutdown: nothing is left to do
                        return;
                    }
                    continue;
                }
                if done.load(Ordering::SeqCst) == 2 {
                    return;
                }
                sleep.sleep(
                    index,
                    || jobs.has_work() || done.load(Ordering::SeqCst) == 2,
                    None,
                );
            })
        };
        let workers = [worker(0), worker(1)];
        for _ in 0..2 {
            jobs.push();
            sleep.notify_one();
        }
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 2);
        assert_eq!(sleep.sleepers(), 0);
    });
}

/// One step of worker `index`'s loop: look for a job (`find_work`), then idle as
/// `worker::idle` does: search (one steal attempt here) if fewer than `cap` workers
/// search, else — or when the search found nothing — sleep. True if it took a job.
fn idle_step(sleep: &Sleep, jobs: &Jobs, index: usize, cap: usize) -> bool {
    if jobs.take() {
        return true;
    }
    if sleep.start_search(cap) {
        let took = jobs.take();
        sleep.end_search();
        if took {
            return true;
        }
    }
    sleep.sleep(index, || jobs.has_work(), None);
    false
}

#[test]
fn a_job_pushed_while_the_only_searcher_gives_up_is_not_missed() {
    loom::model(|| {
        let sleep = Arc::new(Sleep::new(1));
        let jobs = Arc::new(Jobs(AtomicUsize::new(0)));
        let pusher = {
            let (sleep, jobs) = (Arc::clone(&sleep), Arc::clone(&jobs));
            thread::spawn(move || {
                jobs.push();
                sleep.notify_one();
            })
        };
        while !idle_step(&sleep, &jobs, 0, 1) {}
        pusher.join().unwrap();
        assert_eq!(sleep.sleepers(), 0);
    });
}

#[test]
fn two_workers_capped_to_one_searcher_take_both_jobs() {
    loom::model(|| {
        // Two workers, at most one searching; each takes one job and then holds on to it
        // until both jobs were taken (a long task). If the second job waited for a worker
        // that nobody woke, the model deadlocks, which loom reports.
        let sleep = Arc::new(Sleep::new(2));
        let jobs = Arc::new(Jobs(AtomicUsize::new(0)));
        // How many jobs were taken, and where a worker holding one blocks (not spins: a
        // spin would only show a lost wake-up as loom's branch limit).
        let taken = Arc::new((Mutex::new(0usize), Condvar::new()));
        let worker = |index: usize| {
            let (sleep, jobs, taken) = (Arc::clone(&sleep), Arc::clone(&jobs), Arc::clone(&taken));
            thread::spawn(move || {
                while !idle_step(&sleep, &jobs, index, 1) {}
                let (count, all_taken) = &*taken;
                let mut count = count.lock().unwrap();
                *count += 1;
                all_taken.notify_all();
                while *count < 2 {
                    count = all_taken.wait(count).unwrap();
                }
            })
        };
        let workers = [worker(0), worker(1)];
        for _ in 0..2 {
            jobs.push();
            sleep.notify_one();
        }
        for w in workers {
            w.join().unwrap();
        }
        assert!(!jobs.has_work());
        assert_eq!(sleep.sleepers(), 0);
    });
}

#[test]
fn a_wake_by_index_racing_a_push_loses_neither() {
    loom::model(|| {
        // Worker 0 waits in a nested run: it takes jobs, and returns once its run's latch
        // is set (`unpark` by index) and it took the job (a push claiming a sleeper). The
        // two wakers race each other and the worker's sleeps; if either wake-up were
        // lost, or the claim and the unpark both ended the same sleep's count, the model
        // deadlocks or the count is off.
        let sleep = Arc::new(Sleep::new(1));
        let jobs = Arc::new(Jobs(AtomicUsize::new(0)));
        let latch = Arc::new(AtomicBool::new(false));
        let pusher = {
            let (sleep, jobs) = (Arc::clone(&sleep), Arc::clone(&jobs));
            thread::spawn(move || {
                jobs.push();
                sleep.notify_one();
            })
        };
        let setter = {
            let (sleep, latch) = (Arc::clone(&sleep), Arc::clone(&latch));
            thread::spawn(move || {
                latch.store(true, Ordering::Release);
                sleep.unpark(0);
            })
        };
        let mut took = false;
        loop {
            took |= jobs.take();
            if took && latch.load(Ordering::Acquire) {
                break;
            }
            sleep.sleep(
                0,
                || jobs.has_work() || (took && latch.load(Ordering::Acquire)),
                None,
            );
        }
        pusher.join().unwrap();
        setter.join().unwrap();
        assert_eq!(sleep.sleepers(), 0);
    });
}

#[test]
fn a_push_claims_the_sleeper_that_can_take_its_job() {
    loom::model(|| {
        // Two sleepers; worker 1 is also woken by index (its latch), and only worker 0
        // waits for the job. The push must not spend its wake-up on worker 1, nor the
        // unpark and the claim count worker 1's sleep twice.
        let sleep = Arc::new(Sleep::new(2));
        let jobs = Arc::new(Jobs(AtomicUsize::new(0)));
        let latch = Arc::new(AtomicBool::new(false));
        let nested = {
            let (sleep, latch) = (Arc::clone(&sleep), Arc::clone(&latch));
            thread::spawn(move || {
                while !latch.load(Ordering::Acquire) {
                    sleep.sleep(1, || latch.load(Ordering::Acquire), None);
                }
            })
        };
        let worker = {
            let (sleep, jobs) = (Arc::clone(&sleep), Arc::clone(&jobs));
            thread::spawn(move || {
                while !jobs.take() {
                    sleep.sleep(0, || jobs.has_work(), None);
                }
            })
        };
        latch.store(true, Ordering::Release);
        sleep.unpark(1);
        jobs.push();
        sleep.notify_one();
        nested.join().unwrap();
        worker.join().unwrap();
        assert_eq!(sleep.sleepers(), 0);
    });
}

#[test]
fn shutdown_racing_a_worker_going_to_sleep_wakes_it() {
    loom::model(|| {
        let sleep = Arc::new(Sleep::new(1));
        let terminate = Arc::new(AtomicBool::new(false));
        let worker = {
            let (sleep, terminate) = (Arc::clone(&sleep), Arc::clone(&terminate));
            thread::spawn(move || {
                while !terminate.load(Ordering::SeqCst) {
                    sleep.sleep(0, || terminate.load(Ordering::SeqCst), None);
                }
            })
        };
        // `Registry::terminate`.
        terminate.store(true, Ordering::SeqCst);
        sleep.wake_all();
        worker.join().unwrap();
        assert_eq!(sleep.sleepers(), 0);
    });
}

#[test]
fn exactly_one_predecessor_makes_a_task_ready_and_it_sees_both_writes() {
    loom::model(|| {
        let pending = Arc::new(AtomicU32::new(2));
        let data = Arc::new([UnsafeCell::new(0u32), UnsafeCell::new(0u32)]);
        let ready = Arc::new(AtomicUsize::new(0));
        let finish = |i: usize| {
            let (pending, data, ready) =
                (Arc::clone(&pending), Arc::clone(&data), Arc::clone(&ready));
            thread::spawn(move || {
                // SAFETY: predecessor `i` is the only writer of `data[i]`, and nobody reads
                // it before the task becomes ready (loom checks exactly that).
                data[i].with_mut(|p| unsafe { *p = 1 + i as u32 });
                if decrement_pending(&pending) {
                    ready.fetch_add(1, Ordering::Relaxed);
                    // The task runs here: it reads what both predecessors wrote.
                    for (k, cell) in data.iter().enumerate() {
                        // SAFETY: both writers finished before the task became ready.
                        let v = cell.with(|p| unsafe { *p });
                        assert_eq!(v, 1 + k as u32);
                    }
                }
            })
        };
        let (a, b) = (finish(0), finish(1));
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(ready.load(Ordering::Relaxed), 1);
    });
}

#[test]
fn the_run_completes_once_and_its_waiter_sees_every_task() {
    loom::model(|| {
        let outstanding = Arc::new(AtomicUsize::new(2));
        let latch = Arc::new(Latch::for_thread());
        let data = Arc::new([UnsafeCell::new(0u32), UnsafeCell::new(0u32)]);
        let completed = Arc::new(AtomicBool::new(false));
        let task = |i: usize| {
            let (outstanding, latch, data, completed) = (
                Arc::clone(&outstanding),
                Arc::clone(&latch),
                Arc::clone(&data),
                Arc::clone(&completed),
            );
            thread::spawn(move || {
                // SAFETY: task `i` is the only writer of `data[i]`; the waiter reads it
                // only after the latch (loom checks exactly that).
                data[i].with_mut(|p| unsafe { *p = 10 + i as u32 });
                if give_back(&outstanding, 1) {
                    assert!(!completed.swap(true, Ordering::Relaxed), "completed twice");
                    latch.set_done();
                }
            })
        };
        let workers = [task(0), task(1)];
        // The caller of `execute`: waits for the latch, then frees the run's state.
        while !latch.is_done() {
            thread::yield_now();
        }
        for (k, cell) in data.iter().enumerate() {
            // SAFETY: the latch is done, so every task finished writing.
            assert_eq!(cell.with(|p| unsafe { *p }), 10 + k as u32);
        }
        for w in workers {
            w.join().unwrap();
        }
    });
}

#[test]
fn a_wake_during_a_poll_causes_exactly_one_more_poll() {
    loom::model(|| {
        let state = Arc::new(AsyncState::running());
        let queued = Arc::new(AtomicUsize::new(0));
        let waker = {
            let (state, queued) = (Arc::clone(&state), Arc::clone(&queued));
            thread::spawn(move || {
                if state.wake() {
                    queued.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        // The poller: the poll returned `Pending`.
        if state.after_pending() == AfterPending::Reschedule {
            queued.fetch_add(1, Ordering::SeqCst);
        }
        waker.join().unwrap();
        assert_eq!(queued.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn of_two_wakes_of_an_idle_task_exactly_one_queues_a_poll() {
    loom::model(|| {
        let state = Arc::new(AsyncState::running());
        assert_eq!(state.after_pending(), AfterPending::Idle);
        let queued = Arc::new(AtomicUsize::new(0));
        let wake = || {
            let (state, queued) = (Arc::clone(&state), Arc::clone(&queued));
            thread::spawn(move || {
                if state.wake() {
                    queued.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let (a, b) = (wake(), wake());
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(queued.load(Ordering::SeqCst), 1);
    });
}

/// A future standing in for the task's: `Some` until its one owner drops it.
type FutureCell = UnsafeCell<Option<u32>>;

fn drop_future(future: &FutureCell, dropped: &AtomicUsize) {
    // SAFETY: only the state's current owner calls this (loom checks exactly that).
    let f = future.with_mut(|p| unsafe { (*p).take() });
    assert!(f.is_some(), "the future was dropped twice");
    dropped.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn a_pending_poll_racing_a_cancel_drops_the_future_exactly_once() {
    loom::model(|| {
        let state = Arc::new(AsyncState::running());
        let cancelled = Arc::new(AtomicBool::new(false));
        let future: Arc<FutureCell> = Arc::new(UnsafeCell::new(Some(7)));
        let dropped = Arc::new(AtomicUsize::new(0));
        let canceller = {
            let (state, cancelled, future, dropped) = (
                Arc::clone(&state),
                Arc::clone(&cancelled),
                Arc::clone(&future),
                Arc::clone(&dropped),
            );
            thread::spawn(move || {
                cancelled.store(true, Ordering::SeqCst);
                if state.claim_idle() {
                    drop_future(&future, &dropped);
                }
            })
        };
        // The poller owns the future while `RUNNING`: the poll touches it.
        // SAFETY: state `RUNNING` makes the poller the future's only user.
        assert_eq!(future.with(|p| unsafe { *p }), Some(7));
        match state.after_pending() {
            AfterPending::Idle => {
                if cancelled.load(Ordering::SeqCst) && state.claim_idle() {
                    drop_future(&future, &dropped);
                }
            }
            AfterPending::Reschedule => unreachable!("nobody woke the task"),
        }
        canceller.join().unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the future leaked");
    });
}

#[test]
fn a_wake_racing_a_cancel_drops_the_future_exactly_once() {
    loom::model(|| {
        let state = Arc::new(AsyncState::running());
        assert_eq!(state.after_pending(), AfterPending::Idle);
        let future: Arc<FutureCell> = Arc::new(UnsafeCell::new(Some(7)));
        let dropped = Arc::new(AtomicUsize::new(0));
        let waker = {
            let state = Arc::clone(&state);
            thread::spawn(move || state.wake())
        };
        // The canceller (the run's flag is set, so a poll would finish the task).
        if state.claim_idle() {
            drop_future(&future, &dropped);
        }
        if waker.join().unwrap() {
            // The waker won: the poll job runs, sees the run cancelled, and finishes.
            state.begin_poll();
            drop_future(&future, &dropped);
            state.finish();
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        // A wake after the end does nothing.
        assert!(!state.wake());
    });
}

/// Stands in for a spawned run's state: counts its drops and checks the run was done.
struct Parked {
    latch: Arc<Latch>,
    drops: Arc<AtomicUsize>,
}

impl Drop for Parked {
    fn drop(&mut self) {
        assert!(
            self.latch.is_done(),
            "a parked run was dropped before it was done"
        );
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_parked_run_is_dropped_once_after_it_is_done() {
    loom::model(|| {
        let latch = Arc::new(Latch::for_future());
        let drops = Arc::new(AtomicUsize::new(0));
        let finisher = {
            let latch = Arc::clone(&latch);
            thread::spawn(move || latch.set_done())
        };
        // The dropped future parks the state in the latch, racing the last worker.
        latch.park_until_done(Box::new(Parked {
            latch: Arc::clone(&latch),
            drops: Arc::clone(&drops),
        }));
        finisher.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    });
}
