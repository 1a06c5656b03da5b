//! A task's metrics: plain atomic counters the services and the transport bump as they
//! work, and their encoding as Prometheus text (through `prometheus-client`) when
//! `/metrics` is scraped ([`metrics_http`](crate::metrics_http) serves it).
//!
//! Counting costs a relaxed atomic add; nothing is locked on the step path. Gauges
//! (open sessions, rendezvous, scheduler queue, device memory) are read from the task at
//! scrape time. Label values come from fixed sets only — gRPC code names and the
//! cluster's tasks — so no client can grow the exposition.
//!
//! # Metrics
//! | name | type | labels |
//! |---|---|---|
//! | `magpie_steps_total` | counter | `outcome`: `ok` or the gRPC code (`invalid_argument`, …) |
//! | `magpie_step_duration_seconds` | histogram | — |
//! | `magpie_partition_steps_total` | counter | — |
//! | `magpie_staged_partition_steps_total` | counter | — |
//! | `magpie_sessions_open` | gauge | — |
//! | `magpie_rendezvous_entries` | gauge | — |
//! | `magpie_rendezvous_bytes` | gauge | — |
//! | `magpie_rendezvous_unclaimed_bytes` | gauge | — |
//! | `magpie_rendezvous_incoming_bytes` | gauge | — (the part of `magpie_rendezvous_bytes` reserved for `SendTensor` streams still arriving) |
//! | `magpie_tensors_refused_total` | counter | `code`: the gRPC code a tensor sent to this task was refused with (`resource_exhausted` past a rendezvous limit, …) |
//! | `magpie_peer_sent_bytes_total` | counter | `peer` |
//! | `magpie_peer_received_bytes_total` | counter | `peer` (`unknown` when unnamed) |
//! | `magpie_tensor_requests_received_total` | counter | — (`SendTensor` streams, `SendTensors` requests, `SendTensorsStream` batches) |
//! | `magpie_tensors_received_total` | counter | — (tensors those requests carried) |
//! | `magpie_connections_open` | gauge | — (connections the server holds, TLS handshakes included; at most `--max-connections`) |
//! | `magpie_connections_refused_total` | counter | — (connections closed at accept, past `--max-connections`) |
//! | `magpie_incoming_request_bytes` | gauge | — (bytes request messages being received reserve; at most `--incoming-request-bytes`) |
//! | `magpie_incoming_requests_refused_total` | counter | — (calls failed with `RESOURCE_EXHAUSTED` past `--incoming-request-bytes`) |
//! | `magpie_scheduler_workers` | gauge | — |
//! | `magpie_scheduler_queued_jobs` | gauge | — |
//! | `magpie_scheduler_steals_total` | counter | `group`: `local` or `remote` |
//! | `magpie_device_memory_limit_bytes` | gauge | `device` |
//! | `magpie_device_memory_in_use_bytes` | gauge | `device` (devices that count it: CPU and Vulkan GPU devices, through `Device::memory_in_use`) |
//! | `magpie_warm_spinners` | gauge | — (the process's that run, see [`WarmCpus`](crate::WarmCpus); 0 when off) |
//! | `magpie_warm_spinners_failed` | gauge | — (the process's that ended at start: `SCHED_IDLE` or pinning refused) |
//! | `magpie_warm_wakes_total` | counter | — (times a spinner woke to spin, process-wide) |
//! | `magpie_warm_spin_seconds_total` | counter | — (CPU time spent spinning, process-wide) |
//! | `magpie_warm_spinners_elsewhere` | gauge | — (the process's that ended at start: another process's spinner holds their CPU) |
//! | `magpie_busy_poll_spins_total` | counter | — (spins started, process-wide; see `GrpcOptions::busy_poll`) |
//! | `magpie_busy_poll_caught_total` | counter | — (spins the awaited message ended) |
//! | `magpie_busy_poll_preempted_total` | counter | — (spins ended because another thread wanted the CPU) |
//! | `magpie_busy_poll_spinning` | gauge | — (spinner tasks and spinning calls now) |
//!
//! Every metric also carries the label `task`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use magpie_core::distributed::TaskServer;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tonic::Code;

