//! Elementwise binary arithmetic with numpy broadcasting: `Add`, `Sub`, `Mul`, `Div`,
//! `FloorMod` (TensorFlow's: the remainder of floor division, with the divisor's sign;
//! float remainders from `%`, which is C's `fmod`), `Maximum` and `Minimum` (a NaN on
//! either side gives NaN).
//!
//! Dtypes: `f32`, `f64`, `i32`, `i64`, both inputs the same. Integers wrap on overflow;
//! integer `Div` truncates toward zero, wraps `MIN / -1`, and (with `FloorMod`) fails with
//! "integer division by zero" when any divisor is 0 (checked before anything is
//! written). Float division follows IEEE 754.
//!
//! Loops, fastest first: equal shapes (one zip); one side a single element; general
//! broadcasting as rows (core's [`BroadcastLayout`]). When an input has the output's shape and the
//! context holds its only reference, its buffer becomes the output's; otherwise a large
//! output comes from the node's buffer cache (`buffers.rs`). The equal-shape and
//! one-element loops are split into chunks over the device's workers when they are large
//! (`parallel.rs`); each chunk is a plain zip the compiler vectorises, written with
//! streaming stores when the output is larger than the cache (`store.rs`).

use std::marker::PhantomData;
use std::mem::MaybeUninit;

use magpie_core::kernel::KernelInit;
use magpie_core::shape_fn::broadcast_shape;
use magpie_core::tensor::BroadcastLayout;
use magpie_core::{BoxedKernel, Kernel, KernelContext, KernelError, Shape, Tensor};

use super::numeric::Arith;
use super::parallel::{fill, for_chunks_mut};
use super::store::{map1, map2, streams};
use super::support::{common_dtype, dispatch_numeric, operand, Factory, REUSE_MIN_ELEMENTS};
use crate::buffers::{adopt, output, Place};

/// The kernels of this family.
pub(super) const KERNELS: &[(&str, Factory)] = &[
    ("Add", factory::<AddOp>),
    ("Sub", factory::<SubOp>),
    ("Mul", factory::<MulOp>),
    ("Div", factory::<DivOp>),
    ("FloorMod", factory::<FloorModOp>),
    ("Maximum", factory::<MaximumOp>),
    ("Minimum", factory::<MinimumOp>),
];

/// One elementwise binary operation on elements of type `T`.
trait BinaryOp<T>: 'static {
    /// The result for one pair of elements.
    fn apply(a: T, b: T) -> T;

    /// Rejects divisors the operation cannot take; called on the whole right-hand side
    /// before computing.
    fn check_rhs(_rhs: &[T]) -> Result<(), KernelError> {
        Ok(())
    }
}

struct AddOp;
struct SubOp;
struct MulOp;
struct DivOp;
struct FloorModOp;
struct MaximumOp;
struct MinimumOp;

impl<T: Arith> BinaryOp<T> for AddOp {
    #[inline(always)]
    fn apply(a: T, b: T) -> T {
        a.add(b)
    }
}

impl<T: Arith> BinaryOp<T> for SubOp {
    #[inline(always)]
    fn apply(a: T, b: T) -> T {
        a.sub(b)
    }
}

impl<T: Arith> BinaryOp<T> for MulOp {
    #[inline(always)]
    fn apply(a: T, b: T) -> T {
        a.mul(b)
    }
}

impl<T: Arith> BinaryOp<T> for DivOp {
    #[inline(always)]
    fn apply(a: T, b: T) -> T {
        a.div(b)
    }

    fn check_rhs(rhs: &[T]) -> Result<(), KernelError> {
        if T::IS_INT && rhs.contains(&T::ZERO) {
            return Err(KernelError::InvalidArgument(
                "integer division by zero".into(),
            ));
        }
        Ok(())
    }
}

impl<T: Arith> BinaryOp<T> for FloorModOp {
    #[inline(always)]
    fn apply(a: T, b: T) -> T {
        a.floor_mod(b)
    }

    fn check_rhs(rhs: &[T]) -> Result<(), KernelError> {
        <DivOp as BinaryOp<T>>::check_rhs(rhs)
    }
}

impl<T: Arith> BinaryOp<T> for MaximumOp {
    #[inline(always)]
    fn apply(a: T, b: T) -> T {
        if a.is_nan() || a > b {
            a
        } else {
            b
        }
    }
}

