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
//!
//! A step that runs wholly on the one device of a task in the master's own process is not
//! partitioned at all: that task's worker runs the session's graph itself, shared, so a
//! large graph is held once per process (see
//! [`RegisterPartition::shared`](crate::transport::RegisterPartition::shared)).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::early_recv::recv_stages;
use super::error::MasterError;
use super::ops::{
    DST_TASK_ATTR, EDGE_ATTR, RECV_AFTER_FIRST_STAGE_ATTR, RECV_BEFORE_STEP_ATTR, RECV_OP, SEND_OP,
};
use super::placement::place_nodes;
use crate::exec::prune::{prune, Pruned};
use crate::graph::{AttrValue, Graph, GraphDef, Node, NodeDef, NodeId, Output};
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

/// Where one node of a step runs. A plan holds one of these per node (a million for a
/// graph that size), so each shares its node with the session's graph and its device name
/// with the other nodes there: no names are copied, and a placed node is two words.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacedNode {
    /// The node, as the session's graph holds it.
    pub node: Arc<Node>,
    /// Full device name (a thin pointer: one word).
    pub device: Arc<String>,
}

impl PlacedNode {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.node.name
    }

    /// The node's op.
    pub fn op(&self) -> &str {
        &self.node.op
    }
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
    let placed = prune_and_place(
        graph, feeds, fetches, targets, devices, master, kernels, false,
    )?;
    Ok(split(&placed, feeds, fetches, targets, devices))
}

/// What the master registers for one signature: the session's graph itself on the one
/// task that runs the whole step, or a graph per task.
#[derive(Debug)]
pub(crate) enum StepPartitions {
    /// Every node of the step (fed producers too) runs on `task`'s only device, whose
    /// requested device each node either leaves empty or matches, and `task` is reached
    /// in process: its worker runs the session's graph as it is
    /// ([`RegisterPartition::shared`](crate::transport::RegisterPartition::shared)).
    Shared {
        /// The task.
        task: TaskName,
        /// Where each needed node runs, in graph order.
        placement: Vec<PlacedNode>,
        /// The dtype of each feed, in the client's order.
        feed_dtypes: Vec<DType>,
    },
    /// A graph per task, with `_Send`/`_Recv` pairs between them.
    Split(Partitioning),
}

/// Prunes and places `graph` for one signature as [`partition_with`] does, and shares
/// the graph when the step runs wholly on the one device of a task for which
/// `in_process` holds ([`StepPartitions::Shared`]); otherwise partitions it. With
/// `allow_soft_placement`, a pin no device can satisfy falls back as
/// [`place_nodes`] says.
///
/// # Errors
/// As [`partition`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn partition_or_share(
    graph: &Graph,
    feeds: &[Output],
    fetches: &[Output],
    targets: &[NodeId],
    devices: &[DeviceInfo],
    master: &TaskName,
    kernels: &KernelRegistry,
    allow_soft_placement: bool,
    in_process: impl Fn(&TaskName) -> bool,
) -> Result<StepPartitions, MasterError> {
    let placed = prune_and_place(
        graph,
        feeds,
        fetches,
        targets,
        devices,
        master,
        kernels,
        allow_soft_placement,
    )?;
    if let Some(task) = whole_on_one_device(&placed, devices).filter(|t| in_process(t)) {
        return Ok(StepPartitions::Shared {
            task,
            placement: placement_of(&placed, devices),
            feed_dtypes: feed_dtypes(&placed.all, feeds),
        });
    }
    Ok(StepPartitions::Split(split(
        &placed, feeds, fetches, targets, devices,
    )))
}

/// A signature pruned and placed.
struct Placed {
    all: Vec<Arc<Node>>,
    /// Fed outputs, with the index of their feed.
    fed: HashMap<Output, usize>,
    /// The nodes the step runs.
    needed: Vec<bool>,
    /// The device of each node placed: the needed ones and the fed producers.
    placed: Vec<Option<usize>>,
}

#[allow(clippy::too_many_arguments)]
fn prune_and_place(
    graph: &Graph,
    feeds: &[Output],
    fetches: &[Output],
    targets: &[NodeId],
    devices: &[DeviceInfo],
    master: &TaskName,
    kernels: &KernelRegistry,
    allow_soft_placement: bool,
) -> Result<Placed, MasterError> {
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
    Ok(Placed {
        all,
        fed,
        needed,
        placed,
    })
}

/// The task whose only device runs every placed node, when there is one and every such
/// node's requested device is empty or matches it (so that the task's own placement puts
/// each node there too).
fn whole_on_one_device(p: &Placed, devices: &[DeviceInfo]) -> Option<TaskName> {
    let first = p.placed.iter().find_map(|d| *d)?;
    let name = &devices[first].name;
    let task = task_of(&devices[first]);
    if devices.iter().filter(|d| task.owns(&d.name)).count() != 1 {
        return None;
    }
    let fits = p.placed.iter().zip(&p.all).all(|(d, n)| match d {
        None => true,
        Some(d) => *d == first && (n.device.is_empty() || n.device.matches(name)),
    });
    fits.then_some(task)
}

