//! Neural-network ops of TensorFlow's graphs and their gradients:
//!
//! - `BiasAdd(value, bias)`: `bias` (a vector) added along the channel dimension of
//!   `value` — the last with `data_format` `NHWC` (the default), dimension 1 with `NCHW`;
//!   `BiasAddGrad(g)`: `g` summed over every other dimension;
//! - `ReluGrad(gradients, features)`: `gradients` where `features > 0`, else 0;
//! - `LogSoftmax(logits)`: `logits - log(sum(exp(logits)))` along the last dimension;
//!   `Softmax(logits)`: `exp(logits) / sum(exp(logits))` along it;
//! - `SoftmaxCrossEntropyWithLogits(features, labels)`: for `[batch, classes]` matrices
//!   (broadcast together), the loss per row, `-sum(labels * log_softmax(features))`, and
//!   its gradient with respect to `features`, `softmax(features) - labels`.

use super::super::op_def::{Arity, OpDef};
use super::super::shape_inference::{rules, unchanged_shape, PartialShape, ShapeError};
use super::super::std_ops::{float, same_numeric};
use super::numeric;
use crate::graph::attr::Attrs;
use crate::graph::error::OpDefError;

/// Whether `data_format` is `NCHW` (channels at dimension 1) rather than `NHWC`.
pub(crate) fn channels_first(attrs: &Attrs) -> Result<bool, OpDefError> {
    if !attrs.contains("data_format") {
        return Ok(false);
    }
    match attrs.string("data_format")?.as_str() {
        "NHWC" => Ok(false),
        "NCHW" => Ok(true),
        other => Err(OpDefError::Invalid(format!(
            "data_format must be \"NHWC\" or \"NCHW\", got {other:?}"
        ))),
    }
}

/// `LogSoftmax` or `Softmax`: floats of rank 1 or more, the output of the input's shape.
fn softmax_like(name: &'static str) -> OpDef {
    OpDef::new(name, Arity::Exact(1), |ins, _| Ok(vec![float(ins, 0)?])).with_shape_fn(move |ctx| {
        if ctx.input(0).rank() == Some(0) {
            return Err(OpDefError::Shape(ShapeError::new(format!(
                "{name} needs logits of rank 1 or more, got a scalar"
            ))));
        }
        unchanged_shape(ctx)
    })
}

pub(super) fn ops() -> Vec<OpDef> {
    vec![
        OpDef::new("BiasAdd", Arity::Exact(2), |ins, attrs| {
            channels_first(attrs)?;
            same_numeric(ins, attrs)
        })
        .with_shape_fn(|ctx| {
            let (value, bias) = (ctx.input(0), ctx.input(1));
            if value.rank().is_some_and(|r| r < 2) || bias.rank().is_some_and(|r| r != 1) {
                return Err(OpDefError::Shape(ShapeError::new(format!(
                    "BiasAdd needs a value of rank 2 or more and a vector, got {value} and {bias}"
                ))));
            }
            Ok(vec![value])
        }),
        OpDef::new("BiasAddGrad", Arity::Exact(1), |ins, attrs| {
            channels_first(attrs)?;
            Ok(vec![numeric(ins, 0)?])
        })
        .with_shape_fn(|ctx| {
            let g = ctx.input(0);
            let Some(dims) = g.dims() else {
                return Ok(vec![PartialShape::unknown_dims(1)]);
            };
            if dims.len() < 2 {
                return Err(OpDefError::Shape(ShapeError::new(format!(
                    "BiasAddGrad needs a gradient of rank 2 or more, got {g}"
                ))));
            }
            let c = if channels_first(ctx.attrs())? {
                1
            } else {
                dims.len() - 1
            };
            Ok(vec![PartialShape::new(&[dims[c]])])
        }),
        OpDef::new("ReluGrad", Arity::Exact(2), same_numeric).with_shape_fn(|ctx| {
            let (g, f) = (ctx.input(0), ctx.input(1));
            let out = g.merge(&f).ok_or_else(|| {
                ShapeError::new(format!(
                    "ReluGrad needs inputs of one shape, got {g} and {f}"
                ))
            })?;
            Ok(vec![out])
        }),
        softmax_like("LogSoftmax"),
        softmax_like("Softmax"),
        OpDef::new(
            "SoftmaxCrossEntropyWithLogits",
            Arity::Exact(2),
            |ins, _| {
                let t = float(ins, 0)?;
                if ins[1] != t {
                    return Err(OpDefError::DType {
                        input: 1,
                        expected: t.to_string(),
                        got: ins[1],
                    });
                }
                Ok(vec![t, t])
            },
        )
        .with_shape_fn(|ctx| {
            let both = rules::broadcast(&ctx.input(0), &ctx.input(1))?;
            match both.dims() {
                None => Ok(vec![
                    PartialShape::unknown_dims(1),
                    PartialShape::unknown_dims(2),
                ]),
                Some(&[batch, _]) => Ok(vec![PartialShape::new(&[batch]), both]),
                Some(_) => Err(OpDefError::Shape(ShapeError::new(format!(
                    "SoftmaxCrossEntropyWithLogits needs matrices, got {} and {}",
                    ctx.input(0),
                    ctx.input(1)
                )))),
            }
        }),
    ]
}
