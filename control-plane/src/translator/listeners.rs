//! LDS: the plain `http` listener, and the `https` listener with one filter
//! chain per certificate, selected by SNI.

use super::clusters::socket;
use super::model::Model;
use super::{Flavour, ProxyOptions, TranslateError, ads_source, secret_name};
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
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
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use envoy_types::util::pack_any;
use std::collections::BTreeMap;

pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const ROUTER: &str = "envoy.filters.http.router";
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
pub const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

pub fn build(
    m: &Model,
    opts: &ProxyOptions,
    flavour: Flavour,
) -> Result<Vec<Listener>, TranslateError> {
    // Envoy nodes get only what their own filters enforce: Gantry's
    // filter, with every consumer's credentials, would be skipped there
    // and only widen what a node's feed reveals.
    let gateway = match flavour {
        Flavour::GantryProxy => super::plugins::gateway(m, opts),
        Flavour::Envoy => None,
    };
    let gateway = gateway.as_ref();
    let mut out = vec![Listener {
        name: "http".into(),
        address: Some(socket(&opts.listen_address, opts.http_port)),
        filter_chains: vec![FilterChain {
            filters: vec![hcm("http", flavour, gateway, m, opts)],
            ..Default::default()
        }],
        ..Default::default()
    }];

    // Each SNI may belong to one certificate only.
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut chains = Vec::new();
    for c in m.certificates.values().filter(|c| !c.snis.is_empty()) {
        for sni in &c.snis {
            if let Some(other) = owner.insert(sni, &c.id) {
                return Err(TranslateError::SniConflict {
                    certificate: c.id.clone(),
                    sni: sni.clone(),
                    other: other.to_string(),
                });
            }
        }
        let mut secrets = vec![secret_name(&c.id, false)];
        if c.alt.is_some() {
            secrets.push(secret_name(&c.id, true));
        }
        let tls = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: secrets
                    .into_iter()
                    .map(|name| SdsSecretConfig {
                        name,
                        sds_config: Some(ads_source()),
                    })
                    .collect(),
                alpn_protocols: vec!["h2".into(), "http/1.1".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        chains.push(FilterChain {
            name: secret_name(&c.id, false),
            filter_chain_match: Some(FilterChainMatch {
                server_names: c.snis.clone(),
                ..Default::default()
            }),
            filters: vec![hcm("https", flavour, gateway, m, opts)],
            transport_socket: Some(TransportSocket {
                name: TLS_SOCKET.into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
            }),
            ..Default::default()
        });
    }
    if !chains.is_empty() {
        out.push(Listener {
            name: "https".into(),
            address: Some(socket(&opts.listen_address, opts.https_port)),
            listener_filters: vec![ListenerFilter {
                name: TLS_INSPECTOR.into(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                    TlsInspector::default(),
                ))),
                ..Default::default()
            }],
            filter_chains: chains,
            ..Default::default()
        });
    }
    Ok(out)
}

/// The HTTP connection manager: routes from RDS `route_config`.
fn hcm(
    route_config: &str,
    flavour: Flavour,
    gateway: Option<&Any>,
    m: &Model,
    opts: &ProxyOptions,
) -> Filter {
    let mut http_filters = Vec::new();
    // Kong's plugins: optional, so a plain Envoy skips what it cannot run.
    if let Some(g) = gateway {
        http_filters.push(HttpFilter {
            name: super::plugins::FILTER_NAME.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(g.clone())),
            is_optional: true,
            ..Default::default()
        });
    }
    // Envoy's own filters for what they can express (see envoy_native.rs).
    if flavour == Flavour::Envoy {
        http_filters.extend(m.envoy_filters.iter().cloned());
    }
    http_filters.push(HttpFilter {
        name: ROUTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    });
    let cfg = HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        stat_prefix: route_config.into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: route_config.into(),
        })),
        use_remote_address: Some(BoolValue { value: true }),
        // Kong proxies WebSocket upgrades on any HTTP route; Envoy needs them enabled.
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        http_filters,
        // A client that stalls sending its headers is cut off (Envoy's
        // default waits for the 5 min stream idle timeout).
        request_headers_timeout: (opts.request_headers_timeout_ms > 0)
            .then(|| super::ms(opts.request_headers_timeout_ms)),
        // Kong routes and forwards the normalised path: `..`, `%2e` and
        // `//` cannot walk around a route's policies.
        normalize_path: Some(BoolValue { value: true }),
        merge_slashes: true,
        ..Default::default()
    };
    Filter {
        name: HCM.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(cfg))),
    }
}
