//! How the CPU backend lays itself over the machine: which CPU devices exist
//! ([`CpuLayout`]), which worker runs on which PU ([`PinningPlan`]), and the
//! [`CpuRuntime`] that holds the devices and a scheduler pool whose workers pin
//! themselves.
//!
//! # Pinning and memory locality
//!
//! Each worker binds itself to its PU right after it starts (the scheduler's
//! `on_worker_start` hook), never the thread that builds the pool: a binding made before
//! spawning would be inherited by every thread. Steal groups follow NUMA nodes, so an idle
//! worker steals from a worker of its own node before it crosses to another
//! (`ThreadPool::steal_stats` counts both).
//!
//! Memory placement is by *first touch*: a pinned worker's kernel allocates and writes its
//! outputs, and Linux's default policy places those pages on the worker's node. The pool
//! names the NUMA node of each steal group (`steal_group_nodes`), so a session binds the
//! kernels of a device on node `k` — with [`CpuLayout::PerNumaNode`], `CPU:k` — to node
//! `k`'s workers: a steal never moves them to another node (the scheduler's `affinity`
//! module), and their intra-op pieces (`parallel_for`) stay there too. Large outputs come
//! from a per-node buffer cache (`buffers.rs`) that records the node in the tensor's
//! [`BufferOrigin`](magpie_core::tensor::BufferOrigin) (`Tensor::numa_node`). The step's
//! `RunMetadata::remote_numa_bytes` counts the input bytes a kernel read from a tensor
//! produced on a device of another node.
//!
//! # Degrading
//!
//! On a machine with one NUMA node, where hwloc cannot load, with a synthetic topology, or
//! where the OS refuses a binding (a container's CPU set), workers run unpinned and one
//! `tracing` warning per process says why — only an info line on a one-node machine,
//! where pinning would gain nothing; nothing fails.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use magpie_core::device::Device;
use magpie_core::scheduler::{IdleSpin, SchedulerError, ThreadPool};
use magpie_core::session::SessionOptions;

use crate::device::CpuDevice;
use crate::topology::{Binder, MachineTopology, TopologySource};

/// Which CPU devices the backend creates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CpuLayout {
    /// One device, `CPU:0`, over every core (of the selected nodes).
    #[default]
    Single,
    /// One device per NUMA node with cores: `CPU:0`, `CPU:1`, … in node order, each
    /// reporting its node through `Device::numa_node`.
    PerNumaNode,
}

impl fmt::Display for CpuLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpuLayout::Single => "single",
            CpuLayout::PerNumaNode => "per-numa-node",
        })
    }
}

/// How to build a [`CpuRuntime`].
#[derive(Clone, Debug, Default)]
pub struct CpuOptions {
    /// Which devices to create.
    pub layout: CpuLayout,
    /// Use only these NUMA nodes (OS indices); default: every node with cores.
    pub numa_nodes: Option<Vec<usize>>,
    /// Worker threads; default: one per PU of the used nodes.
    pub num_workers: Option<usize>,
    /// Do not pin workers (no warning).
    pub unpinned: bool,
    /// How the pool's idle workers look for work before they park (default
    /// [`IdleSpin::LONG`]; `magpie server` picks a short spin, see its `--idle-spin`).
    pub idle_spin: IdleSpin,
}

impl CpuOptions {
    /// Options with this layout and defaults otherwise.
    pub fn with_layout(layout: CpuLayout) -> CpuOptions {
        CpuOptions {
            layout,
            ..CpuOptions::default()
        }
    }
}

/// Why the CPU backend could not be set up as asked (bad options; the machine itself
/// never makes setup fail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuSetupError {
    /// An option named a NUMA node the machine does not have (or one without cores).
    #[error("NUMA node {node} does not exist; this machine has NUMA node(s) {available}")]
    UnknownNumaNode {
        /// The node asked for.
        node: usize,
        /// The nodes that exist, as a list.
        available: String,
    },
    /// The option selected no node.
    #[error("numa_nodes selects no NUMA node")]
    NoNodes,
    /// The scheduler pool could not be built.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
}

