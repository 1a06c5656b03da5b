//! # magpie-inmem
//!
//! The in-process transport: every task of a cluster runs in this process, registered
//! under its address in an [`InMemNetwork`]. Requests are direct calls into the task's
//! [`Worker`](magpie_core::distributed::Worker); tensors move as `Arc`s, never copied.
//! A step runs each partition on a thread of its own (the worker's local session blocks
//! its caller), taken from a set of reusable step threads, so the master's futures never
//! block a thread and no step starts a thread once the set has grown.
//!
//! - [`InMemServer`]: start a task, [`stop`](InMemServer::stop) it (refuse new steps,
//!   drain, free the address), [`join`](InMemServer::join) it;
//! - [`InMemTransport`]: core's [`Transport`](magpie_core::transport::Transport) over a
//!   network;
//! - [`connect`]: a session on the master of the task at `inmem://<address>`.

mod network;
mod server;
mod step_threads;
mod transport;

pub use network::InMemNetwork;
pub use server::{connect, InMemError, InMemServer};
pub use transport::InMemTransport;
