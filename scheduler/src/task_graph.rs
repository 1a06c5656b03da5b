//! [`TaskGraph`]: a Taskflow-like graph of closures and async closures, built once and run
//! many times on a [`ThreadPool`](super::ThreadPool).
//!
//! The graph caches its [`Topology`]: the first run after a change builds it (and checks
//! for cycles), later runs reuse it. A cycle is reported as
//! [`RunError::Invalid`](super::RunError::Invalid), never as a hang.

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

/// A graph of tasks — closures, or closures returning futures — and their order.
#[derive(Default)]
pub struct TaskGraph {
    nodes: Vec<Node>,
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
        self.topology = OnceLock::new();
        TaskId(index)
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
                builder.build()
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    pub(crate) fn body(&self) -> GraphBody<'_> {
        GraphBody { nodes: &self.nodes }
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
