//! Local sessions: run a graph on this process's devices.
//!
//! `Session::run(feeds, fetches, targets)` returns the fetched tensors in fetch order.
//! The first run of a signature builds (and caches) an execution plan; later runs reuse
//! it, also after the graph has grown. Any number of threads may call `run` on one
//! session at once; steps are independent. A step can be cancelled with a
//! [`CancellationToken`] and can have a timeout; a panicking kernel fails only its step.
//! [`Session::close`] (or dropping the session) ends it: later runs fail with
//! [`SessionError::Closed`].

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::device::Device;
use crate::exec::plan::{ExecPlan, PlanContext, INLINE_MAX_MICROS};
use crate::exec::plan_cache::PlanCache;
use crate::exec::resources::ResourcePools;
use crate::exec::step::{StepBody, StepState};
pub use crate::exec::DeviceMemoryStats;
pub use crate::exec::{NodeStats, SessionError};
use crate::graph::{DeviceSpec, Graph, Node, NodeId, Output};
use crate::registry::KernelRegistry;
use crate::resource::ResourceMgr;
pub use crate::scheduler::CancellationToken;
pub use crate::scheduler::Policy;
use crate::scheduler::{IdleSpin, RunControl, RunError, ThreadPool};
use crate::step_id::StepId;
use crate::tensor::{StepMemoryLimit, Tensor};

/// Step ids are unique in the process, across sessions.
static NEXT_STEP_ID: AtomicU64 = AtomicU64::new(1);

/// Plans kept per session before the cache is cleared.
const MAX_CACHED_PLANS: usize = 1024;

/// How a session is set up: its devices (the first is the default for nodes that request
/// none), its kernel registry, worker threads, scheduling policy, resource pools and
/// memory budgets.
///
/// ```
/// use std::sync::Arc;
/// use magpie_core::graph::DeviceName;
/// use magpie_core::registry::KernelRegistry;
/// use magpie_core::session::SessionOptions;
/// use magpie_core::Device;
///
/// #[derive(Debug)]
/// struct Host(DeviceName);
/// impl Device for Host {
///     fn name(&self) -> &DeviceName { &self.0 }
/// }
/// let device: Arc<dyn Device> = Arc::new(Host(DeviceName::local("CPU", 0)));
/// let options = SessionOptions::with_devices(vec![device])
///     .num_workers(2)
///     .kernels(KernelRegistry::new()); // this registry, not the process-wide one
/// # let _ = options;
/// ```
#[derive(Clone, Default)]
pub struct SessionOptions {
    /// The devices nodes may be placed on; the first is the default device. Required.
    pub devices: Vec<Arc<dyn Device>>,
    /// Worker threads for a new pool (default: the machine's available parallelism).
    pub num_workers: Option<usize>,
    /// A pool to share with other sessions instead of creating one.
    pub pool: Option<ThreadPool>,
    /// How the idle workers of a new pool (not of `pool`) look for work before they
    /// park; the default spins long, which suits a session that has its cores to itself
    /// (see [`IdleSpin`]).
    pub idle_spin: IdleSpin,
    /// Resource pools and their capacities (`("net", 1)`): an op that names a pool runs
    /// only while it holds one of its slots. Host↔device copies use the implicit pool
    /// `copy:<device name>` (capacity 1 unless declared here).
    pub resource_pools: Vec<(String, usize)>,
    /// Memory budgets in bytes, by device spec (`("/device:GPU:0", 1 << 30)`): every
    /// device the spec matches gets the budget. Budgets are opt-in: a device's
    /// [`Device::memory_limit`] says what it has, not what a step may use, and budget
    /// enforcement costs a lock per node.
    pub memory_budgets: Vec<(String, u64)>,
    /// How steps are ordered beyond their dependencies.
    pub policy: SchedulingPolicy,
    /// Where stateful kernels keep their state (variables): share one manager between
    /// sessions to share variables (a cluster task does, across all its sessions). A new,
    /// empty manager when `None`.
    pub resources: Option<Arc<ResourceMgr>>,
    /// The kernels this session builds its nodes' kernels from; the process-wide
    /// [`KernelRegistry::global`] when `None`. Placement, too, asks this registry which
    /// devices can run an op.
    pub kernels: Option<KernelRegistry>,
    /// Soft placement (TensorFlow's `allow_soft_placement`): a node pinned to a device
    /// the session lacks, or to devices with no kernel for its op, runs where an unpinned
    /// node would instead of failing the step with
    /// [`SessionError::NoMatchingDevice`] or [`SessionError::NoKernel`].
    pub allow_soft_placement: bool,
    /// The most bytes the buffers one step's kernels allocate may hold at once, on all the
    /// session's devices together (default `None`: no limit but the devices'). An
    /// allocation past it fails the step with a resource-exhausted
    /// [`SessionError::Kernel`] naming the node, the bytes asked for and in use, and the
    /// limit (with its flag, for a server's). What counts: see
    /// [`StepMemory`](crate::tensor::StepMemory).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use magpie_core::device::Device;
    /// use magpie_core::session::SessionOptions;
    /// use magpie_core::tensor::StepMemoryLimit;
    /// # let devices: Vec<Arc<dyn Device>> = Vec::new();
    /// let options = SessionOptions {
    ///     step_memory_limit: Some(StepMemoryLimit::new(1 << 30)),
    ///     ..SessionOptions::with_devices(devices)
    /// };
    /// # assert!(options.step_memory_limit.is_some());
    /// ```
    pub step_memory_limit: Option<StepMemoryLimit>,
    /// How long a step of synchronous host kernels may take and still run on the thread
    /// that awaits it ([`Session::run_async`]) rather than on a pool worker, judged by the
    /// plan's latest step (default `None`: 50 µs). Longer holds the awaiting thread — an
    /// async runtime's, often — for that long; shorter pays a hand-off to a worker and
    /// back (two wake-ups) per step. A cluster task's partition sessions use a longer
    /// limit (see [`Worker`](crate::distributed::Worker)).
    pub inline_step_limit: Option<Duration>,
}

