//! TensorFlow's neural-network ops and activation gradients on the GPU, as the CPU
//! kernels define them (`backends/cpu/src/kernels/nn.rs`, `activations.rs`):
//!
//! - `BiasAdd(value, bias)`: `value` of rank 2 or more, `bias` a vector as long as its
//!   channel dimension (the last with `data_format` `NHWC`, the default; dimension 1 with
//!   `NCHW`): the broadcasting `binary.comp` with the bias read as `[C]` or `[C, 1, ..]`;
//! - `BiasAddGrad(g)`: `g` summed over every dimension but the channel one, with
//!   `reduce.comp` (one pass for `NHWC`, two for `NCHW`);
//! - `ReluGrad(gradients, features)`, `TanhGrad(y, dy)`, `SigmoidGrad(y, dy)`: inputs
//!   of one shape, `binary_op`'s gradient codes (`elementwise.glsl`);
//! - `AddN(x..)`: inputs of one shape (integers: a host-memory kernel, `host.rs`), summed left to right with `binary_op`'s add (the
//!   CPU's order, so bit for bit the CPU's sums);
//! - `Softmax`, `LogSoftmax` (along the last dimension, rank 1 or more) and
//!   `SoftmaxCrossEntropyWithLogits(features, labels)` (matrices that broadcast
//!   together; outputs the per-row loss and the backprop): `softmax.comp`, a workgroup
//!   per row.
//!
//! Shapes are checked on the host before anything is allocated, with the CPU kernels'
//! errors.

use std::sync::Arc;

use futures::FutureExt;
use magpie_core::kernel::{AsyncKernel, AsyncKernelContext, KernelInit, Outputs};
use magpie_core::{BoxedKernel, KernelError, Shape, Tensor};
use smallvec::smallvec;

use super::binary::{binary, code};
use super::reduce::reduce_middle;
use super::support::{boxed, count32, f32_device, gpu, params, tensor, Factory, Launch, Launched};
use crate::device::{GpuBuffer, Shader, VulkanDevice};

pub(crate) const KERNELS: &[(&str, Factory)] = &[
    ("BiasAdd", bias_add_factory),
    ("BiasAddGrad", bias_add_grad_factory),
    ("ReluGrad", grad_factory::<{ code::RELU_GRAD }>),
    ("TanhGrad", grad_factory::<{ code::TANH_GRAD }>),
    ("SigmoidGrad", grad_factory::<{ code::SIGMOID_GRAD }>),
    ("AddN", add_n_factory),
    ("Softmax", softmax_factory::<0>),
    ("LogSoftmax", softmax_factory::<1>),
    ("SoftmaxCrossEntropyWithLogits", xent_factory),
];

/// Whether a bias op's channels come first (`data_format` `NCHW`), as the CPU reads it.
fn channels_first(init: &KernelInit<'_>) -> Result<bool, KernelError> {
    if !init.node.attrs.contains("data_format") {
        return Ok(false);
    }
    match init.node.attrs.string("data_format")?.as_str() {
        "NHWC" => Ok(false),
        "NCHW" => Ok(true),
        other => Err(KernelError::InvalidArgument(format!(
            "{}: data_format must be \"NHWC\" or \"NCHW\", got {other:?}",
            init.node.op
        ))),
    }
}

/// The channel dimension's index in `dims` (rank 2 or more).
fn channel_axis(op: &str, dims: &[usize], first: bool) -> Result<usize, KernelError> {
    if dims.len() < 2 {
        return Err(KernelError::InvalidArgument(format!(
            "{op} needs a tensor of rank 2 or more, got shape {dims:?}"
        )));
    }
    Ok(if first { 1 } else { dims.len() - 1 })
}

struct Bias {
    dev: VulkanDevice,
    channels_first: bool,
}

fn bias_add_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    boxed(BiasAdd(Bias {
        dev: f32_device(init)?,
        channels_first: channels_first(init)?,
    }))
}

fn bias_add_grad_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    boxed(BiasAddGrad(Bias {
        dev: f32_device(init)?,
        channels_first: channels_first(init)?,
    }))
}

struct BiasAdd(Bias);

