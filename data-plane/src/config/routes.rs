//! RDS: route configurations compiled into a lookup table with Envoy's
//! semantics (`Router::RouteMatcher`, `VirtualHostImpl`, the route entry
//! classes of `config_impl.cc`, and `Http::Utility::newUri` for redirects).

use super::fields;
use super::headers::{HeaderMutations, HeaderStage, compile_stage};
use super::matchers::{Ctx, HeaderMatcher, HeaderSource, QueryParamMatcher};
use super::path_index::PathIndex;
use super::vhost_layout::{Group, HostPat, lay_out};
use super::{
    Cluster, CompileError, check_header_value, fraction, opt_duration, positive_duration,
    reject_rest,
};
use crate::re2::{Re2, RegexRewrite};
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, RetryPolicy as PbRetryPolicy, Route as PbRoute,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost as PbVirtualHost, WeightedCluster,
    redirect_action::{PathRewriteSpecifier, SchemeRewriteSpecifier},
    route::Action as PbAction,
    route_action::{
        ClusterSpecifier, HashPolicy as PbHashPolicy, HostRewriteSpecifier, RequestMirrorPolicy,
        hash_policy::PolicySpecifier,
    },
    route_match::PathSpecifier,
    weighted_cluster::RandomValueSpecifier,
};
use gantry_shared::proto::route::RouteEntry;
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Envoy's route timeout when `timeout` is unset.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's default `max_direct_response_body_size_bytes`.
pub const DEFAULT_MAX_DIRECT_RESPONSE_BODY: u32 = 4096;

// ---------------------------------------------------------------------------
// The table.

/// One compiled RouteConfiguration.
#[derive(Clone, Debug)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    pub ignore_port_in_host_matching: bool,
    pub ignore_path_parameters_in_path_matching: bool,
    exact: HashMap<String, usize>,
    /// Suffix wildcards (`*.foo.com` kept as `.foo.com`) by length, longest first.
    suffixes: Vec<(usize, HashMap<String, usize>)>,
    /// Prefix wildcards (`foo.*` kept as `foo.`) by length, longest first.
    prefixes: Vec<(usize, HashMap<String, usize>)>,
    default: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    /// Shared with other virtual hosts that carry the same route (the
    /// translator copies host-less routes into every virtual host).
    pub routes: Vec<Arc<Route>>,
    pub index: PathIndex,
}

/// How a route matches the path, which is also what `prefix_rewrite`
/// replaces.
#[derive(Clone, Debug)]
pub enum MatchKind {
    Prefix(String),
    /// The exact path (without the query string).
    Path(String),
    /// A prefix that must end at a `/` or at the end of the path.
    PathSeparatedPrefix(String),
    /// A full match of the path (without the query string).
    Regex(Re2),
}

/// One compiled route.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub path_match: MatchKind,
    /// Applies to prefix, path and path_separated_prefix matching (ASCII
    /// case folding); regexes decide for themselves.
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query_parameters: Vec<QueryParamMatcher>,
    /// `match.grpc`: content-type `application/grpc` or `application/grpc+...`.
    pub grpc: bool,
    pub action: Action,
    /// Route, virtual host and route configuration levels, in the order
    /// Envoy applies them (the last stage wins).
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    /// Kong's plugins for this route (the plugin filter's per-route config).
    pub plugins: Option<Arc<crate::plugins::RoutePlugins>>,
}

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per route, read in place
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
    /// A direct response. For 201 and 3xx statuses Envoy also sets
    /// `Location` to the request's URL: see [`direct_response_location`].
    Direct {
        status: u16,
        body: bytes::Bytes,
    },
}

#[derive(Clone, Debug)]
pub enum ClusterChoice {
    Single(String),
    /// Clusters with their weights, and the total weight (> 0).
    Weighted(Vec<(String, u32)>, u32),
}

impl ClusterChoice {
    /// Envoy's weighted pick: `rand % total` falls into one cluster's
    /// `[begin, end)` interval, in configuration order.
    /// The cluster for one request; `rand` is drawn only for a weighted
    /// choice.
    pub fn pick(&self, rand: impl FnOnce() -> u64) -> &str {
        match self {
            ClusterChoice::Single(c) => c,
            ClusterChoice::Weighted(cs, total) => {
                let selected = rand() % u64::from((*total).max(1));
                let mut end = 0u64;
                for (name, w) in cs {
                    end += u64::from(*w);
                    if selected < end {
                        return name;
                    }
                }
                cs.last().map(|(n, _)| n.as_str()).unwrap_or_default()
            }
        }
    }

    /// Every cluster this choice can name.
    pub fn clusters(&self) -> Vec<&str> {
        match self {
            ClusterChoice::Single(c) => vec![c.as_str()],
            ClusterChoice::Weighted(cs, _) => cs.iter().map(|(n, _)| n.as_str()).collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRewrite {
    /// Keep the request's host.
    None,
    /// `host_rewrite_literal`.
    Literal(String),
    /// `auto_host_rewrite`: the chosen endpoint's hostname, when it has one.
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Default,
    High,
}

/// `retry_on` conditions, as Envoy's bit flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn(pub u32);

impl RetryOn {
    pub const FIVE_XX: RetryOn = RetryOn(1 << 0);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 2);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 3);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 5);
    pub const RESET: RetryOn = RetryOn(1 << 6);
    pub const RETRIABLE_HEADERS: RetryOn = RetryOn(1 << 7);
    pub const ENVOY_RATE_LIMITED: RetryOn = RetryOn(1 << 8);
    pub const HTTP3_POST_CONNECT_FAILURE: RetryOn = RetryOn(1 << 9);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 10);
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 16);
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 17);
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 18);
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 19);
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 20);

    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// `RetryStateImpl::parseRetryOn` + `parseRetryGrpcOn`: comma-separated,
    /// whitespace trimmed, unknown tokens ignored (as Envoy does for route
    /// configuration).
    pub fn parse(s: &str) -> RetryOn {
        let mut v = 0;
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            v |= match t {
                "5xx" => Self::FIVE_XX.0,
                "gateway-error" => Self::GATEWAY_ERROR.0,
                "connect-failure" => Self::CONNECT_FAILURE.0,
                "envoy-ratelimited" => Self::ENVOY_RATE_LIMITED.0,
                "retriable-4xx" => Self::RETRIABLE_4XX.0,
                "refused-stream" => Self::REFUSED_STREAM.0,
                "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES.0,
                "retriable-headers" => Self::RETRIABLE_HEADERS.0,
                "reset" => Self::RESET.0,
                "reset-before-request" => Self::RESET_BEFORE_REQUEST.0,
                "http3-post-connect-failure" => Self::HTTP3_POST_CONNECT_FAILURE.0,
                "cancelled" => Self::GRPC_CANCELLED.0,
                "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED.0,
                "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED.0,
                "unavailable" => Self::GRPC_UNAVAILABLE.0,
                "internal" => Self::GRPC_INTERNAL.0,
                _ => 0,
            };
        }
        RetryOn(v)
    }
}

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// Default 1.
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub per_try_idle_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    /// Response matchers for `retriable-headers`.
    pub retriable_headers: Vec<HeaderMatcher>,
    /// When set, only requests matching one of these are retried.
    pub retriable_request_headers: Vec<HeaderMatcher>,
    /// Default 25 ms (values below 1 ms become 1 ms).
    pub backoff_base: Duration,
    /// Default 10 x base.
    pub backoff_max: Duration,
    /// `host_selection_retry_max_attempts` (default 1).
    pub host_selection_max_attempts: i64,
}

impl RetryPolicy {
    /// Whether a response with this status alone calls for a retry
    /// (`5xx`, `gateway-error`, `retriable-4xx`, `retriable-status-codes`).
    /// Use `should_retry_response` when the headers are at hand.
    pub fn should_retry_status(&self, status: u16) -> bool {
        let on = self.retry_on;
        (on.contains(RetryOn::FIVE_XX) && (500..600).contains(&status))
            || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
            || (on.contains(RetryOn::RETRIABLE_4XX) && status == 409)
            || (on.contains(RetryOn::RETRIABLE_STATUS_CODES)
                && self.retriable_status_codes.contains(&status))
    }

