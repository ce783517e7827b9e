//! Checks the whole resource set before any of it is handed out: names are
//! unique per type, every reference (route -> cluster, listener -> RDS and
//! SDS, cluster -> SDS, EDS cluster -> assignment) resolves, regexes compile and durations
//! are in range. Any failure rejects the set; nothing partial escapes.

#[cfg(test)]
use super::Resources;
use super::{TranslateError, Translation};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, transport_socket};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, Route as EnvoyRoute, header_matcher::HeaderMatchSpecifier, route::Action,
    route_action::ClusterSpecifier, route_action::hash_policy::PolicySpecifier,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, Secret, UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::Duration;
use prost::Message;
use std::collections::{HashMap, HashSet};

const MAX_MS: i64 = 1 << 31;

/// A route configuration as validation walks it: virtual hosts in order,
/// each route with an index that is the same for every copy of it (so a
/// route repeated across virtual hosts or configurations is checked once,
/// where it first appears, and the first failure is the one a full walk
/// would find).
struct ConfigView<'a> {
    name: &'a str,
    /// Which routes the indices refer to (configurations can share them).
    pool: usize,
    distinct: usize,
    vhosts: Vec<VhostView<'a>>,
}

struct VhostView<'a> {
    name: &'a str,
    domains: &'a [String],
    routes: Vec<(usize, &'a EnvoyRoute)>,
}

/// Validates plain resources (the translator itself validates its tables;
/// tests check hand-edited resource sets through this).
#[cfg(test)]
pub fn validate(res: &Resources) -> Result<(), TranslateError> {
    let mut next = 0;
    let configs: Vec<ConfigView<'_>> = res
        .routes
        .iter()
        .enumerate()
        .map(|(pool, rc)| {
            let vhosts = rc
                .virtual_hosts
                .iter()
                .map(|vh| VhostView {
                    name: &vh.name,
                    domains: &vh.domains,
                    routes: vh
                        .routes
                        .iter()
                        .map(|r| {
                            next += 1;
                            (next - 1, r)
                        })
                        .collect(),
                })
                .collect();
            let v = ConfigView {
                name: &rc.name,
                pool,
                distinct: next,
                vhosts,
            };
            next = 0;
            v
        })
        .collect();
    check(
        &res.listeners,
        &configs,
        &res.clusters,
        &res.endpoints,
        &res.secrets,
    )
}

/// [`validate`] on a translation whose route configurations are tables.
pub fn validate_translation(t: &Translation) -> Result<(), TranslateError> {
    let configs: Vec<ConfigView<'_>> = t
        .routes
        .iter()
        .map(|tb| ConfigView {
            name: tb.name(),
            pool: std::sync::Arc::as_ptr(&tb.routes) as usize,
            distinct: tb.routes.len(),
            vhosts: tb
                .vhosts
                .iter()
                .map(|v| VhostView {
                    name: &v.shell.name,
                    domains: &v.shell.domains,
                    routes: v
                        .routes
                        .iter()
                        .map(|i| (*i as usize, &tb.routes[*i as usize]))
                        .collect(),
                })
                .collect(),
        })
        .collect();
    check(
        &t.listeners,
        &configs,
        &t.clusters,
        &t.endpoints,
        &t.secrets,
    )
}

/// The listener checks of [`validate_translation`] alone: for a
/// translation that differs from a validated one only in its listeners.
pub fn validate_listeners(t: &Translation) -> Result<(), TranslateError> {
    unique("listener", t.listeners.iter().map(|l| l.name.as_str()))?;
    let route_configs: HashSet<&str> = t.routes.iter().map(|r| r.name()).collect();
    let secrets: HashSet<&str> = t.secrets.iter().map(|s| s.name.as_str()).collect();
    for l in &t.listeners {
        references(l, &route_configs, &secrets)?;
    }
    Ok(())
}

