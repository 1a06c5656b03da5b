//! TensorFlow's master service (`/tensorflow.MasterService/*`), served beside Magpie's
//! own services on the same port, so that a stock TensorFlow client —
//! `tf.compat.v1.Session("grpc://host:port")` — runs its graphs on a Magpie cluster.
//!
//! - [`proto`]: the messages of `proto/tensorflow/` (TensorFlow's field numbers, the
//!   subset Magpie reads);
//! - [`conv`]: TensorFlow's `GraphDef`, attributes and `TensorProto` to and from core's
//!   types, validated ([`TfWireError`]);
//! - `session.rs`: a TensorFlow session's state beside its
//!   [`MasterSession`](magpie_core::distributed::MasterSession) (graph version,
//!   callables, soft placement);
//! - `partial.rs`: partial runs (`PartialRunSetup`, `RunStep` with a handle): TensorFlow's
//!   checks, and the tensors kept between calls so that no node runs twice;
//! - `service.rs`: [`TfMasterService`], the handlers;
//! - `recent.rs`: the request ids seen lately, so a retried request is not run twice;
//! - `cluster.rs`: what a handler asks of the whole cluster (its devices as TensorFlow
//!   describes them, `Reset` on every task).
//!
//! A TensorFlow session is a master session like Magpie's own: it runs on this task's
//! master, counts against [`GrpcOptions::max_sessions`](crate::GrpcOptions), is closed
//! after [`GrpcOptions::session_idle_timeout`](crate::GrpcOptions), and its graph is
//! TensorFlow's, translated by
//! [`Graph::extend_tensorflow`](magpie_core::graph::Graph::extend_tensorflow) with every
//! node keeping its name. The same interceptors (cluster token) guard it as Magpie's
//! services.

mod cluster;
pub mod conv;
mod partial;
mod recent;
mod service;
mod session;

pub use conv::TfWireError;
pub(crate) use partial::KeptBytes;
pub use service::TfMasterService;
pub(crate) use session::TfSession;

/// The generated messages and service of package `tensorflow` (`proto/tensorflow/`).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    missing_debug_implementations
)]
pub mod proto {
    tonic::include_proto!("tensorflow");
}
