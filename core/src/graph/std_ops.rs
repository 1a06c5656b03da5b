//! Definitions of the standard op set: arity, dtype inference and shape functions
//! (`shape_inference/standard.rs`). Kernels live in the backends.
//!
//! `Cast` converts floats to integers by [`CAST_OUT_OF_RANGE_ATTR`]: Magpie's own rule,
//! [`CAST_SATURATE`] (the default: Rust's `as`, NaN to 0, out-of-range values to the
//! nearest bound), or [`CAST_INT_MIN`], TensorFlow's result on x86 (NaN, infinities and
//! out-of-range values become the integer type's minimum), which TensorFlow import sets.

use super::attr::Attrs;
use super::error::OpDefError;
use super::op_def::{Arity, OpDef};
use super::shape_inference::{standard as shapes, unchanged_shape};
use crate::tensor::DType;

/// Attribute of `Cast`: how a float that no integer of the target type holds (NaN, an
/// infinity, a value out of range) converts; [`CAST_SATURATE`] when absent.
pub const CAST_OUT_OF_RANGE_ATTR: &str = "out_of_range";
/// [`CAST_OUT_OF_RANGE_ATTR`]: NaN becomes 0, other values the nearest bound (Magpie's).
pub const CAST_SATURATE: &str = "saturate";
/// [`CAST_OUT_OF_RANGE_ATTR`]: every such value becomes the integer type's minimum
/// (TensorFlow's on x86, measured with TensorFlow 2.21).
pub const CAST_INT_MIN: &str = "int_min";

fn numeric(ins: &[DType], i: usize) -> Result<DType, OpDefError> {
    if ins[i].is_numeric() {
        Ok(ins[i])
    } else {
        Err(OpDefError::DType {
            input: i,
            expected: "a numeric dtype".into(),
            got: ins[i],
        })
    }
}

pub(super) fn float(ins: &[DType], i: usize) -> Result<DType, OpDefError> {
    if ins[i].is_float() {
        Ok(ins[i])
    } else {
        Err(OpDefError::DType {
            input: i,
            expected: "f32 or f64".into(),
            got: ins[i],
        })
    }
}

pub(super) fn same_numeric(ins: &[DType], _: &Attrs) -> Result<Vec<DType>, OpDefError> {
    let t = numeric(ins, 0)?;
    if ins[1] != t {
        return Err(OpDefError::DType {
            input: 1,
            expected: t.to_string(),
            got: ins[1],
        });
    }
    Ok(vec![t])
}

fn shape_attr(attrs: &Attrs, name: &str) -> Result<(), OpDefError> {
    let dims = attrs.ints(name)?;
    if let Some(d) = dims.iter().find(|d| **d < -1) {
        return Err(OpDefError::Invalid(format!(
            "attribute {name:?} has dimension {d}"
        )));
    }
    Ok(())
}

fn unary(name: &str, check: fn(&[DType], usize) -> Result<DType, OpDefError>) -> OpDef {
    OpDef::new(name, Arity::Exact(1), move |ins, _| {
        Ok(vec![check(ins, 0)?])
    })
    .with_shape_fn(unchanged_shape)
}

/// A dtype that holds indices, dimensions or axes (`i32` or `i64`), at input `i`.
pub(super) fn index(ins: &[DType], i: usize) -> Result<DType, OpDefError> {
    match ins[i] {
        DType::I32 | DType::I64 => Ok(ins[i]),
        got => Err(OpDefError::DType {
            input: i,
            expected: "i32 or i64".into(),
            got,
        }),
    }
}

/// `Sum`, `Mean`, `Prod`: one input and an optional `axis` attribute (Magpie's form), or
/// TensorFlow's two inputs, the second the axes to reduce (a scalar or a vector).
fn reduction(name: &str) -> OpDef {
    OpDef::new(name, Arity::Between(1, 2), |ins, attrs| {
        attrs.bool_or("keep_dims", false)?;
        if ins.len() == 2 {
            index(ins, 1)?;
            if attrs.contains("axis") {
                return Err(OpDefError::Invalid(
                    "the axes come from attribute \"axis\" or from input 1, not both".into(),
                ));
            }
        } else {
            attrs.opt_int("axis")?;
        }
        Ok(vec![numeric(ins, 0)?])
    })
    .with_shape_fn(shapes::reduction)
}

