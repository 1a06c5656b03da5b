//! The gRPC transport passes core's transport conformance suite, over loopback sockets.

use std::sync::Arc;
use std::time::Duration;

use magpie_core::cluster::ClusterSpec;
use magpie_core::distributed::RendezvousLimits;
use magpie_core::testkit::{
    check_rendezvous_hygiene, check_transport, check_unclaimed_bound, host_task_options,
};
use magpie_grpc::{GrpcOptions, GrpcServer, GrpcTransport};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn grpc_transport_conforms() {
    magpie_core::distributed::kernels::register_kernels();
    let spec = ClusterSpec::builder()
        .job("a", [format!("127.0.0.1:{}", free_port())])
        .job("b", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    let a = GrpcServer::start(&spec, "a", 0, &host_task_options("a")).unwrap();
    let b = GrpcServer::start(&spec, "b", 0, &host_task_options("b")).unwrap();
    let transport = Arc::new(GrpcTransport::new(spec, GrpcOptions::default()).unwrap());
    let passed = check_transport(transport, a.core(), b.core(), false).unwrap();
    assert_eq!(passed, 9);
    a.stop(Duration::from_secs(1));
    b.stop(Duration::from_secs(1));
}

#[test]
fn grpc_failing_and_aborted_steps_leave_no_rendezvous_entries_and_unknown_steps_are_bounded() {
    magpie_core::distributed::kernels::register_kernels();
    let spec = ClusterSpec::builder()
        .job("a", [format!("127.0.0.1:{}", free_port())])
        .job("b", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    let limits = RendezvousLimits {
        unclaimed_ttl: Duration::from_secs(3600),
        unclaimed_bytes: 1 << 20,
        ..RendezvousLimits::default()
    };
    let options = |job| {
        let mut o = host_task_options(job);
        o.rendezvous_limits = limits;
        o
    };
    let a = GrpcServer::start(&spec, "a", 0, &options("a")).unwrap();
    let b = GrpcServer::start(&spec, "b", 0, &options("b")).unwrap();
    let transport = Arc::new(GrpcTransport::new(spec, GrpcOptions::default()).unwrap());
    let ran = check_rendezvous_hygiene(transport.clone(), a.core(), b.core(), 100).unwrap();
    assert_eq!(ran, 100);
    let most = check_unclaimed_bound(transport, a.core(), 12).unwrap();
    assert!(most > limits.unclaimed_bytes / 2, "{most}");
    a.stop(Duration::from_secs(1));
    b.stop(Duration::from_secs(1));
}
