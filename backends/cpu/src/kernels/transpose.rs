//! `Transpose(x, perm)`, TensorFlow's op (every dtype; `perm` `i32` or `i64`): output
//! dimension `i` is input dimension `perm[i]`; `perm` must be a permutation of
//! `0..rank` (negative entries are not accepted, as in TensorFlow).

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::tensor::StorageElement;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError, Shape};

use super::support::{dispatch_any, index_vector, input_dtype, operand, Factory};
use crate::buffers::{output, Place};

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[("Transpose", factory)];

fn factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    dispatch_any!(init, input_dtype(init, 0)?, T => TransposeKernel::<T>(Place::of(init), PhantomData))
}

struct TransposeKernel<T>(Place, PhantomData<fn() -> T>);

impl<T: StorageElement> Kernel for TransposeKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let perm = index_vector("Transpose", 1, ctx.input(1))?;
        let x = ctx.input(0);
        let dims = x.dims();
        let rank = dims.len();
        let mut seen = vec![false; rank];
        let mut axes = Vec::with_capacity(rank);
        for &p in &perm {
            match usize::try_from(p) {
                Ok(a) if a < rank && !seen[a] => {
                    seen[a] = true;
                    axes.push(a);
                }
                _ => {
                    return Err(KernelError::InvalidArgument(format!(
                        "Transpose: {perm:?} is not a permutation of the {rank} dimensions of \
                         shape {}",
                        x.shape()
                    )))
                }
            }
        }
        if axes.len() != rank {
            return Err(KernelError::InvalidArgument(format!(
                "Transpose: {perm:?} is not a permutation of the {rank} dimensions of shape {}",
                x.shape()
            )));
        }
        let out_dims: Vec<usize> = axes.iter().map(|&a| dims[a]).collect();
        let shape = Shape::new(&out_dims)?;
        let data = operand::<T>("Transpose", 0, x)?;
        let n = shape.num_elements();
        let mut out = output::<T>(n, &self.0)?;
        if n > 0 {
            let in_strides = x.shape().strides();
            // The input stride of each output dimension, walked with an odometer.
            let strides: Vec<usize> = axes.iter().map(|&a| in_strides[a]).collect();
            let mut index = vec![0usize; rank];
            let mut pos = 0usize;
            loop {
                out.buf.push(data[pos]);
                let mut i = rank;
                loop {
                    if i == 0 {
                        ctx.push_output(out.into_tensor(shape)?);
                        return Ok(());
                    }
                    i -= 1;
                    index[i] += 1;
                    pos += strides[i];
                    if index[i] < out_dims[i] {
                        break;
                    }
                    pos -= strides[i] * out_dims[i];
                    index[i] = 0;
                }
            }
        }
        ctx.push_output(out.into_tensor(shape)?);
        Ok(())
    }
}
