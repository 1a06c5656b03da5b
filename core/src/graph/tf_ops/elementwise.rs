//! Elementwise ops of TensorFlow's graphs beyond Magpie's own arithmetic, common in
//! programs beyond the acceptance list: `Maximum`, `Minimum` (numeric, broadcasting),
//! `Log`, `Tanh`, `Sigmoid` (floats) and the activations' gradients `TanhGrad(y, dy)`
//! and `SigmoidGrad(y, dy)` (floats, one shape), which take the activation's output `y`.

use super::super::op_def::{Arity, OpDef};
use super::super::shape_inference::{standard as shapes, unchanged_shape, ShapeError};
use super::super::std_ops::{float, same_numeric};
use super::all_same;

pub(super) fn ops() -> Vec<OpDef> {
    let mut ops = Vec::new();
    for name in ["Maximum", "Minimum"] {
        ops.push(OpDef::new(name, Arity::Exact(2), same_numeric).with_shape_fn(shapes::broadcast));
    }
    for name in ["Log", "Tanh", "Sigmoid"] {
        ops.push(
            OpDef::new(name, Arity::Exact(1), |ins, _| Ok(vec![float(ins, 0)?]))
                .with_shape_fn(unchanged_shape),
        );
    }
    for name in ["TanhGrad", "SigmoidGrad"] {
        ops.push(
            OpDef::new(name, Arity::Exact(2), |ins, _| {
                float(ins, 0)?;
                Ok(vec![all_same(ins, 0, 2)?])
            })
            .with_shape_fn(move |ctx| {
                let (y, dy) = (ctx.input(0), ctx.input(1));
                let out = y.merge(&dy).ok_or_else(|| {
                    ShapeError::new(format!(
                        "{name} needs inputs of one shape, got {y} and {dy}"
                    ))
                })?;
                Ok(vec![out])
            }),
        );
    }
    ops
}
