//! `jwt`: Kong 3.x fields, plus Gantry's Envoy `jwt_authn`-style providers
//! (issuer/audiences/JWKS), claim-to-header copying and `forward`.

use super::common::{conditional, header_name};
use crate::schema::{Field, FieldErrors, Record};
use serde_json::{Map, Value, json};

pub fn schema() -> Record {
    Record::new()
        .field("uri_param_names", Field::set(Field::string()).default(json!(["jwt"])))
        .field("cookie_names", Field::set(Field::string()).default(json!([])))
        .field("key_claim_name", Field::string().default(json!("iss")))
        .field("secret_is_base64", Field::boolean().required().default(json!(false)))
        .field("claims_to_verify", Field::set(Field::string().one_of(&["exp", "nbf"])))
        .field("anonymous", Field::string())
        .field("run_on_preflight", Field::boolean().required().default(json!(true)))
        .field(
            "maximum_expiration",
            Field::number().default(json!(0)).between(0.0, 31_536_000.0).describe(
                "A value between 0 and 31536000 (365 days) limiting the lifetime of the JWT to \
                 maximum_expiration seconds in the future.",
            ),
        )
        .field("header_names", Field::set(Field::string()).default(json!(["authorization"])))
        .field("realm", Field::string())
        .field(
            "providers",
            Field::array(Field::record(provider())).describe(
                "Gantry extension, after Envoy's jwt_authn: JWT issuers verified with a JWKS instead \
                 of consumer jwt credentials. A token is accepted when any provider verifies it.",
            ),
        )
        .field(
            "claims_to_headers",
            Field::array(Field::record(
                Record::new()
                    .field("claim", Field::string().required().len_min(1))
                    .field("header", Field::string().required().custom(header_name)),
            ))
            .describe("Gantry extension: copy a verified token's claim into a request header sent upstream."),
        )
        .field(
            "forward",
            Field::boolean()
                .required()
                .default(json!(true))
                .describe("Gantry extension: forward the token upstream (Kong always does); false strips it."),
        )
        .check(max_expiration_needs_exp)
        .check(distinct_provider_names)
}

fn provider() -> Record {
    let remote = Record::new()
        .field(
            "uri",
            Field::string()
                .required()
                .custom(super::common::http_url)
                .describe("JWKS URL (http or https)."),
        )
        .field(
            "cache_duration",
            Field::integer()
                .default(json!(300))
                .between(0.0, 31_536_000.0)
                .describe("Seconds a fetched JWKS is cached."),
        )
        .field(
            "stale_while_error",
            Field::integer()
                .default(json!(3600))
                .between(0.0, 31_536_000.0)
                .describe("Seconds a cached JWKS keeps serving while refreshes fail."),
        )
        .field(
            "timeout",
            Field::integer()
                .default(json!(5000))
                .between(1.0, 2_147_483_646.0)
                .describe("JWKS fetch timeout, in ms."),
        );
    Record::new()
        .field(
            "name",
            Field::string()
                .required()
                .len_min(1)
                .describe("Unique provider name."),
        )
        .field(
            "issuer",
            Field::string().describe("Required `iss` claim; unset accepts any issuer."),
        )
        .field(
            "audiences",
            Field::array(Field::string()).describe("Accepted `aud` values; unset skips the check."),
        )
        .field(
            "local_jwks",
            Field::string()
                .custom(jwks)
                .describe("Inline JWKS, as JSON text."),
        )
        .field(
            "remote_jwks",
            Field::record(remote).describe("JWKS fetched over HTTP(S)."),
        )
        .check(one_jwks_source)
}

