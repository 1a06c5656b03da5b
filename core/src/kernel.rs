//! The [`Kernel`] and [`AsyncKernel`] traits: how one node computes on one device.
//!
//! A kernel is built once per node (and per executor plan) by a factory from the
//! [registry](crate::registry), so it can precompute from the node's attributes. It is
//! then called once per step, possibly from several steps at once: kernels are `Sync`
//! and keep per-step state in their context, not in `self`.
//!
//! Synchronous kernels compute on the scheduler worker that calls them and must not
//! block on I/O. Asynchronous kernels return a future at once; the scheduler polls it,
//! and a pending future holds no worker thread — its waker puts the node back in the
//! queue when it can make progress. [`async_support`] has what such a kernel needs
//! (futures, a one-shot channel, a runtime-free timer).

pub mod async_support;
mod lists;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use smallvec::SmallVec;

use crate::device::Device;
use crate::graph::{Attrs, Node};
use crate::resource::ResourceMgr;
use crate::step_id::StepId;
use crate::tensor::{DType, Tensor};

use lists::InputList;
pub(crate) use lists::{Lent, OutputList};

/// Why a kernel failed. The session adds the node, op and device.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The inputs or attributes are unacceptable (incompatible shapes, bad axis, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No implementation for this op and dtype on this device.
    #[error("{op} has no kernel for dtype {dtype} on {device_type}")]
    Unimplemented {
        /// Op name.
        op: String,
        /// The dtype asked for.
        dtype: DType,
        /// Device type.
        device_type: String,
    },
    /// The device ran out of memory.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The step was cancelled while the kernel ran.
    #[error("cancelled")]
    Cancelled,
    /// The device failed.
    #[error("device failure: {0}")]
    Device(String),
    /// A kernel was built for a device of another type than it works with (see
    /// [`KernelInit::device`]): a kernel registered for the wrong device type or backend.
    #[error(
        "{op} on {device}: the kernel needs a device of type {expected}, but the device is \
         a {actual}"
    )]
    WrongDevice {
        /// Op name.
        op: String,
        /// The device's name.
        device: String,
        /// The Rust type the kernel asked for.
        expected: &'static str,
        /// The Rust type of the device it was given.
        actual: &'static str,
    },
    /// A bug or unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
    /// The system is not in the state the op needs (a variable read before its first
    /// assignment, say); the message names what is missing.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
}

impl KernelError {
    /// The error's kind: `InvalidArgument`, `Unimplemented`, `ResourceExhausted`,
    /// `Cancelled`, `FailedPrecondition` as named; a kernel on the wrong device is
    /// `FailedPrecondition`; a device
    /// failure or a bug is `Internal`.
    pub fn code(&self) -> crate::error::Code {
        use crate::error::Code;
        match self {
            KernelError::InvalidArgument(_) => Code::InvalidArgument,
            KernelError::Unimplemented { .. } => Code::Unimplemented,
            KernelError::ResourceExhausted(_) => Code::ResourceExhausted,
            KernelError::Cancelled => Code::Cancelled,
            KernelError::WrongDevice { .. } | KernelError::FailedPrecondition(_) => {
                Code::FailedPrecondition
            }
            KernelError::Device(_) | KernelError::Internal(_) => Code::Internal,
        }
    }
}

impl From<crate::tensor::TensorError> for KernelError {
    fn from(e: crate::tensor::TensorError) -> Self {
        match e {
            crate::tensor::TensorError::Alloc(e) => e.into(),
            crate::tensor::TensorError::Shape(e) => e.into(),
            e => KernelError::InvalidArgument(e.to_string()),
        }
    }
}

impl From<crate::tensor::AllocError> for KernelError {
    /// Resource exhausted, naming the device and the bytes (the session adds the node).
    fn from(e: crate::tensor::AllocError) -> Self {
        KernelError::ResourceExhausted(e.to_string())
    }
}

impl From<crate::tensor::ShapeError> for KernelError {
    /// Resource exhausted for elements that no memory could hold; invalid argument for
    /// shapes whose element count overflows or that do not broadcast.
    fn from(e: crate::tensor::ShapeError) -> Self {
        match e {
            crate::tensor::ShapeError::TooManyBytes { .. } => {
                KernelError::ResourceExhausted(e.to_string())
            }
            e => KernelError::InvalidArgument(e.to_string()),
        }
    }
}

