//! [`GrpcOptions`]: deadlines, message limits, chunking and security (TLS, the cluster
//! token) of the gRPC transport.

use std::time::Duration;

use crate::auth::AuthToken;
use crate::tls::TlsOptions;
use crate::warm::WarmCpus;

/// How the gRPC transport and server talk.
#[derive(Clone, Debug)]
pub struct GrpcOptions {
    /// Deadline of establishing a connection to a task (default 3 s).
    pub connect_timeout: Duration,
    /// Deadline of every request but a step's (default 10 s). A peer that never answers
    /// fails the request after this, naming the task.
    pub request_timeout: Duration,
    /// Deadline of opening a session (default 75 s): longer than a master's default wait
    /// for tasks not up yet (60 s, `MasterOptions::peer_wait`), so the master's error,
    /// which names the missing tasks, reaches the client first.
    pub create_session_timeout: Duration,
    /// Added to a step's own deadline for the request that runs it on a task (default
    /// 500 ms): the task reports the step's deadline itself; past this the caller stops
    /// waiting and reports the task as not answering (a frozen or hung peer), so a master
    /// names the task that did not answer within its step deadline plus this.
    pub step_grace: Duration,
    /// Added to a step's deadline (plus `step_grace`) for a client's own deadline on
    /// `RunStep` (default 5 s): only a backstop for a master that never answers, since the
    /// master reports the step's deadline itself. With no deadline of its own, a client
    /// uses the master's default step deadline, which the master tells it when the
    /// session opens.
    pub client_backstop: Duration,
    /// HTTP/2 keepalive ping interval on idle connections (default 10 s).
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered (default 10 s).
    pub keepalive_timeout: Duration,
    /// Largest message encoded or decoded, in bytes (default 256 MiB; flag
    /// `--max-message-bytes`): bounds graphs, feeds and fetches of one request, and the
    /// small tensors of one `SendTensors` request; larger tensors between workers are
    /// streamed in chunks instead.
    pub max_message_bytes: usize,
    /// Size of one chunk of a streamed tensor (default 2 MiB: on loopback, 2 MiB chunks
    /// moved 64 MiB faster than 1 or 4 MiB ones).
    pub chunk_bytes: usize,
    /// Largest tensor content, in bytes, sent whole in a `SendTensors` request (default
    /// 64 KiB): the small tensors a task has ready for the same peer go in one request
    /// instead of a `SendTensor` stream each, and a worker refuses a larger one there.
    /// 0 streams every tensor. The tasks of a cluster share it: a task refuses a tensor
    /// sent whole above its own limit.
    pub inline_tensor_bytes: usize,
    /// Whether the batches of small tensors for a peer travel on one long-lived
    /// `SendTensorsStream` to it (default `true`): one HTTP/2 message each way per batch on a
    /// stream opened once, instead of a `SendTensors` request with its headers, trailers
    /// and handler task each. A peer that does not serve the stream gets `SendTensors`
    /// requests; `false` sends every batch so (flag `--no-send-tensors-stream`).
    pub send_tensors_stream: bool,
    /// Largest tensor a worker accepts through `SendTensor` (default 4 GiB; flag
    /// `--max-tensor-bytes`).
    pub max_tensor_bytes: u64,
    /// How long a worker waits for the next chunk of a streamed tensor before it drops
    /// the stream with `RESOURCE_EXHAUSTED` (default 30 s; flag
    /// `--tensor-stream-idle-timeout-ms`).
    pub tensor_stream_idle_timeout: Duration,
    /// Remote sessions a master keeps open at once; `CreateSession` beyond it is
    /// `RESOURCE_EXHAUSTED` (default 256; flag `--max-sessions`).
    pub max_sessions: usize,
    /// Nodes in one session's graph, after every extension, and in one partition a worker
    /// registers (default 1,000,000; flag `--max-graph-nodes`).
    pub max_graph_nodes: usize,
    /// Nodes one `ExtendSession` may add (default 1,000,000; flag
    /// `--max-extension-nodes`).
    pub max_extension_nodes: usize,
    /// Bytes of tensors the partial runs of one master keep between their calls, all its
    /// sessions together: the tensors fed so far and the outputs later calls need (default
    /// 1 GiB; flag `--partial-run-bytes`). A call that would pass it fails with
    /// `RESOURCE_EXHAUSTED` naming the flag, and ends its partial run.
    pub max_partial_run_bytes: u64,
    /// HTTP/2 streams (concurrent requests) a server accepts on one connection; a client
    /// past it waits for a stream to end (default 256; flag
    /// `--max-streams-per-connection`).
    pub max_concurrent_streams: u32,
    /// Connections a server holds open at once, TLS handshakes in progress included
    /// (default 1024; flag `--max-connections`). A connection past it is closed as it is
    /// accepted, before a byte of it is read, logged and counted in
    /// `magpie_connections_refused_total`; the client sees `UNAVAILABLE` and may retry.
    /// Keep it below the process's open-file limit (the server warns otherwise); 0
    /// refuses every connection.
    pub max_connections: usize,
    /// Bytes of request messages a server receives at once, all its connections and
    /// calls together (default 1 GiB; flag `--incoming-request-bytes`): a message
    /// reserves the length its prefix announces before the server buffers it, and keeps
    /// it until its handler has answered (a message of a stream: until the stream's next
    /// message has come whole). A message that would pass it fails its call with
    /// `RESOURCE_EXHAUSTED` naming the flag. At least `max_message_bytes`, or messages
    /// of that size are always refused. See `SECURITY.md` for the memory bound it gives.
    pub incoming_request_bytes: u64,
    /// Threads of the runtime a server or a standalone transport starts (default: half
    /// the machine's cores, at least 1 and at most 4). The runtime only moves bytes and
    /// hands requests to the blocking pool and the scheduler; on a machine with few cores,
    /// more threads than that mostly wake each other (with 2 vCPUs, 1 thread instead of 4
    /// took the trivial remote step from ~60–75 µs to ~52 µs).
    pub runtime_threads: usize,
    /// A server closes a remote session that no request has used for this long (its
    /// client went away without closing it), releasing its partitions on every task
    /// (default 1 hour; `None`: never; flag `--session-idle-timeout`, in seconds).
    pub session_idle_timeout: Option<Duration>,
    /// TLS (default `None`: plaintext). A server with an identity serves TLS (mutual with
    /// a client CA); a transport or client with TLS options verifies the servers it
    /// reaches against their CA. See [`TlsOptions`] and `SECURITY.md`.
    pub tls: Option<TlsOptions>,
    /// The cluster token (default `None`: no authentication). A server requires it of
    /// every call of both services (`UNAUTHENTICATED` otherwise); transports and clients
    /// present it. Its `Debug` prints no byte of it.
    pub auth_token: Option<AuthToken>,
    /// Where a server listens, when not on the address the cluster spec advertises for
    /// its task (default `None`: that address). E.g. `0.0.0.0:2222` behind a cluster file
    /// that names the task by a DNS name (Kubernetes services, load balancers), which the
    /// server then never resolves itself; its peers resolve it when they first connect.
    /// Flag `--bind`.
    pub bind: Option<String>,
    /// Where a server serves its metrics as Prometheus text at `GET /metrics` over
    /// plain HTTP (default `None`: not served), e.g. `127.0.0.1:9090`; port 0 picks a
    /// free one ([`GrpcServer::metrics_addr`](crate::GrpcServer::metrics_addr)). The
    /// metrics name tasks and devices, no session or tensor. Flag `--metrics-addr`.
    pub metrics_addr: Option<String>,
    /// How long after a runtime of this server or client goes idle the process's CPUs
    /// are kept from halting (default 1 ms; `None` or zero: never; flag
    /// `--warm-window-us`). While it lasts, one `SCHED_IDLE` spinner thread per CPU runs
    /// whenever nothing else wants the CPU, so the next request or response of a burst of
    /// steps wakes a running CPU instead of a halted one (on a VM, 20–40 µs less per
    /// hop). Cost: up to the window of CPU time per CPU after each request, none while
    /// idle; see [`WarmCpus`](crate::WarmCpus). Turn it off in a container with a CPU
    /// quota, where spinning counts against the quota. The spinners are one per CPU of the
    /// process's affinity mask (why, in `WarmCpus`'s docs): bound them with that mask.
    pub warm_window: Option<Duration>,
    /// How long a runtime of this server or client polls its sockets without sleeping
    /// after it writes a request or a response (default 100 µs; `None` or zero: never;
    /// flag `--busy-poll-us`), so the answer is read by a running thread instead of one
    /// the kernel must wake (on a VM, 10–15 µs less per hop). It spins only while the
    /// answers it waits for come within the window on average, at most one spinner per
    /// CPU in the process, and at normal priority: up to the window of CPU time per
    /// runtime thread after each such write. Turn it off in a container with a CPU quota
    /// or on a host whose CPUs all have other work. See the `busy_poll` module's docs.
    pub busy_poll: Option<Duration>,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        GrpcOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            create_session_timeout: Duration::from_secs(75),
            step_grace: Duration::from_millis(500),
            client_backstop: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            max_message_bytes: 256 << 20,
            chunk_bytes: 2 << 20,
            inline_tensor_bytes: INLINE_TENSOR_BYTES,
            send_tensors_stream: true,
            max_tensor_bytes: 4 << 30,
            tensor_stream_idle_timeout: Duration::from_secs(30),
            max_sessions: 256,
            max_graph_nodes: 1_000_000,
            max_extension_nodes: 1_000_000,
            max_partial_run_bytes: 1 << 30,
            max_concurrent_streams: 256,
            max_connections: 1024,
            incoming_request_bytes: 1 << 30,
            runtime_threads: default_runtime_threads(),
            session_idle_timeout: Some(Duration::from_secs(3600)),
            tls: None,
            auth_token: None,
            bind: None,
            metrics_addr: None,
            warm_window: Some(DEFAULT_WARM_WINDOW),
            busy_poll: Some(DEFAULT_BUSY_POLL),
        }
    }
}