/// How a session orders ready nodes. Whatever the policy, a step computes the same
/// results; policies differ in speed, in the order nodes start and in peak memory.
/// Each maps onto a scheduler [`Policy`], whose docs state what it guarantees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchedulingPolicy {
    /// The scheduler's default: depth-first with continuation inlining.
    #[default]
    DepthFirst,
    /// Breadth-first: ready nodes start in the order they became ready
    /// ([`Policy::Fifo`]).
    Fifo,
    /// Critical path first: among ready nodes, the one with the costliest path to the end
    /// of the step starts first ([`Policy::CriticalPath`]). A node's cost is its declared
    /// output size in elements
    /// ([`OpBuilder::declare_output_bytes`](crate::graph::OpBuilder::declare_output_bytes)
    /// over the element size), or 1.
    CriticalPath,
    /// Depth-first, and a memory-heavy node (marked with
    /// [`OpBuilder::memory_heavy`](crate::graph::OpBuilder::memory_heavy), or declaring at
    /// least [`MEMORY_HEAVY_DECLARED_BYTES`](crate::exec::MEMORY_HEAVY_DECLARED_BYTES)
    /// output bytes) starts only when its consumers' other inputs are ready, so its output
    /// lives as briefly as possible.
    MemoryAware,
}

impl SchedulingPolicy {
    /// The scheduler policy a step of this session runs with.
    pub fn scheduler_policy(self) -> Policy {
        match self {
            SchedulingPolicy::DepthFirst | SchedulingPolicy::MemoryAware => Policy::DepthFirst,
            SchedulingPolicy::Fifo => Policy::Fifo,
            SchedulingPolicy::CriticalPath => Policy::CriticalPath,
        }
    }
}

impl fmt::Debug for SessionOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionOptions")
            .field(
                "devices",
                &self
                    .devices
                    .iter()
                    .map(|d| d.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("num_workers", &self.num_workers)
            .field("pool", &self.pool)
            .field("idle_spin", &self.idle_spin)
            .field("resources", &self.resources.is_some())
            .field("kernels", &self.kernels)
            .field("allow_soft_placement", &self.allow_soft_placement)
            .field("step_memory_limit", &self.step_memory_limit)
            .field("inline_step_limit", &self.inline_step_limit)
            .finish()
    }
}

impl SessionOptions {
    /// Options with these devices (the first is the default) and default workers.
    pub fn with_devices(devices: Vec<Arc<dyn Device>>) -> SessionOptions {
        SessionOptions {
            devices,
            ..SessionOptions::default()
        }
    }

    /// Sets the number of worker threads.
    pub fn num_workers(mut self, n: usize) -> SessionOptions {
        self.num_workers = Some(n);
        self
    }

    /// Sets [`idle_spin`](Self::idle_spin).
    pub fn idle_spin(mut self, spin: IdleSpin) -> SessionOptions {
        self.idle_spin = spin;
        self
    }

