//! Kong's `prometheus` plugin: per route and service, the series Kong
//! exports under Kong's names and labels (`kong_http_requests_total`,
//! `kong_kong_latency_ms`, `kong_upstream_latency_ms`,
//! `kong_request_latency_ms`, `kong_bandwidth_bytes`), recorded in the log
//! phase and served on the proxy's admin listener with the node gauges
//! (`proxy::kong_metrics`), so dashboards built for Kong read them as they are.
//!
//! A route's series are resolved when its config compiles ([`SERIES`]
//! hands the same [`RouteSeries`] to every config that has the route, so
//! counts carry across swaps) and recorded with relaxed atomics: the
//! request path takes no lock and allocates nothing for them. The one
//! exception is `per_consumer`, off by default, whose per-consumer counts
//! are found under a read lock (consumers are not known per route ahead).

use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, RwLock, Weak};

/// Kong's buckets, in milliseconds.
pub const KONG_LATENCY_BUCKETS: &[u64] = &[
    1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000,
];
pub const UPSTREAM_LATENCY_BUCKETS: &[u64] = &[
    25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000,
];

/// One instance's switches (Kong's, all off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prometheus {
    pub per_consumer: bool,
    pub status_code_metrics: bool,
    pub latency_metrics: bool,
    pub bandwidth_metrics: bool,
    /// Global: any instance with it on exports `kong_upstream_target_health`.
    pub upstream_health_metrics: bool,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    per_consumer: Option<bool>,
    #[serde(default)]
    status_code_metrics: Option<bool>,
    #[serde(default)]
    latency_metrics: Option<bool>,
    #[serde(default)]
    bandwidth_metrics: Option<bool>,
    #[serde(default)]
    upstream_health_metrics: Option<bool>,
    // gantry-proxy runs no AI proxy and no Wasm filters: nothing of theirs
    // to export, so the switches are accepted and have nothing to turn on.
    #[serde(default)]
    #[allow(dead_code)]
    ai_metrics: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    wasm_metrics: Option<bool>,
}

impl Prometheus {
    pub fn compile(v: &serde_json::Value) -> Result<Prometheus, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        Ok(Prometheus {
            per_consumer: c.per_consumer.unwrap_or(false),
            status_code_metrics: c.status_code_metrics.unwrap_or(false),
            latency_metrics: c.latency_metrics.unwrap_or(false),
            bandwidth_metrics: c.bandwidth_metrics.unwrap_or(false),
            upstream_health_metrics: c.upstream_health_metrics.unwrap_or(false),
        })
    }

    /// The switches either of two instances turns on.
    pub fn any(self, o: Prometheus) -> Prometheus {
        Prometheus {
            per_consumer: self.per_consumer || o.per_consumer,
            status_code_metrics: self.status_code_metrics || o.status_code_metrics,
            latency_metrics: self.latency_metrics || o.latency_metrics,
            bandwidth_metrics: self.bandwidth_metrics || o.bandwidth_metrics,
            upstream_health_metrics: self.upstream_health_metrics || o.upstream_health_metrics,
        }
    }

    /// What the log phase records for a request on `series`.
    pub fn observe(&self, series: &Arc<RouteSeries>, consumer: Option<&str>) -> Observe {
        let counts = match (self.per_consumer, consumer) {
            (true, Some(c)) if !c.is_empty() => Some(series.consumer(c)),
            _ => None,
        };
        Observe {
            conf: *self,
            series: series.clone(),
            counts,
        }
    }
}

/// Who answered, Kong's `source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The upstream's response.
    Service,
    /// The gateway's own (a plugin's refusal, no healthy upstream...).
    Kong,
}

/// One request's recording, made in the access phase and finished in the
/// log phase.
pub struct Observe {
    conf: Prometheus,
    series: Arc<RouteSeries>,
    /// The consumer's counts, with `per_consumer`.
    counts: Option<Arc<Counts>>,
}

/// What the log phase knows about a request once its response is sent.
pub struct Finished {
    pub status: u16,
    pub source: Source,
    /// Whole request, first byte in to last byte out.
    pub request_ms: u64,
    /// From the request sent upstream to the upstream's response head.
    pub upstream_ms: Option<u64>,
    /// Request and response sizes, head and body.
    pub ingress: u64,
    pub egress: u64,
}

