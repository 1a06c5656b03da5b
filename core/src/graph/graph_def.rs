//! A serialisable, name-based description of a graph (like TensorFlow's `GraphDef`), and
//! its import with full validation: unknown ops, unknown inputs, duplicate names, arity,
//! dtypes and cycles.

use std::collections::HashMap;

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
                    op: n.op.clone(),
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
    pub fn import(def: &GraphDef) -> Result<Graph, GraphError> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, n) in def.nodes.iter().enumerate() {
            if index.insert(n.name.as_str(), i).is_some() {
                return Err(GraphError::DuplicateName(n.name.clone()));
            }
        }
        // Resolve every input to a position in `def.nodes`.
        let mut deps: Vec<Vec<usize>> = Vec::with_capacity(def.nodes.len());
        for n in &def.nodes {
            let mut d = Vec::new();
            for (i, s) in n.inputs.iter().enumerate() {
                let name = match parse_input(s) {
                    InputRef::Data(name, _) | InputRef::Control(name) => name,
                };
                let p = *index.get(name).ok_or_else(|| GraphError::NodeNotFound {
                    role: format!("input {i} of node {:?}", n.name),
                    name: name.to_string(),
                })?;
                d.push(p);
            }
            deps.push(d);
        }
        let order = topological_order(def, &deps)?;
        let graph = Graph::new();
        let mut ids: Vec<Option<NodeId>> = vec![None; def.nodes.len()];
        for i in order {
            let n = &def.nodes[i];
            let mut inputs = Vec::new();
            let mut control_inputs = Vec::new();
            for (s, p) in n.inputs.iter().zip(&deps[i]) {
                let id = ids[*p].expect("topological order visits producers first");
                match parse_input(s) {
                    InputRef::Data(_, idx) => inputs.push(Output {
                        node: id,
                        index: idx,
                    }),
                    InputRef::Control(_) => control_inputs.push(id),
                }
            }
            let device =
                DeviceSpec::parse(&n.device).map_err(|source| GraphError::BadDeviceSpec {
                    node: n.name.clone(),
                    source,
                })?;
            let mut attrs = Attrs::new();
            for (k, v) in &n.attrs {
                attrs.set(k.clone(), v.clone());
            }
            let node = Node {
                name: n.name.clone(),
                op: n.op.clone(),
                inputs,
                control_inputs,
                device,
                attrs,
                output_dtypes: Default::default(),
            };
            ids[i] = Some(graph.add_node(node, true)?);
        }
        Ok(graph)
    }
}

/// Kahn's algorithm; on a cycle, walks the remaining nodes to report one cycle by name.
fn topological_order(def: &GraphDef, deps: &[Vec<usize>]) -> Result<Vec<usize>, GraphError> {
    let n = def.nodes.len();
    let mut pending: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        for p in d {
            users[*p].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|i| pending[*i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for u in &users[i] {
            pending[*u] -= 1;
            if pending[*u] == 0 {
                ready.push(*u);
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
