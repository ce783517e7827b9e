//! gantry-proxy's own access log: one JSON line per request (off unless
//! `--access-log` names a file or `stdout`), optionally sampled.
//!
//! A line is written when the response has been sent (its body finished,
//! or the client went away), like Envoy's access log and Kong's log phase.
//! It holds what an operator correlates on (request id, trace id, route,
//! cluster, status, sizes, times) and nothing that identifies a person or
//! carries a credential: no query string (API keys travel there), no
//! headers, no client address.
//!
//! Lines go through a bounded queue to a writer thread that drains it
//! every 20 ms: a slow or full disk drops lines (counted in
//! `gantry_access_log_dropped`), it never holds up a request.

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::SystemTime;

/// Lines queued for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    /// Of every request, the share logged (0 < rate ≤ 1).
    sample_rate: f64,
    pub dropped: Counter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("sample_rate", &self.sample_rate)
            .finish()
    }
}

/// Where lines go.
pub enum Sink {
    Stdout,
    File(std::path::PathBuf),
}

impl Sink {
    /// `stdout` (or `-`), else a file path (appended to).
    pub fn parse(s: &str) -> Sink {
        match s {
            "stdout" | "-" | "/dev/stdout" => Sink::Stdout,
            path => Sink::File(path.into()),
        }
    }
}

impl AccessLog {
    /// Opens the sink and starts the writer thread.
    pub fn start(sink: Sink, sample_rate: f64) -> std::io::Result<Arc<AccessLog>> {
        if !(sample_rate > 0.0 && sample_rate <= 1.0) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the sample rate must be in (0, 1], not {sample_rate}"),
            ));
        }
        let out: Box<dyn Write + Send> = match sink {
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out))?;
        Ok(Arc::new(AccessLog {
            tx,
            sample_rate,
            dropped: Counter::default(),
        }))
    }

    /// Gives the writer time to write what is queued (at shutdown, after
    /// the requests in flight finished).
    pub fn settle(&self) {
        std::thread::sleep(DRAIN_EVERY * 3);
    }

    /// Whether this request is one of the sampled.
    pub fn sampled(&self) -> bool {
        self.sample_rate >= 1.0 || rand::random::<f64>() < self.sample_rate
    }

    fn send(&self, line: Vec<u8>) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// How often the writer drains the queue. It polls rather than waits on
/// it: a writer parked on the queue would be woken by every line, a
/// context switch per request on the request's core.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Writes what the queue holds every [`DRAIN_EVERY`], then flushes.
fn write_lines(rx: Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    loop {
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    if out.write_all(&line).is_err() {
                        // Nowhere to write: lines are dropped, requests go on.
                        return;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
        std::thread::sleep(DRAIN_EVERY);
    }
}

/// What the route and upstream stages learned, for the log line (kept
/// only for a request that is logged).
#[derive(Clone, Default)]
pub struct Served {
    /// None: refused before a route was chosen.
    pub route: Option<String>,
    pub request_id: Option<http::HeaderValue>,
    pub cluster: Option<String>,
}

/// One request's line, filled as the request goes.
#[derive(Serialize)]
pub struct Entry {
    start_time: String,
    method: String,
    /// Without the query string: API keys and personal data travel there.
    path: String,
    protocol: &'static str,
    listener: String,
    status: u16,
    route: Option<String>,
    upstream_cluster: Option<String>,
    request_id: Option<String>,
    trace_id: Option<String>,
    bytes_sent: u64,
    duration_ms: f64,
    upstream_ms: Option<f64>,
    /// The client went away before the body was sent whole.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    aborted: bool,
}

impl Entry {
    /// What the request head says, taken before the request is routed.
    pub fn start<B>(req: &http::Request<B>, listener: &str) -> Entry {
        let trace_id = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(trace_id_of);
        Entry {
            start_time: rfc3339_ms(SystemTime::now()),
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            protocol: match req.version() {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            },
            listener: listener.to_string(),
            status: 0,
            route: None,
            upstream_cluster: None,
            request_id: None,
            trace_id,
            bytes_sent: 0,
            duration_ms: 0.0,
            upstream_ms: None,
            aborted: false,
        }
    }

    /// The response head and what routing recorded.
    pub fn respond(&mut self, status: u16, served: Option<Served>) {
        self.status = status;
        if let Some(s) = served {
            self.route = s.route;
            self.request_id = s
                .request_id
                .and_then(|v| v.to_str().ok().map(str::to_string));
            self.upstream_cluster = s.cluster;
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`),
/// if it is one and not all zeros.
fn trace_id_of(v: &str) -> Option<String> {
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(span, 16)
        && hex(flags, 2);
    valid.then(|| trace.to_string())
}

fn rfc3339_ms(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Entry {
    /// Queues the line, once the response has been sent (or abandoned).
    pub fn write(
        mut self,
        log: &AccessLog,
        sent: u64,
        aborted: bool,
        duration_ms: f64,
        upstream_ms: Option<f64>,
    ) {
        self.bytes_sent = sent;
        self.upstream_ms = upstream_ms;
        self.duration_ms = duration_ms;
        self.aborted = aborted;
        if let Ok(mut line) = serde_json::to_vec(&self) {
            line.push(b'\n');
            log.send(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(),
            Some(id)
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_601_600_123);
        assert_eq!(rfc3339_ms(t), "2026-12-07T00:00:00.123Z");
        assert_eq!(
            rfc3339_ms(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_ms(leap), "2000-02-29T00:00:00.000Z");
    }
}
