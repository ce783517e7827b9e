//! Kong's plugins on the wire: one `gantry.filters.http.plugins` HTTP
//! filter per listener (consumers, credentials, plugin instances) and, on
//! each route, the instances that apply to it, resolved by Kong's
//! precedence. See `proto/gantry/filters/http/plugins/v1/plugins.proto`.

use super::Flavour;
use super::model::{Model, PluginInst};
use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use gantry_shared::key_digest::key_digest;
use gantry_shared::proto::plugins as pb;
use prost::Message;
use std::collections::{BTreeMap, HashMap};

pub use pb::FILTER_NAME;

/// The plugins gantry-proxy enforces: it refuses a config with any other
/// (see `data-plane/src/plugins/mod.rs`). Envoy skips Gantry's filter and
/// enforces only what `envoy_native` expresses with its own filters.
pub fn enforced_by(flavour: Flavour) -> &'static [&'static str] {
    match flavour {
        Flavour::GantryProxy => pb::GANTRY_PROXY_RUNS,
        Flavour::Envoy => &[],
    }
}

/// Enabled plugins, by name, that `flavour` does not enforce (for `/fleet`).
pub fn unenforced(m: &Model, flavour: Flavour) -> Vec<String> {
    let ok = enforced_by(flavour);
    let mut out: Vec<String> = m
        .plugins
        .iter()
        .filter(|p| match flavour {
            Flavour::GantryProxy => !ok.contains(&p.name.as_str()),
            Flavour::Envoy => !m.envoy_enforced.contains(&p.id),
        })
        .map(|p| p.name.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Plugins whose output names the route and service as Kong does.
const LABELLED: &[&str] = &["prometheus"];
/// Plugins whose entries carry the route and service entities (Kong's
/// log serializer).
pub use pb::LOG_PLUGINS as LOGGING;

/// Kong's precedence, most specific first: consumer+route+service,
/// consumer+route, consumer+service, route+service, consumer, route,
/// service, global. Lower is more specific.
fn rank(p: &PluginInst) -> u8 {
    match (p.consumer.is_some(), p.route.is_some(), p.service.is_some()) {
        (true, true, true) => 0,
        (true, true, false) => 1,
        (true, false, true) => 2,
        (false, true, true) => 3,
        (true, false, false) => 4,
        (false, true, false) => 5,
        (false, false, true) => 6,
        (false, false, false) => 7,
    }
}

/// The listener filter's config, when any plugin is enabled.
pub fn gateway(m: &Model, opts: &super::ProxyOptions) -> Option<Any> {
    if m.plugins.is_empty() {
        return None;
    }
    let g = pb::Gateway {
        consumers: m
            .consumers
            .values()
            .map(|c| pb::Consumer {
                id: c.id.clone(),
                username: c.username.clone().unwrap_or_default(),
                custom_id: c.custom_id.clone().unwrap_or_default(),
                groups: c.groups.clone(),
                keyauth_credentials: c
                    .keyauth
                    .iter()
                    .map(|(id, key)| pb::KeyAuthCredential {
                        id: id.clone(),
                        key_digest: key_digest(&opts.key_salt, key).to_vec(),
                    })
                    .collect(),
                jwt_secrets: c
                    .jwt
                    .iter()
                    .map(|j| pb::JwtCredential {
                        id: j.id.clone(),
                        key: j.key.clone(),
                        algorithm: j.algorithm.clone(),
                        secret: j.secret.clone().unwrap_or_default(),
                        rsa_public_key: j.rsa_public_key.clone().unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
        plugins: m
            .plugins
            .iter()
            .map(|p| pb::Plugin {
                id: p.id.clone(),
                name: p.name.clone(),
                config_json: p.config.to_string(),
                secret_fields: crate::plugins::config_schema(&p.name)
                    .map(crate::schema::secret_pointers)
                    .unwrap_or_default(),
            })
            .collect(),
        trusted_ips: opts.trusted_ips.clone(),
        real_ip_header: opts.real_ip_header.clone(),
        key_salt: opts.key_salt.to_vec(),
    };
    Some(Any {
        type_url: pb::GATEWAY_TYPE.into(),
        value: g.encode_to_vec(),
    })
}

/// The plugin whose instances stack rather than replace one another:
/// a global limit, a service's and a consumer's all apply (a deliberate
/// difference from Kong, see docs/plugins.md).
pub const STACKED: &str = "rate-limiting";

/// The instances that apply to one route, by Kong's precedence.
pub struct Resolved<'a> {
    pub route: &'a super::model::Route,
    pub service: &'a str,
    /// Per plugin name, the instance for everyone (never [`STACKED`]).
    pub default: BTreeMap<&'a str, &'a PluginInst>,
    /// Per (consumer id, plugin name), the instance that replaces it for
    /// that consumer (never [`STACKED`]).
    pub consumer: BTreeMap<(&'a str, &'a str), &'a PluginInst>,
    /// Every rate-limiting instance for everyone, most specific first.
    pub rate_limits: Vec<&'a PluginInst>,
    /// Per consumer id, the rate-limiting instances added for that
    /// consumer, most specific first.
    pub consumer_rate_limits: BTreeMap<&'a str, Vec<&'a PluginInst>>,
}

/// Every route with at least one plugin, resolved.
pub fn resolve(m: &Model) -> Vec<Resolved<'_>> {
    let mut out = Vec::new();
    if m.plugins.is_empty() {
        return out;
    }
    let mut by_route: HashMap<&str, Vec<&PluginInst>> = HashMap::new();
    let mut by_service: HashMap<&str, Vec<&PluginInst>> = HashMap::new();
    let mut global: Vec<&PluginInst> = Vec::new();
    for p in &m.plugins {
        match (&p.route, &p.service) {
            (Some(r), _) => by_route.entry(r).or_default().push(p),
            (None, Some(s)) => by_service.entry(s).or_default().push(p),
            (None, None) => global.push(p),
        }
    }
    for r in &m.routes {
        let Some(service) = r.service.as_deref() else {
            continue;
        };
        let candidates = by_route
            .get(r.id.as_str())
            .into_iter()
            .flatten()
            // A route+service instance applies only with that service.
            .filter(|p| p.service.as_deref().is_none_or(|s| s == service))
            .chain(by_service.get(service).into_iter().flatten())
            .chain(global.iter());
        let mut default: BTreeMap<&str, &PluginInst> = BTreeMap::new();
        let mut consumer: BTreeMap<(&str, &str), &PluginInst> = BTreeMap::new();
        let mut rate_limits: Vec<&PluginInst> = Vec::new();
        let mut consumer_rate_limits: BTreeMap<&str, Vec<&PluginInst>> = BTreeMap::new();
        for p in candidates {
            let stacked = p.name == STACKED;
            match &p.consumer {
                None if stacked => rate_limits.push(p),
                None => keep_best(&mut default, p.name.as_str(), p),
                // A consumer's plugin needs that consumer to exist.
                Some(c) if m.consumers.contains_key(c) => {
                    if stacked {
                        consumer_rate_limits.entry(c.as_str()).or_default().push(p);
                    } else {
                        keep_best(&mut consumer, (c.as_str(), p.name.as_str()), p)
                    }
                }
                Some(_) => {}
            }
        }
        // A consumer-only instance loses to a route+service one.
        consumer.retain(|(_, name), p| default.get(name).is_none_or(|d| rank(d) >= rank(p)));
        if default.is_empty()
            && consumer.is_empty()
            && rate_limits.is_empty()
            && consumer_rate_limits.is_empty()
        {
            continue;
        }
        rate_limits.sort_by_key(|p| rank(p));
        for v in consumer_rate_limits.values_mut() {
            v.sort_by_key(|p| rank(p));
        }
        out.push(Resolved {
            route: r,
            service,
            default,
            consumer,
            rate_limits,
            consumer_rate_limits,
        });
    }
    out
}

/// Per Kong route id, its `typed_per_filter_config` entry: the instances
/// that apply, one per plugin name, and per consumer those that replace
/// them. Routes no plugin applies to are absent.
pub fn per_route(m: &Model, resolved: &[Resolved<'_>]) -> HashMap<String, Any> {
    let mut out = HashMap::new();
    for r in resolved {
        let mut consumer_plugins: BTreeMap<String, pb::PluginIds> = BTreeMap::new();
        for ((c, _), p) in &r.consumer {
            consumer_plugins
                .entry(c.to_string())
                .or_default()
                .ids
                .push(p.id.clone());
        }
        for (c, ps) in &r.consumer_rate_limits {
            let e = consumer_plugins.entry(c.to_string()).or_default();
            e.ids.extend(ps.iter().map(|p| p.id.clone()));
        }
        let stacked =
            (!r.rate_limits.is_empty() || !r.consumer_rate_limits.is_empty()).then_some(&STACKED);
        let mut names: Vec<String> = r
            .default
            .keys()
            .chain(r.consumer.keys().map(|(_, n)| n))
            .chain(stacked)
            .map(|n| n.to_string())
            .collect();
        names.sort();
        names.dedup();
        // Kong's labels for the route's series: name, else id / host.
        let labelled = names.iter().any(|n| LABELLED.contains(&n.as_str()));
        let (route_label, service_label) = match labelled {
            true => (
                r.route.name.clone().unwrap_or_else(|| r.route.id.clone()),
                m.services
                    .get(r.service)
                    .map(|s| s.name.clone().unwrap_or_else(|| s.host.clone()))
                    .unwrap_or_default(),
            ),
            false => Default::default(),
        };
        let log_context = match names.iter().any(|n| LOGGING.contains(&n.as_str())) {
            true => serde_json::json!({
                "route": m.log_entities.get(&r.route.id),
                "service": m.log_entities.get(r.service),
            })
            .to_string(),
            false => String::new(),
        };
        let per = pb::PerRoute {
            route_id: r.route.id.clone(),
            service_id: r.service.to_string(),
            plugins: r
                .default
                .values()
                .chain(&r.rate_limits)
                .map(|p| p.id.clone())
                .collect(),
            consumer_plugins,
            names,
            route_label,
            service_label,
            log_context,
        };
        let wrapped = FilterConfig {
            // As a TypedStruct: route configurations go to Envoy nodes too,
            // and Envoy's /config_dump fails on a type it does not know.
            config: Some(per.to_typed_struct()),
            // Envoy skips it: the filter it configures is optional.
            is_optional: true,
            disabled: false,
        };
        out.insert(r.route.id.clone(), pack_any(wrapped));
    }
    out
}

/// Keeps the more specific of two instances for one key.
fn keep_best<'a, K: Ord>(map: &mut BTreeMap<K, &'a PluginInst>, k: K, p: &'a PluginInst) {
    let e = map.entry(k).or_insert(p);
    if rank(p) < rank(e) {
        *e = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translator::testutil::{route, run, service, stored};
    use serde_json::json;

    fn plugin(name: &str, scope: serde_json::Value) -> crate::store::Stored {
        let config = match name {
            "rate-limiting" => json!({"minute": 1}),
            "acl" => json!({"allow": ["g"]}),
            _ => json!({}),
        };
        let mut v = json!({"name": name, "config": config});
        for (k, val) in scope.as_object().unwrap() {
            v[k] = val.clone();
        }
        stored("plugins", v)
    }

    fn per_route(res: &crate::translator::Resources, route_name: &str) -> Option<pb::PerRoute> {
        let r = res
            .routes
            .iter()
            .flat_map(|rc| &rc.virtual_hosts)
            .flat_map(|vh| &vh.routes)
            .find(|r| r.name.starts_with(&format!("{route_name}#")))?;
        let any = r.typed_per_filter_config.get(FILTER_NAME)?;
        let fc = FilterConfig::decode(any.value.as_slice()).unwrap();
        assert!(fc.is_optional);
        let inner = fc.config.unwrap();
        assert_eq!(
            inner.type_url,
            gantry_shared::proto::typed_struct::TYPE,
            "a type Envoy knows"
        );
        Some(pb::PerRoute::from_any(&inner).unwrap())
    }

    #[test]
    fn kong_precedence_picks_one_instance_per_name_and_limits_stack() {
        let s = service("s", "example.com", 80);
        let r1 = route("r1", &s, json!({"paths": ["/one"]}));
        let r2 = route("r2", &s, json!({"paths": ["/two"]}));
        let c = stored("consumers", json!({"username": "c"}));
        let sid = json!({"id": s.id});
        let (r1id, r2id, cid) = (
            json!({"id": r1.id}),
            json!({"id": r2.id}),
            json!({"id": c.id}),
        );
        let global = plugin("rate-limiting", json!({}));
        let on_service = plugin("rate-limiting", json!({"service": sid}));
        let on_r1 = plugin("rate-limiting", json!({"route": r1id}));
        let on_c = plugin("rate-limiting", json!({"consumer": cid}));
        let on_c_r2 = plugin("rate-limiting", json!({"consumer": cid, "route": r2id}));
        let rs = plugin("correlation-id", json!({"route": r1id, "service": sid}));
        let c_only = plugin("correlation-id", json!({"consumer": cid}));
        let disabled = {
            let mut p = plugin("acl", json!({}));
            p.data["enabled"] = json!(false);
            p
        };
        let res = run(&[
            s.clone(),
            r1.clone(),
            r2.clone(),
            c.clone(),
            global.clone(),
            on_service.clone(),
            on_r1.clone(),
            on_c.clone(),
            on_c_r2.clone(),
            rs.clone(),
            c_only.clone(),
            disabled,
        ]);

        let p1 = per_route(&res, "r1").expect("r1 has plugins");
        assert_eq!(p1.route_id, r1.id);
        assert_eq!(p1.service_id, s.id);
        assert_eq!(
            p1.plugins,
            vec![
                rs.id.clone(),
                on_r1.id.clone(),
                on_service.id.clone(),
                global.id.clone()
            ],
            "one correlation-id (route+service beats the rest); every limit, most specific first"
        );
        // The consumer-only correlation-id loses to route+service (3 < 4);
        // the consumer's limit adds to the others.
        assert_eq!(p1.consumer_plugins[&c.id].ids, vec![on_c.id.clone()]);

        let p2 = per_route(&res, "r2").expect("r2 has plugins");
        assert_eq!(p2.plugins, vec![on_service.id.clone(), global.id.clone()]);
        // No route-level correlation-id here: the consumer-only one applies.
        assert_eq!(
            p2.consumer_plugins[&c.id].ids,
            vec![c_only.id.clone(), on_c_r2.id.clone(), on_c.id.clone()]
        );
        assert_eq!(p2.names, vec!["correlation-id", "rate-limiting"]);

        // gantry-proxy's listener carries every enabled instance and the
        // consumer, in a filter marked optional; Envoy's listener has no
        // such filter (it would only reveal the consumers' credentials).
        assert!(
            gateway_filter(&res).is_none(),
            "Envoy nodes get no plugin filter"
        );
        let ents = [
            s, r1, r2, c, global, on_service, on_r1, on_c, on_c_r2, rs, c_only,
        ];
        let res =
            crate::translator::translate(&ents, Flavour::GantryProxy, &Default::default()).unwrap();
        let (optional, g) = gateway_filter(&res).expect("the plugin filter");
        assert!(optional);
        assert_eq!(g.consumers.len(), 1);
        assert_eq!(g.plugins.len(), 7, "the disabled one is left out");
    }

    #[test]
    fn key_auth_keys_travel_as_salted_digests() {
        let c = stored("consumers", json!({"username": "c"}));
        let k = stored(
            "keyauth_credentials",
            json!({"key": "the-api-key-itself", "consumer": {"id": c.id}}),
        );
        let ents = [c, k.clone(), plugin("key-auth", json!({}))];
        let opts = crate::translator::ProxyOptions {
            key_salt: [9; 32],
            ..Default::default()
        };
        let res = crate::translator::translate(&ents, Flavour::GantryProxy, &opts).unwrap();
        let (_, g) = gateway_filter(&res).expect("the plugin filter");
        assert_eq!(g.key_salt, vec![9; 32]);
        let cred = &g.consumers[0].keyauth_credentials[0];
        assert_eq!(cred.id, k.id);
        assert_eq!(
            cred.key_digest,
            gantry_shared::key_digest::key_digest(&[9; 32], "the-api-key-itself").to_vec()
        );
        let wire = g.encode_to_vec();
        assert!(
            !wire.windows(18).any(|w| w == b"the-api-key-itself"),
            "the key itself is not on the wire"
        );
    }

    fn gateway_filter(res: &crate::translator::Resources) -> Option<(bool, pb::Gateway)> {
        use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, http_filter,
        };
        let Some(ConfigType::TypedConfig(any)) =
            &res.listeners[0].filter_chains[0].filters[0].config_type
        else {
            panic!("no HCM");
        };
        let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        let f = hcm.http_filters.iter().find(|f| f.name == FILTER_NAME)?;
        let Some(http_filter::ConfigType::TypedConfig(g)) = &f.config_type else {
            panic!("untyped plugin filter");
        };
        Some((
            f.is_optional,
            pb::Gateway::decode(g.value.as_slice()).unwrap(),
        ))
    }

    #[test]
    fn no_plugins_no_filter() {
        let s = service("s", "example.com", 80);
        let r = route("r", &s, json!({"paths": ["/"]}));
        let res = run(&[s, r]);
        assert!(per_route(&res, "r").is_none());
        assert!(gateway_filter(&res).is_none());
    }
}
