//! `prometheus`: Kong 3.x's schema. Every switch defaults off, as in Kong:
//! the plugin alone exports only the node-level gauges.

use crate::schema::{Field, Record};
use serde_json::json;

pub fn schema() -> Record {
    let switch = || Field::boolean().default(json!(false));
    Record::new()
        .field("per_consumer", switch())
        .field("status_code_metrics", switch())
        .field("ai_metrics", switch())
        .field("latency_metrics", switch())
        .field("bandwidth_metrics", switch())
        .field("upstream_health_metrics", switch())
        .field("wasm_metrics", switch())
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
            json!({"per_consumer": false, "status_code_metrics": false, "ai_metrics": false,
                   "latency_metrics": false, "bandwidth_metrics": false,
                   "upstream_health_metrics": false, "wasm_metrics": false})
        );
        let e = validate(&s, &json!({"per_consumer": "yes"}), Input::Json).unwrap_err();
        assert_eq!(e["per_consumer"], "expected a boolean");
        let e = validate(&s, &json!({"per_route": true}), Input::Json).unwrap_err();
        assert_eq!(e["per_route"], "unknown field");
        let c = validate(&s, &json!({"latency_metrics": "true"}), Input::Form).unwrap();
        assert_eq!(c["latency_metrics"], true);
    }
}
