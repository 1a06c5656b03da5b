//! How idle workers park and how pushers wake them, with no lock shared by the workers.
//!
//! # Guarantees
//!
//! - **No lost wake-ups.** A worker does not stay asleep while a job it could run sits in
//!   a queue: whenever a queue goes from empty to non-empty, a sleeping worker (if any) is
//!   woken, and a worker looks at every queue again after announcing that it is going to
//!   sleep; one of the two always sees the other.
//! - **Idle means asleep.** A worker without work searches only briefly (see
//!   [`worker`](super::worker) and [`IdleSpin`](super::IdleSpin)), then blocks on its own
//!   condition variable; a pool whose only activity is a pending future uses no CPU.
//! - **Woken by index.** [`unpark`](Sleep::unpark) wakes one given worker (a nested run's
//!   latch, a deadline); a worker that is not asleep then has its next sleep end at once,
//!   so that wake-up is not lost either.
//! - **No shared lock.** Announcing, withdrawing and waking are atomic operations on the
//!   sleeping worker's own state word; the only lock is the worker's own, taken just to
//!   block on its condition variable and to signal a worker that blocks.
//!
//! # Protocol
//!
//! Each worker has a *bed*: a state word, a mutex and a condition variable. The state is
//! a phase and a flag:
//!
//! | phase     | meaning                                          | who moves it on              |
//! |-----------|--------------------------------------------------|------------------------------|
//! | `AWAKE`   | not in [`sleep`](Sleep::sleep)                   | the worker (→ `SLEEPY`)      |
//! | `SLEEPY`  | announced, re-checking the queues                | the worker (→ `BLOCKED`, `AWAKE`), a waker (→ `AWAKE`) |
//! | `BLOCKED` | waiting on its condition variable (or about to)  | the worker (→ `AWAKE`), a waker (→ `AWAKE`) |
//!
//! and `NOTIFIED`, set by whoever wakes the worker and cleared only by the worker when its
//! sleep ends. Beside the beds, `sleepers` counts the workers whose phase is `SLEEPY` or
//! `BLOCKED` (up to the moment between a change of phase and the matching change of the
//! count; a filter: pushers look at the beds only when it is non-zero), and
//! `searching` counts the idle workers that look for work before they park, so that at
//! most the pool's cap of them spin at once ([`start_search`](Sleep::start_search)); it is
//! a heuristic, not part of the protocol.
//!
//! Going to sleep (worker `i`, [`Sleep::sleep`]):
//! 1. increment `sleepers`, then move `AWAKE → SLEEPY` (a compare-exchange; it fails
//!    only when an `unpark` came while the worker was awake and set `NOTIFIED`: then
//!    decrement `sleepers` and go to step 5, so that wake-up ends this sleep at once);
//! 2. `fence(SeqCst)`;
//! 3. re-check: any job in the injector or any deque, or the caller's stop condition
//!    (shutdown, a nested run finished)? If so, go to step 5;
//! 4. move `SLEEPY → BLOCKED` (a compare-exchange; if it fails a waker came: go to step 5),
//!    then under the own mutex wait on the condition variable until `NOTIFIED` is set or
//!    the deadline passes;
//! 5. end the sleep: swap the state to `AWAKE` (clearing `NOTIFIED`); if the old phase was
//!    not `AWAKE` (nobody claimed this sleep: re-check, deadline, `unpark`), decrement
//!    `sleepers`; then `fence(SeqCst)`.
//!
//! Pushing a job (to the injector always, to a worker's deque when it was empty,
//! [`notify_one`](Sleep::notify_one)):
//! 1. push the job;
//! 2. `fence(SeqCst)`;
//! 3. if `sleepers > 0`, *claim* a sleeper: for each worker in index order, while its
//!    phase is `SLEEPY` or `BLOCKED` and `NOTIFIED` is clear, try to compare-exchange the
//!    state to `AWAKE | NOTIFIED`. The first success decrements `sleepers`, and if the
//!    phase was `BLOCKED`, signals the worker: lock and unlock its mutex, then notify its
//!    condition variable. Stop there.
//!
//! [`unpark`](Sleep::unpark) sets `NOTIFIED` (`fetch_or`) whatever the phase, and signals
//! the worker if it was `BLOCKED` and not yet notified; the worker decrements `sleepers`
//! itself when that sleep ends (step 5 sees a phase other than `AWAKE`).
//!
//! So `sleepers` is changed once up and once down per sleep, by the worker or by the one
//! waker that claimed it; a claim is a compare-exchange, so of a worker ending its own
//! sleep and a pusher claiming it, exactly one wins, and of two pushers, one claims this
//! worker and the other moves on to the next.
//!
//! # Memory ordering
//!
//! The core is Dekker's pattern. A pusher stores the job, runs a `SeqCst` fence (F1),
//! then loads `sleepers` and the beds; a sleeper writes `sleepers` and its `SLEEPY` state,
//! runs a `SeqCst` fence (F2), then re-checks the queues. The fences are ordered in the
//! single total order S of `SeqCst` operations. If F1 comes first, the re-check sees the
//! job. If F2 comes first, every load the pusher makes after F1 sees the announcement or
//! something later: a non-zero `sleepers` (unless the worker's sleep already ended, below)
//! and, in the bed, `SLEEPY`, `BLOCKED` (which the pusher claims), or a state written when
//! the sleep ended or by another waker. In the last cases the pusher finds no-one to
//! claim there and moves on, which is sound: the state it read precedes, or is, the
//! worker's step-5 swap, and step 5 ends in a `SeqCst` fence (F3). If it read a value
//! before the swap, coherence puts F1 before F3 in S, so whatever the worker searches next
//! sees the job. If it read the swap's own `AWAKE`, any later sleep of that worker has its
//! F2 after F1 (else the pusher would have read that sleep's `SLEEPY`), so that sleep's
//! re-check sees the job. Either way the worker does not block while the job waits. The
//! same holds when the pusher reads `sleepers == 0`: every sleep announced before F1 was
//! then ended or claimed, and a later sleep of that worker whose F2 still came before F1
//! would show in `sleepers`; so the worker's next sleep re-checks after F1. In short:
//! a sleep whose F2 follows F1 sees the job, and one whose F2 precedes F1 is visible to
//! the pusher, who claims it unless it is already over or claimed.
//!
//! A claim is a `Release` compare-exchange and the worker's step-5 swap an `Acquire`, so a
//! woken worker sees what its waker pushed; likewise `unpark`'s `fetch_or` (`Release`)
//! publishes the latch flags stored before it. The announcement's `AWAKE → SLEEPY` is
//! `Release` and the claim `Acquire`s it, so a claimer's decrement of `sleepers` comes
//! after the increment it cancels. The signal cannot be lost: the worker tests `NOTIFIED`
//! under its mutex before each wait, and a waker sets `NOTIFIED` before it takes that
//! mutex, so either the worker sees the flag, or it is already waiting when the waker
//! notifies.
//!
//! A claimed worker may find that somebody else took the job; it then goes back to sleep.
//! Pushes onto a non-empty deque skip steps 2–3: a sleeper that re-checked after that deque
//! became non-empty saw it non-empty and did not sleep, and one that re-checked before was
//! woken by the push that made it non-empty.
//!
//! The loom models in `loom_models.rs` run this code under every interleaving of pushes,
//! claims, `unpark`s, shutdown and sleeps that they bound (two workers and two jobs, a
//! push racing a sleep, a wake by index racing a push, a searcher cap) and check that
//! nobody sleeps through a job and that `sleepers` returns to zero.
//!
//! tokio goes further: while a worker searches, a push wakes nobody, and the last searcher
//! to find work wakes the next. A version of that here failed a loom model (a searcher
//! took one job, the second job's sleeper stayed asleep:
//! `loom_models::two_workers_capped_to_one_searcher_take_both_jobs` with the skip in
//! place), so pushes still wake a sleeper whenever there is one.
//!
//! # Behaviour at the time of writing
//!
//! Pushers claim the lowest-indexed sleeper, which keeps the set of busy workers small and
//! their caches warm. A claim of a worker still re-checking (`SLEEPY`) costs one
//! compare-exchange and no system call: that worker simply does not block. A claim's first
//! compare-exchange guesses `BLOCKED` instead of loading the state first. Beds are
//! `parking_lot` mutex + condvar pairs (futexes on Linux). Unlike rayon-core's sleep
//! module, there is no jobs-event counter: each bed's compare-exchanged state tells a
//! sleeper that a waker came, and tells a waker which sleeper to signal.

