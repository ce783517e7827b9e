//! The Kong-shaped admin API (axum): entities, declarative config,
//! revisions, audit, status and the OpenAPI document.

pub mod auth;
mod body;
mod config;
pub mod cross_site;
mod crud;
mod error;
mod fleet;
mod info;
pub mod openapi;
mod proxy_cache;
mod rbac;
pub mod tls;

pub use error::ApiError;

use crate::seal::Sealer;
use crate::store::Store;
use axum::Json;
use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use base64::Engine;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Shared state of the admin API.
#[derive(Clone)]
pub struct Admin {
    pub store: Store,
    /// The xDS side, when this process serves it.
    pub xds: Option<XdsHandles>,
    pub sealer: Arc<Sealer>,
    /// Who writes: the authenticated caller's name (`auth.rs` sets it per
    /// request), named in audit rows and revisions.
    pub actor: Arc<str>,
    /// The request's caller and what they may do (per request, as `actor`).
    pub caller: Arc<auth::Caller>,
    /// Which tokens the admin API accepts besides RBAC users'.
    pub auth: Arc<auth::AdminAuth>,
    pub listen: Arc<str>,
    /// What the proxies are told about their listeners; writes are
    /// admitted against it (see `crate::admission`).
    pub proxy: Arc<crate::translator::ProxyOptions>,
    /// Declarative documents are read one at a time (see `config.rs`).
    pub documents: Arc<tokio::sync::Semaphore>,
    /// Which Host and Origin values are served (`cross_site.rs`).
    pub cross_site: Arc<cross_site::CrossSite>,
    /// Bearer token for the proxies' admin endpoints (the proxy-cache
    /// purge fan-out), `--proxy-admin-token`.
    pub proxy_admin_token: Option<Arc<str>>,
}

/// What the admin API shows of the xDS server.
#[derive(Clone)]
pub struct XdsHandles {
    pub cache: crate::xds::SnapshotCache,
    pub fleet: Arc<crate::xds::Fleet>,
}

impl Admin {
    pub fn new(store: Store, sealer: Sealer, listen: impl Into<Arc<str>>) -> Self {
        let listen: Arc<str> = listen.into();
        let addr = listen
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 8001)));
        Admin {
            store,
            xds: None,
            sealer: Arc::new(sealer),
            actor: Arc::from("anonymous"),
            caller: Arc::new(auth::Caller::nobody()),
            auth: Arc::default(),
            listen,
            proxy: Arc::default(),
            documents: Arc::new(tokio::sync::Semaphore::new(1)),
            cross_site: Arc::new(cross_site::CrossSite::new(addr, Vec::new(), Vec::new())),
            proxy_admin_token: None,
        }
    }

    pub fn with_proxy_admin_token(mut self, token: Option<String>) -> Self {
        self.proxy_admin_token = token.map(Arc::from);
        self
    }

    pub fn with_cross_site(mut self, cs: cross_site::CrossSite) -> Self {
        self.cross_site = Arc::new(cs);
        self
    }

    /// Requires `token` (the bootstrap super-admin) on every request.
    pub fn with_admin_token(mut self, token: &str) -> Self {
        self.auth = Arc::new(auth::AdminAuth::with_bootstrap(token));
        self
    }

    pub fn with_proxy_options(mut self, opts: crate::translator::ProxyOptions) -> Self {
        self.proxy = Arc::new(opts);
        self
    }

    pub fn with_xds(
        mut self,
        cache: crate::xds::SnapshotCache,
        fleet: Arc<crate::xds::Fleet>,
    ) -> Self {
        self.xds = Some(XdsHandles { cache, fleet });
        self
    }
}

/// A write's response: status, the revision it committed, the body.
pub struct Written(pub StatusCode, pub i64, pub Value);

impl IntoResponse for Written {
    fn into_response(self) -> Response {
        let mut resp = if self.0 == StatusCode::NO_CONTENT {
            self.0.into_response()
        } else {
            (self.0, Json(self.2)).into_response()
        };
        if let Ok(v) = HeaderValue::from_str(&self.1.to_string()) {
            resp.headers_mut().insert("x-gantry-revision", v);
        }
        resp
    }
}

pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

pub struct Paging {
    pub size: usize,
    pub after: Option<String>,
}

/// Reads Kong's `size` and opaque `offset` query parameters.
pub fn paging(q: &HashMap<String, String>) -> Result<Paging, ApiError> {
    let size = match q.get("size") {
        None => DEFAULT_PAGE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "size must be an integer between 1 and {MAX_PAGE}"
                )));
            }
        },
    };
    let after = match q.get("offset") {
        None => None,
        Some(o) => Some(
            decode_offset(o)
                .ok_or_else(|| ApiError::bad_request(format!("'{o}' is not a valid offset")))?,
        ),
    };
    Ok(Paging { size, after })
}

pub fn encode_offset(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// An offset is opaque: any base64url text decodes to where a page starts
/// (bytes that are not UTF-8, or NUL, which no id holds, are replaced).
pub fn decode_offset(s: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).replace('\0', "\u{fffd}"))
}

