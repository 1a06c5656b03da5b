//! [`ThreadPool`]: the user-facing handle, its builder, and `execute`, which runs one DAG.
//!
//! # Guarantees
//!
//! - `execute` runs every task of the topology exactly once if it returns `Ok`, each only
//!   after all its predecessors finished, and returns only once no worker touches the run
//!   any more (the body is borrowed, not `'static`).
//! - Any number of threads may call `execute`/`run` on one pool at once; runs are
//!   independent. A task may itself call `execute` on the pool that runs it.
//! - A thread outside the pool that calls `execute` first runs its own run's work itself,
//!   as long as it has some at hand ([`helper`](super::helper): a small run then never
//!   waits for a worker to wake up); then it sleeps, and is woken by completion, by
//!   [`CancellationToken::cancel`](super::CancellationToken::cancel), or at the deadline.
//! - Dropping the last handle shuts the workers down and joins them (protocol in
//!   `worker.rs`).

use std::fmt;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use super::sync::plain::Mutex;
use crossbeam_deque::Worker;

use super::affinity::{StartHook, StealOrder, StealStats};
use super::body::DagBody;
use super::cancel::RunControl;
use super::error::{RunError, SchedulerError};
use super::helper;
use super::idle_spin::IdleSpin;
use super::job::Job;
use super::latch::Latch;
use super::policy::Policy;
use super::registry::{Registry, DEFAULT_HELPER_SLOTS};
use super::run::RunState;
use super::task_graph::TaskGraph;
use super::topology::Topology;
use super::worker::{self, WorkerCtx};

/// A pool of worker threads with per-worker deques and a global injector.
///
/// Cloning gives another handle to the same pool; the workers stop when the last handle
/// is dropped.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use magpie_scheduler::{TaskGraph, ThreadPool};
///
/// let pool = ThreadPool::builder().num_workers(2).build()?;
/// let sum = Arc::new(AtomicUsize::new(0));
/// let mut graph = TaskGraph::new();
/// let add = |n: usize| {
///     let sum = Arc::clone(&sum);
///     move || {
///         sum.fetch_add(n, Ordering::Relaxed);
///     }
/// };
/// let (a, b, c) = (graph.add(add(1)), graph.add(add(2)), graph.add(add(4)));
/// graph.precede(a, c); // c runs after a and b
/// graph.precede(b, c);
/// pool.run(&graph)?;
/// pool.run(&graph)?; // a graph runs any number of times
/// assert_eq!(sum.load(Ordering::Relaxed), 14);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ThreadPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    registry: Arc<Registry>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.registry.terminate();
        let me = thread::current().id();
        for handle in self.threads.get_mut().drain(..) {
            if handle.thread().id() == me {
                continue; // dropped from a task on this very worker: it exits by itself
            }
            // A worker never unwinds (it aborts instead), so join cannot fail.
            let _ = handle.join();
        }
    }
}

/// Configures and starts a [`ThreadPool`].
#[derive(Debug, Default, Clone)]
pub struct ThreadPoolBuilder {
    num_workers: Option<usize>,
    thread_name: Option<String>,
    stack_size: Option<usize>,
    on_worker_start: Option<StartHook>,
    steal_groups: Option<Vec<Vec<usize>>>,
    steal_group_nodes: Option<Vec<usize>>,
    helper_slots: Option<usize>,
    idle_spin: IdleSpin,
}

impl ThreadPoolBuilder {
    /// The number of worker threads; defaults to the available parallelism.
    pub fn num_workers(mut self, n: usize) -> Self {
        self.num_workers = Some(n);
        self
    }

