//! [`Limit`] and [`LimitExceeded`]: the bounds a server puts on what one caller can make
//! it hold, each with the `magpie server` flag that sets it, so that hitting one is a
//! `ResourceExhausted` error that says which limit and how to raise it.
//!
//! The values live with what they bound ([`RendezvousLimits`](crate::distributed::RendezvousLimits),
//! the gRPC crate's options); this module only names them, in one table.

use crate::error::Code;

/// A limit a server enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Remote sessions open at once on one master.
    Sessions,
    /// Nodes in one session's graph (or one partition).
    GraphNodes,
    /// Nodes added by one graph extension.
    ExtensionNodes,
    /// Bytes of one gRPC message.
    MessageBytes,
    /// Bytes of one tensor streamed between tasks.
    TensorBytes,
    /// Bytes of tensors delivered (or still arriving) and not yet received, for one step on
    /// one task.
    RendezvousStepBytes,
    /// Bytes of tensors delivered (or still arriving) and not yet received on one task, all
    /// steps together.
    RendezvousTaskBytes,
    /// Bytes of tensors kept for steps that have not started on one task.
    RendezvousUnclaimedBytes,
    /// How long (in milliseconds) tensors for a step that has not started on one task are
    /// kept.
    RendezvousUnclaimedTtl,
    /// How long a tensor stream may wait for its next chunk.
    TensorStreamIdle,
    /// Bytes the live tensors of one of the task's CPU devices hold at once (its memory
    /// limit, as `magpie server` sets it: see
    /// [`Device::memory_limit_setting`](crate::Device::memory_limit_setting)).
    CpuMemory,
    /// Bytes the live tensors of one of the task's GPU devices hold at once (its memory
    /// limit, as `magpie server` sets it).
    GpuMemory,
    /// Bytes the buffers one step's kernels allocate hold at once on one task, all its
    /// devices together (see [`StepMemory`](crate::tensor::StepMemory)).
    StepMemory,
    /// Bytes of tensors the partial runs of one master keep between their calls, all
    /// sessions together.
    PartialRunBytes,
    /// Bytes of the request messages a server is receiving at once, all connections and
    /// calls together (announced by each message's length prefix, held until decoded).
    IncomingRequestBytes,
}

impl Limit {
    /// What the limit bounds, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Limit::Sessions => "concurrent sessions",
            Limit::GraphNodes => "nodes per graph",
            Limit::ExtensionNodes => "nodes per graph extension",
            Limit::MessageBytes => "message size",
            Limit::TensorBytes => "streamed tensor size",
            Limit::RendezvousStepBytes => "pending rendezvous bytes per step",
            Limit::RendezvousTaskBytes => "pending rendezvous bytes per task",
            Limit::RendezvousUnclaimedBytes => "rendezvous bytes for steps not started",
            Limit::RendezvousUnclaimedTtl => "rendezvous keep time (ms) for steps not started",
            Limit::TensorStreamIdle => "tensor stream idle time",
            Limit::CpuMemory => "bytes the live tensors of a CPU device hold",
            Limit::GpuMemory => "bytes the live tensors of a GPU device hold",
            Limit::StepMemory => "bytes one step's tensors hold on a task",
            Limit::PartialRunBytes => "bytes partial runs keep between calls",
            Limit::IncomingRequestBytes => "bytes of request messages received at once",
        }
    }

    /// The `magpie server` flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Limit::Sessions => "--max-sessions",
            Limit::GraphNodes => "--max-graph-nodes",
            Limit::ExtensionNodes => "--max-extension-nodes",
            Limit::MessageBytes => "--max-message-bytes",
            Limit::TensorBytes => "--max-tensor-bytes",
            Limit::RendezvousStepBytes => "--rendezvous-step-bytes",
            Limit::RendezvousTaskBytes => "--rendezvous-task-bytes",
            Limit::RendezvousUnclaimedBytes => "--rendezvous-unclaimed-bytes",
            Limit::RendezvousUnclaimedTtl => "--rendezvous-unclaimed-ttl-ms",
            Limit::TensorStreamIdle => "--tensor-stream-idle-timeout-ms",
            Limit::CpuMemory => "--cpu-memory-limit",
            Limit::GpuMemory => "--gpu-memory-limit",
            Limit::StepMemory => "--step-memory-limit",
            Limit::PartialRunBytes => "--partial-run-bytes",
            Limit::IncomingRequestBytes => "--incoming-request-bytes",
        }
    }
}

/// A request would pass one of the server's limits. Its message names the limit, the
/// value asked for and the flag that raises it.
///
/// # Examples
/// ```
/// use magpie_core::limits::{Limit, LimitExceeded};
/// let e = LimitExceeded::new(Limit::Sessions, 256, "257 sessions");
/// assert_eq!(e.code(), magpie_core::Code::ResourceExhausted);
/// assert!(e.to_string().contains("--max-sessions"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} limit of {max} exceeded: {detail} (raise it with `magpie server {}`)", .limit.describe(), .limit.flag())]
pub struct LimitExceeded {
    /// Which limit.
    pub limit: Limit,
    /// Its value.
    pub max: u64,
    /// What was asked for.
    pub detail: String,
}

impl LimitExceeded {
    /// `limit` (of value `max`) exceeded by what `detail` says.
    pub fn new(limit: Limit, max: impl TryInto<u64>, detail: impl Into<String>) -> Self {
        LimitExceeded {
            limit,
            max: max.try_into().unwrap_or(u64::MAX),
            detail: detail.into(),
        }
    }

    /// Always [`Code::ResourceExhausted`].
    pub fn code(&self) -> Code {
        Code::ResourceExhausted
    }
}
