//! Identity and Reshape: no GPU work; the output shares the input's device buffer.

use magpie_core::kernel::{Kernel, KernelContext, KernelInit};
use magpie_core::shape_fn::reshape_target;
use magpie_core::{BoxedKernel, KernelError};

use super::support::{f32_device, gpu, Factory};

pub(crate) const KERNELS: &[(&str, Factory)] =
    &[("Identity", identity_factory), ("Reshape", reshape_factory)];

fn identity_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    f32_device(init)?;
    Ok(BoxedKernel::Sync(Box::new(Identity)))
}

struct Identity;

impl Kernel for Identity {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.take_input(0);
        gpu("Identity", &x)?;
        ctx.push_output(x);
        Ok(())
    }
}

fn reshape_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    f32_device(init)?;
    let dims = init.node.attrs.ints("shape")?;
    if dims.iter().any(|&d| d < -1) || dims.iter().filter(|&&d| d == -1).count() > 1 {
        return Err(KernelError::InvalidArgument(format!(
            "Reshape shape {dims:?} may hold non-negative dimensions and at most one -1"
        )));
    }
    Ok(BoxedKernel::Sync(Box::new(Reshape { dims })))
}

struct Reshape {
    /// The `shape` attribute as given (at most one -1).
    dims: Vec<i64>,
}

impl Kernel for Reshape {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.input(0);
        gpu("Reshape", x)?;
        let shape = reshape_target(x.shape(), &self.dims)?;
        let y = x.reshape(shape)?;
        ctx.push_output(y);
        Ok(())
    }
}
