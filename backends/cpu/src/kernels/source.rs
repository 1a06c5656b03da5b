//! Ops that produce or forward tensors without arithmetic: `Const`, `Placeholder`,
//! `PlaceholderWithDefault`, `Identity` (every dtype) and `RandomUniform` (`f32`, `f64`).
//!
//! None of them copies a tensor: `Const` hands out clones of its `value` attribute, and
//! the forwarding ops clone their input's `Arc`.
//!
//! `RandomUniform` (attributes `shape`, `seed`, `dtype`) fills its output in row-major
//! order from `ChaCha8Rng::seed_from_u64(seed as u64)`, drawing `rng.random::<f32>()` (or
//! `f64`) per element, uniform in `[0, 1)`. The generator is seeded afresh on every call,
//! so every step with the same seed yields the same tensor.

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError, Shape, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::numeric::FloatArith;
use super::support::{dispatch_float, sync, Factory};
use crate::buffers::{output, Place};
use crate::conv::known_shape;

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[
    ("Const", const_factory),
    ("Placeholder", placeholder_factory),
    ("PlaceholderWithDefault", forward_factory),
    ("Identity", forward_factory),
    ("RandomUniform", random_uniform_factory),
];

fn const_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    sync(ConstKernel(init.node.attrs.tensor("value")?))
}

/// Outputs its value.
struct ConstKernel(Tensor);

impl Kernel for ConstKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        ctx.push_output(self.0.clone());
        Ok(())
    }
}

fn placeholder_factory(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    sync(PlaceholderKernel)
}

/// Runs only when a step forgot to feed the placeholder.
struct PlaceholderKernel;

impl Kernel for PlaceholderKernel {
    fn compute(&self, _: &mut KernelContext<'_>) -> Result<(), KernelError> {
        Err(KernelError::InvalidArgument(
            "placeholder must be fed".into(),
        ))
    }
}

fn forward_factory(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    sync(ForwardKernel)
}

/// Outputs input 0 (`Identity`, and `PlaceholderWithDefault` when not fed).
struct ForwardKernel;

impl Kernel for ForwardKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        // A clone of the `Arc`, not `take_input`, which would allocate a stand-in.
        let x = ctx.input(0).clone();
        ctx.push_output(x);
        Ok(())
    }
}

fn random_uniform_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let attrs = &init.node.attrs;
    let shape = known_shape("RandomUniform", "shape", &attrs.ints("shape")?)?;
    let seed = attrs.int("seed")? as u64;
    dispatch_float!(init, attrs.dtype("dtype")?, T => RandomUniformKernel::<T> {
        shape,
        seed,
        place: Place::of(init),
        elem: PhantomData,
    })
}

struct RandomUniformKernel<T> {
    shape: Shape,
    seed: u64,
    /// The device's node and memory limit.
    place: Place,
    elem: PhantomData<fn() -> T>,
}

impl<T: FloatArith> Kernel for RandomUniformKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let n = self.shape.num_elements();
        let mut out = output::<T>(n, &self.place)?;
        out.buf.extend((0..n).map(|_| T::sample(&mut rng)));
        ctx.push_output(out.into_tensor(&self.shape)?);
        Ok(())
    }
}
