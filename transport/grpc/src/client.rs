//! [`connect`]: a session on the master at a `grpc://host:port` (plaintext) or
//! `grpcs://host:port` (TLS, the server verified against [`GrpcOptions::tls`]'s CA)
//! target. The master places unpinned nodes on its own default device and runs each step
//! over the cluster; the client names feeds, fetches and targets by node name over the
//! wire, and presents [`GrpcOptions::auth_token`] with every request when set.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use magpie_core::distributed::{ClusterTimeline, MasterSessionOptions};
use magpie_core::graph::{Graph, GraphError, NodeId, Output};
use magpie_core::session::RunOptions;
use magpie_core::tensor::Tensor;
use parking_lot::Mutex;
use tokio::runtime::Runtime;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::auth::Credentials;
use crate::busy_poll::BusyPoll;
use crate::coalesce::CoalescingConnector;

use crate::conv::{cluster_timeline_from_wire, graph_to_wire, tensor_from_wire, tensor_to_wire};
use crate::error::GrpcError;
use crate::options::{warm_on_park, GrpcOptions};
use crate::proto;
use crate::proto::master_service_client::MasterServiceClient;
use crate::transport::endpoint;
use crate::warm::{WarmCpus, WarmLenders, WarmLent};

type Client = MasterServiceClient<InterceptedService<Channel, Credentials>>;

/// A step's signature by name: feeds, fetches, targets.
type Signature = (Vec<String>, Vec<String>, Vec<String>);

/// A step's request as [`RemoteSession`] sends it, with what the answer needs.
struct StepRequest {
    request: proto::RunStepRequest,
    /// The client's backstop deadline for the answer.
    deadline: Duration,
    /// The placement of the signature, when an earlier step brought it.
    known: Option<Placement>,
    /// The signature, kept (only when its placement is not `known`) to record the
    /// placement this step's answer brings.
    signature: Option<Signature>,
}

/// A step's feeds, fetches and targets by name, owned: what [`RemoteSession`]'s
/// requests are built from without copying the names again.
struct Named<'t> {
    feeds: Vec<(String, &'t Tensor)>,
    fetches: Vec<String>,
    targets: Vec<String>,
}

