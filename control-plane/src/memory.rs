//! Handing freed memory back to the OS.
//!
//! gantry-cp's own allocations go to jemalloc (`main.rs`), which returns
//! pages unused for a couple of seconds from a background thread: each
//! snapshot rebuild allocates and frees tens of MB, and glibc kept those
//! pages (RSS grew with churn while little was live). What C code
//! allocates through glibc's malloc (SQLite's page cache) is tuned and
//! trimmed here: `malloc_trim` returns its free pages every few seconds,
//! off the request path.

use std::time::Duration;

/// glibc's malloc (C code only, see above): buffers of 64 KiB and more
/// are mapped on their own and unmapped when freed, rather than carved
/// from a heap they would fragment. Set once, at start-up.
pub fn map_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        // glibc gives each thread that contends an arena of its own (up to
        // 8 per core), each keeping its freed pages.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Trims every `period` until the runtime stops.
pub fn spawn_trimmer(period: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            // Off the async workers: it takes the allocator's locks.
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    })
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
