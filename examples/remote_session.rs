//! The seed's third example: a client opens a session on worker task 1, which acts as the
//! master, places the unpinned ops on its own default device and computes the result.
//!
//! ```text
//! a = tf.constant(1.0)
//! b = a + 2
//! c = b * 3          # the seed writes a * 3 and prints 9.0; b * 3 is what gives 9.0
//! with tf.Session("grpc://machine-b.example.com:2222") as sess:
//!     print(c.eval())  # 9.0
//! ```
//!
//! Runs on the embedded in-process cluster (`inmem://`). `cargo run --example remote_session`.

use magpie::cluster::{default_cluster, InProcessCluster};
use magpie::{Graph, RunOptions};

fn main() -> anyhow::Result<()> {
    let cluster = InProcessCluster::start(&default_cluster())?;
    let g = Graph::new();
    let a = g.with_name("a").constant(1.0f32)?;
    let b = g
        .with_name("b")
        .add(a, g.with_name("two").constant(2.0f32)?)?;
    let c = g
        .with_name("c")
        .mul(b, g.with_name("three").constant(3.0f32)?)?;

    let master = cluster.server("worker", 1).expect("worker 1 runs");
    println!(
        "session on {} (/job:worker/task:1, the master)",
        master.target()
    );
    let session = cluster.session("worker", 1, &g)?;
    let out = session.run_with_options(&RunOptions::default(), &[], &[c], &[])?;
    for p in out.placement.iter() {
        println!("  {:<6} ({:<5}) ran on {}", p.node, p.op, p.device);
    }
    let value = f32::try_from(&out.tensors[0])?;
    println!("c = b * 3 = {value:.1}");
    anyhow::ensure!(value == 9.0, "c should be 9.0, got {value}");
    Ok(())
}
