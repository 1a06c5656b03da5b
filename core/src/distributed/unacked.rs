//! [`Unacked`]: the answers to the sends of partition steps that already replied.
//!
//! A partition step whose nodes all ran need not wait for its receivers to acknowledge
//! its sends before it reports success: a receiver cannot finish its own partition of
//! the step without the tensor, so the master's step still succeeds only once every
//! tensor arrived. The worker hands the step's unanswered sends ([`PendingSend`]) here
//! and replies at once, saving a hop on the step's critical path.
//!
//! # What a failed send does
//!
//! The first send of a step that fails towards a task aborts the step there through
//! [`Transport::abort_step_with_reason`], for the step's own session (the receiving
//! task's session check holds: nobody outside the session aborts its steps), with a
//! reason naming the sending task, the edge, the `_Send` node and the send's error. The
//! receiver's partition then fails with [`WorkerError::AbortedBy`] carrying the
//! reason, and the master reports it, rather than the receiver waiting for its deadline.
//! A receiver that died fails the master's own `RunPartition` to it. Every failure is
//! logged (`tracing`, warn), as is an abort that could not be delivered.
//!
//! # Bounds and shutdown
//!
//! At most [`MAX_UNACKED_STEPS`] steps' sends are awaited here at once; past that
//! [`Unacked::detach`] gives the sends back and the step awaits them before it replies,
//! as before. Each answer comes within the transport's request deadline, and so does
//! each abort. The futures run on the transport's executor ([`Transport::spawn`]: the
//! gRPC transport's runtime, where the answers complete, so no thread is woken for
//! them), or else on one thread per worker (`magpie-unacked`, started with the first
//! detached step), which polls them as their answers wake it and holds no other work. [`Unacked::wait_idle`] lets a draining worker wait for them;
//! [`Unacked::cancel`] drops whatever is still awaited (the worker does so on drain's
//! deadline and when dropped, then joins the thread).
//!
//! [`WorkerError::AbortedBy`]: super::error::WorkerError::AbortedBy
//! [`Transport::abort_step_with_reason`]: crate::transport::Transport::abort_step_with_reason
//! [`Transport::spawn`]: crate::transport::Transport::spawn

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use parking_lot::{Condvar, Mutex};

use super::outbox::PendingSend;
use crate::scheduler::CancellationToken;
use crate::step_id::StepId;
use crate::transport::{TaskName, Transport};

/// How many steps' sends [`Unacked`] awaits at once before steps await their own.
pub(crate) const MAX_UNACKED_STEPS: usize = 256;

/// The longest reason an abort carries, in bytes (a send's error can quote a peer).
pub(crate) const MAX_REASON_BYTES: usize = 2048;

/// The count of steps whose sends are awaited, and its condition variable.
#[derive(Default)]
struct InFlight {
    steps: Mutex<usize>,
    idle: Condvar,
}

/// Counts one step in flight until dropped (also when its future is cancelled).
struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut steps = self.0.steps.lock();
        *steps -= 1;
        if *steps == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// The thread that polls the detached futures and the channel that feeds it.
struct Driver {
    tx: mpsc::UnboundedSender<BoxFuture<'static, ()>>,
    thread: JoinHandle<()>,
}

/// The sends of replied steps, awaited in the background (see the module docs).
pub(crate) struct Unacked {
    /// The sending task, for the reasons.
    task: TaskName,
    transport: Arc<dyn Transport>,
    in_flight: Arc<InFlight>,
    driver: Mutex<Option<Driver>>,
    /// Whether the transport runs the futures ([`Transport::spawn`]); else `driver` does.
    spawns: std::sync::OnceLock<bool>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Unacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unacked")
            .field("steps", &self.in_flight())
            .finish()
    }
}

