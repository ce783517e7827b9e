//! Typed views of the entity JSON the translator needs, read from the
//! normalised records the store keeps (every field present, null if unset).

use super::TranslateError;
use crate::store::Stored;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

#[derive(Clone, Debug)]
pub struct Service {
    pub id: String,
    pub name: Option<String>,
    pub protocol: String,
    pub host: String,
    pub port: u16,
    /// None when unset (Kong then treats it as `/`).
    pub path: Option<String>,
    pub connect_timeout: i64,
    pub read_timeout: i64,
    pub retries: u32,
    /// Certificate id presented to the upstream (Kong's `client_certificate`).
    pub client_certificate: Option<String>,
    /// Verify the upstream's certificate (null is off, as Kong's default).
    pub tls_verify: bool,
    pub tls_verify_depth: Option<u32>,
    /// CA certificate ids trusted for verification, in the listed order.
    pub ca_certificates: Vec<String>,
}

impl Service {
    /// Name when set, else id.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    pub fn cluster(&self) -> String {
        super::cluster_name(self.label())
    }

    /// TLS to the upstream.
    pub fn tls(&self) -> bool {
        matches!(self.protocol.as_str(), "https" | "grpcs" | "wss" | "tls")
    }

    /// HTTP/2 to the upstream (gRPC needs it).
    pub fn http2(&self) -> bool {
        matches!(self.protocol.as_str(), "grpc" | "grpcs")
    }

    /// The port Kong leaves out of the Host header for this scheme.
    pub fn default_port(&self) -> u16 {
        if self.tls() { 443 } else { 80 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathHandling {
    V0,
    V1,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub id: String,
    pub name: Option<String>,
    pub created_at: i64,
    pub protocols: Vec<String>,
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    /// Sorted by header name (lower-cased), values as given.
    pub headers: Vec<(String, Vec<String>)>,
    pub https_redirect_status_code: u16,
    pub regex_priority: i64,
    pub strip_path: bool,
    pub path_handling: PathHandling,
    pub preserve_host: bool,
    pub snis: Vec<String>,
    pub service: Option<String>,
}

impl Route {
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    pub fn has_protocol(&self, ps: &[&str]) -> bool {
        self.protocols.iter().any(|p| ps.contains(&p.as_str()))
    }
}

/// What a consistent-hashing upstream hashes on (Kong's hash_on / hash_fallback).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    None,
    Consumer,
    Ip,
    Header(String),
    Cookie { name: String, path: String },
    Path,
    QueryArg(String),
    UriCapture(String),
}

#[derive(Clone, Debug, Default)]
pub struct ActiveCheck {
    pub kind: String,
    /// Seconds, as Kong has them.
    pub timeout: f64,
    pub http_path: String,
    pub headers: Vec<(String, Vec<String>)>,
    pub healthy_interval: f64,
    pub healthy_statuses: Vec<u16>,
    pub successes: u32,
    pub unhealthy_interval: f64,
    pub unhealthy_statuses: Vec<u16>,
    pub tcp_failures: u32,
    pub http_failures: u32,
}

#[derive(Clone, Debug, Default)]
pub struct PassiveCheck {
    pub tcp_failures: u32,
    pub http_failures: u32,
}

#[derive(Clone, Debug)]
pub struct Upstream {
    pub id: String,
    pub name: String,
    pub algorithm: String,
    pub hash_on: HashOn,
    pub hash_fallback: HashOn,
    pub host_header: Option<String>,
    /// Used when the service sets none (Kong).
    pub client_certificate: Option<String>,
    pub active: ActiveCheck,
    pub passive: PassiveCheck,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

impl Target {
    pub fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }
}

#[derive(Clone, Debug)]
pub struct Certificate {
    pub id: String,
    pub cert: String,
    pub key: String,
    pub alt: Option<(String, String)>,
    /// Sorted, deduplicated SNI names (from SNI entities and any inline list).
    pub snis: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct CaCertificate {
    pub id: String,
    /// One PEM certificate, as stored.
    pub cert: String,
}

/// A consumer with its credentials and ACL groups.
#[derive(Clone, Debug, Default)]
pub struct Consumer {
    pub id: String,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    /// Sorted, without duplicates.
    pub groups: Vec<String>,
    /// (credential id, key), sorted by id.
    pub keyauth: Vec<(String, String)>,
    pub jwt: Vec<JwtSecret>,
}

#[derive(Clone, Debug)]
pub struct JwtSecret {
    pub id: String,
    pub key: String,
    pub algorithm: String,
    pub secret: Option<String>,
    pub rsa_public_key: Option<String>,
}

/// An enabled plugin instance and its scope.
#[derive(Clone, Debug)]
pub struct PluginInst {
    pub id: String,
    pub name: String,
    pub route: Option<String>,
    pub service: Option<String>,
    pub consumer: Option<String>,
    pub config: Value,
}

/// The configuration, indexed, every collection in a stable order.
#[derive(Debug, Default)]
pub struct Model {
    /// Enabled services only, by id.
    pub services: BTreeMap<String, Service>,
    /// Routes attached to an enabled service, by id.
    pub routes: Vec<Route>,
    pub upstreams: BTreeMap<String, Upstream>,
    /// Upstream id -> its targets, sorted by (host, port, id).
    pub targets: BTreeMap<String, Vec<Target>>,
    /// Certificates, by id.
    pub certificates: BTreeMap<String, Certificate>,
    /// CA certificates, by id.
    pub ca_certificates: BTreeMap<String, CaCertificate>,
    /// Consumers, by id.
    pub consumers: BTreeMap<String, Consumer>,
    /// Enabled plugins, by id.
    pub plugins: Vec<PluginInst>,
    /// Per Kong route id, its plugins' per-route filter config.
    pub route_plugins: std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any>,
    /// Per Kong route id, Envoy's own filters' per-route configs, by filter name.
    pub route_envoy:
        std::collections::HashMap<String, Vec<(String, envoy_types::pb::google::protobuf::Any)>>,
    /// Envoy's own HTTP filters for Envoy nodes' listeners (before the router).
    pub envoy_filters: Vec<envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter>,
    /// Plugin instances (ids) Envoy's own filters enforce.
    pub envoy_enforced: std::collections::HashSet<String>,
    /// Route and service entities by id, when a log plugin is configured.
    pub log_entities: HashMap<String, serde_json::Value>,
}

impl Model {
    pub fn build(entities: &[Stored]) -> Result<Model, TranslateError> {
        let mut m = Model::default();
        // Routes and services as the admin API shows them, only when a log
        // plugin will carry them in its entries.
        let logging = entities.iter().any(|e| {
            e.kind == "plugins"
                && e.data["name"]
                    .as_str()
                    .is_some_and(|n| super::plugins::LOGGING.contains(&n))
        });
        let mut upstreams = Vec::new();
        let mut snis: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut routes = Vec::new();
        let mut creds = Credentials::default();
        for e in entities {
            let r = Reader { e };
            if logging && matches!(e.kind.as_str(), "routes" | "services") {
                m.log_entities.insert(e.id.clone(), e.data.clone());
            }
            match e.kind.as_str() {
                // A disabled service behaves as if it and its routes did not exist (Kong).
                "services" if !r.bool_or("enabled", true)? => {}
                "services" => {
                    let s = service(&r)?;
                    m.services.insert(s.id.clone(), s);
                }
                "routes" => routes.push(route(&r)?),
                "upstreams" => upstreams.push(upstream(&r)?),
                "targets" => {
                    let up = r
                        .foreign("upstream")?
                        .ok_or_else(|| r.bad("upstream is missing"))?;
                    let t = target(&r)?;
                    m.targets.entry(up).or_default().push(t);
                }
                "certificates" => {
                    let c = certificate(&r)?;
                    if let Some(list) = r.opt_str_list("snis")? {
                        snis.entry(c.id.clone()).or_default().extend(list);
                    }
                    m.certificates.insert(c.id.clone(), c);
                }
                "ca_certificates" => {
                    let c = CaCertificate {
                        id: e.id.clone(),
                        cert: r.str("cert")?,
                    };
                    m.ca_certificates.insert(c.id.clone(), c);
                }
                "snis" => {
                    let cert = r
                        .foreign("certificate")?
                        .ok_or_else(|| r.bad("certificate is missing"))?;
                    snis.entry(cert).or_default().push(r.str("name")?);
                }
                "consumers" => {
                    let c = Consumer {
                        id: e.id.clone(),
                        username: r.opt_str("username")?,
                        custom_id: r.opt_str("custom_id")?,
                        ..Default::default()
                    };
                    creds.consumers.push(c);
                }
                "keyauth_credentials" => {
                    let owner = r
                        .foreign("consumer")?
                        .ok_or_else(|| r.bad("consumer is missing"))?;
                    creds.keyauth.push((owner, (e.id.clone(), r.str("key")?)));
                }
                "acls" => {
                    let owner = r
                        .foreign("consumer")?
                        .ok_or_else(|| r.bad("consumer is missing"))?;
                    creds.acls.push((owner, r.str("group")?));
                }
                "jwt_secrets" => {
                    let owner = r
                        .foreign("consumer")?
                        .ok_or_else(|| r.bad("consumer is missing"))?;
                    creds.jwt.push((
                        owner,
                        JwtSecret {
                            id: e.id.clone(),
                            key: r.str("key")?,
                            algorithm: r.opt_str("algorithm")?.unwrap_or_else(|| "HS256".into()),
                            secret: r.opt_str("secret")?,
                            rsa_public_key: r.opt_str("rsa_public_key")?,
                        },
                    ));
                }
                "plugins" if !r.bool_or("enabled", true)? => {}
                "plugins" => m.plugins.push(PluginInst {
                    id: e.id.clone(),
                    name: r.str("name")?,
                    route: r.foreign("route")?,
                    service: r.foreign("service")?,
                    consumer: r.foreign("consumer")?,
                    config: r.field("config").clone(),
                }),
                _ => {}
            }
        }
        creds.attach(&mut m);
        m.plugins.sort_by(|a, b| a.id.cmp(&b.id));
        for (cert, mut names) in snis {
            if let Some(c) = m.certificates.get_mut(&cert) {
                names.sort();
                names.dedup();
                c.snis = names;
            }
        }
        for ts in m.targets.values_mut() {
            ts.sort_by(|a, b| (&a.host, a.port, &a.id).cmp(&(&b.host, b.port, &b.id)));
        }
        for u in upstreams {
            m.upstreams.insert(u.name.clone(), u);
        }
        // Routes without a service (Kong would answer 503) or whose service is
        // disabled (Kong: as if absent) are left out; no cluster is invented.
        routes.retain(|r| {
            r.service
                .as_ref()
                .is_some_and(|s| m.services.contains_key(s))
        });
        // Ids are unique: an unstable sort gives the same order, faster.
        routes.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        m.routes = routes;
        m.check_tls_references()?;
        Ok(m)
    }

    /// The store keeps these references intact; a dangling one here means
    /// the input is not what the store wrote, so nothing is translated.
    fn check_tls_references(&self) -> Result<(), TranslateError> {
        let bad = |kind: &str, id: &str, reason: String| TranslateError::Malformed {
            kind: kind.into(),
            id: id.into(),
            reason,
        };
        for s in self.services.values() {
            for ca in &s.ca_certificates {
                if !self.ca_certificates.contains_key(ca) {
                    return Err(bad(
                        "services",
                        &s.id,
                        format!("ca_certificates names a missing ca_certificate {ca}"),
                    ));
                }
            }
            if let Some(c) = &s.client_certificate
                && !self.certificates.contains_key(c)
            {
                return Err(bad(
                    "services",
                    &s.id,
                    format!("client_certificate names a missing certificate {c}"),
                ));
            }
        }
        for u in self.upstreams.values() {
            if let Some(c) = &u.client_certificate
                && !self.certificates.contains_key(c)
            {
                return Err(bad(
                    "upstreams",
                    &u.id,
                    format!("client_certificate names a missing certificate {c}"),
                ));
            }
        }
        Ok(())
    }

    /// The certificate a TLS service presents upstream: its own, else its
    /// upstream's (Kong's balancer does the same).
    pub fn client_certificate_of(&self, s: &Service) -> Option<&Certificate> {
        s.client_certificate
            .as_ref()
            .or_else(|| self.upstream_of(s)?.client_certificate.as_ref())
            .and_then(|id| self.certificates.get(id))
    }

    /// The upstream a service balances over, when its host names one.
    pub fn upstream_of(&self, s: &Service) -> Option<&Upstream> {
        self.upstreams.get(&s.host)
    }

    pub fn targets_of(&self, u: &Upstream) -> &[Target] {
        self.targets.get(&u.id).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Consumers and their credentials as read, before they are joined (the
/// entities come in any order).
#[derive(Default)]
struct Credentials {
    consumers: Vec<Consumer>,
    keyauth: Vec<(String, (String, String))>,
    acls: Vec<(String, String)>,
    jwt: Vec<(String, JwtSecret)>,
}

impl Credentials {
    fn attach(self, m: &mut Model) {
        for c in self.consumers {
            m.consumers.insert(c.id.clone(), c);
        }
        // A credential of a consumer that is gone is dropped with it.
        for (owner, k) in self.keyauth {
            if let Some(c) = m.consumers.get_mut(&owner) {
                c.keyauth.push(k);
            }
        }
        for (owner, g) in self.acls {
            if let Some(c) = m.consumers.get_mut(&owner) {
                c.groups.push(g);
            }
        }
        for (owner, j) in self.jwt {
            if let Some(c) = m.consumers.get_mut(&owner) {
                c.jwt.push(j);
            }
        }
        for c in m.consumers.values_mut() {
            c.groups.sort();
            c.groups.dedup();
            c.keyauth.sort();
            c.jwt.sort_by(|a, b| a.id.cmp(&b.id));
        }
    }
}

fn service(r: &Reader<'_>) -> Result<Service, TranslateError> {
    Ok(Service {
        id: r.e.id.clone(),
        name: r.opt_str("name")?,
        protocol: r.opt_str("protocol")?.unwrap_or_else(|| "http".into()),
        host: r.str("host")?,
        port: r.int_or("port", 80)? as u16,
        path: r.opt_str("path")?,
        connect_timeout: r.int_or("connect_timeout", 60000)?,
        read_timeout: r.int_or("read_timeout", 60000)?,
        retries: r.int_or("retries", 5)?.clamp(0, u32::MAX as i64) as u32,
        client_certificate: r.foreign("client_certificate")?,
        tls_verify: r.bool_or("tls_verify", false)?,
        tls_verify_depth: match r.field("tls_verify_depth") {
            Value::Null => None,
            _ => Some(r.int_or("tls_verify_depth", 0)?.clamp(0, u32::MAX as i64) as u32),
        },
        ca_certificates: r.opt_str_list("ca_certificates")?.unwrap_or_default(),
    })
}

fn route(r: &Reader<'_>) -> Result<Route, TranslateError> {
    // Routes are most of a large configuration: read the record in one
    // pass rather than with a hash lookup per field.
    let null = &Value::Null;
    let (mut name, mut created_at, mut protocols, mut methods, mut hosts, mut paths) =
        (null, null, null, null, null, null);
    let (mut headers_v, mut redirect, mut regex_priority, mut strip_path, mut path_handling) =
        (null, null, null, null, null);
    let (mut preserve_host, mut snis, mut service) = (null, null, null);
    if let Some(obj) = r.e.data.as_object() {
        for (k, v) in obj {
            match k.as_str() {
                "name" => name = v,
                "created_at" => created_at = v,
                "protocols" => protocols = v,
                "methods" => methods = v,
                "hosts" => hosts = v,
                "paths" => paths = v,
                "headers" => headers_v = v,
                "https_redirect_status_code" => redirect = v,
                "regex_priority" => regex_priority = v,
                "strip_path" => strip_path = v,
                "path_handling" => path_handling = v,
                "preserve_host" => preserve_host = v,
                "snis" => snis = v,
                "service" => service = v,
                _ => {}
            }
        }
    }
    let mut headers = Vec::new();
    match headers_v {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                let vals = match v {
                    Value::Array(a) => a
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(str::to_string)
                                .ok_or_else(|| r.bad("headers values must be strings"))
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    Value::String(s) => vec![s.clone()],
                    _ => return Err(r.bad("headers values must be arrays of strings")),
                };
                headers.push((k.to_ascii_lowercase(), vals));
            }
        }
        _ => return Err(r.bad("headers must be an object")),
    }
    headers.sort();
    Ok(Route {
        id: r.e.id.clone(),
        name: r.opt_str_of("name", name)?,
        created_at: r.int_or_of("created_at", created_at, 0)?,
        protocols: r
            .opt_str_list_of("protocols", protocols)?
            .unwrap_or_else(|| vec!["http".into(), "https".into()]),
        methods: r.opt_str_list_of("methods", methods)?.unwrap_or_default(),
        hosts: r.opt_str_list_of("hosts", hosts)?.unwrap_or_default(),
        paths: r.opt_str_list_of("paths", paths)?.unwrap_or_default(),
        headers,
        https_redirect_status_code: r.int_or_of("https_redirect_status_code", redirect, 426)?
            as u16,
        regex_priority: r.int_or_of("regex_priority", regex_priority, 0)?,
        strip_path: r.bool_or_of("strip_path", strip_path, true)?,
        path_handling: match r.opt_str_of("path_handling", path_handling)?.as_deref() {
            Some("v1") => PathHandling::V1,
            _ => PathHandling::V0,
        },
        preserve_host: r.bool_or_of("preserve_host", preserve_host, false)?,
        snis: r.opt_str_list_of("snis", snis)?.unwrap_or_default(),
        service: r.foreign_of("service", service)?,
    })
}

fn hash_on(r: &Reader<'_>, fallback: bool) -> Result<HashOn, TranslateError> {
    let (mode, header, query, capture) = if fallback {
        (
            "hash_fallback",
            "hash_fallback_header",
            "hash_fallback_query_arg",
            "hash_fallback_uri_capture",
        )
    } else {
        (
            "hash_on",
            "hash_on_header",
            "hash_on_query_arg",
            "hash_on_uri_capture",
        )
    };
    let need = |f: &str| {
        r.opt_str(f)?
            .ok_or_else(|| r.bad(&format!("{f} is required by {mode}")))
    };
    Ok(match r.opt_str(mode)?.as_deref().unwrap_or("none") {
        "consumer" => HashOn::Consumer,
        "ip" => HashOn::Ip,
        "header" => HashOn::Header(need(header)?.to_ascii_lowercase()),
        "cookie" => HashOn::Cookie {
            name: need("hash_on_cookie")?,
            path: r
                .opt_str("hash_on_cookie_path")?
                .unwrap_or_else(|| "/".into()),
        },
        "path" => HashOn::Path,
        "query_arg" => HashOn::QueryArg(need(query)?),
        "uri_capture" => HashOn::UriCapture(need(capture)?),
        _ => HashOn::None,
    })
}

fn upstream(r: &Reader<'_>) -> Result<Upstream, TranslateError> {
    let hc = r.field("healthchecks");
    let active = &hc["active"];
    let passive = &hc["passive"];
    let num = |v: &Value, d: f64| v.as_f64().unwrap_or(d);
    let count = |v: &Value| v.as_u64().unwrap_or(0).min(u32::MAX as u64) as u32;
    let statuses = |v: &Value, d: &[u16]| -> Vec<u16> {
        match v.as_array() {
            Some(a) => a
                .iter()
                .filter_map(Value::as_u64)
                .filter(|s| (100..600).contains(s))
                .map(|s| s as u16)
                .collect(),
            None => d.to_vec(),
        }
    };
    let mut headers = Vec::new();
    if let Some(map) = active["headers"].as_object() {
        for (k, v) in map {
            let vals = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            headers.push((k.clone(), vals));
        }
    }
    headers.sort();
    Ok(Upstream {
        id: r.e.id.clone(),
        name: r.str("name")?,
        algorithm: r
            .opt_str("algorithm")?
            .unwrap_or_else(|| "round-robin".into()),
        hash_on: hash_on(r, false)?,
        hash_fallback: hash_on(r, true)?,
        host_header: r.opt_str("host_header")?,
        client_certificate: r.foreign("client_certificate")?,
        active: ActiveCheck {
            kind: active["type"].as_str().unwrap_or("http").to_string(),
            timeout: num(&active["timeout"], 1.0),
            http_path: active["http_path"].as_str().unwrap_or("/").to_string(),
            headers,
            healthy_interval: num(&active["healthy"]["interval"], 0.0),
            healthy_statuses: statuses(&active["healthy"]["http_statuses"], &[200, 302]),
            successes: count(&active["healthy"]["successes"]),
            unhealthy_interval: num(&active["unhealthy"]["interval"], 0.0),
            unhealthy_statuses: statuses(
                &active["unhealthy"]["http_statuses"],
                &[429, 404, 500, 501, 502, 503, 504, 505],
            ),
            tcp_failures: count(&active["unhealthy"]["tcp_failures"]),
            http_failures: count(&active["unhealthy"]["http_failures"]),
        },
        passive: PassiveCheck {
            tcp_failures: count(&passive["unhealthy"]["tcp_failures"]),
            http_failures: count(&passive["unhealthy"]["http_failures"]),
        },
    })
}

fn target(r: &Reader<'_>) -> Result<Target, TranslateError> {
    let raw = r.str("target")?;
    let (host, port) = split_host_port(&raw);
    let port = match port {
        // Kong's default target port.
        None => 8000,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| r.bad(&format!("target {raw:?} has an invalid port")))?,
    };
    Ok(Target {
        id: r.e.id.clone(),
        host: host.to_string(),
        port,
        weight: r.int_or("weight", 100)?.clamp(0, u32::MAX as i64) as u32,
    })
}

fn certificate(r: &Reader<'_>) -> Result<Certificate, TranslateError> {
    let alt = match (r.opt_str("cert_alt")?, r.opt_str("key_alt")?) {
        (Some(c), Some(k)) => Some((c, k)),
        _ => None,
    };
    Ok(Certificate {
        id: r.e.id.clone(),
        cert: r.str("cert")?,
        key: r.str("key")?,
        alt,
        snis: Vec::new(),
    })
}

/// Splits `host:port`, `[v6]:port`, bare `v6` into host and optional port.
pub fn split_host_port(t: &str) -> (&str, Option<&str>) {
    if let Some(rest) = t.strip_prefix('[')
        && let Some((h, tail)) = rest.split_once(']')
    {
        return (h, tail.strip_prefix(':'));
    }
    if t.matches(':').count() == 1 {
        let (h, p) = t.split_once(':').unwrap_or((t, ""));
        return (h, Some(p));
    }
    (t, None)
}

/// `host` or `host:port`, bracketing IPv6 literals.
pub fn host_port(host: &str, port: Option<u16>) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match port {
        Some(p) => format!("{h}:{p}"),
        None => h,
    }
}

/// Typed field access with errors that name the entity.
struct Reader<'a> {
    e: &'a Stored,
}

