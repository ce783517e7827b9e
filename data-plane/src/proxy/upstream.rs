//! Upstream HTTP clients: pooled keep-alive connections per endpoint,
//! HTTP/1.1 or HTTP/2 per cluster, with the cluster's connect timeout.
//! A client lives in the cluster's long-lived state, so its pool survives
//! config swaps.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy handles: a streamed downstream body, a buffered
/// one for retries, or one the proxy writes itself.
pub type Body = BoxBody<Bytes, BoxError>;

#[derive(Clone)]
pub struct UpstreamClient {
    pub client: Client<HttpConnector, Body>,
    pub connect_timeout: Duration,
    pub http2: bool,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration, http2: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
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
        UpstreamClient {
            client: b.build(connector),
            connect_timeout,
            http2,
        }
    }
}
