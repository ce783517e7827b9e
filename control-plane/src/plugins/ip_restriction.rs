//! `ip-restriction`: Kong 3.x's schema (IPv4 and IPv6 addresses and CIDRs).

use super::common::{at_least_one_of, entity_errors, ip_or_cidr};
use crate::schema::{Field, Record};

pub fn schema() -> Record {
    Record::new()
        .field(
            "allow",
            Field::array(Field::string().custom(ip_or_cidr))
                .describe("IPs or CIDR ranges allowed."),
        )
        .field(
            "deny",
            Field::array(Field::string().custom(ip_or_cidr)).describe("IPs or CIDR ranges denied."),
        )
        .field(
            "status",
            Field::number().describe("HTTP status of rejected requests (Kong: 403)."),
        )
        .field(
            "message",
            Field::string().describe("Body of rejected requests."),
        )
        .check(|c| entity_errors(at_least_one_of(c, &["allow", "deny"]).into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use crate::schema::{Input, validate};
    use serde_json::json;

    #[test]
    fn checks() {
        let s = super::schema();
        let ok = json!({"allow": ["127.0.0.1", "10.0.0.0/8", "::1", "::/0", "2001:db8::/32"], "deny": ["1.2.3.4/32"]});
        let c = validate(&s, &ok, Input::Json).unwrap();
        assert_eq!(c["status"], json!(null));
        let e = validate(&s, &json!({"allow": [], "deny": []}), Input::Json).unwrap_err();
        assert_eq!(
            e["@entity"],
            json!([
                "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
            ])
        );
        let e = validate(
            &s,
            &json!({"allow": ["0.0.0.0/a", "0.0.0.0/33", "::1/129", "hello"]}),
            Input::Json,
        )
        .unwrap_err();
        assert_eq!(
            e["allow"],
            json!([
                "invalid ip or cidr range: '0.0.0.0/a'",
                "invalid ip or cidr range: '0.0.0.0/33'",
                "invalid ip or cidr range: '::1/129'",
                "invalid ip or cidr range: 'hello'"
            ])
        );
        let c = validate(
            &s,
            &json!({"deny": "10.0.0.1", "status": "401"}),
            Input::Form,
        )
        .unwrap();
        assert_eq!(c["deny"], json!(["10.0.0.1"]));
        assert_eq!(c["status"].as_f64(), Some(401.0));
    }
}
