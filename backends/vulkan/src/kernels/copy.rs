//! The host/device copies the executor inserts (`_CopyFromHost`, `_CopyToHost`), through
//! pooled staging buffers. An upload is stream-ordered (its output is ready for every
//! later command at once); a download is where the host waits: it submits the device's
//! open batch and completes when the GPU has run it. Tensors of dtypes the device keeps
//! in host memory (every dtype but f32: `host.rs`) pass through both unchanged.

use futures::FutureExt;
use magpie_core::device::{COPY_FROM_HOST, COPY_TO_HOST};
use magpie_core::kernel::{Kernel, KernelContext, KernelInit};
use magpie_core::{BoxedKernel, KernelError, Tensor};

use super::host;
use super::support::{boxed, f32_device, gpu, tensor, Factory, Launch, Launched};
use crate::device::VulkanDevice;

pub(crate) const KERNELS: &[(&str, Factory)] = &[
    (COPY_FROM_HOST, from_host_factory),
    (COPY_TO_HOST, to_host_factory),
];

/// The copy kernel of a tensor that stays in host memory.
struct PassThrough;

impl Kernel for PassThrough {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.take_input(0);
        if !x.is_on_host() {
            return Err(KernelError::Internal(format!(
                "{}: a {} tensor in device memory, where host memory was expected",
                ctx.node().op,
                x.dtype()
            )));
        }
        ctx.push_output(x);
        Ok(())
    }
}

/// The pass-through kernel when the copied dtype lives in host memory on this device.
fn pass_through(init: &KernelInit<'_>) -> Option<BoxedKernel> {
    let dtype = init.input_dtypes.first()?;
    host::in_host_memory(*dtype).then(|| BoxedKernel::Sync(Box::new(PassThrough)))
}

fn from_host_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = pass_through(init) {
        return Ok(k);
    }
    boxed(FromHost {
        dev: f32_device(init)?,
    })
}

struct FromHost {
    dev: VulkanDevice,
}

impl Launch for FromHost {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let x = &inputs[0];
        let data = x.as_slice::<f32>()?;
        let buffer = self.dev.upload(COPY_FROM_HOST, data)?;
        Ok(Launched::Ready(tensor(x.shape().clone(), buffer)?))
    }
}

fn to_host_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = pass_through(init) {
        return Ok(k);
    }
    boxed(ToHost {
        dev: f32_device(init)?,
    })
}

struct ToHost {
    dev: VulkanDevice,
}

impl Launch for ToHost {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let x = &inputs[0];
        let download = self.dev.download(COPY_TO_HOST, gpu(COPY_TO_HOST, x)?)?;
        let shape = x.shape().clone();
        Ok(Launched::Later(
            async move { Ok(Tensor::from_vec(shape, download.await?)?) }.boxed(),
        ))
    }
}
