//! Faults on real sockets (127.0.0.1, free ports): a client that goes away mid-step
//! leaves no step behind on the master or the workers, and a request whose protobuf
//! bytes are garbage gets a clear gRPC error; in both cases the server keeps serving.

mod common;

use std::time::Duration;

use common::{free_port, register_test_ops};
use magpie_core::cluster::ClusterSpec;
use magpie_core::graph::{Graph, Output};
use magpie_core::tensor::Tensor;
use magpie_core::testkit::host_task_options;
use magpie_grpc::conv::{graph_to_wire, tensor_from_wire, tensor_to_wire};
use magpie_grpc::proto::master_service_client::MasterServiceClient;
use magpie_grpc::{proto, GrpcServer};
use magpie_scheduler::test_support::eventually_ok;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::Bytes;
use tonic::Code;

/// A master (`m`) and a worker (`w`), each on a free port.
fn cluster() -> (GrpcServer, GrpcServer) {
    register_test_ops();
    let spec = ClusterSpec::builder()
        .job("m", [format!("127.0.0.1:{}", free_port())])
        .job("w", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    let m = GrpcServer::start(&spec, "m", 0, &host_task_options("m")).unwrap();
    let w = GrpcServer::start(&spec, "w", 0, &host_task_options("w")).unwrap();
    (m, w)
}

fn on(g: &Graph, device: &str) -> Graph {
    g.with_device(device).unwrap()
}

fn op(g: &Graph, name: &str, op: &str, inputs: &[Output]) -> Output {
    g.with_name(name)
        .op(op)
        .inputs(inputs.iter().copied())
        .build_output()
        .unwrap()
}

/// Steps, partition steps and rendezvous entries still held by the two servers.
fn leftovers(m: &GrpcServer, w: &GrpcServer) -> (usize, usize, usize, usize) {
    let (ms, ws) = (m.core().worker().stats(), w.core().worker().stats());
    (
        m.core().master().running_steps(),
        ms.running_steps + ws.running_steps,
        ms.pending_rendezvous + ws.pending_rendezvous,
        w.core().master().running_steps(),
    )
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_client_that_goes_away_mid_step_leaves_no_step_behind() {
    let (m, w) = cluster();
    let g = Graph::new();
    let x = op(&on(&g, "/job:m/task:0"), "x", "TestThree", &[]);
    let local = op(&on(&g, "/job:m/task:0"), "local", "TestPass", &[x]);
    // One partition on the master's own task: the step runs on the master's thread.
    op(&on(&g, "/job:m/task:0"), "hang_here", "TestHang", &[]);
    // Two partitions: the master's task waits in a `_Recv` for the worker's output.
    let hang_there = op(&on(&g, "/job:w/task:0"), "hang_there", "TestHang", &[]);
    op(&on(&g, "/job:m/task:0"), "after", "TestPass", &[hang_there]);
    let remote = op(&on(&g, "/job:w/task:0"), "remote", "TestPass", &[x]);
    let def = graph_to_wire(&g.to_graph_def()).unwrap();

    for (fetch, partitions) in [("hang_here:0", 1), ("after:0", 2)] {
        let rt = client_runtime();
        let handle = rt.block_on(async {
            let mut c = MasterServiceClient::connect(format!("http://{}", m.local_addr()))
                .await
                .unwrap();
            let handle = c
                .create_session(proto::CreateSessionRequest {
                    graph: Some(def.clone()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .session_handle;
            let req = proto::RunStepRequest {
                session_handle: handle.clone(),
                fetches: vec![fetch.into()],
                timeout_ms: 600_000,
                ..Default::default()
            };
            tokio::spawn(async move { c.run_step(req).await });
            handle
        });
        eventually_ok(Duration::from_secs(30), || {
            let (master, parts, _, _) = leftovers(&m, &w);
            match master == 1 && parts == partitions {
                true => Ok(()),
                false => Err(format!(
                    "{fetch}: the step never started on its {partitions} task(s)"
                )),
            }
        });
        // The client goes away: its runtime, connection and pending request are dropped.
        rt.shutdown_background();
        eventually_ok(Duration::from_secs(30), || match leftovers(&m, &w) {
            (0, 0, 0, 0) => Ok(()),
            left => Err(format!(
                "{fetch}: steps left behind (master steps, partition steps, rendezvous \
                 entries, steps on the worker's master): {left:?}"
            )),
        });
        assert!(handle.starts_with("/job:m/task:0/"), "{handle}");
    }

    // Both servers keep serving, on one task and across both.
    let s = magpie_grpc::connect(&format!("grpc://{}", m.local_addr()), &g).unwrap();
    let out = s.run(&[], &[local, remote], &[]).unwrap();
    assert_eq!(out, vec![Tensor::scalar(3.0f32), Tensor::scalar(3.0f32)]);
    drop(s);
    m.stop(Duration::from_secs(2));
    w.stop(Duration::from_secs(2));
}

/// Sends and receives raw bytes: the request body is whatever the test hands it.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

#[test]
fn a_request_with_garbage_protobuf_gets_a_clear_error_and_the_server_keeps_serving() {
    let (m, w) = cluster();
    let rt = client_runtime();
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://{}", m.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap()
    });
    // Each body gets a valid 5-byte gRPC prefix (added by tonic) around bytes that are
    // not the message the method takes.
    let cases: [(&str, &[u8], &str); 4] = [
        // Field 1 (a string) of length 5 whose bytes are not UTF-8.
        (
            "/magpie.v1.MasterService/RunStep",
            &[0x0a, 0x05, 0xff, 0xfe, 0xfd, 0xfc, 0xfb],
            "UTF-8",
        ),
        // A length that runs past the end of the message.
        (
            "/magpie.v1.MasterService/CreateSession",
            &[0x0a, 0x7f, 0x01],
            "buffer underflow",
        ),
        // Wire type 7 does not exist.
        (
            "/magpie.v1.WorkerService/RunPartition",
            &[0x0f],
            "wire type",
        ),
        // Bytes that are no message at all.
        (
            "/magpie.v1.WorkerService/ListDevices",
            &[0xff; 16],
            "decode",
        ),
    ];
    for (path, body, detail) in cases {
        let e = rt
            .block_on(async {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.unwrap();
                grpc.unary(
                    tonic::Request::new(Bytes::from_static(body)),
                    PathAndQuery::from_static(path),
                    RawCodec,
                )
                .await
            })
            .unwrap_err();
        // Malformed bytes from the caller: INVALID_ARGUMENT, as the services' docs say
        // (tonic-prost alone would answer INTERNAL).
        assert_eq!(e.code(), Code::InvalidArgument, "{path}: {e:?}");
        assert!(
            e.message().contains("failed to decode Protobuf message")
                && e.message().contains(detail),
            "{path}: {}",
            e.message()
        );
    }

    // Still serving, on the same connection.
    let g = Graph::new();
    let x = op(&g, "x", "TestThree", &[]);
    op(&g, "y", "TestPass", &[x]);
    let out = rt.block_on(async {
        let mut c = MasterServiceClient::new(channel.clone());
        let handle = c
            .create_session(proto::CreateSessionRequest {
                graph: Some(graph_to_wire(&g.to_graph_def()).unwrap()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .session_handle;
        c.run_step(proto::RunStepRequest {
            session_handle: handle,
            // Fed: the feed replaces `x`.
            feeds: vec![proto::NamedTensor {
                name: "x:0".into(),
                tensor: Some(tensor_to_wire(&Tensor::scalar(5.0f32)).unwrap()),
            }],
            fetches: vec!["y:0".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    });
    assert_eq!(
        tensor_from_wire(&out.tensors[0]).unwrap(),
        Tensor::scalar(5.0f32)
    );
    drop(channel);
    drop(rt);
    m.stop(Duration::from_secs(2));
    w.stop(Duration::from_secs(2));
}

#[test]
fn a_session_whose_client_vanished_is_closed_once_idle_and_a_used_one_is_kept() {
    register_test_ops();
    let spec = ClusterSpec::builder()
        .job("m", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    let grpc = magpie_grpc::GrpcOptions {
        session_idle_timeout: Some(Duration::from_millis(300)),
        ..magpie_grpc::GrpcOptions::default()
    };
    let m = GrpcServer::start_with(&spec, "m", 0, &host_task_options("m"), grpc).unwrap();
    let g = Graph::new();
    op(&on(&g, "/job:m/task:0"), "x", "TestThree", &[]);
    let def = graph_to_wire(&g.to_graph_def()).unwrap();
    let rt = client_runtime();
    let mut c = rt
        .block_on(MasterServiceClient::connect(format!(
            "http://{}",
            m.local_addr()
        )))
        .unwrap();
    let mut open = || {
        rt.block_on(c.create_session(proto::CreateSessionRequest {
            graph: Some(def.clone()),
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .session_handle
    };
    // Two sessions; the client of the first never comes back (and never closes it).
    let (_vanished, kept) = (open(), open());
    assert_eq!(m.num_remote_sessions(), 2);
    let mut c2 = rt
        .block_on(MasterServiceClient::connect(format!(
            "http://{}",
            m.local_addr()
        )))
        .unwrap();
    let mut step = |handle: &str| {
        rt.block_on(c2.run_step(proto::RunStepRequest {
            session_handle: handle.to_string(),
            fetches: vec!["x:0".into()],
            ..Default::default()
        }))
    };
    // The kept session is used more often than the timeout; the other one expires.
    eventually_ok(Duration::from_secs(10), || {
        step(&kept).map_err(|e| format!("the session in use was closed: {e}"))?;
        std::thread::sleep(Duration::from_millis(50));
        match m.num_remote_sessions() {
            1 => Ok(()),
            n => Err(format!("{n} sessions open, expected the idle one closed")),
        }
    });
    let out = step(&kept).unwrap().into_inner();
    assert_eq!(
        tensor_from_wire(&out.tensors[0]).unwrap(),
        Tensor::scalar(3.0f32)
    );
    m.stop(Duration::from_secs(1));
}

#[test]
fn an_async_step_runs_and_dropping_it_leaves_no_step_behind() {
    let (m, w) = cluster();
    let g = Graph::new();
    let x = op(&on(&g, "/job:m/task:0"), "x", "TestThree", &[]);
    let remote = op(&on(&g, "/job:w/task:0"), "remote", "TestPass", &[x]);
    let hang_here = op(&on(&g, "/job:m/task:0"), "hang_here", "TestHang", &[]);
    let hang_there = op(&on(&g, "/job:w/task:0"), "hang_there", "TestHang", &[]);
    let after = op(&on(&g, "/job:m/task:0"), "after", "TestPass", &[hang_there]);
    let s = magpie_grpc::connect(&format!("grpc://{}", m.local_addr()), &g).unwrap();
    // Polled by a plain executor, with no tokio runtime around.
    let out = futures::executor::block_on(s.run_async(&[], &[x, remote], &[])).unwrap();
    assert_eq!(out, vec![Tensor::scalar(3.0f32), Tensor::scalar(3.0f32)]);

    for (fetch, partitions) in [(hang_here, 1), (after, 2)] {
        let fetches = [fetch];
        let mut step = Box::pin(s.run_async(&[], &fetches, &[]));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        eventually_ok(Duration::from_secs(30), || {
            assert!(
                std::future::Future::poll(step.as_mut(), &mut cx).is_pending(),
                "a hanging step ended"
            );
            match leftovers(&m, &w) {
                (1, p, _, _) if p == partitions => Ok(()),
                left => Err(format!(
                    "the step never started on {partitions} task(s): {left:?}"
                )),
            }
        });
        // The client drops the step: its request is reset, and the master aborts the
        // step on every task.
        drop(step);
        eventually_ok(Duration::from_secs(30), || match leftovers(&m, &w) {
            (0, 0, 0, 0) => Ok(()),
            left => Err(format!("steps left behind after the drop: {left:?}")),
        });
    }
    // The session and both servers keep serving, async and blocking.
    let out = futures::executor::block_on(s.run_async(&[], &[remote], &[])).unwrap();
    assert_eq!(out, vec![Tensor::scalar(3.0f32)]);
    assert_eq!(
        s.run(&[], &[remote], &[]).unwrap(),
        vec![Tensor::scalar(3.0f32)]
    );
    drop(s);
    m.stop(Duration::from_secs(2));
    w.stop(Duration::from_secs(2));
}
