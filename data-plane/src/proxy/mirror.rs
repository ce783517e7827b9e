//! Request mirroring (Envoy's `request_mirror_policies`): a sampled copy
//! of the request goes to another cluster, fire and forget; its answer is
//! read and dropped and never delays or changes the real response.
//!
//! A streamed body is copied as it flows (`crate::body::Tee`).

use super::lb::ClusterState;
use crate::body::Body;
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;

/// Envoy's shadow host: `-shadow` appended to the host, before any port.
pub fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            format!("{h}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    }
}

/// Sends `req` (already addressed to an endpoint of `cluster`) and
/// drains the answer, bounded by `timeout`.
pub fn spawn(cluster: Arc<ClusterState>, req: Request<Body>, timeout: Option<Duration>) {
    tokio::spawn(async move {
        let sent = async {
            match cluster.client.request(req).await {
                Ok(resp) => {
                    let _ = resp.into_body().collect().await;
                }
                Err(e) => tracing::debug!(cluster = %cluster.name, error = %e, "mirror failed"),
            }
        };
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, sent).await;
            }
            None => sent.await,
        }
    });
}

/// Sets the shadow Host on a mirrored request.
pub fn set_shadow_host(req: &mut Request<Body>, suffix: bool) {
    if !suffix {
        return;
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(shadow_host);
    if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        req.headers_mut().insert(http::header::HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_host_goes_before_the_port() {
        assert_eq!(shadow_host("api.example.com"), "api.example.com-shadow");
        assert_eq!(shadow_host("api:8080"), "api-shadow:8080");
        assert_eq!(shadow_host("[::1]:80"), "[::1]-shadow:80");
    }
}
