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
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
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
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = BoxFuture<Response<B>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.busy.read();
        let response = self.inner.call(request);
        let busy = Arc::clone(&self.busy);
        Box::pin(async move {
            let response = response.await;
            // hyper writes the answer once this future is ready, in the same turn of the
            // connection's task: the spin covers the write and the wait that follows.
            busy.wrote();
            response
        })
    }
}
