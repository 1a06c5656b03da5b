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
