//! Errors in Kong's shape: `{"code", "name", "message", "fields"}` for
//! schema and constraint violations, `{"message"}` otherwise.

use crate::entities::EntityError;
use crate::schema::{FieldErrors, summarize};
use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Entity(#[from] EntityError),
    /// An entity error inside a declarative document: which entity failed.
    #[error("{0}: {1}")]
    InEntity(String, EntityError),
    #[error("{message}")]
    BadRequest { message: String },
    #[error("schema violation")]
    Schema(FieldErrors),
    #[error("{message}")]
    Declarative { message: String, fields: Value },
    #[error("Not found")]
    NotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("Request body too large")]
    TooLarge,
    #[error("unsupported content type: {0}")]
    UnsupportedMediaType(String),
    /// Refused by RBAC: Kong's `<user>, you do not have permissions to
    /// <action> this resource`.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::rbac::RbacError> for ApiError {
    fn from(e: crate::rbac::RbacError) -> Self {
        match e {
            crate::rbac::RbacError::Store(s) => ApiError::Store(s),
            crate::rbac::RbacError::Conflict(m) => ApiError::Conflict(m),
            crate::rbac::RbacError::NotFound => ApiError::NotFound,
        }
    }
}

impl From<crate::admission::AdmissionError> for ApiError {
    fn from(e: crate::admission::AdmissionError) -> Self {
        match e {
            crate::admission::AdmissionError::Store(s) => ApiError::Store(s),
            refused => ApiError::Schema(refused.fields()),
        }
    }
}

impl ApiError {
    pub fn bad_request(m: impl Into<String>) -> Self {
        ApiError::BadRequest { message: m.into() }
    }

    /// Names the entity of a declarative document an error belongs to.
    pub fn in_entity(self, collection: &str, entity: &str) -> Self {
        match self {
            ApiError::Entity(e) => ApiError::InEntity(format!("{collection} '{entity}'"), e),
            other => other,
        }
    }
}

fn kong(status: StatusCode, code: i64, name: &str, message: String, fields: Value) -> Response {
    (
        status,
        Json(json!({ "code": code, "name": name, "message": message, "fields": fields })),
    )
        .into_response()
}

fn message(status: StatusCode, m: impl Into<String>) -> Response {
    (status, Json(json!({ "message": m.into() }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Entity(e) => entity_response(e, ""),
            ApiError::InEntity(ctx, e) => entity_response(e, &format!("{ctx}: ")),
            ApiError::Schema(f) => kong(
                StatusCode::BAD_REQUEST,
                2,
                "schema violation",
                summarize(&f),
                Value::Object(f),
            ),
            ApiError::Declarative { message: m, fields } => kong(
                StatusCode::BAD_REQUEST,
                14,
                "invalid declarative configuration",
                m,
                fields,
            ),
            ApiError::BadRequest { message: m } => message(StatusCode::BAD_REQUEST, m),
            ApiError::NotFound => message(StatusCode::NOT_FOUND, "Not found"),
            ApiError::MethodNotAllowed => {
                message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
            }
            ApiError::TooLarge => message(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
            ApiError::UnsupportedMediaType(ct) => message(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Unsupported Content-Type: {ct}"),
            ),
            ApiError::Forbidden(m) => message(StatusCode::FORBIDDEN, m),
            ApiError::Conflict(m) => kong(
                StatusCode::CONFLICT,
                5,
                "unique constraint violation",
                m,
                json!({}),
            ),
            ApiError::Store(s) => store_error(s),
        }
    }
}

fn entity_response(e: EntityError, prefix: &str) -> Response {
    match e {
        EntityError::Schema(f) => kong(
            StatusCode::BAD_REQUEST,
            2,
            "schema violation",
            format!("{prefix}{}", summarize(&f)),
            Value::Object(f),
        ),
        EntityError::Unique(fields) => {
            let m = format!("{prefix}{}", unique_message(&fields));
            kong(
                StatusCode::CONFLICT,
                5,
                "unique constraint violation",
                m,
                fields,
            )
        }
        EntityError::PrimaryKey(id) => {
            let m = format!("{prefix}{}", EntityError::PrimaryKey(id.clone()));
            kong(
                StatusCode::CONFLICT,
                3,
                "primary key violation",
                m,
                json!({ "id": id }),
            )
        }
        ref fk @ EntityError::ForeignKey {
            ref field, ref id, ..
        } => kong(
            StatusCode::BAD_REQUEST,
            4,
            "foreign key violation",
            format!("{prefix}{fk}"),
            json!({ field: { "id": id } }),
        ),
        ref r @ EntityError::Referenced { ref by, .. } => kong(
            StatusCode::BAD_REQUEST,
            4,
            "foreign key violation",
            format!("{prefix}{r}"),
            json!({ "@referenced_by": by }),
        ),
        // Kong's `referenced_by_others` (code 19) carries no fields.
        ref r @ EntityError::StillReferenced { .. } => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "code": 19,
                "name": "referenced by others",
                "message": format!("{prefix}{r}"),
            })),
        )
            .into_response(),
        EntityError::NotFound => message(StatusCode::NOT_FOUND, "Not found"),
        EntityError::Store(s) => store_error(s),
    }
}

/// Kong names the unique fields as `{name="x"}`.
fn unique_message(fields: &Value) -> String {
    let parts: Vec<String> = fields
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}=\"{s}\""),
            Value::Object(o) => format!(
                "{k}={{id=\"{}\"}}",
                o.get("id").and_then(Value::as_str).unwrap_or_default()
            ),
            Value::Null => format!("{k}=null"),
            other => format!("{k}={other}"),
        })
        .collect();
    format!("UNIQUE violation detected on '{{{}}}'", parts.join(","))
}

/// What a request gets while the database is unreachable: 503 with a
/// retry hint, never a 500 (nothing is wrong with the request) and never a
/// hang (see `store::Health`).
pub fn unavailable() -> Response {
    let mut r = message(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database is unreachable: nothing was changed; retry shortly",
    );
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r
}

fn store_error(e: StoreError) -> Response {
    if e.is_unavailable() {
        tracing::warn!(error = %e, "admin request refused: database unreachable");
        return unavailable();
    }
    // The detail goes to the log; the client learns only that the store
    // failed, since driver messages can echo query values.
    tracing::error!(error = %e, "store error");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "An unexpected error occurred",
    )
}
