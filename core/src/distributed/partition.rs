//! Partitioning: one graph per task, with `_Send`/`_Recv` pairs on the edges that cross
//! tasks.
//!
//! The master prunes the graph to what the fetches and targets need (as a local plan
//! does, with `exec/prune.rs`'s rules for feeds), places it ([`super::placement`]), then builds
//! one [`GraphDef`] per task that has work:
//! - a node keeps its name and gets its full device name as its spec;
//! - a data edge whose ends are on different tasks becomes `_Send` (on the producer's
//!   task) → `_Recv` (on the consumer's), one pair per (tensor, receiving task), shared
//!   by every consumer there; edges inside a task — across its devices too — stay, and
//!   the worker's local plan inserts host↔device copies as usual;
//! - a control edge across tasks becomes a *control carrier*: a `_Send` with only the
//!   control input, which sends an empty tensor, and a `_Recv` the consumer depends on;
//! - a feed becomes a `Placeholder` (`_magpie/feed/<k>`) on the task of the node it
//!   replaces; the client's tensor goes to that task only;
//! - every `_Send` is a target of its partition, so each task's local plan runs it.
//!
//! `_Send`/`_Recv` sit on the task's CPU device (tensors cross in host memory) when it has
//! one, otherwise on the device of the producer (consumer).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::error::MasterError;
use super::ops::{DST_TASK_ATTR, EDGE_ATTR, RECV_OP, SEND_OP};
use super::placement::place_nodes;
use crate::exec::prune::{prune, Pruned};
use crate::graph::{AttrValue, Graph, GraphDef, NodeDef, NodeId, Output};
use crate::registry::KernelRegistry;
use crate::tensor::DType;
use crate::transport::{DeviceInfo, TaskName};

/// The partition of one task.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskPartition {
    /// The graph (names as in the client's graph, plus the inserted nodes).
    pub graph: GraphDef,
    /// Fed outputs (`name:index`) and, for each, the index of the client's feed.
    pub feeds: Vec<(String, usize)>,
    /// Fetched outputs (`name:index`) and, for each, the index of the client's fetch.
    pub fetches: Vec<(String, usize)>,
    /// Nodes to run: the client's targets placed here, and every `_Send`.
    pub targets: Vec<String>,
    /// `_Send` nodes inserted (control carriers included).
    pub sends: usize,
    /// `_Recv` nodes inserted.
    pub recvs: usize,
}

/// Where one node of a step runs. The op and device names are shared between the nodes
/// that have them (a plan holds one of these per node: a million for a graph that size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedNode {
    /// Node name.
    pub node: String,
    /// Op name.
    pub op: Arc<str>,
    /// Full device name.
    pub device: Arc<str>,
}

/// The partitions of a step signature, by task.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Partitioning {
    /// The tasks' partitions.
    pub partitions: BTreeMap<TaskName, TaskPartition>,
    /// Where each needed node of the client's graph runs, in graph order.
    pub placement: Vec<PlacedNode>,
    /// The dtype of each feed, in the client's order.
    pub feed_dtypes: Vec<DType>,
}

const PREFIX: &str = "_magpie";
/// The name of feed `k`'s placeholder in a partition is this prefix and `k`.
pub(crate) const FEED_PREFIX: &str = "_magpie/feed/";

fn task_of(d: &DeviceInfo) -> TaskName {
    TaskName {
        job: d.name.job.clone(),
        index: d.name.task,
    }
}

/// Prunes, places and partitions `graph` for one signature, placing by the kernels of the
/// process-wide registry ([`partition_with`] takes another).
///
/// # Errors
/// [`MasterError`] naming the node that cannot be pruned, placed or partitioned.
pub fn partition(
    graph: &Graph,
    feeds: &[Output],
    fetches: &[Output],
    targets: &[NodeId],
    devices: &[DeviceInfo],
    master: &TaskName,
) -> Result<Partitioning, MasterError> {
    let kernels = KernelRegistry::global();
    partition_with(graph, feeds, fetches, targets, devices, master, &kernels)
}