    /// `RetryStateImpl::wouldRetryFromHeaders`: never when the upstream
    /// says `x-envoy-overloaded`; `x-envoy-ratelimited` only with
    /// `envoy-ratelimited`; then the status conditions, `retriable-headers`
    /// and the gRPC status conditions (`grpc-status` header).
    pub fn should_retry_response(&self, status: u16, headers: &http::HeaderMap) -> bool {
        if headers.contains_key("x-envoy-overloaded") {
            return false;
        }
        if headers.contains_key("x-envoy-ratelimited") {
            return self.retry_on.contains(RetryOn::ENVOY_RATE_LIMITED);
        }
        if self.should_retry_status(status) {
            return true;
        }
        if self.retry_on.contains(RetryOn::RETRIABLE_HEADERS)
            && self
                .retriable_headers
                .iter()
                .any(|h| h.matches_response(status, headers))
        {
            return true;
        }
        let grpc = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        match grpc {
            Some(1) => self.retry_on.contains(RetryOn::GRPC_CANCELLED),
            Some(4) => self.retry_on.contains(RetryOn::GRPC_DEADLINE_EXCEEDED),
            Some(8) => self.retry_on.contains(RetryOn::GRPC_RESOURCE_EXHAUSTED),
            Some(13) => self.retry_on.contains(RetryOn::GRPC_INTERNAL),
            Some(14) => self.retry_on.contains(RetryOn::GRPC_UNAVAILABLE),
            _ => false,
        }
    }

    /// `retriable_request_headers`: when set, only requests matching one of
    /// them are retried at all.
    pub fn applies_to(&self, req: &RequestView<'_>) -> bool {
        if self.retriable_request_headers.is_empty() {
            return true;
        }
        let ctx = Ctx {
            method: Some(req.method.as_str()),
            authority: Some(req.authority),
            path: Some(req.path_and_query),
            scheme: req.scheme,
            status: None,
            headers: Some(req.headers),
        };
        self.retriable_request_headers
            .iter()
            .any(|h| h.matches(&ctx))
    }
}

/// A hash policy (`RouteAction.hash_policy`), evaluated in order: each
/// policy that yields a value is mixed into the hash (Envoy: rotate the
/// hash left by one bit, then xor); a terminal policy that yields a value
/// ends the evaluation. `filter_state` policies never yield a value here
/// (nothing sets filter state) and are left out.
#[derive(Clone, Debug)]
pub enum HashPolicy {
    /// A header, lower-cased; pseudo-headers (`:path`, `:authority`,
    /// `:method`) included. `source` says where the value is read.
    Header {
        name: String,
        source: HeaderSource,
        rewrite: Option<RegexRewrite>,
        terminal: bool,
    },
    /// A cookie; with a ttl, Envoy sets it when absent (ttl 0: a session
    /// cookie) to the hash of the source address.
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: String,
        attributes: Vec<(String, String)>,
        terminal: bool,
    },
    /// The downstream connection's source IP.
    SourceIp { terminal: bool },
    /// The first value of a query parameter (not decoded).
    QueryParameter { name: String, terminal: bool },
}

impl HashPolicy {
    pub fn terminal(&self) -> bool {
        match self {
            HashPolicy::Header { terminal, .. }
            | HashPolicy::Cookie { terminal, .. }
            | HashPolicy::SourceIp { terminal }
            | HashPolicy::QueryParameter { terminal, .. } => *terminal,
        }
    }

    /// What Envoy hashes for this policy, when the request has it: a
    /// header's values (each rewritten, then sorted so their order does not
    /// matter, joined with `,`), a cookie's value (quotes removed), a query
    /// parameter's first value. None for `SourceIp` (the caller has the
    /// address) and when absent.
    pub fn value(&self, req: &RequestView<'_>) -> Option<String> {
        match self {
            HashPolicy::Header {
                source, rewrite, ..
            } => {
                let mut vals: Vec<String> = match source {
                    HeaderSource::Named(n) => req
                        .headers
                        .get_all(n)
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .collect(),
                    HeaderSource::Method => vec![req.method.as_str().to_string()],
                    HeaderSource::Authority => vec![req.authority.to_string()],
                    HeaderSource::Path => vec![req.path_and_query.to_string()],
                    HeaderSource::Scheme => req.scheme.map(str::to_string).into_iter().collect(),
                    HeaderSource::Status | HeaderSource::Absent => vec![],
                };
                if vals.is_empty() {
                    return None;
                }
                if let Some(rw) = rewrite {
                    for v in vals.iter_mut() {
                        *v = rw.replace_all(v).into_owned();
                    }
                }
                vals.sort();
                Some(vals.join(","))
            }
            HashPolicy::Cookie { name, .. } => cookie_value(req.headers, name),
            HashPolicy::SourceIp { .. } => None,
            HashPolicy::QueryParameter { name, .. } => {
                super::matchers::first_query_value(req.path_and_query, name).map(str::to_string)
            }
        }
    }
}

/// `Http::Utility::parseCookie`: the first cookie of that name across the
/// Cookie headers, surrounding double quotes removed.
pub fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    for h in headers.get_all(http::header::COOKIE) {
        let Ok(h) = std::str::from_utf8(h.as_bytes()) else {
            continue;
        };
        for part in h.split(';').filter(|p| !p.is_empty()) {
            let Some(eq) = part.find('=') else { continue };
            let k = part[..eq].trim_start_matches(' ');
            let mut v = &part[eq + 1..];
            if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                v = &v[1..v.len() - 1];
            }
            if k == name {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// A request mirror (shadow) policy.
#[derive(Clone, Debug)]
pub struct Mirror {
    pub cluster: String,
    /// Sampled when `rand % denominator < numerator` (default 100/100).
    pub numerator: u32,
    pub denominator: u32,
    /// When false (the default) the mirrored request's host gets `-shadow`
    /// appended.
    pub disable_shadow_host_suffix_append: bool,
}

impl Mirror {
    pub fn sampled(&self, rand: u64) -> bool {
        rand % u64::from(self.denominator.max(1)) < u64::from(self.numerator)
    }
}

#[derive(Clone, Debug)]
pub struct Forward {
    pub cluster: ClusterChoice,
    /// `cluster_not_found_response_code`: 503 (default), 404 or 500.
    pub cluster_not_found_status: u16,
    /// None: no timeout (configured 0). Unset: 15 s.
    pub timeout: Option<Duration>,
    /// The route's stream idle timeout, overriding the connection
    /// manager's; `Some(0)` disables it.
    pub idle_timeout: Option<Duration>,
    /// The route's policy, else the virtual host's.
    pub retry: Option<RetryPolicy>,
    pub host_rewrite: HostRewrite,
    pub append_x_forwarded_host: bool,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<RegexRewrite>,
    pub hash_policies: Vec<HashPolicy>,
    /// The route's, else the virtual host's, else the route configuration's.
    pub mirrors: Vec<Mirror>,
    /// Per-route WebSocket upgrade override (None: the listener decides).
    pub websocket: Option<bool>,
    pub priority: Priority,
    /// The route's request header mutations (the same as
    /// `Route::request_headers`), here for the forwarding path.
    pub request_headers: HeaderMutations,
}

/// The path part of a redirect.
#[derive(Clone, Debug)]
pub enum PathRedirect {
    None,
    /// `path_redirect`; `has_query` when it carries its own query string.
    Path {
        path: String,
        has_query: bool,
    },
    /// `prefix_rewrite`: replaces the matched part of the path.
    Prefix(String),
    /// `regex_rewrite` on the path without its query.
    Regex(RegexRewrite),
}

#[derive(Clone, Debug)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// `scheme_redirect`, or "https" for `https_redirect`.
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u32>,
    pub path: PathRedirect,
    pub strip_query: bool,
    /// The route's path match (what `prefix_rewrite` replaces).
    pub matched: MatchKind,
}

/// What a redirect's `Location` is built from.
#[derive(Clone, Copy, Debug)]
pub struct RedirectRequest<'a> {
    /// `:scheme` of the request.
    pub scheme: &'a str,
    /// `x-forwarded-proto` as the connection manager set it.
    pub forwarded_proto: &'a str,
    /// Host / `:authority`.
    pub authority: &'a str,
    pub path_and_query: &'a str,
}

/// A request as route selection sees it.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    pub authority: &'a str,
    pub path_and_query: &'a str,
    pub method: &'a http::Method,
    /// For `:scheme` header matchers (absent when None).
    pub scheme: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
}

/// The outcome of route selection.
#[derive(Clone, Copy, Debug)]
pub struct Selected<'a> {
    /// The virtual host's name.
    pub vhost: &'a str,
    pub virtual_host: &'a VirtualHost,
    pub route: &'a Route,
    /// How the route matched (`route.path_match`), for `Forward::rewrite_path`.
    pub matched: &'a MatchKind,
}

