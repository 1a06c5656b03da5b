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
//! (from tokio's `on_thread_park` hook), which moves the deadline to now + the window;
//! the spinners spin (with the CPU's spin-loop hint) until the deadline passes, then sleep
//! on a futex until the next touch. The deadline and the futex are the machine's
//! (`board.rs`, one per user): every process's touches warm the CPUs, whichever of the
//! user's processes runs their spinners (see below).
//!
//! # What it promises
//!
//! - An idle process spins for at most the window after its last touch, then every
//!   spinner sleeps; nothing wakes a sleeping spinner but a touch (of any process of the
//!   machine) or the end of the last [`WarmCpus`] handle of a process (no timer, no
//!   periodic wake). No deadline further than one second ahead is honoured (windows are
//!   clamped to it).
//! - The spinners take no CPU time that another thread wants (`SCHED_IDLE`); a spinner
//!   that cannot be pinned to its CPU or made `SCHED_IDLE` ends instead of spinning at
//!   normal priority. [`WarmStats::spinners`] (and the `magpie_warm_spinners` metric)
//!   counts only the spinners that run; the ones that ended so are
//!   [`WarmStats::failed`], with one warning for all of them. [`WarmCpus::start`] returns
//!   once every spinner has said which it is (or after [`STARTUP_WAIT`]), so the counts
//!   are exact from then on. A process whose host refuses `SCHED_IDLE` everywhere has no
//!   spinner, and a touch does nothing.
//! - They cost CPU time the machine would otherwise spend halted: at most the window per
//!   CPU after each touch, and all of it during a burst of steps closer together than the
//!   window. On a CPU with hyperthreads, a spinning sibling also slows its twin a little.
//!   In a container with a CPU quota (cgroup `cpu.max`), spinning counts against the
//!   quota like any other CPU time: turn the window off there.
//! - Spinners are shared by every handle of the process (servers and clients), started by
//!   the first and stopped (and joined) when the last is dropped.
//! - At most one process of a user of the machine (more exactly, of the network
//!   namespace) runs a spinner on each CPU: a spinner claims its CPU for its whole life by
//!   binding the abstract Unix socket `magpie-warm-cpu-<uid>-<cpu>` (the kernel frees the
//!   name when the spinner's socket closes: when the spinners stop, or the process dies
//!   however it dies). A spinner whose CPU another process's spinner holds ends at start
//!   ([`WarmStats::elsewhere`], `magpie_warm_spinners_elsewhere`); the process's touches
//!   still warm that CPU, through the user's deadline that the owner's spinner follows.
//!   The names are not secret: another user who binds them only leaves this user's
//!   processes without spinners (no warming), nothing worse.
//!   Several servers on one machine (a cluster on one host, as the TensorFlow-client bench
//!   runs it) would otherwise each run a spinner per CPU: measured on a 2-vCPU VM with
//!   three server processes, their training step took 830–890 µs so, 580–620 µs with no
//!   spinner at all, and 495–550 µs with one process's spinners. Where the claim socket
//!   cannot be made (a sandbox that forbids it) a spinner runs unclaimed, and where the
//!   board cannot be mapped the process follows a deadline of its own, as before.
//! - Linux only; elsewhere [`WarmCpus::start`] starts no thread and a touch does nothing.
//!
//! # How many spinners
//!
//! One per CPU the process may run on, not one per runtime thread: the kernel picks the
//! CPU a woken thread runs on among the idle ones, and a CPU that runs only a
//! `SCHED_IDLE` thread counts as idle there (Linux 5.4 and later: `select_idle_sibling`
//! and its helpers take `sched_idle_cpu` as idle), so a wake-up may land on any allowed CPU;
//! warming only some of them would leave the others halted for the wakes that land on
//! them. On a large host that is many threads, but a sleeping spinner costs only its
//! thread (a kernel task and the few stack pages it touched; it is started with a
//! [`SPINNER_STACK_BYTES`] stack) and no CPU time. What grows with the CPUs is the
//! spinning after each touch (the window on every CPU nothing else wants): restrict the
//! process's CPU affinity (`taskset`, a cpuset) to bound both, or turn the window off.
//!
//! # Protocol and memory ordering
//!
//! On the board (`board.rs`): `until` is the deadline (`CLOCK_MONOTONIC` nanoseconds),
//! raised by touches (`fetch_update` to the larger, or over a deadline past the horizon);
//! `asleep` counts spinners about to wait or waiting; `seq` is the futex word. A spinner
//! that finds the deadline passed increments `asleep`, reads `seq`, reads `until` (and
//! its process's `stop`) again, and waits on `seq` only if the deadline still passed; a
//! toucher raises `until`, then reads `asleep` and, if non-zero, increments `seq` and
//! wakes every waiter. All are `SeqCst`, so in their single total order either the
//! spinner's read of `until` comes after the raise (it does not wait), or its increment
//! of `asleep` and its read of `seq` come before the toucher's read of `asleep` and
//! increment of `seq` (the toucher wakes, and the futex wait returns at once on a `seq`
//! that moved or is woken): no touch is lost. `stop` is set, then `seq` incremented and
//! every waiter woken, the same way.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use board::{BoardMap, MAX_HORIZON};

