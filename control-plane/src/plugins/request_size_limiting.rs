//! `request-size-limiting`: Kong 3.x's schema.

use crate::schema::{Field, Record};
use serde_json::json;

pub fn schema() -> Record {
    Record::new()
        .field(
            "allowed_payload_size",
            Field::integer()
                .default(json!(128))
                .describe("Largest request body allowed, in `size_unit`s."),
        )
        .field(
            "size_unit",
            Field::string()
                .required()
                .default(json!("megabytes"))
                .one_of(&["megabytes", "kilobytes", "bytes"]),
        )
        .field(
            "require_content_length",
            Field::boolean().required().default(json!(false)),
        )
}

#[cfg(test)]
mod tests {
    use crate::schema::{Input, validate};
    use serde_json::json;

    #[test]
    fn defaults_and_checks() {
        let s = super::schema();
        let c = validate(&s, &json!({}), Input::Json).unwrap();
        assert_eq!(
            c,
            json!({"allowed_payload_size": 128, "size_unit": "megabytes", "require_content_length": false})
        );
        let e = validate(&s, &json!({"size_unit": "gigabytes"}), Input::Json).unwrap_err();
        assert_eq!(
            e["size_unit"],
            "expected one of: megabytes, kilobytes, bytes"
        );
        let e = validate(&s, &json!({"allowed_payload_size": 1.5}), Input::Json).unwrap_err();
        assert_eq!(e["allowed_payload_size"], "expected an integer");
        let c = validate(&s, &json!({"allowed_payload_size": "10"}), Input::Form).unwrap();
        assert_eq!(c["allowed_payload_size"], 10);
    }
}
