//! Which receives of a step a task may await before its partition starts, and which
//! after the partition's first stage: the analysis behind
//! [`RECV_BEFORE_STEP_ATTR`](super::ops::RECV_BEFORE_STEP_ATTR) and
//! [`RECV_AFTER_FIRST_STAGE_ATTR`](super::ops::RECV_AFTER_FIRST_STAGE_ATTR).
//!
//! A receive into task `t` whose tensor depends on nothing `t` computes (no path of the
//! placed graph reaches its producer through `t`) may be awaited before `t`'s partition
//! starts. When that holds for every receive of `t` — no path leaves `t` and comes back
//! into it — the partition runs as a plain step of synchronous kernels with the received
//! tensors as feeds: on the thread that received its request when it is short, with no
//! pool thread woken.
//!
//! A task on such a cycle (a parameter server that sends weights and receives their
//! gradients in one step) is **staged** when every path comes back into it at most once:
//! its nodes downstream of a receive that returns (*second-stage* nodes) depend, within
//! the task, only on nodes that no returning path reaches (*first-stage* nodes). The
//! worker then runs the first stage as a step of its own (its sends go out), awaits the
//! returning receives, and runs the second stage with the first stage's tensors as feeds
//! (`stages.rs`). A path that comes back into a task twice leaves it receiving during
//! its step, on the pool, as before.
//!
//! A task that awaits receives before a stage blocks that whole stage on them, so the
//! analysis ends with a check at that grain: contract each blocking stage (a task that
//! awaits all its receives first is one stage) to one vertex, keep every node of the other
//! tasks as its own, and look for a cycle (Kahn's algorithm). Two tasks that exchange
//! independent tensors each way, for one, would each wait for the other's stage to start:
//! every task whose stage is left on a cycle receives during its step instead, and the
//! check runs again until none is.
//!
//! One pass over the nodes in graph order (inputs come before their consumers). Each node
//! carries three sets of tasks, as bit masks: `from`, the tasks a path to it has left;
//! `back`, the tasks a path to it has returned into (entered from a node whose `from`
//! holds them); `back_left`, the tasks a path to it has left after returning into them.
//! An edge into task `t` from a node whose `from` holds `t` returns into `t` (the task is
//! cyclic); from a node whose `back_left` holds `t`, it returns a second time (the task
//! is not staged). A cluster of more than 64 tasks in one step, or a graph whose order is
//! not topological, marks no task (receiving during the step is always correct).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::graph::Node;
use crate::transport::TaskName;

/// How a task receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// During its step, each receive an async kernel.
    Pool,
    /// Every receive before its step.
    Early,
    /// In two stages.
    Staged,
}

/// How each task of a step receives: the result of [`recv_stages`].
#[derive(Debug, Default)]
pub(crate) struct RecvStages {
    /// Each task's bit.
    index: BTreeMap<TaskName, u32>,
    /// Per task bit, how it receives.
    mode: Vec<Mode>,
    /// Per node, the tasks a path to it has left.
    from: Vec<u64>,
    /// Per node, the tasks a path to it has returned into.
    back: Vec<u64>,
}

impl RecvStages {
    fn mode(&self, t: &TaskName) -> Mode {
        self.index
            .get(t)
            .and_then(|b| self.mode.get(*b as usize).copied())
            .unwrap_or(Mode::Pool)
    }

    /// Whether every receive of `t` may be awaited before its partition starts.
    pub(crate) fn all_before_step(&self, t: &TaskName) -> bool {
        self.mode(t) == Mode::Early
    }

    /// Whether `t`'s partition runs in two stages.
    pub(crate) fn staged(&self, t: &TaskName) -> bool {
        self.mode(t) == Mode::Staged
    }

    /// Whether the receive into staged task `t` of node `src`'s output (or control),
    /// consumed there by `consumers`, is awaited after the first stage: its tensor
    /// depends on the first stage (a path from `src` has left `t`), or only second-stage
    /// nodes consume it. Otherwise it is awaited before the step.
    pub(crate) fn after_first_stage(&self, src: usize, consumers: &[usize], t: &TaskName) -> bool {
        let Some(b) = self.index.get(t).map(|b| 1u64 << b) else {
            return false;
        };
        let has = |sets: &[u64], i: usize| sets.get(i).is_some_and(|s| s & b != 0);
        has(&self.from, src) || consumers.iter().all(|&c| has(&self.back, c))
    }
}

