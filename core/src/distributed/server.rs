//! [`TaskServer`]: one cluster task's master and worker services with the server
//! lifecycle (serve, stop, join), independent of the wire. A transport hosts it: the
//! in-memory transport registers it under its address in a process-local network; the
//! gRPC server will expose the same services on a socket.
//!
//! # Stop protocol
//! 1. The master and the worker refuse new sessions, partitions and steps.
//! 2. Running steps may finish until the deadline; deliveries to the task still land.
//! 3. Steps still running at the deadline are cancelled and fail (naming the task).
//! 4. The server is marked stopped and every [`TaskServer::join`] returns. The hosting
//!    transport then forgets the address (frees the port), so later requests fail as
//!    unreachable, naming the task.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::error::WorkerError;
use super::master::{Master, MasterOptions};
use super::rendezvous::RendezvousLimits;
use super::worker::Worker;
use crate::cluster::ClusterSpec;
use crate::device::Device;
use crate::graph::DeviceSpec;
use crate::registry::KernelRegistry;
use crate::scheduler::{IdleSpin, ThreadPool};
use crate::transport::{TaskName, Transport};

/// How a task's server is set up.
#[derive(Clone)]
pub struct ServerOptions {
    /// The task's local devices; their names must carry the task's job and index
    /// (`/job:ps/replica:0/task:0/device:CPU:0`). The first visible one is the default.
    pub devices: Vec<Arc<dyn Device>>,
    /// Which of `devices` the task exposes, as device specs (`/device:CPU:*`); `None`
    /// exposes all — the analogue of `CUDA_VISIBLE_DEVICES` (a parameter-server task,
    /// for one, may expose only its CPU).
    pub visible_devices: Option<Vec<String>>,
    /// Scheduler threads of a new pool (default 2), unless `pool` is given.
    pub num_workers: Option<usize>,
    /// A pool to share (several in-process tasks may share one).
    pub pool: Option<ThreadPool>,
    /// How the idle workers of a new pool (not of `pool`) look for work before they
    /// park (default [`IdleSpin::LONG`]; a server that shares few cores with its network
    /// threads wants a short spin, see `magpie server --idle-spin`).
    pub idle_spin: IdleSpin,
    /// Resource pools of the task's sessions (`("net", 1)` throttles its `_Send`s).
    pub resource_pools: Vec<(String, usize)>,
    /// Deadline of a step when the client sets none (default 10 s): a step waiting on a
    /// task that never answers fails after this, naming the task.
    pub step_timeout: Duration,
    /// How long opening a session waits for tasks not reachable yet before failing
    /// naming them (default 60 s, [`MasterOptions::peer_wait`]).
    pub peer_wait: Duration,
    /// Bounds on tensors other tasks deliver for steps this task has not started (yet):
    /// kept at most this long and this many bytes in total, then dropped with a warning
    /// (see [`Rendezvous`](super::Rendezvous)).
    pub rendezvous_limits: RendezvousLimits,
    /// The kernels of the task's sessions and of its master's placement; the
    /// process-wide [`KernelRegistry::global`] when `None`. The task adds the distributed
    /// kernels (`_Send`, `_Recv`, variables) to it.
    pub kernels: Option<KernelRegistry>,
    /// The most bytes one step's kernels may hold at once on this task, all its devices
    /// together ([`SessionOptions::step_memory_limit`](crate::session::SessionOptions::step_memory_limit)
    /// of every partition's session, naming [`Limit::StepMemory`](crate::limits::Limit::StepMemory)'s
    /// flag when refused). Default `None`: no limit but the devices'; `magpie server`
    /// sets half the machine's memory unless `--step-memory-limit` says otherwise.
    pub step_memory_limit: Option<u64>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            devices: Vec::new(),
            visible_devices: None,
            num_workers: None,
            pool: None,
            idle_spin: IdleSpin::default(),
            resource_pools: Vec::new(),
            step_timeout: Duration::from_secs(10),
            peer_wait: super::DEFAULT_PEER_WAIT,
            rendezvous_limits: RendezvousLimits::default(),
            kernels: None,
            step_memory_limit: None,
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field(
                "devices",
                &self
                    .devices
                    .iter()
                    .map(|d| d.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("visible_devices", &self.visible_devices)
            .field("num_workers", &self.num_workers)
            .field("idle_spin", &self.idle_spin)
            .field("resource_pools", &self.resource_pools)
            .field("step_timeout", &self.step_timeout)
            .field("peer_wait", &self.peer_wait)
            .field("rendezvous_limits", &self.rendezvous_limits)
            .field("kernels", &self.kernels)
            .field("step_memory_limit", &self.step_memory_limit)
            .finish()
    }
}

impl ServerOptions {
    /// Options over these devices.
    pub fn with_devices(devices: Vec<Arc<dyn Device>>) -> ServerOptions {
        ServerOptions {
            devices,
            ..ServerOptions::default()
        }
    }

