//! Ops that start data on the GPU: Const (uploaded on first use, then shared by every
//! step; the upload is stream-ordered, so the first step does not wait for it), Fill (a
//! scalar already on the device, `fill.comp`; the dims from the attribute `shape` or, in
//! TensorFlow's form, from input 0 in host memory), ZerosLike and OnesLike (a buffer fill of
//! the bits of 0.0 or 1.0, no shader). Constants and fills of other dtypes are
//! host-memory kernels (`host.rs`).

use std::sync::Arc;

use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, DType, KernelError, Shape, Tensor};
use parking_lot::Mutex;

use super::support::{
    boxed, device_of, elementwise, f32_device, gpu, known_shape, tensor, unimplemented, Factory,
    Launch, Launched,
};
use crate::device::{Shader, VulkanDevice};

pub(crate) const KERNELS: &[(&str, Factory)] = &[
    ("Const", const_factory),
    ("Fill", fill_factory),
    ("ZerosLike", like_factory::<0>),
    ("OnesLike", like_factory::<0x3f80_0000>),
];

type Upload = Shared<BoxFuture<'static, Result<Tensor, KernelError>>>;

fn const_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = super::host::for_host_dtypes(init)? {
        return Ok(k);
    }
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
    if let Some(k) = super::host::for_host_dtypes(init)? {
        return Ok(k);
    }
    if init.input_dtypes.len() == 2 {
        // TensorFlow's form: `Fill(dims, value)`, the dims in host memory.
        if !super::host::in_host_memory(init.input_dtypes[0]) {
            return Err(unimplemented(init, init.input_dtypes[0]));
        }
        if init.input_dtypes[1] != DType::F32 {
            return Err(unimplemented(init, init.input_dtypes[1]));
        }
        return boxed(Fill {
            shape: None,
            dev: device_of(init)?,
        });
    }
    boxed(Fill {
        shape: Some(known_shape(
            "Fill",
            "shape",
            &init.node.attrs.ints("shape")?,
        )?),
        dev: f32_device(init)?,
    })
}

struct Fill {
    dev: VulkanDevice,
    /// The attribute `shape`; `None`: TensorFlow's form, the dims are input 0.
    shape: Option<Shape>,
}

impl Launch for Fill {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let (shape, value) = match &self.shape {
            Some(s) => (s.clone(), &inputs[0]),
            None => {
                let dims = &inputs[0];
                if dims.shape().rank() != 1 {
                    return Err(KernelError::InvalidArgument(format!(
                        "Fill: dims must be a vector, got shape {}",
                        dims.shape()
                    )));
                }
                let dims = super::host::host_ints("Fill", "dims", dims)?;
                (known_shape("Fill", "dims", &dims)?, &inputs[1])
            }
        };
        if value.num_elements() != 1 || value.shape().rank() > 1 {
            return Err(KernelError::InvalidArgument(format!(
                "Fill needs a scalar value, got shape {}",
                value.shape()
            )));
        }
        let n = shape.num_elements();
        let gv = gpu("Fill", value)?;
        let out = self.dev.alloc("Fill", n)?;
        let words = [super::support::count32("Fill", n)?];
        elementwise(&self.dev, "Fill", Shader::Fill, &[gv, &out], &words, n)?;
        Ok(Launched::Ready(tensor(shape, out)?))
    }
}

fn like_factory<const BITS: u32>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = super::host::for_host_dtypes(init)? {
        return Ok(k);
    }
    boxed(Like {
        dev: f32_device(init)?,
        op: init.node.op.to_string(),
        bits: BITS,
    })
}

/// A tensor of the input's shape with every element's bits `bits`.
struct Like {
    dev: VulkanDevice,
    op: String,
    bits: u32,
}

impl Launch for Like {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let x = &inputs[0];
        let op = self.op.as_str();
        let out = self.dev.alloc(op, x.num_elements())?;
        let o = Arc::clone(&out);
        let bits = self.bits;
        if x.num_elements() > 0 {
            self.dev.enqueue(op, move |r| r.fill(&o, bits))?;
        }
        Ok(Launched::Ready(tensor(x.shape().clone(), out)?))
    }
}
