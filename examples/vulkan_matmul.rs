//! A graph split between the CPU and a Vulkan GPU: the CPU prepares the operands, the
//! GPU multiplies them and applies a ReLU, the CPU sums the result. Prints the device
//! each op ran on and checks the result against the same graph run on the CPU alone.
//!
//! Run with `cargo run --example vulkan_matmul` (lavapipe, Mesa's CPU Vulkan driver,
//! counts as a GPU: `apt-get install mesa-vulkan-drivers libvulkan1`).

use anyhow::bail;
use magpie::{DType, Graph, Output, RunOptions, Session, SessionOptions, Tensor};

const M: usize = 96;
const K: usize = 80;
const N: usize = 112;

/// `(a, b, relu(a' x b), sum)` where `a' = a * 0.5` is computed on the CPU; `gpu`
/// pins the matmul and the ReLU.
fn build(g: &Graph, gpu: Option<&str>) -> anyhow::Result<(Output, Output, Output, Output)> {
    let a = g.placeholder(DType::F32, None)?;
    let b = g.placeholder(DType::F32, None)?;
    let scaled = g.mul(a, g.constant(0.5f32)?)?;
    let on_gpu = |g: &Graph| g.relu(g.matmul(scaled, b)?);
    let r = match gpu {
        Some(spec) => g.device(spec, on_gpu)?,
        None => on_gpu(g)?,
    };
    let total = g.sum(r, None, false)?;
    Ok((a, b, r, total))
}

fn values(rows: usize, cols: usize, seed: u32) -> Tensor {
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
        })
        .collect();
    Tensor::from_vec([rows, cols], v).expect("count matches")
}

fn main() -> anyhow::Result<()> {
    let options = magpie::local_options();
    println!("devices:");
    for d in &options.devices {
        println!("  {}  {}", d.name(), d.description());
    }
    let Some(gpu) = options.devices.iter().find(|d| d.device_type() == "GPU") else {
        let why = magpie::gpu_status().unwrap_or_default();
        bail!("no GPU to run on: {why}");
    };
    let gpu_name = gpu.name().to_string();

    let (ta, tb) = (values(M, K, 1), values(K, N, 2));
    let g = Graph::new();
    let (a, b, r, total) = build(&g, Some(&gpu_name))?;
    let session = Session::new(&g, options.clone())?;
    let trace = RunOptions {
        trace: true,
        ..RunOptions::default()
    };
    let out = session.run_with_options(
        &trace,
        &[(a, ta.clone()), (b, tb.clone())],
        &[r, total],
        &[],
    )?;
    println!("ops ran on:");
    for n in &out.metadata.nodes {
        println!("  {:<40} {:<14} {}", n.node, n.op, n.device);
    }
    println!("host/device copies: {}", out.metadata.copies);

    let cpu_graph = Graph::new();
    let (ca, cb, cr, ctotal) = build(&cpu_graph, None)?;
    let cpu_only = Session::new(
        &cpu_graph,
        SessionOptions::with_devices(vec![magpie::cpu::cpu_device()]),
    )?;
    let want = cpu_only.run(&[(ca, ta), (cb, tb)], &[cr, ctotal], &[])?;

    let got = out.tensors[0].as_slice::<f32>()?;
    let expected = want[0].as_slice::<f32>()?;
    let max_err = got
        .iter()
        .zip(expected)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0f32, f32::max);
    let (gpu_sum, cpu_sum) = (f32::try_from(&out.tensors[1])?, f32::try_from(&want[1])?);
    println!("sum of relu(a/2 x b) [{M}x{N}]: GPU {gpu_sum:.4}, CPU {cpu_sum:.4}");
    if max_err > 1e-4 || (gpu_sum - cpu_sum).abs() > 1e-3 * (1.0 + cpu_sum.abs()) {
        bail!("GPU and CPU differ: max relative error {max_err}");
    }
    println!("GPU result matches the CPU (max relative error {max_err:.1e})");
    Ok(())
}
