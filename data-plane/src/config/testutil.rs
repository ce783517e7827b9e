//! Builders for the protos the control plane's translator emits, so tests
//! read like the resources they compile.

use super::*;
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, OutlierDetection,
    circuit_breakers::Thresholds as PbThresholds,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, HeaderValue, HeaderValueOption,
    SocketAddress, TransportSocket, address, config_source::ConfigSourceSpecifier,
    header_value_option::HeaderAppendAction, socket_address::PortSpecifier, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher as PbHeaderMatcher, Route as PbRoute, RouteAction, RouteMatch,
    VirtualHost as PbVirtualHost, header_matcher::HeaderMatchSpecifier, route::Action as PbAction,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
    http_connection_manager::{CodecType, RouteSpecifier, UpgradeConfig},
    http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use envoy_types::pb::google::protobuf::{BoolValue, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;

pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

pub fn ms(ms: i64) -> PbDuration {
    PbDuration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

pub fn u32v(v: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value: v })
}

pub fn boolv(v: bool) -> Option<BoolValue> {
    Some(BoolValue { value: v })
}

pub fn regex(re: &str) -> RegexMatcher {
    RegexMatcher {
        regex: re.into(),
        ..Default::default()
    }
}

// --- routes -----------------------------------------------------------------

pub fn action(cluster: &str) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

pub fn route_with(name: &str, path: PathSpecifier, a: RouteAction) -> PbRoute {
    PbRoute {
        name: name.into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(path),
            ..Default::default()
        }),
        action: Some(PbAction::Route(a)),
        ..Default::default()
    }
}

pub fn prefix(name: &str, p: &str, cluster: &str) -> PbRoute {
    route_with(name, PathSpecifier::Prefix(p.into()), action(cluster))
}

pub fn with_headers(mut r: PbRoute, headers: Vec<PbHeaderMatcher>) -> PbRoute {
    r.r#match.as_mut().unwrap().headers = headers;
    r
}

pub fn header(name: &str, spec: HeaderMatchSpecifier) -> PbHeaderMatcher {
    PbHeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

pub fn vhost(name: &str, domains: &[&str], routes: Vec<PbRoute>) -> PbVirtualHost {
    PbVirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

pub fn route_config(name: &str, vhosts: Vec<PbVirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vhosts,
        ..Default::default()
    }
}

pub fn table(rc: &RouteConfiguration) -> RouteTable {
    routes::compile(&rc.name, rc, &BTreeMap::new()).expect("route configuration compiles")
}

pub fn table_err(rc: &RouteConfiguration) -> String {
    routes::compile(&rc.name, rc, &BTreeMap::new()).expect_err("route configuration is refused")
}

pub fn hv(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

// --- clusters ---------------------------------------------------------------

pub fn socket(host: &str, port: u32) -> envoy_types::pb::envoy::config::core::v3::Address {
    envoy_types::pb::envoy::config::core::v3::Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

pub fn lb_endpoint(host: &str, port: u32, weight: Option<u32>, hostname: &str) -> LbEndpoint {
    LbEndpoint {
        load_balancing_weight: weight.map(|w| UInt32Value { value: w }),
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(host, port)),
            hostname: hostname.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn assignment(name: &str, eps: Vec<LbEndpoint>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: eps,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The translator's cluster for a plain service (no upstream).
pub fn cluster(name: &str, t: DiscoveryType, eps: Vec<LbEndpoint>) -> Cluster {
    Cluster {
        name: name.into(),
        connect_timeout: Some(ms(60_000)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(t as i32)),
        load_assignment: (t != DiscoveryType::Eds).then(|| assignment(name, eps)),
        eds_cluster_config: (t == DiscoveryType::Eds).then(|| EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.into(),
        }),
        circuit_breakers: Some(CircuitBreakers {
            thresholds: vec![PbThresholds {
                max_connections: u32v(100_000),
                max_pending_requests: u32v(100_000),
                max_requests: u32v(100_000),
                max_retries: u32v(1000),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn outlier_kong() -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: u32v(4),
        enforcing_consecutive_5xx: u32v(100),
        consecutive_gateway_failure: u32v(2),
        enforcing_consecutive_gateway_failure: u32v(100),
        enforcing_success_rate: u32v(0),
        base_ejection_time: Some(ms(30_000)),
        max_ejection_percent: u32v(100),
        ..Default::default()
    }
}

pub fn compile_cluster(c: &Cluster) -> Result<ClusterConfig, CompileError> {
    clusters::compile(&c.name, c, &BTreeMap::new())
}

// --- listeners --------------------------------------------------------------

pub fn router_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    }
}

/// The translator's connection manager.
pub fn hcm_with(route_config: &str, filters: Vec<HttpFilter>) -> HttpConnectionManager {
    HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        stat_prefix: route_config.into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_config.into(),
        })),
        use_remote_address: boolv(true),
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        http_filters: filters,
        ..Default::default()
    }
}

pub fn hcm_filter(h: HttpConnectionManager) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(h))),
    }
}

pub fn http_listener(name: &str, port: u32, route_config: &str) -> Listener {
    Listener {
        name: name.into(),
        address: Some(socket("0.0.0.0", port)),
        filter_chains: vec![FilterChain {
            filters: vec![hcm_filter(hcm_with(route_config, vec![router_filter()]))],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn tls_chain(
    name: &str,
    server_names: &[&str],
    secrets: &[&str],
    route_config: &str,
) -> FilterChain {
    let tls = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: secrets
                .iter()
                .map(|s| SdsSecretConfig {
                    name: s.to_string(),
                    sds_config: Some(ads()),
                })
                .collect(),
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    FilterChain {
        name: name.into(),
        filter_chain_match: (!server_names.is_empty()).then(|| FilterChainMatch {
            server_names: server_names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        filters: vec![hcm_filter(hcm_with(route_config, vec![router_filter()]))],
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
        }),
        ..Default::default()
    }
}

pub fn https_listener(name: &str, port: u32, chains: Vec<FilterChain>) -> Listener {
    Listener {
        name: name.into(),
        address: Some(socket("0.0.0.0", port)),
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                TlsInspector::default(),
            ))),
            ..Default::default()
        }],
        filter_chains: chains,
        ..Default::default()
    }
}

// --- requests ---------------------------------------------------------------

pub fn select<'a>(t: &'a RouteTable, authority: &str, path: &str) -> Option<Selected<'a>> {
    t.select(authority, path, &http::Method::GET, &http::HeaderMap::new())
}

pub fn selected_name(t: &RouteTable, authority: &str, path: &str) -> Option<String> {
    select(t, authority, path).map(|s| s.route.name.clone())
}

pub fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

pub fn forward(r: &Route) -> &Forward {
    match &r.action {
        Action::Forward(f) => f,
        other => panic!("not a forward: {other:?}"),
    }
}