impl Unacked {
    /// Awaits nothing yet; sends of `task` go through `transport`.
    pub(crate) fn new(task: TaskName, transport: Arc<dyn Transport>) -> Unacked {
        Unacked {
            task,
            transport,
            in_flight: Arc::default(),
            driver: Mutex::new(None),
            spawns: std::sync::OnceLock::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Steps whose sends are awaited now.
    pub(crate) fn in_flight(&self) -> usize {
        *self.in_flight.steps.lock()
    }

    /// Takes `sends` of `step` to await in the background, or gives them back when
    /// [`MAX_UNACKED_STEPS`] steps are awaited already, after [`Unacked::cancel`], or
    /// when the thread cannot be started.
    pub(crate) fn detach(
        &self,
        step: StepId,
        sends: Vec<PendingSend>,
    ) -> Result<(), Vec<PendingSend>> {
        if self.cancel.is_cancelled() {
            return Err(sends);
        }
        // Whether the transport runs futures; probed once, with one that does nothing.
        let spawns = *self
            .spawns
            .get_or_init(|| self.transport.spawn(async {}.boxed()).is_ok());
        if !spawns && !self.start_driver() {
            return Err(sends);
        }
        {
            let mut steps = self.in_flight.steps.lock();
            if *steps >= MAX_UNACKED_STEPS {
                return Err(sends);
            }
            *steps += 1;
        }
        let guard = InFlightGuard(Arc::clone(&self.in_flight));
        let work = await_answers(self.task.clone(), Arc::clone(&self.transport), step, sends);
        let cancel = self.cancel.clone();
        let fut = async move {
            let _guard = guard;
            futures::select_biased! {
                () = cancel.cancelled().boxed().fuse() => {}
                () = work.boxed().fuse() => {}
            }
        }
        .boxed();
        let fut = match spawns {
            true => match self.transport.spawn(fut) {
                Ok(()) => return Ok(()),
                Err(fut) => fut,
            },
            false => fut,
        };
        // The thread takes futures until `shutdown` drops the sender; a future that
        // cannot be sent is dropped here, its guard with it.
        if !self.start_driver() {
            tracing::error!(task = %self.task, step = %step, "the answers to a replied step's sends are dropped: no thread to await them");
        }
        if let Some(d) = self.driver.lock().as_ref() {
            let _ = d.tx.unbounded_send(fut);
        }
        Ok(())
    }

    /// Starts the thread that polls detached futures unless it runs; whether it runs.
    fn start_driver(&self) -> bool {
        let mut driver = self.driver.lock();
        if driver.is_some() {
            return true;
        }
        let (tx, rx) = mpsc::unbounded::<BoxFuture<'static, ()>>();
        let thread = std::thread::Builder::new()
            .name("magpie-unacked".into())
            .spawn(move || futures::executor::block_on(rx.for_each_concurrent(None, |f| f)));
        match thread {
            Ok(thread) => {
                *driver = Some(Driver { tx, thread });
                true
            }
            Err(e) => {
                tracing::warn!(task = %self.task, error = %e, "cannot start the thread that awaits sends; steps await their own");
                false
            }
        }
    }

    /// Waits until no step's sends are awaited, or `until`; returns whether none are.
    pub(crate) fn wait_idle(&self, until: Instant) -> bool {
        let mut steps = self.in_flight.steps.lock();
        while *steps > 0 {
            if self
                .in_flight
                .idle
                .wait_until(&mut steps, until)
                .timed_out()
            {
                return *steps == 0;
            }
        }
        true
    }

    /// Drops whatever sends are still awaited (no abort is sent for them).
    pub(crate) fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Cancels what is awaited and joins the thread (unless called on it).
    pub(crate) fn shutdown(&self) {
        self.cancel();
        let Some(Driver { tx, thread }) = self.driver.lock().take() else {
            return;
        };
        drop(tx);
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
}

/// Awaits the answers to `sends`; the first failed send towards each task aborts `step`
/// there, with a reason naming `task` (the sender), the edge, the node and the error.
async fn await_answers(
    task: TaskName,
    transport: Arc<dyn Transport>,
    step: StepId,
    sends: Vec<PendingSend>,
) {
    let answers = futures::future::join_all(sends.into_iter().map(|s| async move {
        let PendingSend {
            node,
            device,
            dst,
            session,
            edge,
            answer,
        } = s;
        answer
            .await
            .err()
            .map(|e| (node, device, dst, session, edge, e))
    }))
    .await;
    let mut aborted: HashSet<TaskName> = HashSet::new();
    for (node, device, dst, session, edge, e) in answers.into_iter().flatten() {
        tracing::warn!(task = %task, to = %dst, edge = %edge, node = %node, step = %step, error = %e, "a send of a step that already replied failed; aborting the step on its receiver");
        if !aborted.insert(dst.clone()) {
            continue;
        }
        let mut reason = format!(
            "task {task} could not send edge {edge:?} (node {node:?} on {device}) to task {dst}: {e}"
        );
        truncate(&mut reason, MAX_REASON_BYTES);
        if let Err(abort) = transport
            .abort_step_with_reason(&dst, &session, step, e.code(), &reason)
            .await
        {
            tracing::warn!(task = %task, to = %dst, step = %step, error = %abort, "could not abort the step on the task a send failed to");
        }
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures::channel::oneshot;
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use parking_lot::Mutex;

    use crate::device::Device;
    use crate::distributed::ops::{DST_TASK_ATTR, EDGE_ATTR, SEND_OP};
    use crate::distributed::ServerOptions;
    use crate::distributed::{Worker, WorkerError};
    use crate::graph::DeviceName;
    use crate::graph::{AttrValue, GraphDef, NodeDef};
    use crate::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelInit};
    use crate::registry::{KernelKey, KernelRegistry};
    use crate::step_id::StepId;
    use crate::tensor::{DType, Tensor};
    use crate::transport::{
        DeviceInfo, PartitionHandle, PartitionOutput, RegisterPartition, RendezvousKey,
        RunPartition, TaskName, Transport, TransportError,
    };

    type Answer<T> = BoxFuture<'static, Result<T, TransportError>>;

    /// An abort the transport was asked for: task, session, step, reason.
    type Abort = (TaskName, String, StepId, Option<String>);

    /// Sends eagerly; each send's answer comes when the test says; aborts are recorded.
    #[derive(Default)]
    struct Held {
        answers: Mutex<Vec<oneshot::Sender<Result<(), TransportError>>>>,
        aborts: Mutex<Vec<Abort>>,
    }

    impl std::fmt::Debug for Held {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Held")
        }
    }

    fn unused<T: Send + 'static>() -> Answer<T> {
        async {
            Err(TransportError::Cancelled {
                task: String::new(),
                step_id: StepId::from(0),
            })
        }
        .boxed()
    }

    impl Transport for Held {
        fn list_devices(&self, _: &TaskName) -> Answer<Vec<DeviceInfo>> {
            unused()
        }
        fn register_partition(
            &self,
            _: &TaskName,
            _: RegisterPartition,
        ) -> Answer<PartitionHandle> {
            unused()
        }
        fn sends_eagerly(&self) -> bool {
            true
        }
        fn run_partition(&self, _: &TaskName, _: RunPartition) -> Answer<PartitionOutput> {
            unused()
        }
        fn send(&self, _: &TaskName, _: &str, _: RendezvousKey, _: Tensor) -> Answer<()> {
            let (tx, rx) = oneshot::channel();
            self.answers.lock().push(tx);
            async move { rx.await.unwrap_or(Ok(())) }.boxed()
        }
        fn abort_step(&self, task: &TaskName, session: &str, step: StepId) -> Answer<()> {
            self.aborts
                .lock()
                .push((task.clone(), session.into(), step, None));
            async { Ok(()) }.boxed()
        }
        fn abort_step_with_reason(
            &self,
            task: &TaskName,
            session: &str,
            step: StepId,
            code: crate::Code,
            reason: &str,
        ) -> Answer<()> {
            assert_eq!(code, crate::Code::ResourceExhausted);
            self.aborts
                .lock()
                .push((task.clone(), session.into(), step, Some(reason.into())));
            async { Ok(()) }.boxed()
        }
        fn release_session(&self, _: &TaskName, _: &str) -> Answer<()> {
            unused()
        }
    }

    #[derive(Debug)]
    struct Host(DeviceName);
    impl Device for Host {
        fn name(&self) -> &DeviceName {
            &self.0
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    struct Unfed;
    impl Kernel for Unfed {
        fn compute(&self, _: &mut KernelContext<'_>) -> Result<(), KernelError> {
            Err(KernelError::InvalidArgument(
                "a placeholder must be fed".into(),
            ))
        }
    }

    /// A worker of `/job:local/task:0` over `transport`, with a partition that sends
    /// its feed to `/job:peer/task:0` on edge `x->peer`.
    fn sender(transport: Arc<Held>) -> (Worker, PartitionHandle) {
        let kernels = KernelRegistry::new();
        kernels
            .register(
                KernelKey::new("Placeholder", "CPU"),
                |_: &KernelInit<'_>| Ok(BoxedKernel::Sync(Box::new(Unfed))),
            )
            .unwrap();
        let cpu = DeviceName::parse("/job:local/replica:0/task:0/device:CPU:0").unwrap();
        let options = ServerOptions::with_devices(vec![Arc::new(Host(cpu))]).kernels(kernels);
        let worker = Worker::new(TaskName::new("local", 0), &options, transport).unwrap();
        let device = "/job:local/replica:0/task:0/device:CPU:0".to_string();
        let graph = GraphDef {
            nodes: vec![
                NodeDef {
                    name: "x".into(),
                    op: "Placeholder".into(),
                    inputs: vec![],
                    device: device.clone(),
                    attrs: vec![("dtype".into(), AttrValue::DType(DType::F32))],
                },
                NodeDef {
                    name: "send".into(),
                    op: SEND_OP.into(),
                    inputs: vec!["x".into()],
                    device,
                    attrs: vec![
                        (EDGE_ATTR.into(), AttrValue::Str("x->peer".into())),
                        (
                            DST_TASK_ATTR.into(),
                            AttrValue::Str("/job:peer/task:0".into()),
                        ),
                    ],
                },
            ],
        };
        let handle = worker
            .register_partition(RegisterPartition {
                session: "s".into(),
                graph,
                feeds: vec!["x:0".into()],
                fetches: vec![],
                targets: vec!["send".into()],
                shared: None,
            })
            .unwrap();
        (worker, handle)
    }

    fn step(handle: &PartitionHandle, id: u64) -> RunPartition {
        RunPartition {
            handle: handle.clone(),
            session: "s".into(),
            step_id: StepId::from(id),
            feeds: vec![Tensor::scalar(1.0f32)],
            timeout: Duration::from_secs(600),
            trace: false,
        }
    }

    #[test]
    fn a_step_replies_before_its_send_is_answered_and_a_failed_send_aborts_the_receiver() {
        let transport = Arc::new(Held::default());
        let (worker, handle) = sender(Arc::clone(&transport));

        // The send is not answered, yet the step replied: its answer is awaited here.
        worker.run_partition(step(&handle, 1)).unwrap();
        assert_eq!(worker.stats().unacked_steps, 1);
        assert_eq!(transport.answers.lock().len(), 1);
        // Acknowledged: nothing is awaited any more, and nothing was aborted.
        let ack = transport.answers.lock().pop().unwrap();
        ack.send(Ok(())).unwrap();
        assert!(worker
            .unacked
            .wait_idle(std::time::Instant::now() + Duration::from_secs(60)));
        assert!(transport.aborts.lock().is_empty());

        // Refused after the step replied: the step is aborted on the receiver, through
        // the step's session, with a reason naming this task, the edge and the error.
        worker.run_partition(step(&handle, 2)).unwrap();
        let refused = transport.answers.lock().pop().unwrap();
        refused
            .send(Err(TransportError::LimitExceeded {
                task: "/job:peer/task:0".into(),
                detail: "too many bytes".into(),
            }))
            .unwrap();
        assert!(worker
            .unacked
            .wait_idle(std::time::Instant::now() + Duration::from_secs(60)));
        let aborts = transport.aborts.lock().clone();
        assert_eq!(aborts.len(), 1, "{aborts:?}");
        let (to, session, step_id, reason) = &aborts[0];
        assert_eq!(to, &TaskName::new("peer", 0));
        assert_eq!(session, "s");
        assert_eq!(*step_id, StepId::from(2));
        let reason = reason.as_deref().unwrap();
        assert!(
            reason.contains("task /job:local/task:0 could not send edge \"x->peer\""),
            "{reason}"
        );
        assert!(reason.contains("too many bytes"), "{reason}");

        // Stopping with a send unanswered drops it: drain returns and nothing is left.
        worker.run_partition(step(&handle, 3)).unwrap();
        assert_eq!(worker.stats().unacked_steps, 1);
        worker.begin_stop();
        worker.drain(std::time::Instant::now(), Duration::from_secs(60));
        assert_eq!(worker.stats().unacked_steps, 0);
        assert_eq!(transport.aborts.lock().len(), 1);
    }

    #[test]
    fn a_reasoned_abort_fails_the_receivers_step_with_the_reason_before_or_while_it_runs() {
        let transport = Arc::new(Held::default());
        let (worker, handle) = sender(Arc::clone(&transport));
        // Before the step starts here: the step, when it comes, fails with the reason.
        worker
            .abort_step_with_reason(
                "s",
                StepId::from(7),
                Some((
                    crate::Code::ResourceExhausted,
                    "task A could not send edge e",
                )),
            )
            .unwrap();
        let e = worker.run_partition(step(&handle, 7)).unwrap_err();
        match &e {
            WorkerError::AbortedBy { reason, code, .. } => {
                assert_eq!(reason, "task A could not send edge e");
                assert_eq!(*code, crate::Code::ResourceExhausted);
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("could not send edge e"), "{e}");
        // A caller outside the session aborts nothing, reason or not.
        let rogue = worker.abort_step_with_reason(
            "other",
            StepId::from(8),
            Some((crate::Code::ResourceExhausted, "rogue")),
        );
        assert!(
            matches!(rogue, Err(WorkerError::UnknownSession { .. })),
            "{rogue:?}"
        );
        worker.run_partition(step(&handle, 8)).unwrap();
    }
}
