//! The schema of each Kong entity, field for field as Kong 3.x has it.

use super::checks;
use crate::schema::{Field, FieldErrors, Record, entity_error, field_error};
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

/// A foreign-key field and what deleting its target does.
pub struct Foreign {
    pub field: &'static str,
    pub kind: &'static str,
    /// Deleting the target deletes this entity too (Kong's `on_delete =
    /// "cascade"`); otherwise the delete is refused while references exist.
    pub cascade: bool,
    /// The field is an array of target ids (`services.ca_certificates`), not
    /// one `{"id": ...}` reference. Kong checks these in its DAO rather than
    /// as foreign keys: no nested endpoints, no nesting in declarative
    /// documents, and its own refusal message on delete.
    pub many: bool,
}

pub struct EntityDef {
    /// Collection name and store kind, as in Kong's declarative format.
    pub name: &'static str,
    /// URL segment (`key-auth` for `keyauth_credentials`).
    pub path: &'static str,
    /// Alternative URL segments accepted too (`key-auths`).
    pub path_aliases: &'static [&'static str],
    pub schema: Record,
    /// Field whose value may stand in for the id in a URL.
    pub endpoint_key: Option<&'static str>,
    /// Fields unique within the collection.
    pub unique: &'static [&'static str],
    /// Fields that together are unique (Kong's cache key).
    pub cache_key: &'static [&'static str],
    pub foreign: &'static [Foreign],
    pub updated_at: bool,
}

impl EntityDef {
    pub fn foreign_field(&self, kind: &str) -> Option<&Foreign> {
        self.foreign.iter().find(|f| f.kind == kind)
    }

    /// The single (`{"id": ...}`) reference to `kind` that nesting under a
    /// `kind` entity sets, in URLs and declarative documents.
    pub fn nesting_field(&self, kind: &str) -> Option<&Foreign> {
        self.foreign.iter().find(|f| f.kind == kind && !f.many)
    }

    /// A unique key's index entry, `field=value`; a secret field's value
    /// (a key-auth key) by its digest, so the index holds no secret.
    pub fn key_entry(&self, field: &str, value: &str) -> String {
        let secret = self
            .schema
            .fields
            .iter()
            .any(|(name, f)| *name == field && f.secret);
        if !secret {
            return format!("{field}={value}");
        }
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"gantry unique secret v1\0");
        h.update(value.as_bytes());
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        format!("{field}=digest:{hex}")
    }

    /// The unique keys of a normalised entity, for the store's key index.
    pub fn keys(&self, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for f in self.unique {
            if let Some(s) = key_part(&v[*f]) {
                out.push(self.key_entry(f, &s));
            }
        }
        if !self.cache_key.is_empty() {
            let parts: Vec<String> = self
                .cache_key
                .iter()
                .map(|f| key_part(&v[*f]).unwrap_or_default())
                .collect();
            out.push(format!("cache={}", parts.join("|")));
        }
        out
    }
}

