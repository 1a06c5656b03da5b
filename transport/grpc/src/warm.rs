//! [`WarmCpus`]: keeps the process's CPUs from halting for a short window after its
//! runtimes go idle, so that the next request or response of a burst of steps does not
//! pay the wake-up of a halted CPU at each hop.
//!
//! # Why
//!
//! A runtime thread that waits for the next request sleeps in `epoll_wait`; with nothing
//! else to run, its CPU halts. Waking a halted CPU takes an inter-processor interrupt, and
//! on a virtual machine a VM exit and re-entry too: on a 2-vCPU KVM guest, 20–40 µs per
//! hop, more than the trivial remote step itself. A CPU that runs something, even a thread
//! of the lowest priority, takes the wake-up at once.
//!
//! # What it does
//!
//! One spinner thread per CPU the process may run on, each pinned to its CPU and of
//! scheduling class `SCHED_IDLE`: it runs only when nothing else wants that CPU, and any
//! woken thread preempts it at once. A runtime that goes idle calls [`WarmCpus::touch`]
//! (from tokio's `on_thread_park` hook), which moves the shared deadline to now + the
//! window; the spinners spin (with the CPU's spin-loop hint) until the deadline passes,
//! then sleep on a condition variable until the next touch.
//!
//! # What it promises
//!
//! - An idle process spins for at most the window after its last touch, then every
//!   spinner sleeps; nothing wakes a sleeping spinner but a touch or the end of the last
//!   [`WarmCpus`] handle (no timer, no periodic wake).
//! - The spinners take no CPU time that another thread wants (`SCHED_IDLE`); a spinner
//!   that cannot be made `SCHED_IDLE` ends instead of spinning at normal priority.
//! - They cost CPU time the machine would otherwise spend halted: at most the window per
//!   CPU after each touch, and all of it during a burst of steps closer together than the
//!   window. On a CPU with hyperthreads, a spinning sibling also slows its twin a little.
//!   In a container with a CPU quota (cgroup `cpu.max`), spinning counts against the
//!   quota like any other CPU time: turn the window off there.
//! - Spinners are shared by every handle of the process (servers and clients), started by
//!   the first and stopped (and joined) when the last is dropped.
//! - Linux only; elsewhere [`WarmCpus::start`] starts no thread and a touch does nothing.
//!
//! # Protocol and memory ordering
//!
//! `until` is the deadline (nanoseconds since the process's epoch), only ever raised
//! (`fetch_max`). `asleep` counts spinners about to wait or waiting. A spinner that finds
//! the deadline passed takes the mutex, increments `asleep`, reads `until` again and waits
//! only if it still passed; a toucher raises `until`, then reads `asleep` and, if non-zero,
//! notifies under the mutex. Both pairs are `SeqCst`, so in their single total order either
//! the spinner's increment comes first (the toucher sees it and notifies; the spinner holds
//! the mutex from the increment until it waits, so the notification cannot come between)
//! or the toucher's raise does (the spinner's second read sees the new deadline and does
//! not wait): no touch is lost. `stop` is set and notified the same way.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Name prefix of the spinner threads (`magpie-warm-<cpu>`).
pub const SPINNER_THREAD_PREFIX: &str = "magpie-warm-";

/// State shared by the spinners and the handles.
struct Shared {
    epoch: Instant,
    /// Spin until this many nanoseconds after `epoch`.
    until: AtomicU64,
    /// Spinners about to wait or waiting on `wake`.
    asleep: AtomicUsize,
    /// Spinners spinning now.
    spinning: AtomicUsize,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    /// Times a spinner woke from its sleep to spin.
    wakes: AtomicU64,
    /// Nanoseconds spent spinning, all spinners together.
    spun_ns: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The spinners of the process; stopped and joined when the last handle drops.
struct Spinners {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.lock.lock();
            self.shared.wake.notify_all();
        }
        for t in self.threads.drain(..) {
            // A spinner that panicked has nothing left to stop.
            let _ = t.join();
        }
    }
}

/// The process's spinners while any handle holds them.
static RUNNING: Mutex<Weak<Spinners>> = Mutex::new(Weak::new());

