//! A toolbox for asynchronous kernels, so a backend needs no dependency of its own for
//! them: [`futures`] itself, a one-shot channel ([`oneshot`]) to complete a kernel's future
//! from a callback or another thread, and a runtime-free timer ([`sleep`], [`timeout`]).
//!
//! An [`AsyncKernel`](super::AsyncKernel)'s future is polled by Magpie's scheduler, not by
//! tokio or async-std: it must not need a runtime's reactor. Everything here works on any
//! executor. The timer is one lazily started thread per process (`magpie-timer`) that
//! wakes sleeping futures at their deadlines; a pending sleep holds no worker thread.
//!
//! ```
//! use std::time::Duration;
//! use magpie_core::kernel::async_support::{oneshot, sleep, timeout, FutureExt};
//!
//! let (tx, rx) = oneshot::channel::<u32>();
//! std::thread::spawn(move || {
//!     let _ = tx.send(7);
//! });
//! let got = futures::executor::block_on(async {
//!     sleep(Duration::from_millis(1)).await;
//!     timeout(Duration::from_secs(5), rx).await
//! });
//! assert_eq!(got, Ok(Ok(7)));
//! let never = futures::future::pending::<()>();
//! let late = futures::executor::block_on(timeout(Duration::from_millis(1), never).boxed());
//! assert!(late.is_err());
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub use futures;
pub use futures::channel::oneshot;
pub use futures::future::{BoxFuture, FutureExt};
use parking_lot::{Condvar, Mutex};

/// What a sleeping future and the timer thread share.
#[derive(Debug)]
struct Entry {
    deadline: Instant,
    fired: AtomicBool,
    /// Set (under the heap's lock) when the sleep was dropped before its deadline: the
    /// timer skips it, and sweeps such entries out once they are half the heap.
    cancelled: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// A heap item: the entry, ordered by deadline (then by arrival).
#[derive(Debug)]
struct Due(Instant, u64, Arc<Entry>);

impl PartialEq for Due {
    fn eq(&self, other: &Due) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

/// The timer's pending sleeps.
#[derive(Debug, Default)]
struct Pending {
    heap: BinaryHeap<Reverse<Due>>,
    /// Arrival counter: ties between equal deadlines go to the earlier sleep.
    seq: u64,
    /// Entries in `heap` whose sleep was dropped before its deadline.
    cancelled: usize,
}

/// Sweeping cancelled entries out of the heap waits until there are at least this many, and
/// at least as many as live ones, so a sweep's linear cost is amortised over the drops.
const SWEEP_MIN: usize = 64;

#[derive(Debug, Default)]
struct Timer {
    heap: Mutex<Pending>,
    changed: Condvar,
}

impl Timer {
    /// The process's timer, its thread started on first use; `None` when the thread could
    /// not be started.
    fn get() -> Option<&'static Timer> {
        static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
        *TIMER.get_or_init(|| {
            let timer: &'static Timer = Box::leak(Box::default());
            match std::thread::Builder::new()
                .name("magpie-timer".into())
                .spawn(move || timer.run())
            {
                Ok(_) => Some(timer),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the kernel timer thread");
                    None
                }
            }
        })
    }

    fn add(&self, entry: Arc<Entry>) {
        let mut p = self.heap.lock();
        p.seq += 1;
        let seq = p.seq;
        p.heap.push(Reverse(Due(entry.deadline, seq, entry)));
        // The thread sleeps until the earliest deadline: only a new earliest wakes it.
        if p.heap.peek().is_some_and(|Reverse(d)| d.1 == seq) {
            self.changed.notify_one();
        }
    }

    /// Forgets `entry` (a sleep dropped before its deadline): its waker is dropped now, and
    /// the entry leaves the heap at the next sweep, which runs once cancelled entries are at
    /// least [`SWEEP_MIN`] and at least half the heap. So the heap holds at most about twice
    /// the sleeps still awaited, and each drop costs amortised O(1) besides the lock.
    fn remove(&self, entry: &Arc<Entry>) {
        let mut p = self.heap.lock();
        if entry.fired.load(Ordering::Acquire) || entry.cancelled.load(Ordering::Relaxed) {
            return; // Already popped by the timer thread, or already forgotten.
        }
        entry.cancelled.store(true, Ordering::Relaxed);
        entry.waker.lock().take();
        p.cancelled += 1;
        if p.cancelled >= SWEEP_MIN && p.cancelled * 2 >= p.heap.len() {
            p.heap
                .retain(|Reverse(d)| !d.2.cancelled.load(Ordering::Relaxed));
            p.cancelled = 0;
        }
    }

    fn run(&self) {
        let mut p = self.heap.lock();
        loop {
            let now = Instant::now();
            while p.heap.peek().is_some_and(|Reverse(d)| d.0 <= now) {
                if let Some(Reverse(Due(_, _, entry))) = p.heap.pop() {
                    // `cancelled` is only written under this lock, which we hold.
                    if entry.cancelled.load(Ordering::Relaxed) {
                        p.cancelled -= 1;
                        continue;
                    }
                    entry.fired.store(true, Ordering::Release);
                    if let Some(w) = entry.waker.lock().take() {
                        w.wake();
                    }
                }
            }
            match p.heap.peek() {
                Some(Reverse(next)) => {
                    let deadline = next.0;
                    self.changed.wait_until(&mut p, deadline);
                }
                None => self.changed.wait(&mut p),
            }
        }
    }
}

