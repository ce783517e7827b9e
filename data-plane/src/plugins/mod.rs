//! Kong's plugins, enforced by gantry-proxy: the `gantry.filters.http.plugins`
//! HTTP filter (see `proto/gantry/filters/http/plugins/v1/plugins.proto`).
//!
//! The listener's filter config compiles into a [`Gateway`] (consumers,
//! credentials, plugin instances); each route's per-filter config into
//! [`RoutePlugins`] (which instances apply, already resolved by Kong's
//! precedence). [`access`] runs the request phases in a fixed order:
//! client address, authentication, ACL, rate limiting, request size,
//! request-transformer; response-transformer runs on the upstream's
//! response. Counters live in [`State`], which outlives config swaps.

mod acl;
mod client_ip;
mod consumers;
mod correlation_id;
mod cors;
mod ip_restriction;
mod jwks;
mod jwt;
mod key_auth;
pub mod log;
mod outbound;
mod outcome;
pub mod prometheus;
pub mod proxy_cache;
pub mod rate_limiting;
pub mod redis;
pub mod redis_sync;
mod reject;
pub mod request_transformer;
pub mod request_validator;
pub mod response_transformer;
pub mod size_limit;
mod transform;

pub use client_ip::ClientIp;
pub use consumers::{Consumer, Directory, is_header_safe};
pub use outcome::{CacheStep, Outcome};
pub use reject::{Answer, Reject};

use gantry_shared::proto::plugins as pb;
use http::{HeaderMap, Method};
use prost::Message;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

pub use pb::{FILTER_NAME, GATEWAY_TYPE};

/// The listener-level config: who the consumers are, and every plugin
/// instance by id.
pub struct Gateway {
    /// The encoded config, for equality (listeners are compared on swaps).
    raw: Vec<u8>,
    pub directory: Directory,
    plugins: HashMap<String, Plugin>,
    pub client_ip: ClientIp,
    /// Kong's prometheus: whether any instance is enabled, and which
    /// switches any of them turns on.
    pub prometheus: Option<prometheus::Prometheus>,
}

impl PartialEq for Gateway {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

/// Counts only: the directory holds credentials.
impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("consumers", &self.directory.len())
            .field("plugins", &self.plugins.len())
            .finish()
    }
}

/// One enabled plugin instance.
#[derive(Debug)]
pub struct Plugin {
    pub id: String,
    pub kind: Kind,
}

#[derive(Debug)]
pub enum Kind {
    CorrelationId(correlation_id::CorrelationId),
    IpRestriction(ip_restriction::IpRestriction),
    Cors(cors::Cors),
    SizeLimit(size_limit::SizeLimit),
    Jwt(jwt::Jwt),
    KeyAuth(key_auth::KeyAuth),
    Acl(acl::Acl),
    Prometheus(prometheus::Prometheus),
    /// http-log, file-log, tcp-log, udp-log (by [`LOG_PLUGINS`] index).
    Log(usize, Arc<log::LogPlugin>),
    RateLimiting(rate_limiting::RateLimiting),
    // Shared: what they do is finished on the forwarding path.
    RequestTransformer(Arc<request_transformer::RequestTransformer>),
    ProxyCache(Arc<proxy_cache::ProxyCache>),
    RequestValidator(Arc<request_validator::RequestValidator>),
    ResponseTransformer(Arc<response_transformer::ResponseTransformer>),
}

impl Gateway {
    pub fn compile(value: &[u8]) -> Result<Gateway, String> {
        let g = pb::Gateway::decode(value).map_err(|e| format!("gateway config: {e}"))?;
        let directory = Directory::compile(&g.consumers, &g.key_salt)?;
        let mut plugins = HashMap::with_capacity(g.plugins.len());
        for p in &g.plugins {
            let kind = compile_plugin(&p.name, &p.config_json)
                .map_err(|e| format!("plugin {} ({}): {e}", p.id, p.name))?;
            plugins.insert(
                p.id.clone(),
                Plugin {
                    id: p.id.clone(),
                    kind,
                },
            );
        }
        let client_ip = ClientIp::compile(&g.trusted_ips, &g.real_ip_header)?;
        let prometheus = plugins
            .values()
            .filter_map(|p| match &p.kind {
                Kind::Prometheus(m) => Some(*m),
                _ => None,
            })
            .reduce(prometheus::Prometheus::any);
        Ok(Gateway {
            raw: value.to_vec(),
            directory,
            plugins,
            client_ip,
            prometheus,
        })
    }
}