impl RouteTable {
    /// Every route of every virtual host (a shared route once per host).
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.virtual_hosts
            .iter()
            .flat_map(|v| v.routes.iter().map(|r| r.as_ref()))
    }

    /// Selects the virtual host by authority, then the first route that
    /// matches. None means 404 (no virtual host, or no route matched).
    pub fn select(
        &self,
        authority: &str,
        path_and_query: &str,
        method: &http::Method,
        headers: &http::HeaderMap,
    ) -> Option<Selected<'_>> {
        self.select_request(&RequestView {
            authority,
            path_and_query,
            method,
            scheme: None,
            headers,
        })
    }

    pub fn select_request(&self, req: &RequestView<'_>) -> Option<Selected<'_>> {
        let vh = self.virtual_host(req.authority)?;
        let ctx = Ctx {
            method: Some(req.method.as_str()),
            authority: Some(req.authority),
            path: Some(req.path_and_query),
            scheme: req.scheme,
            status: None,
            headers: Some(req.headers),
        };
        let path = if self.ignore_path_parameters_in_path_matching {
            match req.path_and_query.find(';') {
                Some(i) => &req.path_and_query[..i],
                None => req.path_and_query,
            }
        } else {
            req.path_and_query
        };
        let route = vh
            .index
            .first(&vh.routes, strip_query(path).as_bytes(), |r| {
                r.matches(path, req.path_and_query, &ctx)
            })?;
        Some(Selected {
            vhost: &vh.name,
            virtual_host: vh,
            route,
            matched: &route.path_match,
        })
    }

    /// Route selection by a plain scan, without the index: the reference
    /// the index is tested against.
    #[cfg(test)]
    pub(crate) fn select_linear(&self, req: &RequestView<'_>) -> Option<&Route> {
        let vh = self.virtual_host(req.authority)?;
        let ctx = Ctx {
            method: Some(req.method.as_str()),
            authority: Some(req.authority),
            path: Some(req.path_and_query),
            scheme: req.scheme,
            status: None,
            headers: Some(req.headers),
        };
        vh.routes
            .iter()
            .map(|r| &**r)
            .find(|r| r.matches(req.path_and_query, req.path_and_query, &ctx))
    }

    /// Envoy's virtual host selection: exact domain, then the longest
    /// suffix wildcard, then the longest prefix wildcard, then `*`. Hosts
    /// are compared lower-cased; the port is stripped first only with
    /// `ignore_port_in_host_matching`. A wildcard must match at least one
    /// character.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        if self.exact.is_empty() && self.suffixes.is_empty() && self.prefixes.is_empty() {
            return self.default.map(|i| &self.virtual_hosts[i]);
        }
        let host = if self.ignore_port_in_host_matching {
            match port_start(authority) {
                Some(i) => &authority[..i],
                None => authority,
            }
        } else {
            authority
        };
        let mut buf = [0u8; 256];
        let owned;
        let host: &str = if host.len() <= buf.len() {
            let b = &mut buf[..host.len()];
            b.copy_from_slice(host.as_bytes());
            b.make_ascii_lowercase();
            // ASCII lower-casing keeps UTF-8 valid.
            std::str::from_utf8(b).unwrap_or(host)
        } else {
            owned = host.to_ascii_lowercase();
            &owned
        };
        if let Some(i) = self.exact.get(host) {
            return Some(&self.virtual_hosts[*i]);
        }
        for (len, map) in &self.suffixes {
            if *len >= host.len() {
                continue;
            }
            if let Some(s) = host.get(host.len() - len..)
                && let Some(i) = map.get(s)
            {
                return Some(&self.virtual_hosts[*i]);
            }
        }
        for (len, map) in &self.prefixes {
            if *len >= host.len() {
                continue;
            }
            if let Some(p) = host.get(..*len)
                && let Some(i) = map.get(p)
            {
                return Some(&self.virtual_hosts[*i]);
            }
        }
        self.default.map(|i| &self.virtual_hosts[i])
    }
}

/// `Http::HeaderUtility::getPortStart`: the last `:` unless it is inside a
/// bracketed IPv6 literal.
pub(crate) fn port_start(host: &str) -> Option<usize> {
    let colon = host.rfind(':')?;
    match host.rfind(']') {
        Some(v6_end) if v6_end > colon => None,
        _ => Some(colon),
    }
}

/// The path without query string and fragment (`PathUtil::removeQueryAndFragment`).
pub(crate) fn strip_query(p: &str) -> &str {
    match p.find(['?', '#']) {
        Some(i) => &p[..i],
        None => p,
    }
}

fn starts_with(s: &str, prefix: &str, case_sensitive: bool) -> bool {
    s.len() >= prefix.len()
        && if case_sensitive {
            s.as_bytes()[..prefix.len()] == *prefix.as_bytes()
        } else {
            s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
}

impl Route {
    /// `path` is the path used for path matching (path parameters already
    /// removed when configured); `full` the original path and query.
    fn matches(&self, path: &str, full: &str, ctx: &Ctx<'_>) -> bool {
        let p = strip_query(path);
        let path_ok = match &self.path_match {
            MatchKind::Prefix(pre) => starts_with(p, pre, self.case_sensitive),
            MatchKind::Path(exact) => {
                if self.case_sensitive {
                    p == exact
                } else {
                    p.eq_ignore_ascii_case(exact)
                }
            }
            MatchKind::PathSeparatedPrefix(pre) => {
                starts_with(p, pre, self.case_sensitive)
                    && (p.len() == pre.len() || p.as_bytes()[pre.len()] == b'/')
            }
            MatchKind::Regex(re) => re.full_match(p.as_bytes()),
        };
        if !path_ok {
            return false;
        }
        if self.grpc && !is_grpc(ctx) {
            return false;
        }
        if !self.headers.iter().all(|h| h.matches(ctx)) {
            return false;
        }
        self.query_parameters.iter().all(|q| q.matches(full))
    }
}

fn matched_len(m: &MatchKind, path_and_query: &str) -> usize {
    match m {
        MatchKind::Prefix(p) | MatchKind::Path(p) | MatchKind::PathSeparatedPrefix(p) => p.len(),
        MatchKind::Regex(_) => strip_query(path_and_query).len(),
    }
}

/// `path.replace(0, n, with)`, tolerating a short path.
fn replace_head(path: &str, n: usize, with: &str) -> String {
    let n = n.min(path.len());
    let n = if path.is_char_boundary(n) {
        n
    } else {
        path.len()
    };
    let mut s = String::with_capacity(with.len() + path.len() - n);
    s.push_str(with);
    s.push_str(&path[n..]);
    s
}

fn is_grpc(ctx: &Ctx<'_>) -> bool {
    let Some(ct) = ctx
        .headers
        .and_then(|h| h.get(http::header::CONTENT_TYPE))
        .map(|v| v.as_bytes())
    else {
        return false;
    };
    let g = b"application/grpc";
    ct.starts_with(g) && (ct.len() == g.len() || ct[g.len()] == b'+')
}

impl Forward {
    /// Whether a path rewrite is configured.
    pub fn has_path_rewrite(&self) -> bool {
        self.prefix_rewrite.is_some() || self.regex_rewrite.is_some()
    }

    /// The upstream path and query: `prefix_rewrite` replaces the matched
    /// prefix (the configured prefix or path; for a regex route the whole
    /// path), `regex_rewrite` replaces matches in the path without its
    /// query, the query is kept. Without a rewrite, the original.
    pub fn rewrite_path<'a>(
        &self,
        matched: &MatchKind,
        original_path_and_query: &'a str,
    ) -> std::borrow::Cow<'a, str> {
        if let Some(p) = &self.prefix_rewrite {
            return replace_head(
                original_path_and_query,
                matched_len(matched, original_path_and_query),
                p,
            )
            .into();
        }
        if let Some(rw) = &self.regex_rewrite {
            let just = strip_query(original_path_and_query);
            let mut s = rw.replace_all(just).into_owned();
            s.push_str(&original_path_and_query[just.len()..]);
            return s.into();
        }
        original_path_and_query.into()
    }
}

impl Redirect {
    /// The `Location` Envoy sends, for a request whose x-forwarded-proto
    /// is its scheme (as the connection manager sets it with
    /// `use_remote_address`).
    pub fn location(&self, scheme: &str, authority: &str, path_and_query: &str) -> String {
        self.location_for(&RedirectRequest {
            scheme,
            forwarded_proto: scheme,
            authority,
            path_and_query,
        })
    }

