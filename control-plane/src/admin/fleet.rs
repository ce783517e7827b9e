//! `GET /fleet` and `GET /fleet/{node}`: which revision every proxy runs,
//! per resource type sent / ACKed / NACKed, across all replicas.

use super::Admin;
use super::error::ApiError;
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

pub async fn list(State(app): State<Admin>) -> Result<Response, ApiError> {
    let Some(x) = &app.xds else {
        return Ok(Json(json!({ "snapshot": null, "data": [] })).into_response());
    };
    let nodes = x.fleet.all(&app.store).await?;
    Ok(Json(json!({ "snapshot": snapshot_view(&app), "data": nodes })).into_response())
}

pub async fn node(State(app): State<Admin>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let x = app.xds.as_ref().ok_or(ApiError::NotFound)?;
    let nodes = x.fleet.all(&app.store).await?;
    // A node that reconnected may show twice for a moment: newest wins.
    let found = nodes
        .into_iter()
        .filter(|n| n["node_id"].as_str() == Some(id.as_str()))
        .max_by_key(|n| n["connected_since"].as_i64().unwrap_or(0))
        .ok_or(ApiError::NotFound)?;
    Ok(Json(found).into_response())
}