/// Every standard op definition. `Reshape`, `Fill`, `Sum`, `Mean` and `Prod` also take
/// TensorFlow's two-input forms (the shape, dims or axes as a tensor; `Fill(dims,
/// value)`); the other ops of TensorFlow's graphs are defined in `tf_ops/`.
pub(crate) fn standard_ops() -> Vec<OpDef> {
    let mut ops = vec![
        OpDef::new("Const", Arity::Exact(0), |_, attrs| {
            Ok(vec![attrs.tensor("value")?.dtype()])
        })
        .with_shape_fn(shapes::constant),
        OpDef::new("Placeholder", Arity::Exact(0), |_, attrs| {
            if attrs.contains("shape") {
                shape_attr(attrs, "shape")?;
            }
            Ok(vec![attrs.dtype("dtype")?])
        })
        .with_shape_fn(shapes::placeholder),
        OpDef::new("PlaceholderWithDefault", Arity::Exact(1), |ins, _| {
            Ok(vec![ins[0]])
        })
        .with_shape_fn(shapes::placeholder_with_default),
        OpDef::new("Identity", Arity::Exact(1), |ins, _| Ok(vec![ins[0]]))
            .with_shape_fn(unchanged_shape),
        OpDef::new("NoOp", Arity::Exact(0), |_, _| Ok(vec![])).with_shape_fn(shapes::no_outputs),
        OpDef::new("MatMul", Arity::Exact(2), |ins, attrs| {
            attrs.bool_or("transpose_a", false)?;
            attrs.bool_or("transpose_b", false)?;
            same_numeric(ins, attrs)
        })
        .with_shape_fn(shapes::matmul),
        reduction("Sum"),
        reduction("Mean"),
        reduction("Prod"),
        OpDef::new("Reshape", Arity::Between(1, 2), |ins, attrs| {
            if ins.len() == 2 {
                // TensorFlow's form: the target shape is input 1.
                index(ins, 1)?;
                return Ok(vec![ins[0]]);
            }
            let dims = attrs.ints("shape")?;
            if dims.iter().filter(|d| **d == -1).count() > 1 {
                return Err(OpDefError::Invalid("shape may hold at most one -1".into()));
            }
            shape_attr(attrs, "shape")?;
            Ok(vec![ins[0]])
        })
        .with_shape_fn(shapes::reshape),
        OpDef::new("Cast", Arity::Exact(1), |_, attrs| {
            if attrs.contains(CAST_OUT_OF_RANGE_ATTR) {
                let mode = attrs.string(CAST_OUT_OF_RANGE_ATTR)?;
                if mode != CAST_SATURATE && mode != CAST_INT_MIN {
                    return Err(OpDefError::Invalid(format!(
                        "attribute {CAST_OUT_OF_RANGE_ATTR:?} is {mode:?}; expected \
                         {CAST_SATURATE:?} or {CAST_INT_MIN:?}"
                    )));
                }
            }
            Ok(vec![attrs.dtype("dtype")?])
        })
        .with_shape_fn(unchanged_shape),
        OpDef::new("Fill", Arity::Between(1, 2), |ins, attrs| {
            if ins.len() == 2 {
                // TensorFlow's form: `Fill(dims, value)`.
                index(ins, 0)?;
                return Ok(vec![ins[1]]);
            }
            shape_attr(attrs, "shape")?;
            Ok(vec![ins[0]])
        })
        .with_shape_fn(shapes::fill),
        OpDef::new("ZerosLike", Arity::Exact(1), |ins, _| Ok(vec![ins[0]]))
            .with_shape_fn(unchanged_shape),
        OpDef::new("RandomUniform", Arity::Exact(0), |_, attrs| {
            shape_attr(attrs, "shape")?;
            attrs.int("seed")?;
            let dtype = attrs.dtype("dtype")?;
            if !dtype.is_float() {
                return Err(OpDefError::Invalid(format!(
                    "RandomUniform makes floats, not {dtype}"
                )));
            }
            Ok(vec![dtype])
        })
        .with_shape_fn(shapes::random),
    ];
    for name in ["Add", "Sub", "Mul", "Div"] {
        ops.push(OpDef::new(name, Arity::Exact(2), same_numeric).with_shape_fn(shapes::broadcast));
    }
    for name in ["Neg", "Square", "Relu"] {
        ops.push(unary(name, numeric));
    }
    for name in ["Sqrt", "Exp"] {
        ops.push(unary(name, float));
    }
    ops.extend(super::tf_ops::ops());
    ops
}