use std::time::Instant;

use crossbeam_utils::CachePadded;

use super::sync::{fence, AtomicU8, AtomicUsize, Condvar, Mutex, Ordering};

/// Phase: not sleeping.
const AWAKE: u8 = 0;
/// Phase: announced as a sleeper, re-checking the queues.
const SLEEPY: u8 = 1;
/// Phase: waiting on the condition variable, or about to.
const BLOCKED: u8 = 2;
/// The bits of the phase.
const PHASE: u8 = 0b11;
/// Flag: a waker came; the worker's current or next sleep ends.
const NOTIFIED: u8 = 0b100;

/// The parking lot of one pool.
#[derive(Debug)]
pub(crate) struct Sleep {
    /// Idle workers looking for work before they park (bounds the spinning only).
    searching: CachePadded<AtomicUsize>,
    /// Workers in phase `SLEEPY` or `BLOCKED` that nobody has claimed yet.
    sleepers: CachePadded<AtomicUsize>,
    beds: Box<[CachePadded<Bed>]>,
}

/// One worker's bed: its state word, and the mutex and condition variable it blocks on.
#[derive(Debug)]
struct Bed {
    state: AtomicU8,
    mutex: Mutex<()>,
    condvar: Condvar,
}

impl Bed {
    fn new() -> Bed {
        Bed {
            state: AtomicU8::new(AWAKE),
            mutex: Mutex::new(()),
            condvar: Condvar::default(),
        }
    }

