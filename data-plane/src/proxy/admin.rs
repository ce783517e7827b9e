//! The proxy's admin endpoint (Envoy-like, default 127.0.0.1:9901):
//! `/ready`, `/healthz`, `/config_dump`, `/clusters`, `/stats/prometheus`,
//! and Kong's proxy-cache purge (`DELETE /proxy-cache[/{key}]`).
//!
//! With a token ([`require_token`]), every request but the probes
//! (`/ready`, `/healthz`) needs `Authorization: Bearer <token>`.

use super::runtime::Shared;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
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
}

pub fn router(shared: Arc<Shared>, xds: XdsStatus) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/healthz", get(|| async { "OK" }))
        .route("/config_dump", get(config_dump))
        .route("/clusters", get(clusters))
        .route("/stats/prometheus", get(stats))
        .route("/xds", get(xds_status))
        .route("/proxy-cache", axum::routing::delete(purge_all))
        .route("/proxy-cache/{key}", axum::routing::delete(purge_one))
        .with_state(AdminState { shared, xds })
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
        s.shared.stats.encode(),
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

/// Envoy's `/config_dump` shape: one entry per resource type with each
/// dynamic resource's name and the version it arrived with. Resource
/// bodies are left out: secrets live among them.
async fn config_dump(State(s): State<AdminState>) -> Response {
    let rt = s.shared.current();
    let v = &rt.version;
    let listeners: Vec<Value> = rt
        .compiled
        .listeners
        .iter()
        .map(|l| {
            json!({ "name": l.name, "active_state": { "version_info": v, "listener": {
                "name": l.name,
                "address": { "socket_address": { "address": l.address.ip().to_string(), "port_value": l.address.port() } },
                "route_config_name": l.route_config,
                "tls": l.tls.is_some(),
            } } })
        })
        .collect();
    let clusters: Vec<Value> = rt
        .compiled
        .clusters
        .values()
        .map(|c| json!({ "version_info": v, "cluster": { "name": c.name, "connect_timeout_ms": c.connect_timeout.as_millis() as u64 } }))
        .collect();
    let mut route_tables: Vec<_> = rt.compiled.routes.values().collect();
    route_tables.sort_by(|a, b| a.name.cmp(&b.name));
    let routes: Vec<Value> = route_tables
        .into_iter()
        .map(|r| {
            let vhosts: Vec<Value> =
                r.virtual_hosts.iter().map(|vh| json!({ "name": vh.name, "domains": vh.domains, "routes": vh.routes.len() })).collect();
            json!({ "version_info": v, "route_config": { "name": r.name, "virtual_hosts": vhosts } })
        })
        .collect();
    let endpoints: Vec<Value> = rt
        .endpoint_names
        .iter()
        .map(|n| json!({ "version_info": v, "endpoint_config": { "cluster_name": n } }))
        .collect();
    let secrets: Vec<Value> = rt
        .secret_names
        .iter()
        .map(|n| json!({ "name": n, "version_info": v }))
        .collect();
    axum::Json(json!({ "configs": [
        { "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "version_info": v, "dynamic_listeners": listeners },
        { "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "version_info": v, "dynamic_active_clusters": clusters },
        { "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamic_route_configs": routes },
        { "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump", "dynamic_endpoint_configs": endpoints },
        { "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump", "dynamic_active_secrets": secrets },
    ] }))
    .into_response()
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
