//! Soft placement (TensorFlow's `allow_soft_placement`) as a Magpie session option, on
//! every door: a local session, a master of an in-process cluster (`inmem://`) and a
//! master over gRPC (`grpc://`). A node pinned to a device that does not exist, or to a
//! device with no kernel for its op, runs where it can with the option; without it, the
//! step fails naming the node and its device spec, with the same code on every door.

use std::sync::Arc;

use magpie::cluster::task_server_options;
use magpie::core::Code;
use magpie::graph::DeviceName;
use magpie::grpc::{GrpcOptions, GrpcServer};
use magpie::inmem::{InMemNetwork, InMemServer};
use magpie::transport::TaskName;
use magpie::{
    local_options, ClientSession, Device, Graph, MasterSessionOptions, Output, ServerOptions,
    Session, Tensor,
};

/// A device of type `NOKERN`: it exists, but no backend has a kernel for it.
#[derive(Debug)]
struct NoKernels(DeviceName);

impl Device for NoKernels {
    fn name(&self) -> &DeviceName {
        &self.0
    }
}

/// `a = 2` pinned to a GPU nobody has; `b = a * 3` pinned to an existing device of a
/// type without kernels. Fetching `b` gives 6 only with soft placement.
fn graph(gpu: &str, nokern: &str) -> (Graph, Output) {
    let g = Graph::new();
    let a = g
        .op("Const")
        .name("pinned_to_a_missing_gpu")
        .device(gpu)
        .attr("value", Tensor::scalar(2.0f32))
        .attr("dtype", magpie::DType::F32)
        .build_output()
        .unwrap();
    let three = g.constant(Tensor::scalar(3.0f32)).unwrap();
    let b = g
        .op("Mul")
        .name("pinned_without_kernel")
        .device(nokern)
        .inputs([a, three])
        .build_output()
        .unwrap();
    (g, b)
}

/// Server options of `task` with a `NOKERN:0` device beside its CPU.
fn with_nokern(task: &TaskName) -> ServerOptions {
    let mut o = task_server_options(task);
    let name = DeviceName::parse(&format!(
        "/job:{}/replica:0/task:{}/device:NOKERN:0",
        task.job, task.index
    ))
    .unwrap();
    o.devices.push(Arc::new(NoKernels(name)));
    o
}

/// Checks a strict run's failure: its code and the node and spec it names.
fn assert_names(code: Code, message: &str, node: &str, spec: &str) {
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains(node), "{message}");
    assert!(message.contains(spec), "{message}");
}

/// Runs the soft and strict cases on `target`, whose master serves `worker`.
fn check_target(target: &str) {
    let gpu = "/job:worker/task:0/device:GPU:3";
    let nokern = "/job:worker/task:0/device:NOKERN:0";
    let (g, b) = graph(gpu, nokern);
    let soft = MasterSessionOptions::default().allow_soft_placement(true);
    let s = ClientSession::connect_session(target, &g, GrpcOptions::default(), soft).unwrap();
    let out = s.run(&[], &[b], &[]).unwrap();
    assert_eq!(out[0].scalar_value::<f32>().unwrap(), 6.0, "{target}");
    s.close().unwrap();

    // Without the option: the missing GPU first, then (that pin fixed) the device
    // without a kernel.
    let s = ClientSession::connect_with(target, &g, GrpcOptions::default()).unwrap();
    let e = s.run(&[], &[b], &[]).unwrap_err();
    assert_names(e.code(), &e.message(), "pinned_to_a_missing_gpu", gpu);
    let (g, b) = graph("/job:worker/task:0", nokern);
    let s = ClientSession::connect_with(target, &g, GrpcOptions::default()).unwrap();
    let e = s.run(&[], &[b], &[]).unwrap_err();
    assert_names(e.code(), &e.message(), "pinned_without_kernel", "NOKERN");
}

#[test]
fn a_local_session_places_softly_only_when_asked() {
    let gpu = "/device:GPU:3";
    let nokern = "/device:NOKERN:0";
    let (g, b) = graph(gpu, nokern);
    let mut options = local_options();
    options
        .devices
        .push(Arc::new(NoKernels(DeviceName::local("NOKERN", 0))));
    let soft = Session::new(&g, options.clone().allow_soft_placement(true)).unwrap();
    let out = soft.run(&[], &[b], &[]).unwrap();
    assert_eq!(out[0].scalar_value::<f32>().unwrap(), 6.0);

    let strict = Session::new(&g, options.clone()).unwrap();
    let e = strict.run(&[], &[b], &[]).unwrap_err();
    assert_names(e.code(), &e.to_string(), "pinned_to_a_missing_gpu", gpu);
    let (g, b) = graph("", nokern);
    let strict = Session::new(&g, options).unwrap();
    let e = strict.run(&[], &[b], &[]).unwrap_err();
    assert_names(e.code(), &e.to_string(), "pinned_without_kernel", "NOKERN");

    // The facade's local target takes the option too (no NOKERN device there: the
    // missing GPU alone).
    let (g, a) = {
        let g = Graph::new();
        let a = g
            .device(gpu, |g| g.constant(Tensor::scalar(2.0f32)))
            .unwrap();
        (g, a)
    };
    let soft = MasterSessionOptions::default().allow_soft_placement(true);
    let s = ClientSession::connect_session("local", &g, GrpcOptions::default(), soft).unwrap();
    assert_eq!(
        s.run(&[], &[a], &[]).unwrap()[0]
            .scalar_value::<f32>()
            .unwrap(),
        2.0
    );
    let s = ClientSession::connect("local", &g).unwrap();
    assert_eq!(
        s.run(&[], &[a], &[]).unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[test]
fn an_inmem_cluster_places_softly_only_when_asked() {
    let spec = magpie::cluster::Spec::builder()
        .job(
            "worker",
            ["soft-placement.invalid:1", "soft-placement.invalid:2"],
        )
        .build()
        .unwrap();
    let servers: Vec<InMemServer> = spec
        .tasks()
        .into_iter()
        .map(|t| {
            InMemServer::start(
                &InMemNetwork::global(),
                &spec,
                &t.job,
                t.index,
                &with_nokern(&t),
            )
            .unwrap()
        })
        .collect();
    check_target(&servers[1].target());
    for s in servers {
        s.stop(std::time::Duration::from_secs(1));
    }
}

#[test]
fn a_grpc_cluster_places_softly_only_when_asked() {
    let spec = magpie::cluster::loopback_cluster().unwrap();
    let servers: Vec<GrpcServer> = spec
        .tasks()
        .into_iter()
        .map(|t| {
            GrpcServer::start_with(
                &spec,
                &t.job,
                t.index,
                &with_nokern(&t),
                GrpcOptions::default(),
            )
            .unwrap()
        })
        .collect();
    let master = spec
        .tasks()
        .into_iter()
        .position(|t| t.job == "worker" && t.index == 1)
        .expect("the loopback cluster has /job:worker/task:1");
    check_target(&format!("grpc://{}", servers[master].local_addr()));
    for s in servers {
        s.stop(std::time::Duration::from_secs(1));
    }
}
