//! Errors across the wire: core's [`TransportError`] and [`MasterError`] as gRPC
//! statuses on the serving side, and statuses back into [`TransportError`]s (naming the
//! task the request was for) on the calling side. Every status carries the code of the
//! error's [`magpie_core::Code`] (a kernel's invalid argument stays `INVALID_ARGUMENT`),
//! and its message is capped at [`MAX_MESSAGE_BYTES`](magpie_core::error::MAX_MESSAGE_BYTES)
//! (the rest elided), so an error echoing a huge name still fits in HTTP/2's headers.
//!
//! Between tasks (the worker service), transport errors keep their variant:
//!
//! | TransportError      | gRPC code            |
//! |---------------------|----------------------|
//! | `Unreachable`       | `UNAVAILABLE`        |
//! | `Refused`           | `FAILED_PRECONDITION`|
//! | `UnknownPartition`  | `NOT_FOUND`          |
//! | `Remote`            | the task's own code  |
//! | `Cancelled`         | `ABORTED`            |
//! | `DeadlineExceeded`  | `DEADLINE_EXCEEDED`  |
//! | `NoAnswer`          | `DEADLINE_EXCEEDED`  |
//! | `LimitExceeded`     | `RESOURCE_EXHAUSTED` |
//!
//! On the calling side, `DEADLINE_EXCEEDED` from a task is that task's own deadline
//! (`DeadlineExceeded`); `NoAnswer` is made by the caller, when the task did not answer.

use magpie_core::distributed::{MasterError, WorkerError};
use magpie_core::error::cap_message;
use magpie_core::transport::{TaskName, TransportError};
use tonic::{Code, Status};

use crate::error::WireError;

/// A magpie error kind as a gRPC code.
pub(crate) fn code_to_grpc(code: magpie_core::Code) -> Code {
    use magpie_core::Code as C;
    match code {
        C::InvalidArgument => Code::InvalidArgument,
        C::NotFound => Code::NotFound,
        C::FailedPrecondition => Code::FailedPrecondition,
        C::ResourceExhausted => Code::ResourceExhausted,
        C::Unavailable => Code::Unavailable,
        C::DeadlineExceeded => Code::DeadlineExceeded,
        C::Aborted => Code::Aborted,
        C::Cancelled => Code::Cancelled,
        C::Unimplemented => Code::Unimplemented,
        C::Unauthenticated => Code::Unauthenticated,
        C::PermissionDenied => Code::PermissionDenied,
        _ => Code::Internal,
    }
}

/// A gRPC code as a magpie error kind. Codes magpie does not use map onto the nearest:
/// `UNKNOWN` (how tonic reports a broken connection) is `Unavailable`; `ALREADY_EXISTS`
/// and `OUT_OF_RANGE` are `InvalidArgument`; `DATA_LOSS` (and `OK`, which no error has) is `Internal`.
pub(crate) fn code_from_grpc(code: Code) -> magpie_core::Code {
    use magpie_core::Code as C;
    match code {
        Code::InvalidArgument | Code::AlreadyExists | Code::OutOfRange => C::InvalidArgument,
        Code::NotFound => C::NotFound,
        Code::FailedPrecondition => C::FailedPrecondition,
        Code::PermissionDenied => C::PermissionDenied,
        Code::Unauthenticated => C::Unauthenticated,
        Code::ResourceExhausted => C::ResourceExhausted,
        Code::Unavailable | Code::Unknown => C::Unavailable,
        Code::DeadlineExceeded => C::DeadlineExceeded,
        Code::Aborted => C::Aborted,
        Code::Cancelled => C::Cancelled,
        Code::Unimplemented => C::Unimplemented,
        Code::Ok | Code::Internal | Code::DataLoss => C::Internal,
    }
}

/// A status whose message is capped (see the module docs).
pub(crate) fn status(code: Code, message: impl AsRef<str>) -> Status {
    Status::new(code, cap_message(message.as_ref()))
}

/// A transport error as a status (the message is the error's text, naming the task).
pub(crate) fn transport_to_status(e: &TransportError) -> Status {
    let code = match e {
        // A stopping task: UNAVAILABLE (try again elsewhere or later), so that
        // FAILED_PRECONDITION keeps its one meaning on the wire, a kernel's or a session's
        // (an uninitialised variable, a closed session).
        TransportError::Refused { .. } => Code::Unavailable,
        TransportError::Remote { code, .. } => code_to_grpc(*code),
        // Unreachable: UNAVAILABLE; UnknownPartition: NOT_FOUND; Cancelled: ABORTED;
        // DeadlineExceeded: DEADLINE_EXCEEDED.
        other => code_to_grpc(other.code()),
    };
    match e {
        TransportError::Remote { detail, .. } => status(code, detail),
        other => status(code, other.to_string()),
    }
}

/// A worker's error as a status.
pub(crate) fn worker_to_status(e: WorkerError) -> Status {
    transport_to_status(&e.into_transport())
}

/// A master's error as a status: the code of [`MasterError::code`], the error's text as
/// its message (the same text an in-process session gives).
pub(crate) fn master_to_status(e: &MasterError) -> Status {
    status(code_to_grpc(e.code()), e.to_string())
}

/// A malformed message as a status.
pub(crate) fn wire_to_status(e: &WireError) -> Status {
    status(Code::InvalidArgument, e.to_string())
}

