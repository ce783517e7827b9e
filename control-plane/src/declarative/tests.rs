use super::*;
use crate::entities::EntityDef;
use crate::seal::Sealer;
use crate::store::Stored;
use serde_json::{Value, json};
use std::collections::HashMap;

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIBBBBB\n-----END PRIVATE KEY-----\n";
/// A real CA certificate: the ca_certificates schema parses it.
const CA: &str = include_str!("../../tests/fixtures/ca.pem");
const CA_ID: &str = "0d7c4f8e-3b7a-4c1e-9a55-2f6d9b1e8c40";

fn sealer() -> Sealer {
    Sealer::from_key([9; 32])
}

fn nested_yaml() -> String {
    format!(
        r#"
_format_version: "3.0"
_transform: true
_comment: ignored
services:
- name: billing
  url: https://billing.internal:8080/v1
  tls_verify: true
  ca_certificates: [{CA_ID}]
  routes:
  - name: billing-api
    paths: [/billing]
    plugins:
    - name: cors
  plugins:
  - name: rate-limiting
    config: {{minute: 10, policy: redis, redis: {{host: redis.local, password: s3cret}}}}
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
  acls:
  - group: admins
  jwt_secrets:
  - key: alice-iss
    secret: alice-hmac
  plugins:
  - name: rate-limiting
    config: {{minute: 5}}
upstreams:
- name: billing.upstream
  targets:
  - target: 10.0.0.1:8080
  - target: 10.0.0.2
    weight: 50
certificates:
- cert: {CERT:?}
  key: {KEY:?}
  snis:
  - a.example.com
  - name: b.example.com
    tags: [x]
ca_certificates:
- id: {CA_ID}
  cert: {CA:?}
plugins:
- name: correlation-id
"#
    )
}

fn kinds(entries: &[(&'static EntityDef, Value)]) -> Vec<&'static str> {
    entries.iter().map(|(d, _)| d.name).collect()
}

fn find<'a>(
    entries: &'a [(&'static EntityDef, Value)],
    kind: &str,
    field: &str,
    val: &str,
) -> &'a Value {
    entries
        .iter()
        .find(|(d, v)| d.name == kind && v[field] == val)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {kind} with {field}={val}"))
}

