//! [`TfMasterService`]: TensorFlow's master service over a task's master.
//!
//! | method | what Magpie does |
//! |---|---|
//! | `CreateSession` | opens a master session (as Magpie's own `CreateSession`) over the translated graph, which may be empty; reads `allow_soft_placement` and `operation_timeout_in_ms` from the `ConfigProto` |
//! | `ExtendSession` | checks the graph version (`FAILED_PRECONDITION` when stale), adds the translated nodes (all or nothing), returns the next version |
//! | `RunStep` | feeds by name, fetches echoed exactly and in the request's order, targets; `options.timeout_in_ms` as the step's deadline; with `store_errors_in_response_body`, a failed step is an OK answer carrying TensorFlow's code and the message |
//! | `CloseSession` | closes the session |
//! | `ListDevices` | every device of the cluster, this task's as `local_device` |
//! | `Reset` | clears the containers on every task of the cluster |
//! | `MakeCallable`, `RunCallable`, `ReleaseCallable` | a signature kept by the session, run with positional feeds |
//! | `PartialRunSetup`, `RunStep` with `partial_run_handle` | a partial run (`partial.rs`): names checked at setup, each call feeds and fetches some of them with TensorFlow's checks and errors; no node runs twice |
//!
//! A `request_id` seen lately (`RunStep`, `MakeCallable`, `RunCallable`: the client
//! retried a request whose answer it lost) is `ABORTED`, never run twice (`recent.rs`).
//!
//! TensorFlow's error codes are gRPC's: a step's error has the code of its
//! [`magpie_core::Code`], and an op Magpie lacks is `UNIMPLEMENTED` naming op and node.
//! Requests that hold a session do their work on tokio's blocking pool, as in Magpie's
//! own master service; a step is cancelled on every task when its client goes away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use magpie_core::distributed::{MasterSession, MasterSessionOptions, TaskServer};
use magpie_core::graph::{Graph, GraphError, NodeId, Output};
use magpie_core::limits::Limit;
use magpie_core::session::RunOptions;
use magpie_core::tensor::Tensor;
use tonic::{Code, Request, Response, Status};

use crate::handle::{handle_prefix, session_handle};
use crate::metrics::Metrics;
use crate::options::GrpcOptions;
use crate::service::{admit_session, blocking, check_nodes, node_id, output, OffRuntime};
use crate::sessions::SessionTable;
use crate::status::{code_to_grpc, status};
use crate::tf::cluster::{device_attributes, reset_cluster};
use crate::tf::conv::{graph_from_tf, tensor_from_tf, tensor_to_tf, DecodeLimits, TfWireError};
use crate::tf::partial::{no_such_run, Call, KeptBytes, PartialRun};
use crate::tf::proto;
use crate::tf::recent::{RecentRequestIds, DEFAULT_CAPACITY};
use crate::tf::session::{Callable, TfSession};

/// TensorFlow's master service of one task. It shares the sessions table (limit, idle
/// timeout), options and metrics of the task's [`MasterService`](crate::MasterService):
/// make it with [`MasterService::tensorflow`](crate::MasterService::tensorflow).
#[derive(Debug, Clone)]
pub struct TfMasterService {
    server: Arc<TaskServer>,
    sessions: Arc<SessionTable>,
    options: Arc<GrpcOptions>,
    metrics: Arc<Metrics>,
    /// The master's incarnation number (devices' `incarnation`).
    seed: u64,
    /// Request ids seen lately: a retried request is refused, not run twice.
    recent: Arc<RecentRequestIds>,
    /// What the partial runs of this master keep between calls (`--partial-run-bytes`).
    kept_bytes: Arc<KeptBytes>,
}

/// An error as a step reports it: TensorFlow's code (gRPC's) and a message.
type StepError = (Code, String);

