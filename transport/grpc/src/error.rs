//! Errors decoding wire messages.

/// A wire message that does not describe a valid tensor or graph
/// ([`Code::InvalidArgument`](magpie_core::Code)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// A bool tensor holds a byte other than 0 or 1 (a bool is one byte, 0 or 1, as in
    /// TensorFlow; reading any other value as `true` would accept corrupt data silently).
    #[error("bool tensor: byte {index} is {byte}, not 0 or 1")]
    BadBool {
        /// The element's index.
        index: usize,
        /// The byte received.
        byte: u8,
    },
    /// A step timeline that makes no sense (a record that ends before it starts, a task
    /// name that does not parse).
    #[error("timeline: node {node:?}: {reason}")]
    BadTimeline {
        /// The node of the record (empty when the fault is the task's).
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// An attribute with no value set.
    #[error("node {node:?}: attribute {attr:?} has no value")]
    EmptyAttr {
        /// Node name.
        node: String,
        /// Attribute name.
        attr: String,
    },
}

/// Why a gRPC server could not start or a remote session failed. [`GrpcError::code`]
/// gives its kind: for a failed request, the code of the master's status, which is the
/// code an in-process session gives for the same mistake.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
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
    /// A feed, fetch or target is not a node of the session's graph (a handle of another
    /// graph): refused before anything is sent.
    #[error(transparent)]
    Graph(#[from] magpie_core::graph::GraphError),
    /// The session was closed ([`RemoteSession::close`](crate::RemoteSession::close)).
    #[error("{}", magpie_core::error::SESSION_CLOSED)]
    Closed,
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

impl GrpcError {
    /// The error's kind (see [`Code`](magpie_core::Code)).
    pub fn code(&self) -> magpie_core::Code {
        use magpie_core::Code;
        match self {
            GrpcError::Cluster(_) | GrpcError::Target { .. } | GrpcError::Wire(_) => {
                Code::InvalidArgument
            }
            GrpcError::Worker(e) => e.code(),
            GrpcError::Bind { .. } => Code::Unavailable,
            GrpcError::Io { .. } => Code::Internal,
            GrpcError::Status { code, .. } => crate::status::code_from_grpc(*code),
            GrpcError::Graph(e) => e.code(),
            GrpcError::Closed => Code::FailedPrecondition,
            GrpcError::Tls { .. } | GrpcError::Auth { .. } => Code::InvalidArgument,
        }
    }

    /// The error's text without the target and code a failed request's
    /// [`Display`](std::fmt::Display) adds: for [`GrpcError::Status`], the master's own
    /// message, which is the text an in-process session gives for the same mistake.
    pub fn message(&self) -> String {
        match self {
            GrpcError::Status { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}
