//! The Magpie side of `scripts/bench-remote-vs-tensorflow`: the remote steps of
//! `scripts/bench_remote_tensorflow.py` on Magpie's gRPC servers (started in this process,
//! each task a `GrpcServer` on 127.0.0.1 with its own runtime and pool, as
//! `benches/transport.rs` does) driven by Magpie's Rust client (`magpie::grpc::connect`
//! to worker 0, a real gRPC hop), one JSON line per workload on stdout (median, min and
//! max of `--reps` timed steps after `--warmup` untimed ones). Not a criterion bench: the
//! script alternates this program and TensorFlow's in rounds and divides the medians of
//! the same round.
//!
//! - `remote_trivial`: one task; `y = -c` with `c = 1.0` on its device, y fetched;
//! - `three_tasks`: ps + 2 workers; `w = 2.0` on ps, `x = w * 5.0` on worker 0,
//!   `y = x + w` on worker 1, y (12.0) fetched: three tensors cross tasks.
//!
//! `--warm-window-us N` sets the servers' and the client's `GrpcOptions::warm_window`
//! (default: `GrpcOptions`'s; 0 turns it off), for an A/B of the same binary;
//! `--busy-poll-us N` sets their `GrpcOptions::busy_poll` (0 turns it off; each line
//! reports the process's busy-poll counts so far);
//! `--inline-tensor-bytes 0` streams every tensor between tasks with its own
//! `SendTensor` (the protocol before small tensors were batched in `SendTensors`);
//! `--send-tensors-stream 0` sends each batch of small tensors in its own `SendTensors`
//! request instead of on the long-lived `SendTensorsStream` to its peer.
//!
//! Run: `cargo bench --bench remote_vs_tensorflow -- --reps 300`.

mod common;

use std::time::Duration;

use common::{arg, time_steps};

use magpie::cluster::{loopback_cluster, task_server_options, GrpcCluster};
use magpie::grpc::{GrpcOptions, GrpcServer};
use magpie::transport::TaskName;
use magpie::{Graph, Output};

/// What every workload runs with: timed and untimed steps, the servers' and client's
/// gRPC options.
struct Settings {
    reps: usize,
    warmup: usize,
    grpc: GrpcOptions,
}

/// Times `reps` steps fetching `y` on `target` and prints the workload's line.
fn measure(name: &str, tasks: usize, target: &str, g: &Graph, y: Output, run: &Settings) {
    let Settings { reps, warmup, .. } = *run;
    let s = magpie::grpc::connect_with(target, g, run.grpc.clone()).expect("connect");
    let mut check = 0.0f64;
    let times = time_steps(warmup, reps, || {
        let out = s.run(&[], &[y], &[]).expect("step");
        check = f64::from(out[0].scalar_value::<f32>().expect("f32 scalar"));
    });
    drop(s);
    // The process's busy polling over the workload (`GrpcOptions::busy_poll`).
    let busy = magpie::grpc::BusyPollStats::now();
    println!(
        "{{\"side\":\"magpie\",\"workload\":\"{name}\",\"tasks\":{tasks},\"client\":\"rust\",\
         {times},\"check\":{check},\"busy_poll\":{{\"spins\":{},\"caught\":{},\"preempted\":{}}}}}",
        busy.spins, busy.caught, busy.preempted
    );
}

fn remote_trivial(run: &Settings) {
    let spec = loopback_cluster().expect("ports");
    let task = TaskName::new("worker", 0);
    let single = magpie::cluster::Spec::builder()
        .job("worker", [spec.address(&task).expect("address")])
        .build()
        .expect("spec");
    let server = GrpcServer::start_with(
        &single,
        "worker",
        0,
        &task_server_options(&task),
        run.grpc.clone(),
    )
    .expect("server");
    let g = Graph::new();
    let y = g.neg(g.constant(1.0f32).expect("const")).expect("neg");
    measure("remote_trivial", 1, &server.target(), &g, y, run);
    server.stop(Duration::from_secs(1));
}

fn three_tasks(run: &Settings) {
    let spec = loopback_cluster().expect("ports");
    let cluster = GrpcCluster::start_with(&spec, run.grpc.clone()).expect("cluster");
    let g = Graph::new();
    let ps = g.with_device("/job:ps/task:0").expect("scope");
    let w = ps.constant(2.0f32).expect("const");
    let w0 = g.with_device("/job:worker/task:0").expect("scope");
    let x = w0.mul(w, w0.constant(5.0f32).expect("const")).expect("mul");
    let w1 = g.with_device("/job:worker/task:1").expect("scope");
    let y = w1.add(x, w).expect("add");
    let target = cluster.target("worker", 0).expect("target");
    measure("three_tasks", 3, &target, &g, y, run);
    cluster.stop(Duration::from_secs(1));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = arg(&args, "--reps", 300).max(1);
    let warmup = arg(&args, "--warmup", 30);
    let mut grpc = GrpcOptions {
        inline_tensor_bytes: arg(&args, "--inline-tensor-bytes", 64 << 10),
        send_tensors_stream: arg(&args, "--send-tensors-stream", 1usize) != 0,
        ..GrpcOptions::default()
    };
    if let Some(us) = args
        .iter()
        .position(|a| a == "--warm-window-us")
        .and_then(|i| args.get(i + 1))
    {
        let us: u64 = us.parse().expect("--warm-window-us takes microseconds");
        grpc.warm_window = Some(Duration::from_micros(us));
    }
    let default_busy_us = GrpcOptions::default()
        .busy_poll
        .map_or(0, |d| d.as_micros() as usize);
    let busy_us = arg(&args, "--busy-poll-us", default_busy_us);
    grpc.busy_poll = (busy_us > 0).then(|| Duration::from_micros(busy_us as u64));
    let run = Settings { reps, warmup, grpc };
    let only = args
        .iter()
        .position(|a| a == "--workloads")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "remote_trivial,three_tasks".into());
    for w in only.split(',') {
        match w {
            "remote_trivial" => remote_trivial(&run),
            "three_tasks" => three_tasks(&run),
            other => panic!("unknown workload {other:?}"),
        }
    }
}