/// A `RunStep` reply: each fetched name with its tensor in TensorFlow's form.
fn step_response(
    names: Vec<String>,
    tensors: &[Tensor],
) -> Result<proto::RunStepResponse, StepError> {
    let tensor = names
        .into_iter()
        .zip(tensors)
        .map(|(name, t)| {
            Ok(proto::NamedTensorProto {
                tensor: Some(tensor_to_tf(t).map_err(|e| (Code::Internal, e.to_string()))?),
                name,
            })
        })
        .collect::<Result<_, StepError>>()?;
    Ok(proto::RunStepResponse {
        tensor,
        ..Default::default()
    })
}

fn step_error(s: Status) -> StepError {
    (s.code(), s.message().to_string())
}

fn wire_status(e: &TfWireError) -> Status {
    status(code_to_grpc(e.code()), e.to_string())
}

/// Drops a request's reference to a session off the runtime: it may be the last one
/// (the session was closed meanwhile), and dropping a session releases its partitions.
async fn release(session: Arc<MasterSession>) {
    let _ = blocking(move || {
        drop(session);
        Ok(())
    })
    .await;
}

/// A graph that does not import: an op Magpie lacks is `UNIMPLEMENTED`, any other
/// mistake has its own code (`INVALID_ARGUMENT`).
fn graph_status(e: &GraphError) -> Status {
    let code = match e {
        GraphError::UnknownOp { .. } => Code::Unimplemented,
        other => code_to_grpc(other.code()),
    };
    status(code, e.to_string())
}

impl TfMasterService {
    pub(crate) fn new(
        server: Arc<TaskServer>,
        sessions: Arc<SessionTable>,
        options: Arc<GrpcOptions>,
        metrics: Arc<Metrics>,
        kept_bytes: Arc<KeptBytes>,
    ) -> TfMasterService {
        let mut seed = [0u8; 8];
        // Without the OS's RNG the incarnations are still distinct per device.
        let _ = getrandom::fill(&mut seed);
        TfMasterService {
            server,
            sessions,
            options,
            metrics,
            seed: u64::from_le_bytes(seed),
            recent: Arc::new(RecentRequestIds::new(DEFAULT_CAPACITY)),
            kept_bytes,
        }
    }

    /// `ABORTED` when `id` was seen lately (TensorFlow's client retried a request whose
    /// answer it lost: running it again could apply a step twice).
    fn track(&self, id: i64, method: &str) -> Result<(), Status> {
        if self.recent.track_unique(id) {
            return Ok(());
        }
        Err(status(
            Code::Aborted,
            format!(
                "{method}: request {id} was already seen by master {} (a retried request is \
                 not run twice)",
                self.server.task()
            ),
        ))
    }

    fn unknown(&self, handle: &str) -> Status {
        status(
            Code::NotFound,
            format!(
                "unknown TensorFlow session handle {:?} on master {} (closed, timed out \
                 idle, or never opened here)",
                handle_prefix(handle),
                self.server.task()
            ),
        )
    }

