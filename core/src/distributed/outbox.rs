//! [`Outbox`]: the answers to the sends a task's `_Send` kernels started for steps still
//! running there.
//!
//! Over a transport that sends eagerly ([`Transport::sends_eagerly`]), `_Send` is a
//! synchronous kernel: it starts the transfer, completes at once, and files the answer's
//! future here under its step when the answer is not there yet. The worker takes the
//! step's answers after the step's nodes ran and awaits them before it reports the step
//! done — or, usually, hands them to [`Unacked`](super::unacked::Unacked) and reports
//! the step done at once: a send that fails then aborts the step on its receiver, which
//! reports the failure naming the sending task and edge. Either way no pool thread is
//! woken for an answer.
//!
//! A step's entries are removed when the worker takes them, or by its [`OutboxGuard`]
//! when the step ends any other way (an error, an abort, the step's future dropped), so
//! nothing stays behind. Every answer comes within the transport's request deadline.
//!
//! [`Transport::sends_eagerly`]: crate::transport::Transport::sends_eagerly

use std::collections::HashMap;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::step_id::StepId;
use crate::transport::TransportError;

/// The answer to one started send, and the node that started it.
pub(crate) struct PendingSend {
    /// The `_Send` node's name.
    pub(crate) node: String,
    /// Its device's name.
    pub(crate) device: String,
    /// The receiving task.
    pub(crate) dst: crate::transport::TaskName,
    /// The master session the step belongs to.
    pub(crate) session: String,
    /// The rendezvous edge.
    pub(crate) edge: String,
    /// Resolves when the receiving task answered.
    pub(crate) answer: BoxFuture<'static, Result<(), TransportError>>,
}

/// Started sends by step, awaiting their answers (a service in the task's resource
/// manager).
#[derive(Default)]
pub(crate) struct Outbox {
    steps: Mutex<HashMap<StepId, Vec<PendingSend>>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("steps", &self.steps.lock().len())
            .finish()
    }
}

impl Outbox {
    /// Files `send`'s answer under `step`.
    pub(crate) fn file(&self, step: StepId, send: PendingSend) {
        self.steps.lock().entry(step).or_default().push(send);
    }

    /// Takes every answer filed for `step`.
    pub(crate) fn take(&self, step: StepId) -> Vec<PendingSend> {
        self.steps.lock().remove(&step).unwrap_or_default()
    }
}

/// Removes a step's filed answers when dropped, however the step ended.
pub(crate) struct OutboxGuard<'a> {
    pub(crate) outbox: &'a Outbox,
    pub(crate) step: StepId,
}

impl Drop for OutboxGuard<'_> {
    fn drop(&mut self) {
        drop(self.outbox.take(self.step));
    }
}