/// A handle on the process's CPU-warming spinners with its own window (see the module
/// docs): [`touch`](WarmCpus::touch) keeps every CPU from halting for the window.
#[derive(Clone)]
pub struct WarmCpus {
    spinners: Arc<Spinners>,
    window_ns: u64,
}

impl std::fmt::Debug for WarmCpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmCpus")
            .field("window_ns", &self.window_ns)
            .field("spinners", &self.spinners.threads.len())
            .finish()
    }
}

/// What the spinners of the process have done so far ([`WarmCpus::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarmStats {
    /// Spinner threads (one per CPU the process may run on; 0 off Linux).
    pub spinners: usize,
    /// Spinners spinning now.
    pub spinning: usize,
    /// Spinners asleep (or about to sleep) now.
    pub asleep: usize,
    /// Times a spinner woke from its sleep to spin.
    pub wakes: u64,
    /// Time spent spinning, all spinners together.
    pub spun: Duration,
}

impl WarmCpus {
    /// A handle with `window`, starting the process's spinners unless another handle has;
    /// `None` for a zero window (nothing to keep warm).
    pub fn start(window: Duration) -> Option<WarmCpus> {
        if window.is_zero() {
            return None;
        }
        let mut running = RUNNING.lock();
        let spinners = running.upgrade().unwrap_or_else(|| {
            let s = Arc::new(spawn_spinners());
            *running = Arc::downgrade(&s);
            s
        });
        Some(WarmCpus {
            spinners,
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
        })
    }

    /// The window this handle keeps the CPUs warm for after a touch.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.window_ns)
    }

    /// Keeps every CPU from halting until the window has passed from now (or longer, if
    /// another touch asked for longer). Cheap when the spinners are already warm for
    /// most of the window (a clock read and a load); wakes sleeping spinners otherwise.
    pub fn touch(&self) {
        let s = &self.spinners.shared;
        if self.spinners.threads.is_empty() {
            return;
        }
        let until = s.now_ns().saturating_add(self.window_ns);
        // Within an eighth of the window of the deadline already set: leave the shared
        // line alone (the spinners read it all the time).
        if until
            <= s.until
                .load(Ordering::Relaxed)
                .saturating_add(self.window_ns / 8)
        {
            return;
        }
        s.until.fetch_max(until, Ordering::SeqCst);
        if s.asleep.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock();
            s.wake.notify_all();
        }
    }

    /// What the spinners have done so far.
    pub fn stats(&self) -> WarmStats {
        let s = &self.spinners.shared;
        WarmStats {
            spinners: self.spinners.threads.len(),
            spinning: s.spinning.load(Ordering::SeqCst),
            asleep: s.asleep.load(Ordering::SeqCst),
            wakes: s.wakes.load(Ordering::Relaxed),
            spun: Duration::from_nanos(s.spun_ns.load(Ordering::Relaxed)),
        }
    }

    /// The stats of the process's spinners if any handle holds them now.
    pub fn running_stats() -> Option<WarmStats> {
        let spinners = RUNNING.lock().upgrade()?;
        Some(
            WarmCpus {
                spinners,
                window_ns: 0,
            }
            .stats(),
        )
    }
}

/// One spinner per CPU the process may run on (none off Linux, or when a thread cannot
/// be started: warming is an optimisation, never a failure).
fn spawn_spinners() -> Spinners {
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        until: AtomicU64::new(0),
        asleep: AtomicUsize::new(0),
        spinning: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        lock: Mutex::new(()),
        wake: Condvar::new(),
        wakes: AtomicU64::new(0),
        spun_ns: AtomicU64::new(0),
    });
    let mut threads = Vec::new();
    for cpu in sys::allowed_cpus() {
        let s = Arc::clone(&shared);
        let started = std::thread::Builder::new()
            .name(format!("{SPINNER_THREAD_PREFIX}{cpu}"))
            .spawn(move || {
                if let Err(e) = sys::become_idle_spinner(cpu) {
                    tracing::warn!(cpu, error = %e, "CPU warming spinner not started");
                    return;
                }
                spin(&s);
            });
        match started {
            Ok(t) => threads.push(t),
            Err(e) => tracing::warn!(cpu, error = %e, "CPU warming spinner not started"),
        }
    }
    Spinners { shared, threads }
}

