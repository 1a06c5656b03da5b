//! The RPC services under attack, on real sockets (127.0.0.1, free ports), with
//! certificates made at run time: TLS from client to master to worker, a plaintext
//! client against a TLS server, missing and wrong cluster tokens on both services, worker
//! calls without a certificate the cluster CA signed under mutual TLS, and session
//! handles guessed from the old sequential pattern or kept from a previous server
//! process. Each attack gets its status code; the server keeps serving.

mod common;
mod pki;

use std::time::Duration;

use common::{free_port, register_test_ops};
use magpie_core::cluster::ClusterSpec;
use magpie_core::graph::{Graph, Output};
use magpie_core::testkit::host_task_options;
use magpie_grpc::conv::graph_to_wire;
use magpie_grpc::proto::master_service_client::MasterServiceClient;
use magpie_grpc::proto::worker_service_client::WorkerServiceClient;
use magpie_grpc::{proto, AuthToken, GrpcError, GrpcOptions, GrpcServer, TlsOptions};
use pki::Ca;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

const TOKEN: &str = "s3cr3t-cluster-token-0123456789";

/// A master task `m` and a worker task `w` on free ports, both with `options`.
fn cluster(options: &GrpcOptions) -> (ClusterSpec, GrpcServer, GrpcServer) {
    register_test_ops();
    let spec = ClusterSpec::builder()
        .job("m", [format!("127.0.0.1:{}", free_port())])
        .job("w", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    let m =
        GrpcServer::start_with(&spec, "m", 0, &host_task_options("m"), options.clone()).unwrap();
    let w =
        GrpcServer::start_with(&spec, "w", 0, &host_task_options("w"), options.clone()).unwrap();
    (spec, m, w)
}

/// A graph whose value (3.0) is made on the worker and fetched through the master: the
/// master registers and runs a partition on the worker, which sends the tensor back.
fn two_task_graph() -> (Graph, Output) {
    let g = Graph::new();
    let x = g
        .with_device("/job:w/task:0")
        .unwrap()
        .with_name("x")
        .op("TestThree")
        .build_output()
        .unwrap();
    let y = g
        .with_device("/job:m/task:0")
        .unwrap()
        .with_name("y")
        .op("TestPass")
        .inputs([x])
        .build_output()
        .unwrap();
    (g, y)
}

/// Runs the two-task graph through a session at `target`, checking the value.
fn round_trip(target: &str, options: GrpcOptions) -> Result<(), GrpcError> {
    let (g, y) = two_task_graph();
    let s = magpie_grpc::connect_with(target, &g, options)?;
    let out = s.run(&[], &[y], &[])?;
    assert_eq!(f32::try_from(&out[0]).unwrap(), 3.0);
    s.close()
}

/// Server options of a TLS cluster whose tasks hold a certificate of `ca` (and verify
/// each other against it); mutual when `mutual`.
fn tls_server_options(ca: &Ca, mutual: bool, token: Option<&str>) -> GrpcOptions {
    let leaf = ca.leaf("magpie task");
    let mut tls = TlsOptions::new()
        .with_ca_pem(ca.pem())
        .unwrap()
        .with_identity_pem(leaf.cert, leaf.key)
        .unwrap();
    if mutual {
        tls = tls.with_client_ca_pem(ca.pem()).unwrap();
    }
    GrpcOptions {
        tls: Some(tls),
        auth_token: token.map(|t| AuthToken::new(t).unwrap()),
        ..GrpcOptions::default()
    }
}

/// Client options that verify servers against `ca`, with `token`.
fn tls_client_options(ca: &Ca, token: Option<&str>) -> GrpcOptions {
    GrpcOptions {
        tls: Some(TlsOptions::new().with_ca_pem(ca.pem()).unwrap()),
        auth_token: token.map(|t| AuthToken::new(t).unwrap()),
        ..GrpcOptions::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A raw channel to `server`: TLS with `tls` (the CA, and a client certificate if any).
async fn channel(server: &GrpcServer, tls: Option<ClientTlsConfig>) -> Result<Channel, String> {
    let ep = match tls {
        Some(t) => Endpoint::from_shared(format!("https://{}", server.local_addr()))
            .unwrap()
            .tls_config(t)
            .unwrap(),
        None => Endpoint::from_shared(format!("http://{}", server.local_addr())).unwrap(),
    };
    ep.connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// Every kind of worker-service call (unary and streaming) on `channel`, presenting
/// `token`; their results.
async fn worker_calls(
    channel: Channel,
    task: &str,
    token: Option<&str>,
) -> Vec<Result<(), Status>> {
    let mut c = WorkerServiceClient::new(channel);
    let t = task.to_string();
    let (g, _) = two_task_graph();
    let mut out = Vec::new();
    out.push(
        c.list_devices(with_token(
            proto::ListDevicesRequest { task: t.clone() },
            token,
        ))
        .await
        .map(drop),
    );
    out.push(
        c.register_partition(with_token(
            proto::RegisterPartitionRequest {
                task: t.clone(),
                session: "intruder".into(),
                graph: Some(graph_to_wire(&g.to_graph_def()).unwrap()),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(drop),
    );
    out.push(
        c.abort_step(with_token(
            proto::AbortStepRequest {
                task: t.clone(),
                step_id: vec![5u8; 16].into(),
                session: "anyone".into(),
                reason: "a rogue reason".into(),
                reason_code: 0,
            },
            token,
        ))
        .await
        .map(drop),
    );
    out.push(
        c.release_session(with_token(
            proto::ReleaseSessionRequest {
                task: t.clone(),
                session: "anyone".into(),
            },
            token,
        ))
        .await
        .map(drop),
    );
    let chunk = proto::SendTensorChunk {
        task: t.clone(),
        step_id: vec![77u8; 16].into(),
        session: "anyone".into(),
        edge: "stuffed".into(),
        dtype: proto::DataType::F32 as i32,
        dims: vec![],
        total_bytes: 4,
        content: vec![0u8; 4].into(),
        source: String::new(),
    };
    out.push(
        c.send_tensor(with_token(tokio_stream::iter(vec![chunk]), token))
            .await
            .map(drop),
    );
    out
}

/// Every master-service call a stranger could make, presenting `token`.
async fn master_calls(channel: Channel, token: Option<&str>) -> Vec<Result<(), Status>> {
    let mut c = MasterServiceClient::new(channel);
    let (g, _) = two_task_graph();
    let mut out = Vec::new();
    out.push(
        c.create_session(with_token(
            proto::CreateSessionRequest {
                graph: Some(graph_to_wire(&g.to_graph_def()).unwrap()),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(drop),
    );
    out.push(
        c.run_step(with_token(
            proto::RunStepRequest {
                session_handle: "/job:m/task:0/remote/1".into(),
                fetches: vec!["y:0".into()],
                ..Default::default()
            },
            token,
        ))
        .await
        .map(drop),
    );
    out.push(
        c.reset(with_token(
            proto::ResetRequest {
                container: String::new(),
            },
            token,
        ))
        .await
        .map(drop),
    );
    out.push(
        c.list_devices(with_token(proto::ListClusterDevicesRequest {}, token))
            .await
            .map(drop),
    );
    out.push(
        c.close_session(with_token(
            proto::CloseSessionRequest {
                session_handle: "/job:m/task:0/remote/1".into(),
            },
            token,
        ))
        .await
        .map(drop),
    );
    out
}

fn assert_unauthenticated(results: &[Result<(), Status>], what: &str) {
    assert!(!results.is_empty());
    for (i, r) in results.iter().enumerate() {
        match r {
            Err(s) if s.code() == Code::Unauthenticated => {
                assert!(!s.message().contains(TOKEN), "{what} #{i}: {}", s.message());
            }
            other => panic!("{what} call #{i}: expected UNAUTHENTICATED, got {other:?}"),
        }
    }
}

#[test]
fn tls_carries_a_step_from_client_to_master_to_worker() {
    let ca = Ca::new("magpie test cluster CA");
    let (_, m, w) = cluster(&tls_server_options(&ca, false, None));
    assert!(m.serves_tls() && w.serves_tls());
    assert!(m.target().starts_with("grpcs://"), "{}", m.target());
    round_trip(&m.target(), tls_client_options(&ca, None)).unwrap();
    // The worker speaks only TLS: the master reached it (and it the master) over TLS.
    let rt = runtime();
    let plain = rt.block_on(async {
        let c = channel(&w, None).await?;
        WorkerServiceClient::new(c)
            .list_devices(proto::ListDevicesRequest {
                task: "/job:w/task:0".into(),
            })
            .await
            .map_err(|s| format!("{s:?}"))
    });
    assert!(plain.is_err(), "a plaintext call reached a TLS worker");
    // The cluster keeps serving.
    round_trip(&m.target(), tls_client_options(&ca, None)).unwrap();
    m.stop(Duration::from_secs(1));
    w.stop(Duration::from_secs(1));
}

#[test]
fn a_plaintext_client_or_a_client_that_trusts_another_ca_fails_clearly() {
    let ca = Ca::new("magpie test cluster CA");
    let (_, m, w) = cluster(&tls_server_options(&ca, false, None));
    let plain = m.target().replacen("grpcs://", "grpc://", 1);
    match round_trip(&plain, GrpcOptions::default()) {
        Err(GrpcError::Status { code, message, .. }) => {
            // tonic says UNAVAILABLE, INTERNAL (an HTTP/2 protocol error) or UNKNOWN (a
            // broken pipe), depending on when the server's TLS alert arrives; the message
            // says what to do.
            assert!(
                matches!(code, Code::Unavailable | Code::Internal | Code::Unknown),
                "{code:?}: {message}"
            );
            assert!(message.contains("grpcs://"), "{message}");
        }
        other => panic!("a plaintext client against a TLS server: {other:?}"),
    }
    // A client that trusts another CA refuses the server's certificate.
    let other = Ca::new("someone else's CA");
    match round_trip(&m.target(), tls_client_options(&other, None)) {
        Err(GrpcError::Status { code, message, .. }) => {
            assert_eq!(code, Code::Unavailable, "{message}");
            assert!(message.to_lowercase().contains("certificate"), "{message}");
        }
        other => panic!("a client trusting another CA: {other:?}"),
    }
    // grpcs:// without a CA, and grpc:// with TLS options, are refused before dialling.
    let e = round_trip(&m.target(), GrpcOptions::default()).unwrap_err();
    assert!(
        matches!(&e, GrpcError::Target { detail, .. } if detail.contains("CA")),
        "{e}"
    );
    let e = round_trip(&plain, tls_client_options(&ca, None)).unwrap_err();
    assert!(
        matches!(&e, GrpcError::Target { detail, .. } if detail.contains("grpcs://")),
        "{e}"
    );
    round_trip(&m.target(), tls_client_options(&ca, None)).unwrap();
    m.stop(Duration::from_secs(1));
    w.stop(Duration::from_secs(1));
}

#[test]
fn a_missing_or_wrong_token_is_unauthenticated_on_both_services() {
    let options = GrpcOptions {
        auth_token: Some(AuthToken::new(TOKEN).unwrap()),
        ..GrpcOptions::default()
    };
    let (_, m, w) = cluster(&options);
    let rt = runtime();
    for token in [None, Some("wrong-token-but-long-enough-0123"), Some("")] {
        let what = format!("token {token:?}");
        let (master, worker_m, worker_w) = rt.block_on(async {
            (
                master_calls(channel(&m, None).await.unwrap(), token).await,
                worker_calls(channel(&m, None).await.unwrap(), "/job:m/task:0", token).await,
                worker_calls(channel(&w, None).await.unwrap(), "/job:w/task:0", token).await,
            )
        });
        assert_unauthenticated(&master, &format!("MasterService, {what}"));
        assert_unauthenticated(&worker_m, &format!("WorkerService of m, {what}"));
        assert_unauthenticated(&worker_w, &format!("WorkerService of w, {what}"));
    }
    assert_eq!(m.num_remote_sessions(), 0);
    // Nothing got through: no tensor was stuffed into the worker's rendezvous.
    assert_eq!(w.core().worker().stats().pending_rendezvous, 0);
    // The client's side: a session without the token is refused, naming the code.
    match round_trip(&m.target(), GrpcOptions::default()) {
        Err(GrpcError::Status { code, message, .. }) => {
            assert_eq!(code, Code::Unauthenticated, "{message}");
            assert!(message.contains("token"), "{message}");
        }
        other => panic!("a session without the token: {other:?}"),
    }
    // The right token works, and the tasks present it to each other.
    round_trip(&m.target(), options.clone()).unwrap();
    let ok =
        rt.block_on(async { master_calls(channel(&m, None).await.unwrap(), Some(TOKEN)).await });
    assert!(ok[0].is_ok(), "{:?}", ok[0]);
    assert_eq!(ok[1].as_ref().unwrap_err().code(), Code::NotFound);
    m.stop(Duration::from_secs(1));
    w.stop(Duration::from_secs(1));
}

#[test]
fn under_mutual_tls_worker_calls_need_a_certificate_the_cluster_ca_signed() {
    let ca = Ca::new("magpie test cluster CA");
    let (_, m, w) = cluster(&tls_server_options(&ca, true, Some(TOKEN)));
    // Clients of the master service need no certificate: CA + token run a two-task step
    // (the tasks present their certificates and the token to each other).
    round_trip(&m.target(), tls_client_options(&ca, Some(TOKEN))).unwrap();
    let rt = runtime();
    let trust = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem()));

    // No certificate: the worker service refuses, even with the token.
    let calls = rt.block_on(async {
        worker_calls(
            channel(&w, Some(trust())).await.unwrap(),
            "/job:w/task:0",
            Some(TOKEN),
        )
        .await
    });
    assert_unauthenticated(&calls, "WorkerService without a client certificate");
    assert!(calls.iter().all(|r| r
        .as_ref()
        .unwrap_err()
        .message()
        .contains("client certificate")));

    // A certificate another CA signed: the handshake refuses it.
    let rogue = Ca::new("rogue CA").leaf("intruder");
    let refused = rt.block_on(async {
        let tls = trust().identity(Identity::from_pem(rogue.cert, rogue.key));
        match channel(&w, Some(tls)).await {
            Err(e) => Err(e),
            Ok(c) => WorkerServiceClient::new(c)
                .list_devices(with_token(
                    proto::ListDevicesRequest {
                        task: "/job:w/task:0".into(),
                    },
                    Some(TOKEN),
                ))
                .await
                .map(drop)
                .map_err(|s| format!("{s:?}")),
        }
    });
    assert!(
        refused.is_err(),
        "a rogue certificate got a worker call through"
    );

    // A certificate the cluster CA signed, with the token: served.
    let peer = ca.leaf("a peer");
    let served = rt.block_on(async {
        let tls = trust().identity(Identity::from_pem(peer.cert, peer.key));
        let c = channel(&w, Some(tls)).await.unwrap();
        WorkerServiceClient::new(c)
            .list_devices(with_token(
                proto::ListDevicesRequest {
                    task: "/job:w/task:0".into(),
                },
                Some(TOKEN),
            ))
            .await
    });
    assert!(served.is_ok(), "{served:?}");
    round_trip(&m.target(), tls_client_options(&ca, Some(TOKEN))).unwrap();
    m.stop(Duration::from_secs(1));
    w.stop(Duration::from_secs(1));
}

#[test]
fn guessed_handles_and_handles_of_a_previous_server_process_are_not_found() {
    let (spec, m, w) = cluster(&GrpcOptions::default());
    let (g, y) = two_task_graph();
    let victim = magpie_grpc::connect(&m.target(), &g).unwrap();
    let handle = victim.handle().to_string();
    let random = handle.strip_prefix("/job:m/task:0/remote/").unwrap();
    assert_eq!(random.len(), 32, "{handle}");
    assert!(random.bytes().all(|b| b.is_ascii_hexdigit()), "{handle}");
    // The handle is a capability: a session's `Debug` (logs, panics) shows a prefix only.
    let shown = format!("{victim:?}");
    assert!(!shown.contains(random), "{shown}");
    assert!(shown.contains(&random[..8]), "{shown}");
    // Probing the old sequential pattern finds nothing.
    let rt = runtime();
    let probes = rt.block_on(async {
        let mut c = MasterServiceClient::new(channel(&m, None).await.unwrap());
        let mut codes = Vec::new();
        for n in 0..64 {
            let r = c
                .run_step(proto::RunStepRequest {
                    session_handle: format!("/job:m/task:0/remote/{n}"),
                    fetches: vec!["y:0".into()],
                    ..Default::default()
                })
                .await;
            codes.push(r.map(drop).map_err(|s| s.code()));
        }
        codes
    });
    assert!(
        probes.iter().all(|r| *r == Err(Code::NotFound)),
        "{probes:?}"
    );
    assert_eq!(
        f32::try_from(&victim.run(&[], &[y], &[]).unwrap()[0]).unwrap(),
        3.0
    );

    // The master restarts on the same port: the old handle means nothing there.
    m.stop(Duration::from_secs(1));
    drop(m);
    let m = GrpcServer::start(&spec, "m", 0, &host_task_options("m")).unwrap();
    let newcomer = magpie_grpc::connect(&m.target(), &g).unwrap();
    assert_ne!(newcomer.handle(), handle);
    // (The victim's first request may fail on its connection to the old process.)
    let stale = (0..50).map(|_| victim.run(&[], &[y], &[])).find(|r| {
        !matches!(r, Err(GrpcError::Status { code, .. })
                if matches!(code, Code::Unknown | Code::Unavailable))
    });
    match stale {
        Some(Err(GrpcError::Status { code, message, .. })) => {
            assert_eq!(code, Code::NotFound, "{message}")
        }
        other => panic!("a stale handle after a restart: {other:?}"),
    }
    match victim.close() {
        Err(GrpcError::Status { code, .. }) => assert_eq!(code, Code::NotFound),
        other => panic!("closing a stale handle after a restart: {other:?}"),
    }
    // The newcomer's session is untouched.
    assert_eq!(
        f32::try_from(&newcomer.run(&[], &[y], &[]).unwrap()[0]).unwrap(),
        3.0
    );
    assert_eq!(m.num_remote_sessions(), 1);
    drop(newcomer);
    drop(victim);
    m.stop(Duration::from_secs(1));
    w.stop(Duration::from_secs(1));
}

#[test]
fn bad_tls_files_and_token_files_are_named_in_the_error() {
    let dir = pki::TempDir::new("sec-files");
    let ca = Ca::new("magpie test cluster CA");
    let leaf = ca.leaf("task");
    let cert = dir.write("task.pem", &leaf.cert);
    let key = dir.write("task.key", &leaf.key);
    let junk = dir.write("junk.pem", "not a certificate\n");
    let missing = dir.path().join("missing.pem");

    let e = TlsOptions::new()
        .with_ca_file(&missing)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.pem"), "{e}");
    let e = TlsOptions::new()
        .with_ca_file(&junk)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("junk.pem") && e.contains("no CERTIFICATE"),
        "{e}"
    );
    // A certificate where the key should be.
    let e = TlsOptions::new()
        .with_identity_files(&cert, &cert)
        .unwrap_err()
        .to_string();
    assert!(e.contains("task.pem") && e.contains("PRIVATE KEY"), "{e}");
    TlsOptions::new().with_identity_files(&cert, &key).unwrap();
    // A key that does not go with the certificate fails the server's start, naming it.
    let other = ca.leaf("other");
    let mismatched = TlsOptions::new()
        .with_identity_pem(leaf.cert.clone(), other.key)
        .unwrap();
    register_test_ops();
    let spec = ClusterSpec::builder()
        .job("m", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    let e = GrpcServer::start_with(
        &spec,
        "m",
        0,
        &host_task_options("m"),
        GrpcOptions {
            tls: Some(mismatched),
            ..GrpcOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, GrpcError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("/job:m/task:0"), "{e}");

    let short = dir.write("short.token", "tiny\n");
    let e = AuthToken::from_file(&short).unwrap_err().to_string();
    assert!(e.contains("short.token") && !e.contains("tiny"), "{e}");
    let e = AuthToken::from_file(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.pem"), "{e}");
    let good = dir.write("good.token", &format!("{TOKEN}\n"));
    let t = AuthToken::from_file(&good).unwrap();
    assert!(!format!("{t:?}").contains(TOKEN));
    let options = GrpcOptions {
        auth_token: Some(t),
        tls: Some(TlsOptions::new().with_identity_files(&cert, &key).unwrap()),
        ..GrpcOptions::default()
    };
    let debug = format!("{options:?}");
    assert!(
        !debug.contains(TOKEN) && !debug.contains("PRIVATE"),
        "{debug}"
    );
}