pub use pb::GANTRY_PROXY_RUNS as SUPPORTED;

pub use pb::LOG_PLUGINS;

fn compile_plugin(name: &str, config: &str) -> Result<Kind, String> {
    let v: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("config is not JSON: {e}"))?;
    compile_kind(name, &v)
}

/// Whether gantry-proxy can run plugin `name` with `config` (Kong's
/// config, every field present): the control plane admits a plugin only
/// if this compiler, the one the proxy runs, accepts it. Vault references
/// are checked, not resolved: the node resolves them from its own
/// environment, which the control plane does not have.
pub fn check_config(name: &str, config: &serde_json::Value) -> Result<(), String> {
    gantry_shared::vault::with_deferred(|| compile_kind(name, config)).map(drop)
}

fn compile_kind(name: &str, v: &serde_json::Value) -> Result<Kind, String> {
    Ok(match name {
        "correlation-id" => Kind::CorrelationId(correlation_id::CorrelationId::compile(v)?),
        "ip-restriction" => Kind::IpRestriction(ip_restriction::IpRestriction::compile(v)?),
        "cors" => Kind::Cors(cors::Cors::compile(v)?),
        "request-size-limiting" => Kind::SizeLimit(size_limit::SizeLimit::compile(v)?),
        "proxy-cache" => Kind::ProxyCache(Arc::new(proxy_cache::ProxyCache::compile(v)?)),
        "request-validator" => {
            Kind::RequestValidator(Arc::new(request_validator::RequestValidator::compile(v)?))
        }
        "jwt" => Kind::Jwt(jwt::Jwt::compile(v)?),
        "key-auth" => Kind::KeyAuth(key_auth::KeyAuth::compile(v)?),
        "acl" => Kind::Acl(acl::Acl::compile(v)?),
        "prometheus" => Kind::Prometheus(prometheus::Prometheus::compile(v)?),
        n if LOG_PLUGINS.contains(&n) => {
            let i = LOG_PLUGINS.iter().position(|l| *l == n).unwrap_or(0);
            Kind::Log(i, Arc::new(log::LogPlugin::compile(n, v)?))
        }
        "rate-limiting" => Kind::RateLimiting(rate_limiting::RateLimiting::compile(v)?),
        "request-transformer" => Kind::RequestTransformer(Arc::new(
            request_transformer::RequestTransformer::compile(v)?,
        )),
        "response-transformer" => Kind::ResponseTransformer(Arc::new(
            response_transformer::ResponseTransformer::compile(v)?,
        )),
        // Refused rather than skipped: a policy the operator configured
        // must not silently stop applying.
        other => return Err(format!("plugin {other:?} is not supported by gantry-proxy")),
    })
}

/// A route's plugins: instance ids, one per plugin name (rate-limiting:
/// every instance that applies), and per consumer the ones that replace
/// them once that consumer is known (rate-limiting: that add to them).
#[derive(Debug, PartialEq)]
pub struct RoutePlugins {
    pub route_id: String,
    pub service_id: String,
    pub plugins: Vec<String>,
    pub consumers: HashMap<String, Vec<String>>,
    /// Kong's prometheus series for the route, when the plugin applies.
    pub series: Option<SeriesHandle>,
    /// The route and service entities (JSON), when a log plugin applies.
    pub log_context: Option<Arc<str>>,
}

/// A route's prometheus series; configs compare by the labels it was
/// resolved from (the same labels give the same series).
pub struct SeriesHandle {
    labels: (String, String),
    pub series: Arc<prometheus::RouteSeries>,
}

impl PartialEq for SeriesHandle {
    fn eq(&self, other: &Self) -> bool {
        self.labels == other.labels
    }
}

impl std::fmt::Debug for SeriesHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SeriesHandle").field(&self.labels).finish()
    }
}

