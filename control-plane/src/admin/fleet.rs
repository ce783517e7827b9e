//! `GET /fleet` and `GET /fleet/{node}`: which revision every proxy runs,
//! per resource type sent / ACKed / NACKed, across all replicas.

use super::Admin;
use super::error::ApiError;
use crate::translator::Flavour;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

fn snapshot_view(app: &Admin) -> Value {
    match &app.xds {
        Some(x) => {
            let s = x.cache.current();
            json!({ "revision": s.revision, "translation_error": s.error })
        }
        None => Value::Null,
    }
}

/// Adds what the node's flavour cannot enforce of the configured plugins.
fn annotate(app: &Admin, nodes: &mut [Value]) {
    let Some(x) = &app.xds else { return };
    let snaps = x.cache.current();
    for n in nodes {
        let flavour = match n["flavour"].as_str() {
            Some("gantry-proxy") => Flavour::GantryProxy,
            _ => Flavour::Envoy,
        };
        let unenforced = snaps
            .for_flavour(flavour)
            .map(|s| s.unenforced_plugins.clone())
            .unwrap_or_default();
        n["unenforced_plugins"] = json!(unenforced);
    }
}

pub async fn list(State(app): State<Admin>) -> Result<Response, ApiError> {
    let Some(x) = &app.xds else {
        return Ok(Json(json!({ "snapshot": null, "data": [] })).into_response());
    };
    let mut nodes = x.fleet.all(&app.store).await?;
    annotate(&app, &mut nodes);
    Ok(Json(json!({ "snapshot": snapshot_view(&app), "data": nodes })).into_response())
}

pub async fn node(State(app): State<Admin>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let x = app.xds.as_ref().ok_or(ApiError::NotFound)?;
    let mut nodes = x.fleet.all(&app.store).await?;
    annotate(&app, &mut nodes);
    // A node that reconnected may show twice for a moment: newest wins.
    let found = nodes
        .into_iter()
        .filter(|n| n["node_id"].as_str() == Some(id.as_str()))
        .max_by_key(|n| n["connected_since"].as_i64().unwrap_or(0))
        .ok_or(ApiError::NotFound)?;
    Ok(Json(found).into_response())
}