/// Where one worker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerPin {
    /// NUMA node (OS index).
    pub node: usize,
    /// PU (OS index) it binds to.
    pub pu: usize,
}

/// Worker `i` → PU, workers of one node numbered together (node order), cores before
/// their second hardware threads, so that `n` workers below the PU count get one core
/// each first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinningPlan {
    /// `workers[i]`: where worker `i` runs.
    pub workers: Vec<WorkerPin>,
}

impl PinningPlan {
    /// The plan for `num_workers` workers over `nodes` (OS indices, in order) of
    /// `topology`; workers are spread over the nodes as evenly as possible.
    /// Nodes unknown to `topology` are skipped (validate first).
    pub fn new(topology: &MachineTopology, nodes: &[usize], num_workers: usize) -> PinningPlan {
        let nodes: Vec<_> = nodes.iter().filter_map(|&n| topology.node(n)).collect();
        let mut workers = Vec::with_capacity(num_workers);
        if nodes.is_empty() {
            return PinningPlan { workers };
        }
        for (k, node) in nodes.iter().enumerate() {
            let count = num_workers / nodes.len() + usize::from(k < num_workers % nodes.len());
            // First PU of every core, then the second of every core, and so on.
            let depth = node.cores.iter().map(|c| c.pus.len()).max().unwrap_or(0);
            let order: Vec<usize> = (0..depth)
                .flat_map(|t| node.cores.iter().filter_map(move |c| c.pus.get(t).copied()))
                .collect();
            for t in 0..count {
                workers.push(WorkerPin {
                    node: node.os_index,
                    pu: order[t % order.len()],
                });
            }
        }
        PinningPlan { workers }
    }

    /// The workers of each node, in node order: the pool's steal groups.
    pub fn steal_groups(&self) -> Vec<Vec<usize>> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, w) in self.workers.iter().enumerate() {
            match groups.iter_mut().find(|(n, _)| *n == w.node) {
                Some((_, g)) => g.push(i),
                None => groups.push((w.node, vec![i])),
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }

    /// The NUMA node of each of [`steal_groups`](Self::steal_groups), in the same order.
    pub fn group_nodes(&self) -> Vec<usize> {
        let mut nodes: Vec<usize> = Vec::new();
        for w in &self.workers {
            if !nodes.contains(&w.node) {
                nodes.push(w.node);
            }
        }
        nodes
    }

    /// The workers planned on `node`.
    pub fn workers_on(&self, node: usize) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|&i| self.workers[i].node == node)
            .collect()
    }
}

/// The devices [`CpuLayout`] gives over `nodes` (OS indices, validated) of `topology`.
pub fn layout_devices(
    topology: &MachineTopology,
    nodes: &[usize],
    layout: CpuLayout,
) -> Vec<Arc<CpuDevice>> {
    let selected: Vec<_> = nodes.iter().filter_map(|&n| topology.node(n)).collect();
    match layout {
        CpuLayout::Single => {
            let cores = selected.iter().map(|n| n.cores.len()).sum::<usize>().max(1);
            let node = match selected.as_slice() {
                [only] => Some(only.os_index),
                _ => None,
            };
            let memory: Option<u64> = selected.iter().map(|n| n.memory_bytes).sum();
            let device = CpuDevice::on_node(0, node, cores);
            let limit = memory.or(device.memory_limit());
            vec![Arc::new(device.with_memory_limit(limit))]
        }
        CpuLayout::PerNumaNode => selected
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let device = CpuDevice::on_node(k as u32, Some(n.os_index), n.cores.len());
                let limit = n.memory_bytes.or(device.memory_limit());
                Arc::new(device.with_memory_limit(limit))
            })
            .collect(),
    }
}

