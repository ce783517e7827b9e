//! Reading a declarative document from a request body or a file.

use super::DeclarativeError;
use serde_json::Value;

/// Parses a body that is a declarative document in JSON or YAML, or Kong's
/// wrapper `{"config": "<yaml or json string>"}` (also as a form body
/// `config=...`, which is how `curl -d config=@kong.yml` sends it).
pub fn parse_document(body: &[u8]) -> Result<Value, DeclarativeError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| DeclarativeError::Parse("body is not valid UTF-8".into()))?;
    let doc = parse_text(text)?;
    match &doc {
        Value::Object(o) if !o.contains_key("_format_version") && o.contains_key("config") => {
            match &o["config"] {
                Value::String(s) => parse_text(s),
                Value::Object(_) => Ok(o["config"].clone()),
                _ => Err(DeclarativeError::Parse(
                    "'config' must be a string or an object".into(),
                )),
            }
        }
        // A form body parses as one YAML scalar.
        Value::String(s) if s.starts_with("config=") || s.contains("&config=") => {
            match form_urlencoded::parse(s.as_bytes()).find(|(k, _)| k == "config") {
                Some((_, c)) => parse_text(&c),
                None => Err(not_a_document()),
            }
        }
        Value::Object(_) => Ok(doc),
        _ => Err(not_a_document()),
    }
}

fn not_a_document() -> DeclarativeError {
    DeclarativeError::Parse("expected an object".into())
}

fn parse_text(text: &str) -> Result<Value, DeclarativeError> {
    if text.trim().is_empty() {
        return Err(DeclarativeError::Parse(
            "expected a declarative configuration".into(),
        ));
    }
    // JSON first: it keeps integers exact and gives better messages for
    // JSON documents; YAML (a superset in practice) second.
    let json_err = match serde_json::from_str::<Value>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    match parse_yaml(text) {
        Ok(v) => Ok(v),
        Err(yaml_err) => {
            let looks_json = text.trim_start().starts_with(['{', '[']);
            Err(DeclarativeError::Parse(if looks_json {
                json_err.to_string()
            } else {
                yaml_err
            }))
        }
    }
}

fn parse_yaml(text: &str) -> Result<Value, String> {
    let mut y: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    // `<<: *anchor` merge keys, which decK-style files use.
    y.apply_merge().map_err(|e| e.to_string())?;
    serde_json::to_value(y).map_err(|e| e.to_string())
}
