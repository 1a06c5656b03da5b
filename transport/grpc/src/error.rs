//! Errors decoding wire messages.

/// A wire message that does not describe a valid tensor or graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The dtype field is missing or unknown.
    #[error("{what}: unknown or missing dtype {code}")]
    DType {
        /// What was being decoded.
        what: String,
        /// The numeric code received.
        code: i32,
    },
    /// A tensor's byte length does not match its dtype and shape.
    #[error("tensor of dtype {dtype} and shape {dims:?} needs {expected} bytes, got {got}")]
    ContentLength {
        /// The dtype.
        dtype: String,
        /// The dims.
        dims: Vec<u64>,
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// A dimension too large for this machine.
    #[error("tensor dims {0:?} are too large")]
    TooLarge(Vec<u64>),
    /// A tensor in a device's memory cannot be sent as is.
    #[error("tensor is not in host memory: {0}")]
    NotOnHost(String),
    /// An attribute with no value set.
    #[error("node {node:?}: attribute {attr:?} has no value")]
    EmptyAttr {
        /// Node name.
        node: String,
        /// Attribute name.
        attr: String,
    },
}

/// Why a gRPC server could not start or a remote session failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrpcError {
    /// The cluster spec or the task is invalid.
    #[error(transparent)]
    Cluster(#[from] magpie_core::cluster::ClusterError),
    /// The server's options are invalid.
    #[error(transparent)]
    Worker(#[from] magpie_core::distributed::WorkerError),
    /// The task's address cannot be bound.
    #[error("task {task} cannot listen on {address}: {detail}")]
    Bind {
        /// The address.
        address: String,
        /// The task.
        task: String,
        /// The OS's error.
        detail: String,
    },
    /// An I/O failure.
    #[error("{what}: {detail}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        detail: String,
    },
    /// A target is not `grpc://host:port`.
    #[error("bad target {target:?}: {detail}")]
    Target {
        /// The target.
        target: String,
        /// Why.
        detail: String,
    },
    /// A request to the master failed.
    #[error("{target}: {code:?}: {message}")]
    Status {
        /// The master's target.
        target: String,
        /// The gRPC code.
        code: tonic::Code,
        /// The message (names the task, node or output involved).
        message: String,
    },
    /// A tensor or graph could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A TLS certificate, key or CA is unusable (the file or setting is named).
    #[error("{what}: {detail}")]
    Tls {
        /// The file or setting.
        what: String,
        /// Why.
        detail: String,
    },
    /// The cluster token is unusable (the file is named; the token never is).
    #[error("{what}: {detail}")]
    Auth {
        /// The file or setting.
        what: String,
        /// Why.
        detail: String,
    },
}
