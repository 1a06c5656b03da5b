//! [`Polled`]: a served service that tells its runtime's [`BusyPoll`] when a request
//! arrives and when its answer is ready, so the server spins for the client's next
//! request after each answer (`busy_poll.rs`).
//!
//! The server's side is told by calls, not by its connections' bytes: clients send more
//! than requests (TensorFlow's gRPC core answers each response with a flow-control ping
//! soon after), and a spin ended by such a frame, or an average of gaps shortened by it,
//! would spin at the wrong times. A call that arrives ends the spin and counts the gap
//! since the last answer; an answer starts the next spin. A stream's messages after its
//! first are not seen here: the runtime's outgoing connections report their own bytes.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;

use crate::busy_poll::BusyPoll;

/// A served service whose calls report to a [`BusyPoll`] (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Polled<S> {
    inner: S,
    busy: Arc<BusyPoll>,
}

impl<S> Polled<S> {
    /// `inner`, its calls reported to `busy`.
    pub(crate) fn new(inner: S, busy: Arc<BusyPoll>) -> Self {
        Polled { inner, busy }
    }
}

impl<S: NamedService> NamedService for Polled<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<Body>> for Polled<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
    // The services it wraps answer with boxed futures: no second allocation per call.
    S::Future: Unpin,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = Answered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.busy.read();
        Answered {
            inner: self.inner.call(request),
            busy: Arc::clone(&self.busy),
        }
    }
}

/// A call's answer that tells the [`BusyPoll`] when it is ready.
#[derive(Debug)]
pub(crate) struct Answered<F> {
    inner: F,
    busy: Arc<BusyPoll>,
}

impl<F: Future + Unpin> Future for Answered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let answer = ready!(Pin::new(&mut self.inner).poll(cx));
        // hyper writes the answer once this future is ready, in the same turn of the
        // connection's task: the spin covers the write and the wait that follows.
        self.busy.wrote();
        Poll::Ready(answer)
    }
}
