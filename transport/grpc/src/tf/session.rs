//! [`TfSession`]: what a session opened through TensorFlow's master service keeps beside
//! its [`MasterSession`](magpie_core::distributed::MasterSession): the graph version
//! `ExtendSession` checks, the session's options from its `ConfigProto`, its callables
//! (`MakeCallable`) and its partial runs (`PartialRunSetup`, `partial.rs`).
//!
//! Soft placement (`allow_soft_placement`) is not kept here: it is the master session's
//! own option ([`MasterSessionOptions`](magpie_core::distributed::MasterSessionOptions)),
//! the same one Magpie's own `CreateSession` sets, applied by core's placement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::tf::partial::PartialRuns;

/// Callables one session may hold at once.
pub(crate) const MAX_CALLABLES: usize = 4096;

/// A callable: a signature made once (`MakeCallable`) and run many times
/// (`RunCallable`) with positional feeds.
#[derive(Debug, Clone)]
pub(crate) struct Callable {
    pub(crate) feeds: Vec<String>,
    pub(crate) fetches: Vec<String>,
    pub(crate) targets: Vec<String>,
    pub(crate) timeout: Option<Duration>,
}

#[derive(Debug, Default)]
struct Callables {
    next: i64,
    by_handle: HashMap<i64, Arc<Callable>>,
}

/// The TensorFlow state of one session.
#[derive(Debug)]
pub(crate) struct TfSession {
    /// The graph's version: 0 when created, one more per `ExtendSession`. Held while an
    /// extension is checked and applied, so two extensions never both pass the check.
    pub(crate) version: Mutex<i64>,
    /// The step deadline from `ConfigProto.operation_timeout_in_ms`, if set.
    pub(crate) step_timeout: Option<Duration>,
    callables: Mutex<Callables>,
    /// Partial runs in progress (`PartialRunSetup`), released with the session.
    pub(crate) partial_runs: PartialRuns,
}

impl TfSession {
    /// A session's state from its `ConfigProto`'s fields.
    pub(crate) fn new(operation_timeout_ms: i64) -> TfSession {
        TfSession {
            version: Mutex::new(0),
            step_timeout: u64::try_from(operation_timeout_ms)
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            callables: Mutex::new(Callables::default()),
            partial_runs: PartialRuns::default(),
        }
    }

    /// Adds a callable; `None` when the session holds [`MAX_CALLABLES`] already.
    pub(crate) fn add_callable(&self, c: Callable) -> Option<i64> {
        let mut cs = self.callables.lock();
        if cs.by_handle.len() >= MAX_CALLABLES {
            return None;
        }
        let handle = cs.next;
        cs.next += 1;
        cs.by_handle.insert(handle, Arc::new(c));
        Some(handle)
    }

    /// The callable of `handle`.
    pub(crate) fn callable(&self, handle: i64) -> Option<Arc<Callable>> {
        self.callables.lock().by_handle.get(&handle).cloned()
    }

    /// Releases the callable of `handle`; whether it existed.
    pub(crate) fn release_callable(&self, handle: i64) -> bool {
        self.callables.lock().by_handle.remove(&handle).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn callables_are_bounded_and_released() {
        let s = TfSession::new(2500);
        assert_eq!(s.step_timeout, Some(Duration::from_millis(2500)));
        let c = Callable {
            feeds: vec![],
            fetches: vec!["y:0".into()],
            targets: vec![],
            timeout: None,
        };
        let h = s.add_callable(c.clone()).unwrap();
        assert_eq!(s.callable(h).unwrap().fetches, vec!["y:0".to_string()]);
        assert!(s.release_callable(h));
        assert!(!s.release_callable(h));
        for _ in 0..MAX_CALLABLES {
            s.add_callable(c.clone()).unwrap();
        }
        assert!(s.add_callable(c).is_none());
    }
}