impl Launch for BiasAdd {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let (value, bias) = (&inputs[0], &inputs[1]);
        let dims = value.dims();
        let c = channel_axis("BiasAdd", dims, self.0.channels_first)?;
        if bias.dims() != [dims[c]] {
            return Err(KernelError::InvalidArgument(format!(
                "BiasAdd: bias of shape {} for {} channels of shape {}",
                bias.shape(),
                dims[c],
                value.shape()
            )));
        }
        // The bias as the broadcast sees it: [C] followed by a 1 per later dimension.
        let mut view = vec![dims[c]];
        view.resize(dims.len() - c, 1);
        let view = Shape::new(&view)?;
        let out = binary(
            &self.0.dev,
            "BiasAdd",
            code::ADD,
            (gpu("BiasAdd", value)?, value.shape()),
            (gpu("BiasAdd", bias)?, &view),
            value.shape(),
        )?;
        Ok(Launched::Ready(tensor(value.shape().clone(), out)?))
    }
}

struct BiasAddGrad(Bias);

impl Launch for BiasAddGrad {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        const OP: &str = "BiasAddGrad";
        let g = &inputs[0];
        let dims = g.dims();
        let c = channel_axis(OP, dims, self.0.channels_first)?;
        let channels = dims[c];
        let outer: usize = dims[..c].iter().product();
        let inner: usize = dims[c + 1..].iter().product();
        let gg = gpu(OP, g)?;
        let dev = &self.0.dev;
        let out = if inner == 1 {
            // [outer, C]: sum over the rows.
            reduce_middle(dev, OP, gg, [1, outer, channels], false)?
        } else {
            // [outer, C, inner]: sum over inner, then over outer.
            let rows = reduce_middle(dev, OP, gg, [outer * channels, inner, 1], false)?;
            reduce_middle(dev, OP, &rows, [1, outer, channels], false)?
        };
        Ok(Launched::Ready(tensor(Shape::new(&[channels])?, out)?))
    }
}

struct Grad {
    dev: VulkanDevice,
    op: String,
    code: u32,
}

fn grad_factory<const CODE: u32>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    boxed(Grad {
        dev: f32_device(init)?,
        op: init.node.op.to_string(),
        code: CODE,
    })
}

impl Launch for Grad {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let op = self.op.as_str();
        let (a, b) = (&inputs[0], &inputs[1]);
        if a.shape() != b.shape() {
            return Err(KernelError::InvalidArgument(format!(
                "{op} needs inputs of one shape, got {} and {}",
                a.shape(),
                b.shape()
            )));
        }
        let shape = a.shape();
        let out = binary(
            &self.dev,
            op,
            self.code,
            (gpu(op, a)?, shape),
            (gpu(op, b)?, shape),
            shape,
        )?;
        Ok(Launched::Ready(tensor(shape.clone(), out)?))
    }
}

fn add_n_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = super::host::for_host_dtypes(init)? {
        return Ok(k);
    }
    boxed(AddN {
        dev: f32_device(init)?,
    })
}

struct AddN {
    dev: VulkanDevice,
}

impl Launch for AddN {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        const OP: &str = "AddN";
        let Some(first) = inputs.first() else {
            return Err(KernelError::InvalidArgument("AddN needs an input".into()));
        };
        let shape = first.shape();
        if let Some(t) = inputs.iter().find(|t| t.shape() != shape) {
            return Err(KernelError::InvalidArgument(format!(
                "AddN needs inputs of one shape, got {shape} and {}",
                t.shape()
            )));
        }
        if inputs.len() == 1 {
            gpu(OP, first)?;
            return Ok(Launched::Ready(first.clone()));
        }
        let mut acc: Option<Arc<GpuBuffer>> = None;
        for t in &inputs[1..] {
            let left = match &acc {
                Some(b) => b,
                None => gpu(OP, first)?,
            };
            let sum = binary(
                &self.dev,
                OP,
                code::ADD,
                (left, shape),
                (gpu(OP, t)?, shape),
                shape,
            )?;
            acc = Some(sum);
        }
        let out = acc.expect("two inputs or more");
        Ok(Launched::Ready(tensor(shape.clone(), out)?))
    }
}

fn softmax_factory<const MODE: u32>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    boxed(Softmax {
        dev: f32_device(init)?,
        op: init.node.op.to_string(),
        mode: MODE,
    })
}

struct Softmax {
    dev: VulkanDevice,
    op: String,
    mode: u32,
}

