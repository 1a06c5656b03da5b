//! Small tensors between tasks travel in batches on one long-lived `SendTensorsStream` per
//! peer: each batch is answered in order with its number, each tensor admitted or refused
//! on its own with an error naming what was wrong (the checks of `SendTensors`), a batch
//! for another task ends the stream with a status naming it, a transport's sends use the
//! stream and re-open it after the peer restarts, a peer that is gone or never answers
//! fails the sends naming it within the request deadline, and with the option off the
//! batches go in `SendTensors` requests. Servers on free 127.0.0.1 ports, stopped at the
//! end.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{
    connect_worker, fetched, first_fetch_over_wire, inline, one_task, receivers,
    register_over_wire, register_test_ops, start_one_task, TASK,
};
use magpie_core::cluster::ClusterSpec;
use magpie_core::tensor::Tensor;
use magpie_core::testkit::host_task_options;
use magpie_core::transport::{RendezvousKey, TaskName, Transport, TransportError};
use magpie_core::{Code, StepId};
use magpie_grpc::{proto, GrpcOptions, GrpcServer, GrpcTransport, TensorTraffic};

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

/// Sends `values` to `edges` of `step` on `task` through `transport`, each answered.
fn send_all(
    transport: &GrpcTransport,
    task: &TaskName,
    step: StepId,
    edges: &[&str],
) -> Vec<Result<(), TransportError>> {
    let sends: Vec<_> = edges
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let key = RendezvousKey {
                step_id: step,
                edge: (*e).into(),
            };
            transport.send(
                task,
                "s",
                key,
                Tensor::from_vec([2], vec![i as f32, 0.5]).unwrap(),
            )
        })
        .collect();
    sends.into_iter().map(block).collect()
}

#[test]
fn batches_on_a_stream_are_answered_in_order_and_each_tensor_is_admitted_on_its_own() {
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

        let step = StepId::from_bytes(&[9u8; 16]).unwrap();
        let x = Tensor::from_vec([3], vec![1.5f32, -2.0, 3.25]).unwrap();
        let big = Tensor::from_vec([32], vec![0.0f32; 32]).unwrap(); // 128 bytes > 64
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut answers = c
            .send_tensors_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        tx.send(proto::SendTensorsRequest {
            task: TASK.into(),
            source: String::new(),
            tensors: vec![
                inline(step, "nobody", "y", Some(&x)),
                inline(step, "mine", "big", Some(&big)),
                inline(step, "mine", "none", None),
            ],
            batch: 1,
        })
        .unwrap();
        tx.send(proto::SendTensorsRequest {
            task: TASK.into(),
            source: String::new(),
            tensors: vec![inline(step, "mine", "x", Some(&x))],
            batch: 2,
        })
        .unwrap();
        let first = answers.message().await.unwrap().unwrap();
        let second = answers.message().await.unwrap().unwrap();
        assert_eq!((first.batch, second.batch), (1, 2));
        let codes: Vec<i32> = first.results.iter().map(|r| r.code).collect();
        assert_eq!(
            codes,
            [
                tonic::Code::NotFound as i32,
                tonic::Code::InvalidArgument as i32,
                tonic::Code::InvalidArgument as i32,
            ],
            "{first:?}"
        );
        assert!(first.results[0].message.contains("nobody"), "{first:?}");
        assert!(first.results[1].message.contains("SendTensor"), "{first:?}");
        assert!(first.results[2].message.contains("no tensor"), "{first:?}");
        assert_eq!(second.results, [proto::SendResult::default()]);
        assert_eq!(
            server.tensor_traffic(),
            TensorTraffic {
                requests: 2,
                tensors: 4,
                streamed: 2,
            }
        );

        // The tensor taken is the one the partition's receive gets.
        let got =
            first_fetch_over_wire(&mut c, handle, "mine", step, Duration::from_secs(10)).await;
        assert_eq!(got, [1.5, -2.0, 3.25]);

        // A batch for another task ends the stream with a status naming it.
        tx.send(proto::SendTensorsRequest {
            task: "/job:w/task:7".into(),
            tensors: vec![inline(step, "mine", "z", Some(&x))],
            batch: 3,
            ..Default::default()
        })
        .unwrap();
        let e = answers.message().await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("/job:w/task:7"), "{e:?}");
    });
    drop(rt);
    server.stop(Duration::ZERO);
}

