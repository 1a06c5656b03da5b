//! `MatMul`: every dtype and transpose combination against a naive loop, empty
//! dimensions, integer wrapping and shape errors.

use magpie_core::graph::AttrValue;
use magpie_core::{DType, Tensor};

use super::*;

fn matmul_node(dtype: DType, ta: bool, tb: bool) -> Arc<Node> {
    op_node(
        "MatMul",
        dtype,
        2,
        &[
            ("transpose_a", AttrValue::Bool(ta)),
            ("transpose_b", AttrValue::Bool(tb)),
        ],
    )
}

/// `a` (`[r, c]`) transposed, row-major.
fn transpose(a: &[i64], r: usize, c: usize) -> Vec<i64> {
    (0..c)
        .flat_map(|j| (0..r).map(move |i| a[i * c + j]))
        .collect()
}

#[test]
fn every_dtype_and_transpose_matches_a_naive_loop() {
    let sizes = [
        (1, 1, 1),
        (2, 3, 4),
        (5, 7, 3),
        (1, 9, 1),
        (4, 1, 6),
        (17, 33, 9),
        (3, 64, 65),
    ];
    for dtype in NUMERIC {
        for ta in [false, true] {
            for tb in [false, true] {
                let node = matmul_node(dtype, ta, tb);
                for (m, k, n) in sizes {
                    let a = values(m * k, 1);
                    let b = values(k * n, 2);
                    let mut want = vec![0.0; m * n];
                    for i in 0..m {
                        for j in 0..n {
                            want[i * n + j] =
                                (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<i64>() as f64;
                        }
                    }
                    let (ad, av) = if ta {
                        ([k, m], transpose(&a, m, k))
                    } else {
                        ([m, k], a)
                    };
                    let (bd, bv) = if tb {
                        ([n, k], transpose(&b, k, n))
                    } else {
                        ([k, n], b)
                    };
                    let out = run1(&node, vec![typed(dtype, &ad, &av), typed(dtype, &bd, &bv)]);
                    let what = format!("{dtype} ta={ta} tb={tb} m={m} k={k} n={n}");
                    assert_eq!(out.dtype(), dtype, "{what}");
                    assert_eq!(out.dims(), &[m, n], "{what}");
                    assert_eq!(as_f64(&out), want, "{what}");
                }
            }
        }
    }
}

#[test]
fn empty_dimensions_give_zeros_or_nothing() {
    for dtype in NUMERIC {
        let node = matmul_node(dtype, false, false);
        let out = run1(
            &node,
            vec![typed(dtype, &[2, 0], &[]), typed(dtype, &[0, 3], &[])],
        );
        assert_eq!(out.dims(), &[2, 3]);
        assert_eq!(as_f64(&out), vec![0.0; 6]);
        let out = run1(
            &node,
            vec![typed(dtype, &[0, 4], &[]), typed(dtype, &[4, 3], &[1; 12])],
        );
        assert_eq!(out.dims(), &[0, 3]);
        let out = run1(
            &node,
            vec![typed(dtype, &[2, 4], &[1; 8]), typed(dtype, &[4, 0], &[])],
        );
        assert_eq!(out.dims(), &[2, 0]);
    }
}

#[test]
fn integers_accumulate_with_wrapping() {
    let node = matmul_node(DType::I32, false, false);
    let a = Tensor::from_vec([1, 2], vec![i32::MAX, i32::MAX]).unwrap();
    let b = Tensor::from_vec([2, 1], vec![2, 1]).unwrap();
    let out = run1(&node, vec![a, b]);
    let want = i32::MAX.wrapping_mul(2).wrapping_add(i32::MAX);
    assert_eq!(out.as_slice::<i32>().unwrap(), &[want]);
}

#[test]
fn shape_errors_name_both_shapes() {
    let node = matmul_node(DType::F32, false, false);
    let e = run_err(
        &node,
        vec![
            typed(DType::F32, &[2, 3], &[1; 6]),
            typed(DType::F32, &[4, 2], &[1; 8]),
        ],
    );
    assert_eq!(
        e,
        "invalid argument: MatMul shapes [2, 3] and [4, 2] do not match \
         (transpose_a=false, transpose_b=false): 3 columns against 4 rows"
    );
    let node = matmul_node(DType::I64, true, false);
    let e = run_err(
        &node,
        vec![
            typed(DType::I64, &[2, 3], &[1; 6]),
            typed(DType::I64, &[3, 2], &[1; 6]),
        ],
    );
    assert_eq!(
        e,
        "invalid argument: MatMul shapes [2, 3] and [3, 2] do not match \
         (transpose_a=true, transpose_b=false): 2 columns against 3 rows"
    );
    let e = run_err(
        &node,
        vec![
            typed(DType::I64, &[3], &[1; 3]),
            typed(DType::I64, &[3, 2], &[1; 6]),
        ],
    );
    assert_eq!(
        e,
        "invalid argument: MatMul needs two matrices (rank 2), got shapes [3] and [3, 2]"
    );
    let e = run_err(
        &node,
        vec![
            typed(DType::I64, &[1, 1], &[1]),
            typed(DType::I64, &[], &[1]),
        ],
    );
    assert_eq!(
        e,
        "invalid argument: MatMul needs two matrices (rank 2), got shapes [1, 1] and []"
    );
}

#[test]
fn bool_has_no_kernel() {
    let node = matmul_node(DType::F32, false, false);
    let e = build(&node, &[DType::Bool, DType::Bool]).unwrap_err();
    assert_eq!(e, unimplemented("MatMul", DType::Bool));
}
