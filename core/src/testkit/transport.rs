//! The transport conformance suite: what any [`Transport`] — in-memory, gRPC, a user's —
//! must do for the master and workers to work over it. A transport crate's test starts a
//! cluster of two tasks (`/job:a/task:0`, `/job:b/task:0`, each exposing a CPU-type
//! device and hosting a [`TaskServer`]) and hands [`check_transport`] a transport that
//! reaches them, plus the servers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::executor::block_on;

use crate::device::Device;
use crate::distributed::{ServerOptions, TaskServer};
use crate::error::Code;
use crate::graph::{AttrValue, DeviceName, GraphDef, NodeDef};
use crate::scheduler::CancellationToken;
use crate::step_id::StepId;
use crate::tensor::{DType, Tensor};
use crate::transport::{
    RegisterPartition, RendezvousKey, RunPartition, TaskName, Transport, TransportError,
};

/// A host device of type `CPU` with no kernels of its own: enough for `_Send`, `_Recv`
/// and the other any-device kernels the suite and transport tests use.
#[derive(Debug)]
pub struct HostDevice(pub DeviceName);

impl Device for HostDevice {
    fn name(&self) -> &DeviceName {
        &self.0
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Server options for `/job:<job>/task:0` of a transport test: one [`HostDevice`]
/// (`/job:<job>/replica:0/task:0/device:CPU:0`) and one scheduler worker.
///
/// # Panics
///
/// If `job` makes an invalid device name (a test's mistake).
pub fn host_task_options(job: &str) -> ServerOptions {
    let name = DeviceName::parse(&format!("/job:{job}/replica:0/task:0/device:CPU:0"))
        .expect("a job name that makes a valid device name");
    ServerOptions {
        num_workers: Some(1),
        ..ServerOptions::with_devices(vec![Arc::new(HostDevice(name))])
    }
}

/// A conformance check failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("transport conformance: {check}: {detail}")]
pub struct TransportConformanceError {
    /// The check.
    pub check: &'static str,
    /// What went wrong.
    pub detail: String,
}

fn fail(check: &'static str, detail: impl std::fmt::Display) -> TransportConformanceError {
    TransportConformanceError {
        check,
        detail: detail.to_string(),
    }
}

/// Runs the suite; returns how many checks passed. `in_process` says whether tensors
/// must arrive without a copy (an in-process transport's promise).
///
/// # Errors
/// [`TransportConformanceError`] naming the first check that failed and what the
/// transport did instead.
pub fn check_transport(
    transport: Arc<dyn Transport>,
    a: &TaskServer,
    b: &TaskServer,
    in_process: bool,
) -> Result<usize, TransportConformanceError> {
    let (ta, tb) = (a.task().clone(), b.task().clone());
    let mut passed = 0;

    // 1. Devices are listed with full names of the task.
    let devs = block_on(transport.list_devices(&ta)).map_err(|e| fail("list_devices", e))?;
    if devs.is_empty() || !devs.iter().all(|d| ta.owns(&d.name)) {
        return Err(fail("list_devices", format!("{devs:?} for {ta}")));
    }
    passed += 1;

    // 2. A tensor sent to a task for a session registered there arrives in its
    //    rendezvous (without a copy in process).
    register_receiver(transport.as_ref(), &tb, "conformance").map_err(|e| fail("send", e))?;
    let t = Tensor::from_vec([4], vec![1.0f32, 2.0, 3.0, 4.0]).map_err(|e| fail("send", e))?;
    let key = RendezvousKey {
        step_id: StepId::from(1u64 << 40),
        edge: "conformance".into(),
    };
    block_on(transport.send(&tb, "conformance", key.clone(), t.clone()))
        .map_err(|e| fail("send", e))?;
    let got = block_on(b.worker().rendezvous().recv(key)).map_err(|e| fail("send", e))?;
    if got.to_vec::<f32>().ok() != t.to_vec::<f32>().ok() {
        return Err(fail("send", "the tensor changed on the way"));
    }
    if in_process && !got.shares_buffer_with(&t) {
        return Err(fail("send", "an in-process transport copied the tensor"));
    }
    passed += 1;

    // 3. Register and run a partition that receives from the other task.
    let cpu = devs[0].name.to_string();
    let recv = NodeDef {
        name: "r".into(),
        op: crate::distributed::ops::RECV_OP.into(),
        inputs: vec![],
        device: cpu,
        attrs: vec![
            ("edge".into(), AttrValue::Str("x".into())),
            ("dtype".into(), AttrValue::DType(DType::F32)),
        ],
    };
    let handle = block_on(transport.register_partition(
        &ta,
        RegisterPartition {
            session: "conformance".into(),
            graph: GraphDef { nodes: vec![recv] },
            feeds: vec![],
            fetches: vec!["r:0".into()],
            targets: vec![],
            shared: None,
        },
    ))
    .map_err(|e| fail("register_partition", e))?;
    passed += 1;
    let step_id: u64 = (1 << 40) + 1;
    block_on(transport.send(
        &ta,
        "conformance",
        RendezvousKey {
            step_id: step_id.into(),
            edge: "x".into(),
        },
        Tensor::scalar(5.0f32),
    ))
    .map_err(|e| fail("run_partition", e))?;
    let out = block_on(transport.run_partition(
        &ta,
        RunPartition {
            handle: handle.clone(),
            session: "conformance".into(),
            step_id: step_id.into(),
            feeds: vec![],
            timeout: Duration::from_secs(10),
            trace: true,
        },
    ))
    .map_err(|e| fail("run_partition", e))?;
    if out.tensors.len() != 1 || out.tensors[0].scalar_value::<f32>().ok() != Some(5.0) {
        return Err(fail("run_partition", format!("got {out:?}")));
    }
    // A traced step returns the task's timeline: a record of the partition's receive.
    let traced = out.timeline.as_ref().is_some_and(|t| {
        t.start_unix_micros > 0
            && t.nodes
                .iter()
                .any(|n| n.op == crate::distributed::ops::RECV_OP)
    });
    if !traced {
        return Err(fail(
            "run_partition (trace)",
            format!("got {:?}", out.timeline),
        ));
    }
    passed += 1;

    // 4. A receive that never gets its tensor ends at the step's deadline, naming the task.
    let r = block_on(transport.run_partition(
        &ta,
        RunPartition {
            handle: handle.clone(),
            session: "conformance".into(),
            step_id: (step_id + 1).into(),
            feeds: vec![],
            timeout: Duration::from_millis(50),
            trace: false,
        },
    ));
    match r {
        Err(e @ TransportError::DeadlineExceeded { .. }) if e.task() == ta.to_string() => {}
        other => return Err(fail("deadline", format!("got {other:?}"))),
    }
    passed += 1;

    // 5. `run_partition_cancellable` runs a step; cancelling its token aborts the step on
    //    the task (a receive that would otherwise wait 30 s), naming the task, and leaves
    //    no step running there.
    let token = CancellationToken::new();
    let r = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            block_on(crate::transport::run_partition_cancellable(
                &*transport,
                &ta,
                RunPartition {
                    handle: handle.clone(),
                    session: "conformance".into(),
                    step_id: (step_id + 3).into(),
                    feeds: vec![],
                    timeout: Duration::from_secs(30),
                    trace: false,
                },
                Some(&token),
            ))
        });
        let until = Instant::now() + Duration::from_secs(10);
        while a.worker().stats().running_steps == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        // An abort through a session that has no partition there is refused and stops
        // nothing.
        let intruder = block_on(transport.abort_step(&ta, "intruder", (step_id + 3).into()));
        let still_running = a.worker().stats().running_steps;
        token.cancel();
        run.join().map(|r| (r, intruder, still_running))
    })
    .map_err(|_| fail("run_partition_cancellable", "the run panicked"))?;
    let (r, intruder, still_running) = r;
    if intruder.as_ref().map_err(TransportError::code) != Err(Code::NotFound) || still_running != 1
    {
        return Err(fail(
            "abort through another session",
            format!("got {intruder:?} with {still_running} steps running after it"),
        ));
    }
    match r {
        Err(TransportError::Cancelled { task, step_id: s })
            if task == ta.to_string() && s == StepId::from(step_id + 3) => {}
        other => return Err(fail("run_partition_cancellable", format!("got {other:?}"))),
    }
    let running = a.worker().stats().running_steps;
    if running != 0 {
        return Err(fail(
            "run_partition_cancellable",
            format!("{running} steps still run on {ta} after the abort"),
        ));
    }
    passed += 1;

    // 6. An unknown handle is reported as such, naming the task.
    block_on(transport.release_session(&ta, "conformance"))
        .map_err(|e| fail("release_session", e))?;
    let r = block_on(transport.run_partition(
        &ta,
        RunPartition {
            handle,
            session: "conformance".into(),
            step_id: (step_id + 2).into(),
            feeds: vec![],
            timeout: Duration::from_secs(1),
            trace: false,
        },
    ));
    if !matches!(&r, Err(TransportError::UnknownPartition { task, .. }) if *task == ta.to_string())
    {
        return Err(fail("unknown partition", format!("got {r:?}")));
    }
    passed += 1;

    // 6b. Tensors for a session with no partition on the task are refused (NOT_FOUND).
    let key = RendezvousKey {
        step_id: StepId::from(step_id + 4),
        edge: "x".into(),
    };
    let r = block_on(transport.send(&ta, "conformance", key, Tensor::scalar(1.0f32)));
    if r.as_ref().map_err(TransportError::code) != Err(Code::NotFound) {
        return Err(fail("send for an unknown session", format!("got {r:?}")));
    }
    let _ = block_on(transport.release_session(&tb, "conformance"));
    passed += 1;

    // 7. A task that is not serving fails at once, naming it.
    let ghost = TaskName::new("nobody", 0);
    match block_on(transport.list_devices(&ghost)) {
        Err(e) if e.task() == ghost.to_string() => {}
        other => return Err(fail("unreachable task", format!("got {other:?}"))),
    }
    passed += 1;
    Ok(passed)
}