#[test]
fn a_transport_streams_small_tensors_and_reopens_the_stream_after_the_peer_restarts() {
    register_test_ops();
    let spec = one_task();
    let task = TaskName::new("w", 0);
    let transport = GrpcTransport::new(spec.clone(), GrpcOptions::default()).unwrap();
    for round in 0..2u64 {
        let server = GrpcServer::start(&spec, "w", 0, &host_task_options("w")).unwrap();
        let handle = block(transport.register_partition(&task, receivers(&["a", "b"]))).unwrap();
        for _ in 0..3 {
            let step = StepId::random().unwrap();
            let sent = send_all(&transport, &task, step, &["a", "b"]);
            assert!(sent.iter().all(Result::is_ok), "round {round}: {sent:?}");
            let values = fetched(&transport, &task, handle.clone(), step);
            assert_eq!(values, [[0.0, 0.5], [1.0, 0.5]], "round {round}");
        }
        let traffic = server.tensor_traffic();
        assert_eq!(traffic.tensors, 6, "round {round}: {traffic:?}");
        assert_eq!(
            traffic.streamed, traffic.requests,
            "round {round}: every batch came on the stream: {traffic:?}"
        );
        // The server's stop ends the stream; the next round's server is reached on a
        // new one.
        server.stop(Duration::from_secs(1));
    }
}

#[test]
fn with_the_stream_off_batches_go_in_send_tensors_requests() {
    register_test_ops();
    let spec = one_task();
    let task = TaskName::new("w", 0);
    let server = GrpcServer::start(&spec, "w", 0, &host_task_options("w")).unwrap();
    let options = GrpcOptions {
        send_tensors_stream: false,
        ..GrpcOptions::default()
    };
    let transport = GrpcTransport::new(spec, options).unwrap();
    let handle = block(transport.register_partition(&task, receivers(&["a", "b"]))).unwrap();
    let step = StepId::random().unwrap();
    let sent = send_all(&transport, &task, step, &["a", "b"]);
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    assert_eq!(
        fetched(&transport, &task, handle, step),
        [[0.0, 0.5], [1.0, 0.5]]
    );
    let traffic = server.tensor_traffic();
    assert_eq!((traffic.tensors, traffic.streamed), (2, 0), "{traffic:?}");
    drop(transport);
    server.stop(Duration::ZERO);
}

#[test]
fn a_peer_that_is_gone_fails_the_streamed_sends_naming_it() {
    register_test_ops();
    let spec = one_task();
    let task = TaskName::new("w", 0);
    let server = GrpcServer::start(&spec, "w", 0, &host_task_options("w")).unwrap();
    let options = GrpcOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..GrpcOptions::default()
    };
    let transport = GrpcTransport::new(spec, options).unwrap();
    let handle = block(transport.register_partition(&task, receivers(&["a"]))).unwrap();
    let step = StepId::random().unwrap();
    assert!(send_all(&transport, &task, step, &["a"])[0].is_ok());
    assert_eq!(fetched(&transport, &task, handle, step), [[0.0, 0.5]]);
    server.stop(Duration::ZERO);
    // The stream the stop ended is replaced; the peer is gone, so each send fails.
    for _ in 0..2 {
        let sent = send_all(&transport, &task, StepId::random().unwrap(), &["a", "b"]);
        for e in sent {
            let e = e.unwrap_err();
            assert_eq!(e.task(), TASK, "{e:?}");
            assert!(
                matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded),
                "{e:?}"
            );
        }
    }
}

#[test]
fn a_peer_that_never_answers_fails_the_streamed_sends_within_the_request_deadline() {
    // A listener that accepts connections and never speaks.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        listener.set_nonblocking(false).unwrap();
        if let Ok((c, _)) = listener.accept() {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(2));
        drop(conns);
    });
    let spec = ClusterSpec::builder()
        .job("w", [addr.to_string()])
        .build()
        .unwrap();
    let options = GrpcOptions {
        request_timeout: Duration::from_secs(1),
        ..GrpcOptions::default()
    };
    let transport = GrpcTransport::new(spec, options).unwrap();
    let task = TaskName::new("w", 0);
    let started = Instant::now();
    let sent = send_all(&transport, &task, StepId::random().unwrap(), &["a", "b"]);
    // A hang guard, not a timing claim: the sends end with the deadline's error.
    assert!(started.elapsed() < Duration::from_secs(30));
    for e in sent {
        let e = e.unwrap_err();
        assert!(matches!(e, TransportError::NoAnswer { .. }), "{e:?}");
        assert_eq!(e.task(), TASK);
    }
    drop(transport);
    held.join().unwrap();
}

/// A worker service that, with `refuse`, acts as a peer built before
/// `SendTensorsStream`: that call is `UNIMPLEMENTED` (counted), every other is served.
#[derive(Clone)]
struct NoStream<S> {
    inner: S,
    refuse: bool,
    refused: Arc<AtomicUsize>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for NoStream<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for NoStream<S>
where
    S: tonic::codegen::Service<
        tonic::codegen::http::Request<tonic::body::Body>,
        Response = tonic::codegen::http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
    >,
    S::Future: Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        if self.refuse && req.uri().path().ends_with("/SendTensorsStream") {
            self.refused.fetch_add(1, Ordering::SeqCst);
            let response = tonic::Status::unimplemented("no SendTensorsStream here").into_http();
            return Box::pin(async move { Ok(response) });
        }
        Box::pin(self.inner.call(req))
    }
}

