//! TensorFlow's ops on the Vulkan GPU against the CPU backend's kernels: every GPU kernel
//! of an op the TensorFlow path uses is run through core's `OpCheck` over seeded random
//! inputs (scalars, empty tensors, broadcasting shapes) with the CPU kernel of the same
//! op as the reference, and ops whose inputs must fit each other (`BiasAdd`, the softmax
//! family) also over seeded random shapes drawn to fit. Values must agree within float
//! rounding (the GPU sums in another order and has its own transcendentals); NaN where
//! the CPU gives NaN; an input the CPU refuses must be refused on the GPU.
//!
//! Skips with a message when the machine has no Vulkan device (lavapipe counts as one).

use std::sync::Arc;

use magpie::core::testkit::{run_kernel, OpCheck};
use magpie::graph::Attrs;
use magpie::{Device, Tensor};

/// Relative tolerance (to the larger of the CPU's value and 1) of GPU results.
const TOLERANCE: f64 = 2e-5;

/// The CPU device and the first GPU, kernels of both registered; `None` (after saying
/// why) without a Vulkan device.
fn devices() -> Option<(Arc<dyn Device>, Arc<dyn Device>)> {
    let options = magpie::local_options();
    if let Some(why) = magpie::gpu_status() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let gpu = options
        .devices
        .iter()
        .find(|d| d.device_type() == "GPU")
        .cloned()
        .expect("gpu_status says a GPU exists");
    Some((magpie::cpu::cpu_device(), gpu))
}

/// `check` of an op on the GPU with the CPU kernel of the op as its reference, for a few
/// seeds; panics with the replayable case on the first disagreement.
fn against_cpu(gpu: &Arc<dyn Device>, check: impl Fn() -> OpCheck) {
    for seed in [1, 2, 3] {
        let check = check().seed(seed).cases(48).tolerance(TOLERANCE);
        let report = check
            .run(gpu)
            .unwrap_or_else(|e| panic!("GPU against CPU: {e}"));
        assert!(report.elements > 0, "{report:?} compared nothing");
    }
}

/// An `OpCheck` of `op` whose reference is the CPU kernel of `op`.
fn cpu_reference(cpu: &Arc<dyn Device>, op: &'static str, inputs: usize) -> OpCheck {
    let cpu = Arc::clone(cpu);
    OpCheck::new(op, inputs, move |xs: &[Tensor], attrs: &Attrs| {
        run_kernel(&cpu, op, attrs, xs).map_err(|e| e.to_string())
    })
}

#[test]
fn elementwise_ops_match_the_cpu_over_random_and_broadcast_shapes() {
    let Some((cpu, gpu)) = devices() else { return };
    for op in [
        "Neg",
        "Square",
        "Sqrt",
        "Exp",
        "Relu",
        "Log",
        "Tanh",
        "Sigmoid",
        "OnesLike",
        "ZerosLike",
        "StopGradient",
        "Identity",
    ] {
        against_cpu(&gpu, || cpu_reference(&cpu, op, 1));
    }
    for op in ["Add", "Sub", "Mul", "Div", "Maximum", "Minimum", "FloorMod"] {
        against_cpu(&gpu, || cpu_reference(&cpu, op, 2).broadcasting(true));
    }
    // Gradients take inputs of one shape; shapes that differ are refused by both.
    for op in ["ReluGrad", "TanhGrad", "SigmoidGrad", "AddN"] {
        against_cpu(&gpu, || cpu_reference(&cpu, op, 2));
        against_cpu(&gpu, || cpu_reference(&cpu, op, 2).broadcasting(true));
    }
    against_cpu(&gpu, || cpu_reference(&cpu, "AddN", 5));
    against_cpu(&gpu, || cpu_reference(&cpu, "AddN", 1));
}

