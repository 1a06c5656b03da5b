//! Deadline wake-ups for spawned runs: one process-wide thread that wakes the
//! [`RunFuture`](super::RunFuture) of a run when its deadline passes, so a run whose tasks
//! all wait (futures pending on I/O) still fails at its deadline although nobody polls it.
//!
//! # Protocol
//!
//! [`add`] puts `(deadline, id) -> Weak<Latch>` into one ordered map under a mutex and
//! notifies the thread only when the thread would otherwise sleep past the new deadline:
//! the thread records, under the same mutex, the instant it sleeps until (or that it
//! sleeps without a timeout). A removed entry does not shorten or lengthen that sleep: the
//! thread wakes at the instant it chose, finds nothing due, and sleeps again. So a
//! sequence of steps, each adding a deadline and removing it when it ends, wakes the
//! thread once per deadline period instead of once per step (a futex wake and a context
//! switch per step otherwise). The thread sleeps until the
//! earliest deadline (or without a timeout when the map is empty), removes every entry
//! whose deadline passed and, with the mutex released, [wakes](Latch::wake) each latch
//! still alive. Waking only makes the future poll again: the future itself sees that the
//! deadline passed and fails the run. Dropping the [`TimerEntry`] (the run ended first)
//! removes the entry. The thread starts with the first entry and lives as long as the
//! process; it holds no run alive (the map keeps weak references).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use super::error::SchedulerError;
use super::latch::Latch;
use super::sync::plain::{Condvar, Mutex};

type Key = (Instant, u64);

#[derive(Default)]
struct Timer {
    state: Mutex<State>,
    changed: Condvar,
    next_id: AtomicU64,
}

/// What the timer's mutex guards.
#[derive(Default)]
struct State {
    /// Pending wake-ups by deadline.
    entries: BTreeMap<Key, Weak<Latch>>,
    /// What the thread does now: `Awake` while it holds or will retake the mutex before
    /// it next waits (it then sees every entry), `Until(t)` or `Forever` while it waits.
    sleep: Sleep,
}

/// The timer thread's sleep, as [`add`] sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Sleep {
    /// Running: it looks at the entries before it waits again.
    #[default]
    Awake,
    /// Waiting until this instant.
    Until(Instant),
    /// Waiting without a timeout (the map was empty).
    Forever,
}

/// The process's timer, started by the first [`add`]; `Err` when its thread could not
/// start (the error is kept and returned to every caller).
static TIMER: OnceLock<Result<Arc<Timer>, SchedulerError>> = OnceLock::new();

/// A pending wake-up; dropping it cancels the wake-up.
#[derive(Debug)]
pub(crate) struct TimerEntry {
    key: Key,
}

impl Drop for TimerEntry {
    fn drop(&mut self) {
        if let Some(Ok(timer)) = TIMER.get() {
            timer.state.lock().entries.remove(&self.key);
        }
    }
}

/// Wakes `latch`'s waiter at `deadline` (unless the entry is dropped first).
///
/// # Errors
///
/// [`SchedulerError::Spawn`] when the timer's thread could not be started.
pub(crate) fn add(deadline: Instant, latch: &Arc<Latch>) -> Result<TimerEntry, SchedulerError> {
    let timer = TIMER.get_or_init(start).as_ref().map_err(Clone::clone)?;
    let key = (deadline, timer.next_id.fetch_add(1, Ordering::Relaxed));
    let mut state = timer.state.lock();
    state.entries.insert(key, Arc::downgrade(latch));
    if state.sleep.must_wake_for(deadline) {
        // The thread re-reads the entries under the mutex as soon as it wakes.
        state.sleep = Sleep::Awake;
        timer.changed.notify_one();
    }
    Ok(TimerEntry { key })
}

impl Sleep {
    /// Whether a new entry due at `deadline` must wake the thread: only when it would
    /// otherwise sleep past it.
    fn must_wake_for(self, deadline: Instant) -> bool {
        match self {
            Sleep::Awake => false,
            Sleep::Until(at) => deadline < at,
            Sleep::Forever => true,
        }
    }
}

fn start() -> Result<Arc<Timer>, SchedulerError> {
    let timer = Arc::new(Timer::default());
    let t = Arc::clone(&timer);
    std::thread::Builder::new()
        .name("magpie-timer".into())
        .spawn(move || run(&t))
        .map_err(|e| SchedulerError::Spawn(format!("the deadline timer: {e}")))?;
    Ok(timer)
}

fn run(timer: &Timer) {
    let mut state = timer.state.lock();
    loop {
        state.sleep = Sleep::Awake;
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(entry) = state.entries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        if !due.is_empty() {
            drop(state);
            for latch in due.iter().filter_map(Weak::upgrade) {
                latch.wake();
            }
            state = timer.state.lock();
            continue;
        }
        match state.entries.keys().next().map(|k| k.0) {
            Some(at) => {
                state.sleep = Sleep::Until(at);
                let _ = timer.changed.wait_until(&mut state, at);
            }
            None => {
                state.sleep = Sleep::Forever;
                timer.changed.wait(&mut state);
            }
        }
    }
}

#[cfg(all(test, not(magpie_loom)))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_a_deadline_before_the_threads_wake_up_wakes_it() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        // Step after step, each deadline a little later than the last: no wake-up.
        assert!(!Sleep::Until(later).must_wake_for(later + Duration::from_millis(1)));
        assert!(!Sleep::Until(later).must_wake_for(later));
        assert!(Sleep::Until(later).must_wake_for(now));
        assert!(Sleep::Forever.must_wake_for(later));
        assert!(!Sleep::Awake.must_wake_for(now));
    }

    #[test]
    fn an_entry_added_after_a_removed_earlier_one_still_fires() {
        let latch = Arc::new(Latch::for_future());
        let far = add(Instant::now() + Duration::from_secs(3600), &latch).unwrap();
        drop(far);
        // The thread may still sleep until the removed entry's deadline; an earlier one
        // wakes it, and the latch is woken at its deadline.
        let soon = add(Instant::now() + Duration::from_millis(20), &latch).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while timer_has(&soon) {
            assert!(Instant::now() < deadline, "the entry never fired");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether `entry` is still pending (the thread removes an entry when it fires).
    fn timer_has(entry: &TimerEntry) -> bool {
        match TIMER.get() {
            Some(Ok(timer)) => timer.state.lock().entries.contains_key(&entry.key),
            _ => false,
        }
    }
}
