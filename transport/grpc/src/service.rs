//! The tonic services of a task: [`WorkerService`] (core's `Transport` operations, served
//! by the task's [`Worker`](magpie_core::distributed::Worker)) and [`MasterService`]
//! (remote sessions, served by the task's [`Master`](magpie_core::distributed::Master)).
//! Plain structs over a [`TaskServer`], testable without sockets. Every request is
//! validated: malformed ones get `INVALID_ARGUMENT` (or `NOT_FOUND` for an unknown
//! session handle) with a message saying what was wrong, and nothing panics. Steps
//! (`RunStep`, `RunPartition`) await core's async paths
//! ([`MasterSession::run_async_with_options`],
//! [`Worker::run_partition_async`](magpie_core::distributed::Worker::run_partition_async))
//! on the runtime, with no thread of their own; when tonic drops a step's handler because
//! its client went away, the step's future is dropped, which aborts the step on every
//! task. The other calls into core that block (opening, extending and closing sessions,
//! registering partitions) run on tokio's blocking pool, never on the runtime's workers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, StreamExt};
use magpie_core::distributed::{MasterSession, MasterSessionOptions, TaskServer};
use magpie_core::graph::{Graph, GraphDef, NodeId, Output};
use magpie_core::limits::{Limit, LimitExceeded};
use magpie_core::session::RunOptions;
use magpie_core::tensor::Tensor;
use magpie_core::transport::{
    DeviceInfo, PartitionHandle, RegisterPartition, RendezvousKey, RunPartition,
};
use magpie_core::StepId;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::conv::{
    cluster_timeline_to_wire, graph_from_wire, tensor_from_wire, tensor_to_wire, timeline_to_wire,
    TensorAssembler,
};
use crate::handle::{handle_prefix, session_handle};
use crate::metrics::Metrics;
use crate::options::GrpcOptions;
use crate::proto;
use crate::sessions::{Reservation, SessionTable};
use crate::status::{master_to_status, status, wire_to_status, worker_to_status};

/// A device's description on the wire.
fn device_attributes(d: DeviceInfo) -> proto::DeviceAttributes {
    proto::DeviceAttributes {
        name: d.name.to_string(),
        description: d.description,
        memory_limit: d.memory_limit.unwrap_or(0),
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| status(Code::Internal, format!("the request's thread failed: {e}")))?
}

/// A limit passed, as `RESOURCE_EXHAUSTED` naming the limit and its flag.
pub(crate) fn limit_status(
    limit: Limit,
    max: impl TryInto<u64>,
    detail: impl Into<String>,
) -> Status {
    status(
        Code::ResourceExhausted,
        LimitExceeded::new(limit, max, detail).to_string(),
    )
}

/// `RESOURCE_EXHAUSTED` unless `nodes` fit under `max` nodes of `limit`.
pub(crate) fn check_nodes(
    limit: Limit,
    max: usize,
    nodes: usize,
    what: &str,
) -> Result<(), Status> {
    if nodes > max {
        return Err(limit_status(
            limit,
            max,
            format!("{what} has {nodes} nodes"),
        ));
    }
    Ok(())
}

/// A step id from the wire: 16 bytes, or `INVALID_ARGUMENT` naming the request.
fn step_id_from_wire(bytes: &[u8], request: &str) -> Result<StepId, Status> {
    StepId::from_bytes(bytes).map_err(|e| {
        status(
            Code::InvalidArgument,
            format!("{request}: bad step_id: {e}"),
        )
    })
}

/// Holds a master session in an async handler. Dropping a session's last reference
/// closes it, which waits for its tasks to release its partitions: when this holds the
/// last one, the drop happens on tokio's blocking pool, never on a runtime worker.
pub(crate) struct OffRuntime(Option<Arc<MasterSession>>);

impl OffRuntime {
    /// Holds `session` until dropped.
    pub(crate) fn new(session: Arc<MasterSession>) -> OffRuntime {
        OffRuntime(Some(session))
    }

    /// The session held.
    pub(crate) fn get(&self) -> &MasterSession {
        self.0.as_ref().expect("set until dropped")
    }
}