impl From<crate::graph::AttrError> for KernelError {
    fn from(e: crate::graph::AttrError) -> Self {
        KernelError::InvalidArgument(e.to_string())
    }
}

/// The outputs of one kernel call; most ops have one.
pub type Outputs = SmallVec<[Tensor; 1]>;

/// What a synchronous kernel sees in one call: its node, its inputs, and where to put
/// its outputs.
pub struct KernelContext<'a> {
    node: &'a Node,
    inputs: InputList<'a>,
    outputs: OutputList,
    step_id: StepId,
    resources: Option<&'a Arc<ResourceMgr>>,
}

impl fmt::Debug for KernelContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelContext")
            .field("node", &self.node.name)
            .field("inputs", &self.inputs.len())
            .field("step_id", &self.step_id)
            .finish()
    }
}

impl<'a> KernelContext<'a> {
    /// A context over `inputs` for `node`. The executor makes these; the testkit and a
    /// backend's unit tests may too.
    pub fn new(node: &'a Node, inputs: SmallVec<[Tensor; 2]>, step_id: impl Into<StepId>) -> Self {
        KernelContext::with_inputs(node, inputs.into_iter().map(Input::Owned), step_id)
    }

    /// A context over inputs of which some are borrowed: the executor lends a kernel the
    /// tensor that other nodes of the step still use, rather than a clone (which would
    /// cost two atomic reference-count updates per input and call).
    pub(crate) fn with_inputs(
        node: &'a Node,
        inputs: impl IntoIterator<Item = Input<'a>>,
        step_id: impl Into<StepId>,
    ) -> Self {
        KernelContext {
            node,
            inputs: inputs.into_iter().collect(),
            outputs: OutputList::new(),
            step_id: step_id.into(),
            resources: None,
        }
    }

    /// The executor's context for one call: no inputs yet (it lends them in place with
    /// [`push_input`](Self::push_input), so the context is built once and never moved).
    #[inline]
    pub(crate) fn for_step(
        node: &'a Node,
        step_id: StepId,
        resources: &'a Arc<ResourceMgr>,
    ) -> Self {
        KernelContext {
            node,
            inputs: InputList::new(),
            outputs: OutputList::new(),
            step_id,
            resources: Some(resources),
        }
    }

    /// Appends the next input (the executor's, see [`for_step`](Self::for_step)).
    #[inline(always)]
    pub(crate) fn push_input(&mut self, input: Lent<'a>) {
        self.inputs.push_lent(input);
    }

    /// Drops the inputs, ending every borrow of a lent one, and gives the outputs pushed
    /// so far: what the executor does after the kernel's call, before it ends the loans.
    #[inline]
    pub(crate) fn finish(&mut self) -> &mut OutputList {
        self.inputs.clear();
        &mut self.outputs
    }

    /// Whether the context holds nothing to free: no input or output and no spilled list
    /// (`node` and `resources` are borrows, `step_id` is `Copy`). The executor then skips
    /// its drop (it keeps the context in a `ManuallyDrop`), whose glue would check every
    /// inline place again, once per node of every step.
    #[inline]
    pub(crate) fn is_spent(&self) -> bool {
        self.inputs.is_spent() && self.outputs.is_spent()
    }

    /// This context with access to the resource manager of the session (or cluster
    /// task) running the step, where stateful kernels keep variables.
    pub fn with_resources(mut self, resources: &'a Arc<ResourceMgr>) -> Self {
        self.resources = Some(resources);
        self
    }

    /// The resource manager of the session (or cluster task) running the step; `None`
    /// only for contexts made by hand without one.
    pub fn resources(&self) -> Option<&Arc<ResourceMgr>> {
        self.resources
    }

    /// The node being computed.
    #[inline]
    pub fn node(&self) -> &Node {
        self.node
    }

    /// The node's attributes.
    pub fn attrs(&self) -> &Attrs {
        &self.node.attrs
    }

    /// The step this call belongs to.
    pub fn step_id(&self) -> StepId {
        self.step_id
    }

    /// The number of inputs.
    #[inline]
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Input `i`.
    ///
    /// # Panics
    /// If `i` is out of range: the executor always passes as many inputs as the op's
    /// definition validated.
    #[inline]
    pub fn input(&self, i: usize) -> &Tensor {
        match self.inputs.get(i) {
            Input::Owned(t) => t,
            Input::Slot(place) => place.as_ref().unwrap_or_else(|| taken()),
            Input::Borrowed(t) => t,
            Input::Taken => taken(),
        }
    }

