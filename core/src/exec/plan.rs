//! Execution plans: the pruned, placed, kernel-instantiated form of a graph for one
//! signature of feeds, fetches and targets.
//!
//! Building a plan walks back from the fetches and targets through data and control edges;
//! a fed output stops a data edge (the feed replaces the tensor; `prune.rs` has the rules
//! for fed nodes that a control edge or a target reaches), so only what the step needs
//! runs. Each needed node becomes one scheduler task; its data and control inputs
//! become the task's predecessors. Every tensor the step handles (a node output or a
//! feed) gets a slot, and each slot knows how many consumers it has, so the last consumer
//! can take the tensor (freeing it early, or reusing its buffer in place).
//!
//! Plans are immutable and shared by every step with the same signature: the graph only
//! grows and nodes never change, so a plan stays valid as the graph grows.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use super::error::SessionError;
use super::placement::place;
use super::prune::{prune, Pruned};
use super::resources::{copy_pool_name, PoolHandle, ResourcePools, DEFAULT_COPY_POOL_CAPACITY};
use super::slot::{SlotPool, PINNED};
use crate::device::{Device, MemorySpace, COPY_FROM_HOST, COPY_TO_HOST};
use crate::graph::{
    Attrs, Graph, Node, NodeId, Output, MEMORY_HEAVY_ATTR, OUTPUT_BYTES_ATTR, POOLS_ATTR,
};
use crate::kernel::{BoxedKernel, KernelInit};
use crate::registry::KernelRegistry;
use crate::scheduler::Topology;
use crate::tensor::DType;

/// One node of a plan: a plan holds one per node it runs (a million for a graph that
/// size), so what most nodes lack is boxed out of the record. What a step reads for every
/// node (kernel, slots, output dtypes) is here, in the plan's one contiguous array: the
/// [`Node`] itself (a separate allocation per node) is read only for errors and traces.
pub(crate) struct PlanNode {
    pub(crate) node: Arc<Node>,
    pub(crate) kernel: BoxedKernel,
    /// Slot of each data input, in order.
    pub(crate) input_slots: SmallVec<[u32; 2]>,
    /// The dtype of each output, in order (the node's, copied here): what the step checks
    /// the kernel's outputs against.
    pub(crate) output_dtypes: SmallVec<[DType; 16]>,
    /// Slot of output 0; output `i` is at `first_output_slot + i`.
    pub(crate) first_output_slot: u32,
    /// Index of its device among the plan's.
    device: u32,
    /// What it waits for before it runs; `None` for an ungated node.
    gate: Option<Box<Gate>>,
}

/// What a gated node waits for: pool slots, memory under its device's budget.
struct Gate {
    /// Resource pools it needs, sorted by pool index.
    pools: SmallVec<[PoolHandle; 1]>,
    /// Bytes it declares for its outputs, when its device has a budget.
    reserve_bytes: Option<u64>,
}

impl PlanNode {
    fn new(
        node: Arc<Node>,
        device: usize,
        kernel: BoxedKernel,
        input_slots: SmallVec<[u32; 2]>,
        first_output_slot: u32,
        pools: SmallVec<[PoolHandle; 1]>,
        reserve_bytes: Option<u64>,
    ) -> PlanNode {
        let gate = (!pools.is_empty() || reserve_bytes.is_some()).then(|| {
            Box::new(Gate {
                pools,
                reserve_bytes,
            })
        });
        PlanNode {
            output_dtypes: node.output_dtypes.iter().copied().collect(),
            node,
            kernel,
            input_slots,
            first_output_slot,
            // A session's devices are a handful: their indices fit.
            device: device as u32,
            gate,
        }
    }

    /// Index of its device among the plan's devices.
    pub(crate) fn device(&self) -> usize {
        self.device as usize
    }

    /// Resource pools it needs, sorted by pool index.
    pub(crate) fn pools(&self) -> &[PoolHandle] {
        self.gate.as_ref().map_or(&[], |g| &g.pools)
    }

    /// Bytes it declares for its outputs, when its device has a budget.
    pub(crate) fn reserve_bytes(&self) -> Option<u64> {
        self.gate.as_ref().and_then(|g| g.reserve_bytes)
    }

    /// Whether the node must wait for a pool slot or memory before it runs.
    pub(crate) fn is_gated(&self) -> bool {
        self.gate.is_some()
    }
}

