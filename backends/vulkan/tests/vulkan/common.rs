//! Shared helpers: the devices, deterministic data, and running one graph on the CPU
//! and on the GPU.

use std::sync::Arc;

use magpie_core::graph::{Graph, GraphError, Output};
use magpie_core::session::{Session, SessionOptions};
use magpie_core::testkit::reference::assert_close;
use magpie_core::{Device, Shape, Tensor};

/// Relative and absolute tolerance of f32 GPU results against the CPU's: summation
/// order and the GPU's exp/sqrt/division precision differ, nothing else.
pub(crate) const RTOL: f64 = 1e-4;
pub(crate) const ATOL: f64 = 1e-4;

/// The first GPU (kernels of both backends registered), or `None` after printing why
/// the test is skipped.
pub(crate) fn gpu() -> Option<Arc<dyn Device>> {
    magpie_cpu::register();
    magpie_vulkan::register();
    match magpie_vulkan::discover() {
        Ok(devices) => Some(devices[0].clone()),
        Err(e) => {
            eprintln!("SKIPPED: no Vulkan device on this machine: {e}");
            None
        }
    }
}

pub(crate) fn cpu() -> Arc<dyn Device> {
    magpie_cpu::cpu_device()
}

/// A session over `[cpu, gpu]` (the CPU is the default device).
pub(crate) fn mixed_session(g: &Graph, gpu: &Arc<dyn Device>) -> Session {
    Session::new(
        g,
        SessionOptions::with_devices(vec![cpu(), Arc::clone(gpu)]).num_workers(2),
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
    Tensor::from_vec(Shape::new(shape), v).expect("count matches")
}

/// Builds `f` over placeholders fed with `inputs`, once with every op of `f` on the
/// GPU (session `[cpu, gpu]`) and once on the CPU alone, and checks the results agree.
pub(crate) fn check_against_cpu(
    gpu: &Arc<dyn Device>,
    label: &str,
    inputs: &[Tensor],
    f: impl Fn(&Graph, &[Output]) -> Result<Output, GraphError>,
) {
    let run = |on_gpu: bool| -> Tensor {
        let g = Graph::new();
        let xs: Vec<Output> = inputs
            .iter()
            .map(|t| g.placeholder(t.dtype(), None).unwrap())
            .collect();
        let y = if on_gpu {
            g.device(&gpu.name().to_string(), |g| f(g, &xs)).unwrap()
        } else {
            f(&g, &xs).unwrap()
        };
        let session = if on_gpu {
            mixed_session(&g, gpu)
        } else {
            Session::new(&g, SessionOptions::with_devices(vec![cpu()]).num_workers(2)).unwrap()
        };
        let feeds: Vec<(Output, Tensor)> = xs.iter().copied().zip(inputs.iter().cloned()).collect();
        let out = session
            .run(&feeds, &[y], &[])
            .unwrap_or_else(|e| panic!("{label} (gpu={on_gpu}): {e}"));
        out.into_iter().next().unwrap()
    };
    let (expected, actual) = (run(false), run(true));
    assert!(
        actual.is_on_host(),
        "{label}: fetched tensor not on the host"
    );
    if let Err(msg) = assert_close(&actual, &expected, RTOL, ATOL) {
        panic!("{label}: GPU differs from CPU: {msg}");
    }
}
