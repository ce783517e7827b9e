//! The proxy's admin endpoint (Envoy-like, default 127.0.0.1:9901):
//! `/ready`, `/healthz`, `/config_dump`, `/clusters`, `/stats/prometheus`
//! (also `/metrics`),
//! and Kong's proxy-cache purge (`DELETE /proxy-cache[/{key}]`).
//!
//! With a token ([`require_token`]), every request but the probes
//! (`/ready`, `/healthz`) needs `Authorization: Bearer <token>`.

use super::runtime::Shared;
use crate::xds::HeldResources;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What the xDS client reports (connected address, ACKs, last NACK).
pub type XdsStatus = Arc<dyn Fn() -> Value + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
    xds: XdsStatus,
    resources: HeldResources,
}

pub fn router(shared: Arc<Shared>, xds: XdsStatus, resources: HeldResources) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/healthz", get(|| async { "OK" }))
        .route("/config_dump", get(config_dump))
        .route("/clusters", get(clusters))
        .route("/stats/prometheus", get(stats))
        // Where Prometheus and Kong users look by default.
        .route("/metrics", get(stats))
        .route("/xds", get(xds_status))
        .route("/proxy-cache", axum::routing::delete(purge_all))
        .route("/proxy-cache/{key}", axum::routing::delete(purge_one))
        .with_state(AdminState {
            shared,
            xds,
            resources,
        })
}

/// Paths a load balancer or kubelet probes without credentials; they say
/// only whether the proxy is up.
const PROBES: [&str; 2] = ["/ready", "/healthz"];

/// Wraps the admin router so that every request but the probes carries
/// `Authorization: Bearer <token>`; 401 otherwise.
pub fn require_token(router: Router, token: String) -> Router {
    let token: Arc<[u8]> = Arc::from(token.into_bytes());
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let given = req
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
                let ok = PROBES.contains(&req.uri().path())
                    || given.is_some_and(|g| same_secret(g, &token));
                if ok {
                    next.run(req).await
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                        axum::Json(json!({"message": "Unauthorized"})),
                    )
                        .into_response()
                }
            }
        },
    ))
}

/// Compares without an early exit, so the time taken says nothing about
/// how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

async fn ready(State(s): State<AdminState>) -> Response {
    if s.shared.ready.load(Ordering::Acquire) {
        "LIVE\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n").into_response()
    }
}

async fn stats(State(s): State<AdminState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        {
            let mut out = s.shared.stats.encode();
            let connected = (s.xds)()["connected"].is_string();
            super::kong_metrics::encode(&s.shared, connected, &mut out);
            crate::plugins::log::queue::QUEUES.encode(&mut out);
            out
        },
    )
        .into_response()
}

/// Kong's `DELETE /proxy-cache`: every cached response of this proxy.
async fn purge_all(State(s): State<AdminState>) -> Response {
    let n = s.shared.plugins.cache.purge_all();
    tracing::info!(entries = n, "proxy-cache purged");
    StatusCode::NO_CONTENT.into_response()
}

/// Kong's `DELETE /proxy-cache/{cache_key}`: 204, or 404 if not cached.
async fn purge_one(
    State(s): State<AdminState>,
    axum::extract::Path(key): axum::extract::Path<String>,
) -> Response {
    if s.shared.plugins.cache.purge(&key) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Not found"})),
        )
            .into_response()
    }
}

async fn xds_status(State(s): State<AdminState>) -> Response {
    axum::Json((s.xds)()).into_response()
}

/// `/config_dump`: the resources the proxy runs, in Envoy's layout
/// ([`config_dump`](super::config_dump)), rendered off the async workers.
async fn config_dump(
    State(s): State<AdminState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let name_regex = match q.get("name_regex").filter(|r| !r.is_empty()) {
        Some(r) => match regex::Regex::new(r) {
            Ok(re) => Some(re),
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("name_regex: not a regular expression: {e}\n"),
                )
                    .into_response();
            }
        },
        None => None,
    };
    if q.contains_key("mask") {
        return (
            StatusCode::BAD_REQUEST,
            "mask: field masks are not supported by gantry-proxy; use resource and name_regex\n",
        )
            .into_response();
    }
    let query = super::config_dump::Query {
        include_eds: q.contains_key("include_eds"),
        resource: q.get("resource").filter(|r| !r.is_empty()).cloned(),
        name_regex,
    };
    let held = s.resources.snapshot();
    let rendered = tokio::task::spawn_blocking(move || {
        let out = super::config_dump::render(held, &query);
        // Rendering decodes every resource once; give that memory back.
        crate::memory::release_freed_memory();
        out
    })
    .await;
    match rendered {
        Ok(Ok(v)) => ([(CONTENT_TYPE, "application/json")], v).into_response(),
        Ok(Err(e @ super::config_dump::DumpError::UnknownResource(_))) => {
            (StatusCode::NOT_FOUND, format!("{e}\n")).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the config dump could not be rendered\n",
        )
            .into_response(),
    }
}

/// `/clusters`: endpoints and their state; Envoy's text lines by
/// default, JSON with `?format=json`.
async fn clusters(
    State(s): State<AdminState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let rt = s.shared.current();
    let mut names: Vec<&String> = rt.clusters.keys().collect();
    names.sort();
    if q.get("format").map(String::as_str) == Some("json") {
        let statuses: Vec<Value> = names
            .iter()
            .map(|n| {
                let c = &rt.clusters[*n];
                let hosts: Vec<Value> = c
                    .endpoints
                    .iter()
                    .map(|e| json!({
                        "address": e.authority.as_str(),
                        "weight": e.weight,
                        "health_status": if e.healthy.load(Ordering::Relaxed) { "HEALTHY" } else { "UNHEALTHY" },
                        "active_requests": e.active.load(Ordering::Relaxed),
                    }))
                    .collect();
                json!({ "name": n, "host_statuses": hosts })
            })
            .collect();
        return axum::Json(json!({ "cluster_statuses": statuses })).into_response();
    }
    let mut out = String::new();
    for n in names {
        for e in &rt.clusters[n].endpoints {
            let a = e.authority.as_str();
            let health = if e.healthy.load(Ordering::Relaxed) {
                "healthy"
            } else {
                "/failed_active_hc"
            };
            out.push_str(&format!(
                "{n}::{a}::weight::{}\n{n}::{a}::health_flags::{health}\n",
                e.weight
            ));
            out.push_str(&format!(
                "{n}::{a}::rq_active::{}\n",
                e.active.load(Ordering::Relaxed)
            ));
        }
    }
    out.into_response()
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3crett", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
        assert!(!same_secret(b"S3cret", b"s3cret"));
    }
}
