//! Clusters and endpoints, as the translator emits them and with Envoy's
//! defaults.

use super::testutil::*;
use super::*;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, CommonLbConfig, DiscoveryType, LbConfig, MaglevLbConfig, RingHashLbConfig,
};
use envoy_types::pb::envoy::config::core::v3::{
    HealthCheck as PbHealthCheck, TransportSocket, UpstreamHttpProtocolOptions,
    header_value_option::HeaderAppendAction,
    health_check::{GrpcHealthCheck, HealthChecker, HttpHealthCheck, TcpHealthCheck},
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::endpoint::HealthCheckConfig;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::envoy::r#type::v3::{Int64Range, Percent};
use envoy_types::util::pack_any;
use std::collections::HashMap;
use std::time::Duration;

fn ip(s: &str) -> EndpointAddress {
    EndpointAddress::Ip(s.parse().unwrap())
}

#[test]
fn static_cluster_as_translated() {
    let c = cluster(
        "service.ip",
        DiscoveryType::Static,
        vec![lb_endpoint("10.0.0.1", 8080, None, "")],
    );
    let cc = compile_cluster(&c).unwrap();
    assert_eq!(cc.name, "service.ip");
    assert_eq!(cc.discovery, Discovery::Static);
    assert_eq!(cc.lb, LbPolicy::RoundRobin);
    assert_eq!(cc.connect_timeout, Duration::from_secs(60));
    assert_eq!(cc.endpoints.len(), 1);
    let e = &cc.endpoints[0];
    assert_eq!(e.address, ip("10.0.0.1:8080"));
    // load_balancing_weight defaults to 1.
    assert_eq!(e.weight, 1);
    assert_eq!(e.hostname, None);
    assert_eq!(e.health, EndpointHealth::Unknown);
    assert_eq!(
        cc.thresholds,
        Thresholds {
            max_connections: 100_000,
            max_pending_requests: 100_000,
            max_requests: 100_000,
            max_retries: 1000,
            max_connection_pools: None,
        }
    );
    // The HIGH priority keeps Envoy's defaults.
    assert_eq!(cc.thresholds_high, Thresholds::default());
    assert!(!cc.http2 && cc.tls.is_none() && cc.health_check.is_none() && cc.outlier.is_none());
    assert_eq!(cc.panic_threshold_percent, 50.0);
}

#[test]
fn envoy_defaults() {
    let cc = compile_cluster(&Cluster {
        name: "bare".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(cc.discovery, Discovery::Static);
    assert_eq!(cc.connect_timeout, Duration::from_secs(5));
    assert_eq!(cc.thresholds, Thresholds::default());
    assert_eq!(
        (
            cc.thresholds.max_connections,
            cc.thresholds.max_pending_requests,
            cc.thresholds.max_requests,
            cc.thresholds.max_retries
        ),
        (1024, 1024, 1024, 3)
    );
    assert_eq!(cc.panic_threshold_percent, 50.0);
    assert_eq!(cc.dns_refresh_rate, Duration::from_secs(5));
    assert_eq!(cc.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(cc.per_connection_buffer_limit, 1024 * 1024);
    assert!(cc.endpoints.is_empty());
}

#[test]
fn static_cluster_needs_ip_addresses() {
    let c = cluster(
        "service.bad",
        DiscoveryType::Static,
        vec![lb_endpoint("backend.internal", 80, None, "")],
    );
    let e = compile_cluster(&c).unwrap_err();
    assert_eq!((e.kind, e.name.as_str()), ("Cluster", "service.bad"));
    assert!(
        e.reason.contains("malformed IP address: backend.internal"),
        "{e}"
    );
}

#[test]
fn strict_dns_cluster() {
    let mut c = cluster(
        "service.dns",
        DiscoveryType::StrictDns,
        vec![
            lb_endpoint("backend.internal", 8080, Some(20), "api.internal:8080"),
            lb_endpoint("10.0.0.1", 80, Some(10), "api.internal"),
        ],
    );
    c.dns_lookup_family = 3; // V4_PREFERRED, as the translator sets it
    let cc = compile_cluster(&c).unwrap();
    assert_eq!(cc.discovery, Discovery::StrictDns);
    assert_eq!(cc.dns_lookup_family, DnsLookupFamily::V4Preferred);
    assert_eq!(
        cc.endpoints[0].address,
        EndpointAddress::Dns("backend.internal".into(), 8080)
    );
    assert_eq!(cc.endpoints[0].weight, 20);
    assert_eq!(
        cc.endpoints[0].hostname.as_deref(),
        Some("api.internal:8080")
    );
    assert_eq!(cc.endpoints[1].address, ip("10.0.0.1:80"));
}

#[test]
fn eds_clusters_take_their_assignment() {
    let c = cluster("service.svc", DiscoveryType::Eds, vec![]);
    // No assignment yet: no endpoints, not an error.
    let cc = compile_cluster(&c).unwrap();
    assert_eq!(cc.discovery, Discovery::Eds);
    assert_eq!(cc.eds_service_name.as_deref(), Some("service.svc"));
    assert!(cc.endpoints.is_empty());
    assert!(cc.warming);

    let mut cla = BTreeMap::new();
    cla.insert(
        "service.svc".to_string(),
        assignment(
            "service.svc",
            vec![
                lb_endpoint("10.0.0.1", 8000, Some(100), "10.0.0.1:8000"),
                lb_endpoint("10.0.0.2", 9000, Some(50), "10.0.0.2:9000"),
            ],
        ),
    );
    let cc = clusters::compile("service.svc", &c, &cla).unwrap();
    assert!(!cc.warming);
    assert_eq!(
        cc.endpoints
            .iter()
            .map(|e| (e.address.clone(), e.weight))
            .collect::<Vec<_>>(),
        vec![(ip("10.0.0.1:8000"), 100), (ip("10.0.0.2:9000"), 50)]
    );

    // An empty assignment is not warming: the cluster has no endpoints.
    let mut empty = BTreeMap::new();
    empty.insert("service.svc".to_string(), assignment("service.svc", vec![]));
    let cc = clusters::compile("service.svc", &c, &empty).unwrap();
    assert!(!cc.warming && cc.endpoints.is_empty());
    let mut misnamed = BTreeMap::new();
    misnamed.insert("service.svc".to_string(), assignment("other", vec![]));
    let e = clusters::compile("service.svc", &c, &misnamed).unwrap_err();
    assert_eq!(e.kind, "ClusterLoadAssignment");

    // service_name empty: the cluster name is the assignment name.
    let mut c2 = c.clone();
    c2.eds_cluster_config.as_mut().unwrap().service_name.clear();
    assert_eq!(
        clusters::compile("service.svc", &c2, &cla)
            .unwrap()
            .endpoints
            .len(),
        2
    );
    // A different service name.
    let mut c3 = c.clone();
    c3.eds_cluster_config.as_mut().unwrap().service_name = "other".into();
    assert!(
        clusters::compile("service.svc", &c3, &cla)
            .unwrap()
            .endpoints
            .is_empty()
    );

    // An assignment Envoy would refuse names the assignment.
    let mut bad = BTreeMap::new();
    bad.insert(
        "service.svc".to_string(),
        assignment(
            "service.svc",
            vec![lb_endpoint("10.0.0.1", 80, Some(0), "")],
        ),
    );
    let e = clusters::compile("service.svc", &c, &bad).unwrap_err();
    assert_eq!(
        (e.kind, e.name.as_str()),
        ("ClusterLoadAssignment", "service.svc")
    );
    assert!(
        e.reason
            .contains("load_balancing_weight must be at least 1"),
        "{e}"
    );
    let mut dns = BTreeMap::new();
    dns.insert(
        "service.svc".to_string(),
        assignment(
            "service.svc",
            vec![lb_endpoint("backend.internal", 80, None, "")],
        ),
    );
    let e = clusters::compile("service.svc", &c, &dns).unwrap_err();
    assert!(e.reason.contains("malformed IP address"), "{e}");
}

#[test]
fn endpoint_details() {
    let mut ep = lb_endpoint("10.0.0.1", 80, None, "");
    ep.health_status = 3; // DRAINING
    if let Some(
        envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(e),
    ) = ep.host_identifier.as_mut()
    {
        e.health_check_config = Some(HealthCheckConfig {
            port_value: 8081,
            hostname: "hc.internal".into(),
            ..Default::default()
        });
    }
    let mut cla = assignment("c", vec![ep]);
    cla.endpoints[0].priority = 2;
    let eps = clusters::endpoints(&cla, true).unwrap();
    assert_eq!(eps[0].health, EndpointHealth::Draining);
    assert_eq!(eps[0].priority, 2);
    assert_eq!(eps[0].health_check_hostname.as_deref(), Some("hc.internal"));
    assert_eq!(eps[0].health_check_port, Some(8081));
}

#[test]
fn lb_policy_mapping() {
    let with = |policy: i32, cfg: Option<LbConfig>| {
        compile_cluster(&Cluster {
            name: "c".into(),
            lb_policy: policy,
            lb_config: cfg,
            ..Default::default()
        })
    };
    assert_eq!(with(0, None).unwrap().lb, LbPolicy::RoundRobin);
    let lr = with(1, None).unwrap();
    assert_eq!(
        (lr.lb, lr.least_request_choice_count),
        (LbPolicy::LeastRequest, 2)
    );
    assert_eq!(
        with(2, None).unwrap().lb,
        LbPolicy::RingHash {
            min_ring: 1024,
            max_ring: 8 * 1024 * 1024
        }
    );
    assert_eq!(with(3, None).unwrap().lb, LbPolicy::Random);
    let mg = with(5, None).unwrap();
    assert_eq!((mg.lb, mg.maglev_table_size), (LbPolicy::Maglev, 65537));
    let rh = with(
        2,
        Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value { value: 64 }),
            maximum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value { value: 128 }),
            ..Default::default()
        })),
    )
    .unwrap();
    assert_eq!(
        rh.lb,
        LbPolicy::RingHash {
            min_ring: 64,
            max_ring: 128
        }
    );
    let e = with(
        2,
        Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value { value: 200 }),
            maximum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value { value: 100 }),
            ..Default::default()
        })),
    )
    .unwrap_err();
    assert!(
        e.reason
            .contains("minimum_ring_size (200) > maximum_ring_size (100)"),
        "{e}"
    );
    let e = with(
        5,
        Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
            table_size: Some(envoy_types::pb::google::protobuf::UInt64Value { value: 65536 }),
        })),
    )
    .unwrap_err();
    assert!(e.reason.contains("must be prime"), "{e}");
    assert!(
        with(6, None)
            .unwrap_err()
            .reason
            .contains("CLUSTER_PROVIDED")
    );
}

