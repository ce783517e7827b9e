//! Kong plugins that Envoy's own HTTP filters can express, for Envoy
//! nodes: key-auth (with acl) as `api_key_auth`, ip-restriction as `rbac`,
//! cors as `cors`, jwt as `jwt_authn` (`envoy_native/jwt.rs`), rate-limiting as
//! `local_ratelimit` (`envoy_native/ratelimit.rs`), header-only
//! request/response-transformer as `header_mutation`
//! (`envoy_native/transform.rs`).
//! The status codes are Kong's; the bodies are Envoy's. An instance is
//! emitted only when the filter gives the same answers; anything else
//! (consumer-scoped instances, `anonymous`, a non-403 ip-restriction status,
//! ...) is left to gantry-proxy and listed for Envoy nodes at `/fleet`.
//!
//! The filters sit in Envoy listeners' chains disabled, and each route that
//! needs one enables it with its per-route config (Envoy's `FilterConfig`).
//! gantry-proxy ignores these per-route entries: its chain has no such
//! filters.

mod jwt;
mod ratelimit;
mod transform;

use super::model::{Model, PluginInst};
use super::plugins::Resolved;
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::envoy::extensions::filters::http::api_key_auth::v3::{
    ApiKeyAuth, ApiKeyAuthPerRoute, Credential, Forwarding, KeySource,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{Rbac, RbacPerRoute};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use envoy_types::util::pack_any;
pub use jwt::JWT_AUTHN;
pub use ratelimit::LOCAL_RATELIMIT;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
pub use transform::HEADER_MUTATION;

pub const API_KEY_AUTH: &str = "envoy.filters.http.api_key_auth";
pub const RBAC: &str = "envoy.filters.http.rbac";
pub const CORS: &str = "envoy.filters.http.cors";

/// Envoy's filters for Envoy nodes, and what they enforce.
#[derive(Default)]
pub struct Native {
    pub http_filters: Vec<HttpFilter>,
    pub per_route: HashMap<String, Vec<(String, Any)>>,
    /// Instance ids expressed.
    pub enforced: HashSet<String>,
}

/// The client name Envoy forwards: the consumer's username, else its id
/// (what Kong's `X-Consumer-Username` / `X-Consumer-ID` say).
fn client_of(c: &super::model::Consumer) -> String {
    c.username.clone().unwrap_or_else(|| c.id.clone())
}

pub fn build(m: &Model, resolved: &[Resolved<'_>]) -> Native {
    let mut n = Native::default();
    let mut any_key_auth = false;
    let mut any_rbac = false;
    let mut any_cors = false;
    let mut any_ratelimit = false;
    let mut any_mutation = false;
    let mut jwt = jwt::Jwt::default();
    for r in resolved {
        let mut entries = Vec::new();
        if let Some(p) = r.default.get("cors")
            && let Some(policy) = cors_policy(p)
        {
            // The cors filter is on in the chain and acts where a route
            // has a policy.
            entries.push((CORS.to_string(), pack_any(policy)));
            n.enforced.insert(p.id.clone());
            any_cors = true;
        }
        if let Some(p) = r.default.get("ip-restriction")
            && let Some(rules) = ip_rules(p)
        {
            entries.push((
                RBAC.to_string(),
                enable(pack_any(RbacPerRoute {
                    rbac: Some(Rbac {
                        rules: Some(rules),
                        ..Default::default()
                    }),
                })),
            ));
            n.enforced.insert(p.id.clone());
            any_rbac = true;
        }
        if let Some(p) = r.default.get("jwt")
            && let Some(per) = jwt.route(m, p)
        {
            entries.push((JWT_AUTHN.to_string(), enable(pack_any(per))));
            n.enforced.insert(p.id.clone());
        }
        if let Some(p) = r.default.get("key-auth")
            && let Some(mut per) = key_auth(p)
        {
            // acl rides along as the clients allowed on the route.
            if let Some(a) = r.default.get("acl")
                && let Some(clients) = allowed_clients(m, a)
            {
                per.allowed_clients = clients;
                n.enforced.insert(a.id.clone());
            }
            entries.push((API_KEY_AUTH.to_string(), enable(pack_any(per))));
            n.enforced.insert(p.id.clone());
            any_key_auth = true;
        }
        if let Some((p, per)) = ratelimit::route(m, r) {
            entries.push((LOCAL_RATELIMIT.to_string(), enable(pack_any(per))));
            n.enforced.insert(p.id.clone());
            any_ratelimit = true;
        }
        if let Some((per, ids)) = transform::route(
            r.default.get("request-transformer").copied(),
            r.default.get("response-transformer").copied(),
        ) {
            entries.push((HEADER_MUTATION.to_string(), pack_any(per)));
            n.enforced.extend(ids);
            any_mutation = true;
        }
        if !entries.is_empty() {
            n.per_route.insert(r.route.id.clone(), entries);
        }
    }
    // Kong's order: ip-restriction, then CORS preflights, then
    // authentication (jwt, then key-auth), then rate limiting.
    if any_rbac {
        n.http_filters
            .push(disabled(RBAC, pack_any(Rbac::default())));
    }
    if any_cors {
        n.http_filters.push(HttpFilter {
            name: CORS.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Cors::default(),
            ))),
            ..Default::default()
        });
    }
    if !jwt.is_empty() {
        n.http_filters.push(disabled(JWT_AUTHN, jwt.filter()));
    }
    if any_key_auth {
        let credentials = m
            .consumers
            .values()
            .flat_map(|c| {
                c.keyauth.iter().map(move |(_, key)| Credential {
                    key: key.clone(),
                    client: client_of(c),
                })
            })
            .collect();
        n.http_filters.push(disabled(
            API_KEY_AUTH,
            pack_any(ApiKeyAuth {
                credentials,
                key_sources: vec![header_source("apikey"), query_source("apikey")],
                forwarding: None,
            }),
        ));
    }
    if any_ratelimit {
        n.http_filters
            .push(disabled(LOCAL_RATELIMIT, pack_any(ratelimit::filter())));
    }
    // Transforms after rate limiting, as in Kong; without mutations of its
    // own, the filter acts only where a route brings some.
    if any_mutation {
        n.http_filters.push(HttpFilter {
            name: HEADER_MUTATION.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                transform::filter(),
            ))),
            ..Default::default()
        });
    }
    n
}