    /// Blocks until `NOTIFIED` is set or `deadline` passes.
    fn block(&self, deadline: Option<Instant>) {
        let mut guard = self.mutex.lock();
        // `Relaxed`: a waker sets the flag before it takes the mutex we hold (see the
        // module doc); what it published is acquired by the swap that ends the sleep.
        while self.state.load(Ordering::Relaxed) & NOTIFIED == 0 {
            match deadline {
                Some(d) => {
                    if self.condvar.wait_until(&mut guard, d).timed_out() {
                        break;
                    }
                }
                None => self.condvar.wait(&mut guard),
            }
        }
    }

    /// Wakes the worker blocked (or about to block) here, after `NOTIFIED` was set: once
    /// we have held the mutex, the worker either sees the flag or waits on the condition
    /// variable.
    fn signal(&self) {
        drop(self.mutex.lock());
        self.condvar.notify_one();
    }
}

impl Sleep {
    pub(crate) fn new(num_workers: usize) -> Sleep {
        Sleep {
            searching: CachePadded::new(AtomicUsize::new(0)),
            sleepers: CachePadded::new(AtomicUsize::new(0)),
            beds: (0..num_workers)
                .map(|_| CachePadded::new(Bed::new()))
                .collect(),
        }
    }

    /// Called after a job became visible in a queue: wakes one sleeper, if any.
    #[inline]
    pub(crate) fn notify_one(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.wake_one();
        }
    }

    #[cold]
    fn wake_one(&self) {
        for index in 0..self.beds.len() {
            if self.claim(index) {
                return;
            }
        }
    }

    /// Makes the caller a searcher unless `cap` workers already search; true if it is one
    /// now (it must then call [`end_search`](Self::end_search)). `Relaxed`: the count only
    /// bounds how many workers spin, and a worker that loses a race for the last place
    /// sleeps through the protocol like any other.
    #[inline]
    pub(crate) fn start_search(&self, cap: usize) -> bool {
        // A compare-exchange loop (`fetch_update` is deprecated on nightly).
        let mut n = self.searching.load(Ordering::Relaxed);
        loop {
            if n >= cap {
                return false;
            }
            match self.searching.compare_exchange_weak(
                n,
                n + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
    }

    /// Ends a search started by [`start_search`](Self::start_search).
    #[inline]
    pub(crate) fn end_search(&self) {
        self.searching.fetch_sub(1, Ordering::Relaxed);
    }

    /// Called after a job became visible in a queue that only `members` may take from:
    /// wakes one of them that sleeps, if any (the same protocol as
    /// [`notify_one`](Self::notify_one), restricted to the members; a member that
    /// announces itself later sees the job in its re-check).
    pub(crate) fn notify_one_of(&self, members: &[usize]) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) == 0 {
            return;
        }
        for &index in members {
            if self.claim(index) {
                return;
            }
        }
    }

    /// Wakes every sleeper (shutdown). A worker that announces itself later sees the
    /// caller's stop condition in its re-check (the fence below pairs with its F2).
    pub(crate) fn wake_all(&self) {
        fence(Ordering::SeqCst);
        for index in 0..self.beds.len() {
            self.claim(index);
        }
    }

    /// Claims worker `index`'s current sleep if it is unclaimed: true if this call did
    /// (and so woke the worker).
    fn claim(&self, index: usize) -> bool {
        let bed = &self.beds[index];
        // No load first: the compare-exchange reads the current state either way, and a
        // pusher that finds sleepers most often finds one `BLOCKED`.
        let mut state = BLOCKED;
        loop {
            // `AcqRel`: `Release` publishes the pushed job to the worker's step-5 swap;
            // `Acquire` orders our decrement after the worker's increment.
            match bed.state.compare_exchange(
                state,
                AWAKE | NOTIFIED,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.sleepers.fetch_sub(1, Ordering::Relaxed);
                    if state == BLOCKED {
                        bed.signal();
                    }
                    return true;
                }
                Err(now) if now & NOTIFIED != 0 || now & PHASE == AWAKE => return false,
                Err(now) => state = now,
            }
        }
    }

    /// Wakes worker `index` whether or not it sleeps; if it does not, its next sleep
    /// returns at once.
    pub(crate) fn unpark(&self, index: usize) {
        let bed = &self.beds[index];
        // `Release`: the waiter's flags, stored before, are seen after its sleep ends.
        let old = bed.state.fetch_or(NOTIFIED, Ordering::Release);
        if old == BLOCKED {
            bed.signal();
        }
    }

    /// Puts worker `index` to sleep until it is woken or `deadline` passes, unless
    /// `recheck` — evaluated after the announcement — finds a reason to stay awake.
    /// Returns whether the worker actually slept (false when `recheck` held).
    pub(crate) fn sleep(
        &self,
        index: usize,
        recheck: impl FnOnce() -> bool,
        deadline: Option<Instant>,
    ) -> bool {
        let bed = &self.beds[index];
        // Step 1: announce.
        self.sleepers.fetch_add(1, Ordering::Relaxed);
        if bed
            .state
            .compare_exchange(AWAKE, SLEEPY, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            // Only `unpark` changes an awake worker's state: an `unpark` came while this
            // worker was awake. Not counted after all; the sleep ends at once.
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
            self.wake_up(bed);
            return true;
        }
        // Steps 2 and 3.
        fence(Ordering::SeqCst);
        if recheck() {
            self.wake_up(bed);
            return false;
        }
        // Step 4.
        if bed
            .state
            .compare_exchange(SLEEPY, BLOCKED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            bed.block(deadline);
        }
        self.wake_up(bed);
        true
    }

    /// Step 5: ends worker `bed`'s sleep (or consumes its pending `NOTIFIED`).
    fn wake_up(&self, bed: &Bed) {
        // `Acquire`: what a claimer pushed, or an `unpark`er stored, before setting
        // `NOTIFIED`.
        let old = bed.state.swap(AWAKE, Ordering::Acquire);
        if old & PHASE != AWAKE {
            // Nobody claimed this sleep: it counted in `sleepers` until now.
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
    }

    /// How many workers are announced and unclaimed (tests check it returns to zero).
    #[cfg(test)]
    pub(crate) fn sleepers(&self) -> usize {
        self.sleepers.load(Ordering::SeqCst)
    }
}

