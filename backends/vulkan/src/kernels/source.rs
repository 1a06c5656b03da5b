//! Ops that start data on the GPU: Const (uploaded on first use, then shared by every
//! step; the upload is stream-ordered, so the first step does not wait for it), Fill (a
//! scalar already on the device, `fill.comp`) and ZerosLike (a buffer fill, no shader).

use std::sync::Arc;

use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, DType, KernelError, Shape, Tensor};
use parking_lot::Mutex;

use super::support::{
    boxed, elementwise, f32_device, gpu, known_shape, tensor, unimplemented, Factory, Launch,
    Launched,
};
use crate::device::{Shader, VulkanDevice};

pub(crate) const KERNELS: &[(&str, Factory)] = &[
    ("Const", const_factory),
    ("Fill", fill_factory),
    ("ZerosLike", zeros_like_factory),
];

type Upload = Shared<BoxFuture<'static, Result<Tensor, KernelError>>>;

fn const_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let value = init.node.attrs.tensor("value")?;
    if value.dtype() != DType::F32 {
        return Err(unimplemented(init, value.dtype()));
    }
    boxed(Const {
        dev: f32_device(init)?,
        value,
        upload: Mutex::new(None),
    })
}

/// A constant: uploaded by the first step that needs it; every step (also concurrent
/// ones) then shares that one immutable device buffer. A failed upload is retried by the
/// next step.
struct Const {
    dev: VulkanDevice,
    value: Tensor,
    upload: Mutex<Option<Upload>>,
}

impl Const {
    fn start(&self) -> Upload {
        let started = self
            .value
            .as_slice::<f32>()
            .map_err(KernelError::from)
            .and_then(|data| self.dev.upload("Const", data));
        let shape = self.value.shape().clone();
        async move { tensor(shape, started?) }.boxed().shared()
    }
}

impl Launch for Const {
    fn launch(&self, _: &[Tensor]) -> Result<Launched, KernelError> {
        let mut slot = self.upload.lock();
        let failed = matches!(slot.as_ref().and_then(|u| u.peek()), Some(Err(_)));
        if slot.is_none() || failed {
            *slot = Some(self.start());
        }
        let upload = slot.as_ref().expect("set above").clone();
        Ok(Launched::Later(upload.boxed()))
    }
}

fn fill_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    boxed(Fill {
        shape: known_shape("Fill", "shape", &init.node.attrs.ints("shape")?)?,
        dev: f32_device(init)?,
    })
}

struct Fill {
    dev: VulkanDevice,
    shape: Shape,
}

impl Launch for Fill {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let value = &inputs[0];
        if value.num_elements() != 1 || value.shape().rank() > 1 {
            return Err(KernelError::InvalidArgument(format!(
                "Fill needs a scalar value, got shape {}",
                value.shape()
            )));
        }
        let n = self.shape.num_elements();
        let gv = gpu("Fill", value)?;
        let out = self.dev.alloc("Fill", n)?;
        let words = [super::support::count32("Fill", n)?];
        elementwise(&self.dev, "Fill", Shader::Fill, &[gv, &out], &words, n)?;
        Ok(Launched::Ready(tensor(self.shape.clone(), out)?))
    }
}

fn zeros_like_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    boxed(ZerosLike {
        dev: f32_device(init)?,
    })
}

struct ZerosLike {
    dev: VulkanDevice,
}

impl Launch for ZerosLike {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let x = &inputs[0];
        let out = self.dev.alloc("ZerosLike", x.num_elements())?;
        let o = Arc::clone(&out);
        if x.num_elements() > 0 {
            self.dev.enqueue("ZerosLike", move |r| r.fill(&o, 0))?;
        }
        Ok(Launched::Ready(tensor(x.shape().clone(), out)?))
    }
}
