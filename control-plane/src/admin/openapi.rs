//! The OpenAPI document of the admin API, generated from the router table
//! and the entity and plugin schemas, so it describes exactly what is
//! served: every status an operation answers, the body of each, and the
//! constraints the validators enforce on what is sent (lengths, counts,
//! ranges, enums, patterns, record-level checks). What a schema cannot say
//! (a reference names an existing entity, a regex compiles, a PEM parses,
//! a plugin config's cross-field checks) is said in the field's
//! description; docs/admin-api.md lists it.

mod rbac;

use crate::entities::{ALL, EntityDef, checks};
use crate::schema::{Field, INT_MAX, ITEMS_MAX, Record, STRING_MAX, Ty};
use axum::Json;
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

static DOC: LazyLock<Value> = LazyLock::new(build);

pub async fn serve() -> Json<Value> {
    Json(DOC.clone())
}

pub fn document() -> &'static Value {
    &DOC
}

/// Strings are never NUL (Postgres cannot store it); a pattern of its own
/// says so for a field that has none.
const NO_NUL: &str = "^[^\\x00]*$";

/// `schema` that also admits `null`.
fn nullable(mut s: Value) -> Value {
    if let Some(e) = s.get_mut("enum").and_then(Value::as_array_mut) {
        e.push(Value::Null);
    }
    match s.get("type").cloned() {
        Some(Value::String(t)) => s["type"] = json!([t, "null"]),
        Some(_) => {}
        None if s.get("anyOf").is_some() => {
            let any = s["anyOf"].as_array_mut().expect("anyOf is an array");
            any.push(json!({ "type": "null" }));
        }
        None => {}
    }
    s
}

/// An element of an array or map: never null.
fn element(f: &Field) -> Value {
    match f.ty {
        Ty::Json => {
            json!({ "type": ["boolean", "integer", "number", "string", "array", "object"] })
        }
        _ => input(f),
    }
}

/// What a request may send for one field (its nullability aside).
fn input(f: &Field) -> Value {
    let mut s = match &f.ty {
        Ty::String => {
            let mut s = json!({
                "type": "string",
                "minLength": f.len_min.unwrap_or(1),
                "maxLength": f.len_max.unwrap_or(STRING_MAX),
                "pattern": f.pattern.unwrap_or(NO_NUL),
            });
            if f.one_of.is_some() {
                s.as_object_mut().map(|o| o.remove("pattern"));
            }
            s
        }
        Ty::Integer => json!({ "type": "integer", "minimum": -INT_MAX, "maximum": INT_MAX }),
        Ty::Number => json!({ "type": "number" }),
        Ty::Boolean => json!({ "type": "boolean" }),
        Ty::Array(e) | Ty::Set(e) => {
            let mut s = json!({
                "type": "array",
                "items": element(e),
                "maxItems": f.len_max.unwrap_or(ITEMS_MAX),
            });
            if let Some(n) = f.len_min {
                s["minItems"] = json!(n);
            }
            if matches!(f.ty, Ty::Set(_)) {
                s["uniqueItems"] = json!(true);
            }
            s
        }
        Ty::Map(v) => {
            let mut s = json!({
                "type": "object",
                "additionalProperties": element(v),
                "maxProperties": f.len_max.unwrap_or(ITEMS_MAX),
            });
            if let Some(p) = f.keys {
                s["propertyNames"] = json!({ "pattern": p });
            }
            s
        }
        Ty::Record(r) => record_input(r, &[]),
        Ty::Foreign(kind) => reference(kind),
        Ty::Json => json!({}),
    };
    if let Some(o) = s.as_object_mut() {
        if let Some(d) = &f.default {
            o.insert("default".into(), d.clone());
        }
        if let Some(one_of) = &f.one_of {
            o.insert("enum".into(), Value::Array(one_of.clone()));
        }
        if let Some((lo, hi)) = f.between {
            o.insert("minimum".into(), json!(lo));
            o.insert("maximum".into(), json!(hi));
        }
        let mut desc = f.description.to_string();
        if f.custom.is_some() && f.pattern.is_none() {
            let more = "Further checked by the server beyond what this schema says.";
            desc = if desc.is_empty() {
                more.to_string()
            } else {
                format!("{desc}. {more}")
            };
        }
        if !desc.is_empty() {
            o.insert("description".into(), json!(desc));
        }
        if f.secret {
            o.insert("writeOnly".into(), json!(true));
        }
    }
    s
}

