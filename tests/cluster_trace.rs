//! Cluster timelines: a traced step over three tasks returns every task's node records
//! (over the in-memory transport, between gRPC tasks, and to a client's remote session),
//! merged into one Chrome trace with a
//! process per task and device, named worker threads, and a flow per Send/Recv pair;
//! `magpie demo --trace FILE` writes one.

mod common;

use std::collections::BTreeSet;

use magpie::cluster::{default_cluster, loopback_cluster, GrpcCluster, InProcessCluster};
use magpie::distributed::{ClusterRunOutput, ClusterTimeline, MasterSession};
use magpie::{Graph, Output, RunOptions};
use serde_json::Value;

/// `y = (w * 5) + w` with `w` on ps, the product on worker 0 and the sum on worker 1.
fn three_task_graph() -> (Graph, Output) {
    let g = Graph::new();
    let w = g
        .with_device("/job:ps/task:0")
        .unwrap()
        .with_name("w")
        .constant(2.0f32)
        .unwrap();
    let w0 = g.with_device("/job:worker/task:0").unwrap();
    let x = w0
        .with_name("x")
        .mul(w, w0.with_name("five").constant(5.0f32).unwrap())
        .unwrap();
    let y = g
        .with_device("/job:worker/task:1")
        .unwrap()
        .with_name("y")
        .add(x, w)
        .unwrap();
    (g, y)
}

fn traced_run(s: &MasterSession, y: Output) -> ClusterRunOutput {
    let options = RunOptions {
        trace: true,
        ..RunOptions::default()
    };
    let out = s.run_with_options(&options, &[], &[y], &[]).unwrap();
    assert_eq!(f32::try_from(&out.tensors[0]).unwrap(), 12.0);
    out
}

const TASKS: [&str; 3] = [
    "/job:ps/replica:0/task:0",
    "/job:worker/replica:0/task:0",
    "/job:worker/replica:0/task:1",
];

/// Checks the merged trace of a traced run of [`three_task_graph`].
fn check_trace(out: &ClusterRunOutput) {
    let placement: Vec<(String, String)> = out
        .placement
        .iter()
        .map(|p| (p.name().to_string(), p.device.to_string()))
        .collect();
    check_timeline(out.timeline.as_ref(), &placement);
}

/// Checks `timeline` against the step's placement, `(node, device)` pairs.
fn check_timeline(timeline: Option<&ClusterTimeline>, placement: &[(String, String)]) {
    let timeline = timeline.expect("a traced step has a timeline");
    let tasks: BTreeSet<String> = timeline.tasks.iter().map(|t| t.task.to_string()).collect();
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    for t in &timeline.tasks {
        assert!(!t.nodes.is_empty(), "{} recorded nothing", t.task);
    }
    // Every node of the client's graph ran once, on the device the master placed it.
    assert!(!placement.is_empty());
    for (node, device) in placement {
        let ran: Vec<_> = timeline
            .events()
            .filter(|(_, n, _, _)| n.node == *node)
            .collect();
        assert_eq!(ran.len(), 1, "{node}: {ran:?}");
        assert_eq!(ran[0].1.device, *device);
    }

    let v: Value = serde_json::from_str(&timeline.chrome_trace_json()).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    let processes: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    for task in TASKS {
        assert!(
            processes
                .iter()
                .any(|p| p.starts_with(&format!("{task}/device:"))),
            "no process row for {task}: {processes:?}"
        );
    }
    // Every complete event sits on a named thread of a named process.
    let named: BTreeSet<(u64, u64)> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
        .collect();
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(slices.len(), timeline.events().count());
    for e in &slices {
        let at = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        assert!(named.contains(&at), "{e} is on an unnamed thread");
    }
    let from_tasks: BTreeSet<&str> = slices
        .iter()
        .map(|e| e["args"]["task"].as_str().unwrap())
        .collect();
    assert_eq!(from_tasks.len(), 3, "{from_tasks:?}");
    // One flow (start and finish) per Send/Recv pair: w to both workers, x to worker 1.
    let sends = slices.iter().filter(|e| e["cat"] == "_Send").count();
    let starts = events.iter().filter(|e| e["ph"] == "s").count();
    let finishes = events.iter().filter(|e| e["ph"] == "f").count();
    assert!(sends >= 3, "{sends} sends");
    assert_eq!((starts, finishes), (sends, sends));
}

#[test]
fn a_traced_step_over_inmem_returns_every_tasks_timeline() {
    let c = InProcessCluster::start(&default_cluster()).unwrap();
    let (g, y) = three_task_graph();
    let s = c.session("worker", 0, &g).unwrap();
    check_trace(&traced_run(&s, y));
    // An untraced step carries none.
    let plain = s
        .run_with_options(&RunOptions::default(), &[], &[y], &[])
        .unwrap();
    assert!(plain.timeline.is_none());
    drop(s);
    c.stop(std::time::Duration::from_secs(5));
}

#[test]
fn a_traced_step_over_grpc_returns_every_tasks_timeline() {
    let c = GrpcCluster::start(&loopback_cluster().unwrap()).unwrap();
    let (g, y) = three_task_graph();
    let master = c.server("worker", 0).unwrap().core().master();
    let s = master.create_session(&g).unwrap();
    check_trace(&traced_run(&s, y));
    drop(s);
    c.stop(std::time::Duration::from_secs(5));
}

/// A client's remote session over gRPC asks for the trace with its step (`RunStep`'s
/// `trace`) and gets every task's timeline back from the master.
#[test]
fn a_remote_sessions_traced_step_returns_every_tasks_timeline() {
    let c = GrpcCluster::start(&loopback_cluster().unwrap()).unwrap();
    let (g, _) = three_task_graph();
    let s = magpie::grpc::connect(&c.target("worker", 0).unwrap(), &g).unwrap();
    let options = RunOptions {
        trace: true,
        ..RunOptions::default()
    };
    let out = s
        .run_named_with_options(&options, &[], &["y:0"], &[])
        .unwrap();
    assert_eq!(f32::try_from(&out.tensors[0]).unwrap(), 12.0);
    check_timeline(out.timeline.as_ref(), &out.placement);
    let plain = s.run_named(&[], &["y:0"], &[], None).unwrap();
    assert!(plain.timeline.is_none());
    drop(s);
    c.stop(std::time::Duration::from_secs(5));
}

#[test]
fn magpie_demo_trace_writes_the_merged_cluster_timeline() {
    let dir = std::env::temp_dir().join(format!("magpie-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("demo.json");
    let out = common::magpie()
        .args(["demo", "--workers", "2", "--trace"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let local = std::fs::read_to_string(dir.join("demo-local.json"));
    let _ = std::fs::remove_dir_all(&dir);
    let events = merged["traceEvents"].as_array().unwrap();
    let tasks: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| e["args"]["task"].as_str().unwrap())
        .collect();
    assert_eq!(
        tasks,
        BTreeSet::from(["/job:ps/task:0", "/job:worker/task:0", "/job:worker/task:1"])
    );
    let local: Value = serde_json::from_str(&local.unwrap()).unwrap();
    assert!(local["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "z"));
}
