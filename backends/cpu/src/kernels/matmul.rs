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
//! A large product is split into row blocks of `c` (and `a`), run as the pieces of one
//! nested scheduler run ([`parallel_for`]): the calling worker computes blocks itself and
//! idle workers of the same steal group (NUMA node) steal the others. Each block is one
//! single-threaded `matrixmultiply` call (the crate is built *without* its `threading`
//! feature, whose own thread pool would compete with the scheduler's workers for the
//! cores, is neither pinned nor NUMA-aware, and measured slower through a session).
//!
//! Why row blocks as scheduler tasks rather than `matrixmultiply`'s threads while the
//! scheduler is idle: the scheduler cannot know that it will stay idle — a second kernel
//! may become ready a microsecond later — and a pool outside it breaks the per-node
//! binding of kernels. Row blocks cost one extra packing of `b` per block (`O(k·n)`
//! against `O(m·k·n)` arithmetic) and nothing else; with [`PIECES_PER_WORKER`] blocks per
//! worker, a worker slowed by other work leaves its remaining blocks to the others.
//!
//! The output comes from the node's buffer cache (`buffers.rs`) and is written with
//! `beta = 0`, so `matrixmultiply` never reads it: no zeroing, and no page faults when a
//! step runs again.

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::shape_fn::matmul_dims;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError};

use magpie_core::scheduler::{current_parallelism, parallel_for};

use super::numeric::Arith;
use super::support::{common_dtype, dispatch_numeric, Factory};
use crate::buffers::output;
use crate::conv::gemm_strides;

/// Products of fewer multiply-adds than this run on the calling worker alone (behaviour at
/// the time of writing: ~0.1 ms of arithmetic).
const PAR_MIN_MACS: usize = 1 << 22;
/// Row blocks per worker of the caller's group (see the module docs).
const PIECES_PER_WORKER: usize = 4;
/// Row blocks are a multiple of this many rows (`matrixmultiply`'s `mc` for `f32`).
const BLOCK_ROWS: usize = 64;

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[("MatMul", factory)];

fn factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let attrs = &init.node.attrs;
    let transpose_a = attrs.bool_or("transpose_a", false)?;
    let transpose_b = attrs.bool_or("transpose_b", false)?;
    let dtype = common_dtype(init, 2)?;
    let node = init.device.numa_node();
    dispatch_numeric!(init, dtype, T => MatMulKernel::<T> {
        transpose_a,
        transpose_b,
        node,
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

    /// The logical rows `r..` of the matrix (strides are non-negative).
    fn rows_from(self, r: usize) -> Self {
        Operand {
            data: &self.data[r * self.rs.unsigned_abs()..],
            ..self
        }
    }
}

/// A matrix product `c = a b` of an `[m, k]` and a `[k, n]` matrix into `m·n` elements
/// at `c`, row-major.
trait Gemm: Arith {
    /// # Safety
    ///
    /// `c` must be valid for writes of `m·n` elements (they need not be initialised) that
    /// nothing else reads or writes during the call; `a` and `b` must address their
    /// logical matrices within their slices (shapes checked by the caller); `m`, `n` and
    /// `k` are all at least 1.
    unsafe fn gemm_into(
        m: usize,
        k: usize,
        n: usize,
        a: Operand<'_, Self>,
        b: Operand<'_, Self>,
        c: *mut Self,
    );
}

impl Gemm for f32 {
    unsafe fn gemm_into(
        m: usize,
        k: usize,
        n: usize,
        a: Operand<'_, f32>,
        b: Operand<'_, f32>,
        c: *mut f32,
    ) {
        let (rsc, csc) = gemm_strides(n, false);
        // SAFETY: `a.data` holds the m×k logical matrix: its largest index,
        // (m-1)·rs + (k-1)·cs, lies within the slice (shapes checked in `compute`, rows
        // taken with `rows_from`); likewise `b` for k×n. The caller gives `c` as m·n
        // writable elements with strides (n, 1), not aliasing the inputs; with beta = 0
        // `matrixmultiply` does not read them ("If β is zero, then C does not need to be
        // initialized").
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
                c,
                rsc,
                csc,
            );
        }
    }
}