/// A spinner's life: spin while the deadline is ahead, sleep until a touch otherwise,
/// end on `stop`.
fn spin(s: &Shared) {
    loop {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let start = s.now_ns();
        if start < s.until.load(Ordering::Acquire) {
            s.spinning.fetch_add(1, Ordering::SeqCst);
            let mut now = start;
            while now < s.until.load(Ordering::Acquire) && !s.stop.load(Ordering::Relaxed) {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                now = s.now_ns();
            }
            s.spinning.fetch_sub(1, Ordering::SeqCst);
            s.spun_ns.fetch_add(now - start, Ordering::Relaxed);
            continue;
        }
        let mut guard = s.lock.lock();
        s.asleep.fetch_add(1, Ordering::SeqCst);
        if !s.stop.load(Ordering::SeqCst) && s.now_ns() >= s.until.load(Ordering::SeqCst) {
            s.wake.wait(&mut guard);
            s.wakes.fetch_add(1, Ordering::Relaxed);
        }
        s.asleep.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(target_os = "linux")]
mod sys {
    /// The CPUs this thread may run on (its affinity mask), in order.
    pub(super) fn allowed_cpus() -> Vec<usize> {
        // SAFETY: `cpu_set_t` is plain data for which all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed; pid 0 is the
        // calling thread.
        let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        if rc != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below `CPU_SETSIZE`, the set's capacity.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect()
    }

    /// Pins the calling thread to `cpu` and makes it `SCHED_IDLE`.
    pub(super) fn become_idle_spinner(cpu: usize) -> std::io::Result<()> {
        // SAFETY: as in `allowed_cpus`.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` came from `allowed_cpus`, below `CPU_SETSIZE`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 is this thread.
        if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid `sched_param`; pid 0 is this thread; SCHED_IDLE
        // needs priority 0 and no privilege.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    /// No spinners off Linux (no `SCHED_IDLE` to keep them from taking wanted CPU time).
    pub(super) fn allowed_cpus() -> Vec<usize> {
        Vec::new()
    }

    pub(super) fn become_idle_spinner(_cpu: usize) -> std::io::Result<()> {
        Err(std::io::Error::other("no SCHED_IDLE on this platform"))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Polls `cond` every millisecond for up to 30 s (a hang guard, not a timing claim).
    fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < end, "hang guard: never {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // One test: the spinners are per process, and the tests of this binary share it.
    #[test]
    fn spinners_spin_after_a_touch_sleep_after_the_window_and_end_with_the_last_handle() {
        assert!(WarmCpus::start(Duration::ZERO).is_none());
        let cpus = sys::allowed_cpus().len();
        assert!(cpus >= 1);
        let a = WarmCpus::start(Duration::from_millis(2)).unwrap();
        let b = WarmCpus::start(Duration::from_millis(1)).unwrap();
        assert_eq!(a.stats().spinners, cpus);
        assert_eq!(b.stats().spinners, cpus, "one set of spinners per process");
        // Untouched, every spinner goes to sleep.
        eventually("all asleep", || a.stats().asleep == cpus);
        let before = a.stats();
        assert_eq!(before.spinning, 0);
        a.touch();
        // The touch woke every spinner and each spun (the window has passed by the time
        // they are all asleep again).
        eventually("woken and asleep again", || {
            let s = a.stats();
            s.wakes >= before.wakes + cpus as u64 && s.asleep == cpus
        });
        let after = a.stats();
        assert!(after.spun > before.spun, "{before:?} {after:?}");
        assert_eq!(after.spinning, 0);
        drop(a);
        assert!(WarmCpus::running_stats().is_some(), "b still holds them");
        drop(b);
        assert!(WarmCpus::running_stats().is_none());
        assert!(
            spinner_threads() == 0,
            "the last handle's drop joined every spinner"
        );
    }

    fn spinner_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
            .filter(|c| c.starts_with(SPINNER_THREAD_PREFIX))
            .count()
    }
}
