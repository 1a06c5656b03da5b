//! Worker affinity hooks: a callback each worker runs when it starts (where a backend pins
//! the thread to a core), steal groups (hierarchical stealing: victims in the thief's own
//! group first) and the steal counters that show whether stealing stayed local.
//!
//! The scheduler knows nothing of NUMA nodes or cores: a backend (the CPU backend's
//! pinning plan) turns its topology into groups of worker indices and a start hook.
//!
//! # Guarantees
//!
//! - The start hook runs once on each worker thread, on that thread, before the worker
//!   takes its first job. A panic in the hook is caught and reported on stderr; the worker
//!   then serves as usual (unpinned, as far as the scheduler knows).
//! - Stealing still visits every other worker before a worker gives up (work conservation
//!   is unchanged); groups only order the search: the thief's own group first, from a
//!   random member, then the other workers, from a random one.
//! - [`StealStats`] counts successful steals from another worker's deque: `local` when the
//!   victim is in the thief's group, `remote` otherwise. Taking from the global injector is
//!   not a steal. Without groups the whole pool is one group, so every steal is local.
//!   Counts are per-worker relaxed counters summed on read: exact once the pool is quiet,
//!   a snapshot while it runs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::error::SchedulerError;

/// A callback run by each worker thread right after it starts, with the worker's index.
pub(crate) type StartHookFn = dyn Fn(usize) + Send + Sync;

/// [`StartHookFn`] behind an `Arc`, with a `Debug` that names it without printing it.
#[derive(Clone)]
pub(crate) struct StartHook(pub(crate) Arc<StartHookFn>);

impl fmt::Debug for StartHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StartHook(..)")
    }
}

impl StartHook {
    /// Runs the hook for worker `index`, catching a panic so that the worker survives it.
    pub(crate) fn run(&self, index: usize) {
        let hook = &self.0;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(index)));
        if result.is_err() {
            eprintln!("magpie scheduler: the start hook of worker {index} panicked; ignored");
        }
    }
}

/// Successful steals from other workers' deques, summed over a pool's workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StealStats {
    /// Steals whose victim was in the thief's steal group.
    pub local: u64,
    /// Steals whose victim was in another group.
    pub remote: u64,
}

/// For each worker, the other workers it tries, near ones first.
#[derive(Debug)]
pub(crate) struct StealOrder {
    /// `near[w]`: the other members of `w`'s group.
    near: Box<[Box<[usize]>]>,
    /// `far[w]`: every worker outside `w`'s group.
    far: Box<[Box<[usize]>]>,
}

impl StealOrder {
    /// One group holding every worker: the order the scheduler uses without groups.
    pub(crate) fn flat(n: usize) -> StealOrder {
        let all: Vec<usize> = (0..n).collect();
        StealOrder::from_groups(n, &[all]).expect("one group of every worker is a partition")
    }

    /// The order for `groups`, which must partition `0..n` (every worker in exactly one
    /// group; empty groups are ignored).
    pub(crate) fn from_groups(
        n: usize,
        groups: &[Vec<usize>],
    ) -> Result<StealOrder, SchedulerError> {
        let mut group_of = vec![usize::MAX; n];
        for (g, members) in groups.iter().enumerate() {
            for &w in members {
                if w >= n {
                    return Err(SchedulerError::InvalidStealGroups(format!(
                        "worker {w} is out of range: the pool has {n} workers"
                    )));
                }
                if group_of[w] != usize::MAX {
                    return Err(SchedulerError::InvalidStealGroups(format!(
                        "worker {w} is in more than one group"
                    )));
                }
                group_of[w] = g;
            }
        }
        if let Some(w) = group_of.iter().position(|&g| g == usize::MAX) {
            return Err(SchedulerError::InvalidStealGroups(format!(
                "worker {w} is in no group; every worker of the {n} must be in one"
            )));
        }
        let victims = |w: usize, same: bool| -> Box<[usize]> {
            (0..n)
                .filter(|&v| v != w && (group_of[v] == group_of[w]) == same)
                .collect()
        };
        Ok(StealOrder {
            near: (0..n).map(|w| victims(w, true)).collect(),
            far: (0..n).map(|w| victims(w, false)).collect(),
        })
    }

    /// Worker `w`'s victims in its own group, then those in others.
    #[inline]
    pub(crate) fn victims(&self, w: usize) -> [&[usize]; 2] {
        [&self.near[w], &self.far[w]]
    }
}

/// Per-worker steal counters (padded: each worker writes only its own).
#[derive(Debug)]
pub(crate) struct StealCounters {
    local: Box<[CachePadded<AtomicU64>]>,
    remote: Box<[CachePadded<AtomicU64>]>,
}

impl StealCounters {
    pub(crate) fn new(n: usize) -> StealCounters {
        let zeros = || {
            (0..n)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect()
        };
        StealCounters {
            local: zeros(),
            remote: zeros(),
        }
    }

    /// Counts one successful steal by worker `w`.
    #[inline]
    pub(crate) fn record(&self, w: usize, local: bool) {
        let c = if local {
            &self.local[w]
        } else {
            &self.remote[w]
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StealStats {
        let sum =
            |cs: &[CachePadded<AtomicU64>]| cs.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        StealStats {
            local: sum(&self.local),
            remote: sum(&self.remote),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_order_victims_near_first() {
        let order = StealOrder::from_groups(4, &[vec![0, 1], vec![2, 3]]).unwrap();
        assert_eq!(order.victims(0), [&[1][..], &[2, 3][..]]);
        assert_eq!(order.victims(3), [&[2][..], &[0, 1][..]]);
        let flat = StealOrder::flat(3);
        assert_eq!(flat.victims(1), [&[0, 2][..], &[][..]]);
    }

    #[test]
    fn groups_must_partition_the_workers() {
        let e = StealOrder::from_groups(2, &[vec![0, 2]]).unwrap_err();
        assert!(e.to_string().contains("worker 2 is out of range"), "{e}");
        let e = StealOrder::from_groups(2, &[vec![0], vec![0, 1]]).unwrap_err();
        assert!(e.to_string().contains("more than one group"), "{e}");
        let e = StealOrder::from_groups(2, &[vec![0]]).unwrap_err();
        assert!(e.to_string().contains("worker 1 is in no group"), "{e}");
    }
}
