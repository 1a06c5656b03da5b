//! [`Master`] and [`MasterSession`]: the master service of a task — the server a
//! client's session talks to.
//!
//! # A step
//! 1. The signature (feeds, fetches, targets) selects a cached plan; the first run of a
//!    signature prunes, places and partitions the graph ([`super::partition`]) and
//!    registers each task's partition on that task, concurrently — once per signature
//!    (graphs only grow and nodes never change, so the graph's version is implied). A
//!    step that runs wholly on the one device of a task in this process registers the
//!    session's graph itself there, shared, instead of a copy
//!    ([`RegisterPartition::shared`]).
//! 2. The master draws a step id (128 random bits: [`StepId::random`]) and runs the step
//!    on every task with a partition,
//!    concurrently; each feed goes only to the task that consumes it; tensors between
//!    tasks go worker to worker through `_Send`/`_Recv`.
//! 3. On the first failure it aborts the step on every task (the failed one too), waits
//!    for them (each returns within the step's deadline, or the transport gives up on it
//!    shortly after: [`TransportError::NoAnswer`]), and reports the failure closest to the
//!    cause, which names its task: a task that did not answer at all comes before the
//!    deadlines that other tasks, waiting for its tensors, report themselves. The aborts
//!    are sent without waiting for their answers, so a frozen task delays nothing. A task
//!    that restarted (its partitions are unknown) makes the master re-register the
//!    signature and retry once.
//! 4. Fetches return in the client's order.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use parking_lot::Mutex;

use super::error::MasterError;
use super::partition::{partition_or_share, PlacedNode, StepPartitions, FEED_PREFIX};
use super::timeline::{AlignedTimeline, ClusterTimeline};
use crate::cluster::ClusterSpec;
use crate::error::Code;
use crate::graph::{Graph, GraphDef, NodeId, Output};
use crate::registry::KernelRegistry;
use crate::scheduler::CancellationToken;
use crate::session::{check_feed, declared_feed_shape, plan_key, PlanKey, RunOptions};
use crate::step_id::{random_hex, StepId};
use crate::tensor::{DType, Tensor};
use crate::transport::{
    run_partition_cancellable, unix_micros_now, DeviceInfo, PartitionHandle, PartitionOutput,
    RegisterPartition, RunPartition, SharedPartition, TaskName, Transport, TransportError,
};

/// How a master runs steps.
#[derive(Clone, Debug)]
pub struct MasterOptions {
    /// Deadline of a step when the client gives none.
    pub step_timeout: Duration,
    /// How long opening a session waits for tasks that cannot be reached yet (a cluster
    /// whose servers start in any order), retrying with backoff and logging which tasks
    /// it awaits, before it fails naming them (default 60 s; zero: fail at once).
    pub peer_wait: Duration,
    /// The kernels placement consults (which device types can run an op).
    pub kernels: KernelRegistry,
}

impl Default for MasterOptions {
    fn default() -> Self {
        MasterOptions {
            step_timeout: Duration::from_secs(10),
            peer_wait: DEFAULT_PEER_WAIT,
            kernels: KernelRegistry::global(),
        }
    }
}

/// The default of [`MasterOptions::peer_wait`].
pub const DEFAULT_PEER_WAIT: Duration = Duration::from_secs(60);

/// The first pause between attempts to reach missing tasks; it doubles up to
/// [`PEER_RETRY_MAX`].
const PEER_RETRY_FIRST: Duration = Duration::from_millis(50);
const PEER_RETRY_MAX: Duration = Duration::from_secs(2);

