//! `SendTensor` refuses a tensor its worker would not take before it allocates the
//! tensor's destination: a stream for a session with no partition on the task
//! (`NOT_FOUND`), for a step bound to another session (`PERMISSION_DENIED`) or past a
//! rendezvous limit (`RESOURCE_EXHAUSTED` naming the flag) is answered at once, though it
//! announced a large tensor and then stalled, and no allocation of the announced size is
//! made (a global allocator records the largest one). A stream the worker takes does
//! allocate it, which shows the record sees the destination. One server on a free
//! 127.0.0.1 port, stopped at the end.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{connect_worker, receivers, register_over_wire, runtime, start_one_task, TASK};
use futures::StreamExt;
use magpie_grpc::proto::worker_service_client::WorkerServiceClient;
use magpie_grpc::{proto, GrpcOptions};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The largest single allocation (or reallocation) made so far, by any thread.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Recording;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// record is a plain atomic that never allocates.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Recording = Recording;

/// Floats in the tensors the streams announce: 128 MiB, under `--max-tensor-bytes` and
/// the default bound on a step not started (256 MiB), far above anything else the test
/// allocates.
const FLOATS: u64 = 32 << 20;
const ANNOUNCED: usize = (FLOATS * 4) as usize;

/// A stream that announces `floats` f32s for `edge` of step `step` of `session`, sends
/// the first four bytes of them, and then stalls (never sends more, never ends).
fn stalled(
    session: &str,
    step: u8,
    edge: &str,
    floats: u64,
) -> impl futures::Stream<Item = proto::SendTensorChunk> + Send + 'static {
    let first = proto::SendTensorChunk {
        task: TASK.into(),
        step_id: vec![step; 16].into(),
        session: session.into(),
        edge: edge.into(),
        dtype: proto::DataType::F32 as i32,
        dims: vec![floats],
        total_bytes: floats * 4,
        content: vec![0u8; 4].into(),
        source: String::new(),
    };
    futures::stream::iter([first]).chain(futures::stream::pending())
}

/// Sends a stalled stream ([`stalled`]) and returns the server's answer, which must come
/// while the stream is still open (a backstop of a minute fails the test otherwise: the
/// stream idle timeout is ten minutes).
async fn refused(
    c: &mut WorkerServiceClient<Channel>,
    session: &str,
    step: u8,
    floats: u64,
) -> Status {
    let answer = tokio::time::timeout(
        Duration::from_secs(60),
        c.send_tensor(stalled(session, step, "big", floats)),
    )
    .await
    .expect("the server answers a stream it refuses without waiting for its chunks");
    answer.expect_err("the stream is refused")
}

/// Asserts `s` is `code` with a message naming every one of `words`.
fn assert_status(s: &Status, code: Code, words: &[&str]) {
    assert_eq!(s.code(), code, "{}", s.message());
    for w in words {
        assert!(s.message().contains(w), "{w:?} not in {:?}", s.message());
    }
}

#[test]
fn a_tensor_the_worker_would_refuse_is_refused_before_its_destination_is_allocated() {
    let options = GrpcOptions {
        max_tensor_bytes: 1 << 30,
        tensor_stream_idle_timeout: Duration::from_secs(600),
        ..GrpcOptions::default()
    };
    let server = start_one_task(options);
    let rt = runtime();
    rt.block_on(async {
        let mut c = connect_worker(server.local_addr()).await;

        // A session with no partition on the task.
        let s = refused(&mut c, "nobody", 1, FLOATS).await;
        assert_status(&s, Code::NotFound, &["nobody"]);

        // A step bound to another session: "mine" delivered a tensor for step 1 first.
        register_over_wire(&mut c, "mine", &receivers(&["x"])).await;
        register_over_wire(&mut c, "other", &receivers(&["x"])).await;
        let small = proto::SendTensorChunk {
            task: TASK.into(),
            step_id: vec![1u8; 16].into(),
            session: "mine".into(),
            edge: "small".into(),
            dtype: proto::DataType::F32 as i32,
            dims: vec![1],
            total_bytes: 4,
            content: vec![0u8; 4].into(),
            source: String::new(),
        };
        c.send_tensor(futures::stream::iter([small])).await.unwrap();
        let s = refused(&mut c, "other", 1, FLOATS).await;
        assert_status(&s, Code::PermissionDenied, &["does not belong to session"]);

        // A tensor that alone passes the bound on a step not started here (256 MiB).
        let s = refused(&mut c, "mine", 2, 2 * FLOATS).await;
        assert_status(
            &s,
            Code::ResourceExhausted,
            &["--rendezvous-unclaimed-bytes"],
        );

        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            largest < ANNOUNCED,
            "a refused stream allocated {largest} bytes (it announced {ANNOUNCED})"
        );

        // The same announcement for a step the task takes is allocated at once, before
        // its chunks come: the record sees the destination. The stream stalls until it is
        // dropped below.
        let mut admitted = c.clone();
        let held = tokio::spawn(async move {
            admitted
                .send_tensor(stalled("mine", 3, "big", FLOATS))
                .await
        });
        let mut waited = 0;
        while LARGEST.load(Ordering::Relaxed) < ANNOUNCED {
            assert!(
                waited < 6000,
                "the admitted stream's destination never came"
            );
            waited += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        held.abort();
    });
    drop(rt);
    server.stop(Duration::ZERO);
}