#[test]
fn tensorflows_nan_and_sign_rules_hold_on_the_gpu() {
    let Some((cpu, gpu)) = devices() else { return };
    let specials = Tensor::from(vec![
        f32::NAN,
        -0.0,
        0.0,
        -1.5,
        2.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        7.0,
    ]);
    let other = Tensor::from(vec![1.0f32, f32::NAN, -3.0, 0.0, -2.0, 2.0, 3.0, -3.0]);
    let same = |op: &str, inputs: &[Tensor]| {
        let want = run_kernel(&cpu, op, &Attrs::new(), inputs).unwrap();
        let got = run_kernel(&gpu, op, &Attrs::new(), inputs).unwrap();
        let (w, g) = (
            want[0].to_vec::<f32>().unwrap(),
            got[0].to_vec::<f32>().unwrap(),
        );
        for (i, (w, g)) in w.iter().zip(&g).enumerate() {
            let ok = (w.is_nan() && g.is_nan())
                || (w == g && w.is_sign_negative() == g.is_sign_negative())
                || (w - g).abs() <= 1e-6 * w.abs().max(1.0);
            assert!(ok, "{op} element {i}: GPU {g}, CPU {w} (inputs {inputs:?})");
        }
    };
    for op in ["Relu", "Log", "Tanh", "Sigmoid", "Exp", "Sqrt", "Neg"] {
        same(op, std::slice::from_ref(&specials));
    }
    for op in ["Maximum", "Minimum", "FloorMod", "Div", "ReluGrad"] {
        same(op, &[specials.clone(), other.clone()]);
        same(op, &[other.clone(), specials.clone()]);
    }
    // TensorFlow's FloorMod: the divisor's sign (7 mod -3 = -2, -7 mod 3 = 2).
    let x = Tensor::from(vec![7.0f32, -7.0, 7.0, -7.0]);
    let y = Tensor::from(vec![3.0f32, 3.0, -3.0, -3.0]);
    let got = run_kernel(&gpu, "FloorMod", &Attrs::new(), &[x, y]).unwrap();
    assert_eq!(got[0].to_vec::<f32>().unwrap(), [1.0, 2.0, -2.0, -1.0]);
}

#[test]
fn reductions_and_softmax_ops_match_the_cpu() {
    let Some((cpu, gpu)) = devices() else { return };
    for format in ["NHWC", "NCHW"] {
        against_cpu(&gpu, || {
            cpu_reference(&cpu, "BiasAddGrad", 1).attr("data_format", format)
        });
    }
    for op in ["Softmax", "LogSoftmax"] {
        against_cpu(&gpu, || cpu_reference(&cpu, op, 1));
    }
    against_cpu(&gpu, || {
        cpu_reference(&cpu, "SoftmaxCrossEntropyWithLogits", 2).broadcasting(true)
    });
}

/// A seeded generator of shapes and values for the ops whose inputs must fit together.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }

    fn dims(&mut self, max_rank: u64) -> Vec<usize> {
        let rank = self.below(max_rank + 1);
        (0..rank)
            .map(|_| {
                if self.below(8) == 0 {
                    0
                } else {
                    1 + self.below(4)
                }
            })
            .collect()
    }

    fn ints(&mut self, v: &[i64]) -> Tensor {
        Tensor::from_vec([v.len()], v.iter().map(|&x| x as i32).collect()).unwrap()
    }

    fn tensor(&mut self, dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (self.next() % 20_001) as f32 / 1000.0 - 10.0)
            .collect();
        Tensor::from_vec(dims, v).unwrap()
    }
}

/// Runs `op` on both devices and compares every output; `false` when both refused the
/// inputs.
fn same_outputs(
    cpu: &Arc<dyn Device>,
    gpu: &Arc<dyn Device>,
    op: &str,
    attrs: &Attrs,
    inputs: &[Tensor],
) -> bool {
    let want = run_kernel(cpu, op, attrs, inputs);
    let got = run_kernel(gpu, op, attrs, inputs);
    let (want, got) = match (want, got) {
        (Ok(w), Ok(g)) => (w, g),
        // Refused on both: the GPU's refusal is a value, as the CPU's.
        (Err(_), Err(_)) => return false,
        (Ok(_), Err(e)) => panic!("{op} on the GPU with {inputs:?}: {e}"),
        (Err(e), Ok(_)) => panic!("{op}: the CPU refuses {inputs:?} ({e}), the GPU did not"),
    };
    assert_eq!(want.len(), got.len(), "{op}: output count");
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w.dtype(), g.dtype(), "{op} {inputs:?}");
        assert_eq!(w.dims(), g.dims(), "{op} {inputs:?}");
        assert!(g.is_on_host(), "{op}: the harness fetched a device tensor");
        for i in 0..w.num_elements() {
            let (w, g) = (w.storage().get_f64(i), g.storage().get_f64(i));
            let ok = (w.is_nan() && g.is_nan()) || (w - g).abs() <= TOLERANCE * w.abs().max(1.0);
            assert!(ok, "{op} element {i}: GPU {g}, CPU {w} (inputs {inputs:?})");
        }
    }
    true
}

