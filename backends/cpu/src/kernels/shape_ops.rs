//! Shape and dtype plumbing: `Reshape`, `Cast`, `Fill`, `ZerosLike`. Every dtype,
//! `bool` included. (TensorFlow's two-input `Reshape(x, shape)` and `Fill(dims, value)`
//! are `dims.rs`'s.)
//!
//! - `Reshape` (attribute `shape`, ints, at most one -1 which is inferred) shares the
//!   input's buffer under the new shape; the element counts must match.
//! - `Cast` (attribute `dtype`) converts with Rust's `as` between numeric types (floats
//!   to integers saturate, NaN becomes 0; with `out_of_range = "int_min"`, TensorFlow's
//!   rule: NaN, infinities and out-of-range values become the integer minimum); a number becomes `bool` as `x != 0` (so NaN is
//!   `true`), and a `bool` becomes 0 or 1. A cast to the input's own dtype shares its
//!   buffer.
//! - `Fill` (attribute `shape`, ints, all known) repeats input 0, a scalar or (as
//!   TensorFlow accepts) a vector of one element.
//! - `ZerosLike` gives zeros (or `false`s) of the input's shape and dtype.

use magpie_core::graph::{CAST_INT_MIN, CAST_OUT_OF_RANGE_ATTR};
use magpie_core::kernel::KernelInit;
use magpie_core::shape_fn::reshape_target;
use magpie_core::tensor::{Storage, StorageElement};
use magpie_core::{BoxedKernel, DType, Kernel, KernelContext, KernelError, Shape, Tensor};

use super::support::{input_dtype, sync, Factory};
use crate::buffers::{filled, output, Place};
use crate::conv::known_shape;

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[
    ("Reshape", reshape_factory),
    ("Cast", cast_factory),
    ("Fill", fill_factory),
    ("ZerosLike", zeros_like_factory),
];

fn reshape_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if init.input_dtypes.len() == 2 {
        return super::dims::reshape_factory(init);
    }
    let dims = init.node.attrs.ints("shape")?;
    if dims.iter().any(|&d| d < -1) || dims.iter().filter(|&&d| d == -1).count() > 1 {
        return Err(KernelError::InvalidArgument(format!(
            "Reshape shape {dims:?} may hold non-negative dimensions and at most one -1"
        )));
    }
    sync(ReshapeKernel { dims })
}

struct ReshapeKernel {
    /// The `shape` attribute as given.
    dims: Vec<i64>,
}

impl Kernel for ReshapeKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.input(0);
        let shape = reshape_target(x.shape(), &self.dims)?;
        let y = x.reshape(shape)?;
        ctx.push_output(y);
        Ok(())
    }
}

/// Converts a whole tensor to another dtype.
type CastFn = fn(&Tensor, &Place) -> Result<Tensor, KernelError>;

/// One element converted with `Cast`'s semantics.
trait Convert<U> {
    fn convert(self) -> U;
}

macro_rules! convert_numeric {
    ($($s:ty),*) => {$(
        convert_numeric!(@from $s => f32, f64, i32, i64);
        impl Convert<bool> for $s {
            #[inline(always)]
            fn convert(self) -> bool {
                self != (0 as $s)
            }
        }
        impl Convert<$s> for bool {
            #[inline(always)]
            fn convert(self) -> $s {
                u8::from(self) as $s
            }
        }
    )*};
    (@from $s:ty => $($u:ty),*) => {$(
        impl Convert<$u> for $s {
            #[inline(always)]
            fn convert(self) -> $u {
                self as $u
            }
        }
    )*};
}
convert_numeric!(f32, f64, i32, i64);

impl Convert<bool> for bool {
    fn convert(self) -> bool {
        self
    }
}

fn cast<S: StorageElement + Convert<U>, U: StorageElement>(
    x: &Tensor,
    place: &Place,
) -> Result<Tensor, KernelError> {
    let src = x.as_slice::<S>()?;
    let mut out = output::<U>(src.len(), place)?;
    out.buf.extend(src.iter().map(|&v| v.convert()));
    out.into_tensor(x.shape())
}

/// The conversion from `from` to `to`.
fn cast_fn(from: DType, to: DType) -> CastFn {
    macro_rules! to {
        ($s:ty) => {
            match to {
                DType::F32 => cast::<$s, f32>,
                DType::F64 => cast::<$s, f64>,
                DType::I32 => cast::<$s, i32>,
                DType::I64 => cast::<$s, i64>,
                DType::Bool => cast::<$s, bool>,
            }
        };
    }
    match from {
        DType::F32 => to!(f32),
        DType::F64 => to!(f64),
        DType::I32 => to!(i32),
        DType::I64 => to!(i64),
        DType::Bool => to!(bool),
    }
}

