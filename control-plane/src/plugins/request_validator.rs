//! `request-validator` (Kong Enterprise). Gantry validates with JSON Schema
//! draft 4 only: Kong's legacy `version = "kong"` format (a Kong schema DSL)
//! is not implemented, so `version` defaults to and accepts only `draft4`.

use super::common::{at_least_one_of, entity_errors, is_nonempty, quoted};
use crate::schema::{Field, FieldErrors, Record};
use serde_json::{Map, Value, json};

/// A JSON Schema document, as a string, is at most this long.
const SCHEMA_MAX: usize = 256 * 1024;

pub fn schema() -> Record {
    let parameter = Record::new()
        .field(
            "in",
            Field::string()
                .required()
                .one_of(&["query", "header", "path"]),
        )
        .field(
            "name",
            Field::string()
                .required()
                .describe("Parameter name; for `path`, the route's named capture."),
        )
        .field("required", Field::boolean().required())
        .field(
            "style",
            Field::string().one_of(&[
                "form",
                "simple",
                "label",
                "matrix",
                "spaceDelimited",
                "pipeDelimited",
                "deepObject",
            ]),
        )
        .field("explode", Field::boolean())
        .field(
            "schema",
            Field::string()
                .len_max(SCHEMA_MAX)
                .custom(parameter_schema)
                .describe("JSON Schema (draft 4) with a top-level `type`."),
        )
        .check(style_explode_schema_together);
    Record::new()
        .field(
            "body_schema",
            Field::string()
                .len_max(SCHEMA_MAX)
                .custom(body_schema)
                .describe("JSON Schema (draft 4) of the request body."),
        )
        .field(
            "allowed_content_types",
            Field::set(Field::string().custom(content_type)).default(json!(["application/json"])),
        )
        .field(
            "version",
            Field::string()
                .required()
                .default(json!("draft4"))
                .one_of(&["draft4"])
                .describe(
                    "Validator: JSON Schema draft 4. Kong's legacy `kong` format is not supported.",
                ),
        )
        .field("parameter_schema", Field::array(Field::record(parameter)))
        .field(
            "verbose_response",
            Field::boolean().required().default(json!(false)),
        )
        .field(
            "content_type_parameter_validation",
            Field::boolean().required().default(json!(true)),
        )
        .check(|c| {
            entity_errors(
                at_least_one_of(c, &["body_schema", "parameter_schema"])
                    .into_iter()
                    .collect(),
            )
        })
}

/// `type/subtype` with optional `; parameters`, e.g. `application/json; charset=UTF-8`.
fn content_type(v: &Value) -> Result<(), String> {
    let s = v.as_str().unwrap_or_default();
    let essence = s.split(';').next().unwrap_or_default().trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
    };
    match essence.split_once('/') {
        Some((t, sub)) if token(t) && token(sub) => Ok(()),
        _ => Err(format!("invalid value: {s}")),
    }
}

fn body_schema(v: &Value) -> Result<(), String> {
    parse_schema(v).map(|_| ())
}

/// Parameter schemas need a top-level `type` to deserialise the raw value.
fn parameter_schema(v: &Value) -> Result<(), String> {
    let doc = parse_schema(v)?;
    if doc.get("type").is_none() {
        Err("the schema must have a top-level 'type'".into())
    } else {
        Ok(())
    }
}

fn parse_schema(v: &Value) -> Result<Map<String, Value>, String> {
    let doc: Value = serde_json::from_str(v.as_str().unwrap_or_default())
        .map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = doc else {
        return Err("expected a JSON Schema object".into());
    };
    check_schema(&obj, "").map_err(|e| format!("invalid JSON Schema: {e}"))?;
    Ok(obj)
}

/// The parts of the draft 4 metaschema that catch real mistakes: type
/// names, and the shapes of `properties`, `items` and `required`.
fn check_schema(s: &Map<String, Value>, at: &str) -> Result<(), String> {
    const TYPES: &[&str] = &[
        "array", "boolean", "integer", "null", "number", "object", "string",
    ];
    let valid_type = |t: &Value| t.as_str().is_some_and(|t| TYPES.contains(&t));
    match s.get("type") {
        None => {}
        Some(Value::Array(ts)) if !ts.is_empty() && ts.iter().all(valid_type) => {}
        Some(t) if valid_type(t) => {}
        Some(_) => return Err(format!("{at}type must be one of {}", quoted(TYPES))),
    }
    if let Some(req) = s.get("required") {
        let ok = req
            .as_array()
            .is_some_and(|r| !r.is_empty() && r.iter().all(Value::is_string));
        if !ok {
            return Err(format!("{at}required must be a non-empty array of strings"));
        }
    }
    if let Some(props) = s.get("properties") {
        let Value::Object(props) = props else {
            return Err(format!("{at}properties must be an object"));
        };
        for (name, sub) in props {
            let Value::Object(sub) = sub else {
                return Err(format!("{at}properties.{name} must be a schema object"));
            };
            check_schema(sub, &format!("{at}properties.{name}."))?;
        }
    }
    match s.get("items") {
        None => Ok(()),
        Some(Value::Object(sub)) => check_schema(sub, &format!("{at}items.")),
        Some(Value::Array(subs)) => subs.iter().enumerate().try_for_each(|(i, sub)| match sub {
            Value::Object(sub) => check_schema(sub, &format!("{at}items.{i}.")),
            _ => Err(format!("{at}items.{i} must be a schema object")),
        }),
        Some(_) => Err(format!(
            "{at}items must be a schema object or an array of them"
        )),
    }
}

