//! The deadline board the warm window's spinners follow: one per machine, so that the
//! spinners one process runs (each CPU's spinner belongs to the first process that
//! claimed it) keep the CPUs warm for the touches of every process.
//!
//! The board is three atomics at the start of a shared memory file,
//! [`BOARD_PATH`] (created zero-filled, mode 0666, by the first process that needs it;
//! a new layout gets a new name): `until`, the deadline in `CLOCK_MONOTONIC`
//! nanoseconds, which every process reads the same; `asleep`, the spinners about to wait
//! or waiting; and `seq`, the futex word they wait on. Waits and wakes are shared futex
//! operations (not `FUTEX_PRIVATE_FLAG`), which work across the processes that map the
//! file. Where the file cannot be opened or mapped (no `/dev/shm`, another user's file),
//! the process gets a board of its own and warms only for its own touches, as before.
//!
//! Any process of the machine can write the board. The worst it can do is make the
//! spinners spin (at `SCHED_IDLE`: CPU time nothing else wanted) or leave `asleep` high
//! (each touch then makes one wake system call); a spinner never honours a deadline
//! further than [`MAX_HORIZON`] ahead, and a touch replaces such a deadline, so a stale
//! or hostile far deadline neither spins the machine for long nor blocks later touches.

use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

/// Where the machine's board lives (a tmpfs file).
pub(crate) const BOARD_PATH: &str = "/dev/shm/magpie-warm-board-v1";

/// The furthest a deadline may lie ahead and be honoured (see the module docs); windows
/// are clamped to it.
pub(crate) const MAX_HORIZON: Duration = Duration::from_secs(1);

/// The shared state (see the module docs).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Board {
    /// Spin until this `CLOCK_MONOTONIC` time, in nanoseconds.
    pub(crate) until: AtomicU64,
    /// Spinners about to wait or waiting on `seq`, in every process.
    pub(crate) asleep: AtomicU32,
    /// Bumped by each wake: the futex word.
    pub(crate) seq: AtomicU32,
}

/// A process's view of the board: the machine's, mapped, or its own.
#[derive(Debug)]
pub(crate) enum BoardMap {
    /// The machine's board, mapped at this address for `len` bytes.
    Shared { at: *mut Board, len: usize },
    /// The process's own board.
    Private(Box<Board>),
}

// SAFETY: the board is only ever accessed through its atomics, from any thread; the
// mapping lives as long as the `BoardMap` and is unmapped only on drop.
unsafe impl Send for BoardMap {}
// SAFETY: as for `Send`: shared access is through atomics only.
unsafe impl Sync for BoardMap {}

impl BoardMap {
    /// The machine's board, or a board of the process's own where it cannot be mapped.
    pub(crate) fn open() -> BoardMap {
        sys::map(BOARD_PATH).unwrap_or_else(|| BoardMap::Private(Box::default()))
    }

    /// The board.
    pub(crate) fn board(&self) -> &Board {
        match self {
            // SAFETY: `at` is a live mapping of at least `size_of::<Board>()` bytes,
            // page-aligned (so aligned for `Board`), readable and writable, until drop;
            // all access is through atomics, which any other mapper uses too.
            BoardMap::Shared { at, .. } => unsafe { &**at },
            BoardMap::Private(b) => b,
        }
    }

    /// Whether this is the machine's board.
    #[cfg(test)]
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, BoardMap::Shared { .. })
    }
}

impl Drop for BoardMap {
    fn drop(&mut self) {
        if let BoardMap::Shared { at, len } = *self {
            sys::unmap(at, len);
        }
    }
}

/// The `CLOCK_MONOTONIC` time in nanoseconds: the same clock in every process of the
/// machine.
pub(crate) fn now_ns() -> u64 {
    sys::monotonic_ns()
}

/// Waits on `word` while it holds `expected` (returns at once if it does not, on a wake,
/// or spuriously: callers check their condition again).
pub(crate) fn wait(word: &AtomicU32, expected: u32) {
    sys::futex_wait(word, expected);
}

/// Wakes every waiter on `word`, in every process that maps it.
pub(crate) fn wake_all(word: &AtomicU32) {
    sys::futex_wake_all(word);
}

#[cfg(target_os = "linux")]
mod sys {
    use std::ffi::CString;
    use std::sync::atomic::AtomicU32;

    use super::{Board, BoardMap};

    /// The board file at `path`, created zero-filled if absent and mapped shared; `None`
    /// where any step fails.
    pub(super) fn map(path: &str) -> Option<BoardMap> {
        let c = CString::new(path).ok()?;
        let len = 4096usize.max(std::mem::size_of::<Board>());
        // SAFETY: open(2) with a NUL-terminated path and constant flags; it returns a new
        // descriptor or -1.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o666 as libc::c_uint,
            )
        };
        if fd < 0 {
            return None;
        }
        let mapped = (|| {
            // Every process's umask left aside: any user's processes may share it.
            // SAFETY: fchmod(2) on the descriptor just opened.
            unsafe { libc::fchmod(fd, 0o666) };
            let mut st: libc::stat = unsafe {
                // SAFETY: `stat` is plain data for which all zeroes is valid.
                std::mem::zeroed()
            };
            // SAFETY: fstat(2) writes one `stat` through a pointer to a live local.
            if unsafe { libc::fstat(fd, &mut st) } != 0 {
                return None;
            }
            if (st.st_mode & libc::S_IFMT) != libc::S_IFREG {
                return None;
            }
            // Growing a new file is idempotent between racing creators; a file already
            // this long keeps its contents.
            if (st.st_size as u64) < len as u64 {
                // SAFETY: ftruncate(2) on the descriptor just opened.
                if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
                    return None;
                }
            }
            // SAFETY: a fresh shared mapping of `len` bytes of the file, readable and
            // writable; the kernel picks the address.
            let at = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if at == libc::MAP_FAILED {
                return None;
            }
            Some(BoardMap::Shared {
                at: at.cast::<Board>(),
                len,
            })
        })();
        // SAFETY: closes the descriptor opened above; the mapping stays valid.
        unsafe { libc::close(fd) };
        mapped
    }

    /// Unmaps a board that `map` mapped.
    pub(super) fn unmap(at: *mut Board, len: usize) {
        // SAFETY: `at` and `len` are exactly what `map`'s mmap returned and took, and
        // nothing uses the mapping after its `BoardMap` drops.
        unsafe { libc::munmap(at.cast::<libc::c_void>(), len) };
    }

    pub(super) fn monotonic_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime(2) writes one `timespec` through a pointer to a live local.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    }

    pub(super) fn futex_wait(word: &AtomicU32, expected: u32) {
        // SAFETY: FUTEX_WAIT on a live, aligned 32-bit atomic, with no timeout; the kernel
        // only reads the word and compares it with `expected`.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }

    pub(super) fn futex_wake_all(word: &AtomicU32) {
        // SAFETY: FUTEX_WAKE on a live, aligned 32-bit atomic; it only wakes waiters.
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! No spinners run off Linux: the board is the process's own and nothing waits.
    use std::sync::atomic::AtomicU32;

    use super::{Board, BoardMap};

    pub(super) fn map(_path: &str) -> Option<BoardMap> {
        None
    }

    pub(super) fn unmap(_at: *mut Board, _len: usize) {}

    pub(super) fn monotonic_ns() -> u64 {
        use std::sync::OnceLock;
        use std::time::Instant;
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    pub(super) fn futex_wait(_word: &AtomicU32, _expected: u32) {
        std::thread::yield_now();
    }

    pub(super) fn futex_wake_all(_word: &AtomicU32) {}
}
