//! Limits and hung peers against real `magpie server` processes: a worker frozen with
//! SIGSTOP fails the step with `DEADLINE_EXCEEDED` naming it, reported by the master's
//! step deadline (not the client's backstop); the session, graph and extension limits
//! set by flags are `RESOURCE_EXHAUSTED` naming the flag. Servers bind free 127.0.0.1
//! ports and are stopped (and continued) at the end.

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
