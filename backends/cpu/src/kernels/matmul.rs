//! `MatMul`: the product of two rank-2 tensors, either transposed first
//! (`transpose_a`, `transpose_b`, default false).
//!
//! Dtypes: `f32` and `f64` through `matrixmultiply`'s `sgemm`/`dgemm`, which read the
//! transposes through strides (no copy); `i32` and `i64` through a plain loop that wraps
//! on overflow. After the transposes `a` must be `[m, k]` and `b` `[k, n]`; the output is
//! `[m, n]`, zeros when `k` is 0.
//!
//! # Intra-op parallelism
//!
//! `matrixmultiply` is built with its `threading` feature: one large product is split
//! over a small process-wide pool (`thread-tree`) of `MATMUL_NUM_THREADS` threads
//! (default: the physical cores, at most 4), the calling scheduler worker computing one
//! share itself. That pool is not the scheduler's: two MatMuls running at once on two
//! workers each add one helper thread, so the machine is briefly oversubscribed, and its
//! threads are neither pinned nor confined to a NUMA device's cores. It was measured
//! faster on the 2-core development machine than `gemm` 0.19 (faer's) with
//! `Parallelism::Rayon(2)` (`BENCHMARKS.md`, "Kernels").

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::shape_fn::matmul_dims;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError, Tensor};

use super::numeric::Arith;
use super::support::{common_dtype, dispatch_numeric, Factory};
use crate::conv::gemm_strides;

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[("MatMul", factory)];

fn factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let attrs = &init.node.attrs;
    let transpose_a = attrs.bool_or("transpose_a", false)?;
    let transpose_b = attrs.bool_or("transpose_b", false)?;
    let dtype = common_dtype(init, 2)?;
    dispatch_numeric!(init, dtype, T => MatMulKernel::<T> {
        transpose_a,
        transpose_b,
        elem: PhantomData,
    })
}

/// One operand as `gemm` reads it: the logical (transposed or not) matrix.
#[derive(Clone, Copy)]
struct Operand<'a, T> {
    data: &'a [T],
    /// Row stride of the logical matrix, in elements.
    rs: isize,
    /// Column stride of the logical matrix, in elements.
    cs: isize,
}

impl<T: Copy> Operand<'_, T> {
    /// Element `(i, j)` of the logical matrix.
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.rs.unsigned_abs() + j * self.cs.unsigned_abs()]
    }
}

/// A matrix product `c = a b` of an `[m, k]` and a `[k, n]` matrix into a new row-major
/// `[m, n]` buffer.
trait Gemm: Arith {
    fn gemm(m: usize, k: usize, n: usize, a: Operand<'_, Self>, b: Operand<'_, Self>) -> Vec<Self>;
}

impl Gemm for f32 {
    fn gemm(m: usize, k: usize, n: usize, a: Operand<'_, f32>, b: Operand<'_, f32>) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        if m == 0 || n == 0 || k == 0 {
            return c;
        }
        let (rsc, csc) = gemm_strides(n, false);
        // SAFETY: `a.data` holds the m×k logical matrix: its largest index,
        // (m-1)·rs + (k-1)·cs, is the last element of the row-major buffer the strides were
        // built for (checked shapes in `compute`); likewise `b` for k×n. `c` is a fresh,
        // distinct allocation of m·n elements with strides (n, 1), so its elements do not
        // alias each other or the inputs.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.data.as_ptr(),
                a.rs,
                a.cs,
                b.data.as_ptr(),
                b.rs,
                b.cs,
                0.0,
                c.as_mut_ptr(),
                rsc,
                csc,
            );
        }
        c
    }
}

impl Gemm for f64 {
    fn gemm(m: usize, k: usize, n: usize, a: Operand<'_, f64>, b: Operand<'_, f64>) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        if m == 0 || n == 0 || k == 0 {
            return c;
        }
        let (rsc, csc) = gemm_strides(n, false);
        // SAFETY: as for `f32` above: the strides address exactly the row-major input
        // buffers, and `c` is a fresh m·n buffer with strides (n, 1).
        unsafe {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                1.0,
                a.data.as_ptr(),
                a.rs,
                a.cs,
                b.data.as_ptr(),
                b.rs,
                b.cs,
                0.0,
                c.as_mut_ptr(),
                rsc,
                csc,
            );
        }
        c
    }
}

/// The integer product: row `i` of `c` accumulates `a[i, p] * b[p, ..]` over `p`,
/// wrapping; the order does not change a wrapping sum.
fn int_gemm<T: Arith>(
    m: usize,
    k: usize,
    n: usize,
    a: Operand<'_, T>,
    b: Operand<'_, T>,
) -> Vec<T> {
    let mut c = vec![T::ZERO; m * n];
    if n == 0 {
        return c;
    }
    for (i, row) in c.chunks_exact_mut(n).enumerate() {
        for p in 0..k {
            let aip = a.at(i, p);
            if b.cs == 1 {
                let start = p * b.rs.unsigned_abs();
                for (cij, &bpj) in row.iter_mut().zip(&b.data[start..start + n]) {
                    *cij = cij.add(aip.mul(bpj));
                }
            } else {
                for (j, cij) in row.iter_mut().enumerate() {
                    *cij = cij.add(aip.mul(b.at(p, j)));
                }
            }
        }
    }
    c
}

impl Gemm for i32 {
    fn gemm(m: usize, k: usize, n: usize, a: Operand<'_, i32>, b: Operand<'_, i32>) -> Vec<i32> {
        int_gemm(m, k, n, a, b)
    }
}

impl Gemm for i64 {
    fn gemm(m: usize, k: usize, n: usize, a: Operand<'_, i64>, b: Operand<'_, i64>) -> Vec<i64> {
        int_gemm(m, k, n, a, b)
    }
}

struct MatMulKernel<T> {
    transpose_a: bool,
    transpose_b: bool,
    elem: PhantomData<fn() -> T>,
}

impl<T: Gemm> Kernel for MatMulKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let (a, b) = (ctx.input(0), ctx.input(1));
        let (m, k, n) = matmul_dims(a.shape(), b.shape(), self.transpose_a, self.transpose_b)?;
        let (ac, bc) = (a.dims()[1], b.dims()[1]);
        let operand = |data, cols, transposed| {
            let (rs, cs) = gemm_strides(cols, transposed);
            Operand { data, rs, cs }
        };
        let lhs = operand(a.as_slice::<T>()?, ac, self.transpose_a);
        let rhs = operand(b.as_slice::<T>()?, bc, self.transpose_b);
        let c = T::gemm(m, k, n, lhs, rhs);
        ctx.push_output(Tensor::from_vec([m, n], c)?);
        Ok(())
    }
}
