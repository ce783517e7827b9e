//! Plugin config schemas, one module per plugin, reproducing Kong 3.x's
//! `kong/plugins/<name>/schema.lua` (field names, types, defaults, enums,
//! checks and messages) plus Gantry's documented extensions.
//!
//! Use [`validate_config`] from the admin API: it runs [`normalize`] (Kong's
//! deprecated shorthand fields) and then the schema, and shapes errors the
//! way Kong reports them for a plugin entity.

use crate::schema::{self, FieldErrors, Input, Record};
use serde_json::{Map, Value};
use std::sync::LazyLock;

mod common;

mod acl;
mod correlation_id;
mod cors;
mod file_log;
mod http_log;
mod ip_restriction;
mod jwt;
mod key_auth;
mod prometheus;
mod proxy_cache;
mod rate_limiting;
mod request_size_limiting;
mod request_transformer;
mod request_validator;
mod response_transformer;
mod tcp_udp_log;

/// Kong's `typedefs.protocols_http` set, sorted as Kong sorts it.
const HTTP: &[&str] = &["grpc", "grpcs", "http", "https"];
/// Every protocol Kong knows (`constants.PROTOCOLS`), for `typedefs.protocols`.
const ALL: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
];

struct Plugin {
    name: &'static str,
    schema: fn() -> Record,
    /// Default of the plugin's `protocols` field.
    protocols: &'static [&'static str],
    /// What the plugin's `protocols` field accepts.
    supported: &'static [&'static str],
    /// Kong's `consumer = typedefs.no_consumer`: the plugin cannot be scoped
    /// to a consumer (it is what identifies the consumer, or runs before).
    no_consumer: bool,
}

/// The registry, alphabetical so listings and the OpenAPI document are stable.
const PLUGINS: &[Plugin] = &[
    Plugin {
        name: "acl",
        schema: acl::schema,
        protocols: HTTP,
        supported: HTTP,
        no_consumer: true,
    },
    Plugin {
        name: "correlation-id",
        schema: correlation_id::schema,
        protocols: HTTP,
        supported: HTTP,
        no_consumer: false,
    },
    Plugin {
        name: "cors",
        schema: cors::schema,
        protocols: HTTP,
        supported: HTTP,
        no_consumer: true,
    },
    Plugin {
        name: "file-log",
        schema: file_log::schema,
        protocols: HTTP,
        supported: ALL,
        no_consumer: false,
    },
    Plugin {
        name: "http-log",
        schema: http_log::schema,
        protocols: HTTP,
        supported: ALL,
        no_consumer: false,
    },
    Plugin {
        name: "ip-restriction",
        schema: ip_restriction::schema,
        protocols: &["http", "https", "tcp", "tls", "grpc", "grpcs"],
        supported: ALL,
        no_consumer: false,
    },
    Plugin {
        name: "jwt",
        schema: jwt::schema,
        protocols: HTTP,
        supported: HTTP,
        no_consumer: true,
    },
    Plugin {
        name: "key-auth",
        schema: key_auth::schema,
        protocols: HTTP,
        supported: HTTP,
        no_consumer: true,
    },
    Plugin {
        name: "prometheus",
        schema: prometheus::schema,
        protocols: HTTP,
        supported: ALL,
        no_consumer: false,
    },
    Plugin {
        name: "proxy-cache",
        schema: proxy_cache::schema,
        protocols: HTTP,
        supported: ALL,
        no_consumer: false,
    },
    Plugin {
        name: "rate-limiting",
        schema: rate_limiting::schema,
        protocols: HTTP,
        supported: HTTP,
        no_consumer: false,
    },
    Plugin {
        name: "request-size-limiting",
        schema: request_size_limiting::schema,
        protocols: HTTP,
        supported: HTTP,
        no_consumer: false,
    },
    Plugin {
        name: "request-transformer",
        schema: request_transformer::schema,
        protocols: HTTP,
        supported: ALL,
        no_consumer: false,
    },
    Plugin {
        name: "request-validator",
        schema: request_validator::schema,
        protocols: HTTP,
        supported: HTTP,
        no_consumer: false,
    },
    Plugin {
        name: "response-transformer",
        schema: response_transformer::schema,
        protocols: HTTP,
        supported: HTTP,
        no_consumer: false,
    },
    Plugin {
        name: "tcp-log",
        schema: tcp_udp_log::tcp_schema,
        protocols: HTTP,
        supported: ALL,
        no_consumer: false,
    },
    Plugin {
        name: "udp-log",
        schema: tcp_udp_log::udp_schema,
        protocols: HTTP,
        supported: ALL,
        no_consumer: false,
    },
];

fn find(name: &str) -> Option<&'static Plugin> {
    PLUGINS.iter().find(|p| p.name == name)
}

static NAMES: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| PLUGINS.iter().map(|p| p.name).collect());

/// Built once; index-aligned with `PLUGINS`.
static SCHEMAS: LazyLock<Vec<Record>> =
    LazyLock::new(|| PLUGINS.iter().map(|p| (p.schema)()).collect());

/// Every plugin Gantry knows, by Kong name, in a stable order.
pub fn names() -> &'static [&'static str] {
    NAMES.as_slice()
}

