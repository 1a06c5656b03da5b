//! The [`Transport`] trait: how one task of a cluster reaches another.
//!
//! Declared here so that the master and worker logic in core
//! ([`distributed`](crate::distributed)) stays independent of the wire; the in-memory
//! (`magpie-inmem`) and gRPC crates implement it. It is the *client* side of a task's
//! worker service: list the task's devices, register graph partitions on it, run a step
//! of one, push a tensor into its rendezvous, abort a step. The serving side is
//! [`Worker`](crate::distributed::Worker), which a transport's server calls.
//!
//! Tensors are **pushed**: a `_Send` kernel calls [`Transport::send`] towards the task
//! of the matching `_Recv`, which waits on its own task's rendezvous — so tensors travel
//! worker to worker, never through the master.
//!
//! # Contract
//! - Every method returns a future and blocks no thread.
//! - A request is under way once its method returns: dropping the future gives up on the
//!   answer, not on the request. (A master whose step future is dropped sends
//!   [`Transport::abort_step`] to every task and drops those futures unpolled.)
//! - Every future completes: with the answer, or with an error naming the task, within
//!   the transport's deadline (a task that is gone fails at once or at the deadline with
//!   [`TransportError::Unreachable`]).
//! - [`TransportError`]s name the task involved.
//! - An in-process transport passes tensors without copying them.
//!
//! The shared conformance suite is `testkit::check_transport` (feature `testkit`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use futures::future::{select, BoxFuture, Either};

use crate::error::Code;
use crate::exec::NodeStats;
use crate::graph::{DeviceName, Graph, GraphDef, NodeId, Output};
use crate::scheduler::CancellationToken;
use crate::step_id::StepId;
use crate::tensor::Tensor;

/// One task of a cluster: `/job:<job>/task:<index>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskName {
    /// Job name.
    pub job: String,
    /// Task index in the job.
    pub index: u32,
}

impl TaskName {
    /// `/job:<job>/task:<index>`.
    pub fn new(job: &str, index: u32) -> TaskName {
        TaskName {
            job: job.to_string(),
            index,
        }
    }

    /// Whether `device` belongs to this task.
    pub fn owns(&self, device: &DeviceName) -> bool {
        device.job == self.job && device.task == self.index
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/job:{}/task:{}", self.job, self.index)
    }
}

/// A malformed task name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed task name {0:?}: expected /job:<name>/task:<index>")]
pub struct TaskNameError(pub String);

impl FromStr for TaskName {
    type Err = TaskNameError;
    fn from_str(s: &str) -> Result<TaskName, TaskNameError> {
        let spec = crate::graph::DeviceSpec::parse(s).map_err(|_| TaskNameError(s.to_string()))?;
        match (spec.job, spec.task, spec.device_type) {
            (Some(job), Some(index), None) => Ok(TaskName { job, index }),
            _ => Err(TaskNameError(s.to_string())),
        }
    }
}

/// A device a task exposes, as the master sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Full name (`/job:ps/replica:0/task:0/device:CPU:0`).
    pub name: DeviceName,
    /// A one-line description.
    pub description: String,
    /// Bytes of memory the device has ([`Device::memory_limit`](crate::Device::memory_limit)),
    /// as its task reports it; `None` when unknown.
    pub memory_limit: Option<u64>,
}

/// Names one tensor crossing between tasks in one step.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RendezvousKey {
    /// The step (the master's step id: 128 random bits).
    pub step_id: StepId,
    /// The edge: unique in the step (`<edge id>:<producer>:<index>-><task>`).
    pub edge: String,
}

impl fmt::Display for RendezvousKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} edge {}", self.step_id, self.edge)
    }
}

/// A partition registered on a task, as the task's handle for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionHandle(pub String);

