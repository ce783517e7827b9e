//! Bad input to the admin API: each gets the right 4xx in Kong's error
//! shape, and none of it changes the configuration (no revision, nothing
//! stored, nothing modified), on both store backends.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

const COLLECTIONS: &[&str] = &[
    "services",
    "routes",
    "upstreams",
    "targets",
    "consumers",
    "plugins",
    "certificates",
    "snis",
    "ca_certificates",
    "key-auths",
    "jwts",
    "acls",
];

/// The whole visible configuration and its revision.
#[derive(Debug, PartialEq)]
struct Snapshot {
    revision: i64,
    data: Map<String, Value>,
}

async fn snapshot(app: &TestApp) -> Snapshot {
    let mut data = Map::new();
    for c in COLLECTIONS {
        let (s, b) = app.get(&format!("/{c}?size=1000")).await;
        assert_eq!(s, StatusCode::OK, "GET /{c}: {b}");
        assert!(b["next"].is_null());
        data.insert((*c).to_string(), b["data"].clone());
    }
    Snapshot {
        revision: app.revision().await,
        data,
    }
}

fn count(s: &Snapshot, coll: &str) -> usize {
    s.data[coll].as_array().map_or(0, Vec::len)
}

/// Asserts nothing changed since `before`, then that the next write gets
/// exactly the next revision (a failed write leaves no gap or lock behind).
async fn assert_unchanged(app: &TestApp, before: &Snapshot) {
    let after = snapshot(app).await;
    assert_eq!(
        after.revision, before.revision,
        "a failed write changed the revision"
    );
    assert_eq!(
        after.data, before.data,
        "a failed write changed the configuration"
    );
}

async fn assert_next_write_is_next_revision(app: &TestApp, before: &Snapshot) {
    let name = format!("probe-{}", uuid::Uuid::new_v4().simple());
    let resp = app
        .client
        .post(format!("{}/consumers", app.base))
        .json(&json!({"username": name}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let rev: i64 = resp.headers()["x-gantry-revision"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        rev,
        before.revision + 1,
        "revisions must stay gapless after failed writes"
    );
}

/// Kong's schema-violation shape.
fn assert_schema(status: StatusCode, b: &Value) -> &Map<String, Value> {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 2, "{b}");
    assert_eq!(b["name"], "schema violation", "{b}");
    let msg = b["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {b}"));
    assert!(msg.contains("schema violation"), "{b}");
    b["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("no fields: {b}"))
}

fn assert_message(status: StatusCode, want: StatusCode, b: &Value) -> String {
    assert_eq!(status, want, "{b}");
    b["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {b}"))
        .to_string()
}

