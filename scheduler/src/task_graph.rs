//! [`TaskGraph`]: a Taskflow-like graph of closures and async closures, built once and run
//! many times on a [`ThreadPool`](super::ThreadPool).
//!
//! The graph caches its [`Topology`]: the first run after a change builds it (and checks
//! for cycles), later runs reuse it. A cycle is reported as
//! [`RunError::Invalid`](super::RunError::Invalid), never as a hang.
//!
//! For people who study scheduling, each task may carry a name (for traces, see
//! [`ChromeTraceObserver`](super::ChromeTraceObserver)), a cost (what the critical-path
//! policy and custom policies see, see [`QueueContext::cost`](super::QueueContext::cost))
//! and a steal group, set through [`TaskGraph::task`]:
//!
//! ```
//! use magpie_scheduler::{Policy, RunControl, TaskGraph, ThreadPool};
//!
//! let mut graph = TaskGraph::new();
//! let load = graph.add(|| {});
//! let sum = graph.add(|| {});
//! graph.precede(load, sum);
//! graph.task(load).name("load").cost(40);
//! graph.task(sum).name("sum").cost(2);
//! assert_eq!(graph.name(load), Some("load"));
//! assert_eq!(graph.topology().unwrap().priority(load.index()), 42);
//! let pool = ThreadPool::new(2).unwrap();
//! pool.run_with(&graph, &RunControl::with_policy(Policy::CriticalPath)).unwrap();
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::OnceLock;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::body::{DagBody, TaskContext, TaskOutcome};
use super::error::SchedulerError;
use super::topology::Topology;

/// A task of a [`TaskGraph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u32);

impl TaskId {
    /// The task's index in its graph, which is also its index in the graph's topology.
    pub fn index(self) -> u32 {
        self.0
    }
}

type SyncFn = Box<dyn Fn() + Send + Sync>;
type AsyncFn = Box<dyn Fn() -> BoxFuture<'static, Result<(), Infallible>> + Send + Sync>;

enum Node {
    Sync(SyncFn),
    Async(AsyncFn),
}

/// A graph of tasks — closures, or closures returning futures — and their order; each
/// task may have a name, a cost and a steal group ([`TaskGraph::task`]).
#[derive(Default)]
pub struct TaskGraph {
    nodes: Vec<Node>,
    /// Per task: its name, if it was given one.
    names: Vec<Option<Box<str>>>,
    /// Per task: its cost (1 unless set).
    costs: Vec<u64>,
    /// Per task: the steal group it is bound to, if any.
    groups: Vec<Option<u32>>,
    edges: Vec<(u32, u32)>,
    topology: OnceLock<Result<Topology, SchedulerError>>,
}

/// The [`DagBody`] of a task graph: calls the node's closure.
pub(crate) struct GraphBody<'a> {
    nodes: &'a [Node],
}

impl DagBody for GraphBody<'_> {
    type Error = Infallible;

    #[inline]
    fn run(&self, task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<Infallible>, Infallible> {
        match &self.nodes[task as usize] {
            Node::Sync(f) => {
                f();
                Ok(TaskOutcome::Done)
            }
            Node::Async(f) => Ok(TaskOutcome::Pending(f())),
        }
    }
}

impl TaskGraph {
    /// An empty graph.
    pub fn new() -> TaskGraph {
        TaskGraph::default()
    }

    fn push(&mut self, node: Node) -> TaskId {
        let index =
            u32::try_from(self.nodes.len()).expect("a task graph holds at most u32::MAX tasks");
        self.nodes.push(node);
        self.names.push(None);
        self.costs.push(1);
        self.groups.push(None);
        self.topology = OnceLock::new();
        TaskId(index)
    }

