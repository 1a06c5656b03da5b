//! Command-line parsing and dispatch for the `magpie` binary.

mod demo;
mod device_args;
mod devices;
mod gpu_probe;
mod idle_args;
mod logging;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use device_args::DeviceArgs;

/// Magpie: dataflow graphs on devices and machines, on a work-stealing scheduler.
#[derive(Debug, Parser)]
#[command(name = "magpie", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Log lines as human-readable text or as one JSON object per line. Which events
    /// are logged: the MAGPIE_LOG filter (e.g. `magpie=debug`; default `warn`).
    #[arg(long, value_enum, default_value_t = logging::LogFormat::Text, global = true)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Installs the log subscriber the flags ask for.
    pub(crate) fn init_logging(&self) {
        logging::init(self.log_format);
    }
}

// One value per process, parsed once: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a control-dependency example on a local session: prints every value
    /// (z = 7) and the order in which the ops ran.
    Demo {
        /// Scheduler worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Write the cluster step's timeline, merged over its three tasks, as Chrome trace
        /// JSON (opens in Perfetto); the local step's goes beside it (`-local` added to
        /// the file's stem).
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
    },
    /// Print the machine's topology (NUMA nodes, packages, cores, PUs) and the devices and
    /// worker pinning each CPU layout would give, then exactly the devices `magpie server`
    /// with the same device flags would serve here, the default first.
    Devices {
        /// Describe this hwloc synthetic topology instead of the machine, e.g.
        /// "pack:2 numa:1 core:2 pu:1" (the served devices are still the machine's).
        #[arg(long, value_name = "DESCRIPTION")]
        synthetic: Option<String>,
        /// Name the devices for this job, as `magpie server --job` would.
        #[arg(long, default_value = "localhost")]
        job: String,
        /// Name the devices for this task index of the job.
        #[arg(long, default_value_t = 0)]
        task: u32,
        #[command(flatten)]
        devices: DeviceArgs,
    },
    /// Print how many real (not emulated) GPUs this machine has: what `magpie server`
    /// asks in a child process before it loads Vulkan itself.
    #[command(name = gpu_probe::SUBCOMMAND, hide = true)]
    ProbeGpus,
    /// Serve one task of a cluster over gRPC (master and worker services) until SIGINT or
    /// SIGTERM. Without --cluster, the cluster and task come from TF_CONFIG. Plaintext and
    /// open to anyone who reaches the port unless --tls-cert/--tls-key and
    /// --auth-token-file are given (see SECURITY.md).
    Server {
        /// Cluster spec file (TOML or JSON: job name to task addresses).
        #[arg(long, value_name = "FILE")]
        cluster: Option<PathBuf>,
        /// The task's job (with --task; from TF_CONFIG's task when absent).
        #[arg(long, requires = "task")]
        job: Option<String>,
        /// The task's index in its job (required with --job).
        #[arg(long)]
        task: Option<u32>,
        /// Milliseconds running steps get to finish when stopping.
        #[arg(long, default_value_t = 2000)]
        drain_ms: u64,
        #[command(flatten)]
        devices: DeviceArgs,
        #[command(flatten)]
        idle: idle_args::IdleArgs,
        /// Deadline in milliseconds of a step whose client sets none.
        #[arg(long)]
        step_timeout_ms: Option<u64>,
        /// Serve TLS with this certificate chain (PEM, the task's certificate first); the
        /// task then reaches the other tasks over TLS too. Needs --tls-key.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Mutual TLS: peers may present a certificate only if this CA (PEM) signed it,
        /// and worker-service calls need one; the task presents --tls-cert to the others.
        /// Also verifies the other tasks when --tls-ca is not given.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// The CA (PEM) that verifies the other tasks' certificates (default:
        /// --tls-client-ca, then the file named by MAGPIE_TLS_CA).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_ca: Option<PathBuf>,
        /// Every call of both services must carry the cluster token in this file
        /// (printable ASCII, at least 16 characters; keep it mode 600); the task presents
        /// it to the others. Missing or wrong: UNAUTHENTICATED.
        #[arg(long, value_name = "FILE")]
        auth_token_file: Option<PathBuf>,
        /// Listen on this address (e.g. 0.0.0.0:2222) instead of the one the cluster file
        /// advertises for the task, which may then be a DNS name the server never resolves.
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
        /// Milliseconds opening a session waits for tasks that cannot be reached yet
        /// (servers may start in any order), logging which it awaits, before failing
        /// naming them.
        #[arg(long, value_name = "MS", default_value_t = 60_000)]
        peer_wait_ms: u64,
        /// Serve Prometheus metrics at GET /metrics on this address (plain HTTP, e.g.
        /// 127.0.0.1:9090; port 0 picks a free one and prints it).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

/// `magpie server`'s limits: what one caller can make the task hold. Each has a safe
/// default; passing one is RESOURCE_EXHAUSTED naming the limit and its flag, except the
/// streams per connection, past which calls wait.
#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    /// Remote sessions open at once on this task's master.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub(crate) max_sessions: usize,
    /// Nodes in one session's graph (after every extension) and in one partition.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub(crate) max_graph_nodes: usize,
    /// Nodes one graph extension may add.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub(crate) max_extension_nodes: usize,
    /// Largest gRPC message, in bytes (graphs, feeds, fetches; tensors between tasks are
    /// streamed in chunks).
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub(crate) max_message_bytes: usize,
    /// Largest tensor another task may stream to this one, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 30)]
    pub(crate) max_tensor_bytes: u64,
    /// Largest tensor, in bytes, sent whole to (and taken whole from) another task: the
    /// small tensors ready for the same task leave in one request; larger ones are
    /// streamed in chunks. 0 streams every tensor.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 10)]
    pub(crate) inline_tensor_bytes: usize,
    /// Send each batch of small tensors for another task in its own `SendTensors`
    /// request instead of on one long-lived `SendTensorsStream` to that task.
    #[arg(long)]
    pub(crate) no_send_tensors_stream: bool,
    /// Milliseconds a streamed tensor may wait for its next chunk.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub(crate) tensor_stream_idle_timeout_ms: u64,
    /// Concurrent requests (HTTP/2 streams) on one connection; a client's calls past it
    /// wait for one to end (none fails).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub(crate) max_streams_per_connection: u32,
    /// Connections this task's server holds open at once (TLS handshakes included); one
    /// past it is closed as it is accepted, logged and counted in
    /// magpie_connections_refused_total.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub(crate) max_connections: usize,
    /// Bytes of request messages this task receives at once, all connections and calls
    /// together (each message counts the length it announces until its call is answered,
    /// or a stream's next message has come); a message past it fails its call. At least
    /// --max-message-bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub(crate) incoming_request_bytes: u64,
    /// Seconds after which a remote session no request used is closed (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub(crate) session_idle_timeout: u64,
    /// Bytes of tensors delivered (or still arriving) and not yet received that one step may
    /// hold here.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 30)]
    pub(crate) rendezvous_step_bytes: usize,
    /// Bytes of tensors delivered (or still arriving) and not yet received that this task
    /// holds in all: bounds every incoming stream at once.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 30)]
    pub(crate) rendezvous_task_bytes: usize,
    /// Bytes of tensors kept for steps that have not started here (oldest dropped first).
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub(crate) rendezvous_unclaimed_bytes: usize,
    /// Milliseconds tensors are kept for a step that has not started here.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    pub(crate) rendezvous_unclaimed_ttl_ms: u64,
    /// The most bytes one step's tensors may hold at once on this task, all its devices
    /// together (default: half the machine's memory); an allocation past it fails the
    /// step with a resource-exhausted error naming this flag.
    #[arg(long, value_name = "BYTES")]
    pub(crate) step_memory_limit: Option<u64>,
    /// Bytes of tensors the partial runs of this task's master keep between their calls,
    /// all sessions together (fed tensors and outputs later calls need); a call past it
    /// fails and ends its partial run.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub(crate) partial_run_bytes: u64,
    /// Milliseconds between HTTP/2 keep-alive pings on every connection (finds frozen
    /// peers).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub(crate) keepalive_interval_ms: u64,
    /// Milliseconds a keep-alive ping may go unanswered before the connection is closed.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub(crate) keepalive_timeout_ms: u64,
}

/// Runs the parsed command.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo { workers, trace } => demo::run(workers, trace.as_deref()),
        Command::ProbeGpus => gpu_probe::run(),
        Command::Devices {
            synthetic,
            job,
            task,
            devices,
        } => devices::run(
            synthetic.as_deref(),
            &magpie::transport::TaskName::new(&job, task),
            &devices,
        ),
        Command::Server {
            cluster,
            job,
            task,
            drain_ms,
            devices,
            idle,
            step_timeout_ms,
            tls_cert,
            tls_key,
            tls_client_ca,
            tls_ca,
            auth_token_file,
            bind,
            peer_wait_ms,
            metrics_addr,
            limits,
        } => server::run(&server::ServeArgs {
            cluster,
            job,
            task,
            drain: Duration::from_millis(drain_ms),
            devices,
            idle,
            step_timeout: step_timeout_ms.map(Duration::from_millis),
            security: server::SecurityArgs {
                tls_cert,
                tls_key,
                tls_client_ca,
                tls_ca,
                auth_token_file,
            },
            bind,
            peer_wait_ms,
            metrics_addr,
            limits,
        }),
    }
}
