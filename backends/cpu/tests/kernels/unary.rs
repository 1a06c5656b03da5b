//! `Neg`, `Square`, `Relu`, `Sqrt`, `Exp`: every supported dtype, edge values, dtypes
//! without a kernel and buffer reuse.

use magpie_core::{DType, Tensor};

use super::*;

const SHAPES: &[&[usize]] = &[&[], &[1], &[7], &[3, 1], &[1023], &[0], &[2, 3, 4]];

#[test]
fn numeric_ops_on_every_dtype() {
    for (op, f) in [
        ("Neg", (|x| -x) as fn(i64) -> i64),
        ("Square", |x| x * x),
        ("Relu", |x| x.max(0)),
    ] {
        for dtype in NUMERIC {
            let node = op_node(op, dtype, 1, &[]);
            for dims in SHAPES {
                let v = values(shape(dims).num_elements(), 4);
                let want: Vec<f64> = v.iter().map(|&x| f(x) as f64).collect();
                for x in [typed(dtype, dims, &v), typed(dtype, dims, &v)] {
                    let kept = x.clone();
                    for input in [kept.clone(), x] {
                        let out = run1(&node, vec![input]);
                        assert_eq!(out.dtype(), dtype);
                        assert_eq!(out.dims(), *dims, "{op} {dtype} {dims:?}");
                        assert_eq!(as_f64(&out), want, "{op} {dtype} {dims:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn float_ops_on_f32_and_f64() {
    let x = [0.0, 0.25, 1.0, 2.0, 9.0, 1e-3, 30.0];
    for dtype in [DType::F32, DType::F64] {
        for (op, f) in [("Sqrt", f64::sqrt as fn(f64) -> f64), ("Exp", f64::exp)] {
            let node = op_node(op, dtype, 1, &[]);
            let input = match dtype {
                DType::F32 => Tensor::from(x.iter().map(|&v| v as f32).collect::<Vec<_>>()),
                _ => Tensor::from(x.to_vec()),
            };
            let out = run1(&node, vec![input]);
            let got = as_f64(&out);
            for (g, &v) in got.iter().zip(&x) {
                let want = match dtype {
                    DType::F32 => f64::from(match op {
                        "Sqrt" => (v as f32).sqrt(),
                        _ => (v as f32).exp(),
                    }),
                    _ => f(v),
                };
                assert_eq!(*g, want, "{op} {dtype} of {v}");
            }
        }
    }
    let sqrt = op_node("Sqrt", DType::F64, 1, &[]);
    assert!(run1(&sqrt, vec![Tensor::scalar(-1.0f64)])
        .scalar_value::<f64>()
        .unwrap()
        .is_nan());
}

#[test]
fn integer_neg_and_square_wrap() {
    let neg = op_node("Neg", DType::I32, 1, &[]);
    let out = run1(&neg, vec![Tensor::from(vec![i32::MIN, i32::MAX])]);
    assert_eq!(out.as_slice::<i32>().unwrap(), &[i32::MIN, -i32::MAX]);
    let square = op_node("Square", DType::I64, 1, &[]);
    let out = run1(&square, vec![Tensor::scalar(i64::MAX)]);
    assert_eq!(out.scalar_value::<i64>().unwrap(), 1);
    let square = op_node("Square", DType::I32, 1, &[]);
    let out = run1(&square, vec![Tensor::scalar(65536)]);
    assert_eq!(out.scalar_value::<i32>().unwrap(), 0);
}

#[test]
fn relu_passes_nan_and_negative_zero_through_as_tensorflow_does() {
    // TensorFlow 2.21: relu([nan, -nan, -0.0, -1.5, 2.5, -inf, inf]) is
    // [nan, nan, -0.0, 0.0, 2.5, 0.0, inf].
    let relu = op_node("Relu", DType::F32, 1, &[]);
    let out = run1(
        &relu,
        vec![Tensor::from(vec![
            f32::NAN,
            -f32::NAN,
            -0.0,
            -1.5,
            2.5,
            f32::NEG_INFINITY,
            f32::INFINITY,
        ])],
    );
    let v = out.as_slice::<f32>().unwrap();
    assert!(v[0].is_nan() && v[1].is_nan(), "{v:?}");
    assert_eq!(&v[2..], &[0.0, 0.0, 2.5, 0.0, f32::INFINITY]);
    assert!(v[2].is_sign_negative() && v[3].is_sign_positive());
    let relu = op_node("Relu", DType::F64, 1, &[]);
    let out = run1(&relu, vec![Tensor::from(vec![f64::NAN, -1.0, 2.0])]);
    let v = out.as_slice::<f64>().unwrap();
    assert!(v[0].is_nan() && v[1..] == [0.0, 2.0], "{v:?}");
}

#[test]
fn float_ops_have_no_integer_or_bool_kernels() {
    for op in ["Sqrt", "Exp"] {
        let node = op_node(op, DType::F32, 1, &[]);
        for dtype in [DType::I32, DType::I64, DType::Bool] {
            assert_eq!(
                build(&node, &[dtype]).unwrap_err(),
                unimplemented(op, dtype)
            );
        }
    }
    for op in ["Neg", "Square", "Relu"] {
        let node = op_node(op, DType::F32, 1, &[]);
        assert_eq!(
            build(&node, &[DType::Bool]).unwrap_err(),
            unimplemented(op, DType::Bool)
        );
    }
}

#[test]
fn a_uniquely_owned_input_becomes_the_output() {
    for dtype in NUMERIC {
        let node = op_node("Neg", dtype, 1, &[]);
        let x = typed(dtype, &[1023], &values(1023, 1));
        let ptr = data_ptr(&x);
        let out = run1(&node, vec![x]);
        assert_eq!(data_ptr(&out), ptr, "{dtype}");

        let x = typed(dtype, &[1023], &values(1023, 1));
        let out = run1(&node, vec![x.clone()]);
        assert!(!out.shares_buffer_with(&x));
        assert_ne!(data_ptr(&out), data_ptr(&x));
        assert_eq!(
            as_f64(&x),
            values(1023, 1)
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<_>>()
        );
    }
}