/// A reference to another entity: `{"id": ...}` (or its endpoint key as
/// `name`/`username`), or the bare id or key.
fn reference(kind: &str) -> Value {
    let key = || json!({ "type": "string", "pattern": NO_NUL });
    json!({
        "description": format!(
            "A reference to an existing {kind} entity, by id or endpoint key. One that names \
             nothing is refused with Kong's 400 foreign key violation (code 4)."
        ),
        "anyOf": [
            key(),
            {
                "type": "object",
                "properties": { "id": key(), "name": key(), "username": key() },
                "additionalProperties": false,
                "minProperties": 1,
                "maxProperties": 1,
            },
        ],
    })
}

/// A record as requests send it; `optional` fields are not required even
/// if the schema requires them (the URL supplies them).
fn record_input(r: &Record, optional: &[&str]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (name, f) in &r.fields {
        let s = input(f);
        if f.required && !optional.contains(name) {
            required.push(json!(name));
        }
        // Null unsets an optional field; a required one cannot be unset.
        let s = if f.required { s } else { nullable(s) };
        props.insert((*name).to_string(), s);
    }
    let mut s = json!({ "type": "object", "additionalProperties": false, "properties": props });
    if !required.is_empty() {
        s["required"] = Value::Array(required);
    }
    s
}

/// What a response shows for one field: its type, null where unset.
fn output(f: &Field) -> Value {
    let s = match &f.ty {
        Ty::String => json!({ "type": "string" }),
        Ty::Integer => json!({ "type": "integer" }),
        Ty::Number => json!({ "type": "number" }),
        Ty::Boolean => json!({ "type": "boolean" }),
        Ty::Array(e) | Ty::Set(e) => json!({ "type": "array", "items": output(e) }),
        Ty::Map(v) => json!({ "type": "object", "additionalProperties": output(v) }),
        Ty::Record(r) => record_output(r),
        Ty::Foreign(_) => json!({
            "type": "object",
            "properties": { "id": { "type": "string" } },
            "required": ["id"],
        }),
        Ty::Json => return json!({}),
    };
    nullable(s)
}

fn record_output(r: &Record) -> Value {
    let props: Map<String, Value> = r
        .fields
        .iter()
        .map(|(n, f)| ((*n).to_string(), output(f)))
        .collect();
    json!({ "type": "object", "additionalProperties": false, "properties": props })
}

/// Which write a request body is for.
#[derive(Clone, Copy, PartialEq)]
enum Write {
    Post,
    Put,
    Patch,
}

fn strings(v: &[&str]) -> Value {
    json!(v)
}

/// A record-level check as a JSON Schema, where one can say it.
fn entity_checks(d: &EntityDef, w: Write, optional: &[&str]) -> Vec<Value> {
    if w == Write::Patch {
        return Vec::new();
    }
    let set = |f: &str| json!({ "required": [f], "properties": { f: { "type": "string" } } });
    let non_empty = |f: &str, t: &str| {
        let min = if t == "object" {
            "minProperties"
        } else {
            "minItems"
        };
        json!({ "required": [f], "properties": { f: { "type": t, min: 1 } } })
    };
    match d.name {
        "consumers" if !optional.contains(&"username") => {
            vec![json!({ "anyOf": [set("username"), set("custom_id")] })]
        }
        "services" => {
            vec![
                json!({ "anyOf": [set("host"), set("url")] }),
                json!({ "anyOf": [
                    { "properties": { "protocol": { "enum": ["http", "https"] } } },
                    { "properties": { "path": { "type": "null" } } },
                ] }),
            ]
        }
        "routes" => vec![
            json!({ "anyOf": [
                non_empty("methods", "array"),
                non_empty("hosts", "array"),
                non_empty("paths", "array"),
                non_empty("headers", "object"),
                non_empty("snis", "array"),
                { "required": ["protocols"], "properties": { "protocols": {
                    "type": "array", "items": { "enum": ["tcp", "tls", "tls_passthrough", "udp"] } } } },
                { "required": ["protocols"], "properties": { "protocols": { "type": "null" } } },
            ] }),
            json!({ "anyOf": [
                { "properties": { "snis": { "maxItems": 0 } } },
                { "properties": { "protocols": { "type": "array", "contains": {
                    "enum": ["https", "grpcs", "tls", "wss", "tls_passthrough"] } } } },
            ] }),
        ],
        "upstreams" => upstream_checks(),
        "jwt_secrets" => vec![json!({ "anyOf": [
            { "properties": { "algorithm": { "enum": ["HS256", "HS384", "HS512"] } } },
            { "required": ["rsa_public_key"], "properties": { "rsa_public_key": {
                "type": "string", "pattern": "-----BEGIN (RSA )?PUBLIC KEY-----" } } },
        ] })],
        "certificates" => vec![json!({ "anyOf": [
            { "required": ["cert_alt", "key_alt"],
              "properties": { "cert_alt": { "type": "string" }, "key_alt": { "type": "string" } } },
            { "properties": { "cert_alt": { "type": "null" }, "key_alt": { "type": "null" } } },
        ] })],
        "plugins" => vec![plugin_variants()],
        _ => Vec::new(),
    }
}

