//! A partition in two stages: how a task on a cycle through other tasks (a parameter
//! server that sends weights and receives their gradients in one step) runs its step as
//! two plain steps of synchronous kernels instead of one step that waits on the pool.
//!
//! The master marks each receive of such a partition (`early_recv.rs`): awaited before
//! the step ([`RECV_BEFORE_STEP_ATTR`](super::ops::RECV_BEFORE_STEP_ATTR)) or after the
//! first stage ([`RECV_AFTER_FIRST_STAGE_ATTR`](super::ops::RECV_AFTER_FIRST_STAGE_ATTR)).
//! The worker turns every receive into a placeholder and [`split`]s the partition:
//! - the **second stage** is every node downstream (data or control) of a receive marked
//!   after the first stage; the **first stage** is the rest;
//! - the first stage's outputs that second-stage nodes consume are fetched by the first
//!   stage (or are its feeds) and fed to the second, so no first-stage node runs twice
//!   (a fed output stops a data edge);
//! - a control edge from a first-stage node into the second stage is dropped from the
//!   graph, and its source becomes a target of the first stage: the whole first stage
//!   ends before the second starts, so the order it stated still holds.
//!
//! A step then runs the first stage (its sends go out), awaits the second-stage
//! receives, and runs the second stage; the partition's fetches come back in their
//! order. The master's analysis guarantees that no second-stage receive depends on a
//! second-stage node, so the wait cannot deadlock.

use std::collections::{HashMap, HashSet};

use crate::graph::{GraphDef, NodeId, Output};

/// What [`split`] found, by name (the graph is not imported yet).
#[derive(Debug, Default)]
pub(crate) struct StageSplit {
    /// The second stage's nodes.
    pub(crate) second: HashSet<String>,
    /// First-stage outputs (`node:index`) that second-stage nodes consume.
    pub(crate) boundary: Vec<String>,
    /// First-stage nodes whose control edges into the second stage were dropped.
    pub(crate) first_targets: Vec<String>,
}

/// The node name and output index an input string names (`node:k`, `node`, `^node`).
fn parse_input(input: &str) -> (&str, Option<u32>) {
    if let Some(control) = input.strip_prefix('^') {
        return (control, None);
    }
    match input.rsplit_once(':') {
        Some((name, k)) => match k.parse() {
            Ok(k) => (name, Some(k)),
            Err(_) => (input, Some(0)),
        },
        None => (input, Some(0)),
    }
}

/// Splits `def` into two stages at the placeholders named in `late` (the receives
/// awaited after the first stage): finds the second stage and the boundary, and drops the
/// control edges from the first stage into the second from `def`.
pub(crate) fn split(def: &mut GraphDef, late: &HashSet<String>) -> StageSplit {
    // Consumers by producer name, then a walk down from the late receives.
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in def.nodes.iter().enumerate() {
        for input in &n.inputs {
            consumers.entry(parse_input(input).0).or_default().push(i);
        }
    }
    let mut second: HashSet<String> = HashSet::new();
    let mut stack: Vec<&str> = late.iter().map(String::as_str).collect();
    while let Some(name) = stack.pop() {
        if !second.insert(name.to_string()) {
            continue;
        }
        for &c in consumers.get(name).map(Vec::as_slice).unwrap_or(&[]) {
            stack.push(&def.nodes[c].name);
        }
    }
    let mut boundary = Vec::new();
    let mut first_targets = Vec::new();
    let mut seen = HashSet::new();
    for n in def.nodes.iter_mut().filter(|n| second.contains(&n.name)) {
        n.inputs.retain(|input| {
            let (src, k) = parse_input(input);
            if second.contains(src) {
                return true;
            }
            match k {
                Some(k) => {
                    let out = format!("{src}:{k}");
                    if seen.insert(out.clone()) {
                        boundary.push(out);
                    }
                    true
                }
                None => {
                    if !first_targets.iter().any(|t| t == src) {
                        first_targets.push(src.to_string());
                    }
                    false
                }
            }
        });
    }
    StageSplit {
        second,
        boundary,
        first_targets,
    }
}

/// Where a second-stage feed comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The step's feed at this position (the master's feeds, then the receives awaited
    /// before the step).
    Feed(usize),
    /// The first stage's fetch at this position.
    First(usize),
}

