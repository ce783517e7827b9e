//! The request's phases, in the order they run, and what one request
//! carries through them.
//!
//! 1. **Request filter** (`handler::reject`): what Envoy's codec and
//!    connection manager refuse before any routing.
//! 2. **Route** (`handler::route`): path normalisation, route selection,
//!    the fail-closed fence, the request id.
//! 3. **Access** (`plugins::access`): client address, authentication, ACL,
//!    rate limits, size and schema checks, request-transformer, the cache
//!    lookup. A plugin may answer instead of the upstream.
//! 4. **Upstream request** (`handler::forward`): cluster, endpoint,
//!    retries, timeouts, mirrors.
//! 5. **Response** (`handler::route`, after forwarding):
//!    response-transformer, proxy-cache's store, the plugins' and route's
//!    response headers.
//! 6. **Log** ([`Ctx::finish`]): once the response body has been sent, or
//!    the client went away: the access log line and Kong's prometheus
//!    series.
//!
//! [`Ctx`] is what the phases learn on the way for the log phase. It lives
//! in the request's handler; it moves into the response body only when
//! something will be logged.

use super::access_log::{AccessLog, Entry, Served};
use crate::body::{Body, Fault, Finish, OnFinish};
use crate::plugins::LogWork;
use crate::plugins::log::serialize;
use crate::plugins::prometheus::{Finished, Source};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Ctx {
    started: Instant,
    pub started_at: std::time::SystemTime,
    /// The access log and this request's line, when it is sampled.
    access_log: Option<(Arc<AccessLog>, Entry)>,
    /// What routing learned, for the access log line (only when logged).
    pub served: Option<Served>,
    /// What the plugins left for the log phase (prometheus, log plugins).
    pub log: LogWork,
    /// The request as the log plugins record it, when one applies.
    pub log_request: Option<serialize::Request>,
    /// For the log plugins: the path sent upstream, each attempt's
    /// endpoint, the upstream's status.
    pub upstream_uri: Option<String>,
    pub tries: Vec<String>,
    pub upstream_status: Option<u16>,
    /// Who wrote the response: the upstream, unless a phase answered.
    pub source: Source,
    /// From the request sent upstream to the upstream's response head.
    pub upstream: Option<Duration>,
    /// The request head's size, when bandwidth is counted.
    pub head_in: u64,
    /// The client's body as it was read, when forwarded streaming.
    pub body_in: Option<Fault>,
}

impl Ctx {
    pub fn start<B>(req: &Request<B>, listener: &str, log: Option<&Arc<AccessLog>>) -> Ctx {
        let access_log = log
            .filter(|l| l.sampled())
            .map(|l| (l.clone(), Entry::start(req, listener)));
        Ctx {
            started: Instant::now(),
            started_at: std::time::SystemTime::now(),
            served: access_log.as_ref().map(|_| Served::default()),
            access_log,
            log: LogWork::default(),
            log_request: None,
            upstream_uri: None,
            tries: Vec::new(),
            upstream_status: None,
            source: Source::Kong,
            upstream: None,
            head_in: 0,
            body_in: None,
        }
    }

    /// The log phase: runs once `resp`'s body has been sent. A request
    /// nothing logs passes through untouched.
    pub fn finish(self, resp: Response<Body>) -> Response<Body> {
        let plugins = self.log.metrics.is_some() || !self.log.sinks.is_empty();
        if self.access_log.is_none() && !plugins {
            return resp;
        }
        let status = resp.status().as_u16();
        let sizes = self.log.metrics.as_ref().is_some_and(|m| m.counts_bytes())
            || !self.log.sinks.is_empty();
        let head_out = match sizes {
            true => 17 + head_size(resp.headers()),
            false => 0,
        };
        // The log plugins' record of the exchange, when one applies.
        let entry = match (self.log.sinks.is_empty(), self.log_request) {
            (false, Some(mut request)) => {
                request.consumer = self.log.consumer;
                Some(Box::new(ForLogPlugins {
                    request,
                    response_headers: resp.headers().clone(),
                    upstream_uri: self.upstream_uri,
                    upstream_status: self.upstream_status,
                    tries: self.tries,
                }))
            }
            _ => None,
        };
        let mut phase = LogPhase {
            started: self.started,
            access_log: self.access_log,
            metrics: self.log.metrics,
            sinks: self.log.sinks,
            entry,
            status,
            source: self.source,
            upstream: self.upstream,
            bytes_in: self.head_in,
            body_in: self.body_in,
            head_out,
        };
        if let Some((_, entry)) = phase.access_log.as_mut() {
            entry.respond(status, self.served);
        }
        resp.map(|b| Finish::new(b, phase).boxed())
    }
}

/// A request head's size on the wire, near enough: each header's name,
/// value, ": " and CRLF.
pub fn head_size(h: &HeaderMap) -> u64 {
    h.iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
        .sum::<u64>()
        + 2
}

/// What the log plugins' entry needs beyond the request.
struct ForLogPlugins {
    request: serialize::Request,
    response_headers: HeaderMap,
    upstream_uri: Option<String>,
    upstream_status: Option<u16>,
    tries: Vec<String>,
}

struct LogPhase {
    started: Instant,
    access_log: Option<(Arc<AccessLog>, Entry)>,
    metrics: Option<crate::plugins::prometheus::Observe>,
    sinks: Vec<Arc<crate::plugins::log::LogPlugin>>,
    entry: Option<Box<ForLogPlugins>>,
    status: u16,
    source: Source,
    upstream: Option<Duration>,
    bytes_in: u64,
    body_in: Option<Fault>,
    head_out: u64,
}

impl OnFinish for LogPhase {
    fn finish(self, sent: u64, aborted: bool) {
        let took = self.started.elapsed();
        let request_ms = took.as_millis() as u64;
        let upstream_ms = self.upstream.map(|u| u.as_millis() as u64);
        let ingress = self.bytes_in + self.body_in.as_ref().map_or(0, |f| f.bytes_read());
        let egress = self.head_out + sent;
        if let Some(e) = &self.entry {
            let line = serialize::serialize(
                &e.request,
                &serialize::Done {
                    status: self.status,
                    response_headers: &e.response_headers,
                    request_size: ingress,
                    response_size: egress,
                    upstream_uri: e.upstream_uri.as_deref(),
                    upstream_status: e.upstream_status,
                    tries: &e.tries,
                    kong_ms: request_ms.saturating_sub(upstream_ms.unwrap_or(0)),
                    proxy_ms: upstream_ms,
                    request_ms,
                    from_upstream: self.source == Source::Service,
                },
            );
            let line = bytes::Bytes::from(line);
            for s in &self.sinks {
                s.push(line.clone());
            }
        }
        if let Some((log, entry)) = self.access_log {
            entry.write(
                &log,
                sent,
                aborted,
                took.as_secs_f64() * 1000.0,
                self.upstream.map(|u| u.as_secs_f64() * 1000.0),
            );
        }
        if let Some(m) = self.metrics {
            m.record(&Finished {
                status: self.status,
                source: self.source,
                request_ms,
                upstream_ms,
                ingress,
                egress,
            });
        }
    }
}
