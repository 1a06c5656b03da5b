//! [`Worker`]: the worker service of one cluster task — registers partitions, runs
//! their steps with local sessions on the task's devices, and owns the task's
//! rendezvous and resource manager (variables).
//!
//! # Lifecycle
//! 1. While **serving**, every request is accepted; running steps are counted.
//! 2. [`Worker::begin_stop`] makes the worker refuse new partitions and steps
//!    ([`WorkerError::Refused`]); deliveries still land, so running steps can finish.
//! 3. [`Worker::drain`] waits until no step runs or the deadline passes, then cancels the
//!    steps still running (their local sessions stop promptly: the scheduler drops
//!    pending receives) and waits for them to return.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use parking_lot::{Condvar, Mutex};

use super::error::WorkerError;
use super::kernels::late_send_error;
use super::kernels::{register_kernels, register_kernels_into, TaskTransport};
use super::ops::{
    EAGER_SEND_ATTR, EDGE_ATTR, RECV_AFTER_FIRST_STAGE_ATTR, RECV_BEFORE_STEP_ATTR, RECV_OP,
    SEND_OP, SESSION_ATTR,
};
use super::outbox::{Outbox, OutboxGuard};
use super::rendezvous::{ActiveStep, Rendezvous, RendezvousError, Reservation};
use super::server::ServerOptions;
use super::stages::{split, Source, Stages};
use super::unacked::{truncate, Unacked, MAX_REASON_BYTES};
use crate::device::Device;
use crate::error::Code;
use crate::exec::NodeStats;
use crate::graph::{AttrValue, Graph, NodeId, Output, POOLS_ATTR};
use crate::limits::Limit;
use crate::registry::KernelRegistry;
use crate::resource::ResourceMgr;
use crate::scheduler::{CancellationToken, ThreadPool};
use crate::session::{RunOptions, Session, SessionError, SessionOptions};
use crate::step_id::{random_hex, StepId};
use crate::tensor::{StepMemoryLimit, Tensor};
use crate::transport::{
    unix_micros_now, DeviceInfo, PartitionHandle, PartitionOutput, RegisterPartition,
    RendezvousKey, RunPartition, TaskName, TaskTimeline, Transport,
};

struct Partition {
    session_handle: Arc<str>,
    session: Session,
    feeds: Vec<Output>,
    fetches: Vec<Output>,
    targets: Vec<NodeId>,
    /// The partition's receives when the master marked them all safe to await before
    /// the step starts ([`RECV_BEFORE_STEP_ATTR`]): each became a placeholder that the
    /// worker feeds with the received tensor.
    early_recvs: Vec<EarlyRecv>,
    /// The partition's two stages, when the master marked some receives to be awaited
    /// after the first (`stages.rs`).
    staged: Option<Staged>,
}

/// A partition run in two stages: how, and the receives awaited between them.
struct Staged {
    stages: Stages,
    recvs: Vec<EarlyRecv>,
}

/// A `_Recv` of a partition awaited before its step starts.
struct EarlyRecv {
    /// The rendezvous edge.
    edge: String,
    /// The placeholder that stands in for it.
    output: Output,
    /// The `_Recv` node's name and device, for errors.
    node: String,
    device: String,
}

/// The registered partitions, by handle, and how many each master session has.
#[derive(Default)]
struct Partitions {
    by_handle: HashMap<String, Arc<Partition>>,
    sessions: HashMap<Arc<str>, usize>,
}

/// A running partition step.
struct Running {
    run_id: u64,
    step_id: StepId,
    session: Arc<str>,
    token: CancellationToken,
    /// Why another task aborted the step ([`Worker::abort_step_with_reason`]).
    reason: Arc<OnceLock<(Code, String)>>,
}

/// Counters a worker keeps (for tests and diagnostics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Partitions registered since start.
    pub registrations: u64,
    /// Partition steps run (successful or not).
    pub steps: u64,
    /// Partitions currently registered.
    pub partitions: usize,
    /// Partition steps running now.
    pub running_steps: usize,
    /// Rendezvous entries (tensors delivered and receivers waiting) not yet matched.
    pub pending_rendezvous: usize,
    /// Bytes of the tensors delivered to the rendezvous and not yet received, and of
    /// those still arriving ([`Worker::reserve`]).
    pub pending_rendezvous_bytes: usize,
    /// The part of `pending_rendezvous_bytes` reserved for tensors still arriving.
    pub incoming_rendezvous_bytes: usize,
    /// The part of `pending_rendezvous_bytes` delivered for steps that have not started
    /// on this task (bounded by [`ServerOptions::rendezvous_limits`]).
    pub unclaimed_rendezvous_bytes: usize,
    /// Partition steps run in two stages (a task on a cycle through other tasks: see
    /// [`RECV_AFTER_FIRST_STAGE_ATTR`]), successful or not.
    pub staged_steps: u64,
    /// Partition steps that replied while the answers to some of their sends are still
    /// awaited (`unacked.rs`).
    pub unacked_steps: usize,
}

/// How long a partition step of synchronous host kernels (one whose receives are awaited
/// before it starts, or a stage of a staged partition: `early_recv.rs`) may take and
/// still run on the thread that took its request or its last tensor
/// ([`SessionOptions::inline_step_limit`]), rather than the session default of 50 µs.
/// Such a step sits on its cluster step's critical path between two hops: on the pool it
/// costs a hand-off to a worker and back, its nodes spread over the workers that wake,
/// and its `_Send`s, filed from a pool thread while the runtime is free, leave in several
/// requests instead of one per peer (the receiver then wakes once for each). A training
/// step's forward or backward partition of a small model takes 30–60 µs, which a busy
/// machine stretches past 50 µs. The price: a gRPC server's runtime thread (one on a
/// 2-core machine) serves nothing else for up to this long.
const PARTITION_INLINE_STEP_LIMIT: Duration = Duration::from_micros(250);

/// How many reasons of aborts that came before their step started a worker keeps
/// ([`Worker::abort_step_with_reason`]); each is at most 2 KiB.
const ABORT_REASONS_KEPT: usize = 64;

/// The reason of an abort that came before its step started: the step, its session,
/// the cause's code and the reason's text.
type KeptReason = (StepId, Arc<str>, Code, String);

