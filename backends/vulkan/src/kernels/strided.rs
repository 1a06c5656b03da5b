//! Tile, Transpose and Slice of f32 tensors: `strided.comp`, which reads each output
//! element from `x[base + sum (c_d mod m_d) * s_d]`. `multiples`, `perm`, `begin` and
//! `size` are host-memory integer vectors (`host.rs`), checked as the CPU kernels check
//! them. The host drops dimensions
//! of size 1 and, for Tile, merges a dimension into the one before it when it is not
//! repeated; what still needs more than 4 dimensions is refused naming the shapes.
//! Integer tensors are tiled and transposed by host-memory kernels.

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, DType, KernelError, Shape, Tensor};

use super::host::{self, host_ints};
use super::support::{
    boxed, count32, device_of, elementwise, gpu, tensor, unimplemented, Factory, Launch, Launched,
};
use crate::device::{Shader, VulkanDevice};

pub(crate) const KERNELS: &[(&str, Factory)] = &[
    ("Tile", factory::<TILE>),
    ("Transpose", factory::<TRANSPOSE>),
    ("Slice", factory::<SLICE>),
];

/// Which op a [`Strided`] kernel computes.
const TILE: u8 = 0;
const TRANSPOSE: u8 = 1;
const SLICE: u8 = 2;

/// Dimensions the shader walks.
const MAX_RANK: usize = 4;

fn factory<const OP: u8>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if let Some(k) = host::for_host_dtypes(init)? {
        return Ok(k);
    }
    if init.input_dtypes[0] != DType::F32 {
        return Err(unimplemented(init, init.input_dtypes[0]));
    }
    if let Some(&d) = init.input_dtypes[1..]
        .iter()
        .find(|&&d| !host::in_host_memory(d))
    {
        return Err(unimplemented(init, d));
    }
    boxed(Strided::<OP> {
        dev: device_of(init)?,
    })
}

struct Strided<const OP: u8> {
    dev: VulkanDevice,
}

/// The integers of a vector input (`multiples`, `perm`).
fn vector(op: &str, what: &str, t: &Tensor) -> Result<Vec<i64>, KernelError> {
    if t.shape().rank() != 1 {
        return Err(KernelError::InvalidArgument(format!(
            "{op}: {what} must be a vector, got shape {}",
            t.shape()
        )));
    }
    host_ints(op, what, t)
}

/// Tile's output dimensions and the shader's (dims, mods, strides) per output dimension.
fn tile_plan(x: &Shape, multiples: &[i64]) -> Result<(Vec<usize>, Plan), KernelError> {
    let dims = x.dims();
    if multiples.len() != dims.len() {
        return Err(KernelError::InvalidArgument(format!(
            "Tile of shape {x} needs {} multiples, got {multiples:?}",
            dims.len()
        )));
    }
    let mut out_dims = Vec::with_capacity(dims.len());
    for (&d, &m) in dims.iter().zip(multiples) {
        let m = usize::try_from(m).map_err(|_| {
            KernelError::InvalidArgument(format!(
                "Tile multiples must be non-negative, got {multiples:?}"
            ))
        })?;
        out_dims.push(d.checked_mul(m).ok_or_else(|| {
            KernelError::InvalidArgument(format!("Tile of shape {x} by {multiples:?} is too large"))
        })?);
    }
    let strides = x.strides();
    let mut plan = Plan::default();
    for i in 0..dims.len() {
        if out_dims[i] == 1 {
            continue;
        }
        let repeated = out_dims[i] != dims[i];
        // A dimension that is not repeated continues the previous one: (c mod m) * s
        // over the merged dimension walks both (the previous one's stride is this
        // one's times its size).
        if !repeated && !plan.dims.is_empty() {
            let last = plan.dims.len() - 1;
            if plan.strides[last] == strides[i] * dims[i] {
                plan.dims[last] *= out_dims[i];
                plan.mods[last] *= dims[i];
                plan.strides[last] = strides[i];
                continue;
            }
        }
        plan.dims.push(out_dims[i]);
        plan.mods.push(dims[i]);
        plan.strides.push(strides[i]);
    }
    Ok((out_dims, plan))
}

