//! Helpers shared by the scheduler tests: a tiny deterministic RNG, random DAGs, and a
//! body that checks "each task exactly once, after all its predecessors".

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use magpie_scheduler::{DagBody, TaskContext, TaskOutcome, Topology};

/// xorshift64*, good enough for test shapes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A random DAG of `n` tasks: edges go from lower to higher rank of a random permutation,
/// each pair with probability `density`, plus some duplicate edges.
pub fn random_dag(rng: &mut Rng, n: usize, density: f64) -> (Topology, Vec<Vec<u32>>) {
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        perm.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut builder = Topology::builder(n);
    let mut preds = vec![Vec::new(); n];
    let threshold = (density * u64::MAX as f64) as u64;
    for i in 0..n {
        for j in i + 1..n {
            if rng.next_u64() < threshold {
                let (from, to) = (perm[i], perm[j]);
                builder.add_edge(from, to);
                preds[to as usize].push(from);
                if rng.below(16) == 0 {
                    builder.add_edge(from, to);
                    preds[to as usize].push(from);
                }
            }
        }
    }
    (builder.build().expect("acyclic by construction"), preds)
}

/// Checks order and counts runs per task.
pub struct CheckingBody<'a> {
    pub preds: &'a [Vec<u32>],
    pub runs: Vec<AtomicU32>,
    pub finished: Vec<AtomicBool>,
    pub violations: AtomicU32,
}

impl<'a> CheckingBody<'a> {
    pub fn new(preds: &'a [Vec<u32>]) -> CheckingBody<'a> {
        CheckingBody {
            preds,
            runs: (0..preds.len()).map(|_| AtomicU32::new(0)).collect(),
            finished: (0..preds.len()).map(|_| AtomicBool::new(false)).collect(),
            violations: AtomicU32::new(0),
        }
    }

    pub fn assert_all_once(&self) {
        assert_eq!(self.violations.load(Ordering::SeqCst), 0, "order violated");
        for (t, r) in self.runs.iter().enumerate() {
            assert_eq!(
                r.load(Ordering::SeqCst),
                1,
                "task {t} ran the wrong number of times"
            );
        }
    }
}

impl DagBody for CheckingBody<'_> {
    type Error = String;

    fn run(&self, task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
        for &p in &self.preds[task as usize] {
            // Relaxed on purpose: the scheduler must provide the happens-before edge.
            if !self.finished[p as usize].load(Ordering::Relaxed) {
                self.violations.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.runs[task as usize].fetch_add(1, Ordering::Relaxed);
        self.finished[task as usize].store(true, Ordering::Relaxed);
        Ok(TaskOutcome::Done)
    }
}

/// A body that does nothing.
pub struct Empty;

impl DagBody for Empty {
    type Error = String;

    fn run(&self, _task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<String>, String> {
        Ok(TaskOutcome::Done)
    }
}

/// A chain 0 -> 1 -> ... -> n-1.
pub fn chain(n: usize) -> (Topology, Vec<Vec<u32>>) {
    let mut b = Topology::builder(n);
    let mut preds = vec![Vec::new(); n];
    for i in 1..n as u32 {
        b.add_edge(i - 1, i);
        preds[i as usize].push(i - 1);
    }
    (b.build().unwrap(), preds)
}

/// A binary tree of `n` tasks, task k -> 2k+1, 2k+2.
pub fn binary_tree(n: usize) -> (Topology, Vec<Vec<u32>>) {
    let mut b = Topology::builder(n);
    let mut preds = vec![Vec::new(); n];
    for k in 0..n as u32 {
        for c in [2 * k + 1, 2 * k + 2] {
            if (c as usize) < n {
                b.add_edge(k, c);
                preds[c as usize].push(k);
            }
        }
    }
    (b.build().unwrap(), preds)
}

/// A g x g wavefront.
pub fn wavefront(g: usize) -> (Topology, Vec<Vec<u32>>) {
    let n = g * g;
    let mut b = Topology::builder(n);
    let mut preds = vec![Vec::new(); n];
    for i in 0..g {
        for j in 0..g {
            let t = (i * g + j) as u32;
            if j + 1 < g {
                b.add_edge(t, t + 1);
                preds[t as usize + 1].push(t);
            }
            if i + 1 < g {
                b.add_edge(t, t + g as u32);
                preds[t as usize + g].push(t);
            }
        }
    }
    (b.build().unwrap(), preds)
}

/// A fan-out from one task to `n - 2` tasks and back into one.
pub fn fan(n: usize) -> (Topology, Vec<Vec<u32>>) {
    let mut b = Topology::builder(n);
    let mut preds = vec![Vec::new(); n];
    let last = n as u32 - 1;
    for t in 1..last {
        b.add_edge(0, t);
        b.add_edge(t, last);
        preds[t as usize].push(0);
        preds[last as usize].push(t);
    }
    (b.build().unwrap(), preds)
}

/// A custom policy for tests: last in, first out, under a mutex.
#[derive(Debug)]
pub struct TestLifo;

struct LifoQueue(std::sync::Mutex<Vec<u32>>);

impl magpie_scheduler::QueuePolicy for TestLifo {
    fn new_queue(
        &self,
        _: &magpie_scheduler::QueueSetup<'_>,
    ) -> Box<dyn magpie_scheduler::ReadyQueue> {
        Box::new(LifoQueue(std::sync::Mutex::new(Vec::new())))
    }
}

impl magpie_scheduler::ReadyQueue for LifoQueue {
    fn push(&self, _: &magpie_scheduler::QueueContext<'_>, task: u32) {
        self.0.lock().unwrap().push(task);
    }
    fn pop(&self, _: &magpie_scheduler::QueueContext<'_>) -> Option<u32> {
        self.0.lock().unwrap().pop()
    }
}

/// Every built-in policy, and a custom one ([`TestLifo`]).
pub fn all_policies() -> Vec<magpie_scheduler::Policy> {
    use magpie_scheduler::Policy;
    vec![
        Policy::DepthFirst,
        Policy::Fifo,
        Policy::CriticalPath,
        Policy::custom(TestLifo),
    ]
}
