//! `request-transformer`: Kong 3.x's schema. Values may be Kong templates
//! (`$(headers.host)`); their expressions get a syntax check close to what
//! Kong's template compiler rejects.

use super::common::{colon_pair, header_rename, is_header_name, split_pair};
use crate::schema::{Field, Record};
use serde_json::{Value, json};

pub fn schema() -> Record {
    Record::new()
        .field(
            "http_method",
            Field::string()
                .custom(upper_method)
                .describe("Changes the HTTP method of the upstream request."),
        )
        .field("remove", Field::record(part(plain(), array(header))))
        .field(
            "rename",
            Field::record(part(array(name_value), array(header_rename))),
        )
        .field(
            "replace",
            Field::record(
                part(array(name_value), array(header_value)).field("uri", Field::string()),
            ),
        )
        .field(
            "add",
            Field::record(part(array(name_value), array(header_value))),
        )
        .field(
            "append",
            Field::record(part(array(name_value), array(header_value))),
        )
}

/// A `{body, headers, querystring}` record; body and querystring share a shape.
fn part(body_qs: Field, headers: Field) -> Record {
    Record::new()
        .field("body", body_qs.clone())
        .field("headers", headers)
        .field("querystring", body_qs)
}

/// Kong's arrays here are all `required` with default `{}`.
fn array(check: crate::schema::Custom) -> Field {
    Field::array(Field::string().custom(check))
        .required()
        .default(json!([]))
}

fn plain() -> Field {
    Field::array(Field::string()).required().default(json!([]))
}

/// `typedefs.http_method`: `match = "^%u+$"`.
fn upper_method(v: &Value) -> Result<(), String> {
    let m = v.as_str().unwrap_or_default();
    if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("invalid value: {m}"))
    }
}

fn bad_header(name: &str) -> String {
    format!("'{name}' is not a valid header")
}

/// remove.headers: a bare header name (anything after a colon is ignored).
fn header(v: &Value) -> Result<(), String> {
    let name = split_pair(v.as_str().unwrap_or_default()).0;
    if is_header_name(name) {
        Ok(())
    } else {
        Err(bad_header(name))
    }
}

/// add/append/replace.headers: `name:value` with a valid name.
fn header_value(v: &Value) -> Result<(), String> {
    colon_pair(v)?;
    header(v)
}

/// Kong's `check_for_value`: `name:value`, value non-empty and a valid template.
fn name_value(v: &Value) -> Result<(), String> {
    let (name, value) = split_pair(v.as_str().unwrap_or_default());
    if name.is_empty() || value.is_empty() {
        return Err(format!("key '{name}' has no value"));
    }
    template(value).map_err(|e| format!("value '{value}' is not in supported format, error:{e}"))
}

/// Checks each balanced `$( ... )` of a template holds one expression: two
/// operands in a row (`$(uri_captures user2)`) is what Lua refuses to load.
/// An unbalanced `$(` stays literal text, as in Kong.
fn template(value: &str) -> Result<(), String> {
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        let body = &rest[start + 2..];
        let mut depth = 1;
        let Some(end) = body.char_indices().find_map(|(i, c)| {
            depth += match c {
                '(' => 1,
                ')' => -1,
                _ => 0,
            };
            (depth == 0).then_some(i)
        }) else {
            return Ok(());
        };
        expression(&body[..end])?;
        rest = &body[end + 1..];
    }
    Ok(())
}

fn expression(expr: &str) -> Result<(), String> {
    const OPERATORS: &[&str] = &["and", "or", "not"];
    let mut prev_operand = false;
    let mut seen = false;
    let mut chars = expr.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let operand = if c.is_alphanumeric() || c == '_' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if !(d.is_alphanumeric() || d == '_') {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
            let word = &expr[i..end];
            if prev_operand && !OPERATORS.contains(&word) {
                return Err(format!("unexpected symbol near '{word}'"));
            }
            !OPERATORS.contains(&word)
        } else if c == '"' || c == '\'' {
            // A string literal: `f "x"` is a call, so it may follow an operand.
            let mut escaped = false;
            let closed = chars.by_ref().any(|(_, d)| {
                let done = d == c && !escaped;
                escaped = d == '\\' && !escaped;
                done
            });
            if !closed {
                return Err("unfinished string".into());
            }
            true
        } else if c.is_whitespace() {
            continue;
        } else {
            matches!(c, ')' | ']' | '}')
        };
        prev_operand = operand;
        seen = true;
    }
    if seen {
        Ok(())
    } else {
        Err("empty expression".into())
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
    fn defaults() {
        let c = v(json!({})).unwrap();
        let empty = json!({"body": [], "headers": [], "querystring": []});
        assert_eq!(c["remove"], empty);
        assert_eq!(c["add"], empty);
        assert_eq!(
            c["replace"],
            json!({"body": [], "headers": [], "querystring": [], "uri": null})
        );
        assert_eq!(c["http_method"], Value::Null);
    }

    #[test]
    fn kong_checks() {
        assert!(v(json!({"http_method": "GET"})).is_ok());
        assert_eq!(
            v(json!({"http_method": "HELLO!"})).unwrap_err()["http_method"],
            "invalid value: HELLO!"
        );
        assert!(
            v(json!({"add": {"querystring": ["p1:$(uri_captures.user1)", "p2:value"]}})).is_ok()
        );
        assert!(v(json!({"add": {"querystring": ["a:$(query_params[\"x\"] or 'd')"]}})).is_ok());
        let e = v(json!({"add": {"querystring": ["uri_param2:"]}})).unwrap_err();
        assert_eq!(e["add"]["querystring"][0], "key 'uri_param2' has no value");
        let e = v(json!({"add": {"querystring": ["p:$(uri_captures user2)"]}})).unwrap_err();
        assert!(
            e["add"]["querystring"][0]
                .as_str()
                .unwrap()
                .starts_with("value '$(uri_captures user2)' is not in supported format")
        );
        let e = v(json!({"add": {"headers": ["X-Foo"]}})).unwrap_err();
        assert_eq!(e["add"]["headers"][0], "invalid value: X-Foo");
        let e = v(json!({"add": {"headers": ["X Foo:1"]}})).unwrap_err();
        assert_eq!(e["add"]["headers"][0], "'X Foo' is not a valid header");
        let e = v(json!({"rename": {"headers": ["X-Old:X New"]}})).unwrap_err();
        assert_eq!(e["rename"]["headers"][0], "'X New' is not a valid header");
        assert!(
            v(json!({"rename": {"headers": ["X-Old:X-New"]}, "remove": {"headers": ["X-Gone"]}}))
                .is_ok()
        );
        let e = v(json!({"remove": {"headers": ["bad header"]}})).unwrap_err();
        assert_eq!(
            e["remove"]["headers"][0],
            "'bad header' is not a valid header"
        );
        assert!(v(json!({"replace": {"uri": "/new/$(uri_captures.id)"}})).is_ok());
        let e = v(json!({"remove": {"unknown": []}})).unwrap_err();
        assert_eq!(e["remove"]["unknown"], "unknown field");
    }

    #[test]
    fn form_arrays() {
        let c = validate(
            &super::schema(),
            &json!({"add": {"headers": "X-A:1"}}),
            Input::Form,
        )
        .unwrap();
        assert_eq!(c["add"]["headers"], json!(["X-A:1"]));
    }
}