    /// The bounds on the tensors one request decodes: the server's tensor and message
    /// limits.
    fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits::new(
            self.options.max_tensor_bytes,
            u64::try_from(self.options.max_message_bytes).unwrap_or(u64::MAX),
        )
    }

    fn session(&self, handle: &str) -> Result<(Arc<MasterSession>, Arc<TfSession>), Status> {
        self.sessions
            .get_tf(handle)
            .ok_or_else(|| self.unknown(handle))
    }

    /// Translates `wire` (nodes to add) and adds it to `session`'s graph, all or
    /// nothing.
    fn extend_graph(&self, session: &MasterSession, wire: &proto::GraphDef) -> Result<(), Status> {
        let def = graph_from_tf(wire, &mut self.decode_limits()).map_err(|e| wire_status(&e))?;
        session
            .graph()
            .extend_tensorflow(&def)
            .map_err(|e| graph_status(&e))?;
        Ok(())
    }

    /// The deadline of a step: the request's, else the session's, else the master's.
    fn step_timeout(tf: &TfSession, requested_ms: i64) -> Option<Duration> {
        u64::try_from(requested_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .or(tf.step_timeout)
    }

    /// Runs one step of `session`: feeds by name, fetches and targets by name; fetches
    /// come back in order. The step is core's async step, awaited on the runtime (no
    /// thread per step): a client that goes away mid-step makes tonic drop this handler,
    /// and with it the step's future, which aborts the step on every task.
    ///
    /// Feeds, fetches and targets are borrowed from the request (or the callable): the
    /// names are resolved and the tensors decoded before the step starts, and nothing of
    /// them is copied.
    async fn run(
        &self,
        session: Arc<MasterSession>,
        feeds: Vec<(&str, &proto::TensorProto)>,
        fetches: &[String],
        targets: &[String],
        timeout: Option<Duration>,
    ) -> Result<Vec<Tensor>, StepError> {
        let held = OffRuntime::new(session);
        let session = held.get();
        let (fed, fetches, targets) = step_io(
            session.graph(),
            &feeds,
            fetches,
            targets,
            self.decode_limits(),
        )
        .map_err(step_error)?;
        drop(feeds);
        let options = RunOptions {
            timeout,
            ..RunOptions::default()
        };
        session
            .run_async_with_options(&options, &fed, &fetches, &targets)
            .await
            .map(|o| o.tensors)
            .map_err(|e| step_error(status(code_to_grpc(e.code()), e.to_string())))
    }

    /// One call of a partial run (`partial.rs`): the run is taken out of its session for
    /// the call, put back unless the call failed or completed it.
    async fn partial_run(
        &self,
        handle: &str,
        r: proto::RunStepRequest,
    ) -> Result<proto::RunStepResponse, StepError> {
        let (session, tf) = self.session(handle).map_err(step_error)?;
        let handle = r.partial_run_handle;
        let Some(mut run) = tf.partial_runs.take(&handle) else {
            release(session).await;
            return Err(step_error(no_such_run()));
        };
        let timeout = Self::step_timeout(&tf, r.options.as_ref().map_or(0, |o| o.timeout_in_ms));
        let mut limits = self.decode_limits();
        let planned = r
            .feed
            .into_iter()
            .map(|f| {
                let t = tensor_from_tf(
                    &f.tensor.unwrap_or_default(),
                    &format!("feed {:?}", f.name),
                    &mut limits,
                )
                .map_err(|e| wire_status(&e))?;
                Ok((f.name, t))
            })
            .collect::<Result<Vec<_>, Status>>()
            .and_then(|feeds| run.plan(session.graph(), feeds, &r.fetch));
        let base = run.fed_before();
        let call = match planned.and_then(|mut c| {
            c.charge_feeds(&self.kept_bytes, base)?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                // A refused call leaves the partial run as it was (as TensorFlow's).
                tf.partial_runs.put_back(handle, run);
                release(session).await;
                return Err(step_error(e));
            }
        };
        let options = RunOptions {
            timeout,
            ..RunOptions::default()
        };
        let stepped = if call.cut_controls.is_empty() {
            let held = OffRuntime::new(session);
            held.get()
                .run_async_with_options(&options, &call.feeds, &call.fetches, &call.targets)
                .await
                .map(|o| o.tensors)
                .map_err(|e| step_error(status(code_to_grpc(e.code()), e.to_string())))
        } else {
            self.run_without_cut_controls(session, &call, options).await
        };
        // A failed call ends the partial run, as in TensorFlow.
        let tensors = stepped?;
        let last = call.last;
        // Outputs to keep past `--partial-run-bytes` end the partial run too.
        let tensors = run
            .finish(call, tensors, &self.kept_bytes)
            .map_err(step_error)?;
        if !last {
            tf.partial_runs.put_back(handle, run);
        }
        step_response(r.fetch, &tensors)
    }

    /// Runs `call`'s step on a copy of `session`'s graph without the control edges the
    /// call cuts (their sources ran in an earlier call of the partial run), through a
    /// master session of its own, opened for this step and released after it.
    async fn run_without_cut_controls(
        &self,
        session: Arc<MasterSession>,
        call: &Call,
        options: RunOptions,
    ) -> Result<Vec<Tensor>, StepError> {
        let server = Arc::clone(&self.server);
        let (sessions, grpc) = (Arc::clone(&self.sessions), Arc::clone(&self.options));
        let cut = call.cut_controls.clone();
        let name = |o: &Output| (session.graph().name_of(o.node), o.index);
        let feeds: Vec<((String, u32), Tensor)> = call
            .feeds
            .iter()
            .map(|(o, t)| (name(o), t.clone()))
            .collect();
        let fetches: Vec<(String, u32)> = call.fetches.iter().map(name).collect();
        let targets: Vec<String> = call
            .targets
            .iter()
            .map(|t| session.graph().name_of(*t))
            .collect();
        let mut def = session.graph().to_graph_def();
        let session_options = session.options();
        release(session).await;
        let opened = blocking(move || {
            for node in &mut def.nodes {
                node.inputs.retain(|input| {
                    let Some(control) = input.strip_prefix('^') else {
                        return true;
                    };
                    !cut.iter().any(|(n, c)| *n == node.name && c == control)
                });
            }
            let graph = Graph::import(&def)
                .map_err(|e| status(Code::Internal, format!("partial run: {e}")))?;
            let at = |(n, i): &(String, u32)| {
                graph
                    .node_by_name(n)
                    .map(|id| id.output(*i))
                    .ok_or_else(|| {
                        status(Code::Internal, format!("partial run: node {n:?} is gone"))
                    })
            };
            let feeds = feeds
                .into_iter()
                .map(|(o, t)| Ok((at(&o)?, t)))
                .collect::<Result<Vec<_>, Status>>()?;
            let fetches = fetches.iter().map(at).collect::<Result<Vec<_>, _>>()?;
            let targets = targets
                .iter()
                .map(|n| node_id(&graph, n, "target"))
                .collect::<Result<Vec<_>, _>>()?;
            // The step's own session takes a place among `--max-sessions` while it lives.
            let place = admit_session(&sessions, &grpc, server.task(), graph.len())?;
            let step_session = server
                .master()
                .create_session_with(&graph, session_options)
                .map_err(|e| status(code_to_grpc(e.code()), e.to_string()))?;
            Ok((Arc::new(step_session), feeds, fetches, targets, place))
        })
        .await;
        let (step_session, feeds, fetches, targets, _place) = opened.map_err(step_error)?;
        let held = OffRuntime::new(step_session);
        let stepped = held
            .get()
            .run_async_with_options(&options, &feeds, &fetches, &targets)
            .await
            .map(|o| o.tensors)
            .map_err(|e| step_error(status(code_to_grpc(e.code()), e.to_string())));
        stepped
    }

    /// `RunStep` of the session `handle` (the request's, taken out of it) without its
    /// accounting.
    async fn run_step_inner(
        &self,
        handle: &str,
        r: proto::RunStepRequest,
    ) -> Result<proto::RunStepResponse, StepError> {
        self.track(r.request_id, "RunStep").map_err(step_error)?;
        if !r.partial_run_handle.is_empty() {
            return self.partial_run(handle, r).await;
        }
        let (session, tf) = self.session(handle).map_err(step_error)?;
        let timeout = Self::step_timeout(&tf, r.options.as_ref().map_or(0, |o| o.timeout_in_ms));
        // A feed without a tensor is decoded as an empty `TensorProto`.
        let empty = proto::TensorProto::default();
        let feeds = r
            .feed
            .iter()
            .map(|f| (f.name.as_str(), f.tensor.as_ref().unwrap_or(&empty)))
            .collect();
        let tensors = self
            .run(session, feeds, &r.fetch, &r.target, timeout)
            .await?;
        step_response(r.fetch, &tensors)
    }
}

