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
//! - Other waiters listen the same way: [`CancellationToken::cancelled`] is a future that
//!   completes on cancellation (it registers its waker), and
//!   [`CancellationToken::forward_to`] cancels another token with this one (a request's
//!   token cancelling the run it started, without sharing the run's own token).
//!
//! Registration and cancellation meet under the token's mutex: `cancel` sets the flag and
//! then takes the mutex to drain the listeners; registering takes the mutex and then
//! checks the flag. Whichever takes the mutex second sees the other's effect, so no
//! listener misses a cancellation. Listeners are signalled after the mutex is released.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::sync::plain::Mutex;

use super::latch::Latch;
use super::observer::Observer;
use super::policy::Policy;

/// How one run is carried out: its scheduling policy, an optional deadline, an optional
/// cancellation token and an optional observer.
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
    /// Told when each task starts and finishes ([`Observer`]); `None` (the default) costs
    /// one predictable branch per job (a task and the successors it runs in place).
    pub observer: Option<Arc<dyn Observer>>,
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

/// What is signalled on cancellation.
enum Listener {
    /// A run blocked in `execute`.
    Latch(Arc<Latch>),
    /// A token cancelled with this one ([`CancellationToken::forward_to`]).
    Token(CancellationToken),
    /// A [`Cancelled`] future.
    Waker(Waker),
}

impl Listener {
    fn signal(self) {
        match self {
            Listener::Latch(l) => l.request_cancel(),
            Listener::Token(t) => t.cancel(),
            Listener::Waker(w) => w.wake(),
        }
    }
}

#[derive(Default)]
struct Listeners {
    next_key: u64,
    listeners: Vec<(u64, Listener)>,
}

impl Listeners {
    fn add(&mut self, l: Listener) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.listeners.push((key, l));
        key
    }

    fn remove(&mut self, key: u64) {
        if let Some(pos) = self.listeners.iter().position(|(k, _)| *k == key) {
            self.listeners.swap_remove(pos);
        }
    }
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
        let listeners = std::mem::take(&mut self.inner.listeners.lock().listeners);
        for (_, l) in listeners {
            l.signal();
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
        let key = listeners.add(Listener::Latch(latch));
        Some(Registration { token: self, key })
    }

    /// [`register`](Self::register) for a registration that owns a handle to the token
    /// (a [`RunFuture`](super::RunFuture) keeps it).
    pub(crate) fn register_owned(&self, latch: Arc<Latch>) -> Option<OwnedRegistration> {
        let key = self.register(latch)?;
        let key = std::mem::ManuallyDrop::new(key).key;
        Some(OwnedRegistration {
            token: self.clone(),
            key,
        })
    }

    /// Cancels `other` when this token is cancelled (at once if it already is), for as
    /// long as the returned guard lives. `other`'s own cancellation does not reach this
    /// token.
    pub fn forward_to(&self, other: &CancellationToken) -> Forwarding<'_> {
        let mut listeners = self.inner.listeners.lock();
        if self.inner.cancelled.load(Ordering::SeqCst) {
            drop(listeners);
            other.cancel();
            return Forwarding {
                _registration: None,
            };
        }
        let key = listeners.add(Listener::Token(other.clone()));
        Forwarding {
            _registration: Some(Registration { token: self, key }),
        }
    }

    /// A future that completes once the token is cancelled. It holds no thread while it
    /// waits; dropping it unregisters it.
    pub fn cancelled(&self) -> Cancelled {
        Cancelled {
            token: self.clone(),
            key: None,
        }
    }
}

/// While it lives, cancelling one token cancels another
/// ([`CancellationToken::forward_to`]).
#[derive(Debug)]
#[must_use = "forwarding stops when the guard is dropped"]
pub struct Forwarding<'a> {
    /// Unregisters the forwarding when dropped.
    _registration: Option<Registration<'a>>,
}

/// Completes when its token is cancelled ([`CancellationToken::cancelled`]).
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Cancelled {
    token: CancellationToken,
    /// The key of this future's waker among the token's listeners, once registered.
    key: Option<u64>,
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.token.is_cancelled() {
            return Poll::Ready(());
        }
        let inner = Arc::clone(&self.token.inner);
        let mut listeners = inner.listeners.lock();
        if inner.cancelled.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        match self.key {
            Some(key) => match listeners.listeners.iter_mut().find(|(k, _)| *k == key) {
                Some((_, l)) => *l = Listener::Waker(waker),
                // Drained by a cancel that has not set the flag yet: cannot happen (the
                // flag is set before the drain), but registering again is harmless.
                None => self.key = Some(listeners.add(Listener::Waker(waker))),
            },
            None => self.key = Some(listeners.add(Listener::Waker(waker))),
        }
        Poll::Pending
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.token.inner.listeners.lock().remove(key);
        }
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
        self.token.inner.listeners.lock().remove(self.key);
    }
}

/// [`Registration`] holding its own handle to the token.
#[derive(Debug)]
pub(crate) struct OwnedRegistration {
    token: CancellationToken,
    key: u64,
}

impl Drop for OwnedRegistration {
    fn drop(&mut self) {
        self.token.inner.listeners.lock().remove(self.key);
    }
}

#[cfg(all(test, not(magpie_loom)))]
mod tests {
    use super::*;

    #[test]
    fn cancelled_completes_on_cancel_and_unregisters_when_dropped() {
        let t = CancellationToken::new();
        let mut fut = Box::pin(t.cancelled());
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(t.inner.listeners.lock().listeners.len(), 1);
        drop(fut);
        assert_eq!(t.inner.listeners.lock().listeners.len(), 0);

        let fut = t.cancelled();
        let t2 = t.clone();
        let h = std::thread::spawn(move || futures::executor::block_on(fut));
        t2.cancel();
        h.join().unwrap();
        // Already cancelled: ready at once.
        futures::executor::block_on(t.cancelled());
    }

    #[test]
    fn forwarding_cancels_the_other_token_only_while_it_lives() {
        let request = CancellationToken::new();
        let run = CancellationToken::new();
        let guard = request.forward_to(&run);
        run.cancel();
        assert!(!request.is_cancelled(), "forwarding is one way");
        drop(guard);

        let run = CancellationToken::new();
        drop(request.forward_to(&run));
        request.cancel();
        assert!(!run.is_cancelled(), "a dropped guard forwards nothing");

        let run = CancellationToken::new();
        let _guard = request.forward_to(&run);
        assert!(
            run.is_cancelled(),
            "an already cancelled token forwards at once"
        );

        let a = CancellationToken::new();
        let b = CancellationToken::new();
        let _g = a.forward_to(&b);
        a.cancel();
        assert!(b.is_cancelled());
    }
}
