//! The config compiler: a pure function from the Envoy resources the proxy
//! holds (LDS, RDS, CDS, EDS, SDS) to immutable runtime tables the request
//! path reads without locks.
//!
//! Everything that can be done once is done here: regexes are compiled,
//! header names parsed, defaults resolved to Envoy's values, and virtual
//! host domains indexed. The subset of Envoy's API supported is the one the
//! control plane's translator emits, plus what is cheap to do exactly;
//! anything else that would change behaviour is refused with an error
//! naming the resource and the field, rather than silently ignored (a
//! NACK keeps the last good config, which is what Envoy does with config it
//! cannot load).
//!
//! References to resources not (yet) present are allowed where Envoy allows
//! them: a listener whose route configuration has not arrived compiles (its
//! requests get 404 until it does), a route to an unknown cluster compiles
//! (the request gets the route's `cluster_not_found_response_code`, 503 by
//! default, flag NC), an EDS cluster without an assignment has no endpoints,
//! and a TLS filter chain whose secret is missing compiles (its handshakes
//! fail until the secret arrives).

#[allow(deprecated)] // some supported fields are deprecated in the API
mod clusters;
mod fences;
mod fields;
#[allow(deprecated)] // some supported fields are deprecated in the API
mod headers;
#[allow(deprecated)] // some supported fields are deprecated in the API
mod listener;
mod matchers;
#[allow(deprecated)] // some supported fields are deprecated in the API
mod path_index;
pub mod path_normalize;
#[allow(deprecated)] // some supported fields are deprecated in the API
mod routes;
mod secrets;
mod upstream_tls;
mod vhost_layout;

pub use crate::re2::{
    Re2, RegexRewrite, check_re2_syntax, check_syntax as check_regex, is_anchored_literal,
};
pub use clusters::{
    ClusterConfig, Discovery, DnsLookupFamily, EndpointAddress, EndpointConfig, EndpointHealth,
    GrpcCheck, HealthCheck, HttpCheck, LbPolicy, Outlier, Thresholds,
};
pub use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
    route::v3::RouteConfiguration,
};
pub use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
pub use fences::Fences;
pub use gantry_shared::proto::route::RouteEntry;
pub use headers::{AppendAction, HeaderAdd, HeaderMutations, HeaderStage};
pub use listener::{Codec, HttpLimits, ListenerConfig, ListenerTls, TlsChain};
pub use matchers::{HeaderMatch, HeaderMatcher, HeaderSource, QueryParamMatcher, StringMatcher};
pub use routes::{
    Action, ClusterChoice, Forward, HashPolicy, HostRewrite, MatchKind, Mirror, PathRedirect,
    Priority, Redirect, RedirectRequest, RequestView, RetryOn, RetryPolicy, Route, RouteTable,
    Selected, VirtualHost, cookie_value, direct_response_location,
};
pub use upstream_tls::{SanMatch, UpstreamTls, UpstreamVerify};
pub use vhost_layout::{CATCH_ALL, Group, HostPat, LaidOut, assemble, entry_layout, lay_out};

use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Everything the proxy holds, by resource name.
#[derive(Clone, Debug, Default)]
pub struct ResourceSet {
    pub listeners: BTreeMap<String, Listener>,
    pub routes: BTreeMap<String, RouteConfiguration>,
    /// Gantry route entries, each filling the route configuration it names.
    pub route_entries: BTreeMap<String, RouteEntry>,
    pub clusters: BTreeMap<String, Cluster>,
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    pub secrets: BTreeMap<String, Secret>,
    /// What refused updates took out of service (see [`Fences`]).
    pub fences: Fences,
}

/// Why a resource set cannot be compiled. `kind` is the Envoy resource type
/// ("Listener", "RouteConfiguration", "RouteEntry", "Cluster",
/// "ClusterLoadAssignment", "Secret"), `name` the resource name, `reason` says where inside it and
/// what is wrong. Never carries secret material.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{kind} {name}: {reason}")]
pub struct CompileError {
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
}

