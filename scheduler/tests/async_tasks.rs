//! Scheduler tests: asynchronous tasks — futures completed from other threads, futures
//! that are ready at once or wake themselves, failing futures.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{random_dag, CheckingBody, Rng};
use futures::channel::oneshot;
use futures::FutureExt;
use magpie_scheduler::{
    DagBody, RunControl, RunError, TaskContext, TaskGraph, TaskOutcome, ThreadPool, Topology,
};

/// Every task completes through a oneshot sent from a plain thread after `delay`.
struct RemoteCompletion {
    delay: Duration,
    finished: Arc<[AtomicU32]>,
    preds: Vec<Vec<u32>>,
}

impl DagBody for RemoteCompletion {
    type Error = String;

    fn run(&self, task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
        for &p in &self.preds[task as usize] {
            assert_eq!(self.finished[p as usize].load(Ordering::SeqCst), 1);
        }
        let (tx, rx) = oneshot::channel::<u32>();
        let delay = self.delay;
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = tx.send(task);
        });
        let finished = Arc::clone(&self.finished);
        Ok(TaskOutcome::Pending(
            async move {
                let got = rx.await.map_err(|e| e.to_string())?;
                assert_eq!(got, task);
                finished[task as usize].fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            .boxed(),
        ))
    }
}

#[test]
fn futures_completed_from_other_threads() {
    let pool = ThreadPool::new(2).unwrap();
    let mut rng = Rng::new(3);
    for _ in 0..20 {
        let (topology, preds) = random_dag(&mut rng, 30, 0.1);
        let body = RemoteCompletion {
            delay: Duration::from_millis(1),
            finished: (0..30).map(|_| AtomicU32::new(0)).collect(),
            preds,
        };
        pool.execute(&topology, &body, &RunControl::default())
            .unwrap();
        assert!(body.finished.iter().all(|f| f.load(Ordering::SeqCst) == 1));
    }
}

#[test]
fn futures_that_are_ready_at_once_and_that_yield() {
    let pool = ThreadPool::new(2).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut g = TaskGraph::new();
    let mut prev = None;
    for i in 0..200u32 {
        let order = Arc::clone(&order);
        let t = g.add_async(move || {
            let order = Arc::clone(&order);
            async move {
                if i % 3 == 0 {
                    // Wakes itself during its own poll, then completes.
                    let mut yielded = false;
                    futures::future::poll_fn(|cx| {
                        if yielded {
                            std::task::Poll::Ready(())
                        } else {
                            yielded = true;
                            cx.waker().wake_by_ref();
                            std::task::Poll::Pending
                        }
                    })
                    .await;
                }
                order.lock().unwrap().push(i);
            }
        });
        if let Some(p) = prev {
            g.precede(p, t);
        }
        prev = Some(t);
    }
    for _ in 0..10 {
        order.lock().unwrap().clear();
        pool.run(&g).unwrap();
        assert_eq!(*order.lock().unwrap(), (0..200).collect::<Vec<_>>());
    }
}

#[test]
fn mixed_sync_and_async_random_dags() {
    /// Odd tasks are asynchronous and resolve after being woken from another thread.
    struct Mixed<'a>(CheckingBody<'a>);
    impl DagBody for Mixed<'_> {
        type Error = String;
        fn run(&self, task: u32, cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
            self.0.run(task, cx)?;
            if task % 2 == 0 {
                return Ok(TaskOutcome::Done);
            }
            let (tx, rx) = oneshot::channel::<()>();
            std::thread::spawn(move || {
                let _ = tx.send(());
            });
            Ok(TaskOutcome::Pending(
                rx.map(|r| r.map_err(|e| e.to_string())).boxed(),
            ))
        }
    }
    // The checking body marks a task finished when its body ran; for asynchronous tasks
    // successors may only start after the future resolved, which is stricter, so the
    // check still holds.
    for workers in [1, 2, 4] {
        let pool = ThreadPool::new(workers).unwrap();
        let mut rng = Rng::new(11 + workers as u64);
        for _ in 0..100 {
            let n = 1 + rng.below(40) as usize;
            let (topology, preds) = random_dag(&mut rng, n, 0.1);
            let body = Mixed(CheckingBody::new(&preds));
            pool.execute(&topology, &body, &RunControl::default())
                .unwrap();
            body.0.assert_all_once();
        }
    }
}

#[test]
fn async_error_fails_the_run() {
    struct Fails;
    impl DagBody for Fails {
        type Error = String;
        fn run(&self, task: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
            Ok(TaskOutcome::Pending(
                async move {
                    if task == 3 {
                        Err("async failure".to_owned())
                    } else {
                        Ok(())
                    }
                }
                .boxed(),
            ))
        }
    }
    let pool = ThreadPool::new(2).unwrap();
    let mut b = Topology::builder(10);
    for i in 1..10 {
        b.add_edge(i - 1, i);
    }
    let topology = b.build().unwrap();
    match pool.execute(&topology, &Fails, &RunControl::default()) {
        Err(RunError::Task { task: 3, error }) => assert_eq!(error, "async failure"),
        other => panic!("unexpected {other:?}"),
    }
}
