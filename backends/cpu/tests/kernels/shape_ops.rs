//! `Reshape`, `Cast`, `Fill`, `ZerosLike` on every dtype, `bool` included.

use magpie_core::graph::AttrValue;
use magpie_core::{DType, Tensor};

use super::*;

const ALL: [DType; 5] = DType::ALL;

fn reshape_node(dtype: DType, dims: &[i64]) -> Arc<Node> {
    op_node(
        "Reshape",
        dtype,
        1,
        &[("shape", AttrValue::Ints(dims.to_vec()))],
    )
}

#[test]
fn reshape_shares_the_buffer_on_every_dtype() {
    for dtype in ALL {
        let x = typed(dtype, &[2, 3], &[1, 0, 3, 0, 5, 6]);
        for (dims, want) in [
            (&[3, 2][..], &[3, 2][..]),
            (&[6], &[6]),
            (&[-1], &[6]),
            (&[3, -1], &[3, 2]),
            (&[1, -1, 1], &[1, 6, 1]),
            (&[2, 1, 3], &[2, 1, 3]),
        ] {
            let out = run1(&reshape_node(dtype, dims), vec![x.clone()]);
            assert_eq!(out.dims(), want, "{dtype} {dims:?}");
            assert!(out.shares_buffer_with(&x));
            assert_eq!(out.dtype(), dtype);
        }
        let s = typed(dtype, &[1], &[1]);
        assert_eq!(
            run1(&reshape_node(dtype, &[]), vec![s.clone()]).dims(),
            &[] as &[usize]
        );
        let out = run1(&reshape_node(dtype, &[-1]), vec![typed(dtype, &[], &[1])]);
        assert_eq!(out.dims(), &[1]);
    }
}

#[test]
fn reshape_element_mismatch_names_both_shapes() {
    let x = typed(DType::F32, &[2, 3], &[1; 6]);
    let e = run_err(&reshape_node(DType::F32, &[4, 2]), vec![x.clone()]);
    assert_eq!(
        e,
        "invalid argument: cannot reshape a tensor of shape [2, 3] (6 elements) into shape [4, 2]"
    );
    let e = run_err(&reshape_node(DType::F32, &[4, -1]), vec![x.clone()]);
    assert_eq!(
        e,
        "invalid argument: cannot reshape a tensor of shape [2, 3] (6 elements) into shape [4, -1]"
    );
    // A non-empty tensor cannot go into a shape with a zero.
    let e = run_err(
        &raw_node("Reshape", &[("shape", AttrValue::Ints(vec![0, -1]))]),
        vec![typed(DType::F32, &[3], &[1, 2, 3])],
    );
    assert_eq!(
        e,
        "invalid argument: cannot reshape a tensor of shape [3] (3 elements) into shape [0, -1]"
    );
}

#[test]
fn reshape_of_empty_tensors_infers_as_tensorflow_does() {
    // TensorFlow 2.21: the inferred dimension of an empty tensor reshaped into a shape with
    // a zero is the product of the input's non-zero dimensions over the shape's.
    for (input, spec, want) in [
        (&[0][..], &[0, -1][..], &[0, 1][..]),
        (&[0, 3], &[-1, 0], &[3, 0]),
        (&[0, 3], &[3, -1], &[3, 0]),
        (&[0, 6], &[0, -1, 2], &[0, 3, 2]),
        (&[2, 0], &[-1, 0, 5], &[0, 0, 5]),
    ] {
        let node = raw_node("Reshape", &[("shape", AttrValue::Ints(spec.to_vec()))]);
        let out = run1(&node, vec![typed(DType::F32, input, &[])]);
        assert_eq!(out.dims(), want, "{input:?} into {spec:?}");
    }
}

fn cast_node(from: DType, to: DType) -> Arc<Node> {
    op_node("Cast", from, 1, &[("dtype", AttrValue::DType(to))])
}

#[test]
fn cast_between_every_pair_of_dtypes() {
    let v = [0, 1, -2, 3];
    for from in ALL {
        for to in ALL {
            let x = typed(from, &[2, 2], &v);
            let out = run1(&cast_node(from, to), vec![x.clone()]);
            assert_eq!(out.dtype(), to, "{from} -> {to}");
            assert_eq!(out.dims(), &[2, 2]);
            let want: Vec<f64> = match (from, to) {
                (DType::Bool, _) => vec![0.0, 1.0, 1.0, 1.0],
                (_, DType::Bool) => vec![0.0, 1.0, 1.0, 1.0],
                _ => vec![0.0, 1.0, -2.0, 3.0],
            };
            assert_eq!(as_f64(&out), want, "{from} -> {to}");
            assert_eq!(out.shares_buffer_with(&x), from == to, "{from} -> {to}");
        }
    }
}

