//! LDS: listeners running Envoy's HTTP connection manager with routes
//! from RDS over ADS, plain or TLS with filter chains selected by SNI.

use super::clusters::{EndpointAddress, socket_address};
use super::{fields, reject_rest, type_name, unpack};
use crate::plugins::Gateway;
use envoy_types::pb::envoy::config::core::v3::transport_socket;
use envoy_types::pb::envoy::config::core::v3::{
    ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, Listener, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use prost::Name;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1 or HTTP/2 (prior knowledge, or ALPN on TLS).
    Auto,
    Http1,
    Http2,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    /// The RDS route configuration name.
    pub route_config: String,
    pub stat_prefix: String,
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    /// `upgrade_configs` has an enabled websocket entry.
    pub websocket: bool,
    pub codec: Codec,
    /// `server` response header value (Envoy's default "envoy"), ready to
    /// send: made once here, not per response. None: a value Envoy accepts
    /// (only NUL, CR and LF are refused) but a header cannot carry, such
    /// as another control character; no `server` header is sent then.
    pub server_name: Option<http::HeaderValue>,
    /// The router's `suppress_envoy_headers` (no x-envoy-* headers added).
    pub suppress_envoy_headers: bool,
    /// Optional HTTP filters this proxy does not implement and skips, by name.
    pub skipped_filters: Vec<String>,
    /// Kong's plugins (the `gantry.filters.http.plugins` filter), when in the chain.
    pub gateway: Option<Arc<Gateway>>,
    /// Default 1 MiB.
    pub per_connection_buffer_limit: u32,
    pub tls: Option<ListenerTls>,
    /// What a client may send, and how long it may take.
    pub limits: HttpLimits,
    /// `normalize_path` and `merge_slashes`.
    pub path_rules: super::path_normalize::PathRules,
}