fn key_part(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn base() -> Record {
    Record::new()
        .field(
            "id",
            Field::string()
                .pattern(checks::UUID)
                .custom(checks::uuid)
                .describe("UUID; generated when absent"),
        )
        .field(
            "created_at",
            Field::integer().describe("Unix seconds; set by Gantry"),
        )
}

fn with_updated(r: Record) -> Record {
    r.field(
        "updated_at",
        Field::integer().describe("Unix seconds; set by Gantry"),
    )
}

/// Names (services, routes, consumers' usernames, plugin instances) are
/// at most this long; Kong sets no limit.
pub const NAME_MAX: usize = 255;
/// Tags: at most this many per entity, each at most this long.
pub const TAGS_MAX: usize = 128;
pub const TAG_MAX: usize = 128;
/// PEM documents (certificates, keys, a jwt credential's RSA key).
pub const PEM_MAX: usize = 64 * 1024;

fn name() -> Field {
    Field::string()
        .len_max(NAME_MAX)
        .pattern(checks::NAME)
        .custom(checks::name)
}

fn host() -> Field {
    Field::string()
        .len_max(checks::HOST_MAX)
        .pattern(checks::HOST)
        .custom(checks::host)
}

fn sni() -> Field {
    Field::string()
        .len_max(checks::HOST_MAX)
        .pattern(checks::SNI)
        .custom(checks::sni)
}

fn service_path() -> Field {
    Field::string()
        .pattern(checks::SERVICE_PATH)
        .custom(checks::service_path)
}

fn header_name() -> Field {
    Field::string()
        .pattern(checks::HEADER_NAME)
        .custom(checks::header_name)
}

fn pem() -> Field {
    Field::string().len_max(PEM_MAX)
}

fn tags() -> Field {
    Field::set(
        Field::string()
            .len_max(TAG_MAX)
            .pattern(checks::TAG)
            .custom(checks::tag),
    )
    .len_max(TAGS_MAX)
    .describe("Free-form labels for filtering")
}

fn timeout() -> Field {
    Field::integer()
        .between(1.0, 2147483646.0)
        .default(json!(60000))
}

fn protocols_http() -> [&'static str; 10] {
    [
        "grpc",
        "grpcs",
        "http",
        "https",
        "tcp",
        "tls",
        "tls_passthrough",
        "udp",
        "ws",
        "wss",
    ]
}

fn services() -> Record {
    let r = base().field("name", name());
    with_updated(r)
        .field(
            "retries",
            Field::integer().between(0.0, 32767.0).default(json!(5)),
        )
        .field(
            "protocol",
            Field::string()
                .one_of(&protocols_http())
                .default(json!("http")),
        )
        .field("host", host().required())
        .field(
            "port",
            Field::integer().between(0.0, 65535.0).default(json!(80)),
        )
        .field("path", service_path())
        .field("connect_timeout", timeout())
        .field("write_timeout", timeout())
        .field("read_timeout", timeout())
        .field("tags", tags())
        .field("client_certificate", Field::foreign("certificates"))
        .field("tls_verify", Field::boolean())
        .field("tls_verify_depth", Field::integer().between(0.0, 64.0))
        .field(
            "ca_certificates",
            Field::array(Field::string().pattern(checks::UUID).custom(checks::uuid)),
        )
        .field("enabled", Field::boolean().default(json!(true)))
        .check(service_checks)
}

fn service_checks(v: &Map<String, Value>) -> Result<(), FieldErrors> {
    let proto = v["protocol"].as_str().unwrap_or_default();
    if !v["path"].is_null() && !matches!(proto, "http" | "https") {
        return Err(field_error(
            "path",
            "value must be null when 'protocol' is not 'http' or 'https'".to_string(),
        ));
    }
    Ok(())
}

fn routes() -> Record {
    let r = base().field("name", name());
    with_updated(r)
        .field(
            "protocols",
            Field::set(Field::string().one_of(&protocols_http()))
                .len_min(1)
                .default(json!(["http", "https"])),
        )
        .field(
            "methods",
            Field::set(
                Field::string()
                    .pattern(checks::METHOD)
                    .custom(checks::method),
            ),
        )
        .field(
            "hosts",
            Field::array(
                Field::string()
                    .len_max(checks::HOST_PORT_MAX)
                    .pattern(checks::WILDCARD_HOST)
                    .custom(checks::wildcard_host),
            ),
        )
        .field(
            "paths",
            Field::array(
                Field::string()
                    .pattern(checks::ROUTE_PATH)
                    .custom(checks::route_path)
                    .describe("A prefix, or `~/` and an RE2 expression, which must compile"),
            ),
        )
        .field(
            "headers",
            Field::map(Field::array(Field::string()).len_min(1))
                .keys(checks::HEADER_NAME)
                .custom(route_headers),
        )
        .field(
            "https_redirect_status_code",
            Field::integer()
                .one_of_ints(&[426, 301, 302, 307, 308])
                .default(json!(426)),
        )
        .field("regex_priority", Field::integer().default(json!(0)))
        .field("strip_path", Field::boolean().default(json!(true)))
        .field(
            "path_handling",
            Field::string().one_of(&["v0", "v1"]).default(json!("v0")),
        )
        .field("preserve_host", Field::boolean().default(json!(false)))
        .field("request_buffering", Field::boolean().default(json!(true)))
        .field("response_buffering", Field::boolean().default(json!(true)))
        .field("snis", Field::set(sni()))
        .field("sources", Field::set(Field::json()))
        .field("destinations", Field::set(Field::json()))
        .field("tags", tags())
        .field("service", Field::foreign("services"))
        .check(route_checks)
}

fn route_headers(v: &Value) -> Result<(), String> {
    for (k, vals) in v.as_object().into_iter().flatten() {
        checks::header_name(&json!(k))?;
        if k.eq_ignore_ascii_case("host") {
            return Err(
                "cannot contain 'host' header, which must be specified in the 'hosts' attribute"
                    .into(),
            );
        }
        if vals.as_array().is_none_or(|a| a.is_empty()) {
            return Err(format!("header '{k}' needs at least one value"));
        }
        for val in vals.as_array().into_iter().flatten() {
            if let Some(re) = val.as_str().and_then(|s| s.strip_prefix("~*")) {
                // RE2's syntax (gantry-proxy's reader); the regex emitted
                // from it is checked whole, size included, at admission.
                gantry_proxy::config::check_re2_syntax(re)
                    .map_err(|e| format!("invalid regex: '{re}' ({e})"))?;
            }
        }
    }
    Ok(())
}

fn route_checks(v: &Map<String, Value>) -> Result<(), FieldErrors> {
    let protos: Vec<&str> = v["protocols"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let set = |f: &str| match &v[f] {
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => false,
    };
    let http = protos
        .iter()
        .any(|p| matches!(*p, "http" | "https" | "grpc" | "grpcs" | "ws" | "wss"));
    if http && !(set("methods") || set("hosts") || set("paths") || set("headers") || set("snis")) {
        let what = if protos
            .iter()
            .any(|p| matches!(*p, "https" | "grpcs" | "wss"))
        {
            "'methods', 'hosts', 'headers', 'paths', 'snis'"
        } else {
            "'methods', 'hosts', 'headers', 'paths'"
        };
        return Err(entity_error(format!(
            "must set one of {what} when 'protocols' is '{}'",
            protos.join("', '")
        )));
    }
    if set("snis")
        && !protos
            .iter()
            .any(|p| matches!(*p, "https" | "grpcs" | "tls" | "wss" | "tls_passthrough"))
    {
        return Err(field_error(
            "snis",
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls', 'wss' or 'tls_passthrough'",
        ));
    }
    Ok(())
}

fn healthchecks() -> Field {
    let ints =
        |vals: &[i64]| Field::array(Field::integer().between(100.0, 999.0)).default(json!(vals));
    let counter = |d: i64| Field::integer().between(0.0, 255.0).default(json!(d));
    let interval = || Field::number().between(0.0, 65535.0).default(json!(0));
    let active = Record::new()
        .field(
            "type",
            Field::string()
                .one_of(&["tcp", "http", "https", "grpc", "grpcs"])
                .default(json!("http")),
        )
        .field(
            "timeout",
            Field::number().between(0.0, 65535.0).default(json!(1)),
        )
        .field(
            "concurrency",
            Field::integer()
                .between(1.0, 2147483648.0)
                .default(json!(10)),
        )
        .field("http_path", service_path().default(json!("/")))
        .field("https_sni", host())
        .field(
            "https_verify_certificate",
            Field::boolean().default(json!(true)),
        )
        .field("headers", Field::map(Field::array(Field::string())))
        .field(
            "healthy",
            Field::record(
                Record::new()
                    .field("interval", interval())
                    .field("http_statuses", ints(&[200, 302]))
                    .field("successes", counter(0)),
            ),
        )
        .field(
            "unhealthy",
            Field::record(
                Record::new()
                    .field("interval", interval())
                    .field(
                        "http_statuses",
                        ints(&[429, 404, 500, 501, 502, 503, 504, 505]),
                    )
                    .field("tcp_failures", counter(0))
                    .field("timeouts", counter(0))
                    .field("http_failures", counter(0)),
            ),
        );
    let passive = Record::new()
        .field(
            "type",
            Field::string()
                .one_of(&["tcp", "http", "https", "grpc", "grpcs"])
                .default(json!("http")),
        )
        .field(
            "healthy",
            Field::record(
                Record::new()
                    .field(
                        "http_statuses",
                        ints(&[
                            200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303,
                            304, 305, 306, 307, 308,
                        ]),
                    )
                    .field("successes", counter(0)),
            ),
        )
        .field(
            "unhealthy",
            Field::record(
                Record::new()
                    .field("http_statuses", ints(&[429, 500, 503]))
                    .field("tcp_failures", counter(0))
                    .field("timeouts", counter(0))
                    .field("http_failures", counter(0)),
            ),
        );
    Field::record(
        Record::new()
            .field("active", Field::record(active))
            .field("passive", Field::record(passive))
            .field(
                "threshold",
                Field::number().between(0.0, 100.0).default(json!(0)),
            ),
    )
}

fn upstreams() -> Record {
    let hash = || {
        Field::string().one_of(&[
            "none",
            "consumer",
            "ip",
            "header",
            "cookie",
            "path",
            "query_arg",
            "uri_capture",
        ])
    };
    base()
        .field("name", host().required())
        .field(
            "algorithm",
            Field::string()
                .one_of(&[
                    "consistent-hashing",
                    "least-connections",
                    "round-robin",
                    "latency",
                ])
                .default(json!("round-robin")),
        )
        .field("hash_on", hash().default(json!("none")))
        .field("hash_fallback", hash().default(json!("none")))
        .field("hash_on_header", header_name())
        .field("hash_fallback_header", header_name())
        .field("hash_on_cookie", Field::string())
        .field("hash_on_cookie_path", Field::string().default(json!("/")))
        .field("hash_on_query_arg", Field::string())
        .field("hash_fallback_query_arg", Field::string())
        .field("hash_on_uri_capture", Field::string())
        .field("hash_fallback_uri_capture", Field::string())
        .field(
            "slots",
            Field::integer()
                .between(10.0, 65536.0)
                .default(json!(10000)),
        )
        .field("healthchecks", healthchecks())
        .field("tags", tags())
        .field("host_header", host())
        .field("client_certificate", Field::foreign("certificates"))
        .field("use_srv_name", Field::boolean().default(json!(false)))
        .check(upstream_checks)
        .field("updated_at", Field::integer())
}

fn upstream_checks(v: &Map<String, Value>) -> Result<(), FieldErrors> {
    let on = v["hash_on"].as_str().unwrap_or("none");
    let fallback = v["hash_fallback"].as_str().unwrap_or("none");
    for (mode, header, query, capture) in [
        (
            on,
            "hash_on_header",
            "hash_on_query_arg",
            "hash_on_uri_capture",
        ),
        (
            fallback,
            "hash_fallback_header",
            "hash_fallback_query_arg",
            "hash_fallback_uri_capture",
        ),
    ] {
        let need = match mode {
            "header" => Some(header),
            "cookie" => Some("hash_on_cookie"),
            "query_arg" => Some(query),
            "uri_capture" => Some(capture),
            _ => None,
        };
        if let Some(f) = need
            && v[f].is_null()
        {
            return Err(field_error(f, "required field missing"));
        }
    }
    if on == "none" && fallback != "none" {
        return Err(field_error(
            "hash_fallback",
            "must be 'none' when 'hash_on' is 'none'",
        ));
    }
    if on != "none" && on == fallback && !matches!(on, "header" | "query_arg" | "uri_capture") {
        return Err(field_error("hash_fallback", "must not equal 'hash_on'"));
    }
    Ok(())
}

fn targets() -> Record {
    with_updated(base())
        .field("upstream", Field::foreign("upstreams").required())
        .field(
            "target",
            Field::string()
                .required()
                .len_max(checks::HOST_PORT_MAX)
                .pattern(checks::TARGET)
                .custom(checks::target),
        )
        .field(
            "weight",
            Field::integer().between(0.0, 65535.0).default(json!(100)),
        )
        .field("tags", tags())
}

fn consumers() -> Record {
    with_updated(base())
        .field(
            "username",
            Field::string()
                .len_max(NAME_MAX)
                .pattern(checks::HEADER_SAFE)
                .custom(checks::header_safe),
        )
        .field(
            "custom_id",
            Field::string()
                .len_max(NAME_MAX)
                .pattern(checks::HEADER_SAFE)
                .custom(checks::header_safe),
        )
        .field("tags", tags())
        .check(|v| {
            // Kong's `at_least_one_of`: null and "" are both empty.
            let empty = |f: &str| v[f].as_str().is_none_or(str::is_empty);
            if empty("username") && empty("custom_id") {
                Err(entity_error(
                    "at least one of these fields must be non-empty: 'custom_id', 'username'",
                ))
            } else {
                Ok(())
            }
        })
}

fn keyauth() -> Record {
    base()
        .field("consumer", Field::foreign("consumers").required())
        .field(
            "key",
            Field::string()
                .secret()
                .describe("Generated when absent; never shown on reads"),
        )
        .field("ttl", Field::integer().between(0.0, 100000000.0))
        .field("tags", tags())
}

const JWT_ALGS: [&str; 13] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256",
    "PS384", "PS512", "EdDSA",
];

fn jwt_secrets() -> Record {
    base()
        .field("consumer", Field::foreign("consumers").required())
        .field(
            "key",
            Field::string()
                .describe("Matched against the token's key claim; generated when absent"),
        )
        .field(
            "secret",
            Field::string()
                .secret()
                .describe("HMAC secret; generated when absent"),
        )
        .field("rsa_public_key", pem())
        .field(
            "algorithm",
            Field::string().one_of(&JWT_ALGS).default(json!("HS256")),
        )
        .field("tags", tags())
        .check(|v| {
            let alg = v["algorithm"].as_str().unwrap_or_default();
            if !alg.starts_with("HS") {
                let Some(pem) = v["rsa_public_key"].as_str() else {
                    return Err(field_error("rsa_public_key", "required field missing"));
                };
                if !pem.contains("-----BEGIN PUBLIC KEY-----")
                    && !pem.contains("-----BEGIN RSA PUBLIC KEY-----")
                {
                    return Err(field_error(
                        "rsa_public_key",
                        "invalid key: not a PEM public key",
                    ));
                }
            }
            Ok(())
        })
}

fn acls() -> Record {
    base()
        .field("consumer", Field::foreign("consumers").required())
        .field("group", Field::string().required().len_min(1))
        .field("tags", tags())
}

fn plugins() -> Record {
    with_updated(base())
        .field("name", Field::string().required())
        .field("instance_name", name())
        .field("route", Field::foreign("routes"))
        .field("service", Field::foreign("services"))
        .field("consumer", Field::foreign("consumers"))
        .field(
            "config",
            Field::json().describe("The plugin's own config; see its schema"),
        )
        .field(
            "protocols",
            Field::set(Field::string().one_of(&[
                "grpc",
                "grpcs",
                "http",
                "https",
                "tcp",
                "tls",
                "tls_passthrough",
                "udp",
                "ws",
                "wss",
            ]))
            .len_min(1),
        )
        .field("enabled", Field::boolean().default(json!(true)))
        .field("tags", tags())
        .field("ordering", Field::json())
}

fn certificates() -> Record {
    with_updated(base())
        .field("cert", pem().required().custom(checks::pem_cert))
        .field(
            "key",
            pem()
                .required()
                .secret()
                .referenceable()
                .custom(checks::pem_key),
        )
        .field("cert_alt", pem().custom(checks::pem_cert))
        .field(
            "key_alt",
            pem().secret().referenceable().custom(checks::pem_key),
        )
        .field("tags", tags())
        .field(
            "snis",
            Field::array(sni()).describe("Shorthand: SNI names created with the certificate"),
        )
        .check(|v| {
            if v["cert_alt"].is_null() != v["key_alt"].is_null() {
                return Err(entity_error(
                    "all or none of these fields must be set: 'cert_alt', 'key_alt'",
                ));
            }
            Ok(())
        })
}

/// Kong's `ca_certificates`: trusted CAs for verifying upstreams.
fn ca_certificates() -> Record {
    with_updated(base())
        .field(
            "cert",
            pem()
                .required()
                .custom(checks::x509_cert)
                .describe("One PEM CA certificate"),
        )
        .field(
            "cert_digest",
            Field::string().describe(
                "Lowercase hex SHA-256 of the certificate's DER; computed by Gantry, any value sent is replaced",
            ),
        )
        .field("tags", tags())
        .check(checks::ca_certificate)
}

fn snis() -> Record {
    with_updated(base())
        .field("name", sni().required())
        .field("certificate", Field::foreign("certificates").required())
        .field("tags", tags())
}

/// Every entity, in dependency order (referenced kinds first), which is
/// also the order a declarative import writes them in.
pub static ALL: LazyLock<Vec<EntityDef>> = LazyLock::new(|| {
    vec![
        EntityDef {
            name: "certificates",
            path: "certificates",
            path_aliases: &[],
            schema: certificates(),
            endpoint_key: None,
            unique: &[],
            cache_key: &[],
            foreign: &[],
            updated_at: true,
        },
        EntityDef {
            name: "snis",
            path: "snis",
            path_aliases: &[],
            schema: snis(),
            endpoint_key: Some("name"),
            unique: &["name"],
            cache_key: &[],
            foreign: &[Foreign {
                field: "certificate",
                kind: "certificates",
                cascade: false,
                many: false,
            }],
            updated_at: true,
        },
        EntityDef {
            name: "ca_certificates",
            path: "ca_certificates",
            path_aliases: &[],
            schema: ca_certificates(),
            endpoint_key: None,
            unique: &["cert_digest"],
            cache_key: &[],
            foreign: &[],
            updated_at: true,
        },
        EntityDef {
            name: "services",
            path: "services",
            path_aliases: &[],
            schema: services(),
            endpoint_key: Some("name"),
            unique: &["name"],
            cache_key: &[],
            foreign: &[
                Foreign {
                    field: "client_certificate",
                    kind: "certificates",
                    cascade: false,
                    many: false,
                },
                Foreign {
                    field: "ca_certificates",
                    kind: "ca_certificates",
                    cascade: false,
                    many: true,
                },
            ],
            updated_at: true,
        },
        EntityDef {
            name: "routes",
            path: "routes",
            path_aliases: &[],
            schema: routes(),
            endpoint_key: Some("name"),
            unique: &["name"],
            cache_key: &[],
            foreign: &[Foreign {
                field: "service",
                kind: "services",
                cascade: false,
                many: false,
            }],
            updated_at: true,
        },
        EntityDef {
            name: "upstreams",
            path: "upstreams",
            path_aliases: &[],
            schema: upstreams(),
            endpoint_key: Some("name"),
            unique: &["name"],
            cache_key: &[],
            foreign: &[Foreign {
                field: "client_certificate",
                kind: "certificates",
                cascade: false,
                many: false,
            }],
            updated_at: true,
        },
        EntityDef {
            name: "targets",
            path: "targets",
            path_aliases: &[],
            schema: targets(),
            endpoint_key: Some("target"),
            unique: &[],
            cache_key: &["upstream", "target"],
            foreign: &[Foreign {
                field: "upstream",
                kind: "upstreams",
                cascade: true,
                many: false,
            }],
            updated_at: true,
        },
        EntityDef {
            name: "consumers",
            path: "consumers",
            path_aliases: &[],
            schema: consumers(),
            endpoint_key: Some("username"),
            unique: &["username", "custom_id"],
            cache_key: &[],
            foreign: &[],
            updated_at: true,
        },
        EntityDef {
            name: "keyauth_credentials",
            path: "key-auth",
            path_aliases: &["key-auths"],
            schema: keyauth(),
            endpoint_key: Some("key"),
            unique: &["key"],
            cache_key: &[],
            foreign: &[Foreign {
                field: "consumer",
                kind: "consumers",
                cascade: true,
                many: false,
            }],
            updated_at: false,
        },
        EntityDef {
            name: "jwt_secrets",
            path: "jwt",
            path_aliases: &["jwts"],
            schema: jwt_secrets(),
            endpoint_key: Some("key"),
            unique: &["key"],
            cache_key: &[],
            foreign: &[Foreign {
                field: "consumer",
                kind: "consumers",
                cascade: true,
                many: false,
            }],
            updated_at: false,
        },
        EntityDef {
            name: "acls",
            path: "acls",
            path_aliases: &[],
            schema: acls(),
            endpoint_key: None,
            unique: &[],
            cache_key: &["consumer", "group"],
            foreign: &[Foreign {
                field: "consumer",
                kind: "consumers",
                cascade: true,
                many: false,
            }],
            updated_at: false,
        },
        EntityDef {
            name: "plugins",
            path: "plugins",
            path_aliases: &[],
            schema: plugins(),
            endpoint_key: Some("instance_name"),
            unique: &["instance_name"],
            cache_key: &["name", "route", "service", "consumer"],
            foreign: &[
                Foreign {
                    field: "route",
                    kind: "routes",
                    cascade: true,
                    many: false,
                },
                Foreign {
                    field: "service",
                    kind: "services",
                    cascade: true,
                    many: false,
                },
                Foreign {
                    field: "consumer",
                    kind: "consumers",
                    cascade: true,
                    many: false,
                },
            ],
            updated_at: true,
        },
    ]
});

pub fn def(name: &str) -> Option<&'static EntityDef> {
    ALL.iter().find(|d| d.name == name)
}

pub fn def_by_path(segment: &str) -> Option<&'static EntityDef> {
    ALL.iter()
        .find(|d| d.path == segment || d.path_aliases.contains(&segment))
}