#[tonic::async_trait]
impl proto::master_service_server::MasterService for TfMasterService {
    async fn create_session(
        &self,
        request: Request<proto::CreateSessionRequest>,
    ) -> Result<Response<proto::CreateSessionResponse>, Status> {
        let r = request.into_inner();
        let wire = r.graph_def.unwrap_or_default();
        let reservation = admit_session(
            &self.sessions,
            &self.options,
            self.server.task(),
            wire.node.len(),
        )?;
        let config = r.config.unwrap_or_default();
        let tf = Arc::new(TfSession::new(config.operation_timeout_in_ms));
        let session_options =
            MasterSessionOptions::default().allow_soft_placement(config.allow_soft_placement);
        // 128 random bits, as Magpie's own handles: made first, so that a session is
        // never dropped on the runtime.
        let handle = session_handle(self.server.task())?;
        let server = Arc::clone(&self.server);
        let this = self.clone();
        // Opening contacts every task; both it and the graph's import run off the
        // runtime: a session that fails to take its graph is dropped there.
        let session = blocking(move || {
            let session = server
                .master()
                .create_session_with(&Graph::new(), session_options)
                .map_err(|e| status(code_to_grpc(e.code()), e.to_string()))?;
            this.extend_graph(&session, &wire)?;
            Ok(session)
        })
        .await
        .inspect_err(|e| {
            tracing::warn!(
                task = %self.server.task(),
                code = ?e.code(),
                error = e.message(),
                "creating a TensorFlow session failed"
            );
        })?;
        let nodes = session.graph().len();
        self.sessions
            .insert_with(handle.clone(), session, Some(tf), reservation);
        tracing::info!(
            task = %self.server.task(),
            session_handle = %handle_prefix(&handle),
            nodes,
            "TensorFlow session created"
        );
        Ok(Response::new(proto::CreateSessionResponse {
            session_handle: handle,
            graph_version: 0,
        }))
    }