    /// The `Location` Envoy sends: the path rewrite first (prefix or regex,
    /// as the router does for any direct response), then
    /// `Http::Utility::newUri`.
    pub fn location_for(&self, req: &RedirectRequest<'_>) -> String {
        let original = req.path_and_query;
        let path: std::borrow::Cow<'_, str> = match &self.path {
            PathRedirect::Prefix(p) => {
                replace_head(original, matched_len(&self.matched, original), p).into()
            }
            PathRedirect::Regex(rw) => {
                let just = strip_query(original);
                let r = rw.replace_all(just);
                // An empty result leaves the path alone (Envoy checks
                // `rewrite.empty()`).
                if r.is_empty() {
                    original.into()
                } else {
                    let mut s = r.into_owned();
                    s.push_str(&original[just.len()..]);
                    s.into()
                }
            }
            _ => original.into(),
        };
        new_uri(Some(self), &path, req)
    }
}

/// `Location` for a direct response: Envoy sets it to the request's URL
/// when the status is 201 or 3xx.
pub fn direct_response_location(status: u16, req: &RedirectRequest<'_>) -> Option<String> {
    (status == 201 || (300..400).contains(&status)).then(|| new_uri(None, req.path_and_query, req))
}

/// `Http::Utility::newUri`.
fn new_uri(cfg: Option<&Redirect>, path: &str, req: &RedirectRequest<'_>) -> String {
    let scheme: &str = cfg.and_then(|c| c.scheme.as_deref()).unwrap_or(req.scheme);
    let port = cfg
        .and_then(|c| c.port)
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let host: &str = match cfg.and_then(|c| c.host.as_deref()) {
        Some(h) => h,
        None => request_host(req, scheme, &port),
    };
    let mut final_path: String = match cfg.map(|c| &c.path) {
        Some(PathRedirect::Path { path: p, has_query }) => {
            if *has_query {
                p.clone()
            } else {
                match path.find('?') {
                    Some(q) => format!("{p}{}", &path[q..]),
                    None => p.clone(),
                }
            }
        }
        _ => path.to_string(),
    };
    if !final_path.starts_with('/') {
        final_path.insert(0, '/');
    }
    let path_has_query = matches!(
        cfg.map(|c| &c.path),
        Some(PathRedirect::Path {
            has_query: true,
            ..
        })
    );
    if cfg.is_some_and(|c| c.strip_query)
        && !path_has_query
        && let Some(q) = final_path.find('?')
    {
        final_path.truncate(q);
    }
    format!("{scheme}://{host}{port}{final_path}")
}

/// `processRequestHost`: the request's host, without its port when a new
/// port is set, or when the scheme changes and the port is the default of
/// the request's (x-forwarded-proto) scheme.
fn request_host<'a>(req: &RedirectRequest<'a>, new_scheme: &str, new_port: &str) -> &'a str {
    let host = req.authority;
    if host.is_empty() {
        return host;
    }
    let end = if host.starts_with('[') {
        host.rfind("]:").map(|i| i + 1)
    } else {
        host.rfind(':')
    };
    if let Some(end) = end {
        let port = &host[end..];
        let proto = req.forwarded_proto;
        let mut remove = !new_port.is_empty();
        if new_scheme != proto {
            remove |= proto.eq_ignore_ascii_case("https") && port == ":443";
            remove |= proto.eq_ignore_ascii_case("http") && port == ":80";
        }
        if remove {
            return &host[..end];
        }
    }
    host
}

// ---------------------------------------------------------------------------
// Compilation.

struct Inherited<'a> {
    config_request: Option<HeaderStage>,
    config_response: Option<HeaderStage>,
    most_specific_wins: bool,
    max_body: u32,
    config_mirrors: &'a [RequestMirrorPolicy],
}

/// A route configuration alone (its routes in its own virtual hosts).
#[cfg(test)]
pub(crate) fn compile(
    name: &str,
    rc: &RouteConfiguration,
    clusters: &BTreeMap<String, Cluster>,
) -> Result<RouteTable, String> {
    compile_config(name, rc, &[], clusters).map_err(|e| e.reason)
}

/// A route configuration with the route entries that fill it (none: its
/// routes are in its own virtual hosts).
pub(crate) fn compile_config(
    name: &str,
    rc: &RouteConfiguration,
    entries: &[&RouteEntry],
    clusters: &BTreeMap<String, Cluster>,
) -> Result<RouteTable, CompileError> {
    let config_err = |reason: String| super::err("RouteConfiguration", name, reason);
    let mut rest = settings_of_config(rc);
    rest.name.clear();
    let vhosts = &rc.virtual_hosts;
    let req_add = std::mem::take(&mut rest.request_headers_to_add);
    let req_rm = std::mem::take(&mut rest.request_headers_to_remove);
    let resp_add = std::mem::take(&mut rest.response_headers_to_add);
    let resp_rm = std::mem::take(&mut rest.response_headers_to_remove);
    let most_specific_wins = std::mem::take(&mut rest.most_specific_header_mutations_wins);
    let validate_clusters = rest.validate_clusters.take().is_some_and(|b| b.value);
    let max_body = rest
        .max_direct_response_body_size_bytes
        .take()
        .map(|v| v.value)
        .unwrap_or(DEFAULT_MAX_DIRECT_RESPONSE_BODY);
    let config_mirrors = std::mem::take(&mut rest.request_mirror_policies);
    let ignore_port = std::mem::take(&mut rest.ignore_port_in_host_matching);
    let ignore_params = std::mem::take(&mut rest.ignore_path_parameters_in_path_matching);
    // No effect without the filters they configure (which the listener
    // compiler would have refused), or no effect on traffic.
    rest.typed_per_filter_config.clear();
    rest.metadata = None;
    reject_rest(&rest, fields::ROUTE_CONFIGURATION, "route configuration").map_err(config_err)?;

    let inherited = Inherited {
        config_request: compile_stage(&req_add, &req_rm, "request_headers_to_add/remove")
            .map_err(config_err)?,
        config_response: compile_stage(&resp_add, &resp_rm, "response_headers_to_add/remove")
            .map_err(config_err)?,
        most_specific_wins,
        max_body,
        config_mirrors: &config_mirrors,
    };
    for m in &config_mirrors {
        mirror(m).map_err(|e| config_err(format!("request_mirror_policies: {e}")))?;
    }

    let compiled = if entries.is_empty() {
        let mut shared = RouteMemo::default();
        let mut out = Vec::with_capacity(vhosts.len());
        for vh in vhosts {
            out.push(
                virtual_host(vh, &inherited, &mut shared)
                    .map_err(|e| config_err(format!("virtual host {:?}: {e}", vh.name)))?,
            );
        }
        out
    } else if !vhosts.is_empty() {
        return Err(config_err(format!(
            "has virtual hosts of its own and {} route entries: a configuration's routes come one way",
            entries.len()
        )));
    } else {
        entry_hosts(name, entries, &inherited)?
    };

    let mut table = RouteTable {
        name: name.to_string(),
        virtual_hosts: Vec::with_capacity(compiled.len()),
        ignore_port_in_host_matching: ignore_port,
        ignore_path_parameters_in_path_matching: ignore_params,
        exact: HashMap::new(),
        suffixes: Vec::new(),
        prefixes: Vec::new(),
        default: None,
    };
    let mut suffixes: BTreeMap<usize, HashMap<String, usize>> = BTreeMap::new();
    let mut prefixes: BTreeMap<usize, HashMap<String, usize>> = BTreeMap::new();
    for v in compiled {
        let idx = table.virtual_hosts.len();
        for d in &v.domains {
            let duplicate = if d == "*" {
                if table.default.is_some() {
                    return Err(config_err(format!(
                        "Only a single wildcard domain is permitted in route {name}"
                    )));
                }
                table.default = Some(idx);
                false
            } else if let Some(s) = d.strip_prefix('*') {
                suffixes
                    .entry(s.len())
                    .or_default()
                    .insert(s.to_string(), idx)
                    .is_some()
            } else if let Some(p) = d.strip_suffix('*') {
                prefixes
                    .entry(p.len())
                    .or_default()
                    .insert(p.to_string(), idx)
                    .is_some()
            } else {
                table.exact.insert(d.clone(), idx).is_some()
            };
            if duplicate {
                return Err(config_err(format!(
                    "Only unique values for domains are permitted. Duplicate entry of domain {d} in route {name}"
                )));
            }
        }
        table.virtual_hosts.push(v);
    }
    table.suffixes = suffixes.into_iter().rev().collect();
    table.prefixes = prefixes.into_iter().rev().collect();

    if validate_clusters {
        for vh in &table.virtual_hosts {
            for r in &vh.routes {
                if let Action::Forward(f) = &r.action {
                    for c in f.cluster.clusters() {
                        if !clusters.contains_key(c) {
                            return Err(config_err(format!(
                                "virtual host {:?} route {:?}: route: unknown cluster '{c}'",
                                vh.name, r.name
                            )));
                        }
                    }
                    for m in &f.mirrors {
                        if !clusters.contains_key(&m.cluster) {
                            return Err(config_err(format!(
                                "virtual host {:?} route {:?}: route: unknown shadow cluster '{}'",
                                vh.name, r.name, m.cluster
                            )));
                        }
                    }
                }
            }
        }
    }
    Ok(table)
}

