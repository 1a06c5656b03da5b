//! [`CoalescingConnector`]: the TCP connections of Magpie's Rust client
//! ([`connect`](crate::connect)) and of the tasks' transport
//! ([`GrpcTransport`](crate::GrpcTransport)), whose writes of one scheduler turn leave in
//! one system call.
//!
//! # Why
//!
//! hyper writes a request's HEADERS frame as soon as h2 opens the stream, and its body's
//! DATA frames only once h2 has given the stream send capacity, which h2 does while it
//! writes the HEADERS frame: hyper's body pipe is woken then, after the connection's flush.
//! So every unary call (a `RunStep`, a `RunPartition`) left in two writes to the socket, each a full trip
//! through the kernel's TCP stack (on loopback the receiver's side too, in the sender's
//! system call), where one would do.
//!
//! # What it does
//!
//! [`Coalescing`] wraps the socket. Writes go to a buffer of up to [`COALESCE_BYTES`]
//! (a larger write first writes out the buffer, then goes straight to the socket). The
//! first flush of a buffer yields once to the task's scheduler (it wakes its own task and
//! returns `Pending`) instead of writing: the tasks that what was written woke (hyper's
//! body pipe, which now has capacity) run first, and their frames join the buffer; the
//! next flush writes the buffer in one call.
//!
//! # What it promises
//!
//! - Bytes reach the socket in the order they were written; a flush returns `Ready` only
//!   once every byte written before it was written to the socket (and the socket flushed).
//! - A flush is put off by one turn of its task's scheduler, never by a timer, and only
//!   when something is buffered; a shutdown writes the buffer out without yielding.
//! - Reads pass through untouched (reported, with the writes to the socket, to the
//!   runtime's [`BusyPoll`] when the connector has one). TLS, when the endpoint has it, runs above this layer
//!   (tonic wraps the connection this connector returns), so records are coalesced the
//!   same way.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper_util::rt::TokioIo;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::codegen::Service;

use crate::busy_poll::BusyPoll;

/// The most bytes [`Coalescing`] buffers: a step's request and small tensors fit; a
/// larger write goes straight to the socket. A connection's buffer keeps up to this much
/// memory between writes.
pub(crate) const COALESCE_BYTES: usize = 64 << 10;

/// A connection whose writes are buffered until a flush, and whose first flush of each
/// buffer yields once to the scheduler (see the module docs).
#[derive(Debug)]
pub(crate) struct Coalescing<T> {
    io: T,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written to `io`.
    written: usize,
    /// The flush of the bytes in `buf` has yielded once already.
    yielded: bool,
    /// The runtime's busy polling, told of reads and of writes to the socket.
    busy: Option<Arc<BusyPoll>>,
}

impl<T> Coalescing<T> {
    /// `io`, with an empty buffer.
    #[cfg(test)]
    pub(crate) fn new(io: T) -> Coalescing<T> {
        Coalescing::with_busy_poll(io, None)
    }

    /// [`Coalescing::new`], reporting reads and writes to `busy`.
    pub(crate) fn with_busy_poll(io: T, busy: Option<Arc<BusyPoll>>) -> Coalescing<T> {
        Coalescing {
            io,
            buf: Vec::new(),
            written: 0,
            yielded: false,
            busy,
        }
    }

    /// Tells the busy polling that bytes left for the socket.
    fn wrote(&self) {
        if let Some(b) = &self.busy {
            b.wrote();
        }
    }

    /// Bytes written and not yet passed to the connection.
    fn pending(&self) -> usize {
        self.buf.len() - self.written
    }
}

impl<T: AsyncWrite + Unpin> Coalescing<T> {
    /// Writes the buffer out (in as few calls as the connection takes), then empties it.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if !self.buf.is_empty() {
            self.wrote();
        }
        self.buf.clear();
        self.written = 0;
        self.yielded = false;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if let (Some(b), Poll::Ready(Ok(()))) = (&self.busy, &read) {
            if buf.filled().len() > before {
                b.read();
            }
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() + data.len() > COALESCE_BYTES {
            ready!(this.poll_drain(cx))?;
            if data.len() > COALESCE_BYTES {
                let n = ready!(Pin::new(&mut this.io).poll_write(cx, data))?;
                this.wrote();
                return Poll::Ready(Ok(n));
            }
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.buf.len() + total > COALESCE_BYTES {
            ready!(this.poll_drain(cx))?;
            if total > COALESCE_BYTES {
                let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
                this.wrote();
                return Poll::Ready(Ok(n));
            }
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending() > 0 {
            if !this.yielded {
                // One turn of the scheduler: the tasks woken by what was written add
                // their frames first (see the module docs).
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Connects to an endpoint's `host:port` over TCP (with `TCP_NODELAY` as asked), and
/// wraps the connection in [`Coalescing`]. tonic applies the endpoint's connect timeout
/// and TLS around it.
#[derive(Clone, Debug)]
pub(crate) struct CoalescingConnector {
    nodelay: bool,
    /// The busy polling of the runtime the connections run on, if it has one.
    busy: Option<Arc<BusyPoll>>,
}

impl CoalescingConnector {
    /// A connector setting `TCP_NODELAY` to `nodelay` on its connections.
    pub(crate) fn new(nodelay: bool) -> CoalescingConnector {
        CoalescingConnector {
            nodelay,
            busy: None,
        }
    }

    /// Its connections report their reads and writes to `busy`, the busy polling of the
    /// runtime they run on.
    pub(crate) fn busy_poll(mut self, busy: Arc<BusyPoll>) -> CoalescingConnector {
        self.busy = Some(busy);
        self
    }
}

impl Service<Uri> for CoalescingConnector {
    type Response = TokioIo<Coalescing<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let nodelay = self.nodelay;
        let busy = self.busy.clone();
        Box::pin(async move {
            let (host, port) = host_port(&uri)?;
            let mut last = None;
            for addr in tokio::net::lookup_host((host.as_str(), port)).await? {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        s.set_nodelay(nodelay)?;
                        return Ok(TokioIo::new(Coalescing::with_busy_poll(s, busy)));
                    }
                    Err(e) => last = Some(io::Error::new(e.kind(), format!("{addr}: {e}"))),
                }
            }
            Err(last.unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host} resolved to no address"),
                )
            }))
        })
    }
}

