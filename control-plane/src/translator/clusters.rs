//! CDS and EDS: one cluster per enabled service, and a load assignment for
//! every EDS cluster (services balancing over an upstream of IP targets).

use super::model::{ActiveCheck, Model, Service, Target, Upstream, host_port};
use super::{ads_source, ms, secret_name};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection,
    circuit_breakers::Thresholds,
    cluster::{
        ClusterDiscoveryType, CommonLbConfig, DiscoveryType, DnsLookupFamily, EdsClusterConfig,
        LbPolicy,
    },
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, DataSource, HeaderValue, HeaderValueOption, HealthCheck, RoutingPriority,
    SocketAddress, TransportSocket, UpstreamHttpProtocolOptions, address, data_source,
    header_value_option::HeaderAppendAction,
    health_check::{GrpcHealthCheck, HealthChecker, HttpHealthCheck, TcpHealthCheck},
    socket_address::PortSpecifier,
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, endpoint::HealthCheckConfig,
    lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
    UpstreamTlsContext, common_tls_context::ValidationContextType,
    subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::envoy::r#type::v3::{Int64Range, Percent};
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use envoy_types::util::pack_any;
use std::collections::HashMap;
use std::net::IpAddr;

pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// All clusters (sorted by name) and EDS assignments (sorted by cluster).
pub fn build(m: &Model) -> (Vec<Cluster>, Vec<ClusterLoadAssignment>) {
    let mut clusters = Vec::with_capacity(m.services.len());
    let mut endpoints = Vec::new();
    for s in m.services.values() {
        let (c, cla) = cluster(m, s);
        clusters.push(c);
        endpoints.extend(cla);
    }
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    endpoints.sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    (clusters, endpoints)
}

fn u32v(v: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value: v })
}

