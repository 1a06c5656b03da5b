//! A graph's memory on a master: a 10^6-node graph sent to `CreateSession` holds at most
//! 500 MB there (issue 11's bound; this test holds it to the lower figures measured), still
//! after a step of it has run (the session's
//! graph, the master's placement and the task's execution plan together), and closing
//! the session returns every byte. Bytes are counted
//! by a global allocator, never timed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use magpie_core::cluster::ClusterSpec;
use magpie_core::testkit::host_task_options;
use magpie_grpc::proto::master_service_server::MasterService as _;
use magpie_grpc::{proto, GrpcOptions, GrpcServer, MasterService};
use tonic::Request;

mod common;

/// Bytes allocated and not yet freed, by every thread.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most `LIVE` has been since the last [`reset_peak`].
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

fn grow(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are plain atomics that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn reset_peak() -> usize {
    let now = live();
    PEAK.store(now, Ordering::Relaxed);
    now
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

const MB: usize = 1 << 20;

/// A chain `TestThree -> TestPass -> TestPass -> ...` of `n` nodes (`n0`, `n1`, ...), as
/// a client sends it.
fn chain(n: usize) -> proto::GraphDef {
    let node = (0..n)
        .map(|i| proto::NodeDef {
            name: format!("n{i}"),
            op: if i == 0 { "TestThree" } else { "TestPass" }.into(),
            input: if i == 0 {
                vec![]
            } else {
                vec![format!("n{}", i - 1)]
            },
            ..Default::default()
        })
        .collect();
    proto::GraphDef { node }
}

#[test]
fn a_million_node_graph_holds_at_most_500_mb_and_returns_it_on_close() {
    const N: usize = 1_000_000;
    common::register_test_ops();
    let spec = ClusterSpec::builder()
        .job("w", [format!("127.0.0.1:{}", common::free_port())])
        .build()
        .unwrap();
    let server = GrpcServer::start(&spec, "w", 0, &host_task_options("w")).unwrap();
    // The master service called directly: the test's requests are not decoded from bytes,
    // and what the server holds is all the counter sees besides the request.
    let svc = MasterService::with_options(Arc::clone(server.core()), GrpcOptions::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let before = reset_peak();
    let request = chain(N);
    let wire = live() - before;
    let handle = rt
        .block_on(
            svc.create_session(Request::new(proto::CreateSessionRequest {
                graph: Some(request),
                ..Default::default()
            })),
        )
        .unwrap()
        .into_inner()
        .session_handle;
    let created = live() - before;
    let create_peak = peak() - before;
    eprintln!(
        "wire {} MB; after create {} MB (peak {} MB)",
        wire / MB,
        created / MB,
        create_peak / MB
    );

    reset_peak();
    let out = rt
        .block_on(svc.run_step(Request::new(proto::RunStepRequest {
            session_handle: handle.clone(),
            fetches: vec![format!("n{}:0", N - 1)],
            timeout_ms: 1_200_000,
            ..Default::default()
        })))
        .unwrap()
        .into_inner();
    assert_eq!(out.tensors.len(), 1);
    drop(out);
    let ran = live() - before;
    let run_peak = peak() - before;
    eprintln!("after a run {} MB (peak {} MB)", ran / MB, run_peak / MB);

    rt.block_on(svc.close_session(Request::new(proto::CloseSessionRequest {
        session_handle: handle,
    })))
    .unwrap();
    let closed = live().saturating_sub(before);
    eprintln!("after close {} MB ({} bytes)", closed / MB, closed);

    server.stop(std::time::Duration::from_secs(5));
    // Issue 11 bounds both at 500 MB; the bounds here are the figures measured at the time
    // of writing (169 and 291 MB) with a margin, so growth is noticed.
    assert!(created <= 192 * MB, "{created} bytes held after create");
    // A run adds the step's plans: the master's placement, and the task's execution plan
    // over the session's own graph (one task with one device, in this process: the graph
    // is shared with the task, not copied into a partition).
    assert!(ran <= 320 * MB, "{ran} bytes held after a run");
    assert!(closed <= MB, "{closed} bytes kept after close");
}
