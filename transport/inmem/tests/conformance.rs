//! The in-memory transport passes core's transport conformance suite.

use std::sync::Arc;

use magpie_core::cluster::ClusterSpec;
use magpie_core::testkit::{check_transport, host_task_options};
use magpie_inmem::{InMemNetwork, InMemServer, InMemTransport};

#[test]
fn inmem_transport_conforms() {
    let spec = ClusterSpec::builder()
        .job("a", ["localhost:1"])
        .job("b", ["localhost:2"])
        .build()
        .unwrap();
    let net = InMemNetwork::new();
    let a = InMemServer::start(&net, &spec, "a", 0, &host_task_options("a")).unwrap();
    let b = InMemServer::start(&net, &spec, "b", 0, &host_task_options("b")).unwrap();
    let transport = Arc::new(InMemTransport::new(Arc::clone(&net), spec));
    let passed = check_transport(transport, a.core(), b.core(), true).unwrap();
    assert_eq!(passed, 9);
}