/// Where each needed node runs, in graph order; device names shared.
fn placement_of(p: &Placed, devices: &[DeviceInfo]) -> Vec<PlacedNode> {
    let device_names: Vec<Arc<String>> = devices
        .iter()
        .map(|d| Arc::new(d.name.to_string()))
        .collect();
    let mut placement = Vec::with_capacity(p.needed.iter().filter(|n| **n).count());
    for (i, n) in p.all.iter().enumerate() {
        if p.needed[i] {
            placement.push(PlacedNode {
                node: Arc::clone(n),
                device: Arc::clone(&device_names[p.placed[i].unwrap_or(0)]),
            });
        }
    }
    placement
}

fn feed_dtypes(all: &[Arc<Node>], feeds: &[Output]) -> Vec<DType> {
    feeds
        .iter()
        .map(|f| all[f.node.index()].output_dtypes[f.index as usize])
        .collect()
}

/// One graph per task with work, `_Send`/`_Recv` pairs on the edges between tasks.
fn split(
    p: &Placed,
    feeds: &[Output],
    fetches: &[Output],
    targets: &[NodeId],
    devices: &[DeviceInfo],
) -> Partitioning {
    let Placed {
        all,
        fed,
        needed,
        placed,
    } = p;
    let dev = |i: usize| -> usize { placed[i].unwrap_or(0) };

    let mut b = Builder {
        devices,
        parts: BTreeMap::new(),
        memo: HashMap::new(),
        next_edge: 0,
        recv_sources: HashMap::new(),
    };
    // Feeds become placeholders on their producer's task.
    for (k, f) in feeds.iter().enumerate() {
        let n = &all[f.node.index()];
        let dtype = n.output_dtypes[f.index as usize];
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

    for (i, n) in all.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        let d = dev(i);
        let mut inputs = Vec::with_capacity(n.inputs.len() + n.control_inputs.len());
        for inp in &n.inputs {
            let (src, name) = loc(*inp);
            let dtype = all[inp.node.index()].output_dtypes[inp.index as usize];
            inputs.push(b.route((inp.node.index(), i), src, &name, dtype, d));
        }
        for c in &n.control_inputs {
            if !needed[c.index()] {
                continue;
            }
            let src = dev(c.index());
            let cname = format!("^{}", all[c.index()].name);
            let routed = b.route((c.index(), i), src, &cname, DType::Bool, d);
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
            op: n.op.to_string(),
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
    let tasks: Vec<Option<TaskName>> = placed
        .iter()
        .map(|d| d.map(|d| task_of(&devices[d])))
        .collect();
    let stages = recv_stages(all, needed, &tasks);
    let recv_sources = std::mem::take(&mut b.recv_sources);
    let partitions = b
        .parts
        .into_iter()
        .map(|(task, mut p)| {
            p.targets.dedup();
            let (before, staged) = (stages.all_before_step(&task), stages.staged(&task));
            if p.recvs > 0 && (before || staged) {
                for n in p.graph.nodes.iter_mut().filter(|n| n.op == RECV_OP) {
                    let late = staged
                        && recv_sources.get(&n.name).is_some_and(|(src, consumers)| {
                            stages.after_first_stage(*src, consumers, &task)
                        });
                    let attr = if late {
                        RECV_AFTER_FIRST_STAGE_ATTR
                    } else {
                        RECV_BEFORE_STEP_ATTR
                    };
                    n.attrs.push((attr.into(), AttrValue::Bool(true)));
                }
            }
            (task, p)
        })
        .collect();
    Partitioning {
        partitions,
        placement: placement_of(p, devices),
        feed_dtypes: feed_dtypes(all, feeds),
    }
}

struct Builder<'a> {
    devices: &'a [DeviceInfo],
    parts: BTreeMap<TaskName, TaskPartition>,
    /// (source name in its task — `^node` for a control edge —, receiving task) →
    /// the `_Recv` output there.
    memo: HashMap<(String, TaskName), String>,
    next_edge: usize,
    /// Each inserted `_Recv` (by name) → the index of the node whose output (or
    /// control) it receives, and of the nodes that consume it.
    recv_sources: HashMap<String, (usize, Vec<usize>)>,
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

    /// The name the consumer on `dst` uses for `name` (an output `node:i`, or `^node`, of
    /// node `edge.0`) produced on `src`, inserting a Send/Recv pair when the tasks differ;
    /// `edge.1` is the consuming node.
    fn route(
        &mut self,
        edge: (usize, usize),
        src: usize,
        name: &str,
        dtype: DType,
        dst: usize,
    ) -> String {
        let (src_task, dst_task) = (task_of(&self.devices[src]), task_of(&self.devices[dst]));
        if src_task == dst_task {
            return name.to_string();
        }
        let key = (name.to_string(), dst_task.clone());
        if let Some(r) = self.memo.get(&key) {
            if let Some((_, consumers)) = self.recv_sources.get_mut(r.trim_end_matches(":0")) {
                consumers.push(edge.1);
            }
            return r.clone();
        }
        let e = self.next_edge;
        self.next_edge += 1;
        let edge_name = format!("{e}:{name}->{dst_task}");
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
                (EDGE_ATTR.into(), AttrValue::Str(edge_name.clone())),
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
                (EDGE_ATTR.into(), AttrValue::Str(edge_name)),
                ("dtype".into(), AttrValue::DType(dtype)),
            ],
        });
        recv.recvs += 1;
        self.recv_sources
            .insert(recv_name.clone(), (edge.0, vec![edge.1]));
        let out = format!("{recv_name}:0");
        self.memo.insert(key, out.clone());
        out
    }
}
