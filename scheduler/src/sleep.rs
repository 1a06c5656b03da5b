//! How idle workers park and how pushers wake them.
//!
//! # Guarantees
//!
//! - **No lost wake-ups.** A worker does not stay asleep while a job it could run sits in
//!   a queue: whenever a queue goes from empty to non-empty, at least one sleeping worker
//!   (if any) is woken, and a worker re-checks every queue after announcing that it is
//!   going to sleep.
//! - **Idle means asleep.** A worker without work searches only briefly (see
//!   [`worker`](super::worker) and [`IdleSpin`](super::IdleSpin)), then blocks on its own
//!   condition variable; a pool whose only activity is a pending future uses no CPU.
//!
//! # Protocol
//!
//! State: `sleepers` (a counter) and `idle` (the list of indices of announced sleepers,
//! under a mutex; `sleepers == idle.len()` whenever the mutex is free), plus one
//! [`Parker`] per worker: a mutex-protected, *sticky* `notified` flag and a condition
//! variable. Beside them, `searching` counts the idle workers that look for work before
//! they park, so that at most the pool's cap of them spin at once
//! ([`start_search`](Sleep::start_search)); it is a heuristic, not part of the wake-up
//! protocol below (a worker that may not search goes to sleep at once, through the same
//! protocol).
//!
//! Going to sleep (worker `i`):
//! 1. lock `idle`, push `i`, increment `sleepers` (`SeqCst`), unlock;
//! 2. `fence(SeqCst)`;
//! 3. re-check: any job in the injector or any deque, or the caller's stop condition
//!    (shutdown, a nested run finished)? If so, withdraw (step 5) and return;
//! 4. park: wait until `notified`, then clear it;
//! 5. withdraw: lock `idle`; if `i` is still listed, remove it and decrement `sleepers`.
//!
//! Pushing a job (to the injector always, to a worker's deque when it was empty):
//! 1. push the job;
//! 2. `fence(SeqCst)`;
//! 3. if `sleepers > 0`: lock `idle`, pop one index, decrement `sleepers`, unlock, and
//!    unpark that worker (set its `notified`, signal its condition variable).
//!
//! # Memory ordering
//!
//! This is Dekker's pattern. The pusher stores the job then runs a `SeqCst` fence and loads
//! `sleepers`; the sleeper increments `sleepers` then runs a `SeqCst` fence and loads the
//! queue indices. The two fences are ordered in the single total order of `SeqCst`
//! operations: if the pusher's fence comes first, the sleeper's re-check sees the job; if
//! the sleeper's comes first, the pusher sees `sleepers > 0` and wakes someone. Because
//! `notified` is sticky, an unpark that lands between a re-check and the wait is not lost.
//!
//! Pushes onto a non-empty deque skip steps 2–3: a sleeper that re-checked after that deque
//! became non-empty saw it non-empty and did not sleep, and one that re-checked before was
//! woken by the push that made it non-empty.
//!
//! A worker woken this way may find that somebody else took the job; it then goes back
//! to sleep. A worker woken for another reason (an unpark by index from a nested run's
//! latch, a deadline) withdraws itself in step 5, so `sleepers` never counts an awake
//! worker for long.
//!
//! tokio goes further: while a worker searches, a push wakes nobody, and the last searcher
//! to find work wakes the next. A version of that here failed a loom model (a searcher
//! took one job, the second job's sleeper stayed asleep:
//! `loom_models::two_workers_capped_to_one_searcher_take_both_jobs` with the skip in
//! place), so pushes still wake a sleeper whenever there is one.
//!
//! # Behaviour at the time of writing
//!
//! The woken sleeper is the most recently announced one (a stack), which keeps the set of
//! busy workers small and their caches warm. Parkers are `parking_lot` mutex + condvar
//! pairs (futexes on Linux). Announcing and withdrawing take the `idle` mutex.

use std::time::Instant;

use crossbeam_utils::CachePadded;

use super::sync::{fence, AtomicUsize, Condvar, Mutex, Ordering};

/// The parking lot of one pool.
#[derive(Debug)]
pub(crate) struct Sleep {
    /// Idle workers looking for work before they park (bounds the spinning only).
    searching: CachePadded<AtomicUsize>,
    sleepers: CachePadded<AtomicUsize>,
    idle: Mutex<Vec<usize>>,
    parkers: Box<[CachePadded<Parker>]>,
}

/// One worker's bed: a sticky wake-up flag and a condition variable.
#[derive(Debug, Default)]
struct Parker {
    notified: Mutex<bool>,
    condvar: Condvar,
}

impl Parker {
    fn park(&self, deadline: Option<Instant>) {
        let mut notified = self.notified.lock();
        while !*notified {
            match deadline {
                Some(d) => {
                    if self.condvar.wait_until(&mut notified, d).timed_out() {
                        break;
                    }
                }
                None => self.condvar.wait(&mut notified),
            }
        }
        *notified = false;
    }

    fn unpark(&self) {
        let mut notified = self.notified.lock();
        *notified = true;
        self.condvar.notify_one();
    }
}

impl Sleep {
    pub(crate) fn new(num_workers: usize) -> Sleep {
        Sleep {
            searching: CachePadded::new(AtomicUsize::new(0)),
            sleepers: CachePadded::new(AtomicUsize::new(0)),
            idle: Mutex::new(Vec::with_capacity(num_workers)),
            parkers: (0..num_workers).map(|_| CachePadded::default()).collect(),
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
        let index = {
            let mut idle = self.idle.lock();
            let pos = idle.iter().rposition(|i| members.contains(i));
            pos.map(|pos| {
                self.sleepers.fetch_sub(1, Ordering::Relaxed);
                idle.swap_remove(pos)
            })
        };
        if let Some(index) = index {
            self.parkers[index].unpark();
        }
    }

    #[cold]
    fn wake_one(&self) {
        let index = {
            let mut idle = self.idle.lock();
            let index = idle.pop();
            if index.is_some() {
                self.sleepers.fetch_sub(1, Ordering::Relaxed);
            }
            index
        };
        if let Some(index) = index {
            self.parkers[index].unpark();
        }
    }

    /// Wakes every sleeper (shutdown).
    pub(crate) fn wake_all(&self) {
        let woken = {
            let mut idle = self.idle.lock();
            self.sleepers.fetch_sub(idle.len(), Ordering::Relaxed);
            std::mem::take(&mut *idle)
        };
        for index in woken {
            self.parkers[index].unpark();
        }
    }

    /// Wakes worker `index` whether or not it sleeps; if it does not, its next sleep
    /// returns at once.
    pub(crate) fn unpark(&self, index: usize) {
        self.parkers[index].unpark();
    }

    /// Puts worker `index` to sleep until it is woken or `deadline` passes, unless
    /// `recheck` — evaluated after the announcement — finds a reason to stay awake.
    /// Returns whether the worker actually parked.
    pub(crate) fn sleep(
        &self,
        index: usize,
        recheck: impl FnOnce() -> bool,
        deadline: Option<Instant>,
    ) -> bool {
        {
            let mut idle = self.idle.lock();
            idle.push(index);
            self.sleepers.fetch_add(1, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        let parked = if recheck() {
            false
        } else {
            self.parkers[index].park(deadline);
            true
        };
        self.withdraw(index);
        parked
    }

    fn withdraw(&self, index: usize) {
        let mut idle = self.idle.lock();
        if let Some(pos) = idle.iter().rposition(|&i| i == index) {
            idle.swap_remove(pos);
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