/// `filter_metadata["gantry"]["kong_upstream"]`: the Kong upstream's name.
fn upstream_metadata(name: &str) -> envoy_types::pb::envoy::config::core::v3::Metadata {
    use envoy_types::pb::google::protobuf::Struct;
    use gantry_shared::proto::value::string;
    envoy_types::pb::envoy::config::core::v3::Metadata {
        filter_metadata: [(
            "gantry".to_string(),
            Struct {
                fields: [("kong_upstream".to_string(), string(name))]
                    .into_iter()
                    .collect(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

fn cluster(m: &Model, s: &Service) -> (Cluster, Option<ClusterLoadAssignment>) {
    let name = s.cluster();
    let mut c = Cluster {
        name: name.clone(),
        connect_timeout: Some(ms(s.connect_timeout)),
        // Envoy's default of 1024 would throttle a Kong-sized gateway; Kong has no such limit.
        circuit_breakers: Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                priority: RoutingPriority::Default as i32,
                max_connections: u32v(100_000),
                max_pending_requests: u32v(100_000),
                max_requests: u32v(100_000),
                max_retries: u32v(1000),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut cla = None;
    match m.upstream_of(s) {
        Some(u) => {
            // The Kong upstream it balances over, for Kong's health metrics.
            c.metadata = Some(upstream_metadata(&u.name));
            c.lb_policy = match u.algorithm.as_str() {
                "least-connections" => LbPolicy::LeastRequest,
                // Envoy has no latency balancer; least-request is the closest.
                "latency" => LbPolicy::LeastRequest,
                "consistent-hashing" => LbPolicy::RingHash,
                _ => LbPolicy::RoundRobin,
            } as i32;
            let active = active_check(u, s);
            let targets: Vec<&Target> = m.targets_of(u).iter().filter(|t| t.weight > 0).collect();
            let lb_endpoints = targets
                .iter()
                .map(|t| {
                    let hc_host = active
                        .is_some()
                        .then(|| u.host_header.clone().unwrap_or_else(|| t.host.clone()));
                    lb_endpoint(
                        &t.host,
                        t.port,
                        Some(t.weight),
                        kong_host_header(u, s, t),
                        hc_host,
                    )
                })
                .collect();
            let assignment = ClusterLoadAssignment {
                cluster_name: name.clone(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints,
                    ..Default::default()
                }],
                ..Default::default()
            };
            if targets.iter().all(|t| t.is_ip()) {
                // EDS endpoints must be IPs; no targets at all is an empty
                // assignment, so requests get a 503 as in Kong.
                c.cluster_discovery_type =
                    Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
                c.eds_cluster_config = Some(EdsClusterConfig {
                    eds_config: Some(ads_source()),
                    service_name: name.clone(),
                });
                cla = Some(assignment);
            } else {
                c.cluster_discovery_type =
                    Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
                c.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
                c.load_assignment = Some(assignment);
            }
            if let Some(hc) = active {
                c.health_checks = vec![hc];
            }
            c.outlier_detection = outlier(u);
            if !c.health_checks.is_empty() || c.outlier_detection.is_some() {
                // Kong never sends traffic to unhealthy targets; Envoy's panic mode
                // (default below 50% healthy) would, so it is turned off.
                c.common_lb_config = Some(CommonLbConfig {
                    healthy_panic_threshold: Some(Percent { value: 0.0 }),
                    ..Default::default()
                });
            }
        }
        None => {
            let ip = s.host.parse::<IpAddr>().is_ok();
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(if ip {
                DiscoveryType::Static as i32
            } else {
                DiscoveryType::StrictDns as i32
            }));
            if !ip {
                c.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
            }
            c.load_assignment = Some(ClusterLoadAssignment {
                cluster_name: name.clone(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![lb_endpoint(&s.host, s.port, None, String::new(), None)],
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    if s.tls() {
        c.transport_socket = Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
                upstream_tls(m, s),
            ))),
        });
    }
    if s.tls() || s.http2() {
        let protocol = if s.http2() {
            ProtocolConfig::Http2ProtocolOptions(Default::default())
        } else {
            ProtocolConfig::HttpProtocolOptions(Default::default())
        };
        let opts = HttpProtocolOptions {
            // Kong sends the Host it proxies with as SNI (proxy_ssl_name $upstream_host).
            upstream_http_protocol_options: s.tls().then(|| UpstreamHttpProtocolOptions {
                auto_sni: true,
                ..Default::default()
            }),
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(protocol),
                },
            )),
            ..Default::default()
        };
        // A single entry, so the map's iteration order cannot make encoding unstable.
        c.typed_extension_protocol_options =
            HashMap::from([(HTTP_PROTOCOL_OPTIONS.to_string(), pack_any(opts))]);
    }
    (c, cla)
}

/// Where Kong sends the service's TLS: SNI, verification (`tls_verify`,
/// `tls_verify_depth`, `ca_certificates`) and the client certificate.
fn upstream_tls(m: &Model, s: &Service) -> UpstreamTlsContext {
    // The name Kong verifies and sends as SNI (`proxy_ssl_name
    // $upstream_host`): the upstream's host_header, else the service host;
    // None when it is each target's own host.
    let name = match m.upstream_of(s) {
        Some(u) => u.host_header.clone(),
        None => Some(s.host.clone()),
    };
    let sni = name
        .clone()
        .filter(|h| h.parse::<IpAddr>().is_err())
        .unwrap_or_default();
    let mut common = CommonTlsContext::default();
    if s.tls_verify {
        let names: Vec<String> = match (name, m.upstream_of(s)) {
            (Some(n), _) => vec![n],
            // Kong verifies each target against its own host; one cluster
            // can only accept any of them.
            (None, Some(u)) => {
                let mut hosts: Vec<String> = m
                    .targets_of(u)
                    .iter()
                    .filter(|t| t.weight > 0)
                    .map(|t| t.host.clone())
                    .collect();
                hosts.sort();
                hosts.dedup();
                hosts
            }
            (None, None) => Vec::new(),
        };
        common.validation_context_type = Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(trusted_ca(m, s)),
                max_verify_depth: s.tls_verify_depth.map(|d| UInt32Value { value: d }),
                match_typed_subject_alt_names: names.iter().map(|n| san_matcher(n)).collect(),
                ..Default::default()
            },
        ));
    }
    if let Some(cert) = m.client_certificate_of(s) {
        common.tls_certificate_sds_secret_configs = vec![SdsSecretConfig {
            name: secret_name(&cert.id, false),
            sds_config: Some(ads_source()),
        }];
    }
    UpstreamTlsContext {
        sni,
        // Left out when empty, so services without these settings encode
        // as before.
        common_tls_context: (common != CommonTlsContext::default()).then_some(common),
        ..Default::default()
    }
}