/// The worker service of one task.
///
/// A worker serves what masters ask of its task; here one is driven by hand, as a
/// transport's server does for requests from the wire: register a partition (a graph for
/// this task, with the names its steps feed and fetch), then run steps of it. The hidden
/// lines define a `CPU`-type device, `Placeholder`'s kernel and a transport, as in the
/// [`TaskServer`](super::TaskServer) example.
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
/// # let cpu = DeviceName::parse("/job:local/replica:0/task:0/device:CPU:0")?;
/// # let kernels = KernelRegistry::new();
/// # kernels.register(KernelKey::new("Placeholder", "CPU"), |_: &KernelInit<'_>| {
/// #     Ok(BoxedKernel::Sync(Box::new(Unfed)))
/// # })?;
/// # let options = ServerOptions::with_devices(vec![Arc::new(Host(cpu))]).kernels(kernels);
/// # let transport = Arc::new(Loopback::default());
///
/// let worker = Arc::new(Worker::new(TaskName::new("local", 0), &options, transport.clone())?);
/// # transport.0.set(Arc::clone(&worker)).expect("set once");
/// let g = Graph::new();
/// let x = g.placeholder(DType::F32, None)?;
/// let v = g.variable("v", DType::F32)?;
/// let set = v.assign(&g, x)?;
/// let handle = worker.register_partition(RegisterPartition {
///     session: "my-session".into(),
///     graph: g.to_graph_def(),
///     feeds: vec![format!("{}:0", g.name_of(x.node))],
///     fetches: vec![format!("{}:0", g.name_of(set.node))],
///     targets: vec![],
///     shared: None,
/// })?;
///
/// let step = |step_id: u64, value: f32, handle: &PartitionHandle| RunPartition {
///     handle: handle.clone(),
///     session: "my-session".into(),
///     step_id: StepId::from(step_id),
///     feeds: vec![Tensor::scalar(value)],
///     timeout: Duration::from_secs(5),
///     trace: false,
/// };
/// let out = worker.run_partition(step(1, 4.0, &handle))?;
/// assert_eq!(out.tensors[0].scalar_value::<f32>()?, 4.0);
/// assert_eq!(worker.stats().steps, 1);
///
/// // Released partitions are gone: a step of one fails, naming the handle.
/// worker.release_session("my-session");
/// let err = worker.run_partition(step(2, 1.0, &handle)).unwrap_err();
/// assert!(matches!(err, WorkerError::UnknownPartition { .. }), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Worker {
    task: TaskName,
    devices: Vec<Arc<dyn Device>>,
    /// Where the task's sessions build kernels.
    kernels: KernelRegistry,
    pool: ThreadPool,
    resource_pools: Vec<(String, usize)>,
    /// [`ServerOptions::step_memory_limit`], for every partition's session.
    step_memory_limit: Option<StepMemoryLimit>,
    resources: Arc<ResourceMgr>,
    rendezvous: Arc<Rendezvous>,
    /// Answers to the sends of running steps (`outbox.rs`), when `_Send` runs eagerly.
    outbox: Arc<Outbox>,
    /// The sends of steps that replied before their answers came (`unacked.rs`).
    pub(super) unacked: Unacked,
    /// Whether the transport sends eagerly: `_Send` then completes at once and the step
    /// hands its answer to `unacked` at the end ([`Transport::sends_eagerly`]).
    eager_sends: bool,
    partitions: Mutex<Partitions>,
    registrations: AtomicU64,
    steps_run: AtomicU64,
    staged_steps: AtomicU64,
    stopping: AtomicBool,
    /// Running partition steps.
    running: Mutex<Vec<Running>>,
    /// The reasons of the last [`ABORT_REASONS_KEPT`] aborts with one that came before
    /// their step started here: the step, when it comes, fails with its reason.
    abort_reasons: Mutex<std::collections::VecDeque<KeptReason>>,
    next_run: AtomicU64,
    idle: Condvar,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("task", &self.task.to_string())
            .field(
                "devices",
                &self
                    .devices
                    .iter()
                    .map(|d| d.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("stats", &self.stats())
            .finish()
    }
}

impl Worker {
    /// A worker for `task` over the devices `options` exposes; `_Send` kernels push
    /// through `transport`. Registers core's distributed kernels (`_Send`, `_Recv`, the
    /// variable ops) in the options' registry
    /// ([`register_kernels_into`](super::kernels::register_kernels_into)).
    ///
    /// # Errors
    ///
    /// [`WorkerError::InvalidOptions`], naming the task, when a device's name does not
    /// carry the task's job and index, a visible-device spec is malformed or matches no
    /// device (or there is no device at all), a registry given in the options already
    /// holds other kernels for core's distributed ops, or the scheduler's threads cannot
    /// start.
    pub fn new(
        task: TaskName,
        options: &ServerOptions,
        transport: Arc<dyn Transport>,
    ) -> Result<Worker, WorkerError> {
        let invalid = |detail: String| WorkerError::InvalidOptions {
            task: task.to_string(),
            detail,
        };
        let kernels = options.kernel_registry();
        if kernels.same_as(&KernelRegistry::global()) {
            register_kernels();
        } else {
            register_kernels_into(&kernels).map_err(|e| invalid(e.to_string()))?;
        }
        let devices = options.visible(&task).map_err(invalid)?;
        let pool = match &options.pool {
            Some(p) => p.clone(),
            None => ThreadPool::builder()
                .num_workers(options.num_workers.unwrap_or(2).max(1))
                .idle_spin(options.idle_spin)
                .build()
                .map_err(|e| invalid(e.to_string()))?,
        };
        let resources = Arc::new(ResourceMgr::new());
        let rendezvous = Arc::new(Rendezvous::with_limits(options.rendezvous_limits));
        resources.set_service(Arc::clone(&rendezvous));
        let eager_sends = transport.sends_eagerly();
        let unacked = Unacked::new(task.clone(), Arc::clone(&transport));
        resources.set_service(Arc::new(TaskTransport(transport)));
        let outbox = Arc::new(Outbox::default());
        resources.set_service(Arc::clone(&outbox));
        Ok(Worker {
            task,
            devices,
            kernels,
            pool,
            resource_pools: options.resource_pools.clone(),
            step_memory_limit: options
                .step_memory_limit
                .map(|bytes| StepMemoryLimit::new(bytes).raised_by(Limit::StepMemory)),
            resources,
            rendezvous,
            outbox,
            unacked,
            eager_sends,
            partitions: Mutex::new(Partitions::default()),
            registrations: AtomicU64::new(0),
            steps_run: AtomicU64::new(0),
            staged_steps: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            running: Mutex::new(Vec::new()),
            abort_reasons: Mutex::default(),
            next_run: AtomicU64::new(0),
            idle: Condvar::new(),
        })
    }

