//! A serialisable, name-based description of a graph (like TensorFlow's `GraphDef`), and
//! its import with full validation: unknown ops, unknown inputs, duplicate names, arity,
//! dtypes and cycles.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::attr::{AttrValue, Attrs};
use super::builder::Graph;
use super::device_spec::DeviceSpec;
use super::error::GraphError;
use super::node::{Node, NodeId, Output};

/// One node of a [`GraphDef`]. Inputs are `"name"` or `"name:index"` for data and
/// `"^name"` for control inputs, as in TensorFlow.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeDef {
    /// Unique node name.
    pub name: String,
    /// Op name.
    pub op: String,
    /// Inputs, data first, then control inputs (`^name`).
    pub inputs: Vec<String>,
    /// Requested device spec; empty for none.
    pub device: String,
    /// Attributes.
    pub attrs: Vec<(String, AttrValue)>,
}

/// A graph described by names, in any node order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphDef {
    /// The nodes.
    pub nodes: Vec<NodeDef>,
}

enum InputRef<'a> {
    Data(&'a str, u32),
    Control(&'a str),
}

fn parse_input(s: &str) -> InputRef<'_> {
    if let Some(name) = s.strip_prefix('^') {
        return InputRef::Control(name);
    }
    match s.rsplit_once(':') {
        Some((name, idx)) if idx.parse::<u32>().is_ok() => {
            InputRef::Data(name, idx.parse().unwrap_or_default())
        }
        _ => InputRef::Data(s, 0),
    }
}

impl Graph {
    /// The graph as a [`GraphDef`]: every node in creation order, data inputs as
    /// `"name"`/`"name:index"`, control inputs as `"^name"`, attributes sorted by name.
    /// [`Graph::import`] of the result rebuilds an equal graph.
    pub fn to_graph_def(&self) -> GraphDef {
        let nodes = self.nodes();
        let name = |id: NodeId| nodes[id.index()].name.as_str();
        let defs = nodes
            .iter()
            .map(|n| {
                let mut inputs: Vec<String> = n
                    .inputs
                    .iter()
                    .map(|o| match o.index {
                        0 => name(o.node).to_string(),
                        i => format!("{}:{i}", name(o.node)),
                    })
                    .collect();
                inputs.extend(n.control_inputs.iter().map(|c| format!("^{}", name(*c))));
                NodeDef {
                    name: n.name.clone(),
                    op: n.op.to_string(),
                    inputs,
                    device: n.device.to_string(),
                    attrs: n
                        .attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                }
            })
            .collect();
        GraphDef { nodes: defs }
    }

    /// Builds a graph from a [`GraphDef`], validating every node. Nodes may appear in any
    /// order; a cycle is reported with the names on it.
    ///
    /// # Errors
    /// A [`GraphError`] naming the node: an unknown op, an input naming no node
    /// ([`GraphError::NodeNotFound`]), a duplicate name, a cycle ([`GraphError::Cycle`]),
    /// or anything [`OpBuilder::build`](super::OpBuilder::build) refuses.
    pub fn import(def: &GraphDef) -> Result<Graph, GraphError> {
        let graph = Graph::new();
        import_into(&graph, def)?;
        Ok(graph)
    }

    /// Adds the nodes of `def` to this graph (TensorFlow's `ExtendSession`): their inputs
    /// name nodes of `def` or nodes already in the graph; names must be new. Every handle
    /// to the graph, and every session over it, sees the new nodes. All or nothing: the
    /// extension is validated on a copy of the graph first, so a bad one (an unknown op
    /// or input, a duplicate name, a dtype mismatch, a cycle) adds no node. Returns the
    /// new nodes' ids in `def`'s order.
    ///
    /// # Errors
    /// As [`Graph::import`]; on any error the graph is unchanged.
    pub fn extend(&self, def: &GraphDef) -> Result<Vec<NodeId>, GraphError> {
        let scratch = Graph::import(&self.to_graph_def())?;
        import_into(&scratch, def)?;
        import_into(self, def)
    }
}

/// Where an input of a node being imported comes from.
#[derive(Clone, Copy)]
enum Producer {
    /// A node of the `GraphDef` (its position).
    Def(usize),
    /// A node already in the graph.
    Existing(NodeId),
}