/// In the chain but off until a route turns it on.
fn disabled(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        disabled: true,
        ..Default::default()
    }
}

/// A route's config that also turns the filter on.
fn enable(config: Any) -> Any {
    pack_any(FilterConfig {
        config: Some(config),
        is_optional: false,
        disabled: false,
    })
}

fn header_source(name: &str) -> KeySource {
    KeySource {
        header: name.into(),
        ..Default::default()
    }
}

fn query_source(name: &str) -> KeySource {
    KeySource {
        query: name.into(),
        ..Default::default()
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// key-auth as `api_key_auth`, when it means the same: no anonymous
/// consumer, no key in the body.
fn key_auth(p: &PluginInst) -> Option<ApiKeyAuthPerRoute> {
    let c = &p.config;
    if c["anonymous"].as_str().is_some_and(|a| !a.is_empty())
        || c["key_in_body"].as_bool() == Some(true)
        || c["run_on_preflight"].as_bool() == Some(false)
    {
        return None;
    }
    let in_header = c["key_in_header"].as_bool().unwrap_or(true);
    let in_query = c["key_in_query"].as_bool().unwrap_or(true);
    let mut key_sources = Vec::new();
    for name in strings(&c["key_names"]) {
        if in_header {
            key_sources.push(header_source(&name));
        }
        if in_query {
            key_sources.push(query_source(&name));
        }
    }
    if key_sources.is_empty() {
        return None;
    }
    Some(ApiKeyAuthPerRoute {
        key_sources,
        forwarding: Some(Forwarding {
            header: "x-consumer-username".into(),
            hide_credentials: c["hide_credentials"].as_bool().unwrap_or(false),
        }),
        ..Default::default()
    })
}

/// acl as the clients (consumers) allowed: the members of `allow`, or
/// everyone outside `deny`. None when no consumer would be allowed, which
/// Envoy reads as "everyone" (the instance is then left to gantry-proxy).
fn allowed_clients(m: &Model, acl: &PluginInst) -> Option<Vec<String>> {
    let allow = strings(&acl.config["allow"]);
    let deny = strings(&acl.config["deny"]);
    let clients: Vec<String> = m
        .consumers
        .values()
        .filter(|c| {
            let member = |list: &[String]| c.groups.iter().any(|g| list.contains(g));
            if allow.is_empty() {
                !member(&deny)
            } else {
                member(&allow)
            }
        })
        .map(client_of)
        .collect();
    (!clients.is_empty()).then_some(clients)
}

/// cors as Envoy's CorsPolicy. Not with `preflight_continue` (Envoy answers
/// preflights itself).
fn cors_policy(p: &PluginInst) -> Option<CorsPolicy> {
    let c = &p.config;
    if c["preflight_continue"].as_bool() == Some(true) {
        return None;
    }
    let origins = strings(&c["origins"]);
    let matchers = if origins.is_empty() || origins.iter().any(|o| o == "*") {
        vec![StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                regex: ".*".into(),
                ..Default::default()
            })),
            ..Default::default()
        }]
    } else {
        origins
            .iter()
            .map(|o| {
                let plain = o
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'-'));
                StringMatcher {
                    match_pattern: Some(if plain {
                        MatchPattern::Exact(o.clone())
                    } else {
                        MatchPattern::SafeRegex(RegexMatcher {
                            regex: o.clone(),
                            ..Default::default()
                        })
                    }),
                    ignore_case: plain,
                }
            })
            .collect()
    };
    let joined = |k: &str| strings(&c[k]).join(",");
    Some(CorsPolicy {
        allow_origin_string_match: matchers,
        allow_methods: joined("methods"),
        allow_headers: joined("headers"),
        expose_headers: joined("exposed_headers"),
        max_age: c["max_age"]
            .as_f64()
            .map(|m| (m as u64).to_string())
            .unwrap_or_default(),
        allow_credentials: Some(BoolValue {
            value: c["credentials"].as_bool().unwrap_or(false),
        }),
        allow_private_network_access: Some(BoolValue {
            value: c["private_network"].as_bool().unwrap_or(false),
        }),
        // Kong answers every preflight itself.
        forward_not_matching_preflights: Some(BoolValue { value: false }),
        ..Default::default()
    })
}

