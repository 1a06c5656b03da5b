//! `Add`, `Sub`, `Mul`, `Div`: every dtype, broadcasting, integer edge cases, errors and
//! buffer reuse.

use magpie_core::{DType, Tensor};

use super::*;

/// The element of `src` (shape `from`) that broadcasting sends to output index `idx`.
fn broadcast_index(idx: &[usize], from: &[usize]) -> usize {
    let offset = idx.len() - from.len();
    let mut flat = 0;
    for (i, &d) in from.iter().enumerate() {
        flat = flat * d + if d == 1 { 0 } else { idx[offset + i] };
    }
    flat
}

/// A naive broadcasting reference: `f` applied pairwise, in row-major output order.
fn reference(
    a: &[i64],
    ad: &[usize],
    b: &[i64],
    bd: &[usize],
    f: impl Fn(i64, i64) -> f64,
) -> (Vec<usize>, Vec<f64>) {
    let out = Shape::broadcast(&shape(ad), &shape(bd)).unwrap();
    let dims = out.dims().to_vec();
    let mut idx = vec![0; dims.len()];
    let mut res = Vec::new();
    for _ in 0..out.num_elements() {
        res.push(f(
            a[broadcast_index(&idx, ad)],
            b[broadcast_index(&idx, bd)],
        ));
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    (dims, res)
}

const SHAPES: &[(&[usize], &[usize])] = &[
    (&[], &[]),
    (&[1], &[]),
    (&[], &[7]),
    (&[7], &[7]),
    (&[7], &[1]),
    (&[3, 1], &[4]),
    (&[4], &[3, 1]),
    (&[1023], &[1023]),
    (&[1023], &[]),
    (&[], &[1023]),
    (&[2, 3, 4], &[4]),
    (&[2, 1, 3], &[4, 1]),
    (&[2, 3, 4], &[2, 1, 4]),
    (&[1, 1], &[5]),
    (&[0, 3], &[3]),
    (&[64, 32], &[64, 1]),
    (&[64, 32], &[32]),
];

fn expected(op: &str, dtype: DType, x: i64, y: i64) -> f64 {
    let float = dtype.is_float();
    let v = match op {
        "Add" => (x + y) as f64,
        "Sub" => (x - y) as f64,
        "Mul" => (x * y) as f64,
        "Div" if float => x as f64 / y as f64,
        "Div" => (x / y) as f64,
        _ => unreachable!(),
    };
    rounded(dtype, v)
}

#[test]
fn every_op_dtype_and_shape_matches_a_naive_loop() {
    for op in ["Add", "Sub", "Mul", "Div"] {
        for dtype in NUMERIC {
            let node = op_node(op, dtype, 2, &[]);
            for (ad, bd) in SHAPES {
                let a = values(shape(ad).num_elements(), 1);
                let b = values(shape(bd).num_elements(), 2);
                let (dims, want) = reference(&a, ad, &b, bd, |x, y| expected(op, dtype, x, y));
                // Shared inputs (the test holds a reference) and uniquely owned ones take
                // different paths; both must agree with the reference.
                let (ta, tb) = (typed(dtype, ad, &a), typed(dtype, bd, &b));
                let shared = run1(&node, vec![ta.clone(), tb.clone()]);
                let owned = run1(&node, vec![typed(dtype, ad, &a), typed(dtype, bd, &b)]);
                for out in [&shared, &owned] {
                    let what = format!("{op} {dtype} {ad:?} {bd:?}");
                    assert_eq!(out.dtype(), dtype, "{what}");
                    assert_eq!(out.dims(), &dims[..], "{what}");
                    assert_eq!(as_f64(out), want, "{what}");
                }
                assert_eq!(as_f64(&ta), a.iter().map(|&v| v as f64).collect::<Vec<_>>());
            }
        }
    }
}

#[test]
fn integers_wrap_and_divide_toward_zero() {
    let add = op_node("Add", DType::I32, 2, &[]);
    let out = run1(
        &add,
        vec![
            Tensor::from(vec![i32::MAX, i32::MIN]),
            Tensor::from(vec![1, -1]),
        ],
    );
    assert_eq!(out.as_slice::<i32>().unwrap(), &[i32::MIN, i32::MAX]);

    let sub = op_node("Sub", DType::I64, 2, &[]);
    let out = run1(&sub, vec![Tensor::scalar(i64::MIN), Tensor::scalar(1i64)]);
    assert_eq!(out.scalar_value::<i64>().unwrap(), i64::MAX);

    let mul = op_node("Mul", DType::I32, 2, &[]);
    let out = run1(&mul, vec![Tensor::scalar(i32::MAX), Tensor::scalar(2)]);
    assert_eq!(out.scalar_value::<i32>().unwrap(), -2);

    let div = op_node("Div", DType::I32, 2, &[]);
    let out = run1(
        &div,
        vec![
            Tensor::from(vec![7, -7, 7, -7, i32::MIN]),
            Tensor::from(vec![2, 2, -2, -2, -1]),
        ],
    );
    assert_eq!(out.as_slice::<i32>().unwrap(), &[3, -3, -3, 3, i32::MIN]);

    let div = op_node("Div", DType::I64, 2, &[]);
    let out = run1(&div, vec![Tensor::scalar(i64::MIN), Tensor::scalar(-1i64)]);
    assert_eq!(out.scalar_value::<i64>().unwrap(), i64::MIN);
}

#[test]
fn float_division_by_zero_follows_ieee() {
    let div = op_node("Div", DType::F32, 2, &[]);
    let out = run1(
        &div,
        vec![
            Tensor::from(vec![1.0f32, -1.0, 0.0]),
            Tensor::scalar(0.0f32),
        ],
    );
    let v = out.as_slice::<f32>().unwrap();
    assert_eq!(v[..2], [f32::INFINITY, f32::NEG_INFINITY]);
    assert!(v[2].is_nan());
}

#[test]
fn integer_division_by_zero_is_an_error() {
    for dtype in [DType::I32, DType::I64] {
        let div = op_node("Div", dtype, 2, &[]);
        let cases = [
            (typed(dtype, &[], &[1]), typed(dtype, &[], &[0])),
            (
                typed(dtype, &[3], &[1, 2, 3]),
                typed(dtype, &[3], &[1, 0, 1]),
            ),
            (
                typed(dtype, &[2, 3], &[1; 6]),
                typed(dtype, &[3], &[1, 1, 0]),
            ),
            (
                typed(dtype, &[100], &[1; 100]),
                typed(dtype, &[100], &[0; 100]),
            ),
        ];
        for (a, b) in cases {
            assert_eq!(
                run_err(&div, vec![a, b]),
                "invalid argument: integer division by zero"
            );
        }
    }
}

#[test]
fn incompatible_shapes_are_named() {
    for op in ["Add", "Sub", "Mul", "Div"] {
        let node = op_node(op, DType::F32, 2, &[]);
        let e = run_err(
            &node,
            vec![
                typed(DType::F32, &[3], &[1; 3]),
                typed(DType::F32, &[4], &[1; 4]),
            ],
        );
        assert_eq!(
            e,
            "invalid argument: shapes [3] and [4] cannot be broadcast together"
        );
        let e = run_err(
            &node,
            vec![
                typed(DType::F32, &[2, 3], &[1; 6]),
                typed(DType::F32, &[3, 2], &[1; 6]),
            ],
        );
        assert_eq!(
            e,
            "invalid argument: shapes [2, 3] and [3, 2] cannot be broadcast together"
        );
    }
}

#[test]
fn bool_has_no_kernel() {
    let node = op_node("Add", DType::F32, 2, &[]);
    let e = build(&node, &[DType::Bool, DType::Bool]).unwrap_err();
    assert_eq!(e, unimplemented("Add", DType::Bool));
    assert_eq!(e.to_string(), "Add has no kernel for dtype bool on CPU");
}

#[test]
fn mismatched_dtypes_are_rejected_when_built() {
    let node = op_node("Mul", DType::F32, 2, &[]);
    let e = build(&node, &[DType::F32, DType::F64]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid argument: Mul needs inputs of one dtype, got f32 and f64"
    );
}

#[test]
fn a_uniquely_owned_input_becomes_the_output() {
    for dtype in NUMERIC {
        let node = op_node("Add", dtype, 2, &[]);
        // Left operand, same shapes.
        let a = typed(dtype, &[1023], &values(1023, 1));
        let ptr = data_ptr(&a);
        let out = run1(&node, vec![a, typed(dtype, &[1023], &values(1023, 2))]);
        assert_eq!(data_ptr(&out), ptr, "{dtype}: left buffer reused");

        // Right operand, left a scalar.
        let b = typed(dtype, &[1023], &values(1023, 2));
        let ptr = data_ptr(&b);
        let out = run1(&node, vec![typed(dtype, &[], &[5]), b]);
        assert_eq!(data_ptr(&out), ptr, "{dtype}: right buffer reused");

        // Left operand, right broadcast along rows.
        let a = typed(dtype, &[64, 32], &values(2048, 1));
        let ptr = data_ptr(&a);
        let out = run1(&node, vec![a, typed(dtype, &[32], &values(32, 2))]);
        assert_eq!(
            data_ptr(&out),
            ptr,
            "{dtype}: left buffer reused under broadcast"
        );
    }
    // Non-commutative ops keep their operand order when the right buffer is reused.
    let sub = op_node("Sub", DType::I64, 2, &[]);
    let b = typed(DType::I64, &[100], &[1; 100]);
    let ptr = data_ptr(&b);
    let out = run1(&sub, vec![Tensor::scalar(10i64), b]);
    assert_eq!(data_ptr(&out), ptr);
    assert_eq!(out.as_slice::<i64>().unwrap(), &[9; 100][..]);
}

#[test]
fn a_shared_input_is_never_written() {
    for dtype in NUMERIC {
        let node = op_node("Mul", dtype, 2, &[]);
        let a = typed(dtype, &[1023], &values(1023, 1));
        let b = typed(dtype, &[1023], &values(1023, 2));
        let out = run1(&node, vec![a.clone(), b.clone()]);
        assert!(!out.shares_buffer_with(&a) && !out.shares_buffer_with(&b));
        assert_ne!(data_ptr(&out), data_ptr(&a));
        assert_ne!(data_ptr(&out), data_ptr(&b));
        assert_eq!(
            as_f64(&a),
            values(1023, 1)
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<_>>()
        );

        // The same tensor on both sides: neither reference is unique.
        let out = run1(&node, vec![a.clone(), a.clone()]);
        assert!(!out.shares_buffer_with(&a));
    }
}
