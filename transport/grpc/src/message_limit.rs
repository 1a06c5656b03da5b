//! The message-size limit as `RESOURCE_EXHAUSTED`.
//!
//! tonic enforces `--max-message-bytes` itself (its decoding and encoding limits) and
//! reports a message past it as `OUT_OF_RANGE` ("decoded message length too large"),
//! naming neither the limit nor the flag. Every other limit of a server is
//! `RESOURCE_EXHAUSTED` naming both ([`LimitExceeded`]), so this module rewrites tonic's
//! status into that form: [`MessageLimit`] wraps each served service and rewrites the
//! status of a request refused before its handler ran (a trailers-only response, whose
//! status is in the headers); [`map_message_limit`] rewrites one status, for the calling
//! side (a response past the client's own limit) and for the handlers.
//!
//! tonic still refuses the message from its length prefix, before buffering it: the limit
//! costs the server no memory.

use std::convert::Infallible;
use std::task::{Context, Poll};

use magpie_core::limits::{Limit, LimitExceeded};
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Code, Status};

/// Whether `status` is tonic's report of a message past its size limit.
fn is_tonic_size_limit(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains("message length too large")
}

/// `status` as `RESOURCE_EXHAUSTED` naming the message-size limit (`max` bytes) and its
/// flag when it is tonic's report of a message past that limit; otherwise unchanged.
pub(crate) fn map_message_limit(status: Status, max: usize) -> Status {
    if !is_tonic_size_limit(&status) {
        return status;
    }
    let e = LimitExceeded::new(Limit::MessageBytes, max, status.message().to_string());
    crate::status::status(Code::ResourceExhausted, e.to_string())
}

/// A served service whose refusals of over-large requests are `RESOURCE_EXHAUSTED`
/// naming `--max-message-bytes` (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct MessageLimit<S> {
    inner: S,
    max: usize,
}

impl<S> MessageLimit<S> {
    /// `inner`, whose messages are limited to `max` bytes.
    pub(crate) fn new(inner: S, max: usize) -> Self {
        MessageLimit { inner, max }
    }
}

impl<S: NamedService> NamedService for MessageLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<Body>> for MessageLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<B>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let max = self.max;
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            let refused = Status::from_header_map(response.headers())
                .filter(is_tonic_size_limit)
                .map(|s| map_message_limit(s, max));
            if let Some(status) = refused {
                let headers = response.headers_mut();
                headers.remove(Status::GRPC_STATUS);
                headers.remove(Status::GRPC_MESSAGE);
                headers.remove(Status::GRPC_STATUS_DETAILS);
                if status.add_header(headers).is_err() {
                    // Cannot happen: the message is capped text, which always encodes.
                    tracing::warn!("could not rewrite a message-size refusal");
                }
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_size_refusals_become_resource_exhausted_naming_the_flag() {
        let s = Status::out_of_range(
            "Error, decoded message length too large: found 2000 bytes, the limit is: 1000 bytes",
        );
        let mapped = map_message_limit(s, 1000);
        assert_eq!(mapped.code(), Code::ResourceExhausted);
        assert!(mapped.message().contains("--max-message-bytes"), "{mapped}");
        assert!(mapped.message().contains("found 2000 bytes"), "{mapped}");
        assert!(
            mapped.message().contains("message size limit of 1000"),
            "{mapped}"
        );

        let other = map_message_limit(Status::out_of_range("index 3 of 2"), 1000);
        assert_eq!(other.code(), Code::OutOfRange);
    }
}
