//! Vulkan backend benches, on `GPU:0` (whatever `magpie_vulkan::discover` found first;
//! the device is printed at the start — record it with every figure).
//!
//! - `matmul/N`: an N x N x N f32 MatMul, operands already on the GPU (constants,
//!   uploaded by the warm-up step), the product left there (a target, not a fetch): the
//!   step is enqueue → submit at the step's end → wait for the queue, plus the
//!   executor's fixed cost. Throughput in "elements" is
//!   FLOP (2 N³): criterion's `Gelem/s` reads as GFLOP/s.
//! - `add/N`: elementwise add of two resident N-float tensors; throughput in bytes moved
//!   (3 x 4 N: two reads, one write), so criterion's `GiB/s` is device bandwidth.
//! - `copy_in/N`, `copy_out/N`: the host → device and device → host copies alone, in
//!   bytes per second (staging buffers included).
//! - `chain/100`: a step of 100 dependent elementwise ops (Neg, Add(y, y)) on a
//!   resident 1024-float constant, result left on the GPU: throughput in "elements" is
//!   ops, so criterion's time per element is the time per op. Before measuring, the
//!   bench prints the queue submissions one such step made (`RunMetadata::device_counters`).
//!
//! Sizes: `MAGPIE_VK_BENCH_SIZES` (matmul, comma-separated, default `1024`; `4096` takes
//! minutes per sample on lavapipe) and `MAGPIE_VK_BENCH_ADD` (default 16777216).
//! Run: `cargo bench --bench vulkan`. Without a Vulkan device the bench prints why and
//! measures nothing.
//!
//! `--figures` (or `MAGPIE_VK_FIGURES=1`) runs the short mode instead, for a lent GPU
//! machine: MatMul checked against an f64 reference in f32 and at the f16 matrix-unit
//! precision, then timed, add and the chain timed, one JSON object per line
//! (`benches/vulkan_figures/mod.rs`). Build it with `cargo bench --bench vulkan
//! --no-run` and run the binary it names with `--figures`.

use std::sync::Arc;

#[path = "vulkan_figures/mod.rs"]
mod figures;

use criterion::{criterion_group, Criterion, Throughput};
use magpie::{DType, Device, Graph, RunOptions, Session, SessionOptions, Tensor};

fn sizes(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn gpu() -> Option<Arc<dyn Device>> {
    magpie::vulkan::register().expect("the Vulkan kernels register");
    magpie::cpu::register().expect("the CPU kernels register");
    match magpie::vulkan::discover() {
        Ok(d) => {
            eprintln!("vulkan bench on {}: {}", d[0].name(), d[0].description());
            Some(d[0].clone())
        }
        Err(e) => {
            eprintln!("vulkan bench skipped: {e}");
            None
        }
    }
}

fn session(g: &Graph, gpu: &Arc<dyn Device>) -> Session {
    let opts = SessionOptions::with_devices(vec![magpie::cpu::cpu_device(), Arc::clone(gpu)])
        .num_workers(2);
    Session::new(g, opts).expect("session")
}

fn filled(n: usize, v: f32) -> Tensor {
    Tensor::from_vec([n], vec![v; n]).expect("count matches")
}

fn benches(c: &mut Criterion) {
    let Some(gpu) = gpu() else { return };
    let spec = gpu.name().to_string();
    let mut group = c.benchmark_group("vulkan");
    group.sample_size(10);

    for n in sizes("MAGPIE_VK_BENCH_SIZES", "1024") {
        let g = Graph::new();
        let product = g
            .device(&spec, |g| {
                let a = g.constant(Tensor::from_vec([n, n], vec![0.5f32; n * n]).unwrap())?;
                let b = g.constant(Tensor::from_vec([n, n], vec![0.25f32; n * n]).unwrap())?;
                g.matmul(a, b)
            })
            .unwrap();
        let s = session(&g, &gpu);
        s.run(&[], &[], &[product.node])
            .expect("warm-up uploads the operands");
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        group.bench_function(format!("matmul/{n}"), |b| {
            b.iter(|| s.run(&[], &[], &[product.node]).unwrap())
        });
    }

    {
        let g = Graph::new();
        let y = g
            .device(&spec, |g| {
                let mut y = g.constant(filled(1024, 1.0))?;
                for i in 0..100 {
                    y = if i % 2 == 0 { g.neg(y)? } else { g.add(y, y)? };
                }
                Ok(y)
            })
            .unwrap();
        let s = session(&g, &gpu);
        s.run(&[], &[], &[y.node])
            .expect("warm-up uploads the constant");
        let out = s
            .run_with_options(&RunOptions::default(), &[], &[], &[y.node])
            .expect("a measured step");
        let submissions: u64 = out
            .metadata
            .device_counters
            .iter()
            .filter(|c| c.name == "submissions")
            .map(|c| c.delta)
            .sum();
        eprintln!("chain/100: {submissions} queue submission(s) per step");
        group.throughput(Throughput::Elements(100));
        group.bench_function("chain/100", |b| {
            b.iter(|| s.run(&[], &[], &[y.node]).unwrap())
        });
    }

    for n in sizes("MAGPIE_VK_BENCH_ADD", "16777216") {
        let g = Graph::new();
        let sum = g
            .device(&spec, |g| {
                let a = g.constant(filled(n, 1.0))?;
                let b = g.constant(filled(n, 2.0))?;
                g.add(a, b)
            })
            .unwrap();
        let s = session(&g, &gpu);
        s.run(&[], &[], &[sum.node])
            .expect("warm-up uploads the operands");
        group.throughput(Throughput::Bytes(12 * n as u64));
        group.bench_function(format!("add/{n}"), |b| {
            b.iter(|| s.run(&[], &[], &[sum.node]).unwrap())
        });

        // Copies alone: a fed tensor copied in for a GPU Identity; a resident constant
        // copied out by a fetch.
        let g = Graph::new();
        let x = g.placeholder(DType::F32, None).unwrap();
        let (copied_in, resident) = g
            .device(&spec, |g| {
                Ok((g.identity(x)?, g.identity(g.constant(filled(n, 3.0))?)?))
            })
            .unwrap();
        let s = session(&g, &gpu);
        let host = filled(n, 1.0);
        s.run(&[], &[resident], &[]).expect("warm-up");
        group.throughput(Throughput::Bytes(4 * n as u64));
        group.bench_function(format!("copy_in/{n}"), |b| {
            b.iter(|| s.run(&[(x, host.clone())], &[], &[copied_in.node]).unwrap())
        });
        group.bench_function(format!("copy_out/{n}"), |b| {
            b.iter(|| s.run(&[], &[resident], &[]).unwrap())
        });
    }
    group.finish();
}

criterion_group!(vulkan, benches);

fn main() {
    let figures = std::env::args().any(|a| a == "--figures")
        || std::env::var_os("MAGPIE_VK_FIGURES").is_some_and(|v| v == "1");
    if figures {
        figures::run();
        return;
    }
    vulkan();
    Criterion::default().configure_from_args().final_summary();
}
