//! [`BusyPoll`]: a runtime that just wrote a request or a response keeps polling its
//! sockets, without sleeping, for a short window, so the answer that follows is read by a
//! running thread instead of one the kernel must wake.
//!
//! # Why
//!
//! A step of a remote session is a chain of hops: the client writes its request and
//! sleeps in `epoll_wait`; the server's runtime thread, asleep in `epoll_wait` too, is
//! woken, answers, and sleeps again; the client is woken. Each wake of a sleeping thread
//! on another CPU is an inter-processor interrupt, on a virtual machine a VM exit as well:
//! 10–15 µs per hop on a 2-vCPU KVM guest even when [`WarmCpus`](crate::WarmCpus) keeps
//! the CPU from halting, where the whole trivial step costs 25 µs without them. A thread
//! that polls its sockets in a loop takes the answer with no wake at all, the way the
//! kernel's own busy polling (`SO_BUSY_POLL`) does for one socket.
//!
//! # What it does
//!
//! Each runtime that serves or sends requests has one [`BusyPoll`]. Its connections report
//! to it: [`wrote`](BusyPoll::wrote) after they write bytes, [`read`](BusyPoll::read)
//! when bytes arrive. A write starts (or prolongs) a spin of the window: up to as many
//! spinner tasks as the runtime has worker threads, each yielding to its scheduler in a
//! loop, so the worker polls its I/O driver with a zero timeout (tokio's `park_yield`)
//! instead of sleeping in it. A read ends the spin: the answer is in, the work it brings
//! runs, and its own writes start the next spin. The client's blocking calls, whose
//! runtime runs only inside the call, spin inside the call instead
//! ([`BusyPoll::spin_first`]).
//!
//! # When it spins
//!
//! Only when it pays:
//!
//! - Each `BusyPoll` keeps a moving average of the time from a write to the next read (for
//!   a blocking call, of the call's latency), and a write spins only while that average
//!   is within the window. A server between a client's steps that come closer than the
//!   window spins; a task that answers a step every few milliseconds, or a client of long
//!   steps, does not, and costs what it did without busy polling.
//! - Only while no other thread wants the CPU, as the kernel's busy polling stops when
//!   another task needs its CPU: a spinner checks, at each turn, whether its thread was
//!   preempted since the spin began (its involuntary context switches, from
//!   `getrusage(RUSAGE_THREAD)`). If it was, the machine's CPUs are all taken (more
//!   runtimes and pool threads than cores, a busy host), and the spinning took CPU time
//!   that real work needed: the spin ends, and the poller does not spin again for a
//!   back-off ([`BACKOFF_MIN`], doubling with each contended spin in a row up to
//!   [`BACKOFF_MAX`]; a spin that ends unpreempted resets it).
//!
//! # What it promises
//!
//! - Busy polling changes when a thread notices input, never what it does with it: a
//!   spin that is skipped, cut short or lost to a race costs one hop's wake-up, nothing
//!   else. Nothing waits on a spinner.
//! - A spin lasts at most the window after the last write that started or prolonged it
//!   (plus one scheduler turn), and no spinner task outlives it.
//! - At most [`max_spinners`] spinner tasks (and blocking calls that spin) run at once in
//!   the process, one per CPU of its affinity mask, so spinning never takes more CPUs than
//!   the process has. Spinners run at the priority of their runtime's threads: on a
//!   machine whose CPUs are all busy they compete for it, which the window bounds.
//! - Spinning costs CPU time: up to the window per worker thread after each write that
//!   spins. Turn it off ([`GrpcOptions::busy_poll`](crate::GrpcOptions::busy_poll) `None`,
//!   flag `--busy-poll-us 0`) in a container with a CPU quota, where spinning counts
//!   against the quota, or on a host where every CPU has other work.
//! - A runtime of several worker threads spins on each of them only as far as tokio's
//!   scheduler spreads the spinner tasks over its workers; a worker that sleeps in
//!   `epoll_wait` while others spin is woken as without busy polling.
//!
//! # Protocol and memory ordering
//!
//! `until` (nanoseconds on the process's monotonic clock) is raised by writes with
//! `fetch_max` and lowered by reads with `store`; spinners read it `Relaxed` each turn.
//! `spinning` counts this poller's live spinner tasks: a write that raised `until` takes
//! the free ones with `fetch_update` (never past the worker count) and spawns that many;
//! each spinner decrements it when it ends. The race of a spinner that ends as a write
//! raises `until` can only leave fewer spinners than asked for, which costs a wake-up and
//! nothing else (see above), so no stronger ordering is needed. The process-wide cap is a
//! counter of slots taken with `fetch_update` and given back by each spinner's
//! [`Slot`] guard on drop, also when its runtime drops it unfinished. The statistics
//! (`last_write`, the average) are `Relaxed` estimates: a torn update skews one average.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

