//! Asynchronous completion: how a submitted command buffer wakes the scheduler.
//!
//! ## Protocol
//! 1. A kernel records its commands and submits them with a fence
//!    ([`VulkanDevice::submit`](super::VulkanDevice::submit)); the submitting scheduler
//!    worker returns at once with a [`Completion`], a future over a oneshot channel.
//! 2. The fence's wait, boxed as a [`Job`], goes to this device's *fence waiter*: one
//!    thread per device, outside the scheduler's pool, that waits on each fence in turn
//!    (FIFO, the order of submission) and sends the outcome down the job's channel.
//! 3. Sending wakes the `Completion`'s waker; the scheduler polls the node's future
//!    again on some worker, which finds the result ready. No worker ever blocks on the GPU.
//!
//! The job owns the fence future, which owns the command buffer, which keeps every
//! buffer it touches alive until the GPU is done with it — even if the step was
//! cancelled and dropped its `Completion` (the send then finds no receiver; harmless).
//!
//! The waiter exits when its device is dropped (the job channel closes).

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};

use futures::channel::oneshot;
use magpie_core::KernelError;

/// A blocking wait for one submission, run on the fence-waiter thread.
pub(super) type Wait = Box<dyn FnOnce() -> Result<(), KernelError> + Send>;

/// A wait and where to report its outcome.
pub(super) struct Job {
    pub(super) wait: Wait,
    pub(super) done: oneshot::Sender<Result<(), KernelError>>,
}

/// The sending end of a device's fence waiter.
pub(super) struct FenceWaiter {
    jobs: mpsc::Sender<Job>,
}

impl FenceWaiter {
    /// Starts the waiter thread for the device called `label`.
    pub(super) fn start(label: &str) -> std::io::Result<FenceWaiter> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("magpie-vk-fence-{label}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let outcome = (job.wait)();
                    let _ = job.done.send(outcome);
                }
            })?;
        Ok(FenceWaiter { jobs })
    }

    /// Hands a wait to the thread; the returned future completes when it has run.
    pub(super) fn watch(&self, wait: Wait) -> Completion {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::SendError(job)) = self.jobs.send(Job { wait, done }) {
            // The thread is gone (it only stops with the device): wait here instead,
            // rather than lose the submission.
            let _ = job.done.send((job.wait)());
        }
        Completion(Some(rx))
    }
}

/// A submission's completion: resolves once its fence has signalled.
#[derive(Debug)]
#[must_use = "a GPU result is valid only once its completion resolves"]
pub(crate) struct Completion(Option<oneshot::Receiver<Result<(), KernelError>>>);

impl Completion {
    /// A completion for work that needed no submission.
    pub(crate) fn ready() -> Completion {
        Completion(None)
    }
}

impl Future for Completion {
    type Output = Result<(), KernelError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            None => Poll::Ready(Ok(())),
            Some(rx) => Pin::new(rx).poll(cx).map(|r| {
                r.unwrap_or_else(|_| {
                    Err(KernelError::Device(
                        "the fence waiter stopped before the GPU finished".into(),
                    ))
                })
            }),
        }
    }
}
