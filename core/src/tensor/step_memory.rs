//! A step's memory limit: [`StepMemoryLimit`] (what a session or server asks for) and
//! [`StepMemory`] (one step's account under it), which bounds the bytes the buffers one
//! step's kernels allocate hold at once, on all the step's devices together.
//!
//! # Protocol
//!
//! A step with a limit owns one [`StepMemory`]. The executor runs each of the step's
//! kernel calls inside [`StepMemory::scope`], which makes the step current on the calling
//! thread for the call (a thread-local pointer, restored when the call returns or
//! unwinds). [`MemoryLimit::reserve`](super::MemoryLimit::reserve) charges a buffer to the
//! current step as well as to its device's account: the bytes go onto the step's
//! [`MemoryAccount`] under the step's limit, and the buffer's one
//! [`Charge`] gives them back to both accounts when the last tensor
//! sharing the buffer drops ([`account`](super::account)'s protocol, unchanged). A request
//! that would take the step past its limit is refused before anything is allocated
//! ([`AllocFailure::StepInUse`](super::AllocFailure::StepInUse)), which fails the step with
//! a resource-exhausted error naming the node, the bytes and the limit's flag.
//!
//! What counts: buffers reserved through a [`MemoryLimit`](super::MemoryLimit) by a
//! synchronous kernel's call, or by an asynchronous kernel's future while it is polled, on
//! the step's own thread of the moment. A kernel that allocates on other threads (pieces
//! of a `parallel_for`) is counted by its device alone; a backend allocates its outputs
//! before it splits the work, which the CPU backend does. Feeds (which arrive allocated)
//! are not counted. A tensor that outlives its step (a fetched output, a variable's
//! value) stays charged to the step's account, which nobody reads once the step ends.
//!
//! # Cost
//!
//! One thread-local read per reservation when no step is current; with one, a charge to
//! the step's account from the calling thread's credit (no shared write; see
//! [`account`](super::account)'s "Credit"), released with the buffer. A worker's first
//! allocation in a step claims a slot of the step's account (a lock, once per step and
//! thread). The executor's part is two thread-local writes per kernel call, only for
//! steps with a limit.

use std::cell::Cell;

use super::account::{Charge, MemoryAccount};
use crate::limits::Limit;

/// The most bytes one step's buffers may hold at once, and the server limit that set it.
///
/// ```
/// use magpie_core::limits::Limit;
/// use magpie_core::tensor::StepMemoryLimit;
/// let local = StepMemoryLimit::new(1 << 30);
/// assert_eq!((local.bytes, local.raised_by), (1 << 30, None));
/// let server = StepMemoryLimit::new(1 << 30).raised_by(Limit::StepMemory);
/// assert_eq!(server.raised_by, Some(Limit::StepMemory));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepMemoryLimit {
    /// The limit in bytes.
    pub bytes: u64,
    /// The server limit (and so the `magpie server` flag) that set it, named by a refusal;
    /// `None` for a session's own limit.
    pub raised_by: Option<Limit>,
}

impl StepMemoryLimit {
    /// At most `bytes` per step.
    pub fn new(bytes: u64) -> StepMemoryLimit {
        StepMemoryLimit {
            bytes,
            raised_by: None,
        }
    }

    /// This limit, its refusals naming `limit`'s flag.
    pub fn raised_by(mut self, limit: Limit) -> StepMemoryLimit {
        self.raised_by = Some(limit);
        self
    }
}

/// One step's account under its [`StepMemoryLimit`] (see the [module docs](self)).
///
/// ```
/// use magpie_core::tensor::{AllocFailure, DType, MemoryLimit, StepMemory, StepMemoryLimit};
/// let step = StepMemory::new(StepMemoryLimit::new(4096));
/// let cpu = MemoryLimit::new("/device:CPU:0", None);
/// let held = step.scope(|| cpu.reserve(DType::F32, 768)).unwrap();
/// assert_eq!(step.in_use(), 3072);
/// let refused = step.scope(|| cpu.reserve(DType::F32, 512)).unwrap_err();
/// assert_eq!(refused.failure, AllocFailure::StepInUse { in_use: 3072, limit: 4096 });
/// // Outside the step's scope nothing is charged to it.
/// assert!(cpu.reserve(DType::F32, 512).unwrap().is_none());
/// drop(held);
/// assert_eq!(step.in_use(), 0);
/// ```
#[derive(Debug)]
pub struct StepMemory {
    account: MemoryAccount,
    limit: StepMemoryLimit,
}

thread_local! {
    /// The step whose kernel this thread runs now, if it has a limit (null: none).
    static CURRENT: Cell<*const StepMemory> = const { Cell::new(std::ptr::null()) };
}

/// Restores the thread's previous current step when dropped (also on unwinding).
struct Restore(*const StepMemory);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

