//! Execution plans: the pruned, placed, kernel-instantiated form of a graph for one
//! signature of feeds, fetches and targets.
//!
//! Building a plan walks back from the fetches and targets through data and control edges;
//! a fed output stops the walk (the feed replaces its producer), so only what the step
//! needs runs. Each needed node becomes one scheduler task; its data and control inputs
//! become the task's predecessors. Every tensor the step handles (a node output or a
//! feed) gets a slot, and each slot knows how many consumers it has, so the last consumer
//! can take the tensor (freeing it early, or reusing its buffer in place).
//!
//! Plans are immutable and shared by every step with the same signature: the graph only
//! grows and nodes never change, so a plan stays valid as the graph grows.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

use super::error::SessionError;
use super::placement::place;
use crate::device::Device;
use crate::graph::{Graph, GraphError, Node, NodeId, Output};
use crate::kernel::{BoxedKernel, KernelInit};
use crate::registry::lookup_kernel;
use crate::scheduler::Topology;
use crate::tensor::DType;

/// One node of a plan.
pub(crate) struct PlanNode {
    pub(crate) node: Arc<Node>,
    pub(crate) device: usize,
    pub(crate) kernel: BoxedKernel,
    /// Slot of each data input, in order.
    pub(crate) input_slots: SmallVec<[u32; 2]>,
    /// Slot of output 0; output `i` is at `first_output_slot + i`.
    pub(crate) first_output_slot: u32,
}

/// A pruned, placed graph ready to run many times.
pub(crate) struct ExecPlan {
    pub(crate) nodes: Vec<PlanNode>,
    pub(crate) topology: Topology,
    pub(crate) devices: Vec<Arc<dyn Device>>,
    /// Number of tensor slots.
    pub(crate) num_slots: usize,
    /// Uses of each slot in a step: consumer inputs, plus one per fetch of it.
    pub(crate) slot_uses: Vec<u32>,
    /// Slot each feed (in the order given) fills.
    pub(crate) feed_slots: Vec<u32>,
    /// Expected dtype of each feed.
    pub(crate) feed_dtypes: Vec<DType>,
    /// Declared shape of each fed placeholder, if any.
    pub(crate) feed_shapes: Vec<Option<(String, Vec<i64>)>>,
    /// `node:index` of each feed, for messages.
    pub(crate) feed_names: Vec<String>,
    /// Slot of each fetch, in order.
    pub(crate) fetch_slots: Vec<u32>,
}

impl fmt::Debug for ExecPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecPlan")
            .field("nodes", &self.nodes.len())
            .field("slots", &self.num_slots)
            .field("fetches", &self.fetch_slots.len())
            .finish()
    }
}

fn output_name(graph: &Graph, o: Output) -> String {
    format!("{}:{}", graph.name_of(o.node), o.index)
}

impl ExecPlan {
    /// Builds the plan for one signature.
    pub(crate) fn build(
        graph: &Graph,
        devices: &[Arc<dyn Device>],
        feeds: &[Output],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<ExecPlan, SessionError> {
        let all = graph.nodes();
        let node_of = |id: NodeId, role: &str| -> Result<&Arc<Node>, GraphError> {
            all.get(id.index()).ok_or_else(|| GraphError::NodeNotFound {
                role: role.to_string(),
                name: format!("#{}", id.index()),
            })
        };
        let check_output = |o: Output, role: &str| -> Result<(), GraphError> {
            let n = node_of(o.node, role)?;
            if o.index as usize >= n.num_outputs() {
                return Err(GraphError::OutputOutOfRange {
                    role: role.to_string(),
                    node: n.name.clone(),
                    op: n.op.clone(),
                    index: o.index,
                    num_outputs: n.num_outputs(),
                });
            }
            Ok(())
        };
        let mut fed: HashMap<Output, usize> = HashMap::with_capacity(feeds.len());
        for (i, f) in feeds.iter().enumerate() {
            check_output(*f, "feed")?;
            if fed.insert(*f, i).is_some() {
                return Err(GraphError::DuplicateFeed(output_name(graph, *f)).into());
            }
        }
        for f in fetches {
            check_output(*f, "fetch")?;
        }
        for t in targets {
            node_of(*t, "target")?;
        }

        // Prune: walk back from fetches and targets; fed outputs stop the walk. A node
        // whose outputs are all fed counts as done: control edges from it are satisfied.
        let fully_fed = |id: NodeId| {
            let n = &all[id.index()];
            n.num_outputs() > 0
                && (0..n.num_outputs() as u32).all(|i| fed.contains_key(&id.output(i)))
        };
        let mut needed = vec![false; all.len()];
        let mut stack: Vec<NodeId> = Vec::new();
        for f in fetches {
            if !fed.contains_key(f) {
                stack.push(f.node);
            }
        }
        stack.extend(targets.iter().copied().filter(|t| !fully_fed(*t)));
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut needed[id.index()], true) {
                continue;
            }
            let n = &all[id.index()];
            for inp in &n.inputs {
                if !fed.contains_key(inp) && !needed[inp.node.index()] {
                    stack.push(inp.node);
                }
            }
            for c in &n.control_inputs {
                if !needed[c.index()] && !fully_fed(*c) {
                    stack.push(*c);
                }
            }
        }