impl RoutePlugins {
    /// From a route's `typed_per_filter_config` entry: the per-route config,
    /// bare or wrapped in Envoy's `FilterConfig`.
    pub fn compile(any: &envoy_types::pb::google::protobuf::Any) -> Result<RoutePlugins, String> {
        use envoy_types::pb::envoy::config::route::v3::FilterConfig;
        const FILTER_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";
        let inner = if any.type_url == FILTER_CONFIG {
            let fc = FilterConfig::decode(any.value.as_slice())
                .map_err(|e| format!("{FILTER_NAME}: {e}"))?;
            if fc.disabled {
                return Err(format!(
                    "{FILTER_NAME}: a disabled per-route config is not supported"
                ));
            }
            fc.config
                .ok_or_else(|| format!("{FILTER_NAME}: FilterConfig without config"))?
        } else {
            any.clone()
        };
        // A TypedStruct (what gantry-cp sends, so Envoy can render it) or
        // the bare message (what it sent before; accepted for a release).
        let p = pb::PerRoute::from_any(&inner).map_err(|e| format!("{FILTER_NAME}: {e}"))?;
        // Refused here as well as in the listener: a route must not take
        // effect naming a plugin this proxy will never run.
        if let Some(n) = p.names.iter().find(|n| !SUPPORTED.contains(&n.as_str())) {
            return Err(format!("plugin {n:?} is not supported by gantry-proxy"));
        }
        // Resolved now, while the running config still holds the route's
        // series: the counts carry over the swap.
        let series =
            (p.names.iter().any(|n| n == "prometheus") && !p.route_label.is_empty()).then(|| {
                SeriesHandle {
                    series: prometheus::SERIES.route(&p.service_label, &p.route_label),
                    labels: (p.service_label, p.route_label),
                }
            });
        let log_context = (!p.log_context.is_empty()).then(|| Arc::from(p.log_context.as_str()));
        Ok(RoutePlugins {
            route_id: p.route_id,
            service_id: p.service_id,
            series,
            log_context,
            plugins: p.plugins,
            consumers: p
                .consumer_plugins
                .into_iter()
                .map(|(k, v)| (k, v.ids))
                .collect(),
        })
    }
}

/// State that outlives config swaps.
#[derive(Default)]
pub struct State {
    pub limits: rate_limiting::Counters,
    pub redis: redis::Clients,
    /// proxy-cache entries, by dictionary.
    pub cache: proxy_cache::Store,
    /// jwt providers' remote JWKS, by URI.
    pub jwks: jwks::Registry,
    /// rate-limiting counts kept here and reconciled with Redis (`sync_rate`).
    pub synced: redis_sync::Synced,
}

/// The request as the plugins see and change it.
pub struct Request<'a, 'p> {
    pub headers: &'a mut HeaderMap,
    /// Path and query, as forwarded (key-auth may remove its query
    /// argument): borrowed from the request line until a plugin changes it.
    pub path_and_query: &'a mut std::borrow::Cow<'p, str>,
    /// As forwarded (request-transformer's `http_method` may change it).
    pub method: &'a mut Method,
    /// The TCP peer.
    pub peer: IpAddr,
    /// This proxy's listening address, for the tracker correlation id.
    pub local: std::net::SocketAddr,
    /// The route's regex path, whose named groups are request-validator's
    /// path parameters.
    pub path_regex: Option<&'a crate::re2::Re2>,
}

/// The instances that apply to one request, by phase.
#[derive(Default, Clone, Copy)]
struct Chain<'a> {
    correlation_id: Option<&'a correlation_id::CorrelationId>,
    ip_restriction: Option<&'a ip_restriction::IpRestriction>,
    cors: Option<&'a cors::Cors>,
    size_limit: Option<&'a size_limit::SizeLimit>,
    jwt: Option<&'a jwt::Jwt>,
    key_auth: Option<&'a key_auth::KeyAuth>,
    acl: Option<&'a acl::Acl>,
    prometheus: Option<&'a prometheus::Prometheus>,
    logs: [Option<&'a Arc<log::LogPlugin>>; 4],
    rate_limiting: rate_limiting::Stack<'a>,
    request_transformer: Option<&'a Arc<request_transformer::RequestTransformer>>,
    response_transformer: Option<&'a Arc<response_transformer::ResponseTransformer>>,
    proxy_cache: Option<(&'a str, &'a Arc<proxy_cache::ProxyCache>)>,
    request_validator: Option<&'a Arc<request_validator::RequestValidator>>,
}

