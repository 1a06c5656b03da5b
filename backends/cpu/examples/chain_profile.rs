//! The `chain` workload of `benches/vs_tensorflow.rs` (a placeholder, then 10,000 scalar
//! adds of a constant in a line) on the CPU device alone, for instruction-count profiles
//! that do not build the whole workspace:
//!
//! ```text
//! cargo build --release -p magpie-cpu --example chain_profile
//! valgrind --tool=callgrind target/release/examples/chain_profile --steps 20
//! perf stat -e instructions target/release/examples/chain_profile --steps 200
//! ```
//!
//! `--workers N` scheduler workers (default 2; the calling thread also runs tasks),
//! `--steps K` timed steps after 3 warm-up steps. Prints the median ns/op and checks
//! the fetched value.

use std::time::Instant;

use magpie_core::graph::Graph;
use magpie_core::session::{Session, SessionOptions};
use magpie_core::tensor::{DType, Tensor};

const N: usize = 10_000;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workers = arg(&args, "--workers", 2);
    let steps = arg(&args, "--steps", 20).max(1);
    magpie_cpu::register().expect("register CPU kernels");
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).expect("placeholder");
    let one = g.constant(1.0f32).expect("constant");
    let mut acc = x;
    for _ in 0..N {
        acc = g.add(acc, one).expect("add");
    }
    let mut opts = SessionOptions::with_devices(vec![magpie_cpu::cpu_device()]);
    opts.num_workers = Some(workers);
    let s = Session::new(&g, opts).expect("session");
    let feeds = [(x, Tensor::scalar(0.0f32))];
    for _ in 0..3 {
        s.run(&feeds, &[acc], &[]).expect("step");
    }
    let mut times: Vec<f64> = (0..steps)
        .map(|_| {
            let t = Instant::now();
            let out = s.run(&feeds, &[acc], &[]).expect("step");
            let secs = t.elapsed().as_secs_f64();
            let v = out[0].to_vec::<f32>().expect("f32")[0];
            assert_eq!(v, N as f32, "chain fetched {v}");
            secs
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "chain: {} steps, median {:.1} ns/op (min {:.1})",
        steps,
        times[times.len() / 2] / N as f64 * 1e9,
        times[0] / N as f64 * 1e9
    );
}