fn invalid(r: Result<Vec<(&'static EntityDef, Value)>, DeclarativeError>) -> Value {
    match r {
        Err(DeclarativeError::Invalid(t)) => Value::Object(t),
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("expected Invalid, got Ok"),
    }
}

#[test]
fn parses_json_yaml_and_wrappers() {
    let j = parse_document(br#"{"_format_version":"3.0","services":[]}"#).unwrap();
    assert_eq!(j["_format_version"], "3.0");
    let y = parse_document(b"_format_version: '3.0'\nservices: []\n").unwrap();
    assert_eq!(y, j);
    let w = parse_document(
        &serde_json::to_vec(&json!({"config": "_format_version: '3.0'\nservices: []\n"})).unwrap(),
    )
    .unwrap();
    assert_eq!(w, j);
    let w = parse_document(br#"{"config": {"_format_version":"3.0","services":[]}}"#).unwrap();
    assert_eq!(w, j);
    let form = format!(
        "config={}",
        form_urlencoded::byte_serialize(b"_format_version: '3.0'\nservices: []\n")
            .collect::<String>()
    );
    assert_eq!(parse_document(form.as_bytes()).unwrap(), j);
    // YAML merge keys, as decK-style files use them.
    let m = parse_document(
        b"_format_version: '3.0'\nx: &d {port: 1}\nservices:\n- <<: *d\n  host: h\n",
    )
    .unwrap();
    assert_eq!(m["services"][0], json!({"port": 1, "host": "h"}));
}

#[test]
fn parse_errors() {
    for body in [
        &b""[..],
        b"   ",
        b"{\"a\": ",
        b"key: [unclosed",
        b"- just\n- a list\n",
        b"\xff\xfe",
    ] {
        match parse_document(body) {
            Err(DeclarativeError::Parse(m)) => assert!(!m.is_empty()),
            other => panic!(
                "{:?}: expected a parse error, got {other:?}",
                String::from_utf8_lossy(body)
            ),
        }
    }
    assert!(
        DeclarativeError::Parse("x".into())
            .to_string()
            .starts_with("failed parsing declarative configuration")
    );
}

#[test]
fn flattens_nested_document_in_dependency_order() {
    let doc = parse_document(nested_yaml().as_bytes()).unwrap();
    let out = flatten(&doc, &sealer()).unwrap();
    let ks = kinds(&out);
    let pos = |k: &str| ks.iter().position(|x| *x == k).unwrap();
    assert!(
        pos("certificates") < pos("snis")
            && pos("services") < pos("routes")
            && pos("routes") < pos("plugins")
    );
    assert!(pos("upstreams") < pos("targets") && pos("consumers") < pos("keyauth_credentials"));
    assert!(pos("ca_certificates") < pos("services"));
    assert_eq!(ks.iter().filter(|k| **k == "plugins").count(), 4);
    assert_eq!(ks.iter().filter(|k| **k == "snis").count(), 2);

    let svc = find(&out, "services", "name", "billing");
    assert_eq!(
        (
            svc["host"].as_str(),
            svc["port"].as_i64(),
            svc["path"].as_str()
        ),
        (Some("billing.internal"), Some(8080), Some("/v1"))
    );
    let sid = svc["id"].as_str().unwrap();
    assert!(is_provisional(sid));
    assert_eq!(svc["ca_certificates"], json!([CA_ID]));
    let ca = find(&out, "ca_certificates", "id", CA_ID);
    assert_eq!(ca["cert"], CA);
    assert_eq!(ca["cert_digest"].as_str().map(str::len), Some(64));
    let route = find(&out, "routes", "name", "billing-api");
    assert_eq!(route["service"], json!({"id": sid}));
    let cors = find(&out, "plugins", "name", "cors");
    assert_eq!(cors["route"], json!({"id": route["id"]}));
    assert!(cors["service"].is_null() && cors["consumer"].is_null());
    let alice = find(&out, "consumers", "username", "alice");
    let rl: Vec<&Value> = out
        .iter()
        .filter(|(d, v)| d.name == "plugins" && v["name"] == "rate-limiting")
        .map(|(_, v)| v)
        .collect();
    assert!(
        rl.iter()
            .any(|p| p["service"]["id"] == sid && p["config"]["redis"]["password"] == "s3cret")
    );
    assert!(
        rl.iter()
            .any(|p| p["consumer"]["id"] == alice["id"] && p["config"]["minute"] == 5)
    );
    assert_eq!(
        find(&out, "keyauth_credentials", "key", "alice-key")["consumer"]["id"],
        alice["id"]
    );
    assert_eq!(
        find(&out, "acls", "group", "admins")["consumer"]["id"],
        alice["id"]
    );
    assert_eq!(
        find(&out, "targets", "target", "10.0.0.2:8000")["weight"],
        50
    );
    let cert = out
        .iter()
        .find(|(d, _)| d.name == "certificates")
        .map(|(_, v)| v)
        .unwrap();
    assert!(
        cert["snis"].is_null(),
        "nested snis become entities, not the shorthand"
    );
    assert_eq!(
        find(&out, "snis", "name", "a.example.com")["certificate"]["id"],
        cert["id"]
    );
    assert_eq!(
        find(&out, "snis", "name", "b.example.com")["tags"],
        json!(["x"])
    );
    let global = find(&out, "plugins", "name", "correlation-id");
    assert!(
        global["route"].is_null() && global["service"].is_null() && global["consumer"].is_null()
    );
}

#[test]
fn flat_references_by_name_object_or_id() {
    let id = "6f1ae0b2-6d0e-4d5c-8a0e-3a1b2c3d4e5f";
    let doc = json!({
        "_format_version": "3.0",
        "services": [{"name": "a", "host": "a.local"}, {"id": id, "name": "b", "host": "b.local"}],
        "routes": [
            {"name": "r1", "paths": ["/1"], "service": "a"},
            {"name": "r2", "paths": ["/2"], "service": {"name": "a"}},
            {"name": "r3", "paths": ["/3"], "service": {"id": id}},
            {"name": "r4", "paths": ["/4"], "service": "b"},
        ],
        "consumers": [{"username": "bob"}],
        "keyauth_credentials": [{"key": "k", "consumer": "bob"}],
        "plugins": [{"name": "rate-limiting", "route": "r1", "consumer": {"username": "bob"}, "config": {"second": 1}}],
    });
    let out = flatten(&doc, &sealer()).unwrap();
    let a = find(&out, "services", "name", "a")["id"].clone();
    assert_eq!(find(&out, "routes", "name", "r1")["service"]["id"], a);
    assert_eq!(find(&out, "routes", "name", "r2")["service"]["id"], a);
    assert_eq!(find(&out, "routes", "name", "r3")["service"]["id"], id);
    assert_eq!(find(&out, "routes", "name", "r4")["service"]["id"], id);
    let bob = find(&out, "consumers", "username", "bob")["id"].clone();
    assert_eq!(
        find(&out, "keyauth_credentials", "key", "k")["consumer"]["id"],
        bob
    );
    let p = find(&out, "plugins", "name", "rate-limiting");
    assert_eq!(p["consumer"]["id"], bob);
    assert_eq!(p["route"]["id"], find(&out, "routes", "name", "r1")["id"]);
}

#[test]
fn format_version_and_unknown_keys() {
    let s = sealer();
    let t = invalid(flatten(&json!({"services": []}), &s));
    assert_eq!(t["_format_version"], "required field missing");
    let t = invalid(flatten(&json!({"_format_version": "4.0"}), &s));
    assert_eq!(t["_format_version"], "expected one of: 1.1, 2.1, 3.0");
    let t = invalid(flatten(
        &json!({"_format_version": "3.0", "servicez": [], "_bogus": 1}),
        &s,
    ));
    assert_eq!(t["servicez"], "unknown field");
    assert_eq!(t["_bogus"], "unknown field");
    assert!(
        flatten(&json!({"_format_version": "2.1"}), &s)
            .unwrap()
            .is_empty()
    );
    assert!(
        flatten(&json!({"_format_version": 3.0}), &s)
            .unwrap()
            .is_empty()
    );
    let t = invalid(flatten(
        &json!({"_format_version": "3.0", "services": {"name": "x"}}),
        &s,
    ));
    assert_eq!(t["services"], "expected an array");
    let t = invalid(flatten(&json!(["not", "an", "object"]), &s));
    assert_eq!(t["@entity"][0], "expected an object");
}

#[test]
fn error_tree_follows_the_document() {
    let doc = json!({
        "_format_version": "3.0",
        "services": [
            {"name": "ok", "host": "ok.local"},
            {"name": "bad", "host": "bad.local", "routes": [
                {"paths": ["/fine"]},
                {"paths": ["nope"], "plugins": [{"name": "no-such-plugin"}]},
            ]},
            {"name": "nohost"},
        ],
        "consumers": [{"tags": ["t"]}],
    });
    let t = invalid(flatten(&doc, &sealer()));
    assert_eq!(t["services"][0], Value::Null);
    assert_eq!(t["services"][1]["routes"][0], Value::Null);
    assert_eq!(
        t["services"][1]["routes"][1]["paths"],
        json!(["should start with: / (fixed path) or ~/ (regex path)"])
    );
    assert!(
        t["services"][1]["routes"][1]["plugins"][0]["name"]
            .as_str()
            .unwrap()
            .contains("not enabled")
    );
    assert_eq!(t["services"][2]["host"], "required field missing");
    assert!(
        t["consumers"][0]["@entity"][0]
            .as_str()
            .unwrap()
            .contains("'custom_id', 'username'")
    );
    let msg = DeclarativeError::Invalid(t.as_object().unwrap().clone()).to_string();
    assert!(msg.starts_with("declarative config is invalid: "), "{msg}");
}

#[test]
fn bad_references_and_duplicates() {
    let doc = json!({
        "_format_version": "3.0",
        "routes": [{"name": "r", "paths": ["/"], "service": "ghost"}],
    });
    let t = invalid(flatten(&doc, &sealer()));
    assert_eq!(
        t["routes"][0]["service"],
        "invalid reference 'service: ghost' (no such entry in 'services')"
    );
    let ghost = "9b2e6c1a-0f3d-4e8b-a7c5-1d2e3f4a5b6c";
    let doc = json!({
        "_format_version": "3.0",
        "ca_certificates": [{"id": CA_ID, "cert": CA}],
        "services": [{"name": "s", "host": "h", "ca_certificates": [CA_ID, ghost]}],
    });
    let t = invalid(flatten(&doc, &sealer()));
    assert_eq!(
        t["services"][0]["ca_certificates"],
        format!(
            "invalid reference 'ca_certificates: {ghost}' (no such entry in 'ca_certificates')"
        )
    );
    // The same CA twice is one digest declared twice.
    let doc = json!({
        "_format_version": "3.0",
        "ca_certificates": [{"cert": CA}, {"cert": CA}],
    });
    let t = invalid(flatten(&doc, &sealer()));
    assert!(
        t["ca_certificates"][1]["@entity"][0]
            .as_str()
            .is_some_and(|m| m.contains("cert_digest")),
        "{t}"
    );

    let doc = json!({
        "_format_version": "3.0",
        "services": [{"name": "a", "host": "h"}, {"name": "a", "host": "h2"}],
        "consumers": [{"username": "c", "keyauth_credentials": [{"key": "dupkey"}, {"key": "dupkey"}]}],
        "upstreams": [{"name": "u", "targets": [{"target": "h:1"}, {"target": "h:1"}]}],
    });
    let t = invalid(flatten(&doc, &sealer()));
    assert_eq!(
        t["services"][1]["@entity"][0],
        "uniqueness violation: 'services' entity with name set to 'a' already declared"
    );
    let k = t["consumers"][0]["keyauth_credentials"][1]["@entity"][0]
        .as_str()
        .unwrap();
    assert!(
        k.contains("uniqueness violation") && !k.contains("dupkey"),
        "no secret in messages: {k}"
    );
    assert_eq!(
        t["upstreams"][0]["targets"][1]["@entity"][0],
        "uniqueness violation: 'targets' entity with target set to 'h:1' for the same upstream already declared"
    );
}

#[test]
fn legacy_format_marks_regex_paths() {
    let doc = json!({"_format_version": "2.1", "routes": [{"name": "r", "paths": ["/plain/x-y_z.%20~", "/users/\\d+$", "~/already"]}]});
    let out = flatten(&doc, &sealer()).unwrap();
    assert_eq!(
        out[0].1["paths"],
        json!(["/plain/x-y_z.%20~", "~/users/\\d+$", "~/already"])
    );
}

/// What the store would hold after importing `entries`: real ids in place
/// of provisional ones, timestamps set.
fn materialize(entries: Vec<(&'static EntityDef, Value)>, at: i64) -> Vec<Stored> {
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut real = |id: &str| -> String {
        if !is_provisional(id) {
            return id.to_string();
        }
        ids.entry(id.to_string())
            .or_insert_with(|| uuid::Uuid::new_v4().to_string())
            .clone()
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(i, (d, mut v))| {
            let id = real(v["id"].as_str().unwrap());
            v["id"] = json!(id);
            for f in d.foreign.iter().filter(|f| !f.many) {
                if let Some(r) = v[f.field]["id"].as_str().map(str::to_string) {
                    v[f.field] = json!({"id": real(&r)});
                }
            }
            v["created_at"] = json!(at + i as i64);
            if d.updated_at {
                v["updated_at"] = json!(1_700_000_100);
            }
            Stored {
                kind: d.name.into(),
                id,
                data: v,
            }
        })
        .collect()
}

fn by_kind_and_id(stored: &[Stored]) -> HashMap<(String, String), Value> {
    stored
        .iter()
        .map(|s| ((s.kind.clone(), s.id.clone()), s.data.clone()))
        .collect()
}

#[test]
fn export_is_nested_sealed_and_imports_back_losslessly() {
    let s = sealer();
    let doc = parse_document(nested_yaml().as_bytes()).unwrap();
    let mut stored = materialize(flatten(&doc, &s).unwrap(), 1_700_000_000);
    // A plugin on two scopes, and a route without a service, stay top-level.
    let svc = stored
        .iter()
        .find(|x| x.kind == "services")
        .unwrap()
        .id
        .clone();
    let alice = stored
        .iter()
        .find(|x| x.kind == "consumers")
        .unwrap()
        .id
        .clone();
    let extra = json!({
        "_format_version": "3.0",
        "services": [{"id": svc, "name": "billing", "host": "h"}],
        "consumers": [{"id": alice, "username": "alice"}],
        "routes": [{"name": "loose", "hosts": ["x.example.com"]}],
        "plugins": [{"name": "request-size-limiting", "service": svc, "consumer": alice}],
    });
    let more = materialize(flatten(&extra, &s).unwrap(), 1_800_000_000);
    stored.extend(
        more.into_iter()
            .filter(|m| m.kind == "routes" || m.kind == "plugins"),
    );

    let out = export(&stored, &s);
    let text = serde_yaml_ng::to_string(&out).unwrap();
    for secret in ["s3cret", "alice-key", "alice-hmac", "MIIBBBBB"] {
        assert!(!text.contains(secret), "{secret} leaked into the export");
    }
    assert!(text.contains("$gantry-sealed$v1$"));
    assert_eq!(out["_format_version"], "3.0");
    let svc_node = &out["services"][0];
    assert!(
        svc_node.get("path").is_some() && svc_node.get("client_certificate").is_none(),
        "null fields omitted"
    );
    assert_eq!(svc_node["ca_certificates"], json!([CA_ID]));
    assert_eq!(out["ca_certificates"][0]["id"], CA_ID);
    assert_eq!(svc_node["routes"][0]["name"], "billing-api");
    assert!(svc_node["routes"][0].get("service").is_none());
    assert_eq!(svc_node["routes"][0]["plugins"][0]["name"], "cors");
    assert_eq!(svc_node["plugins"][0]["name"], "rate-limiting");
    let c = &out["consumers"][0];
    for k in ["keyauth_credentials", "jwt_secrets", "acls", "plugins"] {
        assert_eq!(c[k].as_array().map(Vec::len), Some(1), "{k}");
    }
    assert_eq!(
        out["upstreams"][0]["targets"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        out["certificates"][0]["snis"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(out["routes"][0]["name"], "loose");
    let top: Vec<&str> = out["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(top, ["correlation-id", "request-size-limiting"]);
    assert!(out.get("snis").is_none() && out.get("targets").is_none() && out.get("acls").is_none());

    // Through text and back: exactly the same entities.
    let again = flatten(&parse_document(text.as_bytes()).unwrap(), &s).unwrap();
    assert_eq!(again.len(), stored.len());
    let want = by_kind_and_id(&stored);
    for (d, v) in &again {
        let id = v["id"].as_str().unwrap().to_string();
        assert_eq!(
            Some(v),
            want.get(&(d.name.to_string(), id)),
            "{} differs",
            d.name
        );
    }
    // Another database's key cannot open the secrets.
    match flatten(
        &parse_document(text.as_bytes()).unwrap(),
        &Sealer::from_key([1; 32]),
    ) {
        Err(DeclarativeError::Unseal(m)) => {
            assert!(
                m.contains("cannot be opened") && !m.contains("s3cret") && !m.contains("alice"),
                "{m}"
            )
        }
        Err(other) => panic!("expected an unseal error, got {other}"),
        Ok(_) => panic!("expected an unseal error, got Ok"),
    }
}

#[test]
fn export_keeps_nulls_that_have_defaults() {
    // A field with a default explicitly null must stay null on re-import,
    // so it is written out rather than omitted.
    let s = sealer();
    let doc = json!({"_format_version": "3.0", "services": [{"name": "a", "host": "h", "retries": null}]});
    let stored = materialize(flatten(&doc, &s).unwrap(), 1_700_000_000);
    assert!(stored[0].data["retries"].is_null());
    let out = export(&stored, &s);
    assert_eq!(out["services"][0].get("retries"), Some(&Value::Null));
    let again = flatten(&out, &s).unwrap();
    assert_eq!(again[0].1, stored[0].data);
}

#[test]
fn provisional_ids_are_recognisable() {
    let a = provisional_id();
    assert!(is_provisional(&a) && uuid::Uuid::parse_str(&a).is_ok());
    assert_ne!(a, provisional_id());
    assert!(!is_provisional(&uuid::Uuid::new_v4().to_string()));
    assert!(!is_provisional("not-a-uuid"));
}

#[test]
fn error_tree_helper_pads_and_merges() {
    let mut t = serde_json::Map::new();
    put_error(
        &mut t,
        &[
            Seg::Key("services"),
            Seg::Index(2),
            Seg::Key("routes"),
            Seg::Index(1),
        ],
        json!({"paths": "x"}),
    );
    put_error(
        &mut t,
        &[Seg::Key("services"), Seg::Index(2)],
        json!({"host": "y"}),
    );
    assert_eq!(
        Value::Object(t),
        json!({"services": [null, null, {"routes": [null, {"paths": "x"}], "host": "y"}]})
    );
    assert_eq!(
        path_label(&[
            Seg::Key("services"),
            Seg::Index(0),
            Seg::Key("routes"),
            Seg::Index(3)
        ]),
        "services[0].routes[3]"
    );
}
