//! [`Outgoing`]: the small tensors a task has ready for each peer, waiting to leave
//! together in one `SendTensors` request instead of a `SendTensor` stream each.
//!
//! # Protocol
//! 1. [`GrpcTransport::send`](crate::GrpcTransport) files a tensor of at most
//!    [`GrpcOptions::inline_tensor_bytes`](crate::GrpcOptions::inline_tensor_bytes)
//!    under its peer, with the sender of its answer ([`Outgoing::file`]).
//! 2. The first tensor filed while no flush is scheduled for that peer schedules one: the
//!    caller spawns a flush task on the transport's runtime.
//! 3. The flush takes the peer's whole queue at once ([`Outgoing::take`]) and clears the
//!    flag under the same lock, so a tensor filed at the same moment either joins this
//!    flush or schedules the next one: none is left behind with no flush coming.
//! 4. It sends the tensors in batches of at most [`batch_bytes`] of content
//!    ([`split`]), each on the peer's tensor stream (`batch_stream.rs`) or in a `SendTensors`
//!    request, and each tensor is answered with its own result, or every tensor of a
//!    batch with the batch's error (a peer that died, a deadline) ([`answer_batch`]).
//!
//! No tensor waits on a timer: a batch is whatever was filed before the runtime got to
//! the flush (the `_Send`s a step runs together, typically), and a tensor filed alone
//! leaves as soon as a request of its own would have.

use std::collections::HashMap;

use futures::channel::oneshot;
use magpie_core::transport::{TaskName, TransportError};
use parking_lot::Mutex;
use tonic::Status;

use crate::metrics::Metrics;
use crate::proto;
use crate::status::{status_to_transport, CallContext};

/// One tensor waiting for its peer's next `SendTensors` request.
#[derive(Debug)]
pub(crate) struct Queued {
    /// The tensor, whole, with its key and session.
    pub(crate) tensor: proto::InlineTensor,
    /// Bytes of its content.
    pub(crate) bytes: usize,
    /// Where its answer goes (the future `send` returned awaits it).
    pub(crate) answer: oneshot::Sender<Result<(), TransportError>>,
}

/// Where the answer of one tensor of a batch goes, and its content's bytes (counted as
/// sent when it is taken).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) tx: oneshot::Sender<Result<(), TransportError>>,
    pub(crate) bytes: usize,
}

/// Answers each tensor of a batch sent to `task`: with its own result from `results`
/// (one per tensor, in order), or every tensor with the batch's error. A count of
/// results other than the tensors' fails them all.
pub(crate) fn answer_batch(
    task: &TaskName,
    answers: Vec<Answer>,
    results: Result<Vec<proto::SendResult>, TransportError>,
    metrics: Option<&Metrics>,
) {
    let n = answers.len();
    let results = match results {
        Ok(r) if r.len() == n => r,
        Ok(r) => {
            let e = TransportError::Remote {
                task: task.to_string(),
                detail: format!("SendTensors answered {} results for {n} tensors", r.len()),
                code: magpie_core::Code::Internal,
            };
            for a in answers {
                let _ = a.tx.send(Err(e.clone()));
            }
            return;
        }
        Err(e) => {
            for a in answers {
                let _ = a.tx.send(Err(e.clone()));
            }
            return;
        }
    };
    let peer = task.to_string();
    for (a, r) in answers.into_iter().zip(results) {
        let out = if r.code == 0 {
            if let Some(m) = metrics {
                m.sent(&peer, a.bytes as u64);
            }
            Ok(())
        } else {
            let status = Status::new(tonic::Code::from_i32(r.code), r.message);
            Err(status_to_transport(task, &status, &CallContext::default()))
        };
        let _ = a.tx.send(out);
    }
}

/// One peer's queue.
#[derive(Debug, Default)]
struct PeerQueue {
    queued: Vec<Queued>,
    /// A flush task is spawned and has not taken the queue yet.
    flush_scheduled: bool,
}

/// The queued small tensors of a transport, by peer task.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    peers: Mutex<HashMap<TaskName, PeerQueue>>,
}

impl Outgoing {
    /// Files `q` for `peer`. True when no flush was scheduled for `peer`: the caller must
    /// spawn one (it is marked scheduled now).
    pub(crate) fn file(&self, peer: &TaskName, q: Queued) -> bool {
        let mut peers = self.peers.lock();
        let queue = match peers.get_mut(peer) {
            Some(queue) => queue,
            None => peers.entry(peer.clone()).or_default(),
        };
        queue.queued.push(q);
        !std::mem::replace(&mut queue.flush_scheduled, true)
    }