/// [`ExecPlan::slot_device`]'s "no device" in the packed per-slot array.
const NO_DEVICE: u32 = u32::MAX;

/// What a plan is built against: the session's devices, pools, budgets and policy.
pub(crate) struct PlanContext<'a> {
    pub(crate) devices: &'a [Arc<dyn Device>],
    /// Where kernels come from.
    pub(crate) kernels: &'a KernelRegistry,
    /// Soft placement: a pin no device satisfies falls back to the unpinned rule.
    pub(crate) soft_placement: bool,
    pub(crate) pools: &'a ResourcePools,
    /// Memory budget of each device.
    pub(crate) budgets: &'a [Option<u64>],
    /// Defer memory-heavy nodes until their consumers' other inputs are ready.
    pub(crate) memory_aware: bool,
    /// Give each task a cost estimate for the critical-path policy.
    pub(crate) critical_path: bool,
    /// The pool's steal group each device's tasks are bound to (the group of the device's
    /// NUMA node), by device index; `None`: any worker.
    pub(crate) device_groups: &'a [Option<u32>],
    /// The longest step, in µs, that runs on the awaiting thread
    /// ([`SessionOptions::inline_step_limit`](crate::session::SessionOptions::inline_step_limit);
    /// [`INLINE_MAX_MICROS`] by default).
    pub(crate) inline_max_micros: u32,
}

/// A pruned, placed graph ready to run many times.
pub(crate) struct ExecPlan {
    pub(crate) nodes: Vec<PlanNode>,
    pub(crate) topology: Topology,
    /// Host/device copies the plan inserted (the last `num_copies` nodes).
    pub(crate) num_copies: usize,
    pub(crate) devices: Vec<Arc<dyn Device>>,
    /// The devices (indices into `devices`) at least one node of the plan runs on: the
    /// ones a step waits for at its end (`Device::sync`).
    pub(crate) used_devices: Vec<usize>,
    /// Memory budget of each device.
    pub(crate) budgets: Vec<Option<u64>>,
    /// Device whose memory each slot's tensor counts against ([`NO_DEVICE`]: a feed, not
    /// counted); read through [`ExecPlan::slot_device`].
    slot_devices: Vec<u32>,
    /// Whether the plan's devices sit on more than one known NUMA node, so that an input
    /// can cross nodes (decided once here, not per input of every step).
    pub(crate) spans_numa_nodes: bool,
    /// Number of tensor slots.
    pub(crate) num_slots: usize,
    /// Uses of each slot in a step: consumer inputs, plus one per fetch of it.
    pub(crate) slot_uses: Vec<u32>,
    /// `slot_uses` with the slots of feeds and constants used more than once pinned
    /// (`slot::PINNED`: uses not counted), for steps that do not track memory.
    pub(crate) slot_uses_pinned: Vec<u32>,
    /// Slot arrays of finished steps, reused by the next ones.
    pub(crate) slot_pool: SlotPool,
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
    /// Whether a step of this plan may run on the thread that awaits it: every kernel
    /// is synchronous and ungated (nothing it waits for needs another thread) and every
    /// device keeps tensors in host memory (nothing to wait for at the step's end).
    inline_eligible: bool,
    /// How long the latest async step of this plan ran, in µs from its start on the
    /// polling thread or its hand-off to the pool until its run ended (plan lookup
    /// excluded), saturated ([`UNMEASURED`] before the first): read with
    /// [`ExecPlan::runs_inline`]. Relaxed: a hint, any recent value will do.
    recent_micros: AtomicU32,
    /// Async steps of this plan handed to the pool since the last probe, for
    /// [`ExecPlan::runs_inline`]'s probes. Relaxed: a hint.
    pool_steps: AtomicU32,
    /// The longest step, in µs, that runs inline ([`PlanContext::inline_max_micros`]).
    inline_max_micros: u32,
}

/// The longest step, in µs, that runs on the awaiting thread unless the session says
/// otherwise: below this a hand-off to a pool worker and back (two thread wake-ups, 5–20
/// µs each on a small machine) costs as much as the step itself, while holding an
/// executor thread this long is harmless.
pub(crate) const INLINE_MAX_MICROS: u32 = 50;

