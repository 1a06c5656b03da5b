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
//! each abort. The futures run on one thread per worker (`magpie-unacked`, started with
//! the first detached step), which polls them as their answers wake it and holds no
//! other work. [`Unacked::wait_idle`] lets a draining worker wait for them;
//! [`Unacked::cancel`] drops whatever is still awaited (the worker does so on drain's
//! deadline and when dropped, then joins the thread).
//!
//! [`WorkerError::AbortedBy`]: super::error::WorkerError::AbortedBy
//! [`Transport::abort_step_with_reason`]: crate::transport::Transport::abort_step_with_reason

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
        let mut driver = self.driver.lock();
        if driver.is_none() {
            let (tx, rx) = mpsc::unbounded::<BoxFuture<'static, ()>>();
            let thread = std::thread::Builder::new()
                .name("magpie-unacked".into())
                .spawn(move || futures::executor::block_on(rx.for_each_concurrent(None, |f| f)));
            match thread {
                Ok(thread) => *driver = Some(Driver { tx, thread }),
                Err(e) => {
                    tracing::warn!(task = %self.task, error = %e, "cannot start the thread that awaits sends; steps await their own");
                    return Err(sends);
                }
            }
        }
        let Some(d) = driver.as_ref() else {
            return Err(sends);
        };
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
        // The thread takes futures until `shutdown` drops the sender; a future that
        // cannot be sent is dropped here, its guard with it.
        let _ = d.tx.unbounded_send(fut);
        Ok(())
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
            .abort_step_with_reason(&dst, &session, step, &reason)
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