/// The default [`GrpcOptions::inline_tensor_bytes`]: 64 KiB.
pub(crate) const INLINE_TENSOR_BYTES: usize = 64 << 10;

/// [`GrpcOptions::warm_window`]'s default: covers the gap between the steps of a
/// client's loop (a TensorFlow Python client's trivial steps come 150–250 µs apart: a
/// 200 µs window let the CPUs halt between about half of them) and the hops of one step,
/// short enough that a lone step costs little (a millisecond of otherwise idle CPU time).
pub const DEFAULT_WARM_WINDOW: Duration = Duration::from_micros(1000);

/// [`GrpcOptions::busy_poll`]'s default: longer than a hop of a small step on loopback
/// (10–40 µs), short enough that a spin that catches nothing costs little.
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(100);

/// Half the available cores, in `1..=4`.
fn default_runtime_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores / 2).clamp(1, 4)
}

/// A runtime of `threads` threads named `name`, keeping the CPUs warm for `warm_window`
/// each time one of its threads goes idle.
pub(crate) fn runtime(
    threads: usize,
    name: &str,
    warm_window: Option<Duration>,
) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all();
    warm_on_park(&mut b, warm_window);
    b.build()
}

/// Has the threads of `builder`'s runtime touch the process's [`WarmCpus`] each time
/// they park (go idle), when `window` asks for warming. The hook holds its handle, so the
/// spinners live as long as the runtime.
pub(crate) fn warm_on_park(builder: &mut tokio::runtime::Builder, window: Option<Duration>) {
    if let Some(warm) = window.and_then(WarmCpus::start) {
        builder.on_thread_park(move || warm.touch());
    }
}
