//! TensorFlow's master service (`/tensorflow.MasterService/*`) on a cluster of two
//! in-process gRPC servers, called with the generated client: the protocol details the
//! Python client relies on (fetch names echoed in order, graph versions, errors in the
//! response body with TensorFlow's codes, `Reset` on every task), the callables it does
//! not use, and the limits shared with Magpie's own master service.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{free_port, register_test_ops};
use magpie_core::cluster::ClusterSpec;
use magpie_core::testkit::host_task_options;
use magpie_grpc::tf::proto::{self, master_service_client::MasterServiceClient};
use magpie_grpc::{GrpcOptions, GrpcServer};
use tonic::transport::Channel;
use tonic::Code;

struct Cluster {
    a: GrpcServer,
    b: GrpcServer,
    rt: tokio::runtime::Runtime,
    client: MasterServiceClient<Channel>,
}

/// Tasks `/job:a/task:0` (the master) and `/job:b/task:0`.
fn cluster(options: GrpcOptions) -> Cluster {
    register_test_ops();
    let spec = ClusterSpec::builder()
        .job("a", [format!("127.0.0.1:{}", free_port())])
        .job("b", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    let a =
        GrpcServer::start_with(&spec, "a", 0, &host_task_options("a"), options.clone()).unwrap();
    let b = GrpcServer::start_with(&spec, "b", 0, &host_task_options("b"), options).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(MasterServiceClient::connect(format!(
            "http://{}",
            a.local_addr()
        )))
        .unwrap();
    Cluster { a, b, rt, client }
}

impl Cluster {
    /// Creates a session over `nodes` (no config); panics on a gRPC error.
    fn create(&mut self, nodes: Vec<proto::NodeDef>) -> proto::CreateSessionResponse {
        let req = proto::CreateSessionRequest {
            graph_def: graph(nodes),
            ..Default::default()
        };
        self.rt
            .block_on(self.client.create_session(req))
            .unwrap()
            .into_inner()
    }

    /// The handle of a new session over `nodes`.
    fn open(&mut self, nodes: Vec<proto::NodeDef>) -> String {
        self.create(nodes).session_handle
    }

    /// Runs `req`; panics on a gRPC error (errors asked for in the body come back there).
    fn step(&mut self, req: proto::RunStepRequest) -> proto::RunStepResponse {
        self.rt
            .block_on(self.client.run_step(req))
            .unwrap()
            .into_inner()
    }

    /// Runs a step of session `handle` fetching `fetch`, errors in the body.
    fn fetch(&mut self, handle: &str, fetch: &[&str]) -> proto::RunStepResponse {
        self.step(run_request(handle, fetch, true))
    }

    fn stop(self) {
        self.a.stop(Duration::from_secs(1));
        self.b.stop(Duration::from_secs(1));
    }
}

fn node(name: &str, op: &str, inputs: &[&str], device: &str) -> proto::NodeDef {
    proto::NodeDef {
        name: name.into(),
        op: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        device: device.into(),
        attr: Default::default(),
    }
}

fn graph(nodes: Vec<proto::NodeDef>) -> Option<proto::GraphDef> {
    Some(proto::GraphDef {
        node: nodes,
        ..Default::default()
    })
}

fn f32s(t: &proto::TensorProto) -> Vec<f32> {
    assert_eq!(t.dtype, proto::DataType::DtFloat as i32);
    t.tensor_content
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn scalar(v: f32) -> proto::TensorProto {
    proto::TensorProto {
        dtype: proto::DataType::DtFloat as i32,
        tensor_shape: Some(proto::TensorShapeProto::default()),
        tensor_content: Bytes::copy_from_slice(&v.to_le_bytes()),
        ..Default::default()
    }
}

/// A step of session `handle` fetching `fetch`, feeding `name` with `tensor`, errors in
/// the body.
fn fed_request(
    handle: &str,
    fetch: &[&str],
    name: &str,
    tensor: proto::TensorProto,
) -> proto::RunStepRequest {
    let mut req = run_request(handle, fetch, true);
    req.feed.push(proto::NamedTensorProto {
        name: name.into(),
        tensor: Some(tensor),
    });
    req
}

fn run_request(handle: &str, fetch: &[&str], in_body: bool) -> proto::RunStepRequest {
    proto::RunStepRequest {
        session_handle: handle.into(),
        fetch: fetch.iter().map(|s| s.to_string()).collect(),
        store_errors_in_response_body: in_body,
        ..Default::default()
    }
}

#[test]
fn sessions_grow_by_version_and_steps_echo_fetches_in_order() {
    let mut c = cluster(GrpcOptions::default());
    let created = c.create(vec![
        node("four", "TestFour", &[], "/job:b/task:0"),
        node("p", "TestPass", &["four", "^four"], ""),
    ]);
    assert_eq!(created.graph_version, 0);
    let h = created.session_handle;

    let r = c.fetch(&h, &["p:0", "four:0", "p"]);
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    let names: Vec<&str> = r.tensor.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["p:0", "four:0", "p"]);
    for t in &r.tensor {
        assert_eq!(f32s(t.tensor.as_ref().unwrap()), [1.0, 2.0, 3.0, 4.0]);
    }

    // A stale version is refused; the current one grows the graph.
    let extend = |version| proto::ExtendSessionRequest {
        session_handle: h.clone(),
        graph_def: graph(vec![node("three", "TestThree", &[], "/job:a/task:0")]),
        current_graph_version: version,
    };
    let e =
        c.rt.block_on(c.client.extend_session(extend(5)))
            .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let v =
        c.rt.block_on(c.client.extend_session(extend(0)))
            .unwrap()
            .into_inner()
            .new_graph_version;
    assert_eq!(v, 1);
    // The same nodes again: the graph refuses duplicate names, the version stays.
    let e =
        c.rt.block_on(c.client.extend_session(extend(1)))
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("three"), "{}", e.message());

    // A feed replaces its node's output.
    let r = c.step(fed_request(&h, &["three:0"], "three:0", scalar(-1.5)));
    assert_eq!(f32s(r.tensor[0].tensor.as_ref().unwrap()), [-1.5]);
    c.stop();
}