    /// Builds kernels from `kernels` instead of the process-wide registry.
    pub fn kernels(mut self, kernels: KernelRegistry) -> SessionOptions {
        self.kernels = Some(kernels);
        self
    }

    /// Sets [`allow_soft_placement`](Self::allow_soft_placement).
    pub fn allow_soft_placement(mut self, allow: bool) -> SessionOptions {
        self.allow_soft_placement = allow;
        self
    }
}

/// Per-step options.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Fail the step with [`SessionError::DeadlineExceeded`] if it takes longer.
    pub timeout: Option<Duration>,
    /// Cancel the step from another thread. It also ends the step's wait, at its end, for
    /// its devices' queued work ([`Device::sync`]):
    /// [`SessionError::DeviceSyncCancelled`] names the device.
    pub cancel: Option<CancellationToken>,
    /// Record a per-node timeline in [`RunMetadata::nodes`].
    pub trace: bool,
    /// Account live tensor bytes per device and report peaks in [`RunMetadata::memory`]
    /// (always on when a device has a memory budget).
    pub track_memory: bool,
    /// Run under this step id instead of a fresh one. A cluster worker passes the
    /// master's step id, which keys the step's Send/Recv rendezvous; nobody else needs it.
    pub step_id: Option<StepId>,
    /// This step's memory limit, in place of the session's
    /// ([`SessionOptions::step_memory_limit`]) when set.
    pub step_memory_limit: Option<StepMemoryLimit>,
}

/// What a step reports besides its tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunMetadata {
    /// The step's id (unique in the process).
    pub step_id: StepId,
    /// Per-node records, sorted by start time; empty unless [`RunOptions::trace`] was set.
    pub nodes: Vec<NodeStats>,
    /// Wall time of the step, plan lookup included.
    pub wall_time: Duration,
    /// Host/device copies the step made (tensors crossing into or out of a device's own
    /// memory).
    pub copies: usize,
    /// Peak live bytes per device; empty unless memory was tracked.
    pub memory: Vec<DeviceMemoryStats>,
    /// Input bytes kernels read from a tensor produced on a device of another NUMA node
    /// (as [`Device::numa_node`] reports; 0 when devices do not know their node). This
    /// counts by placement: which worker actually ran a kernel is not considered.
    pub remote_numa_bytes: u64,
    /// How much each device counter ([`Device::counters`]) rose while the step ran, for
    /// every counter of the session's devices that rose (a Vulkan device's
    /// `submissions`, say). Counters are per device, not per step: events of steps that
    /// ran at the same time on the same device are counted too.
    pub device_counters: Vec<DeviceCounter>,
}

/// How much one device counter rose during a step (see [`RunMetadata::device_counters`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCounter {
    /// The device's full name.
    pub device: String,
    /// The counter, as the device names it.
    pub name: &'static str,
    /// How much it rose.
    pub delta: u64,
}

/// Every counter of `devices`, in order.
fn read_counters(devices: &[Arc<dyn Device>]) -> Vec<Vec<(&'static str, u64)>> {
    devices.iter().map(|d| d.counters()).collect()
}