/// The host (without an IPv6 literal's brackets) and port of `uri`; the port defaults by
/// scheme (443 for `https`, 80 otherwise).
fn host_port(uri: &Uri) -> io::Result<(String, u16)> {
    let host = uri.host().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no host in the endpoint {uri}"),
        )
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection that records each write call it receives.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn poll_flush(c: &mut Coalescing<Recorder>) -> Poll<io::Result<()>> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        Pin::new(c).poll_flush(&mut cx)
    }

    fn poll_write(c: &mut Coalescing<Recorder>, data: &[u8]) -> usize {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match Pin::new(c).poll_write(&mut cx, data) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("write: {other:?}"),
        }
    }

    #[test]
    fn writes_before_and_after_the_first_flush_leave_in_one_write() {
        let mut c = Coalescing::new(Recorder::default());
        assert_eq!(poll_write(&mut c, b"headers"), 7);
        assert!(c.io.writes.is_empty(), "buffered, not written");
        // The first flush yields once and writes nothing.
        assert!(poll_flush(&mut c).is_pending());
        assert!(c.io.writes.is_empty());
        assert_eq!(poll_write(&mut c, b"+data"), 5);
        // The second writes everything in one call and flushes the connection.
        assert!(matches!(poll_flush(&mut c), Poll::Ready(Ok(()))));
        assert_eq!(c.io.writes, vec![b"headers+data".to_vec()]);
        assert_eq!(c.io.flushes, 1);
        // Nothing buffered: a flush goes straight through, with no yield.
        assert!(matches!(poll_flush(&mut c), Poll::Ready(Ok(()))));
        assert_eq!(c.io.writes.len(), 1);
        assert_eq!(c.io.flushes, 2);
        // The next buffer yields once again.
        poll_write(&mut c, b"next");
        assert!(poll_flush(&mut c).is_pending());
        assert!(matches!(poll_flush(&mut c), Poll::Ready(Ok(()))));
        assert_eq!(c.io.writes[1], b"next".to_vec());
    }

    #[test]
    fn a_large_write_goes_after_the_buffer_and_straight_through() {
        let mut c = Coalescing::new(Recorder::default());
        poll_write(&mut c, b"small");
        let big = vec![7u8; COALESCE_BYTES + 1];
        assert_eq!(poll_write(&mut c, &big), big.len());
        assert_eq!(
            c.io.writes.len(),
            2,
            "the buffer first, then the large write"
        );
        assert_eq!(c.io.writes[0], b"small".to_vec());
        assert_eq!(c.io.writes[1], big);
        // Nothing left buffered: the flush does not yield.
        assert!(matches!(poll_flush(&mut c), Poll::Ready(Ok(()))));
        // A write that would overflow the buffer writes the buffer out first, then is
        // buffered itself.
        poll_write(&mut c, &vec![1u8; COALESCE_BYTES - 10]);
        poll_write(&mut c, &[2u8; 20]);
        assert_eq!(c.io.writes.len(), 3);
        assert_eq!(c.io.writes[2].len(), COALESCE_BYTES - 10);
        assert!(poll_flush(&mut c).is_pending());
        assert!(matches!(poll_flush(&mut c), Poll::Ready(Ok(()))));
        assert_eq!(c.io.writes[3], vec![2u8; 20]);
    }

    #[test]
    fn a_shutdown_writes_the_buffer_out_without_yielding() {
        let mut c = Coalescing::new(Recorder::default());
        poll_write(&mut c, b"last words");
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            Pin::new(&mut c).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.io.writes, vec![b"last words".to_vec()]);
    }

    #[test]
    fn the_connector_reaches_a_listener_and_bytes_arrive_in_order() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let uri: Uri = format!("http://{addr}").parse().unwrap();
            let accept = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                got
            });
            let io = CoalescingConnector::new(true).call(uri).await.unwrap();
            let mut c = io.into_inner();
            c.write_all(b"one ").await.unwrap();
            c.write_all(b"two").await.unwrap();
            c.flush().await.unwrap();
            c.write_all(b" three").await.unwrap();
            c.shutdown().await.unwrap();
            assert_eq!(accept.await.unwrap(), b"one two three".to_vec());
            // Nothing listens on a port just freed: the error names the address.
            let free = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            let e = CoalescingConnector::new(true)
                .call(format!("http://{free}").parse().unwrap())
                .await
                .unwrap_err();
            assert!(e.to_string().contains(&free.to_string()), "{e}");
        });
    }

    #[test]
    fn host_and_port_come_from_the_uri() {
        let hp = |s: &str| host_port(&s.parse().unwrap()).unwrap();
        assert_eq!(hp("http://127.0.0.1:2222"), ("127.0.0.1".into(), 2222));
        assert_eq!(hp("http://[::1]:7"), ("::1".into(), 7));
        assert_eq!(hp("https://example.com"), ("example.com".into(), 443));
        assert_eq!(hp("http://example.com"), ("example.com".into(), 80));
    }
}
