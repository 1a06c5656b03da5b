//! The device's command stream: every GPU command of every step, in one order, recorded
//! into batches that are submitted once each and completed through a timeline semaphore.
//!
//! ## Protocol
//! 1. A kernel *enqueues* its commands ([`Command`]s: dispatches, copies, fills) from a
//!    scheduler worker: they are appended to the device's *open batch* under the stream's
//!    lock, and the kernel completes at once. Its output is *stream-ordered*: valid for
//!    every command enqueued after it on this device, which is the only way the GPU ever
//!    reads it. So a chain of GPU nodes is enqueued back to back, with no host round trip.
//! 2. A batch is *flushed* — replayed into one command buffer and submitted once — when
//!    the host needs a result from it (a download, [`Stream::enqueue_and_wait`]), when it
//!    reaches [`MAX_BATCH_COMMANDS`], or when no command was added to it for the stream's
//!    *linger* time (the device's flusher thread; 500 µs unless set with
//!    [`VulkanDevice::set_batch_linger`](super::VulkanDevice::set_batch_linger)), so that
//!    work nobody waits for still runs soon.
//! 3. Within a batch, vulkano's command buffer builder inserts a pipeline barrier exactly
//!    where a command reads or overwrites what an earlier one wrote (it tracks every
//!    buffer range). Batch `v` signals value `v` of the device's timeline semaphore and
//!    waits for value `v - 1` before it starts, which orders it after every earlier batch
//!    and makes their writes visible to it.
//! 4. Every submitted batch goes to the fence waiter (`completion.rs`) as a wait for its
//!    timeline value, with the device's deadline. The waiter then drops the command
//!    buffer (and with it the buffers it kept alive) and completes the host waits
//!    registered on the batch.
//!
//! A failed flush (the driver refuses the command buffer or the submission) fails the
//! batch's host waits and marks the device failed: outputs of the lost commands may be
//! read by later ones, so nothing after them can be trusted.
//!
//! ## Locking
//! One mutex guards the open batch and the last submitted timeline value; submissions
//! happen under it, so timeline values are submitted in increasing order. Nothing else is
//! locked while it is held except the queue (inside vulkano) and the waiter's channel.
//! The GPU's execution is never waited for under it.
//!
//! ## Memory ordering
//! The submission counter and the linger time are atomics read and written `Relaxed`:
//! the counter is a report (read after the step that caused the submissions, which
//! synchronised with their flush through the step's own completion), and the linger is a
//! setting that orders nothing. Everything the GPU writes is made visible to the host by
//! the timeline wait that precedes every host read (`completion.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use magpie_core::graph::DeviceName;
use magpie_core::KernelError;
use parking_lot::{Condvar, Mutex};
use vulkano::buffer::Subbuffer;
use vulkano::command_buffer::allocator::StandardCommandBufferAllocator;
use vulkano::command_buffer::{
    AutoCommandBufferBuilder, CommandBufferSubmitInfo, CommandBufferUsage, CopyBufferInfo,
    PrimaryAutoCommandBuffer, SemaphoreSubmitInfo, SubmitInfo,
};
use vulkano::descriptor_set::DescriptorSet;
use vulkano::device::Queue;
use vulkano::pipeline::{ComputePipeline, Pipeline, PipelineBindPoint};
use vulkano::sync::semaphore::{Semaphore, SemaphoreWaitInfo};
use vulkano::sync::PipelineStages;
use vulkano::{Validated, VulkanError as VkResult};

use super::completion::{Completion, FenceWaiter, Pending};
use super::health::Health;
use super::pipelines::Params;

/// Commands one batch holds at most before it is flushed (behaviour at the time of
/// writing).
pub(super) const MAX_BATCH_COMMANDS: usize = 1024;
/// How long a batch waits for more commands before the flusher submits it, by default.
pub(super) const DEFAULT_LINGER: Duration = Duration::from_micros(500);