/// The virtual hosts of a configuration whose routes come as Gantry route
/// entries, laid out as the translator lays out Envoy's (one per domain,
/// plus `*`). Each route is compiled once, however many hosts hold it; the
/// laid-out hosts have no settings of their own, so routes inherit from
/// the configuration alone.
fn entry_hosts(
    config: &str,
    entries: &[&RouteEntry],
    inh: &Inherited<'_>,
) -> Result<Vec<VirtualHost>, CompileError> {
    let mut mirrors = Vec::new();
    for m in inh.config_mirrors {
        mirrors.push(mirror(m).map_err(|e| super::err("RouteConfiguration", config, e))?);
    }
    let ctx = VhCtx {
        inh,
        request: None,
        response: None,
        retry: None,
        mirrors,
    };
    let total: usize = entries.iter().map(|e| e.routes.len()).sum();
    let mut routes: Vec<Arc<Route>> = Vec::with_capacity(total);
    let mut ranks: Vec<&[u8]> = Vec::with_capacity(total);
    let mut groups: Vec<Group> = Vec::with_capacity(entries.len());
    for e in entries {
        let entry_err = |reason: String| super::err("RouteEntry", &e.name, reason);
        let mut hosts = Vec::with_capacity(e.domains.len());
        for d in &e.domains {
            if d.is_empty() || d == "*" {
                return Err(entry_err(format!(
                    "domains: {d:?} is not a host pattern (a host-less entry lists no domains)"
                )));
            }
            check_header_value(d.as_bytes(), "domains").map_err(entry_err)?;
            hosts.push(HostPat::parse(d));
        }
        hosts.sort();
        hosts.dedup();
        let start = routes.len() as u32;
        for (i, ranked) in e.routes.iter().enumerate() {
            let Some(r) = &ranked.route else {
                return Err(entry_err(format!("routes[{i}]: route is required")));
            };
            if ranked.rank.is_empty() {
                return Err(entry_err(format!("routes[{i}]: rank is required")));
            }
            let compiled = route(r, &ctx).map_err(|reason| {
                entry_err(if r.name.is_empty() {
                    format!("route #{i}: {reason}")
                } else {
                    format!("route {:?}: {reason}", r.name)
                })
            })?;
            routes.push(Arc::new(compiled));
            ranks.push(&ranked.rank);
        }
        groups.push(Group {
            hosts,
            routes: start..routes.len() as u32,
        });
    }
    // Ranks are unique by construction; the index only makes a broken
    // feed deterministic.
    let order = |a: &u32, b: &u32| ranks[*a as usize].cmp(ranks[*b as usize]).then(a.cmp(b));
    Ok(lay_out(&groups, order)
        .into_iter()
        .map(|v| {
            let held: Vec<Arc<Route>> = v
                .routes
                .iter()
                .map(|i| routes[*i as usize].clone())
                .collect();
            VirtualHost {
                name: v.name,
                domains: vec![v.domain],
                index: PathIndex::build(&held),
                routes: held,
            }
        })
        .collect())
}

/// A route configuration's own settings, without its virtual hosts:
/// cloning those would copy every route once more while compiling.
// Every field cloned the same way, Copy ones included.
#[allow(clippy::clone_on_copy)]
fn settings_of_config(v: &RouteConfiguration) -> RouteConfiguration {
    // Destructured field by field: a field added to the type fails to
    // compile here instead of being dropped without a check.
    let RouteConfiguration {
        name,
        virtual_hosts: _,
        vhds,
        internal_only_headers,
        response_headers_to_add,
        response_headers_to_remove,
        request_headers_to_add,
        request_headers_to_remove,
        most_specific_header_mutations_wins,
        validate_clusters,
        max_direct_response_body_size_bytes,
        cluster_specifier_plugins,
        request_mirror_policies,
        ignore_port_in_host_matching,
        vhost_header,
        ignore_path_parameters_in_path_matching,
        typed_per_filter_config,
        metadata,
        route_specifiers,
    } = v;
    RouteConfiguration {
        name: name.clone(),
        vhds: vhds.clone(),
        internal_only_headers: internal_only_headers.clone(),
        response_headers_to_add: response_headers_to_add.clone(),
        response_headers_to_remove: response_headers_to_remove.clone(),
        request_headers_to_add: request_headers_to_add.clone(),
        request_headers_to_remove: request_headers_to_remove.clone(),
        most_specific_header_mutations_wins: most_specific_header_mutations_wins.clone(),
        validate_clusters: validate_clusters.clone(),
        max_direct_response_body_size_bytes: max_direct_response_body_size_bytes.clone(),
        cluster_specifier_plugins: cluster_specifier_plugins.clone(),
        request_mirror_policies: request_mirror_policies.clone(),
        ignore_port_in_host_matching: ignore_port_in_host_matching.clone(),
        vhost_header: vhost_header.clone(),
        ignore_path_parameters_in_path_matching: ignore_path_parameters_in_path_matching.clone(),
        typed_per_filter_config: typed_per_filter_config.clone(),
        metadata: metadata.clone(),
        route_specifiers: route_specifiers.clone(),
        virtual_hosts: Vec::new(),
    }
}

/// A virtual host's own settings, without its routes (see
/// [`settings_of_config`]).
// Every field cloned the same way, Copy ones included.
#[allow(clippy::clone_on_copy)]
fn settings_of_vhost(v: &PbVirtualHost) -> PbVirtualHost {
    // Destructured field by field: a field added to the type fails to
    // compile here instead of being dropped without a check.
    let PbVirtualHost {
        name,
        domains,
        routes: _,
        matcher,
        require_tls,
        virtual_clusters,
        rate_limits,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        cors,
        typed_per_filter_config,
        include_request_attempt_count,
        include_attempt_count_in_response,
        retry_policy,
        retry_policy_typed_config,
        hedge_policy,
        include_is_timeout_retry_header,
        per_request_buffer_limit_bytes,
        request_body_buffer_limit,
        request_mirror_policies,
        metadata,
        route_specifiers,
    } = v;
    PbVirtualHost {
        name: name.clone(),
        domains: domains.clone(),
        matcher: matcher.clone(),
        require_tls: require_tls.clone(),
        virtual_clusters: virtual_clusters.clone(),
        rate_limits: rate_limits.clone(),
        request_headers_to_add: request_headers_to_add.clone(),
        request_headers_to_remove: request_headers_to_remove.clone(),
        response_headers_to_add: response_headers_to_add.clone(),
        response_headers_to_remove: response_headers_to_remove.clone(),
        cors: cors.clone(),
        typed_per_filter_config: typed_per_filter_config.clone(),
        include_request_attempt_count: include_request_attempt_count.clone(),
        include_attempt_count_in_response: include_attempt_count_in_response.clone(),
        retry_policy: retry_policy.clone(),
        retry_policy_typed_config: retry_policy_typed_config.clone(),
        hedge_policy: hedge_policy.clone(),
        include_is_timeout_retry_header: include_is_timeout_retry_header.clone(),
        per_request_buffer_limit_bytes: per_request_buffer_limit_bytes.clone(),
        request_body_buffer_limit: request_body_buffer_limit.clone(),
        request_mirror_policies: request_mirror_policies.clone(),
        metadata: metadata.clone(),
        route_specifiers: route_specifiers.clone(),
        routes: Vec::new(),
    }
}

/// Compiled routes by (virtual host settings, route) encoding, so a route
/// repeated in many virtual hosts with the same settings is compiled and
/// held once.
#[derive(Default)]
struct RouteMemo(HashMap<Vec<u8>, HashMap<Vec<u8>, Arc<Route>>>);

