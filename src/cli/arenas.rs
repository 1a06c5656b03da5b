//! Bounding glibc's malloc arenas for a long-running `magpie server`.
//!
//! glibc gives threads their own arenas (up to eight per core by default); a block freed
//! by another thread goes back to the arena that made it, so over many steps — each
//! allocating on the gRPC runtime's threads and the scheduler's workers and freeing on
//! others — the free space scattered over many arenas grows slowly, and with it the
//! resident size, though the bytes in use stay the same (`transport/grpc/tests/
//! step_memory.rs` counts them; BENCHMARKS.md "Load and soak" measures both). A server
//! bounds the arenas before it starts a thread: [`SERVER_ARENAS`], unless the
//! environment sets `MALLOC_ARENA_MAX` (glibc's own tunable, which then wins). Elsewhere
//! (another libc, another OS) this does nothing.

/// Arenas a server's allocator may use (behaviour at the time of writing: the load bench's
/// soak, 16 clients on a two-core machine, was measured with two; see BENCHMARKS.md).
pub(crate) const SERVER_ARENAS: i32 = 2;

/// Bounds the allocator's arenas to [`SERVER_ARENAS`] unless `MALLOC_ARENA_MAX` is set.
/// Call before the process starts threads (arenas already made are kept).
pub(crate) fn bound_for_server() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets a parameter of the allocator under its own lock; it is
    // safe to call at any time, from any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, SERVER_ARENAS);
    }
}
