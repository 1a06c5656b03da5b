//! One way to open a session, whatever the target: [`ClientSession::connect`] takes
//! TensorFlow's session target string and returns a session that runs steps the same way
//! on each.
//!
//! | target | session |
//! |---|---|
//! | `""` or `"local"` | a local [`Session`] on this process's devices ([`local_options`]) |
//! | `"inmem://host:port"` | a session on the master of an in-process server of the global [`InMemNetwork`] |
//! | `"grpc://host:port"` | a [`RemoteSession`] on the master of a server reached over gRPC |
//! | `"grpcs://host:port"` | the same over TLS, the server verified against a CA |
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
//!
//! For gRPC targets, settings the [`GrpcOptions`] leave unset come from the environment:
//! the cluster token from the file named by [`AUTH_TOKEN_FILE_ENV`]
//! (`MAGPIE_AUTH_TOKEN_FILE`), and for `grpcs://` the CA from the file named by
//! [`TLS_CA_ENV`] (`MAGPIE_TLS_CA`).

use magpie_core::distributed::{MasterError, MasterSession, MasterSessionOptions};
use magpie_core::error::Code;
use magpie_core::graph::{Graph, NodeId, Output};
use magpie_core::session::{Session, SessionError};
use magpie_core::tensor::Tensor;
use magpie_grpc::{AuthToken, GrpcError, GrpcOptions, RemoteSession, TlsOptions};
use magpie_inmem::{InMemError, InMemNetwork};

use crate::local_options;

/// The environment variable naming the cluster token's file, read by
/// [`ClientSession::connect`] for gRPC targets when no token is given.
pub const AUTH_TOKEN_FILE_ENV: &str = "MAGPIE_AUTH_TOKEN_FILE";

/// The environment variable naming the CA certificate (PEM) that verifies `grpcs://`
/// servers, read by [`ClientSession::connect`] when no TLS options are given (and by
/// `magpie server` to verify the other tasks when no `--tls-ca` is given).
pub const TLS_CA_ENV: &str = "MAGPIE_TLS_CA";

