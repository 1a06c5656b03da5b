//! Add, Sub, Mul, Div, Maximum, Minimum, FloorMod: `binary4.comp` (four elements per
//! invocation) when each input has the output's shape or is a scalar, else `binary.comp`
//! with numpy broadcasting (integer operands: host-memory kernels, `host.rs`). Both compute through `elementwise.glsl`'s `binary_op`, which
//! other families (`nn.rs`) reuse through [`binary`] with their own op codes.
//!
//! The host computes the broadcast shape, drops dimensions of size 1 and merges adjacent
//! dimensions both inputs walk alike, so the shader sees at most 4 dimensions with a
//! stride per input (0 where it broadcasts). `[2, 3, 4] + [4]` runs as `[6, 4]`, and an
//! input with the output's shape is read at the output's own index. Broadcasts that still
//! need more than 4 dimensions are refused with an error naming both shapes.
//!
//! Division is IEEE (x / 0 is ±inf or NaN), within the GPU's division precision.
//! Maximum and Minimum give NaN when either side is NaN; FloorMod is TensorFlow's (the
//! remainder with the divisor's sign, from C's `fmod`; `x mod 0` is NaN), as on the CPU,
//! computed as `x - trunc(x / y) * y`: `fmod` exactly only while the quotient is well
//! below 2^24 and not within rounding of an integer.

use std::sync::Arc;

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, KernelError, Shape, Tensor};
use smallvec::{smallvec, SmallVec};

use super::support::{
    boxed, count32, elementwise, f32_device, gpu, tensor, vec4_ready, Factory, Launch, Launched,
};
use crate::device::{GpuBuffer, Shader, VulkanDevice};

pub(crate) const KERNELS: &[(&str, Factory)] = &[
    ("Add", factory::<0>),
    ("Sub", factory::<1>),
    ("Mul", factory::<2>),
    ("Div", factory::<3>),
    ("Maximum", factory::<4>),
    ("Minimum", factory::<5>),
    ("FloorMod", factory::<6>),
];

/// `binary_op` codes of `elementwise.glsl` that other families use.
pub(crate) mod code {
    /// `a + b`.
    pub(crate) const ADD: u32 = 0;
    /// `features > 0 ? gradients : 0`.
    pub(crate) const RELU_GRAD: u32 = 7;
    /// `dy * (1 - y²)`.
    pub(crate) const TANH_GRAD: u32 = 8;
    /// `dy * y * (1 - y)`.
    pub(crate) const SIGMOID_GRAD: u32 = 9;
}

/// Dimensions the shader walks.
const MAX_RANK: usize = 4;

fn factory<const OP: u32>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = super::host::for_host_dtypes(init)? {
        return Ok(k);
    }
    boxed(Binary {
        dev: f32_device(init)?,
        op: init.node.op.to_string(),
        code: OP,
    })
}

struct Binary {
    dev: VulkanDevice,
    op: String,
    code: u32,
}

type Dims = SmallVec<[u32; MAX_RANK]>;

/// The shader's view of a broadcast: output dimensions and each input's strides.
#[derive(Debug, PartialEq)]
pub(crate) struct Layout {
    dims: Dims,
    a: Dims,
    b: Dims,
}

/// Row-major strides of `shape` right-aligned in rank `rank`, 0 where it broadcasts.
fn aligned(shape: &Shape, rank: usize) -> SmallVec<[u64; 6]> {
    let mut out = smallvec![0; rank];
    let offset = rank - shape.rank();
    let mut stride = 1u64;
    for (i, &d) in shape.dims().iter().enumerate().rev() {
        if d != 1 {
            out[offset + i] = stride;
        }
        stride *= d as u64;
    }
    out
}

impl Layout {
    /// The collapsed layout of `a` and `b` broadcast to `out`, or an error when it needs
    /// more than [`MAX_RANK`] dimensions.
    pub(crate) fn new(op: &str, out: &Shape, a: &Shape, b: &Shape) -> Result<Layout, KernelError> {
        let rank = out.rank();
        let (sa, sb) = (aligned(a, rank), aligned(b, rank));
        let mut dims: SmallVec<[u64; 6]> = SmallVec::new();
        let (mut da, mut db): (SmallVec<[u64; 6]>, SmallVec<[u64; 6]>) = Default::default();
        for (i, &d) in out.dims().iter().enumerate() {
            let d = d as u64;
            if d == 1 {
                continue;
            }
            if let (Some(&la), Some(&lb)) = (da.last(), db.last()) {
                if la == sa[i] * d && lb == sb[i] * d {
                    *dims.last_mut().expect("non-empty") *= d;
                    *da.last_mut().expect("non-empty") = sa[i];
                    *db.last_mut().expect("non-empty") = sb[i];
                    continue;
                }
            }
            dims.push(d);
            da.push(sa[i]);
            db.push(sb[i]);
        }
        if dims.len() > MAX_RANK {
            return Err(KernelError::InvalidArgument(format!(
                "{op}: broadcasting shapes {a} and {b} on the GPU needs {} dimensions after \
                 merging; the kernel handles {MAX_RANK}",
                dims.len()
            )));
        }
        let pad = MAX_RANK - dims.len();
        let narrow = |v: &[u64], fill: u32| -> Dims {
            std::iter::repeat_n(fill, pad)
                .chain(v.iter().map(|&x| x as u32))
                .collect()
        };
        Ok(Layout {
            dims: narrow(&dims, 1),
            a: narrow(&da, 0),
            b: narrow(&db, 0),
        })
    }
}