    /// Input `i`, mutably: with [`Tensor::as_mut_slice`], a kernel holding the only
    /// reference to an input can write its result into that buffer. An input the
    /// executor lent (other nodes still use the tensor) is cloned into the context first;
    /// [`input_mut_if_owned`](Self::input_mut_if_owned) does not clone.
    pub fn input_mut(&mut self, i: usize) -> &mut Tensor {
        let input = self.inputs.get_mut(i);
        match input {
            Input::Owned(_) | Input::Slot(_) => {}
            Input::Borrowed(t) => *input = Input::Owned(Tensor::clone(t)),
            Input::Taken => *input = Input::Owned(taken().clone()),
        }
        match input {
            Input::Owned(t) => t,
            Input::Slot(place) => place.get_or_insert_with(|| taken().clone()),
            _ => unreachable!("made owned above"),
        }
    }

    /// Input `i`, mutably, when the context holds the tensor itself (its buffer may
    /// still be shared: see [`Tensor::as_mut_slice`]); `None` when the executor lent it
    /// because other nodes of the step still use it, or it was taken. A kernel that
    /// writes its output into an input it holds the only reference to asks this first:
    /// a lent input is never the only reference.
    #[inline]
    pub fn input_mut_if_owned(&mut self, i: usize) -> Option<&mut Tensor> {
        match self.inputs.get_mut(i) {
            Input::Owned(t) => Some(t),
            Input::Slot(place) => place.as_mut(),
            _ => None,
        }
    }

    /// Takes input `i` out of the context (leaving an empty tensor), so a kernel that holds
    /// the only reference can reuse its buffer for an output. A lent input is cloned.
    #[inline(always)]
    pub fn take_input(&mut self, i: usize) -> Tensor {
        match std::mem::replace(self.inputs.get_mut(i), Input::Taken) {
            Input::Owned(t) => t,
            Input::Slot(place) => place.take().unwrap_or_else(|| taken().clone()),
            Input::Borrowed(t) => t.clone(),
            Input::Taken => taken().clone(),
        }
    }

    /// Appends the next output.
    #[inline]
    pub fn push_output(&mut self, t: Tensor) {
        self.outputs.push(t);
    }

    /// The outputs pushed so far (the executor takes them after `compute`).
    pub fn into_outputs(self) -> Outputs {
        self.outputs.into_iter().collect()
    }
}

/// An input of a [`KernelContext`]: the tensor itself, a tensor lent by the executor (a
/// step's slot that other nodes still read), or nothing once a kernel took it.
#[derive(Debug)]
pub(crate) enum Input<'a> {
    /// The context holds this reference to the tensor.
    Owned(Tensor),
    /// The last use of a step's slot, lent in place: the tensor is the context's to
    /// read, write or take, without moving it in and out of the context; `None` only
    /// once taken. The context empties the place when it drops its inputs
    /// ([`finish`](KernelContext::finish)).
    Slot(&'a mut Option<Tensor>),
    /// The executor lends the tensor for the call.
    Borrowed(&'a Tensor),
    /// Taken by [`KernelContext::take_input`].
    Taken,
}

/// What a taken input reads as: one empty tensor for the process, made once.
fn taken() -> &'static Tensor {
    static TAKEN: std::sync::OnceLock<Tensor> = std::sync::OnceLock::new();
    TAKEN.get_or_init(|| Tensor::empty(DType::Bool))
}

/// A synchronous compute kernel: computes one node from its inputs on the scheduler's
/// thread that calls it. A factory (registered in a
/// [`KernelRegistry`](crate::registry::KernelRegistry)) builds one per node of a plan, so
/// a kernel may keep what it computed from the node's attributes; it must be `Sync`
/// because concurrent steps share it. A kernel that waits (a device queue, the network)
/// implements [`AsyncKernel`] instead.
///
/// ```
/// use std::sync::Arc;
/// use magpie_core::graph::Node;
/// use magpie_core::kernel::{Kernel, KernelContext, KernelError};
/// use magpie_core::Tensor;
///
/// /// `y = x * factor`, the factor read from the node's attribute when the kernel is made.
/// struct Scale(f32);
/// impl Kernel for Scale {
///     fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
///         let x = ctx.input(0);
///         let y: Vec<f32> = x.as_slice::<f32>()?.iter().map(|v| v * self.0).collect();
///         let y = Tensor::from_vec(x.shape().clone(), y)?;
///         ctx.push_output(y);
///         Ok(())
///     }
/// }
///
/// // Driving it by hand; `testkit::run_kernel` does this in a line.
/// let node = Node::new("scale", "Scale");
/// let x = Tensor::from_slice(&[1.0f32, 2.0]);
/// let mut ctx = KernelContext::new(&node, vec![x].into(), 0u64);
/// Scale(3.0).compute(&mut ctx)?;
/// assert_eq!(ctx.into_outputs()[0].as_slice::<f32>()?, [3.0, 6.0]);
/// # Ok::<(), KernelError>(())
/// ```
pub trait Kernel: Send + Sync {
    /// Computes the node's outputs from its inputs, pushing one tensor per output.
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError>;
}