impl Launch for Softmax {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let op = self.op.as_str();
        let x = &inputs[0];
        let Some(&classes) = x.dims().last() else {
            return Err(KernelError::InvalidArgument(format!(
                "{op} needs logits of rank 1 or more, got a scalar"
            )));
        };
        let gx = gpu(op, x)?;
        let n = x.num_elements();
        count32(op, n)?;
        let out = self.dev.alloc(op, n)?;
        if n > 0 {
            let rows = n / classes;
            let strides = [classes as u32, 1, classes as u32, 1];
            rows_dispatch(
                &self.dev,
                op,
                self.mode,
                [rows, classes],
                strides,
                [gx, gx, &out, &out],
            )?;
        }
        Ok(Launched::Ready(tensor(x.shape().clone(), out)?))
    }
}

/// Enqueues `softmax.comp` in `mode` over `rows` x `classes` (`classes` > 0) with the
/// strides of x and labels and bindings x, labels, y, loss.
fn rows_dispatch(
    dev: &VulkanDevice,
    op: &str,
    mode: u32,
    [rows, classes]: [usize; 2],
    strides: [u32; 4],
    buffers: [&GpuBuffer; 4],
) -> Result<(), KernelError> {
    let mut words = vec![count32(op, rows)?, count32(op, classes)?, mode, 0];
    words.extend_from_slice(&strides);
    let p = params(&words);
    let grid = dev.grid_1d(op, rows as u64)?;
    dev.enqueue(op, |r| r.dispatch(Shader::Softmax, &buffers, p, grid))
}

fn xent_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    Ok(BoxedKernel::Async(Box::new(Xent {
        dev: f32_device(init)?,
    })))
}

/// `SoftmaxCrossEntropyWithLogits`: two outputs, so an [`AsyncKernel`] of its own rather
/// than a [`Launch`].
struct Xent {
    dev: VulkanDevice,
}

impl Xent {
    fn launch(&self, features: &Tensor, labels: &Tensor) -> Result<Outputs, KernelError> {
        const OP: &str = "SoftmaxCrossEntropyWithLogits";
        let (fd, ld) = (features.dims(), labels.dims());
        if fd.len() != 2 || ld.len() != 2 {
            return Err(KernelError::InvalidArgument(format!(
                "{OP} needs matrices, got shapes {} and {}",
                features.shape(),
                labels.shape()
            )));
        }
        let dim = |i: usize| -> Result<usize, KernelError> {
            match (fd[i], ld[i]) {
                (a, b) if a == b => Ok(a),
                (1, b) => Ok(b),
                (a, 1) => Ok(a),
                _ => Err(KernelError::InvalidArgument(format!(
                    "{OP}: logits of shape {} and labels of shape {} do not broadcast",
                    features.shape(),
                    labels.shape()
                ))),
            }
        };
        let (batch, classes) = (dim(0)?, dim(1)?);
        let (gf, gl) = (gpu(OP, features)?, gpu(OP, labels)?);
        let backprop_shape = Shape::new(&[batch, classes])?;
        count32(OP, backprop_shape.num_elements())?;
        let loss = self.dev.alloc(OP, batch)?;
        let backprop = self.dev.alloc(OP, backprop_shape.num_elements())?;
        if batch > 0 && classes == 0 {
            // No classes: every row's loss is the empty sum.
            let l = Arc::clone(&loss);
            self.dev.enqueue(OP, move |r| r.fill(&l, 0))?;
        } else if batch > 0 {
            // Strides of a matrix that may be broadcast along either dimension.
            let stride = |d: &[usize]| -> Result<[u32; 2], KernelError> {
                let row = if d[0] == 1 { 0 } else { count32(OP, d[1])? };
                Ok([row, u32::from(d[1] != 1)])
            };
            let (sf, sl) = (stride(fd)?, stride(ld)?);
            rows_dispatch(
                &self.dev,
                OP,
                2,
                [batch, classes],
                [sf[0], sf[1], sl[0], sl[1]],
                [gf, gl, &backprop, &loss],
            )?;
        }
        Ok(smallvec![
            tensor(Shape::new(&[batch])?, loss)?,
            tensor(backprop_shape, backprop)?
        ])
    }
}

impl AsyncKernel for Xent {
    fn compute_async(
        &self,
        ctx: AsyncKernelContext,
    ) -> futures::future::BoxFuture<'static, Result<Outputs, KernelError>> {
        let inputs = ctx.inputs();
        futures::future::ready(self.launch(&inputs[0], &inputs[1])).boxed()
    }
}
