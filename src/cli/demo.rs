//! `magpie demo`: a control-dependency example on a local session, then the cluster
//! examples on an in-process three-task cluster (the embedded default).

use std::path::{Path, PathBuf};

use anyhow::Context;
use magpie::cluster::{default_cluster, InProcessCluster, DEFAULT_CLUSTER_TOML};
use magpie::{Graph, GraphError, RunOptions, Session};

pub(crate) fn run(workers: Option<usize>, trace: Option<&Path>) -> anyhow::Result<()> {
    println!("magpie demo: control dependencies on a local session");
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
        let local = local_trace_path(path);
        std::fs::write(&local, magpie::chrome_trace_json(&out.metadata.nodes))
            .with_context(|| format!("writing trace to {}", local.display()))?;
        println!();
        println!(
            "local timeline written to {} (open it in https://ui.perfetto.dev)",
            local.display()
        );
    }
    cluster_demo(trace)
}

/// Where `--trace FILE` puts the local step's timeline: beside FILE, `-local` added to
/// its stem (FILE itself gets the cluster step's merged timeline).
fn local_trace_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "trace".to_string(), |s| s.to_string_lossy().into_owned());
    let name = match path.extension() {
        Some(ext) => format!("{stem}-local.{}", ext.to_string_lossy()),
        None => format!("{stem}-local"),
    };
    path.with_file_name(name)
}

/// The default cluster (ps + two workers) in this process: a graph spread over the three
/// tasks (traced: its merged timeline goes to `trace`, when given), then the
/// remote-session example on worker 1 as the master.
fn cluster_demo(trace: Option<&Path>) -> anyhow::Result<()> {
    println!();
    println!("in-process cluster (embedded default):");
    for line in DEFAULT_CLUSTER_TOML.lines() {
        println!("    {line}");
    }
    let cluster = InProcessCluster::start(&default_cluster())?;
    let g = Graph::new();
    let w = g
        .with_device("/job:ps/task:0")?
        .with_name("w")
        .constant(2.0f32)?;
    let x = g.with_device("/job:worker/task:0")?.with_name("x").mul(
        w,
        g.with_device("/job:worker/task:0")?
            .with_name("five")
            .constant(5.0f32)?,
    )?;
    let y = g
        .with_device("/job:worker/task:1")?
        .with_name("y")
        .add(x, w)?;
    let traced = RunOptions {
        trace: trace.is_some(),
        ..RunOptions::default()
    };
    let out = cluster
        .session("worker", 0, &g)?
        .run_with_options(&traced, &[], &[y], &[])?;
    println!();
    println!("one graph over three tasks (master /job:worker/task:0):");
    for p in out.placement.iter() {
        println!("  {:<5} ({:<5}) on {}", p.name(), p.op(), p.device);
    }
    println!("  y = w * 5 + w = {}", out.tensors[0]);
    if let (Some(path), Some(timeline)) = (trace, &out.timeline) {
        std::fs::write(path, timeline.chrome_trace_json())
            .with_context(|| format!("writing trace to {}", path.display()))?;
        let events = timeline.events().count();
        println!(
            "  its timeline ({events} ops on {} tasks, one row per task and device) written \
             to {}",
            timeline.tasks.len(),
            path.display()
        );
    }

    let g = Graph::new();
    let a = g.with_name("a").constant(1.0f32)?;
    let b = g
        .with_name("b")
        .add(a, g.with_name("two").constant(2.0f32)?)?;
    let c = g
        .with_name("c")
        .mul(b, g.with_name("three").constant(3.0f32)?)?;
    let out = cluster.session("worker", 1, &g)?.run_with_options(
        &RunOptions::default(),
        &[],
        &[c],
        &[],
    )?;
    println!();
    println!("remote session on /job:worker/task:1 (unpinned ops on its default device):");
    println!(
        "  c ran on {}",
        out.placement.last().map_or("?", |p| p.device.as_str())
    );
    println!("  c = b * 3 = {}", out.tensors[0]);
    anyhow::ensure!(f32::try_from(&out.tensors[0])? == 9.0, "c should be 9.0");
    cluster.stop(std::time::Duration::from_secs(5));
    Ok(())
}