    /// Builds the task's kernels from `kernels` instead of the process-wide registry.
    pub fn kernels(mut self, kernels: KernelRegistry) -> ServerOptions {
        self.kernels = Some(kernels);
        self
    }

    /// The registry the task builds kernels from.
    pub(crate) fn kernel_registry(&self) -> KernelRegistry {
        self.kernels.clone().unwrap_or_else(KernelRegistry::global)
    }

    /// Exposes only the devices one of `specs` matches (`"/device:CPU:*"`).
    pub fn visible_devices(mut self, specs: &[&str]) -> ServerOptions {
        self.visible_devices = Some(specs.iter().map(|s| s.to_string()).collect());
        self
    }

    /// The devices `task` exposes, checked: those of [`ServerOptions::devices`] that a
    /// [`ServerOptions::visible_devices`] spec matches (all without specs), in order, the
    /// first being the task's default device. The task's worker serves exactly these.
    ///
    /// # Errors
    /// Why the task would not start, in words: a device not named for `task`, a spec
    /// that does not parse, or no device left.
    pub fn visible(&self, task: &TaskName) -> Result<Vec<Arc<dyn Device>>, String> {
        for d in &self.devices {
            if !task.owns(d.name()) {
                return Err(format!(
                    "device {} does not belong to task {task}",
                    d.name()
                ));
            }
        }
        let specs = match &self.visible_devices {
            None => None,
            Some(v) => Some(
                v.iter()
                    .map(|s| DeviceSpec::parse(s).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let visible: Vec<Arc<dyn Device>> = self
            .devices
            .iter()
            .filter(|d| {
                specs
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|spec| spec.matches(d.name())))
            })
            .cloned()
            .collect();
        if visible.is_empty() {
            let names = self
                .devices
                .iter()
                .map(|d| d.name().to_string())
                .collect::<Vec<_>>();
            return Err(match &self.visible_devices {
                Some(v) => format!(
                    "task {task} exposes no device: visible devices {} match none of its \
                     devices ({})",
                    v.join(", "),
                    names.join(", ")
                ),
                None => format!("task {task} exposes no device: it has none"),
            });
        }
        Ok(visible)
    }
}

/// One task's master and worker services, with the server lifecycle.
///
/// A one-task cluster in this process, with core alone: a device of type `CPU` (core's
/// variable kernels run on any such device; `Add` and the other standard ops need a
/// backend such as `magpie-cpu`) and a transport that hands each request straight to the
/// task's [`Worker`] — the in-memory crate, `magpie-inmem`, does the same for any
/// number of tasks. Its kernels come from a registry of its own, given the one kernel
/// the example needs besides core's: `Placeholder`'s (fed tensors bypass it).
///
/// ```
/// use std::sync::{Arc, OnceLock};
/// use std::time::Duration;
///
/// use magpie_core::cluster::ClusterSpec;
/// use magpie_core::device::Device;
/// use magpie_core::distributed::{ServerOptions, TaskServer, Worker, WorkerError};
/// use magpie_core::graph::{DeviceName, Graph};
/// use magpie_core::kernel::async_support::{BoxFuture, FutureExt};
/// use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelInit};
/// use magpie_core::registry::{KernelKey, KernelRegistry};
/// use magpie_core::tensor::{DType, Tensor};
/// use magpie_core::transport::{
///     DeviceInfo, PartitionHandle, PartitionOutput, RegisterPartition, RendezvousKey,
///     RunPartition, TaskName, Transport, TransportError,
/// };
/// use magpie_core::StepId;
///
/// #[derive(Debug)]
/// struct Host(DeviceName);
/// impl Device for Host {
///     fn name(&self) -> &DeviceName { &self.0 }
///     fn as_any(&self) -> &dyn std::any::Any { self }
/// }
///
/// /// A placeholder's kernel runs only when a step forgets to feed it.
/// struct Unfed;
/// impl Kernel for Unfed {
///     fn compute(&self, _: &mut KernelContext<'_>) -> Result<(), KernelError> {
///         Err(KernelError::InvalidArgument("a placeholder must be fed".into()))
///     }
/// }
///
/// /// Reaches the one worker of this process.
/// #[derive(Debug, Default)]
/// struct Loopback(OnceLock<Arc<Worker>>);
///
/// impl Loopback {
///     fn worker(&self) -> Arc<Worker> {
///         Arc::clone(self.0.get().expect("the worker is set before any request"))
///     }
/// }
///
/// type Answer<T> = BoxFuture<'static, Result<T, TransportError>>;
///
/// impl Transport for Loopback {
///     fn list_devices(&self, _: &TaskName) -> Answer<Vec<DeviceInfo>> {
///         let devices = self.worker().device_infos();
///         async move { Ok(devices) }.boxed()
///     }
///     fn register_partition(&self, _: &TaskName, r: RegisterPartition) -> Answer<PartitionHandle> {
///         let answer = self.worker().register_partition(r).map_err(WorkerError::into_transport);
///         async move { answer }.boxed()
///     }
///     fn run_partition(&self, _: &TaskName, r: RunPartition) -> Answer<PartitionOutput> {
///         let worker = self.worker();
///         async move { worker.run_partition_async(r, None).await.map_err(WorkerError::into_transport) }
///             .boxed()
///     }
///     fn send(&self, _: &TaskName, session: &str, key: RendezvousKey, t: Tensor) -> Answer<()> {
///         let answer = self.worker().deliver(session, key, t).map_err(WorkerError::into_transport);
///         async move { answer }.boxed()
///     }
///     fn abort_step(&self, _: &TaskName, session: &str, step: StepId) -> Answer<()> {
///         let answer = self.worker().abort_step(session, step).map_err(WorkerError::into_transport);
///         async move { answer }.boxed()
///     }
///     fn release_session(&self, _: &TaskName, session: &str) -> Answer<()> {
///         self.worker().release_session(session);
///         async { Ok(()) }.boxed()
///     }
/// }
///
/// // The address is never dialled: the transport reaches the worker in process.
/// let cluster = ClusterSpec::builder().job("local", ["localhost:2222"]).build()?;
/// let task = TaskName::new("local", 0);
/// let cpu = DeviceName::parse("/job:local/replica:0/task:0/device:CPU:0")?;
/// let kernels = KernelRegistry::new();
/// kernels.register(KernelKey::new("Placeholder", "CPU"), |_: &KernelInit<'_>| {
///     Ok(BoxedKernel::Sync(Box::new(Unfed)))
/// })?;
/// let options = ServerOptions::with_devices(vec![Arc::new(Host(cpu))]).kernels(kernels);
/// let transport = Arc::new(Loopback::default());
/// let server = TaskServer::new(cluster, task, &options, transport.clone())?;
/// transport.0.set(Arc::clone(server.worker())).expect("set once");
///
/// // A variable that lives on the task across steps.
/// let g = Graph::new();
/// let x = g.placeholder(DType::F32, None)?;
/// let counter = g.variable("counter", DType::F32)?;
/// let set = counter.assign(&g, x)?;
/// let add = counter.assign_add(&g, x)?;
///
/// let session = server.master().create_session(&g)?;
/// session.run(&[(x, Tensor::scalar(1.0f32))], &[set], &[])?;
/// let out = session.run(&[(x, Tensor::scalar(2.0f32))], &[add], &[])?;
/// assert_eq!(out[0].scalar_value::<f32>()?, 3.0);
///
/// assert_eq!(server.stop(Duration::from_secs(1)), 0); // no step was still running
/// let refused = server.master().create_session(&g).unwrap_err();
/// assert_eq!(refused.code(), magpie_core::Code::Unavailable);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TaskServer {
    task: TaskName,
    cluster: ClusterSpec,
    worker: Arc<Worker>,
    master: Arc<Master>,
    stopped: Mutex<bool>,
    stopped_cv: Condvar,
}

impl fmt::Debug for TaskServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskServer")
            .field("task", &self.task.to_string())
            .field("stopped", &*self.stopped.lock())
            .finish()
    }
}