mod board;

/// Name prefix of the spinner threads (`magpie-warm-<cpu>`).
pub const SPINNER_THREAD_PREFIX: &str = "magpie-warm-";

/// Stack size of a spinner thread: its loop needs little, and a warning at start.
pub(crate) const SPINNER_STACK_BYTES: usize = 64 << 10;

/// How long [`WarmCpus::start`] waits for the spinners it started to say whether they
/// run (each pins itself and changes its scheduling class, a few system calls): a
/// deadline for a stalled thread, not a cost paid in the normal case.
pub(crate) const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// State shared by the process's spinners and handles.
struct Shared {
    /// The deadline and the futex (the machine's, or the process's own).
    board: BoardMap,
    /// The process's spinners about to wait or waiting.
    asleep: AtomicUsize,
    /// Spinners spinning now.
    spinning: AtomicUsize,
    /// Spinners that were pinned and made `SCHED_IDLE`, and have not ended.
    running: AtomicUsize,
    /// Spinners that ended at start: pinning or `SCHED_IDLE` was refused.
    failed: AtomicUsize,
    stop: AtomicBool,
    /// Times a spinner woke from its sleep.
    wakes: AtomicU64,
    /// Nanoseconds spent spinning, all spinners together.
    spun_ns: AtomicU64,
    /// Spinners that ended at start: another process's spinner holds their CPU.
    elsewhere: AtomicUsize,
}

impl Shared {
    /// Wakes every spinner that sleeps on the board (every process's).
    fn wake(&self) {
        let b = self.board.board();
        b.seq.fetch_add(1, Ordering::SeqCst);
        board::wake_all(&b.seq);
    }
}

/// [`MAX_HORIZON`] in nanoseconds.
const MAX_HORIZON_NS: u64 = MAX_HORIZON.as_nanos() as u64;

/// Whether `until` asks for spinning at `now`: ahead, and not past the horizon.
fn ahead(now: u64, until: u64) -> bool {
    now < until && until - now <= MAX_HORIZON_NS
}

/// The spinners of the process; stopped and joined when the last handle drops.
struct Spinners {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
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
            .field(
                "spinners",
                &self.spinners.shared.running.load(Ordering::Relaxed),
            )
            .finish()
    }
}

/// What the spinners of the process have done so far ([`WarmCpus::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarmStats {
    /// Spinner threads that run (one per CPU the process may run on, less those of
    /// [`failed`](Self::failed); 0 off Linux).
    pub spinners: usize,
    /// Spinner threads that ended at start because their CPU pinning or `SCHED_IDLE` was
    /// refused (see the module docs); they are not in [`spinners`](Self::spinners).
    pub failed: usize,
    /// Spinners spinning now.
    pub spinning: usize,
    /// Spinners asleep (or about to sleep) now.
    pub asleep: usize,
    /// Times a spinner woke from its sleep to spin.
    pub wakes: u64,
    /// Time spent spinning, all spinners together.
    pub spun: Duration,
    /// Spinner threads that ended at start because another process's spinner holds their
    /// CPU (see the module docs); they are not in [`spinners`](Self::spinners).
    pub elsewhere: usize,
}