impl<'a> Chain<'a> {
    fn add(&mut self, p: &'a Plugin) -> Result<(), Reject> {
        match &p.kind {
            Kind::CorrelationId(c) => self.correlation_id = Some(c),
            Kind::IpRestriction(i) => self.ip_restriction = Some(i),
            Kind::Cors(c) => self.cors = Some(c),
            Kind::SizeLimit(l) => self.size_limit = Some(l),
            Kind::Jwt(j) => self.jwt = Some(j),
            Kind::KeyAuth(k) => self.key_auth = Some(k),
            Kind::Acl(a) => self.acl = Some(a),
            Kind::Prometheus(m) => self.prometheus = Some(m),
            Kind::Log(i, l) => self.logs[*i % 4] = Some(l),
            // Limits stack: every instance that applies must admit. One
            // more than there are scopes cannot come from Kong's
            // precedence; it is refused, never dropped.
            Kind::RateLimiting(r) => {
                if !self.rate_limiting.push(&p.id, r) {
                    tracing::warn!(plugin = %p.id, "more rate-limiting instances than scopes; refusing");
                    return Err(Reject::new(500, "An unexpected error occurred"));
                }
            }
            Kind::RequestTransformer(t) => self.request_transformer = Some(t),
            Kind::ProxyCache(c) => self.proxy_cache = Some((&p.id, c)),
            Kind::RequestValidator(v) => self.request_validator = Some(v),
            Kind::ResponseTransformer(t) => self.response_transformer = Some(t),
        }
        Ok(())
    }

    /// A route may name an instance its listener does not have yet (or
    /// any more): LDS and RDS arrive one after the other. The request is
    /// refused rather than run without a policy it was given.
    fn resolve(g: &'a Gateway, ids: &'a [String]) -> Result<Chain<'a>, Reject> {
        let mut c = Chain::default();
        c.extend(g, ids)?;
        Ok(c)
    }

    fn extend(&mut self, g: &'a Gateway, ids: &'a [String]) -> Result<(), Reject> {
        for id in ids {
            match g.plugins.get(id) {
                Some(p) => self.add(p)?,
                None => {
                    tracing::warn!(plugin = %id, "route names a plugin its listener does not have; refusing");
                    return Err(Reject::new(500, "An unexpected error occurred"));
                }
            }
        }
        Ok(())
    }
}

/// What the access phase leaves for the log phase, refused or not.
#[derive(Default)]
pub struct LogWork {
    /// Kong's prometheus series for the request.
    pub metrics: Option<prometheus::Observe>,
    /// The log plugins that apply (no allocation when none do).
    pub sinks: Vec<Arc<log::LogPlugin>>,
    /// Who the request is, for the log plugins' entries.
    pub consumer: Option<log::serialize::Consumer>,
}

impl LogWork {
    fn set_sinks(&mut self, chain: &Chain<'_>) {
        self.sinks.clear();
        self.sinks
            .extend(chain.logs.iter().flatten().map(|l| (*l).clone()));
    }
}

/// Who the request is, once authentication ran.
#[derive(Clone, Copy, Default)]
pub struct Identity<'a> {
    pub consumer: Option<&'a Consumer>,
    /// The credential's id; None for an anonymous consumer.
    pub credential: Option<&'a str>,
    /// What `X-Credential-Identifier` says (key-auth: the id; jwt: the key).
    pub credential_label: Option<&'a str>,
}

/// Runs the request phases. `Err` is the response to send instead of
/// forwarding; it carries the headers earlier phases set for the response
/// (CORS, the correlation id), as Kong's header filters run on its exits too.
/// `log` is left with what the log phase records, refused or not.
pub async fn access(
    g: &Gateway,
    route: &RoutePlugins,
    state: &State,
    req: Request<'_, '_>,
    log: &mut LogWork,
) -> Result<Outcome, Reject> {
    let mut out = Outcome::default();
    match phases(g, route, state, req, &mut out, log).await {
        Ok(()) => Ok(out),
        Err(mut r) => {
            let mut headers = out.response_headers;
            headers.append(&mut r.headers);
            r.headers = headers;
            Err(r)
        }
    }
}