fn check(
    listeners: &[Listener],
    configs: &[ConfigView<'_>],
    clusters_in: &[Cluster],
    endpoints: &[ClusterLoadAssignment],
    secrets_in: &[Secret],
) -> Result<(), TranslateError> {
    unique("listener", listeners.iter().map(|l| l.name.as_str()))?;
    unique("route configuration", configs.iter().map(|r| r.name))?;
    unique("cluster", clusters_in.iter().map(|c| c.name.as_str()))?;
    unique(
        "cluster load assignment",
        endpoints.iter().map(|e| e.cluster_name.as_str()),
    )?;
    unique("secret", secrets_in.iter().map(|s| s.name.as_str()))?;

    let clusters: HashSet<&str> = clusters_in.iter().map(|c| c.name.as_str()).collect();
    let assignments: HashSet<&str> = endpoints.iter().map(|e| e.cluster_name.as_str()).collect();
    let route_configs: HashSet<&str> = configs.iter().map(|r| r.name).collect();
    let secrets: HashSet<&str> = secrets_in.iter().map(|s| s.name.as_str()).collect();

    for c in clusters_in {
        let eds =
            c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        if eds {
            let service = c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&c.name);
            if !assignments.contains(service) {
                return Err(TranslateError::MissingAssignment {
                    cluster: c.name.clone(),
                });
            }
        }
        duration(
            "cluster",
            &c.name,
            "connect_timeout",
            c.connect_timeout.as_ref(),
        )?;
        for hc in &c.health_checks {
            duration(
                "cluster",
                &c.name,
                "health_checks.timeout",
                hc.timeout.as_ref(),
            )?;
            duration(
                "cluster",
                &c.name,
                "health_checks.interval",
                hc.interval.as_ref(),
            )?;
            opt_duration(
                "cluster",
                &c.name,
                "health_checks.unhealthy_interval",
                hc.unhealthy_interval.as_ref(),
            )?;
            opt_duration(
                "cluster",
                &c.name,
                "health_checks.no_traffic_interval",
                hc.no_traffic_interval.as_ref(),
            )?;
        }
        if let Some(od) = &c.outlier_detection {
            opt_duration(
                "cluster",
                &c.name,
                "outlier_detection.base_ejection_time",
                od.base_ejection_time.as_ref(),
            )?;
        }
        upstream_tls(c, &secrets)?;
    }

    let mut compiled: HashSet<&str> = HashSet::new();
    let mut checked: HashMap<usize, Vec<bool>> = HashMap::new();
    for rc in configs {
        unique(
            &format!("virtual host (route configuration {})", rc.name),
            rc.vhosts.iter().map(|v| v.name),
        )?;
        let mut domains = HashSet::new();
        let checked = checked
            .entry(rc.pool)
            .or_insert_with(|| vec![false; rc.distinct]);
        for vh in &rc.vhosts {
            for d in vh.domains {
                if !domains.insert(d.to_ascii_lowercase()) {
                    return Err(TranslateError::DuplicateDomain {
                        config: rc.name.to_string(),
                        domain: d.clone(),
                    });
                }
            }
            for (i, r) in &vh.routes {
                if std::mem::replace(&mut checked[*i], true) {
                    continue;
                }
                route(rc.name, r, &clusters, &mut compiled)?;
            }
        }
    }

    for l in listeners {
        references(l, &route_configs, &secrets)?;
    }
    Ok(())
}

/// One route: its cluster exists, its regexes compile (each distinct
/// regex once, in `compiled`), its timeout is in range.
fn route<'a>(
    config: &str,
    r: &'a EnvoyRoute,
    clusters: &HashSet<&str>,
    compiled: &mut HashSet<&'a str>,
) -> Result<(), TranslateError> {
    let mut regexes: Vec<&RegexMatcher> = Vec::new();
    if let Some(m) = &r.r#match {
        if let Some(PathSpecifier::SafeRegex(re)) = &m.path_specifier {
            regexes.push(re);
        }
        regexes.extend(m.headers.iter().filter_map(header_regex));
    }
    if let Some(Action::Route(a)) = &r.action {
        match &a.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) if clusters.contains(c.as_str()) => {}
            Some(ClusterSpecifier::Cluster(c)) => {
                return Err(TranslateError::MissingCluster {
                    config: config.to_string(),
                    route: r.name.clone(),
                    cluster: c.clone(),
                });
            }
            _ => {}
        }
        regexes.extend(a.regex_rewrite.as_ref().and_then(|s| s.pattern.as_ref()));
        for hp in &a.hash_policy {
            if let Some(PolicySpecifier::Header(h)) = &hp.policy_specifier {
                regexes.extend(h.regex_rewrite.as_ref().and_then(|s| s.pattern.as_ref()));
            }
        }
        opt_duration("route", &r.name, "timeout", a.timeout.as_ref())?;
    }
    for m in regexes {
        // The same regexes repeat across routes and configurations; compile each once.
        if compiled.insert(m.regex.as_str()) {
            super::regex_ok(&m.regex).map_err(|reason| TranslateError::InvalidRegex {
                route: r.name.clone(),
                pattern: m.regex.clone(),
                reason,
            })?;
        }
    }
    Ok(())
}

