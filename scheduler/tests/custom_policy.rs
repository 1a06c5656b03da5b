//! Policies users write ([`QueuePolicy`]) and the task attributes they read: on one thread
//! a shortest-job-first queue starts tasks in exactly its order; the queue is told which
//! thread calls and gets the costs set on a `TaskGraph`; names, costs and groups round-trip.
//! Order and counts only, never time.

mod common;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{random_dag, Rng};
use magpie_scheduler::{
    DagBody, Policy, QueueContext, QueuePolicy, QueueSetup, ReadyQueue, RunControl, TaskContext,
    TaskGraph, TaskOutcome, ThreadPool, Topology,
};

/// One worker, no helping caller: exactly one thread runs every task.
fn single_thread_pool() -> ThreadPool {
    ThreadPool::builder()
        .num_workers(1)
        .helper_slots(0)
        .build()
        .unwrap()
}

/// Shortest job first; counts the queues it made and checks the callers' indices.
#[derive(Debug, Default)]
struct Sjf {
    queues: AtomicUsize,
}

struct SjfQueue {
    heap: Mutex<BinaryHeap<Reverse<(u64, u32)>>>,
    num_workers: usize,
}

impl SjfQueue {
    fn check_worker(&self, cx: &QueueContext<'_>) {
        assert!(cx.worker() <= self.num_workers, "worker {}", cx.worker());
    }
}

impl QueuePolicy for Sjf {
    fn new_queue(&self, setup: &QueueSetup<'_>) -> Box<dyn ReadyQueue> {
        self.queues.fetch_add(1, Ordering::Relaxed);
        Box::new(SjfQueue {
            heap: Mutex::new(BinaryHeap::new()),
            num_workers: setup.num_workers(),
        })
    }
}

impl ReadyQueue for SjfQueue {
    fn push(&self, cx: &QueueContext<'_>, task: u32) {
        self.check_worker(cx);
        self.heap
            .lock()
            .unwrap()
            .push(Reverse((cx.cost(task), task)));
    }

    fn pop(&self, cx: &QueueContext<'_>) -> Option<u32> {
        self.check_worker(cx);
        self.heap.lock().unwrap().pop().map(|Reverse((_, t))| t)
    }
}

/// Records the order in which tasks start.
struct Recorder(Mutex<Vec<u32>>);

impl DagBody for Recorder {
    type Error = ();
    fn run(&self, task: u32, _: &TaskContext<'_>) -> Result<TaskOutcome<()>, ()> {
        self.0.lock().unwrap().push(task);
        Ok(TaskOutcome::Done)
    }
}

/// Checks that `order` always starts the cheapest ready task (ties: lowest index).
fn check_sjf_order(t: &Topology, order: &[u32]) {
    let mut pending: Vec<u32> = (0..t.len() as u32).map(|i| t.num_predecessors(i)).collect();
    let mut ready: BinaryHeap<Reverse<(u64, u32)>> =
        t.roots().iter().map(|&r| Reverse((t.cost(r), r))).collect();
    for &task in order {
        let Reverse((_, best)) = ready.pop().expect("a task started while none was ready");
        assert_eq!(
            task, best,
            "started {task}, but {best} was the cheapest ready"
        );
        for &s in t.successors(task) {
            pending[s as usize] -= 1;
            if pending[s as usize] == 0 {
                ready.push(Reverse((t.cost(s), s)));
            }
        }
    }
    assert!(ready.is_empty(), "not every task started");
}

#[test]
fn a_custom_queue_decides_the_order_on_one_thread() {
    let pool = single_thread_pool();
    let policy = Arc::new(Sjf::default());
    let control = RunControl::with_policy(Policy::custom_arc(policy.clone()));
    let mut rng = Rng::new(31);
    for round in 0..300 {
        let n = 1 + rng.below(80) as usize;
        let (plain, preds) = random_dag(&mut rng, n, [0.0, 0.05, 0.2][round % 3]);
        let mut b = Topology::builder(n);
        for (to, ps) in preds.iter().enumerate() {
            for &p in ps {
                b.add_edge(p, to as u32);
            }
        }
        for task in 0..n as u32 {
            b.set_cost(task, 1 + rng.below(50));
        }
        let t = b.build().unwrap();
        assert_eq!(t.num_edges(), plain.num_edges());
        let body = Recorder(Mutex::new(Vec::new()));
        pool.execute(&t, &body, &control).unwrap();
        check_sjf_order(&t, &body.0.into_inner().unwrap());
    }
    assert_eq!(
        policy.queues.load(Ordering::Relaxed),
        300,
        "one queue per run"
    );
}

