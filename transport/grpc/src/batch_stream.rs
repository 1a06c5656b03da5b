//! [`BatchStreams`]: the small tensors' batches of a transport on one long-lived
//! `SendTensorsStream` per peer task, instead of a `SendTensors` request each. A batch on an
//! open stream is one HTTP/2 DATA frame each way (the batch, its answer): no headers,
//! trailers, new stream or handler task per batch.
//!
//! # Protocol
//! 1. The first batch for a peer opens its stream: a bidirectional `SendTensorsStream` call on
//!    the peer's cached channel (the same TLS and cluster-token interceptor as every other
//!    request), whose request body is an unbounded queue that the stream's reader task
//!    hands to tonic. Batches are numbered from 1 on each stream.
//! 2. A flush (`batch.rs`) files its batch's answers at the back of the stream's pending
//!    queue, with a deadline of now + [`GrpcOptions::request_timeout`], and queues the
//!    batch's message, both under the stream's lock: the pending queue is in the order of
//!    the messages. The flush does not wait; the reader answers.
//! 3. The peer answers the batches in the order they came (`service.rs`), each response
//!    numbered as its batch: the reader answers the front of the pending queue with it,
//!    each tensor with its own result, as a `SendTensors` response would be.
//! 4. The stream **closes** when its call fails (a peer that died, a connection reset),
//!    the peer ends it (a server that stops), the front batch's deadline passes unanswered
//!    ([`TransportError::NoAnswer`]), or a response does not match the front batch. Every
//!    pending batch fails with that error, which names the peer; the peer's channel is
//!    dropped as after a failed unary request; the stream leaves the table. The next batch
//!    opens a new stream (on a new channel): a restarted peer is reached again.
//! 5. A peer that does not serve `SendTensorsStream` (`UNIMPLEMENTED` when the stream opens)
//!    gets the batches filed so far, and every later one, in `SendTensors` requests: until
//!    the stream is open, each pending batch keeps a copy of its request for that.
//!
//! The reader holds the transport weakly (a stream does not keep a dropped transport's
//! runtime alive), and a reader dropped unpolled or mid-stream (its runtime stopped)
//! closes its stream on the way: no batch is left without an answer.
//!
//! Tensors larger than [`GrpcOptions::inline_tensor_bytes`] still travel in `SendTensor`
//! streams of chunks, and with [`GrpcOptions::send_tensors_stream`] off every batch travels in
//! a `SendTensors` request.
//!
//! [`GrpcOptions::request_timeout`]: crate::GrpcOptions::request_timeout
//! [`GrpcOptions::inline_tensor_bytes`]: crate::GrpcOptions::inline_tensor_bytes
//! [`GrpcOptions::send_tensors_stream`]: crate::GrpcOptions::send_tensors_stream

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};

use magpie_core::transport::{TaskName, TransportError};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::batch::{answer_batch, Answer};
use crate::proto;
use crate::status::{status_to_transport, CallContext};
use crate::transport::{send_unary, Inner};

/// The open tensor streams of a transport, by peer.
#[derive(Debug, Default)]
pub(crate) struct BatchStreams {
    peers: Mutex<HashMap<TaskName, Arc<PeerStream>>>,
    /// Peers that answered `UNIMPLEMENTED` to `SendTensorsStream`: batches go in `SendTensors`.
    unary: Mutex<HashSet<TaskName>>,
}

/// A batch sent and not answered yet.
#[derive(Debug)]
struct Pending {
    batch: u64,
    deadline: Instant,
    answers: Vec<Answer>,
    /// The request, kept while the stream is not known to be open (see the protocol's
    /// step 5).
    resend: Option<proto::SendTensorsRequest>,
}

#[derive(Debug)]
struct State {
    /// The stream's request queue; `None` once the stream closed.
    tx: Option<mpsc::UnboundedSender<proto::SendTensorsRequest>>,
    /// The number of the last batch queued.
    last: u64,
    /// The peer accepted the stream (its response headers came).
    open: bool,
    pending: VecDeque<Pending>,
}

/// One peer's stream.
#[derive(Debug)]
struct PeerStream {
    state: Mutex<State>,
}

/// Why a stream closed.
enum Closed {
    /// The peer does not serve `SendTensorsStream`.
    Unimplemented,
    /// Every pending batch fails with this.
    Failed(TransportError),
}

impl BatchStreams {
    /// Whether `task` takes batches only by `SendTensors`.
    pub(crate) fn is_unary(&self, task: &TaskName) -> bool {
        self.unary.lock().contains(task)
    }

