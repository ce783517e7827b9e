//! Requests a browser was tricked into sending. The admin API listens on
//! loopback by default, which a web page cannot reach directly but can
//! through the visitor's browser:
//!
//! - **DNS rebinding**: a page on `evil.example` re-points its name at
//!   127.0.0.1 and reads the admin API as same-origin. Its requests carry
//!   `Host: evil.example`, so only the names the admin API is known by are
//!   served: loopback names when it listens on loopback, plus what the
//!   operator lists (`--admin-allowed-hosts`).
//! - **Cross-site writes** (CSRF): a form on any site can POST to
//!   `http://127.0.0.1:8001/plugins`. Browsers say where such a request
//!   comes from (`Origin`, `Sec-Fetch-Site`); a write from another origin
//!   is refused unless the operator lists it (`--admin-allowed-origins`).
//!
//! Clients that are not browsers (curl, decK, scripts) send neither header
//! and are unaffected.

use super::Admin;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};

/// Which `Host` and `Origin` values the admin API serves.
#[derive(Clone, Debug, Default)]
pub struct CrossSite {
    /// Extra host names (without port); `*` accepts any.
    pub hosts: Vec<String>,
    /// Extra origins (`https://admin.example.com`); `*` accepts any.
    pub origins: Vec<String>,
    /// Whether the admin API listens on loopback only: then only loopback
    /// names are its own.
    pub loopback: bool,
    /// The address it listens on, also a name it is known by.
    pub listen: Option<IpAddr>,
}

impl CrossSite {
    pub fn new(listen: SocketAddr, hosts: Vec<String>, origins: Vec<String>) -> CrossSite {
        CrossSite {
            hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            origins: origins
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            loopback: listen.ip().is_loopback(),
            listen: Some(listen.ip()).filter(|ip| !ip.is_unspecified()),
        }
    }

    /// Whether `host` (a `Host` header value, port included) names this
    /// admin API.
    fn host_ok(&self, host: &str) -> bool {
        let name = host_name(host);
        if self.hosts.iter().any(|h| h == "*" || *h == name) {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip.is_loopback() || Some(ip) == self.listen || !self.loopback;
        }
        let loopback_name = name == "localhost" || name.ends_with(".localhost");
        // Listening beyond loopback, any name may lead here (that is an
        // operator's DNS); on loopback only loopback names do.
        loopback_name || !self.loopback
    }

    /// Whether a write from `origin` may proceed, given the request's host.
    fn origin_ok(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.origins.iter().any(|o| o == "*" || *o == origin) {
            return true;
        }
        // Same origin: the page was served by this admin API itself.
        match (origin.split_once("://"), host) {
            (Some((_, authority)), Some(h)) => authority == h.to_ascii_lowercase(),
            _ => false,
        }
    }
}

/// The name part of a `Host` value: `[::1]:8001` → `::1`, `a:80` → `a`.
fn host_name(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => h,
    }
}

fn refuse(message: String) -> Response {
    (StatusCode::FORBIDDEN, Json(json!({ "message": message }))).into_response()
}

pub async fn guard(State(app): State<Admin>, req: Request, next: Next) -> Response {
    let cs = &app.cross_site;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if let Some(h) = host
        && !cs.host_ok(h)
    {
        return refuse(format!(
            "Host '{}' is not a name of this admin API (see --admin-allowed-hosts)",
            host_name(h)
        ));
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let fetch_site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok());
        let cross = match origin {
            // `Origin: null` (sandboxed frames, file: pages) is never ours.
            Some(o) => !cs.origin_ok(o, host),
            None => fetch_site == Some("cross-site"),
        };
        if cross {
            return refuse(format!(
                "cross-site request refused (Origin {}; see --admin-allowed-origins)",
                origin.unwrap_or("absent, Sec-Fetch-Site: cross-site")
            ));
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> CrossSite {
        CrossSite::new("127.0.0.1:8001".parse().unwrap(), Vec::new(), Vec::new())
    }

    #[test]
    fn loopback_admin_serves_loopback_names_only() {
        let cs = loopback();
        for ok in [
            "localhost:8001",
            "127.0.0.1:8001",
            "127.0.0.1",
            "[::1]:8001",
            "app.localhost",
        ] {
            assert!(cs.host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8001",
            "10.0.0.1:8001",
            "localhost.evil.example",
        ] {
            assert!(!cs.host_ok(bad), "{bad}");
        }
        let cs = CrossSite::new(
            "127.0.0.1:8001".parse().unwrap(),
            vec!["Admin.Internal".into()],
            Vec::new(),
        );
        assert!(cs.host_ok("admin.internal:8001"));
        let wide = CrossSite::new("0.0.0.0:8001".parse().unwrap(), Vec::new(), Vec::new());
        assert!(wide.host_ok("gateway-admin.corp:8001"));
    }

    #[test]
    fn writes_from_other_origins_are_refused() {
        let cs = loopback();
        assert!(cs.origin_ok("http://127.0.0.1:8001", Some("127.0.0.1:8001")));
        assert!(!cs.origin_ok("http://evil.example", Some("127.0.0.1:8001")));
        assert!(!cs.origin_ok("null", Some("127.0.0.1:8001")));
        assert!(!cs.origin_ok("http://localhost:8002", Some("localhost:8001")));
        let cs = CrossSite::new(
            "127.0.0.1:8001".parse().unwrap(),
            Vec::new(),
            vec!["https://admin-ui.example/".into()],
        );
        assert!(cs.origin_ok("https://admin-ui.example", Some("127.0.0.1:8001")));
    }
}
