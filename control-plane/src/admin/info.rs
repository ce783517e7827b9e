//! `GET /` and `GET /status`: what this control plane is and whether its
//! store answers.

use super::Admin;
use super::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub async fn root(State(app): State<Admin>) -> Result<Response, ApiError> {
    let revision = app.store.current_revision().await?;
    let counts: serde_json::Map<String, serde_json::Value> = app
        .store
        .counts()
        .await?
        .into_iter()
        .map(|(k, n)| (k, json!(n)))
        .collect();
    let plugins: serde_json::Map<String, serde_json::Value> = crate::plugins::names()
        .iter()
        .map(|n| {
            (
                (*n).to_string(),
                json!({ "version": env!("CARGO_PKG_VERSION") }),
            )
        })
        .collect();
    Ok(Json(json!({
        "tagline": "Welcome to Gantry",
        "version": env!("CARGO_PKG_VERSION"),
        "hostname": hostname(),
        "configuration": {
            "database": app.store.backend().name(),
            "admin_listen": [app.listen.as_ref()],
            "revision": revision,
            "entities": counts,
        },
        "plugins": { "available_on_server": plugins },
    }))
    .into_response())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub async fn status(State(app): State<Admin>) -> Response {
    let feed = app.store.feed().current();
    let xds = app.xds.as_ref().map(|x| {
        let s = x.cache.current();
        json!({ "snapshot_revision": s.revision, "translation_error": s.error })
    });
    match app.store.current_revision().await {
        Ok(rev) => Json(json!({
            "database": { "reachable": true, "backend": app.store.backend().name() },
            "configuration_revision": rev,
            "feed": feed,
            "xds": xds,
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "status: store unreachable");
            Json(json!({
                "database": { "reachable": false, "backend": app.store.backend().name() },
                "configuration_revision": null,
                "feed": feed,
                "xds": xds,
            }))
            .into_response()
        }
    }
}

/// Readiness for load balancers and probes: 503 while the store is down.
pub async fn ready(State(app): State<Admin>) -> Response {
    match app.store.ping().await {
        Ok(()) => Json(json!({ "message": "ready" })).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "message": "store unreachable" })),
        )
            .into_response(),
    }
}

/// `GET /metrics`: gantry-cp's metrics in Prometheus' text format
/// (`crate::metrics`).
pub async fn metrics(State(app): State<Admin>) -> Response {
    let text = match &app.xds {
        Some(x) => crate::metrics::METRICS.render(&x.fleet),
        None => crate::metrics::METRICS.render(&crate::xds::Fleet::new(String::new())),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
