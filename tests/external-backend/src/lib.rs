//! A toy backend outside Magpie's workspace, built against `magpie-core` alone.
//!
//! [`ToyDevice`] is a "TOY" device that counts the kernels it ran. Its kernels (f32 only)
//! are `Const`, `Add` and `Mul` (with numpy broadcasting, through core's
//! `BroadcastLayout`) and `Clamp`, an op this crate defines itself with typed attributes
//! and a shape function, and `Delay`, an asynchronous identity that completes on core's
//! timer (no runtime of its own). [`register`] puts them into a kernel registry of the
//! caller's.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use magpie_core::device::Device;
use magpie_core::graph::{
    lookup_op, register_op, unchanged_shape, Arity, AttrType, DeviceName, OpDef,
};
use magpie_core::graph::{GraphError, OpDefError};
use magpie_core::kernel::async_support::{sleep, BoxFuture, FutureExt};
use magpie_core::kernel::{
    AsyncKernel, AsyncKernelContext, BoxedKernel, Kernel, KernelContext, KernelError, KernelInit,
    Outputs,
};
use magpie_core::registry::{KernelKey, KernelRegistry, RegistryError};
use magpie_core::tensor::{BroadcastLayout, DType, Tensor};

/// The backend id the toy kernels are registered under.
pub const BACKEND: &str = "magpie-external-backend";

/// The device type of a [`ToyDevice`].
pub const DEVICE_TYPE: &str = "TOY";

/// A device whose kernels run on the session's threads, in host memory, and are counted.
#[derive(Debug)]
pub struct ToyDevice {
    name: DeviceName,
    /// Kernels run; each kernel built for this device holds a clone.
    kernels_run: Arc<AtomicUsize>,
}

impl ToyDevice {
    /// The toy device of this process with index `index` (`/device:TOY:<index>`).
    pub fn new(index: u32) -> ToyDevice {
        ToyDevice {
            name: DeviceName::local(DEVICE_TYPE, index),
            kernels_run: Arc::default(),
        }
    }

    /// How many kernels this device has run.
    pub fn kernels_run(&self) -> usize {
        self.kernels_run.load(Ordering::Relaxed)
    }
}

impl Device for ToyDevice {
    fn name(&self) -> &DeviceName {
        &self.name
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn backend(&self) -> &str {
        BACKEND
    }

    fn description(&self) -> String {
        "toy device (counts kernels)".into()
    }
}

/// The scalar function a kernel applies to each element (a pair for binary ops).
type ElementFn = Arc<dyn Fn(f32, f32) -> f32 + Send + Sync>;

/// An elementwise f32 kernel over one input or two (broadcast).
struct Elementwise {
    kernels_run: Arc<AtomicUsize>,
    f: ElementFn,
}

impl Kernel for Elementwise {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        self.kernels_run.fetch_add(1, Ordering::Relaxed);
        let x = ctx.input(0);
        let y = if ctx.num_inputs() == 2 {
            ctx.input(1)
        } else {
            x
        };
        let layout = BroadcastLayout::new(x.shape(), y.shape())?;
        let (xs, ys) = (x.as_slice::<f32>()?, y.as_slice::<f32>()?);
        let values = layout
            .iter()
            .map(|(i, j)| match (xs.get(i), ys.get(j)) {
                (Some(&a), Some(&b)) => Ok((self.f)(a, b)),
                _ => Err(KernelError::InvalidArgument(
                    "an input holds fewer elements than its shape".into(),
                )),
            })
            .collect::<Result<Vec<f32>, _>>()?;
        ctx.push_output(Tensor::from_vec(layout.output().clone(), values)?);
        Ok(())
    }
}

struct ConstKernel {
    kernels_run: Arc<AtomicUsize>,
    value: Tensor,
}

impl Kernel for ConstKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        self.kernels_run.fetch_add(1, Ordering::Relaxed);
        ctx.push_output(self.value.clone());
        Ok(())
    }
}

fn unimplemented(op: &str, dtype: DType) -> KernelError {
    KernelError::Unimplemented {
        op: op.into(),
        dtype,
        device_type: DEVICE_TYPE.into(),
    }
}

fn const_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    // The device as its own type: a clear error should these kernels meet another device.
    let device = init.device::<ToyDevice>()?;
    let value = init.node.attrs.tensor("value")?;
    if value.dtype() != DType::F32 {
        return Err(unimplemented("Const", value.dtype()));
    }
    Ok(BoxedKernel::Sync(Box::new(ConstKernel {
        kernels_run: Arc::clone(&device.kernels_run),
        value,
    })))
}

