//! Active health checking with Envoy's rules: a check that fails by
//! connection or timeout counts toward `unhealthy_threshold`; an HTTP
//! answer outside `expected_statuses` (and not retriable) marks the
//! endpoint unhealthy at once; `healthy_threshold` passes bring it back.
//! One checker per cluster, restarted only when its config or endpoints
//! change, so a config swap does not reset what it learned.

use super::lb::{ClusterState, Endpoint};
use crate::config::{ClusterConfig, HealthCheck};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct HealthCheckers {
    running: Mutex<HashMap<String, (String, JoinHandle<()>)>>,
}

enum Outcome {
    Pass,
    /// Counts toward the unhealthy threshold.
    Fail,
    /// Unhealthy at once.
    Fatal,
}

impl HealthCheckers {
    /// Starts, keeps or stops checkers to match the clusters now in use.
    pub fn reconcile(
        &self,
        configs: &HashMap<String, Arc<ClusterConfig>>,
        states: &HashMap<String, Arc<ClusterState>>,
    ) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted = HashMap::new();
        for (name, cfg) in configs {
            let Some(state) = states.get(name) else {
                continue;
            };
            let Some(hc) = &cfg.health_check else {
                // No checks (any more): every endpoint takes traffic.
                for e in &state.endpoints {
                    e.healthy.store(true, Ordering::Relaxed);
                }
                continue;
            };
            let endpoints: Vec<&str> = state
                .endpoints
                .iter()
                .map(|e| e.authority.as_str())
                .collect();
            wanted.insert(
                name.clone(),
                (
                    format!("{hc:?}|{endpoints:?}|{}", state.uneject_on_health_check()),
                    hc.clone(),
                    state.endpoints.clone(),
                    state.uneject_on_health_check(),
                ),
            );
        }
        running.retain(|name, (key, task)| {
            let keep = wanted.get(name).is_some_and(|(k, _, _, _)| k == key);
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, (key, hc, endpoints, uneject)) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let task = tokio::spawn(check_loop(name.clone(), hc, endpoints, uneject));
            running.insert(name, (key, task));
        }
    }
}

async fn check_loop(
    cluster: String,
    hc: HealthCheck,
    endpoints: Vec<Arc<Endpoint>>,
    uneject: bool,
) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(hc.timeout));
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(hc.http.as_ref().is_some_and(|h| h.http2))
        .build(connector);
    let mut fails = vec![0u32; endpoints.len()];
    let mut passes = vec![0u32; endpoints.len()];
    if !hc.initial_jitter.is_zero() {
        tokio::time::sleep(hc.initial_jitter.mul_f64(rand::random::<f64>())).await;
    }
    loop {
        for (i, ep) in endpoints.iter().enumerate() {
            let outcome = check(&client, &cluster, &hc, ep).await;
            let healthy = ep.healthy.load(Ordering::Relaxed);
            match outcome {
                Outcome::Pass => {
                    if uneject {
                        ep.outlier.uneject(super::outlier::now_ms());
                    }
                    fails[i] = 0;
                    passes[i] += 1;
                    if !healthy && passes[i] >= hc.healthy_threshold.max(1) {
                        tracing::info!(cluster = %cluster, endpoint = %ep.authority, "endpoint healthy");
                        ep.healthy.store(true, Ordering::Relaxed);
                    }
                }
                Outcome::Fail | Outcome::Fatal => {
                    passes[i] = 0;
                    fails[i] += 1;
                    let fatal = matches!(outcome, Outcome::Fatal);
                    if healthy && (fatal || fails[i] >= hc.unhealthy_threshold.max(1)) {
                        tracing::warn!(cluster = %cluster, endpoint = %ep.authority, "endpoint unhealthy");
                        ep.healthy.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
        let any_unhealthy = endpoints.iter().any(|e| !e.healthy.load(Ordering::Relaxed));
        let mut wait = if any_unhealthy {
            hc.unhealthy_interval
        } else {
            hc.interval
        };
        if !hc.interval_jitter.is_zero() {
            wait += hc.interval_jitter.mul_f64(rand::random::<f64>());
        }
        tokio::time::sleep(wait.max(std::time::Duration::from_millis(1))).await;
    }
}

async fn check(
    client: &Client<HttpConnector, Empty<Bytes>>,
    cluster: &str,
    hc: &HealthCheck,
    ep: &Endpoint,
) -> Outcome {
    let authority = match hc.alt_port {
        Some(p) => format!("{}:{p}", ep.authority.host()),
        None => ep.authority.to_string(),
    };
    let Some(http) = &hc.http else {
        // TCP (and, for now, gRPC) checks: the endpoint accepts a connection.
        let connect = tokio::net::TcpStream::connect(authority.as_str());
        return match tokio::time::timeout(hc.timeout, connect).await {
            Ok(Ok(_)) => Outcome::Pass,
            _ => Outcome::Fail,
        };
    };
    let host = http.host.clone().unwrap_or_else(|| cluster.to_string());
    let req = http::Request::builder()
        .method(http.method.clone())
        .uri(format!("http://{authority}{}", http.path))
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "Envoy/HC")
        .body(Empty::<Bytes>::new());
    let Ok(req) = req else { return Outcome::Fail };
    match tokio::time::timeout(hc.timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let in_ranges =
                |ranges: &[std::ops::Range<u16>]| ranges.iter().any(|r| r.contains(&status));
            if in_ranges(&http.expected_statuses) {
                Outcome::Pass
            } else if in_ranges(&http.retriable_statuses) {
                Outcome::Fail
            } else {
                Outcome::Fatal
            }
        }
        _ => Outcome::Fail,
    }
}
