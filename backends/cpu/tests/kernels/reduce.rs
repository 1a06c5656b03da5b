//! `Sum` and `Mean`: every dtype, every axis form, `keep_dims`, integer semantics, empty
//! inputs and axis errors.

use magpie_core::graph::AttrValue;
use magpie_core::{DType, Tensor};

use super::*;

fn reduce_node(op: &str, dtype: DType, axis: Option<i64>, keep_dims: bool) -> Arc<Node> {
    let mut attrs = vec![("keep_dims", AttrValue::Bool(keep_dims))];
    if let Some(a) = axis {
        attrs.push(("axis", AttrValue::Int(a)));
    }
    op_node(op, dtype, 1, &attrs)
}

/// Naive reduction of `x` (shape `dims`) over `axis` (all when `None`): the output dims
/// with the axis kept as 1, and per-output (sum, count).
fn reference(x: &[i64], dims: &[usize], axis: Option<usize>) -> (Vec<usize>, Vec<(i64, usize)>) {
    match axis {
        None => (vec![1; dims.len()], vec![(x.iter().sum(), x.len())]),
        Some(ax) => {
            let outer: usize = dims[..ax].iter().product();
            let inner: usize = dims[ax + 1..].iter().product();
            let mut out = Vec::new();
            for o in 0..outer {
                for i in 0..inner {
                    let s = (0..dims[ax])
                        .map(|l| x[(o * dims[ax] + l) * inner + i])
                        .sum();
                    out.push((s, dims[ax]));
                }
            }
            let mut kept = dims.to_vec();
            kept[ax] = 1;
            (kept, out)
        }
    }
}

#[test]
fn every_dtype_axis_and_keep_dims_matches_a_naive_loop() {
    let cases: &[(&[usize], &[Option<i64>])] = &[
        (&[], &[None]),
        (&[1], &[None, Some(0), Some(-1)]),
        (&[7], &[None, Some(0)]),
        (&[3, 1], &[None, Some(0), Some(1), Some(-2)]),
        (&[1023], &[None, Some(-1)]),
        (
            &[2, 3, 4],
            &[None, Some(0), Some(1), Some(2), Some(-1), Some(-3)],
        ),
    ];
    for op in ["Sum", "Mean"] {
        for dtype in NUMERIC {
            for (dims, axes) in cases {
                let x = values(shape(dims).num_elements(), 5);
                for &axis in *axes {
                    let norm = axis.map(|a| if a < 0 { a + dims.len() as i64 } else { a } as usize);
                    let (kept, want) = reference(&x, dims, norm);
                    let want: Vec<f64> = want
                        .iter()
                        .map(|&(s, c)| match (op, dtype.is_float()) {
                            ("Sum", _) => s as f64,
                            (_, true) => rounded(dtype, s as f64 / c as f64),
                            (_, false) => (s / c as i64) as f64,
                        })
                        .collect();
                    for keep_dims in [false, true] {
                        let node = reduce_node(op, dtype, axis, keep_dims);
                        let out = run1(&node, vec![typed(dtype, dims, &x)]);
                        let what = format!("{op} {dtype} {dims:?} axis={axis:?} keep={keep_dims}");
                        let want_dims: Vec<usize> = match (keep_dims, norm) {
                            (true, _) => kept.clone(),
                            (false, None) => vec![],
                            (false, Some(a)) => {
                                let mut d = dims.to_vec();
                                d.remove(a);
                                d
                            }
                        };
                        assert_eq!(out.dtype(), dtype, "{what}");
                        assert_eq!(out.dims(), &want_dims[..], "{what}");
                        assert_eq!(as_f64(&out), want, "{what}");
                    }
                }
            }
        }
    }
}

#[test]
fn integer_sums_wrap_and_means_truncate() {
    let sum = reduce_node("Sum", DType::I32, None, false);
    let out = run1(&sum, vec![Tensor::from(vec![i32::MAX, 1, 1])]);
    assert_eq!(out.scalar_value::<i32>().unwrap(), i32::MIN + 1);
    let mean = reduce_node("Mean", DType::I64, Some(1), false);
    let x = Tensor::from_vec([3, 2], vec![1i64, 2, -1, -2, 7, 0]).unwrap();
    let out = run1(&mean, vec![x]);
    assert_eq!(out.as_slice::<i64>().unwrap(), &[1, -1, 3]);
}

#[test]
fn float_sums_add_in_index_order() {
    // 1 + 1e8 - 1e8 in order: the 1 is absorbed (f32 has 24 bits).
    let sum = reduce_node("Sum", DType::F32, None, false);
    let out = run1(&sum, vec![Tensor::from(vec![1.0f32, 1e8, -1e8])]);
    assert_eq!(out.scalar_value::<f32>().unwrap(), 0.0);
    let sum = reduce_node("Sum", DType::F32, Some(0), false);
    let x = Tensor::from_vec([3, 1], vec![1.0f32, 1e8, -1e8]).unwrap();
    assert_eq!(run1(&sum, vec![x]).as_slice::<f32>().unwrap(), &[0.0]);
}

#[test]
fn means_over_nothing() {
    for dtype in [DType::F32, DType::F64] {
        let mean = reduce_node("Mean", dtype, None, false);
        let out = run1(&mean, vec![typed(dtype, &[0], &[])]);
        assert!(as_f64(&out)[0].is_nan());
        let mean = reduce_node("Mean", dtype, Some(0), false);
        let out = run1(&mean, vec![typed(dtype, &[0, 2], &[])]);
        assert_eq!(out.dims(), &[2]);
        assert!(as_f64(&out).iter().all(|v| v.is_nan()));
        let sum = reduce_node("Sum", dtype, None, true);
        let out = run1(&sum, vec![typed(dtype, &[0, 2], &[])]);
        assert_eq!((out.dims(), as_f64(&out)), (&[1, 1][..], vec![0.0]));
    }
    // TensorFlow 2.21: an integer mean over no elements is 0 (reduce_mean of an int32
    // [0, 3] tensor is 0; over axis 0 it is [0, 0, 0]).
    for dtype in [DType::I32, DType::I64] {
        let mean = reduce_node("Mean", dtype, None, false);
        let out = run1(&mean, vec![typed(dtype, &[0], &[])]);
        assert_eq!((out.dims(), as_f64(&out)), (&[][..], vec![0.0]));
        let mean = reduce_node("Mean", dtype, Some(0), false);
        let out = run1(&mean, vec![typed(dtype, &[0, 3], &[])]);
        assert_eq!((out.dims(), as_f64(&out)), (&[3][..], vec![0.0; 3]));
    }
}

#[test]
fn out_of_range_axes_name_axis_and_rank() {
    for op in ["Sum", "Mean"] {
        for (axis, dims, msg) in [
            (
                2,
                &[2, 3][..],
                "axis 2 is out of range for a tensor of rank 2",
            ),
            (
                -3,
                &[2, 3][..],
                "axis -3 is out of range for a tensor of rank 2",
            ),
            (0, &[][..], "axis 0 is out of range for a tensor of rank 0"),
        ] {
            let node = reduce_node(op, DType::F64, Some(axis), false);
            let n = shape(dims).num_elements();
            let e = run_err(&node, vec![typed(DType::F64, dims, &vec![1; n])]);
            assert_eq!(e, format!("invalid argument: {op}: {msg}"));
        }
    }
}

#[test]
fn bool_has_no_kernel() {
    for op in ["Sum", "Mean"] {
        let node = reduce_node(op, DType::F32, None, false);
        assert_eq!(
            build(&node, &[DType::Bool]).unwrap_err(),
            unimplemented(op, DType::Bool)
        );
    }
}
