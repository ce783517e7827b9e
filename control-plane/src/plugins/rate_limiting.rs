//! `rate-limiting`: Kong 3.x's schema (with the shared `redis` record and its
//! deprecated `redis_*` shorthands), plus Gantry's Redis Cluster nodes,
//! `consumer-group` limiting and `window_type`.

use super::common::{
    at_least_one_of, conditional, entity_errors, gt_zero, header_name, host, is_nonempty, path, sni,
};
use crate::schema::{Field, FieldErrors, Record, field_error, merge_errors};
use serde_json::{Map, Value, json};

const PERIODS: &[&str] = &["second", "minute", "hour", "day", "month", "year"];

pub fn schema() -> Record {
    let mut r = Record::new();
    for p in PERIODS {
        r = r.field(p, Field::number().custom(gt_zero));
    }
    r.field(
        "limit_by",
        Field::string()
            .default(json!("consumer"))
            .one_of(&["consumer", "credential", "ip", "service", "header", "path", "consumer-group"])
            .describe("What requests are counted by. `consumer-group` is from Kong Enterprise."),
    )
    .field("header_name", Field::string().custom(header_name).describe("Header counted by when limit_by is header."))
    .field("path", Field::string().custom(path).describe("Path counted by when limit_by is path."))
    .field("policy", Field::string().default(json!("local")).one_of(&["local", "cluster", "redis"]))
    .field("fault_tolerant", Field::boolean().required().default(json!(true)))
    .field("redis", Field::record(redis()))
    .field("hide_client_headers", Field::boolean().required().default(json!(false)))
    .field("error_code", Field::number().default(json!(429)).custom(gt_zero))
    .field("error_message", Field::string().default(json!("API rate limit exceeded")))
    .field(
        "sync_rate",
        Field::number()
            .required()
            .default(json!(-1))
            .describe("Seconds between counter syncs to Redis; -1 counts synchronously."),
    )
    .field(
        "window_type",
        Field::string().default(json!("sliding")).one_of(&["sliding", "fixed"]).describe(
            "Gantry extension: `fixed` counts per calendar window as Kong does; `sliding` weights the previous window.",
        ),
    )
    .check(periods_and_sync_rate)
    .check(|c| entity_errors(at_least_one_of(c, PERIODS).into_iter().collect()))
    .check(redis_when_policy_redis)
    .check(limit_by_needs_its_field)
}

/// Kong's `kong.tools.redis.schema`, plus Redis Cluster as in Kong Enterprise.
fn redis() -> Record {
    let node = Record::new()
        .field(
            "ip",
            Field::string()
                .required()
                .default(json!("127.0.0.1"))
                .custom(host)
                .describe("Node host or IP."),
        )
        .field(
            "port",
            Field::integer().default(json!(6379)).between(0.0, 65535.0),
        );
    Record::new()
        .field("host", Field::string().custom(host))
        .field("port", Field::integer().default(json!(6379)).between(0.0, 65535.0))
        .field("timeout", Field::integer().default(json!(2000)).between(0.0, 2_147_483_646.0))
        .field("username", Field::string().referenceable())
        .field("password", Field::string().secret().referenceable())
        .field("database", Field::integer().default(json!(0)))
        .field("ssl", Field::boolean().default(json!(false)))
        .field("ssl_verify", Field::boolean().default(json!(false)))
        .field("server_name", Field::string().custom(sni))
        .field(
            "cluster_nodes",
            Field::array(Field::record(node))
                .len_min(1)
                .describe("Gantry extension (as in Kong Enterprise): Redis Cluster seed nodes; use instead of `host`."),
        )
        .field(
            "cluster_max_redirections",
            Field::integer()
                .default(json!(5))
                .between(1.0, 64.0)
                .describe("MOVED/ASK redirections followed in Redis Cluster mode."),
        )
}

fn num(c: &Map<String, Value>, k: &str) -> Option<f64> {
    c.get(k).and_then(Value::as_f64)
}

/// Kong's `custom_validator`: limits never shrink as the window grows, and
/// `sync_rate` is only for the redis policy.
fn periods_and_sync_rate(c: &Map<String, Value>) -> Result<(), FieldErrors> {
    for (i, lower) in PERIODS.iter().enumerate() {
        let Some(v1) = num(c, lower) else { continue };
        for upper in &PERIODS[i + 1..] {
            if let Some(v2) = num(c, upper).filter(|v2| *v2 < v1) {
                return entity_errors(vec![format!(
                    "The limit for {upper}({v2:.1}) cannot be lower than the limit for {lower}({v1:.1})"
                )]);
            }
        }
    }
    let sync = num(c, "sync_rate").unwrap_or(-1.0);
    let redis = c.get("policy").is_some_and(|p| p == "redis");
    if !redis && sync != -1.0 {
        return entity_errors(vec![
            "sync_rate can only be used with the redis policy".into(),
        ]);
    }
    if redis && sync != -1.0 && sync < 0.02 {
        return entity_errors(vec![
            "sync_rate must be greater than 0.02, or -1 to disable".into(),
        ]);
    }
    Ok(())
}

