//! The seed's cluster: one `ps` task and two `worker` tasks (the seed's two machines
//! mapped to 127.0.0.1 ports), serving in this process. One graph spreads its ops over
//! the three tasks; the master partitions it and inserts Send/Recv pairs; the example
//! prints where each op ran.
//!
//! `cargo run --example cluster`.

use magpie::cluster::{default_cluster, InProcessCluster, DEFAULT_CLUSTER_TOML};
use magpie::{Graph, RunOptions};

fn main() -> anyhow::Result<()> {
    println!("cluster spec:\n{DEFAULT_CLUSTER_TOML}");
    let cluster = InProcessCluster::start(&default_cluster())?;
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
    let sum = g.with_name("sum").sum(total, None, false)?;

    let session = cluster.session("worker", 0, &g)?;
    let out = session.run_with_options(&RunOptions::default(), &[], &[total, sum], &[])?;
    println!("where each op ran (master: /job:worker/task:0):");
    for p in out.placement.iter() {
        println!("  {:<8} ({:<5}) on {}", p.node, p.op, p.device);
    }
    println!(
        "tasks in the step: {}",
        out.tasks
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("total = {}", out.tensors[0]);
    let sum = f32::try_from(&out.tensors[1])?;
    println!("sum = {sum:.1}");
    anyhow::ensure!(sum == 48.0, "sum should be 48, got {sum}");
    Ok(())
}