/// The compiled runtime tables.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// Sorted by name.
    pub listeners: Vec<ListenerConfig>,
    /// By RouteConfiguration name (the RDS name listeners refer to).
    pub routes: HashMap<String, Arc<RouteTable>>,
    /// By cluster name.
    pub clusters: HashMap<String, Arc<ClusterConfig>>,
    /// TLS certificate secrets by SDS name.
    pub certificates: HashMap<String, Arc<rustls::sign::CertifiedKey>>,
}

/// Compiles everything or nothing: the first error names the resource.
/// Resources are compiled kind by kind (secrets, clusters with their
/// assignments, route configurations, listeners), each in name order.
pub fn compile(set: &ResourceSet) -> Result<Compiled, CompileError> {
    crate::re2::with_cache(|| compile_all(set))
}

fn compile_all(set: &ResourceSet) -> Result<Compiled, CompileError> {
    let mut out = Compiled::default();
    for (name, s) in &set.secrets {
        check_name("Secret", name, &s.name)?;
        if let Some(ck) = secrets::compile(s).map_err(|reason| err("Secret", name, reason))? {
            out.certificates.insert(name.clone(), Arc::new(ck));
        }
    }
    for (name, c) in &set.clusters {
        check_name("Cluster", name, &c.name)?;
        let mut cc = clusters::compile(name, c, &set.endpoints)?;
        // As Envoy: a cluster whose client certificate secret has not
        // arrived stays warming.
        if cc
            .tls
            .as_ref()
            .and_then(|t| t.client_certificate.as_ref())
            .is_some_and(|s| !out.certificates.contains_key(s))
        {
            cc.warming = true;
        }
        out.clusters.insert(name.clone(), Arc::new(cc));
    }
    let mut entries: HashMap<&str, Vec<&RouteEntry>> = HashMap::new();
    for (name, e) in &set.route_entries {
        check_name("RouteEntry", name, &e.name)?;
        entries
            .entry(e.route_configuration.as_str())
            .or_default()
            .push(e);
    }
    for (name, rc) in &set.routes {
        check_name("RouteConfiguration", name, &rc.name)?;
        let mine = entries.remove(name.as_str()).unwrap_or_default();
        let t = routes::compile_config(name, rc, &mine, &set.clusters)?;
        out.routes.insert(name.clone(), Arc::new(t));
    }
    // Entries of a configuration not (yet) held wait for it, as a route
    // configuration no listener loads does.
    let mut addresses: HashMap<std::net::SocketAddr, &str> = HashMap::new();
    for (name, l) in &set.listeners {
        check_name("Listener", name, &l.name)?;
        let lc = listener::compile(name, l).map_err(|reason| err("Listener", name, reason))?;
        if let Some(other) = addresses.insert(lc.address, name) {
            return Err(err(
                "Listener",
                name,
                format!(
                    "listener {name} has duplicate address '{}' as existing listener {other}",
                    lc.address
                ),
            ));
        }
        out.listeners.push(lc);
    }
    Ok(out)
}

fn err(kind: &'static str, name: &str, reason: String) -> CompileError {
    CompileError {
        kind,
        name: name.to_string(),
        reason,
    }
}