/// A partition's two stages, resolved in its imported graph.
#[derive(Debug, Default)]
pub(crate) struct Stages {
    /// The first stage's fetches: the partition's fetches there, then the boundary
    /// outputs it computes.
    pub(crate) first_fetches: Vec<Output>,
    /// The first stage's targets: the partition's there, then the sources of the dropped
    /// control edges.
    pub(crate) first_targets: Vec<NodeId>,
    /// The second stage's feeds other than its receives, and where each comes from.
    pub(crate) second_feeds: Vec<(Output, Source)>,
    /// The second stage's fetches and targets.
    pub(crate) second_fetches: Vec<Output>,
    pub(crate) second_targets: Vec<NodeId>,
    /// For each of the partition's fetches: whether the second stage fetches it, and at
    /// which position of that stage's fetches.
    pub(crate) fetch_order: Vec<(bool, usize)>,
}

impl Stages {
    /// Resolves `split` for a partition whose step feeds `feeds` (the master's, then the
    /// receives awaited before the step), fetches `fetches` and runs `targets`;
    /// `resolve` finds an output by name, `name_of` names a node.
    pub(crate) fn resolve<E>(
        split: &StageSplit,
        feeds: &[Output],
        fetches: &[Output],
        targets: &[NodeId],
        name_of: impl Fn(NodeId) -> String,
        resolve: impl Fn(&str) -> Result<Output, E>,
    ) -> Result<Stages, E> {
        let mut s = Stages::default();
        let in_second = |id: NodeId| split.second.contains(&name_of(id));
        for f in fetches {
            let (list, second) = if in_second(f.node) {
                (&mut s.second_fetches, true)
            } else {
                (&mut s.first_fetches, false)
            };
            s.fetch_order.push((second, list.len()));
            list.push(*f);
        }
        for t in targets {
            if in_second(*t) {
                s.second_targets.push(*t);
            } else {
                s.first_targets.push(*t);
            }
        }
        for name in &split.first_targets {
            let id = resolve(&format!("{name}:0"))?.node;
            if !s.first_targets.contains(&id) {
                s.first_targets.push(id);
            }
        }
        for name in &split.boundary {
            let out = resolve(name)?;
            let source = match feeds.iter().position(|f| *f == out) {
                Some(k) => Source::Feed(k),
                None => {
                    s.first_fetches.push(out);
                    Source::First(s.first_fetches.len() - 1)
                }
            };
            s.second_feeds.push((out, source));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::NodeDef;

    fn node(name: &str, inputs: &[&str]) -> NodeDef {
        NodeDef {
            name: name.into(),
            op: "X".into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            device: String::new(),
            attrs: Vec::new(),
        }
    }

    #[test]
    fn the_second_stage_is_downstream_of_the_late_receives() {
        // A parameter server: read -> send; late recv (gradient) -> apply(var, grad),
        // apply after `marker` by a control edge; `other` runs in the first stage.
        let mut def = GraphDef {
            nodes: vec![
                node("var", &[]),
                node("read", &["var"]),
                node("send", &["read:0"]),
                node("marker", &[]),
                node("grad", &[]),
                node("apply", &["var:0", "grad:0", "^marker", "^grad"]),
                node("done", &["^apply"]),
                node("other", &["read"]),
            ],
        };
        let late = HashSet::from(["grad".to_string()]);
        let s = split(&mut def, &late);
        let mut second: Vec<_> = s.second.iter().cloned().collect();
        second.sort();
        assert_eq!(second, ["apply", "done", "grad"]);
        assert_eq!(s.boundary, ["var:0"]);
        assert_eq!(s.first_targets, ["marker"]);
        // The control edge from the first stage is gone; the one inside the second stays.
        assert_eq!(def.nodes[5].inputs, ["var:0", "grad:0", "^grad"]);
        assert_eq!(def.nodes[7].inputs, ["read"]);
    }

    #[test]
    fn inputs_parse_as_graph_defs_write_them() {
        assert_eq!(parse_input("a:2"), ("a", Some(2)));
        assert_eq!(parse_input("a"), ("a", Some(0)));
        assert_eq!(parse_input("^a"), ("a", None));
        assert_eq!(parse_input("scope/a:0"), ("scope/a", Some(0)));
    }
}
