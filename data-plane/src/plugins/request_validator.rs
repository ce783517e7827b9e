//! `request-validator`: the body against a JSON Schema (draft 4), and
//! query and header parameters against theirs; Kong's 400 messages, with
//! the validator's reason when `verbose_response` is on.

use super::reject::Reject;
use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use serde::Deserialize;
use serde_json::Value;

const BODY: &str = "request body doesn't conform to schema";
const PARAM: &str = "request param doesn't conform to schema";

pub struct RequestValidator {
    body: Option<jsonschema::Validator>,
    allowed_content_types: Vec<(String, Vec<(String, String)>)>,
    check_parameters: bool,
    params: Vec<Param>,
    verbose: bool,
}

impl std::fmt::Debug for RequestValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestValidator")
            .field("body", &self.body.is_some())
            .field("params", &self.params.len())
            .finish()
    }
}

struct Param {
    location: Location,
    name: String,
    required: bool,
    /// `explode: false` arrays are comma-separated (form and simple styles).
    schema: Option<(jsonschema::Validator, String)>,
}

enum Location {
    Query,
    Header(HeaderName),
    /// A named capture of the route's regex path (Kong's URI captures).
    Path,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    body_schema: Option<String>,
    #[serde(default)]
    allowed_content_types: Option<Vec<String>>,
    #[serde(default)]
    parameter_schema: Option<Vec<ParamConfig>>,
    #[serde(default)]
    verbose_response: bool,
    #[serde(default)]
    content_type_parameter_validation: Option<bool>,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
struct ParamConfig {
    #[serde(rename = "in")]
    location: String,
    name: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    schema: Option<String>,
}

fn compile_schema(text: &str, field: &str) -> Result<(jsonschema::Validator, Value), String> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("{field}: invalid JSON: {e}"))?;
    let v = jsonschema::draft4::new(&doc).map_err(|e| format!("{field}: {e}"))?;
    Ok((v, doc))
}

/// `%XX` escapes decoded (`+` stays: this is a path, not a form).
pub(super) fn percent_decode(b: &[u8]) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `type/subtype` and its parameters, lower-cased.
fn media_type(s: &str) -> (String, Vec<(String, String)>) {
    let mut parts = s.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_ascii_lowercase(),
            )
        })
        .collect();
    (essence, params)
}