/// A plan whose pool steps take at most this long, in µs (or its inline limit, if
/// longer), still runs one step in [`INLINE_PROBE_EVERY`] inline: a pool step's time
/// includes its hand-offs, which on a
/// busy machine alone pass [`INLINE_MAX_MICROS`], so only a step run inline tells whether
/// the step itself is short. Longer steps never probe (holding the awaiting thread
/// that long once in a while is not worth it).
pub(crate) const INLINE_PROBE_MAX_MICROS: u32 = 20 * INLINE_MAX_MICROS;

/// A plan's step time before its first step: as a step too long to probe, so the first
/// step goes to the pool. Nothing bounds an unmeasured step (a graph of thousands of
/// MatMuls is eligible), and on the awaiting thread it would hold that thread, e.g. a
/// server's only async runtime thread, with every other request, abort and keep-alive
/// ping, for the whole step.
pub(crate) const UNMEASURED: u32 = u32::MAX;

/// How often (every how many pool steps) a plan within [`INLINE_PROBE_MAX_MICROS`]
/// probes an inline step.
pub(crate) const INLINE_PROBE_EVERY: u32 = 16;

/// Whether an eligible plan's next async step runs inline, given its latest step's time
/// (`recent`, µs), its inline limit (`limit`, µs) and its count of pool steps since the
/// last probe (advanced here): see [`ExecPlan::runs_inline`].
fn inline_next(recent: u32, limit: u32, pool_steps: &AtomicU32) -> bool {
    if recent <= limit {
        return true;
    }
    recent <= INLINE_PROBE_MAX_MICROS.max(limit)
        && pool_steps.fetch_add(1, Ordering::Relaxed) % INLINE_PROBE_EVERY == INLINE_PROBE_EVERY - 1
}