fn virtual_host(
    vh: &PbVirtualHost,
    inh: &Inherited<'_>,
    shared: &mut RouteMemo,
) -> Result<VirtualHost, String> {
    let mut rest = settings_of_vhost(vh);
    if rest.name.is_empty() {
        return Err("name must not be empty".into());
    }
    let name = std::mem::take(&mut rest.name);
    let domains_in = std::mem::take(&mut rest.domains);
    let routes_in = &vh.routes;
    // Everything a route inherits from its virtual host, as a memo key.
    let settings = rest.encode_to_vec();
    let req_add = std::mem::take(&mut rest.request_headers_to_add);
    let req_rm = std::mem::take(&mut rest.request_headers_to_remove);
    let resp_add = std::mem::take(&mut rest.response_headers_to_add);
    let resp_rm = std::mem::take(&mut rest.response_headers_to_remove);
    let retry = rest.retry_policy.take();
    let mirrors_in = std::mem::take(&mut rest.request_mirror_policies);
    // Stats, and policies that need filters the listener does not run.
    rest.virtual_clusters.clear();
    rest.rate_limits.clear();
    rest.cors = None;
    rest.typed_per_filter_config.clear();
    rest.metadata = None;
    reject_rest(&rest, fields::VIRTUAL_HOST, "virtual host")?;

    if domains_in.is_empty() {
        return Err("domains must not be empty".into());
    }
    let mut domains = Vec::with_capacity(domains_in.len());
    for d in &domains_in {
        check_header_value(d.as_bytes(), "domains")?;
        domains.push(d.to_ascii_lowercase());
    }
    let vh_request = compile_stage(&req_add, &req_rm, "request_headers_to_add/remove")?;
    let vh_response = compile_stage(&resp_add, &resp_rm, "response_headers_to_add/remove")?;
    let vh_retry = retry
        .as_ref()
        .map(retry_policy)
        .transpose()
        .map_err(|e| format!("retry_policy: {e}"))?;
    let mut vh_mirrors = Vec::new();
    for m in &mirrors_in {
        vh_mirrors.push(mirror(m).map_err(|e| format!("request_mirror_policies: {e}"))?);
    }
    if vh_mirrors.is_empty() {
        for m in inh.config_mirrors {
            vh_mirrors.push(mirror(m)?);
        }
    }
    let ctx = VhCtx {
        inh,
        request: vh_request,
        response: vh_response,
        retry: vh_retry,
        mirrors: vh_mirrors,
    };
    let mut routes = Vec::with_capacity(routes_in.len());
    let memo = shared.0.entry(settings).or_default();
    for (i, r) in routes_in.iter().enumerate() {
        let key = r.encode_to_vec();
        if let Some(done) = memo.get(&key) {
            routes.push(done.clone());
            continue;
        }
        let compiled = Arc::new(route(r, &ctx).map_err(|e| {
            if r.name.is_empty() {
                format!("route #{i}: {e}")
            } else {
                format!("route {:?}: {e}", r.name)
            }
        })?);
        memo.insert(key, compiled.clone());
        routes.push(compiled);
    }
    let index = PathIndex::build(&routes);
    Ok(VirtualHost {
        name,
        domains,
        routes,
        index,
    })
}

struct VhCtx<'a> {
    inh: &'a Inherited<'a>,
    request: Option<HeaderStage>,
    response: Option<HeaderStage>,
    retry: Option<RetryPolicy>,
    mirrors: Vec<Mirror>,
}

fn mutations(
    route: Option<HeaderStage>,
    vhost: &Option<HeaderStage>,
    config: &Option<HeaderStage>,
    most_specific_wins: bool,
) -> HeaderMutations {
    // Later stages win: by default the least specific level is applied last.
    let mut stages: Vec<HeaderStage> = [route, vhost.clone(), config.clone()]
        .into_iter()
        .flatten()
        .collect();
    if most_specific_wins {
        stages.reverse();
    }
    HeaderMutations { stages }
}

fn route(r: &PbRoute, vh: &VhCtx<'_>) -> Result<Route, String> {
    let mut rest = r.clone();
    let name = std::mem::take(&mut rest.name);
    let m = rest.r#match.take().ok_or("match is required")?;
    let action = rest.action.take();
    let req_add = std::mem::take(&mut rest.request_headers_to_add);
    let req_rm = std::mem::take(&mut rest.request_headers_to_remove);
    let resp_add = std::mem::take(&mut rest.response_headers_to_add);
    let resp_rm = std::mem::take(&mut rest.response_headers_to_remove);
    // Observability only, or per-filter settings for filters not in the chain.
    rest.metadata = None;
    rest.decorator = None;
    rest.tracing = None;
    rest.stat_prefix.clear();
    let plugins = match rest
        .typed_per_filter_config
        .remove(crate::plugins::FILTER_NAME)
    {
        Some(any) => Some(Arc::new(crate::plugins::RoutePlugins::compile(&any)?)),
        None => None,
    };
    rest.typed_per_filter_config.clear();
    reject_rest(&rest, fields::ROUTE, "route")?;

    let (path_match, case_sensitive, headers, query_parameters, grpc) = route_match(&m)?;
    let route_req = compile_stage(&req_add, &req_rm, "request_headers_to_add/remove")?;
    let route_resp = compile_stage(&resp_add, &resp_rm, "response_headers_to_add/remove")?;
    let action = match action {
        Some(PbAction::Route(a)) => Action::Forward(forward(&a, vh)?),
        Some(PbAction::Redirect(a)) => Action::Redirect(redirect(&a, &path_match)?),
        Some(PbAction::DirectResponse(a)) => direct(&a, vh.inh.max_body)?,
        Some(PbAction::FilterAction(_)) => return Err("filter_action is not supported".into()),
        Some(PbAction::NonForwardingAction(_)) => {
            return Err("non_forwarding_action is not supported".into());
        }
        None => return Err("an action (route, redirect or direct_response) is required".into()),
    };
    let msw = vh.inh.most_specific_wins;
    let request_headers = mutations(route_req, &vh.request, &vh.inh.config_request, msw);
    let mut action = action;
    if let Action::Forward(f) = &mut action {
        f.request_headers = request_headers.clone();
    }
    Ok(Route {
        name,
        path_match,
        case_sensitive,
        headers,
        query_parameters,
        grpc,
        action,
        request_headers,
        response_headers: mutations(route_resp, &vh.response, &vh.inh.config_response, msw),
        plugins,
    })
}

type MatchParts = (
    MatchKind,
    bool,
    Vec<HeaderMatcher>,
    Vec<QueryParamMatcher>,
    bool,
);

fn route_match(m: &RouteMatch) -> Result<MatchParts, String> {
    let mut rest = m.clone();
    let case_sensitive = rest.case_sensitive.take().is_none_or(|b| b.value);
    let spec = rest.path_specifier.take();
    let headers_in = std::mem::take(&mut rest.headers);
    let query_in = std::mem::take(&mut rest.query_parameters);
    let grpc = rest.grpc.take().is_some();
    reject_rest(&rest, fields::ROUTE_MATCH, "match")?;
    let kind = match spec {
        Some(PathSpecifier::Prefix(p)) => MatchKind::Prefix(p),
        Some(PathSpecifier::Path(p)) => MatchKind::Path(p),
        Some(PathSpecifier::SafeRegex(re)) => {
            MatchKind::Regex(Re2::new(&re.regex).map_err(|e| format!("match.safe_regex: {e}"))?)
        }
        Some(PathSpecifier::PathSeparatedPrefix(p)) => {
            // PGV: ^[^?#]+[^?#/]$
            let ok = p.len() >= 2 && !p.contains(['?', '#']) && !p.ends_with('/');
            if !ok {
                return Err(format!(
                    "match.path_separated_prefix {p:?} must be non-empty, without ? or #, and not end with /"
                ));
            }
            MatchKind::PathSeparatedPrefix(p)
        }
        Some(PathSpecifier::ConnectMatcher(_)) => {
            return Err("match.connect_matcher is not supported".into());
        }
        Some(PathSpecifier::PathMatchPolicy(p)) => {
            return Err(format!(
                "match.path_match_policy {:?} is not supported",
                p.name
            ));
        }
        None => return Err("Invalid route config: match has no path specifier".into()),
    };
    let mut headers = Vec::with_capacity(headers_in.len());
    for h in &headers_in {
        headers.push(HeaderMatcher::compile(h, "match.headers")?);
    }
    let mut query = Vec::with_capacity(query_in.len());
    for q in &query_in {
        query.push(QueryParamMatcher::compile(q, "match.query_parameters")?);
    }
    Ok((kind, case_sensitive, headers, query, grpc))
}