#[test]
fn discovery_types() {
    let with = |t: ClusterDiscoveryType| {
        compile_cluster(&Cluster {
            name: "c".into(),
            cluster_discovery_type: Some(t),
            ..Default::default()
        })
    };
    assert_eq!(
        with(ClusterDiscoveryType::Type(0)).unwrap().discovery,
        Discovery::Static
    );
    assert_eq!(
        with(ClusterDiscoveryType::Type(1)).unwrap().discovery,
        Discovery::StrictDns
    );
    assert_eq!(
        with(ClusterDiscoveryType::Type(3)).unwrap().discovery,
        Discovery::Eds
    );
    assert!(
        with(ClusterDiscoveryType::Type(2))
            .unwrap_err()
            .reason
            .contains("LOGICAL_DNS")
    );
    assert!(
        with(ClusterDiscoveryType::Type(4))
            .unwrap_err()
            .reason
            .contains("ORIGINAL_DST")
    );
}

fn kong_health_check(checker: HealthChecker) -> PbHealthCheck {
    PbHealthCheck {
        timeout: Some(ms(2000)),
        interval: Some(ms(5000)),
        no_traffic_interval: Some(ms(5000)),
        unhealthy_interval: Some(ms(1000)),
        unhealthy_threshold: u32v(3),
        healthy_threshold: u32v(2),
        health_checker: Some(checker),
        ..Default::default()
    }
}

