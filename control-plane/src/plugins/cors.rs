//! `cors`: Kong 3.x's schema. Origins other than `*` must compile as a
//! regex, as Kong requires (Rust `regex` syntax, not PCRE: no look-around
//! or back-references).

use crate::schema::{Field, Record};
use serde_json::{Value, json};

const METHODS: &[&str] = &[
    "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

pub fn schema() -> Record {
    Record::new()
        .field(
            "origins",
            Field::array(Field::string().custom(asterisk_or_regex))
                .describe("Allowed origins: `*`, exact origins or regexes. Unset allows all."),
        )
        .field("headers", Field::array(Field::string()))
        .field("exposed_headers", Field::array(Field::string()))
        .field(
            "methods",
            Field::array(Field::string().one_of(METHODS)).default(json!(METHODS)),
        )
        .field(
            "max_age",
            Field::number().describe("Seconds a preflight result may be cached."),
        )
        .field(
            "credentials",
            Field::boolean().required().default(json!(false)),
        )
        .field(
            "private_network",
            Field::boolean().required().default(json!(false)),
        )
        .field(
            "preflight_continue",
            Field::boolean().required().default(json!(false)),
        )
        .field(
            "allow_origin_absent",
            Field::boolean().required().default(json!(true)),
        )
}

fn asterisk_or_regex(v: &Value) -> Result<(), String> {
    let o = v.as_str().unwrap_or_default();
    if o == "*" || (!repeats_a_repetition(o) && regex::Regex::new(o).is_ok()) {
        Ok(())
    } else {
        Err(format!("'{o}' is not a valid regex"))
    }
}

/// `a**` compiles in Rust's regex (a repeated repetition) but PCRE, which
/// Kong uses, refuses it ("nothing to repeat"); reject it the same way.
fn repeats_a_repetition(re: &str) -> bool {
    let (mut prev_quantifier, mut escaped, mut in_class, mut prev) = (false, false, false, '\0');
    for c in re.chars() {
        let quantifier =
            !escaped && !in_class && (matches!(c, '*' | '+' | '}') || (c == '?' && prev != '('));
        if !escaped && !in_class && c == '*' && prev_quantifier {
            return true;
        }
        match c {
            '\\' if !escaped => escaped = true,
            '[' if !escaped => (in_class, escaped) = (true, false),
            ']' if !escaped => (in_class, escaped) = (false, false),
            _ => escaped = false,
        }
        prev_quantifier = quantifier;
        prev = c;
    }
    false
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
            c["methods"],
            json!([
                "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"
            ])
        );
        assert_eq!(c["credentials"], false);
        assert_eq!(c["allow_origin_absent"], true);
        assert_eq!(c["origins"], json!(null));
        for ok in ["*", "example.com", r".*\.example(?:-foo)?\.com"] {
            assert!(
                validate(&s, &json!({"origins": [ok]}), Input::Json).is_ok(),
                "{ok}"
            );
        }
        let e = validate(
            &s,
            &json!({"origins": [".*.example.com", "invalid_**regex"]}),
            Input::Json,
        )
        .unwrap_err();
        assert_eq!(
            e["origins"],
            json!([null, "'invalid_**regex' is not a valid regex"])
        );
        assert!(
            validate(
                &s,
                &json!({"origins": ["a*?b", r"\**", "[*]*"]}),
                Input::Json
            )
            .is_ok()
        );
        let e = validate(&s, &json!({"methods": ["FAKE"]}), Input::Json).unwrap_err();
        assert_eq!(
            e["methods"][0],
            "expected one of: GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS, TRACE, CONNECT"
        );
        let c = validate(
            &s,
            &json!({"max_age": "3600", "credentials": "true"}),
            Input::Form,
        )
        .unwrap();
        assert_eq!(c["max_age"].as_f64(), Some(3600.0));
        assert_eq!(c["credentials"], true);
    }
}
