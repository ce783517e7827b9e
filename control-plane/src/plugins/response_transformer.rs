//! `response-transformer`: Kong 3.x's schema.

use super::common::{colon_pair, header_rename};
use crate::schema::{Custom, Field, Record};
use serde_json::json;

pub fn schema() -> Record {
    let with_types = || {
        Record::new()
            .field("json", array(Some(colon_pair)))
            .field(
                "json_types",
                Field::array(Field::string().one_of(&["boolean", "number", "string"]))
                    .required()
                    .default(json!([]))
                    .describe(
                        "JSON type of each `json` value, by position: boolean, number or string.",
                    ),
            )
            .field("headers", array(Some(colon_pair)))
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
                    .field("json", array(Some(colon_pair)))
                    .field("headers", array(Some(header_rename))),
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
