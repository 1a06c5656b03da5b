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
//! A large product is split into blocks of `c`, run as the pieces of one nested scheduler
//! run ([`parallel_for`]): the calling worker computes a block itself and an idle worker
//! of the same steal group (NUMA node) steals the other. Each block is one
//! single-threaded `matrixmultiply` call (the crate is built *without* its `threading`
//! feature, whose own thread pool would compete with the scheduler's workers for the
//! cores and is neither pinned nor NUMA-aware).
//!
//! Why blocks as scheduler tasks rather than `matrixmultiply`'s threads while the
//! scheduler is idle: the scheduler cannot know that it will stay idle — a second kernel
//! may become ready a microsecond later — and a pool outside it breaks the per-node
//! binding of kernels. The price is packing: `matrixmultiply`'s own threads share one
//! packed panel of `b`, while every block packs its own. So there is one block per
//! worker ([`PIECES_PER_WORKER`]; four per worker measured 10–20 % slower at 1024 on the
//! 2-core machine), column blocks of whole `nc` panels when `n` allows (no extra packing:
//! see [`blocks`]), row blocks otherwise (one extra packing of `b` per block, `O(k·n)`
//! against `O(m·k·n)` arithmetic).
//!
//! `matrixmultiply` is built with its `avx512` feature: it detects AVX-512F at run time and
//! falls back to its AVX2/FMA or SSE kernels elsewhere.
//!
//! The output comes from the node's buffer cache (`buffers.rs`) and is written with
//! `beta = 0`, so `matrixmultiply` never reads it: no zeroing, and no page faults when a
//! step runs again.

use std::marker::PhantomData;

use magpie_core::kernel::KernelInit;
use magpie_core::shape_fn::matmul_dims;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError, Shape};

use magpie_core::scheduler::{current_parallelism, parallel_for};

use super::numeric::Arith;
use super::support::{common_dtype, dispatch_numeric, operand, Factory};
use crate::buffers::{output, Place};
use crate::conv::gemm_strides;

/// Products of fewer multiply-adds than this run on the calling worker alone (behaviour at
/// the time of writing: ~0.1 ms of arithmetic).
const PAR_MIN_MACS: usize = 1 << 22;
/// Blocks per worker of the caller's group (see the module docs).
const PIECES_PER_WORKER: usize = 1;
/// Row blocks are a multiple of this many rows (`matrixmultiply`'s `mc` for `f32`).
const BLOCK_ROWS: usize = 64;
/// Column blocks are a multiple of this many columns (`matrixmultiply`'s `nc`).
const GEMM_NC: usize = 1024;

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[("MatMul", factory)];

