//! CDS and EDS: clusters with their endpoints, every default resolved to
//! Envoy's value.

use super::headers::{HeaderStage, compile_stage};
use super::upstream_tls::UpstreamTls;
use super::{
    ClusterLoadAssignment, CompileError, duration_or, fields, positive_duration, reject_rest,
    unpack,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection,
    circuit_breakers::Thresholds as PbThresholds,
    cluster::{ClusterDiscoveryType, CommonLbConfig, LbConfig},
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HealthCheck as PbHealthCheck, HttpProtocolOptions as CommonHttpOptions, address,
    health_check::HealthChecker, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{LbEndpoint, lb_endpoint::HostIdentifier};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options::UpstreamProtocolOptions,
    http_protocol_options::explicit_http_config::ProtocolConfig,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// Endpoints from the cluster's own `load_assignment`, IP addresses.
    Static,
    /// Endpoints from `load_assignment`, each host name resolved and all
    /// its addresses used.
    StrictDns,
    /// Endpoints from the EDS assignment named `eds_service_name`.
    Eds,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsLookupFamily {
    Auto,
    V4Only,
    V6Only,
    V4Preferred,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LbPolicy {
    RoundRobin,
    /// See `least_request_choice_count`.
    LeastRequest,
    Random,
    /// Ring size bounds (defaults 1024 and 8M).
    RingHash {
        min_ring: u64,
        max_ring: u64,
    },
    /// See `maglev_table_size`.
    Maglev,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    Ip(SocketAddr),
    /// A host name to resolve (STRICT_DNS only), and the port.
    Dns(String, u16),
}

/// An endpoint's health as EDS reports it (`envoy.config.core.v3.HealthStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointHealth {
    Unknown,
    Healthy,
    Unhealthy,
    Draining,
    Timeout,
    Degraded,
}

#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub address: EndpointAddress,
    /// `load_balancing_weight`, default 1 (0 is invalid).
    pub weight: u32,
    /// `Endpoint.hostname`, used by `auto_host_rewrite`.
    pub hostname: Option<String>,
    /// Locality priority (0 is the highest).
    pub priority: u32,
    pub health: EndpointHealth,
    /// `health_check_config.hostname`: the Host of active health checks.
    pub health_check_hostname: Option<String>,
    /// `health_check_config.port_value`: a different port for health checks.
    pub health_check_port: Option<u16>,
    pub active_health_check_disabled: bool,
}

#[derive(Clone, Debug)]
pub struct HttpCheck {
    /// None: the cluster name, unless the endpoint names a health check host.
    pub host: Option<String>,
    pub path: String,
    /// Half-open ranges; default `[200, 201)`.
    pub expected_statuses: Vec<Range<u16>>,
    pub retriable_statuses: Vec<Range<u16>>,
    pub request_headers: Option<HeaderStage>,
    pub http2: bool,
    pub method: http::Method,
}

#[derive(Clone, Debug)]
pub struct GrpcCheck {
    pub service_name: String,
    pub authority: Option<String>,
}

#[derive(Clone, Debug)]
pub struct HealthCheck {
    pub timeout: Duration,
    pub interval: Duration,
    /// Default 60 s.
    pub no_traffic_interval: Duration,
    /// Default: `no_traffic_interval`.
    pub no_traffic_healthy_interval: Duration,
    /// Default: `interval`.
    pub unhealthy_interval: Duration,
    /// Default: `unhealthy_interval`.
    pub unhealthy_edge_interval: Duration,
    /// Default: `interval`.
    pub healthy_edge_interval: Duration,
    pub initial_jitter: Duration,
    pub interval_jitter: Duration,
    pub interval_jitter_percent: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Default true.
    pub reuse_connection: bool,
    pub alt_port: Option<u16>,
    pub http: Option<HttpCheck>,
    /// A TCP connect check (no payloads).
    pub tcp: bool,
    pub grpc: Option<GrpcCheck>,
}

/// Outlier detection, every field resolved to Envoy's default.
#[derive(Clone, Debug, PartialEq)]
pub struct Outlier {
    pub consecutive_5xx: u32,
    pub enforcing_consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    /// Default 0: gateway failures alone eject nothing.
    pub enforcing_consecutive_gateway_failure: u32,
    pub split_external_local_origin_errors: bool,
    pub consecutive_local_origin_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    /// Default max(300 s, base_ejection_time).
    pub max_ejection_time: Duration,
    pub max_ejection_time_jitter: Duration,
    pub max_ejection_percent: u32,
    pub enforcing_success_rate: u32,
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    pub success_rate_stdev_factor: u32,
    pub enforcing_local_origin_success_rate: u32,
    pub failure_percentage_threshold: u32,
    pub enforcing_failure_percentage: u32,
    pub enforcing_failure_percentage_local_origin: u32,
    pub failure_percentage_minimum_hosts: u32,
    pub failure_percentage_request_volume: u32,
    pub successful_active_health_check_uneject_host: bool,
    pub always_eject_one_host: bool,
}

