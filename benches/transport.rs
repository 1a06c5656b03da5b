//! Transport benches, over gRPC loopback and in memory:
//!
//! - `remote_step/grpc_trivial`: a client's step on a remote master, one op on the
//!   master's device (TensorFlow 2.21: ~900 µs; target ≤ 100 µs);
//! - `remote_step/grpc_three_tasks`: a step spanning three tasks (ps, two
//!   workers), two tensors crossing tasks;
//! - `tensor/{grpc,inmem}/<size>`: one tensor moved into another task's rendezvous and
//!   received there, 1 KiB to 64 MiB (target for 64 MiB over gRPC: ≥ 1 GB/s).
//!
//! Run: `cargo bench --bench transport`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::executor::block_on;
use magpie::cluster::{loopback_cluster, task_server_options, GrpcCluster};
use magpie::core::distributed::TaskServer;
use magpie::core::testkit::register_receiver;
use magpie::grpc::{GrpcOptions, GrpcServer, GrpcTransport};
use magpie::inmem::{InMemNetwork, InMemServer, InMemTransport};
use magpie::transport::{RendezvousKey, TaskName, Transport};
use magpie::{Graph, Tensor};

fn remote_steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("remote_step");
    group.measurement_time(Duration::from_secs(3));

    // One task, one op on its device.
    let spec = loopback_cluster().expect("ports");
    let single = magpie::cluster::Spec::builder()
        .job(
            "worker",
            [spec.address(&TaskName::new("worker", 0)).unwrap()],
        )
        .build()
        .unwrap();
    let task = TaskName::new("worker", 0);
    let server = GrpcServer::start(&single, "worker", 0, &task_server_options(&task)).unwrap();
    let g = Graph::new();
    let y = g.neg(g.constant(1.0f32).unwrap()).unwrap();
    let s = magpie::grpc::connect(&server.target(), &g).unwrap();
    group.bench_function("grpc_trivial", |b| {
        b.iter(|| s.run(&[], &[y], &[]).unwrap())
    });
    drop(s);
    server.stop(Duration::from_secs(1));

    // Three tasks: one ps, two workers.
    let spec = loopback_cluster().expect("ports");
    let cluster = GrpcCluster::start(&spec).unwrap();
    let g = Graph::new();
    let w = g
        .with_device("/job:ps/task:0")
        .unwrap()
        .constant(2.0f32)
        .unwrap();
    let w0 = g.with_device("/job:worker/task:0").unwrap();
    let x = w0.mul(w, w0.constant(5.0f32).unwrap()).unwrap();
    let y = g
        .with_device("/job:worker/task:1")
        .unwrap()
        .add(x, w)
        .unwrap();
    let s = magpie::grpc::connect(&cluster.target("worker", 0).unwrap(), &g).unwrap();
    group.bench_function("grpc_three_tasks", |b| {
        b.iter(|| s.run(&[], &[y], &[]).unwrap())
    });
    drop(s);
    cluster.stop(Duration::from_secs(1));
    group.finish();
}

const SIZES: [usize; 5] = [1 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20];

fn move_tensor(
    transport: &dyn Transport,
    to: &TaskName,
    server: &TaskServer,
    t: &Tensor,
    step: &AtomicU64,
) {
    let key = RendezvousKey {
        step_id: step.fetch_add(1, Ordering::Relaxed).into(),
        edge: "bench".into(),
    };
    block_on(transport.send(to, "bench", key.clone(), t.clone())).unwrap();
    block_on(server.worker().rendezvous().recv(key)).unwrap();
}

fn tensors(c: &mut Criterion) {
    let mut group = c.benchmark_group("tensor");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    let step = AtomicU64::new(1 << 50);
    let to = TaskName::new("worker", 1);

    let spec = loopback_cluster().expect("ports");
    let cluster = GrpcCluster::start(&spec).unwrap();
    let grpc = GrpcTransport::new(spec.clone(), GrpcOptions::default()).unwrap();
    let w1 = Arc::clone(cluster.server("worker", 1).unwrap().core());

    let net = InMemNetwork::new();
    let mut inmem_servers = Vec::new();
    for t in spec.tasks() {
        inmem_servers.push(
            InMemServer::start(&net, &spec, &t.job, t.index, &task_server_options(&t)).unwrap(),
        );
    }
    let inmem = InMemTransport::new(Arc::clone(&net), spec.clone());
    let inmem_w1 = Arc::clone(
        inmem_servers
            .iter()
            .find(|s| *s.core().task() == to)
            .unwrap()
            .core(),
    );

    // A task takes tensors only for a session with a partition there.
    register_receiver(&grpc, &to, "bench").unwrap();
    register_receiver(&inmem, &to, "bench").unwrap();
    for bytes in SIZES {
        let t = Tensor::from_vec([bytes / 4], vec![1.5f32; bytes / 4]).unwrap();
        group.throughput(Throughput::Bytes(bytes as u64));
        let label = if bytes >= 1 << 20 {
            format!("{}MiB", bytes >> 20)
        } else {
            format!("{}KiB", bytes >> 10)
        };
        group.bench_with_input(BenchmarkId::new("grpc", &label), &t, |b, t| {
            b.iter(|| move_tensor(&grpc, &to, &w1, t, &step))
        });
        group.bench_with_input(BenchmarkId::new("inmem", &label), &t, |b, t| {
            b.iter(|| move_tensor(&inmem, &to, &inmem_w1, t, &step))
        });
    }
    group.finish();
    drop(grpc);
    cluster.stop(Duration::from_secs(1));
    for s in &inmem_servers {
        s.stop(Duration::from_secs(1));
    }
}

criterion_group!(benches, remote_steps, tensors);
criterion_main!(benches);