/// The connection manager's limits on what clients send, with Envoy's
/// defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpLimits {
    /// `max_request_headers_kb` (60 KiB): the request line and headers.
    pub max_request_headers: usize,
    /// `common_http_protocol_options.max_headers_count` (100).
    pub max_headers: usize,
    /// `request_headers_timeout` (off): from the first byte to the end of
    /// the headers.
    pub request_headers_timeout: Option<Duration>,
    /// `stream_idle_timeout` (5 min): a request body that stalls this
    /// long is answered 408 `stream timeout`.
    pub stream_idle_timeout: Option<Duration>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_request_headers: 60 * 1024,
            max_headers: 100,
            request_headers_timeout: None,
            stream_idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ListenerTls {
    pub chains: Vec<TlsChain>,
    /// Without the TLS inspector listener filter Envoy never learns the SNI
    /// before choosing a filter chain: only a chain without server names
    /// can be chosen.
    pub tls_inspector: bool,
    exact: HashMap<String, usize>,
    catch_all: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TlsChain {
    /// Lower-cased; `*.example.com` wildcards allowed.
    pub server_names: Vec<String>,
    /// The first SDS certificate name.
    pub secret: String,
    /// Every SDS certificate name (e.g. an RSA and an ECDSA pair), in order.
    pub secrets: Vec<String>,
    pub alpn: Vec<Vec<u8>>,
}

impl ListenerTls {
    /// Envoy's filter chain match on server names: the exact name, then
    /// wildcards from the longest (`*.b.example.com` before `*.example.com`),
    /// then a chain without server names. None: Envoy closes the connection.
    pub fn select(&self, sni: Option<&str>) -> Option<&TlsChain> {
        let sni = if self.tls_inspector {
            sni.filter(|s| !s.is_empty())
        } else {
            None
        };
        if let Some(s) = sni {
            let s = s.to_ascii_lowercase();
            if let Some(i) = self.exact.get(&s) {
                return Some(&self.chains[*i]);
            }
            // Every `.` after the first character starts a wildcard suffix,
            // longest first (Envoy: `find('.', 1)` then each next dot).
            let dots = s
                .bytes()
                .enumerate()
                .skip(1)
                .filter(|(_, b)| *b == b'.')
                .map(|(i, _)| i);
            for p in dots {
                if p >= s.len() - 1 {
                    break;
                }
                let wildcard = format!("*{}", &s[p..]);
                if let Some(i) = self.exact.get(&wildcard) {
                    return Some(&self.chains[*i]);
                }
            }
        }
        self.catch_all.map(|i| &self.chains[i])
    }
}

/// The connection manager settings that matter to the proxy.
#[derive(Clone, Debug, PartialEq)]
struct Hcm {
    route_config: String,
    stat_prefix: String,
    use_remote_address: bool,
    xff_num_trusted_hops: u32,
    websocket: bool,
    codec: Codec,
    server_name: Option<http::HeaderValue>,
    suppress_envoy_headers: bool,
    skipped_filters: Vec<String>,
    gateway: Option<Arc<Gateway>>,
    limits: HttpLimits,
    path_rules: super::path_normalize::PathRules,
}

pub(crate) fn compile(name: &str, l: &Listener) -> Result<ListenerConfig, String> {
    let mut rest = l.clone();
    rest.name.clear();
    let address = match socket_address(rest.address.take().as_ref(), true)
        .map_err(|e| format!("address: {e}"))?
    {
        EndpointAddress::Ip(a) => a,
        EndpointAddress::Dns(h, _) => return Err(format!("address: malformed IP address: {h}")),
    };
    let chains = std::mem::take(&mut rest.filter_chains);
    let mut tls_inspector = false;
    for lf in std::mem::take(&mut rest.listener_filters) {
        if lf.filter_disabled.is_some() {
            return Err(format!(
                "listener filter {:?}: filter_disabled is not supported",
                lf.name
            ));
        }
        let is_inspector = match &lf.config_type {
            Some(listener_filter::ConfigType::TypedConfig(any)) => {
                type_name(any) == TlsInspector::full_name()
            }
            Some(listener_filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(format!(
                    "listener filter {:?}: config_discovery is not supported",
                    lf.name
                ));
            }
            None => lf.name == TLS_INSPECTOR,
        };
        if !is_inspector {
            return Err(format!("listener filter {:?} is not supported", lf.name));
        }
        tls_inspector = true;
    }
    if rest.bind_to_port.take().is_some_and(|b| !b.value) {
        return Err("bind_to_port false is not supported".into());
    }
    let per_connection_buffer_limit = rest
        .per_connection_buffer_limit_bytes
        .take()
        .map(|v| v.value)
        .unwrap_or(1024 * 1024);
    // Stats, logging, and socket/accept tuning that does not change what is served.
    rest.stat_prefix.clear();
    rest.stats_matcher = None;
    rest.metadata = None;
    rest.access_log.clear();
    rest.drain_type = 0;
    rest.listener_filters_timeout = None;
    rest.continue_on_listener_filters_timeout = false;
    rest.traffic_direction = 0;
    rest.connection_balance_config = None;
    #[allow(deprecated)]
    {
        rest.reuse_port = false;
    }
    rest.enable_reuse_port = None;
    rest.tcp_backlog_size = None;
    rest.max_connections_to_accept_per_socket_event = None;
    rest.tcp_keepalive = None;
    rest.tcp_fast_open_queue_length = None;
    rest.bypass_overload_manager = false;
    rest.ignore_global_conn_limit = false;
    reject_rest(&rest, fields::LISTENER, "listener")?;

    if chains.is_empty() {
        return Err("no filter chains specified".into());
    }
    let mut hcm: Option<Hcm> = None;
    let mut tls_chains: Vec<TlsChain> = Vec::new();
    let mut plain = 0;
    for (i, fc) in chains.iter().enumerate() {
        let label = if fc.name.is_empty() {
            format!("filter chain #{i}")
        } else {
            format!("filter chain {:?}", fc.name)
        };
        let (h, tls) = filter_chain(fc).map_err(|e| format!("{label}: {e}"))?;
        match &hcm {
            None => hcm = Some(h),
            Some(prev) if *prev == h => {}
            Some(_) => {
                return Err(format!(
                    "{label}: filter chains with different HTTP connection manager settings are not supported"
                ));
            }
        }
        match tls {
            Some(t) => tls_chains.push(t),
            None => plain += 1,
        }
    }
    if plain > 0 && !tls_chains.is_empty() {
        return Err("mixing plain and TLS filter chains is not supported".into());
    }
    if plain > 1 {
        return Err("multiple filter chains with the same matching rules are defined".into());
    }
    let tls = if tls_chains.is_empty() {
        None
    } else {
        let mut exact = HashMap::new();
        let mut catch_all = None;
        for (i, c) in tls_chains.iter().enumerate() {
            if c.server_names.is_empty() && catch_all.replace(i).is_some() {
                return Err(
                    "multiple filter chains with the same matching rules are defined".into(),
                );
            }
            for n in &c.server_names {
                if exact.insert(n.clone(), i).is_some() {
                    return Err(format!(
                        "multiple filter chains with the same matching rules are defined (server name {n:?})"
                    ));
                }
            }
        }
        Some(ListenerTls {
            chains: tls_chains,
            tls_inspector,
            exact,
            catch_all,
        })
    };
    let h = hcm.ok_or("no filter chains specified")?;
    Ok(ListenerConfig {
        name: name.to_string(),
        address,
        route_config: h.route_config,
        stat_prefix: h.stat_prefix,
        use_remote_address: h.use_remote_address,
        xff_num_trusted_hops: h.xff_num_trusted_hops,
        websocket: h.websocket,
        codec: h.codec,
        server_name: h.server_name,
        suppress_envoy_headers: h.suppress_envoy_headers,
        skipped_filters: h.skipped_filters,
        gateway: h.gateway,
        per_connection_buffer_limit,
        tls,
        limits: h.limits,
        path_rules: h.path_rules,
    })
}

fn filter_chain(fc: &FilterChain) -> Result<(Hcm, Option<TlsChain>), String> {
    let mut rest = fc.clone();
    let mut server_names = Vec::new();
    let mut transport_protocol = String::new();
    if let Some(mut m) = rest.filter_chain_match.take() {
        server_names = std::mem::take(&mut m.server_names)
            .into_iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        transport_protocol = std::mem::take(&mut m.transport_protocol);
        reject_rest(&m, fields::FILTER_CHAIN_MATCH, "filter_chain_match")?;
    }
    let filters = std::mem::take(&mut rest.filters);
    let ts = rest.transport_socket.take();
    rest.name.clear();
    rest.metadata = None;
    reject_rest(&rest, fields::FILTER_CHAIN, "filter chain")?;

    let [f] = filters.as_slice() else {
        return Err(format!(
            "exactly one network filter ({HCM_FILTER}) is supported, found {}",
            filters.len()
        ));
    };
    let hcm = match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => {
            if type_name(any) != HttpConnectionManager::full_name() {
                return Err(format!(
                    "network filter {:?} ({}) is not supported; only {HCM_FILTER} is",
                    f.name,
                    type_name(any)
                ));
            }
            http_connection_manager(unpack(any, "http_connection_manager")?)
                .map_err(|e| format!("{HCM_FILTER}: {e}"))?
        }
        Some(filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(format!(
                "network filter {:?}: config_discovery is not supported",
                f.name
            ));
        }
        None => return Err(format!("network filter {:?} has no typed_config", f.name)),
    };

    let tls_ctx = match ts {
        None => None,
        Some(ts) => match &ts.config_type {
            Some(transport_socket::ConfigType::TypedConfig(any)) => match type_name(any) {
                "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" => None,
                t if t == DownstreamTlsContext::full_name() => {
                    Some(unpack::<DownstreamTlsContext>(any, "transport_socket")?)
                }
                other => return Err(format!("transport_socket {other:?} is not supported")),
            },
            None if ts.name == "envoy.transport_sockets.raw_buffer" || ts.name == "raw_buffer" => {
                None
            }
            None => {
                return Err(format!(
                    "transport_socket {:?} without a typed_config is not supported",
                    ts.name
                ));
            }
        },
    };
    let tls = match tls_ctx {
        None => {
            if !server_names.is_empty() {
                return Err("server_names need a TLS transport socket".into());
            }
            if !(transport_protocol.is_empty() || transport_protocol == "raw_buffer") {
                return Err(format!(
                    "transport_protocol {transport_protocol:?} is not supported here"
                ));
            }
            None
        }
        Some(ctx) => {
            if !(transport_protocol.is_empty() || transport_protocol == "tls") {
                return Err(format!(
                    "transport_protocol {transport_protocol:?} is not supported here"
                ));
            }
            Some(downstream_tls(ctx, server_names)?)
        }
    };
    Ok((hcm, tls))
}