impl fmt::Display for PartitionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A partition to register: a graph for one task, with the names the steps will feed,
/// fetch and run — or, between a master and a task in one process, the session's graph
/// itself ([`RegisterPartition::shared`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterPartition {
    /// The master session it belongs to (for clean-up).
    pub session: String,
    /// The partition; node devices are full device names of the task. Empty when
    /// `shared` is set.
    pub graph: GraphDef,
    /// Outputs fed in every step (`name:index`), in the order the tensors come.
    pub feeds: Vec<String>,
    /// Outputs fetched (`name:index`), in the order they are returned.
    pub fetches: Vec<String>,
    /// Nodes run for their effects (the partition's `_Send`s among them).
    pub targets: Vec<String>,
    /// The whole step as the master session's own graph, shared rather than copied: set
    /// only for a task the transport reaches in process
    /// ([`Transport::is_in_process`]) when the step runs entirely on that task's one
    /// device. The task then runs the graph as it is (no import: a graph of a million
    /// nodes is held once in the process, not twice), and `graph`, `feeds`, `fetches`
    /// and `targets` are empty.
    pub shared: Option<SharedPartition>,
}

/// A partition that is the master session's graph itself
/// ([`RegisterPartition::shared`]): the step's feeds, fetches and targets as handles of
/// that graph.
#[derive(Clone, Debug)]
pub struct SharedPartition {
    /// The session's graph (a handle: cloning shares it).
    pub graph: Graph,
    /// Outputs fed in every step, in the order the tensors come.
    pub feeds: Vec<Output>,
    /// Outputs fetched, in the order they are returned.
    pub fetches: Vec<Output>,
    /// Nodes run for their effects.
    pub targets: Vec<NodeId>,
}

impl PartialEq for SharedPartition {
    fn eq(&self, other: &SharedPartition) -> bool {
        self.graph.same_graph(&other.graph)
            && self.feeds == other.feeds
            && self.fetches == other.fetches
            && self.targets == other.targets
    }
}

/// One step of a registered partition.
#[derive(Clone, Debug)]
pub struct RunPartition {
    /// The partition.
    pub handle: PartitionHandle,
    /// The master session it was registered for (aborts of the step name it).
    pub session: String,
    /// The master's step id (keys the step's rendezvous on every task).
    pub step_id: StepId,
    /// Tensors for the registered feeds, in order.
    pub feeds: Vec<Tensor>,
    /// The step fails with [`TransportError::DeadlineExceeded`] past this.
    pub timeout: Duration,
    /// Record the step's node timeline on the task and return it
    /// ([`PartitionOutput::timeline`]).
    pub trace: bool,
}

/// What one step of a partition returns.
#[derive(Clone, Debug, Default)]
pub struct PartitionOutput {
    /// The partition's fetches, in order.
    pub tensors: Vec<Tensor>,
    /// The step's node records on the task, when [`RunPartition::trace`] asked for them.
    pub timeline: Option<TaskTimeline>,
}

/// One task's part of a step's timeline, on the task's own clock.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskTimeline {
    /// When the partition's step started on the task: microseconds since the Unix epoch,
    /// by the task's clock (the master aligns it with its own, see
    /// [`ClusterTimeline`](crate::distributed::ClusterTimeline)).
    pub start_unix_micros: u64,
    /// The task's node records, times from `start_unix_micros`.
    pub nodes: Vec<NodeStats>,
}

impl TaskTimeline {
    /// When the last node ended, from the step's start (zero for an empty timeline).
    pub fn span(&self) -> Duration {
        self.nodes.iter().map(|n| n.end).max().unwrap_or_default()
    }
}

