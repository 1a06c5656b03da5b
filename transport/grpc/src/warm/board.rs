//! The deadline board the warm window's spinners follow: one per user of the machine, so
//! that the spinners one process runs (each CPU's spinner belongs to the first of the
//! user's processes that claimed it) keep the CPUs warm for the touches of every process
//! of that user.
//!
//! The board is three atomics at the start of a shared memory file,
//! `/dev/shm/magpie-warm-board-v1-<uid>` ([`board_path`]; created zero-filled, mode 0600,
//! by the user's first process that needs it; a new layout gets a new name): `until`,
//! the deadline in `CLOCK_MONOTONIC` nanoseconds, which every process reads the same;
//! `asleep`, the spinners about to wait or waiting; and `seq`, the futex word they wait
//! on. Waits and wakes are shared futex operations (not `FUTEX_PRIVATE_FLAG`), which work
//! across the processes that map the file. Where the file cannot be opened or mapped (no
//! `/dev/shm`), or is not a regular file owned by the user, the process gets a board of
//! its own and warms only for its own touches, as before.
//!
//! Only the user's own processes can write the board (the file is the user's, mode 0600:
//! another user cannot truncate it under a mapping, which would fault every reader). A
//! process of the user can make the spinners spin (at `SCHED_IDLE`: CPU time nothing else
//! wanted) or leave `asleep` high (each touch then makes one wake system call, as after a
//! process killed while its spinner slept); a spinner never honours a deadline further
//! than [`MAX_HORIZON`] ahead, and a touch replaces such a deadline, so a stale far
//! deadline neither spins the machine for long nor blocks later touches.

use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

/// Where the user's board lives (a tmpfs file named by the effective user id).
pub(crate) fn board_path() -> String {
    format!("/dev/shm/magpie-warm-board-v1-{}", sys::user_id())
}

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
        sys::map(&board_path()).unwrap_or_else(|| BoardMap::Private(Box::default()))
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
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return None;
        }
        let mapped = (|| {
            let mut st: libc::stat = unsafe {
                // SAFETY: `stat` is plain data for which all zeroes is valid.
                std::mem::zeroed()
            };
            // SAFETY: fstat(2) writes one `stat` through a pointer to a live local.
            if unsafe { libc::fstat(fd, &mut st) } != 0 {
                return None;
            }
            // Only a regular file of this user's: no other user may write (or truncate)
            // what this process maps.
            if (st.st_mode & libc::S_IFMT) != libc::S_IFREG || st.st_uid != user_id() {
                return None;
            }
            if st.st_mode & 0o077 != 0 {
                // SAFETY: fchmod(2) on the descriptor just opened, of a file this user owns.
                if unsafe { libc::fchmod(fd, 0o600) } != 0 {
                    return None;
                }
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

    /// The effective user id.
    pub(super) fn user_id() -> libc::uid_t {
        // SAFETY: geteuid(2) takes nothing and cannot fail.
        unsafe { libc::geteuid() }
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

    pub(super) fn user_id() -> u32 {
        0
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::atomic::Ordering;

    use super::*;

    /// A board file of this test's own under /dev/shm, removed on drop.
    struct Scratch(String);

    impl Scratch {
        fn new(tag: &str) -> Option<Scratch> {
            if !std::path::Path::new("/dev/shm").is_dir() {
                return None;
            }
            let path = format!("/dev/shm/magpie-board-test-{}-{tag}", std::process::id());
            let _ = std::fs::remove_file(&path);
            Some(Scratch(path))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn two_mappings_of_one_board_share_its_atomics_and_the_file_is_the_users_alone() {
        let Some(file) = Scratch::new("shared") else {
            return;
        };
        let a = sys::map(&file.0).expect("a new board maps");
        let b = sys::map(&file.0).expect("the same board maps again");
        a.board().until.store(42, Ordering::SeqCst);
        assert_eq!(b.board().until.load(Ordering::SeqCst), 42);
        let meta = std::fs::metadata(&file.0).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), sys::user_id());
        // A board left with loose permissions (an older version's) is tightened.
        std::fs::set_permissions(&file.0, std::fs::Permissions::from_mode(0o666)).unwrap();
        drop(sys::map(&file.0).expect("maps"));
        let mode = std::fs::metadata(&file.0).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_board_another_user_owns_or_a_link_is_not_mapped() {
        let Some(file) = Scratch::new("other") else {
            return;
        };
        std::fs::write(&file.0, [0u8; 4096]).unwrap();
        let c = std::ffi::CString::new(file.0.clone()).unwrap();
        // SAFETY: chown(2) with a NUL-terminated path; only root may give a file away.
        let given = unsafe { libc::chown(c.as_ptr(), 65534, 65534) } == 0;
        if given {
            assert!(
                sys::map(&file.0).is_none(),
                "another user's board is not ours"
            );
        }
        let Some(link) = Scratch::new("link") else {
            return;
        };
        std::os::unix::fs::symlink(&file.0, &link.0).unwrap();
        assert!(
            sys::map(&link.0).is_none(),
            "a symbolic link is not followed"
        );
    }
}
