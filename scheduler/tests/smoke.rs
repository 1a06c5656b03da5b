//! Small scheduler scenarios, sized to also run under Miri
//! (`cargo +nightly miri test -p magpie-scheduler --test smoke`), which checks the
//! raw-pointer lifetime protocol of jobs, runs and asynchronous tasks.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{random_dag, wavefront, CheckingBody, Rng};
use futures::channel::oneshot;
use futures::FutureExt;
use magpie_scheduler::{
    CancellationToken, DagBody, RunControl, RunError, TaskContext, TaskGraph, TaskOutcome,
    ThreadPool,
};

#[test]
fn smoke_random_dags() {
    let pool = ThreadPool::new(2).unwrap();
    let mut rng = Rng::new(5);
    for _ in 0..6 {
        let (topology, preds) = random_dag(&mut rng, 12, 0.3);
        let body = CheckingBody::new(&preds);
        pool.execute(&topology, &body, &RunControl::default())
            .unwrap();
        body.assert_all_once();
    }
    let (topology, preds) = wavefront(5);
    let body = CheckingBody::new(&preds);
    pool.execute(&topology, &body, &RunControl::default())
        .unwrap();
    body.assert_all_once();
}

#[test]
fn smoke_async_panic_nested_cancel() {
    let pool = ThreadPool::new(2).unwrap();
    let hits = Arc::new(AtomicU32::new(0));

    // Async tasks completed from another thread, then a synchronous successor.
    let mut g = TaskGraph::new();
    let h = Arc::clone(&hits);
    let a = g.add_async(move || {
        let (tx, rx) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = tx.send(());
        });
        let h = Arc::clone(&h);
        async move {
            rx.await.unwrap();
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    let h = Arc::clone(&hits);
    let b = g.add(move || {
        h.fetch_add(1, Ordering::SeqCst);
    });
    g.precede(a, b);
    pool.run(&g).unwrap();
    pool.run(&g).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 4);

    // A panic, then the pool still works.
    let mut p = TaskGraph::new();
    p.add(|| panic!("smoke"));
    assert!(matches!(pool.run(&p), Err(RunError::Panicked { .. })));
    pool.run(&g).unwrap();

    // A nested run.
    struct Nested<'a>(&'a ThreadPool, &'a TaskGraph);
    impl DagBody for Nested<'_> {
        type Error = String;
        fn run(&self, _: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
            self.0.run(self.1).map_err(|e| e.to_string())?;
            Ok(TaskOutcome::Done)
        }
    }
    let (outer, _) = wavefront(2);
    pool.execute(&outer, &Nested(&pool, &g), &RunControl::default())
        .unwrap();

    // Cancellation while a future is pending; its sender fires after the run is over.
    let mut stuck = TaskGraph::new();
    let (tx, rx) = oneshot::channel::<()>();
    let rx = std::sync::Mutex::new(Some(rx));
    stuck.add_async(move || {
        let rx = rx.lock().unwrap().take();
        async move {
            if let Some(rx) = rx {
                let _ = rx.await;
            }
        }
    });
    let token = CancellationToken::new();
    let t = token.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        t.cancel();
    });
    let r = pool.run_with(&stuck, &RunControl::with_token(token));
    assert!(matches!(r, Err(RunError::Cancelled)), "{r:?}");
    canceller.join().unwrap();
    let _ = tx.send(());

    // A deadline.
    let (tx, rx) = oneshot::channel::<()>();
    let rx = std::sync::Mutex::new(Some(rx));
    let mut stuck = TaskGraph::new();
    stuck.add_async(move || {
        let rx = rx.lock().unwrap().take();
        async move {
            if let Some(rx) = rx {
                let _ = rx.await;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_millis(10);
    let r = pool.run_with(&stuck, &RunControl::with_deadline(deadline));
    assert!(matches!(r, Err(RunError::DeadlineExceeded)), "{r:?}");
    drop(tx);
}

#[test]
fn smoke_body_futures_resolving_immediately() {
    struct Ready;
    impl DagBody for Ready {
        type Error = String;
        fn run(&self, task: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
            if task % 2 == 0 {
                Ok(TaskOutcome::Pending(async { Ok(()) }.boxed()))
            } else {
                Ok(TaskOutcome::Done)
            }
        }
    }
    let pool = ThreadPool::new(1).unwrap();
    let (topology, _) = wavefront(4);
    pool.execute(&topology, &Ready, &RunControl::default())
        .unwrap();
}

#[test]
fn smoke_concurrent_runs_with_failures() {
    struct MaybeFails<'a>(CheckingBody<'a>, u32);
    impl DagBody for MaybeFails<'_> {
        type Error = String;
        fn run(&self, task: u32, cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
            self.0.run(task, cx)?;
            match task % 4 {
                _ if task == self.1 => Err("fails".to_owned()),
                1 => Ok(TaskOutcome::Pending(async { Ok(()) }.boxed())),
                3 => {
                    let (tx, rx) = oneshot::channel::<()>();
                    std::thread::spawn(move || {
                        let _ = tx.send(());
                    });
                    Ok(TaskOutcome::Pending(
                        rx.map(|r| r.map_err(|e| e.to_string())).boxed(),
                    ))
                }
                _ => Ok(TaskOutcome::Done),
            }
        }
    }
    let pool = ThreadPool::new(2).unwrap();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let pool = &pool;
            s.spawn(move || {
                let mut rng = Rng::new(40 + t);
                for round in 0..3 {
                    let (topology, preds) = random_dag(&mut rng, 10, 0.3);
                    let fail_at = if round == 1 { 5 } else { u32::MAX };
                    let body = MaybeFails(CheckingBody::new(&preds), fail_at);
                    let r = pool.execute(&topology, &body, &RunControl::default());
                    if round == 1 {
                        assert!(matches!(r, Err(RunError::Task { task: 5, .. })), "{r:?}");
                    } else {
                        r.unwrap();
                        body.0.assert_all_once();
                    }
                }
            });
        }
    });
}