impl Gemm for f64 {
    unsafe fn gemm_into(
        m: usize,
        k: usize,
        n: usize,
        a: Operand<'_, f64>,
        b: Operand<'_, f64>,
        c: *mut f64,
    ) {
        let (rsc, csc) = gemm_strides(n, false);
        // SAFETY: as for `f32` above.
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
                c,
                rsc,
                csc,
            );
        }
    }
}

/// The integer product: row `i` of `c` accumulates `a[i, p] * b[p, ..]` over `p`,
/// wrapping; the order does not change a wrapping sum.
fn int_gemm<T: Arith>(k: usize, n: usize, a: Operand<'_, T>, b: Operand<'_, T>, c: &mut [T]) {
    for (i, row) in c.chunks_exact_mut(n).enumerate() {
        row.fill(T::ZERO);
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
}

macro_rules! int_gemm_impl {
    ($t:ty) => {
        impl Gemm for $t {
            unsafe fn gemm_into(
                m: usize,
                k: usize,
                n: usize,
                a: Operand<'_, $t>,
                b: Operand<'_, $t>,
                c: *mut $t,
            ) {
                // SAFETY: the caller gives `c` as m·n writable elements nobody else touches;
                // zeroing them first makes them initialised integers.
                let c = unsafe {
                    std::ptr::write_bytes(c, 0, m * n);
                    std::slice::from_raw_parts_mut(c, m * n)
                };
                int_gemm(k, n, a, b, c);
            }
        }
    };
}
int_gemm_impl!(i32);
int_gemm_impl!(i64);

/// A pointer to the output that the row blocks share; each writes its own rows.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);

// SAFETY: the blocks write disjoint row ranges of one exclusively owned buffer, and `T`
// is a plain number type (`Send`).
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above: each piece derives a pointer to its own rows only.
unsafe impl<T: Send> Sync for OutPtr<T> {}

/// The number of row blocks for an m×k×n product here.
fn row_blocks(m: usize, k: usize, n: usize) -> usize {
    if m.saturating_mul(k).saturating_mul(n) < PAR_MIN_MACS {
        return 1;
    }
    let workers = current_parallelism();
    if workers <= 1 {
        return 1;
    }
    (workers * PIECES_PER_WORKER)
        .min(m.div_ceil(BLOCK_ROWS))
        .max(1)
}

struct MatMulKernel<T> {
    transpose_a: bool,
    transpose_b: bool,
    /// The device's NUMA node (where outputs go when not computed on a worker).
    node: Option<usize>,
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
        let mut out = output::<T>(m * n, self.node);
        if m > 0 && n > 0 {
            if k == 0 {
                out.buf.resize(m * n, T::ZERO);
            } else {
                let blocks = row_blocks(m, k, n);
                let rows = m.div_ceil(blocks).next_multiple_of(BLOCK_ROWS.min(m));
                let c = OutPtr(out.buf.as_mut_ptr());
                let c = &c;
                parallel_for(blocks, &|i| {
                    let r0 = i * rows;
                    if r0 >= m {
                        return;
                    }
                    let r1 = (r0 + rows).min(m);
                    // SAFETY: `out.buf` has room for m·n elements and is not touched
                    // elsewhere until every block returned; block `i` writes rows
                    // `r0..r1`, elements `r0·n..r1·n`, disjoint from every other block's.
                    // The operands address their matrices (shapes checked above).
                    unsafe { T::gemm_into(r1 - r0, k, n, lhs.rows_from(r0), rhs, c.0.add(r0 * n)) };
                });
                // SAFETY: the blocks cover rows `0..m`, and each wrote all of its
                // elements (`gemm_into` with beta = 0 writes every element of `c`).
                unsafe { out.buf.set_len(m * n) };
            }
        }
        ctx.push_output(out.into_tensor([m, n])?);
        Ok(())
    }
}
