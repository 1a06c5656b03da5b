//! Shared helpers: the device, deterministic data, and running one graph on the GPU
//! against core's reference interpreter. (This crate may not depend on the CPU backend,
//! not even for tests; graphs that mix CPU and GPU ops are tested in the facade's
//! `tests/vulkan.rs`.)

use std::sync::Arc;

use magpie_core::graph::{Graph, GraphError, Output};
use magpie_core::session::{Session, SessionOptions};
use magpie_core::testkit::reference::{assert_close, evaluate};
use magpie_core::{Device, Tensor};

/// Relative and absolute tolerance of f32 GPU results against the reference (which
/// computes like the CPU backend): summation order and the GPU's exp/sqrt/division
/// precision differ, nothing else.
pub(crate) const RTOL: f64 = 1e-4;
pub(crate) const ATOL: f64 = 1e-4;

/// The first GPU (its kernels registered), or `None` after printing why the test is
/// skipped.
pub(crate) fn gpu() -> Option<Arc<dyn Device>> {
    magpie_vulkan::register().expect("the Vulkan kernels register");
    match magpie_vulkan::discover() {
        Ok(devices) => Some(devices[0].clone()),
        Err(e) => {
            eprintln!("SKIPPED: no Vulkan device on this machine: {e}");
            None
        }
    }
}

/// A session over the GPU alone: host feeds are copied in, fetches copied out.
pub(crate) fn gpu_session(g: &Graph, gpu: &Arc<dyn Device>) -> Session {
    Session::new(
        g,
        SessionOptions::with_devices(vec![Arc::clone(gpu)]).num_workers(2),
    )
    .expect("session")
}

/// `n` deterministic f32 values in about [-2, 2] (positive in (0, 4] when `positive`).
pub(crate) fn data(shape: &[usize], seed: u64, positive: bool) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((s >> 40) as f32) / ((1u64 << 24) as f32); // [0, 1)
            if positive {
                4.0 * u + 1e-3
            } else {
                4.0 * u - 2.0
            }
        })
        .collect();
    Tensor::from_vec(shape, v).expect("count matches")
}

/// Builds `f` over placeholders fed with `inputs`, runs it on the GPU, and checks the
/// result against core's reference interpreter.
pub(crate) fn check_against_reference(
    gpu: &Arc<dyn Device>,
    label: &str,
    inputs: &[Tensor],
    f: impl Fn(&Graph, &[Output]) -> Result<Output, GraphError>,
) {
    let g = Graph::new();
    let xs: Vec<Output> = inputs
        .iter()
        .map(|t| g.placeholder(t.dtype(), None).unwrap())
        .collect();
    let y = g.device(&gpu.name().to_string(), |g| f(g, &xs)).unwrap();
    let feeds: Vec<(Output, Tensor)> = xs.iter().copied().zip(inputs.iter().cloned()).collect();
    let expected = evaluate(&g, &feeds, &[y])
        .unwrap_or_else(|e| panic!("{label}: the reference failed: {e}"))
        .remove(0);
    let actual = gpu_session(&g, gpu)
        .run(&feeds, &[y], &[])
        .unwrap_or_else(|e| panic!("{label}: {e}"))
        .remove(0);
    assert!(
        actual.is_on_host(),
        "{label}: fetched tensor not on the host"
    );
    if let Err(msg) = assert_close(&actual, &expected, RTOL, ATOL) {
        panic!("{label}: GPU differs from the reference: {msg}");
    }
}
