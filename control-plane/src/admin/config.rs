//! The configuration as a whole: declarative import and export, dry-run
//! validation, revisions, diff, rollback and the audit trail.

use super::auth::Authed;
use super::body::RawBody;
use super::error::ApiError;
use super::{Admin, Written, encode_offset, paging};
use crate::declarative::{self, DeclarativeError};
use crate::entities::{self, def, redacted};
use crate::store::Stored;
use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;

impl From<DeclarativeError> for ApiError {
    fn from(e: DeclarativeError) -> Self {
        match e {
            DeclarativeError::Parse(m) => ApiError::bad_request(m),
            DeclarativeError::Invalid(fields) => ApiError::Declarative {
                message: format!(
                    "declarative config is invalid: {}",
                    crate::schema::summarize(&fields)
                ),
                fields: Value::Object(fields),
            },
            DeclarativeError::Entity {
                collection,
                entity,
                source,
            } => ApiError::Entity(source).in_entity(collection, &entity),
            DeclarativeError::Store(s) => ApiError::Store(s),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

fn entities_of(stored: Vec<Stored>) -> Vec<(&'static entities::EntityDef, Value)> {
    stored
        .into_iter()
        .filter_map(|s| def(&s.kind).map(|d| (d, s.data)))
        .collect()
}

/// Desired entities in dependency order, whatever order they came in.
fn in_dependency_order(
    mut v: Vec<(&'static entities::EntityDef, Value)>,
) -> Vec<(&'static entities::EntityDef, Value)> {
    v.sort_by_key(|(d, _)| {
        entities::ALL
            .iter()
            .position(|x| x.name == d.name)
            .unwrap_or(usize::MAX)
    });
    v
}

/// A whole document is admitted whole (see `crate::admission`).
async fn admit_all(tx: &mut crate::store::WriteTx, app: &Admin) -> Result<(), ApiError> {
    crate::admission::check_all(tx, &app.proxy)
        .await
        .map_err(|e| match e {
            crate::admission::AdmissionError::Store(s) => ApiError::Store(s),
            refused => ApiError::Declarative {
                message: format!("declarative config is invalid: {refused}"),
                fields: Value::Object(refused.fields()),
            },
        })
}

/// `GET /config`: the current configuration as a Kong 3.0 document,
/// secrets sealed. `Accept: application/yaml` gives the YAML itself;
/// otherwise Kong's `{"config": "<yaml>"}` wrapper.
pub async fn export(
    Authed(app): Authed,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let doc = declarative::export(&app.store.all_current().await?, &app.sealer);
    render_doc(&doc, &headers)
}

fn render_doc(doc: &Value, headers: &axum::http::HeaderMap) -> Result<Response, ApiError> {
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains("json") && !accept.contains("yaml") {
        return Ok(Json(doc.clone()).into_response());
    }
    let yaml = serde_yaml_ng::to_string(doc)
        .map_err(|e| ApiError::bad_request(format!("cannot render YAML: {e}")))?;
    if accept.contains("yaml") {
        return Ok(([(CONTENT_TYPE, "application/yaml")], yaml).into_response());
    }
    Ok(Json(json!({ "config": yaml })).into_response())
}

/// `POST /config`: replaces the whole configuration as one revision.
/// Parses and flattens a document on a blocking thread, one document at a
/// time: a large or hostile one does not hold up the admin API's other
/// requests (`/status` stays quick while two 10 MiB documents parse).
async fn read_document(
    app: &Admin,
    body: RawBody,
) -> Result<Vec<(&'static entities::EntityDef, Value)>, ApiError> {
    let _turn = app
        .documents
        .acquire()
        .await
        .map_err(|_| ApiError::bad_request("the admin API is stopping"))?;
    let sealer = app.sealer.clone();
    tokio::task::spawn_blocking(move || {
        let doc = declarative::parse_document(&body.bytes)?;
        declarative::flatten(&doc, &sealer)
    })
    .await
    .map_err(|e| ApiError::bad_request(format!("the document could not be read: {e}")))?
    .map_err(ApiError::from)
}

pub async fn import(Authed(app): Authed, body: RawBody) -> Result<Response, ApiError> {
    let desired = read_document(&app, body).await?;
    let mut tx = app.store.begin_write(&app.actor).await?;
    let changes = declarative::replace(&mut tx, desired).await?;
    admit_all(&mut tx, &app).await?;
    let c = tx
        .commit("config", &format!("declarative config: {changes} changes"))
        .await?;
    Ok(Written(
        StatusCode::CREATED,
        c.revision,
        json!({ "revision": c.revision, "changes": changes }),
    )
    .into_response())
}

/// `POST /config/validate`: everything `POST /config` checks, nothing stored.
pub async fn validate(Authed(app): Authed, body: RawBody) -> Result<Response, ApiError> {
    let desired = read_document(&app, body).await?;
    let mut tx = app.store.begin_write(&app.actor).await?;
    let changes = declarative::replace(&mut tx, desired).await?;
    admit_all(&mut tx, &app).await?;
    drop(tx); // rolled back: a dry run
    Ok(Json(json!({ "valid": true, "changes": changes })).into_response())
}

/// `POST /config/rollback {"revision": n}`: makes revision n current
/// again, recorded as a new revision.
pub async fn rollback(Authed(app): Authed, body: super::body::Body) -> Result<Response, ApiError> {
    let target = match &body.value["revision"] {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= crate::schema::INT_MAX as f64)
                .map(|f| f as i64)
        }),
        // A form body is all strings.
        Value::String(s) if body.mode == crate::schema::Input::Form => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::Schema(crate::schema::field_error(
            "revision",
            "expected an integer",
        ))
    })?;
    if app.store.revision(target).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let desired = in_dependency_order(entities_of(app.store.state_at(Some(target)).await?));
    let mut tx = app.store.begin_write(&app.actor).await?;
    let changes = declarative::replace(&mut tx, desired).await?;
    admit_all(&mut tx, &app).await?;
    let c = tx
        .commit(
            "rollback",
            &format!("rollback to revision {target}: {changes} changes"),
        )
        .await?;
    Ok(Written(
        StatusCode::OK,
        c.revision,
        json!({ "revision": c.revision, "rolled_back_to": target, "changes": changes }),
    )
    .into_response())
}

