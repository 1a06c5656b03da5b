//! [`GrpcTransport`]: core's `Transport` over gRPC. One long-lived HTTP/2 channel per
//! task, connected lazily on first use and reused across steps (dropped and rebuilt
//! after a connection failure, so a restarted task is reached again); `TCP_NODELAY` on;
//! HTTP/2 keepalive; every request under a deadline. A tensor of at most
//! [`GrpcOptions::inline_tensor_bytes`] travels whole, and the small tensors ready for
//! the same peer leave together in one batch (`batch.rs` gives the protocol), on a
//! long-lived `SendTensorsStream` to the peer (`batch_stream.rs`; in a `SendTensors`
//! request each with [`GrpcOptions::send_tensors_stream`] off or a peer that lacks the
//! stream). Larger
//! tensors are streamed in chunks of [`GrpcOptions::chunk_bytes`] that slice the
//! tensor's own buffer (no copy before prost encodes each chunk); the receiving task
//! writes each chunk straight into a destination sized from the first chunk's header
//! ([`TensorAssembler`](crate::conv::TensorAssembler)).
//!
//! With [`GrpcOptions::tls`] set, every channel is TLS (the server verified against the
//! cluster CA, this task's certificate presented for mutual TLS); with
//! [`GrpcOptions::auth_token`] set, every request carries the cluster token.
//!
//! Requests run on a tokio runtime (the server's, or one the transport owns), so the
//! futures it returns can be polled by any executor.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use magpie_core::cluster::ClusterSpec;
use magpie_core::distributed::TaskServer;
use magpie_core::tensor::Tensor;
use magpie_core::transport::{
    DeviceInfo, PartitionHandle, PartitionOutput, RegisterPartition, RendezvousKey, RunPartition,
    TaskName, Transport, TransportError,
};
use magpie_core::StepId;
use parking_lot::Mutex;
use tokio::runtime::{Handle, Runtime};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::auth::Credentials;
use crate::batch::{answer_batch, batch_bytes, split, Answer, Outgoing, Queued};
use crate::batch_stream::BatchStreams;
use crate::busy_poll::BusyPoll;
use crate::coalesce::CoalescingConnector;

use crate::conv::{graph_to_wire, tensor_from_wire, tensor_to_wire, timeline_from_wire};
use crate::metrics::Metrics;
use crate::options::{runtime, GrpcOptions};
use crate::proto;
use crate::proto::worker_service_client::WorkerServiceClient;
use crate::status::{status_to_transport, CallContext};
use crate::tls::{error_chain, TlsOptions};

type Client = WorkerServiceClient<InterceptedService<Channel, Credentials>>;

/// A runtime the transport owns; shut down in the background when dropped (so dropping
/// it from inside another runtime does not panic).
pub(crate) struct OwnedRuntime(Option<Runtime>);

impl OwnedRuntime {
    pub(crate) fn new(rt: Runtime) -> OwnedRuntime {
        OwnedRuntime(Some(rt))
    }

    pub(crate) fn handle(&self) -> Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("the runtime is only taken in drop"),
        }
    }
}

