//! The server-wide budget of request bytes being received
//! (`GrpcOptions::incoming_request_bytes`, flag `--incoming-request-bytes`).
//!
//! tonic buffers each request message whole before decoding it, and reserves the length
//! its 5-byte gRPC prefix announces as soon as the prefix arrives. [`RequestBytes`] wraps
//! a served service and its requests' bodies in a [`BudgetedBody`], which reads the gRPC
//! framing of the bytes it passes on: before it passes on a frame in which a message's
//! prefix completes, it reserves that message's announced length against the budget
//! shared by every connection and call of the server. A message not yet whole keeps its
//! reservation until it is, or until the body is dropped (the call ended, failed or was
//! reset). A message received whole keeps it — as the measure of what its decoded form
//! holds — until the handler has answered (a unary call: its request is held for the
//! whole call) or the call's next message is whole (a stream: tonic decodes messages in
//! order and polls the body only when it holds no whole message, so by then the message
//! before has been decoded and handed to the handler, whose own limits count what it keeps
//! of it: a tensor stream's chunks are copied into a tensor the rendezvous counts). A
//! message whose reservation would pass the budget fails its call with
//! `RESOURCE_EXHAUSTED` naming the flag before tonic sees its prefix, so tonic never
//! allocates for it. A message longer than the services' message-size limit reserves
//! nothing: tonic refuses it from its prefix, allocating nothing, naming that limit.
//!
//! # Protocol and ordering
//! The budget is one atomic counter ([`Metrics::incoming_bytes`]): a reservation is a
//! compare-and-swap loop that only adds when the sum stays within the budget, a release
//! a subtraction of exactly what was reserved. Relaxed ordering suffices: the counter
//! guards no other memory, only the sum matters, and every read-modify-write of one
//! atomic sees the latest value in its modification order.
//!
//! # What it bounds
//! The bytes of request messages buffered for decoding, and of unary requests decoded and
//! held by their handlers, on all connections together, by the budget. Bytes the HTTP/2 layer holds before they
//! reach a body are bounded per connection by its flow-control window (see `SECURITY.md`
//! for the arithmetic); a decoded message belongs to its handler (a streamed tensor's
//! chunks are counted by the rendezvous' limits).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use magpie_core::limits::{Limit, LimitExceeded};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Code, Status};

use crate::metrics::Metrics;

/// Length of the gRPC message prefix: a compression flag and a big-endian `u32` length.
const PREFIX: usize = 5;

/// The budget: at most `max` bytes reserved at once in `metrics.incoming_bytes`.
#[derive(Debug)]
pub(crate) struct Budget {
    max: u64,
    /// Every served service's message-size limit: tonic refuses a longer message from
    /// its prefix, before setting anything aside, so it reserves nothing here (and the
    /// refusal names `--max-message-bytes`).
    max_message: u64,
    metrics: Arc<Metrics>,
}

impl Budget {
    /// A budget of `max` bytes for messages of at most `max_message` bytes, counted in
    /// `metrics`.
    pub(crate) fn new(max: u64, max_message: u64, metrics: Arc<Metrics>) -> Arc<Budget> {
        Arc::new(Budget {
            max,
            max_message,
            metrics,
        })
    }

    /// Reserves `bytes` for a message of that length (nothing for one tonic refuses),
    /// or says why not (the call's status). Returns what was reserved.
    fn reserve(&self, bytes: u64) -> Result<u64, Status> {
        if bytes > self.max_message {
            return Ok(0);
        }
        let used = &self.metrics.incoming_bytes;
        let mut now = used.load(Ordering::Relaxed);
        loop {
            let after = now.saturating_add(bytes);
            if after > self.max {
                self.metrics
                    .incoming_refused
                    .fetch_add(1, Ordering::Relaxed);
                let e = LimitExceeded::new(
                    Limit::IncomingRequestBytes,
                    self.max,
                    format!(
                        "a request message of {bytes} bytes while {now} bytes of request \
                         messages are being received"
                    ),
                );
                return Err(crate::status::status(
                    Code::ResourceExhausted,
                    e.to_string(),
                ));
            }
            match used.compare_exchange_weak(now, after, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(bytes),
                Err(seen) => now = seen,
            }
        }
    }

