//! Small tensors between tasks travel whole in `SendTensors` requests: the tensors a
//! task has ready for one peer leave in one request, each is admitted or refused on its
//! own (the same checks as `SendTensor`, before its content becomes a tensor), values
//! arrive unchanged, and a peer that is gone fails every tensor of the request with an
//! error naming the task instead of leaving a send waiting. Servers on free 127.0.0.1
//! ports, stopped at the end.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{free_port, register_test_ops};
use magpie_core::cluster::ClusterSpec;
use magpie_core::graph::{AttrValue, GraphDef, NodeDef};
use magpie_core::tensor::{DType, Tensor};
use magpie_core::testkit::host_task_options;
use magpie_core::transport::{
    RegisterPartition, RendezvousKey, RunPartition, TaskName, Transport, TransportError,
};
use magpie_core::{Code, StepId};
use magpie_grpc::conv::{graph_to_wire, tensor_to_wire};
use magpie_grpc::proto::worker_service_client::WorkerServiceClient;
use magpie_grpc::{proto, GrpcOptions, GrpcServer, GrpcTransport, TensorTraffic};
use tonic::transport::Endpoint;

const TASK: &str = "/job:w/task:0";
const DEVICE: &str = "/job:w/replica:0/task:0/device:CPU:0";

/// A partition of `edges.len()` f32 receives, fetching each in order.
fn receivers(edges: &[&str]) -> (GraphDef, Vec<String>) {
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
    let fetches = (0..edges.len()).map(|i| format!("r{i}:0")).collect();
    (GraphDef { nodes }, fetches)
}