impl TaskServer {
    /// The services of `task` of `cluster`, reaching the other tasks through
    /// `transport`. Nothing listens yet: the transport that hosts the server routes
    /// requests for `task` to [`TaskServer::worker`] and [`TaskServer::master`].
    ///
    /// # Errors
    ///
    /// [`WorkerError::InvalidOptions`], naming the task, when `task` is not a task of
    /// `cluster`, or for any reason [`Worker::new`] gives (devices of another task, no
    /// visible device, a registry with conflicting kernels, threads that cannot start).
    pub fn new(
        cluster: ClusterSpec,
        task: TaskName,
        options: &ServerOptions,
        transport: Arc<dyn Transport>,
    ) -> Result<TaskServer, WorkerError> {
        cluster
            .check_task(&task)
            .map_err(|e| WorkerError::InvalidOptions {
                task: task.to_string(),
                detail: e.to_string(),
            })?;
        let worker = Arc::new(Worker::new(task.clone(), options, Arc::clone(&transport))?);
        let master = Arc::new(Master::new(
            task.clone(),
            cluster.clone(),
            transport,
            MasterOptions {
                step_timeout: options.step_timeout,
                peer_wait: options.peer_wait,
                kernels: options.kernel_registry(),
            },
        ));
        Ok(TaskServer {
            task,
            cluster,
            worker,
            master,
            stopped: Mutex::new(false),
            stopped_cv: Condvar::new(),
        })
    }

