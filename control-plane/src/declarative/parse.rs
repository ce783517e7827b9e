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

/// YAML flow collections (`[`, `{`) may nest at most this deep: deeper ones
/// cost libyaml quadratic time (25,000 `{a: ` take seconds), and the
/// deserializer refuses more than 128 levels anyway.
pub const MAX_FLOW_DEPTH: usize = 128;

/// Whether flow collections nest deeper than [`MAX_FLOW_DEPTH`], by one
/// linear scan that skips quoted scalars and comments. Brackets inside
/// block scalars count too: the limit is far above any real document.
fn flow_too_deep(text: &str) -> bool {
    let b = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\'' => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
            }
            b'#' if i == 0 || b[i - 1].is_ascii_whitespace() => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

fn parse_yaml(text: &str) -> Result<Value, String> {
    if flow_too_deep(text) {
        return Err(format!(
            "collections are nested more than {MAX_FLOW_DEPTH} levels deep"
        ));
    }
    let mut y: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    // `<<: *anchor` merge keys, which decK-style files use.
    y.apply_merge().map_err(|e| e.to_string())?;
    serde_json::to_value(y).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_collections_are_refused_before_parsing() {
        for doc in ["{a: ".repeat(25_000), "[".repeat(100_000)] {
            assert!(flow_too_deep(&doc));
            assert!(parse_document(doc.as_bytes()).is_err());
            let e = parse_yaml(&doc).unwrap_err();
            assert!(e.contains("nested more than 128 levels"), "{e}");
        }
        // Brackets in quotes and comments do not count.
        let quoted = format!(
            "_format_version: \"3.0\"\n# {}\ntags: ['{}', \"{}\"]\n",
            "[".repeat(500),
            "{".repeat(500),
            "[".repeat(500)
        );
        assert!(!flow_too_deep(&quoted));
        assert!(flow_too_deep(&"[".repeat(129)));
        assert!(!flow_too_deep(&format!(
            "{}{}",
            "[".repeat(128),
            "]".repeat(128)
        )));
    }
}
