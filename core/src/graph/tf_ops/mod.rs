//! Definitions of the ops TensorFlow's graphs use beyond Magpie's own set (the list
//! `scripts/tf_op_list.py` generates, `docs/tensorflow-ops.txt`): arity, dtype inference
//! and shape functions, with TensorFlow's names, inputs and attributes. They are ordinary
//! standard ops — a Magpie graph may use them too — and their kernels live in the
//! backends.
//!
//! - `array.rs`: shapes and data movement (`Shape`, `ExpandDims`, `Squeeze`, `Pack`,
//!   `Unpack`, `ConcatV2`, `Slice`, `Tile`, `GatherV2`; and `Size`, `Rank`, `Transpose`,
//!   `StopGradient`, `OnesLike`);
//! - `math.rs`: arithmetic (`AddN`, `FloorMod`, `BroadcastGradientArgs`);
//! - `elementwise.rs`: `Maximum`, `Minimum`, `Log`, `Tanh`, `Sigmoid` and the
//!   activations' gradients (beyond the acceptance list, common in TensorFlow programs);
//! - `nn.rs`: neural-network layers and their gradients (`BiasAdd`, `BiasAddGrad`,
//!   `ReluGrad`, `LogSoftmax`, `SoftmaxCrossEntropyWithLogits`; and `Softmax`).
//!
//! Shape functions say what they can and leave the rest unknown: most of these ops take
//! shapes as tensors whose values graph construction does not see.

mod array;
mod elementwise;
mod math;
mod nn;

use super::error::OpDefError;
use super::op_def::OpDef;
use crate::tensor::DType;

/// Every definition of this module.
pub(super) fn ops() -> Vec<OpDef> {
    let mut ops = array::ops();
    ops.extend(math::ops());
    ops.extend(elementwise::ops());
    ops.extend(nn::ops());
    ops
}

