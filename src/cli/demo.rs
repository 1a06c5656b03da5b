//! `magpie demo`: the seed's control-dependency example on a local session.

use std::path::Path;

use anyhow::Context;
use magpie::{Graph, GraphError, RunOptions, Session};

pub(crate) fn run(workers: Option<usize>, trace: Option<&Path>) -> anyhow::Result<()> {
    println!("magpie demo: the seed's control-dependency example on a local session");
    println!();
    println!("    a = 1.0");
    println!("    b = a + 2.0");
    println!("    with control_dependencies([a, b]):");
    println!("        x = 3.0");
    println!("        y = 4.0");
    println!("    z = x + y");
    println!();

    let g = Graph::new();
    let a = g.with_name("a").constant(1.0f32)?;
    let b = g
        .with_name("b")
        .add(a, g.with_name("two").constant(2.0f32)?)?;
    let (x, y) = g.control_dependencies([a, b], |g| {
        Ok::<_, GraphError>((
            g.with_name("x").constant(3.0f32)?,
            g.with_name("y").constant(4.0f32)?,
        ))
    })?;
    let z = g.with_name("z").add(x, y)?;

    let mut options = magpie::local_options();
    options.num_workers = workers;
    let session = Session::new(&g, options)?;
    println!(
        "session: {} worker(s), default device {}",
        session.pool().num_workers(),
        session.devices()[0].name()
    );

    // Fetch only z: a and b still run first, because x and y wait for them.
    let run_opts = RunOptions {
        trace: true,
        ..RunOptions::default()
    };
    let out = session.run_with_options(&run_opts, &[], &[z], &[])?;
    println!();
    println!(
        "fetching z ran {} ops, in this order:",
        out.metadata.nodes.len()
    );
    for (i, n) in out.metadata.nodes.iter().enumerate() {
        println!(
            "  {:>2}. {:<4} ({:<5}) on worker {} [{:>8.1} us .. {:>8.1} us]",
            i + 1,
            n.node,
            n.op,
            n.worker,
            n.start.as_secs_f64() * 1e6,
            n.end.as_secs_f64() * 1e6
        );
    }

    let values = session.run(&[], &[a, b, x, y, z], &[])?;
    println!();
    println!("values:");
    for (name, t) in ["a", "b", "x", "y", "z"].iter().zip(&values) {
        println!("  {name} = {t}");
    }
    let z_value = f32::try_from(&values[4])?;
    anyhow::ensure!(z_value == 7.0, "z should be 7, got {z_value}");

    if let Some(path) = trace {
        std::fs::write(path, magpie::chrome_trace_json(&out.metadata.nodes))
            .with_context(|| format!("writing trace to {}", path.display()))?;
        println!();
        println!(
            "timeline written to {} (open it in https://ui.perfetto.dev)",
            path.display()
        );
    }
    Ok(())
}
