//! One step of a plan: the tensor slots, the scheduler body that runs kernels, the
//! optional per-node timeline and memory accounting.
//!
//! ## Slots
//! Each output a step needs has a slot ([`slot`](super::slot)): the producer stores the
//! tensor before its task finishes, uses clone it, the last use takes it — without a
//! lock (the protocol is in that module).
//!
//! ## Gated nodes
//! A node that needs resource-pool slots or must reserve memory under a budget runs in
//! a future: it waits for its slots (in pool order) and its memory without holding a
//! worker, then runs its kernel.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use smallvec::SmallVec;

use super::error::SessionError;
use super::memory::{DeviceMemoryStats, MemoryTracker};
use super::plan::{ExecPlan, PlanNode};
use super::resources::acquire;
use super::short_list::ShortList;
use super::slot::{Loan, Slot};
use crate::kernel::{
    AsyncKernelContext, BoxedKernel, Kernel, KernelContext, KernelError, Lent, OutputList,
};
use crate::resource::ResourceMgr;
use crate::scheduler::{DagBody, TaskContext, TaskOutcome};
use crate::step_id::StepId;
use crate::tensor::{StepMemory, StepMemoryLimit, Tensor};

/// What one node did in a traced step.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStats {
    /// Node name.
    pub node: String,
    /// Op name.
    pub op: String,
    /// Full name of the device it ran on.
    pub device: String,
    /// The scheduler worker that started it; the pool's `num_workers` for the thread that
    /// called `Session::run`, which runs its own step's nodes while it waits.
    pub worker: usize,
    /// When its kernel started, from the start of the step (after any wait for a pool
    /// slot or memory).
    pub start: Duration,
    /// When it finished, from the start of the step.
    pub end: Duration,
    /// Bytes of the tensors it produced.
    pub output_bytes: usize,
}

/// Tensors whose memory a task releases once its kernel has finished: (device, bytes).
type Releases = ShortList<(usize, u64), 2>;

/// The mutable state of one step.
pub(crate) struct StepState {
    slots: Box<[Slot]>,
    step_id: StepId,
    resources: Arc<ResourceMgr>,
    started: Instant,
    trace: Option<Mutex<Vec<NodeStats>>>,
    memory: Option<MemoryTracker>,
    /// The step's memory limit and account, when it has one: its kernels' calls run in
    /// its scope (`tensor::StepMemory`'s protocol).
    step_memory: Option<Arc<StepMemory>>,
    /// Input bytes kernels read from tensors produced on a device of another NUMA node.
    remote_numa_bytes: AtomicU64,
    /// Whether the step is plain: not traced, no memory tracked or limited, and its plan
    /// on one NUMA node. Its synchronous nodes then run without asking, per node, about
    /// what the step does not do ([`run_sync`]'s `PLAIN`).
    plain: bool,
}

impl StepState {
    pub(crate) fn new(
        plan: &ExecPlan,
        step_id: StepId,
        resources: Arc<ResourceMgr>,
        feeds: Vec<Tensor>,
        trace: bool,
        track_memory: bool,
        step_memory: Option<StepMemoryLimit>,
    ) -> StepState {
        let needs_memory = track_memory || plan.budgets.iter().any(Option::is_some);
        // Pinned slots are not counted, so their bytes would never be released: a step
        // that tracks memory counts every slot.
        let uses = if needs_memory {
            &plan.slot_uses
        } else {
            &plan.slot_uses_pinned
        };
        let slots = plan.slot_pool.take(uses);
        for (tensor, slot) in feeds.into_iter().zip(&plan.feed_slots) {
            // SAFETY: the step has not started: nothing else touches its slots, and a feed
            // slot has no other producer.
            unsafe { slots[*slot as usize].put(tensor) };
        }
        StepState {
            slots,
            step_id,
            resources,
            started: Instant::now(),
            plain: !trace && !needs_memory && step_memory.is_none() && !plan.spans_numa_nodes,
            trace: trace.then(|| Mutex::new(Vec::with_capacity(plan.nodes.len()))),
            memory: needs_memory.then(|| MemoryTracker::new(plan)),
            step_memory: step_memory.map(|limit| Arc::new(StepMemory::new(limit))),
            remote_numa_bytes: AtomicU64::new(0),
        }
    }

    /// The step's slots, for its plan to reuse.
    pub(crate) fn into_slots(self) -> Box<[Slot]> {
        self.slots
    }