/// A task served on a runtime of one thread that the test holds (to freeze the peer),
/// its worker service optionally without `SendTensorsStream`.
struct Peer {
    rt: tokio::runtime::Runtime,
    core: Arc<magpie_core::distributed::TaskServer>,
    refused: Arc<AtomicUsize>,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Peer {
    fn start(spec: &ClusterSpec, refuse_stream: bool) -> Peer {
        let task = TaskName::new("w", 0);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let transport = Arc::new(GrpcTransport::with_runtime(
            spec.clone(),
            GrpcOptions::default(),
            rt.handle().clone(),
        ));
        let core = Arc::new(
            magpie_core::distributed::TaskServer::new(
                spec.clone(),
                task.clone(),
                &host_task_options("w"),
                transport,
            )
            .unwrap(),
        );
        let refused = Arc::new(AtomicUsize::new(0));
        let service = NoStream {
            inner: proto::worker_service_server::WorkerServiceServer::new(
                magpie_grpc::WorkerService::new(Arc::clone(&core), GrpcOptions::default()),
            ),
            refuse: refuse_stream,
            refused: Arc::clone(&refused),
        };
        let addr: std::net::SocketAddr = spec.address(&task).unwrap().parse().unwrap();
        // Bound before the first request: the transport finds it listening.
        let listener = rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = rt.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async move {
                        let _ = stopped.await;
                    },
                ),
        );
        Peer {
            rt,
            core,
            refused,
            stop,
            serving,
        }
    }

    /// Blocks the runtime's only thread until the returned sender sends (or drops).
    fn freeze(&self) -> mpsc::Sender<()> {
        let (thaw, frozen) = mpsc::channel::<()>();
        let (busy, is_busy) = mpsc::channel::<()>();
        self.rt.spawn(async move {
            busy.send(()).unwrap();
            let _ = frozen.recv();
        });
        is_busy.recv().unwrap();
        thaw
    }

    fn stop(self) {
        // Open streams end with the connections when the runtime shuts down.
        let _ = self.stop.send(());
        drop(self.serving);
        self.rt.shutdown_timeout(Duration::from_secs(2));
        self.core.stop(Duration::ZERO);
    }
}

#[test]
fn a_peer_without_the_stream_gets_the_batches_in_send_tensors_requests() {
    register_test_ops();
    let spec = one_task();
    let task = TaskName::new("w", 0);
    let peer = Peer::start(&spec, true);
    let transport = GrpcTransport::new(spec, GrpcOptions::default()).unwrap();
    let handle = block(transport.register_partition(&task, receivers(&["a", "b"]))).unwrap();
    for _ in 0..2 {
        let step = StepId::random().unwrap();
        let sent = send_all(&transport, &task, step, &["a", "b"]);
        assert!(sent.iter().all(Result::is_ok), "{sent:?}");
        assert_eq!(
            fetched(&transport, &task, handle.clone(), step),
            [[0.0, 0.5], [1.0, 0.5]]
        );
    }
    assert_eq!(
        peer.refused.load(Ordering::SeqCst),
        1,
        "the stream was tried once; later batches went straight to SendTensors"
    );
    drop(transport);
    peer.stop();
}

#[test]
fn a_peer_frozen_after_the_stream_opened_fails_the_batch_at_its_deadline_then_is_reached_again() {
    register_test_ops();
    let spec = one_task();
    let task = TaskName::new("w", 0);
    let peer = Peer::start(&spec, false);
    let options = GrpcOptions {
        request_timeout: Duration::from_secs(1),
        ..GrpcOptions::default()
    };
    let transport = GrpcTransport::new(spec, options).unwrap();
    let handle = block(transport.register_partition(&task, receivers(&["a"]))).unwrap();
    let step = StepId::random().unwrap();
    assert!(send_all(&transport, &task, step, &["a"])[0].is_ok());
    assert_eq!(
        fetched(&transport, &task, handle.clone(), step),
        [[0.0, 0.5]]
    );

    // The stream is open; the peer stops answering.
    let thaw = peer.freeze();
    let e = send_all(&transport, &task, StepId::random().unwrap(), &["a"])
        .pop()
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, TransportError::NoAnswer { .. }), "{e:?}");
    assert_eq!(e.task(), TASK);
    drop(thaw);

    // Thawed, it is reached on a new stream.
    let step = StepId::random().unwrap();
    let sent = send_all(&transport, &task, step, &["a"]);
    assert!(sent[0].is_ok(), "{sent:?}");
    assert_eq!(fetched(&transport, &task, handle, step), [[0.0, 0.5]]);
    assert_eq!(peer.refused.load(Ordering::SeqCst), 0);
    drop(transport);
    peer.stop();
}