impl Observe {
    /// Whether request and response sizes are recorded.
    pub fn counts_bytes(&self) -> bool {
        self.conf.bandwidth_metrics
    }

    pub fn record(&self, f: &Finished) {
        let counts = self.counts.as_deref().unwrap_or(&self.series.counts);
        if self.conf.status_code_metrics {
            counts.status(f.status, f.source);
        }
        if self.conf.bandwidth_metrics {
            counts.ingress.fetch_add(f.ingress, Ordering::Relaxed);
            counts.egress.fetch_add(f.egress, Ordering::Relaxed);
        }
        if self.conf.latency_metrics {
            let s = &self.series;
            s.request.observe(f.request_ms);
            if let Some(u) = f.upstream_ms {
                s.upstream.observe(u);
            }
            // Kong's own latency: what the upstream did not take.
            s.kong
                .observe(f.request_ms.saturating_sub(f.upstream_ms.unwrap_or(0)));
        }
    }
}

/// A histogram over fixed bounds: a count per bucket (not cumulative;
/// summed when encoded), and the sum of what was observed.
pub struct Histogram {
    bounds: &'static [u64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Requests by status and source, and bytes each way.
#[derive(Default)]
pub struct Counts {
    /// Per source and status class, a hundred codes, made on first use.
    by_class: [OnceLock<Box<[AtomicU64; 100]>>; 10],
    ingress: AtomicU64,
    egress: AtomicU64,
}

impl Counts {
    fn status(&self, code: u16, source: Source) {
        if !(100..600).contains(&code) {
            return;
        }
        let i = (code / 100 - 1) as usize + if source == Source::Kong { 5 } else { 0 };
        let block = self.by_class[i].get_or_init(|| Box::new([const { AtomicU64::new(0) }; 100]));
        block[(code % 100) as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// (code, source, count) for every code counted.
    fn statuses(&self) -> impl Iterator<Item = (u16, &'static str, u64)> + '_ {
        self.by_class.iter().enumerate().flat_map(|(i, b)| {
            let source = if i >= 5 { "kong" } else { "service" };
            let base = (i % 5 + 1) as u16 * 100;
            b.get().into_iter().flat_map(move |block| {
                block.iter().enumerate().filter_map(move |(c, n)| {
                    let n = n.load(Ordering::Relaxed);
                    (n > 0).then_some((base + c as u16, source, n))
                })
            })
        })
    }
}

/// One route's series (service and route as Kong labels them).
pub struct RouteSeries {
    service: Arc<str>,
    route: Arc<str>,
    counts: Arc<Counts>,
    consumers: RwLock<HashMap<Arc<str>, Arc<Counts>>>,
    kong: Histogram,
    upstream: Histogram,
    request: Histogram,
}

impl RouteSeries {
    fn new(service: &str, route: &str) -> RouteSeries {
        RouteSeries {
            service: service.into(),
            route: route.into(),
            counts: Arc::default(),
            consumers: RwLock::default(),
            kong: Histogram::new(KONG_LATENCY_BUCKETS),
            upstream: Histogram::new(UPSTREAM_LATENCY_BUCKETS),
            request: Histogram::new(UPSTREAM_LATENCY_BUCKETS),
        }
    }

    fn consumer(&self, username: &str) -> Arc<Counts> {
        if let Ok(m) = self.consumers.read()
            && let Some(c) = m.get(username)
        {
            return c.clone();
        }
        let mut m = match self.consumers.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        m.entry(username.into()).or_default().clone()
    }
}

/// Every route's series, by (service, route) label. A config holds its
/// routes' series; a route no config has any more is dropped with it.
pub static SERIES: LazyLock<Series> = LazyLock::new(Series::default);

/// (service, route), as Kong labels them.
type Labels = (Arc<str>, Arc<str>);

#[derive(Default)]
pub struct Series {
    routes: Mutex<HashMap<Labels, Weak<RouteSeries>>>,
}

impl Series {
    /// The route's series: the one a current config already holds, else new.
    pub fn route(&self, service: &str, route: &str) -> Arc<RouteSeries> {
        let mut m = match self.routes.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key: Labels = (service.into(), route.into());
        if let Some(s) = m.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        // Sweep what configs let go of, now and then, as routes come and go.
        if m.len() >= 64 && m.len().is_power_of_two() {
            m.retain(|_, w| w.strong_count() > 0);
        }
        let s = Arc::new(RouteSeries::new(service, route));
        m.insert(key, Arc::downgrade(&s));
        s
    }

    fn live(&self) -> Vec<Arc<RouteSeries>> {
        let m = match self.routes.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut v: Vec<_> = m.values().filter_map(Weak::upgrade).collect();
        v.sort_by(|a, b| (&a.service, &a.route).cmp(&(&b.service, &b.route)));
        v
    }

    /// The per-route families in Prometheus' text format.
    pub fn encode(&self, out: &mut String) {
        let live = self.live();
        family(
            out,
            "kong_bandwidth_bytes",
            "counter",
            "Bytes in (ingress) and out (egress) per service and route",
        );
        for s in &live {
            for (consumer, c) in s.all_counts() {
                for (dir, n) in [("egress", &c.egress), ("ingress", &c.ingress)] {
                    let n = n.load(Ordering::Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "kong_bandwidth_bytes{{service=\"{}\",route=\"{}\",direction=\"{dir}\",workspace=\"default\",consumer=\"{}\"}} {n}",
                            Esc(&s.service),
                            Esc(&s.route),
                            Esc(&consumer)
                        );
                    }
                }
            }
        }
        family(
            out,
            "kong_http_requests_total",
            "counter",
            "Responses by status code and source per service, route and consumer",
        );
        for s in &live {
            for (consumer, c) in s.all_counts() {
                for (code, source, n) in c.statuses() {
                    let _ = writeln!(
                        out,
                        "kong_http_requests_total{{service=\"{}\",route=\"{}\",code=\"{code}\",source=\"{source}\",workspace=\"default\",consumer=\"{}\"}} {n}",
                        Esc(&s.service),
                        Esc(&s.route),
                        Esc(&consumer)
                    );
                }
            }
        }
        for (name, help, pick) in [
            (
                "kong_kong_latency_ms",
                "Time the gateway and its plugins took per service and route, in ms",
                (|s: &RouteSeries| &s.kong) as fn(&RouteSeries) -> &Histogram,
            ),
            (
                "kong_request_latency_ms",
                "Whole request time per service and route, in ms",
                |s: &RouteSeries| &s.request,
            ),
            (
                "kong_upstream_latency_ms",
                "Time the upstream took to answer per service and route, in ms",
                |s: &RouteSeries| &s.upstream,
            ),
        ] {
            family(out, name, "histogram", help);
            for s in &live {
                histogram(out, name, s, pick(s));
            }
        }
    }
}

impl RouteSeries {
    /// The route's counts (consumer "") and each consumer's, by name.
    fn all_counts(&self) -> Vec<(Arc<str>, Arc<Counts>)> {
        let mut v = vec![(Arc::<str>::from(""), self.counts.clone())];
        if let Ok(m) = self.consumers.read() {
            let mut cs: Vec<_> = m.iter().map(|(k, c)| (k.clone(), c.clone())).collect();
            cs.sort_by(|a, b| a.0.cmp(&b.0));
            v.extend(cs);
        }
        v
    }
}

fn histogram(out: &mut String, name: &str, s: &RouteSeries, h: &Histogram) {
    let count = h.count();
    if count == 0 {
        return;
    }
    let labels = format!(
        "service=\"{}\",route=\"{}\",workspace=\"default\"",
        Esc(&s.service),
        Esc(&s.route)
    );
    let mut cumulative = 0;
    for (i, b) in h.bounds.iter().enumerate() {
        cumulative += h.counts[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    let _ = writeln!(
        out,
        "{name}_sum{{{labels}}} {}",
        h.sum.load(Ordering::Relaxed)
    );
}

/// A family's HELP and TYPE lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format escapes it.
pub struct Esc<'a>(pub &'a str);

impl std::fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn done(status: u16, source: Source, request_ms: u64, upstream_ms: Option<u64>) -> Finished {
        Finished {
            status,
            source,
            request_ms,
            upstream_ms,
            ingress: 100,
            egress: 250,
        }
    }

    #[test]
    fn records_only_what_is_switched_on() {
        let series = Series::default();
        let s = series.route("svc", "r\"1");
        let all = Prometheus::compile(
            &json!({"status_code_metrics": true, "latency_metrics": true,
            "bandwidth_metrics": true, "per_consumer": false}),
        )
        .unwrap();
        let o = all.observe(&s, Some("alice"));
        o.record(&done(200, Source::Service, 12, Some(10)));
        o.record(&done(200, Source::Service, 3, Some(1)));
        o.record(&done(401, Source::Kong, 1, None));
        let mut out = String::new();
        series.encode(&mut out);
        assert!(out.contains("kong_http_requests_total{service=\"svc\",route=\"r\\\"1\",code=\"200\",source=\"service\",workspace=\"default\",consumer=\"\"} 2\n"), "{out}");
        assert!(
            out.contains("code=\"401\",source=\"kong\",workspace=\"default\",consumer=\"\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("kong_bandwidth_bytes{service=\"svc\",route=\"r\\\"1\",direction=\"ingress\",workspace=\"default\",consumer=\"\"} 300\n"), "{out}");
        // 12 ms and 3 ms total: upstream 10 and 1, so the gateway's share is 2, 2 and 1.
        assert!(out.contains("kong_request_latency_ms_bucket{service=\"svc\",route=\"r\\\"1\",workspace=\"default\",le=\"25\"} 3\n"), "{out}");
        assert!(out.contains("kong_upstream_latency_ms_count{service=\"svc\",route=\"r\\\"1\",workspace=\"default\"} 2\n"), "{out}");
        assert!(out.contains("kong_kong_latency_ms_bucket{service=\"svc\",route=\"r\\\"1\",workspace=\"default\",le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("kong_kong_latency_ms_bucket{service=\"svc\",route=\"r\\\"1\",workspace=\"default\",le=\"2\"} 3\n"), "{out}");
        assert!(out.contains("kong_kong_latency_ms_sum{service=\"svc\",route=\"r\\\"1\",workspace=\"default\"} 5\n"), "{out}");

        // Off: nothing recorded on another route.
        let quiet = series.route("svc", "quiet");
        Prometheus::default()
            .observe(&quiet, None)
            .record(&done(200, Source::Service, 1, Some(1)));
        let mut out = String::new();
        series.encode(&mut out);
        assert!(!out.contains("route=\"quiet\""), "{out}");
    }

    #[test]
    fn per_consumer_labels_by_username() {
        let series = Series::default();
        let s = series.route("svc", "r");
        let p = Prometheus::compile(&json!({"status_code_metrics": true, "per_consumer": true}))
            .unwrap();
        p.observe(&s, Some("alice"))
            .record(&done(200, Source::Service, 1, Some(1)));
        p.observe(&s, None)
            .record(&done(401, Source::Kong, 1, None));
        let mut out = String::new();
        series.encode(&mut out);
        assert!(
            out.contains(
                "code=\"200\",source=\"service\",workspace=\"default\",consumer=\"alice\"} 1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("code=\"401\",source=\"kong\",workspace=\"default\",consumer=\"\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn a_route_keeps_its_counts_while_a_config_holds_it() {
        let series = Series::default();
        let first = series.route("svc", "r");
        let p = Prometheus::compile(&json!({"status_code_metrics": true})).unwrap();
        p.observe(&first, None)
            .record(&done(200, Source::Service, 1, Some(1)));
        // The next config compiles while the current one still holds it.
        let second = series.route("svc", "r");
        assert!(Arc::ptr_eq(&first, &second));
        drop(first);
        drop(second);
        let third = series.route("svc", "r");
        let mut out = String::new();
        series.encode(&mut out);
        assert!(
            !out.contains("kong_http_requests_total{"),
            "dropped with its route: {out}"
        );
        drop(third);
    }

    #[test]
    fn buckets_are_upper_bounds() {
        let h = Histogram::new(KONG_LATENCY_BUCKETS);
        for v in [0, 1, 2, 6000, 6001] {
            h.observe(v);
        }
        let c: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!((c[0], c[1], c[16], c[17]), (2, 1, 1, 1));
    }
}
