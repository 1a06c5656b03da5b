//! Errors of the dataflow executor and sessions. Each names the node, op and device
//! involved where there is one.

use crate::error::Code;
use crate::graph::GraphError;
use crate::kernel::KernelError;
use crate::scheduler::SchedulerError;
use crate::tensor::{DType, Shape};

/// Why a step (or its preparation) failed. [`SessionError::code`] gives its kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The graph, a feed, a fetch or a target is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// No device of the session matches a node's device spec.
    #[error("node {node:?} ({op}) requests device {spec}, which no device matches; devices: {}", .available.join(", "))]
    NoMatchingDevice {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// The requested spec.
        spec: String,
        /// The devices the session has.
        available: Vec<String>,
    },
    /// A node was placed where no kernel exists for its op.
    #[error("node {node:?}: no kernel for op {op} on {device} (device type {device_type})")]
    NoKernel {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// The device it was placed on.
        device: String,
        /// Its type.
        device_type: String,
    },
    /// A kernel failed, at build time or while computing.
    #[error("node {node:?} ({op}) on {device}: {source}")]
    Kernel {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// Device name.
        device: String,
        /// The kernel's error (boxed to keep `SessionError` small).
        source: Box<KernelError>,
    },
    /// A kernel panicked; the step failed, the session keeps serving.
    #[error("node {node:?} ({op}) on {device} panicked: {message}")]
    Panicked {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// Device name.
        device: String,
        /// The panic message.
        message: String,
    },
    /// A kernel returned outputs that do not match its node.
    #[error("node {node:?} ({op}) on {device}: kernel returned {detail}")]
    BadKernelOutput {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// Device name.
        device: String,
        /// What was wrong.
        detail: String,
    },
    /// A fed tensor's shape does not fit its placeholder's declared shape.
    #[error("feed for placeholder {node:?} has shape {got}, but the placeholder is declared {expected:?}")]
    FeedShapeMismatch {
        /// Placeholder name.
        node: String,
        /// Declared dims (-1: any).
        expected: Vec<i64>,
        /// The fed shape.
        got: Shape,
    },
    /// A fed tensor's dtype differs from the output it replaces.
    #[error("feed for {output:?} has dtype {got}, but that output is {expected}")]
    FeedDTypeMismatch {
        /// `node:index`.
        output: String,
        /// Expected dtype.
        expected: DType,
        /// Fed dtype.
        got: DType,
    },
    /// A node names a resource pool the session does not declare.
    #[error("node {node:?} ({op}) needs resource pool {pool:?}, which the session does not declare; declared pools: {declared:?}")]
    UnknownResourcePool {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// The pool it names.
        pool: String,
        /// The pools the session declares.
        declared: Vec<String>,
    },
    /// A node's declared output cannot fit in its device's memory budget.
    #[error("node {node:?} ({op}) on {device} needs {needed} bytes, but the device's memory budget is {budget} bytes with {live} bytes live and nothing left that could free memory")]
    MemoryBudgetExceeded {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// Device name.
        device: String,
        /// The budget in bytes.
        budget: u64,
        /// The bytes the node declared.
        needed: u64,
        /// Bytes live on the device when it gave up.
        live: u64,
    },
    /// The step was cancelled.
    #[error("step cancelled")]
    Cancelled,
    /// The step passed its deadline.
    #[error("step exceeded its deadline of {0:?}")]
    DeadlineExceeded(std::time::Duration),
    /// The step passed its deadline while waiting, at its end, for a device to finish the
    /// work its kernels queued ([`Device::sync`](crate::device::Device::sync)). The wait
    /// ends at the step's deadline, not at the device's own.
    #[error(
        "step exceeded its deadline of {timeout:?} waiting for device {device} to finish its work"
    )]
    DeviceSyncDeadlineExceeded {
        /// The device waited on.
        device: String,
        /// The step's timeout.
        timeout: std::time::Duration,
    },
    /// The step was cancelled ([`RunOptions::cancel`](crate::session::RunOptions::cancel))
    /// while waiting, at its end, for a device to finish the work its kernels queued
    /// ([`Device::sync`](crate::device::Device::sync)). [`Code::Cancelled`], as
    /// [`SessionError::Cancelled`].
    #[error("step cancelled while waiting for device {device} to finish its work")]
    DeviceSyncCancelled {
        /// The device waited on.
        device: String,
    },
    /// The session was closed ([`Session::close`](crate::session::Session::close), or
    /// dropped by its owner): it runs no more steps. [`Code::FailedPrecondition`] on every
    /// session kind.
    #[error("{}", crate::error::SESSION_CLOSED)]
    Closed,
    /// The session was misconfigured (no devices, bad worker count).
    #[error("invalid session options: {0}")]
    InvalidOptions(String),
    /// The scheduler could not run the step.
    #[error("scheduler: {0}")]
    Scheduler(String),
}

impl SessionError {
    /// The error's kind (see [`Code`]): a bad graph, feed, device or kernel argument is
    /// `InvalidArgument`; a closed session `FailedPrecondition`; a memory budget
    /// `ResourceExhausted`; a panic or a broken kernel `Internal`.
    pub fn code(&self) -> Code {
        match self {
            SessionError::Graph(e) => e.code(),
            SessionError::Kernel { source, .. } => source.code(),
            SessionError::NoMatchingDevice { .. }
            | SessionError::NoKernel { .. }
            | SessionError::FeedShapeMismatch { .. }
            | SessionError::FeedDTypeMismatch { .. }
            | SessionError::UnknownResourcePool { .. }
            | SessionError::InvalidOptions(_) => Code::InvalidArgument,
            SessionError::MemoryBudgetExceeded { .. } => Code::ResourceExhausted,
            SessionError::Closed => Code::FailedPrecondition,
            SessionError::Cancelled | SessionError::DeviceSyncCancelled { .. } => Code::Cancelled,
            SessionError::DeadlineExceeded(_) | SessionError::DeviceSyncDeadlineExceeded { .. } => {
                Code::DeadlineExceeded
            }
            SessionError::Panicked { .. }
            | SessionError::BadKernelOutput { .. }
            | SessionError::Scheduler(_) => Code::Internal,
        }
    }

    /// The kernel's error, when a kernel failed.
    pub fn kernel_error(&self) -> Option<&KernelError> {
        match self {
            SessionError::Kernel { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<SchedulerError> for SessionError {
    fn from(e: SchedulerError) -> Self {
        SessionError::Scheduler(e.to_string())
    }
}