    /// The prefix of worker thread names (`{prefix}-{index}`); defaults to `magpie-worker`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = Some(prefix.into());
        self
    }

    /// The stack size of worker threads; defaults to the standard library's.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// A callback each worker thread runs, with its index, right after it starts and
    /// before it takes a job: where a backend pins the thread to a core. A panic in it is
    /// caught and the worker serves unpinned.
    pub fn on_worker_start(mut self, hook: Arc<dyn Fn(usize) + Send + Sync>) -> Self {
        self.on_worker_start = Some(StartHook(hook));
        self
    }

    /// Groups of worker indices (e.g. one per NUMA node) that must partition
    /// `0..num_workers`: a worker looking for work steals from its own group before it
    /// tries the others. See [`ThreadPool::steal_stats`].
    pub fn steal_groups(mut self, groups: Vec<Vec<usize>>) -> Self {
        self.steal_groups = Some(groups);
        self
    }

    /// The NUMA node of each steal group given to
    /// [`steal_groups`](Self::steal_groups), in the same order (distinct nodes). The
    /// executor then binds the synchronous kernels of a device on node `k` to the workers
    /// of node `k`'s group ([`ThreadPool::group_of_node`]; see the scheduler's `affinity`
    /// module): a steal never moves them to another node's workers.
    pub fn steal_group_nodes(mut self, nodes: Vec<usize>) -> Self {
        self.steal_group_nodes = Some(nodes);
        self
    }

    /// How many threads outside the pool may, at once, run their own run's work while
    /// they wait in [`ThreadPool::execute`] (see the scheduler's `helper` module); further
    /// callers only wait. Defaults to 2. With 0, a run's tasks run on the workers only.
    pub fn helper_slots(mut self, n: usize) -> Self {
        self.helper_slots = Some(n);
        self
    }

    /// How idle workers look for work before they park, and how many may look at once
    /// (see [`IdleSpin`]); defaults to [`IdleSpin::LONG`] with no cap. A pool that shares
    /// its cores with other busy threads wastes less of them with
    /// [`IdleSpin::SHORT`] or [`IdleSpin::OFF`] and a small cap; a pool that has its cores
    /// to itself starts jobs sooner with the default. No setting affects what runs or in
    /// which order dependencies are honoured.
    pub fn idle_spin(mut self, spin: IdleSpin) -> Self {
        self.idle_spin = spin;
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// [`SchedulerError::NoWorkers`] for zero workers, [`SchedulerError::InvalidStealGroups`]
    /// for groups that do not partition the workers or group nodes that do not match the
    /// groups (one distinct node per group), [`SchedulerError::Spawn`] if a
    /// thread could not be started (the ones already started are stopped again).
    pub fn build(self) -> Result<ThreadPool, SchedulerError> {
        let n = match self.num_workers {
            Some(n) => n,
            None => thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if n == 0 {
            return Err(SchedulerError::NoWorkers);
        }
        let name = self
            .thread_name
            .unwrap_or_else(|| "magpie-worker".to_owned());
        let steal_order = match &self.steal_groups {
            Some(groups) => StealOrder::from_groups(n, groups)?,
            None => StealOrder::flat(n),
        };
        let group_nodes = match (&self.steal_group_nodes, &self.steal_groups) {
            (None, _) => None,
            (Some(nodes), groups) => {
                let groups = groups.as_deref().unwrap_or(&[]);
                let count = groups.iter().filter(|g| !g.is_empty()).count().max(1);
                let mut seen = nodes.clone();
                seen.sort_unstable();
                seen.dedup();
                if nodes.len() != groups.len().max(1) || seen.len() != nodes.len() {
                    return Err(SchedulerError::InvalidStealGroups(format!(
                        "steal_group_nodes {nodes:?} must name one distinct node per steal group ({} groups)",
                        groups.len().max(1)
                    )));
                }
                // Drop the nodes of empty groups, as `StealOrder` drops those groups.
                let kept: Vec<usize> = if groups.is_empty() {
                    nodes.clone()
                } else {
                    nodes
                        .iter()
                        .zip(groups)
                        .filter(|(_, g)| !g.is_empty())
                        .map(|(n, _)| *n)
                        .collect()
                };
                debug_assert_eq!(kept.len(), count);
                Some(kept)
            }
        };
        let locals: Vec<Worker<Job>> = (0..n).map(|_| Worker::new_lifo()).collect();
        let registry = Arc::new(Registry::new(
            locals.iter().map(Worker::stealer).collect(),
            steal_order,
            group_nodes,
            self.on_worker_start,
            self.helper_slots.unwrap_or(DEFAULT_HELPER_SLOTS),
            self.idle_spin,
        ));
        let mut inner = PoolInner {
            registry,
            threads: Mutex::new(Vec::with_capacity(n)),
        };
        for (index, local) in locals.into_iter().enumerate() {
            let mut builder = thread::Builder::new().name(format!("{name}-{index}"));
            if let Some(size) = self.stack_size {
                builder = builder.stack_size(size);
            }
            let registry = Arc::clone(&inner.registry);
            let handle = builder
                .spawn(move || worker::main_loop(registry, index, local))
                .map_err(|e| SchedulerError::Spawn(e.to_string()))?; // `inner` drops: joins
            inner.threads.get_mut().push(handle);
        }
        Ok(ThreadPool {
            inner: Arc::new(inner),
        })
    }
}

/// Aborts if dropped while unwinding: `execute` must not leave while workers may still
/// touch the run's state on its stack.
struct AbortIfUnwinding;

impl Drop for AbortIfUnwinding {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("magpie scheduler: panic while a run was in flight; aborting");
            std::process::abort();
        }
    }
}

