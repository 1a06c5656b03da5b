//! Small tensors between tasks travel whole in `SendTensors` requests: the tensors a
//! task has ready for one peer leave in one request, each is admitted or refused on its
//! own (the same checks as `SendTensor`, before its content becomes a tensor), values
//! arrive unchanged, and a peer that is gone fails every tensor of the request with an
//! error naming the task instead of leaving a send waiting. Servers on free 127.0.0.1
//! ports, stopped at the end.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{
    connect_worker, fetched, first_fetch_over_wire, inline, one_task, receivers,
    register_over_wire, register_test_ops, start_one_task, TASK,
};
use magpie_core::tensor::Tensor;
use magpie_core::testkit::host_task_options;
use magpie_core::transport::{RendezvousKey, TaskName, Transport, TransportError};
use magpie_core::{Code, StepId};
use magpie_grpc::conv::tensor_to_wire;
use magpie_grpc::{proto, GrpcOptions, GrpcServer, GrpcTransport, TensorTraffic};

#[test]
fn each_tensor_of_a_request_is_admitted_on_its_own_and_delivered_unchanged() {
    let options = GrpcOptions {
        inline_tensor_bytes: 64,
        ..GrpcOptions::default()
    };
    let server = start_one_task(options);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = connect_worker(server.local_addr()).await;
        let handle = register_over_wire(&mut c, "mine", &receivers(&["x"])).await;

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
        let got =
            first_fetch_over_wire(&mut c, handle, "mine", step, Duration::from_secs(10)).await;
        assert_eq!(got, [1.5, -2.0, 3.25]);
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
    let handle = futures::executor::block_on(
        transport.register_partition(&task, receivers(&["e0", "e1", "e2", "e3"])),
    )
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

    let values = fetched(&transport, &task, handle, step);
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
