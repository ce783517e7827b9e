//! Handing freed memory back to the OS.
//!
//! Pushing a snapshot encodes one frame per stream; at 10,000 streams that
//! is a burst of short-lived buffers, freed once written. glibc keeps what
//! was freed in its arenas (small long-lived allocations in between stop
//! it from shrinking the heap), so RSS would stay at the burst's peak.
//! `malloc_trim` returns the free pages; it runs every few seconds, off the
//! request path, and costs a walk of the free lists.

use std::time::Duration;

/// Buffers this large (a stream's frame of a big snapshot) are mapped on
/// their own and unmapped when freed, rather than carved from a heap
/// they would fragment. Set once, before the first stream.
pub fn map_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        // glibc gives each thread that contends an arena of its own (up to
        // 8 per core); snapshot rebuilds on blocking threads then leave
        // freed pages scattered across many arenas, which RSS keeps.
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
