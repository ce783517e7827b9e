//! Whether the database answers. While it does not, the admin API refuses
//! at once (503) instead of queueing every request behind the pool's
//! connect retries: writes are serialised, so sixteen writers each waiting
//! out a connect timeout would hold the last one for minutes.
//!
//! Down is learned two ways: a write that fails on the connection (at
//! once), and a probe every second (reads, and a database that went away
//! while nobody wrote). Up again is learned only by the probe, every
//! quarter second while down.

use super::StoreError;
use sqlx::AnyPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How often the database is probed while it answers, and while it does not.
const PROBE_UP: Duration = Duration::from_secs(1);
const PROBE_DOWN: Duration = Duration::from_millis(250);
/// A probe that takes longer than this counts as no answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Health {
    down: AtomicBool,
    /// Unix ms of the moment it went down (0 while up).
    since: AtomicI64,
    changed: Notify,
}

impl Health {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Unix ms since when the database has not answered.
    pub fn down_since(&self) -> Option<i64> {
        self.is_down().then(|| self.since.load(Ordering::Relaxed))
    }

    /// Records what an operation's error says about the database.
    pub fn observe(&self, e: &StoreError) {
        if e.is_unavailable() {
            self.set(false, &e.to_string());
        }
    }

    fn set(&self, up: bool, why: &str) {
        let was_down = self.down.swap(!up, Ordering::AcqRel);
        if was_down != up {
            return;
        }
        if up {
            self.since.store(0, Ordering::Relaxed);
            tracing::info!("database reachable again");
        } else {
            self.since.store(super::now_ms(), Ordering::Relaxed);
            tracing::error!(error = %why, "database unreachable: admin requests answer 503 until it is back");
        }
        self.changed.notify_waiters();
    }

    /// Probes the database for as long as the process runs, on `pool`, a
    /// pool of its own.
    pub(super) async fn watch(self: Arc<Self>, pool: AnyPool) {
        loop {
            let every = if self.is_down() { PROBE_DOWN } else { PROBE_UP };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                // Marked down by a failed write: probe at the faster pace now.
                _ = self.changed.notified() => continue,
            }
            let probe = sqlx::query("SELECT 1").execute(&pool);
            match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Ok(Ok(_)) => self.set(true, ""),
                Ok(Err(e)) => self.observe(&StoreError::Db(e)),
                Err(_) => self.set(false, "no answer to a probe within 2 s"),
            }
        }
    }
}

impl StoreError {
    /// The database could not be reached or went away (as opposed to a
    /// query it refused): the request may succeed once it is back.
    pub fn is_unavailable(&self) -> bool {
        let e = match self {
            StoreError::Unavailable => return true,
            StoreError::Db(e) => e,
            _ => return false,
        };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                // Class 08: connection exception; 57P01-57P03: the server
                // is shutting down, crashed or is starting up; 53300: too
                // many connections.
                c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300")
            }),
            _ => false,
        }
    }
}
