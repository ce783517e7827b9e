//! The configuration as a document: declarative import/export, dry runs,
//! revisions, diff, rollback and the audit trail.

mod common;

use serde_json::{Value, json};

const KONG_YAML: &str = r#"
_format_version: "3.0"
services:
- name: orders
  url: http://orders.internal:8080/api
  retries: 2
  tags: [team-a]
  routes:
  - name: orders-route
    paths: ["/orders", "~/orders/\\d+$"]
    methods: [GET, POST]
    strip_path: false
    plugins:
    - name: rate-limiting
      config: { minute: 10 }
  plugins:
  - name: key-auth
    config: { key_names: [x-api-key] }
upstreams:
- name: orders.internal
  targets:
  - target: 10.0.0.1:8080
    weight: 50
  - target: 10.0.0.2:8080
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-secret-key
  acls:
  - group: admins
plugins:
- name: correlation-id
"#;

fn count(doc: &Value, coll: &str) -> usize {
    doc[coll].as_array().map(Vec::len).unwrap_or(0)
}

both!(import_creates_one_revision_and_export_roundtrips, |app| {
    let before = app.revision().await;
    let (s, body) = app
        .raw("POST", "/config", "application/yaml", KONG_YAML)
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        app.revision().await,
        before + 1,
        "a whole document is one revision"
    );
    let (_, route) = app.get("/routes/orders-route").await;
    assert_eq!(route["strip_path"], false);
    let (_, svc) = app.get("/services/orders").await;
    assert_eq!(route["service"]["id"], svc["id"]);
    let (_, plugins) = app.get("/routes/orders-route/plugins").await;
    assert_eq!(plugins["data"][0]["config"]["minute"], 10);
    let (_, targets) = app.get("/upstreams/orders.internal/targets").await;
    assert_eq!(targets["data"].as_array().map(Vec::len), Some(2));

    // Export, then import the export: nothing changes, not even a revision.
    let (s, exported) = app.raw("GET", "/config", "application/json", "").await;
    assert_eq!(s, 200);
    let yaml = exported["config"]
        .as_str()
        .expect("Kong's {config: yaml} wrapper")
        .to_string();
    assert!(
        !yaml.contains("alice-secret-key"),
        "secrets are sealed in exports"
    );
    let state_before = app.store.all_current().await.expect("state");
    let rev = app.revision().await;
    let (s, body) = app
        .raw("POST", "/config", "application/yaml", yaml.clone())
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["changes"], 0, "{body}");
    assert_eq!(app.revision().await, rev);
    assert_eq!(
        app.store.all_current().await.expect("state"),
        state_before,
        "export -> import is lossless"
    );

    // The sealed key still works: the credential keeps its secret value.
    let cred = state_before
        .iter()
        .find(|e| e.kind == "keyauth_credentials")
        .expect("credential");
    assert_eq!(cred.data["key"], "alice-secret-key");

    // Import into an empty install from the export reproduces the same
    // entities (same ids, same fields).
    let (_, doc) = app.raw("GET", "/config", "", "").await;
    let parsed: Value =
        serde_yaml_ng::from_str(doc["config"].as_str().expect("yaml")).expect("yaml parses");
    assert_eq!(count(&parsed, "services"), 1);
    assert_eq!(count(&parsed, "consumers"), 1);
});

both!(import_replaces_and_removes_what_is_absent, |app| {
    let (s, _) = app
        .raw("POST", "/config", "application/yaml", KONG_YAML)
        .await;
    assert_eq!(s, 201);
    let (_, svc) = app.get("/services/orders").await;
    let smaller = json!({
        "_format_version": "3.0",
        "services": [{ "name": "orders", "url": "http://orders.internal:9090" }],
    });
    let (s, body) = app.post("/config", smaller).await;
    assert_eq!(s, 201, "{body}");
    let (_, svc2) = app.get("/services/orders").await;
    assert_eq!(svc2["id"], svc["id"], "matched by name, id kept");
    assert_eq!(svc2["port"], 9090);
    let (s, _) = app.get("/routes/orders-route").await;
    assert_eq!(s, 404);
    let (_, consumers) = app.get("/consumers").await;
    assert_eq!(consumers["data"].as_array().map(Vec::len), Some(0));
    let (_, plugins) = app.get("/plugins").await;
    assert_eq!(plugins["data"].as_array().map(Vec::len), Some(0));
});