/// The NUMA nodes `options` selects, checked against `topology`.
///
/// # Errors
///
/// [`CpuSetupError::UnknownNumaNode`] listing the nodes that exist.
pub fn select_nodes(
    topology: &MachineTopology,
    options: &CpuOptions,
) -> Result<Vec<usize>, CpuSetupError> {
    let all: Vec<usize> = topology.nodes.iter().map(|n| n.os_index).collect();
    let Some(asked) = &options.numa_nodes else {
        return Ok(all);
    };
    let mut out = Vec::new();
    for &node in asked {
        if !all.contains(&node) {
            let available: Vec<String> = all.iter().map(usize::to_string).collect();
            return Err(CpuSetupError::UnknownNumaNode {
                node,
                available: available.join(", "),
            });
        }
        if !out.contains(&node) {
            out.push(node);
        }
    }
    if out.is_empty() {
        return Err(CpuSetupError::NoNodes);
    }
    Ok(out)
}

thread_local! {
    /// The NUMA node this thread was planned on, if it is a worker of a [`CpuRuntime`].
    static WORKER_NODE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The NUMA node the current thread was planned on: `Some` on a worker of a
/// [`CpuRuntime`] (pinned or not), `None` elsewhere.
pub fn current_worker_node() -> Option<usize> {
    WORKER_NODE.with(Cell::get)
}

/// Whether this process already warned about running unpinned (one warning per process).
static WARNED: AtomicBool = AtomicBool::new(false);

fn warn_once(why: &str) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!("magpie CPU workers run unpinned: {why}");
    }
}

/// Counts workers through their start hook; `build` waits for all of them.
#[derive(Debug, Default)]
struct PinStatus {
    started: Mutex<usize>,
    all_started: Condvar,
    pinned: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

/// The CPU devices and a pool whose workers follow a [`PinningPlan`].
#[derive(Debug)]
pub struct CpuRuntime {
    topology: MachineTopology,
    layout: CpuLayout,
    devices: Vec<Arc<CpuDevice>>,
    plan: PinningPlan,
    pool: ThreadPool,
    pinned: usize,
    unpinned_reason: Option<String>,
}

impl CpuRuntime {
    /// Reads the machine (falling back to an assumed one-node topology when hwloc cannot
    /// load) and builds devices and workers for `options`.
    ///
    /// # Errors
    ///
    /// Only for bad options ([`CpuSetupError`]); the machine never makes it fail.
    pub fn build(options: &CpuOptions) -> Result<CpuRuntime, CpuSetupError> {
        match MachineTopology::detect() {
            Ok((topology, binder)) => CpuRuntime::build_on(topology, Some(binder), options),
            Err(e) => CpuRuntime::build_on(MachineTopology::assumed(e.to_string()), None, options),
        }
    }

