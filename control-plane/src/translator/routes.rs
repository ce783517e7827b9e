//! RDS: the `http` and `https` route configurations.
//!
//! Kong matches a request against every route at once and picks the one
//! with the highest priority; Envoy first picks a virtual host by domain,
//! then takes the first route that matches. So each virtual host gets every
//! Kong route that could match a request landing there, in Kong's order.

use super::model::{HashOn, Model, PathHandling, Route, Service, Upstream, split_host_port};
use super::{ProxyOptions, TranslateError, ms};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, data_source,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RedirectAction, RetryPolicy, Route as EnvoyRoute,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    header_matcher::HeaderMatchSpecifier,
    redirect_action::{RedirectResponseCode, SchemeRewriteSpecifier},
    route::Action,
    route_action::{
        ClusterSpecifier, HashPolicy, HostRewriteSpecifier,
        hash_policy::{ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter},
    },
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::{BoolValue, Duration, UInt32Value};
use gantry_proxy::config::{Group, HostPat, lay_out};
use gantry_shared::proto::route::{Ranked, RouteEntry};
use prost::Message;
use std::cmp::Reverse;
use std::sync::Arc;

pub const RETRY_ON: &str = "connect-failure,refused-stream,reset-before-request";
#[cfg(test)]
pub use gantry_proxy::config::CATCH_ALL;
/// Kong's body for a plain-HTTP request to an HTTPS-only route.
pub const UPGRADE_BODY: &str = r#"{"message":"Please use HTTPS protocol"}"#;

/// Both route configurations, `http` then `https`.
pub fn build(m: &Model, opts: &ProxyOptions) -> Result<Vec<RouteTable>, TranslateError> {
    // Every user regex compiles (checked once here, not per configuration).
    for r in &m.routes {
        for p in &r.paths {
            if let Some(re) = p.strip_prefix('~') {
                check_regex(r, re)?;
            }
        }
        for v in r.headers.iter().flat_map(|(_, vs)| vs) {
            if let Some(re) = v.strip_prefix("~*") {
                check_regex(r, re)?;
            }
        }
    }
    let mut pool = Pool {
        keys: Vec::with_capacity(m.routes.len() * 2),
        routes: Vec::with_capacity(m.routes.len() * 2),
        proxy: vec![None; m.routes.len()],
        upgrade: vec![None; m.routes.len()],
    };
    let http = config(m, &mut pool, "http", opts.http_port, false)?;
    let https = config(m, &mut pool, "https", opts.https_port, true)?;
    let ranks = Arc::new(pool.keys.iter().map(SortKey::rank).collect::<Vec<_>>());
    let routes = Arc::new(pool.routes);
    Ok([http, https]
        .into_iter()
        .map(|(shell, vhosts, entries)| RouteTable {
            shell,
            routes: routes.clone(),
            ranks: ranks.clone(),
            vhosts,
            entries,
        })
        .collect())
}

/// The Envoy routes of both configurations, each built once: a Kong route
/// served over HTTP and HTTPS has the same entries in both. Each entry is
/// about 2 KiB, so it is built in place and never moved again; a Kong
/// route's entries are a span of the pool.
struct Pool<'a> {
    keys: Vec<SortKey<'a>>,
    routes: Vec<EnvoyRoute>,
    /// Per Kong route (by index), its span once built, per mode.
    proxy: Vec<Option<std::ops::Range<u32>>>,
    upgrade: Vec<Option<std::ops::Range<u32>>>,
}

