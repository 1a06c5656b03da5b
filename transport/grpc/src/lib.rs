//! # magpie-grpc
//!
//! Magpie's gRPC transport. `proto/magpie/v1/` defines the wire messages and the
//! services (`WorkerService`, `MasterService`), compiled by protox in `build.rs` (no
//! `protoc` needed); [`conv`] converts between them and core's tensors and graph
//! definitions, rejecting malformed input with a [`WireError`] that names what was wrong.
//!
//! - [`GrpcTransport`]: core's [`Transport`](magpie_core::transport::Transport) over
//!   long-lived HTTP/2 channels (one per task, reused across steps), `TCP_NODELAY`,
//!   deadlines on every request, small tensors for one peer batched and sent on one
//!   long-lived stream to it, larger ones streamed in chunks;
//! - [`WorkerService`], [`MasterService`]: the tonic services over a task's
//!   [`TaskServer`](magpie_core::distributed::TaskServer);
//! - [`GrpcServer`]: start a task on its address, [`stop`](GrpcServer::stop) it (refuse
//!   new steps, drain, free the port), [`join`](GrpcServer::join) it; it serves the
//!   standard gRPC health service (`grpc.health.v1`) and, with
//!   [`GrpcOptions::metrics_addr`], Prometheus metrics at `/metrics` (`metrics.rs` lists
//!   them);
//! - [`connect`]: a [`RemoteSession`] on the master at `grpc://host:port` (plaintext) or
//!   `grpcs://host:port` (TLS);
//! - [`tf`]: TensorFlow's master service (`/tensorflow.MasterService/*`) on the same
//!   port, so that a stock `tf.compat.v1.Session("grpc://host:port")` client runs its
//!   graphs here ([`TfMasterService`]);
//! - security, off unless asked for: TLS on every channel, mutual optional
//!   ([`TlsOptions`]), a cluster token every call must carry ([`AuthToken`]), and session
//!   handles of 128 random bits (`SECURITY.md` at the repository root).

mod auth;
mod batch;
mod batch_stream;
mod busy_poll;
mod client;
mod coalesce;
mod codec;
mod connections;
pub mod conv;
mod error;
mod handle;
mod hugepages;
mod message_limit;
mod metrics;
mod metrics_http;
mod options;
mod polled;
mod request_bytes;
mod server;
mod service;
mod sessions;
mod status;
pub mod tf;
mod tls;
mod transport;
mod trim;
mod warm;

pub use auth::{AuthToken, MAX_TOKEN_LEN, MIN_TOKEN_LEN};
pub use busy_poll::BusyPollStats;
pub use client::{
    connect, connect_session, connect_with, Placement, RemoteRunOutput, RemoteSession,
};
pub use error::{GrpcError, WireError};
pub use metrics::TensorTraffic;
pub use options::{GrpcOptions, DEFAULT_BUSY_POLL, DEFAULT_WARM_WINDOW};
pub use server::GrpcServer;
pub use service::{MasterService, WorkerService};
pub use tf::TfMasterService;
pub use tls::TlsOptions;
/// The tonic version the services and clients are built with.
pub use tonic;
pub use transport::GrpcTransport;
pub use warm::{WarmCpus, WarmStats, SPINNER_THREAD_PREFIX};

/// The generated messages and services of package `magpie.v1`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    missing_debug_implementations
)]
pub mod proto {
    tonic::include_proto!("magpie.v1");
}