fn factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let attrs = &init.node.attrs;
    let transpose_a = attrs.bool_or("transpose_a", false)?;
    let transpose_b = attrs.bool_or("transpose_b", false)?;
    let dtype = common_dtype(init, 2)?;
    let place = Place::of(init);
    dispatch_numeric!(init, dtype, T => MatMulKernel::<T> {
        transpose_a,
        transpose_b,
        place: place.clone(),
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

    /// The logical columns `c..` of the matrix.
    fn cols_from(self, c: usize) -> Self {
        Operand {
            data: &self.data[c * self.cs.unsigned_abs()..],
            ..self
        }
    }
}

/// A matrix product `c = a b` of an `[m, k]` and a `[k, n]` matrix into the m×n matrix
/// at `c` whose rows are `ldc` elements apart (row-major, `ldc >= n`).
trait Gemm: Arith {
    /// # Safety
    ///
    /// The m×n elements at `c + i·ldc + j` must be valid for writes (they need not be
    /// initialised) and nothing else may read or write them during the call; `a` and `b`
    /// must address their logical matrices within their slices (shapes checked by the
    /// caller); `m`, `n` and `k` are all at least 1.
    unsafe fn gemm_into(
        m: usize,
        k: usize,
        n: usize,
        a: Operand<'_, Self>,
        b: Operand<'_, Self>,
        c: *mut Self,
        ldc: usize,
    );
}

/// `Gemm` for a float type through `matrixmultiply`'s routine `$gemm`.
macro_rules! float_gemm_impl {
    ($t:ty, $gemm:ident) => {
        impl Gemm for $t {
            unsafe fn gemm_into(
                m: usize,
                k: usize,
                n: usize,
                a: Operand<'_, $t>,
                b: Operand<'_, $t>,
                c: *mut $t,
                ldc: usize,
            ) {
                let (rsc, csc) = gemm_strides(ldc, false);
                // SAFETY: `a.data` holds the m×k logical matrix: its largest index,
                // (m-1)·rs + (k-1)·cs, lies within the slice (`compute` checks that each
                // operand holds exactly its shape's elements and that the shapes give m, k
                // and n; rows taken with `rows_from`); likewise `b` for k×n (columns taken
                // with `cols_from`). The caller gives `c` as m×n writable elements with strides
                // (ldc, 1), not aliasing the inputs; with beta = 0 `matrixmultiply` does
                // not read them ("If β is zero, then C does not need to be initialized").
                unsafe {
                    matrixmultiply::$gemm(
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
    };
}

float_gemm_impl!(f32, sgemm);
float_gemm_impl!(f64, dgemm);

/// Row `i` of the integer product (`row` zeroed): accumulates `a[i, p] * b[p, ..]` over
/// `p`, wrapping; the order does not change a wrapping sum.
fn int_row<T: Arith>(i: usize, k: usize, a: Operand<'_, T>, b: Operand<'_, T>, row: &mut [T]) {
    let n = row.len();
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
                ldc: usize,
            ) {
                for i in 0..m {
                    // SAFETY: the caller gives row `i` of `c`, `n` elements at `c + i·ldc`,
                    // as writable and untouched by anyone else; zeroing them first makes
                    // them initialised integers.
                    let row = unsafe {
                        let row = c.add(i * ldc);
                        std::ptr::write_bytes(row, 0, n);
                        std::slice::from_raw_parts_mut(row, n)
                    };
                    int_row(i, k, a, b, row);
                }
            }
        }
    };
}
int_gemm_impl!(i32);
int_gemm_impl!(i64);

/// A pointer to the output that the blocks share; each writes its own rows and columns.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);

// SAFETY: the blocks write disjoint ranges of one exclusively owned buffer, and `T`
// is a plain number type (`Send`).
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above: each piece derives a pointer to its own block only.
unsafe impl<T: Send> Sync for OutPtr<T> {}

/// How an m×k×n product is split: `(row_blocks, col_blocks)`, one of them 1.
///
/// Every block packs its own panels of `b` and `a`. Row blocks each pack all of `b`;
/// column blocks as wide as `matrixmultiply`'s `nc` pack disjoint parts of `b` and repack
/// `a` no more often than one call does (it repacks `a` for every `nc` columns anyway), so
/// they are used when `n` has at least one `nc` per block.
fn blocks(m: usize, k: usize, n: usize) -> (usize, usize) {
    if m.saturating_mul(k).saturating_mul(n) < PAR_MIN_MACS {
        return (1, 1);
    }
    let workers = current_parallelism();
    if workers <= 1 {
        return (1, 1);
    }
    let want = workers * PIECES_PER_WORKER;
    if n / GEMM_NC >= want {
        return (1, want);
    }
    (want.min(m.div_ceil(BLOCK_ROWS)).max(1), 1)
}

struct MatMulKernel<T> {
    transpose_a: bool,
    transpose_b: bool,
    /// The device's node and memory limit.
    place: Place,
    elem: PhantomData<fn() -> T>,
}

impl<T: Gemm> Kernel for MatMulKernel<T> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let (a, b) = (ctx.input(0), ctx.input(1));
        let (m, k, n) = matmul_dims(a.shape(), b.shape(), self.transpose_a, self.transpose_b)?;
        // The output's element count is checked before anything is allocated or written:
        // `[2^32, 0] x [0, 2^32]` has valid operands but no representable product.
        let shape = Shape::new(&[m, n])?;
        let mn = shape.num_elements();
        let (ac, bc) = (a.dims()[1], b.dims()[1]);
        let logical = |data, cols, transposed| {
            let (rs, cs) = gemm_strides(cols, transposed);
            Operand { data, rs, cs }
        };
        // Each operand holds exactly the elements of its shape (checked by `operand`), so
        // its logical matrix's largest index, (rows-1)·rs + (cols-1)·cs, lies within it.
        let lhs = logical(operand::<T>("MatMul", 0, a)?, ac, self.transpose_a);
        let rhs = logical(operand::<T>("MatMul", 1, b)?, bc, self.transpose_b);
        let mut out = output::<T>(mn, &self.place)?;
        if m > 0 && n > 0 {
            if k == 0 {
                out.buf.resize(mn, T::ZERO);
            } else {
                let (row_blocks, col_blocks) = blocks(m, k, n);
                let rows = m.div_ceil(row_blocks).next_multiple_of(BLOCK_ROWS.min(m));
                let cols = n.div_ceil(col_blocks).next_multiple_of(GEMM_NC.min(n));
                let c = OutPtr(out.buf.as_mut_ptr());
                let c = &c;
                parallel_for(row_blocks * col_blocks, &|i| {
                    let (r0, c0) = ((i / col_blocks) * rows, (i % col_blocks) * cols);
                    if r0 >= m || c0 >= n {
                        return;
                    }
                    let (r1, c1) = ((r0 + rows).min(m), (c0 + cols).min(n));
                    let (a, b) = (lhs.rows_from(r0), rhs.cols_from(c0));
                    // SAFETY: `out.buf` has room for m·n elements (`output(mn)`, with
                    // m·n checked not to overflow) and is not touched elsewhere until
                    // every block returned; block `i` writes rows `r0..r1` × columns
                    // `c0..c1` (row stride n), disjoint from every other block's. The
                    // operands hold exactly their shapes' elements (`operand`) and
                    // `matmul_dims` checked those shapes against m, k and n, so they
                    // address their matrices; blocks are taken within them.
                    unsafe { T::gemm_into(r1 - r0, k, c1 - c0, a, b, c.0.add(r0 * n + c0), n) };
                });
                // SAFETY: the blocks cover rows `0..m` × columns `0..n`, and each wrote
                // all of its elements (`gemm_into` with beta = 0 writes every element).
                unsafe { out.buf.set_len(mn) };
            }
        }
        ctx.push_output(out.into_tensor(shape)?);
        Ok(())
    }
}
