//! A remote session: a client opens a session on worker task 1 over gRPC; that
//! task acts as the master, places the unpinned ops on its own default device and
//! computes the result.
//!
//! ```text
//! a = tf.constant(1.0)
//! b = a + 2
//! c = b * 3
//! with tf.Session("grpc://machine-b.example.com:2222") as sess:
//!     print(c.eval())  # 9.0
//! ```
//!
//! The default cluster (one `ps`, two `worker` tasks) runs in this process as three gRPC
//! servers on free 127.0.0.1 ports. `cargo run --example remote_session`.

use std::time::Duration;

use magpie::cluster::{loopback_cluster, GrpcCluster};
use magpie::{ClientSession, Graph};

fn main() -> anyhow::Result<()> {
    let cluster = GrpcCluster::start(&loopback_cluster()?)?;
    let g = Graph::new();
    let a = g.with_name("a").constant(1.0f32)?;
    let b = g
        .with_name("b")
        .add(a, g.with_name("two").constant(2.0f32)?)?;
    g.with_name("c")
        .mul(b, g.with_name("three").constant(3.0f32)?)?;

    let target = cluster.target("worker", 1)?;
    println!("session on {target} (/job:worker/task:1, the master)");
    let ClientSession::Grpc(session) = ClientSession::connect(&target, &g)? else {
        anyhow::bail!("{target} should give a gRPC session");
    };
    let out = session.run_named(&[], &["c:0"], &[], None)?;
    for (node, device) in out.placement.iter() {
        println!("  {node:<6} ran on {device}");
    }
    let value = f32::try_from(&out.tensors[0])?;
    println!("c = b * 3 = {value:.1}");
    anyhow::ensure!(value == 9.0, "c should be 9.0, got {value}");
    drop(session);
    cluster.stop(Duration::from_secs(1));
    Ok(())
}
