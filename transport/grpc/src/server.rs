//! [`GrpcServer`]: a cluster task served over gRPC — its [`TaskServer`]'s master and
//! worker services on the task's address, reaching the other tasks with a
//! [`GrpcTransport`] on the server's runtime.
//!
//! # Lifecycle
//! [`GrpcServer::start`] binds the address (a port of 0 picks a free one, see
//! [`GrpcServer::local_addr`]) and serves with `TCP_NODELAY`. [`GrpcServer::stop`]
//! follows core's stop protocol (refuse new sessions and steps, let running steps finish
//! within the deadline, cancel the rest), then shuts the listener and connections down
//! and frees the port; [`GrpcServer::join`] returns once it has stopped.
//!
//! # TensorFlow's clients
//! TensorFlow's master service ([`TfMasterService`](crate::TfMasterService)) shares the
//! port, the sessions table (limit, idle timeout), the message limits and the token
//! check with Magpie's own master service.
//!
//! # Health and metrics
//! The standard gRPC health service (`grpc.health.v1.Health`, `tonic-health`) shares the
//! port and needs no token: the overall status (service `""`) and the named services
//! (Magpie's two and `tensorflow.MasterService`) report `SERVING` from the start, and
//! `NOT_SERVING` as soon as [`GrpcServer::stop`] begins (while running steps drain). With
//! [`GrpcOptions::metrics_addr`] the server also serves Prometheus text at `GET /metrics`
//! on that address (`metrics.rs` lists the metrics, `metrics_http.rs` the endpoint's
//! limits).
//!
//! # Limits
//! At most [`GrpcOptions::max_connections`] connections are open at once
//! (`connections.rs`: the one past it is closed as it is accepted, TLS or not), and the
//! request messages being received on all of them reserve at most
//! [`GrpcOptions::incoming_request_bytes`] together (`request_bytes.rs`); `SECURITY.md`
//! adds up what that bounds.
//!
//! # Security
//! With an identity in [`GrpcOptions::tls`] the server serves TLS only (mutual with a
//! client CA: worker-service calls then need a certificate the CA signed); with
//! [`GrpcOptions::auth_token`] every call of both services needs the cluster token
//! (`auth::Guard`). The task's own transport to its peers uses the same options.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use magpie_core::cluster::ClusterSpec;
use magpie_core::distributed::{ServerOptions, TaskServer};
use magpie_core::transport::TaskName;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::auth::Guard;
use crate::busy_poll::{BusyPoll, BusyPollStats};
use crate::connections::{limit_connections, warn_if_unusable};
use crate::error::GrpcError;
use crate::message_limit::MessageLimit;
use crate::metrics::TensorTraffic;
use crate::options::{runtime, GrpcOptions};
use crate::polled::Polled;
use crate::proto::master_service_server::MasterServiceServer;
use crate::proto::worker_service_server::WorkerServiceServer;
use crate::request_bytes::{Budget, RequestBytes};
use crate::service::{MasterService, WorkerService};
use crate::tf::proto::master_service_server::MasterServiceServer as TfMasterServiceServer;
use crate::tf::TfMasterService;
use crate::tls::error_chain;
use crate::transport::{GrpcTransport, OwnedRuntime, WINDOW};

/// HTTP/2 frame size the server accepts: streamed tensor chunks in few frames.
const MAX_FRAME: u32 = 1 << 20;

struct Running {
    shutdown: oneshot::Sender<()>,
    serve: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    metrics: Option<tokio::task::JoinHandle<()>>,
    runtime: OwnedRuntime,
}

/// One task of a cluster, served over gRPC.
pub struct GrpcServer {
    core: Arc<TaskServer>,
    local_addr: SocketAddr,
    tls: bool,
    master: MasterService,
    /// Its `SendTensorsStream`s end when the server stops.
    worker: WorkerService,
    health: HealthReporter,
    metrics_addr: Option<SocketAddr>,
    /// The busy polling of the server's runtime.
    busy: Arc<BusyPoll>,
    running: Mutex<Option<Running>>,
}