impl<'a> Pool<'a> {
    fn span(
        &mut self,
        m: &Model,
        i: usize,
        r: &'a Route,
        mode: Mode,
    ) -> Result<std::ops::Range<u32>, TranslateError> {
        let slot = match mode {
            Mode::Proxy => &self.proxy[i],
            Mode::Upgrade => &self.upgrade[i],
        };
        if let Some(span) = slot {
            return Ok(span.clone());
        }
        let service = &m.services[r.service.as_deref().unwrap_or_default()];
        let start = self.routes.len() as u32;
        entries(m, r, service, mode, &mut self.keys, &mut self.routes)?;
        let span = start..self.routes.len() as u32;
        let slot = match mode {
            Mode::Proxy => &mut self.proxy[i],
            Mode::Upgrade => &mut self.upgrade[i],
        };
        *slot = Some(span.clone());
        Ok(span)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Proxy,
    /// HTTPS-only route reached over plain HTTP: redirect or 426.
    Upgrade,
}

/// Kong's route priority (traditional_compatible router), compared
/// ascending: more match categories, plain hosts only, more headers, regex
/// paths before prefixes, then regex_priority (regex paths only), longer
/// prefix; ties go to the older route, then the lower id, then path order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey<'a> {
    weight: Reverse<u8>,
    plain_hosts: Reverse<bool>,
    headers: Reverse<usize>,
    regex: Reverse<bool>,
    regex_priority: Reverse<i64>,
    uri_len: Reverse<usize>,
    created_at: i64,
    id: &'a str,
    path: usize,
    sub: usize,
}

impl SortKey<'_> {
    /// The key as bytes whose bytewise order is the key's order: a route
    /// entry's `rank`, which gantry-proxy orders routes by.
    fn rank(&self) -> Vec<u8> {
        // Reverse(x) is written as the bitwise complement of x's
        // order-preserving encoding; signed integers have their sign bit
        // flipped; the id is NUL-escaped and NUL-NUL terminated, so an id
        // that is a prefix of another sorts first.
        let signed = |v: i64| ((v as u64) ^ (1 << 63)).to_be_bytes();
        let mut out = Vec::with_capacity(64 + self.id.len());
        out.push(!self.weight.0);
        out.push(!(self.plain_hosts.0 as u8));
        out.extend((!(self.headers.0 as u64)).to_be_bytes());
        out.push(!(self.regex.0 as u8));
        out.extend(signed(self.regex_priority.0).map(|b| !b));
        out.extend((!(self.uri_len.0 as u64)).to_be_bytes());
        out.extend(signed(self.created_at));
        for b in self.id.bytes() {
            out.push(b);
            if b == 0 {
                out.push(0xff);
            }
        }
        out.extend([0, 0]);
        out.extend((self.path as u64).to_be_bytes());
        out.extend((self.sub as u64).to_be_bytes());
        out
    }
}

/// A route configuration as the translator builds it: each Envoy route
/// once, and the virtual hosts as lists of indices into them.
///
/// Kong's host-less routes belong in every virtual host, because Envoy never
/// falls back from the virtual host it picked to another; so a configuration
/// repeats them once per host. Keeping the repeats as indices until the
/// configuration is encoded keeps translation linear in the number of routes;
/// [`RouteTable::to_config`] and [`RouteTable::encode`] give the same
/// configuration as a message and as its exact protobuf encoding.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// The configuration without its virtual hosts.
    pub shell: RouteConfiguration,
    /// Every distinct route, in no particular order; shared by the
    /// configurations built together (some may go unused here).
    pub routes: Arc<Vec<EnvoyRoute>>,
    /// Each route's rank (its precedence as bytes), shared like `routes`.
    pub ranks: Arc<Vec<Vec<u8>>>,
    pub vhosts: Vec<TableVhost>,
    /// The configuration's Kong routes as Gantry route entries, by name.
    pub entries: Vec<TableEntry>,
}

/// One Kong route of a [`RouteTable`], as a route entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableEntry {
    /// `<route configuration>/<Kong route id>`.
    pub name: String,
    /// Envoy domain patterns; none for a host-less route.
    pub domains: Vec<String>,
    /// Its routes in [`RouteTable::routes`].
    pub routes: std::ops::Range<u32>,
}

/// A virtual host of a [`RouteTable`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableVhost {
    /// The virtual host without its routes.
    pub shell: VirtualHost,
    /// Indices into [`RouteTable::routes`], in Envoy's first-match order.
    pub routes: Vec<u32>,
}

impl RouteTable {
    pub fn name(&self) -> &str {
        &self.shell.name
    }

    /// The configuration with every virtual host's routes spelled out.
    pub fn to_config(&self) -> RouteConfiguration {
        let mut c = self.shell.clone();
        c.virtual_hosts = self
            .vhosts
            .iter()
            .map(|v| {
                let mut vh = v.shell.clone();
                vh.routes = v
                    .routes
                    .iter()
                    .map(|i| self.routes[*i as usize].clone())
                    .collect();
                vh
            })
            .collect();
        c
    }

