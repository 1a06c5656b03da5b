//! Errors of the distributed layer: [`WorkerError`] (one task's worker service) and
//! [`MasterError`] (placing, partitioning and running a step over the cluster). Each
//! names the task, node, spec or device involved.

use crate::cluster::ClusterError;
use crate::error::Code;
use crate::graph::GraphError;
use crate::session::SessionError;
use crate::step_id::StepId;
use crate::transport::TransportError;

use super::rendezvous::RendezvousError;

/// Why a worker refused or failed a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The worker is stopping or stopped.
    #[error("task {task} is stopping and refuses new work")]
    Refused {
        /// The task.
        task: String,
    },
    /// No partition has this handle (never registered, released, or the task restarted).
    #[error("task {task} has no partition {handle}")]
    UnknownPartition {
        /// The task.
        task: String,
        /// The handle.
        handle: String,
    },
    /// A partition's graph failed validation.
    #[error("task {task}: invalid partition: {source}")]
    BadPartition {
        /// The task.
        task: String,
        /// Why (boxed to keep the error small).
        source: Box<GraphError>,
    },
    /// The partition's local step failed (the error names node, op and device).
    #[error("task {task}: {source}")]
    Step {
        /// The task.
        task: String,
        /// The local session's error (boxed to keep the error small).
        source: Box<SessionError>,
    },
    /// The step was aborted on this task.
    #[error("step {step_id} was aborted on task {task}")]
    Aborted {
        /// The task.
        task: String,
        /// The step.
        step_id: StepId,
    },
    /// The step was aborted on this task by another task of its session, which said why
    /// (a send of the step to this task failed after the sender's partition replied).
    #[error("step {step_id} was aborted on task {task}: {reason}")]
    AbortedBy {
        /// The task.
        task: String,
        /// The step.
        step_id: StepId,
        /// The cause's code (`Aborted` for one that would read as this task's own state
        /// on the wire: see [`Worker::abort_step_with_reason`](super::Worker::abort_step_with_reason)).
        code: Code,
        /// Why, as the aborting task put it.
        reason: String,
    },
    /// No partition of this master session is registered on the task (never, released,
    /// or the task restarted): tensors and aborts for it are refused.
    #[error("task {task} has no partition of session {session:?}")]
    UnknownSession {
        /// The task.
        task: String,
        /// The session named.
        session: String,
    },
    /// A partition was asked to run for another session than the one it was registered
    /// for.
    #[error("task {task}: partition {handle} does not belong to session {session:?}")]
    WrongSession {
        /// The task.
        task: String,
        /// The partition.
        handle: String,
        /// The session named.
        session: String,
    },
    /// The task's rendezvous refused a tensor or a step (another session's step, a
    /// limit, a step that ended).
    #[error("task {task}: {source}")]
    Rendezvous {
        /// The task.
        task: String,
        /// Why.
        source: RendezvousError,
    },
    /// The task could not draw random bits for a handle.
    #[error("task {task}: {detail}")]
    Internal {
        /// The task.
        task: String,
        /// What failed.
        detail: String,
    },
    /// A device given to the server does not belong to its task, or options are invalid.
    #[error("task {task}: invalid server options: {detail}")]
    InvalidOptions {
        /// The task.
        task: String,
        /// What is wrong.
        detail: String,
    },
}

impl WorkerError {
    /// The error's kind: a stopping task is `Unavailable`, an unknown partition
    /// `NotFound`, a bad partition or options `InvalidArgument`, an aborted step
    /// `Aborted`; a failed step has its local session's code.
    pub fn code(&self) -> Code {
        match self {
            WorkerError::Refused { .. } => Code::Unavailable,
            WorkerError::UnknownPartition { .. } => Code::NotFound,
            WorkerError::BadPartition { source, .. } => source.code(),
            WorkerError::Step { source, .. } => source.code(),
            WorkerError::Aborted { .. } => Code::Aborted,
            WorkerError::AbortedBy { code, .. } => *code,
            WorkerError::InvalidOptions { .. } => Code::InvalidArgument,
            WorkerError::UnknownSession { .. } => Code::NotFound,
            WorkerError::WrongSession { .. } => Code::PermissionDenied,
            WorkerError::Rendezvous { source, .. } => source.code(),
            WorkerError::Internal { .. } => Code::Internal,
        }
    }