/// Kong's upstream hashing checks, as one list of what may go together:
/// each hashing mode needs its parameter, a fallback needs a primary, and
/// only header, query_arg and uri_capture may hash on the same thing twice.
fn upstream_checks() -> Vec<Value> {
    const MODES: [&str; 8] = [
        "none",
        "consumer",
        "ip",
        "header",
        "cookie",
        "path",
        "query_arg",
        "uri_capture",
    ];
    let param = |field: &str, mode: &str| -> Option<&'static str> {
        match (field, mode) {
            ("hash_on", "header") => Some("hash_on_header"),
            ("hash_on", "cookie") | ("hash_fallback", "cookie") => Some("hash_on_cookie"),
            ("hash_on", "query_arg") => Some("hash_on_query_arg"),
            ("hash_on", "uri_capture") => Some("hash_on_uri_capture"),
            ("hash_fallback", "header") => Some("hash_fallback_header"),
            ("hash_fallback", "query_arg") => Some("hash_fallback_query_arg"),
            ("hash_fallback", "uri_capture") => Some("hash_fallback_uri_capture"),
            _ => None,
        }
    };
    let unset = json!({ "enum": ["none", null] });
    let mut branches = vec![json!({ "properties": { "hash_on": unset, "hash_fallback": unset } })];
    for on in &MODES[1..] {
        for fb in MODES {
            if fb == *on && !matches!(fb, "header" | "query_arg" | "uri_capture") {
                continue;
            }
            let mut required = vec![json!("hash_on")];
            let mut props = Map::new();
            props.insert("hash_on".into(), json!({ "const": on }));
            if fb == "none" {
                props.insert("hash_fallback".into(), unset.clone());
            } else {
                props.insert("hash_fallback".into(), json!({ "const": fb }));
                required.push(json!("hash_fallback"));
            }
            for p in [param("hash_on", on), param("hash_fallback", fb)]
                .into_iter()
                .flatten()
            {
                props.insert(p.into(), json!({ "type": "string" }));
                if !required.contains(&json!(p)) {
                    required.push(json!(p));
                }
            }
            branches.push(json!({ "required": required, "properties": props }));
        }
    }
    vec![json!({ "anyOf": branches })]
}

/// A plugin is one of the known plugins, with that plugin's config,
/// protocols and scope.
fn plugin_variants() -> Value {
    let variants: Vec<Value> = crate::plugins::names()
        .iter()
        .map(|n| {
            let mut props = json!({
                "name": { "const": n },
                "config": { "anyOf": [
                    { "type": "null" },
                    { "$ref": format!("#/components/schemas/plugin-config-{n}") },
                ] },
                "protocols": { "type": ["array", "null"], "items": {
                    "enum": crate::plugins::supported_protocols(n) } },
            });
            if !crate::plugins::allows_consumer(n) {
                props["consumer"] = json!({ "type": "null" });
            }
            json!({ "properties": props })
        })
        .collect();
    json!({ "anyOf": variants })
}