    /// Builds devices and workers over a given topology; workers bind through `binder`
    /// when there is one (none for synthetic or hand-built topologies).
    ///
    /// # Errors
    ///
    /// As for [`build`](Self::build).
    pub fn build_on(
        topology: MachineTopology,
        binder: Option<Binder>,
        options: &CpuOptions,
    ) -> Result<CpuRuntime, CpuSetupError> {
        let nodes = select_nodes(&topology, options)?;
        let devices = layout_devices(&topology, &nodes, options.layout);
        let pus: usize = nodes
            .iter()
            .filter_map(|&n| topology.node(n))
            .map(|n| n.pus().count())
            .sum();
        let num_workers = options.num_workers.unwrap_or(pus.max(1));
        let plan = PinningPlan::new(&topology, &nodes, num_workers);
        let unpinned_reason = if options.unpinned {
            None
        } else if binder.is_none() {
            Some(match &topology.source {
                TopologySource::Synthetic(d) => format!("synthetic topology {d:?} (no binding)"),
                TopologySource::Assumed(why) => format!("no hwloc topology ({why})"),
                TopologySource::Detected => "no binder".to_owned(),
            })
        } else if topology.nodes.len() == 1 {
            Some("the machine has one NUMA node".to_owned())
        } else {
            None
        };
        // With hwloc working on a one-node machine there is nothing to gain from pinning:
        // worth a note, not a warning.
        let one_node = binder.is_some() && topology.nodes.len() == 1;
        let binder = match (&unpinned_reason, options.unpinned) {
            (None, false) => binder.map(Arc::new),
            _ => None,
        };
        match &unpinned_reason {
            Some(why) if one_node => {
                tracing::info!("magpie CPU workers run unpinned: {why}");
            }
            Some(why) => warn_once(why),
            None => {}
        }
        let status = Arc::new(PinStatus::default());
        let hook = {
            let plan = plan.clone();
            let status = Arc::clone(&status);
            move |index: usize| {
                if let Some(pin) = plan.workers.get(index) {
                    WORKER_NODE.with(|c| c.set(Some(pin.node)));
                    if let Some(binder) = &binder {
                        match binder.bind_current_thread(pin.pu) {
                            Ok(()) => {
                                status.pinned.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                let mut first = lock(&status.first_error);
                                if first.is_none() {
                                    *first = Some(format!(
                                        "binding worker {index} to PU {}: {e}",
                                        pin.pu
                                    ));
                                }
                            }
                        }
                    }
                }
                *lock(&status.started) += 1;
                status.all_started.notify_all();
            }
        };
        let mut builder = ThreadPool::builder()
            .num_workers(num_workers)
            .steal_groups(plan.steal_groups())
            .steal_group_nodes(plan.group_nodes())
            .on_worker_start(Arc::new(hook))
            .idle_spin(options.idle_spin);
        if nodes.len() > 1 {
            // No helper slots: every task runs on a worker of its node's group, never on
            // the (unpinned) thread that called `execute`, so first touch stays on the
            // right node. With one node there is no wrong node, and the caller keeps its
            // helper slots: a short step runs on the thread that asked for it
            // (`ThreadPool::execute_on_caller`) instead of waking a worker and waiting
            // for it.
            builder = builder.helper_slots(0);
        }
        let pool = builder.build()?;
        // Wait (bounded) until every worker ran its hook, so the pinning figures are final.
        let mut started = lock(&status.started);
        while *started < num_workers {
            let (guard, timeout) = status
                .all_started
                .wait_timeout(started, Duration::from_secs(10))
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            started = guard;
            if timeout.timed_out() {
                break;
            }
        }
        drop(started);
        let mut unpinned_reason = unpinned_reason;
        if let Some(e) = lock(&status.first_error).take() {
            warn_once(&format!("the OS refused a binding ({e})"));
            unpinned_reason = Some(e);
        }
        Ok(CpuRuntime {
            topology,
            layout: options.layout,
            devices,
            plan,
            pool,
            pinned: status.pinned.load(Ordering::Relaxed),
            unpinned_reason,
        })
    }

    /// The topology it was built over.
    pub fn topology(&self) -> &MachineTopology {
        &self.topology
    }

    /// The layout it was built with.
    pub fn layout(&self) -> CpuLayout {
        self.layout
    }

    /// Its devices, `CPU:0` first.
    pub fn devices(&self) -> &[Arc<CpuDevice>] {
        &self.devices
    }

    /// Where each worker runs (or would run, when unpinned).
    pub fn plan(&self) -> &PinningPlan {
        &self.plan
    }

    /// The scheduler pool (steal groups = NUMA nodes).
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// How many workers the OS actually bound to their PU.
    pub fn pinned_workers(&self) -> usize {
        self.pinned
    }

    /// Why workers are not (all) pinned, if they are not.
    pub fn unpinned_reason(&self) -> Option<&str> {
        self.unpinned_reason.as_deref()
    }

    /// Session options over these devices and this pool (add other backends' devices
    /// after the CPUs).
    pub fn session_options(&self) -> SessionOptions {
        let devices: Vec<Arc<dyn Device>> = self
            .devices
            .iter()
            .map(|d| Arc::clone(d) as Arc<dyn Device>)
            .collect();
        SessionOptions {
            pool: Some(self.pool.clone()),
            ..SessionOptions::with_devices(devices)
        }
    }
}

/// Locks a std mutex, ignoring poisoning (the data are counters).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