/// The master service of one task.
///
/// A master and a worker assembled by hand over one task (a
/// [`TaskServer`](super::TaskServer) does this, with the server lifecycle). The hidden
/// lines define a `CPU`-type device, `Placeholder`'s kernel and a transport that hands
/// each request to the worker, as in the [`TaskServer`](super::TaskServer) example.
///
/// ```
/// # use std::sync::{Arc, OnceLock};
/// # use std::time::Duration;
/// #
/// # use magpie_core::cluster::ClusterSpec;
/// # use magpie_core::device::Device;
/// # use magpie_core::distributed::{ServerOptions, Worker, WorkerError};
/// # use magpie_core::graph::{DeviceName, Graph};
/// # use magpie_core::kernel::async_support::{BoxFuture, FutureExt};
/// # use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelInit};
/// # use magpie_core::registry::{KernelKey, KernelRegistry};
/// # use magpie_core::tensor::{DType, Tensor};
/// # use magpie_core::transport::{
/// #     DeviceInfo, PartitionHandle, PartitionOutput, RegisterPartition, RendezvousKey,
/// #     RunPartition, TaskName, Transport, TransportError,
/// # };
/// # use magpie_core::StepId;
/// #
/// # #[derive(Debug)]
/// # struct Host(DeviceName);
/// # impl Device for Host {
/// #     fn name(&self) -> &DeviceName { &self.0 }
/// #     fn as_any(&self) -> &dyn std::any::Any { self }
/// # }
/// #
/// # /// A placeholder's kernel runs only when a step forgets to feed it.
/// # struct Unfed;
/// # impl Kernel for Unfed {
/// #     fn compute(&self, _: &mut KernelContext<'_>) -> Result<(), KernelError> {
/// #         Err(KernelError::InvalidArgument("a placeholder must be fed".into()))
/// #     }
/// # }
/// #
/// # /// Reaches the one worker of this process.
/// # #[derive(Debug, Default)]
/// # struct Loopback(OnceLock<Arc<Worker>>);
/// #
/// # impl Loopback {
/// #     fn worker(&self) -> Arc<Worker> {
/// #         Arc::clone(self.0.get().expect("the worker is set before any request"))
/// #     }
/// # }
/// #
/// # type Answer<T> = BoxFuture<'static, Result<T, TransportError>>;
/// #
/// # impl Transport for Loopback {
/// #     fn list_devices(&self, _: &TaskName) -> Answer<Vec<DeviceInfo>> {
/// #         let devices = self.worker().device_infos();
/// #         async move { Ok(devices) }.boxed()
/// #     }
/// #     fn register_partition(&self, _: &TaskName, r: RegisterPartition) -> Answer<PartitionHandle> {
/// #         let answer = self.worker().register_partition(r).map_err(WorkerError::into_transport);
/// #         async move { answer }.boxed()
/// #     }
/// #     fn run_partition(&self, _: &TaskName, r: RunPartition) -> Answer<PartitionOutput> {
/// #         let worker = self.worker();
/// #         async move { worker.run_partition_async(r, None).await.map_err(WorkerError::into_transport) }
/// #             .boxed()
/// #     }
/// #     fn send(&self, _: &TaskName, session: &str, key: RendezvousKey, t: Tensor) -> Answer<()> {
/// #         let answer = self.worker().deliver(session, key, t).map_err(WorkerError::into_transport);
/// #         async move { answer }.boxed()
/// #     }
/// #     fn abort_step(&self, _: &TaskName, session: &str, step: StepId) -> Answer<()> {
/// #         let answer = self.worker().abort_step(session, step).map_err(WorkerError::into_transport);
/// #         async move { answer }.boxed()
/// #     }
/// #     fn release_session(&self, _: &TaskName, session: &str) -> Answer<()> {
/// #         self.worker().release_session(session);
/// #         async { Ok(()) }.boxed()
/// #     }
/// # }
/// #
/// use magpie_core::distributed::{Master, MasterError, MasterOptions};
/// # let cpu = DeviceName::parse("/job:local/replica:0/task:0/device:CPU:0")?;
/// # let kernels = KernelRegistry::new();
/// # kernels.register(KernelKey::new("Placeholder", "CPU"), |_: &KernelInit<'_>| {
/// #     Ok(BoxedKernel::Sync(Box::new(Unfed)))
/// # })?;
/// # let options = ServerOptions::with_devices(vec![Arc::new(Host(cpu))]).kernels(kernels.clone());
/// # let transport = Arc::new(Loopback::default());
///
/// let task = TaskName::new("local", 0);
/// let cluster = ClusterSpec::builder().job("local", ["localhost:2222"]).build()?;
/// let worker = Worker::new(task.clone(), &options, transport.clone())?;
/// transport.0.set(Arc::new(worker)).expect("set once");
/// let master = Arc::new(Master::new(
///     task,
///     cluster,
///     transport,
///     MasterOptions { kernels, ..MasterOptions::default() },
/// ));
///
/// let g = Graph::new();
/// let x = g.placeholder(DType::F32, None)?;
/// let total = g.variable("total", DType::F32)?;
/// let set = total.assign(&g, x)?;
/// let add = total.assign_add(&g, x)?;
///
/// let session = master.create_session(&g)?;
/// assert_eq!(session.devices().len(), 1); // the cluster's one device
/// session.run(&[(x, Tensor::scalar(0.5f32))], &[set], &[])?;
/// for _ in 0..3 {
///     session.run(&[(x, Tensor::scalar(0.5f32))], &[add], &[])?;
/// }
/// let out = session.run(&[(x, Tensor::scalar(0.0f32))], &[add], &[])?;
/// assert_eq!(out[0].scalar_value::<f32>()?, 2.0);
///
/// // A fed tensor of the wrong dtype fails before any task runs, naming the node.
/// let err = session.run(&[(x, Tensor::scalar(1i32))], &[add], &[]).unwrap_err();
/// assert!(matches!(err, MasterError::BadFeed(_)), "{err}");
///
/// session.close();
/// let closed = session.run(&[(x, Tensor::scalar(1.0f32))], &[add], &[]).unwrap_err();
/// assert!(matches!(closed, MasterError::Closed));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Master {
    task: TaskName,
    cluster: ClusterSpec,
    transport: Arc<dyn Transport>,
    options: MasterOptions,
    stopping: AtomicBool,
    /// Steps running now (for tests and diagnostics).
    running: Arc<AtomicUsize>,
}

