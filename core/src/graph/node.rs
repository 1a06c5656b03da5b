//! Nodes and the handles that refer to them: [`NodeId`] for a node, [`Output`] for one of
//! its outputs. Every handle carries the [`GraphId`] of the graph that made it, so a
//! handle used with another graph is an error
//! ([`GraphError::ForeignNode`](super::GraphError::ForeignNode)), never a silent
//! reference to whichever node has the same position there.

use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

use super::attr::Attrs;
use super::device_spec::DeviceSpec;
use super::op_name::OpName;
use crate::tensor::DType;

/// Which graph a handle belongs to: unique among the graphs alive in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GraphId(pub(crate) u32);

impl fmt::Display for GraphId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "graph {}", self.0)
    }
}

/// A node of a graph: the graph's id and the node's position in it. Only meaningful for
/// the graph that made it; graphs and sessions refuse a handle of another graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub(crate) graph: GraphId,
    pub(crate) index: u32,
}

impl NodeId {
    /// The node's position in its graph.
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The graph the node belongs to.
    pub fn graph(self) -> GraphId {
        self.graph
    }

    /// The node's first output (the common case for single-output ops).
    pub fn output(self, index: u32) -> Output {
        Output { node: self, index }
    }
}

/// One output of a node: the tensor it produces at `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Output {
    /// The producing node.
    pub node: NodeId,
    /// Which of its outputs.
    pub index: u32,
}

impl Output {
    /// The producing node.
    pub fn node(self) -> NodeId {
        self.node
    }
}

impl From<Output> for NodeId {
    fn from(o: Output) -> NodeId {
        o.node
    }
}

impl From<&Output> for NodeId {
    fn from(o: &Output) -> NodeId {
        o.node
    }
}

impl From<&NodeId> for NodeId {
    fn from(n: &NodeId) -> NodeId {
        *n
    }
}

/// A node as stored in a graph: immutable once added.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique name, scope prefixes included (`layer1/MatMul_2`).
    pub name: String,
    /// Op name: a node in a graph shares its op's registered name.
    pub op: OpName,
    /// Data inputs, in order.
    pub inputs: Vec<Output>,
    /// Nodes that must finish before this one starts.
    pub control_inputs: Vec<NodeId>,
    /// The requested device (merged from the device scopes); may be partial or empty.
    /// Shared: a graph holds each distinct spec once, however many nodes request it.
    pub device: Arc<DeviceSpec>,
    /// Attributes.
    pub attrs: Attrs,
    /// The dtype of each output, inferred by the op definition.
    pub output_dtypes: SmallVec<[DType; 2]>,
}

impl Node {
    /// A node named `name` running `op`, with no inputs, attributes, device or outputs:
    /// for a kernel's unit tests (set the public fields for more).
    pub fn new(name: impl Into<String>, op: impl Into<OpName>) -> Node {
        Node {
            name: name.into(),
            op: op.into(),
            inputs: Vec::new(),
            control_inputs: Vec::new(),
            device: Arc::default(),
            attrs: Attrs::new(),
            output_dtypes: SmallVec::new(),
        }
    }

    /// The number of outputs.
    pub fn num_outputs(&self) -> usize {
        self.output_dtypes.len()
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}(", self.name, self.op)?;
        for (i, inp) in self.inputs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "#{}:{}", inp.node.index, inp.index)?;
        }
        f.write_str(")")
    }
}
