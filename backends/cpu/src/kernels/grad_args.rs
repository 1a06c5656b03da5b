//! `BroadcastGradientArgs(s0, s1)`: for two shapes (vectors of `i32` or `i64`, one dtype)
//! that broadcast together, the axes of the broadcast result along which each was
//! stretched — what the gradient of a broadcasting op sums over to get back each input's
//! shape. TensorFlow's rule: equal shapes give two empty vectors; otherwise both are
//! aligned at their ends with leading 1s, and axis `j` is listed for each input whose
//! dimension there is 1 (for both when both are 1). Dimensions that differ with neither 1
//! are an error.

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, DType, Kernel, KernelContext, KernelError};

use super::support::{index_vector, input_dtype, sync, Factory};
use crate::buffers::Place;

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[("BroadcastGradientArgs", factory)];

fn factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    sync(GradArgsKernel(input_dtype(init, 0)?, Place::of(init)))
}

/// Outputs its two index vectors in this dtype, on this place.
struct GradArgsKernel(DType, Place);

/// The reduction axes of each of two shapes (see the module docs).
pub(crate) fn reduction_axes(s0: &[i64], s1: &[i64]) -> Result<(Vec<i64>, Vec<i64>), String> {
    if s0 == s1 {
        return Ok((Vec::new(), Vec::new()));
    }
    let rank = s0.len().max(s1.len());
    let at = |s: &[i64], j: usize| match (j + s.len()).checked_sub(rank) {
        Some(k) => s[k],
        None => 1,
    };
    let (mut r0, mut r1) = (Vec::new(), Vec::new());
    for j in 0..rank {
        let (a, b) = (at(s0, j), at(s1, j));
        if a != b && a != 1 && b != 1 {
            return Err(format!("Incompatible shapes: {s0:?} vs. {s1:?}"));
        }
        if a == 1 {
            r0.push(j as i64);
        }
        if b == 1 {
            r1.push(j as i64);
        }
    }
    Ok((r0, r1))
}

impl Kernel for GradArgsKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let s0 = index_vector("BroadcastGradientArgs", 0, ctx.input(0))?;
        let s1 = index_vector("BroadcastGradientArgs", 1, ctx.input(1))?;
        if let Some(d) = s0.iter().chain(&s1).find(|d| **d < 0) {
            return Err(KernelError::InvalidArgument(format!(
                "BroadcastGradientArgs: dimension {d} in shapes {s0:?} and {s1:?}"
            )));
        }
        let (r0, r1) = reduction_axes(&s0, &s1)
            .map_err(|e| KernelError::InvalidArgument(format!("BroadcastGradientArgs: {e}")))?;
        for r in [r0, r1] {
            let n = r.len();
            let t = match self.0 {
                DType::I64 => super::dims::values(r, n, &self.1)?,
                _ => super::dims::values(r.iter().map(|&v| v as i32), n, &self.1)?,
            };
            ctx.push_output(t);
        }
        Ok(())
    }
}