#[test]
fn bias_and_softmax_ops_match_the_cpu_on_fitting_random_shapes() {
    let Some((cpu, gpu)) = devices() else { return };
    let mut d = Draw(13);
    for case in 0..40 {
        let rank = 2 + d.below(3);
        let dims: Vec<usize> = (0..rank)
            .map(|_| if d.below(8) == 0 { 0 } else { 1 + d.below(9) })
            .collect();
        for (format, c) in [("NHWC", rank - 1), ("NCHW", 1)] {
            let attrs = {
                let mut a = Attrs::new();
                a.set("data_format", format);
                a
            };
            let value = d.tensor(&dims);
            let bias = d.tensor(&[dims[c]]);
            assert!(same_outputs(
                &cpu,
                &gpu,
                "BiasAdd",
                &attrs,
                &[value.clone(), bias]
            ));
            assert!(same_outputs(&cpu, &gpu, "BiasAddGrad", &attrs, &[value]));
        }
        let (b, k) = (d.below(6), 1 + d.below(300));
        let (b, k) = if case == 0 { (3, 0) } else { (b, k) };
        let logits = d.tensor(&[b, k]);
        let labels = d.tensor(&[b, k]);
        let one = std::slice::from_ref(&logits);
        assert!(same_outputs(&cpu, &gpu, "Softmax", &Attrs::new(), one));
        assert!(same_outputs(&cpu, &gpu, "LogSoftmax", &Attrs::new(), one));
        assert!(same_outputs(
            &cpu,
            &gpu,
            "SoftmaxCrossEntropyWithLogits",
            &Attrs::new(),
            &[logits.clone(), labels],
        ));
    }
    // A bias of the wrong length is refused on the GPU as on the CPU.
    let value = d.tensor(&[2, 3]);
    let bias = d.tensor(&[2]);
    let e = run_kernel(&gpu, "BiasAdd", &Attrs::new(), &[value, bias]).unwrap_err();
    assert!(e.to_string().contains("bias of shape [2]"), "{e}");
}

fn attrs(pairs: &[(&str, magpie::graph::AttrValue)]) -> Attrs {
    let mut a = Attrs::new();
    for (k, v) in pairs {
        a.set(*k, v.clone());
    }
    a
}

