//! TEMPORARY sequential stand-in with the scheduler's API, replaced by the work-stealing
//! scheduler from the `sched` branch.
#![allow(missing_docs, missing_debug_implementations)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("no workers")]
    NoWorkers,
    #[error("cycle")]
    Cycle,
    #[error("task out of range")]
    TaskOutOfRange,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError<E: std::fmt::Display + std::fmt::Debug> {
    #[error("task {task} failed: {error}")]
    Task { task: u32, error: E },
    #[error("task {task} panicked: {message}")]
    Panicked { task: u32, message: String },
    #[error("cancelled")]
    Cancelled,
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("invalid: {0}")]
    Invalid(SchedulerError),
}

#[derive(Clone, Debug, Default)]
pub struct CancellationToken(Arc<AtomicBool>);
impl CancellationToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Debug, Default)]
pub struct RunControl {
    pub deadline: Option<Instant>,
    pub cancel: Option<CancellationToken>,
}

#[derive(Debug, Clone)]
pub struct Topology {
    succ: Vec<Vec<u32>>,
    preds: Vec<u32>,
}
impl Topology {
    pub fn builder(n: usize) -> TopologyBuilder {
        TopologyBuilder {
            succ: vec![Vec::new(); n],
            preds: vec![0; n],
        }
    }
    pub fn len(&self) -> usize {
        self.succ.len()
    }
    pub fn is_empty(&self) -> bool {
        self.succ.is_empty()
    }
}
pub struct TopologyBuilder {
    succ: Vec<Vec<u32>>,
    preds: Vec<u32>,
}
impl TopologyBuilder {
    pub fn add_edge(&mut self, from: u32, to: u32) {
        self.succ[from as usize].push(to);
        self.preds[to as usize] += 1;
    }
    pub fn build(self) -> Result<Topology, SchedulerError> {
        Ok(Topology {
            succ: self.succ,
            preds: self.preds,
        })
    }
}

pub enum TaskOutcome<E> {
    Done,
    Pending(BoxFuture<'static, Result<(), E>>),
}
pub struct TaskContext<'a>(std::marker::PhantomData<&'a ()>);
impl TaskContext<'_> {
    pub fn worker_index(&self) -> usize {
        0
    }
    pub fn is_cancelled(&self) -> bool {
        false
    }
}
pub trait DagBody: Sync {
    type Error: Send + 'static;
    fn run(&self, task: u32, cx: &TaskContext<'_>)
        -> Result<TaskOutcome<Self::Error>, Self::Error>;
}

#[derive(Clone, Debug)]
pub struct ThreadPool(usize);
impl ThreadPool {
    pub fn new(n: usize) -> Result<ThreadPool, SchedulerError> {
        Ok(ThreadPool(n))
    }
    pub fn num_workers(&self) -> usize {
        self.0
    }
    pub fn execute<B: DagBody>(
        &self,
        topo: &Topology,
        body: &B,
        _control: &RunControl,
    ) -> Result<(), RunError<B::Error>>
    where
        B::Error: std::fmt::Display + std::fmt::Debug,
    {
        let mut pending = topo.preds.clone();
        let mut ready: Vec<u32> = (0..topo.len() as u32)
            .filter(|t| pending[*t as usize] == 0)
            .collect();
        let cx = TaskContext(std::marker::PhantomData);
        while let Some(t) = ready.pop() {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body.run(t, &cx))) {
                Err(_) => {
                    return Err(RunError::Panicked {
                        task: t,
                        message: "panic".into(),
                    })
                }
                Ok(Err(e)) => return Err(RunError::Task { task: t, error: e }),
                Ok(Ok(TaskOutcome::Done)) => {}
                Ok(Ok(TaskOutcome::Pending(f))) => futures::executor::block_on(f)
                    .map_err(|e| RunError::Task { task: t, error: e })?,
            }
            for s in &topo.succ[t as usize] {
                pending[*s as usize] -= 1;
                if pending[*s as usize] == 0 {
                    ready.push(*s);
                }
            }
        }
        Ok(())
    }
}