/// TensorFlow's float-to-integer conversion on x86: truncation toward zero, and the
/// integer type's minimum for NaN, the infinities and values out of range.
macro_rules! int_min_cast {
    ($name:ident, $f:ty => $i:ty) => {
        fn $name(x: &Tensor, place: &Place) -> Result<Tensor, KernelError> {
            // 2^(bits - 1), exact in every float type.
            const LIMIT: $f = -(<$i>::MIN as $f);
            let src = x.as_slice::<$f>()?;
            let mut out = output::<$i>(src.len(), place)?;
            out.buf.extend(src.iter().map(|&v| {
                let t = v.trunc();
                // NaN is in no range.
                if (-LIMIT..LIMIT).contains(&t) {
                    t as $i
                } else {
                    <$i>::MIN
                }
            }));
            out.into_tensor(x.shape())
        }
    };
}
int_min_cast!(f32_to_i32, f32 => i32);
int_min_cast!(f32_to_i64, f32 => i64);
int_min_cast!(f64_to_i32, f64 => i32);
int_min_cast!(f64_to_i64, f64 => i64);

fn cast_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let a = &init.node.attrs;
    let to = a.dtype("dtype")?;
    let from = input_dtype(init, 0)?;
    let int_min =
        a.contains(CAST_OUT_OF_RANGE_ATTR) && a.string(CAST_OUT_OF_RANGE_ATTR)? == CAST_INT_MIN;
    let convert: CastFn = match (int_min, from, to) {
        (true, DType::F32, DType::I32) => f32_to_i32,
        (true, DType::F32, DType::I64) => f32_to_i64,
        (true, DType::F64, DType::I32) => f64_to_i32,
        (true, DType::F64, DType::I64) => f64_to_i64,
        _ => cast_fn(from, to),
    };
    sync(CastKernel {
        to,
        convert,
        place: Place::of(init),
    })
}

struct CastKernel {
    to: DType,
    /// The conversion from the input dtype the kernel was built for.
    convert: CastFn,
    /// The device's node and memory limit.
    place: Place,
}

impl Kernel for CastKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.input(0);
        let y = if x.dtype() == self.to {
            x.clone()
        } else {
            (self.convert)(x, &self.place)?
        };
        ctx.push_output(y);
        Ok(())
    }
}

fn fill_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    if init.input_dtypes.len() == 2 {
        return super::dims::fill_factory(init);
    }
    let shape = known_shape("Fill", "shape", &init.node.attrs.ints("shape")?)?;
    sync(FillKernel {
        shape,
        place: Place::of(init),
    })
}

struct FillKernel {
    shape: Shape,
    /// The device's node and memory limit.
    place: Place,
}

fn fill<T: StorageElement>(v: &[T], shape: &Shape, place: &Place) -> Result<Tensor, KernelError> {
    let first = *v.first().ok_or_else(|| {
        KernelError::InvalidArgument("Fill needs a scalar value, got none".into())
    })?;
    filled(shape.num_elements(), first, place)?.into_tensor(shape)
}

impl Kernel for FillKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let value = ctx.input(0);
        if value.num_elements() != 1 || value.shape().rank() > 1 {
            return Err(KernelError::InvalidArgument(format!(
                "Fill needs a scalar value, got shape {}",
                value.shape()
            )));
        }
        let (shape, place) = (&self.shape, &self.place);
        let out = match value.storage() {
            Storage::F32(v) => fill(v, shape, place)?,
            Storage::F64(v) => fill(v, shape, place)?,
            Storage::I32(v) => fill(v, shape, place)?,
            Storage::I64(v) => fill(v, shape, place)?,
            Storage::Bool(v) => fill(v, shape, place)?,
            _ => {
                return Err(KernelError::InvalidArgument(
                    "Fill's value is not in host memory".into(),
                ))
            }
        };
        ctx.push_output(out);
        Ok(())
    }
}

fn zeros_like_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    sync(ZerosLikeKernel(Place::of(init)))
}

struct ZerosLikeKernel(Place);

impl Kernel for ZerosLikeKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let x = ctx.input(0);
        let zeros = Tensor::zeros_in(x.dtype(), x.shape(), &self.0.memory)?;
        ctx.push_output(zeros);
        Ok(())
    }
}