/// [`partition`], placing by the kernels of `kernels`.
///
/// # Errors
/// As [`partition`].
pub fn partition_with(
    graph: &Graph,
    feeds: &[Output],
    fetches: &[Output],
    targets: &[NodeId],
    devices: &[DeviceInfo],
    master: &TaskName,
    kernels: &KernelRegistry,
) -> Result<Partitioning, MasterError> {
    partition_placing(
        graph, feeds, fetches, targets, devices, master, kernels, false,
    )
}

/// [`partition_with`], with soft placement when `allow_soft_placement`
/// ([`place_nodes`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn partition_placing(
    graph: &Graph,
    feeds: &[Output],
    fetches: &[Output],
    targets: &[NodeId],
    devices: &[DeviceInfo],
    master: &TaskName,
    kernels: &KernelRegistry,
    allow_soft_placement: bool,
) -> Result<Partitioning, MasterError> {
    let all = graph.nodes();
    let Pruned { fed, needed } = prune(graph, &all, feeds, fetches, targets)?;
    // Fed producers are placed too: their feed placeholder goes to their task.
    let mut to_place = needed.clone();
    for f in feeds {
        to_place[f.node.index()] = true;
    }
    let placed = place_nodes(
        graph,
        &all,
        &to_place,
        devices,
        master,
        kernels,
        allow_soft_placement,
    )?;
    let dev = |i: usize| -> usize { placed[i].unwrap_or(0) };

    let mut b = Builder {
        devices,
        parts: BTreeMap::new(),
        memo: HashMap::new(),
        next_edge: 0,
    };
    // Feeds become placeholders on their producer's task.
    let mut feed_dtypes = Vec::with_capacity(feeds.len());
    for (k, f) in feeds.iter().enumerate() {
        let n = &all[f.node.index()];
        let dtype = n.output_dtypes[f.index as usize];
        feed_dtypes.push(dtype);
        let d = dev(f.node.index());
        let mut attrs = vec![("dtype".to_string(), AttrValue::DType(dtype))];
        if n.op == "Placeholder" {
            if let Ok(shape) = n.attrs.ints("shape") {
                attrs.push(("shape".into(), AttrValue::Ints(shape)));
            }
        }
        let name = format!("{FEED_PREFIX}{k}");
        let part = b.part(d);
        part.graph.nodes.push(NodeDef {
            name: name.clone(),
            op: "Placeholder".into(),
            inputs: vec![],
            device: devices[d].name.to_string(),
            attrs,
        });
        part.feeds.push((format!("{name}:0"), k));
    }
    let loc = |o: Output| -> (usize, String) {
        match fed.get(&o) {
            Some(k) => (dev(o.node.index()), format!("{FEED_PREFIX}{k}:0")),
            None => (
                dev(o.node.index()),
                format!("{}:{}", all[o.node.index()].name, o.index),
            ),
        }
    };

    let mut placement = Vec::new();
    let device_names: Vec<Arc<str>> = devices.iter().map(|d| d.name.to_string().into()).collect();
    let mut op_names: HashMap<&str, Arc<str>> = HashMap::new();
    for (i, n) in all.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        let d = dev(i);
        let op = op_names
            .entry(n.op.as_str())
            .or_insert_with(|| n.op.as_str().into());
        placement.push(PlacedNode {
            node: n.name.clone(),
            op: Arc::clone(op),
            device: Arc::clone(&device_names[d]),
        });
        let mut inputs = Vec::with_capacity(n.inputs.len() + n.control_inputs.len());
        for inp in &n.inputs {
            let (src, name) = loc(*inp);
            let dtype = all[inp.node.index()].output_dtypes[inp.index as usize];
            inputs.push(b.route(src, &name, dtype, d));
        }
        for c in &n.control_inputs {
            if !needed[c.index()] {
                continue;
            }
            let src = dev(c.index());
            let cname = format!("^{}", all[c.index()].name);
            let routed = b.route(src, &cname, DType::Bool, d);
            inputs.push(if routed.starts_with('^') {
                routed
            } else {
                format!("^{}", routed.trim_end_matches(":0"))
            });
        }
        let attrs = n
            .attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        b.part(d).graph.nodes.push(NodeDef {
            name: n.name.clone(),
            op: n.op.clone(),
            inputs,
            device: devices[d].name.to_string(),
            attrs,
        });
    }
    for (k, f) in fetches.iter().enumerate() {
        let (src, name) = loc(*f);
        b.part(src).fetches.push((name, k));
    }
    for t in targets {
        if needed[t.index()] {
            let name = all[t.index()].name.clone();
            b.part(dev(t.index())).targets.push(name);
        }
    }
    let partitions = b
        .parts
        .into_iter()
        .map(|(task, mut p)| {
            p.targets.dedup();
            (task, p)
        })
        .collect();
    Ok(Partitioning {
        partitions,
        placement,
        feed_dtypes,
    })
}

