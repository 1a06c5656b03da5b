//! Scheduler tests: each task exactly once and in order, on random DAGs and on the
//! benchmark shapes; concurrent and nested runs; cycles; the `TaskGraph` API.

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{binary_tree, chain, fan, random_dag, wavefront, CheckingBody, Empty, Rng};
use magpie_scheduler::{
    DagBody, RunControl, RunError, SchedulerError, TaskContext, TaskGraph, TaskOutcome, ThreadPool,
    Topology,
};

#[test]
fn zero_workers_is_an_error() {
    assert!(matches!(ThreadPool::new(0), Err(SchedulerError::NoWorkers)));
    let pool = ThreadPool::builder()
        .num_workers(3)
        .thread_name("test-pool")
        .build()
        .unwrap();
    assert_eq!(pool.num_workers(), 3);
}

#[test]
fn random_dags_run_each_task_once_in_order() {
    for workers in [1, 2, 4] {
        let pool = ThreadPool::new(workers).unwrap();
        let mut rng = Rng::new(workers as u64);
        for round in 0..1500 {
            let n = 1 + rng.below(if round % 10 == 0 { 300 } else { 40 }) as usize;
            let density = [0.0, 0.05, 0.2, 0.6][round % 4];
            let (topology, preds) = random_dag(&mut rng, n, density);
            let body = CheckingBody::new(&preds);
            pool.execute(&topology, &body, &RunControl::default())
                .unwrap();
            body.assert_all_once();
        }
    }
}

#[test]
fn benchmark_shapes_run_each_task_once_in_order() {
    let pool = ThreadPool::new(2).unwrap();
    let shapes = [
        chain(100_000),
        binary_tree(65_535),
        wavefront(128),
        fan(10_000),
        random_dag(&mut Rng::new(7), 2000, 0.01),
        (
            Topology::builder(50_000).build().unwrap(),
            vec![Vec::new(); 50_000],
        ),
    ];
    for (topology, preds) in &shapes {
        for _ in 0..3 {
            let body = CheckingBody::new(preds);
            pool.execute(topology, &body, &RunControl::default())
                .unwrap();
            body.assert_all_once();
        }
    }
}

#[test]
fn execute_on_caller_runs_each_task_once_in_order() {
    // The caller wakes no worker for what it queues: every task must still run, once and
    // in order, whether the caller runs it or an awake worker steals it.
    let pool = ThreadPool::new(2).unwrap();
    let mut rng = Rng::new(11);
    let mut shapes = vec![chain(1000), binary_tree(1023), wavefront(16), fan(1000)];
    for round in 0..300 {
        let n = 1 + rng.below(60) as usize;
        shapes.push(random_dag(&mut rng, n, [0.0, 0.1, 0.5][round % 3]));
    }
    for (topology, preds) in &shapes {
        let body = CheckingBody::new(preds);
        pool.execute_on_caller(topology, &body, &RunControl::default())
            .unwrap();
        body.assert_all_once();
    }
    // From several threads at once (more callers than helper slots: the others hand
    // their runs to the workers, as `execute` does).
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pool = &pool;
            s.spawn(move || {
                let mut rng = Rng::new(100 + t);
                for _ in 0..200 {
                    let (topology, preds) = random_dag(&mut rng, 30, 0.1);
                    let body = CheckingBody::new(&preds);
                    pool.execute_on_caller(&topology, &body, &RunControl::default())
                        .unwrap();
                    body.assert_all_once();
                }
            });
        }
    });
}

#[test]
fn long_chain_on_four_workers() {
    let pool = ThreadPool::new(4).unwrap();
    let (topology, preds) = chain(100_000);
    let body = CheckingBody::new(&preds);
    pool.execute(&topology, &body, &RunControl::default())
        .unwrap();
    body.assert_all_once();
}

#[test]
fn empty_topology_is_ok() {
    let pool = ThreadPool::new(2).unwrap();
    let topology = Topology::builder(0).build().unwrap();
    pool.execute(&topology, &Empty, &RunControl::default())
        .unwrap();
}

#[test]
fn concurrent_runs_from_eight_threads() {
    let pool = ThreadPool::new(2).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let pool = pool.clone();
            s.spawn(move || {
                let mut rng = Rng::new(100 + t);
                for _ in 0..200 {
                    let n = 1 + rng.below(200) as usize;
                    let (topology, preds) = random_dag(&mut rng, n, 0.05);
                    let body = CheckingBody::new(&preds);
                    pool.execute(&topology, &body, &RunControl::default())
                        .unwrap();
                    body.assert_all_once();
                }
                let (topology, preds) = wavefront(100);
                let body = CheckingBody::new(&preds);
                pool.execute(&topology, &body, &RunControl::default())
                    .unwrap();
                body.assert_all_once();
            });
        }
    });
}

/// Each task of the outer DAG runs an inner DAG on the same pool.
struct Nested<'a> {
    pool: &'a ThreadPool,
    inner: Topology,
    inner_preds: Vec<Vec<u32>>,
    inner_runs: AtomicUsize,
}

impl DagBody for Nested<'_> {
    type Error = String;

    fn run(&self, _task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
        let body = CheckingBody::new(&self.inner_preds);
        self.pool
            .execute(&self.inner, &body, &RunControl::default())
            .map_err(|e| e.to_string())?;
        body.assert_all_once();
        self.inner_runs.fetch_add(1, Ordering::SeqCst);
        Ok(TaskOutcome::Done)
    }
}