#[test]
fn shape_taking_ops_match_the_cpu_with_host_memory_shapes_and_axes() {
    use magpie::graph::AttrValue;
    let Some((cpu, gpu)) = devices() else { return };
    let mut d = Draw(29);
    let none = Attrs::new();
    let (mut compared, mut calls) = (0, 0);
    let mut tally = |ran: bool| {
        calls += 1;
        compared += usize::from(ran);
    };
    for _ in 0..60 {
        let dims = d.dims(4);
        let rank = dims.len();
        let x = d.tensor(&dims);
        // Tile and Transpose.
        let multiples: Vec<i64> = (0..rank).map(|_| d.below(4) as i64).collect();
        tally(same_outputs(
            &cpu,
            &gpu,
            "Tile",
            &none,
            &[x.clone(), d.ints(&multiples)],
        ));
        let mut perm: Vec<i64> = (0..rank as i64).collect();
        for i in (1..rank).rev() {
            perm.swap(i, d.below(i as u64 + 1));
        }
        tally(same_outputs(
            &cpu,
            &gpu,
            "Transpose",
            &none,
            &[x.clone(), d.ints(&perm)],
        ));
        // Sum and Mean over a random set of axes (negative ones too), both keep_dims.
        let mut axes: Vec<i64> = Vec::new();
        for a in 0..rank as i64 {
            match d.below(4) {
                0 => axes.push(a),
                1 => axes.push(a - rank as i64),
                _ => {}
            }
        }
        for keep in [false, true] {
            let a = attrs(&[("keep_dims", AttrValue::Bool(keep))]);
            for op in ["Sum", "Mean"] {
                tally(same_outputs(
                    &cpu,
                    &gpu,
                    op,
                    &a,
                    &[x.clone(), d.ints(&axes)],
                ));
            }
        }
        // Reshape to the reversed dimensions with one -1, ExpandDims, Squeeze.
        let mut spec: Vec<i64> = dims.iter().rev().map(|&v| v as i64).collect();
        if let Some(first) = spec.first_mut() {
            if dims.iter().all(|&v| v > 0) {
                *first = -1;
            }
        }
        tally(same_outputs(
            &cpu,
            &gpu,
            "Reshape",
            &none,
            &[x.clone(), d.ints(&spec)],
        ));
        let at = d.below(rank as u64 + 2) as i64 - (rank as i64 + 1);
        let dim = Tensor::from(at as i32);
        tally(same_outputs(
            &cpu,
            &gpu,
            "ExpandDims",
            &none,
            &[x.clone(), dim],
        ));
        tally(same_outputs(
            &cpu,
            &gpu,
            "Squeeze",
            &none,
            std::slice::from_ref(&x),
        ));
        // Fill(dims, value) and Cast of host-memory integers into f32 on the GPU.
        let fill_dims: Vec<i64> = dims.iter().map(|&v| v as i64).collect();
        let value = d.tensor(&[]);
        tally(same_outputs(
            &cpu,
            &gpu,
            "Fill",
            &none,
            &[d.ints(&fill_dims), value],
        ));
        let n: usize = dims.iter().product();
        let ints = Tensor::from_vec(
            dims.clone(),
            (0..n)
                .map(|_| d.below(2001) as i32 - 1000)
                .collect::<Vec<i32>>(),
        )
        .unwrap();
        for to in [magpie::DType::F32, magpie::DType::I64, magpie::DType::I32] {
            let a = attrs(&[("dtype", AttrValue::DType(to))]);
            tally(same_outputs(
                &cpu,
                &gpu,
                "Cast",
                &a,
                std::slice::from_ref(&ints),
            ));
        }
        let a = attrs(&[("dtype", AttrValue::DType(magpie::DType::F32))]);
        tally(same_outputs(
            &cpu,
            &gpu,
            "Cast",
            &a,
            std::slice::from_ref(&x),
        ));
        // Integer tensors stay in host memory on the GPU device, with the CPU's kernels.
        tally(same_outputs(
            &cpu,
            &gpu,
            "Tile",
            &none,
            &[ints.clone(), d.ints(&multiples)],
        ));
        tally(same_outputs(
            &cpu,
            &gpu,
            "Shape",
            &none,
            std::slice::from_ref(&x),
        ));
        tally(same_outputs(
            &cpu,
            &gpu,
            "Pack",
            &attrs(&[("N", AttrValue::Int(2))]),
            &[ints.clone(), ints],
        ));
    }
}

#[test]
fn integer_ops_on_the_gpu_device_are_the_cpus_in_host_memory() {
    let Some((cpu, gpu)) = devices() else { return };
    for op in ["Add", "Sub", "Mul", "Maximum", "Minimum"] {
        against_cpu(&gpu, || {
            cpu_reference(&cpu, op, 2)
                .broadcasting(true)
                .dtype(magpie::DType::I32)
        });
    }
    // FloorMod of integers: TensorFlow's signs, and a zero divisor is an error on both.
    against_cpu(&gpu, || {
        cpu_reference(&cpu, "FloorMod", 2)
            .broadcasting(true)
            .dtype(magpie::DType::I32)
            .values(-6.0, 6.0)
    });
    let x = Tensor::from(vec![7i32, -7, 7, -7]);
    let y = Tensor::from(vec![3i32, 3, -3, -3]);
    let got = run_kernel(&gpu, "FloorMod", &Attrs::new(), &[x.clone(), y]).unwrap();
    assert_eq!(got[0].to_vec::<i32>().unwrap(), [1, 2, -2, -1]);
    let zero = Tensor::from(vec![3i32, 0, 1, 1]);
    let e = run_kernel(&gpu, "FloorMod", &Attrs::new(), &[x, zero]).unwrap_err();
    assert!(e.to_string().contains("division by zero"), "{e}");
}