/// Kong's `mutually_required` on a parameter's style, explode and schema.
fn style_explode_schema_together(p: &Map<String, Value>) -> Result<(), FieldErrors> {
    const F: &[&str] = &["style", "explode", "schema"];
    let set = F.iter().filter(|f| is_nonempty(p.get(**f))).count();
    if set == 0 || set == F.len() {
        return Ok(());
    }
    entity_errors(vec![format!(
        "all or none of these fields must be set: {}",
        quoted(F)
    )])
}

#[cfg(test)]
mod tests {
    use crate::schema::{Input, validate};
    use serde_json::{Value, json};

    fn v(cfg: Value) -> Result<Value, crate::schema::FieldErrors> {
        validate(&super::schema(), &cfg, Input::Json)
    }

    #[test]
    fn defaults() {
        let c =
            v(json!({"body_schema": "{\"type\": \"object\", \"required\": [\"name\"]}"})).unwrap();
        assert_eq!(c["allowed_content_types"], json!(["application/json"]));
        assert_eq!(c["version"], "draft4");
        assert_eq!(c["verbose_response"], false);
        assert_eq!(c["content_type_parameter_validation"], true);
        assert_eq!(c["parameter_schema"], Value::Null);
    }

    #[test]
    fn checks() {
        let e = v(json!({})).unwrap_err();
        assert_eq!(
            e["@entity"],
            json!([
                "at least one of these fields must be non-empty: 'config.body_schema', 'config.parameter_schema'"
            ])
        );
        let e = v(json!({"body_schema": "{not json"})).unwrap_err();
        assert!(
            e["body_schema"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON")
        );
        let e = v(json!({"body_schema": "[{\"name\": {\"type\": \"string\"}}]"})).unwrap_err();
        assert_eq!(e["body_schema"], "expected a JSON Schema object");
        let e = v(json!({"body_schema": "{\"properties\": {\"a\": {\"type\": \"text\"}}}"}))
            .unwrap_err();
        assert!(
            e["body_schema"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON Schema: properties.a.type must be one of")
        );
        let e = v(json!({"body_schema": "{}", "version": "kong"})).unwrap_err();
        assert_eq!(e["version"], "expected one of: draft4");
        let e = v(json!({"body_schema": "{}", "allowed_content_types": ["json"]})).unwrap_err();
        assert_eq!(e["allowed_content_types"][0], "invalid value: json");
        assert!(v(json!({"body_schema": "{}", "allowed_content_types": ["application/json; charset=UTF-8"]})).is_ok());
    }

    #[test]
    fn parameters() {
        let p = json!({"in": "path", "name": "status_code", "required": true,
                       "schema": "{\"type\": \"number\"}", "style": "simple", "explode": false});
        let c = v(json!({"parameter_schema": [p]})).unwrap();
        assert_eq!(c["parameter_schema"][0]["in"], "path");
        let e = v(json!({"parameter_schema": [{"in": "cookie", "name": "x"}]})).unwrap_err();
        assert_eq!(
            e["parameter_schema"][0]["in"],
            "expected one of: query, header, path"
        );
        assert_eq!(
            e["parameter_schema"][0]["required"],
            "required field missing"
        );
        let e = v(json!({"parameter_schema": [{"in": "query", "name": "x", "required": false, "style": "form"}]}))
            .unwrap_err();
        assert_eq!(
            e["parameter_schema"][0]["@entity"][0],
            "all or none of these fields must be set: 'style', 'explode', 'schema'"
        );
        let p = json!({"in": "query", "name": "x", "required": false, "style": "form", "explode": true, "schema": "{}"});
        let e = v(json!({"parameter_schema": [p]})).unwrap_err();
        assert_eq!(
            e["parameter_schema"][0]["schema"],
            "the schema must have a top-level 'type'"
        );
        let c = validate(
            &super::schema(),
            &json!({"body_schema": "{}", "verbose_response": "true"}),
            Input::Form,
        )
        .unwrap();
        assert_eq!(c["verbose_response"], true);
    }
}
