//! [`InMemServer`]: a cluster task served in this process, and [`connect`], a session on
//! the master at an `inmem://` target.

use std::sync::Arc;
use std::time::Duration;

use magpie_core::cluster::{ClusterError, ClusterSpec};
use magpie_core::distributed::{
    MasterError, MasterSession, MasterSessionOptions, ServerOptions, TaskServer, WorkerError,
};
use magpie_core::graph::Graph;
use magpie_core::transport::TaskName;

use crate::network::InMemNetwork;
use crate::transport::InMemTransport;

/// Why a server could not start or a target could not be reached.
/// [`InMemError::code`] gives its kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InMemError {
    /// The cluster spec or the task is invalid.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The server's options are invalid.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// Another server holds the address.
    #[error("inmem://{address} is already in use (task {task} cannot start)")]
    AddressInUse {
        /// The address.
        address: String,
        /// The task that tried to start.
        task: String,
    },
    /// A target is not `inmem://<address>` or nothing serves there.
    #[error("cannot connect to {target}: {detail}")]
    Connect {
        /// The target.
        target: String,
        /// Why.
        detail: String,
    },
    /// The master refused the session.
    #[error(transparent)]
    Master(#[from] MasterError),
}

impl InMemError {
    /// The error's kind (see [`Code`](magpie_core::Code)): a target nothing serves is
    /// `Unavailable`, as over gRPC.
    pub fn code(&self) -> magpie_core::Code {
        use magpie_core::Code;
        match self {
            InMemError::Cluster(_) => Code::InvalidArgument,
            InMemError::Worker(e) => e.code(),
            InMemError::AddressInUse { .. } => Code::Unavailable,
            InMemError::Connect { .. } => Code::Unavailable,
            InMemError::Master(e) => e.code(),
        }
    }
}

/// One task of a cluster, served in this process.
#[derive(Debug)]
pub struct InMemServer {
    network: Arc<InMemNetwork>,
    address: String,
    core: Arc<TaskServer>,
}

impl InMemServer {
    /// Starts `/job:<job>/task:<index>` of `cluster` in `network`, under its address.
    pub fn start(
        network: &Arc<InMemNetwork>,
        cluster: &ClusterSpec,
        job: &str,
        index: u32,
        options: &ServerOptions,
    ) -> Result<InMemServer, InMemError> {
        let task = TaskName::new(job, index);
        let address = cluster.address(&task)?.to_string();
        let transport = Arc::new(InMemTransport::new(Arc::clone(network), cluster.clone()));
        let core = Arc::new(TaskServer::new(
            cluster.clone(),
            task.clone(),
            options,
            transport,
        )?);
        if !network.bind(&address, Arc::clone(&core)) {
            return Err(InMemError::AddressInUse {
                address,
                task: task.to_string(),
            });
        }
        Ok(InMemServer {
            network: Arc::clone(network),
            address,
            core,
        })
    }

    /// The task's services.
    pub fn core(&self) -> &Arc<TaskServer> {
        &self.core
    }

    /// The target that reaches this server: `inmem://<address>`.
    pub fn target(&self) -> String {
        format!("inmem://{}", self.address)
    }

    /// Opens a session on this task's master.
    pub fn session(&self, graph: &Graph) -> Result<MasterSession, MasterError> {
        self.core.master().create_session(graph)
    }

    /// Stops the server: refuses new steps, lets running ones finish within
    /// `deadline` (then cancels them), and frees the address. Returns how many partition
    /// steps were cancelled.
    pub fn stop(&self, deadline: Duration) -> usize {
        let cancelled = self.core.stop(deadline);
        self.network.unbind(&self.address, &self.core);
        cancelled
    }

    /// Blocks until the server stops.
    pub fn join(&self) {
        self.core.join()
    }
}

impl Drop for InMemServer {
    fn drop(&mut self) {
        if !self.core.is_stopped() {
            self.stop(Duration::ZERO);
        }
    }
}

/// Opens a session over `graph` on the master at `target` (`inmem://<address>`) in
/// `network`.
pub fn connect(
    network: &Arc<InMemNetwork>,
    target: &str,
    graph: &Graph,
) -> Result<MasterSession, InMemError> {
    connect_with(network, target, graph, MasterSessionOptions::default())
}

/// [`connect`], opening the session with `options` (soft placement).
///
/// # Errors
///
/// As [`connect`]: [`InMemError::Connect`] for a bad target or no server there, the
/// master's error otherwise.
pub fn connect_with(
    network: &Arc<InMemNetwork>,
    target: &str,
    graph: &Graph,
    options: MasterSessionOptions,
) -> Result<MasterSession, InMemError> {
    let address = target
        .strip_prefix("inmem://")
        .ok_or_else(|| InMemError::Connect {
            target: target.to_string(),
            detail: "expected inmem://<host:port>".into(),
        })?;
    let server = network.lookup(address).ok_or_else(|| InMemError::Connect {
        target: target.to_string(),
        detail: "no server is serving there".into(),
    })?;
    Ok(server.master().create_session_with(graph, options)?)
}
