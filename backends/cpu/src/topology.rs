//! The machine's topology (NUMA nodes, packages, cores, PUs) through `hwlocality`, as the
//! plain-data [`MachineTopology`] the rest of the backend reads, and the [`Binder`] that
//! pins the calling thread to one PU.
//!
//! This file and `conv.rs` are the only ones that name `hwlocality` types. Everything
//! else (the pinning plan, devices, tests) works on [`MachineTopology`], which can also
//! be built by hand ([`MachineTopology::uniform`]) or from an hwloc synthetic description
//! ([`MachineTopology::synthetic`], e.g. `"pack:2 numa:1 core:2 pu:1"`), so NUMA logic
//! is testable on a one-node box.

use std::fmt;

use hwlocality::cpu::binding::CpuBindingFlags;
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;
use hwlocality::Topology;

/// Where a [`MachineTopology`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopologySource {
    /// hwloc read this machine.
    Detected,
    /// hwloc built it from a synthetic description (binding does nothing).
    Synthetic(String),
    /// Built by hand, or assumed because hwloc could not be used (the reason).
    Assumed(String),
}

/// A core: its PUs (hardware threads) by OS index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Core {
    /// The package (socket) it sits in, by logical index.
    pub package: usize,
    /// OS indices of its PUs, as the OS numbers CPUs.
    pub pus: Vec<usize>,
}

/// A NUMA node: its memory and the cores nearest to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaNode {
    /// The OS index of the node (what `numactl` calls it).
    pub os_index: usize,
    /// Bytes of memory local to the node, if known.
    pub memory_bytes: Option<u64>,
    /// Its cores, in logical order.
    pub cores: Vec<Core>,
}

impl NumaNode {
    /// The OS indices of every PU of the node, core by core.
    pub fn pus(&self) -> impl Iterator<Item = usize> + '_ {
        self.cores.iter().flat_map(|c| c.pus.iter().copied())
    }

    /// The logical indices of the packages the node's cores sit in, sorted, distinct.
    pub fn packages(&self) -> Vec<usize> {
        let mut p: Vec<usize> = self.cores.iter().map(|c| c.package).collect();
        p.sort_unstable();
        p.dedup();
        p
    }
}

/// The machine as Magpie sees it: NUMA nodes in OS-index order, each with its cores.
/// Plain data, usable without hwloc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineTopology {
    /// Where it came from.
    pub source: TopologySource,
    /// The NUMA nodes that have at least one core, in OS-index order.
    pub nodes: Vec<NumaNode>,
}

/// Why a topology could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// hwloc could not load the topology of this machine.
    #[error("hwloc could not load the machine's topology: {0}")]
    Load(String),
    /// hwloc rejected a synthetic description.
    #[error("invalid synthetic topology {description:?}: {detail}")]
    Synthetic {
        /// The description given.
        description: String,
        /// What hwloc said.
        detail: String,
    },
    /// The topology has no core at all.
    #[error("the topology has no core")]
    NoCores,
}

impl MachineTopology {
    /// Reads this machine through hwloc, with a [`Binder`] for it.
    ///
    /// # Errors
    ///
    /// [`TopologyError::Load`] when hwloc cannot load (callers fall back to
    /// [`MachineTopology::assumed`]).
    pub fn detect() -> Result<(MachineTopology, Binder), TopologyError> {
        let topology = Topology::new().map_err(|e| TopologyError::Load(e.to_string()))?;
        let machine = from_hwloc(&topology, TopologySource::Detected)?;
        Ok((machine, Binder { topology }))
    }

    /// A topology built by hwloc from a synthetic description such as
    /// `"pack:2 numa:1 core:2 pu:1"` (two packages of one NUMA node and two cores each).
    ///
    /// # Errors
    ///
    /// [`TopologyError::Synthetic`] if hwloc rejects the description.
    pub fn synthetic(description: &str) -> Result<MachineTopology, TopologyError> {
        let synthetic_error = |detail: String| TopologyError::Synthetic {
            description: description.to_owned(),
            detail,
        };
        let topology = Topology::builder()
            .from_synthetic(description)
            .map_err(|e| synthetic_error(e.to_string()))?
            .build()
            .map_err(|e| synthetic_error(e.to_string()))?;
        from_hwloc(&topology, TopologySource::Synthetic(description.to_owned()))
    }

    /// `nodes` NUMA nodes of `cores_per_node` cores of `pus_per_core` PUs, one package per
    /// node, PUs numbered in order; built by hand.
    pub fn uniform(nodes: usize, cores_per_node: usize, pus_per_core: usize) -> MachineTopology {
        let mut next_pu = 0;
        let nodes = (0..nodes)
            .map(|n| NumaNode {
                os_index: n,
                memory_bytes: None,
                cores: (0..cores_per_node)
                    .map(|_| {
                        let pus = (next_pu..next_pu + pus_per_core).collect();
                        next_pu += pus_per_core;
                        Core { package: n, pus }
                    })
                    .collect(),
            })
            .collect();
        MachineTopology {
            source: TopologySource::Assumed("built by hand".into()),
            nodes,
        }
    }