/// A JWKS must be a JSON object whose `keys` is an array of key objects.
fn jwks(v: &Value) -> Result<(), String> {
    let doc: Value = serde_json::from_str(v.as_str().unwrap_or_default())
        .map_err(|e| format!("local_jwks is not valid JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("local_jwks must be a JSON object with a 'keys' array")?;
    if keys
        .iter()
        .all(|k| k.get("kty").is_some_and(Value::is_string))
    {
        Ok(())
    } else {
        Err("every key in local_jwks must be an object with a string 'kty'".into())
    }
}

fn one_jwks_source(p: &Map<String, Value>) -> Result<(), FieldErrors> {
    let set = |k: &str| super::common::is_nonempty(p.get(k));
    if set("local_jwks") != set("remote_jwks") {
        return Ok(());
    }
    Err(crate::schema::entity_error(
        "exactly one of these fields must be non-empty: 'local_jwks', 'remote_jwks'",
    ))
}

/// Kong's conditional: `maximum_expiration > 0` needs `exp` verified. As in
/// Kong, an unset `claims_to_verify` passes (the null matches no validator).
fn max_expiration_needs_exp(c: &Map<String, Value>) -> Result<(), FieldErrors> {
    let max = c
        .get("maximum_expiration")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    match c.get("claims_to_verify").and_then(Value::as_array) {
        Some(claims) if max > 0.0 && !claims.iter().any(|x| x == "exp") => Err(conditional(
            "maximum_expiration",
            crate::schema::field_error("claims_to_verify", "expected to contain: exp"),
        )),
        _ => Ok(()),
    }
}

/// Provider names key the data plane's JWKS caches, as in Envoy's map.
fn distinct_provider_names(c: &Map<String, Value>) -> Result<(), FieldErrors> {
    let Some(list) = c.get("providers").and_then(Value::as_array) else {
        return Ok(());
    };
    let mut seen = Vec::new();
    let mut errs = vec![Value::Null; list.len()];
    let mut bad = false;
    for (i, p) in list.iter().enumerate() {
        let name = p["name"].as_str().unwrap_or_default();
        if seen.contains(&name) {
            errs[i] = json!({ "name": format!("duplicate provider name '{name}'") });
            bad = true;
        }
        seen.push(name);
    }
    if bad {
        Err(Map::from_iter([(
            "providers".to_string(),
            Value::Array(errs),
        )]))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::schema::{Input, validate};
    use serde_json::json;

    fn v(cfg: serde_json::Value) -> Result<serde_json::Value, crate::schema::FieldErrors> {
        validate(&super::schema(), &cfg, Input::Json)
    }

    #[test]
    fn defaults() {
        let c = v(json!({})).unwrap();
        assert_eq!(c["uri_param_names"], json!(["jwt"]));
        assert_eq!(c["cookie_names"], json!([]));
        assert_eq!(c["header_names"], json!(["authorization"]));
        assert_eq!(c["key_claim_name"], "iss");
        assert_eq!(c["secret_is_base64"], false);
        assert_eq!(c["run_on_preflight"], true);
        assert_eq!(c["maximum_expiration"], 0);
        assert_eq!(c["claims_to_verify"], json!(null));
        assert_eq!(c["forward"], true);
    }

    #[test]
    fn maximum_expiration_checks() {
        assert!(v(json!({"maximum_expiration": 60, "claims_to_verify": ["exp", "nbf"]})).is_ok());
        let e = v(json!({"maximum_expiration": -1, "claims_to_verify": ["nbf"]})).unwrap_err();
        assert_eq!(
            e["maximum_expiration"],
            "value should be between 0 and 31536000"
        );
        let e = v(json!({"maximum_expiration": 60, "claims_to_verify": ["nbf"]})).unwrap_err();
        assert_eq!(e["claims_to_verify"], "expected to contain: exp");
        assert_eq!(
            e["@entity"][0],
            "failed conditional validation given value of field 'config.maximum_expiration'"
        );
        // Kong quirk kept: no claims_to_verify at all passes the conditional.
        assert!(v(json!({"maximum_expiration": 60})).is_ok());
        let e = v(json!({"claims_to_verify": ["iat"]})).unwrap_err();
        assert_eq!(e["claims_to_verify"], json!(["expected one of: exp, nbf"]));
    }

    #[test]
    fn providers() {
        let c = v(json!({"providers": [
            {"name": "a", "issuer": "https://idp", "remote_jwks": {"uri": "https://idp/jwks.json"}},
            {"name": "b", "local_jwks": "{\"keys\": [{\"kty\": \"RSA\", \"n\": \"x\", \"e\": \"AQAB\"}]}"}
        ]}))
        .unwrap();
        assert_eq!(
            c["providers"][0]["remote_jwks"],
            json!({"uri": "https://idp/jwks.json", "cache_duration": 300, "stale_while_error": 3600, "timeout": 5000})
        );
        assert_eq!(c["providers"][1]["remote_jwks"], json!(null));

        let e = v(json!({"providers": [{"name": "a"}]})).unwrap_err();
        assert_eq!(
            e["providers"][0]["@entity"][0],
            "exactly one of these fields must be non-empty: 'local_jwks', 'remote_jwks'"
        );
        let both =
            json!({"name": "a", "local_jwks": "{\"keys\":[]}", "remote_jwks": {"uri": "http://x"}});
        assert!(v(json!({"providers": [both]})).is_err());
        let e =
            v(json!({"providers": [{"name": "a", "local_jwks": "{\"nokeys\":1}"}]})).unwrap_err();
        assert!(
            e["providers"][0]["local_jwks"]
                .as_str()
                .unwrap()
                .contains("'keys' array")
        );
        let e = v(json!({"providers": [{"name": "a", "local_jwks": "nope"}]})).unwrap_err();
        assert!(
            e["providers"][0]["local_jwks"]
                .as_str()
                .unwrap()
                .starts_with("local_jwks is not valid JSON")
        );
        let e = v(json!({"providers": [{"name": "a", "remote_jwks": {"uri": "ftp://x/j"}}]}))
            .unwrap_err();
        assert_eq!(
            e["providers"][0]["remote_jwks"]["uri"],
            "scheme must be http or https"
        );
        let e = v(json!({"providers": [{"name": "a", "remote_jwks": {}}]})).unwrap_err();
        assert_eq!(
            e["providers"][0]["remote_jwks"]["uri"],
            "required field missing"
        );

        let p = json!({"name": "a", "local_jwks": "{\"keys\":[]}"});
        let e = v(json!({"providers": [p.clone(), p]})).unwrap_err();
        assert_eq!(
            e["providers"],
            json!([null, {"name": "duplicate provider name 'a'"}])
        );
    }

    #[test]
    fn claims_to_headers() {
        assert!(v(json!({"claims_to_headers": [{"claim": "sub", "header": "X-User"}]})).is_ok());
        let e =
            v(json!({"claims_to_headers": [{"claim": "sub", "header": "X User"}]})).unwrap_err();
        assert!(
            e["claims_to_headers"][0]["header"]
                .as_str()
                .unwrap()
                .starts_with("bad header name")
        );
        let e = v(json!({"claims_to_headers": [{"header": "X-User"}]})).unwrap_err();
        assert_eq!(e["claims_to_headers"][0]["claim"], "required field missing");
    }

    #[test]
    fn form_coercion() {
        let c = validate(
            &super::schema(),
            &json!({"maximum_expiration": "60", "claims_to_verify": "exp"}),
            Input::Form,
        )
        .unwrap();
        assert_eq!(c["maximum_expiration"].as_f64(), Some(60.0));
        assert_eq!(c["claims_to_verify"], json!(["exp"]));
    }
}
