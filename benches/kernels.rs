//! CPU kernel benches, through a local session (fed operands, fetched result), with the
//! memory baseline measured in the same run.
//!
//! - `matmul/N`: an N x N x N f32 MatMul (row blocks of `matrixmultiply`'s sgemm run as
//!   scheduler tasks); throughput in FLOP (2 N³), so criterion's `Gelem/s` reads as
//!   GFLOP/s.
//! - `add/16M`: elementwise add of two 16M-float tensors into a new one (from the CPU
//!   device's buffer cache from the second step on); throughput in bytes moved
//!   (3 x 64 MiB: two reads, one write).
//! - `copy/to_vec`, `copy/into`: a plain copy of one 16M-float buffer into a new `Vec`
//!   (allocation and first touch included, like `add`'s output) and into a buffer written
//!   before; bytes moved = 2 x 64 MiB.
//!
//! Run: `cargo bench --bench kernels` (`MAGPIE_MATMUL_SIZES=512,1024` to pick sizes).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use magpie::{DType, Graph, Session, Shape, Tensor};

const ADD_LEN: usize = 16 << 20;

fn session_of(g: &Graph) -> Session {
    Session::new(g, magpie::local_options()).expect("a local session")
}

fn matmul(c: &mut Criterion) {
    let sizes: Vec<usize> = std::env::var("MAGPIE_MATMUL_SIZES")
        .unwrap_or_else(|_| "512,1024,2048".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10);
    for n in sizes {
        let g = Graph::new();
        let shape = Shape::new(&[n, n]).unwrap();
        let a = g.placeholder(DType::F32, Some(&shape)).unwrap();
        let b = g.placeholder(DType::F32, Some(&shape)).unwrap();
        let m = g.matmul(a, b).unwrap();
        let s = session_of(&g);
        let ta = Tensor::from_vec([n, n], (0..n * n).map(|i| (i % 7) as f32).collect()).unwrap();
        let tb = Tensor::from_vec([n, n], (0..n * n).map(|i| (i % 5) as f32).collect()).unwrap();
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| {
                s.run(&[(a, ta.clone()), (b, tb.clone())], &[m], &[])
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn add_vs_copy(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory");
    group.sample_size(20);
    let src: Vec<f32> = (0..ADD_LEN).map(|i| i as f32).collect();
    let bytes = (ADD_LEN * 4) as u64;

    let g = Graph::new();
    let shape = Shape::new(&[ADD_LEN]).unwrap();
    let a = g.placeholder(DType::F32, Some(&shape)).unwrap();
    let b = g.placeholder(DType::F32, Some(&shape)).unwrap();
    let sum = g.add(a, b).unwrap();
    let s = session_of(&g);
    let ta = Tensor::from_vec([ADD_LEN], src.clone()).unwrap();
    let tb = Tensor::from_vec([ADD_LEN], src.clone()).unwrap();
    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function("add/16M", |bench| {
        bench.iter(|| {
            s.run(&[(a, ta.clone()), (b, tb.clone())], &[sum], &[])
                .unwrap()
        })
    });

    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function("copy/to_vec", |bench| bench.iter(|| src.to_vec()));
    let mut dst = vec![0.0f32; ADD_LEN];
    group.bench_function("copy/into", |bench| {
        bench.iter(|| {
            dst.copy_from_slice(&src);
            std::hint::black_box(&dst);
        })
    });
    group.finish();
}

criterion_group!(benches, matmul, add_vs_copy);
criterion_main!(benches);