/// Circuit breaker thresholds for one priority (defaults 1024/1024/1024/3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// Unlimited when None.
    pub max_connection_pools: Option<u32>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            max_connection_pools: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub name: String,
    /// The Kong upstream this cluster balances over, when gantry-cp says.
    pub kong_upstream: Option<String>,
    pub discovery: Discovery,
    /// For EDS: the assignment name (service_name, else the cluster name).
    pub eds_service_name: Option<String>,
    /// An EDS cluster whose assignment has not arrived. Envoy keeps such a
    /// cluster warming, out of the cluster manager: a request routed to it
    /// gets the route's cluster-not-found response (503, NC), not "no
    /// healthy upstream".
    pub warming: bool,
    pub dns_lookup_family: DnsLookupFamily,
    /// Default 5 s.
    pub dns_refresh_rate: Duration,
    pub respect_dns_ttl: bool,
    pub lb: LbPolicy,
    /// Least request: endpoints sampled per pick (default 2).
    pub least_request_choice_count: u32,
    /// Maglev table size (default 65537, prime).
    pub maglev_table_size: u64,
    /// Default 5 s.
    pub connect_timeout: Duration,
    pub endpoints: Vec<EndpointConfig>,
    pub http2: bool,
    /// Upstream connection idle timeout (default 1 h; None: disabled).
    pub idle_timeout: Option<Duration>,
    pub max_requests_per_connection: Option<u32>,
    pub tls: Option<UpstreamTls>,
    pub health_check: Option<HealthCheck>,
    pub outlier: Option<Outlier>,
    /// DEFAULT priority.
    pub thresholds: Thresholds,
    /// HIGH priority.
    pub thresholds_high: Thresholds,
    /// `common_lb_config.healthy_panic_threshold`, default 50.
    pub panic_threshold_percent: f64,
    /// Default 1 MiB.
    pub per_connection_buffer_limit: u32,
}

fn cerr(name: &str, reason: String) -> CompileError {
    CompileError {
        kind: "Cluster",
        name: name.to_string(),
        reason,
    }
}

pub(crate) fn compile(
    name: &str,
    c: &Cluster,
    assignments: &BTreeMap<String, ClusterLoadAssignment>,
) -> Result<ClusterConfig, CompileError> {
    let mut rest = c.clone();
    let load_assignment = rest.load_assignment.take();
    let eds = rest.eds_cluster_config.take();
    let mut cfg = settings(&mut rest).map_err(|r| cerr(name, r))?;
    cfg.name = name.to_string();
    match cfg.discovery {
        Discovery::Eds => {
            let service = eds
                .map(|e| e.service_name)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| name.to_string());
            match assignments.get(&service) {
                Some(cla) => {
                    let cla_err = |reason: String| CompileError {
                        kind: "ClusterLoadAssignment",
                        name: service.clone(),
                        reason,
                    };
                    if !cla.cluster_name.is_empty() && cla.cluster_name != service {
                        return Err(cla_err(format!(
                            "resource is named {service:?} but its cluster_name says {:?}",
                            cla.cluster_name
                        )));
                    }
                    cfg.endpoints = endpoints(cla, true).map_err(cla_err)?;
                }
                None => cfg.warming = true,
            }
            cfg.eds_service_name = Some(service);
        }
        d => {
            if let Some(cla) = &load_assignment {
                cfg.endpoints = endpoints(cla, d == Discovery::Static)
                    .map_err(|r| cerr(name, format!("load_assignment: {r}")))?;
            }
        }
    }
    Ok(cfg)
}

