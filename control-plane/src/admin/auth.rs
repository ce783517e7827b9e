//! Who is calling: the token in `Kong-Admin-Token` (Kong's header) or
//! `Authorization: Bearer`, checked against the bootstrap token and the
//! RBAC users; then whether their roles allow the endpoint at all.
//!
//! With no bootstrap token and no RBAC user, every request is served as
//! `anonymous` (Kong OSS behaviour; `gantry-cp` only allows that on a
//! loopback listener). Once either exists, a request without a valid token
//! is 401.

use super::{Admin, ApiError};
use crate::rbac::perm::Action;
use crate::rbac::store::Rbac;
use crate::rbac::{Principal, token};
use axum::Json;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The admin API's token configuration.
#[derive(Clone, Debug, Default)]
pub struct AdminAuth {
    /// SHA-256 of the bootstrap super-admin token, when one is configured;
    /// the token itself is not kept.
    bootstrap: Option<String>,
    /// Whether the database last said no RBAC user exists: what
    /// `/status` and `/status/ready` go by while it is unreachable (not
    /// known yet counts as "users exist").
    no_users_seen: Arc<AtomicBool>,
}

impl AdminAuth {
    pub fn with_bootstrap(token: &str) -> AdminAuth {
        AdminAuth {
            bootstrap: Some(token::digest(token)),
            no_users_seen: Arc::default(),
        }
    }

    fn is_bootstrap(&self, presented: &str) -> bool {
        self.bootstrap.as_ref().is_some_and(|d| {
            token::constant_time_eq(d.as_bytes(), token::digest(presented).as_bytes())
        })
    }

    pub fn has_bootstrap(&self) -> bool {
        self.bootstrap.is_some()
    }
}

/// The authenticated caller of one request and the path they asked for.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    /// The request path, percent-decoded, as permissions are matched.
    pub path: String,
}

impl Caller {
    /// Refuses everything: what a handler sees if the middleware did not run.
    pub fn nobody() -> Caller {
        Caller {
            principal: Principal {
                name: "anonymous".into(),
                unrestricted: false,
                roles: Vec::new(),
            },
            path: "/".into(),
        }
    }

    pub fn forbidden(&self, action: Action) -> ApiError {
        ApiError::Forbidden(forbidden_message(&self.principal.name, action))
    }
}

fn forbidden_message(user: &str, action: Action) -> String {
    format!(
        "{user}, you do not have permissions to {} this resource",
        action.name()
    )
}

/// The admin state with the request's caller in it: `actor` is who
/// writes, `caller` what they may do.
pub struct Authed(pub Admin);

impl FromRequestParts<Admin> for Authed {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &Admin) -> Result<Self, Self::Rejection> {
        let mut app = state.clone();
        if let Some(c) = parts.extensions.get::<Arc<Caller>>() {
            app.actor = Arc::from(c.principal.name.as_str());
            app.caller = c.clone();
        }
        Ok(Authed(app))
    }
}

fn presented(req: &Request) -> Option<&str> {
    let h = req.headers();
    if let Some(t) = h.get("kong-admin-token").and_then(|v| v.to_str().ok()) {
        return Some(t.trim());
    }
    let auth = h.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "message": "Invalid credentials. Token or User credentials required" })),
    )
        .into_response()
}

/// Routes whose handlers check each entity themselves (tag scopes apply).
fn entity_route(template: &str) -> bool {
    matches!(
        template,
        "/{collection}"
            | "/{collection}/{id}"
            | "/{parent}/{parent_id}/{collection}"
            | "/{parent}/{parent_id}/{collection}/{id}"
    )
}

/// `%2F` and friends decoded, so an encoded path cannot slip past a rule
/// written for its plain form.
fn decode_path(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16);
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn guard(State(app): State<Admin>, mut req: Request, next: Next) -> Response {
    // Tokens are checked against the database: without it, nothing is
    // served but the probes (`/status`, `/status/ready`), which say why.
    let down = app.store.health().is_down();
    if down && !matches!(req.uri().path(), "/status" | "/status/ready") {
        return super::error::unavailable();
    }
    let principal = match presented(&req) {
        Some(t) if app.auth.is_bootstrap(t) => Principal::bootstrap(),
        // A user's token cannot be checked without the database.
        Some(_) if down => return super::error::unavailable(),
        Some(t) => match Rbac::new(&app.store).authenticate(t).await {
            Ok(Some(p)) => p,
            Ok(None) => match auth_required(&app, down).await {
                Ok(false) => Principal::anonymous(),
                Ok(true) => return unauthorized(),
                Err(e) => return e.into_response(),
            },
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => match auth_required(&app, down).await {
            Ok(false) => Principal::anonymous(),
            Ok(true) => return unauthorized(),
            Err(e) => return e.into_response(),
        },
    };
    let path = decode_path(req.uri().path());
    let action = Action::of_method(req.method());
    let on_entities = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| entity_route(m.as_str()));
    if !principal.may_enter(action, &path, on_entities) {
        tracing::debug!(user = %principal.name, action = action.name(), "admin request refused");
        return ApiError::Forbidden(forbidden_message(&principal.name, action)).into_response();
    }
    tracing::debug!(user = %principal.name, "admin request authenticated");
    req.extensions_mut()
        .insert(Arc::new(Caller { principal, path }));
    next.run(req).await
}

/// Whether a token is needed: one is configured, or an RBAC user exists
/// (as last seen, while the database is unreachable; unknown counts as yes).
async fn auth_required(app: &Admin, down: bool) -> Result<bool, ApiError> {
    if app.auth.has_bootstrap() {
        return Ok(true);
    }
    let none_seen = &app.auth.no_users_seen;
    if down {
        return Ok(!none_seen.load(Ordering::Relaxed));
    }
    let some = Rbac::new(&app.store).has_users().await?;
    none_seen.store(!some, Ordering::Relaxed);
    Ok(some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_before_matching() {
        assert_eq!(decode_path("/rb%61c/users"), "/rbac/users");
        assert_eq!(decode_path("/a%2Fb"), "/a/b");
        assert_eq!(decode_path("/bad%zz%4"), "/bad%zz%4");
    }
}