/// Kong's system trust store when a service lists no CA certificates.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The service's CA certificates, PEMs concatenated in listed order (each
/// once, each ending in a newline); else the system bundle.
fn trusted_ca(m: &Model, s: &Service) -> DataSource {
    let mut pems = String::new();
    let mut seen = Vec::new();
    for id in &s.ca_certificates {
        let Some(ca) = m.ca_certificates.get(id) else {
            continue;
        };
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        pems.push_str(&ca.cert);
        if !ca.cert.ends_with('\n') {
            pems.push('\n');
        }
    }
    let specifier = if seen.is_empty() {
        data_source::Specifier::Filename(SYSTEM_CA_BUNDLE.into())
    } else {
        data_source::Specifier::InlineString(pems)
    };
    DataSource {
        specifier: Some(specifier),
        ..Default::default()
    }
}

/// An exact SAN match: IP_ADDRESS for an IP literal (in its canonical
/// text, as Envoy prints SAN IPs), DNS otherwise.
fn san_matcher(name: &str) -> SubjectAltNameMatcher {
    let (san_type, exact) = match name.parse::<IpAddr>() {
        Ok(ip) => (SanType::IpAddress, ip.to_string()),
        Err(_) => (SanType::Dns, name.to_string()),
    };
    SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(exact)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Host header Kong sends for a target when preserve_host is off:
/// the upstream's host_header or the target's host, with the target port
/// unless it is the scheme's default.
pub fn kong_host_header(u: &Upstream, s: &Service, t: &Target) -> String {
    let host = u.host_header.as_deref().unwrap_or(&t.host);
    let port = (t.port != s.default_port()).then_some(t.port);
    host_port(host, port)
}

fn lb_endpoint(
    host: &str,
    port: u16,
    weight: Option<u32>,
    hostname: String,
    hc_hostname: Option<String>,
) -> LbEndpoint {
    LbEndpoint {
        load_balancing_weight: weight.map(|w| UInt32Value { value: w }),
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(host, port)),
            hostname,
            health_check_config: hc_hostname.map(|h| HealthCheckConfig {
                hostname: h,
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn socket(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port as u32)),
            ..Default::default()
        })),
    }
}

/// Kong seconds (fractional) as a Duration, at least 1 ms (Envoy rejects 0).
fn secs(s: f64) -> Duration {
    ms(((s * 1000.0).round() as i64).max(1))
}

/// Sorted [s, s+1) ranges for a list of statuses, minus `except`.
fn ranges(statuses: &[u16], except: &[u16]) -> Vec<Int64Range> {
    let mut v: Vec<u16> = statuses
        .iter()
        .copied()
        .filter(|s| !except.contains(s))
        .collect();
    v.sort_unstable();
    v.dedup();
    v.into_iter()
        .map(|s| Int64Range {
            start: s as i64,
            end: s as i64 + 1,
        })
        .collect()
}

fn active_check(u: &Upstream, s: &Service) -> Option<HealthCheck> {
    let a: &ActiveCheck = &u.active;
    if a.healthy_interval <= 0.0 && a.unhealthy_interval <= 0.0 {
        return None;
    }
    // Kong checks healthy targets every healthy.interval and unhealthy ones every
    // unhealthy.interval; Envoy has one interval plus an unhealthy override.
    let (interval, unhealthy_interval) =
        match (a.healthy_interval > 0.0, a.unhealthy_interval > 0.0) {
            (true, true) => (a.healthy_interval, Some(secs(a.unhealthy_interval))),
            (true, false) => (a.healthy_interval, None),
            _ => (a.unhealthy_interval, None),
        };
    let tcp = a.kind == "tcp";
    let failures = if tcp { a.tcp_failures } else { a.http_failures };
    let checker = match a.kind.as_str() {
        "tcp" => HealthChecker::TcpHealthCheck(TcpHealthCheck::default()),
        // Envoy's gRPC health check needs an HTTP/2 cluster.
        "grpc" | "grpcs" if s.http2() => HealthChecker::GrpcHealthCheck(GrpcHealthCheck::default()),
        _ => HealthChecker::HttpHealthCheck(HttpHealthCheck {
            path: a.http_path.clone(),
            expected_statuses: ranges(&a.healthy_statuses, &[]),
            // Kong counts unhealthy statuses up to http_failures; Envoy only
            // counts retriable ones (others eject at once).
            retriable_statuses: ranges(&a.unhealthy_statuses, &a.healthy_statuses),
            request_headers_to_add: a
                .headers
                .iter()
                .flat_map(|(k, vals)| {
                    vals.iter().map(move |v| HeaderValueOption {
                        header: Some(HeaderValue {
                            key: k.clone(),
                            value: v.clone(),
                            ..Default::default()
                        }),
                        append_action: HeaderAppendAction::AppendIfExistsOrAdd as i32,
                        ..Default::default()
                    })
                })
                .collect(),
            ..Default::default()
        }),
    };
    Some(HealthCheck {
        timeout: Some(secs(a.timeout)),
        interval: Some(secs(interval)),
        // Kong probes at its interval whether or not traffic flows (Envoy waits 60s by default).
        no_traffic_interval: Some(secs(interval)),
        unhealthy_interval,
        unhealthy_threshold: u32v(failures.max(1)),
        healthy_threshold: u32v(a.successes.max(1)),
        health_checker: Some(checker),
        ..Default::default()
    })
}

