//! Upstream HTTP clients: pooled keep-alive connections per endpoint,
//! HTTP/1.1 or HTTP/2 per cluster, plain or TLS, with the cluster's connect
//! timeout. A client lives in the cluster's long-lived state, so its pool
//! survives config swaps.

mod settings;
mod tls;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::sign::CertifiedKey;
pub use settings::{SanMatch, UpstreamTls, UpstreamVerify};
use std::sync::Arc;
use std::time::Duration;
pub use tls::{TlsConnector, TlsSettings};

pub use crate::body::{Body, BoxError};

#[derive(Clone)]
enum Kind {
    Plain(Client<HttpConnector, Body>),
    Tls(Client<TlsConnector, Body>),
}

#[derive(Clone)]
pub struct UpstreamClient {
    kind: Kind,
    pub connect_timeout: Duration,
    pub http2: bool,
    /// What the TLS settings were built from (None: plain), so a swap that
    /// keeps them keeps the pool.
    pub tls_key: Option<String>,
}

/// The identity of a cluster's TLS settings and client certificate (by
/// its chain, so a rotated certificate gets new connections).
pub fn tls_key(tls: Option<&UpstreamTls>, client_cert: Option<&CertifiedKey>) -> Option<String> {
    use std::hash::{Hash, Hasher};
    tls.map(|t| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{t:?}").hash(&mut h);
        if let Some(ck) = client_cert {
            for c in &ck.cert {
                c.as_ref().hash(&mut h);
            }
        }
        format!("{:016x}", h.finish())
    })
}

impl UpstreamClient {
    pub fn new(
        connect_timeout: Duration,
        http2: bool,
        tls: Option<&UpstreamTls>,
        client_cert: Option<Arc<CertifiedKey>>,
    ) -> Self {
        let key = tls_key(tls, client_cert.as_deref());
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let mut b = Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(usize::MAX)
            .http2_only(http2);
        if http2 {
            b.http2_keep_alive_interval(Duration::from_secs(30))
                .http2_keep_alive_timeout(Duration::from_secs(10));
        }
        let kind = match tls {
            None => {
                connector.enforce_http(true);
                Kind::Plain(b.build(connector))
            }
            Some(t) => {
                connector.enforce_http(false);
                let alpn = if !t.alpn.is_empty() {
                    t.alpn.clone()
                } else if http2 {
                    vec![b"h2".to_vec()]
                } else {
                    vec![b"http/1.1".to_vec()]
                };
                let settings = TlsSettings {
                    sni: t.sni.as_deref(),
                    alpn,
                    verify: t.verify.as_ref(),
                    auto_san_validation: t.auto_san_validation,
                    client_cert,
                };
                match TlsConnector::new(connector.clone(), settings) {
                    Ok(c) => Kind::Tls(b.build(c)),
                    Err(e) => {
                        // Only an unusable SNI gets here; the compiler
                        // checked it, so fall back loudly rather than panic.
                        tracing::error!(error = %e, "upstream TLS settings unusable; using plain HTTP");
                        connector.enforce_http(true);
                        Kind::Plain(b.build(connector))
                    }
                }
            }
        };
        UpstreamClient {
            kind,
            connect_timeout,
            http2,
            tls_key: key,
        }
    }

    pub fn scheme(&self) -> http::uri::Scheme {
        match self.kind {
            Kind::Plain(_) => http::uri::Scheme::HTTP,
            Kind::Tls(_) => http::uri::Scheme::HTTPS,
        }
    }

    pub fn request(&self, req: http::Request<Body>) -> ResponseFuture {
        match &self.kind {
            Kind::Plain(c) => c.request(req),
            Kind::Tls(c) => c.request(req),
        }
    }
}
