//! One way to open a session, whatever the target: [`ClientSession::connect`] takes
//! TensorFlow's session target string and returns a session that runs steps the same way
//! on each.
//!
//! | target | session |
//! |---|---|
//! | `""` or `"local"` | a local [`Session`] on this process's devices ([`local_options`]) |
//! | `"inmem://host:port"` | a session on the master of an in-process server of the global [`InMemNetwork`] |
//! | `"grpc://host:port"` | a [`RemoteSession`] on the master of a server reached over gRPC |
//!
//! A target with any other scheme fails with [`ClientError::Target`] naming it.
//!
//! # One error model
//!
//! The same mistake gives the same [`ClientError::code`] on every kind of session (a
//! [`Code`] aligned with gRPC's status codes), and a [`ClientError::message`] naming the
//! same nodes of the client's graph. A session closed with [`ClientSession::close`] (or
//! by dropping it, which also releases what it holds on the master and workers) fails
//! every later run with `FailedPrecondition` and the message
//! [`SESSION_CLOSED`](magpie_core::error::SESSION_CLOSED).

use magpie_core::distributed::{MasterError, MasterSession};
use magpie_core::error::Code;
use magpie_core::graph::{Graph, NodeId, Output};
use magpie_core::session::{Session, SessionError};
use magpie_core::tensor::Tensor;
use magpie_grpc::{GrpcError, RemoteSession};
use magpie_inmem::{InMemError, InMemNetwork};

use crate::local_options;

/// Why a [`ClientSession`] could not be opened or could not run a step. Whatever the
/// session kind, [`ClientError::code`] says what kind of error it is and
/// [`ClientError::message`] what went wrong, naming the client's nodes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The target names no scheme Magpie knows.
    #[error(
        "bad session target {target:?}: expected \"\" (local), \"local\", \
         \"inmem://host:port\" or \"grpc://host:port\""
    )]
    Target {
        /// The target given.
        target: String,
    },
    /// A local session failed.
    #[error(transparent)]
    Local(#[from] SessionError),
    /// An in-process master failed.
    #[error(transparent)]
    Master(#[from] MasterError),
    /// The in-process target could not be reached.
    #[error(transparent)]
    InMem(#[from] InMemError),
    /// The gRPC master failed or could not be reached.
    #[error(transparent)]
    Grpc(#[from] GrpcError),
}

impl ClientError {
    /// The error's kind, the same on every session kind for the same mistake.
    pub fn code(&self) -> Code {
        match self {
            ClientError::Target { .. } => Code::InvalidArgument,
            ClientError::Local(e) => e.code(),
            ClientError::Master(e) => e.code(),
            ClientError::InMem(e) => e.code(),
            ClientError::Grpc(e) => e.code(),
        }
    }

    /// What went wrong, without decoration by the session kind (a gRPC status's target
    /// and code): for the same mistake, the same nodes are named on every kind.
    pub fn message(&self) -> String {
        match self {
            ClientError::Grpc(e) => e.message(),
            other => other.to_string(),
        }
    }
}

/// A session on any target: local, an in-process master, or a master over gRPC.
///
/// | target | session |
/// |---|---|
/// | `""` or `"local"` | a local [`Session`] on this process's devices ([`local_options`]) |
/// | `"inmem://host:port"` | a session on the master of an in-process server of the global [`InMemNetwork`] |
/// | `"grpc://host:port"` | a [`RemoteSession`] on the master of a server reached over gRPC |
#[derive(Debug)]
pub enum ClientSession {
    /// A session on this process's devices.
    Local(Session),
    /// A session on the master of an in-process server.
    InMem(MasterSession),
    /// A session on a master reached over gRPC.
    Grpc(Box<RemoteSession>),
}

impl ClientSession {
    /// Opens a session over `graph` on `target` (see the table of [`ClientSession`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::Target`] for an unknown scheme; otherwise the error of the session
    /// kind the target names (no server at the address, a graph the master rejects, …).
    pub fn connect(target: &str, graph: &Graph) -> Result<ClientSession, ClientError> {
        match target {
            "" | "local" => Ok(ClientSession::Local(Session::new(graph, local_options())?)),
            t if t.starts_with("inmem://") => Ok(ClientSession::InMem(magpie_inmem::connect(
                &InMemNetwork::global(),
                t,
                graph,
            )?)),
            t if t.starts_with("grpc://") => Ok(ClientSession::Grpc(Box::new(
                magpie_grpc::connect(t, graph)?,
            ))),
            _ => Err(ClientError::Target {
                target: target.to_string(),
            }),
        }
    }

    /// Runs one step: feeds replace the outputs they name, the fetches come back in
    /// order, every target runs.
    ///
    /// # Errors
    ///
    /// The step's error, typed by the session kind; [`ClientError::code`] and
    /// [`ClientError::message`] are the same on every kind for the same mistake (a bad
    /// feed, fetch or target — a handle of another graph included —, a kernel's failure,
    /// a closed session).
    pub fn run(
        &self,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<Vec<Tensor>, ClientError> {
        Ok(match self {
            ClientSession::Local(s) => s.run(feeds, fetches, targets)?,
            ClientSession::InMem(s) => s.run(feeds, fetches, targets)?,
            ClientSession::Grpc(s) => s.run(feeds, fetches, targets)?,
        })
    }

    /// Closes the session: it releases what it holds (its plans; on a master, its
    /// partitions on every task), and every later [`run`](ClientSession::run) fails with
    /// [`Code::FailedPrecondition`] ("session closed"). Closing twice is harmless;
    /// dropping the session closes it too.
    ///
    /// # Errors
    ///
    /// Over gRPC, the master's error when it cannot be reached (the session is closed on
    /// this side all the same; the master drops it once it has been idle long enough).
    pub fn close(&self) -> Result<(), ClientError> {
        match self {
            ClientSession::Local(s) => s.close(),
            ClientSession::InMem(s) => s.close(),
            ClientSession::Grpc(s) => s.close()?,
        }
        Ok(())
    }

    /// The devices the session can place nodes on, by full name; the first is the
    /// default device for unpinned nodes.
    pub fn devices(&self) -> Vec<String> {
        match self {
            ClientSession::Local(s) => s.devices().iter().map(|d| d.name().to_string()).collect(),
            ClientSession::InMem(s) => s.devices().iter().map(|d| d.name.to_string()).collect(),
            ClientSession::Grpc(s) => s.devices().to_vec(),
        }
    }
}
