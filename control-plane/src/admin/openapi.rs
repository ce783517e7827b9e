//! The OpenAPI document of the admin API, generated from the router table
//! and the entity schemas, so it describes exactly what is served.

use crate::entities::ALL;
use crate::schema::{Field, Record, Ty};
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

fn field_schema(f: &Field) -> Value {
    let mut s = match &f.ty {
        Ty::String => json!({ "type": "string" }),
        Ty::Integer => json!({ "type": "integer" }),
        Ty::Number => json!({ "type": "number" }),
        Ty::Boolean => json!({ "type": "boolean" }),
        Ty::Array(e) => json!({ "type": "array", "items": field_schema(e) }),
        Ty::Set(e) => json!({ "type": "array", "uniqueItems": true, "items": field_schema(e) }),
        Ty::Map(v) => json!({ "type": "object", "additionalProperties": field_schema(v) }),
        Ty::Record(r) => record_schema(r),
        Ty::Foreign(kind) => json!({
            "type": "object",
            "description": format!("Reference to a {kind} entity"),
            "properties": { "id": { "type": "string" } },
        }),
        Ty::Json => json!({}),
    };
    let Some(obj) = s.as_object_mut() else {
        return s;
    };
    if let Some(d) = &f.default {
        obj.insert("default".into(), d.clone());
    }
    if let Some(one_of) = &f.one_of {
        obj.insert("enum".into(), Value::Array(one_of.clone()));
    }
    if let Some((lo, hi)) = f.between {
        obj.insert("minimum".into(), json!(lo));
        obj.insert("maximum".into(), json!(hi));
    }
    if !f.description.is_empty() {
        obj.insert("description".into(), json!(f.description));
    }
    if f.secret {
        obj.insert("writeOnly".into(), json!(true));
    }
    s
}

fn record_schema(r: &Record) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (name, f) in &r.fields {
        props.insert((*name).to_string(), field_schema(f));
        if f.required {
            required.push(json!(name));
        }
    }
    let mut s = json!({ "type": "object", "additionalProperties": false, "properties": props });
    if !required.is_empty() {
        s["required"] = Value::Array(required);
    }
    s
}

fn op(method: &str, summary: String, schema_ref: Option<&str>, params: &[&str]) -> (String, Value) {
    let parameters: Vec<Value> = params
        .iter()
        .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    let mut o = json!({
        "summary": summary,
        "parameters": parameters,
        "responses": {
            "200": { "description": "OK" },
            "400": { "$ref": "#/components/responses/Error" },
            "404": { "$ref": "#/components/responses/Error" },
        },
    });
    let m = method.to_ascii_lowercase();
    if let (Some(r), "post" | "put" | "patch") = (schema_ref, m.as_str()) {
        let schema = json!({ "$ref": format!("#/components/schemas/{r}") });
        o["requestBody"] = json!({
            "required": m != "patch",
            "content": {
                "application/json": { "schema": schema },
                "application/x-www-form-urlencoded": { "schema": schema },
            },
        });
    }
    if m == "post" {
        o["responses"]["201"] = json!({ "description": "Created" });
    }
    if m == "delete" {
        o["responses"]["204"] = json!({ "description": "Deleted" });
    }
    (m, o)
}

/// Expands the router table into concrete paths: generic entity routes
/// become one path per collection (and per parent for nested ones).
/// One documented path: its template, methods, entity and path parameters.
pub struct DocPath {
    pub path: String,
    pub methods: &'static [&'static str],
    pub entity: Option<&'static str>,
    pub params: Vec<&'static str>,
}

pub fn concrete_paths() -> Vec<DocPath> {
    let mut out = Vec::new();
    for (path, methods) in super::table().paths {
        match path {
            "/{collection}" => {
                for d in ALL.iter() {
                    out.push(DocPath {
                        path: format!("/{}", d.path),
                        methods,
                        entity: Some(d.name),
                        params: vec![],
                    });
                }
            }
            "/{collection}/{id}" => {
                for d in ALL.iter() {
                    out.push(DocPath {
                        path: format!("/{}/{{id}}", d.path),
                        methods,
                        entity: Some(d.name),
                        params: vec!["id"],
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
                        let mut params = vec!["parent_id"];
                        if item {
                            concrete.push_str("/{id}");
                            params.push("id");
                        }
                        out.push(DocPath {
                            path: concrete,
                            methods,
                            entity: Some(c.name),
                            params,
                        });
                    }
                }
            }
            other => {
                let params: Vec<&'static str> = other
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                    .collect();
                out.push(DocPath {
                    path: other.to_string(),
                    methods,
                    entity: None,
                    params,
                });
            }
        }
    }
    out
}

fn build() -> Value {
    let mut paths = Map::new();
    for DocPath {
        path,
        methods,
        entity,
        params,
    } in concrete_paths()
    {
        let mut item = Map::new();
        for m in methods {
            let summary = match entity {
                Some(e) => format!("{m} {e}"),
                None => format!("{m} {path}"),
            };
            let body_ref = match (entity, path.as_str()) {
                (Some(e), _) => Some(e),
                (None, "/config" | "/config/validate") => Some("declarative"),
                _ => None,
            };
            let (k, v) = op(m, summary, body_ref, &params);
            item.insert(k, v);
        }
        paths.insert(path, Value::Object(item));
    }
    let mut schemas = Map::new();
    for d in ALL.iter() {
        schemas.insert(d.name.to_string(), record_schema(&d.schema));
    }
    schemas.insert(
        "declarative".into(),
        json!({ "type": "object", "description": "A Kong declarative document (_format_version 3.0), JSON or YAML",
                "properties": { "_format_version": { "type": "string" } } }),
    );
    for name in crate::plugins::names() {
        if let Some(s) = crate::plugins::config_schema(name) {
            schemas.insert(format!("plugin-config-{name}"), record_schema(s));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Gantry admin API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "Kong-shaped error",
                    "content": { "application/json": { "schema": {
                        "type": "object",
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
