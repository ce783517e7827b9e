//! Kong's plugin queue (`kong/tools/queue.lua`), for the log plugins:
//! entries wait in a bounded queue; a worker takes up to `max_batch_size`
//! of them (waiting at most `max_coalescing_delay` for a batch to fill),
//! hands the batch to the sink, and retries a failed batch with
//! exponential backoff (`initial_retry_delay` doubling up to
//! `max_retry_delay`) until `max_retry_time` has passed, then drops it.
//!
//! The request path only ever tries to enqueue: a full queue (a dead or
//! slow sink) drops the entry and counts it; it never waits.
//!
//! Queues outlive config swaps: an instance's queue is found by the
//! plugin's name and config ([`QUEUES`]), so the config that replaces it
//! keeps sending through the same one, and a removed instance's queue is
//! drained and ends when the last config holding it is dropped.

use super::sinks::Sink;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Kong's `queue` record.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct QueueConf {
    pub max_batch_size: usize,
    pub max_coalescing_delay: f64,
    pub max_entries: usize,
    pub max_bytes: Option<u64>,
    pub max_retry_time: f64,
    pub initial_retry_delay: f64,
    pub max_retry_delay: f64,
    pub concurrency_limit: i64,
}

impl Default for QueueConf {
    fn default() -> Self {
        QueueConf {
            max_batch_size: 1,
            max_coalescing_delay: 1.0,
            max_entries: 10_000,
            max_bytes: None,
            max_retry_time: 60.0,
            initial_retry_delay: 0.01,
            max_retry_delay: 60.0,
            concurrency_limit: 1,
        }
    }
}

impl QueueConf {
    pub fn check(&self) -> Result<(), String> {
        if !(1..=1_000_000).contains(&self.max_batch_size) {
            return Err("queue.max_batch_size must be between 1 and 1000000".into());
        }
        if !(1..=1_000_000).contains(&self.max_entries) {
            return Err("queue.max_entries must be between 1 and 1000000".into());
        }
        let finite = |v: f64| v.is_finite() && v >= 0.0;
        if !finite(self.max_coalescing_delay)
            || !(0.001..=1_000_000.0).contains(&self.initial_retry_delay)
            || !(0.001..=1_000_000.0).contains(&self.max_retry_delay)
            || !self.max_retry_time.is_finite()
        {
            return Err("queue delays must be finite, non-negative numbers of seconds".into());
        }
        Ok(())
    }
}

/// Entries dropped and sent, per plugin name, for `/metrics`.
#[derive(Default)]
pub struct Counts {
    pub sent: AtomicU64,
    /// The queue was full (`max_entries`, `max_bytes`).
    pub dropped_full: AtomicU64,
    /// The sink kept failing for `max_retry_time`.
    pub dropped_failed: AtomicU64,
}

pub struct Queue {
    tx: mpsc::Sender<Bytes>,
    /// Taken by the worker when the first entry arrives (a runtime is
    /// running then; a config may compile where none is).
    start: Mutex<Option<(mpsc::Receiver<Bytes>, Sink, QueueConf)>>,
    /// Set once the worker runs: a push then takes no lock.
    started: std::sync::atomic::AtomicBool,
    queued_bytes: Arc<AtomicU64>,
    max_bytes: Option<u64>,
    pub counts: Arc<Counts>,
}

impl Queue {
    fn new(sink: Sink, conf: QueueConf, counts: Arc<Counts>) -> Queue {
        let (tx, rx) = mpsc::channel(conf.max_entries);
        Queue {
            tx,
            max_bytes: conf.max_bytes,
            start: Mutex::new(Some((rx, sink, conf))),
            started: std::sync::atomic::AtomicBool::new(false),
            queued_bytes: Arc::default(),
            counts,
        }
    }