    /// Input bytes kernels of this step read from a tensor produced on a device of
    /// another NUMA node (both devices' [`Device::numa_node`](crate::device::Device)
    /// known and different).
    pub(crate) fn remote_numa_bytes(&self) -> u64 {
        self.remote_numa_bytes.load(Ordering::Relaxed)
    }

    /// Uses the tensor in `slot` once, after the run: the last use takes it, others
    /// clone it.
    pub(crate) fn read(&self, slot: u32) -> Option<Tensor> {
        // SAFETY: called by the thread that ran the step, after its completion latch (every
        // producer finished), for a fetch counted among the slot's uses.
        unsafe { self.slots[slot as usize].take_use() }.0
    }

    /// A task's use of input `slot`; notes the memory to release when the last use takes
    /// the tensor.
    fn read_input(&self, plan: &ExecPlan, slot: u32, releases: &mut Releases) -> Option<Tensor> {
        // SAFETY: the caller is a task the scheduler started after the slot's producer
        // finished, and the plan counted this input among the slot's uses.
        let (t, last) = unsafe { self.slots[slot as usize].take_use() };
        if let (true, Some(_), Some(t), Some(d)) = (last, &self.memory, &t, plan.slot_device(slot))
        {
            releases.push((d, t.size_in_bytes() as u64));
        }
        t
    }

    /// Stores a task's outputs in their slots (draining `outputs`), checked against the
    /// plan's count and dtypes, and settles its memory: returns the bytes stored when the
    /// step is traced or tracks memory (0 otherwise: nobody reads them). `PLAIN`: the
    /// step is plain (`StepState::plain`), so nothing is measured or settled.
    #[inline(always)]
    fn store<const PLAIN: bool>(
        &self,
        plan: &ExecPlan,
        task: usize,
        outputs: &mut OutputList,
        releases: &mut Releases,
    ) -> Result<usize, SessionError> {
        let pn = &plan.nodes[task];
        let expected = pn.output_dtypes.as_slice();
        let fits = match (outputs.single(), expected) {
            (Some(t), [want]) => t.dtype() == *want,
            _ => {
                outputs.len() == expected.len()
                    && outputs
                        .iter()
                        .zip(expected)
                        .all(|(t, want)| t.dtype() == *want)
            }
        };
        if !fits {
            return Err(bad_outputs(plan, task, outputs));
        }
        let measure = !PLAIN && (self.trace.is_some() || self.memory.is_some());
        let (mut bytes, mut stored) = (0, 0);
        let (first, rest) = outputs.parts();
        if first.is_some() {
            self.put_output(pn, 0, first, measure, &mut bytes, &mut stored);
            if !rest.is_empty() {
                for (i, t) in std::mem::take(rest).into_iter().enumerate() {
                    let mut t = Some(t);
                    self.put_output(pn, i + 1, &mut t, measure, &mut bytes, &mut stored);
                }
            }
        }
        if let (false, Some(m)) = (PLAIN, &self.memory) {
            // A reservation becomes the actual bytes in one step, never counted twice.
            let reserved = pn.reserve_bytes().unwrap_or(0);
            if stored >= reserved {
                m.add(pn.device(), stored - reserved);
            } else {
                m.release(pn.device(), reserved - stored);
            }
            for (d, b) in releases.iter() {
                m.release(d, b);
            }
            releases.clear();
        }
        Ok(bytes)
    }

    /// Moves output `i` of `pn` from `t` into its slot, adding its size to `bytes` (when
    /// `measure`) and to `stored` (when the slot kept it).
    #[inline(always)]
    fn put_output(
        &self,
        pn: &PlanNode,
        i: usize,
        t: &mut Option<Tensor>,
        measure: bool,
        bytes: &mut usize,
        stored: &mut u64,
    ) {
        let size = match (measure, &*t) {
            (true, Some(t)) => t.size_in_bytes(),
            _ => 0,
        };
        *bytes += size;
        // SAFETY: this task is the slot's producer, and its consumers start only after it
        // finishes.
        if unsafe { self.slots[pn.first_output_slot as usize + i].put_from(t) } {
            *stored += size as u64;
        }
    }

    /// The time a node starts, when the step is traced (reading the clock costs ~20 ns
    /// per node, so untraced steps skip it).
    #[inline]
    fn clock(&self) -> Option<Instant> {
        self.trace.as_ref().map(|_| Instant::now())
    }

    #[inline]
    fn record(
        &self,
        plan: &ExecPlan,
        task: usize,
        worker: usize,
        start: Option<Instant>,
        bytes: usize,
    ) {
        if self.trace.is_some() {
            self.record_traced(plan, task, worker, start, bytes);
        }
    }