#[test]
fn nested_execute_from_a_task_does_not_deadlock() {
    for workers in [1, 2] {
        let pool = ThreadPool::new(workers).unwrap();
        let (inner, inner_preds) = binary_tree(1000);
        let body = Nested {
            pool: &pool,
            inner,
            inner_preds,
            inner_runs: AtomicUsize::new(0),
        };
        let (outer, _) = fan(20);
        pool.execute(&outer, &body, &RunControl::default()).unwrap();
        assert_eq!(body.inner_runs.load(Ordering::SeqCst), 20);
    }
}

#[test]
fn cycle_is_an_error() {
    let mut b = Topology::builder(3);
    b.add_edge(0, 1);
    b.add_edge(1, 2);
    b.add_edge(2, 0);
    assert!(matches!(b.build(), Err(SchedulerError::Cycle { .. })));

    let pool = ThreadPool::new(2).unwrap();
    let mut g = TaskGraph::new();
    let a = g.add(|| {});
    let b = g.add(|| {});
    g.precede(a, b);
    g.precede(b, a);
    match pool.run(&g) {
        Err(RunError::Invalid(SchedulerError::Cycle { .. })) => {}
        other => panic!("expected a cycle error, got {other:?}"),
    }
}

#[test]
fn task_graph_runs_many_times_in_order() {
    let pool = ThreadPool::new(2).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut g = TaskGraph::new();
    let ids: Vec<_> = (0..4)
        .map(|i| {
            let log = Arc::clone(&log);
            g.add(move || log.lock().unwrap().push(i))
        })
        .collect();
    // 0 -> {1, 2} -> 3
    g.precede(ids[0], ids[1]);
    g.precede(ids[0], ids[2]);
    g.succeed(ids[3], ids[1]);
    g.succeed(ids[3], ids[2]);
    assert_eq!(g.len(), 4);
    assert_eq!(ids[3].index(), 3);
    for _ in 0..100 {
        log.lock().unwrap().clear();
        pool.run(&g).unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 4);
        assert_eq!(log[0], 0);
        assert_eq!(log[3], 3);
    }
    // Adding a task invalidates the cached topology.
    let counter = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&counter);
    let extra = g.add(move || {
        c.fetch_add(1, Ordering::SeqCst);
    });
    g.precede(ids[3], extra);
    pool.run(&g).unwrap();
    assert_eq!(counter.load(Ordering::SeqCst), 1);
}

#[test]
fn task_graph_from_many_threads() {
    let pool = ThreadPool::new(2).unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    let mut g = TaskGraph::new();
    let mut prev = None;
    for _ in 0..1000 {
        let c = Arc::clone(&counter);
        let t = g.add(move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
        if let Some(p) = prev {
            g.precede(p, t);
        }
        prev = Some(t);
    }
    let g = &g;
    std::thread::scope(|s| {
        for _ in 0..8 {
            let pool = pool.clone();
            s.spawn(move || {
                for _ in 0..50 {
                    pool.run(g).unwrap();
                }
            });
        }
    });
    assert_eq!(counter.load(Ordering::SeqCst), 8 * 50 * 1000);
}

#[test]
fn worker_indices_are_in_range() {
    struct Indices(AtomicUsize);
    impl DagBody for Indices {
        type Error = String;
        fn run(&self, _: u32, cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
            self.0.fetch_max(cx.worker_index(), Ordering::Relaxed);
            assert!(!cx.is_cancelled());
            Ok(TaskOutcome::Done)
        }
    }
    let pool = ThreadPool::new(3).unwrap();
    let body = Indices(AtomicUsize::new(0));
    let topology = Topology::builder(10_000).build().unwrap();
    pool.execute(&topology, &body, &RunControl::default())
        .unwrap();
    // 0..3 for the workers, 3 for the calling thread, which helps with its own run.
    assert!(body.0.load(Ordering::SeqCst) <= 3);
}

#[test]
fn dropping_the_pool_joins_workers() {
    for _ in 0..50 {
        let pool = ThreadPool::new(2).unwrap();
        let clone = pool.clone();
        let (topology, preds) = binary_tree(1000);
        let body = CheckingBody::new(&preds);
        pool.execute(&topology, &body, &RunControl::default())
            .unwrap();
        drop(pool);
        clone
            .execute(&topology, &Empty, &RunControl::default())
            .unwrap();
        drop(clone);
    }
}

#[test]
fn public_types_have_the_promised_bounds() {
    fn send_sync<T: Send + Sync>() {}
    fn clone_debug<T: Clone + std::fmt::Debug>() {}
    fn debug_default<T: std::fmt::Debug + Default>() {}
    send_sync::<ThreadPool>();
    clone_debug::<ThreadPool>();
    send_sync::<Topology>();
    clone_debug::<Topology>();
    send_sync::<TaskGraph>();
    debug_default::<TaskGraph>();
    debug_default::<magpie_scheduler::ThreadPoolBuilder>();
    debug_default::<magpie_scheduler::CancellationToken>();
    debug_default::<RunControl>();
    send_sync::<magpie_scheduler::CancellationToken>();
    send_sync::<RunError<String>>();
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    error::<RunError<std::convert::Infallible>>();
    error::<SchedulerError>();
}