both!(invalid_documents_change_nothing, |app| {
    let (s, _) = app
        .raw("POST", "/config", "application/yaml", KONG_YAML)
        .await;
    assert_eq!(s, 201);
    let rev = app.revision().await;
    let state = app.store.all_current().await.expect("state");
    let bad = [
        ("application/yaml", "services: [".to_string()),
        ("application/json", r#"{"_format_version": "9.9"}"#.to_string()),
        ("application/json", r#"{"_format_version": "3.0", "services": [{"name": "x", "url": "http://x", "routes": [{"paths": ["~/(("]}]}]}"#.to_string()),
        ("application/json", r#"{"_format_version": "3.0", "routes": [{"name": "r", "paths": ["/r"], "service": "missing"}]}"#.to_string()),
        ("application/json", r#"{"_format_version": "3.0", "services": [{"name": "x", "url": "http://x"}, {"name": "x", "url": "http://y"}]}"#.to_string()),
        ("application/json", r#"{"_format_version": "3.0", "plugins": [{"name": "no-such-plugin"}]}"#.to_string()),
    ];
    for (ct, doc) in bad {
        let (s, body) = app.raw("POST", "/config", ct, doc.clone()).await;
        assert!(s.is_client_error(), "{doc} -> {s} {body}");
        assert!(body["message"].is_string(), "{body}");
        let (s, _) = app.raw("POST", "/config/validate", ct, doc.clone()).await;
        assert!(s.is_client_error(), "validate {doc} -> {s}");
    }
    assert_eq!(app.revision().await, rev);
    assert_eq!(app.store.all_current().await.expect("state"), state);
});

both!(validate_is_a_dry_run, |app| {
    let rev = app.revision().await;
    let (s, body) = app
        .raw("POST", "/config/validate", "application/yaml", KONG_YAML)
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["valid"], true);
    assert!(body["changes"].as_i64().unwrap_or(0) > 5);
    assert_eq!(app.revision().await, rev);
    let (_, services) = app.get("/services").await;
    assert_eq!(services["data"].as_array().map(Vec::len), Some(0));
});

both!(revisions_diff_and_rollback, |app| {
    let (_, s1) = app
        .post("/services", json!({"name": "a", "url": "http://a.test"}))
        .await;
    let r1 = app.revision().await;
    let (s, _) = app
        .json("PATCH", "/services/a", json!({"retries": 9}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .post("/services", json!({"name": "b", "url": "http://b.test"}))
        .await;
    assert_eq!(s, 201);
    let r3 = app.revision().await;

    let (_, list) = app.get("/config/revisions").await;
    assert_eq!(list["data"][0]["revision"], r3, "newest first");
    let (s, rev) = app.get(&format!("/config/revisions/{r1}")).await;
    assert_eq!(s, 200);
    assert_eq!(rev["config"]["services"][0]["retries"], 5);

    let (_, diff) = app.get(&format!("/config/diff?from={r1}&to={r3}")).await;
    let changes = diff["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 2, "{diff}");
    let upd = changes
        .iter()
        .find(|c| c["operation"] == "update")
        .expect("update");
    assert_eq!(upd["entity_id"], s1["id"]);
    assert_eq!(upd["before"]["retries"], 5);
    assert_eq!(upd["after"]["retries"], 9);
    assert!(
        changes
            .iter()
            .any(|c| c["operation"] == "create" && c["after"]["name"] == "b")
    );

    let (s, body) = app.post("/config/rollback", json!({"revision": r1})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(app.revision().await, r3 + 1, "a rollback is a new revision");
    let (_, a) = app.get("/services/a").await;
    assert_eq!(a["retries"], 5);
    assert_eq!(a["id"], s1["id"]);
    let (s, _) = app.get("/services/b").await;
    assert_eq!(s, 404);
    let (s, _) = app
        .post("/config/rollback", json!({"revision": 9999}))
        .await;
    assert_eq!(s, 404);
    // A revision that does not exist is not found, as for rollback.
    let (s, _) = app.get("/config/diff?from=0&to=9999").await;
    assert_eq!(s, 404);
    let (s, _) = app.get("/config/diff?from=x").await;
    assert_eq!(s, 400);
});

both!(audit_records_every_change_without_secrets, |app| {
    let (s, _) = app.post("/consumers", json!({"username": "bob"})).await;
    assert_eq!(s, 201);
    let (s, cred) = app
        .post("/consumers/bob/key-auth", json!({"key": "bob-very-secret"}))
        .await;
    assert_eq!(s, 201);
    let (s, _) = app.delete("/consumers/bob").await;
    assert_eq!(s, 204);
    let (_, audit) = app.get("/audit").await;
    let text = audit.to_string();
    assert!(
        !text.contains("bob-very-secret"),
        "audit must not hold secrets: {text}"
    );
    let rows = audit["data"].as_array().expect("rows");
    let ops: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap_or(""),
                r["entity_type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(ops.contains(&("create", "consumers")));
    assert!(ops.contains(&("create", "keyauth_credentials")));
    assert!(
        ops.contains(&("delete", "keyauth_credentials")),
        "cascade is audited: {ops:?}"
    );
    assert!(ops.contains(&("delete", "consumers")));
    let row = rows
        .iter()
        .find(|r| r["entity_id"] == cred["id"] && r["operation"] == "create")
        .expect("row");
    assert_eq!(row["actor"], "anonymous");
    assert_eq!(row["after"]["key"], "<redacted>");
    assert!(row["at"].as_i64().unwrap_or(0) > 0);
    // Diffs show no secrets either.
    let (_, diff) = app.get("/config/diff?from=0").await;
    assert!(!diff.to_string().contains("bob-very-secret"));
});

both!(status_and_root, |app| {
    let (s, st) = app.get("/status").await;
    assert_eq!(s, 200);
    assert_eq!(st["database"]["reachable"], true);
    assert_eq!(st["configuration_revision"], 0);
    let (s, root) = app.get("/").await;
    assert_eq!(s, 200);
    assert!(root["version"].is_string());
    assert!(root["plugins"]["available_on_server"]["rate-limiting"].is_object());
    for name in ["a", "b"] {
        let (s, _) = app
            .post("/services", json!({"name": name, "url": "http://x.test"}))
            .await;
        assert_eq!(s, 201);
    }
    let (_, root) = app.get("/").await;
    assert_eq!(root["configuration"]["entities"]["services"], 2, "{root}");
    assert!(root["configuration"]["entities"]["routes"].is_null());
});

both!(openapi_covers_every_route, |app| {
    let (s, doc) = app.get("/openapi.json").await;
    assert_eq!(s, 200);
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/services",
        "/services/{id}",
        "/services/{parent_id}/routes",
        "/consumers/{parent_id}/key-auth/{id}",
        "/upstreams/{parent_id}/targets",
        "/config",
        "/config/revisions/{rev}",
        "/audit",
        "/tags/{tag}",
    ] {
        assert!(paths.contains_key(p), "{p} missing from openapi");
    }
    // Every documented operation is really served: no 405 and no
    // unknown-route 404 for any documented method on any documented path.
    let (_, svc) = app
        .post("/services", json!({"name": "s", "url": "http://s.test"}))
        .await;
    let sid = svc["id"].as_str().expect("id").to_string();
    for (path, item) in paths {
        for method in item.as_object().expect("ops").keys() {
            let concrete = path
                .replace("{parent_id}", &sid)
                .replace("{id}", "nope")
                .replace("{rev}", "0")
                .replace("{tag}", "t");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = app
                .client
                .request(m, format!("{}{concrete}", app.base))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("send");
            assert_ne!(
                r.status().as_u16(),
                405,
                "{method} {path} documented but not served"
            );
        }
    }
    // And a method nobody documents is refused.
    let r = app
        .client
        .request(
            reqwest::Method::PUT,
            format!("{}/config/revisions", app.base),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 405);
});

both!(revisions_and_audit_page_newest_first, |app| {
    for i in 0..5 {
        let (s, _) = app
            .post("/consumers", json!({ "username": format!("p{i}") }))
            .await;
        assert_eq!(s, 201);
    }
    for (path, key) in [
        ("/config/revisions?size=2", "revision"),
        ("/audit?size=2", "id"),
    ] {
        let mut seen: Vec<i64> = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(p) = next {
            let (s, body) = app.get(&p).await;
            assert_eq!(s, 200, "{body}");
            let data = body["data"].as_array().expect("data");
            assert!(data.len() <= 2);
            seen.extend(data.iter().map(|r| r[key].as_i64().expect("number")));
            next = body["next"].as_str().map(str::to_string);
            if let Some(n) = &next {
                assert!(n.contains("size=2"), "the next page keeps the size: {n}");
            }
        }
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        sorted.dedup();
        assert_eq!(seen, sorted, "{path}: newest first, each once");
        assert!(seen.len() >= 5, "{path}: {seen:?}");
    }
    let (s, _) = app.get("/audit?offset=!!!").await;
    assert_eq!(s, 400);
});