fn downstream_tls(
    mut ctx: DownstreamTlsContext,
    server_names: Vec<String>,
) -> Result<TlsChain, String> {
    if ctx
        .require_client_certificate
        .take()
        .is_some_and(|b| b.value)
    {
        return Err("require_client_certificate is not supported".into());
    }
    let Some(mut common) = ctx.common_tls_context.take() else {
        return Err("transport_socket: common_tls_context with certificates is required".into());
    };
    // Session resumption tuning.
    ctx.session_timeout = None;
    ctx.disable_stateful_session_resumption = false;
    ctx.prefer_client_ciphers = false;
    ctx.full_scan_certs_on_sni_mismatch = None;
    ctx.session_ticket_keys_type = None;
    reject_rest(
        &ctx,
        fields::DOWNSTREAM_TLS,
        "transport_socket (DownstreamTlsContext)",
    )?;
    let mut secrets = Vec::new();
    for s in std::mem::take(&mut common.tls_certificate_sds_secret_configs) {
        if s.name.is_empty() {
            return Err("tls_certificate_sds_secret_configs: name must not be empty".into());
        }
        if let Some(src) = &s.sds_config
            && !is_ads(src)
        {
            return Err(format!(
                "tls_certificate_sds_secret_configs {:?}: only SDS over ADS is supported",
                s.name
            ));
        }
        secrets.push(s.name);
    }
    let alpn = std::mem::take(&mut common.alpn_protocols)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    reject_rest(
        &common,
        fields::COMMON_TLS,
        "transport_socket.common_tls_context",
    )?;
    if secrets.is_empty() {
        return Err(
            "transport_socket: no TLS certificate (tls_certificate_sds_secret_configs)".into(),
        );
    }
    Ok(TlsChain {
        server_names,
        secret: secrets[0].clone(),
        secrets,
        alpn,
    })
}