/// One GPU command, with everything it uses (kept alive until the GPU has run it).
pub(super) enum Command {
    /// A compute dispatch.
    Dispatch {
        pipeline: Arc<ComputePipeline>,
        set: Arc<DescriptorSet>,
        params: Params,
        groups: [u32; 3],
    },
    /// A buffer copy (`min` of both lengths).
    Copy {
        src: Subbuffer<[f32]>,
        dst: Subbuffer<[f32]>,
    },
    /// Fills a buffer with a 32-bit pattern.
    Fill { dst: Subbuffer<[u32]>, bits: u32 },
}

/// The open batch and the stream's position.
struct State {
    commands: Vec<Command>,
    /// Host waits on the open batch.
    hosts: Vec<oneshot::Sender<Result<(), KernelError>>>,
    /// The ops that enqueued the first and the last command, for errors.
    first_op: String,
    last_op: String,
    /// When the last command was enqueued.
    last_record: Instant,
    /// The timeline value of the last submitted batch (0: none yet).
    submitted: u64,
    /// The device is being dropped: the flusher submits what is left and exits.
    stopped: bool,
}

/// A device's command stream (see the module docs).
pub(super) struct Stream {
    /// The device's own name (`GPU:i`), for errors the flusher reports.
    name: DeviceName,
    pub(super) queue: Arc<Queue>,
    command_buffers: Arc<StandardCommandBufferAllocator>,
    timeline: Arc<Semaphore>,
    pub(super) waiter: FenceWaiter,
    health: Arc<Health>,
    state: Mutex<State>,
    /// Wakes the flusher: a batch opened, or the stream stopped.
    wake: Condvar,
    linger_ns: AtomicU64,
    submissions: AtomicU64,
}

/// A submitted batch, waited on through its timeline value; owns its command buffer (a
/// wait for an earlier batch's value owns none).
struct Batch {
    timeline: Arc<Semaphore>,
    value: u64,
    _commands: Option<Arc<PrimaryAutoCommandBuffer>>,
}

impl Pending for Batch {
    fn wait(&self, timeout: Duration) -> Result<(), Validated<VkResult>> {
        self.timeline.wait(
            SemaphoreWaitInfo {
                value: self.value,
                ..Default::default()
            },
            Some(timeout),
        )
    }
}

impl Stream {
    /// A stream on `queue`, with its flusher thread.
    pub(super) fn start(
        name: DeviceName,
        device: Arc<vulkano::device::Device>,
        queue: Arc<Queue>,
        timeline: Arc<Semaphore>,
        health: Arc<Health>,
    ) -> std::io::Result<Arc<Stream>> {
        let label = name.device_index.to_string();
        let waiter = FenceWaiter::start(&label, Arc::clone(&health))?;
        let stream = Arc::new(Stream {
            name,
            command_buffers: Arc::new(StandardCommandBufferAllocator::new(
                device.clone(),
                Default::default(),
            )),
            queue,
            timeline,
            waiter,
            health,
            state: Mutex::new(State {
                commands: Vec::new(),
                hosts: Vec::new(),
                first_op: String::new(),
                last_op: String::new(),
                last_record: Instant::now(),
                submitted: 0,
                stopped: false,
            }),
            wake: Condvar::new(),
            linger_ns: AtomicU64::new(DEFAULT_LINGER.as_nanos() as u64),
            submissions: AtomicU64::new(0),
        });
        let flusher = Arc::clone(&stream);
        std::thread::Builder::new()
            .name(format!("magpie-vk-flush-{label}"))
            .spawn(move || flusher.run_flusher())?;
        Ok(stream)
    }

    /// Batches submitted since the device was opened.
    pub(super) fn submissions(&self) -> u64 {
        self.submissions.load(Ordering::Relaxed)
    }

    /// The timeline value the GPU has reached: every batch up to it has run.
    #[cfg(test)]
    pub(super) fn completed_value(&self) -> u64 {
        self.timeline.counter_value().unwrap_or(0)
    }

    /// Sets how long an open batch waits for more commands before the flusher submits it.
    pub(super) fn set_linger(&self, linger: Duration) {
        let ns = u64::try_from(linger.as_nanos()).unwrap_or(u64::MAX);
        self.linger_ns.store(ns, Ordering::Relaxed);
        self.wake.notify_all();
    }

    fn linger(&self) -> Duration {
        Duration::from_nanos(self.linger_ns.load(Ordering::Relaxed))
    }

