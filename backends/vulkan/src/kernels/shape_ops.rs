//! Ops that relabel a buffer — Identity, StopGradient (Identity to the forward pass),
//! Reshape, ExpandDims, Squeeze: no GPU work; the output shares the input's device
//! buffer — and Cast into f32. TensorFlow's forms whose shape or axis is an input
//! (`Reshape(x, shape)`, `ExpandDims(x, dim)`) read it in host memory (`host.rs`) with
//! the CPU's kernel, which only relabels `x` (device memory or not). Cast converts a
//! host-memory integer or bool tensor on the host and uploads the f32 result
//! (stream-ordered, no wait); f32 to f32 relabels; f32 to another dtype would need the
//! host to wait for the GPU and is declined (`Unimplemented`).

use magpie_core::kernel::{Kernel, KernelContext, KernelInit};
use magpie_core::shape_fn::reshape_target;
use magpie_core::{BoxedKernel, DType, KernelError, Tensor};

use super::host;
use super::support::{
    boxed, device_of, f32_device, gpu, tensor, unimplemented, Factory, Launch, Launched,
};
use crate::device::VulkanDevice;

pub(crate) const KERNELS: &[(&str, Factory)] = &[
    ("Identity", identity_factory),
    ("StopGradient", identity_factory),
    ("Reshape", reshape_factory),
    ("ExpandDims", relabel_factory),
    ("Squeeze", relabel_factory),
    ("Cast", cast_factory),
];

/// The CPU's kernel of a relabelling op: it reads its shape or axis input in host memory
/// and relabels input 0 wherever it lives.
fn relabel_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    host::host_kernel(init)
}

fn identity_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = host::for_host_dtypes(init)? {
        return Ok(k);
    }
    f32_device(init)?;
    Ok(BoxedKernel::Sync(Box::new(Identity)))
}

struct Identity;

impl Kernel for Identity {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.take_input(0);
        gpu(&ctx.node().op, &x)?;
        ctx.push_output(x);
        Ok(())
    }
}

fn reshape_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if init.input_dtypes.len() == 2 {
        if init.input_dtypes[0] != DType::F32 && !host::in_host_memory(init.input_dtypes[0]) {
            return Err(unimplemented(init, init.input_dtypes[0]));
        }
        return host::host_kernel(init);
    }
    if let Some(k) = host::for_host_dtypes(init)? {
        return Ok(k);
    }
    f32_device(init)?;
    let dims = init.node.attrs.ints("shape")?;
    if dims.iter().any(|&d| d < -1) || dims.iter().filter(|&&d| d == -1).count() > 1 {
        return Err(KernelError::InvalidArgument(format!(
            "Reshape shape {dims:?} may hold non-negative dimensions and at most one -1"
        )));
    }
    Ok(BoxedKernel::Sync(Box::new(Reshape { dims })))
}

struct Reshape {
    /// The `shape` attribute as given (at most one -1).
    dims: Vec<i64>,
}

impl Kernel for Reshape {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.input(0);
        gpu("Reshape", x)?;
        let shape = reshape_target(x.shape(), &self.dims)?;
        let y = x.reshape(shape)?;
        ctx.push_output(y);
        Ok(())
    }
}

fn cast_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = host::for_host_dtypes(init)? {
        return Ok(k);
    }
    let (from, to) = (init.input_dtypes[0], init.node.output_dtypes[0]);
    if to != DType::F32 {
        return Err(unimplemented(init, from));
    }
    if from == DType::F32 {
        return identity_factory(init);
    }
    boxed(CastToF32 {
        dev: device_of(init)?,
    })
}

/// Cast of a host-memory tensor to f32: converted on the host (`as`: integers round to
/// the nearest f32, bools are 0 and 1, as the CPU's Cast), then uploaded.
struct CastToF32 {
    dev: VulkanDevice,
}

impl Launch for CastToF32 {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let x = &inputs[0];
        let values: Vec<f32> = if let Ok(v) = x.as_slice::<i32>() {
            v.iter().map(|&a| a as f32).collect()
        } else if let Ok(v) = x.as_slice::<i64>() {
            v.iter().map(|&a| a as f32).collect()
        } else if let Ok(v) = x.as_slice::<bool>() {
            v.iter().map(|&a| f32::from(u8::from(a))).collect()
        } else if let Ok(v) = x.as_slice::<f64>() {
            v.iter().map(|&a| a as f32).collect()
        } else {
            return Err(KernelError::InvalidArgument(format!(
                "Cast: a {} input in device memory cannot be cast on the GPU",
                x.dtype()
            )));
        };
        let buffer = self.dev.upload("Cast", &values)?;
        Ok(Launched::Ready(tensor(x.shape().clone(), buffer)?))
    }
}
