//! Scheduling overhead of `magpie_scheduler` on Taskflow's benchmark shapes, under
//! every scheduling policy, against rayon and tokio baselines measured in the same process
//! (see `/work/shared/bench-anchors.md` for the figures to beat).
//!
//! Each iteration is one execution of a prebuilt graph from the bench's main thread; with
//! `Throughput::Elements(tasks)` criterion reports tasks per second: ns per task is
//! 1e9 / (tasks per second), i.e. 1,000 / (Melem/s). `scripts/bench-ns-per-task` prints
//! every result of the last run as ns per task from criterion's JSON output.
//!
//! Output: criterion writes its JSON and HTML reports (`report/index.html`) under
//! `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else the workspace's target
//! directory (`target/criterion` at the workspace root) — not the current folder.
//!
//! Shapes: linear chain, binary tree, wavefront, independent tasks (empty bodies, and a
//! 0.7 µs body), and a seeded random level graph ("graph traversal", empty and 0.7 µs
//! bodies); each at about 1k, 64k and 1M tasks.
//!
//! Environment: `MAGPIE_BENCH_WORKERS` (default 2) sets the worker count of every pool
//! (Magpie's runs also use the calling thread: 2 workers are 3 threads that run tasks;
//! rayon's `scope` and tokio's `block_on` likewise involve the caller);
//! `MAGPIE_BENCH_IDLE_SPIN` sets the Magpie pool's idle spin (`long`, the default, `short`,
//! `off` or `S+Y` rounds; see `IdleSpin`); `MAGPIE_BENCH_SIZES` picks sizes (`1k,64k,1m`);
//! `MAGPIE_BENCH_ONLY` picks runners (`magpie` for every policy, `magpie_fifo`, `rayon_spawn`, `tokio_spawn`, ...).
//! Criterion's own filter selects shapes: `cargo bench -p magpie-scheduler --bench scheduling -- wavefront`.
//!
//! Policies: `magpie_depth_first`, `magpie_fifo`, `magpie_critical_path`, and
//! `magpie_sjf_example`, the shortest-job-first queue of `examples/custom_policy.rs`
//! (a user's policy through `Policy::custom`; every task costs 1 here, so it is a
//! lowest-index-first queue under one mutex).
//!
//! Baselines:
//! - `rayon_spawn`: a counter per task, `Scope::spawn` for every task that becomes ready;
//! - `rayon_inline`: the same, but one ready successor runs in place;
//! - `tokio_spawn`: a multi-thread runtime with 2 workers, `tokio::spawn` per ready task.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use magpie_scheduler::{
    DagBody, IdleSpin, Policy, RunControl, TaskContext, TaskOutcome, ThreadPool, Topology,
};

/// The example's shortest-job-first policy, benched as a user's policy.
#[allow(dead_code)]
#[path = "../examples/custom_policy.rs"]
mod custom_policy;

const WORKERS: usize = 2;

/// Taskflow's "embarrassing parallelism" body: about 0.7 µs of arithmetic.
#[inline(never)]
fn burn() {
    let mut x = black_box(1.0f64);
    for _ in 0..32 {
        x = x.sin() * 1.000_000_1 + x.cos();
    }
    black_box(x);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    Empty,
    Burn,
}

impl Work {
    #[inline]
    fn run(self, task: u32) {
        match self {
            Work::Empty => {
                black_box(task);
            }
            Work::Burn => burn(),
        }
    }
}

struct Body(Work);

impl DagBody for Body {
    type Error = ();

