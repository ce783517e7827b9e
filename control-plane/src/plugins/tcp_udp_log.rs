//! `tcp-log` and `udp-log`: Kong 3.x's schemas.

use super::common::{host, no_lua, sni};
use crate::schema::{Field, Record};
use serde_json::json;

fn endpoint() -> Record {
    Record::new()
        .field("host", Field::string().required().custom(host))
        .field("port", Field::integer().required().between(0.0, 65535.0))
        .field("timeout", Field::number().default(json!(10000)))
}

pub fn tcp_schema() -> Record {
    endpoint()
        .field("keepalive", Field::number().default(json!(60000)))
        .field("tls", Field::boolean().required().default(json!(false)))
        .field("tls_sni", Field::string().custom(sni))
        .field(
            "custom_fields_by_lua",
            Field::map(Field::string()).custom(no_lua),
        )
}

pub fn udp_schema() -> Record {
    endpoint().field(
        "custom_fields_by_lua",
        Field::map(Field::string()).custom(no_lua),
    )
}

#[cfg(test)]
mod tests {
    use crate::schema::{Input, validate};
    use serde_json::json;

    #[test]
    fn defaults_and_checks() {
        let c = validate(
            &super::tcp_schema(),
            &json!({"host": "logs.test", "port": 5140}),
            Input::Json,
        )
        .unwrap();
        assert_eq!(
            (
                c["timeout"].clone(),
                c["keepalive"].clone(),
                c["tls"].clone()
            ),
            (json!(10000), json!(60000), json!(false))
        );
        let e = validate(
            &super::udp_schema(),
            &json!({"host": "logs.test"}),
            Input::Json,
        )
        .unwrap_err();
        assert_eq!(e["port"], "required field missing");
        let e = validate(
            &super::udp_schema(),
            &json!({"host": "logs.test", "port": 70000}),
            Input::Json,
        )
        .unwrap_err();
        assert!(e["port"].is_string(), "{e:?}");
    }
}
