//! Sessions over CPU layouts on a synthetic two-node topology (so they run on any
//! machine): kernels placed per NUMA device, the step's count of bytes read across nodes,
//! and clear errors for devices or nodes that do not exist.

use magpie::cpu::{CpuRuntime, MachineTopology};
use magpie::{CpuLayout, CpuOptions, Graph, RunOptions, Session, Tensor};

fn two_node_runtime() -> CpuRuntime {
    magpie::cpu::register();
    let topology = MachineTopology::synthetic("pack:2 numa:1 core:2 pu:1").unwrap();
    CpuRuntime::build_on(
        topology,
        None,
        &CpuOptions::with_layout(CpuLayout::PerNumaNode),
    )
    .unwrap()
}

#[test]
fn a_step_counts_bytes_read_from_another_node() {
    let rt = two_node_runtime();
    let g = Graph::new();
    let a = g
        .device("/device:CPU:0", |g| {
            g.constant(Tensor::from_vec([256], vec![1.0f32; 256]).unwrap())
        })
        .unwrap();
    let b = g.device("/device:CPU:0", |g| g.add(a, a)).unwrap();
    let c = g.device("/device:CPU:1", |g| g.add(b, b)).unwrap();
    let s = Session::new(&g, rt.session_options()).unwrap();
    let out = s
        .run_with_options(&RunOptions::default(), &[], &[c], &[])
        .unwrap();
    assert_eq!(out.tensors[0].as_slice::<f32>().unwrap()[0], 4.0);
    // `c` on node 1 read `b` (256 f32) from node 0, twice (both operands).
    assert_eq!(out.metadata.remote_numa_bytes, 2 * 256 * 4);

    let local = g.device("/device:CPU:0", |g| g.add(b, a)).unwrap();
    let out = s
        .run_with_options(&RunOptions::default(), &[], &[local], &[])
        .unwrap();
    assert_eq!(out.metadata.remote_numa_bytes, 0);
}

#[test]
fn a_device_that_does_not_exist_lists_those_that_do() {
    let rt = two_node_runtime();
    let g = Graph::new();
    let c7 = g
        .device("/device:CPU:7", |g| g.with_name("c7").constant(1.0f32))
        .unwrap();
    let s = Session::new(&g, rt.session_options()).unwrap();
    let err = s.run(&[], &[c7], &[]).unwrap_err().to_string();
    assert_eq!(
        err,
        "node \"c7\" (Const) requests device /device:CPU:7, which no device matches; \
         devices: /job:localhost/replica:0/task:0/device:CPU:0, \
         /job:localhost/replica:0/task:0/device:CPU:1"
    );
}

#[test]
fn a_numa_node_that_does_not_exist_is_a_clear_error() {
    let options = CpuOptions {
        layout: CpuLayout::PerNumaNode,
        numa_nodes: Some(vec![9]),
        ..CpuOptions::default()
    };
    let err = magpie::local_options_for(&options).unwrap_err().to_string();
    assert!(
        err.starts_with("NUMA node 9 does not exist; this machine has NUMA node(s) "),
        "{err}"
    );
}

#[test]
fn the_facade_builds_either_layout_on_this_machine() {
    for layout in [CpuLayout::Single, CpuLayout::PerNumaNode] {
        let options = magpie::local_options_with(layout).unwrap();
        assert!(options.pool.is_some());
        assert!(options.devices[0].name().to_string().ends_with("CPU:0"));
        let g = Graph::new();
        let x = g
            .add(g.constant(1.0f32).unwrap(), g.constant(2.0f32).unwrap())
            .unwrap();
        let s = Session::new(&g, options).unwrap();
        assert_eq!(
            f32::try_from(&s.run(&[], &[x], &[]).unwrap()[0]).unwrap(),
            3.0
        );
    }
}
