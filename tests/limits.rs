//! Limits and hung peers against real `magpie server` processes: a worker frozen with
//! SIGSTOP fails the step with `DEADLINE_EXCEEDED` naming it, reported by the master's
//! step deadline (not the client's backstop); the session, graph, extension, message,
//! streamed-tensor and tensor-stream idle limits set by flags are `RESOURCE_EXHAUSTED`
//! naming the flag; `--session-idle-timeout` closes an idle session. Servers bind free
//! 127.0.0.1 ports and are stopped (and continued) at the end.

mod common;

use std::time::{Duration, Instant};

use common::{free_address, ServerProcess};
use magpie::cluster::{task_server_options, Spec};
use magpie::grpc::{tonic, GrpcError, GrpcServer};
use magpie::transport::TaskName;
use magpie::{Graph, Tensor};

fn scalar(t: &Tensor) -> f32 {
    f32::try_from(t).unwrap()
}

/// `magpie server` for `/job:<job>/task:<task>` of `spec` (written to `<name>.json` in a
/// temporary folder) with `extra` flags.
fn spawn(spec: &Spec, name: &str, job: &str, task: u32, extra: &[&str]) -> ServerProcess {
    let dir = std::env::temp_dir().join(format!("magpie-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, spec.to_json()).unwrap();
    let task = task.to_string();
    let mut args = vec![
        "--cluster",
        file.to_str().unwrap(),
        "--job",
        job,
        "--task",
        &task,
    ];
    args.extend_from_slice(extra);
    ServerProcess::server(args)
}

#[test]
fn a_frozen_worker_fails_the_step_with_deadline_exceeded_naming_it() {
    let spec = Spec::builder()
        .job("worker", [free_address(), free_address()])
        .build()
        .unwrap();
    let w0 = GrpcServer::start(
        &spec,
        "worker",
        0,
        &task_server_options(&TaskName::new("worker", 0)),
    )
    .unwrap();
    let w1 = spawn(&spec, "frozen", "worker", 1, &[]);
    let g = Graph::new();
    let on = |task: &str| g.with_device(task).unwrap();
    let x = on("/job:worker/task:0").constant(2.0f32).unwrap();
    let y = on("/job:worker/task:1").neg(x).unwrap();
    let z = on("/job:worker/task:0").with_name("z").add(y, y).unwrap();
    let session = magpie::grpc::connect(&w0.target(), &g).unwrap();
    assert_eq!(scalar(&session.run(&[], &[z], &[]).unwrap()[0]), -4.0);

    w1.signal(libc::SIGSTOP);
    let deadline = Duration::from_secs(2);
    let started = Instant::now();
    let e = session
        .run_named(&[], &["z:0"], &[], Some(deadline))
        .unwrap_err();
    let took = started.elapsed();
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
    // A generous bound: the master answers at the deadline plus its grace (500 ms).
    assert!(took < Duration::from_secs(10), "{e} after {took:?}");

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
    let spec = Spec::builder()
        .job("worker", [free_address()])
        .build()
        .unwrap();
    let server = spawn(
        &spec,
        "limits",
        "worker",
        0,
        &[
            "--max-sessions",
            "2",
            "--max-graph-nodes",
            "40",
            "--max-extension-nodes",
            "10",
        ],
    );
    let target = format!(
        "grpc://{}",
        spec.address(&TaskName::new("worker", 0)).unwrap()
    );
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
    let spec = Spec::builder()
        .job("worker", [free_address()])
        .build()
        .unwrap();
    // 64 KiB: a 16,384-float tensor (64 KiB of data) does not fit with its framing.
    let server = spawn(
        &spec,
        "message",
        "worker",
        0,
        &["--max-message-bytes", "65536"],
    );
    let target = format!(
        "grpc://{}",
        spec.address(&TaskName::new("worker", 0)).unwrap()
    );

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
    let spec = Spec::builder()
        .job("worker", [free_address(), free_address()])
        .build()
        .unwrap();
    let w0 = spawn(&spec, "tensor0", "worker", 0, &[]);
    let w1 = spawn(
        &spec,
        "tensor1",
        "worker",
        1,
        &["--max-tensor-bytes", "1024"],
    );
    let target = format!(
        "grpc://{}",
        spec.address(&TaskName::new("worker", 0)).unwrap()
    );
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
    let spec = Spec::builder()
        .job("worker", [free_address()])
        .build()
        .unwrap();
    let server = spawn(&spec, "idle", "worker", 0, &["--session-idle-timeout", "1"]);
    let target = format!(
        "grpc://{}",
        spec.address(&TaskName::new("worker", 0)).unwrap()
    );
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
    use magpie::grpc::proto;
    use magpie::grpc::proto::worker_service_client::WorkerServiceClient;

    let spec = Spec::builder()
        .job("worker", [free_address()])
        .build()
        .unwrap();
    let server = spawn(
        &spec,
        "stream",
        "worker",
        0,
        &["--tensor-stream-idle-timeout-ms", "200"],
    );
    let address = spec.address(&TaskName::new("worker", 0)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(async {
        let mut client = WorkerServiceClient::connect(format!("http://{address}"))
            .await
            .unwrap();
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
