//! The optimizers' update rules, elementwise over slices: TensorFlow's
//! `ApplyGradientDescent`, `ApplyMomentum` and `ApplyAdam` (its
//! `core/kernels/training_ops.cc`), term for term and in the variable's own precision,
//! so a step gives TensorFlow's numbers.
//!
//! Every function takes the current values and pushes the new ones onto output vectors
//! the caller allocated (through the device: `training.rs`), which has checked that every
//! slice has the variable's length.

use std::ops::{Add, Div, Mul, Sub};

/// The float types the rules run in (TensorFlow's `T`: `float` and `double` here).
pub(super) trait Real:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self>
{
    /// One.
    const ONE: Self;
    /// The square root.
    fn sqrt(self) -> Self;
}

impl Real for f32 {
    const ONE: f32 = 1.0;
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
}

impl Real for f64 {
    const ONE: f64 = 1.0;
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
}

/// `var -= grad * lr`, onto `new_var`.
pub(super) fn gradient_descent<T: Real>(var: &[T], lr: T, grad: &[T], new_var: &mut Vec<T>) {
    new_var.extend(var.iter().zip(grad).map(|(&w, &g)| w - g * lr));
}

/// `accum = accum * momentum + grad`, then `var -= accum * lr`, or with Nesterov
/// `var -= grad * lr + accum * momentum * lr`; onto `[new_var, new_accum]`.
pub(super) fn momentum<T: Real>(
    var: &[T],
    accum: &[T],
    lr: T,
    grad: &[T],
    momentum: T,
    use_nesterov: bool,
    [new_var, new_accum]: [&mut Vec<T>; 2],
) {
    for ((&w, &a), &g) in var.iter().zip(accum).zip(grad) {
        let a = a * momentum + g;
        let w = if use_nesterov {
            w - (g * lr + a * momentum * lr)
        } else {
            w - a * lr
        };
        new_accum.push(a);
        new_var.push(w);
    }
}

/// The scalar inputs of an Adam step.
#[derive(Clone, Copy, Debug)]
pub(super) struct AdamScalars<T> {
    /// `beta1^t`.
    pub(super) beta1_power: T,
    /// `beta2^t`.
    pub(super) beta2_power: T,
    /// The learning rate.
    pub(super) lr: T,
    /// The first moment's decay.
    pub(super) beta1: T,
    /// The second moment's decay.
    pub(super) beta2: T,
    /// Added to the root of the second moment.
    pub(super) epsilon: T,
}

/// One Adam step: `alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t)`,
/// `m += (grad - m) * (1 - beta1)`, `v += (grad^2 - v) * (1 - beta2)`, then
/// `var -= m * alpha / (sqrt(v) + epsilon)`, or with Nesterov
/// `var -= (grad * (1 - beta1) + beta1 * m) * alpha / (sqrt(v) + epsilon)`.
/// Onto `[new_var, new_m, new_v]`.
pub(super) fn adam<T: Real>(
    var: &[T],
    m: &[T],
    v: &[T],
    s: AdamScalars<T>,
    grad: &[T],
    use_nesterov: bool,
    [new_var, new_m, new_v]: [&mut Vec<T>; 3],
) {
    let one = T::ONE;
    let alpha = s.lr * (one - s.beta2_power).sqrt() / (one - s.beta1_power);
    for (((&w, &m), &v), &g) in var.iter().zip(m).zip(v).zip(grad) {
        let m = m + (g - m) * (one - s.beta1);
        let v = v + (g * g - v) * (one - s.beta2);
        let step = if use_nesterov {
            ((g * (one - s.beta1) + s.beta1 * m) * alpha) / (v.sqrt() + s.epsilon)
        } else {
            (m * alpha) / (v.sqrt() + s.epsilon)
        };
        new_var.push(w - step);
        new_m.push(m);
        new_v.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_descent_subtracts_the_scaled_gradient() {
        let mut w = Vec::new();
        gradient_descent(&[1.0f32, 2.0], 0.5, &[2.0, -4.0], &mut w);
        assert_eq!(w, vec![0.0, 4.0]);
    }

    #[test]
    fn momentum_accumulates_and_nesterov_looks_ahead() {
        let (mut w, mut a) = (Vec::new(), Vec::new());
        momentum(&[1.0f64], &[2.0], 0.1, &[1.0], 0.9, false, [&mut w, &mut a]);
        assert_eq!(a, vec![2.0 * 0.9 + 1.0]);
        assert!((w[0] - (1.0 - 2.8 * 0.1)).abs() < 1e-15);
        let (mut w, mut a) = (Vec::new(), Vec::new());
        momentum(&[1.0f64], &[2.0], 0.1, &[1.0], 0.9, true, [&mut w, &mut a]);
        assert!((w[0] - (1.0 - (0.1 + 2.8 * 0.9 * 0.1))).abs() < 1e-15);
    }

    #[test]
    fn adam_first_step_moves_by_about_lr() {
        let s = AdamScalars {
            beta1_power: 0.9f64,
            beta2_power: 0.999,
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        };
        let (mut w, mut m, mut v) = (Vec::new(), Vec::new(), Vec::new());
        adam(
            &[1.0],
            &[0.0],
            &[0.0],
            s,
            &[3.0],
            false,
            [&mut w, &mut m, &mut v],
        );
        assert!((m[0] - 0.3).abs() < 1e-12 && (v[0] - 0.009).abs() < 1e-12);
        // Bias-corrected: the first step is lr * sign(grad), up to epsilon.
        assert!((w[0] - (1.0 - 0.01)).abs() < 1e-8, "{w:?}");
    }
}