/// Input `i`'s dtype when it is numeric (`f32`, `f64`, `i32`, `i64`).
fn numeric(ins: &[DType], i: usize) -> Result<DType, OpDefError> {
    if ins[i].is_numeric() {
        return Ok(ins[i]);
    }
    Err(OpDefError::DType {
        input: i,
        expected: "a numeric dtype".into(),
        got: ins[i],
    })
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

#[cfg(test)]
mod tests {
    use crate::graph::{AttrValue, Graph, GraphError, PartialShape};
    use crate::tensor::{DType, Shape};

    fn p(dims: &[Option<usize>]) -> PartialShape {
        PartialShape::new(dims)
    }

    fn placeholder(g: &Graph, dims: &[i64]) -> crate::graph::Output {
        g.op("Placeholder")
            .attr("dtype", DType::F32)
            .attr("shape", dims.to_vec())
            .build_output()
            .unwrap()
    }

    fn index_placeholder(g: &Graph, dims: &[i64]) -> crate::graph::Output {
        g.op("Placeholder")
            .attr("dtype", DType::I32)
            .attr("shape", dims.to_vec())
            .build_output()
            .unwrap()
    }

    #[test]
    fn shapes_of_array_ops_say_what_is_known() {
        let g = Graph::new();
        let x = placeholder(&g, &[-1, 3]);
        let shape = g.op("Shape").input(x).build_output().unwrap();
        assert_eq!(g.shape_of(shape).unwrap(), p(&[Some(2)]));
        let y = placeholder(&g, &[-1, 3]);
        let packed = g
            .op("Pack")
            .input(x)
            .input(y)
            .attr("axis", -1i64)
            .build_output();
        assert_eq!(
            g.shape_of(packed.unwrap()).unwrap(),
            p(&[None, Some(3), Some(2)])
        );
        let unpacked = g
            .op("Unpack")
            .input(x)
            .attr("num", 3i64)
            .attr("axis", 1i64)
            .build()
            .unwrap();
        assert_eq!(g.shape_of(unpacked.output(2)).unwrap(), p(&[None]));
        let err = g
            .op("Unpack")
            .input(x)
            .attr("num", 2i64)
            .attr("axis", 1i64)
            .build()
            .unwrap_err();
        assert!(matches!(err, GraphError::InvalidNode { .. }), "{err}");
        // A hostile `num` is refused before any output is allocated.
        let u = placeholder(&g, &[-1]);
        let err = g
            .op("Unpack")
            .input(u)
            .attr("num", 1i64 << 40)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("num"), "{err}");
        let s = placeholder(&g, &[1, -1, 1]);
        let squeezed = g.op("Squeeze").input(s).attr("squeeze_dims", vec![0i64]);
        assert_eq!(
            g.shape_of(squeezed.build_output().unwrap()).unwrap(),
            p(&[None, Some(1)])
        );
        let err = g
            .op("Squeeze")
            .input(x)
            .attr("squeeze_dims", vec![1i64])
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("not 1"), "{err}");
        let axis = index_placeholder(&g, &[]);
        let cat = g
            .op("ConcatV2")
            .input(x)
            .input(y)
            .input(axis)
            .build_output();
        assert_eq!(g.shape_of(cat.unwrap()).unwrap(), p(&[None, None]));
        let v = placeholder(&g, &[5]);
        let err = g
            .op("ConcatV2")
            .input(x)
            .input(v)
            .input(axis)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("one rank"), "{err}");
    }

    #[test]
    fn two_input_forms_are_accepted_beside_magpies_own() {
        let g = Graph::new();
        let x = placeholder(&g, &[2, 3]);
        let target = index_placeholder(&g, &[3]);
        let r = g
            .op("Reshape")
            .input(x)
            .input(target)
            .build_output()
            .unwrap();
        assert_eq!(g.shape_of(r).unwrap(), PartialShape::unknown_dims(3));
        let r = g
            .op("Reshape")
            .input(x)
            .attr("shape", vec![3i64, -1])
            .build_output();
        assert_eq!(
            g.shape_of(r.unwrap()).unwrap(),
            PartialShape::from(Shape::new(&[3, 2]).unwrap())
        );
        let axes = index_placeholder(&g, &[-1]);
        let m = g
            .op("Mean")
            .input(x)
            .input(axes)
            .attr("keep_dims", true)
            .build_output()
            .unwrap();
        assert_eq!(g.shape_of(m).unwrap(), PartialShape::unknown_dims(2));
        let none = g
            .op("Const")
            .attr(
                "value",
                crate::tensor::Tensor::from_vec([0usize], Vec::<i32>::new()).unwrap(),
            )
            .build_output()
            .unwrap();
        let s = g.op("Sum").input(x).input(none).build_output().unwrap();
        assert_eq!(g.shape_of(s).unwrap(), g.shape_of(x).unwrap());
        let one = g
            .op("Const")
            .attr("value", crate::tensor::Tensor::scalar(1i32));
        let s = g
            .op("Sum")
            .input(x)
            .input(one.build_output().unwrap())
            .build_output();
        assert_eq!(
            g.shape_of(s.unwrap()).unwrap(),
            PartialShape::unknown_dims(1)
        );
        let err = g
            .op("Sum")
            .input(x)
            .input(axes)
            .attr("axis", 0i64)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        // Axes must be integers.
        assert!(g.op("Sum").input(x).input(x).build().is_err());
        let value = placeholder(&g, &[]);
        let fill = g
            .op("Fill")
            .input(target)
            .input(value)
            .build_output()
            .unwrap();
        assert_eq!(g.shape_of(fill).unwrap(), PartialShape::unknown_dims(3));
        let err = g.op("Fill").input(target).input(x).build().unwrap_err();
        assert!(err.to_string().contains("scalar"), "{err}");
    }

    #[test]
    fn nn_ops_check_ranks_and_give_both_outputs() {
        let g = Graph::new();
        let logits = placeholder(&g, &[-1, 3]);
        let labels = placeholder(&g, &[4, 3]);
        let xent = g
            .op("SoftmaxCrossEntropyWithLogits")
            .input(logits)
            .input(labels)
            .build()
            .unwrap();
        assert_eq!(g.shape_of(xent.output(0)).unwrap(), p(&[Some(4)]));
        assert_eq!(g.shape_of(xent.output(1)).unwrap(), p(&[Some(4), Some(3)]));
        let v = placeholder(&g, &[3]);
        assert!(g
            .op("SoftmaxCrossEntropyWithLogits")
            .input(v)
            .input(v)
            .build()
            .is_err());
        let grad = g
            .op("BiasAddGrad")
            .input(labels)
            .attr("data_format", AttrValue::Str("NCHW".into()))
            .build_output()
            .unwrap();
        assert_eq!(g.shape_of(grad).unwrap(), p(&[Some(3)]));
        let err = g
            .op("BiasAdd")
            .input(logits)
            .input(v)
            .attr("data_format", AttrValue::Str("NDHWC".into()))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("data_format"), "{err}");
        assert!(g.op("BiasAdd").input(v).input(v).build().is_err());
        let ints = index_placeholder(&g, &[3]);
        assert!(g.op("LogSoftmax").input(ints).build().is_err());
        let args = g
            .op("BroadcastGradientArgs")
            .input(ints)
            .input(ints)
            .build()
            .unwrap();
        assert_eq!(
            g.node(args).unwrap().output_dtypes.to_vec(),
            vec![DType::I32; 2]
        );
    }
}
