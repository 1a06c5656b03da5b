//! Arithmetic ops of TensorFlow's graphs: `AddN` (the sum of its inputs, all of one shape),
//! `FloorMod` (the remainder of floor division, with the divisor's sign; broadcasting)
//! and `BroadcastGradientArgs` (for two shapes, the axes along which each was broadcast:
//! what gradients of broadcasting ops sum over).

use super::super::op_def::{Arity, OpDef};
use super::super::shape_inference::{standard as shapes, PartialShape};
use super::super::std_ops::{index, same_numeric};
use super::{all_same, numeric};
use crate::graph::error::OpDefError;
use crate::graph::shape_inference::ShapeError;

pub(super) fn ops() -> Vec<OpDef> {
    vec![
        OpDef::new("AddN", Arity::AtLeast(1), |ins, _| {
            numeric(ins, 0)?;
            Ok(vec![all_same(ins, 0, ins.len())?])
        })
        .with_shape_fn(|ctx| {
            let mut out = PartialShape::unknown();
            for s in ctx.inputs() {
                out = out.merge(s).ok_or_else(|| {
                    ShapeError::new(format!("AddN needs inputs of one shape, got {out} and {s}"))
                })?;
            }
            Ok(vec![out])
        }),
        OpDef::new("FloorMod", Arity::Exact(2), same_numeric).with_shape_fn(shapes::broadcast),
        OpDef::new("BroadcastGradientArgs", Arity::Exact(2), |ins, _| {
            index(ins, 0)?;
            let t = all_same(ins, 0, 2)?;
            Ok(vec![t, t])
        })
        .with_shape_fn(|ctx| {
            for i in 0..2 {
                let s = ctx.input(i);
                if s.rank().is_some_and(|r| r != 1) {
                    return Err(OpDefError::Shape(ShapeError::new(format!(
                        "BroadcastGradientArgs needs two shape vectors, input {i} has shape {s}"
                    ))));
                }
            }
            Ok(vec![PartialShape::unknown_dims(1); 2])
        }),
    ]
}
