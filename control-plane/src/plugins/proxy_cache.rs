//! `proxy-cache`: Kong 3.x's schema, plus Gantry's `max_size_bytes`.
//! Only the `memory` strategy exists (as in Kong OSS); `memory.dictionary_name`
//! names a cache region in Gantry rather than an nginx shared dict, so Kong's
//! "missing shared dict" check has no equivalent.

use super::common::gt_zero;
use crate::schema::{Field, Record};
use serde_json::json;

pub fn schema() -> Record {
    Record::new()
        .field(
            "response_code",
            Field::array(Field::integer().between(100.0, 900.0))
                .required()
                .default(json!([200, 301, 404]))
                .len_min(1)
                .describe("Upstream status codes considered cacheable."),
        )
        .field(
            "request_method",
            Field::array(Field::string().one_of(&["HEAD", "GET", "POST", "PATCH", "PUT"]))
                .required()
                .default(json!(["GET", "HEAD"])),
        )
        .field(
            "content_type",
            Field::array(Field::string())
                .required()
                .default(json!(["text/plain", "application/json"]))
                .describe("Cacheable upstream content types, matched exactly."),
        )
        .field(
            "cache_ttl",
            Field::integer().default(json!(300)).custom(gt_zero).describe("TTL of cache entries, in seconds."),
        )
        .field(
            "strategy",
            Field::string().required().one_of(&["memory"]).describe("Backing store; only `memory` (per proxy) exists."),
        )
        .field("cache_control", Field::boolean().required().default(json!(false)))
        .field("ignore_uri_case", Field::boolean().default(json!(false)))
        .field("storage_ttl", Field::integer().describe("Seconds entries are kept in storage, whatever their TTL."))
        .field(
            "memory",
            Field::record(
                Record::new().field("dictionary_name", Field::string().required().default(json!("kong_db_cache"))),
            )
            .describe("Entries of plugins with the same dictionary_name share one cache."),
        )
        .field("vary_query_params", Field::array(Field::string()))
        .field("vary_headers", Field::array(Field::string()))
        .field(
            "response_headers",
            Field::record(
                Record::new()
                    .field("age", Field::boolean().default(json!(true)))
                    .field("X-Cache-Status", Field::boolean().default(json!(true)))
                    .field("X-Cache-Key", Field::boolean().default(json!(true))),
            ),
        )
        .field(
            "max_size_bytes",
            Field::integer().default(json!(104_857_600)).custom(gt_zero).describe(
                "Gantry extension: the most bytes the memory cache of this dictionary holds per proxy; \
                 least recently used entries are evicted beyond it.",
            ),
        )
}

#[cfg(test)]
mod tests {
    use crate::schema::{Input, validate};
    use serde_json::json;

    #[test]
    fn defaults_and_checks() {
        let s = super::schema();
        let c = validate(&s, &json!({"strategy": "memory"}), Input::Json).unwrap();
        assert_eq!(c["response_code"], json!([200, 301, 404]));
        assert_eq!(c["request_method"], json!(["GET", "HEAD"]));
        assert_eq!(c["content_type"], json!(["text/plain", "application/json"]));
        assert_eq!(c["cache_ttl"], 300);
        assert_eq!(c["memory"], json!({"dictionary_name": "kong_db_cache"}));
        assert_eq!(
            c["response_headers"],
            json!({"age": true, "X-Cache-Status": true, "X-Cache-Key": true})
        );
        assert_eq!(c["max_size_bytes"], 104_857_600);
        assert_eq!(c["ignore_uri_case"], false);

        let e = validate(&s, &json!({}), Input::Json).unwrap_err();
        assert_eq!(e["strategy"], "required field missing");
        let e = validate(&s, &json!({"strategy": "redis"}), Input::Json).unwrap_err();
        assert_eq!(e["strategy"], "expected one of: memory");
        let bad = |cfg: serde_json::Value| validate(&s, &cfg, Input::Json).unwrap_err();
        assert_eq!(
            bad(json!({"strategy": "memory", "response_code": [99]}))["response_code"],
            json!(["value should be between 100 and 900"])
        );
        assert_eq!(
            bad(json!({"strategy": "memory", "response_code": []}))["response_code"],
            "length must be at least 1"
        );
        assert_eq!(
            bad(json!({"strategy": "memory", "response_code": ""}))["response_code"],
            "expected an array"
        );
        assert_eq!(
            bad(json!({"strategy": "memory", "response_code": [123.5]}))["response_code"],
            json!(["expected an integer"])
        );
        assert_eq!(
            bad(json!({"strategy": "memory", "cache_ttl": -1}))["cache_ttl"],
            "value must be greater than 0"
        );
        assert_eq!(
            bad(json!({"strategy": "memory", "request_method": ["DELETE"]}))["request_method"][0],
            "expected one of: HEAD, GET, POST, PATCH, PUT"
        );

        let c = validate(
            &s,
            &json!({"strategy": "memory", "cache_ttl": "60", "response_code": {"1": "200", "2": "404"}}),
            Input::Form,
        )
        .unwrap();
        assert_eq!(c["cache_ttl"], 60);
        assert_eq!(c["response_code"], json!([200, 404]));
    }
}
