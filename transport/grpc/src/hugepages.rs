//! Transparent huge pages for large receive buffers. A tensor received over the wire
//! lands in a freshly allocated buffer; for tens of MiB, taking a page fault per 4 KiB
//! page on first write costs as much as the copy itself. Advising the kernel that the
//! buffer may use huge pages (`MADV_HUGEPAGE`, honoured where transparent huge pages are
//! set to `madvise` or `always`) makes that one fault per 2 MiB. Advice only: nothing
//! changes where the kernel declines it, or off Linux.

/// Buffers smaller than this are left alone (behaviour at the time of writing).
pub(crate) const MIN_BYTES: usize = 4 << 20;

/// Advises the kernel to back the 2 MiB-aligned interior of `buf` with huge pages.
pub(crate) fn advise(buf: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if buf.len() < MIN_BYTES {
            return;
        }
        let start = buf.as_mut_ptr() as usize;
        let first = (start + HUGE - 1) & !(HUGE - 1);
        let last = (start + buf.len()) & !(HUGE - 1);
        if last > first {
            // SAFETY: `[first, last)` lies inside `buf`, memory this process owns and
            // holds a unique borrow of; `MADV_HUGEPAGE` only changes how the kernel
            // backs pages not yet touched (their contents stay zero or as written), so
            // no memory is unmapped or altered. An error only means the advice was not
            // taken, which is harmless.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}
