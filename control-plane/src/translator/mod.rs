//! The translator: a pure function from the current Kong-shaped entities to
//! the Envoy v3 resources (LDS, RDS, CDS, EDS, SDS) a proxy is fed.
//!
//! Same input, byte-identical output: everything is sorted by stable keys,
//! because the snapshot cache hashes each resource to decide what changed.
//! Nothing partial is ever returned: the whole set is validated first
//! (`validate.rs`) and any problem is a [`TranslateError`] naming the entity.
//!
//! Where Kong and Envoy differ, the translator does what Kong observably
//! does; each such place carries a one-line comment saying why.

mod clusters;
mod envoy_native;
mod listeners;
mod model;
mod plugins;
mod routes;
mod secrets;
mod validate;

pub use plugins::enforced_by;
pub use routes::{
    RouteTable, TableEntry, TableVhost, encode_all as encode_tables, encode_entries, path_regex,
};

#[cfg(test)]
mod testutil;

use crate::store::Stored;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Duration;
use gantry_proxy::config::is_anchored_literal as anchored_literal;
use gantry_shared::proto::route::RouteEntry;

/// What kind of proxy a node is, from its xDS `user_agent_name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavour {
    GantryProxy,
    Envoy,
}

impl Flavour {
    pub fn from_user_agent(name: &str) -> Flavour {
        if name == "gantry-proxy" {
            Flavour::GantryProxy
        } else {
            Flavour::Envoy
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Flavour::GantryProxy => "gantry-proxy",
            Flavour::Envoy => "envoy",
        }
    }
}

/// Where the proxies listen (Kong's `proxy_listen`).
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    pub listen_address: String,
    pub http_port: u16,
    pub https_port: u16,
    /// Peers whose forwarded client address is believed (Kong's
    /// `trusted_ips`), as CIDRs.
    pub trusted_ips: Vec<String>,
    /// Where a trusted peer puts the client address (Kong's `real_ip_header`).
    pub real_ip_header: String,
    /// How long a client may take to send a request's headers, from their
    /// first byte (Envoy's `request_headers_timeout`; nginx's, so Kong's,
    /// `client_header_timeout` is 60 s).
    pub request_headers_timeout_ms: i64,
    /// Salt of the key-auth digests the proxies compare against
    /// (`Sealer::key_salt`, one per database).
    pub key_salt: [u8; 32],
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            listen_address: "0.0.0.0".into(),
            http_port: 8000,
            https_port: 8443,
            trusted_ips: Vec::new(),
            real_ip_header: "x-forwarded-for".into(),
            request_headers_timeout_ms: 60_000,
            key_salt: [0; 32],
        }
    }
}

/// One complete, validated set of resources, each list sorted by name.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    /// gantry-proxy nodes: the route configurations' routes, one entry per
    /// Kong route (their `routes` then carry no virtual hosts).
    pub route_entries: Vec<RouteEntry>,
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
    pub secrets: Vec<Secret>,
}

/// What translation produces: the resources of [`Resources`], with each
/// route configuration as a [`RouteTable`] whose repeated routes are not
/// yet copied out (the snapshot cache encodes tables directly). Envoy's
/// tables hold virtual hosts; gantry-proxy's hold route entries instead.
#[derive(Clone, Debug, Default)]
pub struct Translation {
    /// Enabled plugins (by name) this flavour does not enforce.
    pub unenforced_plugins: Vec<String>,
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteTable>,
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
    pub secrets: Vec<Secret>,
}

impl Translation {
    /// The resources as plain messages, route configurations spelled out.
    pub fn into_resources(self) -> Resources {
        Resources {
            listeners: self.listeners,
            routes: self.routes.iter().map(RouteTable::to_config).collect(),
            route_entries: self
                .routes
                .iter()
                .flat_map(RouteTable::entry_messages)
                .collect(),
            clusters: self.clusters,
            endpoints: self.endpoints,
            secrets: self.secrets,
        }
    }
}

/// Why a configuration cannot be translated. Each variant names the
/// entity (kind and name or id) and the reason; none carries secret data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranslateError {
    #[error("{kind} {id}: malformed entity: {reason}")]
    Malformed {
        kind: String,
        id: String,
        reason: String,
    },
    #[error("route {route}: invalid regex {pattern:?}: {reason}")]
    InvalidRegex {
        route: String,
        pattern: String,
        reason: String,
    },
    #[error("{kind} {name}: {field} of {value_ms} ms is out of range (must be > 0 and < 2^31 ms)")]
    DurationOutOfRange {
        kind: String,
        name: String,
        field: String,
        value_ms: i64,
    },
    #[error("{kind} name {name:?} is used more than once")]
    DuplicateName { kind: String, name: String },
    #[error("route configuration {config}: domain {domain:?} is in more than one virtual host")]
    DuplicateDomain { config: String, domain: String },
    #[error("route {route} (route configuration {config}): cluster {cluster:?} does not exist")]
    MissingCluster {
        config: String,
        route: String,
        cluster: String,
    },
    #[error("listener {listener}: route configuration {name:?} does not exist")]
    MissingRouteConfig { listener: String, name: String },
    #[error("listener {listener}: secret {name:?} does not exist")]
    MissingSecret { listener: String, name: String },
    #[error("cluster {cluster}: client certificate secret {name:?} does not exist")]
    MissingClusterSecret { cluster: String, name: String },
    #[error("cluster {cluster}: EDS cluster has no load assignment")]
    MissingAssignment { cluster: String },
    #[error("certificate {certificate}: SNI {sni:?} is also used by certificate {other}")]
    SniConflict {
        certificate: String,
        sni: String,
        other: String,
    },
}

