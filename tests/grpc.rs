//! The distributed runtime over gRPC on loopback sockets: the seed's three-task cluster,
//! remote sessions, a 64 MiB tensor between workers, stop/restart on one port, dead peers,
//! malformed requests, and a worker in a separate process killed mid-step (variables on the
//! surviving ps keep their values).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::ServerProcess;
use magpie::cluster::{loopback_cluster, task_server_options, GrpcCluster, Spec};
use magpie::distributed::ServerOptions;
use magpie::grpc::{proto, tonic, GrpcError, GrpcOptions, GrpcServer, GrpcTransport};
use magpie::transport::{RendezvousKey, TaskName, Transport};
use magpie::{DType, Graph, Tensor};

fn scalar(t: &Tensor) -> f32 {
    f32::try_from(t).unwrap()
}

fn on(g: &Graph, spec: &str) -> Graph {
    g.with_device(spec).unwrap()
}

#[test]
fn the_seeds_cluster_runs_a_graph_spread_over_three_tasks() {
    let spec = loopback_cluster().unwrap();
    let c = GrpcCluster::start(&spec).unwrap();
    let g = Graph::new();
    let w = on(&g, "/job:ps/task:0")
        .with_name("w")
        .constant(2.0f32)
        .unwrap();
    let five = on(&g, "/job:worker/task:0").constant(5.0f32).unwrap();
    let x = on(&g, "/job:worker/task:0")
        .with_name("x")
        .mul(w, five)
        .unwrap();
    let y = on(&g, "/job:worker/task:1")
        .with_name("y")
        .add(x, w)
        .unwrap();
    let s = magpie::grpc::connect(&c.target("worker", 0).unwrap(), &g).unwrap();
    assert_eq!(s.devices()[0], "/job:worker/replica:0/task:0/device:CPU:0");
    for _ in 0..3 {
        let out = s.run(&[], &[y, w, x, y], &[]).unwrap();
        let v: Vec<f32> = out.iter().map(scalar).collect();
        assert_eq!(v, [12.0, 2.0, 10.0, 12.0]);
    }
    let out = s.run_named(&[], &["y:0"], &[], None).unwrap();
    let placed: std::collections::HashMap<_, _> = out.placement.iter().cloned().collect();
    // The master sends a signature's placement once; later steps share the first's.
    let again = s.run_named(&[], &["y:0"], &[], None).unwrap();
    assert!(std::sync::Arc::ptr_eq(&again.placement, &out.placement));
    assert_eq!(scalar(&again.tensors[0]), 12.0);
    assert_eq!(placed["w"], "/job:ps/replica:0/task:0/device:CPU:0");
    assert_eq!(placed["x"], "/job:worker/replica:0/task:0/device:CPU:0");
    assert_eq!(placed["y"], "/job:worker/replica:0/task:1/device:CPU:0");
    // The graph grows: new nodes are sent before the next step.
    let z = on(&g, "/job:ps/task:0").with_name("z").neg(y).unwrap();
    assert_eq!(scalar(&s.run(&[], &[z], &[]).unwrap()[0]), -12.0);
    drop(s);
    c.stop(Duration::from_secs(2));
}

