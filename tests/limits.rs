//! Limits and hung peers against real `magpie server` processes.
//!
//! - A worker frozen with SIGSTOP (every thread of it stopped before the step starts)
//!   fails the step with `DEADLINE_EXCEEDED` naming it, reported by the master's step
//!   deadline (not the client's backstop); with short
//!   keep-alive settings the master finds the frozen peer itself, long before the step's
//!   deadline, and fails the step naming it.
//! - The session, graph, extension, message, streamed-tensor, tensor-stream idle,
//!   rendezvous, CPU and GPU memory and step memory limits set by flags are
//!   `RESOURCE_EXHAUSTED` naming the flag; tensors for a session with no partition on the task, or for another session's
//!   step, are refused; `--session-idle-timeout` closes an idle session;
//!   `--max-streams-per-connection` is the HTTP/2 setting the server advertises, and
//!   calls past it on one connection wait, then run; a connection past
//!   `--max-connections` is closed unserved, and `--incoming-request-bytes` below
//!   `--max-message-bytes` is refused at start.
//!
//! Servers bind free 127.0.0.1 ports and are stopped at the end; a frozen one is continued
//! and killed when its `ServerProcess` drops, even when a test fails. Cluster files and
//! logs live in scratch folders removed when their test ends.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{free_address, ServerProcess};
use magpie::cluster::{task_server_options, Spec};
use magpie::graph::{AttrValue, GraphDef, NodeDef};
use magpie::grpc::proto::worker_service_client::WorkerServiceClient;
use magpie::grpc::tonic::transport::Channel;
use magpie::grpc::{proto, tonic, GrpcError, GrpcServer};
use magpie::transport::TaskName;
use magpie::{DType, Graph, Tensor};

fn scalar(t: &Tensor) -> f32 {
    f32::try_from(t).unwrap()
}

/// A cluster spec of `n` worker tasks on free 127.0.0.1 ports.
fn workers(n: usize) -> Spec {
    Spec::builder()
        .job("worker", (0..n).map(|_| free_address()))
        .build()
        .unwrap()
}

/// `host:port` of `/job:worker/task:<task>`.
fn address(spec: &Spec, task: u32) -> String {
    spec.address(&TaskName::new("worker", task))
        .unwrap()
        .to_string()
}

/// `grpc://host:port` of `/job:worker/task:<task>`.
fn target(spec: &Spec, task: u32) -> String {
    format!("grpc://{}", address(spec, task))
}

/// A folder of this test process's own for cluster files and logs, removed with
/// everything in it when dropped (even when a test fails).
struct Scratch(PathBuf);

