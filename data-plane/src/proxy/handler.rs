//! The request path: load the current runtime once, select the route,
//! then answer directly, redirect, or forward to an endpoint of the
//! route's cluster with Envoy's retry, timeout and rewrite semantics.

use super::headers::{self, X_ENVOY_TIMEOUT};
use super::lb::{ClusterState, Endpoint};
use super::phases::{self, Ctx};
use super::runtime::{Runtime, Shared};
use super::{codec_rules, mirror, outlier, request_head};
use crate::body::{Body, BoxError};
use crate::body::{Fault, collect_limited, empty, full};
use crate::config::ListenerConfig;
use crate::config::path_normalize;
use crate::config::{
    Action, Forward, HashPolicy, HostRewrite, RedirectRequest, RequestView, RetryOn,
    direct_response_location,
};
use crate::plugins;
use crate::plugins::prometheus::Source;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::borrow::Cow;
use std::convert::Infallible;

static X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The connection a request arrived on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub listener: Arc<str>,
    pub remote: SocketAddr,
    /// The client's address as a header value (X-Forwarded-For and
    /// x-envoy-external-address), made once per connection.
    pub remote_ip: HeaderValue,
    pub tls: bool,
    /// Which requests' heads had smuggling framing (HTTP/1).
    pub framing: Arc<request_head::Verdicts>,
}

impl ConnInfo {
    pub fn new(listener: Arc<str>, remote: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            listener,
            remote,
            remote_ip: headers::address_value(remote.ip()),
            tls,
            framing: Arc::default(),
        }
    }
}

/// Bodies up to this size are buffered when a retry policy may replay them.
const RETRY_BUFFER_LIMIT: usize = 64 * 1024;

