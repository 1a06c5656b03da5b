//! The worker and master services called directly, without sockets: requests are
//! validated and malformed ones get clear gRPC errors.

use std::sync::Arc;

use magpie_core::cluster::ClusterSpec;
use magpie_core::distributed::TaskServer;
use magpie_core::testkit::host_task_options;
use magpie_core::transport::TaskName;
use magpie_grpc::proto::master_service_server::MasterService as _;
use magpie_grpc::proto::worker_service_server::WorkerService as _;
use magpie_grpc::{proto, GrpcOptions, GrpcTransport, MasterService, WorkerService};
use tonic::{Code, Request};

fn server() -> Arc<TaskServer> {
    magpie_core::distributed::kernels::register_kernels();
    let spec = ClusterSpec::builder()
        .job("w", ["127.0.0.1:1"])
        .build()
        .unwrap();
    let options = host_task_options("w");
    let transport = Arc::new(GrpcTransport::new(spec.clone(), GrpcOptions::default()).unwrap());
    Arc::new(TaskServer::new(spec, TaskName::new("w", 0), &options, transport).unwrap())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_worker_service_validates_requests() {
    let core = server();
    let svc = WorkerService::new(Arc::clone(&core), GrpcOptions::default());
    let rt = rt();
    let devices = rt
        .block_on(svc.list_devices(Request::new(proto::ListDevicesRequest {
            task: "/job:w/task:0".into(),
        })))
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(devices[0].name, "/job:w/replica:0/task:0/device:CPU:0");

    // A request for another task.
    let e = rt
        .block_on(svc.list_devices(Request::new(proto::ListDevicesRequest {
            task: "/job:other/task:3".into(),
        })))
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("/job:other/task:3"), "{}", e.message());

    // A partition without a graph, and one with an unknown op.
    let e = rt
        .block_on(
            svc.register_partition(Request::new(proto::RegisterPartitionRequest {
                task: "/job:w/task:0".into(),
                ..Default::default()
            })),
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = rt
        .block_on(
            svc.register_partition(Request::new(proto::RegisterPartitionRequest {
                task: "/job:w/task:0".into(),
                graph: Some(proto::GraphDef {
                    node: vec![proto::NodeDef {
                        name: "n".into(),
                        op: "NoSuchOp".into(),
                        ..Default::default()
                    }],
                }),
                fetches: vec!["n:0".into()],
                ..Default::default()
            })),
        )
        .unwrap_err();
    assert!(e.message().contains("NoSuchOp"), "{:?}", e);

    // An unknown partition handle; a feed whose bytes do not match its shape.
    let e = rt
        .block_on(svc.run_partition(Request::new(proto::RunPartitionRequest {
            task: "/job:w/task:0".into(),
            handle: "nope".into(),
            step_id: vec![1u8; 16].into(),
            timeout_ms: 100,
            ..Default::default()
        })))
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = rt
        .block_on(svc.run_partition(Request::new(proto::RunPartitionRequest {
            task: "/job:w/task:0".into(),
            handle: "nope".into(),
            feeds: vec![proto::TensorProto {
                dtype: proto::DataType::F64 as i32,
                dims: vec![2],
                content: vec![0u8; 3].into(),
            }],
            step_id: vec![2u8; 16].into(),
            ..Default::default()
        })))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("got 3"), "{}", e.message());
    // A step id is 16 bytes.
    let e = rt
        .block_on(svc.abort_step(Request::new(proto::AbortStepRequest {
            task: "/job:w/task:0".into(),
            step_id: vec![1u8; 8].into(),
            session: "any".into(),
            reason: String::new(),
            reason_code: 0,
        })))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("step_id"), "{}", e.message());
    core.stop(std::time::Duration::ZERO);
}

#[test]
fn the_master_service_rejects_unknown_sessions_and_invalid_graphs() {
    let core = server();
    let svc = MasterService::new(Arc::clone(&core));
    let rt = rt();
    let e = rt
        .block_on(svc.close_session(Request::new(proto::CloseSessionRequest {
            session_handle: "ghost".into(),
        })))
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("ghost"), "{}", e.message());
    let e = rt
        .block_on(
            svc.create_session(Request::new(proto::CreateSessionRequest {
                graph: Some(proto::GraphDef {
                    node: vec![
                        proto::NodeDef {
                            name: "a".into(),
                            op: "Neg".into(),
                            input: vec!["b".into()],
                            ..Default::default()
                        },
                        proto::NodeDef {
                            name: "b".into(),
                            op: "Neg".into(),
                            input: vec!["a".into()],
                            ..Default::default()
                        },
                    ],
                }),
                ..Default::default()
            })),
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("invalid graph"), "{}", e.message());
    assert_eq!(svc.num_sessions(), 0);
    core.stop(std::time::Duration::ZERO);
}
