//! Giving memory back after a burst of connections.
//!
//! Each connection's task, buffers and stream state are freed when it ends, but glibc's malloc
//! keeps freed memory in its per-thread arenas: measured with 10,000 connections through one
//! session, the resident size stayed at its peak (~125 MiB) for good, and `malloc_trim(0)`
//! brought it back to ~28 MiB. So every connection is counted here, and a task started with
//! the first one checks every [`CHECK`] whether many connections have ended since the last
//! check; if so it asks the allocator to return its free pages (off the async threads: a trim
//! of a large heap takes milliseconds). [`trim`] is also called once, for other bursts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use tracing::debug;

/// How often the count of open connections is looked at.
const CHECK: Duration = Duration::from_secs(2);
/// Connections that must have ended since the last trim (or start) for a trim to be worth it.
const ENDED: usize = 256;

/// Connections open now, in every listener of this process.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// The most that were open at once since the last trim.
static PEAK: AtomicUsize = AtomicUsize::new(0);
static WATCH: Once = Once::new();

/// Counts one connection while it lives (also when its task is cancelled).
pub struct Connection(());

impl Connection {
    /// Counts a new connection; the first one starts the trimming task (inside a Tokio runtime).
    pub fn open() -> Self {
        let open = OPEN.fetch_add(1, Ordering::Relaxed) + 1;
        PEAK.fetch_max(open, Ordering::Relaxed);
        WATCH.call_once(|| {
            tokio::spawn(watch());
        });
        Connection(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a trim is due: at least [`ENDED`] connections ended since the peak, and at most
/// half of that peak is still open.
fn due(peak: usize, open: usize) -> bool {
    peak.saturating_sub(open) >= ENDED && open <= peak / 2
}

async fn watch() {
    let mut tick = tokio::time::interval(CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let open = OPEN.load(Ordering::Relaxed);
        let peak = PEAK.load(Ordering::Relaxed);
        if due(peak, open) {
            PEAK.store(open, Ordering::Relaxed);
            debug!(
                peak,
                open, "connections ended: returning free memory to the system"
            );
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Asks the allocator to return free memory to the system (also called once after the first
/// lists, whose parsing leaves megabytes of freed buffers behind).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim takes no pointers and touches only glibc malloc's own state, each
    // arena under its lock (MT-Safe in glibc's manual), so it may run beside other threads'
    // allocations. No safe wrapper exists (rustix and nix do not cover malloc).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn a_trim_is_due_only_after_many_connections_ended() {
        assert!(!due(0, 0));
        assert!(!due(200, 0), "too few ended");
        assert!(due(10_000, 0));
        assert!(due(10_000, 5_000));
        assert!(!due(10_000, 6_000), "most are still open");
        assert!(due(300, 10));
    }
}