fn forward(a: &RouteAction, vh: &VhCtx<'_>) -> Result<Forward, String> {
    let mut rest = a.clone();
    let cluster = match rest.cluster_specifier.take() {
        Some(ClusterSpecifier::Cluster(c)) => {
            if c.is_empty() {
                return Err("route.cluster must not be empty".into());
            }
            ClusterChoice::Single(c)
        }
        Some(ClusterSpecifier::WeightedClusters(w)) => weighted(&w)?,
        Some(ClusterSpecifier::ClusterHeader(_)) => {
            return Err("route.cluster_header is not supported".into());
        }
        Some(ClusterSpecifier::ClusterSpecifierPlugin(_))
        | Some(ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => {
            return Err("cluster specifier plugins are not supported".into());
        }
        None => return Err("route: one of cluster, weighted_clusters, ... is required".into()),
    };
    let cluster_not_found_status = match std::mem::take(&mut rest.cluster_not_found_response_code) {
        0 => 503,
        1 => 404,
        2 => 500,
        other => {
            return Err(format!(
                "route.cluster_not_found_response_code {other} is not defined"
            ));
        }
    };
    let timeout = match rest.timeout.take() {
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(d) => Some(super::duration(&d, "route.timeout")?).filter(|d| !d.is_zero()),
    };
    let idle_timeout = opt_duration(rest.idle_timeout.take().as_ref(), "route.idle_timeout")?;
    let retry = match rest.retry_policy.take() {
        Some(p) => Some(retry_policy(&p).map_err(|e| format!("route.retry_policy: {e}"))?),
        None => vh.retry.clone(),
    };
    let host_rewrite = match rest.host_rewrite_specifier.take() {
        None => HostRewrite::None,
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => {
            check_header_value(h.as_bytes(), "route.host_rewrite_literal")?;
            if h.is_empty() {
                HostRewrite::None
            } else {
                HostRewrite::Literal(h)
            }
        }
        Some(HostRewriteSpecifier::AutoHostRewrite(b)) => {
            if b.value {
                HostRewrite::Auto
            } else {
                HostRewrite::None
            }
        }
        Some(HostRewriteSpecifier::HostRewriteHeader(_)) => {
            return Err("route.host_rewrite_header is not supported".into());
        }
        Some(HostRewriteSpecifier::HostRewritePathRegex(_)) => {
            return Err("route.host_rewrite_path_regex is not supported".into());
        }
        Some(HostRewriteSpecifier::HostRewrite(_)) => {
            return Err("route.host_rewrite is not supported".into());
        }
    };
    let append_x_forwarded_host = std::mem::take(&mut rest.append_x_forwarded_host);
    let prefix_rewrite = std::mem::take(&mut rest.prefix_rewrite);
    check_header_value(prefix_rewrite.as_bytes(), "route.prefix_rewrite")?;
    let regex_rewrite = match rest.regex_rewrite.take() {
        None => None,
        Some(rr) => {
            let pattern = rr
                .pattern
                .as_ref()
                .ok_or("route.regex_rewrite.pattern is required")?;
            Some(
                RegexRewrite::new(&pattern.regex, &rr.substitution)
                    .map_err(|e| format!("route.regex_rewrite: {e}"))?,
            )
        }
    };
    if !prefix_rewrite.is_empty() && regex_rewrite.is_some() {
        return Err(
            "Specify only one of prefix_rewrite, regex_rewrite or path_rewrite_policy".into(),
        );
    }
    let mut hash_policies = Vec::new();
    for hp in std::mem::take(&mut rest.hash_policy) {
        hash_policies.extend(hash_policy(&hp).map_err(|e| format!("route.hash_policy: {e}"))?);
    }
    let mut mirrors = Vec::new();
    for m in std::mem::take(&mut rest.request_mirror_policies) {
        mirrors.push(mirror(&m).map_err(|e| format!("route.request_mirror_policies: {e}"))?);
    }
    if mirrors.is_empty() {
        mirrors = vh.mirrors.clone();
    }
    let mut websocket = None;
    let mut seen = HashSet::new();
    for u in std::mem::take(&mut rest.upgrade_configs) {
        let t = u.upgrade_type.to_ascii_lowercase();
        if !seen.insert(t.clone()) {
            return Err(format!("Duplicate upgrade {}", u.upgrade_type));
        }
        if u.connect_config.is_some() {
            return Err(format!(
                "route.upgrade_configs {:?}: connect_config is not supported",
                u.upgrade_type
            ));
        }
        if t == "websocket" {
            websocket = Some(u.enabled.is_none_or(|b| b.value));
        }
        // Other upgrade types need the listener to allow them, which it
        // does not: they have no effect.
    }
    let priority = match std::mem::take(&mut rest.priority) {
        0 => Priority::Default,
        1 => Priority::High,
        other => return Err(format!("route.priority {other} is not defined")),
    };
    if rest.internal_redirect_action == 1 {
        return Err(
            "route.internal_redirect_action HANDLE_INTERNAL_REDIRECT is not supported".into(),
        );
    }
    rest.internal_redirect_action = 0;
    // Only used when internal redirects are handled.
    rest.max_internal_redirects = None;
    // Need filters (rate limit, CORS) the listener does not run.
    rest.rate_limits.clear();
    rest.include_vh_rate_limits = None;
    rest.cors = None;
    reject_rest(&rest, fields::ROUTE_ACTION, "route")?;
    Ok(Forward {
        cluster,
        cluster_not_found_status,
        timeout,
        idle_timeout,
        retry,
        host_rewrite,
        append_x_forwarded_host,
        prefix_rewrite: (!prefix_rewrite.is_empty()).then_some(prefix_rewrite),
        regex_rewrite,
        hash_policies,
        mirrors,
        websocket,
        priority,
        request_headers: HeaderMutations::default(),
    })
}

fn weighted(w: &WeightedCluster) -> Result<ClusterChoice, String> {
    let mut rest = w.clone();
    let clusters = std::mem::take(&mut rest.clusters);
    // Deprecated and ignored by Envoy; the runtime keys are only read when
    // a runtime overrides them (there is none).
    rest.total_weight = None;
    rest.runtime_key_prefix.clear();
    match rest.random_value_specifier.take() {
        None => {}
        Some(RandomValueSpecifier::UseHashPolicy(b)) if !b.value => {}
        Some(RandomValueSpecifier::UseHashPolicy(_)) => {
            return Err("weighted_clusters.use_hash_policy is not supported".into());
        }
        Some(RandomValueSpecifier::HeaderName(_)) => {
            return Err("weighted_clusters.header_name is not supported".into());
        }
    }
    reject_rest(&rest, fields::WEIGHTED_CLUSTER, "weighted_clusters")?;
    if clusters.is_empty() {
        return Err("weighted_clusters.clusters must not be empty".into());
    }
    let mut out = Vec::with_capacity(clusters.len());
    let mut total: u64 = 0;
    for c in clusters {
        let mut cr = c.clone();
        let name = std::mem::take(&mut cr.name);
        let header = std::mem::take(&mut cr.cluster_header);
        if name.is_empty() == header.is_empty() {
            return Err(if name.is_empty() {
                "At least one of name or cluster_header need to be specified".into()
            } else {
                "Only one of name or cluster_header can be specified".into()
            });
        }
        if !header.is_empty() {
            return Err("weighted_clusters: cluster_header is not supported".into());
        }
        let weight = cr.weight.take().map(|w| w.value).unwrap_or(0);
        cr.typed_per_filter_config.clear();
        reject_rest(
            &cr,
            fields::CLUSTER_WEIGHT,
            &format!("weighted cluster {name:?}"),
        )?;
        total += u64::from(weight);
        out.push((name, weight));
    }
    if total > u64::from(u32::MAX) {
        return Err(format!(
            "The sum of weights of all weighted clusters exceeds {}",
            u32::MAX
        ));
    }
    if total == 0 {
        return Err("Sum of weights in the weighted_cluster must be greater than 0.".into());
    }
    Ok(ClusterChoice::Weighted(out, total as u32))
}

fn retry_policy(p: &PbRetryPolicy) -> Result<RetryPolicy, String> {
    let mut rest = p.clone();
    let retry_on = RetryOn::parse(&std::mem::take(&mut rest.retry_on));
    let num_retries = rest.num_retries.take().map(|v| v.value).unwrap_or(1);
    let per_try_timeout = opt_duration(rest.per_try_timeout.take().as_ref(), "per_try_timeout")?
        .filter(|d| !d.is_zero());
    let per_try_idle_timeout = opt_duration(
        rest.per_try_idle_timeout.take().as_ref(),
        "per_try_idle_timeout",
    )?
    .filter(|d| !d.is_zero());
    let mut retriable_status_codes = Vec::new();
    for c in std::mem::take(&mut rest.retriable_status_codes) {
        retriable_status_codes.push(
            u16::try_from(c).map_err(|_| format!("retriable_status_codes: {c} is not a status"))?,
        );
    }
    let mut retriable_headers = Vec::new();
    for h in std::mem::take(&mut rest.retriable_headers) {
        retriable_headers.push(HeaderMatcher::compile(&h, "retriable_headers")?);
    }
    let mut retriable_request_headers = Vec::new();
    for h in std::mem::take(&mut rest.retriable_request_headers) {
        retriable_request_headers.push(HeaderMatcher::compile(&h, "retriable_request_headers")?);
    }
    let (backoff_base, backoff_max) = match rest.retry_back_off.take() {
        None => (Duration::from_millis(25), Duration::from_millis(250)),
        Some(b) => {
            let base = b
                .base_interval
                .as_ref()
                .ok_or("retry_back_off.base_interval is required")?;
            let base =
                positive_duration(Some(base), Duration::ZERO, "retry_back_off.base_interval")?
                    .max(Duration::from_millis(1));
            let max = match &b.max_interval {
                None => base * 10,
                Some(m) => {
                    let m =
                        positive_duration(Some(m), Duration::ZERO, "retry_back_off.max_interval")?
                            .max(Duration::from_millis(1));
                    if m < base {
                        return Err(
                            "retry_policy.max_interval must greater than or equal to the base_interval"
                                .into(),
                        );
                    }
                    m
                }
            };
            (base, max)
        }
    };
    let host_selection_max_attempts =
        match std::mem::take(&mut rest.host_selection_retry_max_attempts) {
            0 => 1,
            n => n,
        };
    reject_rest(&rest, fields::RETRY_POLICY, "retry_policy")?;
    Ok(RetryPolicy {
        retry_on,
        num_retries,
        per_try_timeout,
        per_try_idle_timeout,
        retriable_status_codes,
        retriable_headers,
        retriable_request_headers,
        backoff_base,
        backoff_max,
        host_selection_max_attempts,
    })
}

fn hash_policy(h: &PbHashPolicy) -> Result<Option<HashPolicy>, String> {
    let terminal = h.terminal;
    Ok(Some(match &h.policy_specifier {
        Some(PolicySpecifier::Header(hd)) => {
            let source = HeaderSource::parse(&hd.header_name, "header")?;
            let rewrite = match &hd.regex_rewrite {
                None => None,
                Some(rr) => {
                    let p = rr
                        .pattern
                        .as_ref()
                        .ok_or("header.regex_rewrite.pattern is required")?;
                    Some(RegexRewrite::new(&p.regex, &rr.substitution)?)
                }
            };
            HashPolicy::Header {
                name: hd.header_name.to_ascii_lowercase(),
                source,
                rewrite,
                terminal,
            }
        }
        Some(PolicySpecifier::Cookie(c)) => {
            if c.name.is_empty() {
                return Err("cookie.name must not be empty".into());
            }
            let mut attributes = Vec::new();
            for a in &c.attributes {
                if a.name.is_empty() {
                    return Err("cookie.attributes: name must not be empty".into());
                }
                attributes.push((a.name.clone(), a.value.clone()));
            }
            HashPolicy::Cookie {
                name: c.name.clone(),
                ttl: opt_duration(c.ttl.as_ref(), "cookie.ttl")?,
                path: c.path.clone(),
                attributes,
                terminal,
            }
        }
        // Without source_ip, connection_properties hashes nothing.
        Some(PolicySpecifier::ConnectionProperties(p)) if !p.source_ip => return Ok(None),
        Some(PolicySpecifier::ConnectionProperties(_)) => HashPolicy::SourceIp { terminal },
        Some(PolicySpecifier::QueryParameter(q)) => {
            if q.name.is_empty() {
                return Err("query_parameter.name must not be empty".into());
            }
            HashPolicy::QueryParameter {
                name: q.name.clone(),
                terminal,
            }
        }
        Some(PolicySpecifier::FilterState(f)) => {
            if f.key.is_empty() {
                return Err("filter_state.key must not be empty".into());
            }
            return Ok(None);
        }
        None => return Err("a policy specifier is required".into()),
    }))
}

fn mirror(m: &RequestMirrorPolicy) -> Result<Mirror, String> {
    let mut rest = m.clone();
    let cluster = std::mem::take(&mut rest.cluster);
    let header = std::mem::take(&mut rest.cluster_header);
    if !cluster.is_empty() && !header.is_empty() {
        return Err(format!(
            "Only one of cluster '{cluster}' or cluster_header '{header}' in request mirror policy can be specified"
        ));
    }
    if cluster.is_empty() && header.is_empty() {
        return Err(
            "Exactly one of cluster or cluster_header in request mirror policy need to be specified"
                .into(),
        );
    }
    if !header.is_empty() {
        return Err("request mirror policy cluster_header is not supported".into());
    }
    let (numerator, denominator) = fraction(
        rest.runtime_fraction
            .take()
            .and_then(|r| r.default_value)
            .as_ref(),
        (100, 100),
    );
    let disable_shadow_host_suffix_append =
        std::mem::take(&mut rest.disable_shadow_host_suffix_append);
    // Tracing only.
    rest.trace_sampled = None;
    reject_rest(&rest, fields::MIRROR_POLICY, "request mirror policy")?;
    Ok(Mirror {
        cluster,
        numerator,
        denominator,
        disable_shadow_host_suffix_append,
    })
}

fn redirect(a: &RedirectAction, matched: &MatchKind) -> Result<Redirect, String> {
    let status = match a.response_code {
        0 => 301,
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        other => return Err(format!("redirect.response_code {other} is not defined")),
    };
    check_header_value(a.host_redirect.as_bytes(), "redirect.host_redirect")?;
    let scheme = match &a.scheme_rewrite_specifier {
        None | Some(SchemeRewriteSpecifier::HttpsRedirect(false)) => None,
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) if s.is_empty() => None,
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s.clone()),
    };
    let path = match &a.path_rewrite_specifier {
        None => PathRedirect::None,
        Some(PathRewriteSpecifier::PathRedirect(p)) => {
            check_header_value(p.as_bytes(), "redirect.path_redirect")?;
            if p.is_empty() {
                PathRedirect::None
            } else {
                PathRedirect::Path {
                    path: p.clone(),
                    has_query: p.contains('?'),
                }
            }
        }
        Some(PathRewriteSpecifier::PrefixRewrite(p)) => {
            check_header_value(p.as_bytes(), "redirect.prefix_rewrite")?;
            if p.is_empty() {
                PathRedirect::None
            } else {
                PathRedirect::Prefix(p.clone())
            }
        }
        Some(PathRewriteSpecifier::RegexRewrite(rr)) => {
            let p = rr
                .pattern
                .as_ref()
                .ok_or("redirect.regex_rewrite.pattern is required")?;
            PathRedirect::Regex(
                RegexRewrite::new(&p.regex, &rr.substitution)
                    .map_err(|e| format!("redirect.regex_rewrite: {e}"))?,
            )
        }
        Some(PathRewriteSpecifier::PathRewrite(_)) => {
            return Err("redirect.path_rewrite is not supported".into());
        }
    };
    Ok(Redirect {
        status,
        scheme,
        host: (!a.host_redirect.is_empty()).then(|| a.host_redirect.clone()),
        port: (a.port_redirect != 0).then_some(a.port_redirect),
        path,
        strip_query: a.strip_query,
        matched: matched.clone(),
    })
}