/// What the calling side knows of a request, to rebuild a precise error.
#[derive(Debug, Default)]
pub(crate) struct CallContext {
    pub(crate) handle: Option<String>,
    pub(crate) step_id: Option<magpie_core::StepId>,
}

/// A status back into a transport error naming `task`.
pub(crate) fn status_to_transport(task: &TaskName, s: &Status, cx: &CallContext) -> TransportError {
    let task_s = task.to_string();
    match s.code() {
        Code::NotFound if cx.handle.is_some() => TransportError::UnknownPartition {
            task: task_s,
            handle: cx.handle.clone().unwrap_or_default(),
        },
        // A plain abort's status carries exactly the text of `Cancelled`; any other
        // ABORTED status of a step (one aborted by a peer that said why:
        // `WorkerError::AbortedBy`) keeps its message, which names the cause.
        Code::Aborted if cx.step_id.is_some() => {
            let cancelled = TransportError::Cancelled {
                task: task_s,
                step_id: cx.step_id.unwrap_or_default(),
            };
            if s.message() == cancelled.to_string() {
                cancelled
            } else {
                TransportError::Remote {
                    task: task.to_string(),
                    detail: s.message().to_string(),
                    code: code_from_grpc(Code::Aborted),
                }
            }
        }
        Code::DeadlineExceeded => TransportError::DeadlineExceeded { task: task_s },
        // Connection failures surface as UNAVAILABLE, UNKNOWN or CANCELLED from tonic.
        Code::Unavailable | Code::Unknown | Code::Cancelled => TransportError::Unreachable {
            task: task_s,
            detail: status_text(s),
        },
        code => TransportError::Remote {
            task: task_s,
            detail: s.message().to_string(),
            code: code_from_grpc(code),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernels_invalid_argument_crosses_the_wire_as_invalid_argument() {
        let task = TaskName::new("w", 0);
        let e = TransportError::Remote {
            task: task.to_string(),
            detail: "node \"m\" (MatMul): invalid argument: shapes".into(),
            code: magpie_core::Code::InvalidArgument,
        };
        let s = transport_to_status(&e);
        assert_eq!(s.code(), Code::InvalidArgument);
        let back = status_to_transport(&task, &s, &CallContext::default());
        assert_eq!(back.code(), magpie_core::Code::InvalidArgument);
        assert!(back.to_string().contains("node \"m\""), "{back}");
    }

    #[test]
    fn a_kernels_failed_precondition_is_not_taken_for_a_stopping_task() {
        let task = TaskName::new("ps", 0);
        let kernel = TransportError::Remote {
            task: task.to_string(),
            detail: "node \"v/read\": variable \"v\" is not initialized".into(),
            code: magpie_core::Code::FailedPrecondition,
        };
        let back = status_to_transport(
            &task,
            &transport_to_status(&kernel),
            &CallContext::default(),
        );
        assert_eq!(back.code(), magpie_core::Code::FailedPrecondition, "{back}");
        assert!(back.to_string().contains("not initialized"), "{back}");

        let stopping = TransportError::Refused {
            task: task.to_string(),
            detail: "stopping".into(),
        };
        let s = transport_to_status(&stopping);
        assert_eq!(s.code(), Code::Unavailable);
        let back = status_to_transport(&task, &s, &CallContext::default());
        assert_eq!(back.code(), magpie_core::Code::Unavailable, "{back}");
    }

    #[test]
    fn a_plain_abort_stays_cancelled_and_a_reasoned_one_keeps_its_reason() {
        let task = TaskName::new("w", 0);
        let step_id = magpie_core::StepId::from(9);
        let cx = CallContext {
            handle: None,
            step_id: Some(step_id),
        };
        let plain = TransportError::Cancelled {
            task: task.to_string(),
            step_id,
        };
        let back = status_to_transport(&task, &transport_to_status(&plain), &cx);
        assert_eq!(back, plain);

        let reasoned = magpie_core::distributed::WorkerError::AbortedBy {
            task: task.to_string(),
            step_id,
            code: magpie_core::Code::Aborted,
            reason: "task /job:m/task:0 could not send edge \"e\"".into(),
        };
        let s = worker_to_status(reasoned);
        assert_eq!(s.code(), Code::Aborted);
        let back = status_to_transport(&task, &s, &cx);
        assert!(matches!(back, TransportError::Remote { .. }), "{back:?}");
        assert_eq!(back.code(), magpie_core::Code::Aborted);
        assert!(back.to_string().contains("could not send edge"), "{back}");
    }

    #[test]
    fn every_code_round_trips_through_grpc() {
        use magpie_core::Code as C;
        for c in [
            C::InvalidArgument,
            C::NotFound,
            C::FailedPrecondition,
            C::ResourceExhausted,
            C::Unavailable,
            C::DeadlineExceeded,
            C::Aborted,
            C::Cancelled,
            C::Unimplemented,
            C::Internal,
        ] {
            assert_eq!(code_from_grpc(code_to_grpc(c)), c);
        }
    }

    #[test]
    fn huge_messages_are_capped() {
        let s = status(Code::InvalidArgument, "n".repeat(100 << 20));
        assert!(s.message().len() < 8 << 10, "{}", s.message().len());
        assert!(s.message().ends_with("bytes elided)"));
    }
}
