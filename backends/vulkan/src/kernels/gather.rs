//! GatherV2, ConcatV2, Pack and Unpack of f32 tensors: `rows.comp`, which copies rows of the elements
//! after the axis between `[outer, len, inner]` views. The indices and the axis are
//! host-memory integers (`host.rs`), checked as the CPU kernels check them before
//! anything is enqueued (an index outside the axis is an error, as on TensorFlow's CPU);
//! GatherV2 uploads its row numbers (stream-ordered), ConcatV2 and Pack make one dispatch
//! per non-empty input, Unpack one per output. Integer tensors are gathered and joined by host-memory kernels.

use futures::FutureExt;
use magpie_core::kernel::{AsyncKernel, AsyncKernelContext, KernelInit, Outputs};
use magpie_core::{BoxedKernel, DType, KernelError, Shape, Tensor};

use super::host::{self, host_ints};
use super::support::{
    boxed, count32, device_of, elementwise, gpu, normalize_axis, tensor, unimplemented, Factory,
    Launch, Launched,
};
use crate::device::{GpuBuffer, Shader, VulkanDevice};

pub(crate) const KERNELS: &[(&str, Factory)] = &[
    ("GatherV2", gather_factory),
    ("ConcatV2", concat_factory),
    ("Pack", pack_factory),
    ("Unpack", unpack_factory),
];

/// Checks that the node's data inputs (all but the last `host_inputs`) are f32 and the
/// rest live in host memory; the host-memory kernel when nothing is f32.
fn mixed(init: &KernelInit<'_>, host_inputs: usize) -> Result<Option<BoxedKernel>, KernelError> {
    if let Some(k) = host::for_host_dtypes(init)? {
        return Ok(Some(k));
    }
    let n = init.input_dtypes.len();
    let split = n.saturating_sub(host_inputs);
    if let Some(&d) = init.input_dtypes[..split]
        .iter()
        .find(|&&d| d != DType::F32)
    {
        return Err(unimplemented(init, d));
    }
    if let Some(&d) = init.input_dtypes[split..]
        .iter()
        .find(|&&d| !host::in_host_memory(d))
    {
        return Err(unimplemented(init, d));
    }
    Ok(None)
}

/// The single integer of a host-memory scalar (an axis).
fn scalar(op: &str, what: &str, t: &Tensor) -> Result<i64, KernelError> {
    match host_ints(op, what, t)?.as_slice() {
        [v] if t.shape().rank() <= 1 => Ok(*v),
        _ => Err(KernelError::InvalidArgument(format!(
            "{op}: {what} must be a scalar, got shape {}",
            t.shape()
        ))),
    }
}

/// One `rows.comp` dispatch (see the shader for the parameters).
struct RowCopy<'a> {
    x: &'a GpuBuffer,
    rows: Option<&'a GpuBuffer>,
    out: &'a GpuBuffer,
    /// [outer, nrows, inner].
    view: [usize; 3],
    src_len: usize,
    src_off: usize,
    dst_len: usize,
    dst_off: usize,
}

impl RowCopy<'_> {
    fn enqueue(&self, dev: &VulkanDevice, op: &str) -> Result<(), KernelError> {
        let [outer, nrows, inner] = self.view;
        let n = outer * nrows * inner;
        if n == 0 {
            return Ok(());
        }
        let words = [
            count32(op, n)?,
            count32(op, inner)?,
            count32(op, nrows)?,
            u32::from(self.rows.is_some()),
            count32(op, self.src_len)?,
            count32(op, self.dst_len)?,
            count32(op, self.dst_off)?,
            count32(op, self.src_off)?,
        ];
        let rows = self.rows.unwrap_or(self.x);
        elementwise(dev, op, Shader::Rows, &[self.x, rows, self.out], &words, n)
    }
}

fn gather_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = mixed(init, 2)? {
        return Ok(k);
    }
    boxed(Gather {
        dev: device_of(init)?,
    })
}

struct Gather {
    dev: VulkanDevice,
}