/// Microseconds since the Unix epoch now, by this machine's clock (0 before 1970).
pub fn unix_micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Transport failures. Each names the task involved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The task could not be reached (nothing at its address, a dead peer).
    #[error("task {task} unreachable: {detail}")]
    Unreachable {
        /// The task.
        task: String,
        /// What happened.
        detail: String,
    },
    /// The task is stopping or stopped and refuses new work.
    #[error("task {task} refused: {detail}")]
    Refused {
        /// The task.
        task: String,
        /// Why.
        detail: String,
    },
    /// The task does not know the partition (it restarted since registration).
    #[error("task {task} has no partition {handle}")]
    UnknownPartition {
        /// The task.
        task: String,
        /// The handle.
        handle: String,
    },
    /// The task answered with an error (a kernel failed, a bad graph, ...).
    #[error("task {task}: {detail}")]
    Remote {
        /// The task.
        task: String,
        /// Its message.
        detail: String,
        /// The kind of the task's error (a kernel's invalid argument stays
        /// [`Code::InvalidArgument`] across the wire).
        code: Code,
    },
    /// The step was cancelled on the task (aborted because another task failed).
    #[error("step {step_id} cancelled on task {task}")]
    Cancelled {
        /// The task.
        task: String,
        /// The step.
        step_id: StepId,
    },
    /// The task reported a deadline passed (a step's own deadline on the task).
    #[error("deadline exceeded on task {task}")]
    DeadlineExceeded {
        /// The task.
        task: String,
    },
    /// The task did not answer at all within the request's deadline (a frozen or hung
    /// peer): the transport gave up waiting. `DeadlineExceeded`, like a task's own
    /// deadline, but the task named is the one that did not answer.
    #[error("task {task} did not answer within {waited:?}")]
    NoAnswer {
        /// The task.
        task: String,
        /// How long the transport waited.
        waited: Duration,
    },
    /// The task refused the request because it would pass one of the task's limits
    /// (`ResourceExhausted`); the message names the limit and the flag that raises it.
    #[error("task {task}: {detail}")]
    LimitExceeded {
        /// The task.
        task: String,
        /// Which limit, and how to raise it.
        detail: String,
    },
}

impl TransportError {
    /// The task the error names.
    pub fn task(&self) -> &str {
        match self {
            TransportError::Unreachable { task, .. }
            | TransportError::Refused { task, .. }
            | TransportError::UnknownPartition { task, .. }
            | TransportError::Remote { task, .. }
            | TransportError::Cancelled { task, .. }
            | TransportError::DeadlineExceeded { task }
            | TransportError::NoAnswer { task, .. }
            | TransportError::LimitExceeded { task, .. } => task,
        }
    }

    /// The error's kind: `Unavailable` for a task that cannot be reached or refuses work,
    /// `NotFound` for an unknown partition, the task's own code for `Remote`, `Aborted`
    /// for a step aborted on the task, `DeadlineExceeded` for a deadline or a task that
    /// did not answer, `ResourceExhausted` for a limit.
    pub fn code(&self) -> Code {
        match self {
            TransportError::Unreachable { .. } | TransportError::Refused { .. } => {
                Code::Unavailable
            }
            TransportError::UnknownPartition { .. } => Code::NotFound,
            TransportError::Remote { code, .. } => *code,
            TransportError::Cancelled { .. } => Code::Aborted,
            TransportError::DeadlineExceeded { .. } | TransportError::NoAnswer { .. } => {
                Code::DeadlineExceeded
            }
            TransportError::LimitExceeded { .. } => Code::ResourceExhausted,
        }
    }
}

/// How a task reaches the others. Implemented by the transport crates (`magpie-inmem`,
/// `magpie-grpc`); a transport of one's own passes `testkit::check_transport`.
///
/// The shape of an implementation: each method reaches `task` and answers with a future
/// that always completes. This one reaches no task — every call fails, naming the task,
/// as a transport does for a task that is gone; a real one forwards each call to the
/// task's [`Worker`](crate::distributed::Worker) over its wire.
///
/// ```
/// use magpie_core::kernel::async_support::{BoxFuture, FutureExt};
/// use magpie_core::transport::{
///     DeviceInfo, PartitionHandle, PartitionOutput, RegisterPartition, RendezvousKey,
///     RunPartition, TaskName, Transport, TransportError,
/// };
/// use magpie_core::{StepId, Tensor};
///
/// #[derive(Debug)]
/// struct Nowhere;
///
/// fn gone<T: Send + 'static>(task: &TaskName) -> BoxFuture<'static, Result<T, TransportError>> {
///     let task = task.to_string();
///     async move { Err(TransportError::Unreachable { task, detail: "no network".into() }) }
///         .boxed()
/// }
///
/// impl Transport for Nowhere {
///     fn list_devices(&self, task: &TaskName)
///         -> BoxFuture<'static, Result<Vec<DeviceInfo>, TransportError>> { gone(task) }
///     fn register_partition(&self, task: &TaskName, _: RegisterPartition)
///         -> BoxFuture<'static, Result<PartitionHandle, TransportError>> { gone(task) }
///     fn run_partition(&self, task: &TaskName, _: RunPartition)
///         -> BoxFuture<'static, Result<PartitionOutput, TransportError>> { gone(task) }
///     fn send(&self, task: &TaskName, _: &str, _: RendezvousKey, _: Tensor)
///         -> BoxFuture<'static, Result<(), TransportError>> { gone(task) }
///     fn abort_step(&self, task: &TaskName, _: &str, _: StepId)
///         -> BoxFuture<'static, Result<(), TransportError>> { gone(task) }
///     fn release_session(&self, task: &TaskName, _: &str)
///         -> BoxFuture<'static, Result<(), TransportError>> { gone(task) }
/// }
///
/// let worker1 = TaskName::new("worker", 1);
/// let err = futures::executor::block_on(Nowhere.list_devices(&worker1)).unwrap_err();
/// assert_eq!(err.task(), "/job:worker/task:1");
/// assert_eq!(err.code(), magpie_core::Code::Unavailable);
/// ```
pub trait Transport: Send + Sync + fmt::Debug {
    /// The devices `task` exposes.
    ///
    /// # Errors
    ///
    /// [`TransportError::Unreachable`], [`TransportError::Refused`] or
    /// [`TransportError::NoAnswer`] when `task` cannot be reached, is stopping, or does
    /// not answer in time.
    fn list_devices(
        &self,
        task: &TaskName,
    ) -> BoxFuture<'static, Result<Vec<DeviceInfo>, TransportError>>;