use crate::busy_poll::BusyPollStats;
use crate::warm::WarmCpus;

/// Upper bounds (seconds) of the step-latency histogram's buckets (`+Inf` implied).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Prometheus label values of the gRPC codes, indexed by the code's number.
const CODE_NAMES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// Requests that carried tensors into a task and the tensors they carried
/// ([`GrpcServer::tensor_traffic`](crate::GrpcServer::tensor_traffic)): small tensors a
/// peer had ready together arrive in one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TensorTraffic {
    /// `SendTensor` streams, `SendTensors` requests and `SendTensorsStream` batches received.
    pub requests: u64,
    /// Tensors they carried, whether taken or refused.
    pub tensors: u64,
    /// Of `requests`, the batches that came on a `SendTensorsStream`.
    pub streamed: u64,
}

/// Bytes sent to and received from one peer task.
#[derive(Debug)]
struct Peer {
    name: String,
    sent: AtomicU64,
    received: AtomicU64,
}

impl Peer {
    fn new(name: String) -> Peer {
        Peer {
            name,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }
}

/// The counters of one task (see the module doc).
pub(crate) struct Metrics {
    task: String,
    /// Steps run through the master service, by outcome code.
    steps: [AtomicU64; 17],
    /// `latency[i]`: steps that took at most `LATENCY_BUCKETS[i]` and more than the
    /// bound before (the last: more than every bound).
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    /// The cluster's tasks, sorted by name, then `unknown`.
    peers: Box<[Peer]>,
    /// `SendTensor` streams and `SendTensors` requests received.
    tensor_requests: AtomicU64,
    /// Tensors they carried (taken or refused).
    tensors: AtomicU64,
    /// Tensors refused, by the code they were refused with.
    refused: [AtomicU64; 17],
    /// Connections held open (`connections.rs` counts them).
    pub(crate) connections_open: AtomicU64,
    /// Connections closed at accept, past the bound.
    pub(crate) connections_refused: AtomicU64,
    /// Bytes reserved by request messages being received: the budget's own counter
    /// (`request_bytes.rs` reserves and releases through it).
    pub(crate) incoming_bytes: AtomicU64,
    /// Calls refused past the incoming-bytes budget.
    pub(crate) incoming_refused: AtomicU64,
    /// Of `tensor_requests`, batches on a `SendTensorsStream`.
    streamed: AtomicU64,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("task", &self.task)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Counters for `server`'s task, with a pair of byte counters per task of its
    /// cluster.
    pub(crate) fn new(server: &TaskServer) -> Metrics {
        let mut names: Vec<String> = server
            .cluster()
            .tasks()
            .iter()
            .map(|t| t.to_string())
            .collect();
        names.sort();
        names.dedup();
        let mut peers: Vec<Peer> = names.into_iter().map(Peer::new).collect();
        peers.push(Peer::new("unknown".into()));
        Metrics::with_peers(server.task().to_string(), peers)
    }

    /// Zeroed counters of `task`, one slot per peer of `peers`.
    fn with_peers(task: String, peers: Vec<Peer>) -> Metrics {
        Metrics {
            task,
            steps: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_micros: AtomicU64::new(0),
            peers: peers.into_boxed_slice(),
            tensor_requests: AtomicU64::new(0),
            tensors: AtomicU64::new(0),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
            connections_open: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            incoming_bytes: AtomicU64::new(0),
            incoming_refused: AtomicU64::new(0),
            streamed: AtomicU64::new(0),
        }
    }

    /// Counters of a task named `test` with no peers, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Metrics {
        Metrics::with_peers("test".into(), vec![Peer::new("unknown".into())])
    }