#[test]
fn cast_int_min_gives_tensorflows_values() {
    // TensorFlow 2.21 on x86, float32 and float64 sources alike.
    let v = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e20,
        -1e20,
        3e9,
        -3e9,
        300.0,
        -1.5,
        2.7,
        255.9,
        -0.0,
    ];
    let (m32, m64) = (i32::MIN, i64::MIN);
    let want32 = [m32, m32, m32, m32, m32, m32, m32, 300, -1, 2, 255, 0];
    let want64 = [
        m64,
        m64,
        m64,
        m64,
        m64,
        3_000_000_000,
        -3_000_000_000,
        300,
        -1,
        2,
        255,
        0,
    ];
    let node = |from, to| {
        op_node(
            "Cast",
            from,
            1,
            &[
                ("dtype", AttrValue::DType(to)),
                ("out_of_range", AttrValue::Str("int_min".into())),
            ],
        )
    };
    let x64 = Tensor::from(v.to_vec());
    let x32 = Tensor::from(v.iter().map(|&e| e as f32).collect::<Vec<_>>());
    for (from, x) in [(DType::F64, &x64), (DType::F32, &x32)] {
        let out = run1(&node(from, DType::I32), vec![x.clone()]);
        assert_eq!(out.as_slice::<i32>().unwrap(), &want32, "{from}");
        let out = run1(&node(from, DType::I64), vec![x.clone()]);
        assert_eq!(out.as_slice::<i64>().unwrap(), &want64, "{from}");
    }
    // Other pairs keep the plain rule.
    let out = run1(&node(DType::F32, DType::Bool), vec![x32]);
    assert!(out.as_slice::<bool>().unwrap()[0]);
}

#[test]
fn cast_uses_as_semantics() {
    let x = Tensor::from(vec![2.7f32, -2.7, 1e10, -1e10, f32::NAN, f32::INFINITY]);
    let out = run1(&cast_node(DType::F32, DType::I32), vec![x.clone()]);
    assert_eq!(
        out.as_slice::<i32>().unwrap(),
        &[2, -2, i32::MAX, i32::MIN, 0, i32::MAX]
    );
    let out = run1(&cast_node(DType::F32, DType::Bool), vec![x]);
    assert_eq!(out.as_slice::<bool>().unwrap(), &[true; 6]);
    let out = run1(
        &cast_node(DType::F64, DType::Bool),
        vec![Tensor::from(vec![0.0f64, -0.0])],
    );
    assert_eq!(out.as_slice::<bool>().unwrap(), &[false, false]);
    let big = Tensor::from(vec![i64::MAX, (1i64 << 32) + 5, -1]);
    let out = run1(&cast_node(DType::I64, DType::I32), vec![big.clone()]);
    assert_eq!(out.as_slice::<i32>().unwrap(), &[-1, 5, -1]);
    let out = run1(&cast_node(DType::I64, DType::F32), vec![big]);
    assert_eq!(
        out.as_slice::<f32>().unwrap(),
        &[i64::MAX as f32, 4294967301i64 as f32, -1.0]
    );
    let out = run1(
        &cast_node(DType::F64, DType::F32),
        vec![Tensor::scalar(1e300f64)],
    );
    assert_eq!(out.scalar_value::<f32>().unwrap(), f32::INFINITY);
}

fn fill_node(dtype: DType, dims: &[i64]) -> Arc<Node> {
    op_node(
        "Fill",
        dtype,
        1,
        &[("shape", AttrValue::Ints(dims.to_vec()))],
    )
}

#[test]
fn fill_repeats_the_value_on_every_dtype() {
    for dtype in ALL {
        for (dims, n) in [(&[2, 3][..], 6), (&[], 1), (&[0, 4], 0), (&[1023], 1023)] {
            let node = fill_node(dtype, dims);
            for value in [typed(dtype, &[], &[1]), typed(dtype, &[1], &[1])] {
                let out = run1(&node, vec![value]);
                assert_eq!(out.dtype(), dtype);
                assert_eq!(
                    out.dims().iter().map(|&d| d as i64).collect::<Vec<_>>(),
                    dims
                );
                assert_eq!(as_f64(&out), vec![1.0; n], "{dtype} {dims:?}");
            }
        }
    }
}

#[test]
fn fill_errors() {
    let node = fill_node(DType::I32, &[2]);
    assert_eq!(
        run_err(&node, vec![typed(DType::I32, &[2], &[1, 2])]),
        "invalid argument: Fill needs a scalar value, got shape [2]"
    );
    assert_eq!(
        run_err(&node, vec![typed(DType::I32, &[0], &[])]),
        "invalid argument: Fill needs a scalar value, got shape [0]"
    );
    // TensorFlow 2.21 takes a scalar or a one-element vector, not a [1, 1] value.
    assert_eq!(
        run_err(&node, vec![typed(DType::I32, &[1, 1], &[7])]),
        "invalid argument: Fill needs a scalar value, got shape [1, 1]"
    );
    // A graph rejects this shape at build; the kernel rejects it too.
    let node = raw_node("Fill", &[("shape", AttrValue::Ints(vec![-1, 2]))]);
    assert_eq!(
        build(&node, &[DType::I32]).unwrap_err().to_string(),
        "invalid argument: Fill attribute \"shape\" must have non-negative dimensions, got [-1, 2]"
    );
}

#[test]
fn zeros_like_on_every_dtype() {
    for dtype in ALL {
        let node = op_node("ZerosLike", dtype, 1, &[]);
        for dims in [&[][..], &[7], &[3, 1], &[0]] {
            let n = shape(dims).num_elements();
            let x = typed(dtype, dims, &vec![1; n]);
            let out = run1(&node, vec![x.clone()]);
            assert_eq!((out.dtype(), out.dims()), (dtype, dims));
            assert_eq!(as_f64(&out), vec![0.0; n]);
            assert!(n == 0 || !out.shares_buffer_with(&x));
        }
    }
}
