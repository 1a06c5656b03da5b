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

#[cfg(all(not(magpie_loom), not(miri)))]
pub(crate) use parking_lot::{Condvar, Mutex};

#[cfg(all(not(magpie_loom), miri))]
pub(crate) use self::std_lock::{Condvar, Mutex};

/// The mutex and condition variable of the rest of the scheduler (state that no loom
/// model covers): `parking_lot`'s, also in loom builds, where this code is compiled but
/// not run. Under Miri both facades are `std`'s behind `parking_lot`'s interface:
/// `parking_lot_core` 0.9 passes `&AtomicI32` where Miri's `futex` shim checks for
/// `*mut u32` (an argument-type check current nightlies make), so a thread that parks
/// there stops Miri; `std`'s locks are interpreted as they are.
pub(crate) mod plain {
    #[cfg(not(miri))]
    pub(crate) use parking_lot::{Condvar, Mutex};

    #[cfg(miri)]
    pub(crate) use super::std_lock::{Condvar, Mutex};
}

#[cfg(magpie_loom)]
pub(crate) use self::loom_lock::{Condvar, Mutex};

/// `std`'s mutex and condition variable behind the part of `parking_lot`'s interface the
/// scheduler uses (poisoning is ignored: a panic never happens while one is held).
#[cfg(miri)]
mod std_lock {
    use std::ops::{Deref, DerefMut};
    use std::sync::PoisonError;
    use std::time::Instant;

    /// A `std` mutex with `parking_lot`'s `lock`.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

    /// Its guard; `None` only inside [`Condvar::wait`].
    #[derive(Debug)]
    pub(crate) struct MutexGuard<'a, T>(Option<std::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Mutex<T> {
            Mutex(std::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)))
        }

        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
        }

        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
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

    /// Whether a timed wait timed out.
    #[derive(Debug)]
    pub(crate) struct WaitTimeoutResult(bool);

    impl WaitTimeoutResult {
        pub(crate) fn timed_out(&self) -> bool {
            self.0
        }
    }

    /// A `std` condition variable with `parking_lot`'s `wait(&mut guard)`.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(std::sync::Condvar);

    impl Condvar {
        pub(crate) const fn new() -> Condvar {
            Condvar(std::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect("guard is held");
            guard.0 = Some(self.0.wait(inner).unwrap_or_else(PoisonError::into_inner));
        }

        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            deadline: Instant,
        ) -> WaitTimeoutResult {
            let inner = guard.0.take().expect("guard is held");
            let timeout = deadline.saturating_duration_since(Instant::now());
            let (inner, result) = self
                .0
                .wait_timeout(inner, timeout)
                .unwrap_or_else(PoisonError::into_inner);
            guard.0 = Some(inner);
            WaitTimeoutResult(result.timed_out())
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

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