    /// Counts a tensor sent to this task and refused with `code`.
    pub(crate) fn tensor_refused(&self, code: Code) {
        let i = usize::try_from(code as i32)
            .unwrap_or(2)
            .min(CODE_NAMES.len() - 1);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a step of the master service that ended with `code` after `took`.
    pub(crate) fn step(&self, code: Code, took: Duration) {
        let i = usize::try_from(code as i32)
            .unwrap_or(2)
            .min(CODE_NAMES.len() - 1);
        self.steps[i].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn peer(&self, task: &str) -> &Peer {
        let known = &self.peers[..self.peers.len() - 1];
        match known.binary_search_by(|p| p.name.as_str().cmp(task)) {
            Ok(i) => &known[i],
            Err(_) => &self.peers[self.peers.len() - 1],
        }
    }

    /// Counts `bytes` of tensor content sent to `task`.
    pub(crate) fn sent(&self, task: &str, bytes: u64) {
        self.peer(task).sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` of tensor content received from `task` (`unknown` when it is not
    /// a task of the cluster).
    pub(crate) fn received(&self, task: &str, bytes: u64) {
        self.peer(task).received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one request that carried `tensors` tensors into this task.
    pub(crate) fn tensor_request(&self, tensors: u64) {
        self.tensor_requests.fetch_add(1, Ordering::Relaxed);
        self.tensors.fetch_add(tensors, Ordering::Relaxed);
    }

    /// Counts one batch of `tensors` tensors that came on a `SendTensorsStream`.
    pub(crate) fn streamed_batch(&self, tensors: u64) {
        self.tensor_request(tensors);
        self.streamed.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests that carried tensors into this task, and the tensors they carried.
    pub(crate) fn tensor_traffic(&self) -> TensorTraffic {
        TensorTraffic {
            requests: self.tensor_requests.load(Ordering::Relaxed),
            tensors: self.tensors.load(Ordering::Relaxed),
            streamed: self.streamed.load(Ordering::Relaxed),
        }
    }

    /// The Prometheus text exposition of these counters and of `server`'s gauges, with
    /// `open_sessions` remote sessions.
    pub(crate) fn encode(&self, server: &TaskServer, open_sessions: usize) -> String {
        let mut registry = Registry::with_labels(
            [(
                std::borrow::Cow::Borrowed("task"),
                std::borrow::Cow::Owned(self.task.clone()),
            )]
            .into_iter(),
        );

        let steps = by_code(&self.steps, "outcome", "ok");
        registry.register(
            "magpie_steps",
            "Steps run through this task's master service, by outcome (ok or the gRPC code)",
            steps,
        );
        registry.register(
            "magpie_step_duration_seconds",
            "Latency of the steps run through this task's master service",
            self.latency_snapshot(),
        );

        registry.register(
            "magpie_connections_open",
            "Connections this task's server holds open, TLS handshakes in progress included",
            gauge(self.connections_open.load(Ordering::Relaxed)),
        );
        registry.register(
            "magpie_connections_refused",
            "Connections this task's server closed as it accepted them, past --max-connections",
            counter(self.connections_refused.load(Ordering::Relaxed)),
        );
        registry.register(
            "magpie_incoming_request_bytes",
            "Bytes the request messages this task's server is receiving reserve (their \
             announced lengths), at most --incoming-request-bytes",
            gauge(self.incoming_bytes.load(Ordering::Relaxed)),
        );
        registry.register(
            "magpie_incoming_requests_refused",
            "Calls this task's server failed with RESOURCE_EXHAUSTED because their message \
             would pass --incoming-request-bytes",
            counter(self.incoming_refused.load(Ordering::Relaxed)),
        );

        let worker = server.worker();
        let stats = worker.stats();
        registry.register(
            "magpie_partition_steps",
            "Partition steps this task's worker ran (for any master), successful or not",
            counter(stats.steps),
        );
        registry.register(
            "magpie_staged_partition_steps",
            "Partition steps this task's worker ran in two stages (a task on a cycle through \
             other tasks)",
            counter(stats.staged_steps),
        );
        registry.register(
            "magpie_sessions_open",
            "Sessions remote clients hold open on this task's master",
            gauge(open_sessions as u64),
        );
        registry.register(
            "magpie_rendezvous_entries",
            "Rendezvous entries (tensors delivered, receivers waiting) not matched yet",
            gauge(stats.pending_rendezvous as u64),
        );
        registry.register(
            "magpie_rendezvous_incoming_bytes",
            "Bytes reserved in the rendezvous for tensors still arriving (a part of \
             magpie_rendezvous_bytes)",
            gauge(stats.incoming_rendezvous_bytes as u64),
        );
        let refused = by_code(&self.refused, "code", "resource_exhausted");
        registry.register(
            "magpie_tensors_refused",
            "Tensors sent to this task that it refused, by gRPC code (resource_exhausted: \
             past a rendezvous limit)",
            refused,
        );
        registry.register(
            "magpie_rendezvous_bytes",
            "Bytes of tensors delivered to the rendezvous and not received yet, and of \
             tensors still arriving",
            gauge(stats.pending_rendezvous_bytes as u64),
        );
        registry.register(
            "magpie_rendezvous_unclaimed_bytes",
            "Part of the rendezvous bytes delivered for steps not started on this task",
            gauge(stats.unclaimed_rendezvous_bytes as u64),
        );

        let sent = Family::<[(&'static str, String); 1], Counter>::default();
        let received = Family::<[(&'static str, String); 1], Counter>::default();
        for p in self.peers.iter() {
            let s = p.sent.load(Ordering::Relaxed);
            let r = p.received.load(Ordering::Relaxed);
            if p.name != "unknown" || s > 0 {
                sent.get_or_create(&[("peer", p.name.clone())]).inc_by(s);
            }
            if p.name != "unknown" || r > 0 {
                received
                    .get_or_create(&[("peer", p.name.clone())])
                    .inc_by(r);
            }
        }
        registry.register(
            "magpie_peer_sent_bytes",
            "Bytes of tensor content this task sent to each peer task",
            sent,
        );
        registry.register(
            "magpie_peer_received_bytes",
            "Bytes of tensor content this task received from each peer task",
            received,
        );

        let traffic = self.tensor_traffic();
        registry.register(
            "magpie_tensor_requests_received",
            "Requests that carried tensors into this task (SendTensor streams, SendTensors \
             requests of several small tensors)",
            counter(traffic.requests),
        );
        registry.register(
            "magpie_tensors_received",
            "Tensors the SendTensor and SendTensors requests carried into this task",
            counter(traffic.tensors),
        );

        let pool = worker.pool();
        registry.register(
            "magpie_scheduler_workers",
            "Threads of the task's scheduler pool",
            gauge(pool.num_workers() as u64),
        );
        registry.register(
            "magpie_scheduler_queued_jobs",
            "Jobs queued in the task's scheduler and not taken by a worker yet",
            gauge(pool.queued_jobs() as u64),
        );
        let steals = pool.steal_stats();
        let stolen = Family::<[(&'static str, &'static str); 1], Counter>::default();
        stolen
            .get_or_create(&[("group", "local")])
            .inc_by(steals.local);
        stolen
            .get_or_create(&[("group", "remote")])
            .inc_by(steals.remote);
        registry.register(
            "magpie_scheduler_steals",
            "Jobs scheduler workers stole from each other, by whether the victim was in \
             the thief's steal group",
            stolen,
        );

        let limit = Family::<[(&'static str, String); 1], Gauge>::default();
        let in_use = Family::<[(&'static str, String); 1], Gauge>::default();
        for d in worker.devices() {
            let name = d.name().to_string();
            if let Some(l) = d.memory_limit() {
                limit
                    .get_or_create(&[("device", name.clone())])
                    .set(clamp(l));
            }
            if let Some(u) = d.memory_in_use() {
                in_use.get_or_create(&[("device", name)]).set(clamp(u));
            }
        }
        registry.register(
            "magpie_device_memory_limit_bytes",
            "Bytes of memory each device may hold in tensors",
            limit,
        );
        registry.register(
            "magpie_device_memory_in_use_bytes",
            "Bytes of memory each device's tensors hold now (devices that count it)",
            in_use,
        );

        let warm = WarmCpus::running_stats().unwrap_or_default();
        registry.register(
            "magpie_warm_spinners",
            "CPU-warming spinner threads of the process that run (GrpcOptions::warm_window; \
             0: off)",
            gauge(warm.spinners as u64),
        );
        registry.register(
            "magpie_warm_spinners_failed",
            "CPU-warming spinner threads of the process that ended at start because the \
             host refused to pin them or make them SCHED_IDLE",
            gauge(warm.failed as u64),
        );
        registry.register(
            "magpie_warm_wakes",
            "Times a CPU-warming spinner of the process woke from its sleep to spin",
            counter(warm.wakes),
        );
        let spun = Counter::<f64, AtomicU64>::default();
        spun.inc_by(warm.spun.as_secs_f64());
        registry.register(
            "magpie_warm_spin_seconds",
            "CPU time the process's CPU-warming spinners spent spinning (SCHED_IDLE: only \
             time no other thread wanted)",
            spun,
        );

        registry.register(
            "magpie_warm_spinners_elsewhere",
            "CPU-warming spinner threads of the process that ended at start because another \
             process's spinner holds their CPU (one spinner per CPU on the machine)",
            gauge(warm.elsewhere as u64),
        );

        let busy = BusyPollStats::now();
        registry.register(
            "magpie_busy_poll_spins",
            "Spins of the process's busy polling (GrpcOptions::busy_poll): times a runtime \
             polled its sockets without sleeping after a write",
            counter(busy.spins),
        );
        registry.register(
            "magpie_busy_poll_caught",
            "Spins of the process's busy polling that the awaited message ended",
            counter(busy.caught),
        );
        registry.register(
            "magpie_busy_poll_preempted",
            "Spins of the process's busy polling that ended because another thread wanted \
             the CPU (spinning then backs off)",
            counter(busy.preempted),
        );
        registry.register(
            "magpie_busy_poll_spinning",
            "Spinner tasks and spinning calls of the process's busy polling now",
            gauge(busy.spinning as u64),
        );

        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            // Writing into a String cannot fail; should an encoder still refuse, the
            // scrape gets what was written and the log says why.
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        text
    }

    fn latency_snapshot(&self) -> LatencySnapshot {
        let mut count = 0;
        let mut buckets = Vec::with_capacity(self.latency.len());
        for (i, n) in self.latency.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            count += n;
            let bound = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        LatencySnapshot {
            sum: self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count,
            buckets,
        }
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A counter family of `counts` (one per gRPC code, in `CODE_NAMES` order) labelled
/// `label` with the code's name: the codes counted at least once, and `always` even at
/// zero (so the series exists before its first count).
fn by_code(
    counts: &[AtomicU64; 17],
    label: &'static str,
    always: &'static str,
) -> Family<[(&'static str, &'static str); 1], Counter> {
    let family = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for (name, n) in CODE_NAMES.iter().zip(counts) {
        let n = n.load(Ordering::Relaxed);
        if n > 0 || *name == always {
            family.get_or_create(&[(label, *name)]).inc_by(n);
        }
    }
    family
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(clamp(v));
    g
}

/// The step-latency histogram as read at one scrape (per-bucket counts; the encoder
/// makes them cumulative).
#[derive(Debug)]
struct LatencySnapshot {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for LatencySnapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
