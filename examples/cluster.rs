//! A cluster of one `ps` task and two `worker` tasks (two machines mapped to 127.0.0.1
//! ports), each a gRPC server in this process. A client opens a
//! session on `/job:worker/task:0` over gRPC; one graph spreads its ops over the three
//! tasks; the master partitions it, inserts Send/Recv pairs, and tensors travel between
//! the tasks over gRPC. The example prints where each op ran.
//!
//! `cargo run --example cluster`.

use std::time::Duration;

use magpie::cluster::{loopback_cluster, GrpcCluster};
use magpie::{ClientSession, Graph};

fn main() -> anyhow::Result<()> {
    // The default layout (ps:0 and worker:0 on machine A, worker:1 on machine B) on free
    // loopback ports, so the example runs beside anything else on the machine.
    let spec = loopback_cluster()?;
    println!("cluster spec:\n{}", spec.to_toml());
    let cluster = GrpcCluster::start(&spec)?;

    let g = Graph::new();
    let ps = g.with_device("/job:ps/task:0")?;
    let w0 = g.with_device("/job:worker/task:0")?;
    let w1 = g.with_device("/job:worker/task:1")?;
    let weights = ps.with_name("weights").constant(vec![1.0f32, 2.0, 3.0])?;
    let scaled = w0
        .with_name("scaled")
        .mul(weights, w0.with_name("two").constant(vec![2.0f32; 3])?)?;
    let shifted = w1
        .with_name("shifted")
        .add(weights, w1.with_name("ten").constant(vec![10.0f32; 3])?)?;
    let total = ps.with_name("total").add(scaled, shifted)?;
    g.with_name("sum").sum(total, None, false)?;

    let target = cluster.target("worker", 0)?;
    let ClientSession::Grpc(session) = ClientSession::connect(&target, &g)? else {
        anyhow::bail!("{target} should give a gRPC session");
    };
    let out = session.run_named(&[], &["total:0", "sum:0"], &[], None)?;
    println!("where each op ran (master: /job:worker/task:0 at {target}):");
    let mut tasks = Vec::new();
    for (node, device) in out.placement.iter() {
        let op = g
            .node_by_name(node)
            .and_then(|id| g.node(id))
            .map_or_else(String::new, |n| n.op.to_string());
        println!("  {node:<8} ({op:<5}) on {device}");
        let task = device
            .split("/device:")
            .next()
            .unwrap_or(device)
            .to_string();
        if !tasks.contains(&task) {
            tasks.push(task);
        }
    }
    println!("tasks in the step: {}", tasks.join(", "));
    println!("total = {}", out.tensors[0]);
    let sum = f32::try_from(&out.tensors[1])?;
    println!("sum = {sum:.1}");
    anyhow::ensure!(sum == 48.0, "sum should be 48, got {sum}");
    drop(session);
    cluster.stop(Duration::from_secs(1));
    Ok(())
}