/// The config schema of one plugin.
pub fn config_schema(name: &str) -> Option<&'static Record> {
    PLUGINS
        .iter()
        .position(|p| p.name == name)
        .map(|i| &SCHEMAS[i])
}

/// Default of a plugin's `protocols` field (Kong's default for plugins,
/// `["grpc","grpcs","http","https"]`, unless the plugin overrides it).
pub fn default_protocols(name: &str) -> Vec<&'static str> {
    find(name).map_or(HTTP, |p| p.protocols).to_vec()
}

/// Protocols a plugin may run on: the `one_of` of its `protocols` elements.
pub fn supported_protocols(name: &str) -> &'static [&'static str] {
    find(name).map_or(HTTP, |p| p.supported)
}

/// False for plugins Kong declares with `consumer = typedefs.no_consumer`;
/// Kong then rejects a consumer scope with `consumer: value must be null`.
pub fn allows_consumer(name: &str) -> bool {
    find(name).is_none_or(|p| !p.no_consumer)
}

/// Rewrites Kong's deprecated shorthand fields into their canonical place
/// before validation (the schema language has no shorthands). As in Kong,
/// a shorthand that disagrees with the canonical field it replaces is an
/// error, reported on the shorthand.
pub fn normalize(name: &str, config: &mut Value) -> Result<(), FieldErrors> {
    match name {
        "rate-limiting" => rate_limiting::normalize(config),
        "http-log" => http_log::normalize(config),
        _ => Ok(()),
    }
}

/// Kong's deprecated shorthand fields of a plugin's config: each
/// `(shorthand, field of config.redis)` that [`normalize`] moves.
pub fn shorthands(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "rate-limiting" => rate_limiting::SHORTHANDS,
        _ => &[],
    }
}

/// Normalises and validates a plugin's `config`. Errors come back shaped as
/// Kong's errors for the whole plugin entity: field errors under `config`,
/// entity-check messages under the top-level `@entity`.
pub fn validate_config(name: &str, config: &Value, mode: Input) -> Result<Value, FieldErrors> {
    let Some(record) = config_schema(name) else {
        return Err(schema::field_error(
            "name",
            format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property"),
        ));
    };
    let mut config = match config {
        Value::Null => Value::Object(Map::new()),
        Value::Object(_) => config.clone(),
        _ => return Err(schema::field_error("config", "expected a record")),
    };
    normalize(name, &mut config)
        .and_then(|()| schema::validate(record, &config, mode))
        .map_err(lift)
}

/// Moves the config record's `@entity` list up to the plugin level, where
/// Kong's `entity_checks` report.
fn lift(mut config_errors: FieldErrors) -> FieldErrors {
    let mut out = Map::new();
    if let Some(entity) = config_errors.remove("@entity") {
        out.insert("@entity".into(), entity);
    }
    if !config_errors.is_empty() {
        out.insert("config".into(), Value::Object(config_errors));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_name_has_a_schema_and_protocols() {
        // What the admin API admits, gantry-proxy runs.
        assert_eq!(names(), gantry_shared::proto::plugins::GANTRY_PROXY_RUNS);
        for n in names() {
            let s = config_schema(n).unwrap_or_else(|| panic!("no schema for {n}"));
            assert!(!s.fields.is_empty(), "{n}");
            assert!(!default_protocols(n).is_empty());
            for p in default_protocols(n) {
                assert!(supported_protocols(n).contains(&p), "{n}: {p}");
            }
        }
        assert!(config_schema("nope").is_none());
        assert_eq!(
            default_protocols("cors"),
            ["grpc", "grpcs", "http", "https"]
        );
        assert_eq!(
            default_protocols("ip-restriction"),
            ["http", "https", "tcp", "tls", "grpc", "grpcs"]
        );
        assert!(!allows_consumer("key-auth") && allows_consumer("rate-limiting"));
    }

    #[test]
    fn schemas_are_built_once() {
        assert!(std::ptr::eq(
            config_schema("jwt").unwrap(),
            config_schema("jwt").unwrap()
        ));
    }

    #[test]
    fn validate_config_lifts_entity_checks_like_kong() {
        let e = validate_config("rate-limiting", &json!({}), Input::Json).unwrap_err();
        assert_eq!(
            e["@entity"][0],
            "at least one of these fields must be non-empty: 'config.second', 'config.minute', \
             'config.hour', 'config.day', 'config.month', 'config.year'"
        );
        assert!(e.get("config").is_none());
        let e = validate_config(
            "rate-limiting",
            &json!({"minute": 5, "limit_by": "header"}),
            Input::Json,
        )
        .unwrap_err();
        assert_eq!(e["config"]["header_name"], "required field missing");
        assert_eq!(
            e["@entity"][0],
            "failed conditional validation given value of field 'config.limit_by'"
        );
        let e = validate_config("nope", &json!({}), Input::Json).unwrap_err();
        assert!(
            e["name"]
                .as_str()
                .unwrap()
                .starts_with("plugin 'nope' not enabled")
        );
    }

    #[test]
    fn null_config_means_defaults() {
        let v = validate_config("correlation-id", &Value::Null, Input::Json).unwrap();
        assert_eq!(v["header_name"], "Kong-Request-ID");
        let e = validate_config("correlation-id", &json!("x"), Input::Json).unwrap_err();
        assert_eq!(e["config"], "expected a record");
    }
}