/// Why a [`ClientSession`] could not be opened or could not run a step. Whatever the
/// session kind, [`ClientError::code`] says what kind of error it is and
/// [`ClientError::message`] what went wrong, naming the client's nodes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The target names no scheme Magpie knows.
    #[error(
        "bad session target {target:?}: expected \"\" (local), \"local\", \
         \"inmem://host:port\", \"grpc://host:port\" or \"grpcs://host:port\""
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
    /// A file named by an environment variable is unusable.
    #[error("{var}: {source}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What was wrong with the file it names (the file is named, a token never is).
        #[source]
        source: GrpcError,
    },
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
            ClientError::Env { .. } => Code::InvalidArgument,
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
/// | `"grpcs://host:port"` | the same over TLS |
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
        ClientSession::connect_with(target, graph, GrpcOptions::default())
    }

    /// [`connect`](Self::connect) with explicit gRPC options (deadlines, TLS, the cluster
    /// token) for `grpc://` and `grpcs://` targets; other targets ignore them. A token or
    /// (for `grpcs://`) TLS options left unset come from [`AUTH_TOKEN_FILE_ENV`] and
    /// [`TLS_CA_ENV`].
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); [`ClientError::Env`] when a file an environment
    /// variable names is unreadable or invalid.
    pub fn connect_with(
        target: &str,
        graph: &Graph,
        options: GrpcOptions,
    ) -> Result<ClientSession, ClientError> {
        ClientSession::connect_session(target, graph, options, MasterSessionOptions::default())
    }

    /// [`connect_with`](Self::connect_with), opening the session with `session`'s
    /// options on every kind of target: with
    /// [`allow_soft_placement`](MasterSessionOptions::allow_soft_placement), a node pinned
    /// to a device the session lacks (or whose devices have no kernel for its op) runs
    /// where it can instead of failing the step — a local session sets
    /// [`SessionOptions::allow_soft_placement`](magpie_core::session::SessionOptions),
    /// a master session (in-process or over gRPC) gets the option when it is opened.
    ///
    /// # Errors
    ///
    /// As [`connect_with`](Self::connect_with).
    ///
    /// # Examples
    ///
    /// ```
    /// use magpie::graph::Graph;
    /// use magpie::grpc::GrpcOptions;
    /// use magpie::tensor::Tensor;
    /// use magpie::{ClientSession, MasterSessionOptions};
    ///
    /// // Pinned to a device this process does not have.
    /// let g = Graph::new();
    /// let a = g.device("/device:GPU:7", |g| g.constant(Tensor::scalar(2.0f32))).unwrap();
    /// let soft = MasterSessionOptions::default().allow_soft_placement(true);
    /// let session = ClientSession::connect_session("local", &g, GrpcOptions::default(), soft)
    ///     .unwrap();
    /// assert_eq!(session.run(&[], &[a], &[]).unwrap()[0].scalar_value::<f32>().unwrap(), 2.0);
    /// ```
    pub fn connect_session(
        target: &str,
        graph: &Graph,
        options: GrpcOptions,
        session: MasterSessionOptions,
    ) -> Result<ClientSession, ClientError> {
        match target {
            "" | "local" => {
                let local = local_options().allow_soft_placement(session.allow_soft_placement);
                Ok(ClientSession::Local(Session::new(graph, local)?))
            }
            t if t.starts_with("inmem://") => Ok(ClientSession::InMem(magpie_inmem::connect_with(
                &InMemNetwork::global(),
                t,
                graph,
                session,
            )?)),
            t if t.starts_with("grpc://") || t.starts_with("grpcs://") => {
                let options = options_from_env(t, options, |v| std::env::var_os(v))?;
                Ok(ClientSession::Grpc(Box::new(magpie_grpc::connect_session(
                    t, graph, options, session,
                )?)))
            }
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

    /// [`ClientSession::run`] without blocking: a future any executor may poll, holding
    /// no thread while the step runs (on the local pool, on the cluster's tasks, or behind
    /// a gRPC request). **Dropping the future cancels the step**: a local step stops
    /// starting nodes, a master aborts the step on every task, a gRPC request is reset
    /// (and its master aborts the step).
    ///
    /// # Errors
    ///
    /// As for [`ClientSession::run`]: the same mistake gives the same error on both.
    ///
    /// # Examples
    ///
    /// ```
    /// use magpie::graph::Graph;
    /// use magpie::tensor::Tensor;
    /// use magpie::ClientSession;
    ///
    /// let g = Graph::new();
    /// let a = g.constant(Tensor::scalar(1.5f32)).unwrap();
    /// let b = g.add(a, a).unwrap();
    /// let session = ClientSession::connect("local", &g).unwrap();
    /// let out = futures::executor::block_on(session.run_async(&[], &[b], &[])).unwrap();
    /// assert_eq!(out[0].scalar_value::<f32>().unwrap(), 3.0);
    /// ```
    pub async fn run_async(
        &self,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<Vec<Tensor>, ClientError> {
        Ok(match self {
            ClientSession::Local(s) => s.run_async(feeds, fetches, targets).await?,
            ClientSession::InMem(s) => s.run_async(feeds, fetches, targets).await?,
            ClientSession::Grpc(s) => s.run_async(feeds, fetches, targets).await?,
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

/// `options` with what they leave unset taken from the environment (`lookup`): the token
/// from [`AUTH_TOKEN_FILE_ENV`]'s file; for `grpcs://`, the CA from [`TLS_CA_ENV`]'s.
fn options_from_env(
    target: &str,
    mut options: GrpcOptions,
    lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<GrpcOptions, ClientError> {
    let set = |var: &str| lookup(var).filter(|v| !v.is_empty());
    if options.auth_token.is_none() {
        if let Some(file) = set(AUTH_TOKEN_FILE_ENV) {
            let token = AuthToken::from_file(&file).map_err(|source| ClientError::Env {
                var: AUTH_TOKEN_FILE_ENV,
                source,
            })?;
            options.auth_token = Some(token);
        }
    }
    if target.starts_with("grpcs://") && options.tls.is_none() {
        if let Some(file) = set(TLS_CA_ENV) {
            let tls = TlsOptions::new()
                .with_ca_file(&file)
                .map_err(|source| ClientError::Env {
                    var: TLS_CA_ENV,
                    source,
                })?;
            options.tls = Some(tls);
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_fills_in_what_the_options_leave_unset() {
        let dir = std::env::temp_dir().join(format!("magpie-connect-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "env-token-0123456789abcdef\n").unwrap();
        let env = |var: &str| match var {
            AUTH_TOKEN_FILE_ENV => Some(token.clone().into_os_string()),
            TLS_CA_ENV => Some(dir.join("no-such-ca.pem").into_os_string()),
            _ => None,
        };
        // grpc://: the token comes from the file; the CA is not looked at.
        let o = options_from_env("grpc://h:1", GrpcOptions::default(), env).unwrap();
        assert!(o.auth_token.is_some() && o.tls.is_none());
        // An explicit token wins over the environment.
        let explicit = GrpcOptions {
            auth_token: Some(AuthToken::new("explicit-token-0123456789").unwrap()),
            ..GrpcOptions::default()
        };
        assert!(options_from_env("grpc://h:1", explicit, |_| None)
            .unwrap()
            .auth_token
            .is_some());
        // grpcs://: a CA file that is not there is named, with the variable.
        let e = options_from_env("grpcs://h:1", GrpcOptions::default(), env).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(TLS_CA_ENV) && msg.contains("no-such-ca.pem"),
            "{msg}"
        );
        // A token file that is too short is named; its content is not.
        std::fs::write(&token, "tiny").unwrap();
        let msg = options_from_env("grpc://h:1", GrpcOptions::default(), env)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(AUTH_TOKEN_FILE_ENV) && !msg.contains("tiny"),
            "{msg}"
        );
        // Unset or empty variables change nothing.
        let o = options_from_env("grpcs://h:1", GrpcOptions::default(), |_| Some("".into()));
        assert!(o.unwrap().auth_token.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
