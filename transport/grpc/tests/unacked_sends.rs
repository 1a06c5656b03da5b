//! A partition step replies without waiting for its receivers to acknowledge its sends
//! (core's `unacked.rs`): a send refused after the sender replied aborts the step on its
//! receiver, whose error names the sending task, the edge and the refusal, long before
//! the step's deadline; and steps whose sends succeed give their values.

mod common;

use std::time::Duration;

use common::{free_port, op, register_test_ops};
use magpie_core::cluster::ClusterSpec;
use magpie_core::distributed::RendezvousLimits;
use magpie_core::graph::Graph;
use magpie_core::testkit::host_task_options;
use magpie_grpc::conv::graph_to_wire;
use magpie_grpc::proto::master_service_client::MasterServiceClient;
use magpie_grpc::{proto, GrpcServer};

#[test]
fn a_send_refused_after_its_partition_replied_fails_the_step_naming_sender_and_edge() {
    register_test_ops();
    let spec = ClusterSpec::builder()
        .job("m", [format!("127.0.0.1:{}", free_port())])
        .job("w", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    let m = GrpcServer::start(&spec, "m", 0, &host_task_options("m")).unwrap();
    // The worker takes at most 160 bytes of tensors per step, as the rendezvous counts
    // them (data and a fixed overhead): `TestThree`'s scalar (156) passes, `TestFour`'s
    // four floats (168) are refused.
    let mut w_options = host_task_options("w");
    w_options.rendezvous_limits = RendezvousLimits {
        step_bytes: 160,
        ..RendezvousLimits::default()
    };
    let w = GrpcServer::start(&spec, "w", 0, &w_options).unwrap();

    let g = Graph::new();
    let small = op(&g, "/job:m/task:0", "small", "TestThree", &[]);
    let big = op(&g, "/job:m/task:0", "big", "TestFour", &[]);
    op(&g, "/job:w/task:0", "small_there", "TestPass", &[small]);
    op(&g, "/job:w/task:0", "big_there", "TestPass", &[big]);
    let def = graph_to_wire(&g.to_graph_def()).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = MasterServiceClient::connect(format!("http://{}", m.local_addr()))
            .await
            .unwrap();
        let handle = c
            .create_session(proto::CreateSessionRequest {
                graph: Some(def),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .session_handle;
        // A step deadline of ten minutes: a receiver left waiting for its tensor would
        // show as the test hanging, not as a slow pass.
        let step = |fetch: &str| proto::RunStepRequest {
            session_handle: handle.clone(),
            fetches: vec![fetch.into()],
            timeout_ms: 600_000,
            ..Default::default()
        };

        // A send within the limit: the value crosses, several times.
        for _ in 0..3 {
            let out = c
                .run_step(step("small_there:0"))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(out.tensors.len(), 1);
            let t = magpie_grpc::conv::tensor_from_wire(&out.tensors[0]).unwrap();
            assert_eq!(t, magpie_core::tensor::Tensor::scalar(3.0f32));
        }

        // A send the receiver refuses: the step fails, with the receiver's error naming
        // the sending task, the edge and the refusal.
        let e = c.run_step(step("big_there:0")).await.unwrap_err();
        // With the refusal's code, as when the sender's own step failed.
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{}", e.message());
        let message = e.message();
        assert!(
            message.contains("task /job:m/replica:0/task:0 could not send edge")
                || message.contains("task /job:m/task:0 could not send edge"),
            "{message}"
        );
        assert!(message.contains("big:0->"), "the edge: {message}");
        assert!(message.contains("/job:w"), "the receiver: {message}");
        assert!(
            message.to_lowercase().contains("step_bytes")
                || message.contains("rendezvous")
                || message.contains("limit"),
            "the refusal: {message}"
        );

        // The session keeps serving.
        let out = c
            .run_step(step("small_there:0"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.tensors.len(), 1);
    });
    drop(rt);
    assert_eq!(m.core().worker().stats().unacked_steps, 0);
    m.stop(Duration::from_secs(2));
    w.stop(Duration::from_secs(2));
}