    /// The task.
    pub fn task(&self) -> &TaskName {
        &self.task
    }

    /// The devices this task exposes (the first is its default device).
    pub fn devices(&self) -> &[Arc<dyn Device>] {
        &self.devices
    }

    /// The devices as the master sees them.
    pub fn device_infos(&self) -> Vec<DeviceInfo> {
        self.devices
            .iter()
            .map(|d| DeviceInfo {
                name: d.name().clone(),
                description: d.description(),
                memory_limit: d.memory_limit(),
            })
            .collect()
    }

    /// The scheduler pool the task's partition steps run on (its queue depth and steals
    /// feed the server's metrics).
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// The task's resource manager (variables live here).
    pub fn resources(&self) -> &Arc<ResourceMgr> {
        &self.resources
    }

    /// The task's rendezvous.
    pub fn rendezvous(&self) -> &Arc<Rendezvous> {
        &self.rendezvous
    }

    /// Counters.
    pub fn stats(&self) -> WorkerStats {
        WorkerStats {
            registrations: self.registrations.load(Ordering::Relaxed),
            steps: self.steps_run.load(Ordering::Relaxed),
            partitions: self.partitions.lock().by_handle.len(),
            running_steps: self.running.lock().len(),
            pending_rendezvous: self.rendezvous.pending(),
            pending_rendezvous_bytes: self.rendezvous.pending_bytes(),
            incoming_rendezvous_bytes: self.rendezvous.incoming_bytes(),
            unclaimed_rendezvous_bytes: self.rendezvous.unclaimed_bytes(),
            staged_steps: self.staged_steps.load(Ordering::Relaxed),
            unacked_steps: self.unacked.in_flight(),
        }
    }