        // Tasks in graph order (a topological order, since inputs precede users).
        let mut task_of: Vec<u32> = vec![u32::MAX; all.len()];
        let mut order: Vec<usize> = Vec::new();
        for (i, n) in all.iter().enumerate() {
            if needed[i] {
                if n.op == "Placeholder" {
                    return Err(GraphError::PlaceholderNotFed {
                        node: n.name.clone(),
                        dtype: n.output_dtypes[0],
                    }
                    .into());
                }
                task_of[i] = order.len() as u32;
                order.push(i);
            }
        }

        // Slots: node outputs first, then feeds.
        let mut first_slot: Vec<u32> = Vec::with_capacity(order.len());
        let mut num_slots = 0usize;
        for &i in &order {
            first_slot.push(num_slots as u32);
            num_slots += all[i].num_outputs();
        }
        let feed_base = num_slots;
        num_slots += feeds.len();
        let slot_of = |o: Output| -> u32 {
            match fed.get(&o) {
                Some(k) => (feed_base + k) as u32,
                None => first_slot[task_of[o.node.index()] as usize] + o.index,
            }
        };

        let mut slot_uses = vec![0u32; num_slots];
        let mut topo = Topology::builder(order.len());
        let mut nodes = Vec::with_capacity(order.len());
        for (t, &i) in order.iter().enumerate() {
            let n = &all[i];
            let mut input_slots = SmallVec::new();
            let mut input_dtypes: SmallVec<[DType; 2]> = SmallVec::new();
            for inp in &n.inputs {
                let s = slot_of(*inp);
                slot_uses[s as usize] += 1;
                input_slots.push(s);
                input_dtypes.push(all[inp.node.index()].output_dtypes[inp.index as usize]);
                if !fed.contains_key(inp) {
                    topo.add_edge(task_of[inp.node.index()], t as u32);
                }
            }
            for c in &n.control_inputs {
                if needed[c.index()] {
                    topo.add_edge(task_of[c.index()], t as u32);
                }
            }
            let device = place(n, devices)?;
            let factory = lookup_kernel(&n.op, devices[device].device_type()).ok_or_else(|| {
                SessionError::NoKernel {
                    node: n.name.clone(),
                    op: n.op.clone(),
                    device: devices[device].name().to_string(),
                    device_type: devices[device].device_type().to_string(),
                }
            })?;
            let init = KernelInit {
                node: n,
                input_dtypes: &input_dtypes,
                device: &devices[device],
            };
            let kernel = factory(&init).map_err(|source| SessionError::Kernel {
                node: n.name.clone(),
                op: n.op.clone(),
                device: devices[device].name().to_string(),
                source: Box::new(source),
            })?;
            nodes.push(PlanNode {
                node: Arc::clone(n),
                device,
                kernel,
                input_slots,
                first_output_slot: first_slot[t],
            });
        }
        let fetch_slots: Vec<u32> = fetches.iter().map(|f| slot_of(*f)).collect();
        for s in &fetch_slots {
            slot_uses[*s as usize] += 1;
        }
        let mut feed_dtypes = Vec::with_capacity(feeds.len());
        let mut feed_shapes = Vec::with_capacity(feeds.len());
        for f in feeds {
            let n = &all[f.node.index()];
            feed_dtypes.push(n.output_dtypes[f.index as usize]);
            let declared = match (n.op.as_str(), n.attrs.ints("shape")) {
                ("Placeholder", Ok(dims)) => Some((n.name.clone(), dims)),
                _ => None,
            };
            feed_shapes.push(declared);
        }
        let topology = topo.build()?;
        Ok(ExecPlan {
            nodes,
            topology,
            devices: devices.to_vec(),
            num_slots,
            slot_uses,
            feed_slots: (0..feeds.len()).map(|k| (feed_base + k) as u32).collect(),
            feed_dtypes,
            feed_shapes,
            feed_names: feeds.iter().map(|f| output_name(graph, *f)).collect(),
            fetch_slots,
        })
    }

    /// The name of the device of plan node `t`.
    pub(crate) fn device_name(&self, t: usize) -> String {
        self.devices[self.nodes[t].device].name().to_string()
    }
}