impl fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServer")
            .field("task", &self.core.task().to_string())
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls)
            .field("stopped", &self.core.is_stopped())
            .finish()
    }
}

impl GrpcServer {
    /// Starts `/job:<job>/task:<index>` of `cluster` on the task's address, with the
    /// default [`GrpcOptions`].
    pub fn start(
        cluster: &ClusterSpec,
        job: &str,
        index: u32,
        options: &ServerOptions,
    ) -> Result<GrpcServer, GrpcError> {
        GrpcServer::start_with(cluster, job, index, options, GrpcOptions::default())
    }

    /// [`GrpcServer::start`] with explicit gRPC options (among them TLS and the cluster
    /// token).
    ///
    /// # Errors
    ///
    /// [`GrpcError::Cluster`] for a task the cluster lacks, [`GrpcError::Tls`] when the
    /// TLS certificate and key do not go together, [`GrpcError::Bind`] when the address
    /// (the task's in the cluster spec, or [`GrpcOptions::bind`]) cannot be bound,
    /// [`GrpcError::Worker`] for unusable server options.
    pub fn start_with(
        cluster: &ClusterSpec,
        job: &str,
        index: u32,
        options: &ServerOptions,
        grpc: GrpcOptions,
    ) -> Result<GrpcServer, GrpcError> {
        let task = TaskName::new(job, index);
        let advertised = cluster.address(&task)?.to_string();
        let address = grpc.bind.clone().unwrap_or_else(|| advertised.clone());
        // TLS first: a certificate that does not go with its key fails before anything
        // starts.
        let mut builder = Server::builder();
        let tls = grpc
            .tls
            .as_ref()
            .and_then(|t| t.server_config(grpc.request_timeout));
        let serves_tls = tls.is_some();
        if let Some(config) = tls {
            builder = builder.tls_config(config).map_err(|e| GrpcError::Tls {
                what: format!("the TLS certificate and key of task {task}"),
                detail: error_chain(&e),
            })?;
        }
        let mutual = serves_tls && grpc.tls.as_ref().is_some_and(|t| t.is_mutual());
        if !serves_tls && grpc.auth_token.is_none() && !is_loopback(&address) {
            tracing::warn!(
                %task,
                %address,
                "serving plaintext without a cluster token: anyone who reaches this address \
                 can run graphs here (see SECURITY.md)"
            );
        }
        let rt = OwnedRuntime::new(
            runtime(grpc.runtime_threads, "magpie-grpc-server", grpc.warm_window).map_err(|e| {
                GrpcError::Io {
                    what: format!("starting the runtime of task {task}"),
                    detail: e.to_string(),
                }
            })?,
        );
        let handle = rt.handle();
        let transport = Arc::new(GrpcTransport::with_runtime(
            cluster.clone(),
            grpc.clone(),
            handle.clone(),
        ));
        let core = Arc::new(TaskServer::new(
            cluster.clone(),
            task.clone(),
            options,
            Arc::clone(&transport) as Arc<dyn magpie_core::transport::Transport>,
        )?);
        transport.serve_locally(&core);

        let listener = std::net::TcpListener::bind(&address).map_err(|e| GrpcError::Bind {
            address: address.clone(),
            task: task.to_string(),
            detail: e.to_string(),
        })?;
        let local_addr = listener.local_addr().map_err(|e| GrpcError::Io {
            what: format!("reading the address of task {task}"),
            detail: e.to_string(),
        })?;
        listener.set_nonblocking(true).map_err(|e| GrpcError::Io {
            what: format!("configuring the socket of task {task}"),
            detail: e.to_string(),
        })?;
        let listener = {
            let _guard = handle.enter();
            tokio::net::TcpListener::from_std(listener).map_err(|e| GrpcError::Io {
                what: format!("registering the socket of task {task}"),
                detail: e.to_string(),
            })?
        };
        let master = MasterService::with_options(Arc::clone(&core), grpc.clone());
        let metrics = Arc::clone(master.metrics());
        transport.set_metrics(Arc::clone(&metrics));
        let metrics_listener = match &grpc.metrics_addr {
            Some(a) => Some(bind_metrics(a, &task, &handle)?),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);
        let max = grpc.max_message_bytes;
        // Every service's request messages share one budget.
        let budget = Budget::new(
            grpc.incoming_request_bytes,
            u64::try_from(max).unwrap_or(u64::MAX),
            Arc::clone(&metrics),
        );
        let connection_metrics = Arc::clone(&metrics);
        warn_if_unusable(
            grpc.max_connections,
            grpc.incoming_request_bytes,
            max,
            &task.to_string(),
        );
        // tonic's own size refusals become RESOURCE_EXHAUSTED naming the flag.
        let worker = WorkerService::with_metrics(Arc::clone(&core), grpc.clone(), metrics);
        let worker_svc = MessageLimit::new(
            InterceptedService::new(
                WorkerServiceServer::new(worker.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
                Guard::new("WorkerService", grpc.auth_token.clone(), mutual),
            ),
            max,
        );
        // Calls tell the runtime's busy polling when to spin for the next request.
        let busy = Arc::clone(transport.busy_poll());
        let worker_svc = Polled::new(
            RequestBytes::new(worker_svc, Arc::clone(&budget)),
            Arc::clone(&busy),
        );
        let master_svc = MessageLimit::new(
            InterceptedService::new(
                MasterServiceServer::new(master.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
                Guard::new("MasterService", grpc.auth_token.clone(), false),
            ),
            max,
        );
        let master_svc = Polled::new(
            RequestBytes::new(master_svc, Arc::clone(&budget)),
            Arc::clone(&busy),
        );
        let tf_svc = Polled::new(
            RequestBytes::new(
                InterceptedService::new(
                    TfMasterServiceServer::new(master.tensorflow())
                        .max_decoding_message_size(max)
                        .max_encoding_message_size(max),
                    Guard::new("tensorflow.MasterService", grpc.auth_token.clone(), false),
                ),
                Arc::clone(&budget),
            ),
            Arc::clone(&busy),
        );
        if let Some(idle) = grpc.session_idle_timeout {
            // Ends with the runtime, when the server stops.
            let master = master.clone();
            let period = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(60));
            handle.spawn(async move {
                let mut ticks = tokio::time::interval(period);
                loop {
                    ticks.tick().await;
                    master.close_idle_sessions(idle).await;
                }
            });
        }
        let (health, health_svc) = tonic_health::server::health_reporter();
        // Every service takes messages of at most `max`: the budget counts each of them.
        let health_svc = RequestBytes::new(health_svc.max_decoding_message_size(max), budget);
        futures::executor::block_on(async {
            health
                .set_serving::<WorkerServiceServer<WorkerService>>()
                .await;
            health
                .set_serving::<MasterServiceServer<MasterService>>()
                .await;
            health
                .set_serving::<TfMasterServiceServer<TfMasterService>>()
                .await;
        });
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let incoming = limit_connections(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            grpc.max_connections,
            connection_metrics,
            task.to_string(),
        );
        let router = builder
            .initial_stream_window_size(Some(WINDOW))
            .initial_connection_window_size(Some(2 * WINDOW))
            .max_frame_size(Some(MAX_FRAME))
            .max_concurrent_streams(Some(grpc.max_concurrent_streams))
            .http2_keepalive_interval(Some(grpc.keepalive_interval))
            .http2_keepalive_timeout(Some(grpc.keepalive_timeout))
            .add_service(health_svc)
            .add_service(worker_svc)
            .add_service(master_svc)
            .add_service(tf_svc);
        let serve = handle.spawn(router.serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown_rx.await;
        }));
        let metrics_task = metrics_listener.map(|(listener, addr)| {
            tracing::info!(%task, %addr, "serving metrics at /metrics");
            let master = master.clone();
            handle.spawn(crate::metrics_http::serve(
                listener,
                Arc::new(move || master.render_metrics()),
            ))
        });
        Ok(GrpcServer {
            core,
            local_addr,
            tls: serves_tls,
            master,
            worker,
            health,
            metrics_addr,
            busy,
            running: Mutex::new(Some(Running {
                shutdown,
                serve,
                metrics: metrics_task,
                runtime: rt,
            })),
        })
    }

    /// The task's services.
    pub fn core(&self) -> &Arc<TaskServer> {
        &self.core
    }

    /// Requests that carried tensors into this task so far, and the tensors they
    /// carried (also `magpie_tensor_requests_received_total` and
    /// `magpie_tensors_received_total` at `/metrics`).
    pub fn tensor_traffic(&self) -> TensorTraffic {
        self.master.metrics().tensor_traffic()
    }

    /// What the busy polling of the server's runtime did so far
    /// ([`GrpcOptions::busy_poll`]): its spins after answers and after requests to its
    /// peers. The process's totals are [`BusyPollStats::now`] and the
    /// `magpie_busy_poll_*` metrics.
    pub fn busy_poll_stats(&self) -> BusyPollStats {
        self.busy.stats()
    }

    /// The task.
    pub fn task(&self) -> &TaskName {
        self.core.task()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The target that reaches this server's master: `grpc://<address>`, or
    /// `grpcs://<address>` when it serves TLS.
    pub fn target(&self) -> String {
        let scheme = if self.tls { "grpcs" } else { "grpc" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Whether the server serves TLS.
    pub fn serves_tls(&self) -> bool {
        self.tls
    }

    /// The address `/metrics` is served on, with [`GrpcOptions::metrics_addr`].
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The task's metrics in the Prometheus text format: what `GET /metrics` returns
    /// (also without [`GrpcOptions::metrics_addr`]).
    pub fn metrics_text(&self) -> String {
        self.master.render_metrics()
    }

    /// Sessions remote clients hold open on this master.
    pub fn num_remote_sessions(&self) -> usize {
        self.master.num_sessions()
    }

    /// Stops the server: refuses new sessions and steps, lets running steps finish within
    /// `deadline` (then cancels them), closes the connections and frees the port.
    /// Returns how many partition steps were cancelled. Idempotent.
    pub fn stop(&self, deadline: Duration) -> usize {
        // Health checks see the drain: load balancers stop sending new work.
        futures::executor::block_on(async {
            self.health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            self.health
                .set_not_serving::<WorkerServiceServer<WorkerService>>()
                .await;
            self.health
                .set_not_serving::<MasterServiceServer<MasterService>>()
                .await;
            self.health
                .set_not_serving::<TfMasterServiceServer<TfMasterService>>()
                .await;
        });
        let cancelled = self.core.stop(deadline);
        let running = self.running.lock().take();
        if let Some(r) = running {
            if let Some(m) = r.metrics {
                m.abort();
            }
            // Peers' tensor streams end now instead of holding the graceful shutdown.
            self.worker.end_streams();
            let _ = r.shutdown.send(());
            let handle = r.runtime.handle();
            let serve = r.serve;
            // Connections get a short grace to close; then the runtime goes, and with it
            // the listener and every connection.
            let _ = std::thread::scope(|s| {
                s.spawn(|| {
                    handle.block_on(async {
                        let _ = tokio::time::timeout(Duration::from_millis(500), serve).await;
                    })
                })
                .join()
            });
            r.runtime.shutdown(Duration::from_secs(2));
        }
        cancelled
    }

    /// Blocks until the server stops.
    pub fn join(&self) {
        self.core.join()
    }

    /// Blocks until the server stops or `timeout` passes; returns whether it stopped.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.core.join_timeout(timeout)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// Binds the metrics endpoint's listener on `address`, registered with `handle`'s
/// runtime.
fn bind_metrics(
    address: &str,
    task: &TaskName,
    handle: &tokio::runtime::Handle,
) -> Result<(tokio::net::TcpListener, SocketAddr), GrpcError> {
    let bind = |detail: String| GrpcError::Bind {
        address: address.to_string(),
        task: format!("{task} (metrics)"),
        detail,
    };
    let listener = std::net::TcpListener::bind(address).map_err(|e| bind(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| bind(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| bind(e.to_string()))?;
    let _guard = handle.enter();
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| bind(e.to_string()))?;
    Ok((listener, addr))
}

/// Whether `address` (`host:port`) is on the loopback interface.
fn is_loopback(address: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