fn is_ads(src: &ConfigSource) -> bool {
    matches!(
        src.config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_))
    )
}

fn http_connection_manager(mut h: HttpConnectionManager) -> Result<Hcm, String> {
    let codec = match std::mem::take(&mut h.codec_type) {
        0 => Codec::Auto,
        1 => Codec::Http1,
        2 => Codec::Http2,
        3 => return Err("codec_type HTTP3 is not supported".into()),
        other => return Err(format!("codec_type {other} is not defined")),
    };
    let stat_prefix = std::mem::take(&mut h.stat_prefix);
    if stat_prefix.is_empty() {
        return Err("stat_prefix must not be empty".into());
    }
    let route_config = match h.route_specifier.take() {
        Some(RouteSpecifier::Rds(rds)) => {
            match &rds.config_source {
                Some(src) if is_ads(src) => {}
                _ => return Err("rds: only a config_source of ads is supported".into()),
            }
            if rds.route_config_name.is_empty() {
                return Err("rds.route_config_name must not be empty".into());
            }
            rds.route_config_name
        }
        Some(RouteSpecifier::RouteConfig(_)) => {
            return Err("inline route_config is not supported (use RDS)".into());
        }
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            return Err("scoped_routes is not supported".into());
        }
        None => return Err("a route specifier (rds) is required".into()),
    };
    let use_remote_address = h.use_remote_address.take().is_some_and(|b| b.value);
    let xff_num_trusted_hops = std::mem::take(&mut h.xff_num_trusted_hops);
    let server_name = match std::mem::take(&mut h.server_name) {
        s if s.is_empty() => Some(http::HeaderValue::from_static("envoy")),
        s => {
            super::check_header_value(s.as_bytes(), "server_name")?;
            http::HeaderValue::try_from(s).ok()
        }
    };
    let mut websocket = false;
    let mut seen = std::collections::HashSet::new();
    for u in std::mem::take(&mut h.upgrade_configs) {
        let t = u.upgrade_type.to_ascii_lowercase();
        if !seen.insert(t.clone()) {
            return Err(format!(
                "Error: multiple upgrade configs with the same name: '{}'",
                u.upgrade_type
            ));
        }
        if t != "websocket" {
            return Err(format!(
                "upgrade type {:?} is not supported",
                u.upgrade_type
            ));
        }
        if !u.filters.is_empty() {
            return Err("upgrade_configs: filters are not supported".into());
        }
        if u.enabled.is_some_and(|b| !b.value) {
            return Err("upgrade_configs: a disabled websocket upgrade is not supported".into());
        }
        websocket = true;
    }
    let (suppress_envoy_headers, skipped_filters, gateway) =
        http_filters(std::mem::take(&mut h.http_filters))?;
    let limits = http_limits(&mut h)?;
    let path_rules = super::path_normalize::PathRules {
        normalize: h.normalize_path.take().is_some_and(|b| b.value),
        merge_slashes: std::mem::take(&mut h.merge_slashes),
    };
    // Escaped slashes (`%2F`) are kept as they are; Envoy's other actions
    // (reject, unescape) are not implemented.
    match std::mem::take(&mut h.path_with_escaped_slashes_action) {
        0 | 1 => {}
        other => {
            return Err(format!(
                "path_with_escaped_slashes_action {other} is not supported (only KEEP_UNCHANGED)"
            ));
        }
    }
    if h.generate_request_id.take().is_some_and(|b| !b.value) {
        return Err("generate_request_id false is not supported".into());
    }
    // Logging and tracing.
    h.access_log.clear();
    h.access_log_flush_interval = None;
    h.flush_access_log_on_new_request = false;
    h.access_log_options = None;
    h.tracing = None;
    reject_rest(&h, fields::HCM, "http_connection_manager")?;
    Ok(Hcm {
        route_config,
        stat_prefix,
        use_remote_address,
        xff_num_trusted_hops,
        websocket,
        codec,
        server_name,
        suppress_envoy_headers,
        skipped_filters,
        gateway,
        limits,
        path_rules,
    })
}