/// The counters of `devices` that rose since `before`.
fn counter_deltas(
    devices: &[Arc<dyn Device>],
    before: &[Vec<(&'static str, u64)>],
) -> Vec<DeviceCounter> {
    let mut out = Vec::new();
    for (d, old) in devices.iter().zip(before) {
        if old.is_empty() {
            continue;
        }
        for (name, now) in d.counters() {
            let was = old.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
            if now > was {
                out.push(DeviceCounter {
                    device: d.name().to_string(),
                    name,
                    delta: now - was,
                });
            }
        }
    }
    out
}

/// The result of [`Session::run_with_options`].
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// The fetched tensors, in fetch order.
    pub tensors: Vec<Tensor>,
    /// Step metadata.
    pub metadata: RunMetadata,
}

/// What a plan is cached by: the fed outputs, the fetches and the targets, in order
/// (the distributed master caches its step plans by the same key).
pub(crate) type PlanKey = (Vec<Output>, Vec<Output>, Vec<NodeId>);

/// The [`PlanKey`] of a step's signature.
pub(crate) fn plan_key(
    feeds: &[(Output, Tensor)],
    fetches: &[Output],
    targets: &[NodeId],
) -> PlanKey {
    (
        feeds.iter().map(|(o, _)| *o).collect(),
        fetches.to_vec(),
        targets.to_vec(),
    )
}

/// A session that runs a graph on local devices.
///
/// [`Session::run`] takes feeds, fetches and targets; the first step of each such
/// signature builds a plan (pruned to what it needs, placed on devices, one kernel per
/// node, from the session's [`KernelRegistry`]) that later steps reuse. Steps may run
/// from many threads at once. `magpie-core` has no kernels for arithmetic: a backend
/// registers them (`magpie-cpu`; the `magpie` crate's `local_session` does it for you).
/// Here a device and a `Neg` kernel of the example's own stand in for one.
///
/// ```
/// use std::sync::Arc;
/// use magpie_core::graph::{DeviceName, Graph};
/// use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelInit};
/// use magpie_core::registry::{KernelKey, KernelRegistry};
/// use magpie_core::session::{Session, SessionOptions};
/// use magpie_core::{DType, Device, Tensor};
///
/// #[derive(Debug)]
/// struct Host(DeviceName);
/// impl Device for Host {
///     fn name(&self) -> &DeviceName { &self.0 }
/// }
/// struct NegF32;
/// impl Kernel for NegF32 {
///     fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
///         let x = ctx.input(0);
///         let y: Vec<f32> = x.as_slice::<f32>()?.iter().map(|v| -v).collect();
///         let y = Tensor::from_vec(x.shape().clone(), y)?;
///         ctx.push_output(y);
///         Ok(())
///     }
/// }
/// let kernels = KernelRegistry::new();
/// kernels.register(KernelKey::new("Neg", "CPU"), |_: &KernelInit<'_>| {
///     Ok(BoxedKernel::Sync(Box::new(NegF32)))
/// })?;
///
/// let g = Graph::new();
/// let x = g.placeholder(DType::F32, None)?;
/// let y = g.neg(x)?;
/// let devices: Vec<Arc<dyn Device>> = vec![Arc::new(Host(DeviceName::local("CPU", 0)))];
/// let session = Session::new(&g, SessionOptions::with_devices(devices).kernels(kernels))?;
/// let out = session.run(&[(x, Tensor::from_slice(&[1.0f32, -2.0]))], &[y], &[])?;
/// assert_eq!(out[0].as_slice::<f32>()?, [-1.0, 2.0]);
///
/// // Without a feed for `x`, the step fails and names the placeholder.
/// let err = session.run(&[], &[y], &[]).unwrap_err();
/// assert!(err.to_string().contains("must be fed"), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Session {
    graph: Graph,
    devices: Vec<Arc<dyn Device>>,
    kernels: KernelRegistry,
    /// [`SessionOptions::allow_soft_placement`].
    soft_placement: bool,
    pools: ResourcePools,
    budgets: Vec<Option<u64>>,
    /// [`SessionOptions::step_memory_limit`].
    step_memory_limit: Option<StepMemoryLimit>,
    /// [`SessionOptions::inline_step_limit`], in µs.
    inline_max_micros: u32,
    policy: SchedulingPolicy,
    pool: ThreadPool,
    /// The steal group of each device's NUMA node in `pool`, when the pool has several.
    device_groups: Vec<Option<u32>>,
    resources: Arc<ResourceMgr>,
    plans: Mutex<PlanCache<ExecPlan>>,
    /// Set by `close`: no step starts from then on.
    closed: AtomicBool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field(
                "devices",
                &self
                    .devices
                    .iter()
                    .map(|d| d.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("workers", &self.pool.num_workers())
            .field("cached_plans", &self.plans.lock().len())
            .finish()
    }
}

impl Session {
    /// A session over `graph` (which may keep growing) with `options`.
    ///
    /// # Errors
    /// [`SessionError::InvalidOptions`] for options that cannot work (no device, no
    /// worker, a memory budget or resource pool that makes no sense); an error starting
    /// the worker threads. Nothing about the graph is checked here: that happens when a
    /// step first runs a signature.
    pub fn new(graph: &Graph, options: SessionOptions) -> Result<Session, SessionError> {
        if options.devices.is_empty() {
            return Err(SessionError::InvalidOptions(
                "a session needs at least one device".into(),
            ));
        }
        let pool = match options.pool {
            Some(p) => p,
            None => {
                let n = options
                    .num_workers
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
                if n == 0 {
                    return Err(SessionError::InvalidOptions(
                        "num_workers must be at least 1".into(),
                    ));
                }
                ThreadPool::builder()
                    .num_workers(n)
                    .idle_spin(options.idle_spin)
                    .build()?
            }
        };
        let pools = ResourcePools::new(&options.resource_pools)?;
        let budgets = budgets(&options.devices, &options.memory_budgets)?;
        // A device on NUMA node k has its synchronous kernels bound to the workers of
        // node k, when the pool knows which group that is (the CPU backend's runtime).
        let device_groups = options
            .devices
            .iter()
            .map(|d| {
                let host = d.memory_space() == crate::device::MemorySpace::Host;
                let node = d.numa_node().filter(|_| host && pool.num_groups() > 1)?;
                pool.group_of_node(node)
            })
            .collect();
        Ok(Session {
            device_groups,
            graph: graph.clone(),
            pools,
            budgets,
            step_memory_limit: options.step_memory_limit,
            inline_max_micros: options.inline_step_limit.map_or(INLINE_MAX_MICROS, |d| {
                u32::try_from(d.as_micros()).unwrap_or(u32::MAX - 1)
            }),
            policy: options.policy,
            devices: options.devices,
            kernels: options.kernels.unwrap_or_else(KernelRegistry::global),
            soft_placement: options.allow_soft_placement,
            pool,
            resources: options.resources.unwrap_or_default(),
            plans: Mutex::new(PlanCache::new(MAX_CACHED_PLANS)),
            closed: AtomicBool::new(false),
        })
    }

    /// The graph this session runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The session's devices; the first is the default.
    pub fn devices(&self) -> &[Arc<dyn Device>] {
        &self.devices
    }

    /// The registry this session builds kernels from.
    pub fn kernels(&self) -> &KernelRegistry {
        &self.kernels
    }

    /// Where this session's stateful kernels keep their state.
    pub fn resources(&self) -> &Arc<ResourceMgr> {
        &self.resources
    }

    /// The scheduler pool running this session's steps.
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Closes the session: its cached plans (and their kernels) are released, and every
    /// later [`run`](Session::run) fails with [`SessionError::Closed`]
    /// (`FailedPrecondition`, as on every session kind). Steps running now finish.
    /// Closing twice is harmless; dropping the session releases everything too.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.plans.lock().clear();
    }

    /// Whether the session was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Runs one step: feeds replace the outputs they name, every fetch is computed and
    /// returned in order, and every target node runs.
    ///
    /// # Errors
    ///
    /// A [`SessionError`] naming the node involved: an invalid feed, fetch or target
    /// (a handle of another graph included), a kernel's failure, a deadline, a closed
    /// session. [`SessionError::code`] gives its kind.
    pub fn run(
        &self,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<Vec<Tensor>, SessionError> {
        self.run_with_options(&RunOptions::default(), feeds, fetches, targets)
            .map(|o| o.tensors)
    }

    /// [`Session::run`] with a timeout, a cancellation token or a timeline.
    ///
    /// # Errors
    /// As [`Session::run`]; besides, [`SessionError::DeadlineExceeded`] when the step
    /// outlives [`RunOptions::timeout`] and [`SessionError::Cancelled`] when
    /// [`RunOptions::cancel`] is cancelled.
    pub fn run_with_options(
        &self,
        options: &RunOptions,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<RunOutput, SessionError> {
        let step = self.prepare(options, feeds, fetches, targets)?;
        let result = if step.plan.topology.is_empty() {
            Ok(())
        } else {
            let body = StepBody {
                plan: Arc::clone(&step.plan),
                state: Arc::clone(&step.state),
            };
            self.pool.execute(&step.plan.topology, &body, &step.control)
        };
        step.finish(result)
    }

    /// Runs one step without blocking: [`Session::run`] as a future, for async callers
    /// (servers, clients on an executor). The step's nodes run on the session's pool;
    /// the future holds no thread while it waits and may be polled by any executor.
    /// The exception is a short step of synchronous kernels on host devices (its
    /// signature's latest step took at most 50 µs, or it is the first): the thread that
    /// polls the future runs it at once, as [`Session::run`]'s caller does, since handing
    /// it to a worker and back would cost more than the step.
    ///
    /// Looking up the plan — and building it, the first time a signature runs — and
    /// checking the feeds happen in this call, before the future is returned.
    ///
    /// **Dropping the future cancels the step** (as [`RunOptions::cancel`] would): no
    /// further node starts, and the step's state is freed once the nodes running at that
    /// moment return; the drop itself does not wait for them.
    ///
    /// # Errors
    ///
    /// As for [`Session::run`]; the future resolves to the error.
    ///
    pub fn run_async(
        &self,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> impl Future<Output = Result<Vec<Tensor>, SessionError>> + Send + 'static {
        let run = self.run_async_with_options(&RunOptions::default(), feeds, fetches, targets);
        async move { run.await.map(|o| o.tensors) }
    }

    /// [`Session::run_async`] with a timeout, a cancellation token or a timeline. The
    /// timeout holds whether or not the future is polled meanwhile.
    ///
    /// # Errors
    ///
    /// As for [`Session::run`]; the future resolves to the error.
    pub fn run_async_with_options(
        &self,
        options: &RunOptions,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> impl Future<Output = Result<RunOutput, SessionError>> + Send + 'static {
        let prepared = self.prepare(options, feeds, fetches, targets);
        let mut inline = None;
        let mut run = None;
        if let Ok(step) = &prepared {
            if step.plan.runs_inline() {
                inline = Some(self.pool.clone());
            } else {
                let body = StepBody {
                    plan: Arc::clone(&step.plan),
                    state: Arc::clone(&step.state),
                };
                let began = Instant::now();
                run = Some((
                    self.pool
                        .spawn_run(Arc::clone(&step.plan), body, step.control.clone()),
                    began,
                ));
            }
        }
        async move {
            let step = prepared?;
            let result = if let Some(pool) = inline {
                // A short step of synchronous kernels (see `ExecPlan::runs_inline`): the
                // polling thread runs it as a blocking step's caller does, with no
                // hand-off to a worker and back.
                let body = StepBody {
                    plan: Arc::clone(&step.plan),
                    state: Arc::clone(&step.state),
                };
                let began = Instant::now();
                let result = pool.execute_on_caller(&step.plan.topology, &body, &step.control);
                drop(body);
                step.plan.note_step_time(began.elapsed());
                result
            } else {
                match run {
                    Some((run, began)) => {
                        let result = run.await;
                        step.plan.note_step_time(began.elapsed());
                        result
                    }
                    None => Ok(()),
                }
            };
            step.finish_async(result).await
        }
    }

    /// Everything before a step runs: the closed check, the plan, the feeds' checks, the
    /// step's state and its run control.
    fn prepare(
        &self,
        options: &RunOptions,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<PreparedStep, SessionError> {
        let started = Instant::now();
        if self.is_closed() {
            return Err(SessionError::Closed);
        }
        let plan = self.plan(feeds, fetches, targets)?;
        let mut feed_tensors = Vec::with_capacity(feeds.len());
        for (k, (_, t)) in feeds.iter().enumerate() {
            check_feed(
                &plan.feed_names[k],
                plan.feed_dtypes[k],
                plan.feed_shapes[k].as_ref(),
                t,
            )?;
            feed_tensors.push(t.clone());
        }
        let step_id = options
            .step_id
            .unwrap_or_else(|| StepId::from(NEXT_STEP_ID.fetch_add(1, Ordering::Relaxed)));
        let counters_before = read_counters(&plan.devices);
        let state = Arc::new(StepState::new(
            &plan,
            step_id,
            Arc::clone(&self.resources),
            feed_tensors,
            options.trace,
            options.track_memory,
            options.step_memory_limit.or(self.step_memory_limit),
        ));
        let control = RunControl {
            policy: self.policy.scheduler_policy(),
            // A timeout past what an `Instant` can hold (`Duration::MAX`) is no deadline.
            deadline: options.timeout.and_then(|t| started.checked_add(t)),
            cancel: options.cancel.clone(),
            ..RunControl::default()
        };
        Ok(PreparedStep {
            plan,
            state,
            control,
            started,
            step_id,
            timeout: options.timeout,
            counters_before,
        })
    }
    fn plan(
        &self,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<Arc<ExecPlan>, SessionError> {
        let cached = self.plans.lock().get(feeds, fetches, targets);
        if let Some(p) = cached {
            return Ok(p);
        }
        let fed: Vec<Output> = feeds.iter().map(|(o, _)| *o).collect();
        let cx = PlanContext {
            devices: &self.devices,
            kernels: &self.kernels,
            soft_placement: self.soft_placement,
            pools: &self.pools,
            budgets: &self.budgets,
            memory_aware: self.policy == SchedulingPolicy::MemoryAware,
            critical_path: self.policy == SchedulingPolicy::CriticalPath,
            device_groups: &self.device_groups,
            inline_max_micros: self.inline_max_micros,
        };
        let plan = Arc::new(ExecPlan::build(&self.graph, &cx, &fed, fetches, targets)?);
        self.plans
            .lock()
            .insert(feeds, fetches, targets, Arc::clone(&plan));
        Ok(plan)
    }
}

/// A step ready to run: what [`Session::prepare`] made and [`PreparedStep::finish`]
/// turns into the step's output.
struct PreparedStep {
    plan: Arc<ExecPlan>,
    state: Arc<StepState>,
    control: RunControl,
    started: Instant,
    step_id: StepId,
    timeout: Option<Duration>,
    /// The devices' counters before the step (for [`RunMetadata::device_counters`]).
    counters_before: Vec<Vec<(&'static str, u64)>>,
}

impl PreparedStep {
    /// The step's output once its run ended with `result`, on a thread that may block:
    /// the fetches, or the run's error named after the node involved.
    fn finish(self, result: Result<(), RunError<SessionError>>) -> Result<RunOutput, SessionError> {
        self.check(result)?;
        // Work that completes asynchronously on a device (a GPU's queue) is finished
        // before the step returns: its results are final and its errors are the step's.
        // A step with a deadline or a cancellation token waits for it no longer than
        // either allows: the device's future is raced against them on this (blocking)
        // thread.
        for d in self.used_devices() {
            if self.control.deadline.is_none() && self.control.cancel.is_none() {
                d.sync().map_err(|e| sync_error(&d, e))?;
            } else {
                futures::executor::block_on(self.sync_device(&d))?;
            }
        }
        self.outputs()
    }

    /// [`PreparedStep::finish`] for a step run without blocking: the devices' work is
    /// awaited ([`Device::sync_async`]), never waited for on the polling thread.
    async fn finish_async(
        self,
        result: Result<(), RunError<SessionError>>,
    ) -> Result<RunOutput, SessionError> {
        self.check(result)?;
        for d in self.used_devices() {
            self.sync_device(&d).await?;
        }
        self.outputs()
    }

    /// Waits for `device` to finish the work the step's kernels queued
    /// ([`Device::sync_async`]), until the step's deadline or its cancellation at the
    /// latest: past the deadline, the device's future is dropped and the step fails with
    /// [`SessionError::DeviceSyncDeadlineExceeded`], and once [`RunOptions::cancel`] is
    /// cancelled with [`SessionError::DeviceSyncCancelled`], each naming the device.
    /// Without either the wait is bounded by the device alone (its own deadline for a
    /// hung GPU). A device already done when the deadline has passed or the token was
    /// cancelled still succeeds: its future is polled before the others.
    async fn sync_device(&self, device: &Arc<dyn Device>) -> Result<(), SessionError> {
        use futures::future::{select, Either};
        /// Why the wait ended before the device's work did.
        enum GaveUp {
            Deadline,
            Cancelled,
        }
        let late = async {
            match self.control.deadline {
                Some(deadline) => crate::kernel::async_support::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let cancelled = async {
            match &self.control.cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        // The cancellation first: a token cancelled before a deadline that has also
        // passed by the time both are polled reports what the caller did.
        let gave_up = async {
            match select(std::pin::pin!(cancelled), std::pin::pin!(late)).await {
                Either::Left(_) => GaveUp::Cancelled,
                Either::Right(_) => GaveUp::Deadline,
            }
        };
        let result = match select(device.sync_async(), std::pin::pin!(gave_up)).await {
            Either::Left((result, _)) => result,
            Either::Right((GaveUp::Deadline, _)) => {
                return Err(SessionError::DeviceSyncDeadlineExceeded {
                    device: device.name().to_string(),
                    timeout: self.timeout.unwrap_or_default(),
                })
            }
            Either::Right((GaveUp::Cancelled, _)) => {
                return Err(SessionError::DeviceSyncCancelled {
                    device: device.name().to_string(),
                })
            }
        };
        result.map_err(|e| sync_error(device, e))
    }

    /// The run's error, named after the node involved.
    fn check(&self, result: Result<(), RunError<SessionError>>) -> Result<(), SessionError> {
        let plan = &self.plan;
        result.map_err(|e| match e {
            RunError::Task { error, .. } => error,
            RunError::Panicked { task, message } => {
                let node = &plan.nodes[task as usize].node;
                SessionError::Panicked {
                    node: node.name.clone(),
                    op: node.op.to_string(),
                    device: plan.device_name(task as usize),
                    message,
                }
            }
            RunError::Cancelled => SessionError::Cancelled,
            RunError::DeadlineExceeded => {
                SessionError::DeadlineExceeded(self.timeout.unwrap_or_default())
            }
            other => SessionError::Scheduler(other.to_string()),
        })
    }

    /// The devices the step's nodes ran on.
    fn used_devices(&self) -> Vec<Arc<dyn Device>> {
        (self.plan.used_devices.iter())
            .map(|&i| Arc::clone(&self.plan.devices[i]))
            .collect()
    }

    /// The fetches and metadata of a step that succeeded; the step's slots go back to
    /// the plan.
    fn outputs(self) -> Result<RunOutput, SessionError> {
        let PreparedStep {
            plan,
            state,
            started,
            step_id,
            counters_before,
            ..
        } = self;
        let mut tensors = Vec::with_capacity(plan.fetch_slots.len());
        for s in &plan.fetch_slots {
            let t = state.read(*s).ok_or_else(|| {
                SessionError::Scheduler(format!("fetch slot {s} was empty after the step"))
            })?;
            tensors.push(t);
        }
        let metadata = RunMetadata {
            step_id,
            nodes: state.take_trace(),
            wall_time: started.elapsed(),
            copies: plan.num_copies(),
            memory: state.memory_stats(&plan),
            remote_numa_bytes: state.remote_numa_bytes(),
            device_counters: counter_deltas(&plan.devices, &counters_before),
        };
        // Every task has finished and the body is gone: the step's slots go back to the
        // plan (unless a straggling reference keeps the state alive).
        if let Ok(state) = Arc::try_unwrap(state) {
            plan.slot_pool.give(state.into_slots());
        }
        Ok(RunOutput { tensors, metadata })
    }
}

/// A device's failure to finish a step's work, as the step's error.
fn sync_error(device: &Arc<dyn Device>, e: crate::kernel::KernelError) -> SessionError {
    SessionError::Kernel {
        node: "(end of step)".into(),
        op: "_SyncDevice".into(),
        device: device.name().to_string(),
        source: Box::new(e),
    }
}

/// Each device's budget: the last option whose spec matches it, else none.
fn budgets(
    devices: &[Arc<dyn Device>],
    options: &[(String, u64)],
) -> Result<Vec<Option<u64>>, SessionError> {
    let mut budgets: Vec<Option<u64>> = vec![None; devices.len()];
    for (spec, bytes) in options {
        let parsed = DeviceSpec::parse(spec)
            .map_err(|e| SessionError::InvalidOptions(format!("memory budget: {e}")))?;
        let mut matched = false;
        for (i, d) in devices.iter().enumerate() {
            if parsed.matches(d.name()) {
                budgets[i] = Some(*bytes);
                matched = true;
            }
        }
        if !matched {
            let names: Vec<String> = devices.iter().map(|d| d.name().to_string()).collect();
            return Err(SessionError::InvalidOptions(format!(
                "memory budget for {spec:?} matches no device; devices: {}",
                names.join(", ")
            )));
        }
    }
    Ok(budgets)
}

/// The declared shape of a fed node, checked against every feed of it: a placeholder's
/// `shape` attribute (`-1` for any size), with its name.
pub(crate) fn declared_feed_shape(n: &Node) -> Option<(String, Vec<i64>)> {
    match (n.op.as_str(), n.attrs.ints("shape")) {
        ("Placeholder", Ok(dims)) => Some((n.name.clone(), dims)),
        _ => None,
    }
}

/// Checks a fed tensor against the output it replaces (`output`, `node:index`): its
/// dtype, and its shape against the placeholder's declared one. Local sessions and the
/// master run the same check, so a mistake gives the same error on both.
pub(crate) fn check_feed(
    output: &str,
    dtype: crate::tensor::DType,
    declared: Option<&(String, Vec<i64>)>,
    t: &Tensor,
) -> Result<(), SessionError> {
    if t.dtype() != dtype {
        return Err(SessionError::FeedDTypeMismatch {
            output: output.to_string(),
            expected: dtype,
            got: t.dtype(),
        });
    }
    if let Some((node, dims)) = declared {
        let fits = dims.len() == t.dims().len()
            && dims
                .iter()
                .zip(t.dims())
                .all(|(d, g)| *d < 0 || *d as usize == *g);
        if !fits {
            return Err(SessionError::FeedShapeMismatch {
                node: node.clone(),
                expected: dims.clone(),
                got: t.shape().clone(),
            });
        }
    }
    Ok(())
}