pub async fn revisions(
    Authed(app): Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (before, size) = newest_first(&q)?;
    let rows = app.store.revisions(before, size + 1).await?;
    Ok(page(rows, size, |r| r.revision, "/config/revisions"))
}

/// Paging for lists newest first: the offset is the last number shown.
fn newest_first(q: &HashMap<String, String>) -> Result<(Option<i64>, usize), ApiError> {
    let p = paging(q)?;
    let before = p
        .after
        .map(|a| {
            a.parse::<i64>()
                .map_err(|_| ApiError::bad_request("invalid offset"))
        })
        .transpose()?;
    Ok((before, p.size))
}

/// Kong's page shape from `size + 1` rows: the extra row says there is more.
fn page<T: serde::Serialize>(
    mut rows: Vec<T>,
    size: usize,
    number: impl Fn(&T) -> i64,
    base: &str,
) -> Response {
    let more = rows.len() > size;
    rows.truncate(size);
    let offset = more
        .then(|| rows.last().map(|r| encode_offset(&number(r).to_string())))
        .flatten();
    let sized = if size == super::DEFAULT_PAGE {
        String::new()
    } else {
        format!("&size={size}")
    };
    let next = offset.as_ref().map(|o| format!("{base}?offset={o}{sized}"));
    Json(json!({ "data": rows, "next": next, "offset": offset })).into_response()
}

/// `GET /config/revisions/{n}`: the revision and the whole config at it.
pub async fn revision(
    Authed(app): Authed,
    Path(rev): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let rev: i64 = rev.parse().map_err(|_| ApiError::NotFound)?;
    let meta = app.store.revision(rev).await?.ok_or(ApiError::NotFound)?;
    let doc = declarative::export(&app.store.state_at(Some(rev)).await?, &app.sealer);
    if headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("yaml"))
    {
        return render_doc(&doc, &headers);
    }
    let mut body = serde_json::to_value(meta).unwrap_or_default();
    body["config"] = doc;
    Ok(Json(body).into_response())
}

/// `GET /config/diff?from=&to=`: what changed between two revisions;
/// `to` defaults to the current revision and `from` to the one before it.
pub async fn diff(
    Authed(app): Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let num = |k: &str| -> Result<Option<i64>, ApiError> {
        q.get(k)
            .map(|s| {
                s.parse::<i64>().map_err(|_| {
                    ApiError::Schema(crate::schema::field_error(k, "expected an integer"))
                })
            })
            .transpose()
    };
    let to = match num("to")? {
        Some(t) => t,
        None => app.store.current_revision().await?,
    };
    let from = num("from")?.unwrap_or((to - 1).max(0));
    // A revision that does not exist is not found, as for
    // `/config/revisions/{n}` and `/config/rollback`.
    for r in [from, to] {
        if app.store.revision(r).await?.is_none() {
            return Err(ApiError::NotFound);
        }
    }
    let changes: Vec<Value> = app
        .store
        .diff(from, to)
        .await?
        .into_iter()
        .map(|(kind, id, before, after)| {
            let d = def(&kind);
            let show = |v: Option<Value>| v.map(|v| d.map(|d| redacted(d, &v)).unwrap_or(Value::Null));
            let op = match (&before, &after) {
                (None, Some(_)) => "create",
                (Some(_), None) => "delete",
                _ => "update",
            };
            json!({ "entity_type": kind, "entity_id": id, "operation": op, "before": show(before), "after": show(after) })
        })
        .collect();
    Ok(Json(json!({ "from": from, "to": to, "changes": changes })).into_response())
}

/// `GET /audit`: every change, newest first, secrets redacted.
pub async fn audit(
    Authed(app): Authed,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (before, size) = newest_first(&q)?;
    let rows = app.store.audit(before, size + 1).await?;
    Ok(page(rows, size, |r| r.id, "/audit"))
}