/// A base configuration so "nothing changed" compares something.
async fn seed(app: &TestApp) -> Value {
    let (s, svc) = app
        .post(
            "/services",
            json!({"name": "base", "url": "http://base.internal:8080/api", "tags": ["t"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    let (s, r) = app
        .post(
            "/services/base/routes",
            json!({"name": "base-route", "paths": ["/base"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let (s, c) = app.post("/consumers", json!({"username": "alice"})).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let (s, u) = app.post("/upstreams", json!({"name": "up.internal"})).await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let (s, p) = app
        .post(
            "/services/base/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    svc
}

// ------------------------------------------------------------ bad bodies

both!(malformed_json, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    for body in [
        r#"{"name": "x", "host": "#,
        "{name: x}",
        r#"{"name": "x",}"#,
        "\u{1}",
    ] {
        let (s, b) = app.raw("POST", "/services", "application/json", body).await;
        let m = assert_message(s, StatusCode::BAD_REQUEST, &b);
        assert!(m.starts_with("Cannot parse JSON body"), "{body}: {b}");
    }
    // A PATCH of an existing entity too.
    let (s, b) = app
        .raw(
            "PATCH",
            "/services/base",
            "application/json",
            r#"{"retries": "#,
        )
        .await;
    assert_message(s, StatusCode::BAD_REQUEST, &b);
    assert_unchanged(&app, &before).await;
    assert_next_write_is_next_revision(&app, &before).await;
});

both!(json_that_is_not_an_object, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    for body in [
        "[1, 2]",
        r#"[{"name": "x", "host": "h"}]"#,
        r#""svc""#,
        "42",
        "null",
        "true",
    ] {
        let (s, b) = app.raw("POST", "/services", "application/json", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        let (s, b) = app
            .raw("PUT", "/services/base", "application/json", body)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        let (s, b) = app
            .raw("POST", "/consumers", "application/vnd.kong+json", body)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
    }
    assert_unchanged(&app, &before).await;
});

both!(wrong_json_types, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    let (s, b) = app
        .post("/services", json!({"name": "s", "host": "h", "port": "80"}))
        .await;
    let f = assert_schema(s, &b);
    assert_eq!(f["port"], "expected an integer");
    assert_eq!(b["message"], "schema violation (port: expected an integer)");
    let (s, b) = app
        .post(
            "/services",
            json!({"name": "s", "host": "h", "retries": 1.5, "enabled": "yes", "tags": "t"}),
        )
        .await;
    let f = assert_schema(s, &b);
    assert_eq!(f["retries"], "expected an integer");
    assert_eq!(f["enabled"], "expected a boolean");
    assert_eq!(f["tags"], "expected a set");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("3 schema violations ("),
        "{b}"
    );
    let (s, b) = app.post("/routes", json!({"paths": "/x"})).await;
    assert_eq!(assert_schema(s, &b)["paths"], "expected an array");
    let (s, b) = app
        .post(
            "/upstreams",
            json!({"name": "u2", "healthchecks": {"active": {"concurrency": "10"}}}),
        )
        .await;
    assert_eq!(
        assert_schema(s, &b)["healthchecks"]["active"]["concurrency"],
        "expected an integer"
    );
    // Form strings that do not parse.
    let (s, b) = app
        .form(
            "POST",
            "/services",
            &[("name", "s"), ("host", "h"), ("retries", "abc")],
        )
        .await;
    assert_eq!(assert_schema(s, &b)["retries"], "expected an integer");
    let (s, b) = app
        .form(
            "POST",
            "/services",
            &[("name", "s"), ("host", "h"), ("enabled", "maybe")],
        )
        .await;
    assert_eq!(assert_schema(s, &b)["enabled"], "expected a boolean");
    // On PATCH, the existing entity is left as it was.
    let (s, b) = app
        .json(
            "PATCH",
            "/services/base",
            json!({"port": "81", "retries": 1}),
        )
        .await;
    assert_eq!(assert_schema(s, &b)["port"], "expected an integer");
    assert_unchanged(&app, &before).await;
    assert_next_write_is_next_revision(&app, &before).await;
});

both!(unknown_field, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    let (s, b) = app
        .post(
            "/services",
            json!({"name": "s", "host": "h", "colour": "red"}),
        )
        .await;
    let f = assert_schema(s, &b);
    assert_eq!(f["colour"], "unknown field");
    assert_eq!(f.len(), 1, "{b}");
    let (s, b) = app
        .form(
            "POST",
            "/services/base/routes",
            &[("paths[]", "/x"), ("bogus", "1")],
        )
        .await;
    assert_eq!(assert_schema(s, &b)["bogus"], "unknown field");
    let (s, b) = app
        .json("PATCH", "/consumers/alice", json!({"nickname": "al"}))
        .await;
    assert_eq!(assert_schema(s, &b)["nickname"], "unknown field");
    let (s, b) = app
        .post(
            "/upstreams",
            json!({"name": "u2", "healthchecks": {"active": {"nope": 1}}}),
        )
        .await;
    assert_eq!(
        assert_schema(s, &b)["healthchecks"]["active"]["nope"],
        "unknown field"
    );
    assert_unchanged(&app, &before).await;
});

both!(invalid_regex_path, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    let (s, b) = app
        .post(
            "/services/base/routes",
            json!({"paths": ["/ok", "~/users/(\\d+"]}),
        )
        .await;
    let f = assert_schema(s, &b);
    let errs = f["paths"]
        .as_array()
        .unwrap_or_else(|| panic!("per-element errors: {b}"));
    assert_eq!(errs.len(), 2, "{b}");
    assert!(errs[0].is_null(), "{b}");
    assert!(
        errs[1]
            .as_str()
            .unwrap()
            .starts_with("invalid regex: '/users/(\\d+'"),
        "{b}"
    );
    let (s, b) = app.post("/routes", json!({"paths": ["no-slash"]})).await;
    assert_eq!(
        assert_schema(s, &b)["paths"][0],
        "should start with: / (fixed path) or ~/ (regex path)"
    );
    let (s, b) = app
        .post(
            "/routes",
            json!({"paths": ["/x"], "headers": {"x-v": ["~*("]}}),
        )
        .await;
    assert!(
        assert_schema(s, &b)["headers"]
            .as_str()
            .unwrap()
            .starts_with("invalid regex"),
        "{b}"
    );
    let (s, b) = app
        .json("PATCH", "/routes/base-route", json!({"paths": ["~["]}))
        .await;
    assert_schema(s, &b);
    assert_unchanged(&app, &before).await;
});

both!(invalid_url, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    for url in [
        "not a url",
        "http://",
        "://missing-scheme",
        "http://h:99999/",
    ] {
        let (s, b) = app
            .post("/services", json!({"name": "s", "url": url}))
            .await;
        let f = assert_schema(s, &b);
        assert!(f.contains_key("url"), "{url}: {b}");
    }
    let (s, b) = app.post("/services", json!({"name": "s", "url": 42})).await;
    assert_eq!(assert_schema(s, &b)["url"], "expected a string");
    let (s, b) = app
        .post("/services", json!({"name": "s", "url": "gopher://h"}))
        .await;
    assert_schema(s, &b);
    let (s, b) = app
        .post("/services", json!({"name": "s", "host": "bad host"}))
        .await;
    assert_eq!(assert_schema(s, &b)["host"], "invalid value: bad host");
    let (s, b) = app
        .post(
            "/services",
            json!({"name": "s", "host": "h", "path": "no-slash"}),
        )
        .await;
    assert_eq!(assert_schema(s, &b)["path"], "should start with: /");
    let (s, b) = app
        .json("PATCH", "/services/base", json!({"url": "not a url"}))
        .await;
    assert!(assert_schema(s, &b).contains_key("url"), "{b}");
    let (s, b) = app
        .form("POST", "/services", &[("name", "s"), ("url", "nope")])
        .await;
    assert!(assert_schema(s, &b).contains_key("url"), "{b}");
    assert_unchanged(&app, &before).await;
});

both!(port_out_of_range, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    for port in [70000, -1, 65536] {
        let (s, b) = app
            .post("/services", json!({"name": "s", "host": "h", "port": port}))
            .await;
        assert_eq!(
            assert_schema(s, &b)["port"],
            "value should be between 0 and 65535",
            "{port}"
        );
    }
    let (s, b) = app
        .form(
            "POST",
            "/services",
            &[("name", "s"), ("host", "h"), ("port", "70000")],
        )
        .await;
    assert_eq!(
        assert_schema(s, &b)["port"],
        "value should be between 0 and 65535"
    );
    let (s, b) = app
        .json("PATCH", "/services/base", json!({"port": 70000}))
        .await;
    assert_eq!(
        assert_schema(s, &b)["port"],
        "value should be between 0 and 65535"
    );
    let (s, b) = app
        .post(
            "/services",
            json!({"name": "s", "host": "h", "retries": 40000, "connect_timeout": 0}),
        )
        .await;
    let f = assert_schema(s, &b);
    assert_eq!(f["retries"], "value should be between 0 and 32767");
    assert_eq!(
        f["connect_timeout"],
        "value should be between 1 and 2147483646"
    );
    let (s, b) = app
        .post(
            "/upstreams/up.internal/targets",
            json!({"target": "10.0.0.1:0"}),
        )
        .await;
    assert_eq!(assert_schema(s, &b)["target"], "invalid port number: 0");
    let (s, b) = app
        .post(
            "/upstreams/up.internal/targets",
            json!({"target": "10.0.0.1", "weight": 70000}),
        )
        .await;
    assert_eq!(
        assert_schema(s, &b)["weight"],
        "value should be between 0 and 65535"
    );
    assert_unchanged(&app, &before).await;
});

both!(duplicate_names, |app| {
    let svc = seed(&app).await;
    let before = snapshot(&app).await;
    let (s, b) = app
        .post("/services", json!({"name": "base", "host": "other"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], 5);
    assert_eq!(b["name"], "unique constraint violation");
    assert_eq!(
        b["message"],
        "UNIQUE violation detected on '{name=\"base\"}'"
    );
    assert_eq!(b["fields"], json!({"name": "base"}));
    // Renaming another service onto a taken name conflicts too.
    let (s, other) = app
        .post("/services", json!({"name": "other", "host": "h"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let before2 = snapshot(&app).await;
    let (s, b) = app
        .json("PATCH", "/services/other", json!({"name": "base"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], 5);
    let (s, b) = app
        .json(
            "PUT",
            &format!("/services/{}", other["id"].as_str().unwrap()),
            json!({"name": "base", "host": "h"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = app
        .post("/routes", json!({"name": "base-route", "paths": ["/dup"]}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["fields"], json!({"name": "base-route"}));
    let (s, b) = app.post("/consumers", json!({"username": "alice"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["fields"], json!({"username": "alice"}));
    let (s, b) = app.post("/upstreams", json!({"name": "up.internal"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    // Reusing an existing id is a primary key violation.
    let (s, b) = app
        .post(
            "/services",
            json!({"id": svc["id"], "name": "fresh", "host": "h"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], 3);
    assert_eq!(b["name"], "primary key violation");
    assert_unchanged(&app, &before2).await;
    assert_eq!(count(&before2, "services"), count(&before, "services") + 1);
    assert_next_write_is_next_revision(&app, &before2).await;
});

both!(dangling_foreign_key, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    let missing = uuid::Uuid::new_v4().to_string();
    let (s, b) = app
        .post(
            "/routes",
            json!({"paths": ["/x"], "service": {"id": missing}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 4);
    assert_eq!(b["name"], "foreign key violation");
    assert_eq!(b["fields"], json!({"service": {"id": missing}}));
    assert_eq!(
        b["message"],
        format!(
            "the foreign key '{{id=\"{missing}\"}}' does not reference an existing 'services' entity."
        )
    );
    let (s, b) = app
        .form(
            "POST",
            "/routes",
            &[("paths[]", "/x"), ("service.id", &missing)],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 4);
    let (s, b) = app
        .post(
            "/routes",
            json!({"paths": ["/x"], "service": {"name": "no-such-service"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 4);
    let (s, b) = app
        .json(
            "PATCH",
            "/routes/base-route",
            json!({"service": {"id": missing}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 4);
    let (s, b) = app
        .post(
            "/plugins",
            json!({"name": "cors", "route": {"id": missing}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["fields"], json!({"route": {"id": missing}}));
    let (s, b) = app
        .post(
            "/snis",
            json!({"name": "x.example.com", "certificate": {"id": missing}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 4);
    assert_unchanged(&app, &before).await;
    assert_next_write_is_next_revision(&app, &before).await;
});

both!(delete_of_referenced_service_is_refused, |app| {
    let svc = seed(&app).await;
    let before = snapshot(&app).await;
    let (s, b) = app.delete("/services/base").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 4);
    assert_eq!(b["name"], "foreign key violation");
    assert_eq!(b["fields"], json!({"@referenced_by": "routes"}));
    assert_eq!(
        b["message"],
        "an existing 'routes' entity references this 'services' entity"
    );
    let (s, b) = app
        .delete(&format!("/services/{}", svc["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // Nothing cascaded either: the service's plugin is still there.
    assert_unchanged(&app, &before).await;
    let (s, b) = app.get("/services/base").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(count(&before, "plugins"), 1);
    assert_next_write_is_next_revision(&app, &before).await;
});

both!(oversize_body, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    // A syntactically valid JSON body just over 10 MiB.
    let filler = "x".repeat(10 * 1024 * 1024);
    let body = json!({"name": "big", "host": "h", "tags": [filler]}).to_string();
    assert!(body.len() > 10 * 1024 * 1024);
    let (s, b) = app.raw("POST", "/services", "application/json", body).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(b, json!({"message": "Request body too large"}));
    let form = format!(
        "name=big&host=h&tags[]={}",
        "y".repeat(10 * 1024 * 1024 + 1)
    );
    let (s, _) = app
        .raw(
            "POST",
            "/services",
            "application/x-www-form-urlencoded",
            form,
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_unchanged(&app, &before).await;
    // Just under the limit is read, then judged on its content: no field
    // takes megabytes (it would be pushed to every proxy).
    let under =
        json!({"name": "big", "host": "h", "path": format!("/{}", "y".repeat(9 * 1024 * 1024))})
            .to_string();
    let (s, b) = app
        .raw("POST", "/services", "application/json", under)
        .await;
    assert_eq!(assert_schema(s, &b)["path"], "length must be at most 8192");
    let name = json!({"name": "n".repeat(9_900_000), "host": "h"}).to_string();
    let (s, b) = app.raw("POST", "/services", "application/json", name).await;
    assert_eq!(assert_schema(s, &b)["name"], "length must be at most 255");
    assert_unchanged(&app, &before).await;
});

both!(unknown_plugin_and_bad_config, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    let (s, b) = app
        .post("/plugins", json!({"name": "no-such-plugin"}))
        .await;
    let f = assert_schema(s, &b);
    assert_eq!(
        f["name"],
        "plugin 'no-such-plugin' not enabled; add it to the 'plugins' configuration property"
    );
    let (s, b) = app.post("/plugins", json!({"config": {"minute": 5}})).await;
    assert_eq!(assert_schema(s, &b)["name"], "required field missing");
    // Unknown config field.
    let (s, b) = app
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5, "bogus": 1}}),
        )
        .await;
    let f = assert_schema(s, &b);
    assert_eq!(f["config"], json!({"bogus": "unknown field"}));
    let (s, b) = app
        .form(
            "POST",
            "/services/base/plugins",
            &[("name", "cors"), ("config.nope", "1")],
        )
        .await;
    assert_eq!(assert_schema(s, &b)["config"]["nope"], "unknown field");
    // Invalid enum value, in config and on an entity.
    let (s, b) = app
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "memcached"}}),
        )
        .await;
    assert_eq!(
        assert_schema(s, &b)["config"]["policy"],
        "expected one of: local, cluster, redis"
    );
    let (s, b) = app
        .post(
            "/services",
            json!({"name": "s", "host": "h", "protocol": "gopher"}),
        )
        .await;
    assert!(
        assert_schema(s, &b)["protocol"]
            .as_str()
            .unwrap()
            .starts_with("expected one of: grpc, grpcs, http, https"),
        "{b}"
    );
    let (s, b) = app
        .post(
            "/routes",
            json!({"paths": ["/x"], "https_redirect_status_code": 303}),
        )
        .await;
    assert_eq!(
        assert_schema(s, &b)["https_redirect_status_code"],
        "expected one of: 426, 301, 302, 307, 308"
    );
    let (s, b) = app
        .post("/upstreams", json!({"name": "u2", "algorithm": "random"}))
        .await;
    assert_schema(s, &b);
    // Entity checks of a config are reported at the plugin level.
    let (s, b) = app
        .post("/plugins", json!({"name": "rate-limiting", "config": {}}))
        .await;
    let f = assert_schema(s, &b);
    assert!(
        f["@entity"][0]
            .as_str()
            .unwrap()
            .starts_with("at least one of these fields must be non-empty"),
        "{b}"
    );
    // A plugin that identifies consumers cannot be scoped to one.
    let (s, b) = app
        .post("/consumers/alice/plugins", json!({"name": "key-auth"}))
        .await;
    assert_eq!(assert_schema(s, &b)["consumer"], "value must be null");
    // A config PATCH that breaks the config changes nothing.
    let pid = before.data["plugins"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, b) = app
        .json(
            "PATCH",
            &format!("/plugins/{pid}"),
            json!({"config": {"policy": "nope"}}),
        )
        .await;
    assert_eq!(
        assert_schema(s, &b)["config"]["policy"],
        "expected one of: local, cluster, redis"
    );
    let (s, b) = app
        .json(
            "PATCH",
            &format!("/plugins/{pid}"),
            json!({"name": "no-such-plugin"}),
        )
        .await;
    assert_schema(s, &b);
    assert_unchanged(&app, &before).await;
    assert_next_write_is_next_revision(&app, &before).await;
});

both!(unsupported_content_type, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    for ct in ["text/plain", "application/xml", "text/html; charset=utf-8"] {
        let (s, b) = app.raw("POST", "/services", ct, "name=x&host=h").await;
        let m = assert_message(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, &b);
        assert!(m.starts_with("Unsupported Content-Type"), "{b}");
        let (s, _) = app.raw("PATCH", "/services/base", ct, "retries=1").await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    assert_unchanged(&app, &before).await;
});

both!(route_without_match_fields, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    let (s, b) = app
        .post("/services/base/routes", json!({"name": "r"}))
        .await;
    let f = assert_schema(s, &b);
    assert_eq!(
        f["@entity"],
        json!([
            "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'http', 'https'"
        ])
    );
    assert_eq!(
        b["message"],
        "schema violation (must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'http', 'https')"
    );
    let (s, b) = app
        .post("/routes", json!({"protocols": ["http"], "paths": []}))
        .await;
    assert_eq!(
        assert_schema(s, &b)["@entity"],
        json!([
            "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
        ])
    );
    // Clearing the last match field of an existing route is refused.
    let (s, b) = app
        .json("PATCH", "/routes/base-route", json!({"paths": null}))
        .await;
    assert!(assert_schema(s, &b).contains_key("@entity"), "{b}");
    let (s, b) = app
        .post(
            "/routes",
            json!({"protocols": ["http"], "snis": ["a.example.com"]}),
        )
        .await;
    assert_schema(s, &b);
    let (s, b) = app
        .post("/routes", json!({"methods": ["GET", "GET"]}))
        .await;
    assert_eq!(
        assert_schema(s, &b)["methods"],
        json!([null, "duplicate value"])
    );
    let (s, b) = app.post("/routes", json!({"methods": ["get"]})).await;
    assert_eq!(
        assert_schema(s, &b)["methods"],
        json!(["invalid value: get"])
    );
    let (s, b) = app
        .post(
            "/routes",
            json!({"paths": ["/x"], "headers": {"host": ["a"]}}),
        )
        .await;
    assert_schema(s, &b);
    assert_unchanged(&app, &before).await;
});

both!(nested_under_missing_parent, |app| {
    seed(&app).await;
    let before = snapshot(&app).await;
    let missing_parent = format!("/services/{}/routes", uuid::Uuid::new_v4());
    for (path, body) in [
        ("/services/nope/routes", json!({"paths": ["/x"]})),
        (missing_parent.as_str(), json!({"paths": ["/x"]})),
        ("/services/nope/plugins", json!({"name": "cors"})),
        ("/consumers/nobody/key-auth", json!({})),
        ("/consumers/nobody/jwt", json!({})),
        ("/consumers/nobody/acls", json!({"group": "g"})),
        ("/upstreams/nope/targets", json!({"target": "10.0.0.1"})),
        ("/routes/nope/plugins", json!({"name": "cors"})),
    ] {
        let (s, b) = app.post(path, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {b}");
        assert_eq!(b, json!({"message": "Not found"}), "{path}");
        let (s, _) = app.get(path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "GET {path}");
    }
    // Pairs that are not parent and child.
    let (s, _) = app
        .post("/services/base/consumers", json!({"username": "x"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .post("/consumers/alice/routes", json!({"paths": ["/x"]}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Unknown collections, entities and methods.
    let (s, b) = app.post("/widgets", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b, json!({"message": "Not found"}));
    let (s, _) = app
        .json("PATCH", "/services/nope", json!({"retries": 1}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .json(
            "PATCH",
            "/services/base/routes/nope",
            json!({"strip_path": false}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = app.delete("/services").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{b}");
    assert_eq!(b, json!({"message": "Method not allowed"}));
    assert_unchanged(&app, &before).await;
    assert_next_write_is_next_revision(&app, &before).await;
});

both!(credential_and_certificate_errors, |app| {
    seed(&app).await;
    let (s, k) = app
        .post("/consumers/alice/key-auth", json!({"key": "taken"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let before = snapshot(&app).await;
    let (s, b) = app
        .post("/consumers/alice/key-auth", json!({"key": "taken"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], 5);
    let (s, b) = app
        .post("/consumers/alice/jwt", json!({"algorithm": "RS256"}))
        .await;
    assert_eq!(
        assert_schema(s, &b)["rsa_public_key"],
        "required field missing"
    );
    let (s, b) = app
        .post(
            "/consumers/alice/jwt",
            json!({"algorithm": "RS256", "rsa_public_key": "nope"}),
        )
        .await;
    assert_eq!(
        assert_schema(s, &b)["rsa_public_key"],
        "invalid key: not a PEM public key"
    );
    let (s, b) = app
        .post("/consumers/alice/jwt", json!({"algorithm": "XX999"}))
        .await;
    assert!(
        assert_schema(s, &b)["algorithm"]
            .as_str()
            .unwrap()
            .starts_with("expected one of"),
        "{b}"
    );
    let (s, b) = app.post("/consumers", json!({})).await;
    assert!(assert_schema(s, &b).contains_key("@entity"), "{b}");
    // Kong's strings are at least one character: "" is refused per field.
    for (body, field) in [
        (json!({"username": ""}), "username"),
        (json!({"custom_id": ""}), "custom_id"),
        (json!({"username": "", "custom_id": ""}), "username"),
    ] {
        let (s, b) = app.post("/consumers", body.clone()).await;
        assert_eq!(
            assert_schema(s, &b)[field],
            "length must be at least 1",
            "{body}"
        );
    }
    let (s, b) = app.form("POST", "/consumers", &[("username", "")]).await;
    assert_eq!(
        assert_schema(s, &b)["username"],
        "length must be at least 1",
        "{b}"
    );
    let (s, b) = app
        .post("/consumers/alice/acls", json!({"group": ""}))
        .await;
    assert_eq!(assert_schema(s, &b)["group"], "length must be at least 1");
    let (s, b) = app
        .post(
            "/certificates",
            json!({"cert": "garbage", "key": "garbage"}),
        )
        .await;
    let f = assert_schema(s, &b);
    assert_eq!(
        f["cert"],
        "invalid certificate: could not parse PEM certificate"
    );
    assert_eq!(f["key"], "invalid key: could not parse PEM key");
    assert!(
        !b.to_string().contains("garbage"),
        "errors must not echo key material: {b}"
    );
    let (s, b) = app.post("/certificates", json!({})).await;
    let f = assert_schema(s, &b);
    assert_eq!(f["cert"], "required field missing");
    assert_eq!(f["key"], "required field missing");
    assert_unchanged(&app, &before).await;
    assert_next_write_is_next_revision(&app, &before).await;
});

both!(certificate_with_taken_sni_stores_nothing, |app| {
    // A certificate whose SNI shorthand conflicts must not be half-stored
    // (certificate written, SNI refused).
    let dir = std::env::temp_dir().join(format!("gantry-cert-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=a.example.com",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-days",
            "1",
        ])
        .current_dir(&dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = std::fs::read_to_string(dir.join("c.pem")).unwrap();
    let key = std::fs::read_to_string(dir.join("k.pem")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let (s, b) = app
        .post(
            "/certificates",
            json!({"cert": cert, "key": key, "snis": ["a.example.com"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let before = snapshot(&app).await;
    let (s, b) = app
        .post(
            "/certificates",
            json!({"cert": cert, "key": key, "snis": ["b.example.com", "a.example.com"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], 5);
    assert_eq!(b["fields"], json!({"name": "a.example.com"}));
    let (s, b) = app
        .post(
            "/certificates",
            json!({"cert": cert, "key": key, "snis": ["bad host"]}),
        )
        .await;
    assert_schema(s, &b);
    assert!(!b.to_string().contains("PRIVATE KEY"), "{b}");
    assert_unchanged(&app, &before).await;
    assert_eq!(count(&before, "certificates"), 1);
    assert_eq!(count(&before, "snis"), 1);
    assert_next_write_is_next_revision(&app, &before).await;
});