    /// Appends `commands` of `op` to the open batch; the GPU runs them after everything
    /// enqueued before.
    ///
    /// # Errors
    /// The device's failure, once it failed; a failed flush when the batch was full.
    pub(super) fn enqueue(
        &self,
        op: &str,
        device: &DeviceName,
        commands: Vec<Command>,
    ) -> Result<(), KernelError> {
        self.health.check(op)?;
        if commands.is_empty() {
            return Ok(());
        }
        let mut st = self.state.lock();
        let opened = st.commands.is_empty() && st.hosts.is_empty();
        self.append(&mut st, op, commands);
        if st.commands.len() >= MAX_BATCH_COMMANDS {
            self.flush_locked(&mut st, device)?;
        } else if opened {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Appends `commands` of `op`, submits the open batch, and returns a completion that
    /// resolves once the GPU has run it (and so everything enqueued before).
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue), and a failed flush.
    pub(super) fn enqueue_and_wait(
        &self,
        op: &str,
        device: &DeviceName,
        commands: Vec<Command>,
    ) -> Result<Completion, KernelError> {
        self.health.check(op)?;
        let (done, rx) = oneshot::channel();
        let mut st = self.state.lock();
        self.append(&mut st, op, commands);
        st.hosts.push(done);
        self.flush_locked(&mut st, device)?;
        Ok(Completion::from_receiver(rx))
    }

    /// A completion that resolves once every command enqueued so far has run: submits
    /// the open batch if it holds any, else waits for the last submitted batch (without
    /// a new submission), else is ready at once (also on a failed device: with nothing
    /// pending there is nothing to fail).
    ///
    /// # Errors
    /// The device's failure while work is pending; a failed flush.
    pub(super) fn sync(&self, op: &str, device: &DeviceName) -> Result<Completion, KernelError> {
        let mut st = self.state.lock();
        if !st.commands.is_empty() || !st.hosts.is_empty() {
            self.health.check(op)?;
            let (done, rx) = oneshot::channel();
            st.hosts.push(done);
            self.flush_locked(&mut st, device)?;
            return Ok(Completion::from_receiver(rx));
        }
        let target = st.submitted;
        drop(st);
        if target == 0 || self.timeline.counter_value().is_ok_and(|v| v >= target) {
            return Ok(Completion::ready());
        }
        let (done, rx) = oneshot::channel();
        let batch = Batch {
            timeline: Arc::clone(&self.timeline),
            value: target,
            _commands: None,
        };
        self.waiter
            .watch_all(Box::new(batch), op, device, vec![done]);
        Ok(Completion::from_receiver(rx))
    }

    fn append(&self, st: &mut State, op: &str, commands: Vec<Command>) {
        if st.commands.is_empty() {
            st.first_op.clear();
            st.first_op.push_str(op);
        }
        st.last_op.clear();
        st.last_op.push_str(op);
        st.commands.extend(commands);
        st.last_record = Instant::now();
    }

    /// Submits the open batch (if it holds commands or host waits).
    fn flush_locked(&self, st: &mut State, device: &DeviceName) -> Result<(), KernelError> {
        if st.commands.is_empty() && st.hosts.is_empty() {
            return Ok(());
        }
        let commands = std::mem::take(&mut st.commands);
        let hosts = std::mem::take(&mut st.hosts);
        let label = if commands.len() <= 1 {
            format!("{} ({} command)", st.last_op, commands.len())
        } else {
            format!(
                "a batch of {} commands ({} .. {})",
                commands.len(),
                st.first_op,
                st.last_op
            )
        };
        let value = st.submitted + 1;
        match self.submit(commands, value, st.submitted) {
            Ok(command_buffer) => {
                st.submitted = value;
                self.submissions.fetch_add(1, Ordering::Relaxed);
                let batch = Batch {
                    timeline: Arc::clone(&self.timeline),
                    value,
                    _commands: command_buffer,
                };
                self.waiter
                    .watch_all(Box::new(batch), &label, device, hosts);
                Ok(())
            }
            Err(e) => {
                let why = self.health.fail(format!(
                    "{device} could not submit {label}: {e}; {device} is marked failed"
                ));
                for host in hosts {
                    let _ = host.send(Err(KernelError::Device(why.clone())));
                }
                Err(KernelError::Device(why))
            }
        }
    }

    /// Replays `commands` into a command buffer and submits it as timeline value
    /// `value`, after value `after`. Returns the command buffer, which must live until
    /// the timeline reaches `value`.
    fn submit(
        &self,
        commands: Vec<Command>,
        value: u64,
        after: u64,
    ) -> Result<Option<Arc<PrimaryAutoCommandBuffer>>, Box<dyn std::error::Error>> {
        let command_buffer = if commands.is_empty() {
            None
        } else {
            let mut builder = AutoCommandBufferBuilder::primary(
                self.command_buffers.clone(),
                self.queue.queue_family_index(),
                CommandBufferUsage::OneTimeSubmit,
            )?;
            for command in commands {
                replay(&mut builder, command)?;
            }
            Some(builder.build()?)
        };
        let mut submit = SubmitInfo {
            command_buffers: command_buffer
                .iter()
                .map(|cb| CommandBufferSubmitInfo::new(Arc::clone(cb) as _))
                .collect(),
            signal_semaphores: vec![SemaphoreSubmitInfo {
                value,
                ..SemaphoreSubmitInfo::new(Arc::clone(&self.timeline))
            }],
            ..Default::default()
        };
        if after > 0 {
            submit.wait_semaphores = vec![SemaphoreSubmitInfo {
                value: after,
                stages: PipelineStages::ALL_COMMANDS,
                ..SemaphoreSubmitInfo::new(Arc::clone(&self.timeline))
            }];
        }
        self.queue.with(|mut q| {
            // SAFETY: the command buffer is kept alive by the waiter's job until the
            // timeline reaches `value` (leaked if that never happens), and is submitted
            // once (OneTimeSubmit, built just above). Every resource it uses is owned by
            // it. The timeline semaphore lives in the stream; `value` is above every value
            // signalled or submitted before (submissions happen in order, under the
            // stream's lock), and `after` was submitted earlier on this queue, so the wait
            // can be satisfied. Buffers are synchronised by this module's protocol
            // (barriers within a batch, the timeline between batches), not by vulkano's
            // resource tracking, which raw submissions bypass.
            unsafe { q.submit(&[submit], None) }
        })?;
        Ok(command_buffer)
    }

    /// The flusher thread: submits a batch nobody waits for once it has lingered.
    fn run_flusher(self: Arc<Self>) {
        let mut st = self.state.lock();
        loop {
            let empty = st.commands.is_empty() && st.hosts.is_empty();
            if st.stopped {
                if !empty {
                    let _ = self.flush_locked(&mut st, &self.name);
                }
                return;
            }
            if empty {
                self.wake.wait_for(&mut st, Duration::from_secs(1));
                continue;
            }
            let linger = self.linger();
            let idle = st.last_record.elapsed();
            if idle >= linger {
                // A failure marks the device failed; later work reports it.
                let _ = self.flush_locked(&mut st, &self.name);
            } else {
                self.wake.wait_for(&mut st, linger - idle);
            }
        }
    }

    /// Stops the flusher once it has submitted what is left.
    pub(super) fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }
}

/// Records one command.
fn replay(
    builder: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
    command: Command,
) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Dispatch {
            pipeline,
            set,
            params,
            groups,
        } => {
            let layout = pipeline.layout().clone();
            builder.bind_pipeline_compute(pipeline)?;
            builder.bind_descriptor_sets(PipelineBindPoint::Compute, layout.clone(), 0, set)?;
            builder.push_constants(layout, 0, params)?;
            // SAFETY: every shader bounds its accesses by the element counts in `params`,
            // which the kernels derive from the bound buffers' lengths; the pipeline, its
            // descriptor set and push constants are bound just above.
            unsafe { builder.dispatch(groups) }?;
        }
        Command::Copy { src, dst } => {
            builder.copy_buffer(CopyBufferInfo::buffers(src, dst))?;
        }
        Command::Fill { dst, bits } => {
            builder.fill_buffer(dst, bits)?;
        }
    }
    Ok(())
}