    /// `self.to_config().encode_to_vec()`, byte for byte, with each
    /// distinct route encoded once.
    pub fn encode(&self) -> Vec<u8> {
        encode_all(&[self]).remove(0)
    }

    /// As Envoy nodes get it: every route in its virtual hosts.
    pub fn for_rds(&self) -> RouteTable {
        RouteTable {
            entries: Vec::new(),
            ..self.clone()
        }
    }

    /// As gantry-proxy nodes get it: the configuration's own settings,
    /// its routes as entries.
    pub fn for_entries(&self) -> RouteTable {
        RouteTable {
            vhosts: Vec::new(),
            ..self.clone()
        }
    }

    /// The route entries spelled out as messages.
    pub fn entry_messages(&self) -> Vec<RouteEntry> {
        self.entries
            .iter()
            .map(|e| RouteEntry {
                name: e.name.clone(),
                route_configuration: self.shell.name.clone(),
                domains: e.domains.clone(),
                routes: e
                    .routes
                    .clone()
                    .map(|i| Ranked {
                        route: Some(self.routes[i as usize].clone()),
                        rank: self.ranks[i as usize].clone(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Each route of a pool encoded once, on first use.
struct PoolEncodings<'a> {
    routes: &'a [EnvoyRoute],
    encoded: Vec<Option<Vec<u8>>>,
}

impl<'a> PoolEncodings<'a> {
    fn new(routes: &'a [EnvoyRoute]) -> Self {
        PoolEncodings {
            routes,
            encoded: vec![None; routes.len()],
        }
    }

    fn get(&mut self, i: u32) -> &[u8] {
        let routes = self.routes;
        self.encoded[i as usize].get_or_insert_with(|| routes[i as usize].encode_to_vec())
    }
}

/// Encodings of pools shared by several tables, by pool address.
#[derive(Default)]
struct Pools<'a>(Vec<(*const Vec<EnvoyRoute>, PoolEncodings<'a>)>);

impl<'a> Pools<'a> {
    fn of(&mut self, t: &'a RouteTable) -> &mut PoolEncodings<'a> {
        let id = Arc::as_ptr(&t.routes);
        let p = match self.0.iter().position(|(p, _)| *p == id) {
            Some(p) => p,
            None => {
                self.0.push((id, PoolEncodings::new(&t.routes)));
                self.0.len() - 1
            }
        };
        &mut self.0[p].1
    }
}

/// Each table's route entries as (name, `RouteEntry` encoding), byte for
/// byte what prost writes for [`RouteTable::entry_messages`], each distinct
/// route encoded once for all of them.
pub fn encode_entries(tables: &[&RouteTable]) -> Vec<Vec<(String, Vec<u8>)>> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let field = |tag: u32, len: usize| key_len(tag) + encoded_len_varint(len as u64) + len;
    let mut pools = Pools::default();
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let pool = pools.of(t);
        let mut mine = Vec::with_capacity(t.entries.len());
        for e in &t.entries {
            // `routes` (4) is the last field: the head is the rest.
            let head = RouteEntry {
                name: e.name.clone(),
                route_configuration: t.shell.name.clone(),
                domains: e.domains.clone(),
                routes: Vec::new(),
            }
            .encode_to_vec();
            let ranked_len = |pool: &mut PoolEncodings<'_>, i: u32| {
                let rank = &t.ranks[i as usize];
                field(1, pool.get(i).len())
                    + if rank.is_empty() {
                        0
                    } else {
                        field(2, rank.len())
                    }
            };
            let body: usize = e
                .routes
                .clone()
                .map(|i| field(4, ranked_len(pool, i)))
                .sum();
            let mut buf = Vec::with_capacity(head.len() + body);
            buf.extend_from_slice(&head);
            for i in e.routes.clone() {
                let len = ranked_len(pool, i);
                encode_key(4, WireType::LengthDelimited, &mut buf);
                encode_varint(len as u64, &mut buf);
                let r = pool.get(i);
                encode_key(1, WireType::LengthDelimited, &mut buf);
                encode_varint(r.len() as u64, &mut buf);
                buf.extend_from_slice(r);
                let rank = &t.ranks[i as usize];
                if !rank.is_empty() {
                    encode_key(2, WireType::LengthDelimited, &mut buf);
                    encode_varint(rank.len() as u64, &mut buf);
                    buf.extend_from_slice(rank);
                }
            }
            mine.push((e.name.clone(), buf));
        }
        out.push(mine);
    }
    out
}

/// [`RouteTable::encode`] for several tables, encoding each route of a
/// shared pool once for all of them.
///
/// prost writes fields in declaration order, and `virtual_hosts` follows
/// only `name` in RouteConfiguration, as `routes` follows only `name` and
/// `domains` in VirtualHost; so each message is its head fields, the
/// repeated field, then the rest.
pub fn encode_all(tables: &[&RouteTable]) -> Vec<Vec<u8>> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let field = |tag: u32, len: usize| key_len(tag) + encoded_len_varint(len as u64) + len;
    let mut pools = Pools::default();
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let pool = pools.of(t);
        for v in &t.vhosts {
            for i in &v.routes {
                pool.get(*i);
            }
        }
        let encoded = &pool.encoded;
        let route = |i: &u32| encoded[*i as usize].as_deref().unwrap_or_default();
        let (head, tail) = {
            let head = RouteConfiguration {
                name: t.shell.name.clone(),
                ..Default::default()
            };
            let mut tail = t.shell.clone();
            tail.name.clear();
            tail.virtual_hosts.clear();
            (head.encode_to_vec(), tail.encode_to_vec())
        };
        let vhosts: Vec<(Vec<u8>, Vec<u8>, usize)> = t
            .vhosts
            .iter()
            .map(|v| {
                let head = VirtualHost {
                    name: v.shell.name.clone(),
                    domains: v.shell.domains.clone(),
                    ..Default::default()
                };
                let mut tail = v.shell.clone();
                tail.name.clear();
                tail.domains.clear();
                tail.routes.clear();
                let (head, tail) = (head.encode_to_vec(), tail.encode_to_vec());
                let body: usize = v.routes.iter().map(|i| field(3, route(i).len())).sum();
                let len = head.len() + body + tail.len();
                (head, tail, len)
            })
            .collect();
        let total = head.len()
            + vhosts
                .iter()
                .map(|(_, _, len)| field(2, *len))
                .sum::<usize>()
            + tail.len();
        let mut buf = Vec::with_capacity(total);
        buf.extend_from_slice(&head);
        for (v, (vhead, vtail, len)) in t.vhosts.iter().zip(&vhosts) {
            encode_key(2, WireType::LengthDelimited, &mut buf);
            encode_varint(*len as u64, &mut buf);
            buf.extend_from_slice(vhead);
            for i in &v.routes {
                let r = route(i);
                encode_key(3, WireType::LengthDelimited, &mut buf);
                encode_varint(r.len() as u64, &mut buf);
                buf.extend_from_slice(r);
            }
            buf.extend_from_slice(vtail);
        }
        buf.extend_from_slice(&tail);
        out.push(buf);
    }
    out
}