    /// [`record`](Self::record) for a traced step.
    #[inline(never)]
    fn record_traced(
        &self,
        plan: &ExecPlan,
        task: usize,
        worker: usize,
        start: Option<Instant>,
        bytes: usize,
    ) {
        if let (Some(trace), Some(start)) = (&self.trace, start) {
            let pn = &plan.nodes[task];
            let stats = NodeStats {
                node: pn.node.name.clone(),
                op: pn.node.op.to_string(),
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

    /// Per-device memory peaks (empty when memory was not tracked).
    pub(crate) fn memory_stats(&self, plan: &ExecPlan) -> Vec<DeviceMemoryStats> {
        self.memory
            .as_ref()
            .map(|m| m.stats(plan))
            .unwrap_or_default()
    }

    #[inline]
    fn finished(&self, plan: &ExecPlan, task: u32) {
        if let Some(m) = &self.memory {
            m.task_finished(plan, task);
        }
    }
}

/// The name, op and device of plan node `task`, as its errors name them.
#[cold]
fn node_identity(plan: &ExecPlan, task: usize) -> (String, String, String) {
    let node = &plan.nodes[task].node;
    (
        node.name.clone(),
        node.op.to_string(),
        plan.device_name(task),
    )
}

/// A kernel's outputs that do not match its node's (count or dtypes).
#[cold]
#[inline(never)]
fn bad_outputs(plan: &ExecPlan, task: usize, outputs: &OutputList) -> SessionError {
    let expected = plan.nodes[task].output_dtypes.as_slice();
    let wrong_dtype = outputs
        .iter()
        .zip(expected)
        .enumerate()
        .find(|(_, (t, want))| t.dtype() != **want);
    let detail = match wrong_dtype {
        Some((i, (t, want))) if outputs.len() == expected.len() => {
            format!("output {i} of dtype {}, expected {want}", t.dtype())
        }
        _ => format!("{} outputs, expected {}", outputs.len(), expected.len()),
    };
    let (node, op, device) = node_identity(plan, task);
    SessionError::BadKernelOutput {
        node,
        op,
        device,
        detail,
    }
}

#[cold]
fn kernel_error(plan: &ExecPlan, task: usize, source: KernelError) -> SessionError {
    let (node, op, device) = node_identity(plan, task);
    SessionError::Kernel {
        node,
        op,
        device,
        source: Box::new(source),
    }
}

/// The scheduler body of one step: runs the kernel of plan node `task`.
pub(crate) struct StepBody {
    pub(crate) plan: Arc<ExecPlan>,
    pub(crate) state: Arc<StepState>,
}

/// Gathers a task's inputs from their slots.
fn inputs(
    plan: &ExecPlan,
    state: &StepState,
    task: usize,
    releases: &mut Releases,
) -> Result<SmallVec<[Tensor; 2]>, SessionError> {
    let pn = &plan.nodes[task];
    let mut inputs = SmallVec::with_capacity(pn.input_slots.len());
    for s in &pn.input_slots {
        match state.read_input(plan, *s, releases) {
            Some(t) => {
                if plan.spans_numa_nodes {
                    note_numa(plan, state, task, *s, &t);
                }
                inputs.push(t)
            }
            None => {
                return Err(kernel_error(
                    plan,
                    task,
                    KernelError::Internal(format!("input slot {s} was empty")),
                ))
            }
        }
    }
    Ok(inputs)
}

/// Counts the bytes of input `t` (from `slot`) of plan node `task` when the slot's
/// producer ran on a device of another NUMA node: only a cross-device input can cross
/// nodes; both nodes must be known, and the plan must span more than one (decided when
/// it was built: callers skip the call for a plan that does not).
fn note_numa(plan: &ExecPlan, state: &StepState, task: usize, slot: u32, t: &Tensor) {
    if let (true, Some(producer)) = (plan.spans_numa_nodes, plan.slot_device(slot)) {
        let device = plan.nodes[task].device();
        if producer != device {
            let from = plan.devices[producer].numa_node();
            let to = plan.devices[device].numa_node();
            if from.is_some() && to.is_some() && from != to {
                let bytes = t.size_in_bytes() as u64;
                state.remote_numa_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
        }
    }
}

/// Slots whose loans a synchronous kernel's call holds (see [`Slot::lend`]).
type Loans = ShortList<u32, 2>;

/// Lends a synchronous task's inputs to its context: the last use of a slot takes its
/// tensor, the others borrow it for the call (ended by `run_sync` after the call), so
/// that a tensor read by many nodes is not cloned — and its reference count not touched —
/// once per use.
#[inline(always)]
fn lend_inputs<'s, const PLAIN: bool>(
    plan: &ExecPlan,
    state: &'s StepState,
    task: usize,
    ctx: &mut KernelContext<'s>,
    releases: &mut Releases,
    loans: &mut Loans,
) -> Result<(), SessionError> {
    let pn = &plan.nodes[task];
    for &s in &pn.input_slots {
        // Each arm hands its input to the context at once: a tensor moves out of its slot
        // and into the context, and nowhere in between.
        // SAFETY: the caller is a task the scheduler started after the slot's producer
        // finished, the plan counted this input among the slot's uses, and `run_sync`
        // ends every counted loan after the kernel's call, once the context has dropped
        // its inputs and with them the borrows.
        match unsafe { state.slots[s as usize].lend() } {
            // The last use: the kernel gets the slot's place, and the context empties it
            // when it drops its inputs (`finish`).
            Loan::Last(place @ Some(_)) => {
                if let Some(t) = place.as_ref() {
                    if !PLAIN && state.memory.is_some() {
                        if let Some(d) = plan.slot_device(s) {
                            releases.push((d, t.size_in_bytes() as u64));
                        }
                    }
                    if !PLAIN && plan.spans_numa_nodes {
                        note_numa(plan, state, task, s, t);
                    }
                }
                ctx.push_input(Lent::Slot(place));
            }
            Loan::Counted(t) => {
                loans.push(s);
                if !PLAIN && plan.spans_numa_nodes {
                    note_numa(plan, state, task, s, t);
                }
                ctx.push_input(Lent::Borrowed(t));
            }
            Loan::Pinned(t) => {
                if !PLAIN && plan.spans_numa_nodes {
                    note_numa(plan, state, task, s, t);
                }
                ctx.push_input(Lent::Borrowed(t));
            }
            empty @ (Loan::Last(None) | Loan::PinnedEmpty | Loan::Empty) => {
                if matches!(empty, Loan::Empty) {
                    loans.push(s);
                }
                return Err(kernel_error(
                    plan,
                    task,
                    KernelError::Internal(format!("input slot {s} was empty")),
                ));
            }
        }
    }
    Ok(())
}

/// Runs a synchronous kernel to completion and stores its outputs. The context is built
/// once, in place, and the outputs are stored from it by reference: nothing the size of
/// a context moves on this path, which runs once per node of every step.
///
/// `PLAIN`: the step is plain ([`StepState`]'s `plain`): the per-node questions about
/// tracing, memory and NUMA nodes are answered once, at compile time.
fn run_sync<const PLAIN: bool>(
    plan: &ExecPlan,
    state: &StepState,
    task: usize,
    worker: usize,
) -> Result<(), SessionError> {
    let pn = &plan.nodes[task];
    let BoxedKernel::Sync(k) = &pn.kernel else {
        unreachable!("run_sync is called for synchronous kernels only")
    };
    let start = if PLAIN { None } else { state.clock() };
    let mut releases = Releases::new();
    let mut loans = Loans::new();
    // Not dropped when nothing is left in it: its drop glue would check every inline
    // place of a context that `finish` and `store` emptied, and moving it into a
    // consuming method would copy it (`KernelContext::is_spent`).
    let mut ctx = ManuallyDrop::new(KernelContext::for_step(
        &pn.node,
        state.step_id,
        &state.resources,
    ));
    let result =
        call_and_store::<PLAIN>(plan, state, task, &**k, &mut ctx, &mut releases, &mut loans);
    if !ctx.is_spent() {
        // Outputs of a call that failed, or a list that spilled: dropped as usual.
        drop(ManuallyDrop::into_inner(ctx));
    }
    let bytes = result?;
    if !PLAIN {
        state.record(plan, task, worker, start, bytes);
        state.finished(plan, task as u32);
    }
    Ok(())
}

/// [`run_sync`] from lending the inputs to storing the outputs: returns the bytes stored
/// (as [`StepState::store`]).
#[inline(always)]
fn call_and_store<'s, const PLAIN: bool>(
    plan: &ExecPlan,
    state: &'s StepState,
    task: usize,
    k: &dyn Kernel,
    ctx: &mut KernelContext<'s>,
    releases: &mut Releases,
    loans: &mut Loans,
) -> Result<usize, SessionError> {
    let computed = match lend_inputs::<PLAIN>(plan, state, task, ctx, releases, loans) {
        Ok(()) => match (PLAIN, &state.step_memory) {
            (false, Some(m)) => m.scope(|| k.compute(ctx)),
            _ => k.compute(ctx),
        }
        .map_err(|e| kernel_error(plan, task, e)),
        Err(e) => Err(e),
    };
    // The context drops its inputs, and with them every borrow of a slot: end the loans.
    let outputs = ctx.finish();
    // Asked first: most nodes hold no counted loan, and an empty list's iterator still
    // costs its set-up.
    if !loans.is_empty() {
        for s in loans.iter() {
            // SAFETY: `lend_inputs` took a counted loan of `s`, no longer used.
            if let Some(t) = unsafe { state.slots[s as usize].end_loan() } {
                if !PLAIN && state.memory.is_some() {
                    if let Some(d) = plan.slot_device(s) {
                        releases.push((d, t.size_in_bytes() as u64));
                    }
                }
            }
        }
    }
    computed?;
    state.store::<PLAIN>(plan, task, outputs, releases)
}

/// Starts an asynchronous kernel; the future stores its outputs.
fn run_async(
    plan: &Arc<ExecPlan>,
    state: &Arc<StepState>,
    task: usize,
    worker: usize,
) -> Result<BoxFuture<'static, Result<(), SessionError>>, SessionError> {
    let pn = &plan.nodes[task];
    let BoxedKernel::Async(k) = &pn.kernel else {
        unreachable!("run_async is called for asynchronous kernels only")
    };
    let start = state.clock();
    let mut releases = Releases::new();
    let inputs = inputs(plan, state, task, &mut releases)?;
    let ctx = AsyncKernelContext::new(Arc::clone(&pn.node), inputs, state.step_id)
        .with_resources(Arc::clone(&state.resources));
    let fut = match &state.step_memory {
        None => k.compute_async(ctx),
        Some(m) => in_step_scope(Arc::clone(m), m.scope(|| k.compute_async(ctx))),
    };
    let (plan, state) = (Arc::clone(plan), Arc::clone(state));
    Ok(fut
        .map(move |res| {
            let mut outputs: OutputList = res
                .map_err(|e| kernel_error(&plan, task, e))?
                .into_iter()
                .collect();
            let mut releases = releases;
            let bytes = state.store::<false>(&plan, task, &mut outputs, &mut releases)?;
            state.record(&plan, task, worker, start, bytes);
            state.finished(&plan, task as u32);
            Ok(())
        })
        .boxed())
}

/// `fut` polled in `step`'s scope: what it allocates is charged to the step.
fn in_step_scope<T: Send + 'static>(
    step: Arc<StepMemory>,
    mut fut: BoxFuture<'static, T>,
) -> BoxFuture<'static, T> {
    std::future::poll_fn(move |cx| step.scope(|| fut.poll_unpin(cx))).boxed()
}

