//! Asynchronous completion: how a submitted command buffer wakes the scheduler.
//!
//! ## Protocol
//! 1. The device's stream (`stream.rs`) submits a batch of commands; a host that needs
//!    its results (a download) holds a [`Completion`], a future over a oneshot channel.
//! 2. The submission, boxed as a [`Pending`] (a wait for the batch's timeline value),
//!    goes to this device's *fence waiter*: one thread per device, outside the
//!    scheduler's pool, that waits on each submission in turn (FIFO, the order of
//!    submission), drops it, and sends the outcome down the job's channels.
//! 3. Sending wakes the `Completion`'s waker; the scheduler polls the node's future
//!    again on some worker, which finds the result ready. No worker ever blocks on the GPU.
//!
//! Every wait has a deadline (see `health.rs`): a fence that does not signal in time
//! fails its job with an error naming the device and the op, and marks the device
//! failed; the waiter then polls the remaining fences once each instead of waiting.
//!
//! The job owns the submission, which owns the command buffer, which keeps every
//! buffer it touches alive until the GPU is done with it — even if the step was
//! cancelled and dropped its `Completion` (the send then finds no receiver; harmless).
//! A submission whose wait failed is *leaked*, never dropped: the GPU may still be
//! using its buffers.
//!
//! The waiter exits when its device is dropped (the job channel closes).

use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::oneshot;
use magpie_core::graph::DeviceName;
use magpie_core::KernelError;
use vulkano::{Validated, VulkanError as VkResult};

use super::health::Health;

/// Work submitted to the GPU that can be waited on with a deadline.
pub(super) trait Pending: Send {
    /// Blocks until the work has run, or `timeout` has passed
    /// (`Err(VkResult::Timeout)`).
    fn wait(&self, timeout: Duration) -> Result<(), Validated<VkResult>>;
}

/// A submission and where to report its outcome.
pub(super) struct Job {
    /// The submitted work.
    pub(super) pending: Box<dyn Pending>,
    /// The op that submitted it, for errors.
    pub(super) op: String,
    /// The device (under the name the kernel used), for errors.
    pub(super) device: DeviceName,
    /// Where the outcome goes.
    pub(super) done: Vec<oneshot::Sender<Result<(), KernelError>>>,
}

/// The sending end of a device's fence waiter.
pub(super) struct FenceWaiter {
    jobs: mpsc::Sender<Job>,
    health: Arc<Health>,
}

impl FenceWaiter {
    /// Starts the waiter thread for the device called `label`.
    pub(super) fn start(label: &str, health: Arc<Health>) -> std::io::Result<FenceWaiter> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread_health = Arc::clone(&health);
        std::thread::Builder::new()
            .name(format!("magpie-vk-fence-{label}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    finish(job, &thread_health);
                }
            })?;
        Ok(FenceWaiter { jobs, health })
    }

    /// Hands a submission to the thread; the returned future completes when it has run
    /// (or its wait failed).
    #[cfg(test)]
    pub(super) fn watch(
        &self,
        pending: Box<dyn Pending>,
        op: &str,
        device: &DeviceName,
    ) -> Completion {
        let (done, rx) = oneshot::channel();
        self.watch_all(pending, op, device, vec![done]);
        Completion(Some(rx))
    }

    /// Hands a submission to the thread, which reports its outcome to every `done`.
    pub(super) fn watch_all(
        &self,
        pending: Box<dyn Pending>,
        op: &str,
        device: &DeviceName,
        done: Vec<oneshot::Sender<Result<(), KernelError>>>,
    ) {
        let job = Job {
            pending,
            op: op.to_string(),
            device: device.clone(),
            done,
        };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            // The thread is gone (it only stops with the device): wait here instead, with
            // the same deadline, rather than lose the submission.
            finish(job, &self.health);
        }
    }
}

/// Waits for `job` within the device's deadline (not at all once the device failed) and
/// reports the outcome.
fn finish(job: Job, health: &Health) {
    let Job {
        pending,
        op,
        device,
        done,
    } = job;
    let already_failed = health.failure().is_some();
    let timeout = if already_failed {
        Duration::ZERO
    } else {
        health.wait_timeout()
    };
    let outcome = match pending.wait(timeout) {
        Ok(()) => {
            drop(pending);
            Ok(())
        }
        Err(e) => {
            let error = match &e {
                Validated::Error(VkResult::Timeout) if already_failed => {
                    health.check(&op).err().unwrap_or_else(|| {
                        KernelError::Device(format!("{op} on {device}: the device failed"))
                    })
                }
                Validated::Error(VkResult::Timeout) => KernelError::Device(health.fail(format!(
                    "{device} did not finish {op} within the wait deadline of {timeout:?}: the \
                     GPU is hung or lost; {device} is marked failed"
                ))),
                Validated::Error(VkResult::DeviceLost) => KernelError::Device(health.fail(
                    format!("{device} lost during {op}; {device} is marked failed"),
                )),
                _ => crate::conv::kernel_error(&op, &device, &e),
            };
            // The GPU may still be running this work and using its buffers, and dropping
            // a fence future that has not signalled waits without a deadline: leak it.
            std::mem::forget(pending);
            Err(error)
        }
    };
    for d in done {
        let _ = d.send(outcome.clone());
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

    /// A completion reported down `rx`.
    pub(super) fn from_receiver(rx: oneshot::Receiver<Result<(), KernelError>>) -> Completion {
        Completion(Some(rx))
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
                        "the device's waiter stopped before the GPU finished".into(),
                    ))
                })
            }),
        }
    }
}
