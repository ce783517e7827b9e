//! `http-log`: Kong 3.x's schema (the deprecated `retry_count`,
//! `queue_size` and `flush_timeout` taken as Kong takes them).

use super::common::{http_url, no_lua, queue};
use crate::schema::{Field, FieldErrors, Record, field_error};
use serde_json::{Map, Value, json};

pub fn schema() -> Record {
    Record::new()
        .field(
            "http_endpoint",
            Field::string()
                .required()
                .custom(http_url)
                .secret()
                .referenceable()
                .describe("Where batches are sent. Secret: it may carry credentials (`https://user:pass@host/`)."),
        )
        .field(
            "method",
            Field::string()
                .default(json!("POST"))
                .one_of(&["POST", "PUT", "PATCH"]),
        )
        .field(
            "content_type",
            Field::string()
                .default(json!("application/json"))
                .one_of(&["application/json", "application/json; charset=utf-8"]),
        )
        .field("timeout", Field::number().default(json!(10000)))
        .field("keepalive", Field::number().default(json!(60000)))
        .field("retry_count", Field::integer())
        .field("queue_size", Field::integer())
        .field("flush_timeout", Field::number())
        .field(
            "headers",
            Field::map(Field::string().secret().referenceable()),
        )
        .field("queue", Field::record(queue()).required())
        .field("custom_fields_by_lua", Field::map(Field::string()).custom(no_lua))
        .check(headers_allowed)
        .check(no_double_authorization)
}

/// Headers Kong does not let the plugin set: the log server's own.
fn headers_allowed(c: &Map<String, Value>) -> Result<(), FieldErrors> {
    let Some(Value::Object(h)) = c.get("headers") else {
        return Ok(());
    };
    for k in h.keys() {
        for reserved in ["Host", "Content-Length", "Content-Type"] {
            if k.eq_ignore_ascii_case(reserved) {
                return Err(field_error(
                    "headers",
                    format!("cannot contain '{reserved}' header"),
                ));
            }
        }
    }
    Ok(())
}

/// Kong's custom validator: user info in the URL and an Authorization
/// header would be two credentials.
fn no_double_authorization(c: &Map<String, Value>) -> Result<(), FieldErrors> {
    let userinfo = c
        .get("http_endpoint")
        .and_then(Value::as_str)
        .and_then(|u| url::Url::parse(u).ok())
        .is_some_and(|u| !u.username().is_empty() || u.password().is_some());
    let authorization = matches!(c.get("headers"), Some(Value::Object(h))
        if h.keys().any(|k| k.eq_ignore_ascii_case("authorization")));
    if userinfo && authorization {
        return Err(crate::schema::entity_error(
            "specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed",
        ));
    }
    Ok(())
}

/// The deprecated fields, moved where Kong moves them: `queue_size` to
/// `queue.max_batch_size`, `flush_timeout` to `queue.max_coalescing_delay`
/// (when the queue does not set them); `retry_count` no longer does
/// anything in Kong 3.x and is kept as given.
pub fn normalize(config: &mut Value) -> Result<(), FieldErrors> {
    let Some(c) = config.as_object_mut() else {
        return Ok(());
    };
    let moves = [
        ("queue_size", "max_batch_size"),
        ("flush_timeout", "max_coalescing_delay"),
    ];
    for (old, new) in moves {
        let Some(v) = c.get(old).filter(|v| !v.is_null()).cloned() else {
            continue;
        };
        let q = c
            .entry("queue")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(q) = q
            && q.get(new).is_none_or(Value::is_null)
        {
            q.insert(new.to_string(), v);
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
        let c = validate(
            &s,
            &json!({"http_endpoint": "http://logs.test/in"}),
            Input::Json,
        )
        .unwrap();
        assert_eq!(c["method"], "POST");
        assert_eq!(c["content_type"], "application/json");
        assert_eq!(c["timeout"], 10000);
        assert_eq!(c["queue"]["max_batch_size"], 1);
        assert_eq!(c["queue"]["max_coalescing_delay"], 1);
        assert_eq!(c["queue"]["max_entries"], 10000);
        assert_eq!(c["queue"]["initial_retry_delay"], 0.01);
        let e = validate(&s, &json!({}), Input::Json).unwrap_err();
        assert_eq!(e["http_endpoint"], "required field missing");
        let e = validate(
            &s,
            &json!({"http_endpoint": "http://l.test", "headers": {"content-type": "text/plain"}}),
            Input::Json,
        )
        .unwrap_err();
        assert_eq!(e["headers"], "cannot contain 'Content-Type' header");
        let e = validate(
            &s,
            &json!({"http_endpoint": "http://u:p@l.test", "headers": {"Authorization": "x"}}),
            Input::Json,
        )
        .unwrap_err();
        assert!(
            e["@entity"][0].as_str().unwrap().contains("user info"),
            "{e:?}"
        );
        let e = validate(
            &s,
            &json!({"http_endpoint": "http://l.test", "custom_fields_by_lua": {"a": "return 1"}}),
            Input::Json,
        )
        .unwrap_err();
        assert!(
            e["custom_fields_by_lua"]
                .as_str()
                .unwrap()
                .contains("no Lua"),
            "{e:?}"
        );
        let e = validate(
            &s,
            &json!({"http_endpoint": "http://l.test", "queue": {"max_batch_size": 0}}),
            Input::Json,
        )
        .unwrap_err();
        assert!(e["queue"]["max_batch_size"].is_string(), "{e:?}");
    }

    #[test]
    fn deprecated_fields_move_into_the_queue() {
        let mut c = json!({"http_endpoint": "http://l.test", "queue_size": 50, "flush_timeout": 3});
        super::normalize(&mut c).unwrap();
        let c = validate(&super::schema(), &c, Input::Json).unwrap();
        assert_eq!(c["queue"]["max_batch_size"], 50);
        assert_eq!(c["queue"]["max_coalescing_delay"], 3);
    }
}
