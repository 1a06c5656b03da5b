//! Giving freed heap memory back to the operating system after a large session closes.
//!
//! A session over a large graph frees hundreds of MB of small allocations when it closes;
//! glibc's allocator keeps such memory in its arenas, so the process's resident size would
//! stay at its peak although nothing holds it. After creating a session of at least
//! [`TRIM_NODES`] nodes (whose request message and its conversion were freed), after the
//! first step of a signature over one (whose plans were built: placement, pruning and
//! slot tables freed) and after closing one, the server asks the allocator to return free
//! pages (`malloc_trim`).
//! Elsewhere (another libc, another OS) this does nothing.

/// Sessions of at least this many nodes trim the heap when they are created, planned and
/// closed (behaviour at the time of writing: below it the memory is small and the trim's
/// heap walk not worth it).
pub(crate) const TRIM_NODES: usize = 100_000;

/// Returns the allocator's free memory to the operating system, where the allocator can.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks and trims the allocator's own free lists; it takes
    // the allocator's locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