/// Waits for the node's pool slots and memory, then runs its kernel.
async fn run_gated(
    plan: Arc<ExecPlan>,
    state: Arc<StepState>,
    task: usize,
    worker: usize,
) -> Result<(), SessionError> {
    let pn = &plan.nodes[task];
    let _permits = acquire(pn.pools()).await;
    if let (Some(bytes), Some(m)) = (pn.reserve_bytes(), &state.memory) {
        m.reserve(&plan, task as u32, pn.device(), bytes).await?;
    }
    match &pn.kernel {
        BoxedKernel::Sync(_) => run_sync::<false>(&plan, &state, task, worker),
        BoxedKernel::Async(_) => run_async(&plan, &state, task, worker)?.await,
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
        if let Some(m) = &self.state.memory {
            m.task_started();
        }
        if pn.is_gated() {
            let fut = run_gated(
                Arc::clone(&self.plan),
                Arc::clone(&self.state),
                t,
                cx.worker_index(),
            );
            return Ok(TaskOutcome::Pending(fut.boxed()));
        }
        match &pn.kernel {
            BoxedKernel::Sync(_) => {
                if self.state.plain {
                    run_sync::<true>(&self.plan, &self.state, t, cx.worker_index())?;
                } else {
                    run_sync::<false>(&self.plan, &self.state, t, cx.worker_index())?;
                }
                Ok(TaskOutcome::Done)
            }
            BoxedKernel::Async(_) => Ok(TaskOutcome::Pending(run_async(
                &self.plan,
                &self.state,
                t,
                cx.worker_index(),
            )?)),
        }
    }
}