impl ThreadPool {
    /// A pool of `num_workers` threads named `magpie-worker-{index}`.
    ///
    /// # Errors
    ///
    /// As for [`ThreadPoolBuilder::build`].
    pub fn new(num_workers: usize) -> Result<ThreadPool, SchedulerError> {
        ThreadPool::builder().num_workers(num_workers).build()
    }

    /// A builder with default settings.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    /// The pool's shared state.
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The number of worker threads.
    pub fn num_workers(&self) -> usize {
        self.inner.registry.num_workers()
    }

    /// How the pool's idle workers look for work ([`ThreadPoolBuilder::idle_spin`]).
    pub fn idle_spin(&self) -> IdleSpin {
        self.inner.registry.idle_spin()
    }

    /// The steal group of NUMA node `node`, when the builder named the groups' nodes
    /// ([`ThreadPoolBuilder::steal_group_nodes`]): tasks bound to it
    /// ([`TopologyBuilder::set_group`](super::TopologyBuilder::set_group)) run only on the
    /// workers of that node.
    pub fn group_of_node(&self, node: usize) -> Option<u32> {
        self.inner.registry.group_of_node(node)
    }

    /// The number of steal groups (1 when the builder gave none).
    pub fn num_groups(&self) -> usize {
        self.inner.registry.num_groups()
    }

    /// Steals between workers so far, split by whether the victim was in the thief's
    /// steal group ([`ThreadPoolBuilder::steal_groups`]).
    pub fn steal_stats(&self) -> StealStats {
        self.inner.registry.steal_stats()
    }

    /// Jobs queued now and not yet taken by a worker (the injectors and every deque): a
    /// snapshot, stale as soon as it is read, for metrics and diagnostics.
    pub fn queued_jobs(&self) -> usize {
        self.inner.registry.queued_jobs()
    }

    /// Runs one execution of a DAG: every task of `topology` runs exactly once, a task only
    /// after all its predecessors finished. Blocks the calling thread until the run is
    /// over; `body` is borrowed, and `execute` does not return while any worker can still
    /// touch it or the run's state.
    ///
    /// Called from a worker of this pool (a task running a nested DAG), the calling worker
    /// keeps running queued jobs — of any run — until its run is over.
    ///
    /// # Errors
    ///
    /// The first failure of the run: a task's error, a panic, cancellation through
    /// `control.cancel`, or `control.deadline` passing. After it, no further body starts,
    /// but bodies already running are waited for: a body that never returns cannot be
    /// interrupted.
    pub fn execute<B: DagBody>(
        &self,
        topology: &Topology,
        body: &B,
        control: &RunControl,
    ) -> Result<(), RunError<B::Error>> {
        self.execute_with(topology, body, control, false)
    }

    /// [`execute`](Self::execute) for a run too short to be worth waking a worker: an
    /// outside caller runs the run's tasks itself and wakes no sleeping worker for the
    /// tasks it queues (a worker that is awake anyway may still steal one). A waiting
    /// caller is never left with work nobody runs: the caller runs its own queue until
    /// it is empty, and once the deadline passes it wakes a worker for what is left, as
    /// `execute` does. If no helper slot is free, or the caller is a worker of this
    /// pool, this is `execute`.
    ///
    /// Meant for runs of a few microseconds whose parallelism is not worth a wake-up
    /// (each costs 5–20 µs on a small machine, and the woken worker then spins): e.g.
    /// magpie-core's short async steps on the thread that awaits them.
    ///
    /// # Errors
    ///
    /// As for [`execute`](Self::execute).
    pub fn execute_on_caller<B: DagBody>(
        &self,
        topology: &Topology,
        body: &B,
        control: &RunControl,
    ) -> Result<(), RunError<B::Error>> {
        self.execute_with(topology, body, control, true)
    }

