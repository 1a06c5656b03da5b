//! Definitions of the ops TensorFlow's graphs use beyond Magpie's own set (the list
//! `scripts/tf_op_list.py` generates, `docs/tensorflow-ops.txt`): arity, dtype inference
//! and shape functions, with TensorFlow's names, inputs and attributes. They are ordinary
//! standard ops — a Magpie graph may use them too — and their kernels live in the
//! backends.
//!
//! - `array.rs`: shapes and data movement (`Shape`, `ExpandDims`, `Squeeze`, `Pack`,
//!   `Unpack`, `ConcatV2`, `Slice`, `Tile`, `GatherV2`);
//! - `math.rs`: arithmetic (`AddN`, `FloorMod`, `BroadcastGradientArgs`);
//! - `nn.rs`: neural-network layers and their gradients (`BiasAdd`, `BiasAddGrad`,
//!   `ReluGrad`, `LogSoftmax`, `SoftmaxCrossEntropyWithLogits`).
//!
//! Shape functions say what they can and leave the rest unknown: most of these ops take
//! shapes as tensors whose values graph construction does not see.

mod array;
mod math;
mod nn;

use super::error::OpDefError;
use super::op_def::OpDef;
use crate::tensor::DType;

/// Every definition of this module.
pub(super) fn ops() -> Vec<OpDef> {
    let mut ops = array::ops();
    ops.extend(math::ops());
    ops.extend(nn::ops());
    ops
}

/// Fails unless every dtype in `ins[from..to]` equals `ins[from]`; returns it.
fn all_same(ins: &[DType], from: usize, to: usize) -> Result<DType, OpDefError> {
    let t = ins[from];
    for (i, d) in ins.iter().enumerate().take(to).skip(from + 1) {
        if *d != t {
            return Err(OpDefError::DType {
                input: i,
                expected: t.to_string(),
                got: *d,
            });
        }
    }
    Ok(t)
}

/// The dtype named by an optional attribute holding `i32` or `i64` (default `i32`), as
/// TensorFlow's `out_type` of `Shape`.
fn index_attr(attrs: &super::attr::Attrs, name: &str) -> Result<DType, OpDefError> {
    if !attrs.contains(name) {
        return Ok(DType::I32);
    }
    match attrs.dtype(name)? {
        d @ (DType::I32 | DType::I64) => Ok(d),
        d => Err(OpDefError::Invalid(format!(
            "attribute {name:?} must be i32 or i64, got {d}"
        ))),
    }
}
