//! `key-auth`: Kong 3.x's schema as is.

use super::common::header_name;
use crate::schema::{Field, Record};
use serde_json::json;

pub fn schema() -> Record {
    Record::new()
        .field(
            "key_names",
            Field::array(Field::string().custom(header_name))
                .required()
                .default(json!(["apikey"]))
                .describe("Header, query and body parameter names searched for the key."),
        )
        .field(
            "hide_credentials",
            Field::boolean().required().default(json!(false)),
        )
        .field(
            "anonymous",
            Field::string().describe("Consumer id or username used when authentication fails."),
        )
        .field(
            "key_in_header",
            Field::boolean().required().default(json!(true)),
        )
        .field(
            "key_in_query",
            Field::boolean().required().default(json!(true)),
        )
        .field(
            "key_in_body",
            Field::boolean().required().default(json!(false)),
        )
        .field(
            "run_on_preflight",
            Field::boolean().required().default(json!(true)),
        )
        .field("realm", Field::string())
}

#[cfg(test)]
mod tests {
    use crate::schema::{Input, validate};
    use serde_json::json;

    #[test]
    fn defaults_and_checks() {
        let c = validate(&super::schema(), &json!({}), Input::Json).unwrap();
        assert_eq!(
            c,
            json!({"key_names": ["apikey"], "hide_credentials": false, "anonymous": null,
                   "key_in_header": true, "key_in_query": true, "key_in_body": false,
                   "run_on_preflight": true, "realm": null})
        );
        let e = validate(
            &super::schema(),
            &json!({"key_names": ["ok", "not ok"]}),
            Input::Json,
        )
        .unwrap_err();
        assert!(
            e["key_names"][1]
                .as_str()
                .unwrap()
                .starts_with("bad header name 'not ok'")
        );
        let e = validate(&super::schema(), &json!({"key_names": null}), Input::Json).unwrap_err();
        assert_eq!(e["key_names"], "required field missing");
        let c = validate(
            &super::schema(),
            &json!({"hide_credentials": "true", "key_names": "k"}),
            Input::Form,
        )
        .unwrap();
        assert_eq!(c["hide_credentials"], true);
        assert_eq!(c["key_names"], json!(["k"]));
    }
}
