//! One error model for every session kind: [`Code`], the small set of error kinds every
//! session-level error maps onto (aligned with gRPC's status codes, so a status on the
//! wire carries the same kind), and [`cap_message`], which bounds the text an error
//! carries across a wire.
//!
//! The same mistake gives the same [`Code`] on a local [`Session`](crate::session::Session),
//! an in-process [`MasterSession`](crate::distributed::MasterSession) and a remote session
//! over gRPC: every error type a session returns has a `code()` accessor.
//!
//! | mistake or failure | code |
//! |---|---|
//! | a bad graph, feed, fetch, target, device spec, dtype or shape; a foreign node | `InvalidArgument` |
//! | an unknown session or partition handle | `NotFound` |
//! | a closed session; a step on a session that cannot run it | `FailedPrecondition` |
//! | a memory limit or budget | `ResourceExhausted` |
//! | a task that cannot be reached or is stopping | `Unavailable` |
//! | a step past its deadline | `DeadlineExceeded` |
//! | a step aborted because another task failed | `Aborted` |
//! | a step cancelled by its caller | `Cancelled` |
//! | an op with no kernel for a dtype | `Unimplemented` |
//! | a bug: a panicking kernel, a broken invariant | `Internal` |

use std::borrow::Cow;
use std::fmt;

/// The kind of an error, as gRPC's status codes name them. Every session-level error
/// type (`GraphError`, `SessionError`, `MasterError`, `TransportError`, the transports'
/// and the facade's errors) says which with a `code()` method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The caller asked for something invalid whatever the system's state: a malformed
    /// graph, a feed of the wrong dtype or shape, an unknown fetch, a foreign node.
    InvalidArgument,
    /// Something named does not exist (a session or partition handle).
    NotFound,
    /// The system is not in a state that allows the request (a closed session).
    FailedPrecondition,
    /// A memory limit, budget or size limit was reached.
    ResourceExhausted,
    /// A task could not be reached, or it refuses work while it stops.
    Unavailable,
    /// A deadline passed before the work finished.
    DeadlineExceeded,
    /// The work was aborted because of a failure elsewhere (another task of the step).
    Aborted,
    /// The caller cancelled the work.
    Cancelled,
    /// The operation is not implemented (an op with no kernel for a dtype).
    Unimplemented,
    /// A bug: a panicking kernel, a broken invariant, a malformed answer.
    Internal,
    /// The caller did not prove who it is: a missing or wrong cluster token.
    Unauthenticated,
    /// The caller is known but may not do this (a worker-service call from a peer whose
    /// certificate the cluster CA did not sign).
    PermissionDenied,
}

impl Code {
    /// The code's name as gRPC writes it (`INVALID_ARGUMENT`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::NotFound => "NOT_FOUND",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::Unavailable => "UNAVAILABLE",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::Aborted => "ABORTED",
            Code::Cancelled => "CANCELLED",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::PermissionDenied => "PERMISSION_DENIED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message of a step run on a closed session, the same on every session kind (a
/// local `Session`, a `MasterSession`, a remote session): always
/// [`Code::FailedPrecondition`]. TensorFlow's local session says "Session has been
/// closed." as `CANCELLED`; Magpie keeps `Cancelled` for steps their caller cancelled,
/// and a closed session is a state the caller must not run in: a failed precondition.
pub const SESSION_CLOSED: &str = "session closed: the session was closed and runs no more steps";

/// The most bytes of an error message that cross a wire: longer messages keep their first
/// [`MAX_MESSAGE_BYTES`] bytes and say how many were elided, so that an error echoing a
/// huge name (a 100 MiB node name) still fits in an HTTP/2 header.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `message` cut to at most [`MAX_MESSAGE_BYTES`] bytes (at a character boundary), with
/// `… (N bytes elided)` appended when anything was cut.
///
/// ```
/// use magpie_core::error::{cap_message, MAX_MESSAGE_BYTES};
/// assert_eq!(cap_message("short"), "short");
/// let long = "x".repeat(1 << 20);
/// let capped = cap_message(&long);
/// assert!(capped.len() < MAX_MESSAGE_BYTES + 64);
/// assert!(capped.ends_with("bytes elided)"));
/// ```
pub fn cap_message(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_MESSAGE_BYTES {
        return Cow::Borrowed(message);
    }
    let mut cut = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!(
        "{}… ({} bytes elided)",
        &message[..cut],
        message.len() - cut
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_message_keeps_short_messages_and_cuts_at_a_char_boundary() {
        assert!(matches!(cap_message("abc"), Cow::Borrowed("abc")));
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let capped = cap_message(&long);
        assert!(capped.len() <= MAX_MESSAGE_BYTES + 40, "{}", capped.len());
        let elided = long.len() - capped.find('…').unwrap();
        assert!(
            capped.ends_with(&format!("({elided} bytes elided)")),
            "{capped}"
        );
    }

    #[test]
    fn codes_name_themselves_as_grpc_does() {
        assert_eq!(Code::InvalidArgument.to_string(), "INVALID_ARGUMENT");
        assert_eq!(Code::FailedPrecondition.as_str(), "FAILED_PRECONDITION");
    }
}
