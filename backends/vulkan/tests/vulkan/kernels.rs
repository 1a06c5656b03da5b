//! Every kernel against core's reference interpreter (the CPU backend's semantics), on
//! awkward shapes (1, 7, 129, 1000, 1023, non-square, rows long enough for the two-pass
//! reduction), within [`RTOL`](super::common::RTOL)/[`ATOL`](super::common::ATOL).

use super::common::{check_against_reference, data, gpu};

const SIZES: [usize; 6] = [1, 7, 129, 1000, 1023, 70_001];

#[test]
fn binary_ops_match_the_reference_with_broadcasting() {
    let Some(gpu) = gpu() else { return };
    let shapes: [(&[usize], &[usize]); 8] = [
        (&[1], &[1]),
        (&[7], &[7]),
        (&[1023], &[]),
        (&[], &[1023]),
        (&[33, 31], &[31]),
        (&[33, 1], &[1, 31]),
        (&[2, 3, 5, 7, 11], &[7, 1]),
        (&[70_001], &[70_001]),
    ];
    for op in ["Add", "Sub", "Mul", "Div"] {
        for (sa, sb) in shapes {
            let a = data(sa, 1, false);
            let b = data(sb, 2, op == "Div");
            check_against_reference(&gpu, &format!("{op} {sa:?} {sb:?}"), &[a, b], |g, x| {
                g.op(op).input(x[0]).input(x[1]).build_output()
            });
        }
    }
}

#[test]
fn the_same_tensor_on_both_sides() {
    let Some(gpu) = gpu() else { return };
    check_against_reference(&gpu, "x * x", &[data(&[1023], 3, false)], |g, x| {
        g.mul(x[0], x[0])
    });
}

#[test]
fn unary_ops_match_the_reference() {
    let Some(gpu) = gpu() else { return };
    for op in ["Neg", "Square", "Sqrt", "Exp", "Relu"] {
        for n in SIZES {
            let x = data(&[n], 4, op == "Sqrt");
            check_against_reference(&gpu, &format!("{op} [{n}]"), &[x], |g, x| {
                g.op(op).input(x[0]).build_output()
            });
        }
    }
}

#[test]
fn matmul_matches_the_reference_for_every_transpose() {
    let Some(gpu) = gpu() else { return };
    for (m, k, n) in [
        (1, 1, 1),
        (7, 5, 3),
        (65, 33, 129),
        (1, 1023, 7),
        (130, 70, 1),
        (129, 1000, 7),
        (7, 129, 1000),
        // Every dimension a multiple of 4 (vec4 loads and stores), several tiles of 128
        // with ragged edges, and whole tiles.
        (132, 36, 260),
        (256, 16, 128),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let sa = if ta { [k, m] } else { [m, k] };
            let sb = if tb { [n, k] } else { [k, n] };
            let (a, b) = (data(&sa, 5, false), data(&sb, 6, false));
            let label = format!("MatMul {sa:?} x {sb:?} ta={ta} tb={tb}");
            check_against_reference(&gpu, &label, &[a, b], |g, x| g.matmul_t(x[0], x[1], ta, tb));
        }
    }
}

#[test]
fn reductions_match_the_reference() {
    let Some(gpu) = gpu() else { return };
    let shapes: [&[usize]; 7] = [
        &[1],
        &[7],
        &[129],
        &[1000],
        &[7, 1023],
        &[3, 5, 7],
        &[3, 10_007],
    ];
    for shape in shapes {
        let rank = shape.len() as i64;
        let mut axes = vec![None];
        axes.extend((-rank..rank).map(Some));
        for axis in axes {
            for keep in [false, true] {
                for op in ["Sum", "Mean"] {
                    let x = data(shape, 7, false);
                    let label = format!("{op} {shape:?} axis={axis:?} keep_dims={keep}");
                    check_against_reference(&gpu, &label, &[x], |g, x| {
                        if op == "Sum" {
                            g.sum(x[0], axis, keep)
                        } else {
                            g.mean(x[0], axis, keep)
                        }
                    });
                }
            }
        }
    }
    // Long contiguous sums and means: two passes (many workgroups per row write partial
    // sums, then a workgroup per row reduces them), with a ragged last chunk.
    check_against_reference(
        &gpu,
        "Sum [300001]",
        &[data(&[300_001], 8, true)],
        |g, x| g.sum(x[0], None, false),
    );
    check_against_reference(
        &gpu,
        "Mean [100003]",
        &[data(&[100_003], 8, false)],
        |g, x| g.mean(x[0], None, true),
    );
}