    #[inline]
    fn run(&self, task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<()>, ()> {
        self.0.run(task);
        Ok(TaskOutcome::Done)
    }
}

fn linear_chain(n: usize) -> Topology {
    let mut b = Topology::builder(n);
    for i in 1..n as u32 {
        b.add_edge(i - 1, i);
    }
    b.build().unwrap()
}

/// Tasks 0..2^levels - 1; task k -> 2k+1, 2k+2 (Taskflow's 1-based k -> 2k, 2k+1).
fn binary_tree(levels: u32) -> Topology {
    let n = (1usize << levels) - 1;
    let mut b = Topology::builder(n);
    for k in 0..n as u32 {
        for c in [2 * k + 1, 2 * k + 2] {
            if (c as usize) < n {
                b.add_edge(k, c);
            }
        }
    }
    b.build().unwrap()
}

fn wavefront(g: usize) -> Topology {
    let mut b = Topology::builder(g * g);
    for i in 0..g {
        for j in 0..g {
            let t = (i * g + j) as u32;
            if j + 1 < g {
                b.add_edge(t, t + 1);
            }
            if i + 1 < g {
                b.add_edge(t, t + g as u32);
            }
        }
    }
    b.build().unwrap()
}

fn independent(n: usize) -> Topology {
    Topology::builder(n).build().unwrap()
}

/// A `w x w` level graph: each node has 1-4 edges to distinct random nodes of the next
/// level (seeded xorshift).
fn graph_traversal(w: usize) -> Topology {
    let mut b = Topology::builder(w * w);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for level in 0..w - 1 {
        for i in 0..w {
            let from = (level * w + i) as u32;
            let k = 1 + (rand() % 4) as usize;
            let mut targets: Vec<usize> = Vec::with_capacity(k);
            while targets.len() < k.min(w) {
                let t = (rand() % w as u64) as usize;
                if !targets.contains(&t) {
                    targets.push(t);
                }
            }
            for t in targets {
                b.add_edge(from, ((level + 1) * w + t) as u32);
            }
        }
    }
    b.build().unwrap()
}

fn pending_counters(t: &Topology) -> Vec<AtomicU32> {
    (0..t.len() as u32)
        .map(|i| AtomicU32::new(t.num_predecessors(i)))
        .collect()
}

fn rayon_visit<'s>(
    s: &rayon::Scope<'s>,
    t: &'s Topology,
    pending: &'s [AtomicU32],
    work: Work,
    inline: bool,
    mut task: u32,
) {
    loop {
        work.run(task);
        let mut next = None;
        for &succ in t.successors(task) {
            if pending[succ as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
                if inline && next.is_none() {
                    next = Some(succ);
                } else {
                    s.spawn(move |s| rayon_visit(s, t, pending, work, inline, succ));
                }
            }
        }
        match next {
            Some(n) => task = n,
            None => return,
        }
    }
}

fn rayon_run(pool: &rayon::ThreadPool, t: &Topology, work: Work, inline: bool) {
    let pending = pending_counters(t);
    let pending = &pending[..];
    pool.scope(|s| {
        for &r in t.roots() {
            s.spawn(move |s| rayon_visit(s, t, pending, work, inline, r));
        }
    });
}

struct TokioRun {
    topology: Topology,
    pending: Vec<AtomicU32>,
    remaining: AtomicUsize,
    done: tokio::sync::Notify,
    work: Work,
}

fn tokio_visit(run: Arc<TokioRun>, task: u32) {
    run.work.run(task);
    for &succ in run.topology.successors(task) {
        if run.pending[succ as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
            let run = Arc::clone(&run);
            tokio::spawn(async move { tokio_visit(run, succ) });
        }
    }
    if run.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
        run.done.notify_one();
    }
}

fn tokio_run(rt: &tokio::runtime::Runtime, t: &Topology, work: Work) {
    let run = Arc::new(TokioRun {
        topology: t.clone(),
        pending: pending_counters(t),
        remaining: AtomicUsize::new(t.len()),
        done: tokio::sync::Notify::new(),
        work,
    });
    rt.block_on(async {
        for &r in run.topology.roots() {
            let run = Arc::clone(&run);
            tokio::spawn(async move { tokio_visit(run, r) });
        }
        run.done.notified().await;
    });
}