impl OwnedRuntime {
    /// Shuts the runtime down, waiting up to `timeout` for its tasks to be dropped (their
    /// sockets closed) unless called from inside a runtime, where it cannot wait.
    pub(crate) fn shutdown(mut self, timeout: Duration) {
        if let Some(rt) = self.0.take() {
            if Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(timeout);
            }
        }
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// What the handles of one transport share.
pub(crate) struct Inner {
    cluster: ClusterSpec,
    options: GrpcOptions,
    handle: Handle,
    _owned: Option<OwnedRuntime>,
    channels: Mutex<HashMap<TaskName, Channel>>,
    /// Tasks that answered since their channel was made: the first answer logs "peer
    /// connected", a failure that drops the channel of one of them logs "peer lost".
    reached: Mutex<HashSet<TaskName>>,
    /// The task this transport's server hosts: requests to it are direct calls.
    local: OnceLock<(TaskName, Weak<TaskServer>)>,
    /// The hosting server's counters (bytes sent per peer), when it keeps them.
    metrics: OnceLock<Arc<Metrics>>,
    /// Small tensors waiting for their peer's next batch.
    outgoing: Outgoing,
    /// The open tensor streams, by peer.
    streams: BatchStreams,
    /// The busy polling of `handle`'s runtime, which the channels to peers report to (a
    /// hosting server's accepted connections too).
    busy: Arc<BusyPoll>,
}

/// Core's [`Transport`] over gRPC, reaching the tasks of one cluster at their addresses.
#[derive(Clone)]
pub struct GrpcTransport {
    inner: Arc<Inner>,
}

impl fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("tasks", &self.inner.cluster.tasks().len())
            .field("connected", &self.inner.channels.lock().len())
            .field("options", &self.inner.options)
            .finish()
    }
}

impl GrpcTransport {
    /// A transport with its own runtime ([`GrpcOptions::runtime_threads`] threads).
    pub fn new(cluster: ClusterSpec, options: GrpcOptions) -> std::io::Result<GrpcTransport> {
        let rt = OwnedRuntime::new(runtime(
            options.runtime_threads,
            "magpie-grpc-client",
            options.warm_window,
        )?);
        let handle = rt.handle();
        Ok(GrpcTransport::build(cluster, options, handle, Some(rt)))
    }

    /// A transport whose requests run on `handle`'s runtime (a server's).
    pub fn with_runtime(cluster: ClusterSpec, options: GrpcOptions, handle: Handle) -> Self {
        GrpcTransport::build(cluster, options, handle, None)
    }

    fn build(
        cluster: ClusterSpec,
        options: GrpcOptions,
        handle: Handle,
        owned: Option<OwnedRuntime>,
    ) -> GrpcTransport {
        let busy = BusyPoll::new(options.busy_poll, handle.metrics().num_workers());
        GrpcTransport {
            inner: Arc::new(Inner {
                cluster,
                options,
                handle,
                _owned: owned,
                channels: Mutex::new(HashMap::new()),
                reached: Mutex::new(HashSet::new()),
                local: OnceLock::new(),
                metrics: OnceLock::new(),
                outgoing: Outgoing::default(),
                streams: BatchStreams::default(),
                busy,
            }),
        }
    }

    /// The busy polling of the transport's runtime (`busy_poll.rs`): a server hosting
    /// the transport has its accepted connections report to it too.
    pub(crate) fn busy_poll(&self) -> &Arc<BusyPoll> {
        &self.inner.busy
    }

    /// Serves requests for `server`'s own task by direct calls into it (as the in-memory
    /// transport does) instead of a loopback round trip: a master reaching its own
    /// worker. Set once, by the server hosting `server`.
    pub fn serve_locally(&self, server: &Arc<TaskServer>) {
        let _ = self
            .inner
            .local
            .set((server.task().clone(), Arc::downgrade(server)));
    }

    /// Counts the bytes this transport sends into `metrics` (the hosting server's).
    pub(crate) fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// Aborts `step_id` of `session` on `task`, with `reason` when given
    /// ([`Transport::abort_step_with_reason`]).
    fn abort(
        &self,
        task: &TaskName,
        session: &str,
        step_id: StepId,
        reason: Option<(magpie_core::Code, &str)>,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        if let Some(s) = self.local(task) {
            return ready(
                s.worker()
                    .abort_step_with_reason(session, step_id, reason)
                    .map_err(|e| e.into_transport()),
            );
        }
        let req = proto::AbortStepRequest {
            task: task.to_string(),
            step_id: step_id_to_wire(step_id),
            session: session.to_string(),
            reason: reason.map(|(_, r)| r.to_string()).unwrap_or_default(),
            reason_code: reason.map_or(0, |(code, _)| crate::status::code_to_grpc(code) as i32),
        };
        self.request(task, move |mut c| async move {
            c.abort_step(req).await?;
            Ok(())
        })
    }