/// A spawned step's run ([`ThreadPool::spawn_run`](crate::scheduler::ThreadPool::spawn_run))
/// keeps its plan alive, and with it the plan's topology.
impl AsRef<Topology> for ExecPlan {
    fn as_ref(&self) -> &Topology {
        &self.topology
    }
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
        cx: &PlanContext<'_>,
        feeds: &[Output],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<ExecPlan, SessionError> {
        let devices = cx.devices;
        let all = graph.nodes();
        let Pruned { fed, needed } = prune(graph, &all, feeds, fetches, targets)?;

        // Tasks in graph order (a topological order, since inputs precede users).
        let mut task_of: Vec<u32> = vec![u32::MAX; all.len()];
        let mut order: Vec<usize> = Vec::new();
        for i in 0..all.len() {
            if needed[i] {
                task_of[i] = order.len() as u32;
                order.push(i);
            }
        }

        // Place every task, then give every tensor a slot: node outputs first, then
        // feeds, then the outputs of copies inserted below.
        let placed: Vec<usize> = order
            .iter()
            .map(|&i| place(&all[i], devices, cx.kernels, cx.soft_placement))
            .collect::<Result<_, _>>()?;
        let mut slots = SlotTable::default();
        let mut first_slot: Vec<u32> = Vec::with_capacity(order.len());
        for (t, &i) in order.iter().enumerate() {
            let home = home_of(devices, placed[t]);
            first_slot.push(slots.len());
            for dtype in &all[i].output_dtypes {
                slots.push(*dtype, home, Some(t as u32));
            }
        }
        let feed_base = slots.len() as usize;
        for f in feeds {
            slots.push(
                all[f.node.index()].output_dtypes[f.index as usize],
                None,
                None,
            );
        }
        let slot_of = |o: Output| -> u32 {
            match fed.get(&o) {
                Some(k) => (feed_base + k) as u32,
                None => first_slot[task_of[o.node.index()] as usize] + o.index,
            }
        };

        let mut copies = Copies {
            devices,
            kernels: cx.kernels,
            pools: cx.pools,
            nodes: Vec::new(),
            cache: HashMap::new(),
            base: order.len(),
        };
        let mut edges: Vec<(u32, u32)> = Vec::new();
        let mut nodes = Vec::with_capacity(order.len());
        for (t, &i) in order.iter().enumerate() {
            let n = &all[i];
            let device = placed[t];
            // The node's own kernel first: a dtype its device cannot take is reported
            // against this node, not against a copy inserted for one of its inputs.
            let input_dtypes: SmallVec<[DType; 2]> = n
                .inputs
                .iter()
                .map(|inp| slots.dtypes[slot_of(*inp) as usize])
                .collect();
            let kernel = instantiate(cx.kernels, n, &input_dtypes, devices, device)?;
            let mut input_slots = SmallVec::new();
            for inp in &n.inputs {
                let s = copies.route(
                    &mut slots,
                    &mut edges,
                    slot_of(*inp),
                    home_of(devices, device),
                )?;
                slots.uses[s as usize] += 1;
                input_slots.push(s);
                if let Some(p) = slots.producers[s as usize] {
                    edges.push((p, t as u32));
                }
            }
            for c in &n.control_inputs {
                if needed[c.index()] {
                    edges.push((task_of[c.index()], t as u32));
                }
            }
            let pools = node_pools(n, cx.pools)?;
            let reserve_bytes = declared_bytes(n, cx.budgets[device], devices[device].as_ref())?;
            nodes.push(PlanNode::new(
                Arc::clone(n),
                device,
                kernel,
                input_slots,
                first_slot[t],
                pools,
                reserve_bytes,
            ));
        }
        if cx.memory_aware {
            defer_memory_heavy(&all, &order, &task_of, &needed, &fed, &mut edges);
        }
        let mut fetch_slots = Vec::with_capacity(fetches.len());
        for f in fetches {
            let s = copies.route(&mut slots, &mut edges, slot_of(*f), None)?;
            slots.uses[s as usize] += 1;
            fetch_slots.push(s);
        }
        let num_copies = copies.nodes.len();
        nodes.extend(copies.nodes);
        let mut topo = Topology::builder(nodes.len());
        for (from, to) in edges {
            topo.add_edge(from, to);
        }
        if cx.critical_path {
            for (t, pn) in nodes.iter().enumerate() {
                topo.set_cost(t as u32, cost_estimate(&pn.node));
            }
        }
        // Kernels of a device on NUMA node k run on node k's workers only.
        for (t, pn) in nodes.iter().enumerate() {
            if let Some(Some(g)) = cx.device_groups.get(pn.device()) {
                topo.set_group(t as u32, *g);
            }
        }
        let topology = topo.build()?;
        let num_slots = slots.len() as usize;
        let spans_numa_nodes = {
            let mut nodes = devices.iter().filter_map(|d| d.numa_node());
            let first = nodes.next();
            nodes.any(|n| Some(n) != first)
        };
        let slot_devices: Vec<u32> = slots
            .producers
            .iter()
            .map(|p| p.map_or(NO_DEVICE, |t| nodes[t as usize].device))
            .collect();
        // Feeds (the caller holds the tensor) and constants (their kernel does) are pinned:
        // freeing them at their last use would free nothing ([`slot`](super::slot)).
        let slot_uses_pinned = (slots.uses.iter().zip(&slots.producers))
            .map(|(&uses, producer)| {
                let pinned = match producer {
                    None => true,
                    Some(t) => nodes[*t as usize].node.op == "Const",
                };
                if pinned && uses > 1 {
                    PINNED
                } else {
                    uses
                }
            })
            .collect();
        let slot_uses = slots.uses;
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
        let mut used_devices: Vec<usize> = nodes.iter().map(PlanNode::device).collect();
        used_devices.sort_unstable();
        used_devices.dedup();
        let inline_eligible = nodes
            .iter()
            .all(|n| matches!(n.kernel, BoxedKernel::Sync(_)) && !n.is_gated())
            && used_devices
                .iter()
                .all(|&d| matches!(devices[d].memory_space(), MemorySpace::Host));
        Ok(ExecPlan {
            inline_eligible,
            recent_micros: AtomicU32::new(UNMEASURED),
            pool_steps: AtomicU32::new(0),
            inline_max_micros: cx.inline_max_micros,
            used_devices,
            nodes,
            topology,
            num_copies,
            devices: devices.to_vec(),
            budgets: cx.budgets.to_vec(),
            slot_devices,
            spans_numa_nodes,
            num_slots,
            slot_uses,
            slot_uses_pinned,
            slot_pool: SlotPool::default(),
            feed_slots: (0..feeds.len()).map(|k| (feed_base + k) as u32).collect(),
            feed_dtypes,
            feed_shapes,
            feed_names: feeds.iter().map(|f| output_name(graph, *f)).collect(),
            fetch_slots,
        })
    }