#[cfg(all(test, not(magpie_loom)))]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::Sleep;

    #[test]
    fn an_unpark_of_an_awake_worker_ends_its_next_sleep_at_once() {
        let sleep = Sleep::new(2);
        sleep.unpark(1);
        // No deadline, nobody else: only the pending wake-up lets this return.
        assert!(sleep.sleep(1, || false, None));
        assert_eq!(sleep.sleepers(), 0);
        // Consumed: the next sleep waits (here until its deadline).
        let start = Instant::now();
        let deadline = start + Duration::from_millis(20);
        assert!(sleep.sleep(1, || false, Some(deadline)));
        assert!(Instant::now() >= deadline);
        assert_eq!(sleep.sleepers(), 0);
    }

    #[test]
    fn a_recheck_that_finds_work_keeps_the_worker_awake_and_uncounted() {
        let sleep = Sleep::new(1);
        let mut counted = usize::MAX;
        assert!(!sleep.sleep(
            0,
            || {
                counted = sleep.sleepers();
                true
            },
            None
        ));
        assert_eq!(counted, 1, "announced before the re-check");
        assert_eq!(sleep.sleepers(), 0);
        // Nobody to wake: a push finds no sleeper.
        sleep.notify_one();
        assert_eq!(sleep.sleepers(), 0);
    }

    #[test]
    fn a_push_wakes_a_blocked_worker_and_an_unpark_wakes_the_named_one() {
        // Each worker sleeps until its flag is set, each sleep bounded by a deadline far
        // away: a sleep that reaches it was a lost wake-up.
        let sleep = Arc::new(Sleep::new(2));
        let job = Arc::new(AtomicBool::new(false));
        let latch = Arc::new(AtomicBool::new(false));
        let worker = |index: usize, ready: Arc<AtomicBool>| {
            let sleep = Arc::clone(&sleep);
            std::thread::spawn(move || {
                let mut lost = 0;
                while !ready.load(Ordering::Acquire) {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    sleep.sleep(index, || ready.load(Ordering::Acquire), Some(deadline));
                    lost += usize::from(Instant::now() >= deadline);
                }
                lost
            })
        };
        let (w0, w1) = (worker(0, Arc::clone(&job)), worker(1, Arc::clone(&latch)));
        // Give both time to block (either way, each must end).
        std::thread::sleep(Duration::from_millis(10));
        // Worker 1 is woken by index; it stays unclaimable until it has seen its flag.
        latch.store(true, Ordering::Release);
        sleep.unpark(1);
        // So this one push must claim worker 0, the only sleeper left.
        job.store(true, Ordering::Release);
        sleep.notify_one();
        assert_eq!(w0.join().unwrap(), 0, "worker 0 slept through the push");
        assert_eq!(w1.join().unwrap(), 0, "worker 1 slept through its unpark");
        assert_eq!(sleep.sleepers(), 0);
    }
}
