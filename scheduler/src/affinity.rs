//! Worker affinity hooks: a callback each worker runs when it starts (where a backend pins
//! the thread to a core), steal groups (hierarchical stealing: victims in the thief's own
//! group first), tasks bound to one group, and the steal counters that show whether
//! stealing stayed local.
//!
//! The scheduler knows nothing of cores: a backend (the CPU backend's pinning plan) turns
//! its topology into groups of worker indices, a start hook, and optionally the NUMA node
//! of each group ([`ThreadPoolBuilder::steal_group_nodes`](super::ThreadPoolBuilder::steal_group_nodes)),
//! which the executor uses to bind a device's kernels to the group of the device's node.
//!
//! # Guarantees
//!
//! - **A task bound to a group runs only on that group's workers**
//!   ([`TopologyBuilder::set_group`](super::TopologyBuilder::set_group)). Whoever is about
//!   to run a bound task (a worker of another group that stole it, took it from the global
//!   injector or released it as a successor; a helping caller, which belongs to no group)
//!   passes it, with its unit, to the group's own injector instead, and wakes a sleeping
//!   member of the group. Only members take from a group's injector. Work conservation
//!   holds per group: no member sleeps while its group's injector holds a job (a member's
//!   parking re-check looks at it). A bound task may therefore wait while workers of
//!   other groups idle; that is the point. Unbound tasks run anywhere, as before.
//!   Asynchronous tasks' polls are not bound: a woken future is polled by any worker.
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

