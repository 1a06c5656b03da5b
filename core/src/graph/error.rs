//! Errors from building, importing and validating a graph. Every variant names the node
//! (and op, dtype or spec) involved.

use crate::tensor::DType;

use super::attr::AttrError;
use super::device_spec::DeviceSpecError;
use super::node::GraphId;
use super::shape_inference::ShapeError;
use crate::error::Code;

/// Why an op definition rejected a node's inputs or attributes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OpDefError {
    /// An input has a dtype the op does not accept.
    #[error("input {input} has dtype {got}, expected {expected}")]
    DType {
        /// Input position.
        input: usize,
        /// What the op accepts there, in words.
        expected: String,
        /// The dtype found.
        got: DType,
    },
    /// An attribute is missing or mistyped.
    #[error(transparent)]
    Attr(#[from] AttrError),
    /// The inputs' known shapes (or the shape attributes) cannot work for the op; the
    /// message names the shapes.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// Any other reason.
    #[error("{0}")]
    Invalid(String),
}

/// Errors of the graph layer. All are [`Code::InvalidArgument`](crate::error::Code).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// No op definition has this name.
    #[error("node {node:?}: unknown op {op:?}")]
    UnknownOp {
        /// Node name.
        node: String,
        /// The op asked for.
        op: String,
    },
    /// The node has the wrong number of data inputs.
    #[error("node {node:?} ({op}): expected {expected} inputs, got {got}")]
    Arity {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// The arity the op declares, in words.
        expected: String,
        /// Inputs given.
        got: usize,
    },
    /// An input's dtype does not fit the op.
    #[error(
        "node {node:?} ({op}): dtype mismatch: input {input} has dtype {got}, expected {expected}"
    )]
    DTypeMismatch {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// Input position.
        input: usize,
        /// What the op accepts, in words.
        expected: String,
        /// The dtype found.
        got: DType,
    },
    /// The op definition rejected the node for another reason: an attribute, or shapes
    /// known at construction that cannot work ([`OpDefError::Shape`]).
    #[error("node {node:?} ({op}): {reason}")]
    InvalidNode {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// The reason.
        reason: OpDefError,
    },
    /// Another node already has this name.
    #[error("duplicate node name {0:?}")]
    DuplicateName(String),
    /// Data and control edges form a cycle through these nodes.
    #[error("cycle in graph through nodes {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A name or id that refers to no node of this graph.
    #[error("{role} refers to node {name:?}, which does not exist")]
    NodeNotFound {
        /// What referred to it (`fetch`, `feed`, `target`, `input 1 of node "z"`).
        role: String,
        /// The missing name (or `#id` for an id).
        name: String,
    },
    /// A node handle of another graph was used with this one (as an input, a control
    /// input, a feed, a fetch or a target).
    #[error("{role} refers to node {node:?} of another graph ({graph}), not of the graph it is used with ({expected})")]
    ForeignNode {
        /// What used it (`fetch`, `input 0 of node "y"`).
        role: String,
        /// The node's name in its own graph (`#index` if that graph is gone).
        node: String,
        /// The graph the handle belongs to.
        graph: GraphId,
        /// The graph it was used with.
        expected: GraphId,
    },
    /// An output index past the node's outputs.
    #[error("{role}: node {node:?} ({op}) has {num_outputs} outputs, no output {index}")]
    OutputOutOfRange {
        /// What referred to it.
        role: String,
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// The index asked for.
        index: u32,
        /// Outputs the node has.
        num_outputs: usize,
    },
    /// A malformed device spec on a node or in a device scope.
    #[error("node {node:?}: {source}")]
    BadDeviceSpec {
        /// Node name (or the scope's name).
        node: String,
        /// The parse error.
        source: DeviceSpecError,
    },
    /// A placeholder that the step needs was not fed.
    #[error("placeholder {node:?} ({dtype}) must be fed: the step needs it and no feed gives it a value")]
    PlaceholderNotFed {
        /// Node name.
        node: String,
        /// Its dtype.
        dtype: DType,
    },
    /// A fed tensor's dtype differs from the output it replaces.
    #[error("feed for {output:?} has dtype {got}, but that output is {expected}")]
    FeedDTypeMismatch {
        /// The fed output, `node:index`.
        output: String,
        /// The output's dtype.
        expected: DType,
        /// The fed tensor's dtype.
        got: DType,
    },
    /// The same output was fed twice in one step.
    #[error("output {0:?} is fed twice")]
    DuplicateFeed(String),
    /// An op definition with this name is already registered.
    #[error("op {0:?} is already registered")]
    OpAlreadyRegistered(String),
}

impl GraphError {
    /// The error's kind: always [`Code::InvalidArgument`] (the graph, or a handle used
    /// with it, is wrong whatever the system's state).
    pub fn code(&self) -> Code {
        Code::InvalidArgument
    }
}
