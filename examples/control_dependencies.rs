//! Control dependencies: nodes that run after others without reading their outputs.
//!
//! ```text
//! a = tf.constant(1.0)
//! b = a + 2.0
//! with tf.control_dependencies([a, b]):
//!     x = tf.constant(3.0)
//!     y = tf.constant(4.0)
//! z = x + y
//! ```
//!
//! Fetching only `z` still runs `a` and `b` first, because `x` and `y` wait for them.
//! Run with `cargo run --example control_dependencies`.

use magpie::{Graph, GraphError, RunOptions};

fn main() -> anyhow::Result<()> {
    let g = Graph::new();
    let a = g.with_name("a").constant(1.0f32)?;
    let b = g.with_name("b").add(a, g.constant(2.0f32)?)?;
    let (x, y) = g.control_dependencies([a, b], |g| {
        Ok::<_, GraphError>((
            g.with_name("x").constant(3.0f32)?,
            g.with_name("y").constant(4.0f32)?,
        ))
    })?;
    let z = g.with_name("z").add(x, y)?;

    let session = magpie::local_session(&g)?;
    let traced = RunOptions {
        trace: true,
        ..RunOptions::default()
    };
    let out = session.run_with_options(&traced, &[], &[z], &[])?;
    let order: Vec<&str> = out.metadata.nodes.iter().map(|n| n.node.as_str()).collect();
    println!("ops run to fetch z: {}", order.join(", "));

    let pos = |n: &str| order.iter().position(|o| *o == n);
    for later in ["x", "y"] {
        for earlier in ["a", "b"] {
            anyhow::ensure!(pos(earlier) < pos(later), "{later} ran before {earlier}");
        }
    }
    println!("x and y started only after a and b finished");
    println!("z = {}", out.tensors[0]);
    Ok(())
}
