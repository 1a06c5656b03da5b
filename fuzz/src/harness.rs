//! What the fuzz targets drive: a local CPU session for a fuzzed graph, and an
//! in-process master (the gRPC `MasterService` handlers, called directly, without a
//! socket) for sequences of fuzzed RPCs.
//!
//! Hostile shapes must fail by the devices' memory limits, not by exhausting the
//! fuzzer's memory, so every step here runs under a small memory budget, a deadline, and
//! on a shared pool of two workers (a pool per input would cost a thread spawn per run).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use magpie_core::cluster::ClusterSpec;
use magpie_core::distributed::{ServerOptions, TaskServer};
use magpie_core::graph::{registered_ops, DeviceName, Graph};
use magpie_core::scheduler::ThreadPool;
use magpie_core::session::{RunOptions, Session, SessionOptions};
use magpie_core::{Device, Tensor};
use magpie_grpc::proto::master_service_server::MasterService as _;
use magpie_grpc::{GrpcOptions, GrpcTransport, MasterService};

use crate::graph_gen::{FuzzGraph, FuzzTensor};

/// Bytes a fuzzed step may hold on its device.
pub const STEP_BUDGET_BYTES: u64 = 64 << 20;

/// The fuzzed CPU device's memory limit: an allocation that would take its live tensors
/// beyond it fails at once.
pub const DEVICE_LIMIT_BYTES: u64 = 256 << 20;

/// A fuzzed step's deadline.
pub const STEP_DEADLINE: Duration = Duration::from_secs(2);

struct Local {
    ops: Vec<String>,
    cpu: Arc<dyn Device>,
    pool: ThreadPool,
}

fn local() -> &'static Local {
    static LOCAL: OnceLock<Local> = OnceLock::new();
    LOCAL.get_or_init(|| {
        magpie_cpu::register().expect("the CPU kernels register");
        magpie_core::distributed::kernels::register_kernels();
        let mut ops = registered_ops();
        ops.sort();
        Local {
            ops,
            cpu: Arc::new(magpie_cpu::CpuDevice::new(0).with_memory_limit(Some(DEVICE_LIMIT_BYTES))),
            pool: ThreadPool::builder()
                .num_workers(2)
                .build()
                .expect("a pool of two workers starts"),
        }
    })
}

/// Every op name registered in this process (CPU kernels and distributed ops included),
/// sorted: fuzzed graphs pick their ops from it.
pub fn op_names() -> &'static [String] {
    &local().ops
}

fn session_options() -> SessionOptions {
    let l = local();
    SessionOptions {
        pool: Some(l.pool.clone()),
        memory_budgets: vec![("/device:CPU:0".into(), STEP_BUDGET_BYTES)],
        ..SessionOptions::with_devices(vec![Arc::clone(&l.cpu)])
    }
}

/// A fuzzed graph, the nodes it fetches and the tensors it feeds.
#[derive(arbitrary::Arbitrary, Debug)]
pub struct GraphRun {
    /// The graph.
    pub graph: FuzzGraph,
    /// Fetched `(node, output)`s, by index into the graph's nodes.
    pub fetches: Vec<(u8, u8)>,
    /// Targets, by node index.
    pub targets: Vec<u8>,
    /// Feeds: `(node, output)` and a tensor.
    pub feeds: Vec<((u8, u8), FuzzTensor)>,
}

/// Imports the graph; when it imports, checks its `GraphDef` round trip, opens a CPU
/// session on it and runs one step (twice: the second from the plan cache).
pub fn run_graph(input: &GraphRun) {
    let def = input.graph.to_graph_def(op_names());
    let Ok(graph) = Graph::import(&def) else {
        return;
    };
    let again = Graph::import(&graph.to_graph_def())
        .expect("a graph's own GraphDef re-imports");
    // Compared as text: a float attribute may be NaN, which is not equal to itself.
    assert_eq!(
        format!("{:?}", again.to_graph_def()),
        format!("{:?}", graph.to_graph_def())
    );

    let Ok(session) = Session::new(&graph, session_options()) else {
        return;
    };
    let output = |(node, out): (u8, u8)| {
        let name = &def.nodes.get(usize::from(node) % def.nodes.len().max(1))?.name;
        Some(graph.node_by_name(name)?.output(u32::from(out % 3)))
    };
    let fetches: Vec<_> = input.fetches.iter().filter_map(|f| output(*f)).collect();
    let targets: Vec<_> = input
        .targets
        .iter()
        .filter_map(|t| Some(output((*t, 0))?.node()))
        .collect();
    let feeds: Vec<(_, Tensor)> = input
        .feeds
        .iter()
        .filter_map(|(o, t)| Some((output(*o)?, t.build()?)))
        .collect();
    let options = RunOptions {
        timeout: Some(STEP_DEADLINE),
        ..RunOptions::default()
    };
    for _ in 0..2 {
        if let Ok(out) = session.run_with_options(&options, &feeds, &fetches, &targets) {
            assert_eq!(out.tensors.len(), fetches.len(), "one tensor per fetch");
        }
    }
}

/// The in-process master: a one-task cluster whose gRPC master service is called
/// directly.
pub struct Master {
    /// The runtime the handlers run on.
    pub runtime: tokio::runtime::Runtime,
    /// The service.
    pub service: MasterService,
}