impl<T: Arith> BinaryOp<T> for MinimumOp {
    #[inline(always)]
    fn apply(a: T, b: T) -> T {
        if a.is_nan() || a < b {
            a
        } else {
            b
        }
    }
}

fn factory<O>(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError>
where
    O: BinaryOp<f32> + BinaryOp<f64> + BinaryOp<i32> + BinaryOp<i64>,
{
    let dtype = common_dtype(init, 2)?;
    let place = Place::of(init);
    dispatch_numeric!(init, dtype, T => BinaryKernel::<T, O> { place: place.clone(), op: PhantomData })
}

/// `O` on elements of type `T`.
struct BinaryKernel<T, O> {
    /// The device's node and memory limit.
    place: Place,
    op: PhantomData<fn() -> (T, O)>,
}

impl<T: Arith, O: BinaryOp<T>> Kernel for BinaryKernel<T, O> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let (a, b) = (ctx.input(0), ctx.input(1));
        // Scalars (the common case in control-heavy graphs): no shape work beyond a
        // compare, and the operands' checks below only when this path does not apply.
        // (`slice` is `None` for another dtype or a device's buffer.)
        if let (Some(&[x]), Some(&[y])) = (T::slice(a.storage()), T::slice(b.storage())) {
            // Two scalars (rank 0) match without comparing shapes; equal shapes must hold
            // one element, as `operand` checks on the general path.
            if (a.dims().is_empty() && b.dims().is_empty())
                || (a.shape() == b.shape() && a.shape().num_elements() == 1)
            {
                O::check_rhs(&[y])?;
                let value = O::apply(x, y);
                // An input this context holds the only reference to becomes the output,
                // written in place: no allocation (a chain of scalar ops then reuses one
                // buffer all along).
                for i in 0..2 {
                    let owned = ctx.input_mut_if_owned(i);
                    if let Some([only]) = owned.and_then(|t| t.as_mut_slice::<T>()) {
                        *only = value;
                        let out = ctx.take_input(i);
                        ctx.push_output(out);
                        return Ok(());
                    }
                }
                // One element: no cache to consult, counted on the device.
                let charge = self.place.memory.reserve(T::DTYPE, 1)?;
                let shape = match ctx.input(0).shape() {
                    s if s.rank() == 0 => Shape::scalar(),
                    s => s.clone(),
                };
                ctx.push_output(Tensor::from_vec_charged(shape, vec![value], None, charge)?);
                return Ok(());
            }
        }
        let (a, b) = (ctx.input(0), ctx.input(1));
        let op = &ctx.node().op;
        let (lhs, rhs) = (operand::<T>(op, 0, a)?, operand::<T>(op, 1, b)?);
        let out = if a.shape() == b.shape() {
            a.shape().clone()
        } else {
            broadcast_shape(a.shape(), b.shape())?
        };
        let n = out.num_elements();
        if n > 0 {
            O::check_rhs(rhs)?;
        }
        if n >= REUSE_MIN_ELEMENTS && (a.shape() == &out || b.shape() == &out) {
            let (a, b) = (ctx.take_input(0), ctx.take_input(1));
            let t = compute_owned::<T, O>(a, b, &out, &self.place)?;
            ctx.push_output(t);
            return Ok(());
        }
        let t = compute_new::<T, O>(lhs, a.shape(), rhs, b.shape(), &out, &self.place)?;
        ctx.push_output(t);
        Ok(())
    }
}

/// The result for owned inputs, written into one of their buffers when that buffer has
/// the output's shape and nothing else references it.
fn compute_owned<T: Arith, O: BinaryOp<T>>(
    a: Tensor,
    b: Tensor,
    out: &Shape,
    place: &Place,
) -> Result<Tensor, KernelError> {
    let a = if a.shape() == out {
        let home = a.numa_node().or(place.node);
        match a.try_into_vec::<T>() {
            Ok(mut buf) => {
                update_in_place(&mut buf, out, b.as_slice::<T>()?, b.shape(), O::apply)?;
                return adopt(out.clone(), buf, home, place);
            }
            Err(a) => a,
        }
    } else {
        a
    };
    let b = if b.shape() == out {
        let home = b.numa_node().or(place.node);
        match b.try_into_vec::<T>() {
            Ok(mut buf) => {
                let flipped = |y, x| O::apply(x, y);
                update_in_place(&mut buf, out, a.as_slice::<T>()?, a.shape(), flipped)?;
                return adopt(out.clone(), buf, home, place);
            }
            Err(b) => b,
        }
    } else {
        b
    };
    compute_new::<T, O>(
        a.as_slice::<T>()?,
        a.shape(),
        b.as_slice::<T>()?,
        b.shape(),
        out,
        place,
    )
}

