//! What a server admits at once, on real sockets (127.0.0.1, free ports): connections up
//! to `--max-connections` (plaintext and TLS: the one past it is closed without being
//! served, and a closed one makes room), and request messages up to
//! `--incoming-request-bytes` together (a message announced past what is left fails its
//! call with `RESOURCE_EXHAUSTED` naming the flag; the room comes back when the call
//! holding it goes; a unary request stays counted while its handler runs).

mod common;
mod pki;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{free_port, register_test_ops, runtime};
use magpie_core::cluster::ClusterSpec;
use magpie_core::graph::Graph;
use magpie_core::tensor::Tensor;
use magpie_core::testkit::host_task_options;
use magpie_grpc::conv::{graph_to_wire, tensor_to_wire};
use magpie_grpc::proto::master_service_client::MasterServiceClient;
use magpie_grpc::{proto, GrpcOptions, GrpcServer, TlsOptions};
use magpie_scheduler::test_support::eventually_ok;
use pki::Ca;
use tonic::codegen::{http, Service};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A single task `s` started with `options` on a free port.
fn server(options: GrpcOptions) -> GrpcServer {
    register_test_ops();
    let spec = ClusterSpec::builder()
        .job("s", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    GrpcServer::start_with(&spec, "s", 0, &host_task_options("s"), options).unwrap()
}

/// The value of `metric` (unlabelled but for `task`) in `server`'s metrics.
fn metric(server: &GrpcServer, metric: &str) -> u64 {
    server
        .metrics_text()
        .lines()
        .find(|l| l.starts_with(&format!("{metric}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {metric} in the metrics"))
}

/// A fresh connection to `server` (TLS trusting `ca` when given).
async fn connect(server: &GrpcServer, ca: Option<&Ca>) -> Result<Channel, String> {
    let ep = match ca {
        Some(ca) => Endpoint::from_shared(format!("https://{}", server.local_addr()))
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())))
            .unwrap(),
        None => Endpoint::from_shared(format!("http://{}", server.local_addr())).unwrap(),
    };
    ep.connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))
}

/// A health check of `service` over `channel`, under a 10 s deadline.
async fn check(channel: &Channel, service: String) -> Result<i32, Status> {
    let mut c = HealthClient::new(channel.clone());
    let call = c.check(HealthCheckRequest { service });
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(r) => r.map(|r| r.into_inner().status),
        Err(_) => Err(Status::deadline_exceeded("no answer within 10 s")),
    }
}

/// Whether a new connection is served (a health check answers).
async fn served(server: &GrpcServer, ca: Option<&Ca>) -> Result<Channel, String> {
    let ch = connect(server, ca).await?;
    check(&ch, String::new())
        .await
        .map_err(|s| format!("check: {s:?}"))?;
    Ok(ch)
}

fn connections_up_to_the_bound(ca: Option<&Ca>, options: GrpcOptions) {
    let s = server(GrpcOptions {
        max_connections: 2,
        ..options
    });
    let rt = runtime();
    let a = rt.block_on(served(&s, ca)).unwrap();
    let b = rt.block_on(served(&s, ca)).unwrap();
    assert_eq!(metric(&s, "magpie_connections_open"), 2);
    // The third is closed as it is accepted: it is never served.
    let third = rt.block_on(served(&s, ca));
    assert!(third.is_err(), "a connection past the bound was served");
    assert!(metric(&s, "magpie_connections_refused_total") >= 1);
    assert_eq!(metric(&s, "magpie_connections_open"), 2);
    // The two held connections still serve.
    rt.block_on(check(&a, String::new())).unwrap();
    rt.block_on(check(&b, String::new())).unwrap();
    // Closing one makes room for a new one (once the server has seen it close).
    drop(a);
    let mut c = None;
    eventually_ok(Duration::from_secs(30), || {
        c = Some(rt.block_on(served(&s, ca))?);
        Ok(())
    });
    assert_eq!(metric(&s, "magpie_connections_open"), 2);
    drop((b, c));
    s.stop(Duration::from_secs(1));
}

#[test]
fn connections_past_max_connections_are_closed_unserved_until_one_closes() {
    connections_up_to_the_bound(None, GrpcOptions::default());
}

#[test]
fn the_connection_bound_holds_under_tls() {
    let ca = Ca::new("magpie admission test CA");
    let leaf = ca.leaf("magpie task");
    let tls = TlsOptions::new()
        .with_ca_pem(ca.pem())
        .unwrap()
        .with_identity_pem(leaf.cert, leaf.key)
        .unwrap();
    connections_up_to_the_bound(
        Some(&ca),
        GrpcOptions {
            tls: Some(tls),
            ..GrpcOptions::default()
        },
    );
}

/// A request body that sends `data` and then nothing more until it is dropped: a
/// message announced by its prefix and never finished.
struct Unfinished(Option<Bytes>);

impl http_body::Body for Unfinished {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        match self.0.take() {
            Some(data) => Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
            None => Poll::Pending,
        }
    }
}