/// Translates the whole configuration for one node flavour.
pub fn translate(
    entities: &[Stored],
    flavour: Flavour,
    opts: &ProxyOptions,
) -> Result<Resources, TranslateError> {
    translate_tables(entities, flavour, opts).map(Translation::into_resources)
}

/// [`translate`], with route configurations left as tables.
pub fn translate_tables(
    entities: &[Stored],
    flavour: Flavour,
    opts: &ProxyOptions,
) -> Result<Translation, TranslateError> {
    let mut all = translate_flavours(entities, &[flavour], opts)?;
    all.pop().ok_or_else(|| TranslateError::Malformed {
        kind: "translation".into(),
        id: flavour.as_str().into(),
        reason: "no translation for the flavour".into(),
    })
}

/// [`translate_tables`] for several flavours, in the given order. Only
/// listeners depend on the flavour: the rest is built and validated once
/// and shared (route tables by reference).
pub fn translate_flavours(
    entities: &[Stored],
    flavours: &[Flavour],
    opts: &ProxyOptions,
) -> Result<Vec<Translation>, TranslateError> {
    let mut model = model::Model::build(entities)?;
    let resolved = plugins::resolve(&model);
    let route_plugins = plugins::per_route(&model, &resolved);
    let native = envoy_native::build(&model, &resolved);
    drop(resolved);
    model.route_plugins = route_plugins;
    model.route_envoy = native.per_route;
    model.envoy_filters = native.http_filters;
    model.envoy_enforced = native.enforced;
    let (clusters, endpoints) = clusters::build(&model);
    let routes = routes::build(&model, opts)?;
    let secrets = secrets::build(&model);
    let mut out: Vec<Translation> = Vec::with_capacity(flavours.len());
    for f in flavours {
        let mut t = Translation {
            unenforced_plugins: plugins::unenforced(&model, *f),
            listeners: listeners::build(&model, opts, *f)?,
            routes: routes.iter().map(RouteTable::for_rds).collect(),
            clusters: clusters.clone(),
            endpoints: endpoints.clone(),
            secrets: secrets.clone(),
        };
        // What the flavours share passed with the first (validated in
        // Envoy's shape, which holds every route); the others can only
        // differ in their listeners and in how the same routes travel.
        if out.is_empty() {
            validate::validate_translation(&t)?;
        } else {
            validate::validate_listeners(&t)?;
        }
        if *f == Flavour::GantryProxy {
            t.routes = routes.iter().map(RouteTable::for_entries).collect();
        }
        out.push(t);
    }
    Ok(out)
}

/// `{ ads: {}, resource_api_version: V3 }`: every dynamic resource comes
/// over the same ADS stream.
pub(crate) fn ads_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// Milliseconds as a protobuf Duration (validated later, so out-of-range
/// values are carried through faithfully rather than clamped).
pub(crate) fn ms(ms: i64) -> Duration {
    Duration {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Whether Envoy takes a regex the translator emits: RE2's syntax and its
/// program-size limit, by gantry-proxy's own RE2 rules. Not built into a
/// matcher: the same patterns recur in every virtual host and building
/// thousands of them is slow (admission compiles them).
pub(crate) fn regex_ok(re: &str) -> Result<(), String> {
    // The rewrites the translator emits for prefix paths (`^/orders/?`),
    // one per route: RE2 matches such a literal outside its program, so
    // however long it is the program has a handful of instructions.
    // gantry-proxy's own test of the shape (it matches them without a
    // regex engine), so the two agree on what it is.
    if anchored_literal(re) {
        return Ok(());
    }
    gantry_proxy::config::check_regex(re)
}

/// Cluster name of a service: `service.<name or id>`.
pub(crate) fn cluster_name(service_label: &str) -> String {
    format!("service.{service_label}")
}

/// SDS name of a certificate: `cert.<id>` (and `cert.<id>.alt` for the
/// alternate, usually ECDSA, pair).
pub(crate) fn secret_name(cert_id: &str, alt: bool) -> String {
    if alt {
        format!("cert.{cert_id}.alt")
    } else {
        format!("cert.{cert_id}")
    }
}

#[cfg(test)]
mod tests;