fn one_task() -> ClusterSpec {
    ClusterSpec::builder()
        .job("w", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap()
}

fn inline(step: StepId, session: &str, edge: &str, t: Option<&Tensor>) -> proto::InlineTensor {
    proto::InlineTensor {
        step_id: step.to_bytes().to_vec().into(),
        session: session.into(),
        edge: edge.into(),
        tensor: t.map(|t| tensor_to_wire(t).unwrap()),
    }
}

#[test]
fn each_tensor_of_a_request_is_admitted_on_its_own_and_delivered_unchanged() {
    register_test_ops();
    let spec = one_task();
    let options = GrpcOptions {
        inline_tensor_bytes: 64,
        ..GrpcOptions::default()
    };
    let server = GrpcServer::start_with(&spec, "w", 0, &host_task_options("w"), options).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = Endpoint::from_shared(format!("http://{}", server.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = WorkerServiceClient::new(channel);
        let (graph, fetches) = receivers(&["x"]);
        let handle = c
            .register_partition(proto::RegisterPartitionRequest {
                task: TASK.into(),
                session: "mine".into(),
                graph: Some(graph_to_wire(&graph).unwrap()),
                fetches,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .handle;

        let step = StepId::from_bytes(&[7u8; 16]).unwrap();
        let x = Tensor::from_vec([3], vec![1.5f32, -2.0, 3.25]).unwrap();
        let big = Tensor::from_vec([32], vec![0.0f32; 32]).unwrap(); // 128 bytes > 64
        let mut bad_len = tensor_to_wire(&x).unwrap();
        bad_len.dims = vec![4];
        let request = proto::SendTensorsRequest {
            task: TASK.into(),
            source: String::new(),
            tensors: vec![
                inline(step, "nobody", "y", Some(&x)),
                inline(step, "mine", "x", Some(&x)),
                inline(step, "mine", "big", Some(&big)),
                inline(step, "mine", "none", None),
                proto::InlineTensor {
                    tensor: Some(bad_len),
                    ..inline(step, "mine", "bad", None)
                },
            ],
            batch: 0,
        };
        let results = c.send_tensors(request).await.unwrap().into_inner().results;
        let codes: Vec<i32> = results.iter().map(|r| r.code).collect();
        assert_eq!(
            codes,
            [
                tonic::Code::NotFound as i32,
                0,
                tonic::Code::InvalidArgument as i32,
                tonic::Code::InvalidArgument as i32,
                tonic::Code::InvalidArgument as i32,
            ],
            "{results:?}"
        );
        assert!(results[0].message.contains("nobody"), "{results:?}");
        assert!(results[2].message.contains("SendTensor"), "{results:?}");
        assert!(results[3].message.contains("no tensor"), "{results:?}");
        assert_eq!(
            server.tensor_traffic(),
            TensorTraffic {
                requests: 1,
                tensors: 5,
                streamed: 0,
            }
        );

        // The tensor taken is the one the partition's receive gets.
        let out = c
            .run_partition(proto::RunPartitionRequest {
                task: TASK.into(),
                handle,
                step_id: step.to_bytes().to_vec().into(),
                session: "mine".into(),
                timeout_ms: 10_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let got = magpie_grpc::conv::tensor_from_wire(&out.fetches[0]).unwrap();
        assert_eq!(got.as_slice::<f32>().unwrap(), [1.5, -2.0, 3.25]);
    });
    drop(rt);
    server.stop(Duration::ZERO);
}

#[test]
fn small_tensors_filed_before_the_flush_runs_leave_in_one_request() {
    register_test_ops();
    let spec = one_task();
    let server = GrpcServer::start(&spec, "w", 0, &host_task_options("w")).unwrap();
    let task = TaskName::new("w", 0);
    // The client transport runs its requests on a runtime with one thread, which the
    // test keeps busy while it sends: every send is filed before the flush can run.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let transport = GrpcTransport::with_runtime(spec, GrpcOptions::default(), rt.handle().clone());
    let (graph, fetches) = receivers(&["e0", "e1", "e2", "e3"]);
    let handle = futures::executor::block_on(transport.register_partition(
        &task,
        RegisterPartition {
            session: "s".into(),
            graph,
            feeds: vec![],
            fetches,
            targets: vec![],
            shared: None,
        },
    ))
    .unwrap();

    let step = StepId::random().unwrap();
    let (hold, held) = mpsc::channel::<()>();
    let (busy, is_busy) = mpsc::channel::<()>();
    rt.spawn(async move {
        busy.send(()).unwrap();
        // Blocks the runtime's only thread until the sends are filed.
        held.recv().unwrap();
    });
    is_busy.recv().unwrap();
    let answers: Vec<_> = (0..4)
        .map(|i| {
            let key = RendezvousKey {
                step_id: step,
                edge: format!("e{i}"),
            };
            let t = Tensor::from_vec([2], vec![i as f32 * 10.0, 0.5]).unwrap();
            transport.send(&task, "s", key, t)
        })
        .collect();
    hold.send(()).unwrap();
    for a in answers {
        futures::executor::block_on(a).unwrap();
    }
    assert_eq!(
        server.tensor_traffic(),
        TensorTraffic {
            requests: 1,
            tensors: 4,
            streamed: 1,
        },
        "four small tensors for one task filed together travel in one batch, on the stream"
    );

    let out = futures::executor::block_on(transport.run_partition(
        &task,
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
    let values: Vec<Vec<f32>> = out
        .tensors
        .iter()
        .map(|t| t.as_slice::<f32>().unwrap().to_vec())
        .collect();
    assert_eq!(values, [[0.0, 0.5], [10.0, 0.5], [20.0, 0.5], [30.0, 0.5]]);
    drop(transport);
    rt.shutdown_timeout(Duration::from_secs(1));
    server.stop(Duration::ZERO);
}

#[test]
fn a_peer_that_is_gone_fails_every_tensor_of_the_request_naming_it() {
    let spec = one_task();
    let task = TaskName::new("w", 0);
    // Nothing listens at the task's address.
    let options = GrpcOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..GrpcOptions::default()
    };
    let transport = GrpcTransport::new(spec, options).unwrap();
    let step = StepId::random().unwrap();
    let answers: Vec<_> = (0..3)
        .map(|i| {
            let key = RendezvousKey {
                step_id: step,
                edge: format!("e{i}"),
            };
            transport.send(&task, "s", key, Tensor::scalar(i as f32))
        })
        .collect();
    for a in answers {
        let e = futures::executor::block_on(a).unwrap_err();
        assert!(
            matches!(
                e,
                TransportError::Unreachable { .. } | TransportError::NoAnswer { .. }
            ),
            "{e:?}"
        );
        assert_eq!(e.task(), "/job:w/task:0");
        assert!(matches!(
            e.code(),
            Code::Unavailable | Code::DeadlineExceeded
        ));
    }
}

#[test]
fn a_send_whose_runtime_stopped_is_answered_not_left_waiting() {
    let spec = one_task();
    let task = TaskName::new("w", 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let transport = GrpcTransport::with_runtime(spec, GrpcOptions::default(), rt.handle().clone());
    rt.shutdown_timeout(Duration::from_secs(1));
    // The flush spawned on the stopped runtime is dropped unpolled; each send still gets
    // its answer, and the second finds no flush left scheduled by the first.
    for i in 0..2 {
        let key = RendezvousKey {
            step_id: StepId::random().unwrap(),
            edge: format!("e{i}"),
        };
        let e =
            futures::executor::block_on(transport.send(&task, "s", key, Tensor::scalar(1.0f32)))
                .unwrap_err();
        assert!(matches!(e, TransportError::Unreachable { .. }), "{e:?}");
        assert_eq!(e.task(), "/job:w/task:0");
    }
}
