//! Errors across the wire: core's [`TransportError`] and [`MasterError`] as gRPC
//! statuses on the serving side, and statuses back into [`TransportError`]s (naming the
//! task the request was for) on the calling side.
//!
//! | TransportError      | gRPC code            |
//! |---------------------|----------------------|
//! | `Unreachable`       | `UNAVAILABLE`        |
//! | `Refused`           | `FAILED_PRECONDITION`|
//! | `UnknownPartition`  | `NOT_FOUND`          |
//! | `Remote`            | `INTERNAL`           |
//! | `Cancelled`         | `ABORTED`            |
//! | `DeadlineExceeded`  | `DEADLINE_EXCEEDED`  |

use magpie_core::distributed::{MasterError, WorkerError};
use magpie_core::transport::{TaskName, TransportError};
use tonic::{Code, Status};

use crate::error::WireError;

/// A transport error as a status (the message is the error's text, naming the task).
pub(crate) fn transport_to_status(e: &TransportError) -> Status {
    let code = match e {
        TransportError::Unreachable { .. } => Code::Unavailable,
        TransportError::Refused { .. } => Code::FailedPrecondition,
        TransportError::UnknownPartition { .. } => Code::NotFound,
        TransportError::Remote { .. } => Code::Internal,
        TransportError::Cancelled { .. } => Code::Aborted,
        TransportError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
    };
    let detail = match e {
        TransportError::Remote { detail, .. } => detail.clone(),
        other => other.to_string(),
    };
    Status::new(code, detail)
}

/// A worker's error as a status.
pub(crate) fn worker_to_status(e: WorkerError) -> Status {
    transport_to_status(&e.into_transport())
}

/// A master's error as a status: bad requests are `INVALID_ARGUMENT`, failed steps keep
/// the code of the task's failure.
pub(crate) fn master_to_status(e: &MasterError) -> Status {
    let code = match e {
        MasterError::Cluster(_)
        | MasterError::Graph(_)
        | MasterError::NoMatchingDevice { .. }
        | MasterError::NoKernel { .. }
        | MasterError::BadColocation { .. }
        | MasterError::BadFeed { .. } => Code::InvalidArgument,
        MasterError::Step { source, .. } | MasterError::Transport(source) => {
            transport_to_status(source).code()
        }
        MasterError::Stopping { .. } => Code::Unavailable,
        MasterError::Cancelled { .. } => Code::Cancelled,
    };
    Status::new(code, e.to_string())
}

/// A malformed message as a status.
pub(crate) fn wire_to_status(e: &WireError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// What the calling side knows of a request, to rebuild a precise error.
#[derive(Debug, Default)]
pub(crate) struct CallContext {
    pub(crate) handle: Option<String>,
    pub(crate) step_id: Option<u64>,
}

/// A status back into a transport error naming `task`.
pub(crate) fn status_to_transport(task: &TaskName, s: &Status, cx: &CallContext) -> TransportError {
    let task_s = task.to_string();
    match s.code() {
        Code::NotFound if cx.handle.is_some() => TransportError::UnknownPartition {
            task: task_s,
            handle: cx.handle.clone().unwrap_or_default(),
        },
        Code::Aborted if cx.step_id.is_some() => TransportError::Cancelled {
            task: task_s,
            step_id: cx.step_id.unwrap_or_default(),
        },
        Code::DeadlineExceeded => TransportError::DeadlineExceeded { task: task_s },
        Code::FailedPrecondition => TransportError::Refused {
            task: task_s,
            detail: s.message().to_string(),
        },
        // Connection failures surface as UNAVAILABLE, UNKNOWN or CANCELLED from tonic.
        Code::Unavailable | Code::Unknown | Code::Cancelled => TransportError::Unreachable {
            task: task_s,
            detail: status_text(s),
        },
        _ => TransportError::Remote {
            task: task_s,
            detail: s.message().to_string(),
        },
    }
}

fn status_text(s: &Status) -> String {
    let mut text = format!("{:?}: {}", s.code(), s.message());
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        text.push_str(&format!(": {e}"));
        src = e.source();
    }
    text
}