impl Launch for Gather {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        const OP: &str = "GatherV2";
        let (params, indices) = (&inputs[0], &inputs[1]);
        let axis = scalar(OP, "the axis", &inputs[2])?;
        let idx = host_ints(OP, "the indices", indices)?;
        let dims = params.dims();
        if dims.is_empty() {
            return Err(KernelError::InvalidArgument(
                "GatherV2 needs params of rank 1 or more, got a scalar".into(),
            ));
        }
        let at = normalize_axis(OP, axis, dims.len())?;
        let mut out_dims = dims[..at].to_vec();
        out_dims.extend_from_slice(indices.dims());
        out_dims.extend_from_slice(&dims[at + 1..]);
        let shape = Shape::new(&out_dims)?;
        let (outer, len) = (dims[..at].iter().product::<usize>(), dims[at]);
        let inner: usize = dims[at + 1..].iter().product();
        let mut rows = Vec::with_capacity(idx.len());
        for &i in &idx {
            match usize::try_from(i) {
                // Row numbers travel as the bits of f32s (the device's buffers' type).
                Ok(r) if r < len => rows.push(f32::from_bits(count32(OP, r)?)),
                _ => {
                    return Err(KernelError::InvalidArgument(format!(
                        "GatherV2: index {i} is outside [0, {len}) along axis {axis} of \
                         shape {}",
                        params.shape()
                    )))
                }
            }
        }
        let gp = gpu(OP, params)?;
        count32(OP, params.num_elements())?;
        let n = shape.num_elements();
        count32(OP, n)?;
        let out = self.dev.alloc(OP, n)?;
        if n > 0 {
            let row_buffer = self.dev.upload(OP, &rows)?;
            RowCopy {
                x: gp,
                rows: Some(&row_buffer),
                out: &out,
                view: [outer, rows.len(), inner],
                src_len: len,
                src_off: 0,
                dst_len: rows.len(),
                dst_off: 0,
            }
            .enqueue(&self.dev, OP)?;
        }
        Ok(Launched::Ready(tensor(shape, out)?))
    }
}

fn concat_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = mixed(init, 1)? {
        return Ok(k);
    }
    boxed(Concat {
        dev: device_of(init)?,
    })
}

struct Concat {
    dev: VulkanDevice,
}

impl Launch for Concat {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        const OP: &str = "ConcatV2";
        let Some((axis_t, values)) = inputs.split_last() else {
            return Err(KernelError::InvalidArgument("ConcatV2 needs inputs".into()));
        };
        let axis = scalar(OP, "the axis", axis_t)?;
        let Some(first) = values.first() else {
            return Err(KernelError::InvalidArgument(
                "ConcatV2 needs a value to join".into(),
            ));
        };
        let first = first.dims().to_vec();
        if first.is_empty() {
            return Err(KernelError::InvalidArgument(
                "ConcatV2 cannot join scalars".into(),
            ));
        }
        let at = normalize_axis(OP, axis, first.len())?;
        let mut total = 0usize;
        for (i, t) in values.iter().enumerate() {
            let d = t.dims();
            let fits = d.len() == first.len()
                && d.iter()
                    .zip(&first)
                    .enumerate()
                    .all(|(k, (a, b))| k == at || a == b);
            if !fits {
                return Err(KernelError::InvalidArgument(format!(
                    "ConcatV2 along axis {axis}: input 0 has shape {}, input {i} {}",
                    values[0].shape(),
                    t.shape()
                )));
            }
            total = total.checked_add(d[at]).ok_or_else(|| {
                KernelError::InvalidArgument("ConcatV2: the joined dimension overflows".into())
            })?;
        }
        let mut dims = first.clone();
        dims[at] = total;
        let shape = Shape::new(&dims)?;
        let n = shape.num_elements();
        count32(OP, n)?;
        let outer: usize = first[..at].iter().product();
        let inner: usize = first[at + 1..].iter().product();
        let buffers = values
            .iter()
            .map(|t| gpu(OP, t))
            .collect::<Result<Vec<_>, _>>()?;
        let out = self.dev.alloc(OP, n)?;
        let mut offset = 0;
        for (t, g) in values.iter().zip(buffers) {
            let len = t.dims()[at];
            RowCopy {
                x: g,
                rows: None,
                out: &out,
                view: [outer, len, inner],
                src_len: len,
                src_off: 0,
                dst_len: total,
                dst_off: offset,
            }
            .enqueue(&self.dev, OP)?;
            offset += len;
        }
        Ok(Launched::Ready(tensor(shape, out)?))
    }
}

