//! `magpie server --cluster FILE --job worker --task 0`: serves one task of a cluster
//! over gRPC (the cluster and task from `TF_CONFIG` when `--cluster` is absent) until
//! SIGINT or SIGTERM, then stops cleanly (running steps get a short deadline).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use magpie::cluster::{task_server_options, Spec, TfConfig};
use magpie::cpu::CpuDevice;
use magpie::grpc::GrpcServer;
use magpie::transport::TaskName;

/// What `magpie server` was asked for.
#[derive(Debug)]
pub(crate) struct ServeArgs {
    pub(crate) cluster: Option<PathBuf>,
    pub(crate) job: Option<String>,
    pub(crate) task: Option<u32>,
    pub(crate) drain: Duration,
    pub(crate) visible_devices: Option<Vec<String>>,
    pub(crate) workers: Option<usize>,
    pub(crate) step_timeout: Option<Duration>,
    pub(crate) cpu_memory_limit: Option<u64>,
}

pub(crate) fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let (job, task, drain) = (args.job.as_deref(), args.task, args.drain);
    let (spec, task) = match args.cluster.as_deref() {
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
    let mut options = task_server_options(&task);
    if let Some(specs) = &args.visible_devices {
        options.visible_devices = Some(specs.clone());
    }
    if let Some(n) = args.workers {
        if n == 0 {
            bail!("--workers must be at least 1");
        }
        options.num_workers = Some(n);
    }
    if let Some(t) = args.step_timeout {
        options.step_timeout = t;
    }
    if let Some(bytes) = args.cpu_memory_limit {
        for device in &mut options.devices {
            if device.device_type() == magpie::cpu::DEVICE_TYPE {
                let cpu = CpuDevice::with_name(device.name().clone());
                *device = Arc::new(cpu.with_memory_limit(Some(bytes)));
            }
        }
    }
    let server = GrpcServer::start(&spec, &task.job, task.index, &options)
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