/// For each deque of a pool (the workers', then the helping callers'), the other deques
/// its owner tries when it steals, near ones first; and the groups.
///
/// The lists are built once, when the pool starts, so that a steal — also in the idle
/// spin — allocates nothing.
#[derive(Debug)]
pub(crate) struct StealOrder {
    /// `near[w]`: the other members of `w`'s group; for a helping caller (no group), every
    /// worker.
    near: Box<[Box<[usize]>]>,
    /// `far[w]`: every worker outside `w`'s group; empty for a helping caller.
    far: Box<[Box<[usize]>]>,
    /// `helpers[w]`: the helping callers' deques other than `w`'s own (see
    /// [`with_helpers`](Self::with_helpers)).
    helpers: Box<[Box<[usize]>]>,
    /// `group_of[w]`: the index of `w`'s group (empty groups skipped).
    group_of: Box<[u32]>,
    /// `members[g]`: the workers of group `g`.
    members: Box<[Box<[usize]>]>,
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
        let groups: Vec<&Vec<usize>> = groups.iter().filter(|g| !g.is_empty()).collect();
        for (g, members) in groups.iter().enumerate() {
            for &w in members.iter() {
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
            helpers: (0..n).map(|_| Box::default()).collect(),
            group_of: group_of.iter().map(|&g| g as u32).collect(),
            members: groups.iter().map(|m| m.as_slice().into()).collect(),
        })
    }

    /// The same order for a pool that also lends `slots` deques to helping callers: they
    /// get the indices after the workers' (as in
    /// [`Registry::stealers`](super::registry::Registry::stealers)); every worker tries
    /// them after the other workers, and a helping caller tries every worker, then the
    /// other helpers.
    pub(crate) fn with_helpers(self, slots: usize) -> StealOrder {
        let n = self.group_of.len();
        let helper_victims =
            |me: usize| -> Box<[usize]> { (n..n + slots).filter(|&h| h != me).collect() };
        let all_workers: Box<[usize]> = (0..n).collect();
        let mut near = self.near.into_vec();
        let mut far = self.far.into_vec();
        near.extend((0..slots).map(|_| all_workers.clone()));
        far.extend((0..slots).map(|_| Box::default()));
        StealOrder {
            near: near.into_boxed_slice(),
            far: far.into_boxed_slice(),
            helpers: (0..n + slots).map(helper_victims).collect(),
            ..self
        }
    }

    /// The group of worker `w`, or `u32::MAX` for a helping caller (index past the
    /// workers), which belongs to none.
    #[inline]
    pub(crate) fn group_of(&self, w: usize) -> u32 {
        self.group_of.get(w).copied().unwrap_or(u32::MAX)
    }

    /// The number of (non-empty) groups.
    pub(crate) fn num_groups(&self) -> usize {
        self.members.len()
    }

    /// The workers of group `g`.
    pub(crate) fn members(&self, g: usize) -> &[usize] {
        &self.members[g]
    }

    /// The victims of deque `w` (a worker's or a helping caller's), in the order it tries
    /// them: its own group, the other workers, the helping callers. Precomputed: no
    /// allocation.
    #[inline]
    pub(crate) fn victims(&self, w: usize) -> [&[usize]; 3] {
        [&self.near[w], &self.far[w], &self.helpers[w]]
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
        assert_eq!(order.victims(0), [&[1][..], &[2, 3][..], &[][..]]);
        assert_eq!(order.victims(3), [&[2][..], &[0, 1][..], &[][..]]);
        let flat = StealOrder::flat(3);
        assert_eq!(flat.victims(1), [&[0, 2][..], &[][..], &[][..]]);
        // Two helper deques after the four workers: workers try them last; a helper tries
        // every worker, then the other helper.
        let order = order.with_helpers(2);
        assert_eq!(order.victims(1), [&[0][..], &[2, 3][..], &[4, 5][..]]);
        assert_eq!(order.victims(5), [&[0, 1, 2, 3][..], &[][..], &[4][..]]);
        assert_eq!((order.group_of(3), order.group_of(4)), (1, u32::MAX));
        assert_eq!((order.num_groups(), order.members(1)), (2, &[2, 3][..]));
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

    /// Records which worker ran each task, and the workers of `parallel_for` pieces.
    struct Recorder {
        ran: Vec<AtomicU64>,
        pieces: crate::sync::plain::Mutex<Vec<usize>>,
        fan_out: bool,
    }

    impl crate::DagBody for Recorder {
        type Error = ();
        fn run(
            &self,
            task: u32,
            cx: &crate::TaskContext<'_>,
        ) -> Result<crate::TaskOutcome<()>, ()> {
            self.ran[task as usize].store(cx.worker_index() as u64, Ordering::Relaxed);
            if self.fan_out {
                crate::parallel_for(16, &|_| {
                    let w = super::super::worker::current_index();
                    self.pieces.lock().push(w.unwrap_or(usize::MAX));
                    std::thread::sleep(std::time::Duration::from_micros(200));
                });
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            Ok(crate::TaskOutcome::Done)
        }
    }

    fn grouped_pool() -> crate::ThreadPool {
        crate::ThreadPool::builder()
            .num_workers(4)
            .steal_groups(vec![vec![0, 1], vec![2, 3]])
            .steal_group_nodes(vec![5, 7])
            .build()
            .unwrap()
    }

    #[test]
    fn bound_tasks_run_only_on_their_groups_workers() {
        use crate::{RunControl, Topology};
        let pool = grouped_pool();
        assert_eq!(
            (pool.group_of_node(7), pool.group_of_node(6)),
            (Some(1), None)
        );
        assert_eq!(pool.num_groups(), 2);
        // 200 independent tasks: even ones bound to group 0, odd ones to group 1, except
        // every tenth, which runs anywhere; then all 64 of a second run bound to group 1
        // while group 0 idles and tries to steal.
        for (n, group) in [(200u32, None), (64, Some(1u32))] {
            let mut b = Topology::builder(n as usize);
            for t in 0..n {
                match group {
                    Some(g) => b.set_group(t, g),
                    None if t % 10 != 0 => b.set_group(t, t % 2),
                    None => {}
                }
            }
            let topology = b.build().unwrap();
            let body = Recorder {
                ran: (0..n).map(|_| AtomicU64::new(u64::MAX)).collect(),
                pieces: Default::default(),
                fan_out: false,
            };
            for _ in 0..3 {
                pool.execute(&topology, &body, &RunControl::default())
                    .unwrap();
                for t in 0..n {
                    let w = body.ran[t as usize].load(Ordering::Relaxed) as usize;
                    if let Some(g) = topology.group(t) {
                        let members: &[usize] = if g == 0 { &[0, 1] } else { &[2, 3] };
                        assert!(
                            members.contains(&w),
                            "task {t} of group {g} ran on worker {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn parallel_for_pieces_stay_in_the_callers_group() {
        use crate::{RunControl, Topology};
        let pool = grouped_pool();
        let mut b = Topology::builder(2);
        b.set_group(0, 1);
        b.set_group(1, 1);
        let topology = b.build().unwrap();
        let body = Recorder {
            ran: (0..2).map(|_| AtomicU64::new(u64::MAX)).collect(),
            pieces: Default::default(),
            fan_out: true,
        };
        pool.execute(&topology, &body, &RunControl::default())
            .unwrap();
        let pieces = body.pieces.lock();
        assert_eq!(pieces.len(), 32);
        assert!(pieces.iter().all(|w| [2, 3].contains(w)), "{pieces:?}");
    }

    #[test]
    fn group_nodes_must_match_the_groups() {
        let e = crate::ThreadPool::builder()
            .num_workers(2)
            .steal_groups(vec![vec![0], vec![1]])
            .steal_group_nodes(vec![3, 3])
            .build()
            .unwrap_err();
        assert!(
            e.to_string().contains("one distinct node per steal group"),
            "{e}"
        );
    }
}