    /// Sends `request` with its tensors' `answers` on `task`'s stream, opening one if
    /// needed (on `inner`'s runtime); returns them when no stream takes them (the caller
    /// sends them by `SendTensors`).
    pub(crate) fn send(
        &self,
        inner: &Arc<Inner>,
        task: &TaskName,
        mut request: proto::SendTensorsRequest,
        mut answers: Vec<Answer>,
    ) -> Result<(), (proto::SendTensorsRequest, Vec<Answer>)> {
        let deadline = Instant::now() + inner.options().request_timeout;
        // A stream found closed is replaced once: it closed between its last batch and
        // this one (its peer restarted, say).
        for _ in 0..2 {
            // Checked again after a closed stream: the peer may have just refused it.
            if self.is_unary(task) {
                break;
            }
            let stream = self.stream(inner, task);
            match stream.push(request, answers, deadline) {
                Ok(()) => return Ok(()),
                Err((r, a)) => {
                    self.remove(task, &stream);
                    request = r;
                    answers = a;
                }
            }
        }
        Err((request, answers))
    }

    /// `task`'s stream, opened now if it has none.
    fn stream(&self, inner: &Arc<Inner>, task: &TaskName) -> Arc<PeerStream> {
        let mut peers = self.peers.lock();
        if let Some(s) = peers.get(task) {
            return Arc::clone(s);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = Arc::new(PeerStream {
            state: Mutex::new(State {
                tx: Some(tx),
                last: 0,
                open: false,
                pending: VecDeque::new(),
            }),
        });
        peers.insert(task.clone(), Arc::clone(&stream));
        drop(peers);
        let guard = ReaderGuard {
            inner: Arc::downgrade(inner),
            task: task.clone(),
            stream: Arc::clone(&stream),
            closed: None,
        };
        drop(inner.handle().spawn(read(guard, rx)));
        stream
    }

    /// Takes `stream` out of the table if it is still `task`'s.
    fn remove(&self, task: &TaskName, stream: &Arc<PeerStream>) {
        let mut peers = self.peers.lock();
        if peers.get(task).is_some_and(|s| Arc::ptr_eq(s, stream)) {
            peers.remove(task);
        }
    }
}

impl PeerStream {
    /// Queues `request` as the next batch and files its answers; gives both back when the
    /// stream is closed.
    fn push(
        &self,
        mut request: proto::SendTensorsRequest,
        answers: Vec<Answer>,
        deadline: Instant,
    ) -> Result<(), (proto::SendTensorsRequest, Vec<Answer>)> {
        let mut st = self.state.lock();
        let batch = st.last + 1;
        request.batch = batch;
        let resend = (!st.open).then(|| request.clone());
        let Some(tx) = &st.tx else {
            return Err((request, answers));
        };
        if let Err(mpsc::error::SendError(r)) = tx.send(request) {
            // The reader is gone (its runtime stopped): the stream is closed.
            st.tx = None;
            return Err((r, answers));
        }
        st.last = batch;
        st.pending.push_back(Pending {
            batch,
            deadline,
            answers,
            resend,
        });
        Ok(())
    }

    /// Closes the stream: takes every pending batch.
    fn close(&self) -> VecDeque<Pending> {
        let mut st = self.state.lock();
        st.tx = None;
        std::mem::take(&mut st.pending)
    }

    /// The peer accepted the stream: pending batches need no copy any more.
    fn opened(&self) {
        let mut st = self.state.lock();
        st.open = true;
        for p in &mut st.pending {
            p.resend = None;
        }
    }

    /// The deadline of the oldest batch not answered.
    fn front_deadline(&self) -> Option<Instant> {
        self.state.lock().pending.front().map(|p| p.deadline)
    }

    /// Takes the front batch that `response` answers; an error when it answers another
    /// batch or another number of tensors (a peer speaking another protocol).
    fn take_answered(
        &self,
        task: &TaskName,
        response: &proto::SendTensorsResponse,
    ) -> Result<Pending, TransportError> {
        let mut st = self.state.lock();
        let matches = st.pending.front().is_some_and(|p| {
            p.batch == response.batch && p.answers.len() == response.results.len()
        });
        if matches {
            if let Some(p) = st.pending.pop_front() {
                return Ok(p);
            }
        }
        match st.pending.front() {
            Some(p) => Err(protocol(
                task,
                &format!(
                    "answered batch {} with {} results, expected batch {} of {} tensors",
                    response.batch,
                    response.results.len(),
                    p.batch,
                    p.answers.len()
                ),
            )),
            None => Err(protocol(
                task,
                &format!("answered batch {}, none was sent", response.batch),
            )),
        }
    }
}

fn protocol(task: &TaskName, detail: &str) -> TransportError {
    TransportError::Remote {
        task: task.to_string(),
        detail: format!("SendTensorsStream: the peer {detail}"),
        code: magpie_core::Code::Internal,
    }
}

/// Closes its stream when the reader ends, however it ends (see the module docs).
struct ReaderGuard {
    inner: Weak<Inner>,
    task: TaskName,
    stream: Arc<PeerStream>,
    /// Why the reader ended; `None` when it was dropped before it could say.
    closed: Option<Closed>,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let inner = self.inner.upgrade();
        if let (Some(Closed::Unimplemented), Some(inner)) = (&self.closed, &inner) {
            // Before the stream closes: a batch that finds it closed sees this and goes
            // in a `SendTensors` request instead of opening another stream.
            inner.streams().unary.lock().insert(self.task.clone());
        }
        let pending = self.stream.close();
        if let Some(inner) = &inner {
            inner.streams().remove(&self.task, &self.stream);
        }
        let task = self.task.to_string();
        match (self.closed.take(), inner) {
            (Some(Closed::Unimplemented), Some(inner)) => {
                tracing::info!(
                    peer = %self.task,
                    "peer has no SendTensorsStream: batches go in SendTensors"
                );
                for p in pending {
                    match p.resend {
                        Some(request) => {
                            let inner2 = Arc::clone(&inner);
                            let peer = self.task.clone();
                            drop(inner.handle().spawn(async move {
                                send_unary(&inner2, &peer, request, p.answers).await;
                            }));
                        }
                        None => fail(p.answers, &unimplemented(&task)),
                    }
                }
            }
            (Some(Closed::Failed(e)), inner) => {
                if let Some(inner) = inner {
                    inner.forget(&self.task, &e);
                }
                for p in pending {
                    fail(p.answers, &e);
                }
            }
            // Dropped mid-way (the runtime stopped) or the transport is gone: the
            // answers' senders drop, and each send reports its request dropped.
            _ => drop(pending),
        }
    }
}

