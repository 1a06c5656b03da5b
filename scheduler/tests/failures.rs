//! Scheduler tests: errors, panics, cancellation and deadlines end a run with the right
//! error, promptly, and leave the pool working.

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{binary_tree, chain, CheckingBody};
use futures::channel::oneshot;
use futures::FutureExt;
use magpie_scheduler::{
    CancellationToken, DagBody, RunControl, RunError, TaskContext, TaskGraph, TaskOutcome,
    ThreadPool, Topology,
};

/// Fails or panics at one task, counts how many bodies ran.
struct Faulty {
    at: u32,
    panic: bool,
    ran: AtomicUsize,
}

impl DagBody for Faulty {
    type Error = String;

    fn run(&self, task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
        self.ran.fetch_add(1, Ordering::Relaxed);
        if task == self.at {
            if self.panic {
                panic!("boom at {task}");
            }
            return Err(format!("bad task {task}"));
        }
        Ok(TaskOutcome::Done)
    }
}

#[test]
fn error_stops_the_chain() {
    let pool = ThreadPool::new(2).unwrap();
    let (topology, _) = chain(1000);
    let body = Faulty {
        at: 10,
        panic: false,
        ran: AtomicUsize::new(0),
    };
    match pool.execute(&topology, &body, &RunControl::default()) {
        Err(RunError::Task { task: 10, error }) => assert_eq!(error, "bad task 10"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(body.ran.load(Ordering::SeqCst), 11);
    let err = pool
        .execute(&topology, &body, &RunControl::default())
        .unwrap_err();
    assert_eq!(err.to_string(), "task 10 failed: bad task 10");
}

#[test]
fn panic_becomes_an_error_and_the_pool_keeps_working() {
    let pool = ThreadPool::new(2).unwrap();
    let (topology, preds) = binary_tree(10_000);
    for _ in 0..20 {
        let body = Faulty {
            at: 77,
            panic: true,
            ran: AtomicUsize::new(0),
        };
        match pool.execute(&topology, &body, &RunControl::default()) {
            Err(RunError::Panicked { task: 77, message }) => assert_eq!(message, "boom at 77"),
            other => panic!("unexpected {other:?}"),
        }
        // The pool still runs everything, on both workers.
        let body = CheckingBody::new(&preds);
        pool.execute(&topology, &body, &RunControl::default())
            .unwrap();
        body.assert_all_once();
    }
    let mut g = TaskGraph::new();
    g.add(|| panic!("graph task panics"));
    assert!(matches!(
        pool.run(&g),
        Err(RunError::Panicked { task: 0, .. })
    ));
}

#[test]
fn panic_in_a_future_is_caught() {
    let pool = ThreadPool::new(2).unwrap();
    let mut g = TaskGraph::new();
    let a = g.add_async(|| async {
        futures::future::ready(()).await;
        panic!("future panics");
    });
    let ran = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&ran);
    let b = g.add(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    g.precede(a, b);
    match pool.run(&g) {
        Err(RunError::Panicked { task: 0, message }) => assert_eq!(message, "future panics"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

/// Task 0 waits on a channel that is never sent; task 1 depends on it.
struct Stuck {
    senders: std::sync::Mutex<Vec<oneshot::Sender<()>>>,
    dropped: Arc<AtomicU32>,
}

struct DropFlag(Arc<AtomicU32>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl DagBody for Stuck {
    type Error = String;

    fn run(&self, task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
        if task == 0 {
            let (tx, rx) = oneshot::channel::<()>();
            self.senders.lock().unwrap().push(tx);
            let flag = DropFlag(Arc::clone(&self.dropped));
            return Ok(TaskOutcome::Pending(
                async move {
                    let _flag = flag;
                    rx.await.map_err(|e| e.to_string())
                }
                .boxed(),
            ));
        }
        Ok(TaskOutcome::Done)
    }
}

fn stuck_topology() -> Topology {
    let mut b = Topology::builder(2);
    b.add_edge(0, 1);
    b.build().unwrap()
}

#[test]
fn cancel_from_another_thread_while_a_future_is_pending() {
    let pool = ThreadPool::new(2).unwrap();
    let topology = stuck_topology();
    let body = Stuck {
        senders: Default::default(),
        dropped: Arc::new(AtomicU32::new(0)),
    };
    let token = CancellationToken::new();
    // The future never completes, so only the token ends the run. The far deadline is a
    // hang guard: a run that ignored the token would end there, failing by its kind.
    let control = RunControl {
        deadline: Some(Instant::now() + Duration::from_secs(120)),
        ..RunControl::with_token(token.clone())
    };
    let result = std::thread::scope(|scope| {
        // Cancels once task 0's future is pending (it made its channel), not before.
        scope.spawn(|| {
            let until = Instant::now() + Duration::from_secs(120);
            while body.senders.lock().unwrap().is_empty() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            token.cancel();
        });
        pool.execute(&topology, &body, &control)
    });
    assert!(matches!(result, Err(RunError::Cancelled)), "{result:?}");
    assert_eq!(
        body.dropped.load(Ordering::SeqCst),
        1,
        "the pending future was dropped"
    );
    assert!(token.is_cancelled());
    // A run with an already cancelled token does nothing.
    assert!(matches!(
        pool.execute(&topology, &body, &RunControl::with_token(token)),
        Err(RunError::Cancelled)
    ));
}

#[test]
fn deadline_exceeded_while_a_future_is_pending() {
    let pool = ThreadPool::new(2).unwrap();
    let topology = stuck_topology();
    let body = Stuck {
        senders: Default::default(),
        dropped: Arc::new(AtomicU32::new(0)),
    };
    let deadline = Instant::now() + Duration::from_millis(50);
    let result = pool.execute(&topology, &body, &RunControl::with_deadline(deadline));
    assert!(
        matches!(result, Err(RunError::DeadlineExceeded)),
        "{result:?}"
    );
    assert_eq!(body.dropped.load(Ordering::SeqCst), 1);
    // The sender still exists; sending now wakes nothing that matters.
    for tx in body.senders.lock().unwrap().drain(..) {
        let _ = tx.send(());
    }
    let past = Instant::now() - Duration::from_millis(1);
    assert!(matches!(
        pool.execute(&topology, &body, &RunControl::with_deadline(past)),
        Err(RunError::DeadlineExceeded)
    ));
}

/// Spins in every body until the run is cancelled.
struct Cooperative {
    started: AtomicUsize,
}

impl DagBody for Cooperative {
    type Error = String;

    fn run(&self, _task: u32, cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
        self.started.fetch_add(1, Ordering::SeqCst);
        while !cx.is_cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(TaskOutcome::Done)
    }
}

#[test]
fn deadline_with_busy_bodies_stops_new_bodies() {
    let pool = ThreadPool::new(2).unwrap();
    let topology = Topology::builder(1000).build().unwrap();
    let body = Cooperative {
        started: AtomicUsize::new(0),
    };
    let deadline = Instant::now() + Duration::from_millis(30);
    let result = pool.execute(&topology, &body, &RunControl::with_deadline(deadline));
    assert!(
        matches!(result, Err(RunError::DeadlineExceeded)),
        "{result:?}"
    );
    // At most one body per thread started: the two workers and the calling thread,
    // which helps with its own run.
    assert!(body.started.load(Ordering::SeqCst) <= 3);
}

#[test]
fn cancel_in_nested_run_and_in_task_graph() {
    let pool = ThreadPool::new(1).unwrap();
    let token = CancellationToken::new();
    let mut g = TaskGraph::new();
    let t = token.clone();
    let a = g.add(move || t.cancel());
    let b = g.add(|| panic!("must not run after cancellation"));
    g.precede(a, b);
    let result = pool.run_with(&g, &RunControl::with_token(token));
    assert!(matches!(result, Err(RunError::Cancelled)), "{result:?}");

    // A nested run that waits on a future, cancelled from a task of the outer run.
    struct Outer<'a> {
        pool: &'a ThreadPool,
        token: CancellationToken,
    }
    impl DagBody for Outer<'_> {
        type Error = String;
        fn run(&self, _: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
            let inner = Stuck {
                senders: Default::default(),
                dropped: Arc::new(AtomicU32::new(0)),
            };
            let token = self.token.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                token.cancel();
            });
            let r = self.pool.execute(
                &stuck_topology(),
                &inner,
                &RunControl::with_token(self.token.clone()),
            );
            assert!(matches!(r, Err(RunError::Cancelled)), "{r:?}");
            assert_eq!(inner.dropped.load(Ordering::SeqCst), 1);
            let d = Instant::now() + Duration::from_millis(20);
            let r = self
                .pool
                .execute(&stuck_topology(), &inner, &RunControl::with_deadline(d));
            assert!(matches!(r, Err(RunError::DeadlineExceeded)), "{r:?}");
            Ok(TaskOutcome::Done)
        }
    }
    let body = Outer {
        pool: &pool,
        token: CancellationToken::new(),
    };
    pool.execute(
        &Topology::builder(1).build().unwrap(),
        &body,
        &RunControl::default(),
    )
    .unwrap();
}

#[test]
fn first_error_wins_among_many() {
    struct AllFail;
    impl DagBody for AllFail {
        type Error = u32;
        fn run(&self, task: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<u32>, u32> {
            Err(task)
        }
    }
    let pool = ThreadPool::new(2).unwrap();
    let topology = Topology::builder(10_000).build().unwrap();
    for _ in 0..100 {
        match pool.execute(&topology, &AllFail, &RunControl::default()) {
            Err(RunError::Task { task, error }) => assert_eq!(task, error),
            other => panic!("unexpected {other:?}"),
        }
    }
}