/// A cluster's upstream TLS: its client certificate secret exists, and a
/// validation context names what it trusts.
fn upstream_tls(c: &Cluster, secrets: &HashSet<&str>) -> Result<(), TranslateError> {
    let Some(ts) = &c.transport_socket else {
        return Ok(());
    };
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        return Ok(());
    };
    if !any.type_url.ends_with("UpstreamTlsContext") {
        return Ok(());
    }
    let malformed = |reason: String| TranslateError::Malformed {
        kind: "cluster".into(),
        id: c.name.clone(),
        reason,
    };
    let tls = UpstreamTlsContext::decode(any.value.as_slice())
        .map_err(|e| malformed(format!("undecodable upstream TLS context: {e}")))?;
    let Some(common) = &tls.common_tls_context else {
        return Ok(());
    };
    for s in &common.tls_certificate_sds_secret_configs {
        if !secrets.contains(s.name.as_str()) {
            return Err(TranslateError::MissingClusterSecret {
                cluster: c.name.clone(),
                name: s.name.clone(),
            });
        }
    }
    if let Some(ValidationContextType::ValidationContext(v)) = &common.validation_context_type {
        let trusted = match v.trusted_ca.as_ref().and_then(|d| d.specifier.as_ref()) {
            Some(Specifier::InlineString(s)) => !s.is_empty(),
            Some(Specifier::Filename(f)) => !f.is_empty(),
            _ => false,
        };
        if !trusted {
            return Err(malformed("validation context without trusted_ca".into()));
        }
    }
    Ok(())
}

fn header_regex(h: &HeaderMatcher) -> Option<&RegexMatcher> {
    match &h.header_match_specifier {
        #[allow(deprecated)]
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => Some(re),
        Some(HeaderMatchSpecifier::StringMatch(sm)) => match &sm.match_pattern {
            Some(MatchPattern::SafeRegex(re)) => Some(re),
            _ => None,
        },
        _ => None,
    }
}

/// RDS names in the listener's connection managers and SDS names in its
/// TLS contexts must all exist.
fn references(
    l: &Listener,
    route_configs: &HashSet<&str>,
    secrets: &HashSet<&str>,
) -> Result<(), TranslateError> {
    for fc in &l.filter_chains {
        for f in &fc.filters {
            let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                continue;
            };
            if !any.type_url.ends_with("HttpConnectionManager") {
                continue;
            }
            let hcm = HttpConnectionManager::decode(any.value.as_slice()).map_err(|e| {
                TranslateError::Malformed {
                    kind: "listener".into(),
                    id: l.name.clone(),
                    reason: format!("undecodable connection manager: {e}"),
                }
            })?;
            if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier
                && !route_configs.contains(rds.route_config_name.as_str())
            {
                return Err(TranslateError::MissingRouteConfig {
                    listener: l.name.clone(),
                    name: rds.route_config_name.clone(),
                });
            }
        }
        if let Some(ts) = &fc.transport_socket
            && let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type
            && any.type_url.ends_with("DownstreamTlsContext")
        {
            let tls = DownstreamTlsContext::decode(any.value.as_slice()).map_err(|e| {
                TranslateError::Malformed {
                    kind: "listener".into(),
                    id: l.name.clone(),
                    reason: format!("undecodable TLS context: {e}"),
                }
            })?;
            for s in tls
                .common_tls_context
                .iter()
                .flat_map(|c| c.tls_certificate_sds_secret_configs.iter())
            {
                if !secrets.contains(s.name.as_str()) {
                    return Err(TranslateError::MissingSecret {
                        listener: l.name.clone(),
                        name: s.name.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

fn unique<'a>(kind: &str, names: impl Iterator<Item = &'a str>) -> Result<(), TranslateError> {
    let mut seen = HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(TranslateError::DuplicateName {
                kind: kind.to_string(),
                name: n.to_string(),
            });
        }
    }
    Ok(())
}

fn to_ms(d: &Duration) -> i64 {
    d.seconds.saturating_mul(1000) + i64::from(d.nanos) / 1_000_000
}

fn opt_duration(
    kind: &str,
    name: &str,
    field: &str,
    d: Option<&Duration>,
) -> Result<(), TranslateError> {
    match d {
        Some(_) => duration(kind, name, field, d),
        None => Ok(()),
    }
}

fn duration(
    kind: &str,
    name: &str,
    field: &str,
    d: Option<&Duration>,
) -> Result<(), TranslateError> {
    let v = d.map(to_ms).unwrap_or(0);
    if v > 0 && v < MAX_MS {
        Ok(())
    } else {
        Err(TranslateError::DurationOutOfRange {
            kind: kind.to_string(),
            name: name.to_string(),
            field: field.to_string(),
            value_ms: v,
        })
    }
}