/// Transpose's output dimensions and the shader's plan.
fn transpose_plan(x: &Shape, perm: &[i64]) -> Result<(Vec<usize>, Plan), KernelError> {
    let dims = x.dims();
    let rank = dims.len();
    let bad = || {
        KernelError::InvalidArgument(format!(
            "Transpose: {perm:?} is not a permutation of the {rank} dimensions of shape {x}"
        ))
    };
    let mut seen = vec![false; rank];
    let mut axes = Vec::with_capacity(rank);
    for &p in perm {
        match usize::try_from(p) {
            Ok(a) if a < rank && !seen[a] => {
                seen[a] = true;
                axes.push(a);
            }
            _ => return Err(bad()),
        }
    }
    if axes.len() != rank {
        return Err(bad());
    }
    let strides = x.strides();
    let out_dims: Vec<usize> = axes.iter().map(|&a| dims[a]).collect();
    let mut plan = Plan::default();
    for &a in &axes {
        if dims[a] == 1 {
            continue;
        }
        plan.dims.push(dims[a]);
        plan.mods.push(dims[a]);
        plan.strides.push(strides[a]);
    }
    Ok((out_dims, plan))
}

/// Slice's output dimensions, the offset of its first element and the shader's plan.
fn slice_plan(
    x: &Shape,
    begin: &[i64],
    size: &[i64],
) -> Result<(Vec<usize>, usize, Plan), KernelError> {
    let dims = x.dims();
    if begin.len() != dims.len() || size.len() != dims.len() {
        return Err(KernelError::InvalidArgument(format!(
            "Slice of shape {x} needs begin and size of length {}, got {begin:?} and {size:?}",
            dims.len()
        )));
    }
    let strides = x.strides();
    let (mut out_dims, mut base) = (Vec::with_capacity(dims.len()), 0usize);
    let mut plan = Plan::default();
    for i in 0..dims.len() {
        let d = dims[i] as i64;
        let b = begin[i];
        let s = if size[i] == -1 {
            d.saturating_sub(b)
        } else {
            size[i]
        };
        if b < 0 || s < 0 || b > d || s > d - b {
            return Err(KernelError::InvalidArgument(format!(
                "Slice of shape {x} at begin {begin:?} with size {size:?} leaves the tensor \
                 in dimension {i}"
            )));
        }
        let (b, s) = (b as usize, s as usize);
        base += b * strides[i];
        out_dims.push(s);
        if s == 1 {
            continue;
        }
        // A whole dimension continues the previous one when that one's stride is its
        // size times its own.
        if s == dims[i] {
            if let Some(last) = plan.dims.len().checked_sub(1) {
                if plan.strides[last] == strides[i] * dims[i] {
                    plan.dims[last] *= s;
                    plan.mods[last] *= s;
                    plan.strides[last] = strides[i];
                    continue;
                }
            }
        }
        plan.dims.push(s);
        plan.mods.push(s);
        plan.strides.push(strides[i]);
    }
    Ok((out_dims, base, plan))
}

/// The shader's view: per output dimension (outermost first) its size, the modulus of
/// its index and the input stride.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    dims: Vec<usize>,
    mods: Vec<usize>,
    strides: Vec<usize>,
}

