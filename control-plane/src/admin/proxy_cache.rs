//! Kong's proxy-cache purge, `DELETE /proxy-cache[/{cache_key}]`, fanned
//! out to every connected gantry-proxy: each keeps its cache in its own
//! memory, so the control plane asks each one's admin endpoint (advertised
//! in its xDS node metadata) and answers for the fleet.

use super::Admin;
use super::error::ApiError;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::time::Duration;

/// How long one proxy may take to answer a purge.
const PER_PROXY: Duration = Duration::from_secs(3);

/// What one proxy said.
enum Outcome {
    Purged,
    NotCached,
    Failed(String),
}

/// Every connected gantry-proxy with an admin endpoint: (node id, address).
async fn targets(app: &Admin) -> Result<Vec<(String, String)>, ApiError> {
    let Some(x) = &app.xds else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(String, String)> = x
        .fleet
        .all(&app.store)
        .await?
        .iter()
        .filter(|n| n["flavour"] == "gantry-proxy")
        .filter_map(|n| {
            Some((
                n["node_id"].as_str()?.to_string(),
                n["admin_address"].as_str()?.to_string(),
            ))
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

async fn purge(
    client: &reqwest::Client,
    address: &str,
    path: &str,
    token: Option<&str>,
) -> Outcome {
    let base = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let mut req = client.delete(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => Outcome::Purged,
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Outcome::NotCached,
        Ok(r) => Outcome::Failed(format!("answered {}", r.status())),
        Err(e) => Outcome::Failed(if e.is_timeout() {
            format!("no answer within {PER_PROXY:?}")
        } else if e.is_connect() {
            "could not connect".to_string()
        } else {
            e.to_string()
        }),
    }
}

/// Asks every proxy at once; `Ok(any purged)` when all answered.
async fn fan_out(app: &Admin, path: &str) -> Result<Result<bool, Response>, ApiError> {
    let targets = targets(app).await?;
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(PER_PROXY)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            let body = json!({"message": format!("the purge could not start: {e}")});
            return Ok(Err((StatusCode::BAD_GATEWAY, Json(body)).into_response()));
        }
    };
    let answers = futures::future::join_all(
        targets
            .iter()
            .map(|(_, addr)| purge(&client, addr, path, app.proxy_admin_token.as_deref())),
    )
    .await;
    let mut any = false;
    let mut failed = Vec::new();
    for ((node, address), o) in targets.iter().zip(answers) {
        match o {
            Outcome::Purged => any = true,
            Outcome::NotCached => {}
            Outcome::Failed(e) => {
                tracing::warn!(node = %node, admin = %address, error = %e, "proxy-cache purge did not reach a proxy");
                failed.push(json!({"node_id": node, "admin_address": address, "error": e}));
            }
        }
    }
    if failed.is_empty() {
        return Ok(Ok(any));
    }
    // Not Kong's: a purge that missed a proxy must not look done.
    let body: Value = json!({
        "message": "the purge did not reach every proxy",
        "unreachable": failed,
    });
    Ok(Err((StatusCode::BAD_GATEWAY, Json(body)).into_response()))
}

/// `DELETE /proxy-cache`: every cached response on every proxy; 204.
pub async fn purge_all(State(app): State<Admin>) -> Result<Response, ApiError> {
    Ok(match fan_out(&app, "/proxy-cache").await? {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    })
}

/// `DELETE /proxy-cache/{cache_key}`: 204 when some proxy held it, else
/// Kong's 404.
pub async fn purge_key(
    State(app): State<Admin>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    // Cache keys are hex digests; anything else cannot be one.
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::NotFound);
    }
    Ok(match fan_out(&app, &format!("/proxy-cache/{key}")).await? {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => ApiError::NotFound.into_response(),
        Err(r) => r,
    })
}
