//! One step of a plan: the tensor slots, the scheduler body that runs kernels, and the
//! optional per-node timeline.
//!
//! ## Slot protocol
//! Each slot holds at most one tensor and a count of the uses still to come (consumer
//! inputs plus fetches, from the plan). The producer stores the tensor before its task
//! finishes; the scheduler releases a consumer only after that (its pending-count
//! decrement is a release, the consumer's start an acquire), so a consumer always finds
//! the tensor. Each use decrements the count under the slot's lock: the last use takes
//! the tensor out (so its memory is freed as soon as possible, and a kernel holding the
//! only reference may reuse the buffer), earlier uses clone the `Arc`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use parking_lot::Mutex;
use smallvec::SmallVec;

use super::error::SessionError;
use super::plan::ExecPlan;
use crate::kernel::{AsyncKernelContext, BoxedKernel, KernelContext, KernelError, Outputs};
use crate::scheduler::{DagBody, TaskContext, TaskOutcome};
use crate::tensor::Tensor;

/// What one node did in a traced step.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStats {
    /// Node name.
    pub node: String,
    /// Op name.
    pub op: String,
    /// Full name of the device it ran on.
    pub device: String,
    /// The scheduler worker that started it.
    pub worker: usize,
    /// When it started, from the start of the step.
    pub start: Duration,
    /// When it finished, from the start of the step.
    pub end: Duration,
    /// Bytes of the tensors it produced.
    pub output_bytes: usize,
}

struct Slot {
    value: Mutex<(Option<Tensor>, u32)>,
}

/// The mutable state of one step.
pub(crate) struct StepState {
    slots: Box<[Slot]>,
    step_id: u64,
    started: Instant,
    trace: Option<Mutex<Vec<NodeStats>>>,
}

impl StepState {
    pub(crate) fn new(plan: &ExecPlan, step_id: u64, feeds: Vec<Tensor>, trace: bool) -> StepState {
        let slots: Box<[Slot]> = plan
            .slot_uses
            .iter()
            .map(|uses| Slot {
                value: Mutex::new((None, *uses)),
            })
            .collect();
        for (tensor, slot) in feeds.into_iter().zip(&plan.feed_slots) {
            slots[*slot as usize].value.lock().0 = Some(tensor);
        }
        StepState {
            slots,
            step_id,
            started: Instant::now(),
            trace: trace.then(|| Mutex::new(Vec::with_capacity(plan.nodes.len()))),
        }
    }

    /// Uses the tensor in `slot` once: the last use takes it, others clone it.
    pub(crate) fn read(&self, slot: u32) -> Option<Tensor> {
        let mut g = self.slots[slot as usize].value.lock();
        g.1 = g.1.saturating_sub(1);
        if g.1 == 0 {
            g.0.take()
        } else {
            g.0.clone()
        }
    }

    fn store(&self, plan: &ExecPlan, task: usize, outputs: Outputs) -> Result<usize, SessionError> {
        let pn = &plan.nodes[task];
        let node = &pn.node;
        let bad = |detail: String| SessionError::BadKernelOutput {
            node: node.name.clone(),
            op: node.op.clone(),
            device: plan.device_name(task),
            detail,
        };
        if outputs.len() != node.num_outputs() {
            return Err(bad(format!(
                "{} outputs, expected {}",
                outputs.len(),
                node.num_outputs()
            )));
        }
        let mut bytes = 0;
        for (i, t) in outputs.into_iter().enumerate() {
            if t.dtype() != node.output_dtypes[i] {
                return Err(bad(format!(
                    "output {i} of dtype {}, expected {}",
                    t.dtype(),
                    node.output_dtypes[i]
                )));
            }
            bytes += t.size_in_bytes();
            let mut g = self.slots[pn.first_output_slot as usize + i].value.lock();
            if g.1 > 0 {
                g.0 = Some(t);
            }
        }
        Ok(bytes)
    }

    fn record(&self, plan: &ExecPlan, task: usize, worker: usize, start: Instant, bytes: usize) {
        if let Some(trace) = &self.trace {
            let pn = &plan.nodes[task];
            let stats = NodeStats {
                node: pn.node.name.clone(),
                op: pn.node.op.clone(),
                device: plan.device_name(task),
                worker,
                start: start.duration_since(self.started),
                end: self.started.elapsed(),
                output_bytes: bytes,
            };
            trace.lock().push(stats);
        }
    }

    /// The trace, sorted by start time (empty when the step was not traced).
    pub(crate) fn take_trace(&self) -> Vec<NodeStats> {
        let mut v = self
            .trace
            .as_ref()
            .map(|t| std::mem::take(&mut *t.lock()))
            .unwrap_or_default();
        v.sort_by_key(|s| (s.start, s.end));
        v
    }
}

fn kernel_error(plan: &ExecPlan, task: usize, source: KernelError) -> SessionError {
    let node = &plan.nodes[task].node;
    SessionError::Kernel {
        node: node.name.clone(),
        op: node.op.clone(),
        device: plan.device_name(task),
        source: Box::new(source),
    }
}

/// The scheduler body of one step: runs the kernel of plan node `task`.
pub(crate) struct StepBody {
    pub(crate) plan: Arc<ExecPlan>,
    pub(crate) state: Arc<StepState>,
}

impl StepBody {
    fn inputs(&self, task: usize) -> Result<SmallVec<[Tensor; 2]>, SessionError> {
        let pn = &self.plan.nodes[task];
        let mut inputs = SmallVec::with_capacity(pn.input_slots.len());
        for s in &pn.input_slots {
            match self.state.read(*s) {
                Some(t) => inputs.push(t),
                None => {
                    return Err(kernel_error(
                        &self.plan,
                        task,
                        KernelError::Internal(format!("input slot {s} was empty")),
                    ))
                }
            }
        }
        Ok(inputs)
    }
}

impl DagBody for StepBody {
    type Error = SessionError;

    fn run(
        &self,
        task: u32,
        cx: &TaskContext<'_>,
    ) -> Result<TaskOutcome<SessionError>, SessionError> {
        let t = task as usize;
        let pn = &self.plan.nodes[t];
        let start = Instant::now();
        let inputs = self.inputs(t)?;
        match &pn.kernel {
            BoxedKernel::Sync(k) => {
                let mut ctx = KernelContext::new(&pn.node, inputs, self.state.step_id);
                k.compute(&mut ctx)
                    .map_err(|e| kernel_error(&self.plan, t, e))?;
                let bytes = self.state.store(&self.plan, t, ctx.into_outputs())?;
                self.state
                    .record(&self.plan, t, cx.worker_index(), start, bytes);
                Ok(TaskOutcome::Done)
            }
            BoxedKernel::Async(k) => {
                let ctx = AsyncKernelContext {
                    node: Arc::clone(&pn.node),
                    inputs,
                    step_id: self.state.step_id,
                };
                let fut = k.compute_async(ctx);
                let plan = Arc::clone(&self.plan);
                let state = Arc::clone(&self.state);
                let worker = cx.worker_index();
                Ok(TaskOutcome::Pending(
                    fut.map(move |res| {
                        let outputs = res.map_err(|e| kernel_error(&plan, t, e))?;
                        let bytes = state.store(&plan, t, outputs)?;
                        state.record(&plan, t, worker, start, bytes);
                        Ok(())
                    })
                    .boxed(),
                ))
            }
        }
    }
}