    /// Sets the name, cost or steal group of task `id`:
    /// `graph.task(id).name("load").cost(40)`.
    ///
    /// # Panics
    ///
    /// If `id` is not from this graph.
    pub fn task(&mut self, id: TaskId) -> TaskBuilder<'_> {
        let n = self.nodes.len();
        assert!(
            (id.0 as usize) < n,
            "TaskGraph::task: task id {id:?} is not from this graph of {n} tasks"
        );
        TaskBuilder { graph: self, id }
    }

    /// The name of task `id`, if it was given one.
    ///
    /// # Panics
    ///
    /// If `id` is not from this graph.
    pub fn name(&self, id: TaskId) -> Option<&str> {
        self.names[id.0 as usize].as_deref()
    }

    /// The cost of task `id` (1 unless set with [`TaskBuilder::cost`]).
    ///
    /// # Panics
    ///
    /// If `id` is not from this graph.
    pub fn cost(&self, id: TaskId) -> u64 {
        self.costs[id.0 as usize]
    }

    /// The steal group task `id` is bound to, if any ([`TaskBuilder::group`]).
    ///
    /// # Panics
    ///
    /// If `id` is not from this graph.
    pub fn group(&self, id: TaskId) -> Option<u32> {
        self.groups[id.0 as usize]
    }

    /// The ids of all tasks, in the order they were added (index order).
    pub fn ids(&self) -> impl ExactSizeIterator<Item = TaskId> + '_ {
        (0..self.nodes.len() as u32).map(TaskId)
    }

    /// Adds a task that runs `f`.
    pub fn add(&mut self, f: impl Fn() + Send + Sync + 'static) -> TaskId {
        self.push(Node::Sync(Box::new(f)))
    }

    /// Adds an asynchronous task: each run calls `f` and drives the future it returns; the
    /// task finishes when the future does. While it is pending it holds no worker.
    pub fn add_async<F>(&mut self, f: impl Fn() -> F + Send + Sync + 'static) -> TaskId
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.push(Node::Async(Box::new(move || f().map(Ok).boxed())))
    }

    /// Makes `before` finish before `after` starts.
    ///
    /// # Panics
    ///
    /// If either task is not from this graph.
    pub fn precede(&mut self, before: TaskId, after: TaskId) {
        let n = self.nodes.len();
        assert!(
            (before.0 as usize) < n && (after.0 as usize) < n,
            "TaskGraph::precede: task ids {before:?}/{after:?} are not from this graph of {n} tasks"
        );
        self.edges.push((before.0, after.0));
        self.topology = OnceLock::new();
    }

    /// Makes `after` start only after `before` finished (the same as
    /// `precede(before, after)`).
    pub fn succeed(&mut self, after: TaskId, before: TaskId) {
        self.precede(before, after);
    }

    /// The number of tasks.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no task.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The number of edges added with [`precede`](Self::precede)/[`succeed`](Self::succeed).
    pub fn num_edges(&self) -> usize {
        self.edges.len()
    }

    /// The graph's topology, built on first use after a change.
    ///
    /// # Errors
    ///
    /// [`SchedulerError::Cycle`] if the edges form a cycle.
    pub fn topology(&self) -> Result<&Topology, SchedulerError> {
        self.topology
            .get_or_init(|| {
                let mut builder = Topology::builder(self.nodes.len());
                for &(from, to) in &self.edges {
                    builder.add_edge(from, to);
                }
                for (task, (&cost, &group)) in self.costs.iter().zip(&self.groups).enumerate() {
                    if cost != 1 {
                        builder.set_cost(task as u32, cost);
                    }
                    if let Some(group) = group {
                        builder.set_group(task as u32, group);
                    }
                }
                builder.build()
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    pub(crate) fn body(&self) -> GraphBody<'_> {
        GraphBody { nodes: &self.nodes }
    }
}

/// Sets the name, cost and steal group of one task of a [`TaskGraph`]; made by
/// [`TaskGraph::task`]. Each setter returns the builder, so they chain.
#[derive(Debug)]
pub struct TaskBuilder<'a> {
    graph: &'a mut TaskGraph,
    id: TaskId,
}

impl TaskBuilder<'_> {
    /// The task being set.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Names the task (traces show it; the scheduler does not look at it).
    pub fn name(self, name: impl Into<String>) -> Self {
        self.graph.names[self.id.0 as usize] = Some(name.into().into_boxed_str());
        self
    }

    /// Sets the task's estimated cost (default 1), in any unit as long as all tasks use the
    /// same one ([`TopologyBuilder::set_cost`](super::TopologyBuilder::set_cost)): the
    /// critical-path policy orders by the costliest remaining path, and custom policies
    /// see it ([`QueueContext::cost`](super::QueueContext::cost)). It never changes what
    /// runs.
    pub fn cost(self, cost: u64) -> Self {
        self.graph.costs[self.id.0 as usize] = cost;
        self.graph.topology = OnceLock::new();
        self
    }

    /// Binds the task to steal group `group` of the pool that runs the graph
    /// ([`TopologyBuilder::set_group`](super::TopologyBuilder::set_group)).
    ///
    /// # Panics
    ///
    /// If `group` is `u32::MAX`.
    pub fn group(self, group: u32) -> Self {
        assert!(
            group != u32::MAX,
            "TaskBuilder::group: group u32::MAX is reserved"
        );
        self.graph.groups[self.id.0 as usize] = Some(group);
        self.graph.topology = OnceLock::new();
        self
    }
}

impl fmt::Debug for TaskGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGraph")
            .field("tasks", &self.nodes.len())
            .field("edges", &self.edges.len())
            .field("topology_cached", &self.topology.get().is_some())
            .finish()
    }
}