fn outlier(u: &Upstream) -> Option<OutlierDetection> {
    let p = &u.passive;
    if p.http_failures == 0 && p.tcp_failures == 0 {
        return None;
    }
    let on = |n: u32| u32v(if n > 0 { 100 } else { 0 });
    Some(OutlierDetection {
        consecutive_5xx: (p.http_failures > 0).then_some(UInt32Value {
            value: p.http_failures,
        }),
        enforcing_consecutive_5xx: on(p.http_failures),
        consecutive_gateway_failure: (p.tcp_failures > 0).then_some(UInt32Value {
            value: p.tcp_failures,
        }),
        enforcing_consecutive_gateway_failure: on(p.tcp_failures),
        // Kong has no success-rate ejection.
        enforcing_success_rate: u32v(0),
        base_ejection_time: Some(ms(30_000)),
        // Kong can mark every target unhealthy; Envoy caps ejection at 10% by default.
        max_ejection_percent: u32v(100),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn find<'a>(cs: &'a [Cluster], name: &str) -> &'a Cluster {
        cs.iter().find(|c| c.name == name).expect(name)
    }

    fn discovery(c: &Cluster) -> DiscoveryType {
        match c.cluster_discovery_type {
            Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).unwrap(),
            _ => panic!("no discovery type"),
        }
    }

    fn eps(cla: &ClusterLoadAssignment) -> Vec<(String, u32, Option<u32>, String)> {
        cla.endpoints[0]
            .lb_endpoints
            .iter()
            .map(|e| {
                let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                    panic!()
                };
                let Some(address::Address::SocketAddress(sa)) =
                    &ep.address.as_ref().unwrap().address
                else {
                    panic!()
                };
                let Some(PortSpecifier::PortValue(p)) = sa.port_specifier else {
                    panic!()
                };
                (
                    sa.address.clone(),
                    p,
                    e.load_balancing_weight.map(|w| w.value),
                    ep.hostname.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn plain_hosts_static_and_strict_dns() {
        let res = run(&[
            service("ip", "10.0.0.1", 8080),
            service_with(
                "dns",
                "backend.internal",
                80,
                serde_json::json!({"connect_timeout": 1500}),
            ),
        ]);
        let ip = find(&res.clusters, "service.ip");
        assert_eq!(discovery(ip), DiscoveryType::Static);
        assert_eq!(
            eps(ip.load_assignment.as_ref().unwrap()),
            vec![("10.0.0.1".into(), 8080, None, String::new())]
        );
        let dns = find(&res.clusters, "service.dns");
        assert_eq!(discovery(dns), DiscoveryType::StrictDns);
        assert_eq!(dns.dns_lookup_family, DnsLookupFamily::V4Preferred as i32);
        assert_eq!(
            dns.connect_timeout,
            Some(Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        let th = &dns.circuit_breakers.as_ref().unwrap().thresholds[0];
        assert_eq!(th.max_connections.unwrap().value, 100_000);
        assert_eq!(th.max_retries.unwrap().value, 1000);
        assert!(res.endpoints.is_empty());
    }

    #[test]
    fn ip_targets_make_eds_and_weight_zero_is_dropped() {
        let up = upstream("pool", serde_json::json!({}));
        let uid = up.id.clone();
        let res = run(&[
            service("svc", "pool", 80),
            up,
            target(&uid, "10.0.0.2:9000", 50),
            target(&uid, "10.0.0.1", 100),
            target(&uid, "10.0.0.3:9000", 0),
        ]);
        let c = find(&res.clusters, "service.svc");
        assert_eq!(discovery(c), DiscoveryType::Eds);
        let eds = c.eds_cluster_config.as_ref().unwrap();
        assert_eq!(eds.service_name, "service.svc");
        assert!(c.load_assignment.is_none());
        assert_eq!(res.endpoints.len(), 1);
        assert_eq!(res.endpoints[0].cluster_name, "service.svc");
        assert_eq!(
            eps(&res.endpoints[0]),
            vec![
                ("10.0.0.1".into(), 8000, Some(100), "10.0.0.1:8000".into()),
                ("10.0.0.2".into(), 9000, Some(50), "10.0.0.2:9000".into()),
            ]
        );
        assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
    }

    #[test]
    fn hostname_target_makes_strict_dns_and_no_targets_is_empty_eds() {
        let up = upstream("pool", serde_json::json!({"host_header": "api.internal"}));
        let uid = up.id.clone();
        let empty = upstream("empty", serde_json::json!({}));
        let res = run(&[
            service("svc", "pool", 80),
            service("none", "empty", 80),
            up,
            empty,
            target(&uid, "10.0.0.1:80", 10),
            target(&uid, "backend.internal:8080", 20),
        ]);
        let c = find(&res.clusters, "service.svc");
        assert_eq!(discovery(c), DiscoveryType::StrictDns);
        assert_eq!(
            eps(c.load_assignment.as_ref().unwrap()),
            vec![
                ("10.0.0.1".into(), 80, Some(10), "api.internal".into()),
                (
                    "backend.internal".into(),
                    8080,
                    Some(20),
                    "api.internal:8080".into()
                ),
            ]
        );
        let n = find(&res.clusters, "service.none");
        assert_eq!(discovery(n), DiscoveryType::Eds);
        let cla = res
            .endpoints
            .iter()
            .find(|e| e.cluster_name == "service.none")
            .unwrap();
        assert!(cla.endpoints[0].lb_endpoints.is_empty());
    }

    #[test]
    fn lb_policies() {
        const CASES: [(&str, LbPolicy); 4] = [
            ("round-robin", LbPolicy::RoundRobin),
            ("least-connections", LbPolicy::LeastRequest),
            ("latency", LbPolicy::LeastRequest),
            ("consistent-hashing", LbPolicy::RingHash),
        ];
        let mut ents = Vec::new();
        for (alg, _) in CASES {
            ents.push(service(alg, &format!("{alg}.up"), 80));
            ents.push(upstream(
                &format!("{alg}.up"),
                serde_json::json!({"algorithm": alg}),
            ));
        }
        let res = run(&ents);
        for (alg, want) in CASES {
            let c = find(&res.clusters, &format!("service.{alg}"));
            assert_eq!(c.lb_policy, want as i32, "{alg}");
        }
    }

    #[test]
    fn health_checks_and_outlier_detection() {
        let up = upstream(
            "pool",
            serde_json::json!({"healthchecks": {
                "active": {
                    "http_path": "/status",
                    "timeout": 2,
                    "healthy": {"interval": 5, "successes": 2, "http_statuses": [200]},
                    "unhealthy": {"interval": 1, "http_failures": 3, "http_statuses": [500, 503, 200]}
                },
                "passive": {"unhealthy": {"http_failures": 4, "tcp_failures": 2}}
            }}),
        );
        let uid = up.id.clone();
        let tcp = upstream(
            "tcp",
            serde_json::json!({"healthchecks": {"active": {
                "type": "tcp",
                "unhealthy": {"interval": 3, "tcp_failures": 0}
            }}}),
        );
        let res = run(&[
            service("svc", "pool", 80),
            service("t", "tcp", 80),
            service("plain", "pool.example.com", 80),
            up,
            tcp,
            target(&uid, "10.0.0.1:80", 100),
        ]);
        let c = find(&res.clusters, "service.svc");
        let hc = &c.health_checks[0];
        assert_eq!(hc.timeout, Some(ms(2000)));
        assert_eq!(hc.interval, Some(ms(5000)));
        assert_eq!(hc.unhealthy_interval, Some(ms(1000)));
        assert_eq!(hc.unhealthy_threshold.unwrap().value, 3);
        assert_eq!(hc.healthy_threshold.unwrap().value, 2);
        let Some(HealthChecker::HttpHealthCheck(h)) = &hc.health_checker else {
            panic!("http check expected")
        };
        assert_eq!(h.path, "/status");
        assert_eq!(
            h.expected_statuses,
            vec![Int64Range {
                start: 200,
                end: 201
            }]
        );
        assert_eq!(
            h.retriable_statuses,
            vec![
                Int64Range {
                    start: 500,
                    end: 501
                },
                Int64Range {
                    start: 503,
                    end: 504
                }
            ]
        );
        let od = c.outlier_detection.as_ref().unwrap();
        assert_eq!(od.consecutive_5xx.unwrap().value, 4);
        assert_eq!(od.consecutive_gateway_failure.unwrap().value, 2);
        assert_eq!(od.enforcing_consecutive_gateway_failure.unwrap().value, 100);
        assert_eq!(od.base_ejection_time, Some(ms(30_000)));
        assert_eq!(
            c.common_lb_config.as_ref().unwrap().healthy_panic_threshold,
            Some(Percent { value: 0.0 })
        );
        // The endpoint's health-check Host is the target host.
        let cla = res
            .endpoints
            .iter()
            .find(|e| e.cluster_name == "service.svc")
            .unwrap();
        let Some(HostIdentifier::Endpoint(ep)) = &cla.endpoints[0].lb_endpoints[0].host_identifier
        else {
            panic!()
        };
        assert_eq!(
            ep.health_check_config.as_ref().unwrap().hostname,
            "10.0.0.1"
        );

        let t = find(&res.clusters, "service.t");
        let hc = &t.health_checks[0];
        assert_eq!(hc.interval, Some(ms(3000)));
        assert_eq!(hc.unhealthy_interval, None);
        assert_eq!(hc.unhealthy_threshold.unwrap().value, 1);
        assert!(matches!(
            hc.health_checker,
            Some(HealthChecker::TcpHealthCheck(_))
        ));
        assert!(t.outlier_detection.is_none());

        let plain = find(&res.clusters, "service.plain");
        assert!(plain.health_checks.is_empty() && plain.outlier_detection.is_none());
        assert!(plain.common_lb_config.is_none());
    }

    #[test]
    fn tls_and_http2_upstreams() {
        let res = run(&[
            service_with(
                "s",
                "secure.example.com",
                443,
                serde_json::json!({"protocol": "https"}),
            ),
            service_with(
                "g",
                "10.0.0.9",
                50051,
                serde_json::json!({"protocol": "grpc", "path": null}),
            ),
        ]);
        let s = find(&res.clusters, "service.s");
        let ts = s.transport_socket.as_ref().unwrap();
        assert_eq!(ts.name, "envoy.transport_sockets.tls");
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
            panic!()
        };
        let tls: UpstreamTlsContext = prost::Message::decode(any.value.as_slice()).unwrap();
        assert_eq!(tls.sni, "secure.example.com");
        let g = find(&res.clusters, "service.g");
        assert!(g.transport_socket.is_none());
        let any = &g.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS];
        let opts: HttpProtocolOptions = prost::Message::decode(any.value.as_slice()).unwrap();
        assert!(matches!(
            opts.upstream_protocol_options,
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(_))
                }
            ))
        ));
    }

    fn upstream_tls_of(c: &Cluster) -> UpstreamTlsContext {
        let ts = c.transport_socket.as_ref().expect("TLS cluster");
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
            panic!("typed config expected")
        };
        assert!(
            any.type_url.ends_with("UpstreamTlsContext"),
            "{}",
            any.type_url
        );
        prost::Message::decode(any.value.as_slice()).unwrap()
    }

    fn validation(tls: &UpstreamTlsContext) -> &CertificateValidationContext {
        match &tls
            .common_tls_context
            .as_ref()
            .unwrap()
            .validation_context_type
        {
            Some(ValidationContextType::ValidationContext(v)) => v,
            other => panic!("inline validation context expected, got {other:?}"),
        }
    }

    fn trusted(v: &CertificateValidationContext) -> &data_source::Specifier {
        v.trusted_ca.as_ref().unwrap().specifier.as_ref().unwrap()
    }

    fn sans(v: &CertificateValidationContext) -> Vec<(SanType, String)> {
        v.match_typed_subject_alt_names
            .iter()
            .map(|m| {
                let Some(MatchPattern::Exact(e)) = &m.matcher.as_ref().unwrap().match_pattern
                else {
                    panic!("exact matcher expected")
                };
                (SanType::try_from(m.san_type).unwrap(), e.clone())
            })
            .collect()
    }

    fn sds_names(tls: &UpstreamTlsContext) -> Vec<String> {
        let common = tls.common_tls_context.as_ref().unwrap();
        for s in &common.tls_certificate_sds_secret_configs {
            assert_eq!(s.sds_config, Some(ads_source()), "SDS over ADS");
        }
        common
            .tls_certificate_sds_secret_configs
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    const CLIENT: &str = "11111111-1111-4111-8111-111111111111";
    const UP_CLIENT: &str = "22222222-2222-4222-8222-222222222222";
    const PLAIN_CLIENT: &str = "33333333-3333-4333-8333-333333333333";

    #[test]
    fn upstream_tls_verification_and_client_certificate() {
        let ca1 = ca_certificate(CA_PEM);
        let ca2 = ca_certificate(CA2_PEM);
        let up = upstream(
            "pool",
            serde_json::json!({"host_header": "api.internal", "client_certificate": {"id": UP_CLIENT}}),
        );
        let uid = up.id.clone();
        let bare = upstream("bare", serde_json::json!({}));
        let bid = bare.id.clone();
        let mut ents = vec![
            ca1.clone(),
            ca2.clone(),
            service_with(
                "v",
                "secure.example.com",
                443,
                serde_json::json!({
                    "protocol": "https",
                    "tls_verify": true,
                    "tls_verify_depth": 3,
                    "ca_certificates": [ca2.id, ca1.id, ca2.id],
                    "client_certificate": {"id": CLIENT},
                }),
            ),
            service_with(
                "sys",
                "2001:0db8::0001",
                443,
                serde_json::json!({"protocol": "https", "tls_verify": true}),
            ),
            service_with(
                "off",
                "off.example.com",
                443,
                serde_json::json!({"protocol": "https", "tls_verify": false, "ca_certificates": [ca1.id]}),
            ),
            service_with(
                "via-up",
                "pool",
                443,
                serde_json::json!({"protocol": "https", "tls_verify": true, "ca_certificates": [ca1.id]}),
            ),
            service_with(
                "via-bare",
                "bare",
                443,
                serde_json::json!({"protocol": "grpcs", "tls_verify": true}),
            ),
            service_with(
                "plain",
                "plain.example.com",
                80,
                serde_json::json!({"client_certificate": {"id": PLAIN_CLIENT}}),
            ),
            up,
            bare,
            target(&uid, "10.0.0.1:443", 100),
            target(&bid, "b.internal:443", 100),
            target(&bid, "10.0.0.2:443", 100),
            target(&bid, "a.internal:443", 100),
            target(&bid, "gone.internal:443", 0),
        ];
        for id in [CLIENT, UP_CLIENT, PLAIN_CLIENT] {
            ents.extend(certificate(id, &[]));
        }
        let res = run(&ents);

        // Verification on, CAs in listed order (each once), depth, DNS SAN = SNI.
        let tls = upstream_tls_of(find(&res.clusters, "service.v"));
        assert_eq!(tls.sni, "secure.example.com");
        let v = validation(&tls);
        assert_eq!(
            trusted(v),
            &data_source::Specifier::InlineString(format!("{CA2_PEM}{CA_PEM}"))
        );
        assert!(CA_PEM.ends_with('\n') && CA2_PEM.ends_with('\n'));
        assert_eq!(v.max_verify_depth, Some(UInt32Value { value: 3 }));
        assert_eq!(
            sans(v),
            vec![(SanType::Dns, "secure.example.com".to_string())]
        );
        #[allow(deprecated)]
        let legacy_sans = v.match_subject_alt_names.is_empty();
        assert!(legacy_sans);
        assert_eq!(sds_names(&tls), vec![format!("cert.{CLIENT}")]);

        // No CAs: the system bundle; an IP host: no SNI, an IP SAN in canonical form.
        let tls = upstream_tls_of(find(&res.clusters, "service.sys"));
        assert_eq!(tls.sni, "");
        let v = validation(&tls);
        assert_eq!(
            trusted(v),
            &data_source::Specifier::Filename("/etc/ssl/certs/ca-certificates.crt".into())
        );
        assert_eq!(v.max_verify_depth, None);
        assert_eq!(
            sans(v),
            vec![(SanType::IpAddress, "2001:db8::1".to_string())]
        );
        assert!(
            tls.common_tls_context
                .as_ref()
                .unwrap()
                .tls_certificate_sds_secret_configs
                .is_empty()
        );

        // tls_verify false: nothing but the SNI, as before.
        let tls = upstream_tls_of(find(&res.clusters, "service.off"));
        assert_eq!(tls.sni, "off.example.com");
        assert!(tls.common_tls_context.is_none());

        // Through an upstream: its host_header is the name; its client certificate is used.
        let tls = upstream_tls_of(find(&res.clusters, "service.via-up"));
        assert_eq!(tls.sni, "api.internal");
        let v = validation(&tls);
        assert_eq!(
            trusted(v),
            &data_source::Specifier::InlineString(CA_PEM.to_string())
        );
        assert_eq!(sans(v), vec![(SanType::Dns, "api.internal".to_string())]);
        assert_eq!(sds_names(&tls), vec![format!("cert.{UP_CLIENT}")]);

        // An upstream without host_header: each live target's host.
        let tls = upstream_tls_of(find(&res.clusters, "service.via-bare"));
        assert_eq!(tls.sni, "");
        assert_eq!(
            sans(validation(&tls)),
            vec![
                (SanType::IpAddress, "10.0.0.2".to_string()),
                (SanType::Dns, "a.internal".to_string()),
                (SanType::Dns, "b.internal".to_string()),
            ]
        );

        // Client certificates without SNIs get their secret; one on a plain
        // HTTP service is unused and gets none.
        let names: Vec<&str> = res.secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                format!("cert.{CLIENT}").as_str(),
                format!("cert.{UP_CLIENT}").as_str()
            ]
        );
        assert!(
            find(&res.clusters, "service.plain")
                .transport_socket
                .is_none()
        );
    }

    #[test]
    fn service_settings_win_over_the_upstream_client_certificate() {
        let up = upstream(
            "pool",
            serde_json::json!({"host_header": "api.internal", "client_certificate": {"id": UP_CLIENT}}),
        );
        let mut ents = vec![
            service_with(
                "s",
                "pool",
                443,
                serde_json::json!({"protocol": "https", "client_certificate": {"id": CLIENT}}),
            ),
            up,
        ];
        ents.extend(certificate(CLIENT, &[]));
        ents.extend(certificate(UP_CLIENT, &["sni.example.com"]));
        let res = run(&ents);
        let tls = upstream_tls_of(find(&res.clusters, "service.s"));
        // No verification asked for: a client certificate alone.
        assert!(
            tls.common_tls_context
                .as_ref()
                .unwrap()
                .validation_context_type
                .is_none()
        );
        assert_eq!(sds_names(&tls), vec![format!("cert.{CLIENT}")]);
        let names: Vec<&str> = res.secrets.iter().map(|s| s.name.as_str()).collect();
        assert!(
            names.contains(&format!("cert.{CLIENT}").as_str()),
            "{names:?}"
        );
        // Still served for its SNI, once.
        assert_eq!(
            names
                .iter()
                .filter(|n| **n == format!("cert.{UP_CLIENT}"))
                .count(),
            1
        );
    }

    #[test]
    fn dangling_tls_references_are_refused() {
        let missing = "44444444-4444-4444-8444-444444444444";
        let svc = service_with(
            "s",
            "secure.example.com",
            443,
            serde_json::json!({"protocol": "https", "tls_verify": true, "ca_certificates": [missing]}),
        );
        let sid = svc.id.clone();
        let err = crate::translator::translate(
            &[svc],
            crate::translator::Flavour::Envoy,
            &Default::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            crate::translator::TranslateError::Malformed {
                kind: "services".into(),
                id: sid,
                reason: format!("ca_certificates names a missing ca_certificate {missing}"),
            }
        );
        let svc = service_with(
            "s",
            "secure.example.com",
            443,
            serde_json::json!({"protocol": "https", "client_certificate": {"id": missing}}),
        );
        let err = crate::translator::translate(
            &[svc],
            crate::translator::Flavour::Envoy,
            &Default::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, crate::translator::TranslateError::Malformed { ref reason, .. } if reason.contains("client_certificate")),
            "{err}"
        );
    }

    #[test]
    fn validation_catches_a_cluster_secret_that_is_not_emitted() {
        let mut ents = vec![service_with(
            "s",
            "secure.example.com",
            443,
            serde_json::json!({"protocol": "https", "client_certificate": {"id": CLIENT}}),
        )];
        ents.extend(certificate(CLIENT, &[]));
        let model = super::super::model::Model::build(&ents).unwrap();
        let (clusters, endpoints) = build(&model);
        let res = crate::translator::Resources {
            clusters,
            endpoints,
            ..Default::default()
        };
        assert_eq!(
            super::super::validate::validate(&res).unwrap_err(),
            crate::translator::TranslateError::MissingClusterSecret {
                cluster: "service.s".into(),
                name: format!("cert.{CLIENT}"),
            }
        );
    }
}