#[test]
fn errors_come_in_the_body_with_tensorflows_codes_when_asked() {
    let mut c = cluster(GrpcOptions::default());
    // An op Magpie lacks: UNIMPLEMENTED naming op and node.
    let e =
        c.rt.block_on(c.client.create_session(proto::CreateSessionRequest {
            graph_def: graph(vec![node("det", "MatrixDeterminant", &[], "")]),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(
        e.message().contains("MatrixDeterminant") && e.message().contains("det"),
        "{}",
        e.message()
    );

    let h = c.open(vec![node("three", "TestThree", &[], "")]);
    // In the body: OK, TensorFlow's code (INVALID_ARGUMENT = 3), the message naming it.
    let r = c.fetch(&h, &["nosuch:0"]);
    assert_eq!(r.status_code, Code::InvalidArgument as i32);
    assert!(
        r.status_error_message.contains("nosuch"),
        "{}",
        r.status_error_message
    );
    assert!(r.tensor.is_empty());
    // Not asked: a gRPC status.
    let e =
        c.rt.block_on(c.client.run_step(run_request(&h, &["nosuch:0"], false)))
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A feed of a dtype Magpie lacks names the feed.
    let r = c.step(fed_request(
        &h,
        &["three:0"],
        "three:0",
        proto::TensorProto {
            dtype: proto::DataType::DtString as i32,
            string_val: vec![Bytes::from_static(b"x")],
            ..Default::default()
        },
    ));
    assert_eq!(r.status_code, Code::Unimplemented as i32);
    assert!(
        r.status_error_message.contains("three:0") && r.status_error_message.contains("DT_STRING"),
        "{}",
        r.status_error_message
    );

    // A partial run handle the session does not hold: TensorFlow's INVALID_ARGUMENT.
    let mut req = run_request(&h, &["three:0"], true);
    req.partial_run_handle = "never made".into();
    let r = c.rt.block_on(c.client.run_step(req)).unwrap().into_inner();
    assert_eq!(r.status_code, Code::InvalidArgument as i32);
    assert_eq!(
        r.status_error_message,
        "Must run PartialRunSetup before performing partial runs"
    );

    // Closed: the handle is unknown from then on (NOT_FOUND = 5 in the body).
    c.rt.block_on(c.client.close_session(proto::CloseSessionRequest {
        session_handle: h.clone(),
    }))
    .unwrap();
    let r = c.fetch(&h, &["three:0"]);
    assert_eq!(
        r.status_code,
        Code::NotFound as i32,
        "{}",
        r.status_error_message
    );
    let e =
        c.rt.block_on(
            c.client
                .close_session(proto::CloseSessionRequest { session_handle: h }),
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    c.stop();
}

/// A float tensor of `n` elements given by one repeated value: a few bytes on the wire,
/// `4 n` once decoded.
fn repeated(n: i64) -> proto::TensorProto {
    proto::TensorProto {
        dtype: proto::DataType::DtFloat as i32,
        tensor_shape: Some(proto::TensorShapeProto {
            dim: vec![proto::tensor_shape_proto::Dim {
                size: n,
                name: String::new(),
            }],
            unknown_rank: false,
        }),
        float_val: vec![1.0],
        ..Default::default()
    }
}

/// A `Const` of `value`.
fn constant(name: &str, value: proto::TensorProto) -> proto::NodeDef {
    use proto::attr_value::Value;
    let mut n = node(name, "Const", &[], "");
    n.attr.insert(
        "dtype".into(),
        proto::AttrValue {
            value: Some(Value::Type(proto::DataType::DtFloat as i32)),
        },
    );
    n.attr.insert(
        "value".into(),
        proto::AttrValue {
            value: Some(Value::Tensor(value)),
        },
    );
    n
}

#[test]
fn repeated_values_decode_to_at_most_the_message_limit_per_request() {
    // 4 MiB per tensor once decoded, from messages of a few bytes; 6 MiB per request.
    let mut c = cluster(GrpcOptions {
        max_message_bytes: 6 << 20,
        ..GrpcOptions::default()
    });
    let four_mib = 1 << 20;
    let e =
        c.rt.block_on(c.client.create_session(proto::CreateSessionRequest {
            graph_def: graph(vec![
                constant("c0", repeated(four_mib)),
                constant("c1", repeated(four_mib)),
            ]),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    for w in [
        "node \"c1\" attribute \"value\"",
        "--max-message-bytes",
        "6291456",
    ] {
        assert!(e.message().contains(w), "{w:?} not in {}", e.message());
    }

    // One such constant fits; two such feeds in one step do not.
    let h = c.open(vec![
        constant("c0", repeated(four_mib)),
        node("three", "TestThree", &[], ""),
    ]);
    let mut req = fed_request(&h, &["three:0"], "c0:0", repeated(four_mib));
    req.feed.push(proto::NamedTensorProto {
        name: "three:0".into(),
        tensor: Some(repeated(four_mib)),
    });
    let r = c.step(req);
    assert_eq!(
        r.status_code,
        Code::ResourceExhausted as i32,
        "{}",
        r.status_error_message
    );
    for w in ["feed \"three:0\"", "--max-message-bytes"] {
        assert!(
            r.status_error_message.contains(w),
            "{w:?} not in {}",
            r.status_error_message
        );
    }
    // The server serves on.
    let r = c.fetch(&h, &["three:0"]);
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    c.stop();
}

#[test]
fn callables_run_with_positional_feeds_until_released() {
    let mut c = cluster(GrpcOptions::default());
    let h = c.open(vec![
        node("three", "TestThree", &[], "/job:b/task:0"),
        node("p", "TestPass", &["three"], "/job:a/task:0"),
    ]);
    let make = |fetch: &str| proto::MakeCallableRequest {
        session_handle: h.clone(),
        options: Some(proto::CallableOptions {
            feed: vec!["three:0".into()],
            fetch: vec![fetch.into()],
            ..Default::default()
        }),
        request_id: 0,
    };
    let e =
        c.rt.block_on(c.client.make_callable(make("nosuch:0")))
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let callable =
        c.rt.block_on(c.client.make_callable(make("p:0")))
            .unwrap()
            .into_inner()
            .handle;
    let run = |feeds: Vec<proto::TensorProto>| proto::RunCallableRequest {
        session_handle: h.clone(),
        handle: callable,
        feed: feeds,
        request_id: 0,
    };
    for v in [7.0, -2.5] {
        let r =
            c.rt.block_on(c.client.run_callable(run(vec![scalar(v)])))
                .unwrap();
        assert_eq!(f32s(&r.into_inner().fetch[0]), [v]);
    }
    let e =
        c.rt.block_on(c.client.run_callable(run(vec![])))
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("0 feeds"), "{}", e.message());
    let release = proto::ReleaseCallableRequest {
        session_handle: h.clone(),
        handle: callable,
    };
    c.rt.block_on(c.client.release_callable(release.clone()))
        .unwrap();
    let e =
        c.rt.block_on(c.client.run_callable(run(vec![scalar(1.0)])))
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e =
        c.rt.block_on(c.client.release_callable(release))
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    c.stop();
}

#[test]
fn devices_are_listed_and_reset_clears_every_task() {
    let mut c = cluster(GrpcOptions::default());
    let d =
        c.rt.block_on(c.client.list_devices(proto::ListDevicesRequest::default()))
            .unwrap()
            .into_inner();
    let names =
        |v: &[proto::DeviceAttributes]| v.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&d.local_device),
        ["/job:a/replica:0/task:0/device:CPU:0"]
    );
    assert_eq!(
        names(&d.remote_device),
        ["/job:b/replica:0/task:0/device:CPU:0"]
    );
    for dev in d.local_device.iter().chain(&d.remote_device) {
        assert_eq!(dev.device_type, "CPU");
        assert_ne!(dev.incarnation, 0);
    }

    // A resource in the default container on each task, and one in another container.
    let put = |s: &GrpcServer, container: &str| {
        s.core()
            .worker()
            .resources()
            .lookup_or_create(container, "r", || 1u32)
            .unwrap();
    };
    let has = |s: &GrpcServer, container: &str| {
        s.core()
            .worker()
            .resources()
            .lookup::<u32>(container, "r")
            .unwrap()
            .is_some()
    };
    put(&c.a, "");
    put(&c.b, "");
    put(&c.b, "kept");
    c.rt.block_on(c.client.reset(proto::ResetRequest::default()))
        .unwrap();
    assert!(!has(&c.a, "") && !has(&c.b, ""));
    assert!(has(&c.b, "kept"));
    c.rt.block_on(c.client.reset(proto::ResetRequest {
        container: vec!["kept".into()],
        ..Default::default()
    }))
    .unwrap();
    assert!(!has(&c.b, "kept"));
    c.stop();
}

#[test]
fn tensorflow_sessions_count_against_the_masters_session_limit() {
    let mut c = cluster(GrpcOptions {
        max_sessions: 1,
        ..GrpcOptions::default()
    });
    let create = proto::CreateSessionRequest::default();
    let h =
        c.rt.block_on(c.client.create_session(create.clone()))
            .unwrap()
            .into_inner()
            .session_handle;
    let e =
        c.rt.block_on(c.client.create_session(create.clone()))
            .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("--max-sessions"), "{}", e.message());
    assert_eq!(c.a.num_remote_sessions(), 1);
    c.rt.block_on(
        c.client
            .close_session(proto::CloseSessionRequest { session_handle: h }),
    )
    .unwrap();
    c.rt.block_on(c.client.create_session(create)).unwrap();
    c.stop();
}

#[test]
fn the_cluster_token_guards_tensorflows_service_too() {
    let token = magpie_grpc::AuthToken::new("a-cluster-token-of-some-length").unwrap();
    let mut c = cluster(GrpcOptions {
        auth_token: Some(token),
        ..GrpcOptions::default()
    });
    let e =
        c.rt.block_on(
            c.client
                .create_session(proto::CreateSessionRequest::default()),
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e =
        c.rt.block_on(c.client.list_devices(proto::ListDevicesRequest::default()))
            .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert_eq!(c.a.num_remote_sessions(), 0);
    c.stop();
}

#[test]
fn idle_tensorflow_sessions_are_closed_like_magpies_own() {
    let mut c = cluster(GrpcOptions {
        session_idle_timeout: Some(Duration::from_millis(50)),
        ..GrpcOptions::default()
    });
    let h = c.open(vec![node("three", "TestThree", &[], "")]);
    magpie_scheduler::test_support::eventually("the idle session closed", || {
        c.a.num_remote_sessions() == 0
    });
    let r = c.fetch(&h, &["three:0"]);
    assert_eq!(
        r.status_code,
        Code::NotFound as i32,
        "{}",
        r.status_error_message
    );
    c.stop();
}

#[test]
fn soft_placement_relaxes_pins_the_cluster_cannot_satisfy() {
    let mut c = cluster(GrpcOptions::default());
    let mut open = |soft: bool| {
        c.rt.block_on(c.client.create_session(proto::CreateSessionRequest {
            graph_def: graph(vec![node(
                "three",
                "TestThree",
                &[],
                "/job:b/task:0/device:GPU:0",
            )]),
            config: Some(proto::ConfigProto {
                allow_soft_placement: soft,
                operation_timeout_in_ms: 0,
            }),
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .session_handle
    };
    let soft = open(true);
    let strict = open(false);
    let r = c.fetch(&soft, &["three:0"]);
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    assert_eq!(f32s(r.tensor[0].tensor.as_ref().unwrap()), [3.0]);
    let r = c.fetch(&strict, &["three:0"]);
    assert_ne!(r.status_code, 0);
    assert!(
        r.status_error_message.contains("three"),
        "{}",
        r.status_error_message
    );
    c.stop();
}

#[test]
fn a_retried_request_is_refused_not_run_twice() {
    let mut c = cluster(GrpcOptions::default());
    let h = c.open(vec![node("three", "TestThree", &[], "")]);
    let mut req = run_request(&h, &["three:0"], true);
    req.request_id = 42;
    let first = c.step(req.clone());
    assert_eq!(first.status_code, 0, "{}", first.status_error_message);
    let again = c.step(req);
    assert_eq!(again.status_code, Code::Aborted as i32);
    assert!(
        again.status_error_message.contains("42"),
        "{}",
        again.status_error_message
    );
    // Id 0 is not tracked.
    for _ in 0..2 {
        let r = c.fetch(&h, &["three:0"]);
        assert_eq!(r.status_code, 0);
    }
    c.stop();
}

/// A host device that reports how much memory it has.
#[derive(Debug)]
struct SizedDevice(magpie_core::graph::DeviceName, u64);

impl magpie_core::Device for SizedDevice {
    fn name(&self) -> &magpie_core::graph::DeviceName {
        &self.0
    }
    fn memory_limit(&self) -> Option<u64> {
        Some(self.1)
    }
}

#[test]
fn list_devices_reports_every_tasks_own_memory_limit() {
    register_test_ops();
    let spec = ClusterSpec::builder()
        .job("a", [format!("127.0.0.1:{}", free_port())])
        .job("b", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    let sized = |job: &str, bytes: u64| {
        let name = magpie_core::graph::DeviceName::parse(&format!(
            "/job:{job}/replica:0/task:0/device:CPU:0"
        ))
        .unwrap();
        magpie_core::distributed::ServerOptions {
            num_workers: Some(1),
            ..magpie_core::distributed::ServerOptions::with_devices(vec![std::sync::Arc::new(
                SizedDevice(name, bytes),
            )])
        }
    };
    let o = GrpcOptions::default();
    let a = GrpcServer::start_with(&spec, "a", 0, &sized("a", 1 << 30), o.clone()).unwrap();
    let b = GrpcServer::start_with(&spec, "b", 0, &sized("b", 3 << 20), o).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt
        .block_on(MasterServiceClient::connect(format!(
            "http://{}",
            a.local_addr()
        )))
        .unwrap();
    let d = rt
        .block_on(client.list_devices(proto::ListDevicesRequest::default()))
        .unwrap()
        .into_inner();
    let limits = |v: &[proto::DeviceAttributes]| {
        v.iter()
            .map(|d| (d.name.clone(), d.memory_limit))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        limits(&d.local_device),
        [("/job:a/replica:0/task:0/device:CPU:0".to_string(), 1 << 30)]
    );
    // The other task's device carries what that task reports, not 0.
    assert_eq!(
        limits(&d.remote_device),
        [("/job:b/replica:0/task:0/device:CPU:0".to_string(), 3 << 20)]
    );
    a.stop(Duration::from_secs(1));
    b.stop(Duration::from_secs(1));
}

#[test]
fn partial_runs_span_tasks_and_go_with_their_session() {
    let mut c = cluster(GrpcOptions::default());
    let h =
        c.rt.block_on(c.client.create_session(proto::CreateSessionRequest {
            graph_def: graph(vec![
                node("four", "TestFour", &[], "/job:b/task:0"),
                node("p", "TestPass", &["four"], ""),
                node("q", "TestPass", &["p"], "/job:b/task:0"),
            ]),
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .session_handle;
    let setup = |c: &mut Cluster| {
        c.rt.block_on(c.client.partial_run_setup(proto::PartialRunSetupRequest {
            session_handle: h.clone(),
            fetch: vec!["p:0".into(), "q:0".into()],
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .partial_run_handle
    };
    let call = |c: &mut Cluster, prun: &str, fetch: &str| {
        let mut r = run_request(&h, &[fetch], true);
        r.partial_run_handle = prun.into();
        c.rt.block_on(c.client.run_step(r)).unwrap().into_inner()
    };
    let prun = setup(&mut c);
    assert_eq!(prun.len(), setup(&mut c).len(), "handles of one shape");
    assert_ne!(prun, setup(&mut c), "every setup makes a new handle");
    let r = call(&mut c, &prun, "p:0");
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    assert_eq!(
        f32s(r.tensor[0].tensor.as_ref().unwrap()),
        [1.0, 2.0, 3.0, 4.0]
    );
    let r = call(&mut c, &prun, "q:0");
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    assert_eq!(
        f32s(r.tensor[0].tensor.as_ref().unwrap()),
        [1.0, 2.0, 3.0, 4.0]
    );
    // Finished: the handle is gone, as in TensorFlow.
    let r = call(&mut c, &prun, "q:0");
    assert_eq!(r.status_code, Code::InvalidArgument as i32);
    assert!(r.status_error_message.contains("Must run PartialRunSetup"));

    // A partial run goes with its session.
    let open = setup(&mut c);
    c.rt.block_on(c.client.close_session(proto::CloseSessionRequest {
        session_handle: h.clone(),
    }))
    .unwrap();
    let r = call(&mut c, &open, "p:0");
    assert_eq!(
        r.status_code,
        Code::NotFound as i32,
        "{}",
        r.status_error_message
    );
    c.stop();
}

/// A TensorFlow session over `four -> p`, `four -> q` (with `^p` on q when `control`) and
/// a partial run of it fetching `p:0`, then `q:0`: the first call keeps `four:0` (16
/// bytes) for the second.
fn four_pq(c: &mut Cluster, control: bool) -> (String, impl Fn(&mut Cluster) -> String) {
    let q_inputs: &[&str] = if control { &["four", "^p"] } else { &["four"] };
    let h =
        c.rt.block_on(c.client.create_session(proto::CreateSessionRequest {
            graph_def: graph(vec![
                node("four", "TestFour", &[], ""),
                node("p", "TestPass", &["four"], ""),
                node("q", "TestPass", q_inputs, ""),
            ]),
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .session_handle;
    let session = h.clone();
    let setup = move |c: &mut Cluster| {
        c.rt.block_on(c.client.partial_run_setup(proto::PartialRunSetupRequest {
            session_handle: session.clone(),
            fetch: vec!["p:0".into(), "q:0".into()],
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .partial_run_handle
    };
    (h, setup)
}

/// One call of partial run `prun` of session `h` fetching `fetch`, errors in the body.
fn partial_call(c: &mut Cluster, h: &str, prun: &str, fetch: &str) -> proto::RunStepResponse {
    let mut r = run_request(h, &[fetch], true);
    r.partial_run_handle = prun.into();
    c.rt.block_on(c.client.run_step(r)).unwrap().into_inner()
}

#[test]
fn what_partial_runs_keep_is_bounded_by_partial_run_bytes_and_given_back() {
    // Room for one partial run's 16 kept bytes, not two.
    let mut c = cluster(GrpcOptions {
        max_partial_run_bytes: 16,
        ..GrpcOptions::default()
    });
    let (h, setup) = four_pq(&mut c, false);
    let first = setup(&mut c);
    let r = partial_call(&mut c, &h, &first, "p:0");
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    // A second partial run would keep 16 bytes more: refused, naming the flag, and ended.
    let second = setup(&mut c);
    let r = partial_call(&mut c, &h, &second, "p:0");
    assert_eq!(
        r.status_code,
        Code::ResourceExhausted as i32,
        "{}",
        r.status_error_message
    );
    for w in [
        "--partial-run-bytes",
        "16 bytes kept",
        "16 bytes of outputs",
    ] {
        assert!(
            r.status_error_message.contains(w),
            "{w:?} not in {}",
            r.status_error_message
        );
    }
    let r = partial_call(&mut c, &h, &second, "q:0");
    assert!(r.status_error_message.contains("Must run PartialRunSetup"));
    // The first finishes and gives its bytes back: a new partial run fits again.
    let r = partial_call(&mut c, &h, &first, "q:0");
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    assert_eq!(
        f32s(r.tensor[0].tensor.as_ref().unwrap()),
        [1.0, 2.0, 3.0, 4.0]
    );
    let third = setup(&mut c);
    let r = partial_call(&mut c, &h, &third, "p:0");
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    // Closing the session ends the open partial run and gives its bytes back too.
    c.rt.block_on(c.client.close_session(proto::CloseSessionRequest {
        session_handle: h.clone(),
    }))
    .unwrap();
    let (h, setup) = four_pq(&mut c, false);
    let fourth = setup(&mut c);
    let r = partial_call(&mut c, &h, &fourth, "p:0");
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    c.stop();
}

#[test]
fn the_session_a_partial_run_opens_for_cut_control_edges_counts_against_max_sessions() {
    // The TensorFlow session takes the only place: the second call, whose step cuts `q`'s
    // control edge on `p` (which ran in the first call), needs a session of its own.
    let mut c = cluster(GrpcOptions {
        max_sessions: 1,
        ..GrpcOptions::default()
    });
    let (h, setup) = four_pq(&mut c, true);
    let prun = setup(&mut c);
    let r = partial_call(&mut c, &h, &prun, "p:0");
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    let r = partial_call(&mut c, &h, &prun, "q:0");
    assert_eq!(
        r.status_code,
        Code::ResourceExhausted as i32,
        "{}",
        r.status_error_message
    );
    assert!(
        r.status_error_message.contains("--max-sessions"),
        "{}",
        r.status_error_message
    );
    assert_eq!(c.a.num_remote_sessions(), 1);
    c.stop();

    // With room for it, the call runs, and its session is gone once the call ends.
    let mut c = cluster(GrpcOptions {
        max_sessions: 2,
        ..GrpcOptions::default()
    });
    let (h, setup) = four_pq(&mut c, true);
    let prun = setup(&mut c);
    let r = partial_call(&mut c, &h, &prun, "p:0");
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    let r = partial_call(&mut c, &h, &prun, "q:0");
    assert_eq!(r.status_code, 0, "{}", r.status_error_message);
    assert_eq!(
        f32s(r.tensor[0].tensor.as_ref().unwrap()),
        [1.0, 2.0, 3.0, 4.0]
    );
    // Its place is free again: a second session opens.
    let (_h2, _) = four_pq(&mut c, true);
    assert_eq!(c.a.num_remote_sessions(), 2);
    c.stop();
}
