//! Checks the whole resource set before any of it is handed out: names are
//! unique per type, every reference (route -> cluster, listener -> RDS and
//! SDS, cluster -> SDS, EDS cluster -> assignment) resolves, regexes compile and durations
//! are in range. Any failure rejects the set; nothing partial escapes.

use super::{Resources, TranslateError};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, header_matcher::HeaderMatchSpecifier, route::Action,
    route_action::ClusterSpecifier, route_action::hash_policy::PolicySpecifier,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::Duration;
use prost::Message;
use std::collections::HashSet;

const MAX_MS: i64 = 1 << 31;

pub fn validate(res: &Resources) -> Result<(), TranslateError> {
    unique("listener", res.listeners.iter().map(|l| l.name.as_str()))?;
    unique(
        "route configuration",
        res.routes.iter().map(|r| r.name.as_str()),
    )?;
    unique("cluster", res.clusters.iter().map(|c| c.name.as_str()))?;
    unique(
        "cluster load assignment",
        res.endpoints.iter().map(|e| e.cluster_name.as_str()),
    )?;
    unique("secret", res.secrets.iter().map(|s| s.name.as_str()))?;

    let clusters: HashSet<&str> = res.clusters.iter().map(|c| c.name.as_str()).collect();
    let assignments: HashSet<&str> = res
        .endpoints
        .iter()
        .map(|e| e.cluster_name.as_str())
        .collect();
    let route_configs: HashSet<&str> = res.routes.iter().map(|r| r.name.as_str()).collect();
    let secrets: HashSet<&str> = res.secrets.iter().map(|s| s.name.as_str()).collect();

    for c in &res.clusters {
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
    for rc in &res.routes {
        unique(
            &format!("virtual host (route configuration {})", rc.name),
            rc.virtual_hosts.iter().map(|v| v.name.as_str()),
        )?;
        let mut domains = HashSet::new();
        for vh in &rc.virtual_hosts {
            for d in &vh.domains {
                if !domains.insert(d.to_ascii_lowercase()) {
                    return Err(TranslateError::DuplicateDomain {
                        config: rc.name.clone(),
                        domain: d.clone(),
                    });
                }
            }
            for r in &vh.routes {
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
                                config: rc.name.clone(),
                                route: r.name.clone(),
                                cluster: c.clone(),
                            });
                        }
                        _ => {}
                    }
                    regexes.extend(a.regex_rewrite.as_ref().and_then(|s| s.pattern.as_ref()));
                    for hp in &a.hash_policy {
                        if let Some(PolicySpecifier::Header(h)) = &hp.policy_specifier {
                            regexes
                                .extend(h.regex_rewrite.as_ref().and_then(|s| s.pattern.as_ref()));
                        }
                    }
                    opt_duration("route", &r.name, "timeout", a.timeout.as_ref())?;
                }
                for m in regexes {
                    // The same regexes repeat in every virtual host; compile each once.
                    if compiled.insert(m.regex.as_str()) {
                        super::regex_ok(&m.regex).map_err(|reason| {
                            TranslateError::InvalidRegex {
                                route: r.name.clone(),
                                pattern: m.regex.clone(),
                                reason,
                            }
                        })?;
                    }
                }
            }
        }
    }

    for l in &res.listeners {
        references(l, &route_configs, &secrets)?;
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
