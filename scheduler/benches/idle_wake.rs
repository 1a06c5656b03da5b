//! Park and wake costs: one small run after another, each submitted from outside to a pool
//! whose workers are idle, as a remote step submits its partition. A plain loop with a
//! fixed iteration count (not criterion), so that `perf stat` gives per-iteration
//! instruction and context-switch counts:
//!
//! ```text
//! cargo bench -p magpie-scheduler --bench idle_wake --no-run
//! MAGPIE_WAKE_ITERS=20000 perf stat -e instructions,context-switches \
//!     $CARGO_TARGET_DIR/release/deps/idle_wake-<hash> spawn_one
//! ```
//!
//! Workloads (the first argument; every one by default):
//! - `spawn_one`: a one-task run through `spawn_run`, awaited with `block_on`: the
//!   injection wakes one sleeping worker, the run's end wakes the caller;
//! - `spawn_two`: two independent tasks of about 2 µs each: the worker that takes the
//!   roots splits them and its push wakes a second sleeper.
//!
//! Environment: `MAGPIE_WAKE_ITERS` (default 20,000), `MAGPIE_BENCH_WORKERS` (default 2),
//! `MAGPIE_BENCH_IDLE_SPIN` (default `off`: every worker parks right after its job, so
//! every iteration is a full park and wake; `long` shows the spinning pool).
//!
//! It prints wall-clock ns per iteration, which mean something only on a quiet machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use magpie_scheduler::{
    DagBody, IdleSpin, RunControl, TaskContext, TaskOutcome, ThreadPool, Topology,
};

/// A body that spins for `spin` per task.
struct Spin(Duration);

impl DagBody for Spin {
    type Error = ();
    fn run(&self, _task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<()>, ()> {
        let end = Instant::now() + self.0;
        while Instant::now() < end {
            std::hint::spin_loop();
        }
        Ok(TaskOutcome::Done)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}

fn main() {
    let iters: u32 = env_or("MAGPIE_WAKE_ITERS", 20_000);
    let workers: usize = env_or("MAGPIE_BENCH_WORKERS", 2);
    let spin: IdleSpin = env_or("MAGPIE_BENCH_IDLE_SPIN", IdleSpin::OFF);
    let pool = ThreadPool::builder()
        .num_workers(workers)
        .idle_spin(spin)
        .build()
        .expect("a pool");
    let only: Option<String> = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let workloads: [(&str, usize, Duration); 2] = [
        ("spawn_one", 1, Duration::ZERO),
        ("spawn_two", 2, Duration::from_micros(2)),
    ];
    for (name, tasks, body) in workloads {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let topology = Arc::new(Topology::builder(tasks).build().expect("a topology"));
        let once = || {
            let run = pool.spawn_run(Arc::clone(&topology), Spin(body), RunControl::default());
            futures::executor::block_on(run).expect("the run succeeds");
        };
        for _ in 0..100 {
            once();
        }
        let start = Instant::now();
        for _ in 0..iters {
            once();
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(iters);
        println!("{name}: {ns:.0} ns/iter ({iters} iters, {workers} workers, idle spin {spin})");
    }
}
