//! Giving freed memory back to the OS.
//!
//! Applying a large configuration decodes it (several times its wire size)
//! and compiles it, then frees the decoded form. glibc keeps freed memory
//! in its arenas, so without a trim the proxy's RSS would stay at the
//! apply's peak.

/// Returns the allocator's free pages to the OS (every arena).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
