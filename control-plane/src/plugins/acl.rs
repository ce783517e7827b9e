//! `acl`: Kong 3.x's schema, plus Kong Enterprise's `include_consumer_groups`.

use super::common::{at_least_one_of, entity_errors, is_nonempty, only_one_of_msg};
use crate::schema::{Field, FieldErrors, Record};
use serde_json::{Map, Value, json};

pub fn schema() -> Record {
    Record::new()
        .field(
            "allow",
            Field::array(Field::string())
                .describe("Groups allowed; exactly one of allow or deny must be set."),
        )
        .field(
            "deny",
            Field::array(Field::string())
                .describe("Groups denied; exactly one of allow or deny must be set."),
        )
        .field(
            "hide_groups_header",
            Field::boolean().required().default(json!(false)),
        )
        .field(
            "always_use_authenticated_groups",
            Field::boolean().required().default(json!(false)),
        )
        .field(
            "include_consumer_groups",
            Field::boolean()
                .required()
                .default(json!(false))
                .describe("As in Kong Enterprise: also match the consumer's consumer-group names."),
        )
        .check(allow_xor_deny)
}

/// Kong's `only_one_of` then `at_least_one_of` on allow/deny. Both run on
/// Kong's null-filled entity, so an empty config gets both messages.
fn allow_xor_deny(c: &Map<String, Value>) -> Result<(), FieldErrors> {
    const F: &[&str] = &["allow", "deny"];
    let set = F.iter().filter(|f| is_nonempty(c.get(**f))).count();
    let mut msgs = Vec::new();
    if set != 1 {
        msgs.push(only_one_of_msg(F));
    }
    msgs.extend(at_least_one_of(c, F));
    entity_errors(msgs)
}

#[cfg(test)]
mod tests {
    use crate::schema::{Input, validate};
    use serde_json::json;

    #[test]
    fn allow_or_deny() {
        let s = super::schema();
        let c = validate(&s, &json!({"allow": ["admins"]}), Input::Json).unwrap();
        assert_eq!(c["deny"], json!(null));
        assert_eq!(c["hide_groups_header"], false);
        assert_eq!(c["include_consumer_groups"], false);
        let e = validate(&s, &json!({"allow": ["a"], "deny": ["b"]}), Input::Json).unwrap_err();
        assert_eq!(
            e["@entity"],
            json!(["exactly one of these fields must be non-empty: 'config.allow', 'config.deny'"])
        );
        let e = validate(&s, &json!({}), Input::Json).unwrap_err();
        assert_eq!(
            e["@entity"],
            json!([
                "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'",
                "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
            ])
        );
        assert!(validate(&s, &json!({"deny": "banned"}), Input::Form).is_ok());
    }
}
