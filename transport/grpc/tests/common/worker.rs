//! Setup shared by the tests that talk to one task's worker service: a one-task cluster
//! (job `w`) on a free loopback port, a partition of f32 `_Recv`s, a connected client,
//! and registering and running a partition over the wire or through a transport.

use std::net::SocketAddr;
use std::time::Duration;

use magpie_core::cluster::ClusterSpec;
use magpie_core::graph::{AttrValue, GraphDef, NodeDef};
use magpie_core::tensor::{DType, Tensor};
use magpie_core::testkit::host_task_options;
use magpie_core::transport::{
    PartitionHandle, RegisterPartition, RunPartition, TaskName, Transport,
};
use magpie_core::StepId;
use magpie_grpc::conv::{graph_to_wire, tensor_from_wire, tensor_to_wire};
use magpie_grpc::proto::worker_service_client::WorkerServiceClient;
use magpie_grpc::{proto, GrpcOptions, GrpcServer, GrpcTransport};
use tonic::transport::{Channel, Endpoint};

use super::{free_port, register_test_ops};

/// The task of `one_task`'s cluster.
pub const TASK: &str = "/job:w/task:0";
/// The CPU device of `TASK`.
pub const DEVICE: &str = "/job:w/replica:0/task:0/device:CPU:0";

/// A cluster of one task, `TASK`, at a free 127.0.0.1 port.
pub fn one_task() -> ClusterSpec {
    ClusterSpec::builder()
        .job("w", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap()
}

/// A server for the task of a new `one_task` cluster with `options` (and the host's task
/// options), the test ops registered first.
pub fn start_one_task(options: GrpcOptions) -> GrpcServer {
    register_test_ops();
    let spec = one_task();
    GrpcServer::start_with(&spec, "w", 0, &host_task_options("w"), options).unwrap()
}

/// A partition under session `s` of `edges.len()` f32 receives on `DEVICE` (node `r{i}`
/// receives edge `edges[i]`), fetching each in order.
pub fn receivers(edges: &[&str]) -> RegisterPartition {
    let nodes = edges
        .iter()
        .enumerate()
        .map(|(i, e)| NodeDef {
            name: format!("r{i}"),
            op: "_Recv".into(),
            inputs: vec![],
            device: DEVICE.into(),
            attrs: vec![
                ("edge".into(), AttrValue::Str((*e).into())),
                ("dtype".into(), AttrValue::DType(DType::F32)),
            ],
        })
        .collect();
    RegisterPartition {
        session: "s".into(),
        graph: GraphDef { nodes },
        feeds: vec![],
        fetches: (0..edges.len()).map(|i| format!("r{i}:0")).collect(),
        targets: vec![],
        shared: None,
    }
}

/// A multi-thread runtime of two workers, for tests that call the services themselves.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A worker-service client connected (plain HTTP/2) to the server at `addr`.
pub async fn connect_worker(addr: SocketAddr) -> WorkerServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    WorkerServiceClient::new(channel)
}

/// Registers the graph and fetches of `partition` on `TASK` under `session` through
/// `RegisterPartition`; the handle it answers.
pub async fn register_over_wire(
    c: &mut WorkerServiceClient<Channel>,
    session: &str,
    partition: &RegisterPartition,
) -> String {
    c.register_partition(proto::RegisterPartitionRequest {
        task: TASK.into(),
        session: session.into(),
        graph: Some(graph_to_wire(&partition.graph).unwrap()),
        fetches: partition.fetches.clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .handle
}

/// Runs partition `handle` of `session` on `TASK` for `step` through `RunPartition`
/// (with `timeout`) and returns the values of its first fetch, an f32 tensor.
pub async fn first_fetch_over_wire(
    c: &mut WorkerServiceClient<Channel>,
    handle: String,
    session: &str,
    step: StepId,
    timeout: Duration,
) -> Vec<f32> {
    let out = c
        .run_partition(proto::RunPartitionRequest {
            task: TASK.into(),
            handle,
            step_id: step.to_bytes().to_vec().into(),
            session: session.into(),
            timeout_ms: timeout.as_millis().try_into().unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got = tensor_from_wire(&out.fetches[0]).unwrap();
    got.as_slice::<f32>().unwrap().to_vec()
}

/// Runs partition `handle` of session `s` on `task` for `step` through `transport` (10 s
/// timeout) and returns its fetches' values, each an f32 tensor.
pub fn fetched(
    transport: &GrpcTransport,
    task: &TaskName,
    handle: PartitionHandle,
    step: StepId,
) -> Vec<Vec<f32>> {
    let out = futures::executor::block_on(transport.run_partition(
        task,
        RunPartition {
            handle,
            session: "s".into(),
            step_id: step,
            feeds: vec![],
            timeout: Duration::from_secs(10),
            trace: false,
        },
    ))
    .unwrap();
    out.tensors
        .iter()
        .map(|t| t.as_slice::<f32>().unwrap().to_vec())
        .collect()
}

/// A `SendTensors` entry for `edge` of `step` in `session`, carrying `t` (none if `None`).
pub fn inline(step: StepId, session: &str, edge: &str, t: Option<&Tensor>) -> proto::InlineTensor {
    proto::InlineTensor {
        step_id: step.to_bytes().to_vec().into(),
        session: session.into(),
        edge: edge.into(),
        tensor: t.map(|t| tensor_to_wire(t).unwrap()),
    }
}