/// Runs `steps` steps of a graph in which the ps sends four small tensors to each worker
/// (and worker 0 one to worker 1) on a cluster with `grpc`; returns the fetched values and
/// what each server received (requests, tensors), ps then workers.
fn small_tensors_to_each_worker(
    grpc: GrpcOptions,
    steps: usize,
) -> (Vec<Vec<f32>>, Vec<magpie::grpc::TensorTraffic>) {
    let spec = loopback_cluster().unwrap();
    let c = GrpcCluster::start_with(&spec, grpc).unwrap();
    let g = Graph::new();
    let ps = on(&g, "/job:ps/task:0");
    let params: Vec<_> = (1..=4)
        .map(|i| {
            ps.constant(Tensor::from_vec([3], vec![i as f32, 0.5, -1.0]).unwrap())
                .unwrap()
        })
        .collect();
    let w0 = on(&g, "/job:worker/task:0");
    let w1 = on(&g, "/job:worker/task:1");
    let mut a = w0.mul(params[0], params[1]).unwrap();
    a = w0.add(a, w0.mul(params[2], params[3]).unwrap()).unwrap();
    let mut b = w1.add(params[0], params[1]).unwrap();
    b = w1.sub(b, w1.add(params[2], params[3]).unwrap()).unwrap();
    let ab = w1.add(a, b).unwrap();
    let s = magpie::grpc::connect(&c.target("worker", 0).unwrap(), &g).unwrap();
    let mut values = Vec::new();
    for _ in 0..steps {
        let out = s.run(&[], &[a, b, ab], &[]).unwrap();
        values = out
            .iter()
            .map(|t| t.as_slice::<f32>().unwrap().to_vec())
            .collect();
    }
    drop(s);
    let traffic = [("ps", 0), ("worker", 0), ("worker", 1)]
        .iter()
        .map(|(j, i)| c.server(j, *i).unwrap().tensor_traffic())
        .collect();
    c.stop(Duration::from_secs(2));
    (values, traffic)
}

#[test]
fn small_tensors_for_one_peer_share_requests_and_arrive_unchanged() {
    const STEPS: usize = 20;
    let streamed = GrpcOptions {
        inline_tensor_bytes: 0,
        ..GrpcOptions::default()
    };
    let (v_streamed, t_streamed) = small_tensors_to_each_worker(streamed, STEPS);
    let (v_inline, t_inline) = small_tensors_to_each_worker(GrpcOptions::default(), STEPS);
    // a = p1*p2 + p3*p4, b = (p1+p2) - (p3+p4), with p_i = [i, 0.5, -1].
    let a = vec![14.0, 0.5, 2.0];
    let b = vec![-4.0, 0.0, 0.0];
    let ab = vec![10.0, 0.5, 2.0];
    assert_eq!(v_streamed, [a.clone(), b.clone(), ab.clone()]);
    assert_eq!(v_inline, [a, b, ab]);
    // Worker 0 is the master: the ps's tensors for it come over the wire, its own
    // tensor for worker 1 too; the ps receives none.
    let n = STEPS as u64;
    let tensors: Vec<u64> = t_streamed.iter().map(|t| t.tensors).collect();
    assert_eq!(tensors, [0, 4 * n, 5 * n]);
    // Streamed: one request per tensor.
    for t in &t_streamed {
        assert_eq!(t.requests, t.tensors, "{t_streamed:?}");
    }
    // Batched: the same tensors, in at most as many requests (those ready together for
    // one peer share one; transport/grpc/tests/send_tensors.rs shows it exactly).
    for (t, s) in t_inline.iter().zip(&t_streamed) {
        assert_eq!(t.tensors, s.tensors, "{t_inline:?}");
        assert!(t.requests <= t.tensors, "{t_inline:?}");
        assert!(t.tensors == 0 || t.requests >= n, "{t_inline:?}");
    }
}

#[test]
fn a_remote_session_runs_unpinned_ops_on_the_masters_device_with_feeds() {
    let spec = loopback_cluster().unwrap();
    let c = GrpcCluster::start(&spec).unwrap();
    let g = Graph::new();
    let a = g.with_name("a").placeholder(DType::F32, None).unwrap();
    let b = g
        .with_name("b")
        .add(a, g.constant(2.0f32).unwrap())
        .unwrap();
    let cc = g
        .with_name("c")
        .mul(b, g.constant(3.0f32).unwrap())
        .unwrap();
    let s = magpie::grpc::connect(&c.target("worker", 1).unwrap(), &g).unwrap();
    let out = s
        .run_named(&[("a:0", Tensor::scalar(1.0f32))], &["c:0"], &[], None)
        .unwrap();
    assert_eq!(scalar(&out.tensors[0]), 9.0);
    assert!(out
        .placement
        .iter()
        .all(|(_, d)| d == "/job:worker/replica:0/task:1/device:CPU:0"));
    assert_eq!(
        scalar(&s.run(&[(a, Tensor::scalar(2.0f32))], &[cc], &[]).unwrap()[0]),
        12.0
    );
    drop(s);
    c.stop(Duration::from_secs(2));
}