/// Pack's and Unpack's `axis` attribute (0 when absent), as the CPU reads it.
fn axis_attr(init: &KernelInit<'_>) -> Result<i64, KernelError> {
    Ok(init.node.attrs.opt_int("axis")?.unwrap_or(0))
}

fn pack_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = mixed(init, 0)? {
        return Ok(k);
    }
    boxed(Pack {
        dev: device_of(init)?,
        axis: axis_attr(init)?,
    })
}

struct Pack {
    dev: VulkanDevice,
    axis: i64,
}

impl Launch for Pack {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        const OP: &str = "Pack";
        let Some(first) = inputs.first() else {
            return Err(KernelError::InvalidArgument("Pack needs inputs".into()));
        };
        let item = first.shape();
        if let Some((i, t)) = inputs.iter().enumerate().find(|(_, t)| t.shape() != item) {
            return Err(KernelError::InvalidArgument(format!(
                "Pack needs inputs of one shape: input 0 has shape {item}, input {i} {}",
                t.shape()
            )));
        }
        let at = normalize_axis(OP, self.axis, item.rank() + 1)?;
        let mut dims = item.dims().to_vec();
        dims.insert(at, inputs.len());
        let shape = Shape::new(&dims)?;
        let n = shape.num_elements();
        count32(OP, n)?;
        let outer: usize = item.dims()[..at].iter().product();
        let block: usize = item.dims()[at..].iter().product();
        let buffers = inputs
            .iter()
            .map(|t| gpu(OP, t))
            .collect::<Result<Vec<_>, _>>()?;
        let out = self.dev.alloc(OP, n)?;
        for (k, g) in buffers.into_iter().enumerate() {
            RowCopy {
                x: g,
                rows: None,
                out: &out,
                view: [outer, 1, block],
                src_len: 1,
                src_off: 0,
                dst_len: inputs.len(),
                dst_off: k,
            }
            .enqueue(&self.dev, OP)?;
        }
        Ok(Launched::Ready(tensor(shape, out)?))
    }
}

fn unpack_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = mixed(init, 0)? {
        return Ok(k);
    }
    Ok(BoxedKernel::Async(Box::new(Unpack {
        dev: device_of(init)?,
        axis: axis_attr(init)?,
        num: init.node.attrs.int("num")?,
    })))
}

/// Unpack: `num` outputs, so an [`AsyncKernel`] of its own rather than a [`Launch`].
struct Unpack {
    dev: VulkanDevice,
    axis: i64,
    num: i64,
}

impl Unpack {
    fn launch(&self, x: &Tensor) -> Result<Outputs, KernelError> {
        const OP: &str = "Unpack";
        let dims = x.dims();
        let at = normalize_axis(OP, self.axis, dims.len())?;
        if i64::try_from(dims[at]) != Ok(self.num) {
            return Err(KernelError::InvalidArgument(format!(
                "Unpack of num={} along axis {} of shape {}",
                self.num,
                self.axis,
                x.shape()
            )));
        }
        let gx = gpu(OP, x)?;
        count32(OP, x.num_elements())?;
        let outer: usize = dims[..at].iter().product();
        let block: usize = dims[at + 1..].iter().product();
        let mut item = dims.to_vec();
        item.remove(at);
        let shape = Shape::new(&item)?;
        let mut outs = Outputs::new();
        for k in 0..dims[at] {
            let out = self.dev.alloc(OP, outer * block)?;
            RowCopy {
                x: gx,
                rows: None,
                out: &out,
                view: [outer, 1, block],
                src_len: dims[at],
                src_off: k,
                dst_len: 1,
                dst_off: 0,
            }
            .enqueue(&self.dev, OP)?;
            outs.push(tensor(shape.clone(), out)?);
        }
        Ok(outs)
    }
}

impl AsyncKernel for Unpack {
    fn compute_async(
        &self,
        ctx: AsyncKernelContext,
    ) -> futures::future::BoxFuture<'static, Result<Outputs, KernelError>> {
        futures::future::ready(self.launch(&ctx.inputs()[0])).boxed()
    }
}