/// Which sizes to run: `MAGPIE_BENCH_SIZES`, a comma-separated subset of `1k,64k,1m`
/// (default: all three).
fn sizes() -> Vec<&'static str> {
    let wanted = std::env::var("MAGPIE_BENCH_SIZES").unwrap_or_else(|_| "1k,64k,1m".into());
    ["1k", "64k", "1m"]
        .into_iter()
        .filter(|s| wanted.split(',').any(|w| w.trim().eq_ignore_ascii_case(s)))
        .collect()
}

/// Every shape at about `size` tasks (1,024, 65,536 or 1,048,576).
fn shapes(size: &str) -> Vec<(&'static str, Topology, Work)> {
    let (log2, side) = match size {
        "1k" => (10, 32),
        "64k" => (16, 256),
        _ => (20, 1024),
    };
    vec![
        ("linear_chain", linear_chain(1 << log2), Work::Empty),
        ("binary_tree", binary_tree(log2), Work::Empty),
        ("wavefront", wavefront(side), Work::Empty),
        ("independent_empty", independent(1 << log2), Work::Empty),
        ("independent_0.7us", independent(1 << log2), Work::Burn),
        ("graph_traversal", graph_traversal(side), Work::Empty),
        ("graph_traversal_0.7us", graph_traversal(side), Work::Burn),
    ]
}

/// Every policy the bench runs, by runner name.
fn policies() -> [(&'static str, Policy); 4] {
    [
        ("magpie_depth_first", Policy::DepthFirst),
        ("magpie_fifo", Policy::Fifo),
        ("magpie_critical_path", Policy::CriticalPath),
        (
            "magpie_sjf_example",
            Policy::custom(custom_policy::ShortestJobFirst),
        ),
    ]
}

fn scheduling(c: &mut Criterion) {
    let workers: usize = std::env::var("MAGPIE_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(WORKERS);
    let idle_spin: IdleSpin = std::env::var("MAGPIE_BENCH_IDLE_SPIN")
        .map_or(Ok(IdleSpin::default()), |s| s.parse())
        .expect("MAGPIE_BENCH_IDLE_SPIN");
    let pool = ThreadPool::builder()
        .num_workers(workers)
        .idle_spin(idle_spin)
        .build()
        .unwrap();
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .build()
        .unwrap();
    let only = std::env::var("MAGPIE_BENCH_ONLY").ok();
    let wanted = |who: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == who))
    };
    for size in sizes() {
        for (name, topology, work) in shapes(size) {
            let mut group = c.benchmark_group(format!("{name}/w{workers}"));
            group.throughput(Throughput::Elements(topology.len() as u64));
            if size == "1m" {
                // One execution takes 5-500 ms: few, equal samples.
                group
                    .sampling_mode(SamplingMode::Flat)
                    .sample_size(10)
                    .warm_up_time(Duration::from_millis(200))
                    .measurement_time(Duration::from_secs(2));
            }
            let n = topology.len();
            for (id, policy) in policies() {
                if wanted(id) || wanted("magpie") {
                    let body = Body(work);
                    let control = RunControl::with_policy(policy);
                    group.bench_function(BenchmarkId::new(id, n), |b| {
                        b.iter(|| pool.execute(&topology, &body, &control).unwrap())
                    });
                }
            }
            if wanted("rayon_spawn") {
                group.bench_function(BenchmarkId::new("rayon_spawn", n), |b| {
                    b.iter(|| rayon_run(&rayon_pool, &topology, work, false))
                });
            }
            if wanted("rayon_inline") {
                group.bench_function(BenchmarkId::new("rayon_inline", n), |b| {
                    b.iter(|| rayon_run(&rayon_pool, &topology, work, true))
                });
            }
            if wanted("tokio_spawn") {
                group.bench_function(BenchmarkId::new("tokio_spawn", n), |b| {
                    b.iter(|| tokio_run(&rt, &topology, work))
                });
            }
            group.finish();
        }
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(800))
}

criterion_group! {
    name = benches;
    config = config();
    targets = scheduling
}
criterion_main!(benches);