/// Counts a step as running while it lives.
struct RunningStep(Arc<AtomicUsize>);

impl RunningStep {
    fn new(count: &Arc<AtomicUsize>) -> RunningStep {
        count.fetch_add(1, Ordering::Relaxed);
        RunningStep(Arc::clone(count))
    }
}

impl Drop for RunningStep {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Master")
            .field("task", &self.task.to_string())
            .finish()
    }
}

impl Master {
    /// The master of `task`, reaching the cluster's tasks through `transport`.
    pub fn new(
        task: TaskName,
        cluster: ClusterSpec,
        transport: Arc<dyn Transport>,
        options: MasterOptions,
    ) -> Master {
        Master {
            task,
            cluster,
            transport,
            options,
            stopping: AtomicBool::new(false),
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The master's task.
    pub fn task(&self) -> &TaskName {
        &self.task
    }

    /// How it runs steps (among them the default step deadline).
    pub fn options(&self) -> &MasterOptions {
        &self.options
    }

    /// Steps of this master's sessions running now, on any task.
    pub fn running_steps(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Refuses new sessions and steps from now on.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn check_serving(&self) -> Result<(), MasterError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(MasterError::Stopping {
                task: self.task.to_string(),
            });
        }
        Ok(())
    }

    /// Every device of the cluster, the master task's first. Tasks that cannot be reached
    /// yet are asked again, with backoff, for up to [`MasterOptions::peer_wait`] (the
    /// calling thread blocks meanwhile).
    ///
    /// # Errors
    ///
    /// - [`MasterError::Stopping`] once [`Master::begin_stop`] was called.
    /// - [`MasterError::PeersMissing`], naming every task still unreachable, when
    ///   [`MasterOptions::peer_wait`] passes; with a zero `peer_wait`, an unreachable
    ///   task's [`TransportError::Unreachable`] as [`MasterError::Transport`] at once.
    /// - [`MasterError::Transport`] when a task answers with another error (it refuses
    ///   work, it failed): such a task is not waited for.
    pub fn cluster_devices(&self) -> Result<Vec<DeviceInfo>, MasterError> {
        let mut tasks = self.cluster.tasks();
        tasks.sort_by_key(|t| *t != self.task);
        let mut found: Vec<Option<Vec<DeviceInfo>>> = vec![None; tasks.len()];
        let start = Instant::now();
        let mut pause = PEER_RETRY_FIRST;
        loop {
            self.check_serving()?;
            let missing: Vec<usize> = (0..tasks.len()).filter(|i| found[*i].is_none()).collect();
            let futs = missing
                .iter()
                .map(|&i| self.transport.list_devices(&tasks[i]));
            let mut last = None;
            let mut still: Vec<String> = Vec::new();
            for (&i, r) in missing.iter().zip(block_on(join_all(futs))) {
                match r {
                    Ok(devices) => found[i] = Some(devices),
                    // Not up yet (or not any more): worth waiting for.
                    Err(e @ TransportError::Unreachable { .. }) => {
                        still.push(tasks[i].to_string());
                        last = Some(e);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let Some(last) = last else {
                return Ok(found.into_iter().flatten().flatten().collect());
            };
            let waited = start.elapsed();
            if waited >= self.options.peer_wait {
                if self.options.peer_wait.is_zero() {
                    return Err(last.into());
                }
                return Err(MasterError::PeersMissing {
                    tasks: still,
                    waited_ms: waited.as_millis() as u64,
                    last,
                });
            }
            tracing::info!(
                master = %self.task,
                awaiting = %still.join(", "),
                waited_ms = waited.as_millis() as u64,
                "opening a session: waiting for tasks that cannot be reached yet"
            );
            std::thread::sleep(pause.min(self.options.peer_wait - waited));
            pause = (pause * 2).min(PEER_RETRY_MAX);
        }
    }

    fn internal(&self, e: impl fmt::Display) -> MasterError {
        MasterError::Internal {
            task: self.task.to_string(),
            detail: e.to_string(),
        }
    }

    /// Opens a session over `graph` (which may keep growing). Its name on the workers
    /// (`<task>/session/<32 hex digits>`) carries 128 random bits: aborts and tensors
    /// for its steps must name it. Lists the cluster's devices first
    /// ([`Master::cluster_devices`]), so it may wait for tasks that are not up yet.
    ///
    /// # Errors
    ///
    /// - [`MasterError::Stopping`] once [`Master::begin_stop`] was called.
    /// - [`MasterError::PeersMissing`] or [`MasterError::Transport`] when the cluster's
    ///   tasks cannot be listed (see [`Master::cluster_devices`]).
    /// - [`MasterError::Internal`] when no random bits can be drawn for the session name.
    pub fn create_session(self: &Arc<Self>, graph: &Graph) -> Result<MasterSession, MasterError> {
        self.create_session_with(graph, MasterSessionOptions::default())
    }

    /// [`create_session`](Self::create_session) with `options` (soft placement).
    ///
    /// # Errors
    ///
    /// As [`create_session`](Self::create_session).
    pub fn create_session_with(
        self: &Arc<Self>,
        graph: &Graph,
        options: MasterSessionOptions,
    ) -> Result<MasterSession, MasterError> {
        self.check_serving()?;
        let devices = self.cluster_devices()?;
        let random = random_hex().map_err(|e| self.internal(e))?;
        let handle = format!("{}/session/{random}", self.task);
        Ok(MasterSession {
            master: Arc::clone(self),
            handle,
            graph: graph.clone(),
            devices,
            options,
            plans: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        })
    }
}

/// How a [`MasterSession`] treats its graph, chosen when it is opened
/// ([`Master::create_session_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterSessionOptions {
    /// Soft placement (TensorFlow's `allow_soft_placement`): a node pinned to a device
    /// the cluster lacks, or to devices with no kernel for its op, runs on a device that
    /// can run it instead of failing (see [`placement`](super::placement)).
    pub allow_soft_placement: bool,
}

impl MasterSessionOptions {
    /// Sets [`allow_soft_placement`](Self::allow_soft_placement).
    pub fn allow_soft_placement(mut self, allow: bool) -> MasterSessionOptions {
        self.allow_soft_placement = allow;
        self
    }
}

/// How close a step failure is to its cause, lowest first: the step reports the failure
/// closest to the cause whichever arrives first. A task the master cannot reach is the
/// cause (other tasks then fail their sends to it); a failure a task reports comes next;
/// deadlines and cancellations, which the first failure's abort causes elsewhere, last.
///
/// A task that did not answer at all ([`TransportError::NoAnswer`]: frozen, hung) is a
/// cause like an unreachable one: the deadlines the other tasks report meanwhile come
/// from waiting for it. So is a task that lost its partitions (it restarted): the other
/// tasks' sends to it fail because it no longer knows the session, and the master
/// registers the signature again only when it sees the cause.
fn cause_rank(e: &TransportError) -> u8 {
    match e {
        TransportError::Unreachable { .. }
        | TransportError::Refused { .. }
        | TransportError::NoAnswer { .. }
        | TransportError::UnknownPartition { .. } => 0,
        TransportError::Remote {
            code: Code::DeadlineExceeded,
            ..
        } => 2,
        TransportError::Remote { .. } | TransportError::LimitExceeded { .. } => 1,
        TransportError::DeadlineExceeded { .. } => 2,
        TransportError::Cancelled { .. } => 3,
    }
}

struct TaskStep {
    task: TaskName,
    handle: PartitionHandle,
    /// The client's feed index of each of the partition's feeds.
    feeds: Vec<usize>,
    /// The client's fetch index of each of the partition's fetches.
    fetches: Vec<usize>,
}

struct StepPlan {
    tasks: Vec<TaskStep>,
    placement: Arc<Vec<PlacedNode>>,
    feed_dtypes: Vec<DType>,
    /// The declared shape of each fed placeholder, if any.
    feed_shapes: Vec<Option<(String, Vec<i64>)>>,
    feed_names: Vec<String>,
}

/// `e` with the partitions' feed placeholders (`_magpie/feed/<k>`) in a task's message
/// named as the client knows them (`x:0`, `x`): an error names the user's nodes only.
fn with_user_feed_names(e: MasterError, plan: &StepPlan) -> MasterError {
    match e {
        MasterError::Step {
            step_id,
            source:
                TransportError::Remote {
                    task,
                    mut detail,
                    code,
                },
        } if detail.contains(FEED_PREFIX) => {
            // Highest first, so `_magpie/feed/1` never rewrites part of `_magpie/feed/12`.
            for (k, output) in plan.feed_names.iter().enumerate().rev() {
                let placeholder = format!("{FEED_PREFIX}{k}");
                let node = output.rsplit_once(':').map_or(output.as_str(), |(n, _)| n);
                detail = detail
                    .replace(&format!("{placeholder}:0"), output)
                    .replace(&placeholder, node);
            }
            MasterError::Step {
                step_id,
                source: TransportError::Remote { task, detail, code },
            }
        }
        other => other,
    }
}

/// What [`MasterSession::run_with_options`] returns.
#[derive(Clone, Debug)]
pub struct ClusterRunOutput {
    /// The fetched tensors, in fetch order.
    pub tensors: Vec<Tensor>,
    /// The step's id.
    pub step_id: StepId,
    /// Where each node of the step ran, in graph order.
    pub placement: Arc<Vec<PlacedNode>>,
    /// The tasks the step ran on.
    pub tasks: Vec<TaskName>,
    /// Every task's node records of the step on the master's clock, when
    /// [`RunOptions::trace`] asked for them
    /// ([`ClusterTimeline::chrome_trace_json`] renders one merged trace).
    pub timeline: Option<ClusterTimeline>,
}

/// A session on a master: runs steps of a graph over the cluster. Dropping it closes it
/// ([`MasterSession::close`]).
pub struct MasterSession {
    master: Arc<Master>,
    handle: String,
    graph: Graph,
    devices: Vec<DeviceInfo>,
    options: MasterSessionOptions,
    plans: Mutex<HashMap<PlanKey, Arc<StepPlan>>>,
    /// Set by `close`: no step runs and no partition is registered from then on.
    closed: AtomicBool,
}

impl fmt::Debug for MasterSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterSession")
            .field("handle", &self.handle)
            .field("master", &self.master.task.to_string())
            .field("plans", &self.plans.lock().len())
            .finish()
    }
}

impl MasterSession {
    /// The session's handle (unique on its master).
    pub fn handle(&self) -> &str {
        &self.handle
    }