/// Registers a partition of one `_Recv` (edge `unused`) on `task` for `session`, so that
/// the task accepts tensors for that session's steps (a task takes tensors only for
/// sessions with a partition there).
///
/// # Errors
///
/// The transport's, naming the task.
pub fn register_receiver(
    transport: &dyn Transport,
    task: &TaskName,
    session: &str,
) -> Result<crate::transport::PartitionHandle, TransportError> {
    let devs = block_on(transport.list_devices(task))?;
    let device = devs.first().map(|d| d.name.to_string()).unwrap_or_default();
    let recv = NodeDef {
        name: "unused".into(),
        op: crate::distributed::ops::RECV_OP.into(),
        inputs: vec![],
        device,
        attrs: vec![
            ("edge".into(), AttrValue::Str("unused".into())),
            ("dtype".into(), AttrValue::DType(DType::F32)),
        ],
    };
    block_on(transport.register_partition(
        task,
        RegisterPartition {
            session: session.into(),
            graph: GraphDef { nodes: vec![recv] },
            feeds: vec![],
            fetches: vec![],
            targets: vec!["unused".into()],
            shared: None,
        },
    ))
}

/// The receiving task's partitions for [`check_rendezvous_hygiene`]: a receive of `x`
/// alone, and receives of `x` and of `never`, which nobody sends.
fn hygiene_partitions(
    transport: &dyn Transport,
    ta: &TaskName,
    cpu: &str,
) -> Result<[crate::transport::PartitionHandle; 2], TransportConformanceError> {
    let fail = |e: TransportError| TransportConformanceError {
        check: "rendezvous hygiene",
        detail: format!("register_partition: {e}"),
    };
    let recv = |name: &str, edge: &str| NodeDef {
        name: name.into(),
        op: crate::distributed::ops::RECV_OP.into(),
        inputs: vec![],
        device: cpu.into(),
        attrs: vec![
            ("edge".into(), AttrValue::Str(edge.into())),
            ("dtype".into(), AttrValue::DType(DType::F32)),
        ],
    };
    let register = |nodes: Vec<NodeDef>, fetches: Vec<String>| {
        block_on(transport.register_partition(
            ta,
            RegisterPartition {
                session: "hygiene".into(),
                graph: GraphDef { nodes },
                feeds: vec![],
                fetches,
                targets: vec![],
                shared: None,
            },
        ))
        .map_err(fail)
    };
    Ok([
        register(vec![recv("r", "x")], vec!["r:0".into()])?,
        register(
            vec![recv("r", "x"), recv("w", "never")],
            vec!["r:0".into(), "w:0".into()],
        )?,
    ])
}