    /// Whether the next step of this plan should run on the thread that awaits it (an
    /// async step, [`Session::run_async`](crate::session::Session::run_async)) instead
    /// of being handed to the pool: the plan is eligible and its latest step took at
    /// most its session's inline limit ([`INLINE_MAX_MICROS`] by default). An eligible
    /// plan's first step goes to the pool ([`UNMEASURED`]); the step after one that took
    /// longer goes to the pool too, and so do the following ones until a step is short
    /// again. A pool step's time includes its hand-offs (two thread
    /// wake-ups, which a busy machine stretches past the limit by themselves), so a
    /// plan whose pool steps took at most [`INLINE_PROBE_MAX_MICROS`] runs every
    /// [`INLINE_PROBE_EVERY`]th step inline as a probe: that step's time is the step's
    /// own, and a short one brings the plan back inline. The measure follows the data:
    /// a step whose inputs grew may hold the awaiting thread once, for the length of
    /// that one step.
    pub(crate) fn runs_inline(&self) -> bool {
        self.inline_eligible
            && inline_next(
                self.recent_micros.load(Ordering::Relaxed),
                self.inline_max_micros,
                &self.pool_steps,
            )
    }

    /// Records how long an async step of this plan ran (failed ones too).
    pub(crate) fn note_step_time(&self, took: Duration) {
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        self.recent_micros.store(micros, Ordering::Relaxed);
    }

    /// The number of host/device copies each step makes.
    pub(crate) fn num_copies(&self) -> usize {
        self.num_copies
    }

    /// The name of the device of plan node `t`.
    pub(crate) fn device_name(&self, t: usize) -> String {
        self.devices[self.nodes[t].device()].name().to_string()
    }

    /// The device whose memory `slot`'s tensor counts against (`None`: a feed's).
    pub(crate) fn slot_device(&self, slot: u32) -> Option<usize> {
        let d = self.slot_devices[slot as usize];
        (d != NO_DEVICE).then_some(d as usize)
    }
}

/// Builds the kernel of a node placed on `devices[device]`.
fn instantiate(
    kernels: &KernelRegistry,
    node: &Arc<Node>,
    input_dtypes: &[DType],
    devices: &[Arc<dyn Device>],
    device: usize,
) -> Result<BoxedKernel, SessionError> {
    let d = &devices[device];
    let factory = kernels
        .lookup(&node.op, d.as_ref())
        .ok_or_else(|| SessionError::NoKernel {
            node: node.name.clone(),
            op: node.op.to_string(),
            device: d.name().to_string(),
            device_type: d.device_type().to_string(),
        })?;
    let init = KernelInit {
        node,
        input_dtypes,
        device: d,
    };
    factory(&init).map_err(|source| SessionError::Kernel {
        node: node.name.clone(),
        op: node.op.to_string(),
        device: d.name().to_string(),
        source: Box::new(source),
    })
}

/// Where a device's kernels keep tensors: `None` for host memory, else the device.
fn home_of(devices: &[Arc<dyn Device>], device: usize) -> Option<usize> {
    (devices[device].memory_space() == MemorySpace::Device).then_some(device)
}

/// Per-slot facts while a plan is built.
#[derive(Default)]
struct SlotTable {
    dtypes: Vec<DType>,
    /// Device memory that holds the slot's tensor (`None`: host memory).
    homes: Vec<Option<usize>>,
    /// The task that fills the slot (`None`: a feed).
    producers: Vec<Option<u32>>,
    uses: Vec<u32>,
}

impl SlotTable {
    fn len(&self) -> u32 {
        self.dtypes.len() as u32
    }

    fn push(&mut self, dtype: DType, home: Option<usize>, producer: Option<u32>) -> u32 {
        self.dtypes.push(dtype);
        self.homes.push(home);
        self.producers.push(producer);
        self.uses.push(0);
        self.len() - 1
    }
}

/// The host/device copies a plan inserts, one per (tensor, destination), shared by every
/// consumer of that tensor on that destination.
struct Copies<'a> {
    devices: &'a [Arc<dyn Device>],
    kernels: &'a KernelRegistry,
    pools: &'a ResourcePools,
    nodes: Vec<PlanNode>,
    cache: HashMap<(u32, Option<usize>), u32>,
    /// Task id of the first copy.
    base: usize,
}