impl RequestValidator {
    pub fn compile(v: &Value) -> Result<RequestValidator, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        if c.version.as_deref().is_some_and(|v| v != "draft4") {
            return Err("only version draft4 is supported".into());
        }
        let body = c
            .body_schema
            .as_deref()
            .map(|t| compile_schema(t, "body_schema").map(|(v, _)| v))
            .transpose()?;
        let params = c
            .parameter_schema
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let location = match p.location.as_str() {
                    "query" => Location::Query,
                    "path" => Location::Path,
                    "header" => Location::Header(
                        HeaderName::from_bytes(p.name.to_ascii_lowercase().as_bytes())
                            .map_err(|_| format!("parameter {:?} is not a header name", p.name))?,
                    ),
                    other => {
                        return Err(format!(
                            "parameter {:?}: `in: {other}` is not supported by gantry-proxy yet",
                            p.name
                        ));
                    }
                };
                let schema = p
                    .schema
                    .as_deref()
                    .map(|t| {
                        compile_schema(t, "parameter_schema").map(|(v, doc)| {
                            let ty = doc["type"].as_str().unwrap_or("string").to_string();
                            (v, ty)
                        })
                    })
                    .transpose()?;
                Ok(Param {
                    location,
                    name: p.name,
                    required: p.required,
                    schema,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(RequestValidator {
            body,
            allowed_content_types: c
                .allowed_content_types
                .unwrap_or_else(|| vec!["application/json".into()])
                .iter()
                .map(|t| media_type(t))
                .collect(),
            check_parameters: c.content_type_parameter_validation.unwrap_or(true),
            params,
            verbose: c.verbose_response,
        })
    }

    fn refuse(&self, message: &str, detail: String) -> Reject {
        Reject::new(
            400,
            if self.verbose {
                detail
            } else {
                message.to_string()
            },
        )
    }

    /// Whether the body must be read whole and checked.
    pub fn reads_body(&self) -> bool {
        self.body.is_some()
    }

    /// Query, header and path parameters, before the body is read. Path
    /// parameters are the named groups of the route's regex path (`~`
    /// paths), percent-decoded; a route without one has none.
    pub fn check_params(
        &self,
        headers: &HeaderMap,
        pq: &str,
        path_regex: Option<&crate::re2::Re2>,
    ) -> Result<(), Reject> {
        for p in &self.params {
            let raw: Option<String> = match &p.location {
                Location::Query => super::key_auth::query_values(pq, &p.name).next(),
                Location::Header(h) => headers
                    .get(h)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                Location::Path => {
                    let path = pq.split('?').next().unwrap_or_default();
                    path_regex
                        .and_then(|re| re.named_group(path.as_bytes(), &p.name))
                        .map(percent_decode)
                }
            };
            let kind = match p.location {
                Location::Query => "query",
                Location::Header(_) => "header",
                Location::Path => "path",
            };
            let Some(raw) = raw else {
                if p.required {
                    return Err(self.refuse(
                        PARAM,
                        format!("{kind} '{}' validation failed, [error] required parameter value not found in request", p.name),
                    ));
                }
                continue;
            };
            if let Some((schema, ty)) = &p.schema {
                let value = typed(&raw, ty);
                if let Err(e) = schema.validate(&value) {
                    return Err(self.refuse(
                        PARAM,
                        format!("{kind} '{}' validation failed, [error] {e}", p.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The content type, then the body against the schema.
    pub fn check_body(&self, headers: &HeaderMap, body: &Bytes) -> Result<(), Reject> {
        let Some(schema) = &self.body else {
            return Ok(());
        };
        let ct = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(media_type);
        let allowed = ct.as_ref().is_some_and(|(essence, params)| {
            self.allowed_content_types.iter().any(|(e, ps)| {
                (e == "*/*"
                    || e == essence
                    || (e.ends_with("/*") && essence.starts_with(&e[..e.len() - 1])))
                    && (!self.check_parameters || ps.iter().all(|p| params.contains(p)))
            })
        });
        if !allowed {
            return Err(Reject::new(400, "specified Content-Type is not allowed"));
        }
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return Err(self.refuse(BODY, "failed to decode request body".into())),
        };
        if let Err(e) = schema.validate(&value) {
            return Err(self.refuse(BODY, e.to_string()));
        }
        Ok(())
    }
}

/// A parameter's text as the JSON value its schema's type expects.
fn typed(raw: &str, ty: &str) -> Value {
    match ty {
        "integer" => raw
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| raw.into()),
        "number" => raw
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or_else(|_| raw.into()),
        "boolean" => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => raw.into(),
        },
        "array" => Value::Array(raw.split(',').map(|s| Value::from(s.to_string())).collect()),
        _ => raw.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_and_params() {
        let v = RequestValidator::compile(&json!({
            "body_schema": r#"{"type":"object","required":["name"],"properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0}}}"#,
            "parameter_schema": [{"in": "query", "name": "page", "required": true, "schema": r#"{"type":"integer","minimum":1}"#}],
            "verbose_response": true
        }))
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(
            v.check_body(&h, &Bytes::from_static(br#"{"name":"a","age":3}"#))
                .is_ok()
        );
        let e = v
            .check_body(&h, &Bytes::from_static(br#"{"age":-1}"#))
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("name"), "{}", e.message);
        assert!(v.check_body(&h, &Bytes::from_static(b"{not json")).is_err());
        h.insert("content-type", "text/plain".parse().unwrap());
        let e = v
            .check_body(&h, &Bytes::from_static(br#"{"name":"a"}"#))
            .unwrap_err();
        assert_eq!(e.message, "specified Content-Type is not allowed");
        assert!(v.check_params(&h, "/x?page=2", None).is_ok());
        assert!(v.check_params(&h, "/x?page=0", None).is_err());
        assert!(
            v.check_params(&h, "/x", None)
                .unwrap_err()
                .message
                .contains("required parameter")
        );
        assert!(RequestValidator::compile(&json!({"body_schema": "{\"type\": 5}"})).is_err());
    }

    #[test]
    fn path_parameters_are_the_route_regex_named_groups() {
        let v = RequestValidator::compile(&json!({
            "parameter_schema": [{"in": "path", "name": "user_id", "required": true,
                                  "schema": r#"{"type":"integer","minimum":1}"#},
                                 {"in": "path", "name": "tag", "required": false,
                                  "schema": r#"{"type":"string","pattern":"^[a-z ]+$"}"#}],
            "verbose_response": true
        }))
        .unwrap();
        let re = crate::re2::Re2::new(r"/users/(?<user_id>[^/]+)(?:/(?<tag>[^/]+))?.*").unwrap();
        let h = HeaderMap::new();
        assert!(v.check_params(&h, "/users/42?x=1", Some(&re)).is_ok());
        assert!(v.check_params(&h, "/users/42/a%20b", Some(&re)).is_ok());
        let e = v.check_params(&h, "/users/0", Some(&re)).unwrap_err();
        assert!(
            e.message.starts_with("path 'user_id' validation failed"),
            "{}",
            e.message
        );
        assert!(v.check_params(&h, "/users/7/A1", Some(&re)).is_err());
        // No regex path, no captures: a required one is missing.
        let e = v.check_params(&h, "/users/42", None).unwrap_err();
        assert!(e.message.contains("required parameter"), "{}", e.message);
    }
}
