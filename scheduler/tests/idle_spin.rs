//! Scheduler test: every idle-spin setting — long, short and no spin, rounds of one kind
//! only, at most one or no searching worker — runs every DAG shape exactly once in
//! dependency order, from several outside threads at once, with nested runs and with
//! futures woken from other threads (each wake-up a push that a searcher or a sleeper must
//! pick up).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::{binary_tree, chain, fan, random_dag, wavefront, CheckingBody, Rng};
use futures::channel::oneshot;
use magpie_scheduler::{IdleSpin, RunControl, TaskGraph, ThreadPool, Topology};

fn settings() -> Vec<IdleSpin> {
    vec![
        IdleSpin::LONG,
        IdleSpin::SHORT,
        IdleSpin::OFF,
        IdleSpin::rounds(3, 0),
        IdleSpin::rounds(0, 3),
        IdleSpin::SHORT.max_searching(Some(1)),
        IdleSpin::LONG.max_searching(Some(0)),
    ]
}

fn shapes() -> Vec<(&'static str, Topology, Vec<Vec<u32>>)> {
    let mut rng = Rng::new(11);
    let (c, cp) = chain(200);
    let (t, tp) = binary_tree(255);
    let (w, wp) = wavefront(12);
    let (f, fp) = fan(300);
    let (r, rp) = random_dag(&mut rng, 150, 0.05);
    vec![
        ("chain", c, cp),
        ("tree", t, tp),
        ("wavefront", w, wp),
        ("fan", f, fp),
        ("random", r, rp),
    ]
}

#[test]
fn every_setting_runs_every_shape_exactly_once_from_several_callers() {
    let shapes = shapes();
    for spin in settings() {
        let pool = ThreadPool::builder()
            .num_workers(3)
            .idle_spin(spin)
            .build()
            .unwrap();
        assert_eq!(pool.idle_spin(), spin);
        std::thread::scope(|s| {
            for caller in 0..3 {
                let (pool, shapes) = (&pool, &shapes);
                s.spawn(move || {
                    for round in 0..20 {
                        let (name, topology, preds) = &shapes[(caller + round) % shapes.len()];
                        let body = CheckingBody::new(preds);
                        pool.execute(topology, &body, &RunControl::default())
                            .unwrap_or_else(|e| panic!("{spin}: {name}: {e}"));
                        body.assert_all_once();
                    }
                });
            }
        });
    }
}

#[test]
fn every_setting_runs_nested_runs_and_woken_futures() {
    for spin in settings() {
        // One worker and no helping callers: every task, nested or woken, needs the one
        // worker to find it after it went idle.
        for (workers, helpers) in [(1, 0), (2, 2)] {
            let pool = ThreadPool::builder()
                .num_workers(workers)
                .helper_slots(helpers)
                .idle_spin(spin)
                .build()
                .unwrap();
            let hits = Arc::new(AtomicU32::new(0));
            let mut g = TaskGraph::new();
            let mut prev = None;
            for _ in 0..8 {
                let h = Arc::clone(&hits);
                let woken = g.add_async(move || {
                    let h = Arc::clone(&h);
                    let (tx, rx) = oneshot::channel::<()>();
                    std::thread::spawn(move || {
                        let _ = tx.send(());
                    });
                    async move {
                        rx.await.unwrap();
                        h.fetch_add(1, Ordering::Relaxed);
                    }
                });
                let (h, inner_pool) = (Arc::clone(&hits), pool.clone());
                let nested = g.add(move || {
                    let mut inner = TaskGraph::new();
                    for _ in 0..4 {
                        let h = Arc::clone(&h);
                        inner.add(move || {
                            h.fetch_add(10, Ordering::Relaxed);
                        });
                    }
                    inner_pool.run(&inner).unwrap();
                });
                g.precede(woken, nested);
                if let Some(p) = prev {
                    g.precede(p, woken);
                }
                prev = Some(nested);
            }
            for _ in 0..5 {
                pool.run(&g).unwrap();
            }
            assert_eq!(
                hits.load(Ordering::Relaxed),
                5 * 8 * (1 + 4 * 10),
                "{spin}, {workers} worker(s)"
            );
        }
    }
}
