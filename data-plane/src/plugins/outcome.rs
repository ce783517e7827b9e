//! What the access phase leaves for the rest of the request, and the
//! plugin work done there: the request body (read whole for
//! request-transformer and request-validator, or counted as it streams for
//! request-size-limiting), the upstream path and Host request-transformer
//! sets, and on the way back response-transformer, proxy-cache's store and
//! the headers the plugins add to the response.

use super::{Reject, proxy_cache, request_transformer, request_validator, response_transformer};
use crate::body::{Body, ClientBody, Fault, collect_limited, empty, full};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the request phases leave for the response.
#[derive(Default)]
pub struct Outcome {
    /// Added to the response (rate-limit, CORS, correlation id).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// A body of undeclared length is refused past this many bytes.
    pub body_limit: Option<u64>,
    /// request-transformer's body, path and Host changes, for the
    /// forwarding path.
    pub request_transform: Option<request_transformer::Pending>,
    /// Applied to the upstream's response.
    pub response_transform: Option<Arc<response_transformer::ResponseTransformer>>,
    /// proxy-cache's verdict for a request it did not answer itself.
    pub cache: Option<CacheStep>,
    /// request-validator's body check, run once the body is read.
    pub validate_body: Option<Arc<request_validator::RequestValidator>>,
}

/// What proxy-cache does with the upstream's response.
pub enum CacheStep {
    /// Not cacheable: only `X-Cache-Status: Bypass`.
    Bypass(Arc<proxy_cache::ProxyCache>),
    /// Store it if it qualifies; `Miss` or `Refresh`.
    Fetch(
        Arc<proxy_cache::ProxyCache>,
        proxy_cache::Lookup,
        &'static str,
    ),
}

impl Outcome {
    /// The request body as it goes upstream. A body request-transformer
    /// rewrites or request-validator checks is read whole first (bounded by
    /// `buffer` and the size limit); it may change the query. Otherwise it
    /// streams, counted against the size limit (Kong's 413 once over) and
    /// timed against `idle`; a request without one (most GETs) sends none.
    pub async fn request_body(
        &self,
        req: Request<Incoming>,
        pq: &mut Cow<'_, str>,
        buffer: u64,
        fault: &Fault,
        idle: Option<Duration>,
    ) -> Result<Request<Body>, Reject> {
        let transform = self.request_transform.as_ref().filter(|t| t.reads_body());
        if transform.is_some() || self.validate_body.is_some() {
            let (mut parts, body) = req.into_parts();
            let limit = self.body_limit.map_or(buffer, |n| n.min(buffer));
            let raw = request_transformer::read(&parts.headers, body, limit).await?;
            if let Some(v) = &self.validate_body {
                v.check_body(&parts.headers, &raw)?;
            }
            let b = match transform {
                Some(t) => t.rewrite_body(&mut parts.headers, pq.to_mut(), raw),
                None => raw,
            };
            return Ok(Request::from_parts(parts, full(b)));
        }
        if self.body_limit.is_none() && hyper::body::Body::is_end_stream(req.body()) {
            return Ok(req.map(|_| empty()));
        }
        let limit = self.body_limit;
        Ok(req.map(|b| ClientBody::new(b, fault, limit, idle).boxed()))
    }

    /// request-transformer's `replace.uri`, which takes the place of the
    /// route's rewrites.
    pub fn upstream_path(&self, pq: &str) -> Option<String> {
        self.request_transform.as_ref()?.upstream_path(pq)
    }

    /// request-transformer's Host, which takes the place of the route's.
    pub fn upstream_host(&self) -> Option<&str> {
        self.request_transform.as_ref()?.host()
    }

    /// response-transformer and proxy-cache on the upstream's response.
    pub async fn upstream_response(
        &mut self,
        resp: Response<Body>,
        buffer: u32,
        cache: &proxy_cache::Store,
    ) -> Response<Body> {
        let resp = match self.response_transform.take() {
            Some(t) => t.apply(resp, buffer).await,
            None => resp,
        };
        match self.cache.take() {
            Some(step) => cache_response(step, resp, cache).await,
            None => resp,
        }
    }

    /// The headers the plugins add to any response (rate-limit, CORS,
    /// correlation id).
    pub fn add_headers(&mut self, resp: &mut Response<Body>) {
        for (k, v) in self.response_headers.drain(..) {
            resp.headers_mut().append(k, v);
        }
    }
}

/// proxy-cache on the way back: store a response that qualifies (read
/// whole first: only one with a declared length within the entry limit),
/// and say what happened in `X-Cache-Status`.
async fn cache_response(
    step: CacheStep,
    resp: Response<Body>,
    store: &proxy_cache::Store,
) -> Response<Body> {
    match step {
        CacheStep::Bypass(pc) => {
            let mut resp = resp;
            pc.mark(resp.headers_mut(), "Bypass", None);
            resp
        }
        CacheStep::Fetch(pc, lookup, status) => {
            let Some(ttl) = pc.storable(resp.status().as_u16(), resp.headers()) else {
                let mut resp = resp;
                pc.mark(resp.headers_mut(), "Bypass", None);
                return resp;
            };
            let (mut parts, body) = resp.into_parts();
            let Some(bytes) = collect_limited(body, proxy_cache::MAX_ENTRY).await else {
                // The body failed mid-way: the client gets what hyper gives
                // for a broken upstream body.
                let mut r = Response::new(full("upstream body failed"));
                *r.status_mut() = StatusCode::BAD_GATEWAY;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                );
                return r;
            };
            let key = lookup.key_text.clone();
            pc.store(
                store,
                lookup,
                proxy_cache::Cached {
                    status: parts.status.as_u16(),
                    headers: parts.headers.clone(),
                    body: bytes.clone(),
                    stored: Instant::now(),
                    key_text: key.clone(),
                },
                ttl,
            );
            pc.mark(&mut parts.headers, status, Some(&key));
            Response::from_parts(parts, full(bytes))
        }
    }
}