#[test]
fn a_64_mib_tensor_moves_from_worker_to_worker() {
    let spec = loopback_cluster().unwrap();
    let c = GrpcCluster::start(&spec).unwrap();
    let n = 16 << 20; // 16 Mi f32 = 64 MiB
                      // Through a step: made on worker 0, reduced on worker 1.
    let g = Graph::new();
    let one = on(&g, "/job:worker/task:0").constant(1.0f32).unwrap();
    let big = on(&g, "/job:worker/task:0").fill(&[n], one).unwrap();
    let m = on(&g, "/job:worker/task:1").mean(big, None, false).unwrap();
    let s = magpie::grpc::connect(&c.target("worker", 0).unwrap(), &g).unwrap();
    assert_eq!(scalar(&s.run(&[], &[m], &[]).unwrap()[0]), 1.0);
    drop(s);
    // Through the transport: arrives intact.
    let data: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let t = Tensor::from_vec([n], data).unwrap();
    let transport = GrpcTransport::new(spec.clone(), GrpcOptions::default()).unwrap();
    let key = RendezvousKey {
        step_id: magpie::StepId::from(7u64 << 40),
        edge: "big".into(),
    };
    let w1 = TaskName::new("worker", 1);
    // Tensors are accepted only for a session with a partition on the task.
    magpie::core::testkit::register_receiver(&transport, &w1, "big").unwrap();
    futures::executor::block_on(transport.send(&w1, "big", key.clone(), t.clone())).unwrap();
    let server = c.server("worker", 1).unwrap();
    let got = futures::executor::block_on(server.core().worker().rendezvous().recv(key)).unwrap();
    assert_eq!(got.dims(), t.dims());
    assert!(got.to_vec::<f32>().unwrap() == t.to_vec::<f32>().unwrap());
    c.stop(Duration::from_secs(2));
}

#[test]
fn a_server_starts_stops_and_restarts_on_the_same_port() {
    let spec = loopback_cluster().unwrap();
    let single = Spec::builder()
        .job(
            "worker",
            [spec.address(&TaskName::new("worker", 0)).unwrap()],
        )
        .build()
        .unwrap();
    let task = TaskName::new("worker", 0);
    let g = Graph::new();
    let x = g.constant(3.0f32).unwrap();
    let y = g.neg(x).unwrap();
    for round in 0..3 {
        let server = GrpcServer::start(&single, "worker", 0, &task_server_options(&task))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let s = magpie::grpc::connect(&server.target(), &g).unwrap();
        assert_eq!(scalar(&s.run(&[], &[y], &[]).unwrap()[0]), -3.0);
        drop(s);
        assert_eq!(server.stop(Duration::from_secs(1)), 0);
        server.join();
        assert!(server.join_timeout(Duration::ZERO));
        // Stopped: nothing answers there any more.
        assert!(magpie::grpc::connect(&server.target(), &g).is_err());
    }
}

#[test]
fn a_dead_peer_fails_session_creation_within_the_deadline_naming_the_task() {
    let spec = loopback_cluster().unwrap();
    // Only worker 0 runs: ps 0 and worker 1 have nothing listening. The master waits
    // for them half a second (servers may start in any order), then names them.
    let w0 = GrpcServer::start(
        &spec,
        "worker",
        0,
        &ServerOptions {
            peer_wait: Duration::from_millis(500),
            ..task_server_options(&TaskName::new("worker", 0))
        },
    )
    .unwrap();
    let g = Graph::new();
    g.constant(1.0f32).unwrap();
    // The master's Unavailable naming the missing tasks (below) shows it gave up on them
    // after its peer wait; a client that hung would fail with its own deadline instead.
    let e = magpie::grpc::connect(&w0.target(), &g).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("/job:ps/task:0") || text.contains("/job:worker/task:1"),
        "{text}"
    );
    assert!(
        matches!(
            e,
            GrpcError::Status {
                code: tonic::Code::Unavailable,
                ..
            }
        ),
        "{e}"
    );
    w0.stop(Duration::from_secs(1));
}