/// Takes the connection manager's limits out of `h` (Envoy's bounds and
/// defaults).
fn http_limits(h: &mut HttpConnectionManager) -> Result<HttpLimits, String> {
    let mut l = HttpLimits::default();
    if let Some(kb) = h.max_request_headers_kb.take() {
        if kb.value == 0 || kb.value > 8192 {
            return Err(format!(
                "max_request_headers_kb: {} is not in 1..=8192",
                kb.value
            ));
        }
        l.max_request_headers = kb.value as usize * 1024;
    }
    if let Some(mut c) = h.common_http_protocol_options.take() {
        if let Some(n) = c.max_headers_count.take() {
            if n.value == 0 {
                return Err(
                    "common_http_protocol_options.max_headers_count must be at least 1".into(),
                );
            }
            l.max_headers = n.value as usize;
        }
        if c != Default::default() {
            return Err("common_http_protocol_options: only max_headers_count is supported".into());
        }
    }
    l.request_headers_timeout = super::opt_duration(
        h.request_headers_timeout.take().as_ref(),
        "request_headers_timeout",
    )?
    .filter(|d| !d.is_zero());
    if let Some(d) = h.stream_idle_timeout.take() {
        let d = super::duration(&d, "stream_idle_timeout")?;
        l.stream_idle_timeout = (!d.is_zero()).then_some(d);
    }
    Ok(l)
}

/// What the HTTP filter chain sets: the router's `suppress_envoy_headers`,
/// the optional filters skipped, and the plugin filter.
type HttpFilters = (bool, Vec<String>, Option<Arc<Gateway>>);

/// The router must be the last filter; filters this proxy does not
/// implement are skipped when optional, refused otherwise.
fn http_filters(
    filters: Vec<envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter>,
) -> Result<HttpFilters, String> {
    let mut skipped = Vec::new();
    let mut router: Option<Router> = None;
    let mut gateway = None;
    let n = filters.len();
    for (i, f) in filters.into_iter().enumerate() {
        if let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type
            && any.type_url == crate::plugins::GATEWAY_TYPE
        {
            if f.disabled {
                return Err(format!(
                    "http filter {:?}: disabled is not supported",
                    f.name
                ));
            }
            if gateway.is_some() {
                return Err(format!(
                    "http filter {:?}: the plugin filter appears twice",
                    f.name
                ));
            }
            let g = Gateway::compile(&any.value)
                .map_err(|e| format!("http filter {:?}: {e}", f.name))?;
            gateway = Some(Arc::new(g));
            continue;
        }
        let is_router = match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => {
                if type_name(any) == Router::full_name() {
                    Some(unpack::<Router>(any, "router")?)
                } else {
                    None
                }
            }
            Some(http_filter::ConfigType::ConfigDiscovery(_)) => {
                if f.is_optional {
                    skipped.push(f.name.clone());
                    continue;
                }
                return Err(format!(
                    "http filter {:?}: config_discovery is not supported",
                    f.name
                ));
            }
            None if f.name == ROUTER_FILTER => Some(Router::default()),
            None => None,
        };
        match is_router {
            Some(r) => {
                if i + 1 != n {
                    return Err(format!(
                        "terminal filter named {} of type {} must be the last filter in a http filter chain.",
                        f.name,
                        Router::full_name()
                    ));
                }
                if f.disabled {
                    return Err("the router filter cannot be disabled".into());
                }
                router = Some(r);
            }
            None if f.is_optional => skipped.push(f.name.clone()),
            None => {
                let t = match &f.config_type {
                    Some(http_filter::ConfigType::TypedConfig(any)) => type_name(any).to_string(),
                    _ => String::new(),
                };
                return Err(format!(
                    "http filter {:?} ({t}) is not supported and is not marked is_optional",
                    f.name
                ));
            }
        }
    }
    let Some(mut r) = router else {
        return Err(format!(
            "the last http filter must be the router ({ROUTER_FILTER})"
        ));
    };
    let suppress = std::mem::take(&mut r.suppress_envoy_headers);
    // Stats, tracing and upstream logs.
    r.dynamic_stats = None;
    r.start_child_span = false;
    r.upstream_log.clear();
    r.upstream_log_options = None;
    r.suppress_grpc_request_failure_code_stats = false;
    reject_rest(&r, fields::ROUTER, "router")?;
    Ok((suppress, skipped, gateway))
}