    fn refuse_if_stopping(&self) -> Result<(), WorkerError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(WorkerError::Refused {
                task: self.task.to_string(),
            });
        }
        Ok(())
    }

    /// Imports and prepares a partition; returns its handle: the task's name and 128
    /// random bits, so that only the master that registered it (and whoever it tells)
    /// can run it.
    ///
    /// # Errors
    ///
    /// - [`WorkerError::Refused`] once the worker stops ([`Worker::begin_stop`]).
    /// - [`WorkerError::BadPartition`] when the partition's graph does not import (an
    ///   unknown op, a bad input, ...) or a feed, fetch or target names a node it lacks
    ///   (of a [`shared`](RegisterPartition::shared) graph: is not one of its outputs).
    /// - [`WorkerError::Step`] when the partition's local session cannot be made over
    ///   the task's devices.
    /// - [`WorkerError::Internal`] when no random bits can be drawn for the handle.
    pub fn register_partition(
        &self,
        request: RegisterPartition,
    ) -> Result<PartitionHandle, WorkerError> {
        self.refuse_if_stopping()?;
        let task = self.task.to_string();
        let bad = |source| WorkerError::BadPartition {
            task: task.clone(),
            source: Box::new(source),
        };
        if let Some(shared) = request.shared {
            // The master's own graph, in this process: run as it is, nothing imported.
            let g = &shared.graph;
            for o in &shared.feeds {
                g.check_output(*o, "feed").map_err(bad)?;
            }
            for o in &shared.fetches {
                g.check_output(*o, "fetch").map_err(bad)?;
            }
            for t in &shared.targets {
                g.check_output(t.output(0), "target")
                    .map(drop)
                    .or_else(|e| match e {
                        // A target may have no outputs.
                        crate::graph::GraphError::OutputOutOfRange { .. } => Ok(()),
                        e => Err(e),
                    })
                    .map_err(bad)?;
            }
            return self.add_partition(
                &shared.graph,
                request.session,
                shared.feeds,
                shared.fetches,
                shared.targets,
                (Vec::new(), None),
            );
        }
        let mut def = request.graph;
        // Sends hold the `net` pool when the task declares one (receives never do: a
        // receive holding a slot while it waits could starve the sends it waits for).
        let net = self.resource_pools.iter().any(|(p, _)| p == "net");
        for n in def.nodes.iter_mut().filter(|n| n.op == SEND_OP) {
            if net {
                n.attrs
                    .push((POOLS_ATTR.into(), AttrValue::Strs(vec!["net".into()])));
            }
            // Sends name their session: the receiving task accepts tensors only for
            // steps of a session registered there (see the rendezvous).
            n.attrs
                .retain(|(k, _)| k != SESSION_ATTR && k != EAGER_SEND_ATTR);
            n.attrs
                .push((SESSION_ATTR.into(), AttrValue::Str(request.session.clone())));
            if self.eager_sends {
                n.attrs
                    .push((EAGER_SEND_ATTR.into(), AttrValue::Bool(true)));
            }
        }
        // Receives the master marked safe to await before the step starts, or after the
        // partition's first stage (when every receive is marked one way or the other)
        // become placeholders the worker feeds (see `receive_early` and `stages.rs`).
        let marked = |n: &crate::graph::NodeDef, attr: &str| {
            n.attrs
                .iter()
                .any(|(k, v)| k == attr && *v == AttrValue::Bool(true))
        };
        let recvs: Vec<&crate::graph::NodeDef> =
            def.nodes.iter().filter(|n| n.op == RECV_OP).collect();
        let early = !recvs.is_empty()
            && recvs.iter().all(|n| {
                marked(n, RECV_BEFORE_STEP_ATTR) || marked(n, RECV_AFTER_FIRST_STAGE_ATTR)
            });
        let late: std::collections::HashSet<String> = if early {
            recvs
                .iter()
                .filter(|n| marked(n, RECV_AFTER_FIRST_STAGE_ATTR))
                .map(|n| n.name.clone())
                .collect()
        } else {
            Default::default()
        };
        let mut early_recvs = Vec::new();
        let mut late_recvs = Vec::new();
        if early {
            for n in def.nodes.iter_mut().filter(|n| n.op == RECV_OP) {
                let attr = |name: &str| n.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
                let (Some(AttrValue::Str(edge)), Some(dtype @ AttrValue::DType(_))) =
                    (attr(EDGE_ATTR), attr("dtype"))
                else {
                    return Err(bad(crate::graph::GraphError::InvalidNode {
                        node: n.name.clone(),
                        op: RECV_OP.into(),
                        reason: crate::graph::OpDefError::Invalid(format!(
                            "needs the attributes {EDGE_ATTR:?} and \"dtype\""
                        )),
                    }));
                };
                let (edge, dtype) = (edge.clone(), dtype.clone());
                let list = if late.contains(&n.name) {
                    &mut late_recvs
                } else {
                    &mut early_recvs
                };
                list.push((edge, n.name.clone(), n.device.clone()));
                n.op = "Placeholder".into();
                n.attrs = vec![("dtype".into(), dtype)];
            }
        }
        let stage_split = (!late.is_empty()).then(|| split(&mut def, &late));
        let graph = Graph::import(&def).map_err(bad)?;
        let output = |s: &str, role: &str| -> Result<Output, WorkerError> {
            let (name, idx) = s.rsplit_once(':').unwrap_or((s, "0"));
            let id = graph.node_by_name(name).ok_or_else(|| {
                bad(crate::graph::GraphError::NodeNotFound {
                    role: role.into(),
                    name: name.into(),
                })
            })?;
            Ok(id.output(idx.parse().unwrap_or(0)))
        };
        let feeds = request
            .feeds
            .iter()
            .map(|s| output(s, "feed"))
            .collect::<Result<Vec<_>, _>>()?;
        let fetches = request
            .fetches
            .iter()
            .map(|s| output(s, "fetch"))
            .collect::<Result<Vec<_>, _>>()?;
        let targets = request
            .targets
            .iter()
            .map(|s| output(&format!("{s}:0"), "target").map(|o| o.node))
            .collect::<Result<Vec<_>, _>>()?;
        let as_recvs = |list: Vec<(String, String, String)>| {
            list.into_iter()
                .map(|(edge, node, device)| {
                    Ok(EarlyRecv {
                        edge,
                        output: output(&format!("{node}:0"), "feed")?,
                        node,
                        device,
                    })
                })
                .collect::<Result<Vec<_>, WorkerError>>()
        };
        let early_recvs = as_recvs(early_recvs)?;
        let staged = match stage_split {
            Some(stage_split) => {
                let step_feeds: Vec<Output> = feeds
                    .iter()
                    .copied()
                    .chain(early_recvs.iter().map(|r| r.output))
                    .collect();
                let nodes = graph.nodes();
                let stages = Stages::resolve(
                    &stage_split,
                    &step_feeds,
                    &fetches,
                    &targets,
                    |id| nodes[id.index()].name.clone(),
                    |name| output(name, "feed"),
                )?;
                Some(Staged {
                    stages,
                    recvs: as_recvs(late_recvs)?,
                })
            }
            None => None,
        };
        self.add_partition(
            &graph,
            request.session,
            feeds,
            fetches,
            targets,
            (early_recvs, staged),
        )
    }

    /// Makes the local session of a partition over `graph` and registers it for
    /// `session`, with the receives its steps await before they start and its stages
    /// (`stages.rs`), if any; returns its handle.
    fn add_partition(
        &self,
        graph: &Graph,
        session: String,
        feeds: Vec<Output>,
        fetches: Vec<Output>,
        targets: Vec<NodeId>,
        (early_recvs, staged): (Vec<EarlyRecv>, Option<Staged>),
    ) -> Result<PartitionHandle, WorkerError> {
        let task = self.task.to_string();
        let options = SessionOptions {
            devices: self.devices.clone(),
            pool: Some(self.pool.clone()),
            resource_pools: self.resource_pools.clone(),
            resources: Some(Arc::clone(&self.resources)),
            kernels: Some(self.kernels.clone()),
            step_memory_limit: self.step_memory_limit,
            inline_step_limit: Some(PARTITION_INLINE_STEP_LIMIT),
            ..SessionOptions::default()
        };
        let local = Session::new(graph, options).map_err(|source| WorkerError::Step {
            task: task.clone(),
            source: Box::new(source),
        })?;
        let random = random_hex().map_err(|e| WorkerError::Internal {
            task: task.clone(),
            detail: e.to_string(),
        })?;
        let handle = format!("{}/partition/{random}", self.task);
        let session_handle: Arc<str> = Arc::from(session);
        let mut partitions = self.partitions.lock();
        *partitions
            .sessions
            .entry(Arc::clone(&session_handle))
            .or_insert(0) += 1;
        partitions.by_handle.insert(
            handle.clone(),
            Arc::new(Partition {
                session_handle,
                session: local,
                feeds,
                fetches,
                targets,
                early_recvs,
                staged,
            }),
        );
        drop(partitions);
        self.registrations.fetch_add(1, Ordering::Relaxed);
        Ok(PartitionHandle(handle))
    }

    /// Runs one step of a partition (blocking the calling thread until it ends, at the
    /// latest at `request.timeout`).
    ///
    /// # Errors
    ///
    /// - [`WorkerError::UnknownPartition`] for a handle this task does not hold (never
    ///   registered, released, or the task restarted);
    ///   [`WorkerError::WrongSession`] for a partition of another session than
    ///   `request.session`.
    /// - [`WorkerError::Aborted`] when the step was aborted here, before it started or
    ///   while it ran ([`Worker::abort_step`]).
    /// - [`WorkerError::Rendezvous`] when the task's rendezvous refuses the step (it runs
    ///   for another session here, or its early tensors were dropped under the limits).
    /// - [`WorkerError::Refused`] once the worker stops.
    /// - [`WorkerError::Step`] for the wrong number of feeds, or when the local step
    ///   fails: a kernel's error naming node, op and device, a receive that never came,
    ///   or `request.timeout` passing ([`SessionError::DeadlineExceeded`]).
    pub fn run_partition(&self, request: RunPartition) -> Result<PartitionOutput, WorkerError> {
        self.run_partition_cancellable(request, None)
    }

    /// [`Worker::run_partition`], also aborted (as by [`Worker::abort_step`]) when
    /// `cancel` is cancelled: a caller that gives up on the step — a master whose client
    /// went away — stops it.
    ///
    /// The step ends in this task's rendezvous however this returns — success, error, a
    /// refusal before the step started, or unwinding — because a guard taken as soon as
    /// the partition is found ends it when dropped: no tensor delivered for the step
    /// stays behind. (A step of an unknown partition is aborted for `request.session`.)
    ///
    /// The step is bound to the partition's session here: a partition of another session
    /// cannot run it, nor claim its tensors.
    ///
    /// # Errors
    ///
    /// As for [`Worker::run_partition`]; cancelling `cancel` makes the step fail with
    /// [`WorkerError::Aborted`].
    pub fn run_partition_cancellable(
        &self,
        request: RunPartition,
        cancel: Option<&CancellationToken>,
    ) -> Result<PartitionOutput, WorkerError> {
        let step_id = request.step_id;
        let mut admitted = self.admit(request)?;
        let _forwarding = cancel.map(|c| c.forward_to(&admitted.token));
        // The step's start on this task's clock: node times are relative to it.
        let start_unix_micros = unix_micros_now();
        if let Err(e) = futures::executor::block_on(self.receive_early(step_id, &mut admitted)) {
            let reason = admitted.abort_reason.get();
            return self.step_result(step_id, Err(e), None, start_unix_micros, reason);
        }
        let result = if admitted.part.staged.is_some() {
            futures::executor::block_on(self.run_staged(step_id, &mut admitted))
        } else {
            admitted.part.session.run_with_options(
                &admitted.options,
                &admitted.feeds,
                &admitted.part.fetches,
                &admitted.part.targets,
            )
        };
        let result = futures::executor::block_on(self.await_sends(step_id, result, &admitted));
        let trace = admitted.options.trace.then(|| admitted.early.take());
        let reason = admitted.abort_reason.get();
        self.step_result(step_id, result, trace, start_unix_micros, reason)
    }

    /// [`Worker::run_partition_cancellable`] without blocking: the partition's step runs
    /// on the task's pool ([`Session::run_async`](crate::session::Session::run_async)) and
    /// the future holds no thread while it waits. Dropping the future aborts the step
    /// here (as cancelling `cancel` does); the step ends in this task's rendezvous either
    /// way.
    ///
    /// # Errors
    ///
    /// As for [`Worker::run_partition`]; the future resolves to the error.
    pub async fn run_partition_async(
        &self,
        request: RunPartition,
        cancel: Option<CancellationToken>,
    ) -> Result<PartitionOutput, WorkerError> {
        let step_id = request.step_id;
        let mut admitted = self.admit(request)?;
        let _forwarding = cancel.as_ref().map(|c| c.forward_to(&admitted.token));
        let start_unix_micros = unix_micros_now();
        if let Err(e) = self.receive_early(step_id, &mut admitted).await {
            let reason = admitted.abort_reason.get();
            return self.step_result(step_id, Err(e), None, start_unix_micros, reason);
        }
        let result = if admitted.part.staged.is_some() {
            self.run_staged(step_id, &mut admitted).await
        } else {
            admitted
                .part
                .session
                .run_async_with_options(
                    &admitted.options,
                    &admitted.feeds,
                    &admitted.part.fetches,
                    &admitted.part.targets,
                )
                .await
        };
        let result = self.await_sends(step_id, result, &admitted).await;
        let trace = admitted.options.trace.then(|| admitted.early.take());
        let reason = admitted.abort_reason.get();
        self.step_result(step_id, result, trace, start_unix_micros, reason)
    }

    /// Awaits the tensors of the partition's early receives (see [`Partition`]) and adds
    /// them to the step's feeds; the step's deadline shrinks by the time this took. The
    /// wait holds no thread and ends with every tensor, at the step's deadline
    /// ([`SessionError::DeadlineExceeded`]), when the step is aborted
    /// ([`SessionError::Cancelled`]), or when a receive fails (as `_Recv`'s kernel would:
    /// an error naming the `_Recv` node).
    async fn receive_early(
        &self,
        step_id: StepId,
        admitted: &mut Admitted<'_>,
    ) -> Result<(), SessionError> {
        let part = Arc::clone(&admitted.part);
        if part.early_recvs.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let (got, waited) = self
            .receive(step_id, &part.early_recvs, admitted, started)
            .await?;
        if admitted.options.trace {
            admitted.early.waited = waited;
        }
        admitted
            .feeds
            .extend(got.into_iter().map(|(r, t)| (r.output, t)));
        Ok(())
    }

    /// Awaits the tensors of `recvs` for the step; the step's deadline shrinks by the
    /// time this took, which it returns. A traced step records each receive in its
    /// timeline, from the wait's start to the tensor's arrival, on the clock of
    /// `step_start`. The wait ends as [`Worker::receive_early`]'s does.
    async fn receive<'r>(
        &self,
        step_id: StepId,
        recvs: &'r [EarlyRecv],
        admitted: &mut Admitted<'_>,
        step_start: Instant,
    ) -> Result<(Vec<(&'r EarlyRecv, Tensor)>, Duration), SessionError> {
        let started = Instant::now();
        let timeout = admitted.options.timeout.unwrap_or(Duration::MAX);
        let waits = futures::future::try_join_all(recvs.iter().map(|r| {
            let wait = self.rendezvous.recv(RendezvousKey {
                step_id,
                edge: r.edge.clone(),
            });
            async move {
                wait.await
                    .map(|t| (r, t, started.elapsed()))
                    .map_err(|e| super::kernels::recv_session_error(&r.node, &r.device, e))
            }
        }));
        let got = futures::select_biased! {
            () = admitted.token.cancelled().boxed().fuse() => Err(SessionError::Cancelled),
            r = waits.boxed().fuse() => r,
            () = crate::kernel::async_support::sleep(timeout).boxed().fuse() => {
                Err(SessionError::DeadlineExceeded(timeout))
            }
        }?;
        let waited = started.elapsed();
        if admitted.options.trace {
            let offset = started.saturating_duration_since(step_start);
            admitted
                .early
                .recvs
                .extend(got.iter().map(|(r, t, arrived)| NodeStats {
                    node: r.node.clone(),
                    op: RECV_OP.into(),
                    device: r.device.clone(),
                    worker: 0,
                    start: offset,
                    end: offset + *arrived,
                    output_bytes: t.size_in_bytes(),
                }));
        }
        admitted.options.timeout = Some(timeout.saturating_sub(waited));
        Ok((got.into_iter().map(|(r, t, _)| (r, t)).collect(), waited))
    }

    /// Runs a staged partition's step (`stages.rs`): the first stage, then — once the
    /// receives that depend on it came — the second, fed with the first stage's tensors;
    /// the partition's fetches in their order. A traced step's timeline has both stages'
    /// nodes, each on the clock of the step's start after its early receives.
    async fn run_staged(
        &self,
        step_id: StepId,
        admitted: &mut Admitted<'_>,
    ) -> Result<crate::session::RunOutput, SessionError> {
        let part = Arc::clone(&admitted.part);
        let Some(staged) = part.staged.as_ref() else {
            return Err(SessionError::InvalidOptions(
                "a partition of one stage run as two".into(),
            ));
        };
        self.staged_steps.fetch_add(1, Ordering::Relaxed);
        let st = &staged.stages;
        let start = Instant::now();
        let first = part
            .session
            .run_async_with_options(
                &admitted.options,
                &admitted.feeds,
                &st.first_fetches,
                &st.first_targets,
            )
            .await?;
        let ran = start.elapsed();
        admitted.options.timeout = admitted.options.timeout.map(|t| t.saturating_sub(ran));
        // The timeline's clock starts before the early receives.
        let step_start = start.checked_sub(admitted.early.waited).unwrap_or(start);
        let (got, _) = self
            .receive(step_id, &staged.recvs, admitted, step_start)
            .await?;
        let mut feeds: Vec<(Output, Tensor)> = st
            .second_feeds
            .iter()
            .map(|(o, source)| {
                let t = match *source {
                    Source::Feed(k) => admitted.feeds[k].1.clone(),
                    Source::First(k) => first.tensors[k].clone(),
                };
                (*o, t)
            })
            .collect();
        feeds.extend(got.into_iter().map(|(r, t)| (r.output, t)));
        let second_start = start.elapsed();
        let second = part
            .session
            .run_async_with_options(
                &admitted.options,
                &feeds,
                &st.second_fetches,
                &st.second_targets,
            )
            .await?;
        let tensors = st
            .fetch_order
            .iter()
            .map(|&(in_second, k)| {
                if in_second {
                    second.tensors[k].clone()
                } else {
                    first.tensors[k].clone()
                }
            })
            .collect();
        let mut metadata = first.metadata;
        metadata
            .nodes
            .extend(second.metadata.nodes.iter().cloned().map(|mut n| {
                n.start += second_start;
                n.end += second_start;
                n
            }));
        metadata.wall_time = start.elapsed();
        metadata.copies += second.metadata.copies;
        Ok(crate::session::RunOutput { tensors, metadata })
    }

    /// `result`, with the answers to the sends the step's `_Send` kernels started
    /// (`outbox.rs`) handed to the worker's [`Unacked`] to await after the step replied;
    /// when it takes no more (it is full or cancelled), once those answers came: the
    /// first failed send then fails the step, naming its node. A step that failed
    /// already, or is aborted meanwhile, does not wait for them. Each answer comes within
    /// the transport's request deadline.
    async fn await_sends(
        &self,
        step_id: StepId,
        result: Result<crate::session::RunOutput, SessionError>,
        admitted: &Admitted<'_>,
    ) -> Result<crate::session::RunOutput, SessionError> {
        let sends = self.outbox.take(step_id);
        let out = result?;
        if sends.is_empty() {
            return Ok(out);
        }
        // Usually the step replies now and its answers are awaited in the background:
        // a failed send aborts the step on its receiver, naming this task and the edge.
        let sends = match self.unacked.detach(step_id, sends) {
            Ok(()) => return Ok(out),
            Err(sends) => sends,
        };
        let answers = futures::future::join_all(sends.into_iter().map(|s| async move {
            s.answer
                .await
                .map_err(|e| late_send_error(s.node, s.device, e))
        }));
        futures::select_biased! {
            () = admitted.token.cancelled().boxed().fuse() => Err(SessionError::Cancelled),
            answers = answers.boxed().fuse() => {
                answers.into_iter().collect::<Result<Vec<()>, _>>()?;
                Ok(out)
            }
        }
    }

    /// Everything before a partition step runs: finds the partition, checks its session,
    /// begins the step in the rendezvous, refuses when stopping, checks the feeds' count
    /// and enters the step in the running list. The returned guards end all of that.
    fn admit(&self, request: RunPartition) -> Result<Admitted<'_>, WorkerError> {
        let part = self
            .partitions
            .lock()
            .by_handle
            .get(&request.handle.0)
            .cloned();
        let Some(part) = part else {
            let _ = self.rendezvous.abort(&request.session, request.step_id);
            return Err(WorkerError::UnknownPartition {
                task: self.task.to_string(),
                handle: request.handle.0.clone(),
            });
        };
        if *part.session_handle != *request.session {
            return Err(WorkerError::WrongSession {
                task: self.task.to_string(),
                handle: request.handle.0.clone(),
                session: request.session.clone(),
            });
        }
        let step = self
            .rendezvous
            .begin_step(request.step_id, &part.session_handle)
            .map_err(|e| match e {
                RendezvousError::AlreadyEnded { step_id } => {
                    let reason = self
                        .abort_reasons
                        .lock()
                        .iter()
                        .find(|(s, session, ..)| *s == step_id && **session == *part.session_handle)
                        .map(|(_, _, code, reason)| (*code, reason.clone()));
                    match reason {
                        Some((code, reason)) => WorkerError::AbortedBy {
                            task: self.task.to_string(),
                            step_id,
                            code,
                            reason,
                        },
                        None => WorkerError::Aborted {
                            task: self.task.to_string(),
                            step_id,
                        },
                    }
                }
                source => WorkerError::Rendezvous {
                    task: self.task.to_string(),
                    source,
                },
            })?;
        self.refuse_if_stopping()?;
        if request.feeds.len() != part.feeds.len() {
            return Err(WorkerError::Step {
                task: self.task.to_string(),
                source: Box::new(SessionError::InvalidOptions(format!(
                    "partition {} takes {} feeds, got {}",
                    request.handle,
                    part.feeds.len(),
                    request.feeds.len()
                ))),
            });
        }
        let token = CancellationToken::new();
        let abort_reason = Arc::new(OnceLock::new());
        let running = RunningGuard::new(
            self,
            request.step_id,
            Arc::clone(&part.session_handle),
            token.clone(),
            Arc::clone(&abort_reason),
        );
        self.steps_run.fetch_add(1, Ordering::Relaxed);
        let feeds: Vec<(Output, Tensor)> = part.feeds.iter().copied().zip(request.feeds).collect();
        let options = RunOptions {
            timeout: Some(request.timeout),
            cancel: Some(token.clone()),
            step_id: Some(request.step_id),
            trace: request.trace,
            ..RunOptions::default()
        };
        Ok(Admitted {
            _sends: OutboxGuard {
                outbox: &self.outbox,
                step: request.step_id,
            },
            part,
            feeds,
            options,
            token,
            abort_reason,
            _running: running,
            _step: step,
            early: EarlyTrace::default(),
        })
    }

    /// A partition step's result as the worker reports it. With `trace`, the output
    /// carries the partition's timeline (its early receives included), its node times
    /// relative to `start_unix_micros`
    /// (the step's start on this task's clock).
    fn step_result(
        &self,
        step_id: StepId,
        result: Result<crate::session::RunOutput, SessionError>,
        trace: Option<EarlyTrace>,
        start_unix_micros: u64,
        abort_reason: Option<&(Code, String)>,
    ) -> Result<PartitionOutput, WorkerError> {
        match result {
            Ok(out) => Ok(PartitionOutput {
                tensors: out.tensors,
                timeline: trace.map(|early| {
                    let mut nodes = out.metadata.nodes;
                    for n in &mut nodes {
                        n.start += early.waited;
                        n.end += early.waited;
                    }
                    nodes.extend(early.recvs);
                    TaskTimeline {
                        start_unix_micros,
                        nodes,
                    }
                }),
            }),
            // Aborted while running or while waiting for its devices: the same abort.
            Err(SessionError::Cancelled | SessionError::DeviceSyncCancelled { .. }) => {
                if let Some((code, reason)) = abort_reason {
                    return Err(WorkerError::AbortedBy {
                        task: self.task.to_string(),
                        step_id,
                        code: *code,
                        reason: reason.clone(),
                    });
                }
                Err(WorkerError::Aborted {
                    task: self.task.to_string(),
                    step_id,
                })
            }
            Err(source) => Err(WorkerError::Step {
                task: self.task.to_string(),
                source: Box::new(source),
            }),
        }
    }

    fn check_session(&self, session: &str) -> Result<(), WorkerError> {
        if !self.partitions.lock().sessions.contains_key(session) {
            return Err(WorkerError::UnknownSession {
                task: self.task.to_string(),
                session: session.to_string(),
            });
        }
        Ok(())
    }

    /// Admits a tensor of `data_bytes` bytes for `key`, delivered for `session`, that is
    /// still to arrive ([`Rendezvous::reserve`]): a transport asks before it allocates the
    /// tensor it is about to receive, so that a stream for a session or step it would
    /// refuse holds no memory, and the bytes of every stream it takes count against the
    /// rendezvous's limits until the tensor is delivered with the reservation
    /// ([`Worker::deliver_reserved`]) or the reservation is dropped. Any number of
    /// concurrent streams together therefore hold at most
    /// [`RendezvousLimits::task_bytes`](super::RendezvousLimits::task_bytes).
    ///
    /// # Errors
    ///
    /// As [`Worker::deliver`], and [`WorkerError::Rendezvous`] (`Internal`, a duplicate)
    /// for a key with a tensor still arriving.
    pub fn reserve(
        &self,
        session: &str,
        key: &RendezvousKey,
        data_bytes: usize,
    ) -> Result<Reservation, WorkerError> {
        self.check_session(session)?;
        self.rendezvous
            .reserve(session, key.step_id, &key.edge, data_bytes)
            .map_err(|source| WorkerError::Rendezvous {
                task: self.task.to_string(),
                source,
            })
    }

    /// Delivers the tensor `reservation` ([`Worker::reserve`]) was taken for; the
    /// reservation's bytes become the delivered tensor's.
    ///
    /// # Errors
    ///
    /// As [`Worker::deliver`].
    pub fn deliver_reserved(
        &self,
        reservation: Reservation,
        tensor: Tensor,
    ) -> Result<(), WorkerError> {
        self.check_session(reservation.session())?;
        self.rendezvous
            .deliver_reserved(reservation, tensor)
            .map_err(|source| WorkerError::Rendezvous {
                task: self.task.to_string(),
                source,
            })
    }

    /// Delivers a tensor pushed by another task's `_Send` for a step of `session`.
    ///
    /// # Errors
    ///
    /// [`WorkerError::UnknownSession`] unless `session` has a partition on this task;
    /// [`WorkerError::Rendezvous`] when the rendezvous refuses it (the step belongs to
    /// another session, or a limit would be passed: `ResourceExhausted`).
    pub fn deliver(
        &self,
        session: &str,
        key: RendezvousKey,
        tensor: Tensor,
    ) -> Result<(), WorkerError> {
        self.check_session(session)?;
        self.rendezvous
            .deliver(session, key, tensor)
            .map_err(|source| WorkerError::Rendezvous {
                task: self.task.to_string(),
                source,
            })
    }

    /// Aborts a step of `session`: its running partitions are cancelled, its receives
    /// fail, its delivered tensors are dropped, and a partition of it that starts later is
    /// refused. Steps of other sessions are never touched.
    ///
    /// # Errors
    ///
    /// [`WorkerError::UnknownSession`] unless `session` has a partition on this task;
    /// [`WorkerError::Rendezvous`] (and nothing happens) when the step belongs to another
    /// session here.
    pub fn abort_step(&self, session: &str, step_id: StepId) -> Result<(), WorkerError> {
        self.abort_step_with_reason(session, step_id, None)
    }

    /// [`Worker::abort_step`], saying why: a partition of the step running here, or
    /// starting after the abort, fails with [`WorkerError::AbortedBy`] carrying the
    /// reason's text (cut to 2 KiB) and code rather than [`WorkerError::Aborted`].
    /// Another task of the session sends one when a send of the step to this task failed
    /// after its own partition replied (`unacked.rs`). A code that the wire reads as the
    /// state of this task itself (`Cancelled`, `Unavailable`, `DeadlineExceeded`,
    /// `NotFound`, `Unauthenticated`) becomes `Aborted`: the cause is elsewhere.
    ///
    /// # Errors
    ///
    /// As [`Worker::abort_step`]: the session check is the same, so a caller outside
    /// the session aborts nothing.
    pub fn abort_step_with_reason(
        &self,
        session: &str,
        step_id: StepId,
        reason: Option<(Code, &str)>,
    ) -> Result<(), WorkerError> {
        self.check_session(session)?;
        // The partitions first, so that they end as aborted (not as failed receives).
        // A partition of the session running the step binds it to the session here, so
        // the rendezvous below refuses nothing these partitions run. The reason is set
        // before the token is cancelled, so the step sees it when it ends.
        let reason = reason.map(|(code, r)| {
            let mut r = r.to_string();
            truncate(&mut r, MAX_REASON_BYTES);
            let code = match code {
                Code::Cancelled
                | Code::Unavailable
                | Code::DeadlineExceeded
                | Code::NotFound
                | Code::Unauthenticated => Code::Aborted,
                code => code,
            };
            (code, r)
        });
        let mut found = false;
        for r in self.running.lock().iter() {
            if r.step_id == step_id && *r.session == *session {
                if let Some(reason) = &reason {
                    let _ = r.reason.set(reason.clone());
                }
                r.token.cancel();
                found = true;
            }
        }
        if let (false, Some(reason)) = (found, reason) {
            // The step has not started here (or ended): kept for a partition of it that
            // starts later, which the rendezvous refuses as aborted.
            let mut kept = self.abort_reasons.lock();
            if kept.len() == ABORT_REASONS_KEPT {
                kept.pop_front();
            }
            let (code, reason) = reason;
            kept.push_back((step_id, Arc::from(session), code, reason));
        }
        self.rendezvous
            .abort(session, step_id)
            .map_err(|source| WorkerError::Rendezvous {
                task: self.task.to_string(),
                source,
            })
    }

    /// Drops the partitions a master session registered.
    pub fn release_session(&self, session: &str) {
        let mut partitions = self.partitions.lock();
        partitions
            .by_handle
            .retain(|_, p| &*p.session_handle != session);
        partitions.sessions.remove(session);
    }

    /// Clears a container of the task's resource manager (its variables); returns how
    /// many resources it held.
    pub fn reset(&self, container: &str) -> usize {
        self.resources.reset(container)
    }

    /// Refuses new partitions and steps from now on.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether [`Worker::begin_stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Waits for running steps to finish until `deadline`, then cancels the rest and
    /// waits (at most `grace` more) for them to return. Returns how many were cancelled.
    pub fn drain(&self, deadline: Instant, grace: Duration) -> usize {
        let mut running = self.running.lock();
        while !running.is_empty() {
            if self.idle.wait_until(&mut running, deadline).timed_out() {
                break;
            }
        }
        let cancelled = running.len();
        for r in running.iter() {
            r.token.cancel();
        }
        let until = Instant::now() + grace;
        while !running.is_empty() {
            if self.idle.wait_until(&mut running, until).timed_out() {
                break;
            }
        }
        drop(running);
        // The sends of steps that replied: awaited until the deadline, then dropped.
        if !self.unacked.wait_idle(deadline.max(Instant::now())) {
            self.unacked.cancel();
            self.unacked.wait_idle(until.max(Instant::now()));
        }
        cancelled
    }
}