/// Runs `steps` failing and aborted partition steps on `a` (the task `ta`) through
/// `transport`, each after tensors for it were sent to `a` — some of which the step
/// never receives — and checks that afterwards no rendezvous entry or byte is left on
/// `a` or `b`. The kinds, in turn: a kernel that fails (a tensor of the wrong dtype);
/// a run refused before it starts (a wrong number of feeds; an unknown partition); an
/// abort while the step waits for a tensor nobody sends; an abort before the step
/// starts (which the task then refuses). Returns how many steps ran.
///
/// # Errors
///
/// Names the step and what was wrong: a step that succeeded, or entries left behind.
pub fn check_rendezvous_hygiene(
    transport: Arc<dyn Transport>,
    a: &TaskServer,
    b: &TaskServer,
    steps: u64,
) -> Result<u64, TransportConformanceError> {
    let fail = |detail: String| TransportConformanceError {
        check: "rendezvous hygiene",
        detail,
    };
    let ta = a.worker().task().clone();
    let devs = block_on(transport.list_devices(&ta)).map_err(|e| fail(e.to_string()))?;
    let cpu = devs
        .first()
        .ok_or_else(|| fail(format!("{ta} has no device")))?
        .name
        .to_string();
    let [one, two] = hygiene_partitions(transport.as_ref(), &ta, &cpu)?;
    let send = |step_id: u64, edge: &str, t: Tensor| {
        let key = RendezvousKey {
            step_id: step_id.into(),
            edge: edge.into(),
        };
        block_on(transport.send(&ta, "hygiene", key, t)).map_err(|e| fail(format!("send: {e}")))
    };
    let run = |handle: &crate::transport::PartitionHandle,
               step_id: u64,
               feeds: Vec<Tensor>,
               timeout: Duration| {
        block_on(transport.run_partition(
            &ta,
            RunPartition {
                handle: handle.clone(),
                session: "hygiene".into(),
                step_id: step_id.into(),
                feeds,
                timeout,
                trace: false,
            },
        ))
    };
    let base = (1u64 << 41) + (u64::from(std::process::id()) << 20);
    for i in 0..steps {
        let step_id = base + i;
        let data = || Tensor::from_vec([64], vec![1.0f32; 64]).expect("64 elements");
        let result = match i % 5 {
            0 => {
                send(step_id, "x", Tensor::scalar(1i32))?;
                send(step_id, "extra", data())?;
                run(&one, step_id, vec![], Duration::from_secs(10))
            }
            1 => {
                send(step_id, "x", data())?;
                send(step_id, "extra", data())?;
                run(&one, step_id, vec![data()], Duration::from_secs(10))
            }
            2 => {
                send(step_id, "x", data())?;
                let unknown = crate::transport::PartitionHandle(format!("{ta}/partition/none"));
                run(&unknown, step_id, vec![], Duration::from_secs(10))
            }
            3 => {
                send(step_id, "x", data())?;
                send(step_id, "extra", data())?;
                std::thread::scope(|scope| {
                    let running =
                        scope.spawn(|| run(&two, step_id, vec![], Duration::from_secs(30)));
                    let until = Instant::now() + Duration::from_secs(10);
                    while a.worker().stats().running_steps == 0 && Instant::now() < until {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    let _ = block_on(transport.abort_step(&ta, "hygiene", step_id.into()));
                    running.join().unwrap_or_else(|_| {
                        Err(TransportError::Remote {
                            task: ta.to_string(),
                            detail: "the run panicked".into(),
                            code: crate::error::Code::Internal,
                        })
                    })
                })
            }
            _ => {
                block_on(transport.abort_step(&ta, "hygiene", step_id.into()))
                    .map_err(|e| fail(format!("abort_step: {e}")))?;
                send(step_id, "x", data())?;
                run(&one, step_id, vec![], Duration::from_secs(10))
            }
        };
        if let Ok(out) = result {
            return Err(fail(format!(
                "step {step_id} (kind {}) succeeded with {out:?}",
                i % 5
            )));
        }
    }
    let _ = block_on(transport.release_session(&ta, "hygiene"));
    for server in [a, b] {
        let stats = server.worker().stats();
        if stats.pending_rendezvous != 0 || stats.pending_rendezvous_bytes != 0 {
            return Err(fail(format!(
                "{} keeps {} rendezvous entries ({} bytes) after {steps} failed and aborted steps",
                server.worker().task(),
                stats.pending_rendezvous,
                stats.pending_rendezvous_bytes
            )));
        }
    }
    Ok(steps)
}

/// Sends `count` tensors of a third of `a`'s
/// [`RendezvousLimits::unclaimed_bytes`](crate::distributed::RendezvousLimits) each to
/// `a`, every one for a step id that never runs, and checks that `a` never holds more
/// than that limit for them. The limit must be at most 16 MiB (a test's server options
/// set it). Returns the most bytes `a` held for such steps at once.
///
/// # Errors
///
/// When the bytes held pass the limit, or a send fails.
pub fn check_unclaimed_bound(
    transport: Arc<dyn Transport>,
    a: &TaskServer,
    count: u64,
) -> Result<usize, TransportConformanceError> {
    let fail = |detail: String| TransportConformanceError {
        check: "unclaimed tensors are bounded",
        detail,
    };
    let ta = a.worker().task().clone();
    let limit = a.worker().rendezvous().limits().unclaimed_bytes;
    if limit > 16 << 20 {
        return Err(fail(format!(
            "the limit of {limit} bytes is too large for a test"
        )));
    }
    let elements = limit / 3 / 4;
    register_receiver(transport.as_ref(), &ta, "unclaimed")
        .map_err(|e| fail(format!("register_partition: {e}")))?;
    let base = (1u64 << 42) + (u64::from(std::process::id()) << 20);
    let mut most = 0;
    for i in 0..count {
        let t = Tensor::from_vec([elements], vec![0.5f32; elements])
            .map_err(|e| fail(e.to_string()))?;
        let key = RendezvousKey {
            step_id: (base + i).into(),
            edge: "unclaimed".into(),
        };
        block_on(transport.send(&ta, "unclaimed", key, t))
            .map_err(|e| fail(format!("send: {e}")))?;
        let held = a.worker().stats().unclaimed_rendezvous_bytes;
        if held > limit {
            return Err(fail(format!(
                "{ta} holds {held} bytes for steps that never ran, over its limit of {limit}"
            )));
        }
        most = most.max(held);
    }
    let _ = block_on(transport.release_session(&ta, "unclaimed"));
    Ok(most)
}