impl StepMemory {
    /// A step's account holding nothing, under `limit`.
    pub fn new(limit: StepMemoryLimit) -> StepMemory {
        StepMemory {
            account: MemoryAccount::new(),
            limit,
        }
    }

    /// The bytes the step's buffers hold now.
    pub fn in_use(&self) -> u64 {
        self.account.in_use()
    }

    /// The step's limit.
    pub fn limit(&self) -> StepMemoryLimit {
        self.limit
    }

    /// Runs `f` with this step current on this thread: the buffers `f` reserves are
    /// charged to the step.
    #[inline]
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|c| c.replace(self));
        let _restore = Restore(previous);
        f()
    }

    /// Whether a step with a limit is current on this thread (one thread-local read: the
    /// allocation path's only cost when none is).
    #[inline]
    pub(crate) fn is_current() -> bool {
        CURRENT.with(|c| !c.get().is_null())
    }

    /// Charges `bytes` (a buffer `device` charged already, if the device keeps an account)
    /// to this step under its limit.
    ///
    /// # Errors
    /// The step's bytes in use before the request when `bytes` would pass the limit
    /// (`device`'s charge is then given back).
    #[inline]
    pub(crate) fn try_charge(&self, device: Option<Charge>, bytes: u64) -> Result<Charge, u64> {
        self.account.take(bytes, self.limit.bytes)?;
        Ok(self.attach(device, bytes))
    }

    /// Charges `bytes` to the thread's current step, if any, whatever its limit (a buffer
    /// already held, reused for an output).
    #[inline(never)]
    pub(crate) fn charge_current_unchecked(device: Option<Charge>, bytes: u64) -> Option<Charge> {
        Self::with_current(|step| match step {
            Some(step) => {
                step.account.take_unchecked(bytes);
                Some(step.attach(device, bytes))
            }
            None => device,
        })
    }

    /// `device`'s charge (or a charge of its own) carrying `bytes` already added here.
    fn attach(&self, device: Option<Charge>, bytes: u64) -> Charge {
        match device {
            Some(c) => c.with_step(&self.account),
            None => Charge::added(&self.account, bytes),
        }
    }

    /// Calls `f` with the thread's current step, if any.
    #[inline]
    pub(crate) fn with_current<R>(f: impl FnOnce(Option<&StepMemory>) -> R) -> R {
        let current = CURRENT.with(Cell::get);
        // SAFETY: a non-null pointer was set by `scope` from a `&StepMemory` that outlives
        // the call to its closure, and `scope` puts the previous pointer back when that
        // call returns or unwinds, on this same thread (the cell is thread-local). So
        // while a pointer is current, the closure that borrowed it is running on this
        // thread, and the `StepMemory` is alive and only shared (its fields are read and
        // its atomic counter updated). The reference lives only for `f`'s call: `f` takes
        // it for any lifetime, so `R` cannot hold it.
        f(unsafe { current.as_ref() })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tensor::{DType, MemoryLimit};

    #[test]
    fn a_step_counts_buffers_beside_their_device_and_gives_them_back() {
        let device = Arc::new(MemoryAccount::new());
        let cpu =
            MemoryLimit::new("/device:CPU:0", Some(1 << 20)).with_account(Arc::clone(&device));
        let step = StepMemory::new(StepMemoryLimit::new(1000).raised_by(Limit::StepMemory));
        let (a, b) = step.scope(|| {
            let a = cpu.reserve(DType::F32, 100).unwrap().unwrap();
            // Nested scopes restore the outer step.
            let other = StepMemory::new(StepMemoryLimit::new(8));
            let inner = other.scope(|| cpu.reserve(DType::F32, 1).unwrap());
            assert_eq!(other.in_use(), 4);
            drop(inner);
            let b = cpu.charge(200).unwrap();
            (a, b)
        });
        assert_eq!((step.in_use(), device.in_use()), (600, 600));
        let e = step.scope(|| cpu.reserve(DType::F64, 100)).unwrap_err();
        assert_eq!(
            e.failure,
            crate::tensor::AllocFailure::StepInUse {
                in_use: 600,
                limit: 1000
            }
        );
        assert!(e.to_string().contains("--step-memory-limit"), "{e}");
        // The device's charge of the refused request was given back.
        assert_eq!(device.in_use(), 600);
        assert!(a.is_to(&device));
        drop((a, b));
        assert_eq!((step.in_use(), device.in_use()), (0, 0));
    }

    #[test]
    fn the_step_is_restored_after_a_panic() {
        let step = StepMemory::new(StepMemoryLimit::new(1));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            step.scope(|| panic!("a kernel panicked"))
        }));
        assert!(caught.is_err());
        let host = MemoryLimit::host();
        assert!(host.reserve(DType::F32, 10).unwrap().is_none());
    }
}
