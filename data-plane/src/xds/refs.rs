//! What listeners and clusters reference by name, which is what the client
//! subscribes to on the named (non-wildcard) types: RDS route configurations
//! named by connection managers, EDS assignments of EDS clusters, and SDS
//! secrets named by TLS contexts.
//!
//! Anything undecodable is skipped here: the compiler is the one that
//! reports malformed resources.

use crate::config::ResourceSet;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use std::collections::BTreeSet;

/// Names referenced by a resource set, per named type.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refs {
    /// RDS: `RouteConfiguration` names.
    pub routes: BTreeSet<String>,
    /// EDS: `ClusterLoadAssignment` names (EDS service names).
    pub endpoints: BTreeSet<String>,
    /// SDS: `Secret` names.
    pub secrets: BTreeSet<String>,
}

/// Everything the set's listeners and clusters reference.
pub fn references(set: &ResourceSet) -> Refs {
    let mut r = Refs::default();
    for l in set.listeners.values() {
        listener(l, &mut r);
    }
    for (name, c) in &set.clusters {
        cluster(name, c, &mut r);
    }
    r
}

fn unpack<T: Message + Name + Default>(any: &Any) -> Option<T> {
    let full = any.type_url.rsplit('/').next()?;
    if full != T::full_name() {
        return None;
    }
    T::decode(any.value.as_slice()).ok()
}

fn listener(l: &Listener, r: &mut Refs) {
    for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        filter_chain(fc, r);
    }
}

fn filter_chain(fc: &FilterChain, r: &mut Refs) {
    for f in &fc.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            continue;
        };
        if let Some(hcm) = unpack::<HttpConnectionManager>(any)
            && let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier
            && !rds.route_config_name.is_empty()
        {
            r.routes.insert(rds.route_config_name.clone());
        }
    }
    if let Some(ts) = &fc.transport_socket {
        transport(ts, r);
    }
}

fn transport(ts: &TransportSocket, r: &mut Refs) {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        return;
    };
    if let Some(tls) = unpack::<DownstreamTlsContext>(any) {
        if let Some(c) = &tls.common_tls_context {
            common_tls(c, r);
        }
    } else if let Some(tls) = unpack::<UpstreamTlsContext>(any)
        && let Some(c) = &tls.common_tls_context
    {
        common_tls(c, r);
    }
}

fn common_tls(c: &CommonTlsContext, r: &mut Refs) {
    let mut add = |name: &str| {
        if !name.is_empty() {
            r.secrets.insert(name.to_string());
        }
    };
    for s in &c.tls_certificate_sds_secret_configs {
        add(&s.name);
    }
    match &c.validation_context_type {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => add(&s.name),
        Some(ValidationContextType::CombinedValidationContext(cv)) => {
            if let Some(s) = &cv.validation_context_sds_secret_config {
                add(&s.name);
            }
        }
        _ => {}
    }
}

fn cluster(key: &str, c: &Cluster, r: &mut Refs) {
    if c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)) {
        let service = c
            .eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(if c.name.is_empty() { key } else { &c.name });
        if !service.is_empty() {
            r.endpoints.insert(service.to_string());
        }
    }
    if let Some(ts) = &c.transport_socket {
        transport(ts, r);
    }
    for m in &c.transport_socket_matches {
        if let Some(ts) = &m.transport_socket {
            transport(ts, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
    use envoy_types::pb::envoy::config::listener::v3::Filter;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::CombinedCertificateValidationContext;
    use envoy_types::util::pack_any;

    fn sds(name: &str) -> SdsSecretConfig {
        SdsSecretConfig {
            name: name.into(),
            sds_config: None,
        }
    }

    fn chain(route: &str, tls: Option<Any>) -> FilterChain {
        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                config_source: None,
                route_config_name: route.into(),
            })),
            ..Default::default()
        };
        FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            transport_socket: tls.map(|any| TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(any)),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn listeners_reference_route_configs_and_secrets() {
        let tls = pack_any(DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![sds("cert-a"), sds("cert-b")],
                validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        validation_context_sds_secret_config: Some(sds("ca")),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut set = ResourceSet::default();
        set.listeners.insert(
            "https".into(),
            Listener {
                name: "https".into(),
                filter_chains: vec![chain("r-https", Some(tls))],
                default_filter_chain: Some(chain("r-default", None)),
                ..Default::default()
            },
        );
        // Not a connection manager, and an undecodable one: both skipped.
        set.listeners.insert(
            "odd".into(),
            Listener {
                filter_chains: vec![FilterChain {
                    filters: vec![
                        Filter {
                            name: "tcp".into(),
                            config_type: Some(filter::ConfigType::TypedConfig(Any {
                                type_url: "type.googleapis.com/x.Tcp".into(),
                                value: vec![1, 2, 3],
                            })),
                        },
                        Filter {
                            name: "hcm".into(),
                            config_type: Some(filter::ConfigType::TypedConfig(Any {
                                type_url: HttpConnectionManager::type_url(),
                                value: vec![0xff, 0xff],
                            })),
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let r = references(&set);
        assert_eq!(
            r.routes.iter().map(String::as_str).collect::<Vec<_>>(),
            ["r-default", "r-https"]
        );
        assert_eq!(
            r.secrets.iter().map(String::as_str).collect::<Vec<_>>(),
            ["ca", "cert-a", "cert-b"]
        );
        assert!(r.endpoints.is_empty());
    }

    #[test]
    fn eds_clusters_reference_their_service_name_or_their_name() {
        let eds = |name: &str, service: &str| Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: None,
                service_name: service.into(),
            }),
            ..Default::default()
        };
        let mut set = ResourceSet::default();
        set.clusters.insert("a".into(), eds("a", "svc-a"));
        set.clusters.insert("b".into(), eds("b", ""));
        set.clusters.insert(
            "c".into(),
            Cluster {
                name: "c".into(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::StrictDns as i32,
                )),
                transport_socket: Some(TransportSocket {
                    name: "tls".into(),
                    config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
                        UpstreamTlsContext {
                            common_tls_context: Some(CommonTlsContext {
                                tls_certificate_sds_secret_configs: vec![sds("client-cert")],
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ))),
                }),
                ..Default::default()
            },
        );
        let r = references(&set);
        assert_eq!(
            r.endpoints.iter().map(String::as_str).collect::<Vec<_>>(),
            ["b", "svc-a"]
        );
        assert_eq!(
            r.secrets.iter().map(String::as_str).collect::<Vec<_>>(),
            ["client-cert"]
        );
        assert!(r.routes.is_empty());
    }
}