    /// What Magpie assumes when hwloc cannot be used: one node of one core per CPU the
    /// standard library reports.
    pub fn assumed(reason: impl Into<String>) -> MachineTopology {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        MachineTopology {
            source: TopologySource::Assumed(reason.into()),
            ..MachineTopology::uniform(1, cpus, 1)
        }
    }

    /// The number of PUs over all nodes.
    pub fn num_pus(&self) -> usize {
        self.nodes.iter().map(|n| n.pus().count()).sum()
    }

    /// The number of cores over all nodes.
    pub fn num_cores(&self) -> usize {
        self.nodes.iter().map(|n| n.cores.len()).sum()
    }

    /// The number of distinct packages.
    pub fn num_packages(&self) -> usize {
        let mut p: Vec<usize> = self.nodes.iter().flat_map(NumaNode::packages).collect();
        p.sort_unstable();
        p.dedup();
        p.len()
    }

    /// The node with OS index `os_index`.
    pub fn node(&self, os_index: usize) -> Option<&NumaNode> {
        self.nodes.iter().find(|n| n.os_index == os_index)
    }
}

impl fmt::Display for MachineTopology {
    /// A tree: machine, then each NUMA node with its packages, cores and PUs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            TopologySource::Detected => "detected by hwloc".to_owned(),
            TopologySource::Synthetic(d) => format!("synthetic {d:?}"),
            TopologySource::Assumed(why) => format!("assumed: {why}"),
        };
        writeln!(
            f,
            "machine ({source}): {} NUMA node(s), {} package(s), {} core(s), {} PU(s)",
            self.nodes.len(),
            self.num_packages(),
            self.num_cores(),
            self.num_pus()
        )?;
        for (i, node) in self.nodes.iter().enumerate() {
            let last_node = i + 1 == self.nodes.len();
            let (branch, indent) = if last_node {
                ("└─", "   ")
            } else {
                ("├─", "│  ")
            };
            let memory = node.memory_bytes.map_or(String::new(), |b| {
                format!(", {:.1} GiB", b as f64 / (1u64 << 30) as f64)
            });
            let packages: Vec<String> = node.packages().iter().map(usize::to_string).collect();
            writeln!(
                f,
                "{branch} NUMA node {} (package {}{memory})",
                node.os_index,
                packages.join(", ")
            )?;
            for (j, core) in node.cores.iter().enumerate() {
                let b = if j + 1 == node.cores.len() {
                    "└─"
                } else {
                    "├─"
                };
                let pus: Vec<String> = core.pus.iter().map(usize::to_string).collect();
                writeln!(f, "{indent}{b} core {j}: PU {}", pus.join(", "))?;
            }
        }
        Ok(())
    }
}

/// Bytes of memory of this machine as hwloc reports them (all NUMA nodes together), read
/// once per process; `None` when hwloc cannot load or reports none.
pub fn machine_memory() -> Option<u64> {
    static MEMORY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(|| {
        let topology = Topology::new().ok()?;
        Some(topology.root_object().total_memory()).filter(|&b| b > 0)
    })
}

/// Reads nodes, cores and PUs out of an hwloc topology.
fn from_hwloc(
    topology: &Topology,
    source: TopologySource,
) -> Result<MachineTopology, TopologyError> {
    let mut nodes = Vec::new();
    for numa in topology.objects_with_type(ObjectType::NUMANode) {
        let Some(cpuset) = numa.cpuset() else {
            continue;
        };
        let mut cores = Vec::new();
        for core in topology.objects_inside_cpuset_with_type(cpuset, ObjectType::Core) {
            let package = core
                .first_ancestor_with_type(ObjectType::Package)
                .map_or(0, TopologyObject::logical_index);
            let pus: Vec<usize> = core
                .cpuset()
                .map(|set| {
                    topology
                        .objects_inside_cpuset_with_type(set, ObjectType::PU)
                        .filter_map(TopologyObject::os_index)
                        .collect()
                })
                .unwrap_or_default();
            if !pus.is_empty() {
                cores.push(Core { package, pus });
            }
        }
        if cores.is_empty() {
            continue; // a memory-only node (e.g. HBM or CXL): no device for it
        }
        nodes.push(NumaNode {
            os_index: numa.os_index().unwrap_or(nodes.len()),
            memory_bytes: crate::conv::numa_local_memory(numa),
            cores,
        });
    }
    nodes.sort_by_key(|n| n.os_index);
    if nodes.is_empty() {
        return Err(TopologyError::NoCores);
    }
    Ok(MachineTopology { source, nodes })
}

/// Pins threads of this process to PUs of the machine hwloc read.
pub struct Binder {
    topology: Topology,
}

impl fmt::Debug for Binder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binder").finish_non_exhaustive()
    }
}

impl Binder {
    /// Binds the calling thread (only it) to PU `pu` (OS index). Memory the thread
    /// touches first is then placed on the PU's NUMA node by the OS's default (local)
    /// policy.
    ///
    /// # Errors
    ///
    /// What hwloc said when the OS refused (e.g. a container's CPU set excludes the PU).
    pub fn bind_current_thread(&self, pu: usize) -> Result<(), String> {
        let set = CpuSet::from_range(pu..=pu);
        self.topology
            .bind_cpu(&set, CpuBindingFlags::THREAD)
            .map_err(|e| e.to_string())
    }
}
