//! The server's bound on open connections (`GrpcOptions::max_connections`, flag
//! `--max-connections`).
//!
//! [`limit_connections`] wraps the listener's stream of accepted TCP connections: each
//! one takes a permit of a semaphore of `max` permits as it is accepted and holds it in
//! its [`Counted`] stream until hyper drops the connection (closed by either side, by a
//! failed TLS handshake, or by the server's shutdown). A connection accepted while no
//! permit is left is dropped at once — closed before a byte of it is read — logged and
//! counted (`magpie_connections_refused_total`). tonic performs the TLS handshake on the
//! stream this yields, so handshakes in progress hold a permit too.
//!
//! The bound is on this server's own connections only: its outgoing connections to its
//! peers (`GrpcTransport`) are not counted.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::Metrics;

/// An accepted connection holding one of the server's connection permits until dropped.
#[derive(Debug)]
pub(crate) struct Counted {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// `incoming`, with connections past `max` open at once closed as they are accepted
/// (see the module docs). Accept errors pass through (tonic logs and skips them).
pub(crate) fn limit_connections<S>(
    incoming: S,
    max: usize,
    metrics: Arc<Metrics>,
    task: String,
) -> impl Stream<Item = io::Result<Counted>> + Send + 'static
where
    S: Stream<Item = io::Result<TcpStream>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)));
    incoming.filter_map(move |accepted| {
        let admitted = match accepted {
            Err(e) => Some(Err(e)),
            Ok(io) => match Arc::clone(&permits).try_acquire_owned() {
                Ok(permit) => {
                    metrics.connections_open.fetch_add(1, Ordering::Relaxed);
                    Some(Ok(Counted {
                        io,
                        _permit: permit,
                        metrics: Arc::clone(&metrics),
                    }))
                }
                Err(_) => {
                    refuse(io, max, &metrics, &task);
                    None
                }
            },
        };
        futures::future::ready(admitted)
    })
}

/// Logs a warning when `max` connections would not fit the process's soft limit of open
/// file descriptors (`ulimit -n`), or when `budget` bytes of requests received at once
/// could never hold a message of `max_message` bytes: the server still starts, but past
/// the descriptor limit accepts fail instead of being refused cleanly, and such messages
/// are always refused.
pub(crate) fn warn_if_unusable(max: usize, budget: u64, max_message: usize, task: &str) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live, properly aligned
    // local, and reads nothing else.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if read && limit.rlim_cur != libc::RLIM_INFINITY && (max as u64) >= limit.rlim_cur {
        tracing::warn!(
            %task,
            max_connections = max,
            open_files_limit = limit.rlim_cur,
            "--max-connections is not below the open-file limit (ulimit -n): connections \
             past that limit fail at accept instead of being refused; raise the limit or \
             lower --max-connections"
        );
    }
    if budget < max_message as u64 {
        tracing::warn!(
            %task,
            incoming_request_bytes = budget,
            max_message_bytes = max_message,
            "--incoming-request-bytes is below --max-message-bytes: messages larger than \
             it are always refused"
        );
    }
}

/// Closes `io`, accepted past the bound of `max` connections: counts it, and logs the
/// first refusal and every one whose count is a power of two (a flood of them does not
/// flood the log).
fn refuse(io: TcpStream, max: usize, metrics: &Metrics, task: &str) {
    let peer = io.peer_addr().ok();
    // Counted before the close, so a peer that sees the close sees the count.
    let n = metrics.connections_refused.fetch_add(1, Ordering::Relaxed) + 1;
    drop(io);
    if n.is_power_of_two() {
        tracing::warn!(
            %task,
            ?peer,
            refused_so_far = n,
            "refused a connection: {max} connections are open, the limit \
             (raise it with `magpie server --max-connections`)"
        );
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