/// One route configuration over the shared pool: its shell and virtual hosts.
fn config<'a>(
    m: &'a Model,
    pool: &mut Pool<'a>,
    name: &str,
    port: u16,
    tls: bool,
) -> Result<(RouteConfiguration, Vec<TableVhost>, Vec<TableEntry>), TranslateError> {
    let mut groups: Vec<Group> = Vec::with_capacity(m.routes.len());
    let mut ids: Vec<&str> = Vec::with_capacity(m.routes.len());
    for (ri, r) in m.routes.iter().enumerate() {
        let mode = if tls {
            if !r.has_protocol(&["https", "grpcs", "wss"]) {
                continue;
            }
            Mode::Proxy
        } else if r.has_protocol(&["http", "grpc", "ws"]) {
            Mode::Proxy
        } else if r.has_protocol(&["https", "grpcs", "wss"]) {
            Mode::Upgrade
        } else {
            // tcp/tls/udp routes are stream routes: not served by the HTTP listeners.
            continue;
        };
        // Kong matches `host:port` as host AND the port the request came in on,
        // so such a host only belongs in the configuration served on that port.
        let mut pats: Vec<HostPat> = r
            .hosts
            .iter()
            .filter_map(|h| {
                let (name, p) = split_host_port(h);
                match p.and_then(|p| p.parse::<u16>().ok()) {
                    Some(p) if p != port => None,
                    // IPv6 literals are matched in their bracketed Host form.
                    _ if name.contains(':') => Some(HostPat::parse(&format!("[{name}]"))),
                    _ => Some(HostPat::parse(name)),
                }
            })
            .collect();
        if !r.hosts.is_empty() && pats.is_empty() {
            continue;
        }
        pats.sort();
        pats.dedup();
        groups.push(Group {
            hosts: pats,
            routes: pool.span(m, ri, r, mode)?,
        });
        ids.push(&r.id);
    }
    let keys = &pool.keys;
    let by_key = |a: &u32, b: &u32| keys[*a as usize].cmp(&keys[*b as usize]);
    let mut entries: Vec<TableEntry> = ids
        .iter()
        .zip(&groups)
        .map(|(id, g)| TableEntry {
            name: format!("{name}/{id}"),
            domains: g.hosts.iter().map(HostPat::domain).collect(),
            routes: g.routes.clone(),
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let vhosts = lay_out(&groups, by_key)
        .into_iter()
        .map(|v| TableVhost {
            shell: VirtualHost {
                name: v.name,
                domains: vec![v.domain],
                ..Default::default()
            },
            routes: v.routes,
        })
        .collect();
    let shell = RouteConfiguration {
        name: name.into(),
        // Kong matches hosts without the Host header's port.
        ignore_port_in_host_matching: true,
        ..Default::default()
    };
    Ok((shell, vhosts, entries))
}

enum PathKind<'a> {
    Prefix(&'a str),
    Regex(&'a str),
}

/// The Envoy routes for one Kong route: one per path (or `/` without
/// paths), sometimes two (see `rewrites`), each with its sort key.
fn entries<'a>(
    m: &Model,
    r: &'a Route,
    s: &Service,
    mode: Mode,
    keys: &mut Vec<SortKey<'a>>,
    out: &mut Vec<EnvoyRoute>,
) -> Result<(), TranslateError> {
    let upstream = m.upstream_of(s);
    let weight = [
        !r.methods.is_empty(),
        !r.hosts.is_empty(),
        !r.headers.is_empty(),
        !r.snis.is_empty(),
        !r.paths.is_empty(),
    ]
    .iter()
    .filter(|b| **b)
    .count() as u8;
    let plain_hosts = !r.hosts.is_empty() && r.hosts.iter().all(|h| !h.contains('*'));
    let headers = header_matchers(r)?;
    let paths: Vec<PathKind<'_>> = if r.paths.is_empty() {
        vec![PathKind::Prefix("/")]
    } else {
        r.paths
            .iter()
            .map(|p| match p.strip_prefix('~') {
                Some(re) => PathKind::Regex(re),
                None => PathKind::Prefix(p),
            })
            .collect()
    };
    // The same for every path of the route.
    let host_rewrite = host_rewrite(r, s, upstream);
    let cluster = s.cluster();
    for (i, p) in paths.iter().enumerate() {
        let (is_regex, uri_len) = match p {
            PathKind::Regex(_) => (true, 0),
            // A route without paths counts no path length (Kong).
            PathKind::Prefix(_) if r.paths.is_empty() => (false, 0),
            PathKind::Prefix(pre) => (false, pre.len()),
        };
        let key = |sub: usize| SortKey {
            weight: Reverse(weight),
            plain_hosts: Reverse(plain_hosts),
            headers: Reverse(r.headers.len()),
            regex: Reverse(is_regex),
            regex_priority: Reverse(if is_regex { r.regex_priority } else { 0 }),
            uri_len: Reverse(uri_len),
            created_at: r.created_at,
            id: &r.id,
            path: i,
            sub,
        };
        let base_name = format!("{}#{i}", r.label());
        let path_spec = match p {
            PathKind::Prefix(pre) => PathSpecifier::Prefix(pre.to_string()),
            PathKind::Regex(re) => PathSpecifier::SafeRegex(regex(path_regex(re))),
        };
        let route_match = |spec: PathSpecifier| RouteMatch {
            headers: headers.clone(),
            path_specifier: Some(spec),
            ..Default::default()
        };
        if mode == Mode::Upgrade {
            keys.push(key(0));
            out.push(upgrade_route(r, base_name, route_match(path_spec)));
            continue;
        }
        let re = match p {
            PathKind::Regex(re) => Some(*re),
            PathKind::Prefix(_) => None,
        };
        let hash_policy = upstream.map(|u| hash_policies(u, re)).unwrap_or_default();
        for (sub, rw) in rewrites(r, s, p).into_iter().enumerate() {
            let (spec, name) = match rw.exact {
                true => match p {
                    PathKind::Regex(re) => (
                        PathSpecifier::SafeRegex(regex(format!("(?:{re})"))),
                        format!("{base_name}.exact"),
                    ),
                    PathKind::Prefix(pre) => (
                        PathSpecifier::Path(pre.to_string()),
                        format!("{base_name}.exact"),
                    ),
                },
                false => (path_spec.clone(), base_name.clone()),
            };
            keys.push(key(sub));
            // Filled in place: an Envoy route is about 2 KiB, and building it
            // by value costs a copy per level of nesting.
            out.push(EnvoyRoute::default());
            let Some(e) = out.last_mut() else {
                continue;
            };
            e.name = name;
            e.r#match = Some(route_match(spec));
            let Action::Route(action) = e.action.insert(Action::Route(RouteAction::default()))
            else {
                continue;
            };
            action.cluster_specifier = Some(ClusterSpecifier::Cluster(cluster.clone()));
            action.timeout = Some(ms(s.read_timeout));
            action.retry_policy = (s.retries > 0).then(|| RetryPolicy {
                retry_on: RETRY_ON.into(),
                num_retries: Some(UInt32Value { value: s.retries }),
                ..Default::default()
            });
            action.host_rewrite_specifier = host_rewrite.clone();
            // Kong sends X-Forwarded-Host; Envoy appends the client's
            // Host to it when the route rewrites the host.
            action.append_x_forwarded_host = true;
            action.regex_rewrite = rw.rewrite;
            action.hash_policy = hash_policy.clone();
            if let Some(cfg) = m.route_plugins.get(&r.id) {
                e.typed_per_filter_config
                    .insert(super::plugins::FILTER_NAME.into(), cfg.clone());
            }
            for (name, cfg) in m.route_envoy.get(&r.id).into_iter().flatten() {
                e.typed_per_filter_config.insert(name.clone(), cfg.clone());
            }
        }
    }
    Ok(())
}

/// The regex Envoy is given for a Kong regex path: Kong anchors path
/// regexes at the start only, and Envoy matches the whole path. Its RE2
/// program, not the user's regex's, is what Envoy's size limit applies to.
pub fn path_regex(re: &str) -> String {
    format!("(?:{re}).*")
}

/// A user's regex (a path or header value) is never given to Envoy as it
/// is: RE2 must compile it, and what is emitted from it is checked whole
/// (size included) with the rest of the translation.
fn check_regex(r: &Route, re: &str) -> Result<(), TranslateError> {
    gantry_proxy::config::check_re2_syntax(re).map_err(|reason| TranslateError::InvalidRegex {
        route: r.label().to_string(),
        pattern: format!("~{re}"),
        reason,
    })
}

fn regex(re: String) -> RegexMatcher {
    RegexMatcher {
        regex: re,
        ..Default::default()
    }
}

fn upgrade_route(r: &Route, name: String, m: RouteMatch) -> EnvoyRoute {
    let code = match r.https_redirect_status_code {
        301 => Some(RedirectResponseCode::MovedPermanently),
        302 => Some(RedirectResponseCode::Found),
        307 => Some(RedirectResponseCode::TemporaryRedirect),
        308 => Some(RedirectResponseCode::PermanentRedirect),
        _ => None,
    };
    let (action, response_headers_to_add) = match code {
        Some(c) => (
            Action::Redirect(RedirectAction {
                response_code: c as i32,
                scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::HttpsRedirect(true)),
                // Kong's Location is https://<host><uri>, i.e. port 443 (Envoy would keep the request's port).
                port_redirect: 443,
                ..Default::default()
            }),
            Vec::new(),
        ),
        // Kong answers 426 with a JSON message.
        None => (
            Action::DirectResponse(DirectResponseAction {
                status: 426,
                body: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(UPGRADE_BODY.into())),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            vec![HeaderValueOption {
                header: Some(HeaderValue {
                    key: "content-type".into(),
                    value: "application/json; charset=utf-8".into(),
                    ..Default::default()
                }),
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                ..Default::default()
            }],
        ),
    };
    EnvoyRoute {
        name,
        r#match: Some(m),
        action: Some(action),
        response_headers_to_add,
        ..Default::default()
    }
}

/// `:method` first, then Kong's headers by name. Kong compares header
/// values case-insensitively; `~*` marks a (case-insensitive, unanchored)
/// regex.
fn header_matchers(r: &Route) -> Result<Vec<HeaderMatcher>, TranslateError> {
    let mut out = Vec::new();
    if !r.methods.is_empty() {
        let mut ms: Vec<&str> = r.methods.iter().map(String::as_str).collect();
        ms.sort_unstable();
        ms.dedup();
        let pattern = if ms.len() == 1 {
            MatchPattern::Exact(ms[0].to_string())
        } else {
            MatchPattern::SafeRegex(regex(format!("^(?:{})$", ms.join("|"))))
        };
        out.push(string_header(":method", pattern, false));
    }
    for (name, values) in &r.headers {
        if values.len() == 1 && !values[0].starts_with("~*") {
            out.push(string_header(
                name,
                MatchPattern::Exact(values[0].clone()),
                true,
            ));
            continue;
        }
        let mut alts = Vec::with_capacity(values.len());
        for v in values {
            match v.strip_prefix("~*") {
                Some(re) => alts.push(format!(".*(?:{re}).*")),
                None => alts.push(regex::escape(v)),
            }
        }
        let pattern = MatchPattern::SafeRegex(regex(format!("(?i)^(?:{})$", alts.join("|"))));
        out.push(string_header(name, pattern, false));
    }
    Ok(out)
}

fn string_header(name: &str, p: MatchPattern, ignore_case: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            ignore_case,
            match_pattern: Some(p),
        })),
        ..Default::default()
    }
}

