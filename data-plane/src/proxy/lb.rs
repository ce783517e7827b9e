//! Long-lived cluster state and load balancing. A cluster's state (pool,
//! endpoint counters, health, round-robin position) is kept by name across
//! config swaps; only what a new config changes is rebuilt.

use super::outlier::{self, OutlierState};
use super::stats::{ClusterStats, Stats};
use crate::config::{ClusterConfig, EndpointAddress, LbPolicy, Outlier, Priority, Thresholds};
use crate::upstream::{UpstreamClient, tls_key};
use http::uri::Authority;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// One endpoint and what the proxy knows of it.
pub struct Endpoint {
    pub authority: Authority,
    pub weight: u32,
    /// The host for `auto_host_rewrite`.
    pub hostname: Option<String>,
    pub active: AtomicU64,
    /// Active health checking's verdict.
    pub healthy: AtomicBool,
    /// Passive health (outlier detection).
    pub outlier: OutlierState,
}

impl Endpoint {
    /// Healthy and not ejected: the balancer may pick it.
    pub fn available(&self, now: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.outlier.is_ejected(now)
    }
}

/// Requests and retries in flight on a cluster, for the circuit breakers:
/// `[requests default, requests high, retries default, retries high]`.
/// Shared by every runtime's state of one cluster, so requests that
/// started on an older config still count.
#[derive(Default)]
pub struct Inflight([AtomicU64; 4]);

/// Holds one unit of a circuit-breaker resource until dropped.
pub struct Slot {
    inflight: Arc<Inflight>,
    which: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inflight.0[self.which].fetch_sub(1, Ordering::Relaxed);
    }
}

