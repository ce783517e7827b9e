//! request-transformer and response-transformer for Envoy nodes, where
//! they only touch headers: Envoy's `header_mutation` filter, one per-route
//! list of mutations in Kong's order (remove, replace, add, append).
//! Anything else (bodies, query strings, the method or URI, `rename`,
//! Kong's `$(...)` templates) is left to gantry-proxy.

use super::super::model::PluginInst;
use envoy_types::pb::envoy::config::common::mutation_rules::v3::{
    HeaderMutation as Mutation, header_mutation::Action,
};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::{
    HeaderMutation, HeaderMutationPerRoute, Mutations,
};
use serde_json::Value;

pub const HEADER_MUTATION: &str = "envoy.filters.http.header_mutation";

/// The filter in the chain: no mutations of its own; routes bring theirs.
pub fn filter() -> HeaderMutation {
    HeaderMutation::default()
}

/// The per-route config for a route's transformers, when every one that
/// applies can be said with header mutations. Returns the ids expressed.
pub fn route(
    request: Option<&PluginInst>,
    response: Option<&PluginInst>,
) -> Option<(HeaderMutationPerRoute, Vec<String>)> {
    let mut m = Mutations::default();
    let mut ids = Vec::new();
    if let Some(p) = request
        && let Some(list) = headers_only(&p.config, &["body", "querystring"])
    {
        m.request_mutations = list;
        ids.push(p.id.clone());
    }
    if let Some(p) = response
        && let Some(list) = headers_only(&p.config, &["json", "json_types"])
    {
        m.response_mutations = list;
        ids.push(p.id.clone());
    }
    if ids.is_empty() {
        return None;
    }
    Some((HeaderMutationPerRoute { mutations: Some(m) }, ids))
}

fn list<'a>(c: &'a Value, op: &str, field: &str) -> impl Iterator<Item = &'a str> {
    c[op][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
}

/// A header name Envoy may set here: not a pseudo-header or `host`
/// (Envoy refuses or reroutes on those).
fn settable(name: &str) -> bool {
    !name.is_empty() && !name.starts_with(':') && !name.eq_ignore_ascii_case("host")
}

/// Kong's header operations as Envoy mutations, or None when the config
/// does more than headers, or something Envoy would read differently.
fn headers_only(c: &Value, other_fields: &[&str]) -> Option<Vec<Mutation>> {
    for op in ["remove", "rename", "replace", "add", "append"] {
        for f in other_fields {
            if list(c, op, f).next().is_some() {
                return None;
            }
        }
    }
    if list(c, "rename", "headers").next().is_some()
        || !c["http_method"].is_null()
        || !c["replace"]["uri"].is_null()
    {
        return None;
    }
    let mut out = Vec::new();
    for name in list(c, "remove", "headers") {
        if !settable(name) {
            return None;
        }
        out.push(Mutation {
            action: Some(Action::Remove(name.to_ascii_lowercase())),
        });
    }
    // Kong: replace only what is there, add only what is not, append always.
    for (op, how) in [
        ("replace", HeaderAppendAction::OverwriteIfExists),
        ("add", HeaderAppendAction::AddIfAbsent),
        ("append", HeaderAppendAction::AppendIfExistsOrAdd),
    ] {
        for entry in list(c, op, "headers") {
            let (name, value) = entry.split_once(':')?;
            // `%` is Envoy's formatter syntax; `$(` is Kong's template.
            if !settable(name) || value.contains('%') || value.contains("$(") {
                return None;
            }
            out.push(Mutation {
                action: Some(Action::Append(HeaderValueOption {
                    header: Some(HeaderValue {
                        key: name.to_ascii_lowercase(),
                        value: value.to_string(),
                        ..Default::default()
                    }),
                    append_action: how as i32,
                    keep_empty_value: true,
                    ..Default::default()
                })),
            });
        }
    }
    if out.is_empty() {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kong_header_operations_map_in_kong_order() {
        let c = json!({
            "http_method": null,
            "remove": {"headers": ["X-Drop"], "body": [], "querystring": []},
            "rename": {"headers": [], "body": [], "querystring": []},
            "replace": {"headers": ["X-Swap:new"], "body": [], "querystring": [], "uri": null},
            "add": {"headers": ["X-Added:1"], "body": [], "querystring": []},
            "append": {"headers": ["X-Multi:a"], "body": [], "querystring": []},
        });
        let list = headers_only(&c, &["body", "querystring"]).expect("headers only");
        let actions: Vec<(String, Option<i32>)> = list
            .iter()
            .map(|m| match m.action.as_ref().unwrap() {
                Action::Remove(n) => (n.clone(), None),
                Action::Append(o) => (
                    o.header.as_ref().unwrap().key.clone(),
                    Some(o.append_action),
                ),
                Action::RemoveOnMatch(_) => unreachable!(),
            })
            .collect();
        assert_eq!(
            actions,
            vec![
                ("x-drop".into(), None),
                (
                    "x-swap".into(),
                    Some(HeaderAppendAction::OverwriteIfExists as i32)
                ),
                (
                    "x-added".into(),
                    Some(HeaderAppendAction::AddIfAbsent as i32)
                ),
                (
                    "x-multi".into(),
                    Some(HeaderAppendAction::AppendIfExistsOrAdd as i32)
                ),
            ]
        );
    }

    #[test]
    fn anything_beyond_plain_headers_is_left_to_gantry_proxy() {
        let base = json!({"add": {"headers": ["X-A:1"], "body": [], "querystring": []}});
        assert!(headers_only(&base, &["body", "querystring"]).is_some());
        for bad in [
            json!({"add": {"headers": ["X-A:1"], "body": ["k:v"]}}),
            json!({"add": {"headers": ["X-A:1"]}, "http_method": "POST"}),
            json!({"add": {"headers": ["X-A:1"]}, "replace": {"uri": "/x"}}),
            json!({"rename": {"headers": ["a:b"]}}),
            json!({"add": {"headers": ["X-A:$(headers.b)"]}}),
            json!({"add": {"headers": ["X-A:50%"]}}),
            json!({"add": {"headers": ["Host:example.com"]}}),
            json!({"add": {"headers": []}}),
        ] {
            assert!(
                headers_only(&bad, &["body", "querystring"]).is_none(),
                "{bad}"
            );
        }
    }
}