impl Drop for Worker {
    /// Drops the sends still awaited after their steps replied and joins the thread
    /// that awaited them (`unacked.rs`).
    fn drop(&mut self) {
        self.unacked.shutdown();
    }
}

/// A partition step admitted to run ([`Worker::admit`]). Fields drop in order: the step
/// leaves the running list, then ends in the rendezvous.
struct Admitted<'a> {
    part: Arc<Partition>,
    feeds: Vec<(Output, Tensor)>,
    options: RunOptions,
    /// Cancelled by [`Worker::abort_step`] and `drain`; the step's run watches it.
    token: CancellationToken,
    /// Set by [`Worker::abort_step_with_reason`] before it cancels `token`.
    abort_reason: Arc<OnceLock<(Code, String)>>,
    _running: RunningGuard<'a>,
    _step: ActiveStep<'a>,
    /// Drops whatever answers of the step's sends were not awaited.
    _sends: OutboxGuard<'a>,
    /// A traced step's early receives, for its timeline.
    early: EarlyTrace,
}

/// What a traced step's timeline shows of its early receives (see
/// [`Worker::receive_early`]): how long the partition waited for them before its own
/// nodes started, and one record per receive.
#[derive(Default)]
struct EarlyTrace {
    waited: Duration,
    recvs: Vec<NodeStats>,
}

impl EarlyTrace {
    fn take(&mut self) -> EarlyTrace {
        std::mem::take(self)
    }
}

/// A partition step in [`Worker`]'s running list, removed (and `drain` woken when it was
/// the last) when dropped — also when the step unwinds.
struct RunningGuard<'a> {
    worker: &'a Worker,
    run_id: u64,
}

impl<'a> RunningGuard<'a> {
    fn new(
        worker: &'a Worker,
        step_id: StepId,
        session: Arc<str>,
        token: CancellationToken,
        reason: Arc<OnceLock<(Code, String)>>,
    ) -> RunningGuard<'a> {
        let run_id = worker.next_run.fetch_add(1, Ordering::Relaxed);
        worker.running.lock().push(Running {
            run_id,
            step_id,
            session,
            token,
            reason,
        });
        RunningGuard { worker, run_id }
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut running = self.worker.running.lock();
        if let Some(i) = running.iter().position(|r| r.run_id == self.run_id) {
            running.swap_remove(i);
        }
        if running.is_empty() {
            self.worker.idle.notify_all();
        }
    }
}