/// The router table: each path with the methods it serves. The OpenAPI
/// document is generated from the same table, so the two cannot drift.
pub struct Table {
    router: Router<Admin>,
    pub paths: Vec<(&'static str, &'static [&'static str])>,
}

impl Table {
    fn new() -> Self {
        Table {
            router: Router::new(),
            paths: Vec::new(),
        }
    }
    fn add(
        mut self,
        path: &'static str,
        methods: &'static [&'static str],
        mr: MethodRouter<Admin>,
    ) -> Self {
        self.router = self.router.route(path, mr);
        self.paths.push((path, methods));
        self
    }
}

/// Every admin route.
pub fn table() -> Table {
    Table::new()
        .add("/", &["GET"], get(info::root))
        .add("/status", &["GET"], get(info::status))
        .add("/status/ready", &["GET"], get(info::ready))
        .add("/metrics", &["GET"], get(info::metrics))
        .add("/openapi.json", &["GET"], get(openapi::serve))
        .add(
            "/config",
            &["GET", "POST"],
            get(config::export).post(config::import),
        )
        .add("/config/validate", &["POST"], post(config::validate))
        .add("/config/revisions", &["GET"], get(config::revisions))
        .add("/config/revisions/{rev}", &["GET"], get(config::revision))
        .add("/config/diff", &["GET"], get(config::diff))
        .add("/config/rollback", &["POST"], post(config::rollback))
        .add("/audit", &["GET"], get(config::audit))
        .add("/tags/{tag}", &["GET"], get(crud::by_tag))
        .add(
            "/rbac/users",
            &["GET", "POST"],
            get(rbac::list_users).post(rbac::create_user),
        )
        .add(
            "/rbac/users/{user}",
            &["GET", "PATCH", "DELETE"],
            get(rbac::get_user)
                .patch(rbac::update_user)
                .delete(rbac::delete_user),
        )
        .add(
            "/rbac/users/{user}/roles",
            &["GET", "POST", "DELETE"],
            get(rbac::user_roles)
                .post(rbac::add_user_roles)
                .delete(rbac::remove_user_roles),
        )
        .add(
            "/rbac/roles",
            &["GET", "POST"],
            get(rbac::list_roles).post(rbac::create_role),
        )
        .add(
            "/rbac/roles/{role}",
            &["GET", "PATCH", "DELETE"],
            get(rbac::get_role)
                .patch(rbac::update_role)
                .delete(rbac::delete_role),
        )
        .add(
            "/rbac/roles/{role}/endpoints",
            &["GET", "POST"],
            get(rbac::list_endpoints).post(rbac::create_endpoint),
        )
        .add(
            "/rbac/roles/{role}/endpoints/{workspace}/{endpoint}",
            &["GET", "PATCH", "DELETE"],
            get(rbac::get_endpoint)
                .patch(rbac::update_endpoint)
                .delete(rbac::delete_endpoint),
        )
        .add(
            "/rbac/roles/{role}/entities",
            &["GET", "POST"],
            get(rbac::list_entities).post(rbac::create_entity),
        )
        .add(
            "/rbac/roles/{role}/entities/{entity_id}",
            &["GET", "PATCH", "DELETE"],
            get(rbac::get_entity)
                .patch(rbac::update_entity)
                .delete(rbac::delete_entity),
        )
        .add("/fleet", &["GET"], get(fleet::list))
        .add("/fleet/{node}", &["GET"], get(fleet::node))
        .add(
            "/proxy-cache",
            &["DELETE"],
            axum::routing::delete(proxy_cache::purge_all),
        )
        .add(
            "/proxy-cache/{key}",
            &["DELETE"],
            axum::routing::delete(proxy_cache::purge_key),
        )
        .add(
            "/{collection}",
            &["GET", "POST"],
            get(crud::list).post(crud::create),
        )
        .add(
            "/{collection}/{id}",
            &["GET", "PUT", "PATCH", "DELETE"],
            get(crud::get)
                .put(crud::put)
                .patch(crud::patch)
                .delete(crud::delete),
        )
        .add(
            "/{parent}/{parent_id}/{collection}",
            &["GET", "POST"],
            get(crud::nested_list).post(crud::nested_create),
        )
        .add(
            "/{parent}/{parent_id}/{collection}/{id}",
            &["GET", "PUT", "PATCH", "DELETE"],
            get(crud::nested_get)
                .put(crud::nested_put)
                .patch(crud::nested_patch)
                .delete(crud::nested_delete),
        )
}

/// Every error answers in Kong's JSON shape, also those axum's extractors
/// give in plain text (a path segment that is not UTF-8, a query that does
/// not parse).
async fn json_errors(resp: Response) -> Response {
    let plain = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_none_or(|ct| !ct.as_bytes().starts_with(b"application/json"));
    let status = resp.status();
    if !plain || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(
        parts,
        axum::body::Body::from(serde_json::json!({ "message": message }).to_string()),
    )
}

pub fn router(app: Admin) -> Router {
    table()
        .router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            cross_site::guard,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    // The route's template, not the path: a path can name
                    // a credential by its key (`/key-auths/{key}`).
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or("(none)", |m| m.as_str());
                    tracing::debug_span!("admin", method = %req.method(), route)
                },
            ),
        )
        .with_state(app)
}
