//! Counters served at `/stats/prometheus`. Every response the proxy
//! decides itself (no route, no healthy upstream, connect failure,
//! timeout) is counted, as are requests by status class.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    pub cluster: String,
}

/// One cluster's counters, resolved once when its state is built so the
/// request path increments atomics without looking labels up.
#[derive(Clone, Default)]
pub struct ClusterStats {
    pub no_healthy_upstream: Counter,
    pub upstream_rq: Counter,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    pub upstream_rq_pending_overflow: Counter,
    pub upstream_rq_retry_overflow: Counter,
    pub outlier_ejections: Counter,
}

pub struct Stats {
    pub registry: Registry,
    pub downstream_rq: Family<ClassLabel, Counter>,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_total: Counter,
    /// `downstream_rq`'s five classes, resolved once: counting a response
    /// looks nothing up.
    classes: [Counter; 5],
    pub no_route: Counter,
    pub no_cluster: Counter,
    pub no_healthy_upstream: Family<ClusterLabel, Counter>,
    pub upstream_rq: Family<ClusterLabel, Counter>,
    pub upstream_cx_connect_fail: Family<ClusterLabel, Counter>,
    pub upstream_rq_timeout: Family<ClusterLabel, Counter>,
    pub upstream_rq_retry: Family<ClusterLabel, Counter>,
    pub outlier_ejections: Family<ClusterLabel, Counter>,
    pub upstream_rq_retry_overflow: Family<ClusterLabel, Counter>,
    pub upstream_rq_pending_overflow: Family<ClusterLabel, Counter>,
    pub upstream_rq_per_try_timeout: Family<ClusterLabel, Counter>,
    pub config_applied: Counter,
    pub config_rejected: Counter,
    pub policy_refused: Counter,
    pub downstream_rq_body_error: Counter,
}

impl Stats {
    /// `access_log_dropped`: lines the access log could not queue, when
    /// one is configured.
    pub fn new(access_log_dropped: Option<Counter>) -> Stats {
        let mut s = Stats {
            registry: Registry::with_prefix("gantry"),
            downstream_rq: Family::default(),
            downstream_cx_active: Gauge::default(),
            downstream_cx_total: Counter::default(),
            classes: Default::default(),
            no_route: Counter::default(),
            no_cluster: Counter::default(),
            no_healthy_upstream: Family::default(),
            upstream_rq: Family::default(),
            upstream_cx_connect_fail: Family::default(),
            upstream_rq_timeout: Family::default(),
            upstream_rq_retry: Family::default(),
            outlier_ejections: Family::default(),
            upstream_rq_retry_overflow: Family::default(),
            upstream_rq_pending_overflow: Family::default(),
            upstream_rq_per_try_timeout: Family::default(),
            config_applied: Counter::default(),
            config_rejected: Counter::default(),
            policy_refused: Counter::default(),
            downstream_rq_body_error: Counter::default(),
        };
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().enumerate() {
            s.classes[i] = s.downstream_rq.get_or_create(&ClassLabel { class }).clone();
        }
        let r = &mut s.registry;
        r.register(
            "downstream_cx_total",
            "Downstream connections accepted",
            s.downstream_cx_total.clone(),
        );
        r.register(
            "downstream_rq",
            "Downstream requests by status class",
            s.downstream_rq.clone(),
        );
        r.register(
            "downstream_cx_active",
            "Open downstream connections",
            s.downstream_cx_active.clone(),
        );
        r.register(
            "no_route",
            "Requests with no matching route (404)",
            s.no_route.clone(),
        );
        r.register(
            "policy_refused",
            "Requests refused because a policy of their route is not held: fenced by a refused update, or naming a plugin instance the listener lacks (500)",
            s.policy_refused.clone(),
        );
        r.register(
            "downstream_rq_body_error",
            "Requests whose body the client sent broken (malformed chunk, cut short): 400, not counted against the upstream",
            s.downstream_rq_body_error.clone(),
        );
        r.register(
            "no_cluster",
            "Requests whose route names an unknown cluster (503)",
            s.no_cluster.clone(),
        );
        r.register(
            "no_healthy_upstream",
            "Requests with no healthy endpoint (503)",
            s.no_healthy_upstream.clone(),
        );
        r.register(
            "upstream_rq",
            "Requests sent upstream",
            s.upstream_rq.clone(),
        );
        r.register(
            "upstream_cx_connect_fail",
            "Upstream connect failures",
            s.upstream_cx_connect_fail.clone(),
        );
        r.register(
            "upstream_rq_timeout",
            "Upstream requests that timed out (504)",
            s.upstream_rq_timeout.clone(),
        );
        r.register(
            "upstream_rq_retry",
            "Upstream request retries",
            s.upstream_rq_retry.clone(),
        );
        r.register(
            "upstream_rq_per_try_timeout",
            "Upstream attempts that hit the per-try timeout",
            s.upstream_rq_per_try_timeout.clone(),
        );
        r.register(
            "upstream_rq_pending_overflow",
            "Requests refused by the max_requests circuit breaker (503)",
            s.upstream_rq_pending_overflow.clone(),
        );
        r.register(
            "upstream_rq_retry_overflow",
            "Retries not made because of the max_retries circuit breaker",
            s.upstream_rq_retry_overflow.clone(),
        );
        r.register(
            "outlier_ejections",
            "Endpoints ejected by outlier detection",
            s.outlier_ejections.clone(),
        );
        r.register(
            "config_applied",
            "Configs compiled and swapped in",
            s.config_applied.clone(),
        );
        r.register(
            "config_rejected",
            "Configs refused (NACKed)",
            s.config_rejected.clone(),
        );
        if let Some(dropped) = access_log_dropped {
            r.register(
                "access_log_dropped",
                "Access log lines dropped because the writer fell behind",
                dropped,
            );
        }
        s
    }

    pub fn cluster(&self, name: &str) -> ClusterStats {
        let l = ClusterLabel {
            cluster: name.to_string(),
        };
        ClusterStats {
            no_healthy_upstream: self.no_healthy_upstream.get_or_create(&l).clone(),
            upstream_rq: self.upstream_rq.get_or_create(&l).clone(),
            upstream_cx_connect_fail: self.upstream_cx_connect_fail.get_or_create(&l).clone(),
            upstream_rq_timeout: self.upstream_rq_timeout.get_or_create(&l).clone(),
            upstream_rq_retry: self.upstream_rq_retry.get_or_create(&l).clone(),
            upstream_rq_per_try_timeout: self.upstream_rq_per_try_timeout.get_or_create(&l).clone(),
            upstream_rq_pending_overflow: self
                .upstream_rq_pending_overflow
                .get_or_create(&l)
                .clone(),
            upstream_rq_retry_overflow: self.upstream_rq_retry_overflow.get_or_create(&l).clone(),
            outlier_ejections: self.outlier_ejections.get_or_create(&l).clone(),
        }
    }

    pub fn count_status(&self, status: u16) {
        let i = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        self.classes[i].inc();
    }

    /// Every response counted, whatever its class.
    pub fn requests_total(&self) -> u64 {
        self.classes.iter().map(|c| c.get()).sum()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new(None)
    }
}