/// The receive stages of a step. `task[i]` is node `i`'s task when it is placed (it runs
/// in the step, `needed[i]`, or its output is fed there), `None` otherwise.
pub(crate) fn recv_stages(
    all: &[Arc<Node>],
    needed: &[bool],
    task: &[Option<TaskName>],
) -> RecvStages {
    let mut index: BTreeMap<TaskName, u32> = BTreeMap::new();
    for t in task.iter().flatten() {
        let next = index.len() as u32;
        index.entry(t.clone()).or_insert(next);
    }
    if index.len() > 64 {
        return RecvStages::default();
    }
    // Task bits per node, so the passes below compare integers.
    let tbit: Vec<Option<u32>> = task.iter().map(|t| t.as_ref().map(|t| index[t])).collect();
    let mut from = vec![0u64; all.len()];
    let mut back = vec![0u64; all.len()];
    let mut back_left = vec![0u64; all.len()];
    let (mut cyclic, mut deep) = (0u64, 0u64);
    for (i, n) in all.iter().enumerate() {
        let Some(here) = tbit[i].filter(|_| needed[i]) else {
            continue;
        };
        for j in sources(n) {
            if j >= i {
                // Not in topological order: no claim can be made.
                return RecvStages::default();
            }
            // A fed producer that does not run stands for its feed's placeholder there:
            // it crosses like any node, with nothing upstream (its sets stay empty).
            let Some(there) = tbit[j] else {
                continue;
            };
            if there == here {
                from[i] |= from[j];
                back[i] |= back[j];
                back_left[i] |= back_left[j];
            } else {
                let (h, t) = (1u64 << here, 1u64 << there);
                cyclic |= from[j] & h;
                deep |= back_left[j] & h;
                from[i] |= from[j] | t;
                back[i] |= back[j] | (from[j] & h);
                back_left[i] |= back_left[j] | (back[j] & t);
            }
        }
    }
    let mut mode: Vec<Mode> = (0..index.len() as u32)
        .map(|b| {
            let b = 1u64 << b;
            if cyclic & b == 0 {
                Mode::Early
            } else if deep & b == 0 {
                Mode::Staged
            } else {
                Mode::Pool
            }
        })
        .collect();
    // Demote the tasks whose blocking stages wait on each other until none do: the
    // staged ones first (a cycle through other tasks is theirs), then the others.
    loop {
        let stuck = stuck_tasks(all, needed, &tbit, &from, &back, &mode);
        if stuck == 0 {
            break;
        }
        let staged_stuck = (0..mode.len())
            .filter(|b| stuck & (1u64 << b) != 0 && mode[*b] == Mode::Staged)
            .fold(0u64, |m, b| m | (1u64 << b));
        let demote = if staged_stuck != 0 {
            staged_stuck
        } else {
            stuck
        };
        for (b, m) in mode.iter_mut().enumerate() {
            if demote & (1u64 << b) != 0 {
                *m = Mode::Pool;
            }
        }
    }
    RecvStages {
        index,
        mode,
        from,
        back,
    }
}

/// The nodes whose outputs or control node `n` consumes, by index.
fn sources(n: &Node) -> impl Iterator<Item = usize> + '_ {
    n.inputs
        .iter()
        .map(|o| o.node)
        .chain(n.control_inputs.iter().copied())
        .map(|id| id.index())
}

/// The tasks (a bit mask) with a blocking stage on a cycle of the step's stage graph, or
/// downstream of one: 0 when the receives as `mode` says cannot deadlock.
///
/// Vertices: each stage of an `Early` (one) or `Staged` (two) task, and each node of a
/// `Pool` task. A node's stage in a staged task is the second when a path returned into
/// the task before it (`back`). A cross-task edge makes the consumer's side wait from the
/// stage that awaits the receive (the first stage, or the second for a receive that
/// returns); a staged task's second stage waits for its first.
fn stuck_tasks(
    all: &[Arc<Node>],
    needed: &[bool],
    tbit: &[Option<u32>],
    from: &[u64],
    back: &[u64],
    mode: &[Mode],
) -> u64 {
    let n = all.len();
    if !mode.iter().any(|m| *m != Mode::Pool) {
        return 0;
    }
    let stage_vertex = |t: u32, stage: usize| n + 2 * t as usize + stage;
    // The vertex a node runs in.
    let vertex = |i: usize, t: u32| match mode[t as usize] {
        Mode::Pool => i,
        Mode::Early => stage_vertex(t, 0),
        Mode::Staged => stage_vertex(t, usize::from(back[i] & (1u64 << t) != 0)),
    };
    // Where the edge j -> i waits on the consumer's side: a staged task awaits a receive
    // before its second stage when it returns or when its consumer is in that stage
    // (a receive shared by consumers in both stages waits before the first: the edge
    // from the first-stage consumer says so).
    let waits_in = |j: usize, i: usize, t: u32, u: u32| {
        if t == u {
            return vertex(i, t);
        }
        match mode[t as usize] {
            Mode::Pool => i,
            Mode::Early => stage_vertex(t, 0),
            Mode::Staged => stage_vertex(t, usize::from((from[j] | back[i]) & (1u64 << t) != 0)),
        }
    };
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for (i, node) in all.iter().enumerate() {
        let Some(t) = tbit[i].filter(|_| needed[i]) else {
            continue;
        };
        for j in sources(node) {
            let Some(u) = tbit[j] else {
                continue;
            };
            let (a, b) = (vertex(j, u), waits_in(j, i, t, u));
            if a != b {
                edges.push((a as u32, b as u32));
            }
        }
    }
    for (t, m) in mode.iter().enumerate() {
        if *m == Mode::Staged {
            let t = t as u32;
            edges.push((stage_vertex(t, 0) as u32, stage_vertex(t, 1) as u32));
        }
    }
    // Kahn's algorithm over the vertices the edges name.
    let vertices = n + 2 * mode.len();
    let mut indegree = vec![0u32; vertices];
    let mut start = vec![0u32; vertices + 1];
    for &(a, b) in &edges {
        indegree[b as usize] += 1;
        start[a as usize + 1] += 1;
    }
    for v in 0..vertices {
        start[v + 1] += start[v];
    }
    let mut next = start.clone();
    let mut targets = vec![0u32; edges.len()];
    for &(a, b) in &edges {
        targets[next[a as usize] as usize] = b;
        next[a as usize] += 1;
    }
    drop(edges);
    let mut ready: Vec<usize> = (0..vertices).filter(|v| indegree[*v] == 0).collect();
    while let Some(v) = ready.pop() {
        for &w in &targets[start[v] as usize..start[v + 1] as usize] {
            indegree[w as usize] -= 1;
            if indegree[w as usize] == 0 {
                ready.push(w as usize);
            }
        }
    }
    // What is left is on a cycle or downstream of one.
    let mut stuck = 0u64;
    for (t, m) in mode.iter().enumerate() {
        if *m != Mode::Pool
            && (indegree[stage_vertex(t as u32, 0)] > 0 || indegree[stage_vertex(t as u32, 1)] > 0)
        {
            stuck |= 1u64 << t;
        }
    }
    stuck
}
