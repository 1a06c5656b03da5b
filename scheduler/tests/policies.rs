//! Scheduling policies: the order each one promises (checked exactly where one thread runs
//! the run), and a stress test — thousands of random DAGs under every policy, with async
//! tasks mixed in, each task exactly once and after its predecessors. Ordering and counts
//! only, never time.

mod common;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{all_policies, binary_tree, random_dag, wavefront, CheckingBody, Rng};
use futures::FutureExt;
use magpie_scheduler::{
    CancellationToken, DagBody, Policy, RunControl, RunError, TaskContext, TaskGraph, TaskOutcome,
    ThreadPool, Topology,
};

/// One worker, no helping caller: exactly one thread runs every task.
fn single_thread_pool() -> ThreadPool {
    ThreadPool::builder()
        .num_workers(1)
        .helper_slots(0)
        .build()
        .unwrap()
}

/// Records the order in which tasks start.
struct Recorder(Mutex<Vec<u32>>);

impl DagBody for Recorder {
    type Error = String;
    fn run(&self, task: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
        self.0.lock().unwrap().push(task);
        Ok(TaskOutcome::Done)
    }
}

fn record(pool: &ThreadPool, t: &Topology, policy: Policy) -> Vec<u32> {
    let body = Recorder(Mutex::new(Vec::new()));
    pool.execute(t, &body, &RunControl::with_policy(policy))
        .unwrap();
    body.0.into_inner().unwrap()
}

/// The FIFO order by a sequential simulation: roots in increasing order, then each task's
/// newly ready successors in edge order.
fn fifo_order(t: &Topology) -> Vec<u32> {
    let mut pending: Vec<u32> = (0..t.len() as u32).map(|i| t.num_predecessors(i)).collect();
    let mut queue: VecDeque<u32> = t.roots().iter().copied().collect();
    let mut order = Vec::new();
    while let Some(task) = queue.pop_front() {
        order.push(task);
        for &s in t.successors(task) {
            pending[s as usize] -= 1;
            if pending[s as usize] == 0 {
                queue.push_back(s);
            }
        }
    }
    order
}

/// Whether `order` always starts a ready task of the highest priority (ties: lowest index).
fn check_critical_order(t: &Topology, order: &[u32]) {
    let mut pending: Vec<u32> = (0..t.len() as u32).map(|i| t.num_predecessors(i)).collect();
    let mut ready: BinaryHeap<(u64, Reverse<u32>)> = t
        .roots()
        .iter()
        .map(|&r| (t.priority(r), Reverse(r)))
        .collect();
    for &task in order {
        let (_, Reverse(best)) = ready.pop().expect("a task started while none was ready");
        assert_eq!(
            task, best,
            "started {task}, but {best} had the highest priority"
        );
        for &s in t.successors(task) {
            pending[s as usize] -= 1;
            if pending[s as usize] == 0 {
                ready.push((t.priority(s), Reverse(s)));
            }
        }
    }
    assert!(ready.is_empty());
}

#[test]
fn fifo_starts_tasks_in_the_order_they_became_ready() {
    let pool = single_thread_pool();
    let (tree, _) = binary_tree(31);
    assert_eq!(
        record(&pool, &tree, Policy::Fifo),
        (0..31).collect::<Vec<_>>()
    );
    let (grid, _) = wavefront(6);
    assert_eq!(record(&pool, &grid, Policy::Fifo), fifo_order(&grid));
    let mut rng = Rng::new(11);
    for round in 0..300 {
        let n = 1 + rng.below(60) as usize;
        let (t, _) = random_dag(&mut rng, n, [0.0, 0.05, 0.2][round % 3]);
        assert_eq!(
            record(&pool, &t, Policy::Fifo),
            fifo_order(&t),
            "round {round}"
        );
    }
}

#[test]
fn depth_first_runs_a_ready_successor_in_place() {
    // Two chains from one root: depth-first finishes the chain it is on before it turns
    // to the other one; FIFO alternates.
    let mut b = Topology::builder(7);
    for (from, to) in [(0, 1), (1, 3), (3, 5), (0, 2), (2, 4), (4, 6)] {
        b.add_edge(from, to);
    }
    let t = b.build().unwrap();
    let pool = single_thread_pool();
    let order = record(&pool, &t, Policy::DepthFirst);
    let pos = |x: u32| order.iter().position(|&o| o == x).unwrap();
    assert!(
        pos(5) < pos(2) || pos(6) < pos(1),
        "not depth-first: {order:?}"
    );
    assert_eq!(record(&pool, &t, Policy::Fifo), [0, 1, 2, 3, 4, 5, 6]);
}

#[test]
fn critical_path_starts_the_costliest_ready_task_first() {
    // Root 0 fans out to a short branch (1) and a long one (2 -> 3 -> 4); 5 is a lone
    // root of cost 10.
    let mut b = Topology::builder(6);
    for (from, to) in [(0, 1), (0, 2), (2, 3), (3, 4)] {
        b.add_edge(from, to);
    }
    b.set_cost(5, 10);
    let t = b.build().unwrap();
    let pool = single_thread_pool();
    // After 3, tasks 1 and 4 tie (priority 1): the lower index goes first.
    assert_eq!(record(&pool, &t, Policy::CriticalPath), [5, 0, 2, 3, 1, 4]);

    let mut rng = Rng::new(5);
    for round in 0..300 {
        let n = 1 + rng.below(60) as usize;
        let (plain, preds) = random_dag(&mut rng, n, [0.0, 0.05, 0.2][round % 3]);
        let mut b = Topology::builder(n);
        for (to, ps) in preds.iter().enumerate() {
            for &p in ps {
                b.add_edge(p, to as u32);
            }
        }
        for task in 0..n as u32 {
            b.set_cost(task, 1 + rng.below(20));
        }
        let t = b.build().unwrap();
        assert_eq!(plain.num_edges(), t.num_edges());
        check_critical_order(&t, &record(&pool, &t, Policy::CriticalPath));
    }
}