    /// The error as a transport reports it to the caller.
    pub fn into_transport(self) -> TransportError {
        match self {
            WorkerError::Refused { task } => TransportError::Refused {
                task,
                detail: "the server is stopping".into(),
            },
            WorkerError::UnknownPartition { task, handle } => {
                TransportError::UnknownPartition { task, handle }
            }
            WorkerError::Aborted { task, step_id } => TransportError::Cancelled { task, step_id },
            WorkerError::Rendezvous {
                task,
                source: RendezvousError::Limit(limit),
            } => TransportError::LimitExceeded {
                task,
                detail: limit.to_string(),
            },
            WorkerError::Step { task, source }
                if matches!(
                    *source,
                    SessionError::DeadlineExceeded(_)
                        | SessionError::DeviceSyncDeadlineExceeded { .. }
                ) =>
            {
                TransportError::DeadlineExceeded { task }
            }
            other => {
                let code = other.code();
                let task = match &other {
                    WorkerError::BadPartition { task, .. }
                    | WorkerError::Step { task, .. }
                    | WorkerError::InvalidOptions { task, .. }
                    | WorkerError::UnknownSession { task, .. }
                    | WorkerError::WrongSession { task, .. }
                    | WorkerError::Rendezvous { task, .. }
                    | WorkerError::AbortedBy { task, .. }
                    | WorkerError::Internal { task, .. } => task.clone(),
                    _ => String::new(),
                };
                let detail = match &other {
                    WorkerError::BadPartition { source, .. } => {
                        format!("invalid partition: {source}")
                    }
                    WorkerError::Step { source, .. } => source.to_string(),
                    WorkerError::Rendezvous { source, .. } => source.to_string(),
                    WorkerError::Internal { detail, .. } => detail.clone(),
                    o => o.to_string(),
                };
                TransportError::Remote { task, detail, code }
            }
        }
    }
}

/// Why a master could not create a session or run a step. [`MasterError::code`] gives
/// its kind, the same as a local session's for the same mistake.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MasterError {
    /// The cluster spec or a task reference is invalid.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The graph, a feed, a fetch or a target is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// No device of any task matches a node's device spec.
    #[error("node {node:?} ({op}) requests device {spec}, which no task's device matches; devices: {}", .available.join(", "))]
    NoMatchingDevice {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// The requested spec.
        spec: String,
        /// Every device of the cluster.
        available: Vec<String>,
    },
    /// The devices a node's spec matches have no kernel for its op.
    #[error("node {node:?}: no kernel for op {op} on any device matching {spec:?} (matched: {})", .matched.join(", "))]
    NoKernel {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// The spec ("" for an unpinned node).
        spec: String,
        /// The devices it matched.
        matched: Vec<String>,
    },
    /// A node is colocated with a node that does not exist.
    #[error("node {node:?} is colocated with {target:?}, which is not in the graph")]
    BadColocation {
        /// Node name.
        node: String,
        /// The missing node.
        target: String,
    },
    /// A feed's tensor does not fit its output: the same error (and message) a local
    /// session gives ([`SessionError::FeedDTypeMismatch`],
    /// [`SessionError::FeedShapeMismatch`]), naming the client's node.
    #[error(transparent)]
    BadFeed(Box<SessionError>),
    /// A task failed (or could not be reached) during the step; names the task.
    #[error("step {step_id} failed: {source}")]
    Step {
        /// The step.
        step_id: StepId,
        /// The first failure (the root cause; others were aborted because of it).
        source: TransportError,
    },
    /// The caller cancelled the step (its `RunOptions::cancel` token — a remote client
    /// that went away); the step was aborted on every task.
    #[error("step {step_id} was cancelled by its caller")]
    Cancelled {
        /// The step.
        step_id: StepId,
    },
    /// The master could not draw random bits for a session name or a step id.
    #[error("master {task}: {detail}")]
    Internal {
        /// The master's task.
        task: String,
        /// What failed.
        detail: String,
    },
    /// A task could not be reached or refused while the session was set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Tasks of the cluster could not be reached within the start-up wait
    /// ([`MasterOptions::peer_wait`](super::MasterOptions::peer_wait)) while a session
    /// was opened.
    #[error(
        "tasks not reachable after waiting {waited_ms} ms for them (raise it with \
         --peer-wait-ms): {}; last error: {last}",
        .tasks.join(", ")
    )]
    PeersMissing {
        /// The tasks that never answered.
        tasks: Vec<String>,
        /// How long the master waited.
        waited_ms: u64,
        /// The last error one of them gave.
        last: TransportError,
    },
    /// The session was closed ([`MasterSession::close`](super::MasterSession::close)):
    /// it runs no more steps.
    #[error("{}", crate::error::SESSION_CLOSED)]
    Closed,
    /// The master is stopping.
    #[error("master {task} is stopping and refuses new steps")]
    Stopping {
        /// The master's task.
        task: String,
    },
}

impl MasterError {
    /// The error's kind (see [`Code`]): the same as a local session's for the same
    /// mistake; a failed step has the code of its root cause on the task that failed.
    pub fn code(&self) -> Code {
        match self {
            MasterError::Cluster(_)
            | MasterError::NoMatchingDevice { .. }
            | MasterError::NoKernel { .. }
            | MasterError::BadColocation { .. } => Code::InvalidArgument,
            MasterError::Graph(e) => e.code(),
            MasterError::BadFeed(e) => e.code(),
            MasterError::Step { source, .. } | MasterError::Transport(source) => source.code(),
            MasterError::Cancelled { .. } => Code::Cancelled,
            MasterError::Closed => Code::FailedPrecondition,
            MasterError::Stopping { .. } | MasterError::PeersMissing { .. } => Code::Unavailable,
            MasterError::Internal { .. } => Code::Internal,
        }
    }
}