async fn phases(
    g: &Gateway,
    route: &RoutePlugins,
    state: &State,
    req: Request<'_, '_>,
    out: &mut Outcome,
    log: &mut LogWork,
) -> Result<(), Reject> {
    let mut chain = Chain::resolve(g, &route.plugins)?;
    let series = route.series.as_ref().map(|s| &s.series);
    // Recorded whoever answers; the consumer, once known, is set below.
    if let (Some(p), Some(s)) = (chain.prometheus, series) {
        log.metrics = Some(p.observe(s, None));
    }
    log.set_sinks(&chain);
    let client = g.client_ip.resolve(req.peer, req.headers);

    if let Some(c) = chain.correlation_id
        && let Some(h) = c.apply(req.headers, req.local)
    {
        out.response_headers.push(h);
    }
    if let Some(i) = chain.ip_restriction {
        i.check(client)?;
    }
    if let Some(c) = chain.cors {
        if cors::Cors::is_preflight(req.headers, req.method) && !c.preflight_continue {
            return Err(Reject::answer(200, c.preflight(req.headers)));
        }
        c.actual(req.headers, &mut out.response_headers);
    }

    // Authentication: jwt, then key-auth (Kong's priorities). Each must
    // pass, unless it has `anonymous`: then it is skipped once another
    // established a credential (Kong's logical OR of auth plugins).
    let mut who = Identity::default();
    if chain.jwt.is_some() || chain.key_auth.is_some() {
        consumers::strip_identity_headers(req.headers);
    }
    if let Some(j) = chain.jwt {
        let now = rate_limiting::now_secs();
        // Boxed, as the rate limiting below: their futures (a JWKS fetch, a
        // Redis call) are most of this one's size, which every request
        // with plugins would otherwise build and move.
        who = Box::pin(j.authenticate(
            &state.jwks,
            &g.directory,
            req.headers,
            req.path_and_query.to_mut(),
            req.method,
            now,
        ))
        .await?;
    }
    if let Some(k) = chain.key_auth
        && !(k.has_anonymous() && who.credential.is_some())
    {
        let w = k.authenticate(
            &g.directory,
            req.headers,
            req.path_and_query.to_mut(),
            req.method,
        )?;
        if w.consumer.is_some() || who.consumer.is_none() {
            who = w;
        }
    }
    if let Some(c) = who.consumer {
        consumers::set_identity_headers(req.headers, c, who.credential_label);
    }
    // Consumer-scoped instances replace the route's, by plugin name;
    // rate-limiting ones add to them.
    if let Some(c) = who.consumer
        && let Some(ids) = route.consumers.get(&c.id)
    {
        chain.extend(g, ids)?;
    }
    if let (Some(p), Some(s), Some(c)) = (chain.prometheus, series, who.consumer) {
        log.metrics = Some(p.observe(s, c.username.as_deref()));
    }
    log.set_sinks(&chain);
    if let Some(c) = who.consumer
        && !log.sinks.is_empty()
    {
        log.consumer = Some(log::serialize::Consumer {
            id: c.id.clone(),
            username: c.username.clone(),
            custom_id: c.custom_id.clone(),
            credential: who.credential.map(str::to_string),
        });
    }
    if let Some(a) = chain.acl {
        a.check(who, req.headers)?;
    }
    if !chain.rate_limiting.is_empty() {
        let ctx = rate_limiting::Ctx {
            identity: who,
            client,
            service_id: &route.service_id,
            headers: req.headers,
            path: req.path_and_query.split('?').next().unwrap_or_default(),
        };
        Box::pin(rate_limiting::apply(
            &chain.rate_limiting,
            state,
            &ctx,
            &mut out.response_headers,
        ))
        .await?;
    }
    if let Some(l) = chain.size_limit {
        out.body_limit = l.check(req.headers)?;
    }
    // Validation before transforms: the schema describes what the client sends.
    if let Some(v) = chain.request_validator {
        v.check_params(req.headers, req.path_and_query, req.path_regex)?;
        if v.reads_body() {
            out.validate_body = Some(v.clone());
        }
    }
    if let Some(t) = chain.request_transformer {
        out.request_transform =
            Some(t.access(req.headers, req.path_and_query.to_mut(), req.method)?);
    }
    out.response_transform = chain.response_transformer.cloned();
    // The cache is looked up last, on the request as it will be forwarded.
    if let Some((id, pc)) = chain.proxy_cache {
        let consumer = who.consumer.map(|c| c.id.as_str());
        let d = pc.request(
            &state.cache,
            id,
            &route.route_id,
            consumer,
            req.method,
            req.path_and_query,
            req.headers,
        );
        out.cache = Some(match d {
            proxy_cache::Decision::Bypass => CacheStep::Bypass(pc.clone()),
            proxy_cache::Decision::Fetch(l, status) => CacheStep::Fetch(pc.clone(), l, status),
            proxy_cache::Decision::Hit(c) => {
                let mut r = Reject::new(c.status, "");
                r.body = reject::Answer::Stored(Box::new((pc.hit_headers(&c), c.body)));
                return Err(r);
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_the_proxy_cannot_run_is_refused() {
        let g = pb::Gateway {
            plugins: vec![pb::Plugin {
                id: "p1".into(),
                name: "no-such-plugin".into(),
                config_json: "{}".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = Gateway::compile(&g.encode_to_vec()).unwrap_err();
        assert!(e.contains("not supported by gantry-proxy"), "{e}");
        let per = pb::PerRoute {
            names: vec!["no-such-plugin".into()],
            ..Default::default()
        };
        let any = envoy_types::pb::google::protobuf::Any {
            type_url: pb::PER_ROUTE_TYPE.into(),
            value: per.encode_to_vec(),
        };
        assert!(RoutePlugins::compile(&any).is_err());
        assert!(RoutePlugins::compile(&per.to_typed_struct()).is_err());
    }

    #[test]
    fn per_route_config_as_a_typed_struct_or_bare() {
        use envoy_types::pb::envoy::config::route::v3::FilterConfig;
        let per = pb::PerRoute {
            route_id: "r".into(),
            service_id: "s".into(),
            plugins: vec!["p1".into()],
            consumer_plugins: [(
                "c".to_string(),
                pb::PluginIds {
                    ids: vec!["p2".into()],
                },
            )]
            .into_iter()
            .collect(),
            names: vec!["key-auth".into(), "prometheus".into()],
            route_label: "users-api".into(),
            service_label: "user-service".into(),
            log_context: String::new(),
        };
        let bare = envoy_types::pb::google::protobuf::Any {
            type_url: pb::PER_ROUTE_TYPE.into(),
            value: per.encode_to_vec(),
        };
        for inner in [per.to_typed_struct(), bare] {
            let wrapped = envoy_types::pb::google::protobuf::Any {
                type_url: "type.googleapis.com/envoy.config.route.v3.FilterConfig".into(),
                value: FilterConfig {
                    config: Some(inner.clone()),
                    is_optional: true,
                    disabled: false,
                }
                .encode_to_vec(),
            };
            for any in [&inner, &wrapped] {
                let r = RoutePlugins::compile(any).expect("accepted");
                assert_eq!((r.route_id.as_str(), r.service_id.as_str()), ("r", "s"));
                assert_eq!(r.plugins, ["p1"]);
                assert_eq!(r.consumers["c"], ["p2"]);
                let h = r
                    .series
                    .as_ref()
                    .expect("prometheus applies: series resolved");
                assert_eq!(
                    h.labels,
                    ("user-service".to_string(), "users-api".to_string())
                );
            }
        }
        // A TypedStruct of another type is refused, naming it.
        let other = envoy_types::pb::google::protobuf::Any {
            type_url: gantry_shared::proto::typed_struct::TYPE.into(),
            value: gantry_shared::proto::typed_struct::TypedStruct {
                type_url: "type.googleapis.com/some.Other".into(),
                value: None,
            }
            .encode_to_vec(),
        };
        let e = RoutePlugins::compile(&other).unwrap_err();
        assert!(e.contains("some.Other"), "{e}");
    }
}