#[test]
fn sources_and_shape_ops_match_the_reference() {
    let Some(gpu) = gpu() else { return };
    for n in SIZES {
        check_against_reference(
            &gpu,
            &format!("Fill [{n}]"),
            &[data(&[], 9, false)],
            |g, x| g.fill(&[n], x[0]),
        );
        check_against_reference(
            &gpu,
            &format!("ZerosLike [{n}]"),
            &[data(&[n], 9, false)],
            |g, x| g.op("ZerosLike").input(x[0]).build_output(),
        );
    }
    check_against_reference(&gpu, "Const + Identity", &[], |g, _| {
        let c = g.constant(data(&[7, 3], 10, false))?;
        let i = g.op("Identity").input(c).build_output()?;
        g.add(i, c)
    });
    check_against_reference(&gpu, "Reshape", &[data(&[6, 35], 11, false)], |g, x| {
        let r = g.reshape(x[0], &[5, -1])?;
        g.neg(r)
    });
    check_against_reference(
        &gpu,
        "empty tensors",
        &[data(&[0, 3], 12, false)],
        |g, x| {
            let y = g.exp(x[0])?;
            g.sum(y, Some(1), false)
        },
    );
}

#[test]
fn relu_passes_nan_and_negative_zero_through_as_tensorflow_does() {
    let Some(gpu) = gpu() else { return };
    let x = magpie_core::Tensor::from(vec![f32::NAN, -0.0, -1.5, 2.5, f32::NEG_INFINITY]);
    check_against_reference(&gpu, "Relu of NaN", std::slice::from_ref(&x), |g, x| {
        g.op("Relu").input(x[0]).build_output()
    });
    let g = magpie_core::Graph::new();
    let p = g.placeholder(magpie_core::DType::F32, None).unwrap();
    let y = g.device(&gpu.name().to_string(), |g| g.relu(p)).unwrap();
    let got = super::common::gpu_session(&g, &gpu)
        .run(&[(p, x)], &[y], &[])
        .unwrap()
        .remove(0)
        .to_vec::<f32>()
        .unwrap();
    // TensorFlow 2.21: [nan, -0.0, 0.0, 2.5, 0.0].
    assert!(got[0].is_nan(), "{got:?}");
    assert_eq!(&got[1..], &[0.0, 0.0, 2.5, 0.0]);
    assert!(got[1].is_sign_negative(), "{got:?}");
}

#[test]
fn maximum_and_minimum_propagate_nan_as_tensorflow_does() {
    let Some(gpu) = gpu() else { return };
    // NaN on either side, signed zeros both ways round, infinities; 4 x 3 elements so
    // the vec4 shader runs them too.
    let x = magpie_core::Tensor::from(vec![
        f32::NAN,
        1.0,
        f32::NAN,
        -0.0,
        0.0,
        f32::INFINITY,
        -2.0,
        3.0,
        f32::NEG_INFINITY,
        5.0,
        -1.0,
        f32::NAN,
    ]);
    let y = magpie_core::Tensor::from(vec![
        1.0,
        f32::NAN,
        f32::NAN,
        0.0,
        -0.0,
        2.0,
        -3.0,
        4.0,
        1.0,
        f32::NAN,
        f32::NEG_INFINITY,
        -1.0,
    ]);
    // (The reference interpreter has no Maximum: the values are the CPU kernel's rule.)
    for op in ["Maximum", "Minimum"] {
        let g = magpie_core::Graph::new();
        let a = g.placeholder(magpie_core::DType::F32, None).unwrap();
        let b = g.placeholder(magpie_core::DType::F32, None).unwrap();
        let out = g
            .device(&gpu.name().to_string(), |g| {
                g.op(op).input(a).input(b).build_output()
            })
            .unwrap();
        let got = super::common::gpu_session(&g, &gpu)
            .run(&[(a, x.clone()), (b, y.clone())], &[out], &[])
            .unwrap()
            .remove(0)
            .to_vec::<f32>()
            .unwrap();
        // TensorFlow 2.21 (`tf.maximum`, `tf.minimum`): NaN where either input is NaN;
        // for equal zeros the second input (the CPU's `a > b ? a : b`).
        let max = op == "Maximum";
        for i in [0, 1, 2, 9, 11] {
            assert!(got[i].is_nan(), "{op} element {i}: {got:?}");
        }
        let want: [(usize, f32); 7] = if max {
            [
                (3, 0.0),
                (4, -0.0),
                (5, f32::INFINITY),
                (6, -2.0),
                (7, 4.0),
                (8, 1.0),
                (10, -1.0),
            ]
        } else {
            [
                (3, 0.0),
                (4, -0.0),
                (5, 2.0),
                (6, -3.0),
                (7, 3.0),
                (8, f32::NEG_INFINITY),
                (10, f32::NEG_INFINITY),
            ]
        };
        for (i, w) in want {
            assert_eq!(got[i], w, "{op} element {i}: {got:?}");
            assert_eq!(
                got[i].is_sign_negative(),
                w.is_sign_negative(),
                "{op} element {i}: {got:?}"
            );
        }
    }
}