impl Plan {
    /// The push-constant words, or an error when more than [`MAX_RANK`] dimensions remain.
    fn words(&self, op: &str, x: &Shape, n: usize, base: usize) -> Result<Vec<u32>, KernelError> {
        if self.dims.len() > MAX_RANK {
            return Err(KernelError::InvalidArgument(format!(
                "{op} of shape {x} needs {} dimensions on the GPU; the kernel handles {MAX_RANK}",
                self.dims.len()
            )));
        }
        let pad = MAX_RANK - self.dims.len();
        let mut words = Vec::with_capacity(16);
        for (v, fill) in [(&self.dims, 1), (&self.mods, 1), (&self.strides, 0)] {
            words.extend(std::iter::repeat_n(fill, pad));
            for &d in v {
                words.push(count32(op, d)?);
            }
        }
        words.push(count32(op, n)?);
        words.push(count32(op, base)?);
        Ok(words)
    }
}

impl<const OP: u8> Launch for Strided<OP> {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let x = &inputs[0];
        let (op, (out_dims, base, plan)) = match OP {
            TRANSPOSE => {
                let perm = vector("Transpose", "perm", &inputs[1])?;
                let (dims, plan) = transpose_plan(x.shape(), &perm)?;
                ("Transpose", (dims, 0, plan))
            }
            SLICE => {
                let begin = vector("Slice", "begin", &inputs[1])?;
                let size = vector("Slice", "size", &inputs[2])?;
                ("Slice", slice_plan(x.shape(), &begin, &size)?)
            }
            _ => {
                let multiples = vector("Tile", "multiples", &inputs[1])?;
                let (dims, plan) = tile_plan(x.shape(), &multiples)?;
                ("Tile", (dims, 0, plan))
            }
        };
        let shape = Shape::new(&out_dims)?;
        let n = shape.num_elements();
        let gx = gpu(op, x)?;
        count32(op, x.num_elements())?;
        let words = plan.words(op, x.shape(), n, base)?;
        let out = self.dev.alloc(op, n)?;
        elementwise(&self.dev, op, Shader::Strided, &[gx, &out], &words, n)?;
        Ok(Launched::Ready(tensor(shape, out)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(d: &[usize]) -> Shape {
        Shape::new(d).unwrap()
    }

    #[test]
    fn tile_merges_dimensions_that_are_not_repeated() {
        let (out, plan) = tile_plan(&shape(&[2, 3, 4]), &[2, 1, 1]).unwrap();
        assert_eq!(out, [4, 3, 4]);
        // (c mod 24) over all 48 outputs: the input read twice in a row.
        assert_eq!(plan.dims, [48]);
        assert_eq!(plan.mods, [24]);
        assert_eq!(plan.strides, [1]);
        let (out, plan) = tile_plan(&shape(&[2, 3]), &[1, 2]).unwrap();
        assert_eq!(out, [2, 6]);
        assert_eq!(plan.dims, [2, 6]);
        assert_eq!(plan.mods, [2, 3]);
        assert_eq!(plan.strides, [3, 1]);
        let e = tile_plan(&shape(&[2]), &[1, 2]).unwrap_err();
        assert!(e.to_string().contains("needs 1 multiples"), "{e}");
    }

    #[test]
    fn transpose_reads_the_permuted_strides() {
        let (out, plan) = transpose_plan(&shape(&[2, 1, 3]), &[2, 0, 1]).unwrap();
        assert_eq!(out, [3, 2, 1]);
        assert_eq!(plan.dims, [3, 2]);
        assert_eq!(plan.strides, [1, 3]);
        assert!(transpose_plan(&shape(&[2, 3]), &[0, 0]).is_err());
    }

    #[test]
    fn slice_merges_whole_inner_dimensions_and_offsets_the_start() {
        let (out, base, plan) = slice_plan(&shape(&[4, 3, 5]), &[1, 0, 0], &[2, -1, -1]).unwrap();
        assert_eq!(out, [2, 3, 5]);
        assert_eq!(base, 15);
        assert_eq!(plan.dims, [30]);
        assert_eq!(plan.strides, [1]);
        let e = slice_plan(&shape(&[4]), &[3], &[2]).unwrap_err();
        assert!(e.to_string().contains("leaves the tensor"), "{e}");
    }
}