    /// Releases `bytes` reserved before.
    fn release(&self, bytes: u64) {
        if bytes > 0 {
            self.metrics
                .incoming_bytes
                .fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

/// A served service whose requests' messages are held to the server's [`Budget`] (see
/// the module docs).
#[derive(Clone, Debug)]
pub(crate) struct RequestBytes<S> {
    inner: S,
    budget: Arc<Budget>,
}

impl<S> RequestBytes<S> {
    /// `inner`, its requests counted against `budget`.
    pub(crate) fn new(inner: S, budget: Arc<Budget>) -> Self {
        RequestBytes { inner, budget }
    }
}

impl<S: NamedService> NamedService for RequestBytes<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<Body>> for RequestBytes<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = BoxFuture<Response<B>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let call = Arc::new(Call {
            budget: Arc::clone(&self.budget),
            last: AtomicU64::new(0),
        });
        let body_call = Arc::clone(&call);
        let response = self
            .inner
            .call(request.map(|body| Body::new(BudgetedBody::new(body, body_call))));
        Box::pin(async move {
            let response = response.await;
            // The handler has answered: it no longer holds the last message.
            drop(call);
            response
        })
    }
}

/// One call's hold on the budget for the last message it received whole: shared by its
/// body and its response future, released when both are gone (the handler has answered
/// and the body is dropped) or when the call's next message completes.
#[derive(Debug)]
struct Call {
    budget: Arc<Budget>,
    last: AtomicU64,
}

impl Call {
    /// `bytes`, reserved for a message just received whole, become the call's last
    /// message; the one before is released (its handler has taken it in: tonic decodes
    /// messages in order, and a streaming handler reads them one by one).
    fn received(&self, bytes: u64) {
        self.budget
            .release(self.last.swap(bytes, Ordering::Relaxed));
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.budget.release(*self.last.get_mut());
    }
}

/// Where the body's bytes stand in the gRPC framing.
#[derive(Debug)]
enum Framing {
    /// Reading a prefix: `have` of its bytes so far.
    Prefix { bytes: [u8; PREFIX], have: usize },
    /// Reading a message's content: `left` bytes of it still to come.
    Message { left: u64 },
}

/// A request body whose messages reserve their length against the [`Budget`].
#[derive(Debug)]
pub(crate) struct BudgetedBody {
    inner: Body,
    call: Arc<Call>,
    framing: Framing,
    /// Reserved for the message being read, if any: released on drop, or handed to the
    /// call when the message is whole.
    held: u64,
}

impl BudgetedBody {
    fn new(inner: Body, call: Arc<Call>) -> Self {
        BudgetedBody {
            inner,
            call,
            framing: Framing::Prefix {
                bytes: [0; PREFIX],
                have: 0,
            },
            held: 0,
        }
    }

    /// Follows the framing through `data`, reserving each message whose prefix
    /// completes in it.
    fn account(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            match &mut self.framing {
                Framing::Prefix { bytes, have } => {
                    let n = (PREFIX - *have).min(data.len());
                    bytes[*have..*have + n].copy_from_slice(&data[..n]);
                    *have += n;
                    data = &data[n..];
                    if *have == PREFIX {
                        let len =
                            u64::from(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]));
                        self.held = self.call.budget.reserve(len)?;
                        self.framing = Framing::Message { left: len };
                        self.finish_if_read();
                    }
                }
                Framing::Message { left } => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    // n <= data.len(), so it fits a usize.
                    data = &data[usize::try_from(n).unwrap_or(data.len())..];
                    self.finish_if_read();
                }
            }
        }
        Ok(())
    }

    /// A message read whole becomes the call's last message, and the next prefix begins.
    fn finish_if_read(&mut self) {
        if let Framing::Message { left: 0 } = self.framing {
            self.call.received(std::mem::take(&mut self.held));
            self.framing = Framing::Prefix {
                bytes: [0; PREFIX],
                have: 0,
            };
        }
    }
}

impl Drop for BudgetedBody {
    fn drop(&mut self) {
        // The call's last message stays reserved until its handler has answered.
        self.call.budget.release(self.held);
    }
}

impl http_body::Body for BudgetedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                this.account(data.chunk())?;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(len: u32) -> Vec<u8> {
        let mut p = vec![0];
        p.extend_from_slice(&len.to_be_bytes());
        p
    }

    fn call(budget: &Arc<Budget>) -> Arc<Call> {
        Arc::new(Call {
            budget: Arc::clone(budget),
            last: AtomicU64::new(0),
        })
    }

    fn body(call: &Arc<Call>) -> BudgetedBody {
        BudgetedBody::new(Body::empty(), Arc::clone(call))
    }

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::for_tests())
    }

    #[test]
    fn messages_reserve_their_announced_length_until_read_and_answered() {
        let budget = Budget::new(100, 1000, metrics());
        let used = || budget.metrics.incoming_bytes.load(Ordering::Relaxed);
        let (call_a, call_b) = (call(&budget), call(&budget));
        let mut a = body(&call_a);
        // A prefix split across frames reserves once it is whole.
        a.account(&prefix(60)[..3]).unwrap();
        assert_eq!(used(), 0);
        a.account(&prefix(60)[3..]).unwrap();
        assert_eq!(used(), 60);
        a.account(&[7; 59]).unwrap();
        assert_eq!(a.held, 60);
        // A second call cannot take more than the 40 bytes left.
        let mut b = body(&call_b);
        let refused = b.account(&prefix(41)).unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(
            refused.message().contains("--incoming-request-bytes"),
            "{refused}"
        );
        assert!(refused.message().contains("41 bytes"), "{refused}");
        assert_eq!(budget.metrics.incoming_refused.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(used(), 60);
        let mut b = body(&call_b);
        b.account(&prefix(40)).unwrap();
        assert_eq!(used(), 100);
        // The last byte of a's message, then a whole empty message and the next prefix
        // in one frame: the empty message releases the 60 (decoded by then), and
        // becomes the last message itself.
        let mut frame = vec![7];
        frame.extend(prefix(0));
        frame.extend(prefix(0));
        a.account(&frame).unwrap();
        assert_eq!((a.held, call_a.last.load(Ordering::Relaxed)), (0, 0));
        assert_eq!(used(), 40);
        // A message past the message-size limit reserves nothing: tonic refuses it
        // from its prefix, naming that limit.
        let mut c = body(&call(&budget));
        c.account(&prefix(1001)).unwrap();
        assert_eq!((c.held, used()), (0, 40));
        drop(c);
        // A unary request: b's message, read whole, stays reserved after its body is
        // dropped, until the call (its handler) is done too.
        b.account(&[1; 40]).unwrap();
        drop(b);
        assert_eq!(used(), 40);
        drop(call_b);
        assert_eq!(used(), 0);
        drop((a, call_a));
        assert_eq!(used(), 0);
    }
}
