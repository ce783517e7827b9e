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
use super::upstream::Body;
use crate::body::{Fault, Finish, OnFinish};
use crate::plugins::prometheus::{Finished, Observe, Source};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Ctx {
    started: Instant,
    /// The access log and this request's line, when it is sampled.
    log: Option<(Arc<AccessLog>, Entry)>,
    /// What routing learned, for the access log line (only when logged).
    pub served: Option<Served>,
    /// Kong's prometheus series for the route, when the plugin applies.
    pub metrics: Option<Observe>,
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
        let log = log
            .filter(|l| l.sampled())
            .map(|l| (l.clone(), Entry::start(req, listener)));
        Ctx {
            started: Instant::now(),
            served: log.as_ref().map(|_| Served::default()),
            log,
            metrics: None,
            source: Source::Kong,
            upstream: None,
            head_in: 0,
            body_in: None,
        }
    }

    /// The log phase: runs once `resp`'s body has been sent. A request
    /// nothing logs passes through untouched.
    pub fn finish(self, resp: Response<Body>) -> Response<Body> {
        if self.log.is_none() && self.metrics.is_none() {
            return resp;
        }
        let status = resp.status().as_u16();
        let head_out = match &self.metrics {
            Some(_) => 17 + head_size(resp.headers()),
            None => 0,
        };
        let mut phase = LogPhase {
            started: self.started,
            log: self.log,
            metrics: self.metrics,
            status,
            source: self.source,
            upstream: self.upstream,
            bytes_in: self.head_in,
            body_in: self.body_in,
            head_out,
        };
        if let Some((_, entry)) = phase.log.as_mut() {
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

struct LogPhase {
    started: Instant,
    log: Option<(Arc<AccessLog>, Entry)>,
    metrics: Option<Observe>,
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
        if let Some((log, entry)) = self.log {
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
                request_ms: took.as_millis() as u64,
                upstream_ms: self.upstream.map(|u| u.as_millis() as u64),
                ingress: self.bytes_in + self.body_in.map_or(0, |f| f.bytes_read()),
                egress: self.head_out + sent,
            });
        }
    }
}