#[test]
fn request_messages_being_received_share_incoming_request_bytes() {
    const BUDGET: u64 = 1 << 20;
    let s = server(GrpcOptions {
        incoming_request_bytes: BUDGET,
        max_message_bytes: 1 << 20,
        ..GrpcOptions::default()
    });
    let rt = runtime();
    let ch = rt.block_on(connect(&s, None)).unwrap();
    // A health check announcing 800,000 bytes, of which only the first 10 come.
    let mut data = vec![0u8];
    data.extend_from_slice(&800_000u32.to_be_bytes());
    data.extend_from_slice(&[0x0a; 10]);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/grpc.health.v1.Health/Check",
            s.local_addr()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Unfinished(Some(Bytes::from(data)))))
        .unwrap();
    let mut raw = ch.clone();
    let held = rt.spawn(async move {
        futures::future::poll_fn(|cx| raw.poll_ready(cx))
            .await
            .unwrap();
        raw.call(request).await
    });
    eventually_ok(Duration::from_secs(30), || {
        match metric(&s, "magpie_incoming_request_bytes") {
            800_000 => Ok(()),
            n => Err(format!("{n} bytes reserved, not 800000")),
        }
    });

    // 300,000 more bytes would pass the budget: refused, naming the flag.
    let big = || "x".repeat(300_000);
    let refused = rt.block_on(check(&ch, big())).unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--incoming-request-bytes"),
        "{refused:?}"
    );
    assert_eq!(metric(&s, "magpie_incoming_requests_refused_total"), 1);
    // A small one still fits.
    let small = rt.block_on(check(&ch, "small".into())).unwrap_err();
    assert_eq!(small.code(), Code::NotFound, "{small:?}");

    // The unfinished call goes (its stream is reset): its bytes come back.
    held.abort();
    eventually_ok(Duration::from_secs(30), || {
        match metric(&s, "magpie_incoming_request_bytes") {
            0 => Ok(()),
            n => Err(format!("{n} bytes still reserved")),
        }
    });
    // Now the big one is decoded and answered: tonic-health does not know the service.
    let answered = rt.block_on(check(&ch, big())).unwrap_err();
    assert_eq!(answered.code(), Code::NotFound, "{answered:?}");
    // Answered: its request holds nothing any more.
    assert_eq!(metric(&s, "magpie_incoming_request_bytes"), 0);
    assert_eq!(metric(&s, "magpie_incoming_requests_refused_total"), 1);
    s.stop(Duration::from_secs(1));
}

#[test]
fn a_unary_request_stays_counted_while_its_handler_runs() {
    let s = server(GrpcOptions {
        incoming_request_bytes: 1 << 20,
        max_message_bytes: 1 << 20,
        ..GrpcOptions::default()
    });
    let g = Graph::new();
    let on = g.with_device("/job:s/task:0").unwrap();
    let x = on.with_name("x").op("TestFour").build_output().unwrap();
    on.with_name("y")
        .op("TestPass")
        .inputs([x])
        .build_output()
        .unwrap();
    on.with_name("hang").op("TestHang").build_output().unwrap();
    let def = graph_to_wire(&g.to_graph_def()).unwrap();
    // A step fed 800,000 bytes that never ends: its request is held by the handler.
    let client = runtime();
    client.block_on(async {
        let mut c = MasterServiceClient::connect(format!("http://{}", s.local_addr()))
            .await
            .unwrap();
        let handle = c
            .create_session(proto::CreateSessionRequest {
                graph: Some(def),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .session_handle;
        let feed = Tensor::from_slice(&vec![1.0f32; 200_000]);
        let request = proto::RunStepRequest {
            session_handle: handle,
            feeds: vec![proto::NamedTensor {
                name: "x:0".into(),
                tensor: Some(tensor_to_wire(&feed).unwrap()),
            }],
            fetches: vec!["y:0".into(), "hang:0".into()],
            timeout_ms: 600_000,
            ..Default::default()
        };
        tokio::spawn(async move { c.run_step(request).await });
    });
    eventually_ok(Duration::from_secs(30), || {
        match s.core().master().running_steps() {
            1 => Ok(()),
            n => Err(format!("{n} steps running, not 1")),
        }
    });
    // Decoded and running, the request still holds its (more than 800,000) bytes.
    let held = metric(&s, "magpie_incoming_request_bytes");
    assert!((800_000..900_000).contains(&held), "{held} bytes reserved");
    let rt = runtime();
    let ch = rt.block_on(connect(&s, None)).unwrap();
    let refused = rt.block_on(check(&ch, "x".repeat(300_000))).unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--incoming-request-bytes"),
        "{refused:?}"
    );
    // The client goes away: the step is cancelled, the call ends, its bytes come back.
    client.shutdown_background();
    eventually_ok(Duration::from_secs(30), || {
        match metric(&s, "magpie_incoming_request_bytes") {
            0 => Ok(()),
            n => Err(format!("{n} bytes still reserved")),
        }
    });
    let answered = rt.block_on(check(&ch, "x".repeat(300_000))).unwrap_err();
    assert_eq!(answered.code(), Code::NotFound, "{answered:?}");
    s.stop(Duration::from_secs(1));
}