    /// Registers a partition on `task` and returns its handle there.
    ///
    /// # Errors
    ///
    /// [`TransportError::Unreachable`], [`TransportError::Refused`] or
    /// [`TransportError::NoAnswer`] when `task` cannot be reached, is stopping, or does
    /// not answer in time;
    /// [`TransportError::Remote`] with the task's code when it rejects the partition (an
    /// invalid graph: `InvalidArgument`).
    fn register_partition(
        &self,
        task: &TaskName,
        request: RegisterPartition,
    ) -> BoxFuture<'static, Result<PartitionHandle, TransportError>>;

    /// Whether requests for `task` are direct calls into a worker of this process, which
    /// takes a [`RegisterPartition::shared`] graph as it is (default: no; a transport
    /// that answers yes must hand such a registration to the worker unchanged).
    fn is_in_process(&self, task: &TaskName) -> bool {
        let _ = task;
        false
    }

    /// Whether [`send`](Self::send) starts its transfer when called — the tensor goes on
    /// its way whether or not the returned future is ever polled, and the future only
    /// yields the answer (default: no). A worker over such a transport runs `_Send` as a
    /// synchronous kernel that completes at once; it reports the step done without
    /// waiting for the answers, which it awaits in the background: a send that fails
    /// aborts the step on its receiver with [`abort_step_with_reason`], naming the
    /// sending task, the edge and the error (with many steps' answers outstanding, a
    /// step awaits its own before it reports done, a failed send failing it, naming its
    /// node). No thread is woken for an answer while the step runs.
    ///
    /// [`abort_step_with_reason`]: Self::abort_step_with_reason
    fn sends_eagerly(&self) -> bool {
        false
    }

    /// Runs one step of a registered partition, returning its fetches in order (and its
    /// timeline, when the request asks for one).
    ///
    /// # Errors
    ///
    /// [`TransportError::Unreachable`], [`TransportError::Refused`] or
    /// [`TransportError::NoAnswer`] when `task` cannot be reached, is stopping, or does
    /// not answer in time;
    /// [`TransportError::UnknownPartition`] when the task does not hold the handle (it
    /// restarted); [`TransportError::Cancelled`] when the step was aborted there;
    /// [`TransportError::DeadlineExceeded`] past [`RunPartition::timeout`];
    /// [`TransportError::LimitExceeded`] for a task limit;
    /// [`TransportError::Remote`] when the step fails there (a kernel's error, with its
    /// code).
    fn run_partition(
        &self,
        task: &TaskName,
        request: RunPartition,
    ) -> BoxFuture<'static, Result<PartitionOutput, TransportError>>;