struct Builder<'a> {
    devices: &'a [DeviceInfo],
    parts: BTreeMap<TaskName, TaskPartition>,
    /// (source name in its task — `^node` for a control edge —, receiving task) →
    /// the `_Recv` output there.
    memo: HashMap<(String, TaskName), String>,
    next_edge: usize,
}

impl Builder<'_> {
    fn part(&mut self, device: usize) -> &mut TaskPartition {
        self.parts
            .entry(task_of(&self.devices[device]))
            .or_default()
    }

    /// The task's CPU device if it has one, else `fallback`.
    fn transfer_device(&self, device: usize) -> String {
        let task = task_of(&self.devices[device]);
        self.devices
            .iter()
            .find(|d| task.owns(&d.name) && d.name.device_type == "CPU")
            .unwrap_or(&self.devices[device])
            .name
            .to_string()
    }

    /// The name the consumer on `dst` uses for `name` (an output `node:i`, or `^node`)
    /// produced on `src`, inserting a Send/Recv pair when the tasks differ.
    fn route(&mut self, src: usize, name: &str, dtype: DType, dst: usize) -> String {
        let (src_task, dst_task) = (task_of(&self.devices[src]), task_of(&self.devices[dst]));
        if src_task == dst_task {
            return name.to_string();
        }
        let key = (name.to_string(), dst_task.clone());
        if let Some(r) = self.memo.get(&key) {
            return r.clone();
        }
        let e = self.next_edge;
        self.next_edge += 1;
        let edge = format!("{e}:{name}->{dst_task}");
        let send_name = format!("{PREFIX}/send/{e}");
        let recv_name = format!("{PREFIX}/recv/{e}");
        let send_device = self.transfer_device(src);
        let recv_device = self.transfer_device(dst);
        let send = self.part(src);
        send.graph.nodes.push(NodeDef {
            name: send_name.clone(),
            op: SEND_OP.into(),
            inputs: vec![name.to_string()],
            device: send_device,
            attrs: vec![
                (EDGE_ATTR.into(), AttrValue::Str(edge.clone())),
                (DST_TASK_ATTR.into(), AttrValue::Str(dst_task.to_string())),
            ],
        });
        send.targets.push(send_name);
        send.sends += 1;
        let recv = self.part(dst);
        recv.graph.nodes.push(NodeDef {
            name: recv_name.clone(),
            op: RECV_OP.into(),
            inputs: vec![],
            device: recv_device,
            attrs: vec![
                (EDGE_ATTR.into(), AttrValue::Str(edge)),
                ("dtype".into(), AttrValue::DType(dtype)),
            ],
        });
        recv.recvs += 1;
        let out = format!("{recv_name}:0");
        self.memo.insert(key, out.clone());
        out
    }
}