/// Kong's conditionals on `policy = redis` (host, port, timeout required);
/// Gantry accepts `cluster_nodes` in place of `host`, but not both.
fn redis_when_policy_redis(c: &Map<String, Value>) -> Result<(), FieldErrors> {
    let empty = Map::new();
    let r = c.get("redis").and_then(Value::as_object).unwrap_or(&empty);
    let (has_host, has_nodes) = (
        is_nonempty(r.get("host")),
        is_nonempty(r.get("cluster_nodes")),
    );
    if has_host && has_nodes {
        return entity_errors(vec![
            "only one or none of these fields must be set: 'config.redis.host', 'config.redis.cluster_nodes'".into(),
        ]);
    }
    if c.get("policy").is_none_or(|p| p != "redis") {
        return Ok(());
    }
    let mut missing = Map::new();
    if !has_host && !has_nodes {
        missing.insert("host".into(), json!("required field missing"));
    }
    for k in ["port", "timeout"] {
        if r.get(k).is_none_or(Value::is_null) {
            missing.insert(k.into(), json!("required field missing"));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(conditional(
        "policy",
        Map::from_iter([("redis".to_string(), Value::Object(missing))]),
    ))
}

/// Kong's conditionals: `limit_by = header|path` needs `header_name|path`.
fn limit_by_needs_its_field(c: &Map<String, Value>) -> Result<(), FieldErrors> {
    let field = match c.get("limit_by").and_then(Value::as_str) {
        Some("header") => "header_name",
        Some("path") => "path",
        _ => return Ok(()),
    };
    if c.get(field).is_none_or(Value::is_null) {
        return Err(conditional(
            "limit_by",
            field_error(field, "required field missing"),
        ));
    }
    Ok(())
}

/// Kong's deprecated flat fields and where Kong 3.x moved them.
pub(super) const SHORTHANDS: &[(&str, &str)] = &[
    ("redis_host", "host"),
    ("redis_port", "port"),
    ("redis_password", "password"),
    ("redis_username", "username"),
    ("redis_ssl", "ssl"),
    ("redis_ssl_verify", "ssl_verify"),
    ("redis_server_name", "server_name"),
    ("redis_timeout", "timeout"),
    ("redis_database", "database"),
];

/// Moves `redis_*` into `redis.*`. As in Kong, the canonical field wins when
/// both are given and a differing value is an error on the shorthand.
pub fn normalize(config: &mut Value) -> Result<(), FieldErrors> {
    let Value::Object(cfg) = config else {
        return Ok(());
    };
    let mut errors = Map::new();
    for (old, new) in SHORTHANDS {
        let Some(value) = cfg.remove(*old) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let redis = cfg.entry("redis").or_insert_with(|| json!({}));
        if redis.is_null() {
            *redis = json!({});
        }
        let Value::Object(redis) = redis else {
            continue;
        }; // the schema reports "expected a record"
        match redis.get(*new) {
            Some(cur) if !cur.is_null() && plain(cur) != plain(&value) => {
                let msg = format!(
                    "both deprecated and new field are used but their values mismatch: {old} = {} vs redis.{new} = {}",
                    plain(&value),
                    plain(cur)
                );
                merge_errors(&mut errors, field_error(old, msg));
            }
            Some(cur) if !cur.is_null() => {}
            _ => {
                redis.insert((*new).to_string(), value);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Lua's `tostring`, near enough: strings unquoted, so form input compares
/// equal to JSON input.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::schema::{Input, validate};
    use serde_json::{Value, json};

    fn v(cfg: Value) -> Result<Value, crate::schema::FieldErrors> {
        validate(&super::schema(), &cfg, Input::Json)
    }

    #[test]
    fn minimal_config_is_filled() {
        let c = v(json!({"minute": 5})).unwrap();
        assert_eq!(
            c,
            json!({
                "second": null, "minute": 5, "hour": null, "day": null, "month": null, "year": null,
                "limit_by": "consumer", "header_name": null, "path": null, "policy": "local",
                "fault_tolerant": true,
                "redis": {"host": null, "port": 6379, "timeout": 2000, "username": null, "password": null,
                          "database": 0, "ssl": false, "ssl_verify": false, "server_name": null,
                          "cluster_nodes": null, "cluster_max_redirections": 5},
                "hide_client_headers": false, "error_code": 429,
                "error_message": "API rate limit exceeded", "sync_rate": -1, "window_type": "sliding"
            })
        );
    }

    #[test]
    fn kong_checks() {
        let e = v(json!({})).unwrap_err();
        assert!(
            e["@entity"][0]
                .as_str()
                .unwrap()
                .starts_with("at least one of these fields must be non-empty: 'config.second'")
        );
        let e = v(json!({"minute": 0})).unwrap_err();
        assert_eq!(e["minute"], "value must be greater than 0");
        let e = v(json!({"second": 20, "hour": 10})).unwrap_err();
        assert_eq!(
            e["@entity"][0],
            "The limit for hour(10.0) cannot be lower than the limit for second(20.0)"
        );
        let e =
            v(json!({"second": 10, "minute": 20, "hour": 30, "day": 40, "month": 60, "year": 50}))
                .unwrap_err();
        assert_eq!(
            e["@entity"][0],
            "The limit for year(50.0) cannot be lower than the limit for month(60.0)"
        );
        assert!(
            v(json!({"second": 10, "limit_by": "header", "header_name": "X-App-Version"})).is_ok()
        );
        let e = v(json!({"second": 10, "limit_by": "header"})).unwrap_err();
        assert_eq!(e["header_name"], "required field missing");
        let e = v(json!({"second": 10, "limit_by": "path"})).unwrap_err();
        assert_eq!(e["path"], "required field missing");
        assert_eq!(
            e["@entity"][0],
            "failed conditional validation given value of field 'config.limit_by'"
        );
        let e = v(json!({"second": 10, "limit_by": "path", "path": "nope"})).unwrap_err();
        assert_eq!(e["path"], "should start with: /");
        let e = v(json!({"second": 10, "policy": "redis", "redis": {"port": 6379}})).unwrap_err();
        assert_eq!(e["redis"]["host"], "required field missing");
        let e = v(json!({"second": 10, "sync_rate": 1})).unwrap_err();
        assert_eq!(
            e["@entity"][0],
            "sync_rate can only be used with the redis policy"
        );
        let e =
            v(json!({"second": 10, "policy": "redis", "redis": {"host": "r"}, "sync_rate": 0.01}))
                .unwrap_err();
        assert_eq!(
            e["@entity"][0],
            "sync_rate must be greater than 0.02, or -1 to disable"
        );
        let e = v(json!({"second": 1, "policy": "memcached"})).unwrap_err();
        assert_eq!(e["policy"], "expected one of: local, cluster, redis");
        let e = v(json!({"second": 1, "redis": {"host": "r:6379"}})).unwrap_err();
        assert_eq!(e["redis"]["host"], "must not have a port");
    }

    #[test]
    fn redis_cluster() {
        let c = v(json!({"second": 1, "policy": "redis", "redis": {"cluster_nodes": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2", "port": 7000}]}}))
            .unwrap();
        assert_eq!(
            c["redis"]["cluster_nodes"],
            json!([{"ip": "10.0.0.1", "port": 6379}, {"ip": "10.0.0.2", "port": 7000}])
        );
        let e =
            v(json!({"second": 1, "redis": {"host": "r", "cluster_nodes": [{"ip": "10.0.0.1"}]}}))
                .unwrap_err();
        assert!(
            e["@entity"][0]
                .as_str()
                .unwrap()
                .starts_with("only one or none of these fields must be set")
        );
    }

    #[test]
    fn password_is_secret() {
        let s = super::schema();
        let mut c = validate(
            &s,
            &json!({"second": 1, "redis": {"host": "r", "password": "hunter2"}}),
            Input::Json,
        )
        .unwrap();
        crate::schema::redact(&s, &mut c);
        assert_eq!(c["redis"]["password"], crate::schema::REDACTED);
    }

    #[test]
    fn form_coercion() {
        let c = validate(
            &super::schema(),
            &json!({"minute": "100", "redis": {"port": "6380"}}),
            Input::Form,
        )
        .unwrap();
        assert_eq!(c["minute"].as_f64(), Some(100.0));
        assert_eq!(c["redis"]["port"], 6380);
        let e = validate(&super::schema(), &json!({"minute": "lots"}), Input::Form).unwrap_err();
        assert_eq!(e["minute"], "expected a number");
    }

    #[test]
    fn normalize_moves_shorthands() {
        let mut cfg = json!({"second": 1, "policy": "redis", "redis_host": "r.local", "redis_port": 6380,
                             "redis_password": "pw", "redis_database": 2, "redis_timeout": 100, "redis_ssl": true});
        super::normalize(&mut cfg).unwrap();
        assert_eq!(
            cfg,
            json!({"second": 1, "policy": "redis",
            "redis": {"host": "r.local", "port": 6380, "password": "pw", "ssl": true, "timeout": 100, "database": 2}})
        );
        let c = v(cfg).unwrap();
        assert_eq!(c["redis"]["port"], 6380);

        // The canonical field wins; equal values are fine, differing ones are not.
        let mut cfg = json!({"redis": {"host": "a"}, "redis_host": "a", "redis_port": null});
        super::normalize(&mut cfg).unwrap();
        assert_eq!(cfg, json!({"redis": {"host": "a"}}));
        let mut cfg = json!({"redis": {"host": "a"}, "redis_host": "b"});
        let e = super::normalize(&mut cfg).unwrap_err();
        assert_eq!(
            e["redis_host"],
            "both deprecated and new field are used but their values mismatch: redis_host = b vs redis.host = a"
        );
        // Form input: "6379" and 6379 agree.
        let mut cfg = json!({"redis": {"port": "6379"}, "redis_port": "6379"});
        assert!(super::normalize(&mut cfg).is_ok());
    }
}
