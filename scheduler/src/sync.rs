//! The synchronisation primitives the scheduler's hand-written protocols are built from,
//! behind one facade so that [loom](https://docs.rs/loom) can model-check them.
//!
//! Normal builds re-export `std`'s atomics and `parking_lot`'s mutex and condition
//! variable. Builds with `RUSTFLAGS="--cfg magpie_loom"` swap in loom's, and the loom
//! models in `loom_models.rs` explore every interleaving of the protocols that use them:
//! the parking protocol ([`sleep`](super::sleep)), the per-task pending counters and the
//! run-completion counter ([`run`](super::run)), the completion latch's flags
//! ([`latch`](super::latch)), and the asynchronous task's state machine
//! ([`async_state`](super::async_state)). (The cfg is not called plain `loom` because `RUSTFLAGS`
//! reach every dependency, and some of ours change behaviour under `cfg(loom)`.)
//!
//! Only the primitives those protocols depend on go through here; heuristics (the
//! latch's spin policy) and the shutdown flag use `std` directly, and crossbeam's deques
//! are trusted (crossbeam runs its own loom models).

#[cfg(not(magpie_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

#[cfg(magpie_loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(not(magpie_loom))]
pub(crate) use parking_lot::{Condvar, Mutex};

#[cfg(magpie_loom)]
pub(crate) use self::loom_lock::{Condvar, Mutex};

/// loom's mutex and condition variable behind `parking_lot`'s interface (no poisoning,
/// `Condvar::wait` borrows the guard).
#[cfg(magpie_loom)]
mod loom_lock {
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    /// A loom mutex with `parking_lot`'s `lock`.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Mutex<T> {
            Mutex::new(T::default())
        }
    }

    /// Its guard; `None` only inside [`Condvar::wait`].
    #[derive(Debug)]
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().expect("loom mutexes are not poisoned")))
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().expect("guard is held")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().expect("guard is held")
        }
    }

    /// Whether a timed wait timed out; under loom it never does.
    #[derive(Debug)]
    pub(crate) struct WaitTimeoutResult;

    impl WaitTimeoutResult {
        pub(crate) fn timed_out(&self) -> bool {
            false
        }
    }

    /// A loom condition variable with `parking_lot`'s `wait(&mut guard)`.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect("guard is held");
            guard.0 = Some(self.0.wait(inner).expect("loom mutexes are not poisoned"));
        }

        /// Loom models no time: waits as [`wait`](Self::wait) does.
        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _deadline: Instant,
        ) -> WaitTimeoutResult {
            self.wait(guard);
            WaitTimeoutResult
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}
