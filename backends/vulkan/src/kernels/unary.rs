//! Neg, Square, Sqrt, Exp, Relu, Log, Tanh, Sigmoid: `unary4.comp`, four elements (a
//! vec4) per invocation, or `unary.comp`, one per element, where a buffer does not hold
//! whole vec4s; both compute through `elementwise.glsl`'s `unary_op`. Sqrt, Exp, Log,
//! Tanh and Sigmoid have the GPU's precision (a few ulp), not the CPU's; Log of 0 is
//! -inf and of a negative NaN, as on the CPU.

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, KernelError, Tensor};

use super::support::{
    boxed, count32, elementwise, f32_device, gpu, tensor, vec4_ready, Factory, Launch, Launched,
};
use crate::device::{Shader, VulkanDevice};

pub(crate) const KERNELS: &[(&str, Factory)] = &[
    ("Neg", factory::<0>),
    ("Square", factory::<1>),
    ("Sqrt", factory::<2>),
    ("Exp", factory::<3>),
    ("Relu", factory::<4>),
    ("Log", factory::<5>),
    ("Tanh", factory::<6>),
    ("Sigmoid", factory::<7>),
];

fn factory<const OP: u32>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = super::host::for_host_dtypes(init)? {
        return Ok(k);
    }
    boxed(Unary {
        dev: f32_device(init)?,
        op: init.node.op.to_string(),
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
        count32(op, n)?;
        let gx = gpu(op, x)?;
        let out = self.dev.alloc(op, n)?;
        if vec4_ready(n, &[gx, &out]) {
            let quads = n.div_ceil(4);
            let words = [quads as u32, self.code];
            elementwise(&self.dev, op, Shader::Unary4, &[gx, &out], &words, quads)?;
        } else {
            let words = [n as u32, self.code];
            elementwise(&self.dev, op, Shader::Unary, &[gx, &out], &words, n)?;
        }
        Ok(Launched::Ready(tensor(x.shape().clone(), out)?))
    }
}
