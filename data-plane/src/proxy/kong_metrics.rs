//! What Kong's prometheus plugin serves, when any instance is enabled:
//! the node gauges (connections, requests, node info, control-plane and
//! datastore state) and every route's series (`plugins::prometheus`),
//! appended to the proxy's own `/metrics`.

use super::runtime::{Runtime, Shared};
use crate::plugins::prometheus::{Esc, SERIES, family};
use std::fmt::Write as _;

/// Whether any listener's plugins include a prometheus instance.
pub fn enabled(rt: &Runtime) -> Option<crate::plugins::prometheus::Prometheus> {
    rt.listeners
        .values()
        .filter_map(|l| l.gateway.as_ref()?.prometheus)
        .reduce(crate::plugins::prometheus::Prometheus::any)
}

/// Kong's families, in its text format.
pub fn encode(shared: &Shared, xds_connected: bool, out: &mut String) {
    let rt = shared.current();
    let Some(conf) = enabled(&rt) else {
        return;
    };
    let node = Esc(&shared.options.node_id);
    let stats = &shared.stats;
    let accepted = stats.downstream_cx_total.get();
    let active = stats.downstream_cx_active.get().max(0) as u64;
    let requests = stats.requests_total();
    family(
        out,
        "kong_datastore_reachable",
        "gauge",
        "Whether the node can serve its configuration (a data plane holds it locally: 1)",
    );
    // A data plane's datastore is the config it holds: reachable once it has one.
    let ready = shared.ready.load(std::sync::atomic::Ordering::Acquire);
    let _ = writeln!(out, "kong_datastore_reachable {}", u8::from(ready));
    family(
        out,
        "kong_control_plane_connected",
        "gauge",
        "Whether the node's xDS stream to the control plane is up (1) or not (0)",
    );
    let _ = writeln!(
        out,
        "kong_control_plane_connected {}",
        u8::from(xds_connected)
    );
    family(
        out,
        "kong_nginx_connections_total",
        "gauge",
        "Downstream connections by state",
    );
    // One request per connection phase is not tracked: active
    // connections are all counted as writing, none as reading or waiting.
    for (state, n) in [
        ("accepted", accepted),
        ("active", active),
        ("handled", accepted),
        ("reading", 0),
        ("total", requests),
        ("waiting", 0),
        ("writing", active),
    ] {
        let _ = writeln!(
            out,
            "kong_nginx_connections_total{{node_id=\"{node}\",subsystem=\"http\",state=\"{state}\"}} {n}"
        );
    }
    family(
        out,
        "kong_nginx_requests_total",
        "gauge",
        "Requests the node answered",
    );
    let _ = writeln!(
        out,
        "kong_nginx_requests_total{{node_id=\"{node}\",subsystem=\"http\"}} {requests}"
    );
    family(
        out,
        "kong_nginx_metric_errors_total",
        "counter",
        "Metrics that could not be recorded",
    );
    let _ = writeln!(out, "kong_nginx_metric_errors_total 0");
    family(out, "kong_node_info", "gauge", "The node's id and version");
    let _ = writeln!(
        out,
        "kong_node_info{{node_id=\"{node}\",version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    if conf.upstream_health_metrics {
        upstream_health(&rt, out);
    }
    SERIES.encode(out);
}

/// Kong's `kong_upstream_target_health`: per Kong upstream, target and
/// address, 1 on the state it is in and 0 on the others. Without active
/// or passive checks a target is `healthchecks_off`.
fn upstream_health(rt: &Runtime, out: &mut String) {
    family(
        out,
        "kong_upstream_target_health",
        "gauge",
        "Health of each upstream target: 1 on its state (healthchecks_off, healthy, unhealthy, dns_error)",
    );
    let now = super::outlier::now_ms();
    let mut seen = std::collections::BTreeSet::new();
    let mut names: Vec<&String> = rt.clusters.keys().collect();
    names.sort();
    for name in names {
        let Some(cfg) = rt.compiled.clusters.get(name) else {
            continue;
        };
        let Some(upstream) = &cfg.kong_upstream else {
            continue;
        };
        let checked = cfg.health_check.is_some() || cfg.outlier.is_some();
        for e in &rt.clusters[name].endpoints {
            let address = e.authority.as_str();
            // Services sharing an upstream share its targets: once each.
            if !seen.insert((upstream.clone(), address.to_string())) {
                continue;
            }
            let state = match (checked, e.available(now)) {
                (false, _) => "healthchecks_off",
                (true, true) => "healthy",
                (true, false) => "unhealthy",
            };
            for s in ["healthchecks_off", "healthy", "unhealthy", "dns_error"] {
                let _ = writeln!(
                    out,
                    "kong_upstream_target_health{{upstream=\"{}\",target=\"{}\",address=\"{}\",state=\"{s}\",subsystem=\"http\"}} {}",
                    Esc(upstream),
                    Esc(address),
                    Esc(address),
                    u8::from(s == state)
                );
            }
        }
    }
}
