//! What every kernel shares: the factory checks (dtype f32, a Vulkan device — reached
//! through [`KernelInit::device`], never by name), the
//! [`Launch`] trait that turns a kernel's synchronous start into an
//! [`AsyncKernel`](magpie_core::AsyncKernel), and reading inputs as GPU buffers.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use magpie_core::kernel::{AsyncKernel, AsyncKernelContext, KernelInit, Outputs};
use magpie_core::{BoxedKernel, DType, KernelError, Tensor};
use smallvec::smallvec;

use crate::device::{GpuBuffer, VulkanDevice};
use crate::DEVICE_TYPE;
pub(crate) use magpie_core::shape_fn::{known_shape, normalize_axis};

/// A kernel factory as the registry takes it.
pub(crate) type Factory = fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError>;

/// Threads per workgroup of the 1-D shaders.
pub(crate) const GROUP: u64 = 256;

/// What starting a kernel gives back.
pub(crate) enum Launched {
    /// The output, valid for every later command on the device's stream (the commands
    /// that compute it are enqueued before any that read it).
    Ready(Tensor),
    /// The output, computed by a future (e.g. a download that reads a staging buffer).
    Later(BoxFuture<'static, Result<Tensor, KernelError>>),
}

/// A GPU kernel: validates its inputs, allocates, records and submits, then returns at
/// once. Runs on a scheduler worker and must not wait on the GPU.
pub(crate) trait Launch: Send + Sync + 'static {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError>;
}

struct Gpu<L>(L);

impl<L: Launch> AsyncKernel for Gpu<L> {
    fn compute_async(
        &self,
        ctx: AsyncKernelContext,
    ) -> BoxFuture<'static, Result<Outputs, KernelError>> {
        match self.0.launch(ctx.inputs()) {
            Ok(Launched::Ready(out)) => futures::future::ready(Ok(smallvec![out])).boxed(),
            Ok(Launched::Later(fut)) => fut.map(|r| r.map(|t| smallvec![t])).boxed(),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }
}

/// Boxes a kernel for the registry.
pub(crate) fn boxed(kernel: impl Launch) -> Result<BoxedKernel, KernelError> {
    Ok(BoxedKernel::Async(Box::new(Gpu(kernel))))
}

/// The Vulkan device a node was placed on, checking every input dtype is f32.
pub(crate) fn f32_device(init: &KernelInit<'_>) -> Result<VulkanDevice, KernelError> {
    if let Some(&dtype) = init.input_dtypes.iter().find(|d| **d != DType::F32) {
        return Err(unimplemented(init, dtype));
    }
    device_of(init)
}

/// The declined-dtype error the placer and the testkit understand.
pub(crate) fn unimplemented(init: &KernelInit<'_>, dtype: DType) -> KernelError {
    KernelError::Unimplemented {
        op: init.node.op.to_string(),
        dtype,
        device_type: DEVICE_TYPE.into(),
    }
}

/// The Vulkan device a node was placed on (a handle sharing the GPU), whatever its name.
pub(crate) fn device_of(init: &KernelInit<'_>) -> Result<VulkanDevice, KernelError> {
    init.device::<VulkanDevice>().cloned()
}

/// Input `t` as this backend's GPU buffer, checked to hold exactly the elements of its
/// shape (and a Vulkan buffer that large): the bound every index the shaders compute from
/// the shape relies on.
pub(crate) fn gpu<'t>(op: &str, t: &'t Tensor) -> Result<&'t GpuBuffer, KernelError> {
    let buffer = gpu_buffer(op, t)?;
    let want = t.shape().num_elements();
    if buffer.len_elements() != want || buffer.capacity_elements() < want.max(1) as u64 {
        return Err(KernelError::InvalidArgument(format!(
            "{op}: an input of shape {} ({want} elements) holds {} elements in a buffer of {}",
            t.shape(),
            buffer.len_elements(),
            buffer.capacity_elements()
        )));
    }
    Ok(buffer)
}

/// Input `t` as this backend's GPU buffer.
fn gpu_buffer<'t>(op: &str, t: &'t Tensor) -> Result<&'t GpuBuffer, KernelError> {
    t.device_buffer()
        .and_then(|b| b.as_any().downcast_ref::<GpuBuffer>())
        .ok_or_else(|| {
            let place = match t.device_buffer() {
                Some(b) => format!("in the memory of {}", b.device()),
                None => "in host memory".to_string(),
            };
            KernelError::Internal(format!(
                "{op}: expected an input in a Vulkan device's memory, got a {} tensor {place}",
                t.dtype()
            ))
        })
}

/// A tensor of `shape` over `buffer`.
pub(crate) fn tensor(
    shape: impl magpie_core::tensor::IntoShape,
    buffer: Arc<GpuBuffer>,
) -> Result<Tensor, KernelError> {
    Ok(Tensor::from_device_buffer(shape, buffer)?)
}

/// Push constants: `words` first, zeros after.
pub(crate) fn params(words: &[u32]) -> [u32; 16] {
    let mut p = [0u32; 16];
    p[..words.len()].copy_from_slice(words);
    p
}

/// An element count as the shaders' 32-bit index, or an error naming the op.
pub(crate) fn count32(op: &str, n: usize) -> Result<u32, KernelError> {
    u32::try_from(n).map_err(|_| {
        KernelError::InvalidArgument(format!(
            "{op}: {n} elements exceed the GPU kernels' 32-bit indexing"
        ))
    })
}

/// Runs a 1-D elementwise `shader` writing `n` outputs into `out`.
pub(crate) fn elementwise(
    dev: &VulkanDevice,
    op: &str,
    shader: crate::device::Shader,
    buffers: &[&GpuBuffer],
    words: &[u32],
    n: usize,
) -> Result<(), KernelError> {
    if n == 0 {
        return Ok(());
    }
    let grid = dev.grid_1d(op, (n as u64).div_ceil(GROUP))?;
    let p = params(words);
    dev.enqueue(op, |r| r.dispatch(shader, buffers, p, grid))
}

/// Whether every buffer holds a whole number of vec4s covering `n` elements, so a vec4
/// kernel may run over `n.div_ceil(4)` vec4s (a scalar input is read at element 0).
pub(crate) fn vec4_ready(n: usize, buffers: &[&GpuBuffer]) -> bool {
    let need = n.next_multiple_of(4) as u64;
    buffers.iter().all(|b| {
        let cap = b.capacity_elements();
        cap % 4 == 0 && (cap >= need || b.len_elements() == 1)
    })
}
