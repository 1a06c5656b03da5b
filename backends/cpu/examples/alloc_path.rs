//! Drives the allocation path of scalar kernels, for instruction counts under callgrind
//! (BENCHMARKS.md, "The allocation path"): a local session over one `CpuDevice` runs
//! STEPS steps of 10,000 scalar `Add`s fanned out from one placeholder, each writing a new
//! counted scalar (its inputs are shared, so none is reused in place), reduced by a
//! binary tree of 9,999 adds (in place: no allocation).
//!
//! `cargo run --release -p magpie-cpu --example alloc_path -- STEPS WORKERS [LIMIT]`:
//! LIMIT, when given, is a step memory limit in bytes (what a `magpie server` step always
//! runs under). Per allocating op =
//! `(Ir(STEPS = 12) - Ir(STEPS = 2)) / (10 * 10,000)` minus the tree's share, or compare
//! two builds at the same arguments.

use std::sync::Arc;

use magpie_core::device::Device;
use magpie_core::graph::{Graph, Output};
use magpie_core::session::{Session, SessionOptions};
use magpie_core::tensor::{DType, StepMemoryLimit, Tensor};

const N: usize = 10_000;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments: STEPS WORKERS [LIMIT]"))
        .collect();
    let steps = args.first().copied().unwrap_or(12);
    let workers = args.get(1).copied().unwrap_or(1);
    let limit = args.get(2).map(|&l| StepMemoryLimit::new(l as u64));
    magpie_cpu::register().expect("the CPU kernels register");
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let one = g.constant(1.0f32).unwrap();
    let mut level: Vec<Output> = (0..N).map(|_| g.add(x, one).unwrap()).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| match p {
                [a, b] => g.add(*a, *b).unwrap(),
                [a] => *a,
                _ => unreachable!(),
            })
            .collect();
    }
    let devices: Vec<Arc<dyn Device>> = vec![magpie_cpu::cpu_device()];
    let mut options = SessionOptions::with_devices(devices).num_workers(workers);
    options.step_memory_limit = limit;
    let s = Session::new(&g, options).unwrap();
    let feeds = [(x, Tensor::scalar(0.0f32))];
    let mut sum = 0.0;
    for _ in 0..steps {
        sum = s.run(&feeds, &[level[0]], &[]).unwrap()[0]
            .scalar_value::<f32>()
            .unwrap();
    }
    assert_eq!(sum, N as f32);
    println!("{steps} steps of {N} allocating adds: {sum}");
}