impl Drop for OffRuntime {
    fn drop(&mut self) {
        let last = self.0.take().and_then(Arc::into_inner);
        if let Some(session) = last {
            drop(tokio::task::spawn_blocking(move || drop(session)));
        }
    }
}

/// The worker service of one task.
#[derive(Debug, Clone)]
pub struct WorkerService {
    server: Arc<TaskServer>,
    options: GrpcOptions,
    metrics: Arc<Metrics>,
    /// Set when the server stops: every `SendTensorsStream` it serves ends.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl WorkerService {
    /// The worker service of `server`.
    pub fn new(server: Arc<TaskServer>, options: GrpcOptions) -> WorkerService {
        let metrics = Arc::new(Metrics::new(&server));
        WorkerService::with_metrics(server, options, metrics)
    }

    /// Ends every `SendTensorsStream` this service serves now and every one opened later
    /// (a server that stops: its peers' streams do not hold its shutdown).
    pub(crate) fn end_streams(&self) {
        self.stopping.send_replace(true);
    }

    /// The worker service of `server`, counting into `metrics` (the server's).
    pub(crate) fn with_metrics(
        server: Arc<TaskServer>,
        options: GrpcOptions,
        metrics: Arc<Metrics>,
    ) -> WorkerService {
        WorkerService {
            server,
            options,
            metrics,
            stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Takes or refuses each tensor of a batch on its own (one refused, say another
    /// session's step or a limit, does not fail the others, which may be other steps').
    fn take_batch(&self, r: proto::SendTensorsRequest) -> Vec<proto::SendResult> {
        r.tensors
            .into_iter()
            .map(|t| match self.take_inline(&r.source, t) {
                Ok(()) => proto::SendResult::default(),
                Err(s) => proto::SendResult {
                    code: s.code() as i32,
                    message: s.message().to_string(),
                },
            })
            .collect()
    }

    /// One batch of a `SendTensorsStream`: its answer, or the status that ends the stream (a
    /// batch for another task).
    fn stream_batch(
        &self,
        r: proto::SendTensorsRequest,
    ) -> Result<proto::SendTensorsResponse, Status> {
        self.check_task(&r.task)?;
        self.metrics.streamed_batch(r.tensors.len() as u64);
        let batch = r.batch;
        Ok(proto::SendTensorsResponse {
            results: self.take_batch(r),
            batch,
        })
    }

    /// Delivers one tensor of a `SendTensors` request, after the checks `SendTensor`
    /// makes on its header: the tensor limit, the inline limit (a larger tensor must be
    /// streamed, so that it is admitted before its destination is allocated), and the
    /// worker's admission (the session's partition here, the step's session, the
    /// rendezvous limits) before the content is copied into a tensor.
    fn take_inline(&self, source: &str, t: proto::InlineTensor) -> Result<(), Status> {
        let step_id = step_id_from_wire(&t.step_id, "SendTensors")?;
        let Some(wire) = t.tensor else {
            return Err(status(
                Code::InvalidArgument,
                format!("SendTensors: no tensor for edge {:?}", t.edge),
            ));
        };
        let bytes = wire.content.len();
        if bytes as u64 > self.options.max_tensor_bytes {
            return Err(limit_status(
                Limit::TensorBytes,
                self.options.max_tensor_bytes,
                format!("a tensor of {bytes} bytes for edge {:?}", t.edge),
            ));
        }
        let inline = self.options.inline_tensor_bytes;
        if bytes > inline {
            return Err(status(
                Code::InvalidArgument,
                format!(
                    "SendTensors: the tensor for edge {:?} has {bytes} bytes; this task takes \
                     tensors of at most {inline} bytes whole (larger ones are streamed with \
                     SendTensor)",
                    t.edge
                ),
            ));
        }
        let key = RendezvousKey {
            step_id,
            edge: t.edge,
        };
        let worker = self.server.worker();
        let reservation = worker
            .reserve(&t.session, &key, bytes)
            .map_err(|e| self.refused(source, e))?;
        let tensor = tensor_from_wire(&wire).map_err(|e| wire_to_status(&e))?;
        drop(wire);
        self.metrics.received(source, bytes as u64);
        worker
            .deliver_reserved(reservation, tensor)
            .map_err(|e| self.refused(source, e))
    }

    /// A tensor from `source` the worker refused, as a status that names the peer (the
    /// worker's error names the step, the edge and the limit), counted in the metrics.
    fn refused(&self, source: &str, e: magpie_core::distributed::WorkerError) -> Status {
        let s = worker_to_status(e);
        self.metrics.tensor_refused(s.code());
        let peer = if source.is_empty() {
            "an unnamed peer"
        } else {
            source
        };
        status(s.code(), format!("a tensor from {peer}: {}", s.message()))
    }

    fn check_task(&self, task: &str) -> Result<(), Status> {
        let me = self.server.task().to_string();
        if task != me {
            return Err(status(
                Code::Unavailable,
                format!("this server serves {me}, not {task:?}"),
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl proto::worker_service_server::WorkerService for WorkerService {
    async fn list_devices(
        &self,
        request: Request<proto::ListDevicesRequest>,
    ) -> Result<Response<proto::ListDevicesResponse>, Status> {
        self.check_task(&request.get_ref().task)?;
        let devices = self
            .server
            .worker()
            .device_infos()
            .into_iter()
            .map(device_attributes)
            .collect();
        Ok(Response::new(proto::ListDevicesResponse { devices }))
    }

    async fn register_partition(
        &self,
        request: Request<proto::RegisterPartitionRequest>,
    ) -> Result<Response<proto::RegisterPartitionResponse>, Status> {
        let r = request.into_inner();
        self.check_task(&r.task)?;
        let wire = r
            .graph
            .as_ref()
            .ok_or_else(|| status(Code::InvalidArgument, "RegisterPartition without a graph"))?;
        check_nodes(
            Limit::GraphNodes,
            self.options.max_graph_nodes,
            wire.node.len(),
            "the partition",
        )?;
        let graph = graph_from_wire(wire).map_err(|e| wire_to_status(&e))?;
        let server = Arc::clone(&self.server);
        let handle = blocking(move || {
            server
                .worker()
                .register_partition(RegisterPartition {
                    session: r.session,
                    graph,
                    feeds: r.feeds,
                    fetches: r.fetches,
                    targets: r.targets,
                    shared: None,
                })
                .map_err(worker_to_status)
        })
        .await?;
        Ok(Response::new(proto::RegisterPartitionResponse {
            handle: handle.0,
        }))
    }

    async fn run_partition(
        &self,
        request: Request<proto::RunPartitionRequest>,
    ) -> Result<Response<proto::RunPartitionResponse>, Status> {
        let r = request.into_inner();
        self.check_task(&r.task)?;
        let step_id = step_id_from_wire(&r.step_id, "RunPartition")?;
        let feeds = r
            .feeds
            .iter()
            .map(tensor_from_wire)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| wire_to_status(&e))?;
        // A master that goes away mid-step (its connection closes) makes tonic drop this
        // handler, and with it the step's future, which aborts the step here.
        let fetches = self
            .server
            .worker()
            .run_partition_async(
                RunPartition {
                    handle: PartitionHandle(r.handle),
                    session: r.session,
                    step_id,
                    feeds,
                    timeout: Duration::from_millis(r.timeout_ms.max(1)),
                    trace: r.trace,
                },
                None,
            )
            .await
            .map_err(worker_to_status);
        let fetches = fetches.inspect_err(|e| {
            tracing::warn!(
                task = %self.server.task(),
                %step_id,
                code = ?e.code(),
                error = e.message(),
                "partition step failed"
            );
        })?;
        let timeline = fetches.timeline.as_ref().map(timeline_to_wire);
        let fetches = fetches
            .tensors
            .iter()
            .map(tensor_to_wire)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| status(Code::Internal, e.to_string()))?;
        Ok(Response::new(proto::RunPartitionResponse {
            fetches,
            timeline,
        }))
    }

    async fn send_tensor(
        &self,
        request: Request<Streaming<proto::SendTensorChunk>>,
    ) -> Result<Response<proto::SendTensorResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| status(Code::InvalidArgument, "SendTensor without a chunk"))?;
        self.check_task(&first.task)?;
        let step_id = step_id_from_wire(&first.step_id, "SendTensor")?;
        let total = first.total_bytes;
        if total > self.options.max_tensor_bytes {
            return Err(limit_status(
                Limit::TensorBytes,
                self.options.max_tensor_bytes,
                format!("a tensor of {total} bytes for edge {:?}", first.edge),
            ));
        }
        let key = RendezvousKey {
            step_id,
            edge: first.edge.clone(),
        };
        // Before anything is allocated: a tensor the worker would refuse (a session with
        // no partition here, another session's step, a rendezvous limit it passes) is
        // refused now, so that such a stream holds no memory while it runs. One it takes
        // is counted against the rendezvous limits from now until it is delivered or the
        // stream ends (the reservation drops with this handler), so that all the streams
        // in progress together hold at most `--rendezvous-task-bytes`.
        let reservation = self
            .server
            .worker()
            .reserve(
                &first.session,
                &key,
                usize::try_from(total).unwrap_or(usize::MAX),
            )
            .map_err(|e| self.refused(&first.source, e))?;
        let idle = self.options.tensor_stream_idle_timeout;
        // The destination is allocated once, from the announced dtype, dims and length;
        // every chunk is copied straight into place.
        let mut tensor = TensorAssembler::new(first.dtype, &first.dims, total)
            .map_err(|e| wire_to_status(&e))?;
        tensor
            .push(&first.content)
            .map_err(|e| wire_to_status(&e))?;
        drop(first.content);
        // Every wait for a chunk has a deadline: a sender that stalls mid-tensor frees
        // the destination instead of holding it.
        loop {
            let next = tokio::time::timeout(idle, stream.message())
                .await
                .map_err(|_| {
                    limit_status(
                        Limit::TensorStreamIdle,
                        u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
                        format!(
                            "no chunk of the tensor for edge {:?} came for {idle:?} (limit in ms)",
                            first.edge
                        ),
                    )
                })??;
            let Some(c) = next else { break };
            tensor.push(&c.content).map_err(|e| wire_to_status(&e))?;
        }
        let tensor = tensor.finish().map_err(|e| wire_to_status(&e))?;
        self.metrics.received(&first.source, total);
        self.metrics.tensor_request(1);
        self.server
            .worker()
            .deliver_reserved(reservation, tensor)
            .map_err(|e| self.refused(&first.source, e))?;
        Ok(Response::new(proto::SendTensorResponse {}))
    }

    async fn send_tensors(
        &self,
        request: Request<proto::SendTensorsRequest>,
    ) -> Result<Response<proto::SendTensorsResponse>, Status> {
        let r = request.into_inner();
        self.check_task(&r.task)?;
        self.metrics.tensor_request(r.tensors.len() as u64);
        let results = self.take_batch(r);
        Ok(Response::new(proto::SendTensorsResponse {
            results,
            batch: 0,
        }))
    }

    type SendTensorsStreamStream = BoxStream<'static, Result<proto::SendTensorsResponse, Status>>;

    /// Answers each batch as it comes, in order, on the handler's own task (no task per
    /// batch); ends with the first batch for another task or undecodable message (its
    /// status), when the peer ends its side, or when this server stops.
    async fn send_tensors_stream(
        &self,
        request: Request<Streaming<proto::SendTensorsRequest>>,
    ) -> Result<Response<Self::SendTensorsStreamStream>, Status> {
        let this = self.clone();
        let mut stopping = self.stopping.subscribe();
        let answers = request
            .into_inner()
            .map(move |m| m.and_then(|r| this.stream_batch(r)))
            // Nothing after an error: its status is the stream's last word.
            .scan(false, |failed, m| {
                let go = !*failed;
                *failed |= m.is_err();
                futures::future::ready(go.then_some(m))
            });
        let stopped = async move {
            // A dropped sender (the service is gone) ends the stream too.
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        Ok(Response::new(answers.take_until(stopped).boxed()))
    }

    async fn abort_step(
        &self,
        request: Request<proto::AbortStepRequest>,
    ) -> Result<Response<proto::AbortStepResponse>, Status> {
        let r = request.into_inner();
        self.check_task(&r.task)?;
        let step_id = step_id_from_wire(&r.step_id, "AbortStep")?;
        self.server
            .worker()
            .abort_step_with_reason(
                &r.session,
                step_id,
                (!r.reason.is_empty()).then(|| {
                    let code = crate::status::code_from_grpc(tonic::Code::from_i32(r.reason_code));
                    (code, r.reason.as_str())
                }),
            )
            .map_err(worker_to_status)?;
        Ok(Response::new(proto::AbortStepResponse {}))
    }

    async fn release_session(
        &self,
        request: Request<proto::ReleaseSessionRequest>,
    ) -> Result<Response<proto::ReleaseSessionResponse>, Status> {
        let r = request.into_inner();
        self.check_task(&r.task)?;
        self.server.worker().release_session(&r.session);
        Ok(Response::new(proto::ReleaseSessionResponse {}))
    }
}

/// The master service of one task: sessions opened by remote clients.
#[derive(Debug, Clone)]
pub struct MasterService {
    server: Arc<TaskServer>,
    sessions: Arc<SessionTable>,
    options: Arc<GrpcOptions>,
    metrics: Arc<Metrics>,
    /// What the partial runs of TensorFlow's master service keep between calls.
    partial_run_bytes: Arc<crate::tf::KeptBytes>,
}

impl MasterService {
    /// The master service of `server`, with the default [`GrpcOptions`]' limits.
    pub fn new(server: Arc<TaskServer>) -> MasterService {
        MasterService::with_options(server, GrpcOptions::default())
    }

    /// The master service of `server` under `options`' limits
    /// ([`GrpcOptions::max_sessions`], [`GrpcOptions::max_graph_nodes`],
    /// [`GrpcOptions::max_extension_nodes`]).
    pub fn with_options(server: Arc<TaskServer>, options: GrpcOptions) -> MasterService {
        MasterService {
            metrics: Arc::new(Metrics::new(&server)),
            server,
            sessions: Arc::new(SessionTable::default()),
            partial_run_bytes: Arc::new(crate::tf::KeptBytes::new(options.max_partial_run_bytes)),
            options: Arc::new(options),
        }
    }

    /// The counters this service keeps (steps by outcome, their latency), which the
    /// hosting server shares with its worker service and transport.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The Prometheus text exposition of this task's metrics (see `metrics.rs`).
    pub(crate) fn render_metrics(&self) -> String {
        self.metrics.encode(&self.server, self.num_sessions())
    }

    /// A master session over `graph`, created off the runtime (it contacts every task).
    async fn open_session(
        &self,
        graph: Graph,
        options: MasterSessionOptions,
    ) -> Result<MasterSession, Status> {
        let server = Arc::clone(&self.server);
        blocking(move || {
            server
                .master()
                .create_session_with(&graph, options)
                .map_err(|e| master_to_status(&e))
        })
        .await
    }

    /// TensorFlow's master service over the same task, sharing this service's sessions
    /// (their limit and idle timeout), options and metrics.
    pub fn tensorflow(&self) -> crate::tf::TfMasterService {
        crate::tf::TfMasterService::new(
            Arc::clone(&self.server),
            Arc::clone(&self.sessions),
            Arc::clone(&self.options),
            Arc::clone(&self.metrics),
            Arc::clone(&self.partial_run_bytes),
        )
    }

    /// Open sessions (for tests).
    pub fn num_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Closes the sessions no request has used for `idle` (their clients went away
    /// without closing them); returns how many. [`GrpcServer`](crate::GrpcServer) calls
    /// this periodically when [`GrpcOptions::session_idle_timeout`] is set.
    pub async fn close_idle_sessions(&self, idle: Duration) -> usize {
        let expired = self.sessions.take_expired(idle);
        let n = expired.len();
        if n > 0 {
            let task = self.server.task().to_string();
            let closed = blocking(move || {
                let mut nodes = 0;
                for (handle, session) in expired {
                    let session_handle = handle_prefix(&handle);
                    tracing::info!(%task, %session_handle, ?idle, "closing an idle remote session");
                    nodes += session.graph().len();
                    session.close();
                }
                if nodes >= crate::trim::TRIM_NODES {
                    crate::trim::release_free_memory();
                }
                Ok(())
            })
            .await;
            if let Err(e) = closed {
                tracing::warn!(error = %e, "closing idle sessions failed");
            }
        }
        n
    }

    fn session(&self, handle: &str) -> Result<Arc<MasterSession>, Status> {
        self.sessions.get(handle).ok_or_else(|| {
            status(
                Code::NotFound,
                format!(
                    "unknown session handle {handle:?} on master {}",
                    self.server.task()
                ),
            )
        })
    }
}

impl MasterService {
    /// `RunStep` without its accounting (see the trait method).
    async fn run_step_inner(
        &self,
        r: &proto::RunStepRequest,
    ) -> Result<Response<proto::RunStepResponse>, Status> {
        let omit_placement = r.omit_placement;
        let held = OffRuntime::new(self.session(&r.session_handle)?);
        let session = held.get();
        let graph = session.graph();
        let mut feeds: Vec<(Output, Tensor)> = Vec::with_capacity(r.feeds.len());
        for f in &r.feeds {
            let out = output(graph, &f.name, "feed")?;
            let t = f.tensor.as_ref().ok_or_else(|| {
                status(
                    Code::InvalidArgument,
                    format!("feed {:?} has no tensor", f.name),
                )
            })?;
            let t = tensor_from_wire(t)
                .map_err(|e| status(Code::InvalidArgument, format!("feed {:?}: {e}", f.name)))?;
            feeds.push((out, t));
        }
        let fetches = r
            .fetches
            .iter()
            .map(|n| output(graph, n, "fetch"))
            .collect::<Result<Vec<_>, _>>()?;
        let targets = r
            .targets
            .iter()
            .map(|n| node_id(graph, n.strip_prefix('^').unwrap_or(n), "target"))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RunOptions {
            timeout: (r.timeout_ms > 0).then(|| Duration::from_millis(r.timeout_ms)),
            trace: r.trace,
            ..RunOptions::default()
        };
        // A client that goes away mid-step makes tonic drop this handler, and with it the
        // step's future, which aborts the step on every task.
        let plans = session.num_plans();
        let out = session
            .run_async_with_options(&options, &feeds, &fetches, &targets)
            .await
            .map_err(|e| master_to_status(&e))?;
        if session.num_plans() > plans && graph.len() >= crate::trim::TRIM_NODES {
            // The first step of a signature over a large graph built its plans and freed
            // what building them took: give those pages back (`trim.rs`).
            blocking(|| {
                crate::trim::release_free_memory();
                Ok(())
            })
            .await?;
        }
        let tensors = out
            .tensors
            .iter()
            .map(tensor_to_wire)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| status(Code::Internal, e.to_string()))?;
        let response = proto::RunStepResponse {
            tensors,
            step_id: crate::transport::step_id_to_wire(out.step_id),
            placement: if omit_placement {
                Vec::new()
            } else {
                out.placement
                    .iter()
                    .map(|p| format!("{}={}", p.name(), p.device))
                    .collect()
            },
            timelines: out
                .timeline
                .as_ref()
                .map(cluster_timeline_to_wire)
                .unwrap_or_default(),
        };
        // tonic would refuse to encode it with a bare OUT_OF_RANGE in the trailers; the
        // client is told which limit its fetches passed instead.
        let len = prost::Message::encoded_len(&response);
        let max = self.options.max_message_bytes;
        if len > max {
            return Err(limit_status(
                Limit::MessageBytes,
                max,
                format!(
                    "the step's response (its fetches) is {len} bytes (step {})",
                    out.step_id
                ),
            ));
        }
        Ok(Response::new(response))
    }
}

fn import(def: &GraphDef) -> Result<Graph, Status> {
    Graph::import(def).map_err(|e| status(Code::InvalidArgument, format!("invalid graph: {e}")))
}

/// `"name:index"` or `"name"` as an output of `graph`.
pub(crate) fn output(graph: &Graph, name: &str, role: &str) -> Result<Output, Status> {
    let (node, index) = match name.rsplit_once(':') {
        Some((n, i)) => match i.parse::<u32>() {
            Ok(i) => (n, i),
            Err(_) => (name, 0),
        },
        None => (name, 0),
    };
    let id = node_id(graph, node, role)?;
    Ok(id.output(index))
}

/// Admits a new session of either master service (Magpie's or TensorFlow's): its graph of
/// `nodes` nodes within `--max-graph-nodes`, and a place reserved among at most
/// `--max-sessions` open ones.
pub(crate) fn admit_session(
    sessions: &SessionTable,
    options: &GrpcOptions,
    task: impl std::fmt::Display,
    nodes: usize,
) -> Result<Reservation, Status> {
    check_nodes(
        Limit::GraphNodes,
        options.max_graph_nodes,
        nodes,
        "the session's graph",
    )?;
    let max = options.max_sessions;
    sessions.reserve(max).map_err(|open| {
        limit_status(
            Limit::Sessions,
            max,
            format!(
                "master {task} has {open} sessions open (close sessions, or let idle ones \
                 time out)"
            ),
        )
    })
}

pub(crate) fn node_id(graph: &Graph, name: &str, role: &str) -> Result<NodeId, Status> {
    graph.node_by_name(name).ok_or_else(|| {
        status(
            Code::InvalidArgument,
            format!("{role} {name:?}: no such node"),
        )
    })
}

#[tonic::async_trait]
impl proto::master_service_server::MasterService for MasterService {
    async fn create_session(
        &self,
        request: Request<proto::CreateSessionRequest>,
    ) -> Result<Response<proto::CreateSessionResponse>, Status> {
        let r = request.into_inner();
        let session_options =
            MasterSessionOptions::default().allow_soft_placement(r.allow_soft_placement);
        let wire = r.graph.unwrap_or_default();
        let reservation = admit_session(
            &self.sessions,
            &self.options,
            self.server.task(),
            wire.node.len(),
        )?;
        // Converting and validating a graph of a million nodes takes seconds: off the
        // runtime, so other requests and HTTP/2 keep-alive pings are answered meanwhile.
        // The message is freed before the graph is built (a lower peak).
        let graph = blocking(move || {
            let def = graph_from_wire(&wire).map_err(|e| wire_to_status(&e))?;
            drop(wire);
            let graph = import(&def);
            drop(def);
            // The message and its conversion were freed: give their pages back, or the
            // process keeps the peak resident (`trim.rs`).
            if graph
                .as_ref()
                .is_ok_and(|g| g.len() >= crate::trim::TRIM_NODES)
            {
                crate::trim::release_free_memory();
            }
            graph
        })
        .await?;
        // 128 random bits: a capability no other client can guess (`handle.rs`). Made
        // first: a session is never dropped on the runtime.
        let handle = session_handle(self.server.task())?;
        let session = self
            .open_session(graph, session_options)
            .await
            .inspect_err(|e| {
                tracing::warn!(
                    task = %self.server.task(),
                    code = ?e.code(),
                    error = e.message(),
                    "creating a session failed"
                );
            })?;
        let devices = session
            .devices()
            .iter()
            .cloned()
            .map(device_attributes)
            .collect();
        let nodes = session.graph().len();
        self.sessions.insert(handle.clone(), session, reservation);
        tracing::info!(
            task = %self.server.task(),
            session_handle = %handle_prefix(&handle),
            nodes,
            "session created"
        );
        let step_timeout = self.server.master().options().step_timeout;
        Ok(Response::new(proto::CreateSessionResponse {
            session_handle: handle,
            devices,
            step_timeout_ms: u64::try_from(step_timeout.as_millis()).unwrap_or(u64::MAX),
        }))
    }

    async fn extend_session(
        &self,
        request: Request<proto::ExtendSessionRequest>,
    ) -> Result<Response<proto::ExtendSessionResponse>, Status> {
        let r = request.into_inner();
        let wire = r.nodes.unwrap_or_default();
        let added = wire.node.len();
        check_nodes(
            Limit::ExtensionNodes,
            self.options.max_extension_nodes,
            added,
            "the extension",
        )?;
        // The new nodes join the session's graph (all or nothing): its plans and its
        // registered partitions stay valid, and no task needs to be reached. Validating
        // a large extension takes seconds of CPU: off the runtime, like dropping the
        // session (which can release its partitions, blocking).
        let session = self.session(&r.session_handle)?;
        let max_graph_nodes = self.options.max_graph_nodes;
        let extended = blocking(move || {
            let has = session.graph().len();
            let extended = check_nodes(
                Limit::GraphNodes,
                max_graph_nodes,
                has.saturating_add(added),
                &format!("the session's graph of {has} nodes extended by {added}"),
            )
            .and_then(|()| graph_from_wire(&wire).map_err(|e| wire_to_status(&e)))
            .and_then(|extra| {
                drop(wire);
                session.graph().extend(&extra).map_err(|e| {
                    status(
                        Code::InvalidArgument,
                        format!("invalid graph extension: {e}"),
                    )
                })
            });
            drop(session);
            Ok(extended)
        })
        .await?;
        let session_handle = handle_prefix(&r.session_handle);
        match &extended {
            Ok(_) => tracing::info!(
                task = %self.server.task(),
                %session_handle,
                added,
                "session extended"
            ),
            Err(e) => tracing::warn!(
                task = %self.server.task(),
                %session_handle,
                added,
                error = e.message(),
                "extending a session failed"
            ),
        }
        extended?;
        Ok(Response::new(proto::ExtendSessionResponse {}))
    }

    async fn run_step(
        &self,
        request: Request<proto::RunStepRequest>,
    ) -> Result<Response<proto::RunStepResponse>, Status> {
        let started = Instant::now();
        let task = self.server.task();
        let r = request.into_inner();
        let session_handle = handle_prefix(&r.session_handle);
        tracing::debug!(%task, %session_handle, "step starting");
        let result = self.run_step_inner(&r).await;
        let took = started.elapsed();
        match &result {
            Ok(r) => {
                let step_id = StepId::from_bytes(&r.get_ref().step_id).ok();
                tracing::debug!(%task, %session_handle, ?step_id, ?took, "step done");
                self.metrics.step(Code::Ok, took);
            }
            Err(e) => {
                tracing::warn!(
                    %task,
                    %session_handle,
                    code = ?e.code(),
                    error = e.message(),
                    ?took,
                    "step failed"
                );
                self.metrics.step(e.code(), took);
            }
        }
        result
    }

    async fn close_session(
        &self,
        request: Request<proto::CloseSessionRequest>,
    ) -> Result<Response<proto::CloseSessionResponse>, Status> {
        let handle = request.into_inner().session_handle;
        let session = self.sessions.remove(&handle).ok_or_else(|| {
            status(
                Code::NotFound,
                format!(
                    "unknown session handle {handle:?} on master {}",
                    self.server.task()
                ),
            )
        })?;
        let nodes = session.graph().len();
        blocking(move || {
            session.close();
            drop(session);
            if nodes >= crate::trim::TRIM_NODES {
                crate::trim::release_free_memory();
            }
            Ok(())
        })
        .await?;
        tracing::info!(
            task = %self.server.task(),
            session_handle = %handle_prefix(&handle),
            nodes,
            "session closed"
        );
        Ok(Response::new(proto::CloseSessionResponse {}))
    }

    async fn list_devices(
        &self,
        _request: Request<proto::ListClusterDevicesRequest>,
    ) -> Result<Response<proto::ListDevicesResponse>, Status> {
        let server = Arc::clone(&self.server);
        let devices = blocking(move || {
            server
                .master()
                .cluster_devices()
                .map_err(|e| master_to_status(&e))
        })
        .await?;
        Ok(Response::new(proto::ListDevicesResponse {
            devices: devices.into_iter().map(device_attributes).collect(),
        }))
    }

    async fn reset(
        &self,
        request: Request<proto::ResetRequest>,
    ) -> Result<Response<proto::ResetResponse>, Status> {
        let cleared = self.server.reset(&request.into_inner().container);
        Ok(Response::new(proto::ResetResponse {
            cleared: cleared as u64,
        }))
    }
}