    /// `execute`, the caller helping as a quiet helper (see `helper`) when `quiet`.
    fn execute_with<B: DagBody>(
        &self,
        topology: &Topology,
        body: &B,
        control: &RunControl,
        quiet: bool,
    ) -> Result<(), RunError<B::Error>> {
        if control.cancel.as_ref().is_some_and(|t| t.is_cancelled()) {
            return Err(RunError::Cancelled);
        }
        if control.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(RunError::DeadlineExceeded);
        }
        if topology.is_empty() {
            return Ok(());
        }
        let registry = &self.inner.registry;
        WorkerCtx::with_current(registry, |worker| {
            let latch = Arc::new(match worker {
                Some(w) => Latch::for_worker(Arc::clone(registry), w.index()),
                None => Latch::for_thread(),
            });
            let state = RunState::new(
                topology,
                body,
                control,
                registry.num_workers(),
                Arc::clone(&latch),
            );
            let _registration = match &control.cancel {
                Some(token) => match token.register(Arc::clone(&latch)) {
                    Some(registration) => Some(registration),
                    None => return Err(RunError::Cancelled),
                },
                None => None,
            };
            let run = state.header_ptr();
            let num_roots = topology.roots().len() as u32;
            let roots = match control.policy {
                Policy::DepthFirst => Job::Roots {
                    run,
                    start: 0,
                    end: num_roots,
                },
                // The roots go to the run's ready queue first (see `policy`).
                _ => {
                    let me = worker.map_or(registry.num_workers(), WorkerCtx::index);
                    state.core.header.push_roots(me);
                    Job::Pick {
                        run,
                        count: num_roots,
                    }
                }
            };
            let guard = AbortIfUnwinding;
            match worker {
                Some(w) => {
                    w.push(roots);
                    let fail = |deadline: bool| {
                        state.fail(if deadline {
                            RunError::DeadlineExceeded
                        } else {
                            RunError::Cancelled
                        })
                    };
                    w.wait_nested(&latch, control.deadline, &fail);
                }
                None => {
                    let helper = match helper::help(registry, roots, control.deadline, quiet) {
                        Ok(helper) => Some(helper),
                        Err(roots) => {
                            registry.inject(roots);
                            None
                        }
                    };
                    latch.wait(control.deadline, registry.spin_policy());
                    if !latch.is_done() {
                        state.fail(if latch.is_cancel_requested() {
                            RunError::Cancelled
                        } else {
                            RunError::DeadlineExceeded
                        });
                        latch.wait_done();
                    }
                    if let Some(helper) = helper {
                        helper.finish(registry);
                    }
                }
            }
            drop(guard);
            state.into_result()
        })
    }

    /// Runs a prebuilt [`TaskGraph`] once. May be called many times, from many threads at
    /// once; the graph's topology is built once and cached.
    ///
    /// # Errors
    ///
    /// [`RunError::Invalid`] if the graph has a cycle; [`RunError::Panicked`] if a task
    /// panicked.
    pub fn run(&self, graph: &TaskGraph) -> Result<(), RunError<std::convert::Infallible>> {
        self.run_with(graph, &RunControl::default())
    }

    /// Like [`run`](Self::run), with a deadline and/or a cancellation token.
    ///
    /// # Errors
    ///
    /// As for [`run`](Self::run), plus [`RunError::Cancelled`] and
    /// [`RunError::DeadlineExceeded`].
    pub fn run_with(
        &self,
        graph: &TaskGraph,
        control: &RunControl,
    ) -> Result<(), RunError<std::convert::Infallible>> {
        let topology = graph.topology().map_err(RunError::Invalid)?;
        self.execute(topology, &graph.body(), control)
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("num_workers", &self.num_workers())
            .finish_non_exhaustive()
    }
}
