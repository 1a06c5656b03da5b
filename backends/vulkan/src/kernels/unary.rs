//! Neg, Square, Sqrt, Exp, Relu: one shader (`unary.comp`), one invocation per element.
//! Sqrt and Exp have the GPU's precision (a few ulp), not the CPU's.

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, KernelError, Tensor};

use super::support::{
    boxed, count32, elementwise, f32_device, gpu, tensor, Factory, Launch, Launched,
};
use crate::device::{Shader, VulkanDevice};

pub(crate) const KERNELS: &[(&str, Factory)] = &[
    ("Neg", factory::<0>),
    ("Square", factory::<1>),
    ("Sqrt", factory::<2>),
    ("Exp", factory::<3>),
    ("Relu", factory::<4>),
];

fn factory<const OP: u32>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    boxed(Unary {
        dev: f32_device(init)?,
        op: init.node.op.clone(),
        code: OP,
    })
}

struct Unary {
    dev: VulkanDevice,
    op: String,
    code: u32,
}

impl Launch for Unary {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let op = self.op.as_str();
        let x = &inputs[0];
        let n = x.num_elements();
        let words = [count32(op, n)?, self.code];
        let gx = gpu(op, x)?;
        let out = self.dev.alloc(op, n)?;
        elementwise(&self.dev, op, Shader::Unary, &[gx, &out], &words, n)?;
        Ok(Launched::Ready(tensor(x.shape().clone(), out)?))
    }
}