/// A response the proxy writes itself, with Envoy's text.
fn local(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(if body.is_empty() { empty() } else { full(body) });
    *r.status_mut() = status;
    if !body.is_empty() {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    r
}

pub async fn handle(
    req: Request<Incoming>,
    conn: ConnInfo,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    // The runtime this request started on; a swap mid-request changes nothing for it.
    let rt = shared.current();
    let listener = rt.listeners.get(conn.listener.as_ref());
    let mut ctx = Ctx::start(&req, &conn.listener, shared.options.access_log.as_ref());
    let smuggled = matches!(
        req.version(),
        http::Version::HTTP_11 | http::Version::HTTP_10
    ) && conn.framing.next_request_is_bad();
    let max_head = listener.map_or(60 * 1024, |l| l.limits.max_request_headers);
    let mut resp = match reject(&req, smuggled, max_head) {
        Some(r) => r,
        None => match listener {
            Some(l) => route(req, l, &conn, &rt, &shared, &mut ctx).await,
            None => local(StatusCode::NOT_FOUND, ""),
        },
    };
    // Every answer carries the server name, Envoy's `server_name`.
    let server = match listener {
        Some(l) => l.server_name.clone(),
        None => Some(HeaderValue::from_static("envoy")),
    };
    if let Some(v) = server {
        resp.headers_mut().insert(http::header::SERVER, v);
    }
    shared.stats.count_status(resp.status().as_u16());
    Ok(ctx.finish(resp))
}

/// Requests refused before routing: what Envoy's codec and connection
/// manager refuse (`codec_rules`), and several Host headers (no virtual
/// host can match: 404).
fn reject<B>(req: &Request<B>, smuggled: bool, max_head: usize) -> Option<Response<Body>> {
    let refusal = match smuggled {
        // Content-Length with Transfer-Encoding, or two Content-Lengths.
        true => Some(codec_rules::Refusal {
            status: StatusCode::BAD_REQUEST,
            body: "Bad Request",
            close: true,
        }),
        false => codec_rules::check(req, max_head),
    };
    if let Some(r) = refusal {
        let mut resp = local(r.status, r.body);
        if r.body.is_empty() {
            resp.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        if r.close {
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        return Some(resp);
    }
    if req.headers().get_all(HOST).iter().nth(1).is_some() {
        return Some(local(StatusCode::NOT_FOUND, ""));
    }
    None
}

/// The request's authority: the URL's in absolute form, else Host. Held
/// as a shared-bytes clone, so the request stays free to change.
enum Authority {
    Uri(http::uri::Authority),
    Host(HeaderValue),
    None,
}

impl Authority {
    fn of<B>(req: &Request<B>) -> Authority {
        match (req.uri().authority(), req.headers().get(HOST)) {
            (Some(a), _) => Authority::Uri(a.clone()),
            (None, Some(h)) => Authority::Host(h.clone()),
            (None, None) => Authority::None,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Authority::Uri(a) => a.as_str(),
            Authority::Host(h) => h.to_str().unwrap_or_default(),
            Authority::None => "",
        }
    }
}

async fn route(
    mut req: Request<Incoming>,
    listener: &ListenerConfig,
    conn: &ConnInfo,
    rt: &Arc<Runtime>,
    shared: &Arc<Shared>,
    ctx: &mut Ctx,
) -> Response<Body> {
    let Some(table) = rt.compiled.routes.get(&listener.route_config) else {
        shared.stats.no_route.inc();
        return local(StatusCode::NOT_FOUND, "");
    };
    let authority = Authority::of(&req);
    let authority = authority.as_str();
    // The path as received, shared with the request's URI; copied only
    // when a plugin changes it.
    let uri_pq = req.uri().path_and_query().cloned();
    let mut pq: Cow<'_, str> = Cow::Borrowed(uri_pq.as_ref().map_or("/", |p| p.as_str()));
    // Envoy's path normalisation, before routing and for the upstream.
    if listener.path_rules.any() {
        match path_normalize::apply(&pq, listener.path_rules) {
            Ok(Cow::Owned(p)) => pq = Cow::Owned(p),
            Ok(Cow::Borrowed(_)) => {}
            Err(path_normalize::Refused) => {
                let mut r = local(StatusCode::BAD_REQUEST, "");
                r.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                r.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
        }
    }
    let scheme = if conn.tls { "https" } else { "http" };
    let view = RequestView {
        authority,
        path_and_query: &pq,
        method: req.method(),
        scheme: Some(scheme),
        headers: req.headers(),
    };
    let Some(selected) = table.select_request(&view) else {
        shared.stats.no_route.inc();
        return local(StatusCode::NOT_FOUND, "");
    };
    let route = selected.route;
    let span = tracing::debug_span!("request", route = %route.name, listener = %conn.listener);
    // Fail closed: a route whose policies this proxy does not hold as the
    // control plane last sent them is not served (see config::Fences).
    if rt.fenced(
        &conn.listener,
        &listener.route_config,
        route.plugins.is_some(),
    ) || (route.plugins.is_some() && listener.gateway.is_none())
    {
        shared.stats.policy_refused.inc();
        tracing::warn!(parent: &span, "route's policies are not held (refused update or missing plugin filter); refusing");
        return plugins::Reject::new(500, "An unexpected error occurred").into_response();
    }
    // Kong's plugins: they may answer instead of the route, and leave
    // headers for the response.
    // The request id is settled before any filter runs, as in Envoy's
    // connection manager: at the edge it is the proxy's own.
    if listener.use_remote_address {
        headers::new_request_id(req.headers_mut());
    } else {
        headers::ensure_request_id(req.headers_mut());
    }
    if let Some(s) = ctx.served.as_mut() {
        s.route = Some(route.name.clone());
        s.request_id = req.headers().get(&headers::X_REQUEST_ID).cloned();
    }
    // What the plugins leave for the rest of the request (nothing, on a
    // route without plugins).
    let mut out = plugins::Outcome::default();
    if let (Some(g), Some(p)) = (&listener.gateway, &route.plugins) {
        let bandwidth = p.series.is_some() && g.prometheus.is_some_and(|m| m.bandwidth_metrics);
        if bandwidth || p.log_context.is_some() {
            // Request line and headers, as Kong counts `request.size`.
            let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
            ctx.head_in = (req.method().as_str().len() + target + 11) as u64
                + phases::head_size(req.headers());
        }
        let (parts, body) = req.into_parts();
        let mut parts = parts;
        let r = plugins::access(
            g,
            p,
            &shared.plugins,
            plugins::Request {
                headers: &mut parts.headers,
                path_and_query: &mut pq,
                method: &mut parts.method,
                peer: conn.remote.ip(),
                local: listener.address,
                path_regex: match &route.path_match {
                    crate::config::MatchKind::Regex(re) => Some(re),
                    _ => None,
                },
            },
            &mut ctx.log,
        )
        .instrument(span.clone())
        .await;
        req = Request::from_parts(parts, body);
        if !ctx.log.sinks.is_empty() {
            ctx.log_request = Some(log_request(
                &req,
                uri_pq.as_ref(),
                authority,
                conn,
                listener,
                p,
                ctx.started_at,
            ));
        }
        match r {
            Ok(o) => out = o,
            Err(reject) => return reject.into_response(),
        }
    }
    let mut resp = match &route.action {
        Action::Direct { status, body } => {
            let mut r = Response::new(if body.is_empty() {
                empty()
            } else {
                full(body.clone())
            });
            *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            let at = RedirectRequest {
                scheme,
                forwarded_proto: scheme,
                authority,
                path_and_query: &pq,
            };
            if let Some(loc) =
                direct_response_location(*status, &at).and_then(|l| HeaderValue::from_str(&l).ok())
            {
                r.headers_mut().insert(LOCATION, loc);
            }
            r
        }
        Action::Redirect(redirect) => {
            let location = redirect.location(scheme, authority, &pq);
            let mut r = Response::new(empty());
            *r.status_mut() =
                StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(LOCATION, v);
            }
            r
        }
        Action::Forward(f) => {
            let websocket = listener.websocket && headers::is_websocket_upgrade(req.headers());
            let on_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
            let fault = Fault::default();
            let buffer = u64::from(listener.per_connection_buffer_limit);
            let idle = listener.limits.stream_idle_timeout;
            let req = match out.request_body(req, &mut pq, buffer, &fault, idle).await {
                Ok(r) => r,
                Err(r) => return r.into_response(),
            };
            let upstream_pq = match out.upstream_path(&pq) {
                Some(p) => Cow::Owned(p),
                None => f.rewrite_path(selected.matched, &pq),
            };
            let host_replaced;
            let f = match out.upstream_host() {
                Some(h) => {
                    host_replaced = Forward {
                        host_rewrite: HostRewrite::Literal(h.to_string()),
                        ..f.clone()
                    };
                    &host_replaced
                }
                None => f,
            };
            let original = Original {
                host: authority,
                pq: &pq,
                uri_pq: uri_pq.as_ref(),
                fault: &fault,
            };
            let cluster_name = f.cluster.pick(rand::random::<u64>);
            ctx.body_in = Some(fault.clone());
            let resp = forward(
                req,
                conn,
                listener,
                rt,
                f,
                cluster_name,
                original,
                upstream_pq,
                on_upgrade,
                shared,
                ctx,
            )
            .instrument(span)
            .await;
            if let Some(s) = ctx.served.as_mut() {
                s.cluster = Some(cluster_name.to_string());
            }
            if fault.too_large() {
                ctx.source = Source::Kong;
                return plugins::Reject::new(413, plugins::size_limit::TOO_LARGE).into_response();
            }
            out.upstream_response(
                resp,
                listener.per_connection_buffer_limit,
                &shared.plugins.cache,
            )
            .await
        }
    };
    route.response_headers.apply(resp.headers_mut());
    out.add_headers(&mut resp);
    resp
}

/// The request as the log plugins record it: as received (path, query)
/// and as forwarded (headers, after the plugins).
fn log_request<B>(
    req: &Request<B>,
    received: Option<&PathAndQuery>,
    authority: &str,
    conn: &ConnInfo,
    listener: &ListenerConfig,
    p: &plugins::RoutePlugins,
    started_at: std::time::SystemTime,
) -> plugins::log::serialize::Request {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    plugins::log::serialize::Request {
        started_at,
        client_ip: conn.remote.ip(),
        request_id: req
            .headers()
            .get(&headers::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        method: req.method().as_str().to_string(),
        scheme: if conn.tls { "https" } else { "http" },
        host: host.to_string(),
        port: listener.address.port(),
        uri: received.map_or("/", |p| p.as_str()).to_string(),
        headers: req.headers().clone(),
        tls: conn.tls,
        context: p.log_context.clone(),
        consumer: None,
    }
}

/// The value route hash policies give, for ring hash; None means pick
/// at random, as Envoy does when no policy yields a value.
fn hash_for<B>(
    policies: &[HashPolicy],
    req: &Request<B>,
    authority: &str,
    pq: &str,
    remote: SocketAddr,
) -> Option<u64> {
    let view = RequestView {
        authority,
        path_and_query: pq,
        method: req.method(),
        scheme: None,
        headers: req.headers(),
    };
    let mut h = DefaultHasher::new();
    let mut any = false;
    for p in policies {
        let v = match p {
            HashPolicy::SourceIp { .. } => Some(remote.ip().to_string()),
            other => other.value(&view),
        };
        if let Some(v) = v {
            v.hash(&mut h);
            any = true;
            if p.terminal() {
                break;
            }
        }
    }
    any.then(|| h.finish())
}

/// Counts a request as active on an endpoint for as long as it lives.
struct Active(Arc<Endpoint>);

impl Active {
    fn new(e: Arc<Endpoint>) -> Active {
        e.active.fetch_add(1, Ordering::Relaxed);
        Active(e)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Failure {
    Connect,
    Reset,
    Timeout,
}

/// The request's authority and path as the client sent them.
struct Original<'a> {
    host: &'a str,
    pq: &'a str,
    /// The path as parsed from the request line, reused upstream when no
    /// rewrite changed it.
    uri_pq: Option<&'a PathAndQuery>,
    /// Whether reading the client's body failed.
    fault: &'a Fault,
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    req: Request<Body>,
    conn: &ConnInfo,
    listener: &ListenerConfig,
    rt: &Runtime,
    f: &Forward,
    cluster_name: &str,
    original: Original<'_>,
    upstream_pq: Cow<'_, str>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    shared: &Arc<Shared>,
    ctx: &mut Ctx,
) -> Response<Body> {
    // Unknown, or warming (an EDS cluster without endpoints yet): Envoy
    // answers the route's cluster_not_found code with no body.
    let cluster = rt.clusters.get(cluster_name).filter(|_| {
        rt.compiled
            .clusters
            .get(cluster_name)
            .is_some_and(|c| !c.warming)
    });
    let Some(cluster) = cluster else {
        shared.stats.no_cluster.inc();
        return local(
            StatusCode::from_u16(f.cluster_not_found_status)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "",
        );
    };
    let (original_host, original_pq) = (original.host, original.pq);
    // The path upstream, shared with the request line's when unchanged.
    let upstream_pq_value = match original.uri_pq {
        Some(p) if p.as_str() == upstream_pq => p.clone(),
        _ => match PathAndQuery::try_from(upstream_pq.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build upstream request");
                return local(StatusCode::BAD_GATEWAY, "bad upstream request");
            }
        },
    };
    let hash = hash_for(
        &f.hash_policies,
        &req,
        original_host,
        original_pq,
        conn.remote,
    );
    let retry_applies = f.retry.as_ref().is_some_and(|r| {
        r.applies_to(&RequestView {
            authority: original_host,
            path_and_query: original_pq,
            method: req.method(),
            scheme: None,
            headers: req.headers(),
        })
    });
    let (mut parts, body) = req.into_parts();
    // Room for the forwarding headers below, grown once.
    parts.headers.reserve(6);
    let downstream_version = parts.version;
    headers::strip_hop_by_hop(&mut parts.headers, on_upgrade.is_some());
    if listener.use_remote_address {
        // At the edge, as Envoy: internal headers from outside are dropped
        // and the request id is the proxy's own.
        headers::strip_envoy_internal(&mut parts.headers);
        headers::set_external_address(
            &mut parts.headers,
            &conn.remote_ip,
            listener.suppress_envoy_headers,
        );
    }
    headers::set_forwarded(&mut parts.headers, &conn.remote_ip, conn.tls);
    if !listener.suppress_envoy_headers
        && upstream_pq != original_pq
        && let Ok(v) = HeaderValue::from_str(original_pq.split('?').next().unwrap_or("/"))
    {
        parts
            .headers
            .insert(headers::X_ENVOY_ORIGINAL_PATH.clone(), v);
    }
    if let Some(t) = f.timeout {
        parts.headers.insert(
            X_ENVOY_TIMEOUT.clone(),
            HeaderValue::from(t.as_millis() as u64),
        );
    }
    f.request_headers.apply(&mut parts.headers);

    // A body is replayed on retry only if it is small enough to hold.
    let retry = f
        .retry
        .as_ref()
        .filter(|r| r.num_retries > 0 && retry_applies);
    let small = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n <= RETRY_BUFFER_LIMIT)
        || (body_is_empty(&parts) && hyper::body::Body::is_end_stream(&body));
    let (replay, mut stream): (Option<Bytes>, Option<Body>) =
        if retry.is_some() && small && on_upgrade.is_none() {
            match collect_limited(body, RETRY_BUFFER_LIMIT).await {
                Some(b) => (Some(b), None),
                None if original.fault.broken() => {
                    shared.stats.downstream_rq_body_error.inc();
                    return local(StatusCode::BAD_REQUEST, "Bad Request");
                }
                None => return local(StatusCode::BAD_REQUEST, "request body too large to retry"),
            }
        } else {
            (None, Some(body))
        };
    let max_attempts = 1 + if replay.is_some() {
        retry.map(|r| r.num_retries).unwrap_or(0)
    } else {
        0
    };
    // The route timeout spans every attempt; a per-try timeout bounds each.
    let deadline = f.timeout.map(|t| Instant::now() + t);
    let per_try = retry.and_then(|r| r.per_try_timeout);
    let Some(_request_slot) = cluster.request_slot(f.priority) else {
        cluster.stats.upstream_rq_pending_overflow.inc();
        return reset_response(Reset::Overflow, false, listener.suppress_envoy_headers);
    };
    if on_upgrade.is_none() {
        send_mirrors(
            rt,
            f,
            &parts,
            &upstream_pq_value,
            original_host,
            &replay,
            &mut stream,
        );
    }

    let mut attempt = 0;
    let mut _retry_slot = None;
    loop {
        attempt += 1;
        let Some(endpoint) = cluster.pick(hash) else {
            cluster.stats.no_healthy_upstream.inc();
            return local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
        };
        let body = match (&replay, stream.take()) {
            (Some(b), _) => full(b.clone()),
            (None, Some(s)) => s,
            (None, None) => empty(),
        };
        // The last attempt takes the headers; earlier ones copy them.
        let headers = if attempt >= max_attempts {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        let req = match upstream_request(
            &parts,
            headers,
            &upstream_pq_value,
            &endpoint,
            f,
            original_host,
            cluster,
            body,
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build upstream request");
                return local(StatusCode::BAD_GATEWAY, "bad upstream request");
            }
        };
        cluster.stats.upstream_rq.inc();
        if !ctx.log.sinks.is_empty() {
            ctx.tries.push(endpoint.authority.to_string());
            ctx.upstream_uri = Some(upstream_pq_value.as_str().to_string());
        }
        let active = Active::new(endpoint.clone());
        let attempt_started = Instant::now();
        let sent = cluster.client.request(req);
        // This attempt's limit: the per-try timeout or what is left of
        // the route's, whichever ends first.
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        let limit = match (left, per_try) {
            (Some(l), Some(p)) => Some(l.min(p)),
            (l, p) => l.or(p),
        };
        let classify = |e: hyper_util::client::legacy::Error| {
            if e.is_connect() {
                Failure::Connect
            } else {
                Failure::Reset
            }
        };
        let outcome = match limit {
            Some(t) => match tokio::time::timeout(t, sent).await {
                Ok(r) => r.map_err(classify),
                Err(_) => Err(Failure::Timeout),
            },
            None => sent.await.map_err(classify),
        };
        // The client's body broke (or went over its limit) while it was
        // being sent: the client's fault, not the endpoint's. Not counted
        // against it, not retried.
        if outcome.is_err() && original.fault.broken() {
            shared.stats.downstream_rq_body_error.inc();
            return local(StatusCode::BAD_REQUEST, "Bad Request");
        }
        if outcome.is_err() && original.fault.too_large() {
            return local(StatusCode::PAYLOAD_TOO_LARGE, "");
        }
        if outcome.is_err() && original.fault.stalled() {
            return local(StatusCode::REQUEST_TIMEOUT, "stream timeout");
        }
        let route_timed_out = deadline.is_some_and(|d| Instant::now() >= d);
        let result = match &outcome {
            Ok(r) => outlier::Result::Status(r.status().as_u16()),
            Err(Failure::Connect) => outlier::Result::ConnectFailure,
            Err(Failure::Reset) => outlier::Result::Reset,
            Err(Failure::Timeout) => outlier::Result::Timeout,
        };
        if cluster.report(&endpoint, result).is_some() {
            cluster.stats.outlier_ejections.inc();
        }
        // Another attempt needs a retry budget slot (`max_retries`).
        let mut may_retry = || {
            if attempt >= max_attempts || route_timed_out {
                return false;
            }
            match cluster.retry_slot(f.priority) {
                Some(slot) => {
                    _retry_slot = Some(slot);
                    cluster.stats.upstream_rq_retry.inc();
                    true
                }
                None => {
                    cluster.stats.upstream_rq_retry_overflow.inc();
                    false
                }
            }
        };
        match outcome {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                if retry.is_some_and(|r| r.should_retry_response(status, resp.headers()))
                    && may_retry()
                {
                    backoff(retry, attempt).await;
                    continue;
                }
                // The answer is the upstream's; the wait is this attempt's.
                ctx.source = Source::Service;
                ctx.upstream = Some(attempt_started.elapsed());
                ctx.upstream_status = Some(status);
                let upgrade = (resp.status() == StatusCode::SWITCHING_PROTOCOLS)
                    .then(|| hyper::upgrade::on(&mut resp));
                let (mut rparts, rbody) = resp.into_parts();
                // The client's protocol, whatever the upstream spoke.
                rparts.version = downstream_version;
                headers::strip_hop_by_hop(&mut rparts.headers, upgrade.is_some());
                if let (Some(up), Some(down)) = (upgrade, on_upgrade) {
                    tokio::spawn(tunnel(up, down));
                }
                // The endpoint and the request slot stay counted until the
                // body is sent.
                let slot = _request_slot;
                let body = rbody
                    .map_err(|e| Box::new(e) as BoxError)
                    .map_frame(move |f| {
                        let _ = (&active, &slot);
                        f
                    });
                return Response::from_parts(rparts, body.boxed());
            }
            Err(failure) => {
                // Envoy: 5xx and gateway-error cover every reset and
                // timeout, `reset` too; connect-failure only connect
                // failures.
                let mut on = RetryOn::FIVE_XX.0 | RetryOn::GATEWAY_ERROR.0 | RetryOn::RESET.0;
                match failure {
                    Failure::Connect => {
                        cluster.stats.upstream_cx_connect_fail.inc();
                        on |= RetryOn::CONNECT_FAILURE.0;
                    }
                    Failure::Timeout => {
                        cluster.stats.upstream_rq_timeout.inc();
                        if !route_timed_out {
                            cluster.stats.upstream_rq_per_try_timeout.inc();
                        }
                    }
                    Failure::Reset => {}
                }
                if retry.is_some_and(|r| r.retry_on.0 & on != 0) && may_retry() {
                    backoff(retry, attempt).await;
                    continue;
                }
                return match failure {
                    Failure::Timeout => {
                        local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
                    }
                    Failure::Connect => reset_response(
                        Reset::ConnectFailure,
                        attempt > 1,
                        listener.suppress_envoy_headers,
                    ),
                    Failure::Reset => reset_response(
                        Reset::Termination,
                        attempt > 1,
                        listener.suppress_envoy_headers,
                    ),
                };
            }
        }
    }
}

enum Reset {
    ConnectFailure,
    Termination,
    Overflow,
}

/// Envoy's 503 for a reset before response headers, in its words, so
/// clients and tests see the same text.
fn reset_response(why: Reset, retried: bool, suppress_envoy_headers: bool) -> Response<Body> {
    let reason = match why {
        Reset::ConnectFailure => "remote connection failure",
        Reset::Termination => "connection termination",
        Reset::Overflow => "overflow",
    };
    let retried = if retried {
        "retried and the latest reset reason"
    } else {
        "reset reason"
    };
    let text =
        format!("upstream connect error or disconnect/reset before headers. {retried}: {reason}");
    let mut r = local(StatusCode::SERVICE_UNAVAILABLE, "");
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    if matches!(why, Reset::Overflow) && !suppress_envoy_headers {
        r.headers_mut()
            .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    }
    *r.body_mut() = full(text);
    r
}

/// Sends the route's sampled mirrors, each to an endpoint of its cluster,
/// with the body the real request carries (buffered, or teed as it streams).
#[allow(clippy::too_many_arguments)]
fn send_mirrors(
    rt: &Runtime,
    f: &Forward,
    parts: &http::request::Parts,
    upstream_pq: &PathAndQuery,
    original_host: &str,
    replay: &Option<Bytes>,
    stream: &mut Option<Body>,
) {
    if f.mirrors.is_empty() {
        return;
    }
    // Each sampled mirror with its cluster, so a mirror's own settings go
    // with it.
    let targets: Vec<(&Arc<ClusterState>, _)> = f
        .mirrors
        .iter()
        .filter(|m| m.sampled(rand::random::<u64>()))
        .filter_map(|m| {
            let warm = rt
                .compiled
                .clusters
                .get(&m.cluster)
                .is_some_and(|c| !c.warming);
            rt.clusters.get(&m.cluster).filter(|_| warm).map(|c| (c, m))
        })
        .collect();
    if targets.is_empty() {
        return;
    }
    let mut copies: Vec<Option<Body>> = match (replay, stream.take()) {
        (Some(b), _) => targets.iter().map(|_| Some(full(b.clone()))).collect(),
        (None, Some(s)) if !hyper::body::Body::is_end_stream(&s) => {
            let (tee, copies) = crate::body::Tee::new(s, targets.len());
            *stream = Some(tee.boxed());
            copies.into_iter().map(|c| Some(c.boxed())).collect()
        }
        (None, s) => {
            *stream = s;
            targets.iter().map(|_| None).collect()
        }
    };
    for (i, (cluster, m)) in targets.iter().enumerate() {
        let Some(endpoint) = cluster.pick(None) else {
            continue;
        };
        let body = copies[i].take().unwrap_or_else(empty);
        let Ok(mut req) = upstream_request(
            parts,
            parts.headers.clone(),
            upstream_pq,
            &endpoint,
            f,
            original_host,
            cluster,
            body,
        ) else {
            continue;
        };
        mirror::set_shadow_host(&mut req, !m.disable_shadow_host_suffix_append);
        cluster.stats.upstream_rq.inc();
        mirror::spawn(Arc::clone(cluster), req, f.timeout);
    }
}

fn body_is_empty(parts: &http::request::Parts) -> bool {
    parts.headers.get(CONTENT_LENGTH).is_none()
        && !parts.headers.contains_key(http::header::TRANSFER_ENCODING)
}

async fn backoff(retry: Option<&crate::config::RetryPolicy>, attempt: u32) {
    let (base, max) = retry
        .map(|r| (r.backoff_base, r.backoff_max))
        .unwrap_or((Duration::from_millis(25), Duration::from_millis(250)));
    let ceiling = base.saturating_mul(1 << attempt.min(10)).min(max);
    let jittered = ceiling.mul_f64(rand::random::<f64>());
    tokio::time::sleep(jittered).await;
}

#[allow(clippy::too_many_arguments)]
fn upstream_request(
    parts: &http::request::Parts,
    headers: http::HeaderMap,
    pq: &PathAndQuery,
    endpoint: &Endpoint,
    f: &Forward,
    original_host: &str,
    cluster: &ClusterState,
    body: Body,
) -> Result<Request<Body>, http::Error> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(cluster.client.scheme());
    uri.authority = Some(endpoint.authority.clone());
    uri.path_and_query = Some(pq.clone());
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = Uri::from_parts(uri).map_err(http::Error::from)?;
    if !cluster.client.http2 {
        *req.version_mut() = http::Version::HTTP_11;
    }
    *req.headers_mut() = headers;
    let host: Cow<'_, str> = match &f.host_rewrite {
        HostRewrite::None => Cow::Borrowed(original_host),
        HostRewrite::Literal(h) => Cow::Borrowed(h),
        HostRewrite::Auto => endpoint
            .hostname
            .as_deref()
            .map_or_else(|| Cow::Owned(endpoint.authority.to_string()), Cow::Borrowed),
    };
    if f.append_x_forwarded_host && host != original_host {
        // Envoy's append_x_forwarded_host: the client's Host, appended.
        let v = match req
            .headers()
            .get(&X_FORWARDED_HOST)
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.is_empty() => format!("{prev},{original_host}"),
            _ => original_host.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&v) {
            req.headers_mut().insert(X_FORWARDED_HOST.clone(), v);
        }
    }
    // The client's Host, when it is what goes upstream, is already there.
    let unchanged = req
        .headers()
        .get(HOST)
        .is_some_and(|h| h.as_bytes() == host.as_bytes());
    if !unchanged && let Ok(v) = HeaderValue::from_str(&host) {
        req.headers_mut().insert(HOST, v);
    }
    Ok(req)
}

/// Copies bytes both ways between an upgraded client and upstream.
async fn tunnel(up: hyper::upgrade::OnUpgrade, down: hyper::upgrade::OnUpgrade) {
    let (Ok(up), Ok(down)) = tokio::join!(up, down) else {
        return;
    };
    let mut up = hyper_util::rt::TokioIo::new(up);
    let mut down = hyper_util::rt::TokioIo::new(down);
    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
}