impl Copies<'_> {
    /// The slot that holds `slot`'s tensor in the memory `want`, inserting copies as
    /// needed: device to host on the source device, host to device on the destination.
    fn route(
        &mut self,
        slots: &mut SlotTable,
        edges: &mut Vec<(u32, u32)>,
        slot: u32,
        want: Option<usize>,
    ) -> Result<u32, SessionError> {
        let home = slots.homes[slot as usize];
        if home == want {
            return Ok(slot);
        }
        if let Some(s) = self.cache.get(&(slot, want)) {
            return Ok(*s);
        }
        let routed = match home {
            Some(src) => {
                let on_host = self.copy(slots, edges, slot, src, COPY_TO_HOST, None)?;
                self.route(slots, edges, on_host, want)?
            }
            None => {
                let dst = want.expect("home != want, and home is the host");
                self.copy(slots, edges, slot, dst, COPY_FROM_HOST, Some(dst))?
            }
        };
        self.cache.insert((slot, want), routed);
        Ok(routed)
    }

    fn copy(
        &mut self,
        slots: &mut SlotTable,
        edges: &mut Vec<(u32, u32)>,
        from: u32,
        device: usize,
        op: &str,
        home: Option<usize>,
    ) -> Result<u32, SessionError> {
        let task = (self.base + self.nodes.len()) as u32;
        let dtype = slots.dtypes[from as usize];
        let node = Arc::new(Node {
            name: format!("{op}/{from}/{}", self.devices[device].name()),
            op: op.to_string().into(),
            inputs: Vec::new(),
            control_inputs: Vec::new(),
            device: self.devices[device].name().to_spec().into(),
            attrs: Attrs::new(),
            output_dtypes: smallvec::smallvec![dtype],
        });
        let kernel = instantiate(self.kernels, &node, &[dtype], self.devices, device)?;
        if let Some(p) = slots.producers[from as usize] {
            edges.push((p, task));
        }
        slots.uses[from as usize] += 1;
        let out = slots.push(dtype, home, Some(task));
        let name = self.devices[device].name().to_string();
        let pool = self
            .pools
            .get_or_create(&copy_pool_name(&name), DEFAULT_COPY_POOL_CAPACITY);
        self.nodes.push(PlanNode::new(
            node,
            device,
            kernel,
            smallvec::smallvec![from],
            out,
            smallvec::smallvec![pool],
            None,
        ));
        Ok(out)
    }
}

/// The pools a node names, resolved and sorted by pool index.
fn node_pools(
    node: &Node,
    pools: &ResourcePools,
) -> Result<SmallVec<[PoolHandle; 1]>, SessionError> {
    let Ok(names) = node.attrs.strings(POOLS_ATTR) else {
        return Ok(SmallVec::new());
    };
    let mut handles: SmallVec<[PoolHandle; 1]> = SmallVec::new();
    for name in names {
        handles.push(pools.get(&name, &node.name, &node.op)?);
    }
    handles.sort_by_key(|p| p.index);
    handles.dedup_by_key(|p| p.index);
    Ok(handles)
}

/// A node's cost for the critical-path policy: its declared output size in elements,
/// or 1 (behaviour at the time of writing; costs only order ready nodes).
fn cost_estimate(node: &Node) -> u64 {
    let declared = node.attrs.int(OUTPUT_BYTES_ATTR).ok().filter(|&b| b > 0);
    let element = node.output_dtypes.first().map_or(1, |d| d.size_of().max(1)) as u64;
    declared.map_or(1, |b| (b as u64 / element).max(1))
}

/// The bytes a node on a budgeted device must reserve; a declaration larger than the
/// whole budget can never run and fails the plan.
fn declared_bytes(
    node: &Node,
    budget: Option<u64>,
    device: &dyn Device,
) -> Result<Option<u64>, SessionError> {
    let (Some(budget), Ok(bytes)) = (budget, node.attrs.int(OUTPUT_BYTES_ATTR)) else {
        return Ok(None);
    };
    let bytes = bytes.max(0) as u64;
    if bytes > budget {
        return Err(SessionError::MemoryBudgetExceeded {
            node: node.name.clone(),
            op: node.op.to_string(),
            device: device.name().to_string(),
            budget,
            needed: bytes,
            live: 0,
        });
    }
    Ok(Some(bytes))
}

/// Declared output bytes from which the memory-aware policy treats a node as
/// memory-heavy even when it is not marked (behaviour at the time of writing).
pub const MEMORY_HEAVY_DECLARED_BYTES: i64 = 16 << 20;

