//! Pruning: which nodes a step must run for its fetches and targets, given its feeds.
//! Shared by local plans and the distributed master's partitioning, so both run exactly
//! the same nodes.
//!
//! The walk goes back from every fetch and target through data and control edges, by
//! TensorFlow's rules: a fed output stops a data edge (the feed replaces the tensor), but
//! a node reached through a control edge or named as a target still runs, fed or not —
//! feeding replaces tensors, not side effects. The one exception is a fed `Placeholder`:
//! it never runs, and control edges from it are satisfied by the feed. A placeholder the
//! walk reaches was not fed: that is an error naming it. A feed, fetch or target that is a handle of
//! another graph is refused here, when a signature is first planned (never per step).

use std::collections::HashMap;
use std::sync::Arc;

use crate::graph::{Graph, GraphError, Node, NodeId, Output};

/// The result of pruning.
pub(crate) struct Pruned {
    /// Each fed output, with its position among the feeds.
    pub(crate) fed: HashMap<Output, usize>,
    /// Whether each node of the graph must run.
    pub(crate) needed: Vec<bool>,
}

fn node_of<'a>(
    graph: &Graph,
    all: &'a [Arc<Node>],
    id: NodeId,
    role: &str,
) -> Result<&'a Arc<Node>, GraphError> {
    graph.check_owned(id, role)?;
    all.get(id.index()).ok_or_else(|| GraphError::NodeNotFound {
        role: role.to_string(),
        name: format!("#{}", id.index()),
    })
}

fn check_output(graph: &Graph, all: &[Arc<Node>], o: Output, role: &str) -> Result<(), GraphError> {
    let n = node_of(graph, all, o.node, role)?;
    if o.index as usize >= n.num_outputs() {
        return Err(GraphError::OutputOutOfRange {
            role: role.to_string(),
            node: n.name.clone(),
            op: n.op.to_string(),
            index: o.index,
            num_outputs: n.num_outputs(),
        });
    }
    Ok(())
}

/// Validates the feeds, fetches and targets against `all` (a snapshot of `graph`'s nodes)
/// and finds the nodes a step must run.
pub(crate) fn prune(
    graph: &Graph,
    all: &[Arc<Node>],
    feeds: &[Output],
    fetches: &[Output],
    targets: &[NodeId],
) -> Result<Pruned, GraphError> {
    let mut fed: HashMap<Output, usize> = HashMap::with_capacity(feeds.len());
    for (i, f) in feeds.iter().enumerate() {
        check_output(graph, all, *f, "feed")?;
        if fed.insert(*f, i).is_some() {
            let name = format!("{}:{}", all[f.node.index()].name, f.index);
            return Err(GraphError::DuplicateFeed(name));
        }
    }
    for f in fetches {
        check_output(graph, all, *f, "fetch")?;
    }
    for t in targets {
        node_of(graph, all, *t, "target")?;
    }
    // A fed placeholder: the only node a feed stands in for entirely.
    let fed_placeholder = |id: NodeId| {
        let n = &all[id.index()];
        n.op == "Placeholder"
            && n.num_outputs() > 0
            && (0..n.num_outputs() as u32).all(|i| fed.contains_key(&id.output(i)))
    };
    let mut needed = vec![false; all.len()];
    let mut stack: Vec<NodeId> = fetches
        .iter()
        .filter(|f| !fed.contains_key(f))
        .map(|f| f.node)
        .collect();
    stack.extend(targets.iter().copied().filter(|t| !fed_placeholder(*t)));
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut needed[id.index()], true) {
            continue;
        }
        let n = &all[id.index()];
        if n.op == "Placeholder" {
            return Err(GraphError::PlaceholderNotFed {
                node: n.name.clone(),
                dtype: n.output_dtypes[0],
            });
        }
        for inp in &n.inputs {
            if !fed.contains_key(inp) && !needed[inp.node.index()] {
                stack.push(inp.node);
            }
        }
        for c in &n.control_inputs {
            if !needed[c.index()] && !fed_placeholder(*c) {
                stack.push(*c);
            }
        }
    }
    Ok(Pruned { fed, needed })
}