#[test]
fn health_checks_as_translated() {
    let http_check = HttpHealthCheck {
        path: "/status".into(),
        expected_statuses: vec![
            Int64Range {
                start: 200,
                end: 201,
            },
            Int64Range {
                start: 302,
                end: 303,
            },
        ],
        retriable_statuses: vec![Int64Range {
            start: 500,
            end: 501,
        }],
        request_headers_to_add: vec![hv("x-probe", "1", HeaderAppendAction::AppendIfExistsOrAdd)],
        ..Default::default()
    };
    let mut c = cluster("service.svc", DiscoveryType::Eds, vec![]);
    c.health_checks = vec![kong_health_check(HealthChecker::HttpHealthCheck(
        http_check,
    ))];
    c.outlier_detection = Some(outlier_kong());
    c.common_lb_config = Some(CommonLbConfig {
        healthy_panic_threshold: Some(Percent { value: 0.0 }),
        ..Default::default()
    });
    let cc = compile_cluster(&c).unwrap();
    let hc = cc.health_check.as_ref().unwrap();
    assert_eq!(hc.timeout, Duration::from_secs(2));
    assert_eq!(hc.interval, Duration::from_secs(5));
    assert_eq!(hc.no_traffic_interval, Duration::from_secs(5));
    assert_eq!(hc.unhealthy_interval, Duration::from_secs(1));
    // Edge intervals default to the (unhealthy) interval.
    assert_eq!(hc.unhealthy_edge_interval, Duration::from_secs(1));
    assert_eq!(hc.healthy_edge_interval, Duration::from_secs(5));
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (2, 3));
    assert!(hc.reuse_connection);
    let http = hc.http.as_ref().unwrap();
    assert_eq!(http.path, "/status");
    assert_eq!(http.expected_statuses, vec![200..201, 302..303]);
    assert_eq!(http.retriable_statuses, vec![500..501]);
    assert_eq!(http.method, http::Method::GET);
    assert!(http.host.is_none() && !http.http2);
    assert_eq!(
        http.request_headers.as_ref().unwrap().add[0].name,
        "x-probe"
    );
    assert!(!hc.tcp && hc.grpc.is_none());
    assert_eq!(cc.panic_threshold_percent, 0.0);

    let o = cc.outlier.as_ref().unwrap();
    assert_eq!((o.consecutive_5xx, o.enforcing_consecutive_5xx), (4, 100));
    assert_eq!(
        (
            o.consecutive_gateway_failure,
            o.enforcing_consecutive_gateway_failure
        ),
        (2, 100)
    );
    assert_eq!(o.enforcing_success_rate, 0);
    assert_eq!(o.max_ejection_percent, 100);
    assert_eq!(o.base_ejection_time, Duration::from_secs(30));
    // Envoy's defaults for what the translator leaves out.
    assert_eq!(o.interval, Duration::from_secs(10));
    assert_eq!(o.max_ejection_time, Duration::from_secs(300));
    assert_eq!(o.success_rate_stdev_factor, 1900);
    assert!(o.successful_active_health_check_uneject_host);

    let defaults = clusters_outlier_defaults();
    assert_eq!(
        (
            defaults.consecutive_5xx,
            defaults.enforcing_consecutive_gateway_failure
        ),
        (5, 0)
    );
    assert_eq!(defaults.max_ejection_percent, 10);

    // Default expected status is 200 only.
    let mut c = cluster("c", DiscoveryType::Static, vec![]);
    c.health_checks = vec![kong_health_check(HealthChecker::HttpHealthCheck(
        HttpHealthCheck {
            path: "/".into(),
            ..Default::default()
        },
    ))];
    assert_eq!(
        compile_cluster(&c)
            .unwrap()
            .health_check
            .unwrap()
            .http
            .unwrap()
            .expected_statuses,
        vec![200..201]
    );

    c.health_checks = vec![kong_health_check(HealthChecker::TcpHealthCheck(
        TcpHealthCheck::default(),
    ))];
    let hc = compile_cluster(&c).unwrap().health_check.unwrap();
    assert!(hc.tcp);
    c.health_checks = vec![kong_health_check(HealthChecker::GrpcHealthCheck(
        GrpcHealthCheck::default(),
    ))];
    let hc = compile_cluster(&c).unwrap().health_check.unwrap();
    assert_eq!(hc.grpc.unwrap().service_name, "");
}

