//! Where a cluster step of a TensorFlow graph spends its time: runs a TensorFlow
//! `GraphDef` (binary, as `tf.Graph.as_graph_def().SerializeToString()` writes it) on a
//! Magpie cluster through Magpie's own client, times untraced steps, then traces steps
//! and prints, per task, when its partition started, when its receives completed and
//! when its last node ended, on the master's clock (medians and quartiles over the
//! traced steps), and one traced step's nodes in full with `--dump`.
//! `scripts/tf-step-timeline` writes the MLP training step of
//! `examples/tensorflow_client/bench.py` and runs this against a cluster of
//! `magpie server`s.
//!
//! ```text
//! tf_step_timeline grpc://HOST:PORT GRAPH.pb [--init NODE] [--feed NAME=D0xD1...]...
//!     [--fetch NAME]... [--target NODE]... [--steps N] [--traced N] [--dump]
//! ```
//!
//! Feeds are f32 tensors of the given shape filled with 0.5: the times, not the values,
//! are the point.

use std::error::Error;
use std::time::{Duration, Instant};

use magpie_core::distributed::AlignedTimeline;
use magpie_core::session::RunOptions;
use magpie_core::tensor::Tensor;
use magpie_core::Graph;
use magpie_grpc::tf::conv::{graph_from_tf, DecodeLimits};
use magpie_grpc::tf::proto;
use prost::Message;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

#[derive(Default)]
struct Args {
    target: String,
    graph: String,
    init: Option<String>,
    feeds: Vec<(String, Vec<usize>)>,
    fetches: Vec<String>,
    targets: Vec<String>,
    steps: usize,
    traced: usize,
    dump: bool,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        steps: 300,
        traced: 200,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    let mut positional = Vec::new();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--init" => a.init = Some(value()?),
            "--feed" => {
                let v = value()?;
                let (name, dims) = v.split_once('=').ok_or("--feed NAME=D0xD1")?;
                let dims = dims
                    .split('x')
                    .map(str::parse)
                    .collect::<std::result::Result<Vec<usize>, _>>()?;
                a.feeds.push((name.to_string(), dims));
            }
            "--fetch" => a.fetches.push(value()?),
            "--target" => a.targets.push(value()?),
            "--steps" => a.steps = value()?.parse()?,
            "--traced" => a.traced = value()?.parse()?,
            "--dump" => a.dump = true,
            _ => positional.push(arg),
        }
    }
    let [target, graph] = <[String; 2]>::try_from(positional)
        .map_err(|_| "usage: tf_step_timeline grpc://HOST:PORT GRAPH.pb [options]")?;
    a.target = target;
    a.graph = graph;
    Ok(a)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// When `t`'s last receive of the given kind completed (early: awaited before the step;
/// otherwise during it), and when its last node ended, on the master's clock (µs).
fn task_times(t: &AlignedTimeline) -> (f64, f64, f64) {
    // Receives awaited before the step start at the step's start.
    let early = |s: Duration| s < Duration::from_micros(5);
    let last_recv = |want_early: bool| {
        t.nodes
            .iter()
            .filter(|n| n.op == "_Recv" && early(n.start) == want_early)
            .map(|n| micros(t.offset + n.end))
            .fold(0.0, f64::max)
    };
    let end = t
        .nodes
        .iter()
        .map(|n| micros(t.offset + n.end))
        .fold(0.0, f64::max);
    (last_recv(true), last_recv(false), end)
}

fn main() -> Result<()> {
    let a = parse()?;
    let wire = proto::GraphDef::decode(&std::fs::read(&a.graph)?[..])?;
    let def = graph_from_tf(&wire, &mut DecodeLimits::new(1 << 30, 1 << 30))?;
    let g = Graph::new();
    g.extend_tensorflow(&def)?;
    let s = magpie_grpc::connect(&a.target, &g)?;
    if let Some(init) = &a.init {
        s.run_named(&[], &[], &[init.as_str()], None)?;
    }
    let mut feeds = Vec::new();
    for (name, dims) in &a.feeds {
        let n = dims.iter().product();
        feeds.push((
            name.as_str(),
            Tensor::from_vec(dims.clone(), vec![0.5f32; n])?,
        ));
    }
    let fetches: Vec<&str> = a.fetches.iter().map(String::as_str).collect();
    let targets: Vec<&str> = a.targets.iter().map(String::as_str).collect();
    let step = || s.run_named(&feeds, &fetches, &targets, None);
    for _ in 0..a.steps.min(100) {
        step()?;
    }
    let t = Instant::now();
    for _ in 0..a.steps {
        step()?;
    }
    println!(
        "untraced: {:.1} us/step over {} steps",
        micros(t.elapsed()) / a.steps.max(1) as f64,
        a.steps
    );
    let options = RunOptions {
        trace: true,
        timeout: Some(Duration::from_secs(30)),
        ..RunOptions::default()
    };
    // Per traced step: (event name, µs on the master's clock from the step's send).
    let mut rows: Vec<Vec<(String, f64)>> = Vec::new();
    for _ in 0..a.traced {
        let t = Instant::now();
        let out = s.run_named_with_options(&options, &feeds, &fetches, &targets)?;
        let took = micros(t.elapsed());
        let timeline = out
            .timeline
            .ok_or("a traced step came back without its timeline")?;
        let mut row = vec![("step, client".to_string(), took)];
        for task in &timeline.tasks {
            let (early, during, end) = task_times(task);
            let name = task.task.to_string();
            row.push((format!("{name} started"), micros(task.offset)));
            row.push((format!("{name} received (before)"), early));
            row.push((format!("{name} received (during)"), during));
            row.push((format!("{name} ended"), end));
        }
        rows.push(row);
    }
    if let Some(first) = rows.first() {
        println!("traced, {} steps (µs from the master's send):", rows.len());
        for (i, (name, _)) in first.iter().enumerate() {
            let mut v: Vec<f64> = rows.iter().filter_map(|r| r.get(i).map(|x| x.1)).collect();
            v.sort_by(f64::total_cmp);
            let q = |f: usize| v[(v.len() * f / 4).min(v.len() - 1)];
            println!(
                "  {name:<44} p25 {:8.1}  p50 {:8.1}  p75 {:8.1}",
                q(1),
                q(2),
                q(3)
            );
        }
    }
    if a.dump {
        let out = s.run_named_with_options(&options, &feeds, &fetches, &targets)?;
        for t in &out.timeline.ok_or("no timeline")?.tasks {
            println!("{} (offset {:.1} us)", t.task, micros(t.offset));
            let mut nodes = t.nodes.clone();
            nodes.sort_by_key(|n| n.start);
            for n in &nodes {
                println!(
                    "  {:8.1} {:8.1}  worker {}  {:<28} {}",
                    micros(t.offset + n.start),
                    micros(t.offset + n.end),
                    n.worker,
                    n.op,
                    n.node
                );
            }
        }
    }
    Ok(())
}
