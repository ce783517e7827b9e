//! Fences: what a refused update takes out of service.
//!
//! A refused update leaves the last good configuration running, as in
//! Envoy. For routing that is right; for policies it is not: the refused
//! update may carry a revocation (a deleted credential, a new deny rule)
//! or a policy on a route that had none, and serving the old version would
//! let requests through that the operator has already shut out. So a
//! refusal that touches policies fences what it touches: those routes
//! answer 500 until an update of the same resource is accepted.
//!
//! - A listener whose plugin filter (consumers, credentials, plugin
//!   instances) changed in the refused update: its routes that run
//!   plugins are fenced. Routes without plugins keep serving.
//! - A route configuration whose refused update has, or replaces, a route
//!   with plugins: the whole route configuration is fenced, since which
//!   old route would catch a new route's requests cannot be known without
//!   compiling it. A refused route entry likewise fences the route
//!   configuration it fills.
//!
//! Updates of clusters, endpoints and secrets carry no request policy and
//! fence nothing.

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use gantry_shared::proto::route::RouteEntry;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Fenced resources, by name, with the reason of the refusal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fences {
    /// Listeners whose routes with plugins refuse requests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listeners: BTreeMap<String, String>,
    /// Route configurations whose every route refuses requests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub route_configs: BTreeMap<String, String>,
    /// Route entries, by name: (their route configuration, whose every
    /// route refuses requests; the reason).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub route_entries: BTreeMap<String, (String, String)>,
}

impl Fences {
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty() && self.route_configs.is_empty() && self.route_entries.is_empty()
    }

    /// Whether a request on `listener`, routed by `route_config` to a
    /// route that runs plugins (or not), must be refused.
    pub fn refuses(&self, listener: &str, route_config: &str, has_plugins: bool) -> bool {
        self.route_configs.contains_key(route_config)
            || (has_plugins && self.listeners.contains_key(listener))
            || self.route_entries.values().any(|(c, _)| c == route_config)
    }

    /// After an update of listener `name` was refused: fences it when the
    /// refused version's plugin filter differs from the running one's.
    /// `candidate` is `None` when the refused resource did not decode.
    /// Returns whether anything changed.
    pub fn listener_refused(
        &mut self,
        name: &str,
        running: Option<&Listener>,
        candidate: Option<&Listener>,
        reason: &str,
    ) -> bool {
        // A listener that is not running serves nothing to fence.
        let Some(running) = running else {
            return false;
        };
        let same = match candidate {
            Some(c) => match (plugin_filters(running), plugin_filters(c)) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
            None => false,
        };
        if same {
            return false;
        }
        self.listeners.insert(name.to_string(), reason.to_string());
        true
    }

    /// After an update of route configuration `name` was refused: fences
    /// it when either version has a route with plugins (or the refused one
    /// did not decode).
    pub fn route_config_refused(
        &mut self,
        name: &str,
        running: Option<&RouteConfiguration>,
        candidate: Option<&RouteConfiguration>,
        reason: &str,
    ) -> bool {
        let Some(running) = running else {
            return false;
        };
        let touches_policy = match candidate {
            Some(c) => has_plugins(running) || has_plugins(c),
            None => true,
        };
        if !touches_policy {
            return false;
        }
        self.route_configs
            .insert(name.to_string(), reason.to_string());
        true
    }

    /// After an update of route entry `name` was refused: fences its route
    /// configuration when either version has a route with plugins (or the
    /// refused one did not decode), for the reason the configuration's
    /// fence gives.
    pub fn route_entry_refused(
        &mut self,
        name: &str,
        running: Option<&RouteEntry>,
        candidate: Option<&RouteEntry>,
        reason: &str,
    ) -> bool {
        let Some(running) = running else {
            return false;
        };
        let touches_policy = match candidate {
            Some(c) => entry_has_plugins(running) || entry_has_plugins(c),
            None => true,
        };
        if !touches_policy {
            return false;
        }
        self.route_entries.insert(
            name.to_string(),
            (running.route_configuration.clone(), reason.to_string()),
        );
        true
    }

    /// An update of route entry `name` was accepted (or it was removed).
    pub fn route_entry_settled(&mut self, name: &str) -> bool {
        self.route_entries.remove(name).is_some()
    }

    /// An update of listener `name` was accepted (or it was removed).
    pub fn listener_settled(&mut self, name: &str) -> bool {
        self.listeners.remove(name).is_some()
    }

    /// An update of route configuration `name` was accepted (or it was removed).
    pub fn route_config_settled(&mut self, name: &str) -> bool {
        self.route_configs.remove(name).is_some()
    }

    /// One line per fence, as `LDS/name: reason` and `RDS/name: reason`.
    pub fn describe(&self) -> Vec<String> {
        let l = self.listeners.iter().map(|(n, r)| format!("LDS/{n}: {r}"));
        let r = self
            .route_configs
            .iter()
            .map(|(n, r)| format!("RDS/{n}: {r}"));
        let e = self
            .route_entries
            .iter()
            .map(|(n, (_, r))| format!("RouteEntry/{n}: {r}"));
        l.chain(r).chain(e).collect()
    }
}