    async fn extend_session(
        &self,
        request: Request<proto::ExtendSessionRequest>,
    ) -> Result<Response<proto::ExtendSessionResponse>, Status> {
        let r = request.into_inner();
        let wire = r.graph_def.unwrap_or_default();
        let added = wire.node.len();
        check_nodes(
            Limit::ExtensionNodes,
            self.options.max_extension_nodes,
            added,
            "the extension",
        )?;
        let (session, tf) = self.session(&r.session_handle)?;
        let this = self.clone();
        let max_nodes = self.options.max_graph_nodes;
        let current = r.current_graph_version;
        // Translation and validation are CPU work; dropping the session may release its
        // partitions (blocking): all of it off the runtime.
        let extended = blocking(move || {
            let mut version = tf.version.lock();
            if *version != current {
                return Err(status(
                    Code::FailedPrecondition,
                    format!(
                        "ExtendSession: the session's graph is at version {}, the request \
                         extends version {current}",
                        *version
                    ),
                ));
            }
            let has = session.graph().len();
            check_nodes(
                Limit::GraphNodes,
                max_nodes,
                has.saturating_add(added),
                &format!("the session's graph of {has} nodes extended by {added}"),
            )?;
            this.extend_graph(&session, &wire)?;
            *version += 1;
            Ok(*version)
        })
        .await;
        let session_handle = handle_prefix(&r.session_handle);
        match &extended {
            Ok(v) => tracing::info!(
                task = %self.server.task(),
                %session_handle,
                added,
                version = v,
                "TensorFlow session extended"
            ),
            Err(e) => tracing::warn!(
                task = %self.server.task(),
                %session_handle,
                added,
                error = e.message(),
                "extending a TensorFlow session failed"
            ),
        }
        Ok(Response::new(proto::ExtendSessionResponse {
            new_graph_version: extended?,
        }))
    }

    async fn partial_run_setup(
        &self,
        request: Request<proto::PartialRunSetupRequest>,
    ) -> Result<Response<proto::PartialRunSetupResponse>, Status> {
        let r = request.into_inner();
        self.track(r.request_id, "PartialRunSetup")?;
        let (session, tf) = self.session(&r.session_handle)?;
        // Names are resolved now, as TensorFlow builds the step's graph at setup.
        let made: Result<String, Status> = (|| {
            let graph = session.graph();
            let resolve = |names: &[String], role: &str| {
                names
                    .iter()
                    .map(|n| Ok((n.clone(), output(graph, n, role)?)))
                    .collect::<Result<Vec<_>, Status>>()
            };
            let feeds = resolve(&r.feed, "feed")?;
            let fetches = resolve(&r.fetch, "fetch")?;
            let targets = r
                .target
                .iter()
                .map(|n| node_id(graph, n.strip_prefix('^').unwrap_or(n), "target"))
                .collect::<Result<Vec<_>, _>>()?;
            let handle = session_handle(self.server.task())?;
            tf.partial_runs
                .insert(handle.clone(), PartialRun::new(feeds, fetches, targets))?;
            Ok(handle)
        })();
        release(session).await;
        Ok(Response::new(proto::PartialRunSetupResponse {
            partial_run_handle: made?,
        }))
    }

