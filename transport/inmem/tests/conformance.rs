//! The in-memory transport passes core's transport conformance suite.

use std::sync::Arc;

use magpie_core::cluster::ClusterSpec;
use magpie_core::device::Device;
use magpie_core::distributed::ServerOptions;
use magpie_core::graph::DeviceName;
use magpie_core::testkit::check_transport;
use magpie_inmem::{InMemNetwork, InMemServer, InMemTransport};

/// A host device of type CPU (no kernels needed beyond `_Send`/`_Recv`).
#[derive(Debug)]
struct HostDevice(DeviceName);

impl Device for HostDevice {
    fn name(&self) -> &DeviceName {
        &self.0
    }
}

fn options(job: &str) -> ServerOptions {
    let name = DeviceName::parse(&format!("/job:{job}/replica:0/task:0/device:CPU:0")).unwrap();
    ServerOptions {
        num_workers: Some(1),
        ..ServerOptions::with_devices(vec![Arc::new(HostDevice(name))])
    }
}

#[test]
fn inmem_transport_conforms() {
    let spec = ClusterSpec::builder()
        .job("a", ["localhost:1"])
        .job("b", ["localhost:2"])
        .build()
        .unwrap();
    let net = InMemNetwork::new();
    let a = InMemServer::start(&net, &spec, "a", 0, &options("a")).unwrap();
    let b = InMemServer::start(&net, &spec, "b", 0, &options("b")).unwrap();
    let transport = Arc::new(InMemTransport::new(Arc::clone(&net), spec));
    let passed = check_transport(transport, a.core(), b.core(), true).unwrap();
    assert_eq!(passed, 8);
}