fn clusters_outlier_defaults() -> Outlier {
    let mut c = Cluster {
        name: "c".into(),
        ..Default::default()
    };
    c.outlier_detection = Some(Default::default());
    compile_cluster(&c).unwrap().outlier.unwrap()
}

#[test]
fn bad_health_checks_are_errors() {
    let http = |start: i64, end: i64| {
        kong_health_check(HealthChecker::HttpHealthCheck(HttpHealthCheck {
            path: "/".into(),
            expected_statuses: vec![Int64Range { start, end }],
            ..Default::default()
        }))
    };
    let cases: Vec<(Vec<PbHealthCheck>, &str)> = vec![
        (vec![http(99, 200)], "expecting start >= 100"),
        (vec![http(200, 601)], "expecting end <= 600"),
        (vec![http(300, 300)], "expecting start < end"),
        (
            vec![http(200, 201), http(200, 201)],
            "Multiple health checks not supported",
        ),
        (
            vec![PbHealthCheck {
                interval: None,
                ..http(200, 201)
            }],
            "interval is required",
        ),
        (
            vec![kong_health_check(HealthChecker::HttpHealthCheck(
                HttpHealthCheck::default(),
            ))],
            "path must not be empty",
        ),
    ];
    for (hcs, needle) in cases {
        let c = Cluster {
            name: "c".into(),
            health_checks: hcs,
            ..Default::default()
        };
        let e = compile_cluster(&c).unwrap_err();
        assert!(e.reason.contains(needle), "{e}");
    }
}

