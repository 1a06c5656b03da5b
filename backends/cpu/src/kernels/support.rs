//! Helpers shared by the kernel families: the factory type, dtype dispatch, error
//! builders and buffer reuse.

use magpie_core::kernel::KernelInit;
use magpie_core::tensor::StorageElement;
use magpie_core::{BoxedKernel, DType, Kernel, KernelContext, KernelError, Tensor};

/// Builds a kernel for one node; what `register()` hands to the registry.
pub(crate) type Factory = fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError>;

/// Below this many elements a kernel does not try to reuse an input's buffer.
///
/// Taking an input out of a [`KernelContext`] costs two small allocations (the context
/// leaves an empty tensor behind), which is as much as allocating the output of a small
/// tensor afresh; a scalar op must stay cheap. Behaviour at the time of writing, not a
/// guarantee: reuse is an optimisation the results never depend on.
pub(crate) const REUSE_MIN_ELEMENTS: usize = 64;

/// Boxes a synchronous kernel.
pub(crate) fn sync(k: impl Kernel + 'static) -> Result<BoxedKernel, KernelError> {
    Ok(BoxedKernel::Sync(Box::new(k)))
}

/// The "no kernel for this dtype" error for the node being built.
pub(crate) fn no_kernel_for(init: &KernelInit<'_>, dtype: DType) -> KernelError {
    KernelError::Unimplemented {
        op: init.node.op.to_string(),
        dtype,
        device_type: init.device.device_type().to_string(),
    }
}

/// The dtype of input `i`, or an internal error when the executor passed too few.
pub(crate) fn input_dtype(init: &KernelInit<'_>, i: usize) -> Result<DType, KernelError> {
    init.input_dtypes.get(i).copied().ok_or_else(|| {
        KernelError::Internal(format!(
            "{} kernel built with {} input dtypes, needs input {i}",
            init.node.op,
            init.input_dtypes.len()
        ))
    })
}

/// The dtype every input shares (ops whose definitions require equal dtypes).
pub(crate) fn common_dtype(init: &KernelInit<'_>, inputs: usize) -> Result<DType, KernelError> {
    let dtype = input_dtype(init, 0)?;
    for i in 1..inputs {
        let other = input_dtype(init, i)?;
        if other != dtype {
            return Err(KernelError::InvalidArgument(format!(
                "{} needs inputs of one dtype, got {dtype} and {other}",
                init.node.op
            )));
        }
    }
    Ok(dtype)
}

/// Input `i`'s elements as `T`, checked to hold exactly as many elements as its shape
/// says: the bound every offset a kernel computes from the shape relies on.
///
/// # Errors
/// Invalid argument naming the op and input when the dtype is not `T`, the elements are
/// not in host memory, or the count differs.
#[inline]
pub(crate) fn operand<'t, T: StorageElement>(
    op: &str,
    i: usize,
    t: &'t Tensor,
) -> Result<&'t [T], KernelError> {
    let data = t.as_slice::<T>()?;
    if data.len() != t.shape().num_elements() {
        return Err(KernelError::InvalidArgument(format!(
            "{op}: input {i} holds {} elements, but its shape {} has {}",
            data.len(),
            t.shape(),
            t.shape().num_elements()
        )));
    }
    Ok(data)
}

/// Takes input `i` and its elements' buffer when it is large enough to be worth it and
/// this context held the only reference. Otherwise the input stays put (if small) or comes
/// back as `Err` (if taken but shared).
pub(crate) fn take_unique<T: StorageElement>(
    ctx: &mut KernelContext<'_>,
    i: usize,
) -> Option<Result<Vec<T>, Tensor>> {
    if ctx.input(i).num_elements() < REUSE_MIN_ELEMENTS || ctx.input(i).dtype() != T::DTYPE {
        return None;
    }
    Some(ctx.take_input(i).try_into_vec::<T>())
}

