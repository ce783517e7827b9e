//! `/config_dump`: the resources the proxy runs, in Envoy's layout and
//! proto3 JSON (field names as in the protos), so Envoy's tooling and an
//! operator read a gantry-proxy the way they read an Envoy.
//!
//! Rendered on request from the wire bytes the xDS client holds: nothing
//! decoded is kept between requests. Secrets are redacted by the rules the
//! control plane's CSDS uses (`gantry_shared::redact`). Route
//! configurations filled by Gantry route entries are shown assembled, as
//! the virtual hosts an Envoy node would be sent for the same routes.
//!
//! Query parameters as Envoy's: `include_eds` adds the endpoint
//! assignments, `resource` picks one list (`dynamic_listeners`, ...),
//! `name_regex` keeps the resources whose name matches.

use crate::config::entry_layout;
use crate::xds::state::{Dump, Held, Kind};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::Any;
use gantry_shared::proto::route::RouteEntry;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use std::collections::BTreeMap;
use std::sync::OnceLock;

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

/// What a request asks for.
#[derive(Default)]
pub struct Query {
    pub include_eds: bool,
    pub resource: Option<String>,
    pub name_regex: Option<regex::Regex>,
}

/// Why a dump could not be given (the admin answers 4xx/5xx with it).
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("unknown resource {0:?}: one of {LISTS}")]
    UnknownResource(String),
    #[error("the descriptor set is unreadable: {0}")]
    Descriptors(String),
}

const LISTS: &str = "dynamic_listeners, dynamic_active_clusters, dynamic_route_configs, dynamic_active_secrets, dynamic_endpoint_configs";

/// One section of Envoy's dump: the `ConfigDump` message it is, the list
/// of resources in it, and the message each list item is.
struct Section {
    kind: Kind,
    dump_type: &'static str,
    list: &'static str,
    item_type: &'static str,
    /// The field of the item (or of its `active_state`) holding the resource.
    field: &'static str,
}

const SECTIONS: [Section; 5] = [
    Section {
        kind: Kind::Listener,
        dump_type: "ListenersConfigDump",
        list: "dynamic_listeners",
        item_type: "ListenersConfigDump.DynamicListener",
        field: "listener",
    },
    Section {
        kind: Kind::Cluster,
        dump_type: "ClustersConfigDump",
        list: "dynamic_active_clusters",
        item_type: "ClustersConfigDump.DynamicCluster",
        field: "cluster",
    },
    Section {
        kind: Kind::Route,
        dump_type: "RoutesConfigDump",
        list: "dynamic_route_configs",
        item_type: "RoutesConfigDump.DynamicRouteConfig",
        field: "route_config",
    },
    Section {
        kind: Kind::Secret,
        dump_type: "SecretsConfigDump",
        list: "dynamic_active_secrets",
        item_type: "SecretsConfigDump.DynamicSecret",
        field: "secret",
    },
    Section {
        kind: Kind::Endpoint,
        dump_type: "EndpointsConfigDump",
        list: "dynamic_endpoint_configs",
        item_type: "EndpointsConfigDump.DynamicEndpointConfig",
        field: "endpoint_config",
    },
];

/// Every message type a node can be sent, decoded once on first use.
fn pool() -> Result<&'static DescriptorPool, DumpError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool =
            DescriptorPool::decode(gantry_shared::descriptors::SET).map_err(|e| e.to_string())?;
        pool.add_file_descriptor_proto(typed_struct_file())
            .map_err(|e| e.to_string())?;
        Ok(pool)
    })
    .as_ref()
    .map_err(|e| DumpError::Descriptors(e.clone()))
}