    fn local(&self, task: &TaskName) -> Option<Arc<TaskServer>> {
        match self.inner.local.get() {
            Some((t, s)) if t == task => s.upgrade(),
            _ => None,
        }
    }

    /// The options.
    pub fn options(&self) -> &GrpcOptions {
        &self.inner.options
    }

    /// [`call`](Self::call) under the request deadline of the options, with no step
    /// context: every request but a step's.
    fn request<T, F, Fut>(
        &self,
        task: &TaskName,
        call: F,
    ) -> BoxFuture<'static, Result<T, TransportError>>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Status>> + Send + 'static,
    {
        let deadline = self.inner.options.request_timeout;
        self.call(task, deadline, CallContext::default(), call)
    }

    /// Runs `call` on the runtime under `deadline`, with a client for `task`.
    fn call<T, F, Fut>(
        &self,
        task: &TaskName,
        deadline: Duration,
        cx: CallContext,
        call: F,
    ) -> BoxFuture<'static, Result<T, TransportError>>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Status>> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let task = task.clone();
        let task2 = task.clone();
        let join = self
            .inner
            .handle
            .spawn(attempt(inner, task, deadline, cx, call));
        async move {
            join.await.unwrap_or_else(|e| {
                Err(TransportError::Unreachable {
                    task: task2.to_string(),
                    detail: format!("the request was dropped: {e}"),
                })
            })
        }
        .boxed()
    }

    /// [`call`](Self::call) for a request whose future its caller polls at once (a
    /// step's `RunPartition`, which the master awaits beside the others): polled on a
    /// thread of the transport's runtime, the request runs in the caller's task, with no
    /// task spawned for it and no wake-up of the caller when it ends; polled anywhere
    /// else, it is spawned on the runtime as `call` does. Nothing is sent before the
    /// first poll; dropping the future drops the request (tonic resets its stream).
    fn call_in_caller<T, F, Fut>(
        &self,
        task: &TaskName,
        deadline: Duration,
        cx: CallContext,
        call: F,
    ) -> BoxFuture<'static, Result<T, TransportError>>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Status>> + Send + 'static,
    {
        let this = self.clone();
        let task = task.clone();
        async move {
            let here = Handle::try_current().is_ok_and(|h| h.id() == this.inner.handle.id());
            if here {
                attempt(Arc::clone(&this.inner), task, deadline, cx, call).await
            } else {
                this.call(&task, deadline, cx, call).await
            }
        }
        .boxed()
    }
}

impl GrpcTransport {
    /// Files a small tensor for `task`'s next `SendTensors` request (`batch.rs`), and
    /// spawns that request's flush when none is scheduled. The tensor is on its way
    /// when this returns; the future yields its own answer.
    fn send_inline(
        &self,
        task: &TaskName,
        session: &str,
        key: RendezvousKey,
        wire: proto::TensorProto,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let (answer, rx) = futures::channel::oneshot::channel();
        let queued = Queued {
            bytes: wire.content.len(),
            tensor: proto::InlineTensor {
                step_id: step_id_to_wire(key.step_id),
                session: session.to_string(),
                edge: key.edge,
                tensor: Some(wire),
            },
            answer,
        };
        if self.inner.outgoing.file(task, queued) {
            let flush = Flush {
                inner: Arc::clone(&self.inner),
                task: task.clone(),
                taken: false,
            };
            drop(self.inner.handle.spawn(flush.run()));
        }
        let task = task.to_string();
        async move {
            rx.await.unwrap_or_else(|_| {
                Err(TransportError::Unreachable {
                    task,
                    detail: "the request was dropped (the transport's runtime stopped)".into(),
                })
            })
        }
        .boxed()
    }
}

/// The flush of one peer's queued tensors. Dropped before it ran (a runtime that shuts
/// down drops its tasks unpolled), it still takes the queue, so every tensor filed is
/// answered (the request was dropped) and the next one schedules a flush again.
struct Flush {
    inner: Arc<Inner>,
    task: TaskName,
    /// The queue was taken: the flush answers its tensors.
    taken: bool,
}