    /// Queues one entry, or drops it (counted) if the queue is full.
    pub fn push(&self, entry: Bytes) {
        self.ensure_worker();
        let n = entry.len() as u64;
        if let Some(max) = self.max_bytes
            && self.queued_bytes.load(Ordering::Relaxed) + n > max
        {
            self.counts.dropped_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(entry) {
            Ok(()) => {
                self.queued_bytes.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => {
                self.counts.dropped_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn ensure_worker(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut start) = self.start.try_lock() else {
            return;
        };
        if let Some((rx, sink, conf)) = start.take() {
            self.started.store(true, Ordering::Release);
            let (counts, queued) = (self.counts.clone(), self.queued_bytes.clone());
            tokio::spawn(work(rx, sink, conf, counts, queued));
        }
    }
}

/// Takes batches off the queue and sends them until every sender is gone
/// and the queue is empty.
async fn work(
    mut rx: mpsc::Receiver<Bytes>,
    mut sink: Sink,
    conf: QueueConf,
    counts: Arc<Counts>,
    queued: Arc<AtomicU64>,
) {
    let coalesce = Duration::from_secs_f64(conf.max_coalescing_delay);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        if conf.max_batch_size > 1 {
            let until = tokio::time::Instant::now() + coalesce;
            while batch.len() < conf.max_batch_size {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(e)) => batch.push(e),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let bytes: u64 = batch.iter().map(|e| e.len() as u64).sum();
        queued.fetch_sub(bytes.min(queued.load(Ordering::Relaxed)), Ordering::Relaxed);
        send_with_retries(&mut sink, &batch, &conf, &counts).await;
    }
}

async fn send_with_retries(sink: &mut Sink, batch: &[Bytes], conf: &QueueConf, counts: &Counts) {
    let started = Instant::now();
    let mut delay = conf.initial_retry_delay;
    loop {
        match sink.send(batch, conf.max_batch_size).await {
            Ok(()) => {
                counts.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                let gave_up = started.elapsed().as_secs_f64() + delay > conf.max_retry_time;
                if gave_up {
                    counts
                        .dropped_failed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::warn!(sink = sink.kind(), error = %e, entries = batch.len(), "log batch dropped after retries");
                    return;
                }
                tracing::debug!(sink = sink.kind(), error = %e, "log batch failed; retrying");
                tokio::time::sleep(Duration::from_secs_f64(delay)).await;
                delay = (delay * 2.0).min(conf.max_retry_delay);
            }
        }
    }
}

/// Every instance's queue, by plugin name and config.
pub static QUEUES: LazyLock<Registry> = LazyLock::new(Registry::default);

#[derive(Default)]
pub struct Registry {
    queues: Mutex<HashMap<String, Weak<Queue>>>,
    counts: Mutex<HashMap<&'static str, Arc<Counts>>>,
}

impl Registry {
    /// The queue for `key` (plugin name and config): the one a running
    /// config already uses, else a new one sending to `sink()`.
    pub fn get(
        &self,
        plugin: &'static str,
        key: String,
        conf: QueueConf,
        sink: impl FnOnce() -> Sink,
    ) -> Arc<Queue> {
        let mut m = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = m.get(&key).and_then(Weak::upgrade) {
            return q;
        }
        m.retain(|_, w| w.strong_count() > 0);
        let counts = self.counts(plugin);
        let q = Arc::new(Queue::new(sink(), conf, counts));
        m.insert(key, Arc::downgrade(&q));
        q
    }

    fn counts(&self, plugin: &'static str) -> Arc<Counts> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.entry(plugin).or_default().clone()
    }

    /// `gantry_log_entries_*` per plugin name, in Prometheus' text format.
    pub fn encode(&self, out: &mut String) {
        use std::fmt::Write as _;
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.is_empty() {
            return;
        }
        let mut names: Vec<_> = c.keys().copied().collect();
        names.sort();
        let _ = writeln!(
            out,
            "# HELP gantry_log_entries_sent_total Log plugin entries delivered to their sink"
        );
        let _ = writeln!(out, "# TYPE gantry_log_entries_sent_total counter");
        for n in &names {
            let v = c[n].sent.load(Ordering::Relaxed);
            let _ = writeln!(out, "gantry_log_entries_sent_total{{plugin=\"{n}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP gantry_log_entries_dropped_total Log plugin entries dropped: the queue was full, or the sink kept failing for max_retry_time"
        );
        let _ = writeln!(out, "# TYPE gantry_log_entries_dropped_total counter");
        for n in &names {
            for (reason, v) in [
                ("queue_full", &c[n].dropped_full),
                ("send_failed", &c[n].dropped_failed),
            ] {
                let v = v.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "gantry_log_entries_dropped_total{{plugin=\"{n}\",reason=\"{reason}\"}} {v}"
                );
            }
        }
    }
}