    /// Takes every tensor queued for `peer`, and clears its scheduled flush: the next
    /// tensor filed schedules another.
    pub(crate) fn take(&self, peer: &TaskName) -> Vec<Queued> {
        let mut peers = self.peers.lock();
        match peers.get_mut(peer) {
            Some(queue) => {
                queue.flush_scheduled = false;
                std::mem::take(&mut queue.queued)
            }
            None => Vec::new(),
        }
    }
}

/// Content bytes one `SendTensors` request carries at most: a quarter of the message
/// limit, at most 4 MiB (a single tensor larger than that still goes, alone).
pub(crate) fn batch_bytes(max_message_bytes: usize) -> usize {
    (max_message_bytes / 4).min(4 << 20)
}

/// `queued` in order, cut into requests of at most `max_bytes` of content each (a
/// request holds at least one tensor).
pub(crate) fn split(queued: Vec<Queued>, max_bytes: usize) -> Vec<Vec<Queued>> {
    let mut out: Vec<Vec<Queued>> = Vec::new();
    let mut bytes = 0usize;
    for q in queued {
        match out.last_mut() {
            Some(last) if !last.is_empty() && bytes.saturating_add(q.bytes) <= max_bytes => {
                bytes += q.bytes;
                last.push(q);
            }
            _ => {
                bytes = q.bytes;
                out.push(vec![q]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(edge: &str, bytes: usize) -> (Queued, oneshot::Receiver<Result<(), TransportError>>) {
        let (answer, rx) = oneshot::channel();
        let q = Queued {
            tensor: proto::InlineTensor {
                edge: edge.to_string(),
                ..Default::default()
            },
            bytes,
            answer,
        };
        (q, rx)
    }

    fn edges(batch: &[Queued]) -> Vec<&str> {
        batch.iter().map(|q| q.tensor.edge.as_str()).collect()
    }

    #[test]
    fn tensors_filed_before_the_flush_leave_together_and_only_the_first_schedules_it() {
        let out = Outgoing::default();
        let w1 = TaskName::new("worker", 1);
        let ps = TaskName::new("ps", 0);
        let mut rxs = Vec::new();
        let mut scheduled = Vec::new();
        for (peer, edge) in [(&w1, "a"), (&w1, "b"), (&ps, "c"), (&w1, "d")] {
            let (q, rx) = queued(edge, 4);
            rxs.push(rx);
            scheduled.push(out.file(peer, q));
        }
        // One flush per peer: the first tensor of each schedules it.
        assert_eq!(scheduled, [true, false, true, false]);
        assert_eq!(edges(&out.take(&w1)), ["a", "b", "d"]);
        assert_eq!(edges(&out.take(&ps)), ["c"]);
        assert!(out.take(&w1).is_empty());
    }

    #[test]
    fn a_tensor_filed_after_the_take_schedules_the_next_flush() {
        let out = Outgoing::default();
        let w1 = TaskName::new("worker", 1);
        let (a, _ra) = queued("a", 4);
        assert!(out.file(&w1, a));
        assert_eq!(out.take(&w1).len(), 1);
        let (b, _rb) = queued("b", 4);
        assert!(
            out.file(&w1, b),
            "the taken flush no longer covers a new tensor"
        );
        let (c, _rc) = queued("c", 4);
        assert!(!out.file(&w1, c));
        assert_eq!(edges(&out.take(&w1)), ["b", "c"]);
    }

    #[test]
    fn split_keeps_order_and_the_byte_bound() {
        let (qs, _rxs): (Vec<_>, Vec<_>) = [("a", 3), ("b", 3), ("c", 5), ("d", 9), ("e", 1)]
            .into_iter()
            .map(|(e, b)| queued(e, b))
            .unzip();
        let batches = split(qs, 6);
        let got: Vec<Vec<&str>> = batches.iter().map(|b| edges(b)).collect();
        assert_eq!(got, [vec!["a", "b"], vec!["c"], vec!["d"], vec!["e"]]);
        assert!(split(Vec::new(), 6).is_empty());
    }

    #[test]
    fn the_batch_bound_is_a_quarter_of_the_message_limit_up_to_4_mib() {
        assert_eq!(batch_bytes(256 << 20), 4 << 20);
        assert_eq!(batch_bytes(1 << 20), 256 << 10);
    }
}