fn raw_client(
    target: &str,
) -> (
    tokio::runtime::Runtime,
    proto::master_service_client::MasterServiceClient<tonic::transport::Channel>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(proto::master_service_client::MasterServiceClient::connect(
            target.replace("grpc://", "http://"),
        ))
        .unwrap();
    (rt, client)
}

#[test]
fn malformed_requests_get_clear_errors_and_the_server_keeps_serving() {
    let spec = loopback_cluster().unwrap();
    let c = GrpcCluster::start(&spec).unwrap();
    let target = c.target("worker", 0).unwrap();
    let (rt, mut client) = raw_client(&target);

    // Garbage bytes on the socket.
    let address = target.trim_start_matches("grpc://");
    let mut sock = std::net::TcpStream::connect(address).unwrap();
    let _ = sock.write_all(b"\x00\x01garbage that is not HTTP/2 at all\r\n\r\n");
    drop(sock);

    // An unknown session handle.
    let e = rt
        .block_on(client.run_step(proto::RunStepRequest {
            session_handle: "no-such-session".into(),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(
        e.message().contains("unknown session handle"),
        "{}",
        e.message()
    );

    // A graph that fails validation (an input that does not exist).
    let bad_graph = proto::GraphDef {
        node: vec![proto::NodeDef {
            name: "n".into(),
            op: "Neg".into(),
            input: vec!["missing".into()],
            ..Default::default()
        }],
    };
    let e = rt
        .block_on(client.create_session(proto::CreateSessionRequest {
            graph: Some(bad_graph),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("invalid graph") && e.message().contains("missing"),
        "{}",
        e.message()
    );

    // A feed whose byte length does not match its shape.
    let g = Graph::new();
    let a = g.with_name("a").placeholder(DType::F32, None).unwrap();
    g.with_name("b").neg(a).unwrap();
    let def = magpie::grpc::conv::graph_to_wire(&g.to_graph_def()).unwrap();
    let handle = rt
        .block_on(client.create_session(proto::CreateSessionRequest {
            graph: Some(def),
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .session_handle;
    let e = rt
        .block_on(client.run_step(proto::RunStepRequest {
            session_handle: handle.clone(),
            feeds: vec![proto::NamedTensor {
                name: "a:0".into(),
                tensor: Some(proto::TensorProto {
                    dtype: proto::DataType::F32 as i32,
                    dims: vec![4],
                    content: vec![0u8; 7].into(),
                }),
            }],
            fetches: vec!["b:0".into()],
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("needs 16 bytes, got 7"),
        "{}",
        e.message()
    );

    // An unknown fetch name.
    let e = rt
        .block_on(client.run_step(proto::RunStepRequest {
            session_handle: handle.clone(),
            fetches: vec!["nope:0".into()],
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("nope"), "{}", e.message());

    // Still serving.
    let out = rt
        .block_on(client.run_step(proto::RunStepRequest {
            session_handle: handle,
            feeds: vec![proto::NamedTensor {
                name: "a".into(),
                tensor: Some(magpie::grpc::conv::tensor_to_wire(&Tensor::scalar(4.0f32)).unwrap()),
            }],
            fetches: vec!["b:0".into()],
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    let t = magpie::grpc::conv::tensor_from_wire(&out.tensors[0]).unwrap();
    assert_eq!(scalar(&t), -4.0);
    drop(client);
    drop(rt);
    c.stop(Duration::from_secs(2));
}

#[test]
fn a_worker_process_killed_mid_step_fails_the_step_naming_it_and_recovers_after_restart_with_ps_variables_kept(
) {
    let spec = loopback_cluster().unwrap();
    let dir = std::env::temp_dir().join(format!("magpie-grpc-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.json");
    std::fs::write(&file, spec.to_json()).unwrap();

    let ps = GrpcServer::start(
        &spec,
        "ps",
        0,
        &task_server_options(&TaskName::new("ps", 0)),
    )
    .unwrap();
    let w0 = GrpcServer::start(
        &spec,
        "worker",
        0,
        &task_server_options(&TaskName::new("worker", 0)),
    )
    .unwrap();
    let worker_1 = || {
        ServerProcess::server([
            "--cluster",
            file.to_str().unwrap(),
            "--job",
            "worker",
            "--task",
            "1",
        ])
    };
    let child = worker_1();

    // Worker 0 grinds through a chain of matmuls (seconds of work even at ~400 GFLOP/s,
    // so the step is still running when worker 1 dies; the abort ends it early); worker 1
    // waits for the result.
    let g = Graph::new();
    let w0d = "/job:worker/task:0";
    let k = on(&g, w0d).constant(0.001f32).unwrap();
    let w = on(&g, w0d).fill(&[512, 512], k).unwrap();
    let mut m = w;
    for _ in 0..5000 {
        m = on(&g, w0d).matmul(m, w).unwrap();
    }
    on(&g, "/job:worker/task:1")
        .with_name("slow")
        .mean(m, None, false)
        .unwrap();
    let p = on(&g, "/job:ps/task:0").constant(2.0f32).unwrap();
    let quick = on(&g, "/job:worker/task:1").neg(p).unwrap();
    let local = on(&g, "/job:ps/task:0")
        .with_name("local")
        .add(p, p)
        .unwrap();
    // A variable on the ps, updated with a delta computed on worker 1.
    let v = on(&g, "/job:ps/task:0")
        .variable("kept", DType::F32)
        .unwrap();
    let init = v.assign(&g, g.constant(10.0f32).unwrap()).unwrap();
    let one = on(&g, "/job:worker/task:1").constant(1.0f32).unwrap();
    let inc = v.assign_add(&g, one).unwrap();
    let read = v.read(&g).unwrap();
    let session = Arc::new(magpie::grpc::connect(&w0.target(), &g).unwrap());
    assert_eq!(scalar(&session.run(&[], &[quick], &[]).unwrap()[0]), -2.0);
    session.run(&[], &[init], &[]).unwrap();
    session.run(&[], &[inc], &[]).unwrap();
    assert_eq!(scalar(&session.run(&[], &[read], &[]).unwrap()[0]), 11.0);

    let s2 = Arc::clone(&session);
    // The step's deadline is far: a step that failed by it, not by the worker's death,
    // fails the test by its code below.
    let step = std::thread::spawn(move || {
        s2.run_named(&[], &["slow:0"], &[], Some(Duration::from_secs(60)))
    });
    std::thread::sleep(Duration::from_millis(300));
    child.kill();
    let r = step.join().unwrap();
    let e = r.expect_err("the step must fail once worker 1 is gone");
    assert!(
        !matches!(
            e,
            GrpcError::Status {
                code: tonic::Code::DeadlineExceeded,
                ..
            }
        ),
        "the step ended at its deadline, not when worker 1 died: {e}"
    );
    assert!(e.to_string().contains("/job:worker/task:1"), "{e}");

    // The master keeps serving steps that do not need worker 1; the ps kept its variable.
    assert_eq!(scalar(&session.run(&[], &[local], &[]).unwrap()[0]), 4.0);
    assert_eq!(scalar(&session.run(&[], &[read], &[]).unwrap()[0]), 11.0);

    // Worker 1 comes back: steps on it succeed again.
    let child = worker_1();
    let v = common::retry_until_ok("steps on the restarted worker", || {
        session.run(&[], &[quick], &[])
    });
    assert_eq!(scalar(&v[0]), -2.0);
    // The variable survived the worker's death and restart, and the restarted worker
    // updates it again.
    assert_eq!(scalar(&session.run(&[], &[read], &[]).unwrap()[0]), 11.0);
    session.run(&[], &[inc], &[]).unwrap();
    assert_eq!(scalar(&session.run(&[], &[read], &[]).unwrap()[0]), 12.0);
    drop(session);
    child.stop();
    w0.stop(Duration::from_secs(2));
    ps.stop(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&dir);
}
