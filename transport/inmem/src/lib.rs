//! # magpie-inmem
//!
//! The in-process transport: every task of a cluster runs in this process, registered
//! under its address in an [`InMemNetwork`]. Requests are direct calls into the task's
//! [`Worker`](magpie_core::distributed::Worker); tensors move as `Arc`s, never copied.
//! A partition step runs on the task's scheduler pool through the worker's async path
//! ([`Worker::run_partition_async`](magpie_core::distributed::Worker::run_partition_async)):
//! the transport starts no thread, and the master's futures hold none while they wait.
//!
//! - [`InMemServer`]: start a task, [`stop`](InMemServer::stop) it (refuse new steps,
//!   drain, free the address), [`join`](InMemServer::join) it;
//! - [`InMemTransport`]: core's [`Transport`](magpie_core::transport::Transport) over a
//!   network;
//! - [`connect`]: a session on the master of the task at `inmem://<address>`.

mod network;
mod server;
mod transport;

pub use network::InMemNetwork;
pub use server::{connect, connect_with, InMemError, InMemServer};
pub use transport::InMemTransport;