impl Drop for Flush {
    fn drop(&mut self) {
        if !self.taken {
            drop(self.inner.outgoing.take(&self.task));
        }
    }
}

impl Flush {
    /// Sends every tensor queued for the peer now, in `SendTensors` requests of at most
    /// [`batch_bytes`] of content, and answers each.
    async fn run(mut self) {
        let queued = self.inner.outgoing.take(&self.task);
        self.taken = true;
        flush(&self.inner, &self.task, queued).await;
    }
}

/// Sends `queued` to `task` in `SendTensors` requests of at most [`batch_bytes`] of
/// content, and answers each tensor.
async fn flush(inner: &Arc<Inner>, task: &TaskName, queued: Vec<Queued>) {
    let mut batches = split(queued, batch_bytes(inner.options.max_message_bytes));
    if batches.len() == 1 {
        if let Some(batch) = batches.pop() {
            send_batch(inner, task, batch).await;
        }
    } else {
        let all = batches.into_iter().map(|b| send_batch(inner, task, b));
        futures::future::join_all(all).await;
    }
}

/// One batch of `batch`'s tensors to `task`: on the peer's tensor stream, or in a
/// `SendTensors` request (the option off, a peer without the stream); each tensor is
/// answered with its own result, or with the batch's error when it failed as a whole.
async fn send_batch(inner: &Arc<Inner>, task: &TaskName, batch: Vec<Queued>) {
    let n = batch.len();
    let mut tensors = Vec::with_capacity(n);
    let mut answers = Vec::with_capacity(n);
    for q in batch {
        tensors.push(q.tensor);
        answers.push(Answer {
            tx: q.answer,
            bytes: q.bytes,
        });
    }
    let request = proto::SendTensorsRequest {
        task: task.to_string(),
        source: inner
            .local
            .get()
            .map(|(t, _)| t.to_string())
            .unwrap_or_default(),
        tensors,
        batch: 0,
    };
    let (request, answers) = if inner.options.send_tensors_stream {
        match inner.streams.send(inner, task, request, answers) {
            Ok(()) => return,
            Err(back) => back,
        }
    } else {
        (request, answers)
    };
    send_unary(inner, task, request, answers).await;
}

/// `request` to `task` in a `SendTensors` request, its tensors answered from the
/// response.
pub(crate) async fn send_unary(
    inner: &Arc<Inner>,
    task: &TaskName,
    mut request: proto::SendTensorsRequest,
    answers: Vec<Answer>,
) {
    request.batch = 0;
    let deadline = inner.options.request_timeout;
    let answer = attempt(
        Arc::clone(inner),
        task.clone(),
        deadline,
        CallContext::default(),
        move |mut c| async move { Ok(c.send_tensors(request).await?.into_inner()) },
    )
    .await;
    answer_batch(
        task,
        answers,
        answer.map(|r| r.results),
        inner.metrics.get().map(|m| &**m),
    );
}

/// One request to `task` under `deadline`, on the transport's runtime: the client's
/// channel is made or reused, and a failure that means the peer is gone drops it.
async fn attempt<T, F, Fut>(
    inner: Arc<Inner>,
    task: TaskName,
    deadline: Duration,
    cx: CallContext,
    call: F,
) -> Result<T, TransportError>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let client = inner.client(&task)?;
    match tokio::time::timeout(deadline, call(client)).await {
        Ok(Ok(v)) => {
            inner.answered(&task);
            Ok(v)
        }
        Ok(Err(status)) => {
            let max = inner.options.max_message_bytes;
            let status = crate::message_limit::map_message_limit(status, max);
            let e = status_to_transport(&task, &status, &cx);
            if matches!(e, TransportError::Unreachable { .. }) {
                inner.forget(&task, &e);
            } else {
                inner.answered(&task);
            }
            Err(e)
        }
        Err(_) => {
            let e = TransportError::NoAnswer {
                task: task.to_string(),
                waited: deadline,
            };
            inner.forget(&task, &e);
            Err(e)
        }
    }
}