fn acquire(inflight: &Arc<Inflight>, which: usize, max: u32) -> Option<Slot> {
    let counter = &inflight.0[which];
    let prev = counter.fetch_add(1, Ordering::Relaxed);
    if prev >= u64::from(max) {
        counter.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(Slot {
        inflight: inflight.clone(),
        which,
    })
}

pub struct ClusterState {
    pub name: String,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub client: UpstreamClient,
    policy: Policy,
    cursor: AtomicUsize,
    outlier: Option<Outlier>,
    /// `healthy_panic_threshold` in percent; 0 disables panic routing.
    panic_threshold: f64,
    thresholds: [Thresholds; 2],
    inflight: Arc<Inflight>,
    pub stats: ClusterStats,
}

enum Policy {
    /// A precomputed smooth weighted round-robin order of endpoint indexes.
    RoundRobin(Vec<u32>),
    LeastRequest,
    Random,
    /// Sorted (hash, endpoint index) points.
    Ring(Vec<(u64, u32)>),
}

fn authority_of(a: &EndpointAddress) -> Option<Authority> {
    let s = match a {
        EndpointAddress::Ip(sa) => sa.to_string(),
        EndpointAddress::Dns(host, port) => format!("{host}:{port}"),
    };
    s.parse().ok()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Smooth weighted round robin (as nginx): interleaves endpoints in
/// proportion to their weights instead of sending bursts to one.
fn wrr_schedule(weights: &[u32]) -> Vec<u32> {
    let g = weights
        .iter()
        .copied()
        .filter(|w| *w > 0)
        .fold(0, gcd)
        .max(1);
    let mut w: Vec<i64> = weights.iter().map(|x| i64::from(*x / g)).collect();
    let mut total: i64 = w.iter().sum();
    // Keep the table small; proportions stay within rounding.
    while total > 4096 {
        for x in w.iter_mut() {
            *x = (*x / 2).max(i64::from(*x > 0));
        }
        total = w.iter().sum();
    }
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

fn hash_of(v: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn ring(endpoints: &[Arc<Endpoint>], min_points: usize) -> Vec<(u64, u32)> {
    let total: u64 = endpoints
        .iter()
        .map(|e| u64::from(e.weight.max(1)))
        .sum::<u64>()
        .max(1);
    let mut points = Vec::new();
    for (i, e) in endpoints.iter().enumerate() {
        let n = ((u64::from(e.weight.max(1)) * min_points as u64) / total).max(1);
        for k in 0..n {
            points.push((hash_of(&(e.authority.as_str(), k)), i as u32));
        }
    }
    points.sort_unstable();
    points
}

impl ClusterState {
    /// Builds the state for `cfg`, reusing from `prev` the pool (when the
    /// connection settings are the same) and each endpoint's counters.
    pub fn build(
        cfg: &ClusterConfig,
        prev: Option<&ClusterState>,
        certificates: &HashMap<String, Arc<CertifiedKey>>,
        stats: &Stats,
    ) -> ClusterState {
        let old: HashMap<&str, &Arc<Endpoint>> = prev
            .map(|p| {
                p.endpoints
                    .iter()
                    .map(|e| (e.authority.as_str(), e))
                    .collect()
            })
            .unwrap_or_default();
        let endpoints: Vec<Arc<Endpoint>> = cfg
            .endpoints
            .iter()
            .filter(|e| e.weight > 0)
            .filter_map(|e| {
                let authority = authority_of(&e.address)?;
                match old.get(authority.as_str()) {
                    Some(o) if o.weight == e.weight && o.hostname == e.hostname => {
                        Some((*o).clone())
                    }
                    Some(o) => Some(Arc::new(Endpoint {
                        authority,
                        weight: e.weight,
                        hostname: e.hostname.clone(),
                        active: AtomicU64::new(o.active.load(Ordering::Relaxed)),
                        healthy: AtomicBool::new(o.healthy.load(Ordering::Relaxed)),
                        outlier: o.outlier.carry(),
                    })),
                    None => Some(Arc::new(Endpoint {
                        authority,
                        weight: e.weight,
                        hostname: e.hostname.clone(),
                        active: AtomicU64::new(0),
                        healthy: AtomicBool::new(true),
                        outlier: OutlierState::default(),
                    })),
                }
            })
            .collect();
        let client_cert = cfg
            .tls
            .as_ref()
            .and_then(|t| t.client_certificate.as_ref())
            .and_then(|name| certificates.get(name).cloned());
        let key = tls_key(cfg.tls.as_ref(), client_cert.as_deref());
        let client = match prev {
            Some(p)
                if p.client.connect_timeout == cfg.connect_timeout
                    && p.client.http2 == cfg.http2
                    && p.client.tls_key == key =>
            {
                p.client.clone()
            }
            _ => UpstreamClient::new(
                cfg.connect_timeout,
                cfg.http2,
                cfg.tls.as_ref(),
                client_cert,
            ),
        };
        let policy = match &cfg.lb {
            LbPolicy::RoundRobin => Policy::RoundRobin(wrr_schedule(
                &endpoints.iter().map(|e| e.weight).collect::<Vec<_>>(),
            )),
            LbPolicy::LeastRequest => Policy::LeastRequest,
            LbPolicy::Random => Policy::Random,
            LbPolicy::RingHash { min_ring, .. } => {
                Policy::Ring(ring(&endpoints, (*min_ring as usize).clamp(64, 1 << 16)))
            }
            LbPolicy::Maglev => Policy::Ring(ring(&endpoints, 65537 / 8)),
        };
        let cursor = AtomicUsize::new(prev.map(|p| p.cursor.load(Ordering::Relaxed)).unwrap_or(0));
        ClusterState {
            name: cfg.name.clone(),
            endpoints,
            client,
            policy,
            cursor,
            outlier: cfg.outlier.clone(),
            panic_threshold: cfg.panic_threshold_percent,
            thresholds: [cfg.thresholds, cfg.thresholds_high],
            inflight: prev.map(|p| p.inflight.clone()).unwrap_or_default(),
            stats: match prev {
                Some(p) => p.stats.clone(),
                None => stats.cluster(&cfg.name),
            },
        }
    }

    /// A request slot under `max_requests`; None when the breaker is open.
    pub fn request_slot(&self, p: Priority) -> Option<Slot> {
        let i = p as usize;
        acquire(&self.inflight, i, self.thresholds[i].max_requests)
    }

    /// A retry slot under `max_retries`; None when the breaker is open.
    pub fn retry_slot(&self, p: Priority) -> Option<Slot> {
        let i = p as usize;
        acquire(&self.inflight, 2 + i, self.thresholds[i].max_retries)
    }

    /// Reports an attempt's result to outlier detection. Returns the
    /// detector when the endpoint was ejected.
    pub fn report(&self, e: &Endpoint, r: outlier::Result) -> Option<outlier::Detector> {
        let cfg = self.outlier.as_ref()?;
        let detector = e.outlier.record(cfg, r)?;
        let now = outlier::now_ms();
        if e.outlier.is_ejected(now) {
            return None;
        }
        let ejected = self
            .endpoints
            .iter()
            .filter(|x| x.outlier.is_ejected(now))
            .count();
        if !outlier::may_eject(cfg, ejected, self.endpoints.len()) {
            return None;
        }
        let time = e.outlier.eject(cfg, now);
        tracing::warn!(
            cluster = %self.name,
            endpoint = %e.authority,
            detector = detector.as_str(),
            ejection_ms = time.as_millis() as u64,
            "endpoint ejected"
        );
        Some(detector)
    }

    /// Whether a successful active health check returns ejected hosts.
    pub fn uneject_on_health_check(&self) -> bool {
        self.outlier
            .as_ref()
            .is_some_and(|o| o.successful_active_health_check_uneject_host)
    }

    /// Envoy's panic mode: when fewer than `healthy_panic_threshold` percent
    /// of the endpoints are available, load is spread over all of them.
    fn panicking(&self, now: u64) -> bool {
        if self.panic_threshold <= 0.0 {
            return false;
        }
        let up = self.endpoints.iter().filter(|e| e.available(now)).count();
        (up as f64) * 100.0 < self.panic_threshold * self.endpoints.len() as f64
    }

    /// Picks an endpoint; `hash` (from the route's hash policy) steers
    /// ring hash. None when no endpoint is available (and not panicking).
    pub fn pick(&self, hash: Option<u64>) -> Option<Arc<Endpoint>> {
        let now = outlier::now_ms();
        // Counting available endpoints is O(n): only done once the first
        // candidate turns out to be unavailable.
        let panic = std::cell::OnceCell::new();
        self.choose(hash, |i| {
            self.endpoints[i].available(now) || *panic.get_or_init(|| self.panicking(now))
        })
    }

    fn choose(&self, hash: Option<u64>, ok: impl Fn(usize) -> bool) -> Option<Arc<Endpoint>> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let idx = match &self.policy {
            Policy::RoundRobin(order) => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..order.len())
                    .map(|k| order[(start + k) % order.len()] as usize)
                    .find(|i| ok(*i))?
            }
            Policy::Random => {
                let total: u64 = self.endpoints.iter().map(|e| u64::from(e.weight)).sum();
                let mut r = rand::random::<u64>() % total.max(1);
                let mut chosen = 0;
                for (i, e) in self.endpoints.iter().enumerate() {
                    if r < u64::from(e.weight) {
                        chosen = i;
                        break;
                    }
                    r -= u64::from(e.weight);
                }
                (0..n).map(|k| (chosen + k) % n).find(|i| ok(*i))?
            }
            Policy::LeastRequest => {
                // Power of two choices: two random endpoints, the less busy wins.
                let a = rand::random::<u64>() as usize % n;
                let b = rand::random::<u64>() as usize % n;
                let load = |i: usize| {
                    self.endpoints[i].active.load(Ordering::Relaxed) * 1000
                        / u64::from(self.endpoints[i].weight.max(1))
                };
                let best = if load(b) < load(a) { b } else { a };
                (0..n).map(|k| (best + k) % n).find(|i| ok(*i))?
            }
            Policy::Ring(points) => {
                let h = hash.unwrap_or_else(rand::random::<u64>);
                let start = points.partition_point(|(p, _)| *p < h);
                (0..points.len())
                    .map(|k| points[(start + k) % points.len()].1 as usize)
                    .find(|i| ok(*i))?
            }
        };
        Some(self.endpoints[idx].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_round_robin_is_proportional_and_interleaved() {
        let s = wrr_schedule(&[80, 20]);
        assert_eq!(s.len(), 5);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 4);
        assert_eq!(s.iter().filter(|i| **i == 1).count(), 1);
        let s = wrr_schedule(&[1, 1, 1]);
        assert_eq!(s, [0, 1, 2]);
        let s = wrr_schedule(&[5000, 3000]);
        let zeros = s.iter().filter(|i| **i == 0).count() as f64 / s.len() as f64;
        assert!((zeros - 0.625).abs() < 0.01, "{zeros}");
    }
}