#[test]
fn tls_and_http2_upstreams_as_translated() {
    let tls = |sni: &str| TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
            UpstreamTlsContext {
                sni: sni.into(),
                ..Default::default()
            },
        ))),
    };
    let opts = |h2: bool, auto_sni: bool| {
        HashMap::from([(
            clusters::HTTP_PROTOCOL_OPTIONS.to_string(),
            pack_any(HttpProtocolOptions {
                upstream_http_protocol_options: auto_sni.then(|| UpstreamHttpProtocolOptions {
                    auto_sni: true,
                    ..Default::default()
                }),
                upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                    ExplicitHttpConfig {
                        protocol_config: Some(if h2 {
                            ProtocolConfig::Http2ProtocolOptions(Default::default())
                        } else {
                            ProtocolConfig::HttpProtocolOptions(Default::default())
                        }),
                    },
                )),
                ..Default::default()
            }),
        )])
    };
    let mut s = cluster(
        "service.s",
        DiscoveryType::StrictDns,
        vec![lb_endpoint("secure.example.com", 443, None, "")],
    );
    s.transport_socket = Some(tls("secure.example.com"));
    s.typed_extension_protocol_options = opts(false, true);
    let cc = compile_cluster(&s).unwrap();
    assert_eq!(
        cc.tls,
        Some(UpstreamTls {
            sni: Some("secure.example.com".into()),
            auto_sni: true,
            auto_san_validation: false,
            auto_host_sni: false,
            alpn: vec![],
            verify: None,
            client_certificate: None,
        })
    );
    assert!(!cc.http2);

    let mut g = cluster(
        "service.g",
        DiscoveryType::Static,
        vec![lb_endpoint("10.0.0.9", 50051, None, "")],
    );
    g.typed_extension_protocol_options = opts(true, false);
    let cc = compile_cluster(&g).unwrap();
    assert!(cc.http2 && cc.tls.is_none());

    // An IP service: empty SNI means none.
    let mut i = cluster(
        "service.i",
        DiscoveryType::Static,
        vec![lb_endpoint("10.0.0.9", 443, None, "")],
    );
    i.transport_socket = Some(tls(""));
    assert_eq!(compile_cluster(&i).unwrap().tls.unwrap().sni, None);

    let mut bad = g.clone();
    bad.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions".into(),
        Default::default(),
    );
    let e = compile_cluster(&bad).unwrap_err();
    assert!(e.reason.contains("TcpProtocolOptions"), "{e}");
}

#[test]
fn unsupported_cluster_settings_are_refused_by_name() {
    let c = Cluster {
        name: "c".into(),
        lb_subset_config: Some(Default::default()),
        dns_resolvers: vec![socket("8.8.8.8", 53)],
        ..Default::default()
    };
    let e = compile_cluster(&c).unwrap_err();
    assert!(
        e.reason
            .contains("unsupported fields set: dns_resolvers, lb_subset_config"),
        "{e}"
    );
}