fn host_rewrite(r: &Route, s: &Service, u: Option<&Upstream>) -> Option<HostRewriteSpecifier> {
    if r.preserve_host {
        return None;
    }
    Some(match u {
        // Kong sends each target's own host (or the upstream's host_header) with
        // its port; each endpoint carries that as its hostname.
        Some(_) => HostRewriteSpecifier::AutoHostRewrite(BoolValue { value: true }),
        None => {
            let port = (s.port != s.default_port()).then_some(s.port);
            HostRewriteSpecifier::HostRewriteLiteral(super::model::host_port(&s.host, port))
        }
    })
}

/// One Envoy route's path rewrite; `exact` marks the extra entry that
/// matches only the whole path (see `rewrites`).
struct Rewrite {
    exact: bool,
    rewrite: Option<RegexMatchAndSubstitute>,
}

fn subst(pattern: String, substitution: &str) -> Option<RegexMatchAndSubstitute> {
    Some(RegexMatchAndSubstitute {
        pattern: Some(regex(pattern)),
        // RE2 rewrite strings treat backslash as the escape character.
        substitution: substitution.replace('\\', "\\\\"),
    })
}

fn subst_raw(pattern: String, substitution: String) -> Option<RegexMatchAndSubstitute> {
    Some(RegexMatchAndSubstitute {
        pattern: Some(regex(pattern)),
        substitution,
    })
}