/// A future that completes once its deadline has passed: see [`sleep`].
#[derive(Debug)]
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    /// `None`: a deadline beyond what `Instant` can represent (never completes).
    deadline: Option<Instant>,
    entry: Option<Arc<Entry>>,
}

/// A future that completes after `duration`, on any executor (no runtime needed). A
/// duration too large to represent never completes. If the process cannot start the timer
/// thread, the sleep ends at once (with a warning in the log).
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        deadline: Instant::now().checked_add(duration),
        entry: None,
    }
}

/// A future that completes at `deadline`: see [`sleep`].
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline: Some(deadline),
        entry: None,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        match &self.entry {
            Some(entry) => {
                *entry.waker.lock() = Some(cx.waker().clone());
                // The timer may have fired between the check above and storing the waker.
                if entry.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
            }
            None => {
                let Some(timer) = Timer::get() else {
                    return Poll::Ready(());
                };
                let entry = Arc::new(Entry {
                    deadline,
                    fired: AtomicBool::new(false),
                    cancelled: AtomicBool::new(false),
                    waker: Mutex::new(Some(cx.waker().clone())),
                });
                timer.add(Arc::clone(&entry));
                self.entry = Some(entry);
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    /// A sleep dropped before its deadline leaves the timer: its waker (and whatever task
    /// the waker keeps alive) goes at once, and its entry with the next sweep, so a deadline
    /// that guarded a wait which ended first holds no memory until it would have passed.
    fn drop(&mut self) {
        if let Some(entry) = &self.entry {
            if !entry.fired.load(Ordering::Acquire) {
                if let Some(timer) = Timer::get() {
                    timer.remove(entry);
                }
            }
        }
    }
}

/// The deadline of a [`timeout`] passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct Elapsed(pub Duration);

/// `future`'s output, or [`Elapsed`] if `duration` passes first (the future is then
/// dropped, which cancels it).
///
/// # Errors
/// [`Elapsed`] when the deadline passes before `future` completes.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let future = std::pin::pin!(future);
    let timer = sleep(duration);
    match futures::future::select(future, timer).await {
        futures::future::Either::Left((out, _)) => Ok(out),
        futures::future::Either::Right(((), _)) => Err(Elapsed(duration)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_dropped_before_their_deadline_leave_the_timer() {
        const DROPPED: usize = 1000;
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let timer = Timer::get().expect("the timer thread runs");
        let mut entries = Vec::with_capacity(DROPPED);
        for _ in 0..DROPPED {
            let mut sleep = Box::pin(sleep(Duration::from_secs(3600)));
            assert!(sleep.as_mut().poll(&mut cx).is_pending());
            entries.push(Arc::clone(
                sleep.entry.as_ref().expect("registered when polled"),
            ));
            drop(sleep);
        }
        for e in &entries {
            assert!(e.cancelled.load(Ordering::Relaxed));
            assert!(e.waker.lock().is_none(), "a dropped sleep's waker is kept");
        }
        let held = {
            let p = timer.heap.lock();
            let ours = |d: &Due| entries.iter().any(|e| Arc::ptr_eq(&d.2, e));
            p.heap.iter().filter(|Reverse(d)| ours(d)).count()
        };
        // Sweeps keep cancelled entries under SWEEP_MIN or half the heap; other tests'
        // sleeps running at the same time are few.
        assert!(
            held < DROPPED / 4,
            "{held} of {DROPPED} dropped sleeps still in the timer's heap"
        );
    }

    #[test]
    fn every_sleep_ends_at_or_after_its_own_deadline() {
        // Not the order of the wake-ups: under load the timer can find several deadlines
        // passed at once, and `join_all` then polls them in its own order.
        let start = Instant::now();
        let ended = Arc::new(Mutex::new(Vec::new()));
        let futs = [30u64, 10, 20].map(|ms| {
            let ended = Arc::clone(&ended);
            async move {
                sleep(Duration::from_millis(ms)).await;
                ended.lock().push((ms, start.elapsed()));
            }
        });
        futures::executor::block_on(futures::future::join_all(futs));
        let mut ended = ended.lock().clone();
        ended.sort();
        assert_eq!(
            ended.iter().map(|(ms, _)| *ms).collect::<Vec<_>>(),
            [10, 20, 30]
        );
        for (ms, at) in ended {
            assert!(
                at >= Duration::from_millis(ms),
                "a {ms} ms sleep ended after {at:?}"
            );
        }
    }

    #[test]
    fn an_unrepresentable_deadline_never_fires() {
        let r =
            futures::executor::block_on(timeout(Duration::from_millis(5), sleep(Duration::MAX)));
        assert_eq!(r, Err(Elapsed(Duration::from_millis(5))));
    }
}
