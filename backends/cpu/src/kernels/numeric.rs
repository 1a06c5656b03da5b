//! Element arithmetic with Magpie's semantics, so kernels are written once over `T`.
//!
//! Integers wrap on overflow (`wrapping_*`), and integer division truncates toward zero
//! with `MIN / -1` wrapping to `MIN`; callers rule out a zero divisor before dividing.
//! Floats follow IEEE 754.

use magpie_core::tensor::StorageElement;
use rand::Rng;

/// A numeric element type: `f32`, `f64`, `i32` or `i64`.
pub(crate) trait Arith: StorageElement + PartialOrd {
    /// Whether this is an integer type (division by zero is an error for those).
    const IS_INT: bool;
    /// `self + rhs`, wrapping for integers.
    fn add(self, rhs: Self) -> Self;
    /// `self - rhs`, wrapping for integers.
    fn sub(self, rhs: Self) -> Self;
    /// `self * rhs`, wrapping for integers.
    fn mul(self, rhs: Self) -> Self;
    /// `self / rhs`; truncating and wrapping for integers, which panic on a zero `rhs`.
    fn div(self, rhs: Self) -> Self;
    /// `-self`, wrapping for integers.
    fn neg(self) -> Self;
    /// The remainder of floor division, with the sign of `rhs` (TensorFlow's `FloorMod`):
    /// the truncated remainder plus `rhs` when it is non-zero and their signs differ.
    /// Integers panic on a zero `rhs`; `MIN mod -1` is 0.
    fn floor_mod(self, rhs: Self) -> Self;
    /// An element count as this type (`as` semantics).
    fn from_count(n: usize) -> Self;
    /// Whether this is a float NaN (never for integers).
    fn is_nan(self) -> bool;
}

/// A floating-point element type: `f32` or `f64`.
pub(crate) trait FloatArith: Arith {
    /// The square root.
    fn sqrt(self) -> Self;
    /// `e^self`.
    fn exp(self) -> Self;
    /// The natural logarithm.
    fn ln(self) -> Self;
    /// The hyperbolic tangent.
    fn tanh(self) -> Self;
    /// A uniform sample in `[0, 1)`.
    fn sample(rng: &mut impl Rng) -> Self;
}

macro_rules! int_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            const IS_INT: bool = true;
            #[inline(always)]
            fn add(self, rhs: Self) -> Self {
                self.wrapping_add(rhs)
            }
            #[inline(always)]
            fn sub(self, rhs: Self) -> Self {
                self.wrapping_sub(rhs)
            }
            #[inline(always)]
            fn mul(self, rhs: Self) -> Self {
                self.wrapping_mul(rhs)
            }
            #[inline(always)]
            fn div(self, rhs: Self) -> Self {
                self.wrapping_div(rhs)
            }
            #[inline(always)]
            fn neg(self) -> Self {
                self.wrapping_neg()
            }
            #[inline(always)]
            fn floor_mod(self, rhs: Self) -> Self {
                let r = self.wrapping_rem(rhs);
                if r != 0 && ((r < 0) != (rhs < 0)) {
                    r.wrapping_add(rhs)
                } else {
                    r
                }
            }
            #[inline(always)]
            fn from_count(n: usize) -> Self {
                n as $t
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                false
            }
        }
    )*};
}
int_arith!(i32, i64);

macro_rules! float_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            const IS_INT: bool = false;
            #[inline(always)]
            fn add(self, rhs: Self) -> Self {
                self + rhs
            }
            #[inline(always)]
            fn sub(self, rhs: Self) -> Self {
                self - rhs
            }
            #[inline(always)]
            fn mul(self, rhs: Self) -> Self {
                self * rhs
            }
            #[inline(always)]
            fn div(self, rhs: Self) -> Self {
                self / rhs
            }
            #[inline(always)]
            fn neg(self) -> Self {
                -self
            }
            #[inline(always)]
            fn floor_mod(self, rhs: Self) -> Self {
                let r = self % rhs;
                if r != 0.0 && ((r < 0.0) != (rhs < 0.0)) {
                    r + rhs
                } else {
                    r
                }
            }
            #[inline(always)]
            fn from_count(n: usize) -> Self {
                n as $t
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }

        impl FloatArith for $t {
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn sample(rng: &mut impl Rng) -> Self {
                rng.random::<$t>()
            }
        }
    )*};
}
float_arith!(f32, f64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_wrap_and_truncate() {
        assert_eq!(Arith::add(i32::MAX, 1), i32::MIN);
        assert_eq!(Arith::sub(i64::MIN, 1), i64::MAX);
        assert_eq!(Arith::mul(i32::MAX, 2), -2);
        assert_eq!(Arith::div(-7i32, 2), -3);
        assert_eq!(Arith::div(i32::MIN, -1), i32::MIN);
        assert_eq!(Arith::neg(i64::MIN), i64::MIN);
    }
}