/// The weight of the newest gap in the moving average: 1/2^`AVERAGE_SHIFT`.
const AVERAGE_SHIFT: u32 = 2;

/// The first back-off after a spin that was preempted (see the module docs).
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(1);

/// The longest back-off: how long spinning stays off on a machine whose CPUs stay busy,
/// before it is tried again.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_millis(64);

/// A gap counts in the average as at most this many windows, so one long pause moves
/// the average past the window but a few short gaps bring it back.
const GAP_CAP_WINDOWS: u64 = 4;

/// How many spinner tasks (and spinning blocking calls) the process runs at most at once:
/// the CPUs it may run on.
pub(crate) fn max_spinners() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The process's spinner slots (at most [`max_spinners`] taken at once).
static SLOTS: Slots = Slots::new();

/// The process's counts, over every poller (for the metrics).
static PROCESS: Counts = Counts::new();

/// Spins started, spins that ended on input, spins that ended preempted.
#[derive(Debug)]
struct Counts {
    spins: AtomicU64,
    caught: AtomicU64,
    preempted: AtomicU64,
}

impl Counts {
    const fn new() -> Counts {
        Counts {
            spins: AtomicU64::new(0),
            caught: AtomicU64::new(0),
            preempted: AtomicU64::new(0),
        }
    }

    /// The counts, and `spinning` spinners now.
    fn stats(&self, spinning: usize) -> BusyPollStats {
        BusyPollStats {
            spins: self.spins.load(Ordering::Relaxed),
            caught: self.caught.load(Ordering::Relaxed),
            preempted: self.preempted.load(Ordering::Relaxed),
            spinning,
        }
    }
}

/// Counts one event in a poller's counts and in the process's.
fn count(own: &AtomicU64, process: &AtomicU64) {
    own.fetch_add(1, Ordering::Relaxed);
    process.fetch_add(1, Ordering::Relaxed);
}

/// What busy polling did so far: the process's (the `magpie_busy_poll_*` metrics) or
/// one server's runtime's ([`GrpcServer::busy_poll_stats`](crate::GrpcServer::busy_poll_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusyPollStats {
    /// Spins started: spinner tasks spawned and blocking calls that spun.
    pub spins: u64,
    /// Spins during which the awaited input arrived (the rest ran out their window or
    /// were preempted).
    pub caught: u64,
    /// Spins that ended because their thread was preempted: another thread wanted the
    /// CPU, and spinning backed off.
    pub preempted: u64,
    /// Spinner tasks and spinning calls running now.
    pub spinning: usize,
}

impl BusyPollStats {
    /// The process's figures now.
    pub fn now() -> BusyPollStats {
        PROCESS.stats(SLOTS.taken.load(Ordering::Relaxed))
    }
}

/// A pool of spinner slots: the process has one ([`SLOTS`]); tests make their own.
#[derive(Debug)]
pub(crate) struct Slots {
    taken: AtomicUsize,
    /// The pool's size; 0: [`max_spinners`].
    size: usize,
}

impl Slots {
    /// The process's pool, of [`max_spinners`] slots.
    const fn new() -> Slots {
        Slots {
            taken: AtomicUsize::new(0),
            size: 0,
        }
    }

    fn size(&self) -> usize {
        if self.size == 0 {
            max_spinners()
        } else {
            self.size
        }
    }

    /// A free slot, if any.
    fn take(&'static self) -> Option<Slot> {
        let size = self.size();
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < size).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self))
    }
}

