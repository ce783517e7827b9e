//! `file-log`: Kong 3.x's schema.

use super::common::no_lua;
use crate::schema::{Field, Record};
use serde_json::json;

pub fn schema() -> Record {
    Record::new()
        .field(
            "path",
            Field::string().required().custom(|v| match v.as_str() {
                Some(p) if !p.is_empty() && !p.contains(['*', '&', '%', '\\', '`']) => Ok(()),
                _ => Err("not a valid filename".into()),
            }),
        )
        .field("reopen", Field::boolean().required().default(json!(false)))
        .field(
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
        let s = super::schema();
        let c = validate(&s, &json!({"path": "/tmp/kong.log"}), Input::Json).unwrap();
        assert_eq!(c["reopen"], false);
        let e = validate(&s, &json!({"path": "/tmp/*.log"}), Input::Json).unwrap_err();
        assert_eq!(e["path"], "not a valid filename");
        let e = validate(&s, &json!({}), Input::Json).unwrap_err();
        assert_eq!(e["path"], "required field missing");
    }
}
