//! `correlation-id`: Kong 3.x's schema.

use crate::schema::{Field, Record};
use serde_json::json;

pub fn schema() -> Record {
    Record::new()
        .field(
            "header_name",
            Field::string().default(json!("Kong-Request-ID")),
        )
        .field(
            "generator",
            Field::string()
                .required()
                .default(json!("uuid#counter"))
                .one_of(&["uuid", "uuid#counter", "tracker"]),
        )
        .field(
            "echo_downstream",
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
            json!({"header_name": "Kong-Request-ID", "generator": "uuid#counter", "echo_downstream": false})
        );
        let e = validate(&s, &json!({"generator": "random"}), Input::Json).unwrap_err();
        assert_eq!(
            e["generator"],
            "expected one of: uuid, uuid#counter, tracker"
        );
        let e = validate(&s, &json!({"generator": null}), Input::Json).unwrap_err();
        assert_eq!(e["generator"], "required field missing");
        let c = validate(&s, &json!({"echo_downstream": "true"}), Input::Form).unwrap();
        assert_eq!(c["echo_downstream"], true);
    }
}