    /// The options the session was opened with.
    pub fn options(&self) -> MasterSessionOptions {
        self.options
    }

    /// The graph it runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The cluster's devices, the master's first (the first is the default device).
    pub fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    /// Runs one step: fetches come back in order. The calling thread blocks until the
    /// step ends; its deadline is the master's [`MasterOptions::step_timeout`].
    ///
    /// # Errors
    ///
    /// - [`MasterError::Closed`] after [`MasterSession::close`];
    ///   [`MasterError::Stopping`] once the master stops.
    /// - The first run of a signature prunes, places and registers it:
    ///   [`MasterError::Graph`] for a feed, fetch or target that is not an output of the
    ///   graph; [`MasterError::NoMatchingDevice`], [`MasterError::NoKernel`] or
    ///   [`MasterError::BadColocation`] for a node that cannot be placed;
    ///   [`MasterError::Transport`] when a task refuses or fails the registration.
    /// - [`MasterError::BadFeed`] for a fed tensor whose dtype or shape does not fit its
    ///   output, naming the client's node.
    /// - [`MasterError::Step`] when a task fails the step or cannot be reached during it:
    ///   the root cause, naming its task (a kernel's error, a
    ///   [`TransportError::DeadlineExceeded`] past the step's deadline, ...). A task that
    ///   restarted is registered again and the step retried once before this is reported.
    /// - [`MasterError::Internal`] when no random bits can be drawn for the step id.
    pub fn run(
        &self,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<Vec<Tensor>, MasterError> {
        self.run_with_options(&RunOptions::default(), feeds, fetches, targets)
            .map(|o| o.tensors)
    }

    /// [`MasterSession::run`] with a timeout and a cancellation token: cancelling
    /// `options.cancel` aborts the step on every task and fails it with
    /// [`MasterError::Cancelled`]. With `options.trace`, every task records its
    /// partition's timeline and the output carries them all
    /// ([`ClusterRunOutput::timeline`]); other options are not used yet.
    ///
    /// Blocks the calling thread until the step ends (it waits on
    /// [`run_async_with_options`](Self::run_async_with_options)); async callers — a
    /// server's handlers — use that instead.
    ///
    /// # Errors
    ///
    /// As for [`MasterSession::run`] (`options.timeout` replaces the master's default
    /// deadline), and [`MasterError::Cancelled`] when `options.cancel` is cancelled
    /// before the step ends.
    pub fn run_with_options(
        &self,
        options: &RunOptions,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<ClusterRunOutput, MasterError> {
        block_on(self.run_async_with_options(options, feeds, fetches, targets))
    }

    /// [`MasterSession::run`] without blocking: registers the signature's partitions
    /// the first time, then runs the step on every task concurrently; the future holds
    /// no thread while it waits and may be polled by any executor.
    ///
    /// **Dropping the future aborts the step** on every task it runs on (the aborts are
    /// sent as the future drops; nobody waits for their answers).
    ///
    /// # Errors
    ///
    /// As for [`MasterSession::run`]; the future resolves to the error.
    pub async fn run_async(
        &self,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<Vec<Tensor>, MasterError> {
        self.run_async_with_options(&RunOptions::default(), feeds, fetches, targets)
            .await
            .map(|o| o.tensors)
    }

    /// [`MasterSession::run_with_options`] without blocking (see
    /// [`run_async`](Self::run_async)).
    ///
    /// # Errors
    ///
    /// As for [`MasterSession::run`]; the future resolves to the error.
    pub async fn run_async_with_options(
        &self,
        options: &RunOptions,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<ClusterRunOutput, MasterError> {
        if self.is_closed() {
            return Err(MasterError::Closed);
        }
        self.master.check_serving()?;
        let key = plan_key(feeds, fetches, targets);
        let timeout = options.timeout.unwrap_or(self.master.options.step_timeout);
        let started = Instant::now();
        let mut retried = false;
        loop {
            let plan = self.plan(&key).await?;
            // Feeds are checked here, as a local session checks them, so that a mistake
            // names the client's node (not the partition's feed placeholder).
            for (k, (_, t)) in feeds.iter().enumerate() {
                check_feed(
                    &plan.feed_names[k],
                    plan.feed_dtypes[k],
                    plan.feed_shapes[k].as_ref(),
                    t,
                )
                .map_err(|e| MasterError::BadFeed(Box::new(e)))?;
            }
            let left = timeout.saturating_sub(started.elapsed());
            let cancel = options.cancel.as_ref();
            match self
                .run_plan(&plan, feeds, fetches.len(), left, cancel, options.trace)
                .await
                .map_err(|e| with_user_feed_names(e, &plan))
            {
                Err(MasterError::Step {
                    source: TransportError::UnknownPartition { .. },
                    ..
                }) if !retried => {
                    // A task restarted: register the signature again, once.
                    retried = true;
                    self.plans.lock().remove(&key);
                }
                other => return other,
            }
        }
    }

    async fn plan(&self, key: &PlanKey) -> Result<Arc<StepPlan>, MasterError> {
        let cached = self.plans.lock().get(key).cloned();
        if let Some(p) = cached {
            return Ok(p);
        }
        let m = &self.master;
        let parts = partition_or_share(
            &self.graph,
            &key.0,
            &key.1,
            &key.2,
            &self.devices,
            &m.task,
            &m.options.kernels,
            self.options.allow_soft_placement,
            |task| m.transport.is_in_process(task),
        )?;
        let mut regs = Vec::new();
        let mut tasks: Vec<(TaskName, Vec<usize>, Vec<usize>)> = Vec::new();
        let (placement, feed_dtypes) = match parts {
            StepPartitions::Shared {
                task,
                placement,
                feed_dtypes,
            } => {
                // The task's worker runs the session's graph itself: nothing is copied.
                regs.push(m.transport.register_partition(
                    &task,
                    RegisterPartition {
                        session: self.handle.clone(),
                        graph: GraphDef::default(),
                        feeds: Vec::new(),
                        fetches: Vec::new(),
                        targets: Vec::new(),
                        shared: Some(SharedPartition {
                            graph: self.graph.clone(),
                            feeds: key.0.clone(),
                            fetches: key.1.clone(),
                            targets: key.2.clone(),
                        }),
                    },
                ));
                tasks.push((task, (0..key.0.len()).collect(), (0..key.1.len()).collect()));
                (placement, feed_dtypes)
            }
            StepPartitions::Split(parts) => {
                let names =
                    |v: &[(String, usize)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
                // Each partition's graph moves into its request: registering copies none.
                for (task, p) in parts.partitions {
                    tasks.push((
                        task.clone(),
                        p.feeds.iter().map(|(_, k)| *k).collect(),
                        p.fetches.iter().map(|(_, k)| *k).collect(),
                    ));
                    regs.push(m.transport.register_partition(
                        &task,
                        RegisterPartition {
                            session: self.handle.clone(),
                            feeds: names(&p.feeds),
                            fetches: names(&p.fetches),
                            graph: p.graph,
                            targets: p.targets,
                            shared: None,
                        },
                    ));
                }
                (parts.placement, parts.feed_dtypes)
            }
        };
        let handles = join_all(regs).await;
        let mut steps = Vec::with_capacity(tasks.len());
        for ((task, feeds, fetches), h) in tasks.into_iter().zip(handles) {
            steps.push(TaskStep {
                task,
                handle: h?,
                feeds,
                fetches,
            });
        }
        let feed_names = key
            .0
            .iter()
            .map(|o| format!("{}:{}", self.graph.name_of(o.node), o.index))
            .collect();
        let feed_shapes = key
            .0
            .iter()
            .map(|o| {
                self.graph
                    .node(o.node)
                    .and_then(|n| declared_feed_shape(&n))
            })
            .collect();
        let plan = Arc::new(StepPlan {
            tasks: steps,
            placement: Arc::new(placement),
            feed_dtypes,
            feed_shapes,
            feed_names,
        });
        let mut plans = self.plans.lock();
        if self.is_closed() {
            // Closed while the partitions were registered: `close` did not see them.
            drop(plans);
            self.release(plan.tasks.iter().map(|t| t.task.clone()).collect());
            return Err(MasterError::Closed);
        }
        plans.insert(key.clone(), Arc::clone(&plan));
        Ok(plan)
    }

    async fn run_plan(
        &self,
        plan: &StepPlan,
        feeds: &[(Output, Tensor)],
        num_fetches: usize,
        timeout: Duration,
        cancel: Option<&CancellationToken>,
        trace: bool,
    ) -> Result<ClusterRunOutput, MasterError> {
        let m = &self.master;
        let step_id = StepId::random().map_err(|e| m.internal(e))?;
        let _running = RunningStep::new(&m.running);
        if cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(MasterError::Cancelled { step_id });
        }
        let mut abort_on_drop = AbortOnDrop {
            session: self,
            plan,
            step_id,
            armed: true,
        };
        let transport = &m.transport;
        let request = |t: &TaskStep| RunPartition {
            handle: t.handle.clone(),
            session: self.handle.clone(),
            step_id,
            feeds: t.feeds.iter().map(|k| feeds[*k].1.clone()).collect(),
            timeout,
            trace,
        };
        let mut results: Vec<Option<PartitionOutput>> = vec![None; plan.tasks.len()];
        // When each answer came, by this task's clock (Unix µs), for timeline alignment.
        let mut answered: Vec<u64> = vec![0; plan.tasks.len()];
        let sent = unix_micros_now();
        let mut failure: Option<TransportError> = None;
        if let [t] = &plan.tasks[..] {
            // One partition: nothing to abort elsewhere.
            match run_partition_cancellable(&**transport, &t.task, request(t), cancel).await {
                Ok(ts) => {
                    answered[0] = unix_micros_now();
                    results[0] = Some(ts);
                }
                Err(e) => failure = Some(e),
            }
        } else {
            let mut pending: FuturesUnordered<_> = plan
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    transport
                        .run_partition(&t.task, request(t))
                        .map(move |r| (i, r))
                })
                .collect();
            // Aborts run beside the collection of the answers, never awaited before it: a
            // frozen task answers an abort no sooner than its step.
            let mut aborting = FuturesUnordered::new();
            let abort_all = || {
                join_all(
                    plan.tasks
                        .iter()
                        .map(|t| transport.abort_step(&t.task, &self.handle, step_id)),
                )
                .map(drop)
            };
            let mut cancelled = match cancel {
                Some(c) => c.cancelled().boxed(),
                None => futures::future::pending().boxed(),
            }
            .fuse();
            {
                loop {
                    let (i, r) = futures::select_biased! {
                        next = pending.next() => match next {
                            Some(next) => next,
                            None => break,
                        },
                        () = aborting.select_next_some() => continue,
                        () = cancelled => {
                            // The caller gave up: abort the step everywhere; each task
                            // answers promptly, and the loop collects their answers.
                            if failure.is_none() {
                                aborting.push(abort_all());
                                failure = Some(TransportError::Cancelled {
                                    task: m.task.to_string(),
                                    step_id,
                                });
                            }
                            continue;
                        }
                    };
                    match r {
                        Ok(ts) => {
                            answered[i] = unix_micros_now();
                            results[i] = Some(ts);
                        }
                        Err(e) => {
                            if failure.is_none() {
                                // Abort the step on every task, the failed one too: its
                                // error may have come from the wire while the step still
                                // runs there, and an abort also drops whatever the step's
                                // tensors left in that task's rendezvous. Each task answers
                                // promptly.
                                aborting.push(abort_all());
                                failure = Some(e);
                            } else if failure
                                .as_ref()
                                .is_some_and(|f| cause_rank(&e) < cause_rank(f))
                            {
                                failure = Some(e);
                            }
                        }
                    }
                }
            }
        }
        // Every task answered: nothing is left to abort should this future be dropped now.
        abort_on_drop.armed = false;
        if let Some(source) = failure {
            if cancel.is_some_and(|c| c.is_cancelled()) {
                return Err(MasterError::Cancelled { step_id });
            }
            return Err(MasterError::Step { step_id, source });
        }
        let mut out: Vec<Option<Tensor>> = vec![None; num_fetches];
        let mut timeline = trace.then(ClusterTimeline::default);
        for ((t, r), answered) in plan.tasks.iter().zip(results).zip(answered) {
            let PartitionOutput {
                tensors,
                timeline: task_timeline,
            } = r.unwrap_or_default();
            if let (Some(all), Some(tl)) = (&mut timeline, task_timeline) {
                all.tasks
                    .push(AlignedTimeline::align(t.task.clone(), tl, sent, answered));
            }
            if tensors.len() != t.fetches.len() {
                return Err(MasterError::Step {
                    step_id,
                    source: TransportError::Remote {
                        task: t.task.to_string(),
                        detail: format!(
                            "returned {} tensors for {} fetches",
                            tensors.len(),
                            t.fetches.len()
                        ),
                        code: Code::Internal,
                    },
                });
            }
            for (k, tensor) in t.fetches.iter().zip(tensors) {
                out[*k] = Some(tensor);
            }
        }
        let tensors = out
            .into_iter()
            .enumerate()
            .map(|(k, t)| {
                t.ok_or_else(|| MasterError::Step {
                    step_id,
                    source: TransportError::Remote {
                        task: m.task.to_string(),
                        detail: format!("fetch {k} came from no task"),
                        code: Code::Internal,
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClusterRunOutput {
            tensors,
            step_id,
            placement: Arc::clone(&plan.placement),
            tasks: plan.tasks.iter().map(|t| t.task.clone()).collect(),
            timeline,
        })
    }

    /// Partitions registered for this session so far, per signature (for tests).
    pub fn num_plans(&self) -> usize {
        self.plans.lock().len()
    }

    /// Whether the session was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the session: releases its partitions on every task it registered on, and
    /// every later [`run`](MasterSession::run) fails with [`MasterError::Closed`]
    /// (`FailedPrecondition`, as on every session kind). Steps running now finish.
    /// Closing twice is harmless; dropping the session closes it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let plans = std::mem::take(&mut *self.plans.lock());
        let tasks: Vec<TaskName> = plans
            .values()
            .flat_map(|p| p.tasks.iter().map(|t| t.task.clone()))
            .collect();
        self.release(tasks);
    }

    /// Releases the session's partitions on `tasks`.
    fn release(&self, mut tasks: Vec<TaskName>) {
        if tasks.is_empty() {
            return;
        }
        tasks.sort();
        tasks.dedup();
        let t = &self.master.transport;
        // Each release answers within the transport's request deadline.
        let _ = block_on(join_all(
            tasks
                .iter()
                .map(|task| t.release_session(task, &self.handle)),
        ));
    }
}

/// Aborts a step on every task of its plan when dropped while armed: the step's future
/// was dropped before every task answered. The aborts are under way once
/// [`Transport::abort_step`] returns (both transports send eagerly); their futures are
/// dropped unanswered, so a frozen task delays nothing.
struct AbortOnDrop<'a> {
    session: &'a MasterSession,
    plan: &'a StepPlan,
    step_id: StepId,
    armed: bool,
}

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let transport = &self.session.master.transport;
        for t in &self.plan.tasks {
            drop(transport.abort_step(&t.task, &self.session.handle, self.step_id));
        }
    }
}

impl Drop for MasterSession {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tasks_message_names_feeds_as_the_client_does() {
        let plan = StepPlan {
            tasks: Vec::new(),
            placement: Arc::new(Vec::new()),
            feed_dtypes: vec![DType::F32; 13],
            feed_shapes: vec![None; 13],
            feed_names: (0..13).map(|k| format!("in{k}:0")).collect(),
        };
        let e = MasterError::Step {
            step_id: StepId::from(7u64),
            source: TransportError::Remote {
                task: "/job:w/task:0".into(),
                detail: "node \"_magpie/feed/12\" and \"_magpie/feed/1:0\" disagree".into(),
                code: Code::InvalidArgument,
            },
        };
        let e = with_user_feed_names(e, &plan);
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(
            e.to_string(),
            "step 00000000000000000000000000000007 failed: task /job:w/task:0: node \"in12\" \
             and \"in1:0\" disagree"
        );
    }
}