/// The process's master (started on first use).
pub fn master() -> &'static Master {
    static MASTER: OnceLock<Master> = OnceLock::new();
    MASTER.get_or_init(|| {
        local();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        // The address is never dialled: a one-task cluster runs its partitions locally.
        let cluster = ClusterSpec::from_toml(r#"worker = ["127.0.0.1:9"]"#)
            .expect("a one-task cluster spec is valid");
        let transport = Arc::new(GrpcTransport::with_runtime(
            cluster.clone(),
            GrpcOptions::default(),
            runtime.handle().clone(),
        ));
        let options = ServerOptions {
            num_workers: Some(2),
            ..ServerOptions::with_devices(vec![Arc::new(
                magpie_cpu::CpuDevice::with_name(
                    DeviceName::parse("/job:worker/replica:0/task:0/device:CPU:0")
                        .expect("a valid device name"),
                )
                .with_memory_limit(Some(DEVICE_LIMIT_BYTES)),
            ) as Arc<dyn Device>])
        };
        let server = Arc::new(
            TaskServer::new(
                cluster,
                magpie_core::transport::TaskName::new("worker", 0),
                &options,
                Arc::clone(&transport) as Arc<dyn magpie_core::transport::Transport>,
            )
            .expect("the task starts"),
        );
        transport.serve_locally(&server);
        Master {
            runtime,
            service: MasterService::new(server),
        }
    })
}

/// One RPC of a fuzzed sequence. Sessions are named by index into the handles this
/// sequence created (or by an arbitrary string).
#[derive(arbitrary::Arbitrary, Debug)]
pub enum Call {
    /// CreateSession with a fuzzed graph.
    Create(FuzzGraph),
    /// CreateSession from raw protobuf bytes.
    CreateRaw(Vec<u8>),
    /// ExtendSession.
    Extend(u8, FuzzGraph),
    /// RunStep: feeds by node name, fetches and targets by node index.
    Run {
        /// Session.
        session: u8,
        /// Feeds.
        feeds: Vec<(u8, FuzzTensor)>,
        /// Fetches.
        fetches: Vec<(u8, u8)>,
        /// Targets.
        targets: Vec<u8>,
        /// Deadline.
        timeout_ms: u16,
    },
    /// RunStep from raw protobuf bytes.
    RunRaw(Vec<u8>),
    /// CloseSession.
    Close(u8),
    /// A call on a handle no session has.
    Stranger(String),
}

/// Runs a sequence of RPCs on the master, then closes every session it opened.
pub fn run_calls(calls: &[Call]) {
    use magpie_grpc::conv::{graph_to_wire, tensor_to_wire};
    use magpie_grpc::proto;
    use prost::Message;
    use tonic::Request;

    let m = master();
    let svc = &m.service;
    let mut handles: Vec<String> = Vec::new();
    let pick = |handles: &[String], i: u8| {
        handles
            .get(usize::from(i) % handles.len().max(1))
            .cloned()
            .unwrap_or_default()
    };
    m.runtime.block_on(async {
        for call in calls {
            match call {
                Call::Create(g) => {
                    let Ok(graph) = graph_to_wire(&g.to_graph_def(op_names())) else {
                        continue;
                    };
                    let r = svc
                        .create_session(Request::new(proto::CreateSessionRequest {
                            graph: Some(graph),
                            ..Default::default()
                        }))
                        .await;
                    if let Ok(r) = r {
                        handles.push(r.into_inner().session_handle);
                    }
                }
                Call::CreateRaw(bytes) => {
                    if let Ok(req) = proto::CreateSessionRequest::decode(bytes.as_slice()) {
                        if let Ok(r) = svc.create_session(Request::new(req)).await {
                            handles.push(r.into_inner().session_handle);
                        }
                    }
                }
                Call::Extend(s, g) => {
                    let Ok(nodes) = graph_to_wire(&g.to_graph_def(op_names())) else {
                        continue;
                    };
                    let _ = svc
                        .extend_session(Request::new(proto::ExtendSessionRequest {
                            session_handle: pick(&handles, *s),
                            nodes: Some(nodes),
                        }))
                        .await;
                }
                Call::Run {
                    session,
                    feeds,
                    fetches,
                    targets,
                    timeout_ms,
                } => {
                    let name = |i: u8, out: u8| match out % 3 {
                        0 => format!("n{i}"),
                        k => format!("n{i}:{k}"),
                    };
                    let feeds = feeds
                        .iter()
                        .filter_map(|(n, t)| {
                            Some(proto::NamedTensor {
                                name: name(*n, 0),
                                tensor: Some(tensor_to_wire(&t.build()?).ok()?),
                            })
                        })
                        .collect();
                    let _ = svc
                        .run_step(Request::new(proto::RunStepRequest {
                            session_handle: pick(&handles, *session),
                            feeds,
                            fetches: fetches.iter().map(|(n, o)| name(*n, *o)).collect(),
                            targets: targets.iter().map(|n| name(*n, 0)).collect(),
                            timeout_ms: u64::from(*timeout_ms % 2000).max(1),
                            // The top bit asks for the step's timelines too.
                            trace: *timeout_ms & 0x8000 != 0,
                            omit_placement: *timeout_ms % 2 == 0,
                        }))
                        .await;
                }
                Call::RunRaw(bytes) => {
                    if let Ok(mut req) = proto::RunStepRequest::decode(bytes.as_slice()) {
                        if let Some(h) = handles.first() {
                            req.session_handle = h.clone();
                        }
                        req.timeout_ms = req.timeout_ms.clamp(1, 2000);
                        let _ = svc.run_step(Request::new(req)).await;
                    }
                }
                Call::Close(s) => {
                    let _ = svc
                        .close_session(Request::new(proto::CloseSessionRequest {
                            session_handle: pick(&handles, *s),
                        }))
                        .await;
                }
                Call::Stranger(h) => {
                    let _ = svc
                        .close_session(Request::new(proto::CloseSessionRequest {
                            session_handle: h.clone(),
                        }))
                        .await;
                }
            }
        }
        for h in handles {
            let _ = svc
                .close_session(Request::new(proto::CloseSessionRequest { session_handle: h }))
                .await;
        }
    });
}