    async fn run_step(
        &self,
        request: Request<proto::RunStepRequest>,
    ) -> Result<Response<proto::RunStepResponse>, Status> {
        let started = Instant::now();
        let mut r = request.into_inner();
        let in_body = r.store_errors_in_response_body;
        let handle = std::mem::take(&mut r.session_handle);
        let result = self.run_step_inner(&handle, r).await;
        let took = started.elapsed();
        match result {
            Ok(resp) => {
                self.metrics.step(Code::Ok, took);
                Ok(Response::new(resp))
            }
            Err((code, message)) => {
                tracing::warn!(
                    task = %self.server.task(),
                    session_handle = %handle_prefix(&handle),
                    ?code,
                    error = message,
                    ?took,
                    "TensorFlow step failed"
                );
                self.metrics.step(code, took);
                let message = magpie_core::error::cap_message(&message);
                if in_body {
                    Ok(Response::new(proto::RunStepResponse {
                        status_code: code as i32,
                        status_error_message: message.into_owned(),
                        ..Default::default()
                    }))
                } else {
                    Err(status(code, message))
                }
            }
        }
    }

    async fn close_session(
        &self,
        request: Request<proto::CloseSessionRequest>,
    ) -> Result<Response<proto::CloseSessionResponse>, Status> {
        let handle = request.into_inner().session_handle;
        let session = self
            .sessions
            .remove_tf(&handle)
            .ok_or_else(|| self.unknown(&handle))?;
        blocking(move || {
            session.close();
            Ok(())
        })
        .await?;
        tracing::info!(
            task = %self.server.task(),
            session_handle = %handle_prefix(&handle),
            "TensorFlow session closed"
        );
        Ok(Response::new(proto::CloseSessionResponse {}))
    }

    async fn list_devices(
        &self,
        _request: Request<proto::ListDevicesRequest>,
    ) -> Result<Response<proto::ListDevicesResponse>, Status> {
        let server = Arc::clone(&self.server);
        let seed = self.seed;
        let resp = blocking(move || {
            let devices = server
                .master()
                .cluster_devices()
                .map_err(|e| status(code_to_grpc(e.code()), e.to_string()))?;
            let mut resp = proto::ListDevicesResponse::default();
            for d in &devices {
                let attrs = device_attributes(d, seed);
                if server.task().owns(&d.name) {
                    resp.local_device.push(attrs);
                } else {
                    resp.remote_device.push(attrs);
                }
            }
            Ok(resp)
        })
        .await?;
        Ok(Response::new(resp))
    }

    async fn reset(
        &self,
        request: Request<proto::ResetRequest>,
    ) -> Result<Response<proto::ResetResponse>, Status> {
        let r = request.into_inner();
        let cleared = reset_cluster(&self.server, &self.options, &r.container).await?;
        tracing::info!(
            task = %self.server.task(),
            containers = ?r.container,
            cleared,
            "TensorFlow Reset"
        );
        Ok(Response::new(proto::ResetResponse {}))
    }

    async fn make_callable(
        &self,
        request: Request<proto::MakeCallableRequest>,
    ) -> Result<Response<proto::MakeCallableResponse>, Status> {
        let r = request.into_inner();
        self.track(r.request_id, "MakeCallable")?;
        let (session, tf) = self.session(&r.session_handle)?;
        let o = r.options.unwrap_or_default();
        let timeout =
            Self::step_timeout(&tf, o.run_options.as_ref().map_or(0, |o| o.timeout_in_ms));
        // Names are checked now, as TensorFlow does: a callable that cannot run is never
        // made.
        let made = (|| {
            let graph = session.graph();
            for f in &o.feed {
                output(graph, f, "feed")?;
            }
            for f in &o.fetch {
                output(graph, f, "fetch")?;
            }
            for t in &o.target {
                node_id(graph, t, "target")?;
            }
            tf.add_callable(Callable {
                feeds: o.feed,
                fetches: o.fetch,
                targets: o.target,
                timeout,
            })
            .ok_or_else(|| {
                status(
                    Code::ResourceExhausted,
                    format!(
                        "the session holds {} callables (release some)",
                        crate::tf::session::MAX_CALLABLES
                    ),
                )
            })
        })();
        release(session).await;
        let handle = made?;
        Ok(Response::new(proto::MakeCallableResponse { handle }))
    }

