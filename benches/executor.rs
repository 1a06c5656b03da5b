//! Session benches: the per-op cost of the dataflow executor through a local session.
//!
//! - `chain`: 10,000 scalar adds in a line, fed from a placeholder;
//! - `fan`: 10,000 scalar adds fanned out from one placeholder, reduced by a binary tree
//!   of 9,999 adds (19,999 ops);
//! - `trivial_step`: one scalar add, the fixed cost of a step (the calling thread runs
//!   it: see the scheduler's `helper` module); `trivial_step_caller_waits`: the same on a
//!   pool built with `helper_slots(0)`, where a worker must wake up for every step (the
//!   behaviour before callers helped).
//!
//! Throughput is reported per op, so criterion's "elem/s" inverts to ns/op. Two
//! workers, as in TensorFlow's figures in `../shared/bench-anchors.md` (chain ~1,200
//! ns/op, fan ~2,780 ns/op, trivial step ~100 µs). Run: `cargo bench --bench executor`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use magpie::core::scheduler::ThreadPool;
use magpie::{DType, Graph, Output, Session, Tensor};

const N: usize = 10_000;

fn session(g: &Graph) -> Session {
    let mut opts = magpie::local_options();
    opts.num_workers = Some(2);
    Session::new(g, opts).expect("session")
}

fn chain() -> (Graph, Output, Output, usize) {
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let one = g.constant(1.0f32).unwrap();
    let mut acc = x;
    for _ in 0..N {
        acc = g.add(acc, one).unwrap();
    }
    (g, x, acc, N + 1)
}

fn fan() -> (Graph, Output, Output, usize) {
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let one = g.constant(1.0f32).unwrap();
    let mut level: Vec<Output> = (0..N).map(|_| g.add(x, one).unwrap()).collect();
    let mut ops = N + 1;
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
    (g, x, level[0], ops)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("session");
    group.sample_size(20);
    for (name, (g, x, out, ops)) in [("chain_10k", chain()), ("fan_10k", fan())] {
        let s = session(&g);
        let feed = [(x, Tensor::scalar(0.0f32))];
        s.run(&feed, &[out], &[]).unwrap(); // build and cache the plan
        group.throughput(Throughput::Elements(ops as u64));
        group.bench_function(name, |b| b.iter(|| s.run(&feed, &[out], &[]).unwrap()));
    }
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let y = g.add(x, x).unwrap();
    let s = session(&g);
    let feed = [(x, Tensor::scalar(1.0f32))];
    group.throughput(Throughput::Elements(1));
    group.bench_function("trivial_step", |b| {
        b.iter(|| s.run(&feed, &[y], &[]).unwrap())
    });
    // The same on a pool whose callers never help: every step waits for a worker.
    let mut opts = magpie::local_options();
    opts.pool = Some(
        ThreadPool::builder()
            .num_workers(2)
            .helper_slots(0)
            .build()
            .expect("pool"),
    );
    let s = Session::new(&g, opts).expect("session");
    group.bench_function("trivial_step_caller_waits", |b| {
        b.iter(|| s.run(&feed, &[y], &[]).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
