//! # magpie-grpc
//!
//! Magpie's gRPC transport. `proto/magpie/v1/` defines the wire messages, compiled by
//! protox in `build.rs` (no `protoc` needed); [`conv`] converts between them and core's
//! tensors and graph definitions, rejecting malformed input with a [`WireError`] that
//! names what was wrong.

pub mod conv;
mod error;

pub use error::WireError;

/// The generated messages of package `magpie.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("magpie.v1");
}