impl<'t> Named<'t> {
    /// Owned copies of borrowed names.
    fn of(feeds: &'t [(&str, Tensor)], fetches: &[&str], targets: &[&str]) -> Named<'t> {
        Named {
            feeds: feeds.iter().map(|(n, t)| (n.to_string(), t)).collect(),
            fetches: fetches.iter().map(|s| s.to_string()).collect(),
            targets: targets.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Where each node of a step ran: `(node, device)`.
pub type Placement = Arc<Vec<(String, String)>>;

/// What [`RemoteSession::run_named`] returns.
#[derive(Clone, Debug)]
pub struct RemoteRunOutput {
    /// The fetched tensors, in fetch order.
    pub tensors: Vec<Tensor>,
    /// The master's step id (128 random bits).
    pub step_id: magpie_core::StepId,
    /// Where each node of the step ran: `(node, device)`. The same for every step of a
    /// signature (feeds, fetches, targets): the master sends it once per signature and
    /// the session shares it between that signature's steps.
    pub placement: Placement,
    /// Every task's node records on the master's clock, when the step was traced
    /// ([`RemoteSession::run_named_with_options`] with `trace`).
    pub timeline: Option<ClusterTimeline>,
}

/// A session on a remote master, over gRPC. Dropping it closes the session.
pub struct RemoteSession {
    target: String,
    handle: String,
    /// Set by `close`: no request is sent from then on.
    closed: std::sync::atomic::AtomicBool,
    devices: Vec<String>,
    /// The master's default step deadline (`None` from a master that does not say).
    step_timeout: Option<Duration>,
    graph: Graph,
    /// Nodes of `graph` the master knows.
    sent: tokio::sync::Mutex<usize>,
    /// The placement of each signature run so far (feeds, fetches, targets by name).
    placements: Mutex<HashMap<Signature, Placement>>,
    client: Client,
    /// Where `async_client` connects.
    endpoint: Endpoint,
    /// The client of the async calls, on the shared [`async_runtime`]; made on first use.
    async_client: OnceLock<Client>,
    /// This session's warm window, lent to the shared [`async_runtime`] from its first
    /// async call until the session drops (`None` inside: no window).
    async_warm: OnceLock<Option<WarmLent>>,
    options: GrpcOptions,
    /// The client's own runtime, driven by the thread of each blocking call; taken only
    /// by `drop`.
    runtime: Option<Runtime>,
    /// The busy polling of the blocking steps, which spin inside the call
    /// ([`BusyPoll::spin_first`]).
    busy: Arc<BusyPoll>,
}

impl fmt::Debug for RemoteSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The handle is a capability: `Debug` (and so logs and panics) shows a prefix only.
        f.debug_struct("RemoteSession")
            .field("target", &self.target)
            .field("handle", &crate::handle::handle_prefix(&self.handle))
            .finish()
    }
}

/// Opens a session over `graph` on the master at `target` (`grpc://host:port`), with
/// the default options (plaintext, no token).
///
/// # Errors
///
/// See [`connect_with`].
pub fn connect(target: &str, graph: &Graph) -> Result<RemoteSession, GrpcError> {
    connect_with(target, graph, GrpcOptions::default())
}

/// [`connect`] with explicit options (deadlines, message limits, TLS, the cluster token).
/// `grpcs://host:port` needs [`GrpcOptions::tls`] with a CA; `grpc://host:port` is
/// plaintext and refuses TLS options (so a typo never sends the token in the clear).
///
/// # Errors
///
/// [`GrpcError::Target`] for a target of another scheme or a scheme that does not match
/// the TLS options; [`GrpcError::Status`] when the master refuses or cannot be reached
/// (`UNAUTHENTICATED` without the right token; a hint when the server seems to speak TLS
/// and the client does not, or the reverse).
pub fn connect_with(
    target: &str,
    graph: &Graph,
    options: GrpcOptions,
) -> Result<RemoteSession, GrpcError> {
    connect_session(target, graph, options, MasterSessionOptions::default())
}

/// [`connect_with`], opening the session with `session`'s options (soft placement),
/// which the master applies to every step of the session.
///
/// # Errors
///
/// As [`connect_with`].
pub fn connect_session(
    target: &str,
    graph: &Graph,
    options: GrpcOptions,
    session: MasterSessionOptions,
) -> Result<RemoteSession, GrpcError> {
    let bad = |detail: String| GrpcError::Target {
        target: target.to_string(),
        detail,
    };
    let (address, tls) = if let Some(a) = target.strip_prefix("grpc://") {
        if options.tls.is_some() {
            return Err(bad(
                "grpc:// is plaintext but TLS options were given: use grpcs://<host:port>".into(),
            ));
        }
        (a, None)
    } else if let Some(a) = target.strip_prefix("grpcs://") {
        match &options.tls {
            Some(t) if t.has_ca() => (a, Some(t)),
            _ => {
                return Err(bad(
                    "grpcs:// needs a CA certificate to verify the server: \
                     GrpcOptions::tls with TlsOptions::with_ca_file (ClientSession::connect \
                     reads MAGPIE_TLS_CA)"
                        .into(),
                ))
            }
        }
    } else {
        return Err(bad(
            "expected grpc://<host:port> or grpcs://<host:port>".into()
        ));
    };
    // The thread of each blocking call drives this runtime; it touches the warm window
    // when it waits for the response, so the response wakes a running CPU.
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    warm_on_park(&mut builder, options.warm_window);
    let runtime = builder.build().map_err(|e| GrpcError::Io {
        what: "starting the client's runtime".into(),
        detail: e.to_string(),
    })?;
    let ep = endpoint(address, &options, tls).map_err(bad)?;
    let client = master_client(&runtime, &ep, &options, None);
    let def = graph.to_graph_def();
    let n = def.nodes.len();
    let req = proto::CreateSessionRequest {
        graph: Some(graph_to_wire(&def)?),
        allow_soft_placement: session.allow_soft_placement,
    };
    let mut c = client.clone();
    let r = block(
        &runtime,
        target,
        options.max_message_bytes,
        options.create_session_timeout,
        async move { c.create_session(req).await },
    )?;
    Ok(RemoteSession {
        target: target.to_string(),
        handle: r.session_handle,
        closed: std::sync::atomic::AtomicBool::new(false),
        devices: r.devices.into_iter().map(|d| d.name).collect(),
        step_timeout: (r.step_timeout_ms > 0).then(|| Duration::from_millis(r.step_timeout_ms)),
        graph: graph.clone(),
        sent: tokio::sync::Mutex::new(n),
        placements: Mutex::new(HashMap::new()),
        client,
        endpoint: ep,
        async_client: OnceLock::new(),
        async_warm: OnceLock::new(),
        busy: BusyPoll::new(options.busy_poll, 1),
        options,
        runtime: Some(runtime),
    })
}

/// A master client over a lazily connected channel on `runtime`, whose connection reports
/// to `busy` when given (a runtime that runs by itself; a blocking call's own runtime
/// spins inside the call instead).
fn master_client(
    runtime: &Runtime,
    ep: &Endpoint,
    options: &GrpcOptions,
    busy: Option<Arc<BusyPoll>>,
) -> Client {
    // The connector whose writes of one scheduler turn leave in one system call: a
    // step's request in one write instead of two (`coalesce.rs`).
    let mut connector = CoalescingConnector::new(true);
    if let Some(busy) = busy {
        connector = connector.busy_poll(busy);
    }
    let channel = {
        let _guard = runtime.enter();
        ep.connect_with_connector_lazy(connector)
    };
    let max = options.max_message_bytes;
    let credentials = Credentials::new(options.auth_token.clone());
    MasterServiceClient::with_interceptor(channel, credentials)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max)
}

/// The warm windows of the sessions that use [`async_runtime`], which touches the
/// longest of them each time its thread parks (waits for responses).
static ASYNC_WARM: WarmLenders = WarmLenders::new();

/// The runtime of every remote session's async calls: one worker thread, started by the
/// first async call of the process. A session's own runtime runs only while a blocking
/// call drives it, so the futures of `run_async` (which any executor may poll) need one
/// that runs by itself. It keeps the CPUs warm as a session's own runtime does, with the
/// windows its sessions lend it ([`ASYNC_WARM`]), while any does.
fn async_runtime() -> Result<&'static Runtime, String> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("magpie-grpc-client")
                .enable_all()
                .on_thread_park(|| ASYNC_WARM.touch())
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Runs `call` on `runtime` within `deadline`; a failure becomes [`GrpcError::Status`]
/// (tonic's refusal of a message past `max_message` bytes as `RESOURCE_EXHAUSTED` naming
/// the limit).
fn block<T>(
    runtime: &Runtime,
    target: &str,
    max_message: usize,
    deadline: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, GrpcError> {
    let status = |s: Status| {
        let s = crate::message_limit::map_message_limit(s, max_message);
        GrpcError::Status {
            target: target.to_string(),
            code: s.code(),
            message: explain(target, &s),
        }
    };
    runtime.block_on(async {
        match tokio::time::timeout(deadline, call).await {
            Ok(r) => r.map(|r| r.into_inner()).map_err(status),
            Err(_) => Err(status(Status::deadline_exceeded(format!(
                "no answer within {deadline:?}"
            )))),
        }
    })
}

/// The status's message, with a hint when this client's connection failed in a way that a
/// plaintext/TLS mismatch explains.
fn explain(target: &str, s: &Status) -> String {
    let mut message = s.message().to_string();
    // Only a status tonic made here from a connection error has a source; one the server
    // sent (e.g. `UNAVAILABLE` for a task the master lost) is about another connection.
    let Some(source) = std::error::Error::source(s) else {
        return message;
    };
    // tonic reports a connection that failed at the HTTP/2 level (a TLS server answering
    // a plaintext preface) as INTERNAL or UNKNOWN with these messages.
    let connection_failed = s.code() == tonic::Code::Unavailable
        || (matches!(s.code(), tonic::Code::Internal | tonic::Code::Unknown)
            && (message.starts_with("h2 protocol error") || message == "transport error"));
    if !connection_failed {
        return message;
    }
    let chain = crate::tls::error_chain(source);
    if !message.contains(&chain) {
        message = format!("{message}: {chain}");
    }
    if target.starts_with("grpc://") {
        message
            .push_str(" (if the server serves TLS, connect with grpcs://<host:port> and its CA)");
    } else if target.starts_with("grpcs://") {
        message.push_str(
            " (the TLS connection failed: check that the server serves TLS, that the CA \
             signed its certificate and that the certificate names the host dialled)",
        );
    }
    message
}

impl RemoteSession {
    /// The session's handle on the master.
    pub fn handle(&self) -> &str {
        &self.handle
    }

    /// The cluster's devices, the master's first (the default device).
    pub fn devices(&self) -> &[String] {
        &self.devices
    }

    /// The target it is connected to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Sends the nodes added to the graph since the session was created (or last
    /// extended) to the master. Blocks the calling thread (which must not be in an async
    /// context); async callers use [`extend_async`](Self::extend_async).
    pub fn extend(&self) -> Result<(), GrpcError> {
        self.check_open()?;
        // The common case (nothing new, no extension under way) takes no blocking lock.
        if let Ok(sent) = self.sent.try_lock() {
            if self.graph.len() <= *sent {
                return Ok(());
            }
        }
        let mut sent = self.sent.blocking_lock();
        let Some((req, n)) = self.extension(*sent)? else {
            return Ok(());
        };
        let mut c = self.client.clone();
        block(
            self.rt(),
            &self.target,
            self.options.max_message_bytes,
            self.options.request_timeout,
            async move { c.extend_session(req).await },
        )?;
        *sent = n;
        Ok(())
    }

    /// [`RemoteSession::extend`] without blocking (any executor may poll it).
    ///
    /// # Errors
    ///
    /// As for [`RemoteSession::extend`]; the future resolves to the error.
    pub async fn extend_async(&self) -> Result<(), GrpcError> {
        self.check_open()?;
        // Held across the request: extensions reach the master one at a time, in order.
        let mut sent = self.sent.lock().await;
        let Some((req, n)) = self.extension(*sent)? else {
            return Ok(());
        };
        self.call_async(self.options.request_timeout, move |mut c| async move {
            c.extend_session(req).await
        })
        .await?;
        *sent = n;
        Ok(())
    }

    /// The request that sends the nodes after the first `sent`, and the graph's length
    /// then; `None` when the master has them all.
    fn extension(
        &self,
        sent: usize,
    ) -> Result<Option<(proto::ExtendSessionRequest, usize)>, GrpcError> {
        // Graphs only grow: the common case (nothing new) costs no graph definition.
        if self.graph.len() <= sent {
            return Ok(None);
        }
        let def = self.graph.to_graph_def();
        let n = def.nodes.len();
        let nodes = magpie_core::graph::GraphDef {
            nodes: def.nodes[sent..].to_vec(),
        };
        let req = proto::ExtendSessionRequest {
            session_handle: self.handle.clone(),
            nodes: Some(graph_to_wire(&nodes)?),
        };
        Ok(Some((req, n)))
    }

    /// Runs `call` with the async client on the shared [`async_runtime`] under
    /// `deadline`, as a future any executor may poll; dropping the future drops the
    /// request (tonic resets its stream, and the master aborts a step it started for it).
    fn call_async<T, F, Fut>(
        &self,
        deadline: Duration,
        call: F,
    ) -> impl std::future::Future<Output = Result<T, GrpcError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>> + Send + 'static,
    {
        let target = self.target.clone();
        let max_message = self.options.max_message_bytes;
        let status = move |s: Status| {
            let s = crate::message_limit::map_message_limit(s, max_message);
            GrpcError::Status {
                target: target.clone(),
                code: s.code(),
                message: explain(&target, &s),
            }
        };
        let started = async_runtime()
            .map_err(|e| GrpcError::Io {
                what: "starting the runtime of async calls".into(),
                detail: e,
            })
            .map(|rt| {
                self.async_warm.get_or_init(|| {
                    let warm = self.options.warm_window.and_then(WarmCpus::start)?;
                    Some(ASYNC_WARM.lend(warm))
                });
                let client = self
                    .async_client
                    .get_or_init(|| {
                        // The async runtime has one worker thread.
                        let busy = BusyPoll::new(self.options.busy_poll, 1);
                        master_client(rt, &self.endpoint, &self.options, Some(busy))
                    })
                    .clone();
                AbortOnDrop(
                    rt.spawn(async move { tokio::time::timeout(deadline, call(client)).await }),
                )
            });
        async move {
            match started?.await {
                Ok(Ok(r)) => r.map(|r| r.into_inner()).map_err(&status),
                Ok(Err(_)) => Err(status(Status::deadline_exceeded(format!(
                    "no answer within {deadline:?}"
                )))),
                Err(e) => Err(status(Status::cancelled(format!(
                    "the request's task ended: {e}"
                )))),
            }
        }
    }

    /// The name of a node of the session's graph; a handle of another graph fails as a
    /// local session fails (`role`: `feed`, `fetch`, `target`).
    fn name(&self, id: NodeId, role: &str) -> Result<String, GrpcError> {
        self.graph.check_owned(id, role)?;
        self.graph.node(id).map(|n| n.name.clone()).ok_or_else(|| {
            GrpcError::Graph(GraphError::NodeNotFound {
                role: role.to_string(),
                name: format!("#{}", id.index()),
            })
        })
    }

    fn output_name(&self, o: Output, role: &str) -> Result<String, GrpcError> {
        Ok(format!("{}:{}", self.name(o.node, role)?, o.index))
    }

    fn rt(&self) -> &Runtime {
        // Only `drop` takes the runtime.
        self.runtime
            .as_ref()
            .expect("a remote session's runtime lives until the session is dropped")
    }

    /// Whether the session was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn check_open(&self) -> Result<(), GrpcError> {
        if self.is_closed() {
            return Err(GrpcError::Closed);
        }
        Ok(())
    }

    /// Runs one step: fetches come back in order. Nodes added to the graph since the last
    /// step are sent to the master first. Blocks the calling thread (which must not be in
    /// an async context); async callers use [`run_async`](Self::run_async).
    pub fn run(
        &self,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<Vec<Tensor>, GrpcError> {
        self.check_open()?;
        self.extend()?;
        let named = self.names(feeds, fetches, targets)?;
        Ok(self.run_blocking(&RunOptions::default(), named)?.tensors)
    }

    /// [`RemoteSession::run`] without blocking: any executor may poll the future, which
    /// holds no thread while it waits (the request runs on a runtime shared by every
    /// session's async calls). **Dropping it cancels the step**: the request is reset,
    /// and the master aborts the step on every task.
    ///
    /// # Errors
    ///
    /// As for [`RemoteSession::run`]; the future resolves to the error.
    pub async fn run_async(
        &self,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<Vec<Tensor>, GrpcError> {
        self.check_open()?;
        self.extend_async().await?;
        let named = self.names(feeds, fetches, targets)?;
        Ok(self
            .run_async_named(&RunOptions::default(), named)
            .await?
            .tensors)
    }

    /// The names of a step's feeds, fetches and targets.
    fn names<'t>(
        &self,
        feeds: &'t [(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Result<Named<'t>, GrpcError> {
        let feeds = feeds
            .iter()
            .map(|(o, t)| Ok((self.output_name(*o, "feed")?, t)))
            .collect::<Result<Vec<_>, GrpcError>>()?;
        let fetches = fetches
            .iter()
            .map(|o| self.output_name(*o, "fetch"))
            .collect::<Result<Vec<_>, _>>()?;
        let targets = targets
            .iter()
            .map(|n| self.name(*n, "target"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Named {
            feeds,
            fetches,
            targets,
        })
    }

    /// Runs one step with feeds, fetches (`"node:0"`) and targets (`"node"`) by name,
    /// under `timeout` (the master's default when `None`). Blocks like
    /// [`run`](Self::run).
    pub fn run_named(
        &self,
        feeds: &[(&str, Tensor)],
        fetches: &[&str],
        targets: &[&str],
        timeout: Option<Duration>,
    ) -> Result<RemoteRunOutput, GrpcError> {
        let options = RunOptions {
            timeout,
            ..RunOptions::default()
        };
        self.run_named_with_options(&options, feeds, fetches, targets)
    }

    /// [`run_named`](Self::run_named) with run options: `timeout` (the master's default
    /// when `None`) and `trace`, which returns every task's timeline of the step
    /// ([`RemoteRunOutput::timeline`]). The other options do not cross the wire (drop
    /// the session's request to cancel: the master then aborts the step).
    pub fn run_named_with_options(
        &self,
        options: &RunOptions,
        feeds: &[(&str, Tensor)],
        fetches: &[&str],
        targets: &[&str],
    ) -> Result<RemoteRunOutput, GrpcError> {
        self.check_open()?;
        self.run_blocking(options, Named::of(feeds, fetches, targets))
    }

    /// Runs one step of `named` under `options`, blocking.
    fn run_blocking(
        &self,
        options: &RunOptions,
        named: Named<'_>,
    ) -> Result<RemoteRunOutput, GrpcError> {
        let step = self.step_request(options, named)?;
        let mut c = self.client.clone();
        let max = self.options.max_message_bytes;
        let req = step.request;
        let busy = &self.busy;
        let r = block(self.rt(), &self.target, max, step.deadline, async move {
            busy.spin_first(c.run_step(req)).await
        })?;
        self.step_output(r, step.known, step.signature, options.trace)
    }

    /// [`RemoteSession::run_named`] without blocking; dropping the future cancels the
    /// step as for [`run_async`](Self::run_async).
    ///
    /// # Errors
    ///
    /// As for [`RemoteSession::run`]; the future resolves to the error.
    pub async fn run_named_async(
        &self,
        feeds: &[(&str, Tensor)],
        fetches: &[&str],
        targets: &[&str],
        timeout: Option<Duration>,
    ) -> Result<RemoteRunOutput, GrpcError> {
        self.check_open()?;
        let options = RunOptions {
            timeout,
            ..RunOptions::default()
        };
        self.run_async_named(&options, Named::of(feeds, fetches, targets))
            .await
    }

    /// Runs one step of `named` under `options` (its timeout) without blocking.
    async fn run_async_named(
        &self,
        options: &RunOptions,
        named: Named<'_>,
    ) -> Result<RemoteRunOutput, GrpcError> {
        let step = self.step_request(options, named)?;
        let req = step.request;
        let r = self
            .call_async(
                step.deadline,
                move |mut c| async move { c.run_step(req).await },
            )
            .await?;
        self.step_output(r, step.known, step.signature, options.trace)
    }

    /// A step's request, the client's backstop deadline for its answer, and what the
    /// client knows of the step's signature.
    fn step_request(
        &self,
        options: &RunOptions,
        named: Named<'_>,
    ) -> Result<StepRequest, GrpcError> {
        let timeout = options.timeout;
        let feeds = named
            .feeds
            .into_iter()
            .map(|(name, t)| {
                Ok(proto::NamedTensor {
                    name,
                    tensor: Some(tensor_to_wire(t)?),
                })
            })
            .collect::<Result<Vec<_>, GrpcError>>()?;
        let signature: Signature = (
            feeds.iter().map(|f| f.name.clone()).collect(),
            named.fetches,
            named.targets,
        );
        let known = self.placements.lock().get(&signature).cloned();
        // A known signature is not needed after this lookup: its names move into the
        // request. An unknown one is kept to record the placement the answer brings.
        let (fetches, targets, signature) = match known {
            Some(_) => (signature.1, signature.2, None),
            None => (signature.1.clone(), signature.2.clone(), Some(signature)),
        };
        let req = proto::RunStepRequest {
            session_handle: self.handle.clone(),
            feeds,
            fetches,
            targets,
            timeout_ms: timeout.map_or(0, |t| {
                u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
            }),
            trace: options.trace,
            omit_placement: known.is_some(),
        };
        // Only a backstop: the master reports the step's deadline itself (naming the task
        // that did not answer) by the deadline plus its grace.
        let deadline = timeout
            .or(self.step_timeout)
            .unwrap_or(self.options.request_timeout)
            .saturating_add(self.options.step_grace)
            .saturating_add(self.options.client_backstop);
        Ok(StepRequest {
            request: req,
            deadline,
            known,
            signature,
        })
    }

    /// A step's answer as the client reports it: the placement is `known` from an
    /// earlier step of `signature`, or read (and kept) from this answer; with `trace`,
    /// the answer's timelines.
    fn step_output(
        &self,
        r: proto::RunStepResponse,
        known: Option<Placement>,
        signature: Option<Signature>,
        trace: bool,
    ) -> Result<RemoteRunOutput, GrpcError> {
        Ok(RemoteRunOutput {
            tensors: r
                .tensors
                .iter()
                .map(tensor_from_wire)
                .collect::<Result<Vec<_>, _>>()?,
            step_id: magpie_core::StepId::from_bytes(&r.step_id).map_err(|e| {
                GrpcError::Status {
                    target: self.target.clone(),
                    code: tonic::Code::Internal,
                    message: format!("the master returned a bad step id: {e}"),
                }
            })?,
            placement: match known {
                Some(p) => p,
                None => {
                    let p: Placement = Arc::new(
                        r.placement
                            .into_iter()
                            .map(|p| match p.split_once('=') {
                                Some((n, d)) => (n.to_string(), d.to_string()),
                                None => (p, String::new()),
                            })
                            .collect(),
                    );
                    if let Some(signature) = signature {
                        self.placements.lock().insert(signature, Arc::clone(&p));
                    }
                    p
                }
            },
            timeline: match trace {
                true => Some(cluster_timeline_from_wire(&r.timelines)?),
                false => None,
            },
        })
    }

    /// Clears a resource container (variables) on the master's task; returns how many
    /// resources it held.
    pub fn reset(&self, container: &str) -> Result<u64, GrpcError> {
        self.check_open()?;
        let req = proto::ResetRequest {
            container: container.to_string(),
        };
        let mut c = self.client.clone();
        let r = block(
            self.rt(),
            &self.target,
            self.options.max_message_bytes,
            self.options.request_timeout,
            async move { c.reset(req).await },
        )?;
        Ok(r.cleared)
    }

    /// Closes the session on the master (releasing its partitions on every task); every
    /// later [`run`](RemoteSession::run) fails with [`GrpcError::Closed`]
    /// (`FailedPrecondition`, as on every session kind). Closing twice is harmless;
    /// dropping the session closes it.
    ///
    /// # Errors
    ///
    /// The master's error when it cannot be reached (the session is closed on this side
    /// all the same, and the master closes it once it has been idle long enough).
    pub fn close(&self) -> Result<(), GrpcError> {
        if self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        let req = proto::CloseSessionRequest {
            session_handle: self.handle.clone(),
        };
        let mut c = self.client.clone();
        block(
            self.rt(),
            &self.target,
            self.options.max_message_bytes,
            self.options.request_timeout,
            async move { c.close_session(req).await },
        )?;
        Ok(())
    }
}

impl Drop for RemoteSession {
    /// Closes the session on the master (within a second), unless it was closed. Inside
    /// an async context, where nothing may block (nor drop a runtime), the close and the
    /// client's runtime go to a thread of their own.
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let close = (!self.is_closed()).then(|| {
            let req = proto::CloseSessionRequest {
                session_handle: self.handle.clone(),
            };
            let mut c = self.client.clone();
            let target = self.target.clone();
            move |runtime: &Runtime| {
                let _ = block(
                    runtime,
                    &target,
                    usize::MAX,
                    Duration::from_secs(1),
                    async move { c.close_session(req).await },
                );
            }
        });
        if tokio::runtime::Handle::try_current().is_err() {
            if let Some(close) = close {
                close(&runtime);
            }
            return;
        }
        let runtime = RuntimeOffAsync(Some(runtime));
        // The lent window goes with the runtime: the last handle joins the spinners, which
        // is no work for an async context either.
        let warm = self.async_warm.take();
        let spawned = std::thread::Builder::new()
            .name("magpie-grpc-close".into())
            .spawn(move || {
                if let (Some(close), Some(rt)) = (close, &runtime.0) {
                    close(rt);
                }
                drop(warm);
            });
        if let Err(e) = spawned {
            // The runtime was shut down in the background here; the session is left to
            // the master's idle timeout.
            tracing::warn!(error = %e, "could not close a remote session on drop");
        }
    }
}

/// A task on a runtime, aborted when its handle is dropped before it ended.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A runtime that, dropped inside an async context (where a runtime may not be dropped
/// normally: that blocks), shuts down in the background instead.
struct RuntimeOffAsync(Option<Runtime>);

impl Drop for RuntimeOffAsync {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            }
        }
    }
}