impl WarmCpus {
    /// A handle with `window` (at most one second: longer is clamped), starting the
    /// process's spinners unless another handle has; `None` for a zero window (nothing to
    /// keep warm).
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
            window_ns: u64::try_from(window.min(MAX_HORIZON).as_nanos()).unwrap_or(MAX_HORIZON_NS),
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
        // No spinner here nor in another process for this one's CPUs: nothing to warm.
        if s.running.load(Ordering::Relaxed) == 0 && s.elsewhere.load(Ordering::Relaxed) == 0 {
            return;
        }
        let b = s.board.board();
        let now = board::now_ns();
        let until = now.saturating_add(self.window_ns);
        let current = b.until.load(Ordering::Relaxed);
        // Within an eighth of the window of a deadline already set: leave the shared line
        // alone (the spinners read it all the time).
        if ahead(now, current) && until <= current.saturating_add(self.window_ns / 8) {
            return;
        }
        // Raise the deadline, or replace one past the horizon (stale or hostile).
        let raised = b
            .until
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c < until || c.saturating_sub(now) > MAX_HORIZON_NS).then_some(until)
            })
            .is_ok();
        if raised && b.asleep.load(Ordering::SeqCst) > 0 {
            s.wake();
        }
    }

    /// What the spinners have done so far.
    pub fn stats(&self) -> WarmStats {
        let s = &self.spinners.shared;
        WarmStats {
            spinners: s.running.load(Ordering::SeqCst),
            failed: s.failed.load(Ordering::SeqCst),
            spinning: s.spinning.load(Ordering::SeqCst),
            asleep: s.asleep.load(Ordering::SeqCst),
            wakes: s.wakes.load(Ordering::Relaxed),
            spun: Duration::from_nanos(s.spun_ns.load(Ordering::Relaxed)),
            elsewhere: s.elsewhere.load(Ordering::SeqCst),
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

/// Handles lent to a runtime shared by owners that come and go (the client's runtime of
/// async calls, which lives as long as the process): its park hook touches the lent
/// handle with the longest window while any is lent, and holds none itself, so the
/// spinners still stop with their last owner. A touch that finds the list being changed
/// (an owner lending or taking back) is skipped rather than waited for: the hook never
/// blocks its runtime's thread.
#[derive(Debug)]
pub(crate) struct WarmLenders {
    /// The lent handles by lender id, longest window first.
    lent: Mutex<Vec<(u64, WarmCpus)>>,
    next_id: AtomicU64,
}

impl WarmLenders {
    /// No handle lent.
    pub(crate) const fn new() -> WarmLenders {
        WarmLenders {
            lent: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Lends `warm` until the returned guard drops.
    pub(crate) fn lend(&'static self, warm: WarmCpus) -> WarmLent {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut lent = self.lent.lock();
        let at = lent.partition_point(|(_, w)| w.window_ns >= warm.window_ns);
        lent.insert(at, (id, warm));
        WarmLent { lenders: self, id }
    }

    /// Touches the lent handle with the longest window, if any (see the type's docs).
    pub(crate) fn touch(&self) {
        if let Some(lent) = self.lent.try_lock() {
            if let Some((_, warm)) = lent.first() {
                warm.touch();
            }
        }
    }
}

/// A handle lent to [`WarmLenders`]; taken back when dropped.
#[derive(Debug)]
pub(crate) struct WarmLent {
    lenders: &'static WarmLenders,
    id: u64,
}

impl Drop for WarmLent {
    fn drop(&mut self) {
        let taken = {
            let mut lent = self.lenders.lent.lock();
            let at = lent.iter().position(|(id, _)| *id == self.id);
            at.map(|at| lent.remove(at))
        };
        // Dropped outside the lock: the last handle joins the spinners.
        drop(taken);
    }
}

/// One spinner per CPU the process may run on (none off Linux, or when a thread cannot
/// be started: warming is an optimisation, never a failure).
fn spawn_spinners() -> Spinners {
    spawn_spinners_with(sys::allowed_cpus(), sys::become_idle_spinner)
}

/// One spinner per CPU of `cpus`, each first calling `setup` with its CPU (pin it, make
/// it `SCHED_IDLE`) and ending at once if that fails. Returns once every spinner started
/// has reported (or after [`STARTUP_WAIT`]), with the ended ones joined and counted in
/// `failed`. `setup` is a parameter so that tests can make it fail.
fn spawn_spinners_with(cpus: Vec<usize>, setup: fn(usize) -> std::io::Result<()>) -> Spinners {
    let shared = Arc::new(Shared {
        board: BoardMap::open(),
        asleep: AtomicUsize::new(0),
        spinning: AtomicUsize::new(0),
        running: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        wakes: AtomicU64::new(0),
        spun_ns: AtomicU64::new(0),
        elsewhere: AtomicUsize::new(0),
    });
    let (report, reports) = std::sync::mpsc::channel::<(usize, Started)>();
    let mut threads = Vec::new();
    for cpu in cpus {
        let s = Arc::clone(&shared);
        let report = report.clone();
        let started = std::thread::Builder::new()
            .name(format!("{SPINNER_THREAD_PREFIX}{cpu}"))
            .stack_size(SPINNER_STACK_BYTES)
            .spawn(move || {
                if let Err(e) = setup(cpu) {
                    s.failed.fetch_add(1, Ordering::SeqCst);
                    let _ = report.send((cpu, Started::Refused(e)));
                    return;
                }
                // Held for the spinner's life: its CPU is this process's to warm.
                let Some(_claim) = sys::CpuClaim::new(cpu).take() else {
                    s.elsewhere.fetch_add(1, Ordering::SeqCst);
                    let _ = report.send((cpu, Started::Elsewhere));
                    return;
                };
                s.running.fetch_add(1, Ordering::SeqCst);
                let _ = report.send((cpu, Started::Running));
                drop(report);
                spin(&s);
                s.running.fetch_sub(1, Ordering::SeqCst);
            });
        match started {
            Ok(t) => threads.push((cpu, t)),
            Err(e) => tracing::warn!(cpu, error = %e, "CPU warming spinner not started"),
        }
    }
    drop(report);
    // Wait for every spinner's report, so that the counts are exact when `start` returns.
    let deadline = Instant::now() + STARTUP_WAIT;
    let mut refused: Vec<(usize, std::io::Error)> = Vec::new();
    let mut elsewhere: Vec<usize> = Vec::new();
    for _ in 0..threads.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match reports.recv_timeout(left) {
            Ok((_, Started::Running)) => {}
            Ok((cpu, Started::Refused(e))) => refused.push((cpu, e)),
            Ok((cpu, Started::Elsewhere)) => elsewhere.push(cpu),
            Err(_) => break,
        }
    }
    if !elsewhere.is_empty() {
        tracing::debug!(
            cpus = ?elsewhere,
            "CPU warming: another process's spinners warm these CPUs; this process runs none there"
        );
    }
    if let Some((cpu, e)) = refused.first() {
        tracing::warn!(
            refused = refused.len(),
            of = threads.len(),
            cpu,
            error = %e,
            "CPU warming: spinners could not be pinned and made SCHED_IDLE, and ended \
             (the warm window covers only the CPUs of the others)"
        );
    }
    // Join the spinners that ended (they returned right after their report).
    let (ended, threads): (Vec<_>, Vec<_>) = threads
        .into_iter()
        .partition(|(cpu, _)| refused.iter().any(|(c, _)| c == cpu) || elsewhere.contains(cpu));
    for (_, t) in ended {
        let _ = t.join();
    }
    Spinners {
        shared,
        threads: threads.into_iter().map(|(_, t)| t).collect(),
    }
}

/// How a spinner's start went, as it reports to [`spawn_spinners_with`].
enum Started {
    /// Pinned, `SCHED_IDLE`, its CPU claimed: it runs.
    Running,
    /// Pinning or `SCHED_IDLE` was refused: it ended.
    Refused(std::io::Error),
    /// Another process's spinner holds its CPU: it ended.
    Elsewhere,
}

/// A spinner's life: spin while the board's deadline is ahead, sleep until a touch
/// otherwise, end on `stop` (the protocol is in the module docs).
fn spin(s: &Shared) {
    let b = s.board.board();
    loop {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let start = board::now_ns();
        if ahead(start, b.until.load(Ordering::Acquire)) {
            s.spinning.fetch_add(1, Ordering::SeqCst);
            let mut now = start;
            while ahead(now, b.until.load(Ordering::Acquire)) && !s.stop.load(Ordering::Relaxed) {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                now = board::now_ns();
            }
            s.spinning.fetch_sub(1, Ordering::SeqCst);
            s.spun_ns.fetch_add(now - start, Ordering::Relaxed);
            continue;
        }
        s.asleep.fetch_add(1, Ordering::SeqCst);
        b.asleep.fetch_add(1, Ordering::SeqCst);
        let seq = b.seq.load(Ordering::SeqCst);
        let until = b.until.load(Ordering::SeqCst);
        if !s.stop.load(Ordering::SeqCst) && !ahead(board::now_ns(), until) {
            board::wait(&b.seq, seq);
            s.wakes.fetch_add(1, Ordering::Relaxed);
        }
        b.asleep.fetch_sub(1, Ordering::SeqCst);
        s.asleep.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::os::fd::{FromRawFd, OwnedFd};

    /// The machine-wide claim on one CPU that a spinner holds for its life: the
    /// abstract Unix socket name `magpie-warm-cpu-<uid>-<cpu>`, bound by one socket at a time
    /// in the network namespace (see the module docs).
    pub(super) struct CpuClaim {
        addr: libc::sockaddr_un,
        len: libc::socklen_t,
    }

    impl CpuClaim {
        /// The claim on `cpu`, not taken.
        pub(super) fn new(cpu: usize) -> CpuClaim {
            // SAFETY: `sockaddr_un` is plain data for which all zeroes is valid.
            let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            // SAFETY: geteuid(2) takes nothing and cannot fail.
            let uid = unsafe { libc::geteuid() };
            let name = format!("magpie-warm-cpu-{uid}-{cpu}");
            // `sun_path[0]` stays 0: an abstract name, no file. The name is far shorter
            // than `sun_path` (108 bytes).
            for (slot, byte) in addr.sun_path[1..].iter_mut().zip(name.bytes()) {
                *slot = byte as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
            CpuClaim {
                addr,
                len: len as libc::socklen_t,
            }
        }

        /// Takes the claim: `Some` with what holds it until dropped (or with nothing where
        /// the socket cannot be made: then nothing coordinates the spinners, and this one
        /// runs unclaimed), `None` while another process holds it.
        pub(super) fn take(&self) -> Option<Option<OwnedFd>> {
            // SAFETY: socket(2) with constant arguments; it returns a new descriptor or -1.
            let fd =
                unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Some(None);
            }
            // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: `addr` is a valid `sockaddr_un` and `len` covers the family and the
            // name within it; bind reads only those bytes.
            let rc = unsafe {
                libc::bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    (&self.addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
                    self.len,
                )
            };
            if rc == 0 {
                return Some(Some(fd));
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EADDRINUSE) => None,
                // Anything else (a sandbox refusing the bind): spin unclaimed.
                _ => Some(None),
            }
        }
    }

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
    /// Nothing to claim off Linux, where no spinner runs.
    pub(super) struct CpuClaim;

    impl CpuClaim {
        pub(super) fn new(_cpu: usize) -> CpuClaim {
            CpuClaim
        }

        pub(super) fn take(&self) -> Option<Option<()>> {
            Some(None)
        }
    }

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
    use magpie_scheduler::test_support::{eventually, threads_where};

    /// The spinners' threads are per process (named by [`SPINNER_THREAD_PREFIX`]), so the
    /// tests of this module take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn spinners_spin_after_a_touch_sleep_after_the_window_and_end_with_the_last_handle() {
        let _serial = SERIAL.lock();
        assert!(WarmCpus::start(Duration::ZERO).is_none());
        let cpus = sys::allowed_cpus().len();
        assert!(cpus >= 1);
        let a = WarmCpus::start(Duration::from_millis(2)).unwrap();
        let b = WarmCpus::start(Duration::from_millis(1)).unwrap();
        let started = a.stats();
        // Spinners whose CPU another process's spinners hold (a server or bench running
        // on this machine) end at start, as refused ones do.
        assert_eq!(
            started.spinners + started.failed + started.elsewhere,
            cpus,
            "{started:?}"
        );
        assert_eq!(b.stats().spinners, started.spinners, "one set per process");
        assert_eq!(spinner_threads(), started.spinners, "the failed ones ended");
        // A host that refuses SCHED_IDLE (or the pinning) has no spinner to watch: the
        // failure path is `refused_spinners_end_and_are_not_counted`.
        let n = started.spinners;
        if n > 0 {
            // Untouched, every spinner goes to sleep.
            eventually("all asleep", || a.stats().asleep == n);
            let before = a.stats();
            assert_eq!(before.spinning, 0);
            a.touch();
            // The touch woke every spinner, and past the window each sleeps again.
            eventually("woken and asleep again", || {
                let s = a.stats();
                s.wakes >= before.wakes + n as u64 && s.asleep == n
            });
            assert_eq!(a.stats().spinning, 0);
        }
        // A window longer than the hang guard: every spinner is seen spinning however
        // late the loaded machine runs it (no timing claim), and spins until stopped.
        let long = WarmCpus::start(Duration::from_secs(3600)).unwrap();
        let shared = Arc::clone(&long.spinners.shared);
        if n > 0 {
            long.touch();
            eventually("every spinner spinning", || long.stats().spinning == n);
        }
        drop(a);
        drop(long);
        assert!(WarmCpus::running_stats().is_some(), "b still holds them");
        drop(b);
        assert!(WarmCpus::running_stats().is_none());
        // Stopped mid-window: each spinner counted its spinning as it ended.
        assert_eq!(shared.spinning.load(Ordering::SeqCst), 0);
        assert_eq!(shared.running.load(Ordering::SeqCst), 0);
        if n > 0 {
            assert!(shared.spun_ns.load(Ordering::SeqCst) > 0);
        }
        assert!(
            spinner_threads() == 0,
            "the last handle's drop joined every spinner"
        );
    }

    /// Pins and makes `SCHED_IDLE` on even CPUs; refuses odd ones as a host would.
    fn refuse_odd_cpus(cpu: usize) -> std::io::Result<()> {
        if cpu % 2 == 1 {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
        sys::become_idle_spinner(cpu)
    }

    fn refuse_all(_cpu: usize) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }

    #[test]
    fn refused_spinners_end_and_are_not_counted() {
        let _serial = SERIAL.lock();
        let cpus = sys::allowed_cpus();
        // Every spinner refused: none runs, none is counted, a touch does nothing.
        let none = WarmCpus {
            spinners: Arc::new(spawn_spinners_with(cpus.clone(), refuse_all)),
            window_ns: 1_000_000,
        };
        let s = none.stats();
        assert_eq!((s.spinners, s.failed), (0, cpus.len()), "{s:?}");
        assert!(
            none.spinners.threads.is_empty(),
            "the ended ones were joined"
        );
        assert_eq!(spinner_threads(), 0);
        let before = none
            .spinners
            .shared
            .board
            .board()
            .until
            .load(Ordering::SeqCst);
        none.touch();
        assert_eq!(
            none.spinners
                .shared
                .board
                .board()
                .until
                .load(Ordering::SeqCst),
            before,
            "a process with no spinner anywhere leaves the deadline alone"
        );
        drop(none);
        // Some refused: only the others are counted, and they spin after a touch.
        let odd = cpus.iter().filter(|c| *c % 2 == 1).count();
        let some = WarmCpus {
            spinners: Arc::new(spawn_spinners_with(cpus.clone(), refuse_odd_cpus)),
            window_ns: 1_000_000,
        };
        let s = some.stats();
        assert_eq!((s.spinners, s.failed), (cpus.len() - odd, odd), "{s:?}");
        assert_eq!(some.spinners.threads.len(), s.spinners);
        assert_eq!(spinner_threads(), s.spinners);
        if s.spinners > 0 {
            eventually("all asleep", || some.stats().asleep == s.spinners);
            some.touch();
            eventually("woken", || some.stats().wakes >= s.spinners as u64);
        }
        drop(some);
        assert_eq!(spinner_threads(), 0, "joined on drop");
    }

    #[test]
    fn lent_handles_warm_a_shared_runtime_and_keep_nothing_alive() {
        let _serial = SERIAL.lock();
        static LENDERS: WarmLenders = WarmLenders::new();
        LENDERS.touch(); // nothing lent: nothing happens
        assert!(WarmCpus::running_stats().is_none());
        let short = LENDERS.lend(WarmCpus::start(Duration::from_millis(1)).unwrap());
        let long = LENDERS.lend(WarmCpus::start(Duration::from_millis(3)).unwrap());
        {
            let lent = LENDERS.lent.lock();
            let windows: Vec<u64> = lent.iter().map(|(_, w)| w.window_ns).collect();
            assert_eq!(windows, [3_000_000, 1_000_000], "longest first");
        }
        let n = WarmCpus::running_stats().unwrap().spinners;
        if n > 0 {
            eventually("all asleep", || {
                WarmCpus::running_stats().unwrap().asleep == n
            });
            let before = WarmCpus::running_stats().unwrap();
            LENDERS.touch();
            eventually("woken by the lent handle", || {
                WarmCpus::running_stats().unwrap().wakes > before.wakes
            });
        }
        drop(long);
        drop(short);
        assert!(LENDERS.lent.lock().is_empty());
        assert!(
            WarmCpus::running_stats().is_none(),
            "the lenders held no handle of their own"
        );
        assert_eq!(spinner_threads(), 0);
    }

    fn spinner_threads() -> usize {
        threads_where(|name| name.starts_with(SPINNER_THREAD_PREFIX)).len()
    }

    #[test]
    fn a_cpu_another_process_holds_is_left_to_it() {
        let _serial = SERIAL.lock();
        let cpus = sys::allowed_cpus();
        let Some(&cpu) = cpus.first() else {
            return;
        };
        // This test's own claim stands for another process's spinner on `cpu`: the name
        // is machine-wide.
        let claim = sys::CpuClaim::new(cpu);
        let Some(Some(held)) = claim.take() else {
            // Held by a real other process right now, or sockets refused: nothing to
            // simulate.
            return;
        };
        assert!(claim.take().is_none(), "a held claim is refused");
        let warm = WarmCpus::start(Duration::from_secs(3600)).unwrap();
        let s = warm.stats();
        assert!(s.elsewhere >= 1, "{s:?}");
        assert_eq!(s.spinners + s.failed + s.elsewhere, cpus.len(), "{s:?}");
        assert_eq!(spinner_threads(), s.spinners, "the ended ones were joined");
        drop(warm);
        drop(held);
        // With the claim free, a new set of spinners takes the CPU (unless the host
        // refuses spinners there), and gives it back as it stops.
        let warm = WarmCpus::start(Duration::from_secs(3600)).unwrap();
        let s = warm.stats();
        assert_eq!(s.spinners + s.failed + s.elsewhere, cpus.len(), "{s:?}");
        let ran = s.spinners > 0;
        drop(warm);
        if ran {
            assert!(
                matches!(claim.take(), Some(Some(_))),
                "the spinners freed their claims"
            );
        }
    }

    #[test]
    fn another_process_touch_wakes_this_process_spinners() {
        let _serial = SERIAL.lock();
        let warm = WarmCpus::start(Duration::from_millis(1)).unwrap();
        let n = warm.stats().spinners;
        if n == 0 || !warm.spinners.shared.board.is_shared() {
            // No spinner here, or no machine board to share: nothing to watch.
            return;
        }
        eventually("all asleep", || warm.stats().asleep == n);
        let before = warm.stats();
        // Another process's touch, through a mapping of its own of the machine's board.
        let other = BoardMap::open();
        assert!(other.is_shared());
        let b = other.board();
        b.until
            .fetch_max(board::now_ns() + 2_000_000, Ordering::SeqCst);
        if b.asleep.load(Ordering::SeqCst) > 0 {
            b.seq.fetch_add(1, Ordering::SeqCst);
            board::wake_all(&b.seq);
        }
        eventually("woken by the other mapping's touch", || {
            warm.stats().wakes >= before.wakes + n as u64
        });
        eventually("asleep again past its deadline", || {
            warm.stats().asleep == n
        });
        // A deadline past the horizon (stale, or written by anyone) is not honoured, and
        // the next touch replaces it.
        b.until.store(u64::MAX, Ordering::SeqCst);
        warm.touch();
        assert!(b.until.load(Ordering::SeqCst) < u64::MAX);
        eventually("asleep again", || warm.stats().asleep == n);
    }
}
