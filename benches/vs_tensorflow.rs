//! The Magpie side of `scripts/bench-vs-tensorflow`: the same graphs as
//! `scripts/bench_vs_tensorflow.py` builds in TensorFlow, run through a local session,
//! one JSON line per workload on stdout (median, min and max of `--reps` timed steps
//! after `--warmup` untimed ones). Not a criterion bench: the script alternates this
//! program and TensorFlow's in rounds and divides the medians of the same round.
//!
//! - `chain`: a placeholder then 10,000 scalar adds of a constant, in a line;
//! - `fan_tree`: 10,000 scalar adds fanned out from one placeholder, reduced by a binary
//!   tree of 9,999 adds;
//! - `mlp`: one step of a small MLP: `relu(x[64,256] · w1[256,256] + b1) · w2[256,10] + b2`.
//!
//! Threads: `--workers N` scheduler workers (the calling thread also runs tasks of its
//! own step, so up to N + 1 threads run tasks). `MAGPIE_BENCH_IDLE_SPIN` sets the pool's
//! idle spin (`long`, the default, `short`, `off` or `S+Y` rounds). Run:
//! `cargo bench --bench vs_tensorflow -- --workers 2 --reps 50`.

mod common;

use common::{arg, time_steps};
use magpie::{DType, Graph, Output, Session, Tensor};

const N: usize = 10_000;

struct Workload {
    name: &'static str,
    graph: Graph,
    feed: Output,
    value: Tensor,
    fetch: Output,
    ops: usize,
}

fn chain() -> Workload {
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let one = g.constant(1.0f32).unwrap();
    let mut acc = x;
    for _ in 0..N {
        acc = g.add(acc, one).unwrap();
    }
    Workload {
        name: "chain",
        graph: g,
        feed: x,
        value: Tensor::scalar(0.0f32),
        fetch: acc,
        ops: N,
    }
}

fn fan_tree() -> Workload {
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let one = g.constant(1.0f32).unwrap();
    let mut level: Vec<Output> = (0..N).map(|_| g.add(x, one).unwrap()).collect();
    let mut ops = N;
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [a, b] => {
                    next.push(g.add(*a, *b).unwrap());
                    ops += 1;
                }
                [a] => next.push(*a),
                _ => unreachable!(),
            }
        }
        level = next;
    }
    Workload {
        name: "fan_tree",
        graph: g,
        feed: x,
        value: Tensor::scalar(0.0f32),
        fetch: level[0],
        ops,
    }
}

/// Deterministic values in [-0.5, 0.5), the same formula as the Python side.
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32) / 1000.0 - 0.5)
        .collect()
}

fn mlp() -> Workload {
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let c = |dims: &[usize], seed| {
        let n = dims.iter().product();
        g.constant(Tensor::from_vec(dims, values(n, seed)).unwrap())
            .unwrap()
    };
    let (w1, b1, w2, b2) = (
        c(&[256, 256], 1),
        c(&[256], 2),
        c(&[256, 10], 3),
        c(&[10], 4),
    );
    let h = g
        .relu(g.add(g.matmul(x, w1).unwrap(), b1).unwrap())
        .unwrap();
    let y = g.add(g.matmul(h, w2).unwrap(), b2).unwrap();
    Workload {
        name: "mlp",
        graph: g,
        feed: x,
        value: Tensor::from_vec([64, 256], values(64 * 256, 0)).unwrap(),
        fetch: y,
        ops: 6,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workers = arg(&args, "--workers", 2);
    let reps = arg(&args, "--reps", 30).max(1);
    let warmup = arg(&args, "--warmup", 5);
    let idle_spin: magpie::scheduler::IdleSpin = std::env::var("MAGPIE_BENCH_IDLE_SPIN")
        .map_or(Ok(Default::default()), |s| s.parse())
        .expect("MAGPIE_BENCH_IDLE_SPIN");
    for w in [chain(), fan_tree(), mlp()] {
        let mut opts = magpie::local_options();
        opts.num_workers = Some(workers);
        opts.idle_spin = idle_spin;
        let s = Session::new(&w.graph, opts).expect("session");
        let feeds = [(w.feed, w.value.clone())];
        let mut check = 0.0f64;
        let times = time_steps(warmup, reps, || {
            let out = s.run(&feeds, &[w.fetch], &[]).expect("step");
            check = out[0]
                .to_vec::<f32>()
                .expect("f32")
                .iter()
                .map(|v| *v as f64)
                .sum();
        });
        println!(
            "{{\"side\":\"magpie\",\"workload\":\"{}\",\"ops\":{},\"threads\":{},{times},\
             \"check\":{}}}",
            w.name,
            w.ops,
            workers + 1,
            check
        );
    }
}