/// `buf[i] = f(buf[i], other broadcast to out[i])`, where `buf` has shape `out`.
fn update_in_place<T: Arith>(
    buf: &mut [T],
    out: &Shape,
    other: &[T],
    other_shape: &Shape,
    f: impl Fn(T, T) -> T + Sync,
) -> Result<(), KernelError> {
    if let [y] = *other {
        for_chunks_mut(buf, |_, part| {
            for x in part {
                *x = f(*x, y);
            }
        });
    } else if other_shape == out {
        for_chunks_mut(buf, |start, part| {
            let other = &other[start..start + part.len()];
            for (x, &y) in part.iter_mut().zip(other) {
                *x = f(*x, y);
            }
        });
    } else {
        let layout = BroadcastLayout::with_output(out, out, other_shape)?;
        let n = layout.row_len();
        let contiguous = layout.b_row_stride() == 1;
        let mut rows = buf.chunks_exact_mut(n);
        layout.for_each_row(|_, bo| {
            let row = rows.next().expect("the layout has one row per chunk");
            if contiguous {
                for (x, &y) in row.iter_mut().zip(&other[bo..bo + n]) {
                    *x = f(*x, y);
                }
            } else {
                let y = other[bo];
                for x in row {
                    *x = f(*x, y);
                }
            }
        });
    }
    Ok(())
}

/// `out[i] = f(i)` over chunks, `f` given a chunk's start and length: the equal-shape and
/// one-element loops.
fn fill_with<T: Arith>(
    n: usize,
    place: &Place,
    shape: &Shape,
    chunk: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Result<Tensor, KernelError> {
    let mut out = output::<T>(n, place)?;
    // SAFETY: every caller's `chunk` writes each element of the chunk it is given.
    unsafe { fill(&mut out.buf, n, chunk) };
    out.into_tensor(shape.clone())
}

/// The result in a new buffer.
fn compute_new<T: Arith, O: BinaryOp<T>>(
    a: &[T],
    a_shape: &Shape,
    b: &[T],
    b_shape: &Shape,
    out: &Shape,
    place: &Place,
) -> Result<Tensor, KernelError> {
    let n = out.num_elements();
    if a_shape == b_shape {
        let stream = streams::<T>(n);
        return fill_with(n, place, out, |start, part| {
            let len = part.len();
            map2(
                part,
                &a[start..start + len],
                &b[start..start + len],
                stream,
                O::apply,
            );
        });
    }
    if n == 0 {
        return Ok(Tensor::from_vec(out.clone(), Vec::<T>::new())?);
    }
    // One element broadcast against the other input: the output holds as many elements
    // as that input, in its order.
    let stream = streams::<T>(n);
    if let [x] = *a {
        return fill_with(n, place, out, |start, part| {
            let b = &b[start..start + part.len()];
            map1(part, b, stream, |y| O::apply(x, y));
        });
    }
    if let [y] = *b {
        return fill_with(n, place, out, |start, part| {
            let a = &a[start..start + part.len()];
            map1(part, a, stream, |x| O::apply(x, y));
        });
    }
    let layout = BroadcastLayout::with_output(out, a_shape, b_shape)?;
    let len = layout.row_len();
    let mut output = output::<T>(n, place)?;
    let data = &mut output.buf;
    match (layout.a_row_stride(), layout.b_row_stride()) {
        (1, 1) => layout.for_each_row(|ao, bo| {
            let rows = a[ao..ao + len].iter().zip(&b[bo..bo + len]);
            data.extend(rows.map(|(&x, &y)| O::apply(x, y)));
        }),
        (0, 1) => layout.for_each_row(|ao, bo| {
            let x = a[ao];
            data.extend(b[bo..bo + len].iter().map(|&y| O::apply(x, y)));
        }),
        (1, 0) => layout.for_each_row(|ao, bo| {
            let y = b[bo];
            data.extend(a[ao..ao + len].iter().map(|&x| O::apply(x, y)));
        }),
        _ => layout.for_each_row(|ao, bo| {
            let v = O::apply(a[ao], b[bo]);
            data.extend(std::iter::repeat_n(v, len));
        }),
    }
    output.into_tensor(out.clone())
}