fn unimplemented(task: &str) -> TransportError {
    TransportError::Remote {
        task: task.to_string(),
        detail: "the peer does not serve SendTensorsStream".into(),
        code: magpie_core::Code::Unimplemented,
    }
}

fn fail(answers: Vec<Answer>, e: &TransportError) {
    for a in answers {
        let _ = a.tx.send(Err(e.clone()));
    }
}

/// The reader of one stream: opens the call with `rx` as its body, answers batches, and
/// watches the front batch's deadline, until the stream closes.
async fn read(mut guard: ReaderGuard, rx: mpsc::UnboundedReceiver<proto::SendTensorsRequest>) {
    let closed = run(&guard, rx).await;
    guard.closed = Some(closed);
}

async fn run(
    guard: &ReaderGuard,
    rx: mpsc::UnboundedReceiver<proto::SendTensorsRequest>,
) -> Closed {
    let task = &guard.task;
    let (client, timeout, metrics) = {
        let Some(inner) = guard.inner.upgrade() else {
            return Closed::Failed(gone(task));
        };
        match inner.client(task) {
            Ok(c) => (c, inner.options().request_timeout, inner.metrics()),
            Err(e) => return Closed::Failed(e),
        }
    };
    let mut client = client;
    let body = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    let mut responses = match tokio::time::timeout(timeout, client.send_tensors_stream(body)).await
    {
        Err(_) => {
            return Closed::Failed(TransportError::NoAnswer {
                task: task.to_string(),
                waited: timeout,
            })
        }
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => return Closed::Unimplemented,
        Ok(Err(s)) => return Closed::Failed(failed(guard, &s)),
        Ok(Ok(r)) => r.into_inner(),
    };
    guard.stream.opened();
    if let Some(inner) = guard.inner.upgrade() {
        inner.answered(task);
    }
    // Fires at the front batch's deadline, or a timeout from now when none is pending:
    // a batch filed later has a later deadline than either (see step 2).
    let check = tokio::time::sleep(timeout);
    tokio::pin!(check);
    loop {
        tokio::select! {
            biased;
            m = responses.message() => match m {
                Ok(Some(r)) => match guard.stream.take_answered(task, &r) {
                    Ok(p) => answer_batch(task, p.answers, Ok(r.results), metrics.as_deref()),
                    Err(e) => return Closed::Failed(e),
                },
                Ok(None) => {
                    return Closed::Failed(TransportError::Unreachable {
                        task: task.to_string(),
                        detail: "the peer ended the tensor stream (it is stopping)".into(),
                    })
                }
                Err(s) => return Closed::Failed(failed(guard, &s)),
            },
            () = &mut check => {
                let now = Instant::now();
                match guard.stream.front_deadline() {
                    Some(d) if d <= now => {
                        return Closed::Failed(TransportError::NoAnswer {
                            task: task.to_string(),
                            waited: timeout,
                        })
                    }
                    Some(d) => check.as_mut().reset(d),
                    None => check.as_mut().reset(now + timeout),
                }
            }
        }
    }
}

/// A failed stream's status as the error its batches fail with.
fn failed(guard: &ReaderGuard, s: &tonic::Status) -> TransportError {
    let max = guard
        .inner
        .upgrade()
        .map_or(usize::MAX, |i| i.options().max_message_bytes);
    let s = crate::message_limit::map_message_limit(s.clone(), max);
    status_to_transport(&guard.task, &s, &CallContext::default())
}

fn gone(task: &TaskName) -> TransportError {
    TransportError::Unreachable {
        task: task.to_string(),
        detail: "the transport was dropped".into(),
    }
}
