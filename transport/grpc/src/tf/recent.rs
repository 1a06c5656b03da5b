//! [`RecentRequestIds`]: the request ids a master saw lately, so that a request the
//! client retried after its answer was lost (TensorFlow's client retries `UNAVAILABLE`)
//! is refused instead of run twice — a training step applied twice is a wrong model.
//! TensorFlow's master does the same with the `request_id` of `RunStep`,
//! `PartialRunSetup`, `MakeCallable` and `RunCallable`; an id of 0 is not tracked.
//!
//! The set is bounded: it remembers the last [`DEFAULT_CAPACITY`] ids (or the capacity
//! given), oldest forgotten first.

use std::collections::{HashSet, VecDeque};

use parking_lot::Mutex;

/// How many ids a master remembers by default.
pub(crate) const DEFAULT_CAPACITY: usize = 100_000;

#[derive(Debug, Default)]
struct Ids {
    order: VecDeque<i64>,
    seen: HashSet<i64>,
}

/// The last request ids a master saw.
#[derive(Debug)]
pub(crate) struct RecentRequestIds {
    capacity: usize,
    ids: Mutex<Ids>,
}

impl RecentRequestIds {
    /// Remembers the last `capacity` ids (at least one).
    pub(crate) fn new(capacity: usize) -> RecentRequestIds {
        RecentRequestIds {
            capacity: capacity.max(1),
            ids: Mutex::new(Ids::default()),
        }
    }

    /// Records `id`; `false` when it was seen already (0 is never recorded: `true`).
    pub(crate) fn track_unique(&self, id: i64) -> bool {
        if id == 0 {
            return true;
        }
        let mut ids = self.ids.lock();
        if !ids.seen.insert(id) {
            return false;
        }
        ids.order.push_back(id);
        if ids.order.len() > self.capacity {
            if let Some(old) = ids.order.pop_front() {
                ids.seen.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_refused_until_forgotten_and_zero_is_never_tracked() {
        let r = RecentRequestIds::new(2);
        assert!(r.track_unique(0) && r.track_unique(0));
        assert!(r.track_unique(7));
        assert!(!r.track_unique(7));
        assert!(r.track_unique(8));
        assert!(r.track_unique(9)); // 7 is forgotten
        assert!(r.track_unique(7));
        assert!(!r.track_unique(9));
    }
}
