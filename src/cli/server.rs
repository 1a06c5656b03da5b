//! `magpie server --cluster FILE --job worker --task 0`: serves one task of a cluster
//! over gRPC (the cluster and task from `TF_CONFIG` when `--cluster` is absent) until
//! SIGINT or SIGTERM, then stops cleanly (running steps get a short deadline). With
//! `--tls-cert`/`--tls-key` it serves TLS (mutual with `--tls-client-ca`) and reaches
//! the other tasks over TLS; with `--auth-token-file` every call needs the cluster token.
//! The task serves its machine's devices (`machine_server_options`): the GPUs, the first
//! the default device, unless `--no-gpus` (GPUs emulated on the CPU, such as lavapipe,
//! only with `--emulated-gpus`), then a CPU device per NUMA node with a worker
//! per PU (`--workers` sets the count); `--visible-devices` filters both kinds. Idle
//! scheduler workers spin briefly (`--idle-spin`, `--max-searching`; see `idle_args`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use magpie::cluster::{machine_server_options, Spec, TfConfig};
use magpie::distributed::RendezvousLimits;
use magpie::grpc::{AuthToken, GrpcOptions, GrpcServer, TlsOptions};
use magpie::transport::TaskName;

/// What `magpie server` was asked for.
#[derive(Debug)]
pub(crate) struct ServeArgs {
    pub(crate) cluster: Option<PathBuf>,
    pub(crate) job: Option<String>,
    pub(crate) task: Option<u32>,
    pub(crate) drain: Duration,
    pub(crate) devices: super::DeviceArgs,
    pub(crate) idle: super::idle_args::IdleArgs,
    pub(crate) step_timeout: Option<Duration>,
    pub(crate) security: SecurityArgs,
    pub(crate) bind: Option<String>,
    pub(crate) peer_wait_ms: u64,
    pub(crate) metrics_addr: Option<String>,
    pub(crate) limits: super::LimitArgs,
}

/// `magpie server`'s TLS and token flags.
#[derive(Debug, Default)]
pub(crate) struct SecurityArgs {
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) tls_client_ca: Option<PathBuf>,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) auth_token_file: Option<PathBuf>,
}

