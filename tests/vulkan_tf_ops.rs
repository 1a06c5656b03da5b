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
        "Neg", "Square", "Sqrt", "Exp", "Relu", "Log", "Tanh", "Sigmoid", "OnesLike",
        "ZerosLike", "StopGradient", "Identity",
    ] {
        against_cpu(&gpu, || cpu_reference(&cpu, op, 1));
    }
    for op in [
        "Add", "Sub", "Mul", "Div", "Maximum", "Minimum", "FloorMod",
    ] {
        against_cpu(&gpu, || {
            cpu_reference(&cpu, op, 2).broadcasting(true)
        });
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

    fn tensor(&mut self, dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (self.next() % 20_001) as f32 / 1000.0 - 10.0)
            .collect();
        Tensor::from_vec(dims, v).unwrap()
    }
}

/// Runs `op` on both devices and compares every output.
fn same_outputs(
    cpu: &Arc<dyn Device>,
    gpu: &Arc<dyn Device>,
    op: &str,
    attrs: &Attrs,
    inputs: &[Tensor],
) {
    let want = run_kernel(cpu, op, attrs, inputs).unwrap();
    let got = run_kernel(gpu, op, attrs, inputs)
        .unwrap_or_else(|e| panic!("{op} on the GPU with {inputs:?}: {e}"));
    assert_eq!(want.len(), got.len(), "{op}: output count");
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w.dims(), g.dims(), "{op} {inputs:?}");
        let (w, g) = (w.to_vec::<f32>().unwrap(), g.to_vec::<f32>().unwrap());
        for (i, (w, g)) in w.iter().zip(&g).enumerate() {
            let ok = (w.is_nan() && g.is_nan())
                || f64::from((w - g).abs()) <= TOLERANCE * f64::from(w.abs()).max(1.0);
            assert!(ok, "{op} element {i}: GPU {g}, CPU {w}");
        }
    }
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
            same_outputs(&cpu, &gpu, "BiasAdd", &attrs, &[value.clone(), bias]);
            same_outputs(&cpu, &gpu, "BiasAddGrad", &attrs, &[value]);
        }
        let (b, k) = (d.below(6), 1 + d.below(300));
        let (b, k) = if case == 0 { (3, 0) } else { (b, k) };
        let logits = d.tensor(&[b, k]);
        let labels = d.tensor(&[b, k]);
        same_outputs(&cpu, &gpu, "Softmax", &Attrs::new(), std::slice::from_ref(&logits));
        same_outputs(&cpu, &gpu, "LogSoftmax", &Attrs::new(), std::slice::from_ref(&logits));
        same_outputs(
            &cpu,
            &gpu,
            "SoftmaxCrossEntropyWithLogits",
            &Attrs::new(),
            &[logits, labels],
        );
    }
    // A bias of the wrong length is refused on the GPU as on the CPU.
    let value = d.tensor(&[2, 3]);
    let bias = d.tensor(&[2]);
    let e = run_kernel(&gpu, "BiasAdd", &Attrs::new(), &[value, bias]).unwrap_err();
    assert!(e.to_string().contains("bias of shape [2]"), "{e}");
}
