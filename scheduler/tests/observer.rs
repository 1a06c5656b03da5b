//! The observer hook: under every policy (the built-ins and a custom one), with synchronous
//! and asynchronous tasks, the observer sees each task start once and finish once, start
//! before finish, on a valid thread, and a predecessor's finish before its successor's
//! start. Order is checked with a sequence counter, never with time.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{all_policies, random_dag, CheckingBody, Rng};
use futures::FutureExt;
use magpie_scheduler::{
    ChromeTraceObserver, DagBody, Observer, RunControl, TaskContext, TaskEvent, TaskGraph,
    TaskOutcome, ThreadPool,
};

/// What the observer saw of one task.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    starts: u32,
    finishes: u32,
    /// Sequence numbers of the (last) start and finish.
    start_seq: u64,
    finish_seq: u64,
    start_at: Option<Instant>,
    finish_at: Option<Instant>,
    start_worker: usize,
}

#[derive(Debug)]
struct Recording {
    seq: AtomicU64,
    tasks: Mutex<Vec<Seen>>,
}

impl Recording {
    fn new(n: usize) -> Recording {
        Recording {
            seq: AtomicU64::new(0),
            tasks: Mutex::new(vec![Seen::default(); n]),
        }
    }
}

impl Observer for Recording {
    fn task_started(&self, e: &TaskEvent) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let mut tasks = self.tasks.lock().unwrap();
        let s = &mut tasks[e.task as usize];
        s.starts += 1;
        s.start_seq = seq;
        s.start_at = Some(e.at);
        s.start_worker = e.worker;
    }

    fn task_finished(&self, e: &TaskEvent) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let mut tasks = self.tasks.lock().unwrap();
        let s = &mut tasks[e.task as usize];
        s.finishes += 1;
        s.finish_seq = seq;
        s.finish_at = Some(e.at);
    }
}

/// [`CheckingBody`], with every `asyncs`th task finishing through a future (half of them
/// resolved on another thread).
struct Mixed<'a> {
    check: CheckingBody<'a>,
    asyncs: u32,
}

impl DagBody for Mixed<'_> {
    type Error = String;
    fn run(&self, task: u32, cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
        self.check.run(task, cx)?;
        if task % self.asyncs != 0 {
            return Ok(TaskOutcome::Done);
        }
        if task % 2 == 0 {
            let (tx, rx) = futures::channel::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let _ = tx.send(());
            });
            Ok(TaskOutcome::Pending(rx.map(|_| Ok(())).boxed()))
        } else {
            Ok(TaskOutcome::Pending(futures::future::ready(Ok(())).boxed()))
        }
    }
}

#[test]
fn the_observer_sees_every_task_once_in_order_under_every_policy() {
    for workers in [1, 2, 3] {
        let pool = ThreadPool::new(workers).unwrap();
        let mut rng = Rng::new(900 + workers as u64);
        for round in 0..120 {
            let n = 1 + rng.below(150) as usize;
            let (topology, preds) = random_dag(&mut rng, n, [0.0, 0.05, 0.3][round % 3]);
            for policy in all_policies() {
                let recording = Arc::new(Recording::new(n));
                let body = Mixed {
                    check: CheckingBody::new(&preds),
                    asyncs: if round % 4 == 0 { 5 } else { u32::MAX },
                };
                let control = RunControl {
                    policy: policy.clone(),
                    observer: Some(recording.clone()),
                    ..RunControl::default()
                };
                pool.execute(&topology, &body, &control).unwrap();
                body.check.assert_all_once();
                let seen = recording.tasks.lock().unwrap().clone();
                for (task, s) in seen.iter().enumerate() {
                    assert_eq!(
                        (s.starts, s.finishes),
                        (1, 1),
                        "{policy:?}, task {task}: started {} and finished {} times",
                        s.starts,
                        s.finishes
                    );
                    assert!(s.start_seq < s.finish_seq, "{policy:?}, task {task}");
                    assert!(s.start_at <= s.finish_at, "{policy:?}, task {task}");
                    assert!(
                        s.start_worker <= workers,
                        "{policy:?}: worker {} of a pool of {workers}",
                        s.start_worker
                    );
                    for &p in &preds[task] {
                        assert!(
                            seen[p as usize].finish_seq < s.start_seq,
                            "{policy:?}: task {task} started before predecessor {p} finished"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_run_without_an_observer_reports_nothing_and_an_observer_serves_many_runs() {
    let pool = ThreadPool::new(2).unwrap();
    let mut graph = TaskGraph::new();
    for _ in 0..100 {
        graph.add(|| {});
    }
    let recording = Arc::new(Recording::new(100));
    pool.run(&graph).unwrap();
    assert_eq!(recording.seq.load(Ordering::SeqCst), 0);
    let control = RunControl {
        observer: Some(recording.clone()),
        ..RunControl::default()
    };
    for _ in 0..3 {
        pool.run_with(&graph, &control).unwrap();
    }
    assert_eq!(recording.seq.load(Ordering::SeqCst), 600);
    assert!(recording
        .tasks
        .lock()
        .unwrap()
        .iter()
        .all(|s| s.starts == 3 && s.finishes == 3));
}

#[test]
fn chrome_traces_have_a_named_span_per_task() {
    let pool = ThreadPool::new(2).unwrap();
    let mut graph = TaskGraph::new();
    let a = graph.add(|| {});
    let b = graph.add_async(|| async {});
    let c = graph.add(|| {});
    graph.precede(a, b);
    graph.precede(b, c);
    graph.task(a).name("load");
    graph.task(c).name("say \"hi\"");
    for policy in all_policies() {
        let trace = Arc::new(ChromeTraceObserver::for_graph(&graph));
        let control = RunControl {
            policy,
            observer: Some(trace.clone()),
            ..RunControl::default()
        };
        pool.run_with(&graph, &control).unwrap();
        let spans = trace.spans();
        let tasks: Vec<u32> = spans.iter().map(|s| s.task).collect();
        assert_eq!(tasks, [0, 1, 2], "a chain's spans, by start");
        assert!(spans.iter().all(|s| s.start <= s.end && s.worker <= 2));
        let json = trace.to_json();
        for name in [
            r#""name": "load""#,
            r#""name": "task 1""#,
            r#""name": "say \"hi\"""#,
        ] {
            assert!(json.contains(name), "{name} missing from {json}");
        }
        assert_eq!(trace.take_spans().len(), 3);
    }
}