impl Scratch {
    /// `<tmp>/magpie-limits-<pid>-<name>`, made empty.
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("magpie-limits-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `magpie server` arguments for `/job:worker/task:<task>` of `spec` (written to
/// `<name>.json` in `dir`), then `extra`.
fn server_args(dir: &Scratch, spec: &Spec, name: &str, task: u32, extra: &[&str]) -> Vec<String> {
    let file = dir.path().join(format!("{name}.json"));
    std::fs::write(&file, spec.to_json()).unwrap();
    let mut args = vec![
        "--cluster".to_string(),
        file.to_str().unwrap().to_string(),
        "--job".to_string(),
        "worker".to_string(),
        "--task".to_string(),
        task.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `magpie server` for `/job:worker/task:<task>` of `spec` with `extra` flags. The server
/// has read its cluster file once it says it serves: the file goes at once.
fn spawn(spec: &Spec, name: &str, task: u32, extra: &[&str]) -> ServerProcess {
    let dir = Scratch::new(name);
    ServerProcess::server(server_args(&dir, spec, name, task, extra))
}

/// One `magpie server` process serving a one-task cluster with `extra` flags, and its spec.
fn one_server(name: &str, extra: &[&str]) -> (Spec, ServerProcess) {
    let spec = workers(1);
    let server = spawn(&spec, name, 0, extra);
    (spec, server)
}

/// A runtime for the tests that call the worker service themselves.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A raw worker-service client of `/job:worker/task:<task>` on a connection of its own, as
/// a cluster member (or, on an open server, anyone) calls it.
async fn raw_client(spec: &Spec, task: u32) -> WorkerServiceClient<Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", address(spec, task)))
            .unwrap()
            .connect()
            .await
            .unwrap();
    WorkerServiceClient::new(channel)
}

/// The task name `/job:worker/task:0` (the raw tests' only task).
const TASK0: &str = "/job:worker/task:0";

/// Registers, under `session`, a partition on task 0 that receives an f32 tensor on edge
/// `x` and fetches it; its handle.
async fn register_receiver(c: &mut WorkerServiceClient<Channel>, session: &str) -> String {
    let devices = c
        .list_devices(proto::ListDevicesRequest { task: TASK0.into() })
        .await
        .unwrap()
        .into_inner()
        .devices;
    let recv = NodeDef {
        name: "r".into(),
        op: "_Recv".into(),
        inputs: vec![],
        device: devices[0].name.clone(),
        attrs: vec![
            ("edge".into(), AttrValue::Str("x".into())),
            ("dtype".into(), AttrValue::DType(DType::F32)),
        ],
    };
    let graph = magpie::grpc::conv::graph_to_wire(&GraphDef { nodes: vec![recv] }).unwrap();
    c.register_partition(proto::RegisterPartitionRequest {
        task: TASK0.into(),
        session: session.into(),
        graph: Some(graph),
        fetches: vec!["r:0".into()],
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .handle
}

/// A step id of our own choosing (16 bytes).
fn step(n: u8) -> Vec<u8> {
    vec![n; 16]
}

/// Runs step `step` of the partition `handle` (a deadline of two minutes, far beyond
/// anything these tests wait for); the tensor it received.
async fn run_receiver(
    mut c: WorkerServiceClient<Channel>,
    session: &str,
    handle: &str,
    step: Vec<u8>,
) -> Result<Vec<f32>, tonic::Status> {
    let r = c
        .run_partition(proto::RunPartitionRequest {
            task: TASK0.into(),
            handle: handle.into(),
            step_id: step.into(),
            session: session.into(),
            timeout_ms: 120_000,
            ..Default::default()
        })
        .await?
        .into_inner();
    let t = magpie::grpc::conv::tensor_from_wire(&r.fetches[0]).unwrap();
    Ok(t.to_vec::<f32>().unwrap())
}

/// Streams `n` f32s (in one chunk) to task 0 for `edge` of `step`, naming `session`.
async fn send(
    c: &mut WorkerServiceClient<Channel>,
    session: &str,
    step: &[u8],
    edge: &str,
    n: usize,
) -> Result<(), tonic::Status> {
    let chunk = proto::SendTensorChunk {
        task: TASK0.into(),
        step_id: step.to_vec().into(),
        session: session.into(),
        edge: edge.into(),
        dtype: proto::DataType::F32 as i32,
        dims: vec![n as u64],
        total_bytes: (n * 4) as u64,
        content: vec![0u8; n * 4].into(),
        source: String::new(),
    };
    c.send_tensor(futures::stream::iter([chunk]))
        .await
        .map(drop)
}

/// Waits until step `step` of session "mine" runs on task 0, holding the stream of its
/// `RunPartition`. Tells by tensors of session "other" (registered on the task): the task
/// takes them while the step is not bound to "mine" (and drops them when "mine" starts it),
/// and refuses them with `PERMISSION_DENIED` once "mine" runs it.
async fn wait_started(c: &mut WorkerServiceClient<Channel>, step: &[u8]) {
    for probe in 0..3000 {
        match send(c, "other", step, &format!("probe{probe}"), 1).await {
            Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(s) if s.code() == tonic::Code::PermissionDenied => return,
            Err(s) => panic!("probing step {step:?}: {s:?}"),
        }
    }
    panic!("step {step:?} never started");
}

/// Asserts `r` is `code` with a message that contains every one of `words`.
fn status_is(r: Result<impl std::fmt::Debug, tonic::Status>, code: tonic::Code, words: &[&str]) {
    match r {
        Err(s) => {
            assert_eq!(s.code(), code, "{}", s.message());
            for w in words {
                assert!(s.message().contains(w), "{w:?} not in {:?}", s.message());
            }
        }
        Ok(v) => panic!("expected {code:?} naming {words:?}, got {v:?}"),
    }
}

#[test]
fn a_frozen_worker_fails_the_step_with_deadline_exceeded_naming_it() {
    let spec = workers(2);
    let w0 = GrpcServer::start(
        &spec,
        "worker",
        0,
        &task_server_options(&TaskName::new("worker", 0)),
    )
    .unwrap();
    let w1 = spawn(&spec, "frozen", 1, &[]);
    let g = Graph::new();
    let on = |task: &str| g.with_device(task).unwrap();
    let x = on("/job:worker/task:0").constant(2.0f32).unwrap();
    let y = on("/job:worker/task:1").neg(x).unwrap();
    let z = on("/job:worker/task:0").with_name("z").add(y, y).unwrap();
    let session = magpie::grpc::connect(&w0.target(), &g).unwrap();
    assert_eq!(scalar(&session.run(&[], &[z], &[]).unwrap()[0]), -4.0);

    w1.freeze();
    let deadline = Duration::from_secs(2);
    let e = session
        .run_named(&[], &["z:0"], &[], Some(deadline))
        .unwrap_err();
    match &e {
        GrpcError::Status { code, message, .. } => {
            assert_eq!(*code, tonic::Code::DeadlineExceeded, "{message}");
            // The master names the task that did not answer (the client's own backstop
            // would name none).
            assert!(message.contains("/job:worker/task:1"), "{message}");
            assert!(message.contains("did not answer"), "{message}");
        }
        other => panic!("a frozen worker: {other:?}"),
    }

    // Thawed, the worker serves again.
    w1.signal(libc::SIGCONT);
    let v = common::retry_until_ok("steps on the thawed worker", || session.run(&[], &[z], &[]));
    assert_eq!(scalar(&v[0]), -4.0);
    drop(session);
    w1.stop();
    w0.stop(Duration::from_secs(2));
}

fn resource_exhausted(r: Result<impl std::fmt::Debug, GrpcError>, flag: &str) {
    match r {
        Err(GrpcError::Status { code, message, .. }) => {
            assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
            assert!(message.contains(flag), "{message}");
        }
        other => panic!("expected RESOURCE_EXHAUSTED naming {flag}, got {other:?}"),
    }
}

#[test]
fn session_graph_and_extension_limits_are_resource_exhausted_naming_their_flags() {
    let (spec, server) = one_server(
        "limits",
        &[
            "--max-sessions",
            "2",
            "--max-graph-nodes",
            "40",
            "--max-extension-nodes",
            "10",
        ],
    );
    let target = target(&spec, 0);
    let g = Graph::new();
    let mut x = g.constant(1.0f32).unwrap();
    let a = magpie::grpc::connect(&target, &g).unwrap();
    let b = magpie::grpc::connect(&target, &g).unwrap();
    resource_exhausted(magpie::grpc::connect(&target, &g), "--max-sessions");
    // Closing one makes room.
    a.close().unwrap();
    let c = magpie::grpc::connect(&target, &g).unwrap();

    // An extension of 11 nodes, then a graph past 40 nodes.
    for _ in 0..11 {
        x = g.neg(x).unwrap();
    }
    resource_exhausted(b.run(&[], &[x], &[]), "--max-extension-nodes");
    let big = Graph::new();
    let mut y = big.constant(1.0f32).unwrap();
    for _ in 0..40 {
        y = big.neg(y).unwrap();
    }
    drop(c);
    resource_exhausted(magpie::grpc::connect(&target, &big), "--max-graph-nodes");
    drop(b);
    server.stop();
}

/// A vector of `n` f32s.
fn floats(n: usize) -> Tensor {
    Tensor::from_vec([n], vec![0.5f32; n]).unwrap()
}

#[test]
fn a_message_past_max_message_bytes_is_resource_exhausted_naming_the_flag() {
    // 64 KiB: a 16,384-float tensor (64 KiB of data) does not fit with its framing.
    let (spec, server) = one_server("message", &["--max-message-bytes", "65536"]);
    let target = target(&spec, 0);

    // A graph whose constant alone passes the limit: CreateSession is refused by tonic's
    // decoder, reported as the limit.
    let big = Graph::new();
    big.constant(floats(20_000)).unwrap();
    resource_exhausted(magpie::grpc::connect(&target, &big), "--max-message-bytes");

    // A feed past it.
    let g = Graph::new();
    let x = g.placeholder(magpie::DType::F32, None).unwrap();
    let y = g.neg(x).unwrap();
    let session = magpie::grpc::connect(&target, &g).unwrap();
    resource_exhausted(
        session.run(&[(x, floats(20_000))], &[y], &[]),
        "--max-message-bytes",
    );

    // A feed within it whose fetches are past it: the response is refused by the server,
    // naming the limit (and the session still works).
    resource_exhausted(
        session.run(&[(x, floats(10_000))], &[y, y], &[]),
        "--max-message-bytes",
    );
    let v = session.run(&[(x, floats(4))], &[y], &[]).unwrap();
    assert_eq!(v[0].as_slice::<f32>().unwrap(), &[-0.5f32; 4]);
    drop(session);
    server.stop();
}

#[test]
fn a_tensor_past_max_tensor_bytes_is_resource_exhausted_naming_the_flag() {
    let spec = workers(2);
    let w0 = spawn(&spec, "tensor0", 0, &[]);
    let w1 = spawn(&spec, "tensor1", 1, &["--max-tensor-bytes", "1024"]);
    let target = target(&spec, 0);
    let g = Graph::new();
    let on = |task: &str| g.with_device(task).unwrap();
    let x = on("/job:worker/task:0")
        .placeholder(magpie::DType::F32, None)
        .unwrap();
    let y = on("/job:worker/task:1").neg(x).unwrap();
    let session = magpie::grpc::connect(&target, &g).unwrap();
    // 256 floats (1 KiB) cross to task 1; 1,024 floats do not.
    let v = session.run(&[(x, floats(256))], &[y], &[]).unwrap();
    assert_eq!(v[0].as_slice::<f32>().unwrap().len(), 256);
    resource_exhausted(
        session.run(&[(x, floats(1024))], &[y], &[]),
        "--max-tensor-bytes",
    );
    drop(session);
    w1.stop();
    w0.stop();
}

#[test]
fn a_session_idle_past_session_idle_timeout_is_closed() {
    let (spec, server) = one_server("idle", &["--session-idle-timeout", "1"]);
    let target = target(&spec, 0);
    let g = Graph::new();
    let x = g.constant(2.0f32).unwrap();
    let y = g.neg(x).unwrap();
    let session = magpie::grpc::connect(&target, &g).unwrap();
    assert_eq!(scalar(&session.run(&[], &[y], &[]).unwrap()[0]), -2.0);
    // Left alone for the timeout, the session is closed by the server: its handle is then
    // unknown. Each probe that finds it open uses it again, so each waits a whole timeout
    // (three, for a slow machine).
    let mut probes = 0;
    let e = loop {
        std::thread::sleep(Duration::from_secs(3));
        match session.run(&[], &[y], &[]) {
            Err(e) => break e,
            Ok(_) => {
                probes += 1;
                assert!(probes < 10, "the idle session was never closed");
            }
        }
    };
    match e {
        GrpcError::Status { code, message, .. } => {
            assert_eq!(code, tonic::Code::NotFound, "{message}");
            assert!(message.contains("unknown session handle"), "{message}");
        }
        other => panic!("an idle session: {other:?}"),
    }
    drop(session);
    server.stop();
}

#[test]
fn a_tensor_stream_idle_past_its_timeout_is_resource_exhausted_naming_the_flag() {
    use futures::StreamExt;

    let (spec, server) = one_server("stream", &["--tensor-stream-idle-timeout-ms", "200"]);
    let e = runtime().block_on(async {
        let mut client = raw_client(&spec, 0).await;
        // The task takes tensors only for sessions with a partition on it.
        register_receiver(&mut client, "stalling").await;
        // The first of two chunks of an 8-byte tensor, then nothing: the stream stays
        // open and stalls.
        let first = proto::SendTensorChunk {
            task: "/job:worker/task:0".into(),
            step_id: vec![7u8; 16].into(),
            session: "stalling".into(),
            edge: "stalled".into(),
            dtype: proto::DataType::F32 as i32,
            dims: vec![2],
            total_bytes: 8,
            content: vec![0u8; 4].into(),
            source: String::new(),
        };
        let stalled = futures::stream::iter([first]).chain(futures::stream::pending());
        // A generous backstop of our own, so that a server that never answers fails the
        // test instead of hanging it.
        tokio::time::timeout(Duration::from_secs(60), client.send_tensor(stalled))
            .await
            .expect("the server answers a stalled stream")
            .unwrap_err()
    });
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{}", e.message());
    assert!(
        e.message().contains("--tensor-stream-idle-timeout-ms"),
        "{}",
        e.message()
    );
    server.stop();
}

#[test]
fn rendezvous_bytes_past_their_flags_are_resource_exhausted_and_strangers_tensors_refused() {
    // An entry of 1,024 floats on edge "a" counts 4,096 bytes, its edge name and 128
    // bytes of overhead: 4,225. Two fit a step (8,450 <= 10,000), three do not; three fit
    // the task (12,675 <= 16,000), four do not.
    let (spec, server) = one_server(
        "rendezvous",
        &[
            "--rendezvous-step-bytes",
            "10000",
            "--rendezvous-task-bytes",
            "16000",
        ],
    );
    let rt = runtime();
    rt.block_on(async {
        let mut c = raw_client(&spec, 0).await;
        // Tensors naming a session with no partition on the task are refused.
        status_is(
            send(&mut c, "nobody", &step(1), "a", 4).await,
            tonic::Code::NotFound,
            &["nobody"],
        );

        let handle = register_receiver(&mut c, "mine").await;
        register_receiver(&mut c, "other").await;
        // Step 1 of "mine" runs, waiting for its tensor "x" (it holds a stream of its own
        // connection until then).
        let running = tokio::spawn({
            let c = raw_client(&spec, 0).await;
            let handle = handle.clone();
            async move { run_receiver(c, "mine", &handle, step(1)).await }
        });
        // Tensors the step does not receive (yet) are held for it, up to the step's limit.
        send(&mut c, "mine", &step(1), "a", 1024).await.unwrap();
        send(&mut c, "mine", &step(1), "b", 1024).await.unwrap();
        status_is(
            send(&mut c, "mine", &step(1), "c", 1024).await,
            tonic::Code::ResourceExhausted,
            &[
                "pending rendezvous bytes per step",
                "--rendezvous-step-bytes",
            ],
        );
        // Another step, not started here, may hold its share until the task's limit.
        send(&mut c, "mine", &step(2), "a", 1024).await.unwrap();
        status_is(
            send(&mut c, "mine", &step(3), "a", 1024).await,
            tonic::Code::ResourceExhausted,
            &[
                "pending rendezvous bytes per task",
                "--rendezvous-task-bytes",
            ],
        );
        // Another session cannot deliver to a step bound to "mine".
        status_is(
            send(&mut c, "other", &step(2), "b", 4).await,
            tonic::Code::PermissionDenied,
            &["does not belong to session"],
        );

        // The refusals left the running step alone: it gets its tensor and ends, which
        // frees what it held, so the task takes another step's tensor again.
        send(&mut c, "mine", &step(1), "x", 3).await.unwrap();
        let got = running.await.unwrap().unwrap();
        assert_eq!(got, vec![0.0f32; 3]);
        send(&mut c, "mine", &step(3), "a", 1024).await.unwrap();
    });
    drop(rt);
    server.stop();
}

#[test]
fn tensors_for_steps_not_started_past_their_bounds_are_dropped_naming_the_flags() {
    // Bytes: 6,000 for steps not started (one entry of 1,024 floats, 4,225 bytes, fits;
    // two do not), and kept for ten minutes, longer than the test.
    let (spec, bytes) = one_server(
        "unclaimed-bytes",
        &[
            "--rendezvous-unclaimed-bytes",
            "6000",
            "--rendezvous-unclaimed-ttl-ms",
            "600000",
        ],
    );
    // Time: kept for no time at all, so the next call into the task drops them.
    let (spec_ttl, ttl) = one_server("unclaimed-ttl", &["--rendezvous-unclaimed-ttl-ms", "0"]);
    let rt = runtime();
    rt.block_on(async {
        let mut c = raw_client(&spec, 0).await;
        let handle = register_receiver(&mut c, "mine").await;
        // One tensor past the bound is refused, and its step can no longer run here.
        status_is(
            send(&mut c, "mine", &step(1), "x", 2048).await,
            tonic::Code::ResourceExhausted,
            &["--rendezvous-unclaimed-bytes"],
        );
        status_is(
            run_receiver(c.clone(), "mine", &handle, step(1)).await,
            tonic::Code::ResourceExhausted,
            &["--rendezvous-unclaimed-bytes"],
        );
        // A newer step's tensor makes the oldest step's tensors go.
        send(&mut c, "mine", &step(2), "x", 1024).await.unwrap();
        send(&mut c, "mine", &step(3), "x", 1024).await.unwrap();
        status_is(
            run_receiver(c.clone(), "mine", &handle, step(2)).await,
            tonic::Code::ResourceExhausted,
            &["--rendezvous-unclaimed-bytes"],
        );
        let got = run_receiver(c.clone(), "mine", &handle, step(3))
            .await
            .unwrap();
        assert_eq!(got.len(), 1024);

        let mut c = raw_client(&spec_ttl, 0).await;
        let handle = register_receiver(&mut c, "mine").await;
        send(&mut c, "mine", &step(4), "x", 4).await.unwrap();
        status_is(
            run_receiver(c.clone(), "mine", &handle, step(4)).await,
            tonic::Code::ResourceExhausted,
            &["--rendezvous-unclaimed-ttl-ms"],
        );
    });
    drop(rt);
    ttl.stop();
    bytes.stop();
}

#[test]
fn calls_past_max_streams_per_connection_wait_for_a_stream_and_then_run() {
    let (spec, server) = one_server("streams", &["--max-streams-per-connection", "2"]);
    let rt = runtime();
    rt.block_on(async {
        // The server advertises the limit in its HTTP/2 settings (read before it answers
        // a ping, as frames are handled in order).
        let tcp = tokio::net::TcpStream::connect(address(&spec, 0))
            .await
            .unwrap();
        let (_requests, mut h2) = h2::client::handshake(tcp).await.unwrap();
        let mut pings = h2.ping_pong().unwrap();
        tokio::select! {
            pong = pings.ping(h2::Ping::opaque()) => drop(pong.unwrap()),
            end = &mut h2 => panic!("the connection ended before a pong: {end:?}"),
        }
        assert_eq!(h2.max_concurrent_send_streams(), 2);

        let mut other = raw_client(&spec, 0).await;
        let handle = register_receiver(&mut other, "mine").await;
        register_receiver(&mut other, "other").await;
        // One connection: two steps that wait for their tensors hold its two streams.
        let busy = raw_client(&spec, 0).await;
        let mut steps = Vec::new();
        for n in [1u8, 2] {
            let (c, handle) = (busy.clone(), handle.clone());
            steps.push(tokio::spawn(async move {
                run_receiver(c, "mine", &handle, step(n)).await
            }));
            wait_started(&mut other, &step(n)).await;
        }
        // A third call on that connection waits for a stream...
        let mut third = tokio::spawn({
            let mut c = busy.clone();
            async move {
                c.list_devices(proto::ListDevicesRequest { task: TASK0.into() })
                    .await
                    .map(|r| r.into_inner().devices.len())
            }
        });
        // ... while another connection is served at once ...
        let devices = other
            .list_devices(proto::ListDevicesRequest { task: TASK0.into() })
            .await
            .unwrap()
            .into_inner()
            .devices;
        // ... and it is not refused: it is still waiting (a stream for it would have
        // answered within these 500 ms as the other connection's call did).
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut third)
                .await
                .is_err(),
            "the third call on a connection of two streams did not wait"
        );
        // One step ends; the waiting call gets its stream and runs.
        send(&mut other, "mine", &step(1), "x", 1).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(60), third)
            .await
            .expect("the waiting call runs once a stream is free")
            .unwrap()
            .unwrap();
        assert_eq!(first, devices.len());
        send(&mut other, "mine", &step(2), "x", 2).await.unwrap();
        let mut lens = Vec::new();
        for s in steps {
            lens.push(s.await.unwrap().unwrap().len());
        }
        assert_eq!(lens, [1, 2]);
    });
    drop(rt);
    server.stop();
}

#[test]
fn with_short_keep_alives_a_frozen_worker_is_found_before_the_step_deadline() {
    let spec = workers(2);
    let dir = Scratch::new("keepalive");
    let log = dir.path().join("keepalive-master.log");
    let keepalive = [
        "--keepalive-interval-ms",
        "500",
        "--keepalive-timeout-ms",
        "500",
        "--step-timeout-ms",
        "300000",
        "--log-format",
        "json",
    ];
    let w0 = ServerProcess::server_logged(server_args(&dir, &spec, "ka0", 0, &keepalive), &log);
    let w1 = spawn(&spec, "ka1", 1, &keepalive);
    let g = Graph::new();
    let on = |task: &str| g.with_device(task).unwrap();
    let x = on("/job:worker/task:0").constant(2.0f32).unwrap();
    let y = on("/job:worker/task:1").neg(x).unwrap();
    let z = on("/job:worker/task:0").with_name("z").add(y, y).unwrap();
    let session = magpie::grpc::connect(&target(&spec, 0), &g).unwrap();
    assert_eq!(scalar(&session.run(&[], &[z], &[]).unwrap()[0]), -4.0);

    // Frozen mid-cluster, the worker answers nothing, pings included. The step's deadline
    // is five minutes: only keep-alive can end the step before it.
    w1.freeze();
    let deadline = Duration::from_secs(300);
    let e = session
        .run_named(&[], &["z:0"], &[], Some(deadline))
        .unwrap_err();
    match &e {
        GrpcError::Status { code, message, .. } => {
            assert_ne!(*code, tonic::Code::DeadlineExceeded, "{message}");
            assert_eq!(*code, tonic::Code::Unavailable, "{message}");
            assert!(message.contains("/job:worker/task:1"), "{message}");
            // The master's report on another connection: no hint about this client's.
            assert!(!message.contains("grpcs://"), "{message}");
        }
        other => panic!("a frozen worker: {other:?}"),
    }
    // The master logged that it lost the peer.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("peer lost") && l.contains("/job:worker/task:1")),
        "no \"peer lost\" event for task 1 in {logged}"
    );

    // Thawed, the worker serves again.
    w1.signal(libc::SIGCONT);
    let v = common::retry_until_ok("steps on the thawed worker", || session.run(&[], &[z], &[]));
    assert_eq!(scalar(&v[0]), -4.0);
    drop(session);
    w1.stop();
    w0.stop();
}

#[test]
fn a_tensor_past_cpu_memory_limit_is_resource_exhausted_naming_the_flag() {
    let (spec, server) = one_server("memory", &["--cpu-memory-limit", "4096"]);
    let g = Graph::new();
    let one = g.constant(1.0f32).unwrap();
    let small = g.fill(&[1024], one).unwrap(); // 4,096 bytes: fits
    let large = g.fill(&[1025], one).unwrap();
    let session = magpie::grpc::connect(&target(&spec, 0), &g).unwrap();
    let v = session.run(&[], &[small], &[]).unwrap();
    assert_eq!(v[0].as_slice::<f32>().unwrap(), &[1.0f32; 1024]);
    match session.run(&[], &[large], &[]) {
        Err(GrpcError::Status { code, message, .. }) => {
            assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
            for w in ["4100 bytes", "4096", "--cpu-memory-limit", "device:CPU:"] {
                assert!(message.contains(w), "{w:?} not in {message}");
            }
        }
        other => panic!("a tensor past --cpu-memory-limit: {other:?}"),
    }
    // The session still runs what fits.
    assert_eq!(
        session.run(&[], &[small], &[]).unwrap()[0].num_elements(),
        1024
    );
    drop(session);
    server.stop();
}

#[test]
fn a_step_past_step_memory_limit_is_resource_exhausted_naming_the_flag() {
    // Room for two 4 KiB tensors of one step, not three; the CPU's own limit is far away.
    let (spec, server) = one_server("step-memory", &["--step-memory-limit", "10000"]);
    let g = Graph::new();
    let one = g.constant(1.0f32).unwrap();
    let a = g.fill(&[1024], one).unwrap();
    let b = g.fill(&[1024], one).unwrap();
    let c = g.with_name("c").add(a, b).unwrap();
    let session = magpie::grpc::connect(&target(&spec, 0), &g).unwrap();
    let v = session.run(&[], &[a, b], &[]).unwrap();
    assert_eq!(v[1].as_slice::<f32>().unwrap(), &[1.0f32; 1024]);
    // Fetched, `a` and `b` stay alive while `c` asks for 4 KiB more.
    match session.run(&[], &[a, b, c], &[]) {
        Err(GrpcError::Status { code, message, .. }) => {
            assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
            for w in [
                "\"c\"",
                "cannot allocate 4096 bytes",
                "8192 bytes are in use of the step's memory limit of 10000 bytes",
                "--step-memory-limit",
            ] {
                assert!(message.contains(w), "{w:?} not in {message}");
            }
        }
        other => panic!("a step past --step-memory-limit: {other:?}"),
    }
    // The limit is per step: the next step starts from nothing.
    let v = session.run(&[], &[c], &[]).unwrap();
    assert_eq!(v[0].as_slice::<f32>().unwrap(), &[2.0f32; 1024]);
    drop(session);
    server.stop();
}

#[test]
fn a_tensor_past_gpu_memory_limit_is_resource_exhausted_naming_the_flag() {
    // Lavapipe (a Vulkan driver on the CPU) stands in for a GPU.
    let (spec, server) = one_server(
        "gpu-memory",
        &["--emulated-gpus", "--gpu-memory-limit", "8192"],
    );
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let gpu = g.with_device("/job:worker/task:0/device:GPU:0").unwrap();
    let y = gpu.with_name("y").neg(x).unwrap();
    let session = magpie::grpc::connect(&target(&spec, 0), &g).unwrap();
    // Two 4 KiB blocks at once: the input's copy on the GPU and the output.
    let fits = Tensor::from_vec([1000], vec![1.0f32; 1000]).unwrap();
    match session.run(&[(x, fits)], &[y], &[]) {
        Ok(v) => assert_eq!(v[0].as_slice::<f32>().unwrap(), &[-1.0f32; 1000]),
        Err(e) if e.to_string().contains("GPU") && !e.to_string().contains("memory") => {
            eprintln!("SKIPPED: the server has no GPU (no Vulkan driver): {e}");
            server.stop();
            return;
        }
        Err(e) => panic!("a tensor under --gpu-memory-limit: {e}"),
    }
    let past = Tensor::from_vec([3000], vec![1.0f32; 3000]).unwrap();
    match session.run(&[(x, past)], &[y], &[]) {
        Err(GrpcError::Status { code, message, .. }) => {
            assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
            for w in ["12000 bytes", "8192", "--gpu-memory-limit", "device:GPU:0"] {
                assert!(message.contains(w), "{w:?} not in {message}");
            }
        }
        other => panic!("a tensor past --gpu-memory-limit: {other:?}"),
    }
    drop(session);
    server.stop();
}

#[test]
fn connections_past_max_connections_are_closed_at_accept_and_the_flags_are_checked() {
    let (spec, server) = one_server("connections", &["--max-connections", "1"]);
    let rt = runtime();
    rt.block_on(async {
        let list = |mut c: WorkerServiceClient<Channel>| async move {
            c.list_devices(proto::ListDevicesRequest { task: TASK0.into() })
                .await
                .map(|r| r.into_inner().devices.len())
        };
        let held = raw_client(&spec, 0).await;
        assert!(list(held.clone()).await.unwrap() >= 1);
        // The second connection is closed as it is accepted: its call is not served
        // (UNAVAILABLE, UNKNOWN or CANCELLED, by when tonic sees the close).
        let second =
            tonic::transport::Endpoint::from_shared(format!("http://{}", address(&spec, 0)))
                .unwrap()
                .connect()
                .await;
        if let Ok(channel) = second {
            let refused = list(WorkerServiceClient::new(channel)).await.unwrap_err();
            assert!(
                matches!(
                    refused.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ),
                "{refused:?}"
            );
        }
        // The held one is still served.
        assert!(list(held).await.unwrap() >= 1);
    });
    server.stop();

    // A budget of request bytes below the message limit would refuse such messages.
    let spec = workers(1);
    let dir = Scratch::new("incoming-bytes");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_magpie"))
        .arg("server")
        .args(server_args(
            &dir,
            &spec,
            "incoming-bytes",
            0,
            &[
                "--incoming-request-bytes",
                "1000",
                "--max-message-bytes",
                "2000",
            ],
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--incoming-request-bytes") && stderr.contains("--max-message-bytes"),
        "{stderr}"
    );
}