/// Adds `def`'s nodes to `graph` in a topological order; returns their ids in `def`'s
/// order. Stops at the first invalid node (the callers that need all-or-nothing check
/// on a copy first).
fn import_into(graph: &Graph, def: &GraphDef) -> Result<Vec<NodeId>, GraphError> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, n) in def.nodes.iter().enumerate() {
        if index.insert(n.name.as_str(), i).is_some() || graph.node_by_name(&n.name).is_some() {
            return Err(GraphError::DuplicateName(n.name.clone()));
        }
    }
    // Resolve every input to a position in `def.nodes` or a node of the graph.
    let mut producers: Vec<Vec<Producer>> = Vec::with_capacity(def.nodes.len());
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(def.nodes.len());
    for n in &def.nodes {
        let mut p = Vec::with_capacity(n.inputs.len());
        let mut d = Vec::new();
        for (i, s) in n.inputs.iter().enumerate() {
            let name = match parse_input(s) {
                InputRef::Data(name, _) | InputRef::Control(name) => name,
            };
            if let Some(&k) = index.get(name) {
                p.push(Producer::Def(k));
                d.push(k);
            } else if let Some(id) = graph.node_by_name(name) {
                p.push(Producer::Existing(id));
            } else {
                return Err(GraphError::NodeNotFound {
                    role: format!("input {i} of node {:?}", n.name),
                    name: name.to_string(),
                });
            }
        }
        producers.push(p);
        deps.push(d);
    }
    let order = topological_order(def, &deps)?;
    let mut ids: Vec<Option<NodeId>> = vec![None; def.nodes.len()];
    for i in order {
        let n = &def.nodes[i];
        // Sized exactly: a graph keeps these for every node.
        let controls = n.inputs.iter().filter(|s| s.starts_with('^')).count();
        let mut inputs = Vec::with_capacity(n.inputs.len() - controls);
        let mut control_inputs = Vec::with_capacity(controls);
        for (s, p) in n.inputs.iter().zip(&producers[i]) {
            let id = match *p {
                Producer::Def(k) => ids[k].expect("topological order visits producers first"),
                Producer::Existing(id) => id,
            };
            match parse_input(s) {
                InputRef::Data(_, idx) => inputs.push(Output {
                    node: id,
                    index: idx,
                }),
                InputRef::Control(_) => control_inputs.push(id),
            }
        }
        let device = DeviceSpec::parse(&n.device).map_err(|source| GraphError::BadDeviceSpec {
            node: n.name.clone(),
            source,
        })?;
        let mut attrs = Attrs::new();
        for (k, v) in &n.attrs {
            attrs.set(k.clone(), v.clone());
        }
        let node = Node {
            name: n.name.clone(),
            op: n.op.clone().into(),
            inputs,
            control_inputs,
            device: device.into(),
            attrs,
            output_dtypes: Default::default(),
        };
        ids[i] = Some(graph.add_node(node, true)?);
    }
    Ok(ids
        .into_iter()
        .map(|id| id.expect("every node was added"))
        .collect())
}

/// Kahn's algorithm, taking the ready node that comes first in `def` each time: the
/// order is deterministic, and a `def` already in topological order (every graph's own
/// [`Graph::to_graph_def`]) keeps its order, so an import of an export is an equal graph.
/// On a cycle, walks the remaining nodes to report one cycle by name.
fn topological_order(def: &GraphDef, deps: &[Vec<usize>]) -> Result<Vec<usize>, GraphError> {
    let n = def.nodes.len();
    let mut pending: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        for p in d {
            users[*p].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|i| pending[*i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for u in &users[i] {
            pending[*u] -= 1;
            if pending[*u] == 0 {
                ready.push(Reverse(*u));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every node left has a pending producer that is also left: follow producers until
    // one repeats.
    let start = (0..n).find(|i| pending[*i] > 0).unwrap_or_default();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut cur = start;
    while !seen.contains_key(&cur) {
        seen.insert(cur, path.len());
        path.push(cur);
        cur = *deps[cur].iter().find(|p| pending[**p] > 0).unwrap_or(&cur);
    }
    let mut cycle: Vec<String> = path[seen[&cur]..]
        .iter()
        .rev()
        .map(|i| def.nodes[*i].name.clone())
        .collect();
    cycle.push(cycle[0].clone());
    Err(GraphError::Cycle(cycle))
}