/// The body schema of a write to `d`; `parent` is the field a nested URL
/// sets, `by_key` whether the URL names the entity by its endpoint key.
fn body_schema(d: &EntityDef, w: Write, parent: Option<&str>) -> (Value, bool) {
    let mut optional: Vec<&str> = parent.into_iter().collect();
    if w == Write::Put
        && let Some(k) = d.endpoint_key
    {
        // The key in the URL is the entity's (Kong's `upsert_by_<key>`).
        optional.push(k);
    }
    let mut s = if w == Write::Patch {
        let all: Vec<&str> = d.schema.fields.iter().map(|(n, _)| *n).collect();
        record_input(&d.schema, &all)
    } else {
        record_input(&d.schema, &optional)
    };
    if d.name == "services" {
        let mut url = input(
            &Field::string()
                .len_max(checks::HOST_MAX)
                .pattern(checks::URL)
                .describe(
                    "Shorthand for protocol, host, port and path (a path only for http and https)",
                ),
        );
        url.as_object_mut().map(|o| o.remove("default"));
        s["properties"]["url"] = nullable(url);
        if let Some(r) = s["required"].as_array_mut() {
            r.retain(|f| f != "host");
            if r.is_empty() {
                s.as_object_mut().map(|o| o.remove("required"));
            }
        }
    }
    if d.name == "plugins" {
        // Under a consumer, only the plugins that can be scoped to one.
        let names: Vec<&str> = crate::plugins::names()
            .iter()
            .copied()
            .filter(|n| parent != Some("consumer") || crate::plugins::allows_consumer(n))
            .collect();
        s["properties"]["name"]["enum"] = strings(&names);
        s["properties"]["config"] = json!({
            "description": "The plugin's config: see components/schemas/plugin-config-<name>. \
                Its cross-field checks (Kong's entity checks) are not in the document.",
            "type": ["object", "null"],
        });
    }
    let checks = entity_checks(d, w, &optional);
    if !checks.is_empty() {
        s["allOf"] = Value::Array(checks);
    }
    let body_required = s["required"].as_array().is_some_and(|r| !r.is_empty())
        || s["allOf"].as_array().is_some_and(|a| {
            a.iter().any(|c| {
                c["anyOf"]
                    .as_array()
                    .is_some_and(|b| b.iter().all(|x| x.get("required").is_some()))
            })
        });
    (s, body_required)
}

fn error_ref() -> Value {
    json!({ "$ref": "#/components/responses/Error" })
}