/// [`CheckingBody`], except that some tasks finish through a future (resolved at once, or
/// after a trip through another thread).
struct MixedBody<'a> {
    check: CheckingBody<'a>,
    asyncs: u32,
}

impl DagBody for MixedBody<'_> {
    type Error = String;
    fn run(&self, task: u32, cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
        match task % self.asyncs {
            0 => {
                let (tx, rx) = futures::channel::oneshot::channel::<()>();
                std::thread::spawn(move || {
                    let _ = tx.send(());
                });
                self.check.run(task, cx)?;
                Ok(TaskOutcome::Pending(rx.map(|_| Ok(())).boxed()))
            }
            1 => {
                self.check.run(task, cx)?;
                Ok(TaskOutcome::Pending(futures::future::ready(Ok(())).boxed()))
            }
            _ => self.check.run(task, cx),
        }
    }
}

#[test]
fn every_policy_runs_thousands_of_random_dags_each_task_once_in_order() {
    for workers in [1, 2, 3] {
        let pool = ThreadPool::new(workers).unwrap();
        let mut rng = Rng::new(100 + workers as u64);
        let policies = all_policies();
        for round in 0..1200 {
            let n = 1 + rng.below(if round % 10 == 0 { 400 } else { 50 }) as usize;
            let (topology, preds) = random_dag(&mut rng, n, [0.0, 0.03, 0.15, 0.5][round % 4]);
            let policy = policies[round % policies.len()].clone();
            let body = MixedBody {
                check: CheckingBody::new(&preds),
                asyncs: if round % 5 == 0 { 7 } else { u32::MAX },
            };
            pool.execute(&topology, &body, &RunControl::with_policy(policy))
                .unwrap();
            body.check.assert_all_once();
        }
    }
}

#[test]
fn runs_of_different_policies_share_a_pool() {
    let pool = ThreadPool::new(2).unwrap();
    let mut rng = Rng::new(77);
    let dags: Vec<_> = (0..6)
        .map(|i| random_dag(&mut rng, 300 + 100 * i, 0.02))
        .collect();
    let policies = all_policies();
    let policies = &policies;
    std::thread::scope(|s| {
        for (i, (topology, preds)) in dags.iter().enumerate() {
            let pool = pool.clone();
            s.spawn(move || {
                for round in 0..30 {
                    let body = CheckingBody::new(preds);
                    let policy = policies[(i + round) % policies.len()].clone();
                    pool.execute(topology, &body, &RunControl::with_policy(policy))
                        .unwrap();
                    body.assert_all_once();
                }
            });
        }
    });
}

#[test]
fn task_graphs_run_under_every_policy() {
    let pool = ThreadPool::new(2).unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    let mut g = TaskGraph::new();
    let mut level: Vec<_> = (0..50)
        .map(|_| {
            let c = Arc::clone(&counter);
            g.add(move || {
                c.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    for _ in 0..20 {
        let next: Vec<_> = (0..50)
            .map(|_| {
                let c = Arc::clone(&counter);
                g.add(move || {
                    c.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        for (i, &t) in next.iter().enumerate() {
            g.precede(level[i], t);
            g.precede(level[(i * 7 + 3) % 50], t);
        }
        level = next;
    }
    for (k, policy) in all_policies().into_iter().enumerate() {
        pool.run_with(&g, &RunControl::with_policy(policy)).unwrap();
        assert_eq!(counter.load(Ordering::SeqCst), (k + 1) * 21 * 50);
    }
}

/// Fails (or panics) at one task; counts bodies that ran.
struct FailAt {
    at: u32,
    panic: bool,
    ran: AtomicU32,
}

impl DagBody for FailAt {
    type Error = String;
    fn run(&self, task: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
        self.ran.fetch_add(1, Ordering::Relaxed);
        if task == self.at {
            if self.panic {
                panic!("task {task} panics");
            }
            return Err(format!("task {task} fails"));
        }
        Ok(TaskOutcome::Done)
    }
}

#[test]
fn failures_and_cancellation_end_queued_policies_cleanly() {
    let pool = ThreadPool::new(2).unwrap();
    let (t, _) = wavefront(40);
    for policy in all_policies() {
        for panic in [false, true] {
            let body = FailAt {
                at: 300,
                panic,
                ran: AtomicU32::new(0),
            };
            let err = pool
                .execute(&t, &body, &RunControl::with_policy(policy.clone()))
                .unwrap_err();
            match (panic, err) {
                (false, RunError::Task { task: 300, error }) => assert_eq!(error, "task 300 fails"),
                (true, RunError::Panicked { task: 300, .. }) => {}
                (_, other) => panic!("{policy:?}: unexpected {other:?}"),
            }
            assert!(body.ran.load(Ordering::SeqCst) < t.len() as u32);
        }
        let token = CancellationToken::new();
        token.cancel();
        let control = RunControl {
            policy: policy.clone(),
            cancel: Some(token),
            ..RunControl::default()
        };
        assert!(matches!(
            pool.execute(&t, &Recorder(Mutex::new(Vec::new())), &control),
            Err(RunError::Cancelled)
        ));
        // The pool still serves runs of that policy.
        let body = Recorder(Mutex::new(Vec::new()));
        pool.execute(&t, &body, &RunControl::with_policy(policy))
            .unwrap();
        assert_eq!(body.0.lock().unwrap().len(), t.len());
    }
}