impl SecurityArgs {
    /// The gRPC options the flags ask for; `peers` is how many other tasks the cluster
    /// has (a TLS task needs a CA to verify them).
    fn grpc_options(&self, task: &TaskName, peers: usize) -> anyhow::Result<GrpcOptions> {
        let mut grpc = GrpcOptions::default();
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let mut tls = TlsOptions::new()
                    .with_identity_files(cert, key)
                    .context("--tls-cert/--tls-key")?;
                let env_ca = std::env::var_os(magpie::TLS_CA_ENV).filter(|v| !v.is_empty());
                let ca = match (&self.tls_ca, &self.tls_client_ca, env_ca) {
                    (Some(f), _, _) => Some((f.clone(), "--tls-ca")),
                    (None, Some(f), _) => Some((f.clone(), "--tls-client-ca")),
                    (None, None, Some(f)) => Some((PathBuf::from(f), magpie::TLS_CA_ENV)),
                    (None, None, None) => None,
                };
                match ca {
                    Some((file, from)) => {
                        tls = tls.with_ca_file(&file).context(from)?;
                    }
                    None if peers > 0 => bail!(
                        "{task} serves TLS and reaches the {peers} other task(s) of its \
                         cluster over TLS: name the CA that signed their certificates with \
                         --tls-ca FILE (or --tls-client-ca FILE, or {})",
                        magpie::TLS_CA_ENV
                    ),
                    None => {}
                }
                if let Some(f) = &self.tls_client_ca {
                    tls = tls.with_client_ca_file(f).context("--tls-client-ca")?;
                }
                grpc.tls = Some(tls);
            }
            (None, None) => {}
            // clap's `requires` rules these out; kept as errors, never a panic.
            (Some(_), None) => bail!("--tls-cert needs --tls-key"),
            (None, Some(_)) => bail!("--tls-key needs --tls-cert"),
        }
        if let Some(f) = &self.auth_token_file {
            grpc.auth_token = Some(AuthToken::from_file(f).context("--auth-token-file")?);
        }
        Ok(grpc)
    }

    /// What the server protects, in words (never the token).
    fn describe(grpc: &GrpcOptions) -> String {
        let tls = match &grpc.tls {
            Some(t) if t.is_mutual() => "mutual TLS",
            Some(_) => "TLS",
            None => "plaintext",
        };
        let token = match grpc.auth_token {
            Some(_) => "cluster token required",
            None => "no token",
        };
        format!("{tls}, {token}")
    }
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
            let Some(index) = task else {
                bail!(
                    "--task is required with --job (the index of the task to serve in job {job:?})"
                );
            };
            (spec, TaskName::new(job, index))
        }
        None => {
            let Some(cfg) = TfConfig::from_env()? else {
                bail!("no --cluster given and TF_CONFIG is not set");
            };
            if job.is_none() && cfg.is_evaluator() {
                bail!(
                    "TF_CONFIG names an evaluator task, which is not part of the cluster: \
                     there is no task to serve (run the evaluator as a client of the cluster)"
                );
            }
            let task = match (job, task, cfg.task) {
                (Some(j), Some(i), _) => TaskName::new(j, i),
                (Some(j), None, _) => {
                    bail!("--task is required with --job (the index of the task to serve in job {j:?})")
                }
                (None, _, Some(t)) => t,
                (None, _, None) => bail!("TF_CONFIG names no task and no --job was given"),
            };
            (cfg.cluster, task)
        }
    };
    let mut devices = args.devices.task_devices()?;
    // Vulkan's drivers cost tens of MiB once loaded: without a real GPU to serve, the
    // server does not load them (see `gpu_probe`).
    if devices.wants_gpus() && !devices.emulated_gpus && super::gpu_probe::real_gpus() == Some(0) {
        tracing::info!(%task, "no real GPU: Vulkan not loaded");
        devices.gpus = false;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    devices.cpu.idle_spin = args
        .idle
        .idle_spin(devices.cpu.num_workers.unwrap_or(cores), cores);
    let mut options = machine_server_options(&task, &devices)
        .with_context(|| format!("setting up the devices of {task}"))?;
    if let Some(t) = args.step_timeout {
        options.step_timeout = t;
    }
    options.peer_wait = Duration::from_millis(args.peer_wait_ms);
    let l = &args.limits;
    if let Some(bytes) = l.step_memory_limit {
        options.step_memory_limit = Some(bytes);
    }
    if args.step_timeout.is_some_and(|t| t.is_zero()) {
        bail!("--step-timeout-ms must be at least 1");
    }
    options.rendezvous_limits = RendezvousLimits {
        unclaimed_ttl: Duration::from_millis(l.rendezvous_unclaimed_ttl_ms),
        unclaimed_bytes: l.rendezvous_unclaimed_bytes,
        step_bytes: l.rendezvous_step_bytes,
        task_bytes: l.rendezvous_task_bytes,
    };
    let peers = spec.tasks().len().saturating_sub(1);
    let mut grpc = args.security.grpc_options(&task, peers)?;
    l.apply(&mut grpc)?;
    grpc.bind.clone_from(&args.bind);
    grpc.metrics_addr.clone_from(&args.metrics_addr);
    grpc.warm_window = args.idle.warm_window();
    grpc.busy_poll = args.idle.busy_poll();
    let security = SecurityArgs::describe(&grpc);
    // The signal handlers are installed before the server starts and says so: a SIGTERM
    // sent as soon as "serving" is printed stops it cleanly rather than killing it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    let (mut term, mut int) = {
        let _guard = rt.enter();
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        )
    };
    let server = GrpcServer::start_with(&spec, &task.job, task.index, &options, grpc)
        .with_context(|| format!("starting {task}"))?;
    say(format_args!(
        "serving {task} on {} ({security})",
        server.target()
    ));
    let names: Vec<String> = (server.core().worker().devices().iter())
        .map(|d| d.name().to_string())
        .collect();
    if let Some(addr) = server.metrics_addr() {
        say(format_args!("metrics of {task} at http://{addr}/metrics"));
    }
    say(format_args!(
        "devices of {task} (the first is the default): {}",
        names.join(", ")
    ));
    tracing::info!(%task, target = %server.target(), %security, devices = %names.join(", "), idle_spin = %devices.cpu.idle_spin, "server started");
    let signal: anyhow::Result<&str> = rt.block_on(async {
        tokio::select! {
            _ = int.recv() => Ok("SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }
    });
    let signal = signal.context("waiting for SIGINT/SIGTERM")?;
    say(format_args!("{signal}: stopping {task}"));
    tracing::info!(%task, %signal, drain_ms = drain.as_millis() as u64, "server stopping");
    let cancelled = server.stop(drain);
    say(format_args!(
        "stopped {task} ({cancelled} step(s) cancelled)"
    ));
    tracing::info!(%task, cancelled, "server stopped");
    Ok(())
}

impl super::LimitArgs {
    /// Sets `grpc`'s limits from the flags; a limit of 0 that would refuse everything is
    /// an error naming its flag.
    fn apply(&self, grpc: &mut GrpcOptions) -> anyhow::Result<()> {
        for (value, flag) in [
            (self.max_sessions as u64, "--max-sessions"),
            (self.max_graph_nodes as u64, "--max-graph-nodes"),
            (self.max_extension_nodes as u64, "--max-extension-nodes"),
            (self.max_message_bytes as u64, "--max-message-bytes"),
            (
                self.tensor_stream_idle_timeout_ms,
                "--tensor-stream-idle-timeout-ms",
            ),
            (
                u64::from(self.max_streams_per_connection),
                "--max-streams-per-connection",
            ),
            (self.keepalive_interval_ms, "--keepalive-interval-ms"),
            (self.keepalive_timeout_ms, "--keepalive-timeout-ms"),
            (self.step_memory_limit.unwrap_or(1), "--step-memory-limit"),
            (self.partial_run_bytes, "--partial-run-bytes"),
            (self.max_connections as u64, "--max-connections"),
        ] {
            if value == 0 {
                bail!("{flag} must be at least 1");
            }
        }
        grpc.max_sessions = self.max_sessions;
        grpc.max_graph_nodes = self.max_graph_nodes;
        grpc.max_extension_nodes = self.max_extension_nodes;
        grpc.max_message_bytes = self.max_message_bytes;
        grpc.max_tensor_bytes = self.max_tensor_bytes;
        grpc.inline_tensor_bytes = self.inline_tensor_bytes;
        grpc.send_tensors_stream = !self.no_send_tensors_stream;
        grpc.tensor_stream_idle_timeout = Duration::from_millis(self.tensor_stream_idle_timeout_ms);
        grpc.max_concurrent_streams = self.max_streams_per_connection;
        grpc.session_idle_timeout =
            (self.session_idle_timeout > 0).then(|| Duration::from_secs(self.session_idle_timeout));
        grpc.keepalive_interval = Duration::from_millis(self.keepalive_interval_ms);
        grpc.keepalive_timeout = Duration::from_millis(self.keepalive_timeout_ms);
        grpc.max_partial_run_bytes = self.partial_run_bytes;
        if self.incoming_request_bytes < self.max_message_bytes as u64 {
            bail!(
                "--incoming-request-bytes ({}) must be at least --max-message-bytes ({}), \
                 or messages that size are always refused",
                self.incoming_request_bytes,
                self.max_message_bytes
            );
        }
        grpc.max_connections = self.max_connections;
        grpc.incoming_request_bytes = self.incoming_request_bytes;
        Ok(())
    }
}

/// Prints one line of the server's report on stdout. A stdout nobody reads any more (a
/// closed pipe: the supervisor read the lines it wanted) must not stop a serving task,
/// so write errors are ignored where `println!` would panic.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
