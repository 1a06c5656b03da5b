//! How idle workers park and how pushers wake them.
//!
//! # Guarantees
//!
//! - **No lost wake-ups.** A worker does not stay asleep while a job it could run sits in
//!   a queue: whenever a queue goes from empty to non-empty, at least one worker that
//!   could take it is searching or is woken, and a worker re-checks every queue after
//!   announcing that it is going to sleep.
//! - **Idle means asleep.** A worker without work searches only briefly (see
//!   [`worker`](super::worker) and [`IdleSpin`](super::IdleSpin)), then blocks on its own
//!   condition variable; a pool whose only activity is a pending future uses no CPU.
//!
//! # Protocol
//!
//! State: `searching` (how many idle workers are looking for work before they park),
//! `sleepers` (a counter) and `idle` (the list of indices of announced sleepers, under a
//! mutex; `sleepers == idle.len()` whenever the mutex is free), plus one [`Parker`] per
//! worker: a mutex-protected, *sticky* `notified` flag and a condition variable.
//!
//! Searching (worker `i`, idle, before it parks; optional, see
//! [`IdleSpin`](super::IdleSpin)):
//! 1. increment `searching` unless it already is at the pool's cap (`Relaxed`: a pusher
//!    that misses the increment only wakes a sleeper it need not have woken);
//! 2. try to steal, some rounds;
//! 3. leave: decrement `searching` (`SeqCst`). If the search found nothing, go to sleep
//!    (below: its re-check comes after a `SeqCst` fence). If it found a job or was told to
//!    stop, and this was the last searcher: `fence(SeqCst)`, and if any queue holds a job,
//!    wake a sleeper (push step 3) — tokio's "the searcher that finds work wakes the
//!    next".
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
//! 3. if `searching == 0` and `sleepers > 0`: lock `idle`, pop one index, decrement
//!    `sleepers`, unlock, and unpark that worker (set its `notified`, signal its
//!    condition variable).
//!
//! A job bound to one steal group ([`notify_one_of`](Sleep::notify_one_of)) ignores
//! `searching` (the searchers may not be members) and wakes a sleeping member.
//!
//! # Memory ordering
//!
//! This is Dekker's pattern, twice. The pusher stores the job, runs a `SeqCst` fence and
//! loads `searching` and `sleepers`; a sleeper increments `sleepers`, runs a `SeqCst` fence
//! and loads the queue indices; the last searcher decrements `searching`, runs a `SeqCst`
//! fence (its own, or its sleep's) and loads the queue indices. All fences are ordered in
//! the single total order of `SeqCst` operations:
//!
//! - If the pusher sees `searching > 0`, some search was under way whose decrement is not
//!   visible to the pusher, so every fence that follows that decrement comes after the
//!   pusher's fence, and a look at the queues after it sees the job. That searcher either
//!   goes to sleep (its re-check sees the job: it does not park), or ends as the last
//!   searcher (its look sees the job: it wakes a sleeper), or ends while another search
//!   is under way — and the same holds for that one. So while the job is queued, some
//!   worker that can take it searches or is woken.
//! - If the pusher sees `searching == 0` and the sleeper's fence comes first, the pusher
//!   sees `sleepers > 0` and wakes someone; if the pusher's fence comes first, the
//!   sleeper's re-check sees the job.
//!
//! Because `notified` is sticky, an unpark that lands between a re-check and the wait is
//! not lost.
//!
//! Pushes onto a non-empty deque skip steps 2–3: a sleeper that re-checked after that deque
//! became non-empty saw it non-empty and did not sleep, and one that re-checked before was
//! woken by the push that made it non-empty (or a searcher saw the deque non-empty).
//!
//! A worker woken this way may find that somebody else took the job; it then goes back
//! to sleep. A worker woken for another reason (an unpark by index from a nested run's
//! latch, a deadline) withdraws itself in step 5, so `sleepers` never counts an awake
//! worker for long.
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
    /// Idle workers looking for work before they park.
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

    /// Called after a job became visible in a queue: wakes one sleeper, if any and if no
    /// worker is searching (a searcher finds the job, or wakes a sleeper for it).
    #[inline]
    pub(crate) fn notify_one(&self) {
        fence(Ordering::SeqCst);
        if self.searching.load(Ordering::Relaxed) == 0 && self.sleepers.load(Ordering::Relaxed) != 0
        {
            self.wake_one();
        }
    }

    /// Makes the caller a searcher unless `cap` workers already search; true if it is one
    /// now (it must then call [`end_search`](Self::end_search) or
    /// [`end_search_to_sleep`](Self::end_search_to_sleep)).
    #[inline]
    pub(crate) fn start_search(&self, cap: usize) -> bool {
        self.searching
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Ends a search that found a job or was told to stop: if the caller was the last
    /// searcher and `has_work` — evaluated after a `SeqCst` fence — finds a job queued,
    /// wakes a sleeper for it (a push during the search woke nobody).
    #[inline]
    pub(crate) fn end_search(&self, has_work: impl FnOnce() -> bool) {
        if self.searching.fetch_sub(1, Ordering::SeqCst) == 1 {
            fence(Ordering::SeqCst);
            if has_work() {
                self.notify_one();
            }
        }
    }

    /// Ends a search that found nothing; the caller goes to [`sleep`](Self::sleep) next,
    /// whose re-check sees a job pushed during the search.
    #[inline]
    pub(crate) fn end_search_to_sleep(&self) {
        self.searching.fetch_sub(1, Ordering::SeqCst);
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
