//! Distributed execution, independent of any wire: the master and worker services of a
//! cluster task, the partitioner, the Send/Recv rendezvous, and the variable ops.
//!
//! A client opens a [`MasterSession`] on any task's [`Master`]. The master places every
//! node on a device of some task ([`placement`]), cuts the graph into one partition per
//! task and replaces each edge that crosses tasks with a `_Send`/`_Recv` pair
//! ([`partition`]), registers the partitions on the tasks' [`Worker`]s once per
//! signature, and runs each step on all of them concurrently. A worker runs its partition
//! with an ordinary local [`Session`](crate::session::Session) on its devices; `_Send`
//! pushes tensors through the [`Transport`](crate::transport::Transport) into the
//! receiving task's [`Rendezvous`], where `_Recv` (an async kernel) waits without
//! holding a thread — or, where the master found that no received tensor depends on the
//! partition's own work (`early_recv.rs`), the worker awaits them all before the step
//! and feeds them — or, for a task a path comes back into once, runs the partition in two
//! stages with the returning receives awaited between them (`stages.rs`); over a transport that sends eagerly, `_Send` completes at once and the
//! worker reports the step done without awaiting the answers (`outbox.rs`, `unacked.rs`: a failed send aborts the step on its receiver, saying why). Variables live in the task's resource manager; [`ops`] and
//! [`training`] define the ops that read and update them (the optimizers' updates by
//! TensorFlow's formulas, `update_rules.rs`). [`TaskServer`] bundles a task's master and worker with the
//! start/stop/join lifecycle; transports host it on their wire.
//!
//! The step protocol is in [`Master`]'s module docs, the stop protocol in
//! [`TaskServer`]'s.

mod early_recv;
mod error;
pub mod kernels;
mod master;
pub mod ops;
mod outbox;
pub mod partition;
pub mod placement;
mod rendezvous;
mod server;
mod stages;
mod timeline;
pub mod training;
mod unacked;
mod update_rules;
mod worker;

pub use error::{MasterError, WorkerError};
pub use master::{
    ClusterRunOutput, Master, MasterOptions, MasterSession, MasterSessionOptions, DEFAULT_PEER_WAIT,
};
pub use ops::VariableRef;
pub use partition::PlacedNode;
pub use rendezvous::{
    ActiveStep, Rendezvous, RendezvousError, RendezvousLimits, Reservation, ENDED_STEPS_KEPT,
    ENTRY_OVERHEAD_BYTES,
};
pub use server::{ServerOptions, TaskServer};
pub use timeline::{AlignedTimeline, ClusterTimeline};
pub use worker::{Worker, WorkerStats};