fn direct(a: &DirectResponseAction, max_body: u32) -> Result<Action, String> {
    if !(200..600).contains(&a.status) {
        return Err(format!(
            "direct_response.status {} must be in [200, 600)",
            a.status
        ));
    }
    if a.body_format.is_some() {
        return Err("direct_response.body_format is not supported".into());
    }
    let body = match &a.body {
        None => bytes::Bytes::new(),
        Some(ds) => data_source(ds, "direct_response.body")?,
    };
    if body.len() > max_body as usize {
        return Err(format!(
            "response body size is {} bytes; maximum is {max_body}",
            body.len()
        ));
    }
    Ok(Action::Direct {
        status: a.status as u16,
        body,
    })
}

/// An inline DataSource (no files or environment: the compiler does no IO).
pub(crate) fn data_source(ds: &DataSource, field: &str) -> Result<bytes::Bytes, String> {
    if ds.watched_directory.is_some() {
        return Err(format!("{field}: watched_directory is not supported"));
    }
    match &ds.specifier {
        Some(data_source::Specifier::InlineString(s)) => Ok(bytes::Bytes::from(s.clone())),
        Some(data_source::Specifier::InlineBytes(b)) => Ok(bytes::Bytes::from(b.clone())),
        Some(data_source::Specifier::Filename(_)) => Err(format!(
            "{field}: filename data sources are not supported (inline only)"
        )),
        // As Envoy: read from this process's environment when the config
        // is compiled; unset is a refusal naming the variable.
        Some(data_source::Specifier::EnvironmentVariable(name)) => std::env::var(name)
            .map(bytes::Bytes::from)
            .map_err(|_| format!("{field}: environment variable {name} is not set")),
        None => Ok(bytes::Bytes::new()),
    }
}
