//! How elementwise loops write their outputs: plain stores, or *streaming*
//! (non-temporal) stores for outputs too large to stay in the cache.
//!
//! A plain store to a line that is not in the cache first reads the line from memory
//! ("read for ownership"), so a loop writing a 64 MiB output moves 64 MiB more than it
//! writes. Streaming stores go around the cache and skip that read, as `memcpy` does for
//! large copies; they also evict nothing the next kernel might want. For outputs of at
//! least [`STREAM_MIN_BYTES`] (the last-level cache of the development machine: a
//! consumer would not find such an output in the cache anyway) the loops compute blocks of
//! [`BLOCK`] elements into a local array the compiler vectorises and stream them out with
//! SSE2's `movntdq` (part of every x86-64 CPU). Elsewhere, or for a misaligned buffer,
//! plain stores.
//!
//! Memory ordering: streaming stores are weakly ordered; each loop ends with `sfence`, so
//! its stores are visible before the scheduler's release of the piece that ran it.

use std::mem::MaybeUninit;

/// Outputs of at least this many bytes are written with streaming stores (behaviour at
/// the time of writing).
pub(crate) const STREAM_MIN_BYTES: usize = 32 << 20;
/// Elements computed per block before they are streamed out.
const BLOCK: usize = 64;

/// Whether an output of `n` elements of `T` is written with streaming stores.
pub(crate) fn streams<T>(n: usize) -> bool {
    cfg!(target_arch = "x86_64") && n.saturating_mul(std::mem::size_of::<T>()) >= STREAM_MIN_BYTES
}

/// `dst[i] = f(a[i], b[i])` for every `i` of `dst` (`a` and `b` at least as long),
/// streaming when `stream` (see the module docs).
#[inline]
pub(crate) fn map2<T: Copy>(
    dst: &mut [MaybeUninit<T>],
    a: &[T],
    b: &[T],
    stream: bool,
    f: impl Fn(T, T) -> T,
) {
    let (a, b) = (&a[..dst.len()], &b[..dst.len()]);
    let done = if stream && !a.is_empty() {
        stream_blocks(dst, a[0], |start, block: &mut [T; BLOCK]| {
            let xa: &[T; BLOCK] = a[start..start + BLOCK].try_into().expect("a whole block");
            let xb: &[T; BLOCK] = b[start..start + BLOCK].try_into().expect("a whole block");
            for ((o, &x), &y) in block.iter_mut().zip(xa).zip(xb) {
                *o = f(x, y);
            }
        })
    } else {
        0
    };
    for ((d, &x), &y) in dst[done..].iter_mut().zip(&a[done..]).zip(&b[done..]) {
        d.write(f(x, y));
    }
}

/// `dst[i] = f(a[i])` for every `i` of `dst` (`a` at least as long), streaming when
/// `stream` (see the module docs).
#[inline]
pub(crate) fn map1<T: Copy>(dst: &mut [MaybeUninit<T>], a: &[T], stream: bool, f: impl Fn(T) -> T) {
    let a = &a[..dst.len()];
    let done = if stream && !a.is_empty() {
        stream_blocks(dst, a[0], |start, block: &mut [T; BLOCK]| {
            let xa: &[T; BLOCK] = a[start..start + BLOCK].try_into().expect("a whole block");
            for (o, &x) in block.iter_mut().zip(xa) {
                *o = f(x);
            }
        })
    } else {
        0
    };
    for (d, &x) in dst[done..].iter_mut().zip(&a[done..]) {
        d.write(f(x));
    }
}

/// Writes the whole blocks of `dst` with streaming stores, each computed by
/// `compute(start, block)` into a local array (`fill` only initialises it); returns how many elements it wrote (a
/// multiple of [`BLOCK`]; 0 when `dst` is not 16-byte aligned or not on x86-64). The
/// caller writes the rest.
#[inline(always)]
fn stream_blocks<T: Copy>(
    dst: &mut [MaybeUninit<T>],
    fill: T,
    compute: impl Fn(usize, &mut [T; BLOCK]),
) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        let bytes = BLOCK * std::mem::size_of::<T>();
        if dst.len() < BLOCK || dst.as_ptr() as usize % 16 != 0 || bytes % 16 != 0 {
            return 0;
        }
        let whole = dst.len() / BLOCK * BLOCK;
        let mut block = [fill; BLOCK];
        for start in (0..whole).step_by(BLOCK) {
            compute(start, &mut block);
            let src = block.as_ptr().cast::<u8>();
            // SAFETY: `dst[start..start + BLOCK]` is in bounds (`start + BLOCK <= whole <=
            // len`) and 16-byte aligned (the slice start is, and `bytes` is a multiple of
            // 16); `src` holds `bytes` initialised bytes (a `[T; BLOCK]` of plain numbers);
            // SSE2 is part of x86-64.
            unsafe {
                let out = dst.as_mut_ptr().add(start).cast::<u8>();
                for i in (0..bytes).step_by(16) {
                    let v = _mm_loadu_si128(src.add(i).cast::<__m128i>());
                    _mm_stream_si128(out.add(i).cast::<__m128i>(), v);
                }
            }
        }
        // SAFETY: `sfence` has no preconditions (SSE, part of x86-64). It orders the
        // streaming stores above before any later store, such as the release that
        // publishes this piece's completion.
        unsafe { _mm_sfence() };
        whole
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dst, fill, compute);
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_and_plain_stores_write_the_same() {
        for len in [0, 1, 63, 64, 65, 1000] {
            let a: Vec<f64> = (0..len).map(|i| i as f64).collect();
            let b: Vec<f64> = (0..len).map(|i| 2.0 * i as f64).collect();
            for stream in [false, true] {
                let mut out: Vec<f64> = Vec::with_capacity(len);
                map2(
                    &mut out.spare_capacity_mut()[..len],
                    &a,
                    &b,
                    stream,
                    |x, y| x + y,
                );
                // SAFETY: `map2` wrote all `len` elements.
                unsafe { out.set_len(len) };
                assert!(out.iter().enumerate().all(|(i, &v)| v == 3.0 * i as f64));
                let mut out: Vec<f64> = Vec::with_capacity(len);
                map1(&mut out.spare_capacity_mut()[..len], &a, stream, |x| {
                    x - 1.0
                });
                // SAFETY: `map1` wrote all `len` elements.
                unsafe { out.set_len(len) };
                assert!(out.iter().enumerate().all(|(i, &v)| v == i as f64 - 1.0));
            }
        }
        assert!(!streams::<f32>(1 << 20));
        assert_eq!(streams::<f32>(16 << 20), cfg!(target_arch = "x86_64"));
    }
}
