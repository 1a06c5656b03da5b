//! Element types a tensor can hold, and the [`Element`] trait that maps a Rust scalar type
//! to its [`DType`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// The element type of a tensor.
///
/// ```
/// use magpie_core::tensor::{DType, Tensor};
///
/// assert_eq!(Tensor::scalar(1.5f64).dtype(), DType::F64);
/// assert_eq!(DType::I32.size_of(), 4);
/// assert_eq!(DType::parse("float32"), Some(DType::F32));
/// assert_eq!(DType::Bool.to_string(), "bool");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// Boolean, one byte per element.
    Bool,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 5] = [DType::F32, DType::F64, DType::I32, DType::I64, DType::Bool];

    /// Size of one element in bytes.
    #[inline]
    pub const fn size_of(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::Bool => 1,
        }
    }

    /// Whether arithmetic ops (Add, MatMul, Sum, ...) accept this dtype.
    pub const fn is_numeric(self) -> bool {
        !matches!(self, DType::Bool)
    }

    /// Whether this is a floating-point dtype (Sqrt, Exp, Mean, RandomUniform need one).
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// The lower-case name used in messages and attributes (`"f32"`, `"bool"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }

    /// Parses a name as printed by [`DType::name`] (TensorFlow's `float32` etc. are accepted too).
    pub fn parse(s: &str) -> Option<DType> {
        Some(match s {
            "f32" | "float32" | "float" => DType::F32,
            "f64" | "float64" | "double" => DType::F64,
            "i32" | "int32" => DType::I32,
            "i64" | "int64" => DType::I64,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
    impl Sealed for bool {}
}

/// A Rust scalar type that a tensor can hold. Implemented for `f32`, `f64`, `i32`, `i64`
/// and `bool`; sealed.
pub trait Element:
    sealed::Sealed + Copy + Send + Sync + PartialEq + fmt::Debug + fmt::Display + 'static
{
    /// The dtype of this element type.
    const DTYPE: DType;
    /// Zero (or `false`).
    const ZERO: Self;
    /// One (or `true`).
    const ONE: Self;
    /// Converts to `f64` (`true` is 1).
    fn to_f64(self) -> f64;
    /// Converts from `f64` with Rust's `as` semantics (saturating for integers; nonzero is `true`).
    fn from_f64(v: f64) -> Self;
    /// Converts to `i64` exactly where possible (floats truncate toward zero, saturating).
    fn to_i64(self) -> i64;
    /// Converts from `i64` with Rust's `as` semantics.
    fn from_i64(v: i64) -> Self;
}

macro_rules! numeric_element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            const ZERO: Self = 0 as $t;
            const ONE: Self = 1 as $t;
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn to_i64(self) -> i64 {
                self as i64
            }
            #[inline]
            fn from_i64(v: i64) -> Self {
                v as $t
            }
        }
    };
}
numeric_element!(f32, DType::F32);
numeric_element!(f64, DType::F64);
numeric_element!(i32, DType::I32);
numeric_element!(i64, DType::I64);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    const ZERO: Self = false;
    const ONE: Self = true;
    #[inline]
    fn to_f64(self) -> f64 {
        if self {
            1.0
        } else {
            0.0
        }
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    #[inline]
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    #[inline]
    fn from_i64(v: i64) -> Self {
        v != 0
    }
}