/// Builds the kernel `$make` with `$t` bound to the Rust type of `$dtype`, for the
/// numeric dtypes; any other dtype is [`no_kernel_for`].
macro_rules! dispatch_numeric {
    ($init:expr, $dtype:expr, $t:ident => $make:expr) => {
        match $dtype {
            magpie_core::DType::F32 => {
                type $t = f32;
                $crate::kernels::support::sync($make)
            }
            magpie_core::DType::F64 => {
                type $t = f64;
                $crate::kernels::support::sync($make)
            }
            magpie_core::DType::I32 => {
                type $t = i32;
                $crate::kernels::support::sync($make)
            }
            magpie_core::DType::I64 => {
                type $t = i64;
                $crate::kernels::support::sync($make)
            }
            other => Err($crate::kernels::support::no_kernel_for($init, other)),
        }
    };
}

/// Like [`dispatch_numeric!`], for `f32` and `f64` only.
macro_rules! dispatch_float {
    ($init:expr, $dtype:expr, $t:ident => $make:expr) => {
        match $dtype {
            magpie_core::DType::F32 => {
                type $t = f32;
                $crate::kernels::support::sync($make)
            }
            magpie_core::DType::F64 => {
                type $t = f64;
                $crate::kernels::support::sync($make)
            }
            other => Err($crate::kernels::support::no_kernel_for($init, other)),
        }
    };
}

/// Like [`dispatch_numeric!`], for every dtype, `bool` included (data movement).
macro_rules! dispatch_any {
    ($init:expr, $dtype:expr, $t:ident => $make:expr) => {
        match $dtype {
            magpie_core::DType::Bool => {
                type $t = bool;
                $crate::kernels::support::sync($make)
            }
            other => $crate::kernels::support::dispatch_numeric!($init, other, $t => $make),
        }
    };
}

pub(crate) use {dispatch_any, dispatch_float, dispatch_numeric};

/// The elements of an index-valued input (shapes, axes, offsets, multiples: TensorFlow
/// types them `i32` or `i64`) as `i64`s.
///
/// # Errors
/// Invalid argument naming the op and input for another dtype, or elements not in host
/// memory.
pub(crate) fn index_values(op: &str, i: usize, t: &Tensor) -> Result<Vec<i64>, KernelError> {
    match t.dtype() {
        DType::I32 => Ok(operand::<i32>(op, i, t)?
            .iter()
            .map(|&v| i64::from(v))
            .collect()),
        DType::I64 => Ok(operand::<i64>(op, i, t)?.to_vec()),
        other => Err(KernelError::InvalidArgument(format!(
            "{op}: input {i} must be i32 or i64, got {other}"
        ))),
    }
}

/// An index-valued input that must be a vector (rank 1), as `i64`s.
///
/// # Errors
/// As [`index_values`]; also another rank.
pub(crate) fn index_vector(op: &str, i: usize, t: &Tensor) -> Result<Vec<i64>, KernelError> {
    if t.shape().rank() != 1 {
        return Err(KernelError::InvalidArgument(format!(
            "{op}: input {i} must be a vector, got shape {}",
            t.shape()
        )));
    }
    index_values(op, i, t)
}

/// An index-valued input that must hold one element (a scalar or a 1-vector), as `i64`.
///
/// # Errors
/// As [`index_values`]; also another element count.
pub(crate) fn index_scalar(op: &str, i: usize, t: &Tensor) -> Result<i64, KernelError> {
    match index_values(op, i, t)?[..] {
        [v] => Ok(v),
        _ => Err(KernelError::InvalidArgument(format!(
            "{op}: input {i} must hold one element, got shape {}",
            t.shape()
        ))),
    }
}

/// Dimensions given as a vector of non-negative integers (a shape tensor), as a shape.
///
/// # Errors
/// Invalid argument for a negative dimension; an element count too large is an error too.
pub(crate) fn dims_shape(op: &str, dims: &[i64]) -> Result<magpie_core::Shape, KernelError> {
    let mut out = Vec::with_capacity(dims.len());
    for &d in dims {
        out.push(usize::try_from(d).map_err(|_| {
            KernelError::InvalidArgument(format!(
                "{op}: dimensions must be non-negative, got {dims:?}"
            ))
        })?);
    }
    Ok(magpie_core::Shape::new(&out)?)
}