#[test]
fn a_custom_queue_sees_task_graph_costs() {
    let pool = single_thread_pool();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut graph = TaskGraph::new();
    let costs = [9, 4, 7, 1, 3];
    for (i, &cost) in costs.iter().enumerate() {
        let order = Arc::clone(&order);
        let id = graph.add(move || order.lock().unwrap().push(i));
        graph.task(id).cost(cost);
    }
    pool.run_with(
        &graph,
        &RunControl::with_policy(Policy::custom(Sjf::default())),
    )
    .unwrap();
    assert_eq!(*order.lock().unwrap(), [3, 4, 1, 2, 0]);
}

#[test]
fn custom_policies_run_on_many_threads() {
    let pool = ThreadPool::new(3).unwrap();
    let (t, preds) = random_dag(&mut Rng::new(8), 2000, 0.002);
    let control = RunControl::with_policy(Policy::custom(Sjf::default()));
    for _ in 0..20 {
        let body = common::CheckingBody::new(&preds);
        pool.execute(&t, &body, &control).unwrap();
        body.assert_all_once();
    }
}

#[test]
fn critical_path_orders_by_task_graph_costs() {
    // Two independent chains: a cheap long one (5 tasks of cost 1) and an expensive short
    // one (2 tasks of cost 10). Critical path starts the expensive chain.
    let pool = single_thread_pool();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut graph = TaskGraph::new();
    let add = |graph: &mut TaskGraph, cost: u64| {
        let order = Arc::clone(&order);
        let i = graph.len();
        let id = graph.add(move || order.lock().unwrap().push(i));
        graph.task(id).cost(cost);
        id
    };
    let cheap: Vec<_> = (0..5).map(|_| add(&mut graph, 1)).collect();
    let dear: Vec<_> = (0..2).map(|_| add(&mut graph, 10)).collect();
    for w in cheap.windows(2).chain(dear.windows(2)) {
        graph.precede(w[0], w[1]);
    }
    pool.run_with(&graph, &RunControl::with_policy(Policy::critical_path()))
        .unwrap();
    assert_eq!(*order.lock().unwrap(), [5, 6, 0, 1, 2, 3, 4]);
}

#[test]
fn names_costs_and_groups_round_trip() {
    let mut graph = TaskGraph::new();
    let a = graph.add(|| {});
    let b = graph.add(|| {});
    let c = graph.add(|| {});
    graph.precede(a, b);
    assert_eq!(
        (graph.name(a), graph.cost(a), graph.group(a)),
        (None, 1, None)
    );
    let builder = graph.task(a).name("load").cost(7).group(2);
    assert_eq!(builder.id(), a);
    graph.task(b).name(String::from("sum")).cost(0);
    assert_eq!(graph.name(a), Some("load"));
    assert_eq!(graph.name(b), Some("sum"));
    assert_eq!(graph.name(c), None);
    assert_eq!([graph.cost(a), graph.cost(b), graph.cost(c)], [7, 0, 1]);
    assert_eq!([graph.group(a), graph.group(b)], [Some(2), None]);
    assert_eq!(graph.ids().collect::<Vec<_>>(), [a, b, c]);

    let t = graph.topology().unwrap();
    assert_eq!([t.cost(0), t.cost(1), t.cost(2)], [7, 0, 1]);
    assert_eq!([t.priority(0), t.priority(1), t.priority(2)], [7, 0, 1]);
    assert_eq!(t.group(0), Some(2));

    // Changing a cost rebuilds the cached topology.
    graph.task(c).cost(100);
    assert_eq!(graph.topology().unwrap().priority(c.index()), 100);
    graph.task(b).name("renamed");
    assert_eq!(graph.name(b), Some("renamed"));
}

#[test]
fn custom_policies_compare_by_identity() {
    let shared: Arc<dyn QueuePolicy> = Arc::new(Sjf::default());
    let p = Policy::custom_arc(Arc::clone(&shared));
    assert_eq!(p, Policy::custom_arc(shared));
    assert_ne!(p, Policy::custom(Sjf::default()));
    assert_ne!(p, Policy::fifo());
    assert_eq!(Policy::default(), Policy::depth_first());
    assert!(format!("{p:?}").contains("Sjf"));
}