/// Kong's upstream path: service path P (unset = `/`), matched part M of the
/// request path R, rest T = R - M. Reproduces Kong's path-handling table
/// (spec/fixtures/router_path_handling_tests.lua) for v0 and v1:
///
/// * strip, v0: T empty -> P without its trailing slash; else P/ + T
///   without its leading slash.
/// * strip, v1: P + T, one slash where both have one.
/// * no strip, v0: R = `/` -> P, else P without trailing slash + R.
/// * no strip, v1: P + R without its leading slash.
///
/// Envoy's regex_rewrite runs on the path without the query string.
fn rewrites(r: &Route, s: &Service, p: &PathKind<'_>) -> Vec<Rewrite> {
    let one = |rewrite| {
        vec![Rewrite {
            exact: false,
            rewrite,
        }]
    };
    let path = s.path.as_deref().unwrap_or("/");
    let root = path == "/";
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let m = match p {
        PathKind::Prefix(pre) => regex::escape(pre),
        PathKind::Regex(re) => format!("(?:{re})"),
    };
    if !r.strip_path {
        return match (r.path_handling, root) {
            (_, true) => one(None),
            (PathHandling::V0, false) if path.ends_with('/') => one(subst("^/".into(), path)),
            (PathHandling::V0, false) => one(subst("^/$|^".into(), path)),
            (PathHandling::V1, false) => one(subst("^/".into(), path)),
        };
    }
    match r.path_handling {
        PathHandling::V1 => {
            if root && matches!(p, PathKind::Prefix("/")) {
                one(None)
            } else if path.ends_with('/') {
                one(subst(format!("^{m}/?"), path))
            } else {
                one(subst(format!("^{m}"), path))
            }
        }
        PathHandling::V0 => {
            if root {
                return match p {
                    PathKind::Prefix("/") => one(None),
                    _ => one(subst(format!("^{m}/?"), "/")),
                };
            }
            let t = trimmed.replace('\\', "\\\\");
            match p {
                // R = M gives P without its slash; otherwise P/ + T without its
                // slash: the `/` is taken from M's own leading slash (group 1).
                PathKind::Prefix(pre) => {
                    let rest = regex::escape(&pre[1..]);
                    one(subst_raw(format!("^{m}$|^(/){rest}/?"), format!("{t}\\1")))
                }
                // A regex cannot be split that way: a separate entry matching
                // the whole path comes first.
                PathKind::Regex(_) => vec![
                    Rewrite {
                        exact: true,
                        rewrite: subst_raw("^.*$".into(), t.clone()),
                    },
                    Rewrite {
                        exact: false,
                        rewrite: subst_raw(format!("^{m}/?"), format!("{t}/")),
                    },
                ],
            }
        }
    }
}