impl Reader<'_> {
    fn bad(&self, reason: &str) -> TranslateError {
        TranslateError::Malformed {
            kind: self.e.kind.clone(),
            id: self.e.id.clone(),
            reason: reason.to_string(),
        }
    }

    fn field(&self, f: &str) -> &Value {
        self.e.data.get(f).unwrap_or(&Value::Null)
    }

    fn opt_str(&self, f: &str) -> Result<Option<String>, TranslateError> {
        self.opt_str_of(f, self.field(f))
    }

    fn opt_str_of(&self, f: &str, v: &Value) -> Result<Option<String>, TranslateError> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(self.bad(&format!("{f} must be a string"))),
        }
    }

    fn str(&self, f: &str) -> Result<String, TranslateError> {
        self.opt_str(f)?
            .ok_or_else(|| self.bad(&format!("{f} is missing")))
    }

    fn int_or(&self, f: &str, d: i64) -> Result<i64, TranslateError> {
        self.int_or_of(f, self.field(f), d)
    }

    fn int_or_of(&self, f: &str, v: &Value, d: i64) -> Result<i64, TranslateError> {
        match v {
            Value::Null => Ok(d),
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|x| x as i64))
                .ok_or_else(|| self.bad(&format!("{f} must be an integer"))),
            _ => Err(self.bad(&format!("{f} must be an integer"))),
        }
    }

    fn bool_or(&self, f: &str, d: bool) -> Result<bool, TranslateError> {
        self.bool_or_of(f, self.field(f), d)
    }

    fn bool_or_of(&self, f: &str, v: &Value, d: bool) -> Result<bool, TranslateError> {
        match v {
            Value::Null => Ok(d),
            Value::Bool(b) => Ok(*b),
            _ => Err(self.bad(&format!("{f} must be a boolean"))),
        }
    }

    fn opt_str_list(&self, f: &str) -> Result<Option<Vec<String>>, TranslateError> {
        self.opt_str_list_of(f, self.field(f))
    }

    fn opt_str_list_of(&self, f: &str, v: &Value) -> Result<Option<Vec<String>>, TranslateError> {
        match v {
            Value::Null => Ok(None),
            Value::Array(a) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.bad(&format!("{f} must hold strings")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(self.bad(&format!("{f} must be an array"))),
        }
    }

    /// A foreign key: `{ "id": ... }` (or a bare id string).
    fn foreign(&self, f: &str) -> Result<Option<String>, TranslateError> {
        self.foreign_of(f, self.field(f))
    }

    fn foreign_of(&self, f: &str, v: &Value) -> Result<Option<String>, TranslateError> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            Value::Object(o) => match o.get("id") {
                Some(Value::String(s)) => Ok(Some(s.clone())),
                _ => Err(self.bad(&format!("{f} must reference an id"))),
            },
            _ => Err(self.bad(&format!("{f} must reference an id"))),
        }
    }
}