impl Inner {
    /// The options.
    pub(crate) fn options(&self) -> &GrpcOptions {
        &self.options
    }

    /// The runtime requests run on.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The hosting server's counters, when it keeps them.
    pub(crate) fn metrics(&self) -> Option<Arc<Metrics>> {
        self.metrics.get().cloned()
    }

    /// The open tensor streams.
    pub(crate) fn streams(&self) -> &BatchStreams {
        &self.streams
    }

    /// The client of `task`, on its cached channel (created lazily; must run on the
    /// runtime).
    pub(crate) fn client(&self, task: &TaskName) -> Result<Client, TransportError> {
        let channel = {
            let mut channels = self.channels.lock();
            match channels.get(task) {
                Some(c) => c.clone(),
                None => {
                    let c = self.connect(task)?;
                    channels.insert(task.clone(), c.clone());
                    c
                }
            }
        };
        let max = self.options.max_message_bytes;
        let credentials = Credentials::new(self.options.auth_token.clone());
        Ok(WorkerServiceClient::with_interceptor(channel, credentials)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max))
    }

    fn connect(&self, task: &TaskName) -> Result<Channel, TransportError> {
        let unreachable = |detail: String| TransportError::Unreachable {
            task: task.to_string(),
            detail,
        };
        let address = self
            .cluster
            .address(task)
            .map_err(|e| unreachable(e.to_string()))?;
        // Writes of one scheduler turn leave in one system call (`coalesce.rs`): a
        // request's HEADERS and DATA frames in one write instead of two.
        Ok(endpoint(address, &self.options, self.options.tls.as_ref())
            .map_err(|e| unreachable(format!("bad address {address:?}: {e}")))?
            .connect_with_connector_lazy(
                CoalescingConnector::new(true).busy_poll(Arc::clone(&self.busy)),
            ))
    }

    /// Drops `task`'s channel after a failure: the next request connects afresh. Logs
    /// "peer lost" when `task` had answered on it.
    pub(crate) fn forget(&self, task: &TaskName, why: &TransportError) {
        self.channels.lock().remove(task);
        if self.reached.lock().remove(task) {
            tracing::warn!(task = %self.me(), peer = %task, error = %why, "peer lost");
        }
    }

    /// Notes that `task` answered; its first answer since its channel was made logs
    /// "peer connected".
    pub(crate) fn answered(&self, task: &TaskName) {
        let mut reached = self.reached.lock();
        if !reached.contains(task) {
            reached.insert(task.clone());
            drop(reached);
            tracing::info!(task = %self.me(), peer = %task, "peer connected");
        }
    }

    /// The task this transport serves, for logs ("client" for a client's transport).
    fn me(&self) -> String {
        self.local
            .get()
            .map_or_else(|| "client".to_string(), |(t, _)| t.to_string())
    }
}

/// The endpoint of `address` (`host:port`) with the transport's settings: TLS with
/// `tls`'s client side when given, plaintext otherwise.
pub(crate) fn endpoint(
    address: &str,
    o: &GrpcOptions,
    tls: Option<&TlsOptions>,
) -> Result<Endpoint, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep =
        Endpoint::from_shared(format!("{scheme}://{address}")).map_err(|e| error_chain(&e))?;
    if let Some(tls) = tls {
        ep = ep
            .tls_config(tls.client_config(o.connect_timeout))
            .map_err(|e| format!("TLS settings: {}", error_chain(&e)))?;
    }
    Ok(ep
        .connect_timeout(o.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(o.keepalive_interval)
        .keep_alive_timeout(o.keepalive_timeout)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(WINDOW))
        .initial_connection_window_size(Some(2 * WINDOW)))
}

