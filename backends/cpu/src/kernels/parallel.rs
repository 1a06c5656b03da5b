//! Intra-op parallelism for the CPU kernels: large loops split into contiguous chunks run
//! as pieces of one nested scheduler run ([`magpie_core::scheduler::parallel_for`]), so a
//! large op uses the device's workers without threads of its own, and small ops never pay
//! for it.
//!
//! Behaviour at the time of writing: a loop is split when it has at least
//! [`PAR_MIN_ELEMENTS`] elements, into up to [`PIECES_PER_WORKER`] pieces per worker that
//! may run it (the caller's steal group), each at least [`PAR_MIN_ELEMENTS`] / 2 long and a
//! multiple of 64 elements (whole cache lines, whole vectors).

use std::mem::MaybeUninit;

use magpie_core::scheduler::{current_parallelism, parallel_for};

/// Loops shorter than this run on the calling worker alone.
pub(crate) const PAR_MIN_ELEMENTS: usize = 1 << 18;
/// Pieces per worker: more than one, so that a worker slowed by something else (another
/// kernel, another process) does not hold the whole op back.
pub(crate) const PIECES_PER_WORKER: usize = 2;

/// How many pieces a loop of `n` elements is split into here.
pub(crate) fn pieces_for(n: usize) -> usize {
    if n < PAR_MIN_ELEMENTS {
        return 1;
    }
    let workers = current_parallelism();
    if workers <= 1 {
        return 1;
    }
    (workers * PIECES_PER_WORKER)
        .min(n / (PAR_MIN_ELEMENTS / 2))
        .max(1)
}

/// A pointer that may cross threads; the chunks made from it never overlap.
#[derive(Clone, Copy)]
struct SendPtr<U>(*mut U);

// SAFETY: `for_chunks_mut` hands each piece a disjoint range of one exclusive borrow, so
// sending the base pointer is like sending `&mut [U]` chunks, which needs `U: Send`.
unsafe impl<U: Send> Send for SendPtr<U> {}
// SAFETY: as above: pieces only derive disjoint `&mut` ranges from the shared pointer.
unsafe impl<U: Send> Sync for SendPtr<U> {}

/// Calls `f(start, chunk)` for contiguous chunks covering `data`, in parallel when it is
/// long (see the module docs); `start` is the chunk's offset in `data`.
pub(crate) fn for_chunks_mut<U: Send>(data: &mut [U], f: impl Fn(usize, &mut [U]) + Sync) {
    let n = data.len();
    let pieces = pieces_for(n);
    if pieces <= 1 {
        return f(0, data);
    }
    let chunk = n.div_ceil(pieces).next_multiple_of(64);
    let base = SendPtr(data.as_mut_ptr());
    let base = &base;
    parallel_for(pieces, &|i| {
        let start = i * chunk;
        if start >= n {
            return;
        }
        let len = chunk.min(n - start);
        // SAFETY: `base` points at `n` elements exclusively borrowed for this call (which
        // outlives every piece: `parallel_for` returns after the last one); piece `i` gets
        // `start..start + len`, within `0..n` and disjoint from every other piece's range.
        let part = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), len) };
        f(start, part);
    });
}

/// Fills the first `n` elements of `buf`'s spare capacity through [`for_chunks_mut`] and
/// sets its length to `n`.
///
/// # Safety
///
/// `f` must initialise every element of each chunk it is given.
///
/// # Panics
///
/// If `buf` is not empty or has room for fewer than `n` elements.
pub(crate) unsafe fn fill<T: Send>(
    buf: &mut Vec<T>,
    n: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) {
    assert!(
        buf.is_empty() && buf.capacity() >= n,
        "fill needs an empty buffer of room {n}"
    );
    for_chunks_mut(&mut buf.spare_capacity_mut()[..n], f);
    // SAFETY: the capacity is at least `n`, and the caller's `f` initialised every element
    // of the chunks, which cover `0..n`.
    unsafe { buf.set_len(n) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_element_once() {
        let n = PAR_MIN_ELEMENTS * 3 + 5;
        let mut buf: Vec<u32> = Vec::with_capacity(n);
        // SAFETY: the closure writes every element of its chunk.
        unsafe {
            fill(&mut buf, n, |start, part| {
                for (i, x) in part.iter_mut().enumerate() {
                    x.write((start + i) as u32);
                }
            })
        };
        assert!(buf.iter().enumerate().all(|(i, &x)| x == i as u32));
        for_chunks_mut(&mut buf, |_, part| part.iter_mut().for_each(|x| *x += 1));
        assert!(buf.iter().enumerate().all(|(i, &x)| x == i as u32 + 1));
    }
}
