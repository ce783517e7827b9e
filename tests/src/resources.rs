//! The few Envoy resources the scripted server serves, shaped as the
//! translator emits them.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
    http_connection_manager::{CodecType, RouteSpecifier},
    http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use envoy_types::pb::google::protobuf::{Any, Duration};
use envoy_types::util::pack_any;
use gantry_shared::proto::plugins;

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn socket(port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    }
}

pub fn listener(name: &str, port: u16, route_config: &str) -> (String, Any) {
    listener_with(name, port, route_config, None)
}

/// [`listener`] whose HTTP filter chain starts with gantry-proxy's plugin
/// filter carrying `gateway` (consumers, credentials, plugin instances).
pub fn plugin_listener(
    name: &str,
    port: u16,
    route_config: &str,
    gateway: &plugins::Gateway,
) -> (String, Any) {
    listener_with(name, port, route_config, Some(gateway))
}

/// A plugin instance as the control plane sends it: Kong's name and config.
pub fn plugin(id: &str, name: &str, config: serde_json::Value) -> plugins::Plugin {
    plugins::Plugin {
        id: id.into(),
        name: name.into(),
        config_json: config.to_string(),
        secret_fields: Vec::new(),
    }
}

/// `route` running the plugin instances `ids` (of the Kong plugins `names`).
pub fn with_plugins(mut route: Route, ids: &[&str], names: &[&str]) -> Route {
    let per = plugins::PerRoute {
        route_id: route.name.clone(),
        service_id: "svc".into(),
        plugins: ids.iter().map(|s| s.to_string()).collect(),
        names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    route.typed_per_filter_config.insert(
        plugins::FILTER_NAME.into(),
        Any {
            type_url: plugins::PER_ROUTE_TYPE.into(),
            value: prost::Message::encode_to_vec(&per),
        },
    );
    route
}

fn listener_with(
    name: &str,
    port: u16,
    route_config: &str,
    gateway: Option<&plugins::Gateway>,
) -> (String, Any) {
    let mut http_filters = Vec::new();
    if let Some(g) = gateway {
        http_filters.push(HttpFilter {
            name: plugins::FILTER_NAME.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                type_url: plugins::GATEWAY_TYPE.into(),
                value: prost::Message::encode_to_vec(g),
            })),
            is_optional: true,
            ..Default::default()
        });
    }
    let hcm = HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        stat_prefix: route_config.into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_config.into(),
        })),
        http_filters: {
            http_filters.push(HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                    Router::default(),
                ))),
                ..Default::default()
            });
            http_filters
        },
        ..Default::default()
    };
    let l = Listener {
        name: name.into(),
        address: Some(socket(port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    (name.into(), pack_any(l))
}

/// A STATIC cluster of one endpoint.
pub fn cluster(name: &str, port: u16) -> (String, Any) {
    (name.into(), pack_any(static_cluster(name, &[port])))
}

/// A STATIC, round-robin cluster of endpoints on 127.0.0.1, to adjust
/// before packing with [`pack`].
pub fn static_cluster(name: &str, ports: &[u16]) -> Cluster {
    Cluster {
        name: name.into(),
        connect_timeout: Some(Duration {
            seconds: 5,
            nanos: 0,
        }),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: ports
                    .iter()
                    .map(|p| LbEndpoint {
                        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                            address: Some(socket(*p)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A named resource, as the scripted server takes it.
pub fn pack<M: prost::Name + prost::Message>(name: &str, m: M) -> (String, Any) {
    (name.into(), pack_any(m))
}

pub fn route(path: PathSpecifier, cluster: &str) -> Route {
    let name = match &path {
        PathSpecifier::Prefix(p) => format!("to-{cluster}{p}"),
        _ => format!("to-{cluster}"),
    };
    Route {
        name,
        r#match: Some(RouteMatch {
            path_specifier: Some(path),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn prefix(p: &str) -> PathSpecifier {
    PathSpecifier::Prefix(p.into())
}

pub fn safe_regex(re: &str) -> PathSpecifier {
    PathSpecifier::SafeRegex(RegexMatcher {
        regex: re.into(),
        ..Default::default()
    })
}

pub fn route_config(name: &str, routes: Vec<Route>) -> (String, Any) {
    let rc = RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    };
    (name.into(), pack_any(rc))
}

/// A route configuration with no virtual hosts of its own: its routes come
/// as route entries (gantry-proxy nodes).
pub fn entries_config(name: &str) -> (String, Any) {
    let rc = RouteConfiguration {
        name: name.into(),
        ..Default::default()
    };
    (name.into(), pack_any(rc))
}

/// Route entry `<config>/<id>`, host-less, its routes ranked in the given
/// order after `rank`.
pub fn route_entry(config: &str, id: &str, rank: u8, routes: Vec<Route>) -> (String, Any) {
    use gantry_shared::proto::route::{Ranked, RouteEntry};
    use prost::Message;
    let name = format!("{config}/{id}");
    let e = RouteEntry {
        name: name.clone(),
        route_configuration: config.into(),
        domains: Vec::new(),
        routes: routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| Ranked {
                route: Some(r),
                rank: vec![rank, i as u8],
            })
            .collect(),
    };
    let any = Any {
        type_url: gantry_shared::xds::ROUTE_ENTRY.into(),
        value: e.encode_to_vec(),
    };
    (name, any)
}