    /// Delivers a tensor into `task`'s rendezvous under `key`, for a step of the master
    /// session `session` (the name its partitions were registered under): the task
    /// accepts it only if that session has a partition there and the step, if it runs
    /// there, belongs to that session.
    ///
    /// # Errors
    ///
    /// [`TransportError::Unreachable`], [`TransportError::Refused`] or
    /// [`TransportError::NoAnswer`] when `task` cannot be reached, is stopping, or does
    /// not answer in time;
    /// [`TransportError::LimitExceeded`] when the tensor would pass a limit of the
    /// task's rendezvous; [`TransportError::Remote`] when the task refuses it (no
    /// partition of `session` there: `NotFound`; the step runs for another session:
    /// `PermissionDenied`).
    fn send(
        &self,
        task: &TaskName,
        session: &str,
        key: RendezvousKey,
        tensor: Tensor,
    ) -> BoxFuture<'static, Result<(), TransportError>>;

    /// Aborts a step of the master session `session` on `task`: its pending receives
    /// fail and its partitions stop. The task ignores an abort through another session
    /// than the one that runs the step.
    ///
    /// # Errors
    ///
    /// [`TransportError::Unreachable`], [`TransportError::Refused`] or
    /// [`TransportError::NoAnswer`] when `task` cannot be reached, is stopping, or does
    /// not answer in time;
    /// [`TransportError::Remote`] when the task refuses the abort (no partition of
    /// `session` there, or the step runs for another session).
    fn abort_step(
        &self,
        task: &TaskName,
        session: &str,
        step_id: StepId,
    ) -> BoxFuture<'static, Result<(), TransportError>>;

    /// [`abort_step`](Self::abort_step), telling the task why: a step that fails there
    /// because of it reports `reason`, with the cause's `code` (a sending task whose send
    /// failed after its partition replied names itself, the edge and the error, and
    /// gives the error's code). The default ignores both, as a peer that does not know
    /// them does.
    ///
    /// # Errors
    ///
    /// As [`abort_step`](Self::abort_step).
    fn abort_step_with_reason(
        &self,
        task: &TaskName,
        session: &str,
        step_id: StepId,
        code: crate::Code,
        reason: &str,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let _ = (code, reason);
        self.abort_step(task, session, step_id)
    }

    /// Runs `task` to its end on the transport's own executor, if it has one (default:
    /// gives it back). A worker awaits the answers of sends that outlive their step this
    /// way (`unacked.rs`), so they are polled where the answers complete, with no thread
    /// woken for them; over a transport without an executor it polls them on a thread
    /// of its own.
    ///
    /// # Errors
    ///
    /// `task`, when the transport does not run it.
    fn spawn(&self, task: BoxFuture<'static, ()>) -> Result<(), BoxFuture<'static, ()>> {
        Err(task)
    }

    /// Drops every partition `session` registered on `task`.
    ///
    /// # Errors
    ///
    /// [`TransportError::Unreachable`], [`TransportError::Refused`] or
    /// [`TransportError::NoAnswer`] when `task` cannot be reached, is stopping, or does
    /// not answer in time.
    fn release_session(
        &self,
        task: &TaskName,
        session: &str,
    ) -> BoxFuture<'static, Result<(), TransportError>>;
}

/// [`Transport::run_partition`], aborting the step on `task` when `cancel` is cancelled
/// meanwhile (the future then resolves once the task has answered the run, with the
/// error the aborted step reports). The master runs a step with a single partition
/// through this.
///
/// # Errors
///
/// As [`Transport::run_partition`]; a step aborted through `cancel` typically ends with
/// [`TransportError::Cancelled`].
pub async fn run_partition_cancellable<T: Transport + ?Sized>(
    transport: &T,
    task: &TaskName,
    request: RunPartition,
    cancel: Option<&CancellationToken>,
) -> Result<PartitionOutput, TransportError> {
    let step_id = request.step_id;
    let session = request.session.clone();
    let run = transport.run_partition(task, request);
    let Some(cancel) = cancel else {
        return run.await;
    };
    match select(run, cancel.cancelled()).await {
        Either::Left((r, _)) => r,
        Either::Right(((), run)) => {
            let _ = transport.abort_step(task, &session, step_id).await;
            run.await
        }
    }
}