/// An op, its arity and attributes.
type OpCase = (
    &'static str,
    usize,
    Vec<(&'static str, magpie::graph::AttrValue)>,
);

#[test]
fn hostile_inputs_to_the_gpu_kernels_are_errors_never_panics() {
    use magpie::graph::AttrValue;
    use magpie::kernel::KernelError;
    let Some((_, gpu)) = devices() else { return };
    let inputs = vec![
        Tensor::scalar(3.5f32),
        Tensor::scalar(-1i32),
        Tensor::scalar(i64::MAX),
        Tensor::scalar(true),
        Tensor::from_vec([0usize], Vec::<f32>::new()).unwrap(),
        Tensor::from_vec([0usize], Vec::<i32>::new()).unwrap(),
        Tensor::from_vec([2usize, 0], Vec::<f32>::new()).unwrap(),
        Tensor::from_vec([3usize], vec![-5i32, 0, 7]).unwrap(),
        Tensor::from_vec([2usize], vec![i64::MAX, 2]).unwrap(),
        Tensor::from_vec([2usize], vec![1i64 << 40, 1 << 40]).unwrap(),
        Tensor::from_vec([4usize], vec![2i32, 1, -1, 0]).unwrap(),
        Tensor::from_vec([2usize, 3], vec![1.0f32, f32::NAN, -2.0, 0.0, 5.0, -0.5]).unwrap(),
        Tensor::from_vec([1usize, 3, 1], vec![1.0f32, 2.0, 3.0]).unwrap(),
        Tensor::from_vec([2usize, 2], vec![true, false, true, true]).unwrap(),
    ];
    let ops: &[OpCase] = &[
        ("Tile", 2, vec![]),
        ("Transpose", 2, vec![]),
        ("Slice", 3, vec![]),
        (
            "Pack",
            2,
            vec![("N", AttrValue::Int(2)), ("axis", AttrValue::Int(1))],
        ),
        ("Unpack", 1, vec![("num", AttrValue::Int(2))]),
        ("GatherV2", 3, vec![("batch_dims", AttrValue::Int(0))]),
        ("ConcatV2", 3, vec![("N", AttrValue::Int(2))]),
        ("ExpandDims", 2, vec![]),
        ("Reshape", 2, vec![]),
        ("Fill", 2, vec![]),
        ("Sum", 2, vec![("keep_dims", AttrValue::Bool(true))]),
        ("Mean", 2, vec![]),
        ("BiasAdd", 2, vec![]),
        (
            "BiasAdd",
            2,
            vec![("data_format", AttrValue::Str("NCHW".into()))],
        ),
        ("BiasAddGrad", 1, vec![]),
        ("ReluGrad", 2, vec![]),
        ("TanhGrad", 2, vec![]),
        ("SigmoidGrad", 2, vec![]),
        ("AddN", 2, vec![("N", AttrValue::Int(2))]),
        ("Maximum", 2, vec![]),
        ("FloorMod", 2, vec![]),
        ("Softmax", 1, vec![]),
        ("LogSoftmax", 1, vec![]),
        ("SoftmaxCrossEntropyWithLogits", 2, vec![]),
        (
            "Cast",
            1,
            vec![("dtype", AttrValue::DType(magpie::DType::F32))],
        ),
        ("Shape", 1, vec![]),
        ("Log", 1, vec![]),
        ("OnesLike", 1, vec![]),
    ];
    let mut d = Draw(41);
    for (op, arity, pairs) in ops {
        let a = attrs(pairs);
        for _ in 0..40 {
            let chosen: Vec<Tensor> = (0..*arity)
                .map(|_| inputs[d.below(inputs.len() as u64)].clone())
                .collect();
            // A panic fails the test; an error must name what was wrong, not be internal.
            if let Err(e) = run_kernel(&gpu, op, &a, &chosen) {
                assert!(
                    !matches!(e, KernelError::Internal(_)),
                    "{op} on {chosen:?}: {e}"
                );
            }
        }
    }
}