/// One slot of a [`Slots`] pool, given back on drop.
struct Slot(&'static Slots);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A spinner task's hold on its poller's count of spinners and on a process slot, both
/// given back on drop: when the spin ends, or when its runtime drops it unfinished.
struct Spinner {
    poll: Arc<BusyPoll>,
    _slot: Slot,
}

impl Spinner {
    /// Yields to its scheduler (which polls the I/O driver without sleeping when it has
    /// nothing else to run) until the spin ends.
    async fn spin(self) {
        let mut preemption = Preemption::start();
        let mut preempted = false;
        while now_ns() < self.poll.until.load(Ordering::Relaxed) {
            tokio::task::yield_now().await;
            if preemption.happened() {
                preempted = true;
                break;
            }
        }
        self.poll.spun(preempted);
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.poll.spinning.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether the thread running a spin was preempted since the spin began: its involuntary
/// context switches (`getrusage(RUSAGE_THREAD)`, Linux), counted again whenever the spin
/// finds itself on another thread (a multi-thread runtime moves tasks between its
/// workers). Elsewhere it never reports a preemption.
struct Preemption {
    thread: std::thread::ThreadId,
    switches: i64,
}

impl Preemption {
    /// The current thread's count, as the baseline.
    fn start() -> Preemption {
        Preemption {
            thread: std::thread::current().id(),
            switches: involuntary_switches(),
        }
    }

    /// Whether the current thread was preempted since the baseline (which moves to this
    /// thread when the spin moved).
    fn happened(&mut self) -> bool {
        let now = involuntary_switches();
        let thread = std::thread::current().id();
        if thread != self.thread {
            *self = Preemption {
                thread,
                switches: now,
            };
            return false;
        }
        now != self.switches
    }
}

/// The calling thread's involuntary context switches so far (0 where unknown).
#[cfg(target_os = "linux")]
fn involuntary_switches() -> i64 {
    // SAFETY: `rusage` is plain data for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one `rusage` through a pointer to a live, properly aligned
    // local and reads nothing else; RUSAGE_THREAD is valid on Linux 2.6.26 and later.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } == 0;
    if ok {
        usage.ru_nivcsw
    } else {
        0
    }
}

/// The calling thread's involuntary context switches so far (0 where unknown).
#[cfg(not(target_os = "linux"))]
fn involuntary_switches() -> i64 {
    0
}

/// Nanoseconds since the process's first use of busy polling, on the monotonic clock.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A runtime's busy polling (see the module docs). Cheap to report to: a write or a read
/// is a few atomic operations, plus a spawn when a spin starts.
#[derive(Debug)]
pub(crate) struct BusyPoll {
    /// The window in nanoseconds; 0: never spin.
    window: u64,
    /// Spinner tasks at most: the runtime's worker threads.
    workers: usize,
    /// The spin's end (see the module docs).
    until: AtomicU64,
    /// Live spinner tasks of this poller.
    spinning: AtomicUsize,
    /// When the last write was reported; 0 once a read took it.
    last_write: AtomicU64,
    /// Moving average of the gap from a write to the next read, in nanoseconds.
    average_gap: AtomicU64,
    /// Where its spins take their slots.
    slots: &'static Slots,
    /// No spin starts before this time (nanoseconds): the back-off after a preempted
    /// spin.
    backoff_until: AtomicU64,
    /// The current back-off in nanoseconds; 0 after a spin that was not preempted.
    backoff: AtomicU64,
    /// This poller's counts.
    counts: Counts,
}

impl BusyPoll {
    /// A poller spinning for `window` (`None` or zero: never) on a runtime of `workers`
    /// worker threads.
    pub(crate) fn new(window: Option<Duration>, workers: usize) -> Arc<BusyPoll> {
        BusyPoll::with_slots(window, workers, &SLOTS)
    }

    /// [`BusyPoll::new`] taking its spinner slots from `slots`.
    fn with_slots(
        window: Option<Duration>,
        workers: usize,
        slots: &'static Slots,
    ) -> Arc<BusyPoll> {
        let window = window.map_or(0, |w| u64::try_from(w.as_nanos()).unwrap_or(u64::MAX));
        Arc::new(BusyPoll {
            window,
            workers: workers.max(1),
            until: AtomicU64::new(0),
            spinning: AtomicUsize::new(0),
            last_write: AtomicU64::new(0),
            average_gap: AtomicU64::new(0),
            slots,
            backoff_until: AtomicU64::new(0),
            backoff: AtomicU64::new(0),
            counts: Counts::new(),
        })
    }

    /// What this poller did so far.
    pub(crate) fn stats(&self) -> BusyPollStats {
        self.counts.stats(self.spinning.load(Ordering::Relaxed))
    }

    /// Whether a spin at `now` is worth its CPU time: the gaps pay, and no back-off holds.
    fn pays(&self, now: u64) -> bool {
        self.gaps_pay() && now >= self.backoff_until.load(Ordering::Relaxed)
    }

    /// Whether the gaps seen so far are within the window on average.
    fn gaps_pay(&self) -> bool {
        self.window > 0 && self.average_gap.load(Ordering::Relaxed) <= self.window
    }

    /// Ends a spin: a preempted one starts (or doubles) the back-off, a clean one resets
    /// it.
    fn spun(&self, preempted: bool) {
        if !preempted {
            if self.backoff.load(Ordering::Relaxed) != 0 {
                self.backoff.store(0, Ordering::Relaxed);
            }
            return;
        }
        count(&self.counts.preempted, &PROCESS.preempted);
        let min = BACKOFF_MIN.as_nanos() as u64;
        let max = BACKOFF_MAX.as_nanos() as u64;
        let backoff = (self.backoff.load(Ordering::Relaxed) * 2).clamp(min, max);
        self.backoff.store(backoff, Ordering::Relaxed);
        self.backoff_until
            .store(now_ns().saturating_add(backoff), Ordering::Relaxed);
    }

    /// Folds `gap` nanoseconds into the moving average.
    fn observe(&self, gap: u64) {
        let gap = gap.min(self.window.saturating_mul(GAP_CAP_WINDOWS));
        let old = self.average_gap.load(Ordering::Relaxed);
        let new = if gap >= old {
            old + ((gap - old) >> AVERAGE_SHIFT)
        } else {
            old - ((old - gap) >> AVERAGE_SHIFT)
        };
        self.average_gap.store(new, Ordering::Relaxed);
    }

    /// A connection of this poller's runtime wrote bytes: the answer may follow soon.
    /// Starts or prolongs a spin when the gaps seen make it pay. Call from a task of the
    /// runtime (it spawns there); elsewhere it only records the write.
    pub(crate) fn wrote(self: &Arc<Self>) {
        if self.window == 0 {
            return;
        }
        let now = now_ns();
        self.last_write.store(now, Ordering::Relaxed);
        if !self.pays(now) {
            return;
        }
        self.until
            .fetch_max(now.saturating_add(self.window), Ordering::Relaxed);
        if self.spinning.load(Ordering::Relaxed) >= self.workers {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(before) = self
            .spinning
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.workers).then_some(self.workers)
            })
        else {
            return;
        };
        for _ in before..self.workers {
            let Some(slot) = self.slots.take() else {
                self.spinning.fetch_sub(1, Ordering::Relaxed);
                continue;
            };
            count(&self.counts.spins, &PROCESS.spins);
            runtime.spawn(
                Spinner {
                    poll: Arc::clone(self),
                    _slot: slot,
                }
                .spin(),
            );
        }
    }

    /// A connection of this poller's runtime read bytes: what a spin waited for came.
    /// Records the gap since the last write and ends the spin.
    pub(crate) fn read(&self) {
        if self.window == 0 {
            return;
        }
        let last = self.last_write.swap(0, Ordering::Relaxed);
        if last == 0 {
            return;
        }
        let now = now_ns();
        self.observe(now.saturating_sub(last));
        if self.until.load(Ordering::Relaxed) > now {
            count(&self.counts.caught, &PROCESS.caught);
            self.until.store(now, Ordering::Relaxed);
        }
    }

    /// `call`, polled by a blocking call's own runtime: while the calls' latencies make
    /// it pay, the runtime polls its sockets without sleeping for up to the window before
    /// it waits as usual. Records the call's latency.
    pub(crate) async fn spin_first<F: Future>(&self, call: F) -> F::Output {
        let start = now_ns();
        let mut call = pin!(call);
        let slot = if self.pays(start) {
            self.slots.take()
        } else {
            None
        };
        if slot.is_some() {
            count(&self.counts.spins, &PROCESS.spins);
            let until = start.saturating_add(self.window);
            let mut preemption = Preemption::start();
            loop {
                let polled = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
                if let Poll::Ready(out) = polled {
                    count(&self.counts.caught, &PROCESS.caught);
                    self.spun(false);
                    self.observe(now_ns().saturating_sub(start));
                    return out;
                }
                if preemption.happened() {
                    self.spun(true);
                    break;
                }
                if now_ns() >= until {
                    self.spun(false);
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        drop(slot);
        let out = call.await;
        if self.window > 0 {
            self.observe(now_ns().saturating_sub(start));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(100);

    /// A runtime of the test's own thread, with timers.
    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A poller with a pool of its own, so tests that spin at once do not share slots.
    fn poller(window: Duration, workers: usize) -> Arc<BusyPoll> {
        let slots = Box::leak(Box::new(Slots {
            taken: AtomicUsize::new(0),
            size: 4,
        }));
        BusyPoll::with_slots(Some(window), workers, slots)
    }

    #[test]
    fn a_poller_without_a_window_never_spins() {
        let p = BusyPoll::new(None, 1);
        assert!(!p.gaps_pay());
        let p = BusyPoll::new(Some(Duration::ZERO), 1);
        assert!(!p.gaps_pay());
    }

    #[test]
    fn long_gaps_stop_the_spinning_and_short_ones_bring_it_back() {
        let p = poller(WINDOW, 1);
        assert!(p.gaps_pay(), "no gap seen yet: spin");
        for _ in 0..4 {
            p.observe(10 * WINDOW.as_nanos() as u64);
        }
        assert!(!p.gaps_pay(), "gaps of ten windows: do not spin");
        let mut short = 0;
        while !p.gaps_pay() {
            p.observe(10_000);
            short += 1;
            assert!(short < 16, "short gaps never brought spinning back");
        }
    }

    #[test]
    fn a_spin_ends_with_its_window_and_gives_its_slots_back() {
        let rt = current_thread();
        let p = poller(Duration::from_millis(2), 1);
        rt.block_on(async {
            p.wrote();
            assert_eq!(p.spinning.load(Ordering::Relaxed), 1);
            p.wrote();
            assert_eq!(
                p.spinning.load(Ordering::Relaxed),
                1,
                "one spinner per worker"
            );
            while p.spinning.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        assert_eq!(p.stats().spins, 1);
    }

    #[test]
    fn a_read_ends_the_spin_and_is_counted_as_caught() {
        let rt = current_thread();
        let p = poller(Duration::from_secs(60), 1);
        rt.block_on(async {
            p.wrote();
            assert_eq!(p.spinning.load(Ordering::Relaxed), 1);
            tokio::task::yield_now().await;
            p.read();
            // The spinner sees the spin's end at its next turn.
            while p.spinning.load(Ordering::Relaxed) > 0 {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(p.stats().caught, 1);
        assert!(
            BusyPollStats::now().caught >= 1,
            "the process counts it too"
        );
        assert!(p.gaps_pay(), "a short gap keeps the spinning on");
    }

    #[test]
    fn a_blocking_call_spins_only_while_it_pays() {
        let rt = current_thread();
        let p = poller(WINDOW, 1);
        let slow = || tokio::time::sleep(Duration::from_millis(5));
        rt.block_on(async {
            for _ in 0..4 {
                p.spin_first(slow()).await;
            }
        });
        assert!(!p.gaps_pay(), "calls of fifty windows: do not spin");
        // Quick calls bring the average back under the window.
        for _ in 0..16 {
            rt.block_on(p.spin_first(async {}));
        }
        assert!(p.gaps_pay());
    }

    #[test]
    fn a_dropped_runtime_gives_its_spinners_back() {
        let rt = current_thread();
        let p = poller(Duration::from_secs(60), 2);
        rt.block_on(async { p.wrote() });
        assert_eq!(p.spinning.load(Ordering::Relaxed), 2);
        drop(rt);
        assert_eq!(p.spinning.load(Ordering::Relaxed), 0);
        assert_eq!(p.slots.taken.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn slots_never_exceed_their_pool() {
        let slots: &'static Slots = Box::leak(Box::new(Slots {
            taken: AtomicUsize::new(0),
            size: 3,
        }));
        let taken: Vec<Slot> = std::iter::from_fn(|| slots.take()).take(100).collect();
        assert_eq!(taken.len(), 3);
        drop(taken);
        assert_eq!(slots.taken.load(Ordering::Relaxed), 0);
        assert!(SLOTS.size() >= 1);
    }

    #[test]
    fn several_workers_get_one_spinner_each_within_the_pool() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let p = poller(Duration::from_millis(5), 3);
        rt.block_on(async {
            p.wrote();
            assert_eq!(p.spinning.load(Ordering::Relaxed), 3);
            assert_eq!(p.slots.taken.load(Ordering::Relaxed), 3);
            while p.spinning.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        assert_eq!(p.slots.taken.load(Ordering::Relaxed), 0);
    }
}
