//! The immutable shape of a DAG: which task must finish before which.
//!
//! A [`Topology`] is built once by a [`TopologyBuilder`] and then executed any number of
//! times, possibly by several threads at once. It promises:
//!
//! - tasks are `0..len()` as `u32`;
//! - it is acyclic (checked by [`TopologyBuilder::build`]);
//! - `successors(t)` lists every edge `t -> s` once per time it was added, and
//!   `num_predecessors(s)` counts the same edges, so duplicate edges are consistent;
//! - `roots()` lists, in increasing order, the tasks without predecessors;
//! - `cost(t)` is the cost set with [`TopologyBuilder::set_cost`] (1 by default), and
//!   `priority(t)` the cost of the most expensive path from `t` to a sink, `t`'s own
//!   cost included, computed once by `build`; the critical-path policy
//!   ([`Policy`](super::Policy)) runs ready tasks in decreasing priority.
//! - `group(t)` is the steal group whose workers alone may run `t`, if one was set with
//!   [`TopologyBuilder::set_group`] (see [`affinity`](super::affinity)).
//!
//! Storage is compressed sparse rows (one offset array, one successor array) behind `Arc`s,
//! so cloning a topology is cheap and a run reads it without indirection.

use std::fmt;
use std::sync::Arc;

use super::error::SchedulerError;

/// Immutable DAG shape, built once, executed many times. Tasks are `0..len()` as `u32`.
#[derive(Clone)]
pub struct Topology {
    /// `offsets[t]..offsets[t + 1]` is the range of `successors` that belongs to task `t`.
    offsets: Arc<[u32]>,
    /// Successor lists of all tasks, concatenated.
    successors: Arc<[u32]>,
    /// Number of incoming edges of each task.
    predecessors: Arc<[u32]>,
    /// Tasks without predecessors, in increasing order.
    roots: Arc<[u32]>,
    /// The cost of each task; `None` while every cost is the default 1.
    costs: Option<Arc<[u64]>>,
    /// Longest remaining path of each task, by cost, its own cost included.
    priorities: Arc<[u64]>,
    /// `roots`, by decreasing priority (ties: increasing index).
    roots_by_priority: Arc<[u32]>,
    /// The steal group each task must run in ([`NO_GROUP`]: any); `None` when no task has
    /// one, so the hot path pays one branch.
    groups: Option<Arc<[u32]>>,
}

/// [`Topology::group`]'s "no group" in the packed per-task array.
const NO_GROUP: u32 = u32::MAX;