    /// The task.
    pub fn task(&self) -> &TaskName {
        &self.task
    }

    /// The cluster.
    pub fn cluster(&self) -> &ClusterSpec {
        &self.cluster
    }

    /// The worker service.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// The master service (sessions opened on this task).
    pub fn master(&self) -> &Arc<Master> {
        &self.master
    }

    /// Clears a resource container on this task (its variables); returns how many
    /// resources it held.
    pub fn reset(&self, container: &str) -> usize {
        self.worker.reset(container)
    }

    /// Stops the server (see the module's protocol): refuses new work, lets running
    /// steps finish within `deadline`, cancels the rest. Returns how many partition steps
    /// were cancelled. Idempotent.
    pub fn stop(&self, deadline: Duration) -> usize {
        self.master.begin_stop();
        self.worker.begin_stop();
        let cancelled = self
            .worker
            .drain(Instant::now() + deadline, Duration::from_secs(5));
        *self.stopped.lock() = true;
        self.stopped_cv.notify_all();
        cancelled
    }

    /// Whether the server has stopped.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock()
    }

    /// Blocks until the server stops.
    pub fn join(&self) {
        let mut s = self.stopped.lock();
        while !*s {
            self.stopped_cv.wait(&mut s);
        }
    }

    /// Blocks until the server stops or `timeout` passes; returns whether it stopped.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut s = self.stopped.lock();
        while !*s {
            if self.stopped_cv.wait_until(&mut s, until).timed_out() {
                break;
            }
        }
        *s
    }
}
