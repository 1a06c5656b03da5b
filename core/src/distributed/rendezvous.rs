//! [`Rendezvous`]: where a task's `_Recv` kernels meet the tensors other tasks' `_Send`
//! kernels push to it, keyed by (step, edge).
//!
//! # Protocol
//! An entry is **Ready** (the tensor arrived first) or **Waiting** (the receiver came
//! first and holds the other end of a one-shot channel). `deliver` on an empty key makes
//! it Ready; on a Waiting key it completes the channel and removes the entry. `recv` on a
//! Ready key takes the tensor and removes the entry; on an empty key it makes it Waiting
//! and returns a future on the channel. All moves happen under one mutex, so each tensor
//! is handed over exactly once.
//!
//! A pending `recv` holds no thread. It ends with the tensor, or with an error when the
//! step ends or is aborted ([`Rendezvous::end_step`] drops the channel's sender). Dropping
//! the future (the scheduler does at the step's deadline or cancellation) abandons the
//! wait; `end_step` removes what is left. Steps that ended are remembered (the last
//! [`ENDED_STEPS_KEPT`]) so that a late delivery for one is dropped, not kept forever.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;

use futures::channel::oneshot;
use parking_lot::Mutex;

use crate::tensor::Tensor;
use crate::transport::RendezvousKey;

/// Ended steps remembered to drop late deliveries (behaviour at the time of writing).
pub const ENDED_STEPS_KEPT: usize = 4096;

/// Why a rendezvous operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RendezvousError {
    /// Two tensors (or two receivers) for one key.
    #[error("duplicate {what} for {key}")]
    Duplicate {
        /// `send` or `recv`.
        what: &'static str,
        /// The key.
        key: String,
    },
    /// The step ended or was aborted before the tensor came.
    #[error("step {step_id} ended before {edge} arrived")]
    StepEnded {
        /// The step.
        step_id: u64,
        /// The edge.
        edge: String,
    },
}

enum Entry {
    Ready(Tensor),
    Waiting(oneshot::Sender<Tensor>),
}

#[derive(Default)]
struct Inner {
    entries: HashMap<(u64, String), Entry>,
    ended: HashSet<u64>,
    ended_order: VecDeque<u64>,
}

/// One task's rendezvous.
#[derive(Default)]
pub struct Rendezvous {
    inner: Mutex<Inner>,
}

impl fmt::Debug for Rendezvous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rendezvous")
            .field("entries", &self.inner.lock().entries.len())
            .finish()
    }
}

impl Rendezvous {
    /// An empty rendezvous.
    pub fn new() -> Rendezvous {
        Rendezvous::default()
    }

    /// Hands `tensor` to the receiver of `key` (now or when it comes). The tensor is
    /// moved, never copied.
    pub fn deliver(&self, key: RendezvousKey, tensor: Tensor) -> Result<(), RendezvousError> {
        let mut g = self.inner.lock();
        if g.ended.contains(&key.step_id) {
            return Ok(()); // a late delivery for a finished step: dropped
        }
        let k = (key.step_id, key.edge);
        match g.entries.remove(&k) {
            None => {
                g.entries.insert(k, Entry::Ready(tensor));
                Ok(())
            }
            Some(Entry::Waiting(tx)) => {
                let _ = tx.send(tensor); // a receiver that gave up drops it
                Ok(())
            }
            Some(ready @ Entry::Ready(_)) => {
                g.entries.insert(k.clone(), ready);
                Err(RendezvousError::Duplicate {
                    what: "send",
                    key: format!("step {} edge {}", k.0, k.1),
                })
            }
        }
    }

    /// Waits for the tensor of `key`. The future holds no thread while it waits.
    pub fn recv(
        &self,
        key: RendezvousKey,
    ) -> impl Future<Output = Result<Tensor, RendezvousError>> + Send + 'static {
        let step_id = key.step_id;
        let edge = key.edge.clone();
        let mut g = self.inner.lock();
        let k = (key.step_id, key.edge);
        let state: Result<Result<Tensor, oneshot::Receiver<Tensor>>, RendezvousError> =
            if g.ended.contains(&step_id) {
                Err(RendezvousError::StepEnded {
                    step_id,
                    edge: edge.clone(),
                })
            } else {
                match g.entries.remove(&k) {
                    Some(Entry::Ready(t)) => Ok(Ok(t)),
                    Some(waiting @ Entry::Waiting(_)) => {
                        g.entries.insert(k, waiting);
                        Err(RendezvousError::Duplicate {
                            what: "recv",
                            key: format!("step {step_id} edge {edge}"),
                        })
                    }
                    None => {
                        let (tx, rx) = oneshot::channel();
                        g.entries.insert(k, Entry::Waiting(tx));
                        Ok(Err(rx))
                    }
                }
            };
        drop(g);
        async move {
            match state? {
                Ok(t) => Ok(t),
                Err(rx) => rx
                    .await
                    .map_err(|_| RendezvousError::StepEnded { step_id, edge }),
            }
        }
    }

    /// Ends a step: pending receivers fail, undelivered tensors are dropped, and later
    /// deliveries for the step are ignored.
    pub fn end_step(&self, step_id: u64) {
        let mut g = self.inner.lock();
        g.entries.retain(|(s, _), _| *s != step_id);
        if g.ended.insert(step_id) {
            g.ended_order.push_back(step_id);
            if g.ended_order.len() > ENDED_STEPS_KEPT {
                if let Some(old) = g.ended_order.pop_front() {
                    g.ended.remove(&old);
                }
            }
        }
    }

    /// Entries (ready tensors and waiting receivers) not yet matched.
    pub fn pending(&self) -> usize {
        self.inner.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn key(step: u64, edge: &str) -> RendezvousKey {
        RendezvousKey {
            step_id: step,
            edge: edge.into(),
        }
    }

    #[test]
    fn send_first_or_recv_first() {
        let r = Rendezvous::new();
        let t = Tensor::scalar(1.0f32);
        r.deliver(key(1, "a"), t.clone()).unwrap();
        let got = block_on(r.recv(key(1, "a"))).unwrap();
        assert!(got.shares_buffer_with(&t));
        let fut = r.recv(key(1, "b"));
        r.deliver(key(1, "b"), t.clone()).unwrap();
        assert!(block_on(fut).unwrap().shares_buffer_with(&t));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn end_step_fails_waiters_and_drops_late_sends() {
        let r = Rendezvous::new();
        let fut = r.recv(key(2, "x"));
        r.end_step(2);
        assert!(matches!(
            block_on(fut),
            Err(RendezvousError::StepEnded { step_id: 2, .. })
        ));
        r.deliver(key(2, "x"), Tensor::scalar(1i32)).unwrap();
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn duplicates_are_errors() {
        let r = Rendezvous::new();
        r.deliver(key(3, "x"), Tensor::scalar(1i32)).unwrap();
        assert!(r.deliver(key(3, "x"), Tensor::scalar(1i32)).is_err());
    }
}
