//! The `/metrics` endpoint: a minimal HTTP/1.1 responder on the server's runtime,
//! serving what [`Metrics::encode`](crate::metrics::Metrics::encode) renders.
//!
//! It answers `GET /metrics` (a query string is ignored) with `200` and the OpenMetrics
//! text format (which Prometheus scrapes), anything else with `404` (`400` for what is not an HTTP request, `431`
//! for a head over [`MAX_HEAD`]); one request per connection (`Connection: close`).
//! Every connection has a deadline ([`CONNECTION_DEADLINE`]) and at most
//! [`MAX_CONNECTIONS`] are served at once: a client that stalls or floods holds neither
//! memory nor tasks for long. Nothing here panics on input.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Bytes of a request head (request line and headers) the endpoint reads at most.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once; more wait in the listen backlog.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// How long one connection may take, from accept to the last byte of the response.
pub(crate) const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// Renders the exposition on each scrape.
pub(crate) type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Accepts connections on `listener` until the task is aborted (the server's stop).
pub(crate) async fn serve(listener: TcpListener, render: Render) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::debug!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, answer(stream, &render)).await;
            drop(permit);
        });
    }
}

/// Reads one request head from `stream` and answers it.
async fn answer(mut stream: TcpStream, render: &Render) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let (status, body) = if complete {
        route(&head, render)
    } else {
        ("431 Request Header Fields Too Large", String::new())
    };
    let content_type = if status.starts_with("200") {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The status line and body for the request whose head is `head`.
fn route(head: &[u8], render: &Render) -> (&'static str, String) {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return ("400 Bad Request", String::new());
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", String::new());
    };
    if !version.starts_with("HTTP/1.") {
        return ("400 Bad Request", String::new());
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if method == "GET" && path == "/metrics" {
        ("200 OK", render())
    } else {
        (
            "404 Not Found",
            "only GET /metrics is served here\n".to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render() -> Render {
        Arc::new(|| "magpie_x 1\n".to_string())
    }

    #[test]
    fn routes_only_get_metrics() {
        let r = render();
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n", &r).0, "200 OK");
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &r).0, "200 OK");
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n", &r).0,
            "404 Not Found"
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n", &r).0, "404 Not Found");
        assert_eq!(route(b"GET /metrics\r\n\r\n", &r).0, "400 Bad Request");
        assert_eq!(
            route(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", &r).0,
            "400 Bad Request"
        );
        assert_eq!(route(b"", &r).0, "400 Bad Request");
    }
}
