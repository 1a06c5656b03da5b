//! Rendezvous hygiene over the in-memory transport: 1,000 failing and aborted steps leave
//! no entry on any task, and tensors sent for steps that never run stay under the
//! receiving task's byte limit.

use std::sync::Arc;
use std::time::Duration;

use magpie_core::cluster::ClusterSpec;
use magpie_core::distributed::RendezvousLimits;
use magpie_core::testkit::{check_rendezvous_hygiene, check_unclaimed_bound, host_task_options};
use magpie_inmem::{InMemNetwork, InMemServer, InMemTransport};

fn two_tasks(limits: RendezvousLimits) -> (InMemServer, InMemServer, Arc<InMemTransport>) {
    let spec = ClusterSpec::builder()
        .job("a", ["localhost:1"])
        .job("b", ["localhost:2"])
        .build()
        .unwrap();
    let net = InMemNetwork::new();
    let options = |job| {
        let mut o = host_task_options(job);
        o.rendezvous_limits = limits;
        o
    };
    let a = InMemServer::start(&net, &spec, "a", 0, &options("a")).unwrap();
    let b = InMemServer::start(&net, &spec, "b", 0, &options("b")).unwrap();
    let transport = Arc::new(InMemTransport::new(Arc::clone(&net), spec));
    (a, b, transport)
}

#[test]
fn a_thousand_failing_and_aborted_steps_leave_no_rendezvous_entries() {
    let (a, b, transport) = two_tasks(RendezvousLimits::default());
    let ran = check_rendezvous_hygiene(transport, a.core(), b.core(), 1000).unwrap();
    assert_eq!(ran, 1000);
    assert_eq!(a.core().worker().stats().running_steps, 0);
}

#[test]
fn tensors_for_steps_that_never_run_stay_under_the_byte_limit() {
    let limits = RendezvousLimits {
        unclaimed_ttl: Duration::from_secs(3600),
        unclaimed_bytes: 1 << 20,
        ..RendezvousLimits::default()
    };
    let (a, _b, transport) = two_tasks(limits);
    let most = check_unclaimed_bound(transport, a.core(), 30).unwrap();
    // Three tensors of a third of the limit do not fit with their overhead: two do.
    assert!(most > limits.unclaimed_bytes / 2, "{most}");
    assert!(a.core().worker().stats().pending_rendezvous <= 2);
}

#[test]
fn tensors_for_steps_that_never_run_expire_after_the_time_limit() {
    // A zero time limit: every unclaimed step expires at the rendezvous's next call.
    let limits = RendezvousLimits {
        unclaimed_ttl: Duration::ZERO,
        unclaimed_bytes: 1 << 20,
        ..RendezvousLimits::default()
    };
    let (a, _b, transport) = two_tasks(limits);
    check_unclaimed_bound(transport, a.core(), 5).unwrap();
    let stats = a.core().worker().stats();
    assert_eq!(
        (stats.pending_rendezvous, stats.unclaimed_rendezvous_bytes),
        (0, 0)
    );
}
