//! Scheduler tests: runs started with `ThreadPool::spawn_run` — results, order, errors,
//! every policy, and the three ways a run future ends early: its token, its deadline
//! (with every task waiting, so only the timer can notice), and being dropped.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{random_dag, Rng};
use futures::executor::block_on;
use futures::FutureExt;
use magpie_scheduler::{
    CancellationToken, DagBody, Policy, RunControl, RunError, TaskContext, TaskOutcome, ThreadPool,
    Topology,
};

/// Checks that every task runs once, after its predecessors; counts the bodies dropped.
struct Owned {
    preds: Vec<Vec<u32>>,
    runs: Arc<[AtomicU32]>,
    dropped: Arc<AtomicU32>,
    /// A task that fails with its own index.
    failing: Option<u32>,
}

impl Owned {
    fn new(preds: Vec<Vec<u32>>, failing: Option<u32>) -> Owned {
        let runs = (0..preds.len()).map(|_| AtomicU32::new(0)).collect();
        Owned {
            preds,
            runs,
            dropped: Arc::new(AtomicU32::new(0)),
            failing,
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl DagBody for Owned {
    type Error = u32;

    fn run(&self, task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<u32>, u32> {
        for &p in &self.preds[task as usize] {
            assert_eq!(self.runs[p as usize].load(Ordering::SeqCst), 1, "pred {p}");
        }
        self.runs[task as usize].fetch_add(1, Ordering::SeqCst);
        if self.failing == Some(task) {
            return Err(task);
        }
        Ok(TaskOutcome::Done)
    }
}

#[test]
fn a_spawned_run_runs_every_task_once_in_order_under_every_policy() {
    let pool = ThreadPool::new(3).unwrap();
    let mut rng = Rng::new(17);
    for policy in [
        Policy::depth_first(),
        Policy::fifo(),
        Policy::critical_path(),
    ] {
        for _ in 0..20 {
            let (topology, preds) = random_dag(&mut rng, 200, 0.05);
            let body = Owned::new(preds, None);
            let (runs, dropped) = (Arc::clone(&body.runs), Arc::clone(&body.dropped));
            let control = RunControl::with_policy(policy.clone());
            block_on(pool.spawn_run(Arc::new(topology), body, control)).unwrap();
            assert!(runs.iter().all(|r| r.load(Ordering::SeqCst) == 1));
            // The body went with the run, before the future resolved.
            assert_eq!(dropped.load(Ordering::SeqCst), 1);
        }
    }
}

#[test]
fn a_failing_task_is_the_spawned_runs_error() {
    let pool = ThreadPool::new(2).unwrap();
    let (topology, preds) = common::chain(50);
    let body = Owned::new(preds, Some(20));
    let runs = Arc::clone(&body.runs);
    match block_on(pool.spawn_run(Arc::new(topology), body, RunControl::default())) {
        Err(RunError::Task {
            task: 20,
            error: 20,
        }) => {}
        other => panic!("expected task 20's error, got {other:?}"),
    }
    assert_eq!(
        runs[21].load(Ordering::SeqCst),
        0,
        "nothing runs after a failure"
    );
}

#[test]
fn an_empty_or_already_cancelled_run_resolves_at_once() {
    let pool = ThreadPool::new(1).unwrap();
    let empty = Arc::new(Topology::builder(0).build().unwrap());
    block_on(pool.spawn_run(empty, Owned::new(vec![], None), RunControl::default())).unwrap();
    let token = CancellationToken::new();
    token.cancel();
    let (topology, preds) = common::chain(3);
    let body = Owned::new(preds, None);
    let runs = Arc::clone(&body.runs);
    let r = block_on(pool.spawn_run(Arc::new(topology), body, RunControl::with_token(token)));
    assert!(matches!(r, Err(RunError::Cancelled)), "{r:?}");
    assert_eq!(runs[0].load(Ordering::SeqCst), 0);
    let past = RunControl::with_deadline(Instant::now() - Duration::from_millis(1));
    let (topology, preds) = common::chain(3);
    let r = block_on(pool.spawn_run(Arc::new(topology), Owned::new(preds, None), past));
    assert!(matches!(r, Err(RunError::DeadlineExceeded)), "{r:?}");
}

/// Task 0 waits forever on a future that nothing completes; task 1 follows it.
struct Stuck {
    started: mpsc::SyncSender<()>,
    second_ran: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

impl Drop for Stuck {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl DagBody for Stuck {
    type Error = ();

    fn run(&self, task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<()>, ()> {
        if task == 1 {
            self.second_ran.store(true, Ordering::SeqCst);
            return Ok(TaskOutcome::Done);
        }
        let _ = self.started.try_send(());
        Ok(TaskOutcome::Pending(futures::future::pending().boxed()))
    }
}

fn stuck() -> (
    Arc<Topology>,
    Stuck,
    mpsc::Receiver<()>,
    Arc<AtomicBool>,
    Arc<AtomicBool>,
) {
    let mut b = Topology::builder(2);
    b.add_edge(0, 1);
    let (tx, rx) = mpsc::sync_channel(1);
    let (second, dropped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let body = Stuck {
        started: tx,
        second_ran: Arc::clone(&second),
        dropped: Arc::clone(&dropped),
    };
    (Arc::new(b.build().unwrap()), body, rx, second, dropped)
}

/// Waits (at most 10 s) for `flag`.
fn wait_for(flag: &AtomicBool) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while !flag.load(Ordering::SeqCst) {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

#[test]
fn the_deadline_ends_a_run_whose_tasks_all_wait() {
    let pool = ThreadPool::new(2).unwrap();
    let (topology, body, started, second, dropped) = stuck();
    let control = RunControl::with_deadline(Instant::now() + Duration::from_millis(50));
    let r = block_on(pool.spawn_run(topology, body, control));
    assert!(matches!(r, Err(RunError::DeadlineExceeded)), "{r:?}");
    assert!(started.try_recv().is_ok(), "task 0 started");
    assert!(!second.load(Ordering::SeqCst));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the body is gone once the future resolved"
    );
}

#[test]
fn cancelling_the_token_ends_a_waiting_run() {
    let pool = ThreadPool::new(2).unwrap();
    let (topology, body, started, second, _dropped) = stuck();
    let token = CancellationToken::new();
    let run = pool.spawn_run(topology, body, RunControl::with_token(token.clone()));
    let canceller = std::thread::spawn(move || {
        started.recv().unwrap();
        token.cancel();
    });
    let r = block_on(run);
    assert!(matches!(r, Err(RunError::Cancelled)), "{r:?}");
    assert!(!second.load(Ordering::SeqCst));
    canceller.join().unwrap();
}

#[test]
fn dropping_the_future_cancels_the_run_and_frees_it() {
    let pool = ThreadPool::new(2).unwrap();
    let (topology, body, started, second, dropped) = stuck();
    let run = pool.spawn_run(topology, body, RunControl::default());
    started.recv().unwrap();
    drop(run);
    // The pending future of task 0 is dropped by the cancellation, which ends the run and
    // frees its state (the body with it) on whichever thread finished it.
    assert!(wait_for(&dropped), "the run's body was never dropped");
    assert!(!second.load(Ordering::SeqCst), "task 1 never runs");
}

/// Task 0 blocks its worker until released; task 1 follows it.
struct Blocking {
    release: std::sync::Mutex<mpsc::Receiver<()>>,
    started: mpsc::SyncSender<()>,
    second_ran: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

impl Drop for Blocking {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl DagBody for Blocking {
    type Error = ();

    fn run(&self, task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<()>, ()> {
        if task == 1 {
            self.second_ran.store(true, Ordering::SeqCst);
        } else {
            let _ = self.started.send(());
            let _ = self.release.lock().unwrap().recv();
        }
        Ok(TaskOutcome::Done)
    }
}

#[test]
fn a_future_dropped_while_a_body_runs_returns_at_once_and_the_run_ends_after_the_body() {
    let pool = ThreadPool::new(2).unwrap();
    let mut b = Topology::builder(2);
    b.add_edge(0, 1);
    let (release_tx, release_rx) = mpsc::channel();
    let (started_tx, started_rx) = mpsc::sync_channel(1);
    let (second, dropped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let body = Blocking {
        release: std::sync::Mutex::new(release_rx),
        started: started_tx,
        second_ran: Arc::clone(&second),
        dropped: Arc::clone(&dropped),
    };
    let run = pool.spawn_run(Arc::new(b.build().unwrap()), body, RunControl::default());
    started_rx.recv().unwrap();
    // Dropping does not wait for the running body (it is blocked until we release it).
    drop(run);
    assert!(
        !dropped.load(Ordering::SeqCst),
        "the state outlives the future while a body runs"
    );
    release_tx.send(()).unwrap();
    assert!(
        wait_for(&dropped),
        "the run's state is freed once the body returned"
    );
    assert!(
        !second.load(Ordering::SeqCst),
        "the cancelled run starts nothing more"
    );
    // The pool keeps serving.
    let (topology, preds) = common::chain(10);
    block_on(pool.spawn_run(
        Arc::new(topology),
        Owned::new(preds, None),
        RunControl::default(),
    ))
    .unwrap();
}