/// Everything but the name and endpoints.
fn settings(rest: &mut Cluster) -> Result<ClusterConfig, String> {
    rest.name.clear();
    let discovery = match rest.cluster_discovery_type.take() {
        None | Some(ClusterDiscoveryType::Type(0)) => Discovery::Static,
        Some(ClusterDiscoveryType::Type(1)) => Discovery::StrictDns,
        Some(ClusterDiscoveryType::Type(3)) => Discovery::Eds,
        Some(ClusterDiscoveryType::Type(2)) => {
            return Err("type LOGICAL_DNS is not supported".into());
        }
        Some(ClusterDiscoveryType::Type(4)) => {
            return Err("type ORIGINAL_DST is not supported".into());
        }
        Some(ClusterDiscoveryType::Type(t)) => return Err(format!("type {t} is not defined")),
        Some(ClusterDiscoveryType::ClusterType(ct)) => {
            return Err(format!(
                "custom cluster type {:?} is not supported",
                ct.name
            ));
        }
    };
    let connect_timeout = positive_duration(
        rest.connect_timeout.take().as_ref(),
        Duration::from_secs(5),
        "connect_timeout",
    )?;
    let per_connection_buffer_limit = rest
        .per_connection_buffer_limit_bytes
        .take()
        .map(|v| v.value)
        .unwrap_or(1024 * 1024);
    let dns_lookup_family = match std::mem::take(&mut rest.dns_lookup_family) {
        0 => DnsLookupFamily::Auto,
        1 => DnsLookupFamily::V4Only,
        2 => DnsLookupFamily::V6Only,
        3 => DnsLookupFamily::V4Preferred,
        4 => DnsLookupFamily::All,
        other => return Err(format!("dns_lookup_family {other} is not defined")),
    };
    let dns_refresh_rate = duration_or(
        rest.dns_refresh_rate.take().as_ref(),
        Duration::from_millis(5000),
        "dns_refresh_rate",
    )?;
    if dns_refresh_rate <= Duration::from_millis(1) {
        return Err("dns_refresh_rate must be greater than 1ms".into());
    }
    let respect_dns_ttl = std::mem::take(&mut rest.respect_dns_ttl);

    let lb_policy = std::mem::take(&mut rest.lb_policy);
    let lb_config = rest.lb_config.take();
    let mut least_request_choice_count = 2;
    let mut maglev_table_size = 65537;
    let lb = match lb_policy {
        0 => {
            if let Some(LbConfig::RoundRobinLbConfig(rr)) = &lb_config
                && rr.slow_start_config.is_some()
            {
                return Err("round_robin_lb_config.slow_start_config is not supported".into());
            }
            LbPolicy::RoundRobin
        }
        1 => {
            if let Some(LbConfig::LeastRequestLbConfig(lr)) = &lb_config {
                if lr.active_request_bias.is_some() || lr.slow_start_config.is_some() {
                    return Err("least_request_lb_config: only choice_count is supported".into());
                }
                if let Some(n) = lr.choice_count {
                    if n.value < 2 {
                        return Err(
                            "least_request_lb_config.choice_count must be at least 2".into()
                        );
                    }
                    least_request_choice_count = n.value;
                }
            }
            LbPolicy::LeastRequest
        }
        2 => {
            let (mut min_ring, mut max_ring) = (1024u64, 8 * 1024 * 1024u64);
            if let Some(LbConfig::RingHashLbConfig(rh)) = &lb_config {
                if rh.hash_function != 0 {
                    return Err(
                        "ring_hash_lb_config.hash_function MURMUR_HASH_2 is not supported".into(),
                    );
                }
                if let Some(v) = rh.minimum_ring_size {
                    min_ring = v.value;
                }
                if let Some(v) = rh.maximum_ring_size {
                    max_ring = v.value;
                }
                if min_ring > 8 * 1024 * 1024 || max_ring > 8 * 1024 * 1024 {
                    return Err("ring_hash_lb_config: ring sizes must be at most 8388608".into());
                }
            }
            if min_ring > max_ring {
                return Err(format!(
                    "ring hash: minimum_ring_size ({min_ring}) > maximum_ring_size ({max_ring})"
                ));
            }
            LbPolicy::RingHash { min_ring, max_ring }
        }
        3 => LbPolicy::Random,
        5 => {
            if let Some(LbConfig::MaglevLbConfig(m)) = &lb_config
                && let Some(t) = m.table_size
            {
                if t.value > 5_000_011 {
                    return Err("maglev_lb_config.table_size must be at most 5000011".into());
                }
                if !is_prime(t.value) {
                    return Err("The table size of maglev must be prime number".into());
                }
                maglev_table_size = t.value;
            }
            LbPolicy::Maglev
        }
        6 => return Err("lb_policy CLUSTER_PROVIDED is not supported".into()),
        7 => return Err("lb_policy LOAD_BALANCING_POLICY_CONFIG is not supported".into()),
        other => return Err(format!("lb_policy {other} is not defined")),
    };
    if matches!(lb_config, Some(LbConfig::OriginalDstLbConfig(_))) {
        return Err("original_dst_lb_config is not supported".into());
    }

    let mut health_checks = std::mem::take(&mut rest.health_checks);
    if health_checks.len() > 1 {
        return Err("Multiple health checks not supported".into());
    }
    let health_check = health_checks
        .pop()
        .map(|h| health_check(&h))
        .transpose()
        .map_err(|e| format!("health_checks: {e}"))?;
    let outlier = rest
        .outlier_detection
        .take()
        .map(|o| outlier(&o))
        .transpose()
        .map_err(|e| format!("outlier_detection: {e}"))?;
    let (thresholds, thresholds_high) = circuit_breakers(rest.circuit_breakers.take())
        .map_err(|e| format!("circuit_breakers: {e}"))?;
    let panic_threshold_percent =
        common_lb(rest.common_lb_config.take()).map_err(|e| format!("common_lb_config: {e}"))?;

    let mut http2 = rest.http2_protocol_options.take().is_some();
    let mut idle_timeout = Some(Duration::from_secs(3600));
    let mut max_requests_per_connection = None;
    let mut auto_sni = false;
    let mut auto_san_validation = false;
    let mut options = std::mem::take(&mut rest.typed_extension_protocol_options);
    if let Some(any) = options.remove(HTTP_PROTOCOL_OPTIONS) {
        let o: HttpProtocolOptions = unpack(&any, "typed_extension_protocol_options")?;
        let p = protocol_options(o)?;
        http2 = p.http2;
        idle_timeout = p.idle_timeout;
        max_requests_per_connection = p.max_requests_per_connection;
        auto_sni = p.auto_sni;
        auto_san_validation = p.auto_san_validation;
    }
    if let Some(k) = options.keys().next() {
        return Err(format!(
            "typed_extension_protocol_options: {k:?} is not supported"
        ));
    }
    let tls = match rest.transport_socket.take() {
        None => None,
        Some(ts) => super::upstream_tls::compile(&ts, auto_sni, auto_san_validation)?,
    };

    // What gantry-cp says the cluster is in Kong's terms (for metrics).
    let kong_upstream = rest.metadata.take().and_then(|m| {
        use envoy_types::pb::google::protobuf::value::Kind;
        match m
            .filter_metadata
            .get("gantry")?
            .fields
            .get("kong_upstream")?
            .kind
            .as_ref()?
        {
            Kind::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    });
    // No effect on traffic.
    rest.alt_stat_name.clear();
    rest.stats_matcher = None;
    rest.wait_for_warm_on_init = None;
    rest.cleanup_interval = None;
    rest.track_timeout_budgets = false;
    rest.track_cluster_stats = None;
    reject_rest(rest, fields::CLUSTER, "cluster")?;

    Ok(ClusterConfig {
        name: String::new(),
        kong_upstream,
        discovery,
        eds_service_name: None,
        warming: false,
        dns_lookup_family,
        dns_refresh_rate,
        respect_dns_ttl,
        lb,
        least_request_choice_count,
        maglev_table_size,
        connect_timeout,
        endpoints: Vec::new(),
        http2,
        idle_timeout,
        max_requests_per_connection,
        tls,
        health_check,
        outlier,
        thresholds,
        thresholds_high,
        panic_threshold_percent,
        per_connection_buffer_limit,
    })
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2;
    while i * i <= n {
        if n.is_multiple_of(i) {
            return false;
        }
        i += 1;
    }
    true
}

struct Protocol {
    http2: bool,
    idle_timeout: Option<Duration>,
    max_requests_per_connection: Option<u32>,
    auto_sni: bool,
    auto_san_validation: bool,
}

fn protocol_options(mut o: HttpProtocolOptions) -> Result<Protocol, String> {
    let what = "typed_extension_protocol_options[HttpProtocolOptions]";
    let http2 = match o.upstream_protocol_options.take() {
        None => false,
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
            None | Some(ProtocolConfig::HttpProtocolOptions(_)) => false,
            Some(ProtocolConfig::Http2ProtocolOptions(_)) => true,
            Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                return Err(format!("{what}: HTTP/3 upstreams are not supported"));
            }
        },
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
            return Err(format!(
                "{what}: use_downstream_protocol_config is not supported"
            ));
        }
        Some(UpstreamProtocolOptions::AutoConfig(_)) => {
            return Err(format!("{what}: auto_config is not supported"));
        }
    };
    let (mut idle_timeout, mut max_requests_per_connection) =
        (Some(Duration::from_secs(3600)), None);
    if let Some(common) = o.common_http_protocol_options.take() {
        (idle_timeout, max_requests_per_connection) = common_http(common)?;
    }
    let (mut auto_sni, mut auto_san_validation) = (false, false);
    if let Some(u) = o.upstream_http_protocol_options.take() {
        if !u.override_auto_sni_header.is_empty() {
            return Err(format!("{what}: override_auto_sni_header is not supported"));
        }
        auto_sni = u.auto_sni;
        auto_san_validation = u.auto_san_validation;
    }
    reject_rest(&o, fields::UPSTREAM_HTTP_OPTIONS, what)?;
    Ok(Protocol {
        http2,
        idle_timeout,
        max_requests_per_connection,
        auto_sni,
        auto_san_validation,
    })
}

