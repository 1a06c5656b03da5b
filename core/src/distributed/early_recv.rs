//! Which tasks may receive every tensor of a step before their partition starts: the
//! analysis behind [`RECV_BEFORE_STEP_ATTR`](super::ops::RECV_BEFORE_STEP_ATTR).
//!
//! A task's partition may await all its `_Recv`s first when none of the tensors it
//! receives depends on anything the partition itself computes: no path of the placed
//! graph leaves the task and comes back into it. Then awaiting them cannot wait for the
//! partition's own sends, and the partition runs as a plain step of synchronous kernels
//! with the received tensors as feeds — on the thread that received its request when it
//! is short, with no pool thread woken. A task on such a cycle (a parameter server that
//! sends weights and receives their gradients in one step) receives as before.
//!
//! One pass over the nodes in graph order (inputs come before their consumers): each node
//! carries the set of tasks from which a path reaches it after crossing at least one
//! task boundary; an edge into task `t` from a node whose set holds `t` closes a cycle
//! through `t`. Sets are bit masks, so a cluster of more than 64 tasks in one step, or a
//! graph whose order is not topological, marks no task (receiving as before is always
//! correct).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::graph::Node;
use crate::transport::TaskName;

/// The tasks of the step that may await their receives before their partition starts.
/// `task[i]` is node `i`'s task when it is placed (it runs in the step, `needed[i]`, or
/// its output is fed there), `None` otherwise.
pub(crate) fn early_recv_tasks(
    all: &[Arc<Node>],
    needed: &[bool],
    task: &[Option<TaskName>],
) -> BTreeSet<TaskName> {
    let mut index: BTreeMap<&TaskName, u32> = BTreeMap::new();
    for t in task.iter().flatten() {
        let next = index.len() as u32;
        index.entry(t).or_insert(next);
    }
    if index.len() > 64 {
        return BTreeSet::new();
    }
    let bit = |t: &TaskName| 1u64 << index[t];
    // Tasks from which a path reaches the node, having crossed a task boundary.
    let mut from = vec![0u64; all.len()];
    let mut cyclic = 0u64;
    for (i, n) in all.iter().enumerate() {
        let Some(here) = task[i].as_ref().filter(|_| needed[i]) else {
            continue;
        };
        let sources = n
            .inputs
            .iter()
            .map(|o| o.node)
            .chain(n.control_inputs.iter().copied());
        for j in sources.map(|id| id.index()) {
            if j >= i {
                // Not in topological order: no claim can be made.
                return BTreeSet::new();
            }
            // A fed producer that does not run stands for its feed's placeholder there:
            // it crosses like any node, with nothing upstream (`from[j]` stays empty).
            let Some(there) = task[j].as_ref() else {
                continue;
            };
            if there == here {
                from[i] |= from[j];
            } else {
                cyclic |= from[j] & bit(here);
                from[i] |= from[j] | bit(there);
            }
        }
    }
    index
        .into_iter()
        .filter(|(_, b)| cyclic & (1u64 << b) == 0)
        .map(|(t, _)| t.clone())
        .collect()
}
