//! Cancellation tokens and the per-run controls ([`RunControl`]).
//!
//! # Guarantees
//!
//! - [`CancellationToken::cancel`] is one-way and idempotent; it may be called from any
//!   thread, including a task body.
//! - Every run that was given the token and is still blocked in
//!   [`ThreadPool::execute`](super::ThreadPool::execute) is woken promptly (no polling):
//!   each such run registers its [`Latch`] with the token for its duration, and `cancel`
//!   signals every registered latch.
//! - A run that starts with an already-cancelled token (or a deadline in the past)
//!   returns at once without running any task.
//!
//! Registration and cancellation meet under the token's mutex: `cancel` sets the flag and
//! then takes the mutex to drain the listeners; `register` takes the mutex and then checks
//! the flag. Whichever takes the mutex second sees the other's effect, so no run misses a
//! cancellation.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::latch::Latch;
use super::policy::Policy;

/// How one run is carried out: its scheduling policy, an optional deadline and an
/// optional cancellation token.
#[derive(Clone, Debug, Default)]
pub struct RunControl {
    /// In which order ready tasks start ([`Policy::DepthFirst`] by default).
    pub policy: Policy,
    /// When the run should give up. A run still going at this instant is cancelled and
    /// fails with [`RunError::DeadlineExceeded`](super::RunError::DeadlineExceeded).
    pub deadline: Option<Instant>,
    /// A token whose cancellation stops the run with
    /// [`RunError::Cancelled`](super::RunError::Cancelled).
    pub cancel: Option<CancellationToken>,
}

impl RunControl {
    /// Controls with a deadline and no token.
    pub fn with_deadline(deadline: Instant) -> RunControl {
        RunControl {
            deadline: Some(deadline),
            ..RunControl::default()
        }
    }

    /// Controls with a token and no deadline.
    pub fn with_token(token: CancellationToken) -> RunControl {
        RunControl {
            cancel: Some(token),
            ..RunControl::default()
        }
    }

    /// Default controls with scheduling policy `policy`.
    pub fn with_policy(policy: Policy) -> RunControl {
        RunControl {
            policy,
            ..RunControl::default()
        }
    }
}

/// A shared, one-way cancellation flag. Clones share the flag.
#[derive(Clone, Default)]
pub struct CancellationToken {
    inner: Arc<TokenInner>,
}

#[derive(Default)]
struct TokenInner {
    cancelled: AtomicBool,
    listeners: Mutex<Listeners>,
}

#[derive(Default)]
struct Listeners {
    next_key: u64,
    latches: Vec<(u64, Arc<Latch>)>,
}

impl CancellationToken {
    /// A new, not yet cancelled token.
    pub fn new() -> CancellationToken {
        CancellationToken::default()
    }

    /// Cancels the token and wakes every run that uses it.
    pub fn cancel(&self) {
        if self.inner.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        let latches = std::mem::take(&mut self.inner.listeners.lock().latches);
        for (_, latch) in latches {
            latch.request_cancel();
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Registers `latch` to be signalled on cancellation. Returns `None` (and registers
    /// nothing) when the token is already cancelled.
    pub(crate) fn register(&self, latch: Arc<Latch>) -> Option<Registration<'_>> {
        let mut listeners = self.inner.listeners.lock();
        if self.inner.cancelled.load(Ordering::SeqCst) {
            return None;
        }
        let key = listeners.next_key;
        listeners.next_key += 1;
        listeners.latches.push((key, latch));
        Some(Registration { token: self, key })
    }
}

impl fmt::Debug for CancellationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancellationToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Removes a latch from its token's listeners when dropped.
#[derive(Debug)]
pub(crate) struct Registration<'a> {
    token: &'a CancellationToken,
    key: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut listeners = self.token.inner.listeners.lock();
        if let Some(pos) = listeners.latches.iter().position(|(k, _)| *k == self.key) {
            listeners.latches.swap_remove(pos);
        }
    }
}