impl Launch for Binary {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let op = self.op.as_str();
        let shape = Shape::broadcast(a.shape(), b.shape())
            .map_err(|e| KernelError::InvalidArgument(format!("{op}: {e}")))?;
        let out = binary(
            &self.dev,
            op,
            self.code,
            (gpu(op, a)?, a.shape()),
            (gpu(op, b)?, b.shape()),
            &shape,
        )?;
        Ok(Launched::Ready(tensor(shape, out)?))
    }
}

/// Enqueues `c = a OP b` (`OP` one of `binary_op`'s codes) for inputs that broadcast to
/// `shape` (each input given as its buffer and the shape to read it as, which may
/// relabel its elements: `BiasAdd` reads an `NCHW` bias as `[C, 1, 1]`), and returns the
/// output buffer.
pub(crate) fn binary(
    dev: &VulkanDevice,
    op: &str,
    code: u32,
    (ga, sa): (&GpuBuffer, &Shape),
    (gb, sb): (&GpuBuffer, &Shape),
    shape: &Shape,
) -> Result<Arc<GpuBuffer>, KernelError> {
    let n = shape.num_elements();
    count32(op, n)?;
    let layout = Layout::new(op, shape, sa, sb)?;
    let out = dev.alloc(op, n)?;
    let (whole_a, whole_b) = (sa == shape, sb == shape);
    let scalar = |s: &Shape| !(s == shape) && s.num_elements() == 1;
    if (whole_a || scalar(sa)) && (whole_b || scalar(sb)) && vec4_ready(n, &[ga, gb, &out]) {
        // Same shapes or scalars: four elements per invocation.
        let quads = n.div_ceil(4);
        let flags = u32::from(!whole_a) | (u32::from(!whole_b) << 1);
        let words = [quads as u32, code, flags];
        elementwise(dev, op, Shader::Binary4, &[ga, gb, &out], &words, quads)?;
        return Ok(out);
    }
    let flags = u32::from(whole_a) | (u32::from(whole_b) << 1);
    let mut words: Vec<u32> = Vec::with_capacity(16);
    words.extend_from_slice(&layout.dims);
    words.extend_from_slice(&layout.a);
    words.extend_from_slice(&layout.b);
    words.extend_from_slice(&[n as u32, code, flags, 0]);
    elementwise(dev, op, Shader::Binary, &[ga, gb, &out], &words, n)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(out: &[usize], a: &[usize], b: &[usize]) -> Result<Layout, KernelError> {
        let s = |d: &[usize]| Shape::new(d).unwrap();
        Layout::new("Add", &s(out), &s(a), &s(b))
    }

    #[test]
    fn broadcasts_collapse_to_few_dimensions() {
        let l = layout(&[2, 3, 4], &[2, 3, 4], &[4]).unwrap();
        assert_eq!(&l.dims[..], &[1, 1, 6, 4]);
        assert_eq!(&l.a[..], &[0, 0, 4, 1]);
        assert_eq!(&l.b[..], &[0, 0, 0, 1]);
        let l = layout(&[3, 4], &[3, 1], &[1, 4]).unwrap();
        assert_eq!(&l.dims[..], &[1, 1, 3, 4]);
        assert_eq!(&l.a[..], &[0, 0, 1, 0]);
        assert_eq!(&l.b[..], &[0, 0, 0, 1]);
        let l = layout(&[7], &[7], &[]).unwrap();
        assert_eq!(&l.dims[..], &[1, 1, 1, 7]);
        assert_eq!(&l.b[..], &[0, 0, 0, 0]);
    }

    #[test]
    fn too_many_alternating_dimensions_are_refused() {
        let e = layout(&[2, 2, 2, 2, 2], &[2, 1, 2, 1, 2], &[1, 2, 1, 2, 1]).unwrap_err();
        assert!(e.to_string().contains("[2, 1, 2, 1, 2]"), "{e}");
    }
}