/// The map key is the xDS resource name; the message's own name must agree
/// (an empty one is taken to be the key).
fn check_name(kind: &'static str, key: &str, inner: &str) -> Result<(), CompileError> {
    if inner.is_empty() || inner == key {
        Ok(())
    } else {
        Err(err(
            kind,
            key,
            format!("resource is named {key:?} but its name field says {inner:?}"),
        ))
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the compilers.

/// A protobuf Duration as Envoy reads it (`DurationUtil::durationToMilliseconds`
/// rejects negative and out-of-range values).
pub(crate) fn duration(d: &PbDuration, field: &str) -> Result<Duration, String> {
    const MAX_SECONDS: i64 = 315_576_000_000;
    if d.seconds < 0 || d.nanos < 0 || d.nanos > 999_999_999 || d.seconds > MAX_SECONDS {
        return Err(format!(
            "{field}: duration {}s {}ns is out of range",
            d.seconds, d.nanos
        ));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub(crate) fn opt_duration(
    d: Option<&PbDuration>,
    field: &str,
) -> Result<Option<Duration>, String> {
    d.map(|d| duration(d, field)).transpose()
}

/// Envoy's `PROTOBUF_GET_MS_OR_DEFAULT`.
pub(crate) fn duration_or(
    d: Option<&PbDuration>,
    default: Duration,
    field: &str,
) -> Result<Duration, String> {
    Ok(opt_duration(d, field)?.unwrap_or(default))
}

/// A duration PGV requires to be `> 0` when set.
pub(crate) fn positive_duration(
    d: Option<&PbDuration>,
    default: Duration,
    field: &str,
) -> Result<Duration, String> {
    let v = duration_or(d, default, field)?;
    if v.is_zero() {
        return Err(format!("{field}: must be greater than 0"));
    }
    Ok(v)
}

/// The last segment of an `Any` type URL (Envoy ignores the host part).
pub(crate) fn type_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or_default()
}

/// Unpacks an `Any` of the expected type.
pub(crate) fn unpack<T: Message + Name + Default>(any: &Any, what: &str) -> Result<T, String> {
    let got = type_name(any);
    if got != T::full_name() {
        return Err(format!(
            "{what}: expected a {} but the config is a {got:?}",
            T::full_name()
        ));
    }
    T::decode(any.value.as_slice()).map_err(|e| format!("{what}: cannot decode {got}: {e}"))
}

/// Refuses a message in which a field the compiler does not implement is
/// set. Callers take the fields they handle (or deliberately ignore) out
/// of a copy first; whatever is still encoded is unsupported.
pub(crate) fn reject_rest<M: Message>(
    rest: &M,
    table: &[(u32, &str)],
    what: &str,
) -> Result<(), String> {
    let bytes = rest.encode_to_vec();
    if bytes.is_empty() {
        return Ok(());
    }
    let mut tags = top_level_tags(&bytes);
    tags.sort_unstable();
    tags.dedup();
    let names: Vec<String> = tags
        .iter()
        .map(|t| match table.iter().find(|(n, _)| n == t) {
            Some((_, name)) => (*name).to_string(),
            None => format!("#{t}"),
        })
        .collect();
    Err(format!(
        "{what}: unsupported field{} set: {}",
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    ))
}

/// Field numbers present at the top level of an encoded message.
fn top_level_tags(mut b: &[u8]) -> Vec<u32> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else { break };
        out.push((key >> 3) as u32);
        let skip = match key & 7 {
            0 => {
                if varint(&mut b).is_none() {
                    break;
                }
                0
            }
            1 => 8,
            2 => match varint(&mut b) {
                Some(n) => n as usize,
                None => break,
            },
            5 => 4,
            _ => break,
        };
        if skip > b.len() {
            break;
        }
        b = &b[skip..];
    }
    out
}

/// Envoy's well-known HTTP_HEADER_NAME check (non-strict): no NUL, CR or LF.
/// Names are then parsed by `http`, which also lower-cases them as Envoy's
/// `LowerCaseString` does.
pub(crate) fn header_name(name: &str, field: &str) -> Result<http::HeaderName, String> {
    if name.is_empty() {
        return Err(format!("{field}: header name must not be empty"));
    }
    http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{field}: invalid header name {name:?}"))
}

/// Envoy's well-known HTTP_HEADER_VALUE check (non-strict): no NUL, CR or LF.
pub(crate) fn check_header_value(v: &[u8], field: &str) -> Result<(), String> {
    if v.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(format!("{field}: value contains NUL, CR or LF"));
    }
    Ok(())
}

/// A `FractionalPercent` as (numerator, denominator).
pub(crate) fn fraction(
    p: Option<&envoy_types::pb::envoy::r#type::v3::FractionalPercent>,
    default: (u32, u32),
) -> (u32, u32) {
    match p {
        None => default,
        Some(p) => {
            let denominator = match p.denominator {
                1 => 10_000,
                2 => 1_000_000,
                _ => 100,
            };
            (p.numerator, denominator)
        }
    }
}

#[cfg(test)]
#[allow(deprecated)]
mod tests_clusters;
#[cfg(test)]
#[allow(deprecated)]
mod tests_listener;
#[cfg(test)]
#[allow(deprecated)]
mod tests_re2;
#[cfg(test)]
#[allow(deprecated)]
mod tests_routes;
#[cfg(test)]
#[allow(deprecated)]
mod tests_secrets;
#[cfg(test)]
pub(crate) mod testutil;
