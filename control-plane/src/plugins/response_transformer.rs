//! `response-transformer`: Kong 3.x's schema.

use super::common::is_header_name;
use crate::schema::{Custom, Field, Record};
use serde_json::{Value, json};

pub fn schema() -> Record {
    let with_types = || {
        Record::new()
            .field("json", array(Some(colon)))
            .field(
                "json_types",
                Field::array(Field::string().one_of(&["boolean", "number", "string"]))
                    .required()
                    .default(json!([]))
                    .describe(
                        "JSON type of each `json` value, by position: boolean, number or string.",
                    ),
            )
            .field("headers", array(Some(colon)))
    };
    Record::new()
        .field(
            "remove",
            Field::record(
                Record::new()
                    .field("json", array(None))
                    .field("headers", array(None)),
            ),
        )
        .field(
            "rename",
            Field::record(
                Record::new()
                    .field("json", array(Some(colon)))
                    .field("headers", array(Some(header_pair))),
            ),
        )
        .field("replace", Field::record(with_types()))
        .field("add", Field::record(with_types()))
        .field("append", Field::record(with_types()))
}

/// Kong's arrays here are all `required` with default `{}`.
fn array(check: Option<Custom>) -> Field {
    let elem = Field::string();
    let elem = match check {
        Some(c) => elem.custom(c),
        None => elem,
    };
    Field::array(elem).required().default(json!([]))
}

/// Kong's `match = "^[^:]+:.*$"`.
fn colon(v: &Value) -> Result<(), String> {
    let s = v.as_str().unwrap_or_default();
    match s.split_once(':') {
        Some((name, _)) if !name.is_empty() => Ok(()),
        _ => Err(format!("invalid value: {s}")),
    }
}

/// rename.headers: `old:new`, both valid header names.
fn header_pair(v: &Value) -> Result<(), String> {
    colon(v)?;
    let (old, new) = v
        .as_str()
        .unwrap_or_default()
        .split_once(':')
        .unwrap_or_default();
    let new = new.trim_start_matches(':');
    for name in [old, new] {
        if !is_header_name(name) {
            return Err(format!("'{name}' is not a valid header"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::schema::{Input, validate};
    use serde_json::json;

    #[test]
    fn defaults_and_checks() {
        let s = super::schema();
        let c = validate(&s, &json!({}), Input::Json).unwrap();
        assert_eq!(c["remove"], json!({"json": [], "headers": []}));
        assert_eq!(
            c["add"],
            json!({"json": [], "json_types": [], "headers": []})
        );
        assert_eq!(c["rename"], json!({"json": [], "headers": []}));
        assert!(
            validate(
                &s,
                &json!({"add": {"json": ["a:1"], "json_types": ["number"]}}),
                Input::Json
            )
            .is_ok()
        );
        let e = validate(&s, &json!({"add": {"json_types": ["object"]}}), Input::Json).unwrap_err();
        assert_eq!(
            e["add"]["json_types"][0],
            "expected one of: boolean, number, string"
        );
        let e = validate(
            &s,
            &json!({"append": {"headers": ["nocolon"]}}),
            Input::Json,
        )
        .unwrap_err();
        assert_eq!(e["append"]["headers"][0], "invalid value: nocolon");
        let e = validate(
            &s,
            &json!({"rename": {"headers": ["X-A:B C"]}}),
            Input::Json,
        )
        .unwrap_err();
        assert_eq!(e["rename"]["headers"][0], "'B C' is not a valid header");
        // remove takes bare names and, as in Kong, does not check them.
        assert!(
            validate(
                &s,
                &json!({"remove": {"headers": ["any thing"]}}),
                Input::Json
            )
            .is_ok()
        );
    }
}
