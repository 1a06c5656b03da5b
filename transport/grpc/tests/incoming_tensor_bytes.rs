//! Many `SendTensor` streams at once cannot make a task hold more than
//! `--rendezvous-task-bytes`: each stream's announced bytes are reserved when it is
//! admitted, before its destination is allocated, and count until it is delivered and
//! taken by a step, its step is aborted, or the stream ends. Past the bound the next
//! stream is refused at once (`RESOURCE_EXHAUSTED` naming the flag, the peer and the
//! edge; counted in `magpie_tensors_refused_total`), and the room comes back when a held
//! stream is dropped, when a step takes its tensor, and when a step is aborted. Counts
//! from the task's worker and its metrics, no timings. One server on a free 127.0.0.1
//! port, stopped at the end.

mod common;

use std::time::Duration;

use common::{
    connect_worker, first_fetch_over_wire, one_task, receivers, register_over_wire,
    register_test_ops, runtime, TASK,
};
use futures::StreamExt;
use magpie_core::distributed::{RendezvousLimits, ENTRY_OVERHEAD_BYTES};
use magpie_core::testkit::host_task_options;
use magpie_core::StepId;
use magpie_grpc::{proto, GrpcOptions, GrpcServer};
use magpie_scheduler::test_support::eventually;
use tonic::Code;

/// The peer the streams say they come from.
const PEER: &str = "/job:peer/task:7";
/// Floats of a held stream's tensor: 12 MiB.
const HELD_FLOATS: u64 = 3 << 20;
/// Floats of a tensor sent whole in one chunk: 1 MiB.
const SMALL_FLOATS: u64 = 1 << 18;
/// The task bound: three held streams fit, a fourth does not.
const TASK_BYTES: usize = 40 << 20;

/// Bytes the rendezvous counts for `floats` f32s on `edge`.
fn counted(floats: u64, edge: &str) -> usize {
    floats as usize * 4 + edge.len() + ENTRY_OVERHEAD_BYTES
}

/// The first chunk of a tensor of `floats` f32s for `edge` of step `step` (every byte of
/// it when `whole`, else four).
fn chunk(step: u8, edge: &str, floats: u64, whole: bool) -> proto::SendTensorChunk {
    let sent = if whole { floats as usize * 4 } else { 4 };
    proto::SendTensorChunk {
        task: TASK.into(),
        step_id: vec![step; 16].into(),
        session: "s".into(),
        edge: edge.into(),
        dtype: proto::DataType::F32 as i32,
        dims: vec![floats],
        total_bytes: floats * 4,
        content: vec![0u8; sent].into(),
        source: PEER.into(),
    }
}

/// A stream that announces a held-size tensor for `edge` of step `step`, sends four
/// bytes of it and stalls (never sends more, never ends).
fn stalled(step: u8) -> impl futures::Stream<Item = proto::SendTensorChunk> + Send + 'static {
    futures::stream::iter([chunk(step, "big", HELD_FLOATS, false)])
        .chain(futures::stream::pending())
}

/// The value of metric `name` in `text`, on the line that carries `label` (if any).
fn sample(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn concurrent_streams_are_bounded_together_and_their_room_comes_back() {
    register_test_ops();
    let spec = one_task();
    let mut task = host_task_options("w");
    task.rendezvous_limits = RendezvousLimits {
        task_bytes: TASK_BYTES,
        ..RendezvousLimits::default()
    };
    let options = GrpcOptions {
        tensor_stream_idle_timeout: Duration::from_secs(600),
        ..GrpcOptions::default()
    };
    let server = GrpcServer::start_with(&spec, "w", 0, &task, options).unwrap();
    let worker = || server.core().worker().stats();
    let held = counted(HELD_FLOATS, "big");
    let small = counted(SMALL_FLOATS, "x");
    let rt = runtime();
    rt.block_on(async {
        let mut c = connect_worker(server.local_addr()).await;
        let handle = register_over_wire(&mut c, "s", &receivers(&["x"])).await;

        // Three streams at once, each admitted and held open: their bytes are reserved,
        // though no tensor was delivered.
        let mut streams: Vec<_> = (1..=3u8)
            .map(|step| {
                let mut c = c.clone();
                tokio::spawn(async move { c.send_tensor(stalled(step)).await })
            })
            .collect();
        eventually("three streams admitted", || {
            worker().incoming_rendezvous_bytes == 3 * held
        });
        assert_eq!(worker().pending_rendezvous, 0, "nothing delivered yet");

        // A fourth is refused at once, while the others still hold their room.
        let refused = tokio::time::timeout(Duration::from_secs(60), c.send_tensor(stalled(4)))
            .await
            .expect("a refused stream is answered without waiting for its chunks")
            .expect_err("past --rendezvous-task-bytes");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        for w in [
            "--rendezvous-task-bytes",
            PEER,
            "edge \"big\"",
            "still arriving",
        ] {
            assert!(
                refused.message().contains(w),
                "{w:?} not in {}",
                refused.message()
            );
        }
        let text = server.metrics_text();
        assert_eq!(
            sample(
                &text,
                "magpie_tensors_refused_total",
                "code=\"resource_exhausted\""
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "magpie_rendezvous_incoming_bytes", ""),
            Some((3 * held) as f64),
            "{text}"
        );

        // A held stream that goes away gives its room back...
        streams.pop().unwrap().abort();
        eventually("the dropped stream's room back", || {
            worker().incoming_rendezvous_bytes == 2 * held
        });
        // ...which a whole tensor for step 4 now takes; delivered, it is an entry.
        c.send_tensor(futures::stream::iter([chunk(4, "x", SMALL_FLOATS, true)]))
            .await
            .expect("admitted once the room came back");
        let stats = worker();
        assert_eq!(stats.pending_rendezvous_bytes, 2 * held + small);
        assert_eq!(stats.incoming_rendezvous_bytes, 2 * held);

        // A step that takes it frees it.
        let step = StepId::from_bytes(&[4u8; 16]).unwrap();
        let fetched =
            first_fetch_over_wire(&mut c, handle.clone(), "s", step, Duration::from_secs(60)).await;
        assert_eq!(fetched.len(), SMALL_FLOATS as usize);
        assert_eq!(worker().pending_rendezvous_bytes, 2 * held);

        // So does aborting the step a delivered tensor waits for.
        c.send_tensor(futures::stream::iter([chunk(5, "x", SMALL_FLOATS, true)]))
            .await
            .unwrap();
        assert_eq!(worker().pending_rendezvous_bytes, 2 * held + small);
        c.abort_step(proto::AbortStepRequest {
            task: TASK.into(),
            step_id: vec![5u8; 16].into(),
            session: "s".into(),
            reason: String::new(),
            reason_code: 0,
        })
        .await
        .unwrap();
        assert_eq!(worker().pending_rendezvous_bytes, 2 * held);

        // The last held streams go: nothing is left.
        for s in streams {
            s.abort();
        }
        eventually("every byte back", || {
            let s = worker();
            s.pending_rendezvous_bytes == 0 && s.incoming_rendezvous_bytes == 0
        });
    });
    drop(rt);
    server.stop(Duration::ZERO);
}
