//! `ClientSession::connect` on every kind of target, and `magpie server`'s device
//! options.

use std::process::Command;
use std::time::Duration;

use magpie::cluster::{loopback_cluster, task_server_options, GrpcCluster};
use magpie::inmem::{InMemNetwork, InMemServer};
use magpie::transport::TaskName;
use magpie::{ClientError, ClientSession, Graph, Tensor};

fn graph() -> (Graph, magpie::Output) {
    let g = Graph::new();
    let a = g.with_name("a").constant(1.0f32).unwrap();
    let b = g
        .with_name("b")
        .add(a, g.with_name("two").constant(2.0f32).unwrap())
        .unwrap();
    let c = g
        .with_name("c")
        .mul(b, g.with_name("three").constant(3.0f32).unwrap())
        .unwrap();
    (g, c)
}

fn value(t: &Tensor) -> f32 {
    f32::try_from(t).unwrap()
}

#[test]
fn local_targets_run_on_this_process() {
    let (g, c) = graph();
    for target in ["", "local"] {
        let s = ClientSession::connect(target, &g).unwrap();
        assert!(matches!(s, ClientSession::Local(_)), "{target:?}");
        assert_eq!(value(&s.run(&[], &[c], &[]).unwrap()[0]), 9.0);
        assert!(
            s.devices()[0].ends_with("device:CPU:0"),
            "{:?}",
            s.devices()
        );
    }
}

#[test]
fn inmem_targets_reach_servers_of_the_global_network() {
    let spec = magpie::cluster::Spec::builder()
        .job("solo", ["client-test.invalid:1"])
        .build()
        .unwrap();
    let task = TaskName::new("solo", 0);
    let server = InMemServer::start(
        &InMemNetwork::global(),
        &spec,
        "solo",
        0,
        &task_server_options(&task),
    )
    .unwrap();
    let (g, c) = graph();
    let s = ClientSession::connect(&server.target(), &g).unwrap();
    assert!(matches!(s, ClientSession::InMem(_)));
    assert_eq!(value(&s.run(&[], &[c], &[]).unwrap()[0]), 9.0);
    assert_eq!(s.devices()[0], "/job:solo/replica:0/task:0/device:CPU:0");
    drop(s);
    server.stop(Duration::from_secs(1));

    let e = ClientSession::connect("inmem://nobody.invalid:1", &g).unwrap_err();
    assert!(matches!(e, ClientError::InMem(_)), "{e:?}");
    assert!(e.to_string().contains("nobody.invalid:1"), "{e}");
}

#[test]
fn grpc_targets_reach_a_remote_master() {
    let cluster = GrpcCluster::start(&loopback_cluster().unwrap()).unwrap();
    let (g, c) = graph();
    let target = cluster.target("worker", 1).unwrap();
    let s = ClientSession::connect(&target, &g).unwrap();
    assert!(matches!(s, ClientSession::Grpc(_)));
    assert_eq!(value(&s.run(&[], &[c], &[]).unwrap()[0]), 9.0);
    // The master's device is the default: unpinned nodes ran on worker 1.
    assert_eq!(s.devices()[0], "/job:worker/replica:0/task:1/device:CPU:0");
    drop(s);
    cluster.stop(Duration::from_secs(2));
}

#[test]
fn unknown_schemes_are_refused_naming_the_target() {
    let (g, _) = graph();
    let e = ClientSession::connect("http://127.0.0.1:1", &g).unwrap_err();
    assert!(matches!(e, ClientError::Target { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("http://127.0.0.1:1"), "{msg}");
    assert!(msg.contains("grpc://host:port"), "{msg}");
}

#[test]
fn a_server_whose_visible_devices_match_nothing_fails_naming_them() {
    let spec = loopback_cluster().unwrap();
    let dir = std::env::temp_dir().join(format!("magpie-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.toml");
    std::fs::write(&file, spec.to_toml()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_magpie"))
        .args(["server", "--cluster"])
        .arg(&file)
        .args(["--job", "ps", "--task", "0"])
        // A device type no machine has: nothing matches, GPUs or not.
        .args(["--visible-devices", "/device:TPU:0,/device:TPU:1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/device:TPU:0, /device:TPU:1"), "{err}");
    assert!(
        err.contains("/job:ps/replica:0/task:0/device:CPU:0"),
        "{err}"
    );
}

#[test]
fn extending_a_remote_session_needs_no_other_task() {
    let spec = loopback_cluster().unwrap();
    let start = |job: &str, index: u32| {
        magpie::grpc::GrpcServer::start(
            &spec,
            job,
            index,
            &task_server_options(&TaskName::new(job, index)),
        )
        .unwrap()
    };
    let (ps, w0, w1) = (start("ps", 0), start("worker", 0), start("worker", 1));
    let (g, c) = graph();
    let target = format!("grpc://{}", w1.local_addr());
    let s = magpie::grpc::connect(&target, &g).unwrap();
    assert_eq!(value(&s.run(&[], &[c], &[]).unwrap()[0]), 9.0);
    // The ps task goes away; nodes added to the graph reach the master all the same.
    ps.stop(Duration::from_secs(1));
    let d = g.with_name("d").neg(c).unwrap();
    assert_eq!(value(&s.run(&[], &[d], &[]).unwrap()[0]), -9.0);
    // An unknown fetch is refused, naming it; the session keeps working.
    let e = s
        .run_named(&[], &["nowhere:0"], &[], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere"), "{e}");
    assert_eq!(value(&s.run(&[], &[d, c], &[]).unwrap()[1]), 9.0);
    drop(s);
    w0.stop(Duration::from_secs(1));
    w1.stop(Duration::from_secs(1));
}
