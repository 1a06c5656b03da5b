//! A client of a running cluster — the seed's layout, one `ps` and two `worker` tasks,
//! as `docs/running-a-cluster.md` starts it with `magpie server`: opens a session on the
//! task at TARGET (which becomes the master), runs one step whose ops are spread over the
//! three tasks, and prints where each op ran and the result.
//!
//! ```text
//! cargo run --example cluster_client -- grpc://127.0.0.1:2222
//! cargo run --example cluster_client -- grpc://127.0.0.1:2222 --trace step.json
//! ```
//!
//! With `--trace FILE` the step is traced: every task returns its timeline, and FILE gets
//! the merged Chrome trace (a process per task and device; open it in Perfetto).
//!
//! For a `grpcs://` target the CA and the cluster token come from the files named by
//! `MAGPIE_TLS_CA` and `MAGPIE_AUTH_TOKEN_FILE`.

use magpie::{ClientSession, Graph, RunOptions};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (target, trace) = match args.as_slice() {
        [target] => (target.clone(), None),
        [target, flag, file] if flag == "--trace" => (target.clone(), Some(file.clone())),
        _ => anyhow::bail!(
            "usage: cluster_client grpc://HOST:PORT (or grpcs://HOST:PORT) [--trace FILE]"
        ),
    };
    // w lives on the ps task; the workers compute with it (the seed's first example).
    let g = Graph::new();
    let w = g
        .with_device("/job:ps/task:0")?
        .with_name("w")
        .constant(2.0f32)?;
    let w0 = g.with_device("/job:worker/task:0")?;
    let x = w0
        .with_name("x")
        .mul(w, w0.with_name("five").constant(5.0f32)?)?;
    g.with_device("/job:worker/task:1")?
        .with_name("y")
        .add(x, w)?;

    let ClientSession::Grpc(session) = ClientSession::connect(&target, &g)? else {
        anyhow::bail!("{target} is not a grpc:// or grpcs:// target");
    };
    let options = RunOptions {
        trace: trace.is_some(),
        ..RunOptions::default()
    };
    let out = session.run_named_with_options(&options, &[], &["y:0"], &[])?;
    for (node, device) in out.placement.iter() {
        println!("  {node:<5} ran on {device}");
    }
    let y = f32::try_from(&out.tensors[0])?;
    println!("y = w * 5 + w = {y:.1}");
    anyhow::ensure!(y == 12.0, "y should be 12.0, got {y}");
    if let (Some(file), Some(timeline)) = (trace, &out.timeline) {
        std::fs::write(&file, timeline.chrome_trace_json())?;
        println!(
            "timeline of {} ops on {} tasks written to {file}",
            timeline.events().count(),
            timeline.tasks.len()
        );
    }
    Ok(())
}
