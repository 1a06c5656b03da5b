//! Deadline wake-ups for spawned runs: one process-wide thread that wakes the
//! [`RunFuture`](super::RunFuture) of a run when its deadline passes, so a run whose tasks
//! all wait (futures pending on I/O) still fails at its deadline although nobody polls it.
//!
//! # Protocol
//!
//! [`add`] puts `(deadline, id) -> Weak<Latch>` into one ordered map under a mutex and
//! notifies the thread when the new entry is the earliest. The thread sleeps until the
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
    entries: Mutex<BTreeMap<Key, Weak<Latch>>>,
    changed: Condvar,
    next_id: AtomicU64,
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
            timer.entries.lock().remove(&self.key);
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
    let mut entries = timer.entries.lock();
    entries.insert(key, Arc::downgrade(latch));
    if entries.keys().next() == Some(&key) {
        timer.changed.notify_one();
    }
    Ok(TimerEntry { key })
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
    let mut entries = timer.entries.lock();
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(entry) = entries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        if !due.is_empty() {
            drop(entries);
            for latch in due.iter().filter_map(Weak::upgrade) {
                latch.wake();
            }
            entries = timer.entries.lock();
            continue;
        }
        match entries.keys().next().map(|k| k.0) {
            Some(at) => {
                let _ = timer.changed.wait_until(&mut entries, at);
            }
            None => timer.changed.wait(&mut entries),
        }
    }
}
