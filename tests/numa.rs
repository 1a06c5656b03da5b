//! Sessions over CPU layouts on a synthetic two-node topology (so they run on any
//! machine): kernels placed per NUMA device run on their node's workers and allocate their
//! outputs there, the step's count of bytes read across nodes, large kernels split over
//! the workers give the same results, and clear errors for devices or nodes that do not
//! exist.

use magpie::cpu::{CpuRuntime, MachineTopology};
use magpie::{CpuLayout, CpuOptions, Graph, RunOptions, Session, Tensor};

fn two_node_runtime() -> CpuRuntime {
    magpie::cpu::register().expect("the CPU kernels register");
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

/// `n` floats `0, 1, 2, …` modulo 7, scaled.
fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (i % 7) as f32 * scale).collect()
}

/// The n×n product of two row-major matrices, naively.
fn naive_matmul(a: &[f32], b: &[f32], n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; n * n];
    for i in 0..n {
        for p in 0..n {
            let aip = a[i * n + p];
            for j in 0..n {
                c[i * n + j] += aip * b[p * n + j];
            }
        }
    }
    c
}

#[test]
fn kernels_of_cpu_k_run_on_node_ks_workers_and_allocate_there() {
    let rt = two_node_runtime();
    let n = 1 << 19; // 2 MiB of f32: large enough for the buffer cache, which records nodes
    let m = 512; // MatMul side: 1 MiB of output, split into row blocks
    let g = Graph::new();
    let x = g
        .constant(Tensor::from_vec([n], ramp(n, 1.0)).unwrap())
        .unwrap();
    let a = g
        .constant(Tensor::from_vec([m, m], ramp(m * m, 0.5)).unwrap())
        .unwrap();
    let mut fetches = Vec::new();
    for k in 0..2 {
        let dev = format!("/device:CPU:{k}");
        for _ in 0..8 {
            let y = g.device(&dev, |g| g.add(x, x)).unwrap();
            fetches.push((k, g.device(&dev, |g| g.add(y, x)).unwrap()));
        }
        fetches.push((k, g.device(&dev, |g| g.matmul(a, a)).unwrap()));
    }
    let outputs: Vec<_> = fetches.iter().map(|(_, o)| *o).collect();
    let s = Session::new(&g, rt.session_options()).unwrap();
    let expected_sum = ramp(n, 3.0);
    let am = ramp(m * m, 0.5);
    let entry = |i: usize, j: usize| (0..m).map(|p| am[i * m + p] * am[p * m + j]).sum::<f32>();
    let trace = RunOptions {
        trace: true,
        ..RunOptions::default()
    };
    for _ in 0..3 {
        let out = s.run_with_options(&trace, &[], &outputs, &[]).unwrap();
        for ((k, _), t) in fetches.iter().zip(&out.tensors) {
            assert_eq!(
                t.numa_node(),
                Some(*k),
                "an output of CPU:{k} lives on node {k}: {:?}",
                t.shape()
            );
            let values = t.as_slice::<f32>().unwrap();
            if t.dims().len() == 1 {
                assert_eq!(values, expected_sum.as_slice());
            } else {
                for (i, j) in [(0, 0), (1, 7), (100, 300), (511, 511), (300, 2)] {
                    assert_eq!(values[i * m + j], entry(i, j), "entry ({i}, {j})");
                }
            }
        }
        assert!(!out.metadata.nodes.is_empty());
        for stats in &out.metadata.nodes {
            let k: usize = stats.device.rsplit(':').next().unwrap().parse().unwrap();
            assert!(
                rt.plan().workers_on(k).contains(&stats.worker),
                "{} on CPU:{k} ran on worker {}, not one of node {k}'s {:?}",
                stats.node,
                stats.worker,
                rt.plan().workers_on(k)
            );
        }
    }
}

#[test]
fn large_kernels_split_over_the_workers_match_the_naive_result() {
    // The default facade pool (no groups; the caller helps with its own step).
    let g = Graph::new();
    let n = 3 << 18; // several chunks of the elementwise loop
    let m = 320; // several row blocks, the last one partial
    let x = g.placeholder(magpie::DType::F32, None).unwrap();
    let a = g.placeholder(magpie::DType::F32, None).unwrap();
    let sum = g.add(x, x).unwrap();
    let scaled = g.add(x, g.constant(2.0f32).unwrap()).unwrap();
    let mm = g.matmul(a, a).unwrap();
    let s = magpie::local_session(&g).unwrap();
    let tx = Tensor::from_vec([n], ramp(n, 1.0)).unwrap();
    let ta = Tensor::from_vec([m, m], ramp(m * m, 0.25)).unwrap();
    let expected_mm = naive_matmul(&ramp(m * m, 0.25), &ramp(m * m, 0.25), m);
    for _ in 0..3 {
        let out = s
            .run(&[(x, tx.clone()), (a, ta.clone())], &[sum, scaled, mm], &[])
            .unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), ramp(n, 2.0).as_slice());
        let plus2: Vec<f32> = ramp(n, 1.0).iter().map(|v| v + 2.0).collect();
        assert_eq!(out[1].as_slice::<f32>().unwrap(), plus2.as_slice());
        assert_eq!(out[2].as_slice::<f32>().unwrap(), expected_mm.as_slice());
    }
    // Wide products are split into column blocks: [64, 32] x [32, 2304], and the same
    // with `b` given transposed ([2304, 32]).
    let (rows, inner, cols) = (64, 32, 2304);
    let p = g.placeholder(magpie::DType::F32, None).unwrap();
    let q = g.placeholder(magpie::DType::F32, None).unwrap();
    let qt = g.placeholder(magpie::DType::F32, None).unwrap();
    let wide = g.matmul(p, q).unwrap();
    let wide_t = g.matmul_t(p, qt, false, true).unwrap();
    let pv = ramp(rows * inner, 0.5);
    let qv = ramp(inner * cols, 0.25);
    let qtv: Vec<f32> = (0..cols * inner)
        .map(|i| qv[(i % inner) * cols + i / inner])
        .collect();
    let feeds = [
        (p, Tensor::from_vec([rows, inner], pv.clone()).unwrap()),
        (q, Tensor::from_vec([inner, cols], qv.clone()).unwrap()),
        (qt, Tensor::from_vec([cols, inner], qtv).unwrap()),
    ];
    let out = s.run(&feeds, &[wide, wide_t], &[]).unwrap();
    for t in &out {
        let values = t.as_slice::<f32>().unwrap();
        for i in 0..rows {
            for j in 0..cols {
                let e: f32 = (0..inner)
                    .map(|k| pv[i * inner + k] * qv[k * cols + j])
                    .sum();
                assert_eq!(values[i * cols + j], e, "entry ({i}, {j})");
            }
        }
    }
    // A uniquely owned input is updated in place (its buffer becomes the output's).
    let big = Tensor::from_vec([n], ramp(n, 1.0)).unwrap();
    let out = s.run(&[(x, big)], &[scaled], &[]).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap()[8], 3.0);
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