fn elementwise(init: &KernelInit<'_>, f: ElementFn) -> Result<BoxedKernel, KernelError> {
    let device = init.device::<ToyDevice>()?;
    if let Some(d) = init.input_dtypes.iter().find(|d| **d != DType::F32) {
        return Err(unimplemented(&init.node.op, *d));
    }
    Ok(BoxedKernel::Sync(Box::new(Elementwise {
        kernels_run: Arc::clone(&device.kernels_run),
        f,
    })))
}

fn add_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    elementwise(init, Arc::new(|a, b| a + b))
}

fn mul_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    elementwise(init, Arc::new(|a, b| a * b))
}

fn clamp_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let lo = init.node.attrs.float("lo")? as f32;
    let hi = init.node.attrs.float("hi")? as f32;
    if lo > hi {
        return Err(KernelError::InvalidArgument(format!(
            "Clamp needs lo <= hi, got lo = {lo}, hi = {hi}"
        )));
    }
    elementwise(init, Arc::new(move |a, _| a.clamp(lo, hi)))
}

/// `Delay(x; millis)`: `x`, after `millis` milliseconds, without holding a thread.
struct Delay {
    kernels_run: Arc<AtomicUsize>,
    wait: Duration,
}

impl AsyncKernel for Delay {
    fn compute_async(
        &self,
        mut ctx: AsyncKernelContext,
    ) -> BoxFuture<'static, Result<Outputs, KernelError>> {
        self.kernels_run.fetch_add(1, Ordering::Relaxed);
        let x = ctx.take_input(0);
        let wait = self.wait;
        async move {
            sleep(wait).await;
            Ok(Outputs::from_vec(vec![x]))
        }
        .boxed()
    }
}

fn delay_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let device = init.device::<ToyDevice>()?;
    let millis = init.node.attrs.int("millis")?;
    let millis = u64::try_from(millis).map_err(|_| {
        KernelError::InvalidArgument(format!("Delay needs millis >= 0, got {millis}"))
    })?;
    Ok(BoxedKernel::Async(Box::new(Delay {
        kernels_run: Arc::clone(&device.kernels_run),
        wait: Duration::from_millis(millis),
    })))
}

/// Defines `Delay` (one input of any dtype, passed through; an int attribute `millis`,
/// 1 by default). A second call finds it defined and does nothing.
///
/// # Errors
/// [`GraphError::OpAlreadyRegistered`] only if another definition took the name between
/// the check and the registration.
pub fn define_delay() -> Result<(), GraphError> {
    if lookup_op("Delay").is_some() {
        return Ok(());
    }
    let def = OpDef::new("Delay", Arity::Exact(1), |ins, _| Ok(vec![ins[0]]))
        .attr_default("millis", 1i64)
        .with_shape_fn(unchanged_shape);
    match register_op(def) {
        Err(GraphError::OpAlreadyRegistered(_)) => Ok(()),
        other => other,
    }
}

/// Defines `Clamp` (one f32 input; float attributes `lo` and `hi`, both required and
/// checked when a node is built; the output has the input's shape). Op definitions are
/// process-wide: a second call finds it defined and does nothing.
///
/// # Errors
/// [`GraphError::OpAlreadyRegistered`] only if another definition took the name between
/// the check and the registration.
pub fn define_clamp() -> Result<(), GraphError> {
    if lookup_op("Clamp").is_some() {
        return Ok(());
    }
    let def = OpDef::new("Clamp", Arity::Exact(1), |ins, _| match ins[0] {
        DType::F32 => Ok(vec![DType::F32]),
        got => Err(OpDefError::DType {
            input: 0,
            expected: "f32".into(),
            got,
        }),
    })
    .attr("lo", AttrType::Float)
    .attr("hi", AttrType::Float)
    .with_shape_fn(unchanged_shape);
    match register_op(def) {
        Err(GraphError::OpAlreadyRegistered(_)) => Ok(()),
        other => other,
    }
}

/// Registers the toy kernels in `registry`, for devices of type `TOY` made by this
/// backend. Registering again changes nothing (the factories are the same functions).
///
/// # Errors
/// [`RegistryError::AlreadyRegistered`] if another factory holds one of the keys.
pub fn register(registry: &KernelRegistry) -> Result<(), RegistryError> {
    type Factory = fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError>;
    let kernels: [(&str, Factory); 5] = [
        ("Const", const_factory),
        ("Add", add_factory),
        ("Mul", mul_factory),
        ("Clamp", clamp_factory),
        ("Delay", delay_factory),
    ];
    for (op, factory) in kernels {
        registry.register(KernelKey::new(op, DEVICE_TYPE).backend(BACKEND), factory)?;
    }
    Ok(())
}