/// What an asynchronous kernel gets: owned, so its future may outlive the call.
///
/// The same accessors as [`KernelContext`] (`node`, `attrs`, `step_id`, `input`,
/// `num_inputs`, `take_input`, `resources`), plus [`inputs`](Self::inputs) and
/// [`into_inputs`](Self::into_inputs) to move the inputs into the future.
#[derive(Debug)]
pub struct AsyncKernelContext {
    node: Arc<Node>,
    inputs: SmallVec<[Tensor; 2]>,
    step_id: StepId,
    resources: Option<Arc<ResourceMgr>>,
}

impl AsyncKernelContext {
    /// A context over `inputs` for `node`. The executor makes these; the testkit and a
    /// backend's unit tests may too.
    pub fn new(node: Arc<Node>, inputs: SmallVec<[Tensor; 2]>, step_id: impl Into<StepId>) -> Self {
        AsyncKernelContext {
            node,
            inputs,
            step_id: step_id.into(),
            resources: None,
        }
    }

    /// This context with access to the resource manager of the session (or cluster task)
    /// running the step: variables, and on a cluster task the rendezvous and transport
    /// that Send/Recv use.
    pub fn with_resources(mut self, resources: Arc<ResourceMgr>) -> Self {
        self.resources = Some(resources);
        self
    }

    /// The resource manager of the session (or cluster task) running the step; `None`
    /// only for contexts made by hand without one.
    pub fn resources(&self) -> Option<&Arc<ResourceMgr>> {
        self.resources.as_ref()
    }

    /// The node being computed.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The node, shared (to keep in the kernel's future).
    pub fn node_arc(&self) -> &Arc<Node> {
        &self.node
    }

    /// The node's attributes.
    pub fn attrs(&self) -> &Attrs {
        &self.node.attrs
    }

    /// The step this call belongs to.
    pub fn step_id(&self) -> StepId {
        self.step_id
    }

    /// The number of inputs.
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Input `i`.
    ///
    /// # Panics
    /// If `i` is out of range: the executor always passes as many inputs as the op's
    /// definition validated.
    pub fn input(&self, i: usize) -> &Tensor {
        &self.inputs[i]
    }

    /// Every input, in order.
    pub fn inputs(&self) -> &[Tensor] {
        &self.inputs
    }

    /// Takes input `i` out of the context (leaving an empty tensor).
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn take_input(&mut self, i: usize) -> Tensor {
        std::mem::replace(&mut self.inputs[i], Tensor::empty(DType::Bool))
    }

    /// The inputs, moved out (for a future that owns them).
    pub fn into_inputs(self) -> SmallVec<[Tensor; 2]> {
        self.inputs
    }
}

