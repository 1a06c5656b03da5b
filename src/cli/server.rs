//! `magpie server --cluster FILE --job worker --task 0`: serves one task of a cluster
//! over gRPC (the cluster and task from `TF_CONFIG` when `--cluster` is absent) until
//! SIGINT or SIGTERM, then stops cleanly (running steps get a short deadline).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use magpie::cluster::{task_server_options, Spec, TfConfig};
use magpie::grpc::GrpcServer;
use magpie::transport::TaskName;

pub(crate) fn run(
    cluster: Option<&Path>,
    job: Option<&str>,
    task: Option<u32>,
    drain: Duration,
) -> anyhow::Result<()> {
    let (spec, task) = match cluster {
        Some(path) => {
            let spec = Spec::from_file(path)
                .with_context(|| format!("reading the cluster spec {}", path.display()))?;
            let Some(job) = job else {
                bail!("--job is required with --cluster");
            };
            (spec, TaskName::new(job, task.unwrap_or(0)))
        }
        None => {
            let Some(cfg) = TfConfig::from_env()? else {
                bail!("no --cluster given and TF_CONFIG is not set");
            };
            let task = match (job, task, cfg.task) {
                (Some(j), i, _) => TaskName::new(j, i.unwrap_or(0)),
                (None, _, Some(t)) => t,
                (None, _, None) => bail!("TF_CONFIG names no task and no --job was given"),
            };
            (cfg.cluster, task)
        }
    };
    let server = GrpcServer::start(&spec, &task.job, task.index, &task_server_options(&task))
        .with_context(|| format!("starting {task}"))?;
    println!("serving {task} on {}", server.target());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    let signal = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }
    });
    let signal = signal.context("waiting for SIGINT/SIGTERM")?;
    println!("{signal}: stopping {task}");
    let cancelled = server.stop(drain);
    println!("stopped {task} ({cancelled} step(s) cancelled)");
    Ok(())
}