/// Kong's consistent-hashing keys, as Envoy hash policies: hash_on first
/// (terminal when it yields a hash), then hash_fallback.
fn hash_policies(u: &Upstream, path_regex: Option<&str>) -> Vec<HashPolicy> {
    if u.algorithm != "consistent-hashing" {
        return Vec::new();
    }
    let mut out: Vec<HashPolicy> = [&u.hash_on, &u.hash_fallback]
        .into_iter()
        .filter_map(|h| hash_policy(h, path_regex))
        .map(|p| HashPolicy {
            policy_specifier: Some(p),
            terminal: false,
        })
        .collect();
    if out.len() > 1 {
        out[0].terminal = true;
    }
    out
}

fn header_hash(name: &str, rewrite: Option<RegexMatchAndSubstitute>) -> PolicySpecifier {
    PolicySpecifier::Header(Header {
        header_name: name.into(),
        regex_rewrite: rewrite,
    })
}

fn hash_policy(h: &HashOn, path_regex: Option<&str>) -> Option<PolicySpecifier> {
    Some(match h {
        HashOn::None => return None,
        // Kong's auth plugins set X-Consumer-ID for the authenticated consumer.
        HashOn::Consumer => header_hash("x-consumer-id", None),
        HashOn::Ip => {
            PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
        }
        HashOn::Header(name) => header_hash(name, None),
        // Kong sets the cookie when absent, as a session cookie: Envoy does so for ttl 0.
        HashOn::Cookie { name, path } => PolicySpecifier::Cookie(Cookie {
            name: name.clone(),
            path: path.clone(),
            ttl: Some(Duration::default()),
            ..Default::default()
        }),
        // Kong hashes the path without the query string.
        HashOn::Path => header_hash(":path", subst_raw(r"\?.*".into(), String::new())),
        HashOn::QueryArg(q) => PolicySpecifier::QueryParameter(QueryParameter { name: q.clone() }),
        // The named capture of the matched path regex; routes without it fall back.
        HashOn::UriCapture(name) => {
            let re = path_regex?;
            let idx = regex::Regex::new(re)
                .ok()?
                .capture_names()
                .position(|n| n == Some(name.as_str()))?;
            if idx > 9 {
                return None;
            }
            header_hash(
                ":path",
                subst_raw(format!("^(?:{re}).*"), format!("\\{idx}")),
            )
        }
    })
}

#[cfg(test)]
mod tests;