/// An asynchronous kernel (I/O, a remote read, a GPU submission): it returns a future
/// that the scheduler polls, so a kernel that waits holds no thread. The future must not
/// need a runtime's reactor (tokio's timers or sockets): [`async_support`] has a one-shot
/// channel and timers that work under Magpie's scheduler.
///
/// ```
/// use magpie_core::graph::Node;
/// use magpie_core::kernel::async_support::{oneshot, BoxFuture, FutureExt};
/// use magpie_core::kernel::{AsyncKernel, AsyncKernelContext, KernelError, Outputs};
/// use magpie_core::Tensor;
///
/// /// Doubles its input on another thread, as a device completing work would.
/// struct DoubleElsewhere;
/// impl AsyncKernel for DoubleElsewhere {
///     fn compute_async(
///         &self,
///         ctx: AsyncKernelContext,
///     ) -> BoxFuture<'static, Result<Outputs, KernelError>> {
///         let (tx, rx) = oneshot::channel();
///         let x = ctx.input(0).clone();
///         std::thread::spawn(move || {
///             let doubled: Result<Vec<f32>, _> =
///                 x.as_slice::<f32>().map(|v| v.iter().map(|a| a * 2.0).collect());
///             let _ = tx.send(doubled.map(|v| Tensor::from_slice(&v)));
///         });
///         async move {
///             // A dropped sender (the thread died) ends the step instead of hanging it.
///             let out = rx.await.map_err(|_| KernelError::Cancelled)??;
///             Ok(Outputs::from_vec(vec![out]))
///         }
///         .boxed()
///     }
/// }
///
/// let node = std::sync::Arc::new(Node::new("double", "Double"));
/// let x = Tensor::from_slice(&[1.0f32, 2.0]);
/// let ctx = AsyncKernelContext::new(node, vec![x].into(), 0u64);
/// let out = futures::executor::block_on(DoubleElsewhere.compute_async(ctx))?;
/// assert_eq!(out[0].as_slice::<f32>()?, [2.0, 4.0]);
/// # Ok::<(), KernelError>(())
/// ```
pub trait AsyncKernel: Send + Sync {
    /// Starts the computation and returns at once; the future yields the outputs. The
    /// future must not block a thread while it waits: it returns `Pending` and wakes its
    /// waker. Dropping the future cancels the computation.
    fn compute_async(
        &self,
        ctx: AsyncKernelContext,
    ) -> BoxFuture<'static, Result<Outputs, KernelError>>;
}

/// A kernel of either kind, as built by a factory.
pub enum BoxedKernel {
    /// Runs on the worker that calls it.
    Sync(Box<dyn Kernel>),
    /// Returns a future the scheduler drives.
    Async(Box<dyn AsyncKernel>),
}

impl fmt::Debug for BoxedKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoxedKernel::Sync(_) => f.write_str("BoxedKernel::Sync"),
            BoxedKernel::Async(_) => f.write_str("BoxedKernel::Async"),
        }
    }
}

/// What a kernel factory gets to build a kernel for one node.
#[derive(Debug)]
pub struct KernelInit<'a> {
    /// The node.
    pub node: &'a Arc<Node>,
    /// The dtypes of its inputs.
    pub input_dtypes: &'a [DType],
    /// The device it was placed on. [`device`](Self::device) gives it as its concrete
    /// type.
    pub device: &'a Arc<dyn Device>,
}

impl<'a> KernelInit<'a> {
    /// The device the node was placed on, as its concrete type `D`: how a backend's
    /// kernels reach their device's state (queues, allocators, counters) without a global
    /// table. `D` must implement [`Device::as_any`].
    ///
    /// ```
    /// # use std::any::Any;
    /// # use std::sync::Arc;
    /// # use magpie_core::device::Device;
    /// # use magpie_core::graph::{Attrs, DeviceName, Node};
    /// # use magpie_core::kernel::{KernelError, KernelInit};
    /// #[derive(Debug)]
    /// struct Sim { name: DeviceName }
    /// impl Device for Sim {
    ///     fn name(&self) -> &DeviceName { &self.name }
    ///     fn as_any(&self) -> &dyn Any { self }
    /// }
    /// #[derive(Debug)]
    /// struct Other;
    ///
    /// # let node = Arc::new(Node::new("n", "NoOp"));
    /// let device: Arc<dyn Device> = Arc::new(Sim { name: DeviceName::local("SIM", 0) });
    /// let init = KernelInit { node: &node, input_dtypes: &[], device: &device };
    /// assert_eq!(init.device::<Sim>()?.name().device_type, "SIM");
    /// # Ok::<(), KernelError>(())
    /// ```
    ///
    /// # Errors
    /// [`KernelError::WrongDevice`], naming the op, the device, the type asked for and the
    /// device's type, when the device is not a `D` (a kernel registered for the wrong
    /// device type or backend).
    pub fn device<D: Device + 'static>(&self) -> Result<&'a D, KernelError> {
        let device: &'a (dyn Device + 'static) = &**self.device;
        device
            .downcast_ref::<D>()
            .ok_or_else(|| KernelError::WrongDevice {
                op: self.node.op.to_string(),
                device: device.name().to_string(),
                expected: std::any::type_name::<D>(),
                actual: device.type_name(),
            })
    }
}

/// Builds a kernel for a node; registered per (op, device type).
pub type KernelFactory =
    Arc<dyn Fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError> + Send + Sync>;