    async fn run_callable(
        &self,
        request: Request<proto::RunCallableRequest>,
    ) -> Result<Response<proto::RunCallableResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        self.track(r.request_id, "RunCallable")?;
        let (session, tf) = self.session(&r.session_handle)?;
        let checked = tf
            .callable(r.handle)
            .ok_or_else(|| {
                status(
                    Code::InvalidArgument,
                    format!("RunCallable: no callable with handle {}", r.handle),
                )
            })
            .and_then(|c| {
                if r.feed.len() == c.feeds.len() {
                    Ok(c)
                } else {
                    Err(status(
                        Code::InvalidArgument,
                        format!(
                            "RunCallable: {} feeds for a callable of {}",
                            r.feed.len(),
                            c.feeds.len()
                        ),
                    ))
                }
            });
        let callable = match checked {
            Ok(c) => c,
            Err(e) => {
                release(session).await;
                return Err(e);
            }
        };
        let feeds = callable
            .feeds
            .iter()
            .map(String::as_str)
            .zip(&r.feed)
            .collect();
        let result = self
            .run(
                session,
                feeds,
                &callable.fetches,
                &callable.targets,
                callable.timeout,
            )
            .await;
        let took = started.elapsed();
        match result {
            Ok(tensors) => {
                self.metrics.step(Code::Ok, took);
                let fetch = tensors
                    .iter()
                    .map(tensor_to_tf)
                    .collect::<Result<_, _>>()
                    .map_err(|e| status(Code::Internal, e.to_string()))?;
                Ok(Response::new(proto::RunCallableResponse { fetch }))
            }
            Err((code, message)) => {
                self.metrics.step(code, took);
                Err(status(code, message))
            }
        }
    }

    async fn release_callable(
        &self,
        request: Request<proto::ReleaseCallableRequest>,
    ) -> Result<Response<proto::ReleaseCallableResponse>, Status> {
        let r = request.into_inner();
        let (session, tf) = self.session(&r.session_handle)?;
        let released = tf.release_callable(r.handle);
        release(session).await;
        if !released {
            return Err(status(
                Code::InvalidArgument,
                format!("ReleaseCallable: no callable with handle {}", r.handle),
            ));
        }
        Ok(Response::new(proto::ReleaseCallableResponse {}))
    }
}

/// A TensorFlow step's feeds (converted under the request's `limits`), fetches and
/// targets, resolved in `graph`.
#[allow(clippy::type_complexity)]
fn step_io(
    graph: &Graph,
    feeds: &[(&str, &proto::TensorProto)],
    fetches: &[String],
    targets: &[String],
    mut limits: DecodeLimits,
) -> Result<(Vec<(Output, Tensor)>, Vec<Output>, Vec<NodeId>), Status> {
    let mut fed: Vec<(Output, Tensor)> = Vec::with_capacity(feeds.len());
    for (name, t) in feeds {
        let out = output(graph, name, "feed")?;
        let t = tensor_from_tf(t, &format!("feed {name:?}"), &mut limits)
            .map_err(|e| wire_status(&e))?;
        fed.push((out, t));
    }
    let fetches = fetches
        .iter()
        .map(|n| output(graph, n, "fetch"))
        .collect::<Result<Vec<_>, _>>()?;
    let targets = targets
        .iter()
        .map(|n| node_id(graph, n.strip_prefix('^').unwrap_or(n), "target"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((fed, fetches, targets))
}