/// HTTP/2 flow-control window: large, so a big tensor is not throttled by round trips.
pub(crate) const WINDOW: u32 = 16 << 20;

/// A step id on the wire: its 16 bytes.
pub(crate) fn step_id_to_wire(id: StepId) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&id.to_bytes())
}

fn ready<T: Send + 'static>(
    r: Result<T, TransportError>,
) -> BoxFuture<'static, Result<T, TransportError>> {
    futures::future::ready(r).boxed()
}

fn bad_request(task: &TaskName, detail: String) -> TransportError {
    TransportError::Remote {
        task: task.to_string(),
        detail,
        code: magpie_core::Code::InvalidArgument,
    }
}

impl Transport for GrpcTransport {
    fn list_devices(
        &self,
        task: &TaskName,
    ) -> BoxFuture<'static, Result<Vec<DeviceInfo>, TransportError>> {
        if let Some(s) = self.local(task) {
            return ready(Ok(s.worker().device_infos()));
        }
        let req = proto::ListDevicesRequest {
            task: task.to_string(),
        };
        let t = task.clone();
        self.request(task, move |mut c| async move {
            let r = c.list_devices(req).await?.into_inner();
            r.devices
                .into_iter()
                .map(|d| {
                    let name = magpie_core::graph::DeviceName::parse(&d.name).map_err(|e| {
                        Status::internal(format!("task {t} listed a bad device name: {e}"))
                    })?;
                    Ok(DeviceInfo {
                        name,
                        description: d.description,
                        memory_limit: Some(d.memory_limit).filter(|m| *m > 0),
                    })
                })
                .collect()
        })
    }

    fn register_partition(
        &self,
        task: &TaskName,
        request: RegisterPartition,
    ) -> BoxFuture<'static, Result<PartitionHandle, TransportError>> {
        if let Some(s) = self.local(task) {
            return ready(
                s.worker()
                    .register_partition(request)
                    .map_err(|e| e.into_transport()),
            );
        }
        if request.shared.is_some() {
            return ready(Err(bad_request(
                task,
                "a shared partition is registered only on a task of this process".into(),
            )));
        }
        let graph = match graph_to_wire(&request.graph) {
            Ok(g) => g,
            Err(e) => return ready(Err(bad_request(task, e.to_string()))),
        };
        let req = proto::RegisterPartitionRequest {
            task: task.to_string(),
            session: request.session,
            graph: Some(graph),
            feeds: request.feeds,
            fetches: request.fetches,
            targets: request.targets,
        };
        self.request(task, move |mut c| async move {
            Ok(PartitionHandle(
                c.register_partition(req).await?.into_inner().handle,
            ))
        })
    }

    /// The server's own task, served by direct calls ([`GrpcTransport::serve_locally`]).
    fn is_in_process(&self, task: &TaskName) -> bool {
        self.local(task).is_some()
    }

    /// Yes: a send to this process's task is delivered in the call, and one to another
    /// task is spawned on the runtime at once (see `call`).
    fn sends_eagerly(&self) -> bool {
        true
    }

    fn run_partition(
        &self,
        task: &TaskName,
        request: RunPartition,
    ) -> BoxFuture<'static, Result<PartitionOutput, TransportError>> {
        if let Some(s) = self.local(task) {
            // A direct call: the step runs on the task's pool, no thread waits for it, and
            // dropping the future aborts it.
            return async move {
                s.worker()
                    .run_partition_async(request, None)
                    .await
                    .map_err(|e| e.into_transport())
            }
            .boxed();
        }
        let feeds = match request
            .feeds
            .iter()
            .map(tensor_to_wire)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(f) => f,
            Err(e) => return ready(Err(bad_request(task, e.to_string()))),
        };
        let cx = CallContext {
            handle: Some(request.handle.0.clone()),
            step_id: Some(request.step_id),
        };
        let req = proto::RunPartitionRequest {
            task: task.to_string(),
            handle: request.handle.0,
            session: request.session,
            step_id: step_id_to_wire(request.step_id),
            feeds,
            timeout_ms: u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX),
            trace: request.trace,
        };
        let deadline = request
            .timeout
            .saturating_add(self.inner.options.step_grace);
        let t = task.clone();
        self.call_in_caller(task, deadline, cx, move |mut c| async move {
            let r = c.run_partition(req).await?.into_inner();
            let tensors = r
                .fetches
                .iter()
                .map(|p| {
                    tensor_from_wire(p).map_err(|e| {
                        Status::internal(format!("task {t} returned a bad tensor: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let timeline = r
                .timeline
                .map(|tl| timeline_from_wire(&tl))
                .transpose()
                .map_err(|e| Status::internal(format!("task {t} returned a bad timeline: {e}")))?;
            Ok(PartitionOutput { tensors, timeline })
        })
    }

    fn send(
        &self,
        task: &TaskName,
        session: &str,
        key: RendezvousKey,
        tensor: Tensor,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        if let Some(s) = self.local(task) {
            return ready(
                s.worker()
                    .deliver(session, key, tensor)
                    .map_err(|e| e.into_transport()),
            );
        }
        // The content shares the tensor's buffer: the chunks below are slices of it.
        let wire = match tensor_to_wire(&tensor) {
            Ok(w) => w,
            Err(e) => return ready(Err(bad_request(task, e.to_string()))),
        };
        drop(tensor);
        let total = wire.content.len();
        let inline = self.inner.options.inline_tensor_bytes;
        if inline > 0
            && total <= inline
            && total <= batch_bytes(self.inner.options.max_message_bytes)
        {
            return self.send_inline(task, session, key, wire);
        }
        let chunk = self.inner.options.chunk_bytes.max(1);
        let source = self
            .inner
            .local
            .get()
            .map(|(t, _)| t.to_string())
            .unwrap_or_default();
        let mut chunks = Vec::with_capacity(total / chunk + 1);
        let mut at = 0;
        loop {
            let end = (at + chunk).min(total);
            let content = wire.content.slice(at..end);
            chunks.push(if at == 0 {
                proto::SendTensorChunk {
                    task: task.to_string(),
                    step_id: step_id_to_wire(key.step_id),
                    session: session.to_string(),
                    edge: key.edge.clone(),
                    dtype: wire.dtype,
                    dims: wire.dims.clone(),
                    total_bytes: total as u64,
                    content,
                    source: source.clone(),
                }
            } else {
                proto::SendTensorChunk {
                    content,
                    ..Default::default()
                }
            });
            at = end;
            if at >= total {
                break;
            }
        }
        let metrics = self.inner.metrics.get().cloned();
        let peer = task.to_string();
        self.request(task, move |mut c| async move {
            c.send_tensor(tokio_stream::iter(chunks)).await?;
            if let Some(m) = metrics {
                m.sent(&peer, total as u64);
            }
            Ok(())
        })
    }

    fn abort_step(
        &self,
        task: &TaskName,
        session: &str,
        step_id: StepId,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        self.abort(task, session, step_id, None)
    }

    /// Spawned on the transport's runtime (dropped there if it is shutting down).
    fn spawn(&self, task: BoxFuture<'static, ()>) -> Result<(), BoxFuture<'static, ()>> {
        drop(self.inner.handle.spawn(task));
        Ok(())
    }

    fn abort_step_with_reason(
        &self,
        task: &TaskName,
        session: &str,
        step_id: StepId,
        code: magpie_core::Code,
        reason: &str,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        self.abort(task, session, step_id, Some((code, reason)))
    }

    fn release_session(
        &self,
        task: &TaskName,
        session: &str,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        if let Some(s) = self.local(task) {
            s.worker().release_session(session);
            return ready(Ok(()));
        }
        let req = proto::ReleaseSessionRequest {
            task: task.to_string(),
            session: session.to_string(),
        };
        self.request(task, move |mut c| async move {
            c.release_session(req).await?;
            Ok(())
        })
    }
}