fn revision_header() -> Value {
    json!({
        "x-gantry-revision": {
            "description": "The configuration revision the write committed",
            "required": true,
            "schema": { "type": "integer" },
        }
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn written(description: &str, schema: Value) -> Value {
    let mut r = json!({ "description": description, "headers": revision_header() });
    if !schema.is_null() {
        r["content"] = json!({ "application/json": { "schema": schema } });
    }
    r
}

fn entity_ref(d: &EntityDef) -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", d.name) })
}

fn page_of(item: Value) -> Value {
    json!({
        "type": "object",
        "required": ["data", "next"],
        "properties": {
            "data": { "type": "array", "items": item },
            "next": { "type": ["string", "null"] },
            "offset": { "type": ["string", "null"] },
        },
        "additionalProperties": false,
    })
}

fn path_param(name: &str, schema: Value, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": schema, "description": description })
}

/// An entity named in a URL: by id, or by its endpoint key.
fn entity_param(name: &str, d: &EntityDef) -> Value {
    match d.endpoint_key.and_then(|k| d.schema.get(k).map(|f| (k, f))) {
        Some((k, f)) => {
            let mut s = input(f);
            for drop in ["default", "description", "writeOnly"] {
                s.as_object_mut().map(|o| o.remove(drop));
            }
            path_param(
                name,
                s,
                &format!(
                    "The {} entity's id (a UUID) or its {k}; a PUT by id must carry the {k} in its body when it creates",
                    d.name
                ),
            )
        }
        None => path_param(
            name,
            json!({ "type": "string", "pattern": checks::UUID }),
            &format!("The {} entity's id (a UUID)", d.name),
        ),
    }
}

/// `size` and `offset` on a list; `tags` on entity lists.
fn list_params(offset_pattern: &str, tags: bool) -> Vec<Value> {
    let mut p = vec![
        json!({ "name": "size", "in": "query", "required": false,
                "schema": { "type": "integer", "minimum": 1, "maximum": super::MAX_PAGE, "default": super::DEFAULT_PAGE } }),
        json!({ "name": "offset", "in": "query", "required": false,
                "description": "The opaque `offset` of the previous page",
                "schema": { "type": "string", "pattern": offset_pattern } }),
    ];
    if tags {
        p.push(json!({ "name": "tags", "in": "query", "required": false,
            "description": "`a,b`: entities with both tags; `a/b`: with either",
            "schema": { "type": "string", "pattern": TAGS_QUERY } }));
    }
    p
}

/// Tags separated by `,` or by `/`, not both.
const TAGS_QUERY: &str = "^(?:[^/\\x00]*|[^,\\x00]*)$";

/// Base64url without padding, canonical (unused bits zero): what an opaque
/// `offset` of an entity list decodes from.
const B64: &str =
    "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$";

/// Base64url without padding of 1 to 18 decimal digits: the `offset` of a
/// list newest first (revisions, audit), a number.
const B64_DIGITS: &str = concat!(
    "^(?:(?:[MN][DTjz]|O[DT])[AEIMQUYcgk][w-z0-5]){0,5}",
    "(?:(?:[MN][DTjz]|O[DT])[AEIMQUYcgk][w-z0-5]",
    "|(?:[MN][DTjz]|O[DT])[AEIMQUYcgk]",
    "|[MN][AQgw]|O[AQ])$"
);

fn op(summary: String, params: Vec<Value>, responses: Value) -> Value {
    json!({ "summary": summary, "parameters": params, "responses": responses })
}

fn with_body(mut o: Value, schema: Value, required: bool) -> Value {
    o["requestBody"] = json!({
        "required": required,
        "content": { "application/json": { "schema": schema } },
    });
    o["responses"]["413"] = error_ref();
    o["responses"]["415"] = error_ref();
    o
}

/// Every response but 2xx shares Kong's error shape. Any operation may
/// answer 401 (no valid token, once one is configured) and 403.
fn errors(codes: &[u16]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("401".into(), error_ref());
    m.insert("403".into(), error_ref());
    for c in codes {
        m.insert(c.to_string(), error_ref());
    }
    m
}

fn responses(ok: &[(&str, Value)], errs: &[u16]) -> Value {
    let mut m = errors(errs);
    for (code, r) in ok {
        m.insert((*code).to_string(), r.clone());
    }
    Value::Object(m)
}

fn entity_ops(
    d: &EntityDef,
    item: bool,
    parent: Option<(&EntityDef, &str)>,
    methods: &[&str],
) -> Map<String, Value> {
    let mut params = Vec::new();
    if let Some((p, _)) = parent {
        params.push(entity_param("parent_id", p));
    }
    if item {
        params.push(entity_param("id", d));
    }
    let fk = parent.map(|(_, f)| f);
    let nested_404: &[u16] = if parent.is_some() { &[404] } else { &[] };
    let mut out = Map::new();
    for m in methods {
        let summary = match parent {
            Some((p, _)) => format!("{m} {} of a {}", d.name, p.name),
            None => format!("{m} {}", d.name),
        };
        let o = match (*m, item) {
            ("GET", false) => {
                let mut ps = params.clone();
                ps.extend(list_params(B64, true));
                let mut errs = vec![400];
                errs.extend_from_slice(nested_404);
                op(
                    summary,
                    ps,
                    responses(
                        &[("200", json_response("A page", page_of(entity_ref(d))))],
                        &errs,
                    ),
                )
            }
            ("POST", false) => {
                let (s, req) = body_schema(d, Write::Post, fk);
                let mut errs = vec![400, 409];
                errs.extend_from_slice(nested_404);
                with_body(
                    op(
                        summary,
                        params.clone(),
                        responses(&[("201", written("Created", entity_ref(d)))], &errs),
                    ),
                    s,
                    req,
                )
            }
            ("GET", true) => op(
                summary,
                params.clone(),
                responses(
                    &[("200", json_response("The entity", entity_ref(d)))],
                    &[404],
                ),
            ),
            ("PUT", true) => {
                let (s, req) = body_schema(d, Write::Put, fk);
                with_body(
                    op(
                        summary,
                        params.clone(),
                        responses(
                            &[
                                ("200", written("Replaced", entity_ref(d))),
                                ("201", written("Created", entity_ref(d))),
                            ],
                            &[400, 404, 409],
                        ),
                    ),
                    s,
                    req,
                )
            }
            ("PATCH", true) => {
                let (s, _) = body_schema(d, Write::Patch, fk);
                with_body(
                    op(
                        summary,
                        params.clone(),
                        responses(
                            &[("200", written("Updated", entity_ref(d)))],
                            &[400, 404, 409],
                        ),
                    ),
                    s,
                    false,
                )
            }
            ("DELETE", true) => op(
                summary,
                params.clone(),
                responses(
                    &[(
                        "204",
                        written("Deleted, or there was nothing to delete", Value::Null),
                    )],
                    &[400, 404],
                ),
            ),
            _ => continue,
        };
        out.insert(m.to_ascii_lowercase(), o);
    }
    out
}

/// Operations of the paths that are not entity collections.
fn other_op(path: &str, method: &str) -> Value {
    if let Some(o) = rbac::op_of(path, method) {
        return o;
    }
    let any = json!({});
    let obj = json!({ "type": "object" });
    let summary = format!("{method} {path}");
    match (path, method) {
        ("/", _) => op(
            summary,
            vec![],
            responses(
                &[("200", json_response("What this control plane is", obj))],
                &[],
            ),
        ),
        ("/status", _) => op(
            summary,
            vec![],
            responses(
                &[(
                    "200",
                    json_response("Health of the store and the feed", obj),
                )],
                &[],
            ),
        ),
        ("/status/ready", _) => op(
            summary,
            vec![],
            responses(
                &[
                    ("200", json_response("Ready", obj.clone())),
                    ("503", json_response("The store does not answer", obj)),
                ],
                &[],
            ),
        ),
        ("/metrics", _) => op(
            summary,
            vec![],
            responses(
                &[(
                    "200",
                    json!({ "description": "gantry-cp's metrics, Prometheus' text format",
                            "content": { "text/plain": { "schema": { "type": "string" } } } }),
                )],
                &[],
            ),
        ),
        ("/openapi.json", _) => op(
            summary,
            vec![],
            responses(&[("200", json_response("This document", obj))], &[]),
        ),
        ("/config", "GET") => op(
            summary,
            vec![],
            responses(
                &[(
                    "200",
                    json!({
                        "description": "The configuration as a Kong 3.0 declarative document, \
                            secrets sealed: `{\"config\": \"<yaml>\"}`, or the YAML itself with \
                            `Accept: application/yaml`, or the document as JSON with `Accept: application/json`",
                        "content": {
                            "application/json": { "schema": obj },
                            "application/yaml": { "schema": { "type": "string" } },
                        },
                    }),
                )],
                &[400],
            ),
        ),
        ("/config" | "/config/validate", "POST") => {
            let ok = if path == "/config" {
                (
                    "201",
                    written(
                        "Imported as one revision",
                        json!({ "type": "object", "required": ["revision", "changes"], "properties": {
                            "revision": { "type": "integer" }, "changes": { "type": "integer" } } }),
                    ),
                )
            } else {
                (
                    "200",
                    json_response(
                        "Valid; nothing stored",
                        json!({ "type": "object", "required": ["valid", "changes"], "properties": {
                            "valid": { "type": "boolean" }, "changes": { "type": "integer" } } }),
                    ),
                )
            };
            with_body(
                op(summary, vec![], responses(&[ok], &[400])),
                json!({
                    "type": "object",
                    "anyOf": [
                        { "required": ["_format_version"], "properties": { "_format_version": { "const": "3.0" } } },
                        { "required": ["config"], "properties": { "config": { "type": ["string", "object"] } } },
                    ],
                    "description": "A Kong declarative document (`_format_version: \"3.0\"`), or Kong's \
                        `{\"config\": <document or its YAML>}` wrapper. The body may also be YAML, \
                        whatever its content type. The entities in it are checked as their own \
                        schemas say, and their references to each other must resolve within it.",
                }),
                true,
            )
        }
        ("/config/revisions" | "/audit", _) => op(
            summary,
            list_params(B64_DIGITS, false),
            responses(
                &[("200", json_response("A page, newest first", page_of(obj)))],
                &[400],
            ),
        ),
        ("/config/revisions/{rev}", _) => op(
            summary,
            vec![path_param(
                "rev",
                json!({ "type": "integer", "minimum": -INT_MAX, "maximum": INT_MAX }),
                "A revision number",
            )],
            responses(
                &[(
                    "200",
                    json!({
                        "description": "The revision and the configuration at it (YAML with `Accept: application/yaml`)",
                        "content": {
                            "application/json": { "schema": obj },
                            "application/yaml": { "schema": { "type": "string" } },
                        },
                    }),
                )],
                &[400, 404],
            ),
        ),
        ("/config/diff", _) => {
            let rev = |n: &str| {
                json!({ "name": n, "in": "query", "required": false,
                        "schema": { "type": "integer", "minimum": -INT_MAX, "maximum": INT_MAX } })
            };
            op(
                summary,
                vec![rev("from"), rev("to")],
                responses(
                    &[(
                        "200",
                        json_response(
                            "What changed from one revision to another",
                            json!({ "type": "object", "required": ["from", "to", "changes"], "properties": {
                                "from": { "type": "integer" }, "to": { "type": "integer" },
                                "changes": { "type": "array", "items": obj } } }),
                        ),
                    )],
                    &[400, 404],
                ),
            )
        }
        ("/config/rollback", _) => with_body(
            op(
                summary,
                vec![],
                responses(
                    &[(
                        "200",
                        written(
                            "Rolled back, as a new revision",
                            json!({ "type": "object", "required": ["revision", "rolled_back_to", "changes"] }),
                        ),
                    )],
                    &[400, 404],
                ),
            ),
            json!({
                "type": "object",
                "required": ["revision"],
                "properties": { "revision": {
                    "type": "integer", "minimum": -INT_MAX, "maximum": INT_MAX,
                    "description": "The revision to make current again; one that does not exist is 404" } },
            }),
            true,
        ),
        ("/tags/{tag}", _) => {
            let mut ps = vec![path_param(
                "tag",
                json!({ "type": "string", "minLength": 1, "maxLength": crate::entities::TAG_MAX, "pattern": checks::TAG }),
                "A tag",
            )];
            ps.extend(list_params(B64, false));
            op(
                summary,
                ps,
                responses(
                    &[(
                        "200",
                        json_response(
                            "Every entity with the tag",
                            page_of(
                                json!({ "type": "object", "required": ["entity_name", "entity_id", "tag"],
                                "properties": { "entity_name": { "type": "string" },
                                    "entity_id": { "type": "string" }, "tag": { "type": "string" } } }),
                            ),
                        ),
                    )],
                    &[400],
                ),
            )
        }
        ("/fleet", _) => op(
            summary,
            vec![],
            responses(
                &[("200", json_response("Every proxy and what it runs", obj))],
                &[],
            ),
        ),
        ("/fleet/{node}", _) => op(
            summary,
            vec![path_param("node", json!({ "type": "string" }), "A node id")],
            responses(&[("200", json_response("One proxy", obj))], &[404]),
        ),
        ("/proxy-cache", _) => op(
            summary,
            vec![],
            responses(
                &[
                    ("204", json!({ "description": "Purged on every proxy" })),
                    ("502", json_response("Some proxy could not be reached", obj)),
                ],
                &[],
            ),
        ),
        ("/proxy-cache/{key}", _) => op(
            summary,
            vec![path_param(
                "key",
                json!({ "type": "string" }),
                "A cache key",
            )],
            responses(
                &[
                    (
                        "204",
                        json!({ "description": "Purged where it was cached" }),
                    ),
                    ("502", json_response("Some proxy could not be reached", obj)),
                ],
                &[404],
            ),
        ),
        _ => op(
            summary,
            vec![],
            json!({ "200": { "description": "OK", "content": { "application/json": { "schema": any } } } }),
        ),
    }
}

/// One documented path: generic entity routes become one path per
/// collection (and per parent for nested ones).
struct Concrete {
    path: String,
    methods: &'static [&'static str],
    entity: Option<&'static EntityDef>,
    item: bool,
    parent: Option<(&'static EntityDef, &'static str)>,
}

fn concrete() -> Vec<Concrete> {
    let mut out = Vec::new();
    for (path, methods) in super::table().paths {
        match path {
            "/{collection}" | "/{collection}/{id}" => {
                let item = path.ends_with("{id}");
                for d in ALL.iter() {
                    out.push(Concrete {
                        path: if item {
                            format!("/{}/{{id}}", d.path)
                        } else {
                            format!("/{}", d.path)
                        },
                        methods,
                        entity: Some(d),
                        item,
                        parent: None,
                    });
                }
            }
            "/{parent}/{parent_id}/{collection}" | "/{parent}/{parent_id}/{collection}/{id}" => {
                let item = path.ends_with("{id}");
                for c in ALL.iter() {
                    for f in c.foreign.iter().filter(|f| !f.many) {
                        let Some(p) = ALL.iter().find(|d| d.name == f.kind) else {
                            continue;
                        };
                        let mut concrete = format!("/{}/{{parent_id}}/{}", p.path, c.path);
                        if item {
                            concrete.push_str("/{id}");
                        }
                        out.push(Concrete {
                            path: concrete,
                            methods,
                            entity: Some(c),
                            item,
                            parent: Some((p, f.field)),
                        });
                    }
                }
            }
            other => out.push(Concrete {
                path: other.to_string(),
                methods,
                entity: None,
                item: false,
                parent: None,
            }),
        }
    }
    out
}

fn build() -> Value {
    let mut paths = Map::new();
    for c in concrete() {
        let item = match c.entity {
            Some(d) => entity_ops(d, c.item, c.parent, c.methods),
            None => c
                .methods
                .iter()
                .map(|m| (m.to_ascii_lowercase(), other_op(&c.path, m)))
                .collect(),
        };
        paths.insert(c.path, Value::Object(item));
    }
    let mut schemas = Map::new();
    for d in ALL.iter() {
        let mut s = record_output(&d.schema);
        s["required"] = json!(["id"]);
        if d.name == "plugins" {
            s["properties"]["config"] = json!({ "type": ["object", "null"] });
        }
        schemas.insert(d.name.to_string(), s);
    }
    for name in crate::plugins::names() {
        if let Some(s) = crate::plugins::config_schema(name) {
            let mut r = record_input(s, &[]);
            // Kong's deprecated shorthands, moved into `redis` before the
            // schema runs: accepted, so documented.
            let redis = s.get("redis").and_then(|f| match &f.ty {
                Ty::Record(r) => Some(r),
                _ => None,
            });
            for (old, new) in crate::plugins::shorthands(name) {
                if let Some(f) = redis.and_then(|r| r.get(new)) {
                    let mut p = nullable(input(f));
                    p["deprecated"] = json!(true);
                    p["description"] = json!(format!("Deprecated: `redis.{new}`"));
                    r["properties"][*old] = p;
                }
            }
            r["description"] = json!(
                "Fields as the plugin's schema has them; its entity checks (at least one of, \
                 conditional fields) are described in docs/plugins.md, not here"
            );
            schemas.insert(format!("plugin-config-{name}"), r);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Gantry admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Kong 3.x shaped. Request bodies are documented as JSON; \
                `application/x-www-form-urlencoded` bodies are accepted too, with Kong's \
                conventions (docs/admin-api.md), and are not described here.",
        },
        "paths": paths,
        // Required once a token is configured or an RBAC user exists
        // (docs/security.md); `{}` says a request may go without.
        "security": [{ "kongAdminToken": [] }, { "bearer": [] }, {}],
        "components": {
            "securitySchemes": {
                "kongAdminToken": { "type": "apiKey", "in": "header", "name": "Kong-Admin-Token" },
                "bearer": { "type": "http", "scheme": "bearer" },
            },
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "Kong-shaped error: `{\"message\"}`, or `{\"code\", \"name\", \"message\", \"fields\"}` for schema and constraint violations",
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "required": ["message"],
                        "properties": {
                            "code": { "type": "integer" }, "name": { "type": "string" },
                            "message": { "type": "string" }, "fields": { "type": "object" }
                        }
                    } } }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(p)) = o.get("pattern") {
                    out.push(p);
                }
                o.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_pattern_compiles_and_every_operation_answers_errors_as_documented() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut patterns = Vec::new();
        walk(doc, &mut patterns);
        assert!(patterns.len() > 50);
        for p in patterns {
            regex::Regex::new(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("operations") {
                let r = &op["responses"];
                assert!(r["403"].is_object(), "{method} {path}: 403");
                if op.get("requestBody").is_some() {
                    assert!(
                        r["413"].is_object() && r["415"].is_object(),
                        "{method} {path}"
                    );
                }
            }
        }
        let put = &doc["paths"]["/consumers/{id}"]["put"];
        assert!(put["responses"]["200"].is_object() && put["responses"]["201"].is_object());
        assert_eq!(
            put["requestBody"]["required"], false,
            "PUT /consumers/bob needs no body"
        );
        // Under a consumer, only consumer-scoped plugins are offered.
        let names = &doc["paths"]["/consumers/{parent_id}/plugins"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"]["properties"]["name"]["enum"];
        let names: Vec<&str> = names
            .as_array()
            .expect("an enum")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(
            names.contains(&"rate-limiting") && !names.contains(&"cors"),
            "{names:?}"
        );
        let post = &doc["paths"]["/services/{parent_id}/routes"]["post"];
        let required =
            post["requestBody"]["content"]["application/json"]["schema"]["required"].clone();
        assert!(
            !required
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f == "service")
        );
    }
}