/// The memory-aware policy as plan edges: a memory-heavy node starts only after every
/// other producer its consumers wait for has finished, so its output is made as late as
/// possible and lives as briefly as possible. An edge that would close a cycle (the
/// other producer depends on the heavy node) is skipped.
fn defer_memory_heavy(
    all: &[Arc<Node>],
    order: &[usize],
    task_of: &[u32],
    needed: &[bool],
    fed: &HashMap<Output, usize>,
    edges: &mut Vec<(u32, u32)>,
) {
    let heavy: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| {
            let a = &all[i].attrs;
            a.bool_or(MEMORY_HEAVY_ATTR, false).unwrap_or(false)
                || a.int(OUTPUT_BYTES_ATTR)
                    .is_ok_and(|b| b >= MEMORY_HEAVY_DECLARED_BYTES)
        })
        .collect();
    if heavy.is_empty() {
        return;
    }
    // Consumers of each node, among the needed ones.
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); all.len()];
    for &i in order {
        for inp in &all[i].inputs {
            if !fed.contains_key(inp) {
                users[inp.node.index()].push(i);
            }
        }
        for c in &all[i].control_inputs {
            if needed[c.index()] {
                users[c.index()].push(i);
            }
        }
    }
    for h in heavy {
        // Everything downstream of the heavy node: an edge from there would be a cycle.
        let mut downstream = vec![false; all.len()];
        let mut stack = vec![h];
        while let Some(n) = stack.pop() {
            for &u in &users[n] {
                if !std::mem::replace(&mut downstream[u], true) {
                    stack.push(u);
                }
            }
        }
        for &consumer in &users[h] {
            for inp in &all[consumer].inputs {
                let p = inp.node.index();
                if p != h && !fed.contains_key(inp) && needed[p] && !downstream[p] {
                    edges.push((task_of[p], task_of[h]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_steps_run_inline_and_slow_pool_steps_probe_one_in_sixteen() {
        let count = AtomicU32::new(0);
        // A plan not yet measured: to the pool, no probe.
        assert!(!(0..100).any(|_| inline_next(UNMEASURED, INLINE_MAX_MICROS, &count)));
        assert_eq!(count.load(Ordering::Relaxed), 0);
        // Short steps: always inline, the counter untouched.
        assert!((0..100).all(|_| inline_next(0, INLINE_MAX_MICROS, &count)));
        assert!((0..100).all(|_| inline_next(INLINE_MAX_MICROS, INLINE_MAX_MICROS, &count)));
        assert_eq!(count.load(Ordering::Relaxed), 0);
        // Pool steps a little too long (maybe only their hand-offs): one in 16 probes.
        let probes = (0..160)
            .filter(|_| inline_next(INLINE_MAX_MICROS + 1, INLINE_MAX_MICROS, &count))
            .count();
        assert_eq!(probes, 10);
        let probes = (0..160)
            .filter(|_| inline_next(INLINE_PROBE_MAX_MICROS, INLINE_MAX_MICROS, &count))
            .count();
        assert_eq!(probes, 10);
        // Long steps never hold the awaiting thread.
        assert!(!(0..160).any(|_| inline_next(
            INLINE_PROBE_MAX_MICROS + 1,
            INLINE_MAX_MICROS,
            &count
        )));
    }

    #[test]
    fn a_session_s_inline_limit_moves_both_bounds() {
        let count = AtomicU32::new(0);
        let limit = 250;
        // Up to the session's limit: inline, no probe counted.
        assert!((0..100).all(|_| inline_next(limit, limit, &count)));
        assert_eq!(count.load(Ordering::Relaxed), 0);
        // Longer: to the pool, probing one in 16 as with the default limit.
        let probes = (0..160)
            .filter(|_| inline_next(limit + 1, limit, &count))
            .count();
        assert_eq!(probes, 10);
        // A limit past the probe bound: steps up to it run inline, longer ones never
        // probe.
        let big = 2 * INLINE_PROBE_MAX_MICROS;
        assert!(inline_next(big, big, &count));
        assert!(!(0..160).any(|_| inline_next(big + 1, big, &count)));
        // Unmeasured plans still go to the pool.
        assert!(!(0..100).any(|_| inline_next(UNMEASURED, limit, &count)));
    }
}