#[test]
fn upstream_certificate_validation_and_client_certificates() {
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
        common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        StringMatcher, string_matcher::MatchPattern,
    };
    const CA: &str = include_str!("../../../tests/fixtures/tls/secure.example.com.rsa.crt");
    let exact = |t: SanType, v: &str| SubjectAltNameMatcher {
        san_type: t as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(v.into())),
            ..Default::default()
        }),
        ..Default::default()
    };
    let with = |vc: CertificateValidationContext, sds: Vec<&str>| {
        let mut c = cluster(
            "service.s",
            DiscoveryType::StrictDns,
            vec![lb_endpoint("secure.example.com", 443, None, "")],
        );
        c.transport_socket = Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
                UpstreamTlsContext {
                    sni: "secure.example.com".into(),
                    common_tls_context: Some(CommonTlsContext {
                        validation_context_type: Some(ValidationContextType::ValidationContext(vc)),
                        tls_certificate_sds_secret_configs: sds
                            .into_iter()
                            .map(|n| SdsSecretConfig {
                                name: n.into(),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))),
        });
        c
    };
    let inline = |s: &str| {
        Some(DataSource {
            specifier: Some(Specifier::InlineString(s.into())),
            ..Default::default()
        })
    };
    let vc = CertificateValidationContext {
        trusted_ca: inline(CA),
        match_typed_subject_alt_names: vec![
            exact(SanType::Dns, "secure.example.com"),
            exact(SanType::IpAddress, "10.0.0.9"),
        ],
        max_verify_depth: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 2 }),
        ..Default::default()
    };
    let tls = compile_cluster(&with(vc.clone(), vec!["cert.client"]))
        .unwrap()
        .tls
        .unwrap();
    let v = tls.verify.expect("verification configured");
    assert_eq!(v.trusted_ca.len(), 1);
    assert_eq!(
        v.san,
        vec![
            SanMatch::Dns("secure.example.com".into()),
            SanMatch::Ip("10.0.0.9".parse().unwrap())
        ]
    );
    assert_eq!(v.max_depth, Some(2));
    assert!(!v.accept_untrusted);
    assert_eq!(tls.client_certificate.as_deref(), Some("cert.client"));

    // An empty validation context verifies nothing, as in Envoy.
    let none = compile_cluster(&with(Default::default(), vec![])).unwrap();
    assert_eq!(none.tls.unwrap().verify, None);

    let refused = [
        (
            CertificateValidationContext {
                match_typed_subject_alt_names: vec![exact(SanType::Dns, "a.example.com")],
                ..Default::default()
            },
            "without trusted CA is insecure",
        ),
        (
            CertificateValidationContext {
                trusted_ca: inline("not a certificate"),
                ..Default::default()
            },
            "Failed to load trusted CA certificates from <inline>",
        ),
        (
            CertificateValidationContext {
                trusted_ca: inline(CA),
                verify_certificate_spki: vec!["abc".into()],
                ..Default::default()
            },
            "unsupported field set: verify_certificate_spki",
        ),
        (
            CertificateValidationContext {
                trusted_ca: inline(CA),
                match_typed_subject_alt_names: vec![exact(SanType::Uri, "spiffe://x")],
                ..Default::default()
            },
            "only DNS and IP_ADDRESS",
        ),
        (
            CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(Specifier::Filename("/nonexistent/ca.pem".into())),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "Failed to load trusted CA certificates from /nonexistent/ca.pem",
        ),
    ];
    for (vc, needle) in refused {
        let e = compile_cluster(&with(vc, vec![])).unwrap_err();
        assert!(e.reason.contains(needle), "{needle}: {e}");
    }
    let e = compile_cluster(&with(vc.clone(), vec!["a", "b"])).unwrap_err();
    assert!(e.reason.contains("exactly one"), "{e}");

    // A client certificate that has not arrived keeps the cluster warming.
    let mut set = ResourceSet::default();
    set.clusters
        .insert("service.s".into(), with(vc, vec!["cert.client"]));
    let compiled = compile(&set).unwrap();
    assert!(compiled.clusters["service.s"].warming);
}
