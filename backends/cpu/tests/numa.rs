//! NUMA layouts on synthetic topologies (hwloc builds them from a description, so these
//! run on any machine): the device list, the pinning plan, steal groups and stealing order,
//! bad node options, and that nothing fails where binding is impossible.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use magpie_core::device::Device;
use magpie_core::scheduler::{IdleSpin, TaskGraph, ThreadPool};
use magpie_cpu::{
    current_worker_node, CpuLayout, CpuOptions, CpuRuntime, CpuSetupError, MachineTopology,
    PinningPlan, WorkerPin,
};

/// Two packages, one NUMA node and two single-PU cores each.
const TWO_NODES: &str = "pack:2 numa:1 core:2 pu:1";

fn two_nodes() -> MachineTopology {
    MachineTopology::synthetic(TWO_NODES).expect("hwloc builds a synthetic topology")
}

#[test]
fn synthetic_topology_has_nodes_packages_cores_and_pus() {
    let t = two_nodes();
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(t.num_packages(), 2);
    assert_eq!(t.num_cores(), 4);
    assert_eq!(t.num_pus(), 4);
    assert_eq!(t.nodes[0].os_index, 0);
    assert_eq!(t.nodes[0].pus().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(t.nodes[1].pus().collect::<Vec<_>>(), [2, 3]);
    assert_eq!(t.nodes[1].packages(), [1]);
    let smt = MachineTopology::synthetic("pack:1 numa:2 core:2 pu:2").unwrap();
    assert_eq!(smt.nodes.len(), 2);
    assert_eq!(smt.num_packages(), 1);
    assert_eq!(smt.nodes[1].cores[0].pus.len(), 2);
    let tree = t.to_string();
    assert!(
        tree.contains("2 NUMA node(s), 2 package(s), 4 core(s), 4 PU(s)"),
        "{tree}"
    );
    assert!(tree.contains("NUMA node 1 (package 1"), "{tree}");
}

#[test]
fn a_bad_synthetic_description_is_an_error() {
    let e = MachineTopology::synthetic("pack:two").unwrap_err();
    assert!(e.to_string().contains("invalid synthetic topology"), "{e}");
}

#[test]
fn per_node_layout_gives_one_device_per_node() {
    let rt = CpuRuntime::build_on(
        two_nodes(),
        None,
        &CpuOptions::with_layout(CpuLayout::PerNumaNode),
    )
    .unwrap();
    let names: Vec<String> = rt.devices().iter().map(|d| d.name().to_string()).collect();
    assert_eq!(
        names,
        [
            "/job:localhost/replica:0/task:0/device:CPU:0",
            "/job:localhost/replica:0/task:0/device:CPU:1"
        ]
    );
    assert_eq!(rt.devices()[0].numa_node(), Some(0));
    assert_eq!(rt.devices()[1].numa_node(), Some(1));
    assert_eq!(rt.devices()[1].cores(), 2);
    assert_eq!(rt.pool().num_workers(), 4);

    let single = CpuRuntime::build_on(two_nodes(), None, &CpuOptions::default()).unwrap();
    assert_eq!(single.devices().len(), 1);
    assert_eq!(single.devices()[0].numa_node(), None);
    assert_eq!(single.devices()[0].cores(), 4);

    let one = CpuOptions {
        layout: CpuLayout::PerNumaNode,
        numa_nodes: Some(vec![1]),
        ..CpuOptions::default()
    };
    let rt = CpuRuntime::build_on(two_nodes(), None, &one).unwrap();
    assert_eq!(rt.devices().len(), 1);
    assert_eq!(rt.devices()[0].numa_node(), Some(1));
    assert_eq!(
        rt.plan().workers.iter().map(|w| w.pu).collect::<Vec<_>>(),
        [2, 3]
    );
}

#[test]
fn pinning_plan_groups_workers_by_node_cores_first() {
    let t = MachineTopology::synthetic("pack:2 numa:1 core:2 pu:2").unwrap();
    let plan = PinningPlan::new(&t, &[0, 1], 4);
    // Two workers per node, one per core before any second hardware thread.
    let pin = |node, pu| WorkerPin { node, pu };
    assert_eq!(plan.workers, [pin(0, 0), pin(0, 2), pin(1, 4), pin(1, 6)]);
    assert_eq!(plan.steal_groups(), [vec![0, 1], vec![2, 3]]);
    assert_eq!(plan.workers_on(1), [2, 3]);
    let odd = PinningPlan::new(&t, &[0, 1], 3);
    assert_eq!(odd.steal_groups(), [vec![0, 1], vec![2]]);
    let full = PinningPlan::new(&t, &[0, 1], 8);
    assert_eq!(full.workers_on(0).len(), 4);
    let pus: Vec<usize> = full.workers.iter().map(|w| w.pu).collect();
    assert_eq!(pus, [0, 2, 1, 3, 4, 6, 5, 7]);
}

#[test]
fn workers_know_their_node() {
    let rt = CpuRuntime::build_on(
        two_nodes(),
        None,
        &CpuOptions::with_layout(CpuLayout::PerNumaNode),
    )
    .unwrap();
    assert_eq!(rt.pinned_workers(), 0, "a synthetic topology binds nothing");
    assert!(rt.unpinned_reason().unwrap().contains("synthetic"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut g = TaskGraph::new();
    for _ in 0..64 {
        let seen = Arc::clone(&seen);
        g.add(move || seen.lock().unwrap().push(current_worker_node()));
    }
    rt.pool().run(&g).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 64);
    assert!(
        seen.iter().all(|n| matches!(n, Some(0) | Some(1))),
        "{seen:?}"
    );
    assert_eq!(current_worker_node(), None, "the test thread is no worker");
}

#[test]
fn steals_prefer_the_own_group() {
    // The order itself (own group first) is unit-tested in core's `scheduler::affinity`;
    // here the counters: groups of one have no local victim, so every steal is remote,
    // and without groups every steal is local.
    let pool = ThreadPool::builder()
        .num_workers(2)
        .steal_groups(vec![vec![0], vec![1]])
        .build()
        .unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    let mut g = TaskGraph::new();
    for _ in 0..10_000 {
        let c = Arc::clone(&counter);
        g.add(move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
    }
    for _ in 0..5 {
        pool.run(&g).unwrap();
    }
    assert_eq!(counter.load(Ordering::Relaxed), 50_000);
    let stats = pool.steal_stats();
    assert_eq!(stats.local, 0, "groups of one have no local victim");

    let flat = ThreadPool::new(2).unwrap();
    for _ in 0..5 {
        flat.run(&g).unwrap();
    }
    assert_eq!(
        flat.steal_stats().remote,
        0,
        "without groups every steal is local"
    );
}

#[test]
fn bad_steal_groups_are_an_error() {
    let e = ThreadPool::builder()
        .num_workers(2)
        .steal_groups(vec![vec![0]])
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("worker 1 is in no group"), "{e}");
}

#[test]
fn an_unknown_numa_node_lists_the_ones_that_exist() {
    let options = CpuOptions {
        layout: CpuLayout::PerNumaNode,
        numa_nodes: Some(vec![0, 3]),
        ..CpuOptions::default()
    };
    let e = CpuRuntime::build_on(two_nodes(), None, &options).unwrap_err();
    assert_eq!(
        e,
        CpuSetupError::UnknownNumaNode {
            node: 3,
            available: "0, 1".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "NUMA node 3 does not exist; this machine has NUMA node(s) 0, 1"
    );
}

#[test]
fn this_machine_runs_whatever_binding_allows() {
    // Detected (or assumed, if hwloc cannot load): one node here usually, so unpinned with
    // a reason; on a NUMA machine, pinned. Either way it builds and runs.
    let rt = CpuRuntime::build(&CpuOptions::with_layout(CpuLayout::PerNumaNode)).unwrap();
    assert!(!rt.devices().is_empty());
    assert!(rt.pinned_workers() == rt.pool().num_workers() || rt.unpinned_reason().is_some());
    let mut g = TaskGraph::new();
    g.add(|| {});
    rt.pool().run(&g).unwrap();
}

#[test]
fn the_pool_idles_as_the_options_say() {
    let default = CpuRuntime::build_on(two_nodes(), None, &CpuOptions::default()).unwrap();
    assert_eq!(default.pool().idle_spin(), IdleSpin::LONG);
    let spin = IdleSpin::OFF.max_searching(Some(1));
    let options = CpuOptions {
        idle_spin: spin,
        ..CpuOptions::default()
    };
    let rt = CpuRuntime::build_on(two_nodes(), None, &options).unwrap();
    assert_eq!(rt.pool().idle_spin(), spin);
    assert_eq!(rt.session_options().pool.unwrap().idle_spin(), spin);
}