impl Topology {
    /// Starts building a topology of `num_tasks` tasks (`0..num_tasks`).
    ///
    /// # Panics
    ///
    /// If `num_tasks` does not fit in a `u32`.
    pub fn builder(num_tasks: usize) -> TopologyBuilder {
        assert!(
            u32::try_from(num_tasks).is_ok(),
            "a topology holds at most u32::MAX tasks, not {num_tasks}"
        );
        TopologyBuilder {
            num_tasks,
            edges: Vec::new(),
            costs: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// The number of tasks.
    pub fn len(&self) -> usize {
        self.predecessors.len()
    }

    /// Whether the topology has no task at all.
    pub fn is_empty(&self) -> bool {
        self.predecessors.is_empty()
    }

    /// The tasks that may start only after `task` finished, one entry per edge.
    ///
    /// # Panics
    ///
    /// If `task` is out of range.
    #[inline]
    pub fn successors(&self, task: u32) -> &[u32] {
        let t = task as usize;
        let start = self.offsets[t] as usize;
        let end = self.offsets[t + 1] as usize;
        &self.successors[start..end]
    }

    /// The number of edges into `task`.
    ///
    /// # Panics
    ///
    /// If `task` is out of range.
    pub fn num_predecessors(&self, task: u32) -> u32 {
        self.predecessors[task as usize]
    }

    /// The tasks with no predecessors, in increasing order.
    pub fn roots(&self) -> &[u32] {
        &self.roots
    }

    /// The total number of edges.
    pub fn num_edges(&self) -> usize {
        self.successors.len()
    }

    /// The cost of `task` given to [`TopologyBuilder::set_cost`] (1 by default).
    ///
    /// # Panics
    ///
    /// If `task` is out of range.
    #[inline]
    pub fn cost(&self, task: u32) -> u64 {
        match &self.costs {
            None => {
                assert!((task as usize) < self.len(), "task {task} is out of range");
                1
            }
            Some(c) => c[task as usize],
        }
    }

    /// The cost of the most expensive path from `task` to a task without successors,
    /// `task`'s own cost included (see [`TopologyBuilder::set_cost`]).
    ///
    /// # Panics
    ///
    /// If `task` is out of range.
    pub fn priority(&self, task: u32) -> u64 {
        self.priorities[task as usize]
    }

    /// The steal group whose workers alone may run `task`, if it has one
    /// ([`TopologyBuilder::set_group`]).
    ///
    /// # Panics
    ///
    /// If `task` is out of range.
    #[inline]
    pub fn group(&self, task: u32) -> Option<u32> {
        match &self.groups {
            None => None,
            Some(g) => Some(g[task as usize]).filter(|&g| g != NO_GROUP),
        }
    }

    /// Whether some task has a steal group.
    #[inline]
    pub(crate) fn has_groups(&self) -> bool {
        self.groups.is_some()
    }

    /// Predecessor counts of all tasks, indexed by task.
    pub(crate) fn predecessor_counts(&self) -> &[u32] {
        &self.predecessors
    }

    /// Priorities of all tasks, indexed by task.
    #[cfg(test)]
    pub(crate) fn priorities(&self) -> &[u64] {
        &self.priorities
    }

    /// The roots by decreasing priority, ties by increasing index.
    pub(crate) fn roots_by_priority(&self) -> &[u32] {
        &self.roots_by_priority
    }
}

impl AsRef<Topology> for Topology {
    fn as_ref(&self) -> &Topology {
        self
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("tasks", &self.len())
            .field("edges", &self.num_edges())
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// Collects the edges of a [`Topology`]; see [`Topology::builder`].
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    num_tasks: usize,
    edges: Vec<(u32, u32)>,
    /// Cost of each task; empty while every cost is the default 1.
    costs: Vec<u64>,
    /// Steal group of each task; empty while no task has one.
    groups: Vec<u32>,
}

impl TopologyBuilder {
    /// Adds the edge `from -> to`: `from` must finish before `to` starts.
    ///
    /// Duplicate edges are allowed; they are counted consistently (a task with the same
    /// edge twice waits for two decrements, and its predecessor gives two). Range and
    /// cycle checks happen in [`build`](Self::build).
    pub fn add_edge(&mut self, from: u32, to: u32) {
        self.edges.push((from, to));
    }

    /// Sets the estimated cost of `task` (default 1), in any unit as long as all tasks
    /// use the same one. Costs only order ready tasks under the critical-path policy;
    /// they never change what runs.
    ///
    /// # Panics
    ///
    /// If `task` is out of range.
    pub fn set_cost(&mut self, task: u32, cost: u64) {
        let n = self.num_tasks;
        assert!(
            (task as usize) < n,
            "TopologyBuilder::set_cost: task {task} is out of range: the graph has {n} tasks"
        );
        if self.costs.is_empty() {
            self.costs = vec![1; n];
        }
        self.costs[task as usize] = cost;
    }

    /// Restricts `task` to the workers of steal group `group` of the pool that runs the
    /// topology ([`ThreadPoolBuilder::steal_groups`](super::ThreadPoolBuilder::steal_groups)):
    /// no other worker runs it, even after a steal (see the scheduler's `affinity` module). A
    /// group the pool does not have is ignored (the task runs anywhere).
    ///
    /// # Panics
    ///
    /// If `task` is out of range, or `group` is `u32::MAX`.
    pub fn set_group(&mut self, task: u32, group: u32) {
        let n = self.num_tasks;
        assert!(
            (task as usize) < n,
            "TopologyBuilder::set_group: task {task} is out of range: the graph has {n} tasks"
        );
        assert!(
            group != NO_GROUP,
            "TopologyBuilder::set_group: group u32::MAX is reserved"
        );
        if self.groups.is_empty() {
            self.groups = vec![NO_GROUP; n];
        }
        self.groups[task as usize] = group;
    }

    /// The number of edges added so far.
    pub fn num_edges(&self) -> usize {
        self.edges.len()
    }

    /// Checks the edges and builds the topology.
    ///
    /// # Errors
    ///
    /// [`SchedulerError::TaskOutOfRange`] if an edge names a task `>= num_tasks`,
    /// [`SchedulerError::Cycle`] if the edges form a cycle (a self-edge is a cycle).
    ///
    /// # Panics
    ///
    /// If there are more than `u32::MAX` edges.
    pub fn build(self) -> Result<Topology, SchedulerError> {
        let n = self.num_tasks;
        assert!(
            u32::try_from(self.edges.len()).is_ok(),
            "a topology holds at most u32::MAX edges"
        );
        let mut predecessors = vec![0u32; n];
        let mut offsets = vec![0u32; n + 1];
        for &(from, to) in &self.edges {
            for task in [from, to] {
                if task as usize >= n {
                    return Err(SchedulerError::TaskOutOfRange { task, num_tasks: n });
                }
            }
            offsets[from as usize + 1] += 1;
            predecessors[to as usize] += 1;
        }
        for t in 0..n {
            offsets[t + 1] += offsets[t];
        }
        // Counting sort of the edges by source; keeps the insertion order per source.
        let mut cursor: Vec<u32> = offsets[..n].to_vec();
        let mut successors = vec![0u32; self.edges.len()];
        for &(from, to) in &self.edges {
            let slot = &mut cursor[from as usize];
            successors[*slot as usize] = to;
            *slot += 1;
        }
        drop(cursor);

        let roots: Vec<u32> = (0..n as u32)
            .filter(|&t| predecessors[t as usize] == 0)
            .collect();
        let order = topological_order(&offsets, &successors, &predecessors, &roots)?;
        let priorities = longest_paths(&order, &offsets, &successors, &self.costs);
        let mut roots_by_priority = roots.clone();
        roots_by_priority.sort_by_key(|&r| (std::cmp::Reverse(priorities[r as usize]), r));

        Ok(Topology {
            offsets: offsets.into(),
            successors: successors.into(),
            predecessors: predecessors.into(),
            roots: roots.into(),
            costs: (!self.costs.is_empty()).then(|| self.costs.into()),
            priorities: priorities.into(),
            roots_by_priority: roots_by_priority.into(),
            groups: (!self.groups.is_empty()).then(|| self.groups.into()),
        })
    }
}

/// `priorities[t] = cost[t] + max(priorities[s] for s in successors(t))`, walking a
/// topological order backwards. Saturates instead of overflowing.
fn longest_paths(order: &[u32], offsets: &[u32], successors: &[u32], costs: &[u64]) -> Vec<u64> {
    let mut priorities = vec![0u64; order.len()];
    for &t in order.iter().rev() {
        let t = t as usize;
        let below = successors[offsets[t] as usize..offsets[t + 1] as usize]
            .iter()
            .map(|&s| priorities[s as usize])
            .max()
            .unwrap_or(0);
        let cost = costs.get(t).copied().unwrap_or(1);
        priorities[t] = below.saturating_add(cost);
    }
    priorities
}

/// Kahn's algorithm: a topological order of all tasks. On failure, walks predecessors
/// among the unvisited tasks to name a task that lies on a cycle.
fn topological_order(
    offsets: &[u32],
    successors: &[u32],
    predecessors: &[u32],
    roots: &[u32],
) -> Result<Vec<u32>, SchedulerError> {
    let n = predecessors.len();
    let mut pending = predecessors.to_vec();
    let mut stack = roots.to_vec();
    let mut order = Vec::with_capacity(n);
    while let Some(t) = stack.pop() {
        order.push(t);
        let t = t as usize;
        for &s in &successors[offsets[t] as usize..offsets[t + 1] as usize] {
            let p = &mut pending[s as usize];
            *p -= 1;
            if *p == 0 {
                stack.push(s);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every unvisited task has an unvisited predecessor; walking backwards `n` steps from
    // any of them ends on a cycle.
    let mut unvisited_pred = vec![u32::MAX; n];
    for from in 0..n {
        if pending[from] == 0 {
            continue;
        }
        for &to in &successors[offsets[from] as usize..offsets[from + 1] as usize] {
            if pending[to as usize] != 0 {
                unvisited_pred[to as usize] = from as u32;
            }
        }
    }
    let mut task = pending
        .iter()
        .position(|&p| p != 0)
        .expect("some task was not visited") as u32;
    for _ in 0..n {
        task = unvisited_pred[task as usize];
    }
    Err(SchedulerError::Cycle { task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_and_roots() {
        let mut b = Topology::builder(4);
        b.add_edge(0, 2);
        b.add_edge(1, 2);
        b.add_edge(0, 3);
        b.add_edge(0, 3);
        let t = b.build().unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.successors(0), &[2, 3, 3]);
        assert_eq!(t.successors(1), &[2]);
        assert!(t.successors(2).is_empty());
        assert_eq!(t.num_predecessors(2), 2);
        assert_eq!(t.num_predecessors(3), 2);
        assert_eq!(t.roots(), &[0, 1]);
    }

    #[test]
    fn cycle_is_found() {
        let mut b = Topology::builder(5);
        b.add_edge(0, 1);
        b.add_edge(1, 2);
        b.add_edge(2, 3);
        b.add_edge(3, 1);
        b.add_edge(3, 4);
        match b.build() {
            Err(SchedulerError::Cycle { task }) => assert!((1..=3).contains(&task)),
            other => panic!("expected a cycle, got {other:?}"),
        }
        let mut b = Topology::builder(1);
        b.add_edge(0, 0);
        assert_eq!(b.build().unwrap_err(), SchedulerError::Cycle { task: 0 });
    }

    #[test]
    fn out_of_range() {
        let mut b = Topology::builder(2);
        b.add_edge(0, 2);
        assert_eq!(
            b.build().unwrap_err(),
            SchedulerError::TaskOutOfRange {
                task: 2,
                num_tasks: 2
            }
        );
    }

    #[test]
    fn priorities_are_longest_remaining_paths() {
        // 0 -> 1 -> 3, 0 -> 2 -> 3, 4 alone; task 2 costs 10.
        let mut b = Topology::builder(5);
        b.add_edge(0, 1);
        b.add_edge(0, 2);
        b.add_edge(1, 3);
        b.add_edge(2, 3);
        b.set_cost(2, 10);
        b.set_cost(4, 5);
        let t = b.build().unwrap();
        let p: Vec<u64> = (0..5).map(|i| t.priority(i)).collect();
        assert_eq!(p, [12, 2, 11, 1, 5]);
        let c: Vec<u64> = (0..5).map(|i| t.cost(i)).collect();
        assert_eq!(c, [1, 1, 10, 1, 5]);
        assert_eq!(t.roots_by_priority(), &[0, 4]);
        let mut b = Topology::builder(3);
        b.add_edge(0, 1);
        let t = b.build().unwrap();
        assert_eq!(t.priorities(), &[2, 1, 1]);
        assert_eq!(t.cost(2), 1);
        assert_eq!(t.roots_by_priority(), &[0, 2]);
    }

    #[test]
    fn groups_are_per_task_and_optional() {
        let mut b = Topology::builder(3);
        b.add_edge(0, 1);
        let t = b.clone().build().unwrap();
        assert!(!t.has_groups());
        assert_eq!(t.group(1), None);
        b.set_group(1, 4);
        let t = b.build().unwrap();
        assert!(t.has_groups());
        assert_eq!([t.group(0), t.group(1), t.group(2)], [None, Some(4), None]);
    }

    #[test]
    fn empty() {
        let t = Topology::builder(0).build().unwrap();
        assert!(t.is_empty());
        assert!(t.roots().is_empty());
    }
}