fn cidr(s: &str) -> Option<CidrRange> {
    let net: ipnet::IpNet = s
        .parse()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))?;
    Some(CidrRange {
        address_prefix: net.network().to_string(),
        prefix_len: Some(UInt32Value {
            value: u32::from(net.prefix_len()),
        }),
    })
}

fn any_of(list: &[String]) -> Option<Principal> {
    let ids = list
        .iter()
        .map(|s| {
            cidr(s).map(|c| Principal {
                identifier: Some(principal::Identifier::RemoteIp(c)),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
    })
}

/// ip-restriction as RBAC rules: allowed when in `allow` (if set) and not
/// in `deny`. Only with Kong's default 403, which is RBAC's.
fn ip_rules(p: &PluginInst) -> Option<RbacRules> {
    let c = &p.config;
    if c["status"].as_f64().is_some_and(|s| s != 403.0) {
        return None;
    }
    let allow = strings(&c["allow"]);
    let deny = strings(&c["deny"]);
    let mut all = Vec::new();
    if !allow.is_empty() {
        all.push(any_of(&allow)?);
    }
    if !deny.is_empty() {
        all.push(Principal {
            identifier: Some(principal::Identifier::NotId(Box::new(any_of(&deny)?))),
        });
    }
    let principal = match all.len() {
        0 => return None,
        1 => all.remove(0),
        _ => Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set { ids: all })),
        },
    };
    Some(RbacRules {
        action: rbac::Action::Allow as i32,
        policies: [(
            "ip-restriction".to_string(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(permission::Rule::Any(true)),
                }],
                principals: vec![principal],
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
