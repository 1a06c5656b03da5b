//! The [`Transport`] trait: how one task of a cluster reaches another.
//!
//! Declared here so that the master and worker logic in core stays independent of the
//! wire; the in-memory and gRPC crates implement it. A transport registers graph
//! partitions on a task, runs a step on them, moves tensors between tasks by rendezvous
//! key, and cancels steps. Every method returns a future; none blocks a thread.

use std::fmt;

use futures::future::BoxFuture;

use crate::graph::GraphDef;
use crate::tensor::Tensor;

/// One task of a cluster: `/job:<job>/task:<index>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskName {
    /// Job name.
    pub job: String,
    /// Task index in the job.
    pub index: u32,
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/job:{}/task:{}", self.job, self.index)
    }
}

/// Names one tensor crossing between partitions in one step: the step, the producing
/// and consuming devices, and the edge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RendezvousKey {
    /// The step.
    pub step_id: u64,
    /// Full name of the sending device.
    pub src_device: String,
    /// Full name of the receiving device.
    pub dst_device: String,
    /// The edge, `producer:index`.
    pub edge: String,
}

/// A partition registered on a task, as the task's handle for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionHandle(pub String);

/// Transport failures. Each names the task involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The task could not be reached (connection refused, dead peer) within the deadline.
    #[error("task {task} unreachable: {detail}")]
    Unreachable {
        /// The task.
        task: String,
        /// What happened.
        detail: String,
    },
    /// The task answered with an error.
    #[error("task {task} failed: {detail}")]
    Remote {
        /// The task.
        task: String,
        /// Its message.
        detail: String,
    },
    /// The step was cancelled.
    #[error("step {0} cancelled")]
    Cancelled(u64),
    /// A deadline passed.
    #[error("deadline exceeded waiting for task {0}")]
    DeadlineExceeded(String),
}

/// How a task reaches the others. Implemented by the transport crates.
pub trait Transport: Send + Sync + fmt::Debug {
    /// Registers a partition (a graph for one task) and returns its handle there.
    fn register_partition(
        &self,
        task: &TaskName,
        partition: GraphDef,
    ) -> BoxFuture<'static, Result<PartitionHandle, TransportError>>;

    /// Runs one step of a registered partition with its feeds, returning its fetches in
    /// order.
    fn run_partition(
        &self,
        task: &TaskName,
        partition: &PartitionHandle,
        step_id: u64,
        feeds: Vec<(String, Tensor)>,
        fetches: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Tensor>, TransportError>>;

    /// Delivers a tensor to the task that will receive it under `key`.
    fn send(
        &self,
        task: &TaskName,
        key: RendezvousKey,
        tensor: Tensor,
    ) -> BoxFuture<'static, Result<(), TransportError>>;

    /// Waits for the tensor sent under `key` to this task.
    fn recv(&self, key: RendezvousKey) -> BoxFuture<'static, Result<Tensor, TransportError>>;

    /// Cancels a step on a task; its pending receives fail.
    fn cancel_step(
        &self,
        task: &TaskName,
        step_id: u64,
    ) -> BoxFuture<'static, Result<(), TransportError>>;
}
