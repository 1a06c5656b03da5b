//! A `magpie server` process's resident memory for a session over a 10^6-node graph (a
//! ~30 MB `CreateSession` message), as issue 11 measured it: at most 500 MB resident
//! while the session is open and still after a step of the whole graph has run (the
//! step's plans added, and its answer, a placement string per node, sent and freed), and
//! back near where it started once the session is closed.
//! Resident sizes are read from `/proc/<pid>/status` (`VmRSS`), so the test runs on Linux
//! with glibc only, where the server returns freed heap to the OS (`malloc_trim`). It
//! asserts bytes, never time.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

mod common;

use std::time::Duration;

use common::{free_address, ServerProcess};
use magpie::cluster::Spec;
use magpie::transport::TaskName;
use magpie::Graph;

const MB: u64 = 1 << 20;

/// `VmRSS` of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

#[test]
fn a_million_node_session_stays_under_500_mb_resident_and_closing_returns_it() {
    let spec = Spec::builder()
        .job("worker", [free_address()])
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("magpie-graph-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.json");
    std::fs::write(&file, spec.to_json()).unwrap();
    let server = ServerProcess::server([
        "--cluster",
        file.to_str().unwrap(),
        "--job",
        "worker",
        "--task",
        "0",
    ]);
    let started = rss(server.id());

    let g = Graph::new();
    let mut x = g.constant(1.0f32).unwrap();
    for _ in 1..1_000_000 {
        x = g.neg(x).unwrap();
    }
    let target = format!(
        "grpc://{}",
        spec.address(&TaskName::new("worker", 0)).unwrap()
    );
    let options = magpie::grpc::GrpcOptions {
        // An unoptimised build takes tens of seconds to import a million nodes.
        create_session_timeout: Duration::from_secs(600),
        ..Default::default()
    };
    let session = magpie::grpc::connect_with(&target, &g, options).unwrap();
    let open = rss(server.id());
    // One step of the whole chain: the master places it and the task (the same process,
    // one device) runs the session's graph itself, with an execution plan of a million
    // nodes.
    let fetch = format!("{}:0", g.name_of(x.node));
    let out = session
        .run_named(&[], &[&fetch], &[], Some(Duration::from_secs(600)))
        .unwrap();
    // -1 negated 999,999 times.
    assert_eq!(out.tensors[0].scalar_value::<f32>().unwrap(), -1.0);
    drop(out);
    let ran = rss(server.id());
    session.close().unwrap();
    let closed = rss(server.id());
    eprintln!(
        "resident: {} MB at start, {} MB with the session open, {} MB after a step, {} MB \
         after close",
        started / MB,
        open / MB,
        ran / MB,
        closed / MB
    );
    assert!(
        open <= 500 * MB,
        "{open} bytes resident with the session open"
    );
    // The step adds the master's placement and the task's execution plan over the same
    // graph (`graph_memory.rs` in magpie-grpc counts them); the answer's placement
    // strings are freed and trimmed once it is encoded.
    assert!(ran <= 500 * MB, "{ran} bytes resident after a step");
    assert!(
        closed <= started + 32 * MB,
        "{closed} bytes resident after close (started at {started})"
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