/// `xds.type.v3.TypedStruct`, which envoy-types does not ship the proto
/// of (`gantry_shared::proto::typed_struct` declares its Rust type by hand
/// for the same reason): the per-route plugin config travels in one.
fn typed_struct_file() -> prost_types::FileDescriptorProto {
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};
    let field = |name: &str, number: i32, ty: Type, type_name: Option<&str>| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(ty as i32),
        type_name: type_name.map(str::to_string),
        json_name: Some(name.into()),
        ..Default::default()
    };
    FileDescriptorProto {
        name: Some("xds/type/v3/typed_struct.proto".into()),
        package: Some("xds.type.v3".into()),
        dependency: vec!["google/protobuf/struct.proto".into()],
        message_type: vec![DescriptorProto {
            name: Some("TypedStruct".into()),
            field: vec![
                field("type_url", 1, Type::String, None),
                field("value", 2, Type::Message, Some(".google.protobuf.Struct")),
            ],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// The dump `q` asks for of what `held` holds, as JSON text. Written
/// resource by resource into one buffer: no tree of the whole dump is
/// built, and each message is decoded only while it is written.
pub fn render(held: Dump, q: &Query) -> Result<Vec<u8>, DumpError> {
    let pool = pool()?;
    let only = match &q.resource {
        Some(r) => Some(
            SECTIONS
                .iter()
                .position(|s| s.list == r)
                .ok_or_else(|| DumpError::UnknownResource(r.clone()))?,
        ),
        None => None,
    };
    let mut by_kind: BTreeMap<Kind, Vec<(String, Held)>> = BTreeMap::new();
    for (kind, name, h) in held.resources {
        by_kind.entry(kind).or_default().push((name, h));
    }
    let entries = route_entries(by_kind.remove(&Kind::RouteEntry).unwrap_or_default());
    let mut out = Vec::with_capacity(64 * 1024);
    out.extend_from_slice(b"{\"configs\":[");
    let mut first_config = true;
    for (i, section) in SECTIONS.iter().enumerate() {
        let wanted = match only {
            Some(o) => o == i,
            // Envoy leaves endpoints out unless asked.
            None => section.kind != Kind::Endpoint || q.include_eds,
        };
        if !wanted {
            continue;
        }
        if only.is_none() {
            comma(&mut out, &mut first_config);
            out.extend_from_slice(b"{\"@type\":");
            string(&mut out, &format!("{ADMIN}{}", section.dump_type));
            if matches!(section.kind, Kind::Listener | Kind::Cluster)
                && let Some(v) = held.system_versions.get(&section.kind)
            {
                out.extend_from_slice(b",\"version_info\":");
                string(&mut out, v);
            }
            out.extend_from_slice(b",\"");
            out.extend_from_slice(section.list.as_bytes());
            out.extend_from_slice(b"\":[");
        }
        let mut first_item = true;
        for (name, h) in by_kind.get(&section.kind).into_iter().flatten() {
            if q.name_regex.as_ref().is_some_and(|re| !re.is_match(name)) {
                continue;
            }
            // In `resource` mode the items are the configs, typed.
            let item_type = only.map(|_| format!("{ADMIN}{}", section.item_type));
            if only.is_some() {
                comma(&mut out, &mut first_config);
            } else {
                comma(&mut out, &mut first_item);
            }
            item(
                &mut out,
                section,
                item_type.as_deref(),
                name,
                &h.version,
                |out| match section.kind {
                    Kind::Route => route_config(out, pool, &h.any, entries.get(name.as_str())),
                    _ => message(out, pool, &gantry_shared::redact::resource(&h.any)),
                },
            );
        }
        if only.is_none() {
            out.extend_from_slice(b"]}");
        }
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// One list item, shaped as Envoy's message for that list; `body` writes
/// the resource.
fn item(
    out: &mut Vec<u8>,
    section: &Section,
    item_type: Option<&str>,
    name: &str,
    version: &str,
    body: impl FnOnce(&mut Vec<u8>),
) {
    out.push(b'{');
    if let Some(t) = item_type {
        out.extend_from_slice(b"\"@type\":");
        string(out, t);
        out.push(b',');
    }
    match section.kind {
        Kind::Listener => {
            out.extend_from_slice(b"\"name\":");
            string(out, name);
            out.extend_from_slice(b",\"active_state\":{");
        }
        Kind::Secret => {
            out.extend_from_slice(b"\"name\":");
            string(out, name);
            out.push(b',');
        }
        _ => {}
    }
    out.extend_from_slice(b"\"version_info\":");
    string(out, version);
    out.extend_from_slice(b",\"");
    out.extend_from_slice(section.field.as_bytes());
    out.extend_from_slice(b"\":");
    body(out);
    if section.kind == Kind::Listener {
        out.push(b'}');
    }
    out.push(b'}');
}

/// Route entries by the route configuration they fill, decoded, in name
/// order (the order the proxy compiles them in).
fn route_entries(held: Vec<(String, Held)>) -> BTreeMap<String, Vec<RouteEntry>> {
    let mut out: BTreeMap<String, Vec<RouteEntry>> = BTreeMap::new();
    for (name, h) in held {
        match RouteEntry::decode(h.any.value.as_slice()) {
            Ok(e) => out
                .entry(e.route_configuration.clone())
                .or_default()
                .push(e),
            // Held bytes were decoded when they arrived.
            Err(e) => {
                tracing::error!(resource = %name, error = %e, "a held route entry no longer decodes")
            }
        }
    }
    out
}

/// A route configuration as an Envoy node gets it. One without virtual
/// hosts of its own is a gantry-proxy node's shell, filled by its route
/// entries: written with the virtual hosts `config::assemble` would give
/// it, each route rendered once however many hosts hold it. One with
/// virtual hosts is written as sent. Route configurations hold no secrets.
fn route_config(
    out: &mut Vec<u8>,
    pool: &DescriptorPool,
    shell: &Any,
    entries: Option<&Vec<RouteEntry>>,
) {
    let filled = match RouteConfiguration::decode(shell.value.as_slice()) {
        Ok(rc) => rc.virtual_hosts.is_empty(),
        Err(_) => false,
    };
    if !filled {
        return message(out, pool, shell);
    }
    let refs: Vec<&RouteEntry> = entries.into_iter().flatten().collect();
    let (routes, laid) = entry_layout(&refs);
    let mut rendered: Vec<Option<Vec<u8>>> = vec![None; routes.len()];
    let has_fields = open(
        out,
        pool,
        Some(&shell.type_url),
        ROUTE_CONFIGURATION,
        &shell.value,
    );
    if laid.is_empty() {
        out.push(b'}');
        return;
    }
    if has_fields {
        out.push(b',');
    }
    out.extend_from_slice(b"\"virtual_hosts\":[");
    for (i, v) in laid.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let vh = VirtualHost {
            name: v.name.clone(),
            domains: vec![v.domain.clone()],
            ..Default::default()
        };
        let has_fields = open(out, pool, None, VIRTUAL_HOST, &vh.encode_to_vec());
        if !v.routes.is_empty() {
            if has_fields {
                out.push(b',');
            }
            out.extend_from_slice(b"\"routes\":[");
            for (j, r) in v.routes.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                let json = rendered[*r as usize].get_or_insert_with(|| {
                    let mut one = Vec::new();
                    let bytes = routes[*r as usize].encode_to_vec();
                    open(&mut one, pool, None, ROUTE, &bytes);
                    one.push(b'}');
                    one
                });
                out.extend_from_slice(json);
            }
            out.push(b']');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

const ROUTE_CONFIGURATION: &str = "envoy.config.route.v3.RouteConfiguration";
const VIRTUAL_HOST: &str = "envoy.config.route.v3.VirtualHost";
const ROUTE: &str = "envoy.config.route.v3.Route";

/// `any` as proto3 JSON with its `@type` first.
fn message(out: &mut Vec<u8>, pool: &DescriptorPool, any: &Any) {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    open(out, pool, Some(&any.type_url), name, &any.value);
    out.push(b'}');
}

/// Writes `bytes`, a `type_name` message, as a JSON object without its
/// closing brace (so fields can follow), `@type` first when given; says
/// whether any field was written. What cannot be rendered is written as
/// an `error` field instead of the message's.
fn open(
    out: &mut Vec<u8>,
    pool: &DescriptorPool,
    type_url: Option<&str>,
    type_name: &str,
    bytes: &[u8],
) -> bool {
    out.push(b'{');
    let mut has_fields = false;
    if let Some(t) = type_url {
        out.extend_from_slice(b"\"@type\":");
        string(out, t);
        has_fields = true;
    }
    let start = out.len();
    let rendered = pool
        .get_message_by_name(type_name)
        .ok_or_else(|| format!("no descriptor for {type_name}"))
        .and_then(|desc| DynamicMessage::decode(desc, bytes).map_err(|e| e.to_string()))
        .and_then(|msg| {
            let options = SerializeOptions::new().use_proto_field_name(true);
            let mut ser = serde_json::Serializer::new(&mut *out);
            msg.serialize_with_options(&mut ser, &options)
                .map_err(|e| e.to_string())
        });
    match rendered {
        Ok(()) => {
            // `{...}` was written: keep what is between the braces.
            let inner = out.len().saturating_sub(start + 2);
            out.copy_within(start + 1..start + 1 + inner, start);
            out.truncate(start + inner);
            if inner > 0 {
                if has_fields {
                    out.insert(start, b',');
                }
                has_fields = true;
            }
        }
        Err(e) => {
            out.truncate(start);
            if has_fields {
                out.push(b',');
            }
            out.extend_from_slice(b"\"error\":");
            string(out, &format!("not rendered: {e}"));
            has_fields = true;
        }
    }
    has_fields
}

fn comma(out: &mut Vec<u8>, first: &mut bool) {
    if !std::mem::take(first) {
        out.push(b',');
    }
}

/// `s` as a JSON string.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::{
        assignment, cluster, http_listener, lb_endpoint, prefix, route_config, vhost,
    };
    use envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType;
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        Secret, TlsCertificate, secret,
    };
    use envoy_types::util::pack_any;
    use gantry_shared::proto::route::Ranked;
    use serde_json::{Value, json};

    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n";

    fn held(kind: Kind, name: &str, any: Any) -> (Kind, String, Held) {
        let version = format!("v-{name}");
        (kind, name.into(), Held { version, any })
    }

    fn inline(s: &str) -> Option<DataSource> {
        Some(DataSource {
            specifier: Some(Specifier::InlineString(s.into())),
            ..Default::default()
        })
    }

    fn entry(id: &str, domains: &[&str], rank: u8, path: &str) -> Any {
        let mut route = prefix(id, path, "c1");
        let per_route = gantry_shared::proto::plugins::PerRoute {
            route_id: id.into(),
            plugins: vec!["p1".into()],
            names: vec!["key-auth".into()],
            ..Default::default()
        };
        route.typed_per_filter_config.insert(
            gantry_shared::proto::plugins::FILTER_NAME.into(),
            per_route.to_typed_struct(),
        );
        let e = RouteEntry {
            name: format!("http/{id}"),
            route_configuration: "http".into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: vec![Ranked {
                route: Some(route),
                rank: vec![rank],
            }],
        };
        Any {
            type_url: gantry_shared::xds::ROUTE_ENTRY.into(),
            value: e.encode_to_vec(),
        }
    }

    fn sample() -> Dump {
        let secret = Secret {
            name: "cert".into(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline("CHAIN"),
                private_key: inline(KEY),
                ..Default::default()
            })),
        };
        let eps = vec![lb_endpoint("127.0.0.1", 9000, Some(3), "")];
        let mut system_versions = BTreeMap::new();
        system_versions.insert(Kind::Listener, "7".to_string());
        Dump {
            resources: vec![
                held(
                    Kind::Cluster,
                    "c1",
                    pack_any(cluster("c1", DiscoveryType::Eds, vec![])),
                ),
                held(Kind::Endpoint, "c1", pack_any(assignment("c1", eps))),
                held(Kind::Secret, "cert", pack_any(secret)),
                held(
                    Kind::Listener,
                    "http",
                    pack_any(http_listener("http", 8000, "http")),
                ),
                held(
                    Kind::Listener,
                    "admin-ish",
                    pack_any(http_listener("admin-ish", 8002, "old")),
                ),
                held(Kind::Route, "http", pack_any(route_config("http", vec![]))),
                held(
                    Kind::Route,
                    "old",
                    pack_any(route_config(
                        "old",
                        vec![vhost("v", &["*"], vec![prefix("o", "/o", "c1")])],
                    )),
                ),
                held(Kind::RouteEntry, "http/a", entry("a", &["a.test"], 2, "/a")),
                held(Kind::RouteEntry, "http/b", entry("b", &[], 1, "/b")),
            ],
            system_versions,
        }
    }

    fn dump(q: &Query) -> Value {
        let text = render(sample(), q).unwrap();
        serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&text)))
    }

    fn section<'a>(v: &'a Value, ty: &str) -> &'a Value {
        v["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["@type"] == format!("{ADMIN}{ty}"))
            .unwrap_or_else(|| panic!("no {ty} in {v}"))
    }

    #[test]
    fn resources_render_in_envoys_layout() {
        let v = dump(&Query::default());
        let listeners = section(&v, "ListenersConfigDump");
        assert_eq!(listeners["version_info"], "7");
        let l = listeners["dynamic_listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "http")
            .unwrap();
        assert_eq!(l["name"], "http");
        assert_eq!(l["active_state"]["version_info"], "v-http");
        let listener = &l["active_state"]["listener"];
        assert_eq!(
            listener["@type"],
            "type.googleapis.com/envoy.config.listener.v3.Listener"
        );
        assert_eq!(listener["address"]["socket_address"]["port_value"], 8000);
        let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["rds"]["route_config_name"], "http");

        let clusters = section(&v, "ClustersConfigDump");
        assert_eq!(
            clusters["dynamic_active_clusters"][0]["cluster"]["type"],
            "EDS"
        );
        // Endpoints only when asked, as Envoy.
        assert!(
            v["configs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["@type"] != format!("{ADMIN}EndpointsConfigDump"))
        );
        let with_eds = dump(&Query {
            include_eds: true,
            ..Default::default()
        });
        let eds = section(&with_eds, "EndpointsConfigDump");
        let lb = &eds["dynamic_endpoint_configs"][0]["endpoint_config"]["endpoints"][0]["lb_endpoints"]
            [0];
        assert_eq!(
            lb["endpoint"]["address"]["socket_address"]["port_value"],
            9000
        );
        assert_eq!(lb["load_balancing_weight"], 3);
    }

    #[test]
    fn route_entries_show_as_the_virtual_hosts_an_envoy_node_gets() {
        let v = dump(&Query::default());
        let routes = &section(&v, "RoutesConfigDump")["dynamic_route_configs"];
        let http = &routes[0]["route_config"];
        assert_eq!(http["name"], "http");
        let hosts: Vec<(String, Vec<String>)> = http["virtual_hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vh| {
                let names = vh["routes"].as_array().unwrap().iter();
                (
                    vh["domains"][0].as_str().unwrap().to_string(),
                    names
                        .map(|r| r["name"].as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect();
        // a.test holds its own route and the host-less one, by rank; `*`
        // the host-less one alone.
        assert_eq!(
            hosts,
            vec![
                ("a.test".to_string(), vec!["b".to_string(), "a".to_string()]),
                ("*".to_string(), vec!["b".to_string()])
            ]
        );
        let a = &http["virtual_hosts"][0]["routes"][1];
        assert_eq!(a["match"]["prefix"], "/a");
        assert_eq!(a["route"]["cluster"], "c1");
        // The per-route plugin config, a TypedStruct, renders as one.
        let per_route = &a["typed_per_filter_config"][gantry_shared::proto::plugins::FILTER_NAME];
        assert_eq!(
            per_route["@type"], "type.googleapis.com/xds.type.v3.TypedStruct",
            "{per_route}"
        );
        assert_eq!(
            per_route["value"]["names"],
            json!(["key-auth"]),
            "{per_route}"
        );
        // A configuration with its own virtual hosts is shown as sent.
        assert_eq!(
            routes[1]["route_config"]["virtual_hosts"][0]["routes"][0]["name"],
            "o"
        );
    }

    #[test]
    fn written_route_configurations_are_the_assembled_messages() {
        // The streamed writer against the whole assembled message rendered
        // at once: the same JSON.
        let held = sample();
        let by_name = |n: &str| {
            held.resources
                .iter()
                .find(|(k, name, _)| *k == Kind::Route && name == n)
                .map(|(_, _, h)| h.any.clone())
                .unwrap()
        };
        let entries: Vec<RouteEntry> = held
            .resources
            .iter()
            .filter(|(k, _, _)| *k == Kind::RouteEntry)
            .map(|(_, _, h)| RouteEntry::decode(h.any.value.as_slice()).unwrap())
            .collect();
        let shell = RouteConfiguration::decode(by_name("http").value.as_slice()).unwrap();
        let pool = pool().unwrap();
        // With the entries, and with none (what Envoy gets for no routes).
        for given in [Some(&entries), None] {
            let refs: Vec<&RouteEntry> = given.into_iter().flatten().collect();
            let whole = crate::config::assemble(&shell, &refs);
            let desc = pool.get_message_by_name(ROUTE_CONFIGURATION).unwrap();
            let msg = DynamicMessage::decode(desc, whole.encode_to_vec().as_slice()).unwrap();
            let options = SerializeOptions::new().use_proto_field_name(true);
            let mut expected = msg
                .serialize_with_options(serde_json::value::Serializer, &options)
                .unwrap();
            expected["@type"] = json!(by_name("http").type_url);
            let mut out = Vec::new();
            super::route_config(&mut out, pool, &by_name("http"), given);
            let written: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(written, expected);
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let v = dump(&Query::default());
        let text = v.to_string();
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        let s = &section(&v, "SecretsConfigDump")["dynamic_active_secrets"][0];
        assert_eq!(s["name"], "cert");
        let tls = &s["secret"]["tls_certificate"];
        assert_eq!(
            tls["private_key"]["inline_string"],
            gantry_shared::redact::REDACTED
        );
        assert_eq!(tls["certificate_chain"]["inline_string"], "CHAIN");
    }

    #[test]
    fn one_list_and_names_by_regex() {
        let q = Query {
            resource: Some("dynamic_listeners".into()),
            name_regex: Some(regex::Regex::new("^ht").unwrap()),
            ..Default::default()
        };
        let v = dump(&q);
        let configs = v["configs"].as_array().unwrap();
        assert_eq!(configs.len(), 1, "{v}");
        assert_eq!(
            configs[0]["@type"],
            format!("{ADMIN}ListenersConfigDump.DynamicListener")
        );
        assert_eq!(configs[0]["name"], "http");
        let bad = Query {
            resource: Some("static_listeners".into()),
            ..Default::default()
        };
        assert!(matches!(
            render(sample(), &bad),
            Err(DumpError::UnknownResource(_))
        ));
    }
}