/// The encoded plugin filter config of every filter chain, in order;
/// `None` when a connection manager does not decode.
fn plugin_filters(l: &Listener) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        for f in &chain.filters {
            let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                continue;
            };
            if !any.type_url.ends_with("HttpConnectionManager") {
                continue;
            }
            let hcm = HttpConnectionManager::decode(any.value.as_slice()).ok()?;
            for h in hcm.http_filters {
                if let Some(http_filter::ConfigType::TypedConfig(c)) = h.config_type
                    && c.type_url == crate::plugins::GATEWAY_TYPE
                {
                    out.push(c.value);
                }
            }
        }
    }
    Some(out)
}

/// Whether a virtual host or route carries the plugin filter's per-route config.
fn has_plugins(rc: &RouteConfiguration) -> bool {
    let name = crate::plugins::FILTER_NAME;
    rc.virtual_hosts.iter().any(|v| {
        v.typed_per_filter_config.contains_key(name)
            || v.routes
                .iter()
                .any(|r| r.typed_per_filter_config.contains_key(name))
    })
}

/// Whether a route of the entry carries the plugin filter's per-route config.
fn entry_has_plugins(e: &RouteEntry) -> bool {
    let name = crate::plugins::FILTER_NAME;
    e.routes.iter().any(|r| {
        r.route
            .as_ref()
            .is_some_and(|r| r.typed_per_filter_config.contains_key(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain};
    use envoy_types::pb::envoy::config::route::v3::{Route, VirtualHost};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
    use envoy_types::pb::google::protobuf::Any;
    use envoy_types::util::pack_any;

    fn listener(gateway: Option<&[u8]>, stat_prefix: &str) -> Listener {
        let mut http_filters = Vec::new();
        if let Some(g) = gateway {
            http_filters.push(HttpFilter {
                name: crate::plugins::FILTER_NAME.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                    type_url: crate::plugins::GATEWAY_TYPE.into(),
                    value: g.to_vec(),
                })),
                is_optional: true,
                ..Default::default()
            });
        }
        let hcm = HttpConnectionManager {
            stat_prefix: stat_prefix.into(),
            http_filters,
            ..Default::default()
        };
        Listener {
            name: "l".into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "hcm".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn routes(plugins: bool, prefix: &str) -> RouteConfiguration {
        let mut r = Route {
            name: prefix.into(),
            ..Default::default()
        };
        if plugins {
            r.typed_per_filter_config
                .insert(crate::plugins::FILTER_NAME.into(), Any::default());
        }
        RouteConfiguration {
            name: "http".into(),
            virtual_hosts: vec![VirtualHost {
                name: "all".into(),
                routes: vec![r],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_listener_is_fenced_only_when_its_plugin_filter_changed() {
        let mut f = Fences::default();
        let running = listener(Some(b"v1"), "a");
        // Something else changed: the policies stand as they are.
        assert!(!f.listener_refused("l", Some(&running), Some(&listener(Some(b"v1"), "b")), "x"));
        assert!(f.is_empty());
        // A listener not yet running has nothing to fence.
        assert!(!f.listener_refused("l", None, Some(&listener(Some(b"v2"), "a")), "x"));
        assert!(f.listener_refused(
            "l",
            Some(&running),
            Some(&listener(Some(b"v2"), "a")),
            "bad plugin"
        ));
        assert!(f.refuses("l", "http", true));
        assert!(
            !f.refuses("l", "http", false),
            "routes without plugins keep serving"
        );
        assert!(!f.refuses("other", "http", true));
        assert_eq!(f.describe(), vec!["LDS/l: bad plugin".to_string()]);
        assert!(f.listener_settled("l"));
        assert!(f.is_empty());
        // The first plugin filter, and an undecodable listener, fence too.
        let bare = listener(None, "a");
        assert!(f.listener_refused("l", Some(&bare), Some(&listener(Some(b"v1"), "a")), "x"));
        let mut f = Fences::default();
        assert!(f.listener_refused("l", Some(&bare), None, "does not decode"));
    }

    #[test]
    fn a_route_configuration_is_fenced_when_policies_are_involved() {
        let mut f = Fences::default();
        let plain = routes(false, "/a");
        assert!(!f.route_config_refused("http", Some(&plain), Some(&routes(false, "/b")), "x"));
        assert!(!f.route_config_refused("http", None, Some(&routes(true, "/b")), "x"));
        assert!(f.is_empty());
        // A policy added to a route that had none.
        assert!(f.route_config_refused(
            "http",
            Some(&plain),
            Some(&routes(true, "/a")),
            "bad regex"
        ));
        assert!(f.refuses("any", "http", false));
        assert!(f.route_config_settled("http"));
        // A route with plugins that the refused version changes or drops.
        assert!(f.route_config_refused("http", Some(&routes(true, "/a")), Some(&plain), "x"));
        let mut f = Fences::default();
        assert!(f.route_config_refused("http", Some(&plain), None, "does not decode"));
    }

    fn entry(plugins: bool, prefix: &str) -> RouteEntry {
        let rc = routes(plugins, prefix);
        RouteEntry {
            name: "http/r1".into(),
            route_configuration: "http".into(),
            domains: Vec::new(),
            routes: rc.virtual_hosts[0]
                .routes
                .iter()
                .map(|r| gantry_shared::proto::route::Ranked {
                    route: Some(r.clone()),
                    rank: vec![1],
                })
                .collect(),
        }
    }

    #[test]
    fn a_route_entry_fences_its_route_configuration_when_policies_are_involved() {
        let mut f = Fences::default();
        let plain = entry(false, "/a");
        assert!(!f.route_entry_refused("http/r1", Some(&plain), Some(&entry(false, "/b")), "x"));
        assert!(!f.route_entry_refused("http/r1", None, Some(&entry(true, "/b")), "x"));
        assert!(f.is_empty());
        assert!(f.route_entry_refused(
            "http/r1",
            Some(&plain),
            Some(&entry(true, "/a")),
            "bad regex"
        ));
        assert!(!f.is_empty());
        assert!(f.refuses("any", "http", false), "the whole configuration");
        assert!(!f.refuses("any", "https", false));
        assert_eq!(
            f.describe(),
            vec!["RouteEntry/http/r1: bad regex".to_string()]
        );
        // Another entry's update does not lift it; its own does.
        assert!(!f.route_entry_settled("http/r2"));
        assert!(f.route_entry_settled("http/r1"));
        assert!(f.is_empty());
        assert!(f.route_entry_refused("http/r1", Some(&plain), None, "does not decode"));
    }

    #[test]
    fn fences_round_trip_through_json() {
        let mut f = Fences::default();
        f.listeners.insert("l".into(), "r".into());
        f.route_configs.insert("http".into(), "r2".into());
        f.route_entries
            .insert("http/r1".into(), ("http".into(), "r3".into()));
        let s = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Fences>(&s).unwrap(), f);
        assert_eq!(serde_json::to_string(&Fences::default()).unwrap(), "{}");
    }
}
