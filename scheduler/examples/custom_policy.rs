//! A scheduling policy written outside the scheduler: shortest job first.
//!
//! [`ShortestJobFirst`] is a [`QueuePolicy`]: for each run it makes a [`ReadyQueue`] that
//! always hands out the ready task of the lowest cost (ties: the lowest index), reading
//! each task's cost from [`QueueContext::cost`] — the costs given with
//! `graph.task(id).cost(..)`. The scheduler's criterion bench runs this very queue beside
//! the built-in policies (`scheduler/benches/scheduling.rs`, `magpie_sjf_example`).
//!
//! The example runs a small graph on one worker (so start order is exactly the policy's
//! order), prints the order, and checks it: every task started while it was the cheapest
//! ready task. Run it with `cargo run -p magpie-scheduler --example custom_policy`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use magpie_scheduler::{
    ChromeTraceObserver, Policy, QueueContext, QueuePolicy, QueueSetup, ReadyQueue, RunControl,
    TaskGraph, ThreadPool,
};

/// Shortest job first: of the ready tasks, the one with the lowest cost starts first.
#[derive(Debug, Default)]
pub(crate) struct ShortestJobFirst;

/// The ready tasks of one run, cheapest on top: `Reverse((cost, task))`.
#[derive(Debug)]
pub(crate) struct SjfQueue(Mutex<BinaryHeap<Reverse<(u64, u32)>>>);

impl QueuePolicy for ShortestJobFirst {
    fn new_queue(&self, setup: &QueueSetup<'_>) -> Box<dyn ReadyQueue> {
        // Room for the roots; the heap grows if more tasks are ready at once.
        let roots = setup.topology().roots().len();
        Box::new(SjfQueue(Mutex::new(BinaryHeap::with_capacity(roots))))
    }
}

impl ReadyQueue for SjfQueue {
    fn push(&self, cx: &QueueContext<'_>, task: u32) {
        let key = Reverse((cx.cost(task), task));
        self.0.lock().expect("SJF queue poisoned").push(key);
    }

    fn pop(&self, _cx: &QueueContext<'_>) -> Option<u32> {
        let top = self.0.lock().expect("SJF queue poisoned").pop();
        top.map(|Reverse((_, task))| task)
    }

    /// One lock for the finishing task's whole batch.
    fn push_and_pop(&self, cx: &QueueContext<'_>, ready: &[u32]) -> u32 {
        let mut heap = self.0.lock().expect("SJF queue poisoned");
        for &task in ready {
            heap.push(Reverse((cx.cost(task), task)));
        }
        let Reverse((_, task)) = heap.pop().expect("push_and_pop is given a task");
        task
    }
}

/// Builds the graph: eight independent jobs of assorted costs, and a report that runs
/// after the first four. Each task appends its index to `order` when it runs.
fn graph(order: &Arc<Mutex<Vec<u32>>>) -> TaskGraph {
    let costs = [40, 7, 25, 3, 18, 1, 30, 12];
    let mut graph = TaskGraph::new();
    let add = |graph: &mut TaskGraph| {
        let order = Arc::clone(order);
        let index = graph.len() as u32;
        graph.add(move || order.lock().expect("order").push(index))
    };
    let jobs: Vec<_> = costs.iter().map(|_| add(&mut graph)).collect();
    for (i, (&job, &cost)) in jobs.iter().zip(&costs).enumerate() {
        graph.task(job).name(format!("job{i}")).cost(cost);
    }
    let report = add(&mut graph);
    graph.task(report).name("report").cost(2);
    for &job in &jobs[..4] {
        graph.precede(job, report);
    }
    graph
}

/// Whether every task in `order` was, when it started, the cheapest ready task of `graph`
/// (ties: lowest index).
fn is_shortest_job_first(graph: &TaskGraph, order: &[u32]) -> bool {
    let topology = graph.topology().expect("acyclic");
    let mut pending: Vec<u32> = (0..topology.len() as u32)
        .map(|t| topology.num_predecessors(t))
        .collect();
    let mut ready: Vec<u32> = topology.roots().to_vec();
    for &task in order {
        let best = ready.iter().copied().min_by_key(|&t| (topology.cost(t), t));
        if best != Some(task) {
            return false;
        }
        ready.retain(|&t| t != task);
        for &s in topology.successors(task) {
            pending[s as usize] -= 1;
            if pending[s as usize] == 0 {
                ready.push(s);
            }
        }
    }
    ready.is_empty() && order.len() == topology.len()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One worker and no helping caller: one thread runs every task, in the queue's order.
    let pool = ThreadPool::builder()
        .num_workers(1)
        .helper_slots(0)
        .build()?;
    let order = Arc::new(Mutex::new(Vec::new()));
    let graph = graph(&order);
    let trace = Arc::new(ChromeTraceObserver::for_graph(&graph));
    let control = RunControl {
        policy: Policy::custom(ShortestJobFirst),
        observer: Some(trace.clone()),
        ..RunControl::default()
    };
    pool.run_with(&graph, &control)?;

    let order = order.lock().expect("order").clone();
    let ids: Vec<_> = graph.ids().collect();
    let named: Vec<String> = order
        .iter()
        .map(|&t| {
            let id = ids[t as usize];
            format!("{}({})", graph.name(id).unwrap_or("?"), graph.cost(id))
        })
        .collect();
    println!("start order: {}", named.join(" "));
    println!("trace: {} spans recorded", trace.spans().len());
    if is_shortest_job_first(&graph, &order) {
        println!("shortest-job-first: every task started as the cheapest ready task");
        Ok(())
    } else {
        Err(format!("not shortest-job-first: {order:?}").into())
    }
}