fn common_http(mut c: CommonHttpOptions) -> Result<(Option<Duration>, Option<u32>), String> {
    let idle = match c.idle_timeout.take() {
        None => Some(Duration::from_secs(3600)),
        Some(d) => Some(super::duration(&d, "idle_timeout")?).filter(|d| !d.is_zero()),
    };
    let max_req = c
        .max_requests_per_connection
        .take()
        .map(|v| v.value)
        .filter(|v| *v > 0);
    reject_rest(
        &c,
        fields::COMMON_HTTP_OPTIONS,
        "common_http_protocol_options",
    )?;
    Ok((idle, max_req))
}

fn status_ranges(
    rs: &[envoy_types::pb::envoy::r#type::v3::Int64Range],
    what: &str,
) -> Result<Vec<Range<u16>>, String> {
    let mut out = Vec::with_capacity(rs.len());
    for r in rs {
        if r.start < 100 {
            return Err(format!(
                "Invalid http {what} status range: expecting start >= 100, but found start={}",
                r.start
            ));
        }
        if r.end > 600 {
            return Err(format!(
                "Invalid http {what} status range: expecting end <= 600, but found end={}",
                r.end
            ));
        }
        if r.start >= r.end {
            return Err(format!(
                "Invalid http {what} status range: expecting start < end, but found start={} and end={}",
                r.start, r.end
            ));
        }
        out.push(r.start as u16..r.end as u16);
    }
    Ok(out)
}

fn health_check(h: &PbHealthCheck) -> Result<HealthCheck, String> {
    let mut rest = h.clone();
    let timeout = rest.timeout.take().ok_or("timeout is required")?;
    let timeout = positive_duration(Some(&timeout), Duration::ZERO, "timeout")?;
    let interval = rest.interval.take().ok_or("interval is required")?;
    let interval = positive_duration(Some(&interval), Duration::ZERO, "interval")?;
    let healthy_threshold = rest
        .healthy_threshold
        .take()
        .ok_or("healthy_threshold is required")?
        .value;
    let unhealthy_threshold = rest
        .unhealthy_threshold
        .take()
        .ok_or("unhealthy_threshold is required")?
        .value;
    let no_traffic_interval = positive_duration(
        rest.no_traffic_interval.take().as_ref(),
        Duration::from_secs(60),
        "no_traffic_interval",
    )?;
    let no_traffic_healthy_interval = positive_duration(
        rest.no_traffic_healthy_interval.take().as_ref(),
        no_traffic_interval,
        "no_traffic_healthy_interval",
    )?;
    let unhealthy_interval = positive_duration(
        rest.unhealthy_interval.take().as_ref(),
        interval,
        "unhealthy_interval",
    )?;
    let unhealthy_edge_interval = positive_duration(
        rest.unhealthy_edge_interval.take().as_ref(),
        unhealthy_interval,
        "unhealthy_edge_interval",
    )?;
    let healthy_edge_interval = positive_duration(
        rest.healthy_edge_interval.take().as_ref(),
        interval,
        "healthy_edge_interval",
    )?;
    let initial_jitter = duration_or(
        rest.initial_jitter.take().as_ref(),
        Duration::ZERO,
        "initial_jitter",
    )?;
    let interval_jitter = duration_or(
        rest.interval_jitter.take().as_ref(),
        Duration::ZERO,
        "interval_jitter",
    )?;
    let interval_jitter_percent = std::mem::take(&mut rest.interval_jitter_percent);
    let reuse_connection = rest.reuse_connection.take().is_none_or(|b| b.value);
    let alt_port = match rest.alt_port.take() {
        None => None,
        Some(p) => Some(u16::try_from(p.value).map_err(|_| "alt_port is out of range")?),
    };
    let (mut http, mut tcp, mut grpc) = (None, false, None);
    match rest.health_checker.take() {
        None => return Err("a health checker is required".into()),
        Some(HealthChecker::HttpHealthCheck(mut hc)) => {
            if hc.path.is_empty() {
                return Err("http_health_check.path must not be empty".into());
            }
            super::check_header_value(hc.host.as_bytes(), "http_health_check.host")?;
            #[allow(clippy::single_range_in_vec_init)]
            let expected = if hc.expected_statuses.is_empty() {
                vec![200..201]
            } else {
                status_ranges(&hc.expected_statuses, "expected")?
            };
            let retriable = status_ranges(&hc.retriable_statuses, "retriable")?;
            let request_headers = compile_stage(
                &hc.request_headers_to_add,
                &hc.request_headers_to_remove,
                "http_health_check.request_headers_to_add/remove",
            )?;
            let http2 = match hc.codec_client_type {
                0 => false,
                1 => true,
                _ => {
                    return Err("http_health_check.codec_client_type HTTP3 is not supported".into());
                }
            };
            let method = match hc.method {
                0 | 1 => http::Method::GET,
                2 => http::Method::HEAD,
                3 => http::Method::POST,
                4 => http::Method::PUT,
                5 => http::Method::DELETE,
                7 => http::Method::OPTIONS,
                8 => http::Method::TRACE,
                9 => http::Method::PATCH,
                6 => return Err("http_health_check.method CONNECT is not allowed".into()),
                m => return Err(format!("http_health_check.method {m} is not defined")),
            };
            http = Some(HttpCheck {
                host: (!hc.host.is_empty()).then(|| hc.host.clone()),
                path: hc.path.clone(),
                expected_statuses: expected,
                retriable_statuses: retriable,
                request_headers,
                http2,
                method,
            });
            for f in [&mut hc.host, &mut hc.path] {
                f.clear();
            }
            hc.expected_statuses.clear();
            hc.retriable_statuses.clear();
            hc.request_headers_to_add.clear();
            hc.request_headers_to_remove.clear();
            hc.codec_client_type = 0;
            hc.method = 0;
            reject_rest(&hc, fields::HTTP_HEALTH_CHECK, "http_health_check")?;
        }
        Some(HealthChecker::TcpHealthCheck(t)) => {
            reject_rest(&t, fields::TCP_HEALTH_CHECK, "tcp_health_check")?;
            tcp = true;
        }
        Some(HealthChecker::GrpcHealthCheck(mut g)) => {
            grpc = Some(GrpcCheck {
                service_name: std::mem::take(&mut g.service_name),
                authority: Some(std::mem::take(&mut g.authority)).filter(|a| !a.is_empty()),
            });
            reject_rest(&g, fields::GRPC_HEALTH_CHECK, "grpc_health_check")?;
        }
        Some(HealthChecker::CustomHealthCheck(c)) => {
            return Err(format!("custom health check {:?} is not supported", c.name));
        }
    }
    // Event logging only.
    rest.event_log_path.clear();
    rest.event_logger.clear();
    rest.event_service = None;
    rest.always_log_health_check_failures = false;
    rest.always_log_health_check_success = false;
    reject_rest(&rest, fields::HEALTH_CHECK, "health check")?;
    Ok(HealthCheck {
        timeout,
        interval,
        no_traffic_interval,
        no_traffic_healthy_interval,
        unhealthy_interval,
        unhealthy_edge_interval,
        healthy_edge_interval,
        initial_jitter,
        interval_jitter,
        interval_jitter_percent,
        healthy_threshold,
        unhealthy_threshold,
        reuse_connection,
        alt_port,
        http,
        tcp,
        grpc,
    })
}

fn outlier(o: &OutlierDetection) -> Result<Outlier, String> {
    let mut r = o.clone();
    let take = |v: &mut Option<envoy_types::pb::google::protobuf::UInt32Value>, d: u32| {
        v.take().map(|x| x.value).unwrap_or(d)
    };
    let consecutive_5xx = take(&mut r.consecutive_5xx, 5);
    let enforcing_consecutive_5xx = take(&mut r.enforcing_consecutive_5xx, 100);
    let consecutive_gateway_failure = take(&mut r.consecutive_gateway_failure, 5);
    let enforcing_consecutive_gateway_failure =
        take(&mut r.enforcing_consecutive_gateway_failure, 0);
    let consecutive_local_origin_failure = take(&mut r.consecutive_local_origin_failure, 5);
    let enforcing_consecutive_local_origin_failure =
        take(&mut r.enforcing_consecutive_local_origin_failure, 100);
    let max_ejection_percent = take(&mut r.max_ejection_percent, 10);
    let enforcing_success_rate = take(&mut r.enforcing_success_rate, 100);
    let success_rate_minimum_hosts = take(&mut r.success_rate_minimum_hosts, 5);
    let success_rate_request_volume = take(&mut r.success_rate_request_volume, 100);
    let success_rate_stdev_factor = take(&mut r.success_rate_stdev_factor, 1900);
    let enforcing_local_origin_success_rate = take(&mut r.enforcing_local_origin_success_rate, 100);
    let failure_percentage_threshold = take(&mut r.failure_percentage_threshold, 85);
    let enforcing_failure_percentage = take(&mut r.enforcing_failure_percentage, 0);
    let enforcing_failure_percentage_local_origin =
        take(&mut r.enforcing_failure_percentage_local_origin, 0);
    let failure_percentage_minimum_hosts = take(&mut r.failure_percentage_minimum_hosts, 5);
    let failure_percentage_request_volume = take(&mut r.failure_percentage_request_volume, 50);
    for (v, n) in [
        (max_ejection_percent, "max_ejection_percent"),
        (enforcing_consecutive_5xx, "enforcing_consecutive_5xx"),
        (enforcing_success_rate, "enforcing_success_rate"),
        (
            enforcing_consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure",
        ),
        (
            enforcing_consecutive_local_origin_failure,
            "enforcing_consecutive_local_origin_failure",
        ),
        (
            enforcing_local_origin_success_rate,
            "enforcing_local_origin_success_rate",
        ),
        (failure_percentage_threshold, "failure_percentage_threshold"),
        (enforcing_failure_percentage, "enforcing_failure_percentage"),
        (
            enforcing_failure_percentage_local_origin,
            "enforcing_failure_percentage_local_origin",
        ),
    ] {
        if v > 100 {
            return Err(format!("{n} must be at most 100"));
        }
    }
    let interval = positive_duration(
        r.interval.take().as_ref(),
        Duration::from_secs(10),
        "interval",
    )?;
    let base_ejection_time = positive_duration(
        r.base_ejection_time.take().as_ref(),
        Duration::from_secs(30),
        "base_ejection_time",
    )?;
    let max_ejection_time = positive_duration(
        r.max_ejection_time.take().as_ref(),
        base_ejection_time.max(Duration::from_secs(300)),
        "max_ejection_time",
    )?;
    let max_ejection_time_jitter = duration_or(
        r.max_ejection_time_jitter.take().as_ref(),
        Duration::ZERO,
        "max_ejection_time_jitter",
    )?;
    let split_external_local_origin_errors =
        std::mem::take(&mut r.split_external_local_origin_errors);
    let successful_active_health_check_uneject_host = r
        .successful_active_health_check_uneject_host
        .take()
        .is_none_or(|b| b.value);
    let always_eject_one_host = r.always_eject_one_host.take().is_some_and(|b| b.value);
    if r.detect_degraded_hosts.take().is_some_and(|b| b.value) {
        return Err("detect_degraded_hosts is not supported".into());
    }
    reject_rest(&r, fields::OUTLIER, "outlier_detection")?;
    Ok(Outlier {
        consecutive_5xx,
        enforcing_consecutive_5xx,
        consecutive_gateway_failure,
        enforcing_consecutive_gateway_failure,
        split_external_local_origin_errors,
        consecutive_local_origin_failure,
        enforcing_consecutive_local_origin_failure,
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_time_jitter,
        max_ejection_percent,
        enforcing_success_rate,
        success_rate_minimum_hosts,
        success_rate_request_volume,
        success_rate_stdev_factor,
        enforcing_local_origin_success_rate,
        failure_percentage_threshold,
        enforcing_failure_percentage,
        enforcing_failure_percentage_local_origin,
        failure_percentage_minimum_hosts,
        failure_percentage_request_volume,
        successful_active_health_check_uneject_host,
        always_eject_one_host,
    })
}

fn circuit_breakers(cb: Option<CircuitBreakers>) -> Result<(Thresholds, Thresholds), String> {
    let Some(mut cb) = cb else {
        return Ok((Thresholds::default(), Thresholds::default()));
    };
    let list = std::mem::take(&mut cb.thresholds);
    reject_rest(&cb, fields::CIRCUIT_BREAKERS, "circuit_breakers")?;
    let find = |p: i32| -> Result<Thresholds, String> {
        // Envoy uses the first entry for a priority.
        match list.iter().find(|t| t.priority == p) {
            None => Ok(Thresholds::default()),
            Some(t) => thresholds(t),
        }
    };
    for t in &list {
        if !(0..=1).contains(&t.priority) {
            return Err(format!("priority {} is not defined", t.priority));
        }
    }
    Ok((find(0)?, find(1)?))
}

fn thresholds(t: &PbThresholds) -> Result<Thresholds, String> {
    let mut r = *t;
    r.priority = 0;
    let d = Thresholds::default();
    let out = Thresholds {
        max_connections: r
            .max_connections
            .take()
            .map_or(d.max_connections, |v| v.value),
        max_pending_requests: r
            .max_pending_requests
            .take()
            .map_or(d.max_pending_requests, |v| v.value),
        max_requests: r.max_requests.take().map_or(d.max_requests, |v| v.value),
        max_retries: r.max_retries.take().map_or(d.max_retries, |v| v.value),
        max_connection_pools: r.max_connection_pools.take().map(|v| v.value),
    };
    // Stats only.
    r.track_remaining = false;
    reject_rest(&r, fields::THRESHOLDS, "thresholds")?;
    Ok(out)
}

fn common_lb(c: Option<CommonLbConfig>) -> Result<f64, String> {
    let Some(mut c) = c else { return Ok(50.0) };
    let panic = c.healthy_panic_threshold.take().map_or(50.0, |p| p.value);
    if !(0.0..=100.0).contains(&panic) {
        return Err("healthy_panic_threshold must be between 0 and 100".into());
    }
    // Batching of host updates: no effect on which host is picked.
    c.update_merge_window = None;
    reject_rest(&c, fields::COMMON_LB, "common_lb_config")?;
    Ok(panic)
}

/// Endpoints of an assignment; `ip_only` for STATIC and EDS clusters.
pub(crate) fn endpoints(
    cla: &ClusterLoadAssignment,
    ip_only: bool,
) -> Result<Vec<EndpointConfig>, String> {
    let mut rest = cla.clone();
    rest.cluster_name.clear();
    let localities = std::mem::take(&mut rest.endpoints);
    if let Some(mut p) = rest.policy.take() {
        // Affects only how load spills between priorities; Envoy's default 140.
        p.overprovisioning_factor = None;
        p.endpoint_stale_after = None;
        reject_rest(&p, fields::CLA_POLICY, "policy")?;
    }
    reject_rest(&rest, fields::CLA, "assignment")?;
    let mut out = Vec::new();
    for (li, l) in localities.iter().enumerate() {
        let mut lr = l.clone();
        let lb_endpoints = std::mem::take(&mut lr.lb_endpoints);
        let priority = std::mem::take(&mut lr.priority);
        if priority > 128 {
            return Err(format!("endpoints[{li}].priority must be at most 128"));
        }
        if let Some(w) = lr.load_balancing_weight.take()
            && w.value == 0
        {
            return Err(format!(
                "endpoints[{li}].load_balancing_weight must be at least 1"
            ));
        }
        // Locality metadata, and proximity (unused without locality-aware balancing).
        lr.locality = None;
        lr.metadata = None;
        lr.proximity = None;
        reject_rest(&lr, fields::LOCALITY_ENDPOINTS, &format!("endpoints[{li}]"))?;
        for (ei, e) in lb_endpoints.iter().enumerate() {
            out.push(
                lb_endpoint(e, priority, ip_only)
                    .map_err(|r| format!("endpoints[{li}].lb_endpoints[{ei}]: {r}"))?,
            );
        }
    }
    Ok(out)
}

fn lb_endpoint(e: &LbEndpoint, priority: u32, ip_only: bool) -> Result<EndpointConfig, String> {
    let mut r = e.clone();
    let weight = match r.load_balancing_weight.take() {
        None => 1,
        Some(w) if w.value == 0 => return Err("load_balancing_weight must be at least 1".into()),
        Some(w) => w.value,
    };
    let health = match std::mem::take(&mut r.health_status) {
        0 => EndpointHealth::Unknown,
        1 => EndpointHealth::Healthy,
        2 => EndpointHealth::Unhealthy,
        3 => EndpointHealth::Draining,
        4 => EndpointHealth::Timeout,
        5 => EndpointHealth::Degraded,
        other => return Err(format!("health_status {other} is not defined")),
    };
    let ep = match r.host_identifier.take() {
        Some(HostIdentifier::Endpoint(ep)) => ep,
        Some(HostIdentifier::EndpointName(_)) => {
            return Err("endpoint_name is not supported".into());
        }
        None => return Err("endpoint is required".into()),
    };
    r.metadata = None;
    reject_rest(&r, fields::LB_ENDPOINT, "lb_endpoint")?;
    let mut er = ep.clone();
    let address = socket_address(er.address.take().as_ref(), ip_only)?;
    let hostname = Some(std::mem::take(&mut er.hostname)).filter(|h| !h.is_empty());
    let (mut hc_host, mut hc_port, mut hc_disabled) = (None, None, false);
    if let Some(hc) = er.health_check_config.take() {
        if hc.address.is_some() {
            return Err("health_check_config.address is not supported".into());
        }
        hc_host = Some(hc.hostname).filter(|h| !h.is_empty());
        hc_port = match hc.port_value {
            0 => None,
            p => Some(
                u16::try_from(p).map_err(|_| "health_check_config.port_value is out of range")?,
            ),
        };
        hc_disabled = hc.disable_active_health_check;
    }
    // Naming for stats and logs only.
    er.observability_name.clear();
    reject_rest(&er, fields::ENDPOINT, "endpoint")?;
    Ok(EndpointConfig {
        address,
        weight,
        hostname,
        priority,
        health,
        health_check_hostname: hc_host,
        health_check_port: hc_port,
        active_health_check_disabled: hc_disabled,
    })
}

/// A socket address: an IP literal, or (unless `ip_only`) a host name.
pub(crate) fn socket_address(
    a: Option<&Address>,
    ip_only: bool,
) -> Result<EndpointAddress, String> {
    let sa = match a.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(address::Address::Pipe(_)) => return Err("pipe addresses are not supported".into()),
        Some(address::Address::EnvoyInternalAddress(_)) => {
            return Err("internal addresses are not supported".into());
        }
        None => return Err("address is required".into()),
    };
    if sa.protocol != 0 {
        return Err("only TCP socket addresses are supported".into());
    }
    if !sa.resolver_name.is_empty() {
        return Err(format!(
            "resolver_name {:?} is not supported",
            sa.resolver_name
        ));
    }
    if !sa.network_namespace_filepath.is_empty() {
        return Err("network_namespace_filepath is not supported".into());
    }
    let port = match &sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => {
            u16::try_from(*p).map_err(|_| format!("port {p} is out of range"))?
        }
        Some(PortSpecifier::NamedPort(n)) => {
            return Err(format!("named port {n:?} is not supported"));
        }
        None => 0,
    };
    match sa.address.parse::<IpAddr>() {
        Ok(ip) => Ok(EndpointAddress::Ip(SocketAddr::new(ip, port))),
        Err(_) if ip_only => Err(format!(
            "malformed IP address: {}. Consider setting resolver_name or setting cluster type to 'STRICT_DNS' or 'LOGICAL_DNS'",
            sa.address
        )),
        Err(_) if sa.address.is_empty() => Err("address must not be empty".into()),
        Err(_) => Ok(EndpointAddress::Dns(sa.address.clone(), port)),
    }
}
