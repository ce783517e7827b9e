//! The admin API's entity endpoints, driven as a Kong operator drives them
//! (JSON and form bodies, nested paths, PUT upserts, pages, tags), on both
//! store backends.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// A write with its `X-Gantry-Revision` header.
async fn send_rev(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value, Option<i64>) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.client.request(m, format!("{}{path}", app.base));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let rev = resp.headers().get("x-gantry-revision").map(|v| {
        v.to_str()
            .expect("ascii header")
            .parse::<i64>()
            .expect("numeric revision")
    });
    let text = resp.text().await.expect("body");
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("json body")
    };
    (status, v, rev)
}

/// Every item of a (small) listing, asserting it fits on one page.
async fn all(app: &TestApp, path: &str) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (s, b) = app.get(&format!("{path}{sep}size=1000")).await;
    assert_eq!(s, StatusCode::OK, "GET {path}: {b}");
    assert!(b["next"].is_null(), "GET {path}: unexpected next page: {b}");
    b["data"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {path}: no data array: {b}"))
        .clone()
}

fn names(items: &[Value], field: &str) -> BTreeSet<String> {
    items
        .iter()
        .map(|i| i[field].as_str().unwrap_or_default().to_string())
        .collect()
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

fn set<S: AsRef<str>>(items: &[S]) -> BTreeSet<String> {
    items.iter().map(|s| s.as_ref().to_string()).collect()
}

async fn create(app: &TestApp, path: &str, body: Value) -> Value {
    let (s, b) = app.post(path, body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "POST {path} {body}: {b}");
    b
}

/// A real self-signed certificate, its private key, and the public key.
fn self_signed(cn: &str) -> (String, String, String) {
    let dir = std::env::temp_dir().join(format!("gantry-cert-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let subj = format!("/CN={cn}");
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-keyout", "k.pem",
            "-out", "c.pem", "-days", "1",
        ])
        .current_dir(&dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-in", "k.pem", "-pubout"])
        .current_dir(&dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl rsa: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap();
    let cert = std::fs::read_to_string(dir.join("c.pem")).unwrap();
    let key = std::fs::read_to_string(dir.join("k.pem")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (cert, key, public)
}

fn is_uuid(v: &Value) -> bool {
    v.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok())
}

// ---------------------------------------------------------------- services

both!(service_url_shorthand_and_defaults, |app| {
    let b = create(
        &app,
        "/services",
        json!({"name": "s1", "url": "https://api.example.com/v1"}),
    )
    .await;
    assert!(is_uuid(&b["id"]), "{b}");
    assert_eq!(b["name"], "s1");
    assert_eq!(b["protocol"], "https");
    assert_eq!(b["host"], "api.example.com");
    assert_eq!(b["port"], 443);
    assert_eq!(b["path"], "/v1");
    assert_eq!(b["retries"], 5);
    assert_eq!(b["connect_timeout"], 60000);
    assert_eq!(b["write_timeout"], 60000);
    assert_eq!(b["read_timeout"], 60000);
    assert_eq!(b["enabled"], true);
    assert!(b["created_at"].is_i64() && b["updated_at"].is_i64(), "{b}");
    assert!(
        b.get("url").is_none(),
        "url is a shorthand, not a stored field: {b}"
    );

    let b = create(&app, "/services", json!({"name": "s2", "url": "http://h"})).await;
    assert_eq!(b["protocol"], "http");
    assert_eq!(b["host"], "h");
    assert_eq!(b["port"], 80);
    assert!(b["path"].is_null(), "http://h has no path: {b}");

    let b = create(&app, "/services", json!({"name": "s3", "url": "http://h/"})).await;
    assert_eq!(b["path"], "/");

    let b = create(
        &app,
        "/services",
        json!({"name": "s4", "url": "http://u:8080/p"}),
    )
    .await;
    assert_eq!(b["port"], 8080);
    assert_eq!(b["path"], "/p");

    // Plain fields, no url: protocol and port defaults.
    let b = create(
        &app,
        "/services",
        json!({"name": "s5", "host": "backend.internal"}),
    )
    .await;
    assert_eq!(b["protocol"], "http");
    assert_eq!(b["port"], 80);
    assert!(b["path"].is_null());
    assert!(b["tags"].is_null());

    assert_eq!(
        names(&all(&app, "/services").await, "name"),
        set(&["s1", "s2", "s3", "s4", "s5"])
    );
});

both!(service_get_by_id_and_by_name, |app| {
    let created = create(
        &app,
        "/services",
        json!({"name": "billing", "url": "http://billing.internal:9000/api", "tags": ["team-a"]}),
    )
    .await;
    let sid = id(&created);
    let (s, by_id) = app.get(&format!("/services/{sid}")).await;
    assert_eq!(s, StatusCode::OK, "{by_id}");
    assert_eq!(by_id, created);
    let (s, by_name) = app.get("/services/billing").await;
    assert_eq!(s, StatusCode::OK, "{by_name}");
    assert_eq!(by_name, created);
    let (s, b) = app.get("/services/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b, json!({"message": "Not found"}));
    let (s, b) = app
        .get(&format!("/services/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b, json!({"message": "Not found"}));
});

both!(service_put_upserts_by_name, |app| {
    let (s, first) = app
        .json(
            "PUT",
            "/services/up1",
            json!({"url": "http://a.internal", "retries": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["name"], "up1");
    assert_eq!(first["host"], "a.internal");
    assert_eq!(first["retries"], 2);
    let sid = id(&first);

    let (s, second) = app
        .json(
            "PUT",
            "/services/up1",
            json!({"url": "http://b.internal:81"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(id(&second), sid, "PUT must keep the id");
    assert_eq!(second["name"], "up1");
    assert_eq!(second["host"], "b.internal");
    assert_eq!(second["port"], 81);
    // PUT replaces: what the body leaves out returns to its default.
    assert_eq!(second["retries"], 5);
    assert_eq!(second["created_at"], first["created_at"]);

    let (s, got) = app.get("/services/up1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["host"], "b.internal");

    // PUT by id works too and keeps the name from the body.
    let (s, third) = app
        .json(
            "PUT",
            &format!("/services/{sid}"),
            json!({"name": "up1", "host": "c.internal"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{third}");
    assert_eq!(id(&third), sid);
    assert_eq!(third["host"], "c.internal");

    // PUT to a fresh uuid creates with that id.
    let fresh = uuid::Uuid::new_v4().to_string();
    let (s, b) = app
        .json(
            "PUT",
            &format!("/services/{fresh}"),
            json!({"name": "up2", "host": "d.internal"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["id"], fresh.as_str());

    assert_eq!(all(&app, "/services").await.len(), 2);
});

both!(service_patch_merges, |app| {
    let created = create(
        &app,
        "/services",
        json!({"name": "p1", "host": "h1", "port": 8080, "retries": 3, "tags": ["a"], "path": "/base"}),
    )
    .await;
    let (s, b) = app
        .json("PATCH", "/services/p1", json!({"read_timeout": 1000}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["read_timeout"], 1000);
    for f in [
        "id",
        "name",
        "host",
        "port",
        "retries",
        "tags",
        "path",
        "protocol",
        "connect_timeout",
        "created_at",
    ] {
        assert_eq!(b[f], created[f], "PATCH changed {f}: {b}");
    }
    // The url shorthand replaces its four fields and nothing else.
    let (s, b) = app
        .json(
            "PATCH",
            &format!("/services/{}", id(&created)),
            json!({"url": "https://x.example.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["protocol"], "https");
    assert_eq!(b["host"], "x.example.com");
    assert_eq!(b["port"], 443);
    assert!(b["path"].is_null(), "{b}");
    assert_eq!(b["retries"], 3);
    assert_eq!(b["read_timeout"], 1000);
    // A form PATCH is coerced too.
    let (s, b) = app
        .form(
            "PATCH",
            "/services/p1",
            &[("retries", "7"), ("enabled", "false")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["retries"], 7);
    assert_eq!(b["enabled"], false);
    assert_eq!(b["host"], "x.example.com");
    let (_, got) = app.get("/services/p1").await;
    assert_eq!(got, b);
    let (s, b) = app
        .json("PATCH", "/services/missing", json!({"retries": 1}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
});

both!(service_delete, |app| {
    let created = create(&app, "/services", json!({"name": "gone", "host": "h"})).await;
    let (s, b) = app.delete("/services/gone").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(b.is_null(), "204 has no body: {b}");
    let (s, b) = app.get(&format!("/services/{}", id(&created))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["message"], "Not found");
    let (s, _) = app.get("/services/gone").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The name is free again.
    create(&app, "/services", json!({"name": "gone", "host": "h2"})).await;
});

both!(service_form_create_is_coerced, |app| {
    let (s, b) = app
        .form(
            "POST",
            "/services",
            &[
                ("name", "x"),
                ("url", "http://u:8080/p"),
                ("retries", "3"),
                ("tags[]", "a"),
                ("connect_timeout", "5000"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["name"], "x");
    assert_eq!(b["protocol"], "http");
    assert_eq!(b["host"], "u");
    assert!(b["port"].is_i64(), "port is a number: {b}");
    assert_eq!(b["port"], 8080);
    assert!(b["retries"].is_i64(), "retries is a number: {b}");
    assert_eq!(b["retries"], 3);
    assert_eq!(b["connect_timeout"], 5000);
    assert_eq!(b["path"], "/p");
    assert_eq!(b["tags"], json!(["a"]));
    let (_, got) = app.get("/services/x").await;
    assert_eq!(got, b);
});

// ------------------------------------------------------------------ routes

both!(routes_nested_form_and_defaults, |app| {
    let svc = create(
        &app,
        "/services",
        json!({"name": "rs", "host": "rs.internal"}),
    )
    .await;
    let other = create(
        &app,
        "/services",
        json!({"name": "other", "host": "o.internal"}),
    )
    .await;

    let (s, r1) = app
        .form(
            "POST",
            "/services/rs/routes",
            &[
                ("name", "r1"),
                ("paths[]", "/a"),
                ("paths[]", "/b"),
                ("methods", "GET"),
                ("hosts[]", "*.example.com"),
                ("strip_path", "false"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r1}");
    assert_eq!(r1["paths"], json!(["/a", "/b"]));
    assert_eq!(r1["methods"], json!(["GET"]));
    assert_eq!(r1["hosts"], json!(["*.example.com"]));
    assert_eq!(r1["strip_path"], false);
    assert_eq!(r1["service"], json!({"id": id(&svc)}));

    // Defaults, on a JSON route with a regex path and a headers map.
    let r2 = create(
        &app,
        "/services/rs/routes",
        json!({"name": "r2", "paths": ["~/users/\\d+$"], "headers": {"x-version": ["v1", "v2"]}}),
    )
    .await;
    assert_eq!(r2["paths"], json!(["~/users/\\d+$"]));
    assert_eq!(r2["headers"], json!({"x-version": ["v1", "v2"]}));
    assert_eq!(r2["protocols"], json!(["http", "https"]));
    assert_eq!(r2["strip_path"], true);
    assert_eq!(r2["preserve_host"], false);
    assert_eq!(r2["regex_priority"], 0);
    assert_eq!(r2["https_redirect_status_code"], 426);
    assert_eq!(r2["path_handling"], "v0");
    assert_eq!(r2["request_buffering"], true);
    assert_eq!(r2["response_buffering"], true);
    assert!(r2["methods"].is_null() && r2["hosts"].is_null(), "{r2}");
    assert_eq!(r2["service"]["id"], svc["id"]);

    // A top-level route may reference its service by name.
    let r3 = create(
        &app,
        "/routes",
        json!({"name": "r3", "paths": ["/o"], "service": {"name": "other"}}),
    )
    .await;
    assert_eq!(r3["service"], json!({"id": id(&other)}));

    let listed = all(&app, "/services/rs/routes").await;
    assert_eq!(names(&listed, "name"), set(&["r1", "r2"]));
    assert!(listed.iter().all(|r| r["service"]["id"] == svc["id"]));
    let by_id_path = all(&app, &format!("/services/{}/routes", id(&svc))).await;
    assert_eq!(names(&by_id_path, "name"), set(&["r1", "r2"]));
    assert_eq!(
        names(&all(&app, "/services/other/routes").await, "name"),
        set(&["r3"])
    );
    assert_eq!(all(&app, "/routes").await.len(), 3);

    let (s, b) = app.get("/services/rs/routes/r1").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, r1);
    let (s, b) = app.get(&format!("/services/rs/routes/{}", id(&r2))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["name"], "r2");
    // A route of another service is not found under this one.
    let (s, b) = app.get("/services/rs/routes/r3").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b, json!({"message": "Not found"}));
    let (s, _) = app.get(&format!("/services/rs/routes/{}", id(&r3))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // ...nor can it be changed or deleted through it.
    let (s, _) = app
        .json(
            "PATCH",
            "/services/rs/routes/r3",
            json!({"strip_path": false}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.delete("/services/rs/routes/r3").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = app.get("/routes/r3").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["strip_path"], true);

    // Nested delete of its own route works.
    let (s, _) = app.delete("/services/rs/routes/r1").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        names(&all(&app, "/services/rs/routes").await, "name"),
        set(&["r2"])
    );
});

both!(routes_patch_and_put, |app| {
    create(&app, "/services", json!({"name": "svc", "host": "h"})).await;
    let r = create(
        &app,
        "/services/svc/routes",
        json!({"name": "r", "paths": ["/x"], "methods": ["GET", "POST"]}),
    )
    .await;
    let (s, b) = app
        .json("PATCH", "/routes/r", json!({"hosts": ["api.example.com"]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["hosts"], json!(["api.example.com"]));
    assert_eq!(b["paths"], json!(["/x"]));
    assert_eq!(b["methods"], json!(["GET", "POST"]));
    assert_eq!(b["service"], r["service"]);
    // Nested PUT upserts under the service.
    let (s, b) = app
        .json(
            "PUT",
            "/services/svc/routes/r-put",
            json!({"paths": ["/put"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["name"], "r-put");
    assert_eq!(b["service"], r["service"]);
    let (s, b2) = app
        .json(
            "PUT",
            "/services/svc/routes/r-put",
            json!({"paths": ["/put2"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b2}");
    assert_eq!(b2["id"], b["id"]);
    assert_eq!(b2["paths"], json!(["/put2"]));
});

// --------------------------------------------------------------- upstreams

both!(upstream_healthcheck_defaults_and_algorithms, |app| {
    let u = create(&app, "/upstreams", json!({"name": "up.internal"})).await;
    assert_eq!(u["algorithm"], "round-robin");
    assert_eq!(u["hash_on"], "none");
    assert_eq!(u["hash_fallback"], "none");
    assert_eq!(u["slots"], 10000);
    assert_eq!(u["hash_on_cookie_path"], "/");
    let hc = &u["healthchecks"];
    assert_eq!(hc["threshold"], 0);
    assert_eq!(hc["active"]["type"], "http");
    assert_eq!(hc["active"]["timeout"], 1);
    assert_eq!(hc["active"]["concurrency"], 10);
    assert_eq!(hc["active"]["http_path"], "/");
    assert_eq!(hc["active"]["https_verify_certificate"], true);
    assert_eq!(
        hc["active"]["healthy"],
        json!({"interval": 0, "http_statuses": [200, 302], "successes": 0})
    );
    assert_eq!(
        hc["active"]["unhealthy"],
        json!({"interval": 0, "http_statuses": [429, 404, 500, 501, 502, 503, 504, 505],
               "tcp_failures": 0, "timeouts": 0, "http_failures": 0})
    );
    assert_eq!(hc["passive"]["type"], "http");
    assert_eq!(hc["passive"]["healthy"]["successes"], 0);
    assert_eq!(
        hc["passive"]["healthy"]["http_statuses"]
            .as_array()
            .map(Vec::len),
        Some(19)
    );
    assert_eq!(
        hc["passive"]["unhealthy"],
        json!({"http_statuses": [429, 500, 503], "tcp_failures": 0, "timeouts": 0, "http_failures": 0})
    );

    // A partial healthchecks record is completed with the defaults.
    let u2 = create(
        &app,
        "/upstreams",
        json!({"name": "u2", "algorithm": "least-connections", "healthchecks": {"active": {"healthy": {"interval": 5}}}}),
    )
    .await;
    assert_eq!(u2["algorithm"], "least-connections");
    assert_eq!(
        u2["healthchecks"]["active"]["healthy"],
        json!({"interval": 5, "http_statuses": [200, 302], "successes": 0})
    );
    assert_eq!(
        u2["healthchecks"]["active"]["unhealthy"],
        hc["active"]["unhealthy"]
    );
    assert_eq!(u2["healthchecks"]["passive"], hc["passive"]);

    // PATCH deep-merges into the nested record.
    let (s, b) = app
        .json(
            "PATCH",
            "/upstreams/u2",
            json!({"healthchecks": {"active": {"unhealthy": {"http_failures": 3}}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["healthchecks"]["active"]["healthy"]["interval"], 5);
    assert_eq!(b["healthchecks"]["active"]["unhealthy"]["http_failures"], 3);
    assert_eq!(
        b["healthchecks"]["active"]["unhealthy"]["http_statuses"],
        hc["active"]["unhealthy"]["http_statuses"]
    );
    assert_eq!(b["algorithm"], "least-connections");

    let u3 = create(
        &app,
        "/upstreams",
        json!({"name": "u3", "algorithm": "consistent-hashing", "hash_on": "header", "hash_on_header": "x-user"}),
    )
    .await;
    assert_eq!(u3["algorithm"], "consistent-hashing");
    assert_eq!(u3["hash_on_header"], "x-user");
    let u4 = create(
        &app,
        "/upstreams",
        json!({"name": "u4", "algorithm": "latency"}),
    )
    .await;
    assert_eq!(u4["algorithm"], "latency");
    let (s, b) = app
        .post("/upstreams", json!({"name": "u5", "algorithm": "random"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(
        b["fields"]["algorithm"],
        "expected one of: consistent-hashing, least-connections, round-robin, latency"
    );
    assert_eq!(
        names(&all(&app, "/upstreams").await, "name"),
        set(&["up.internal", "u2", "u3", "u4"])
    );
});

both!(targets_nested_with_default_port_and_cascade, |app| {
    let up = create(&app, "/upstreams", json!({"name": "up.internal"})).await;
    let keep = create(&app, "/upstreams", json!({"name": "keep.internal"})).await;

    let t1 = create(
        &app,
        "/upstreams/up.internal/targets",
        json!({"target": "10.0.0.1"}),
    )
    .await;
    assert_eq!(t1["target"], "10.0.0.1:8000");
    assert_eq!(t1["weight"], 100);
    assert_eq!(t1["upstream"], json!({"id": id(&up)}));
    let t2 = create(
        &app,
        "/upstreams/up.internal/targets",
        json!({"target": "backend.internal:9000", "weight": 50}),
    )
    .await;
    assert_eq!(t2["target"], "backend.internal:9000");
    assert_eq!(t2["weight"], 50);
    let (s, t3) = app
        .form(
            "POST",
            &format!("/upstreams/{}/targets", id(&up)),
            &[("target", "10.0.0.2"), ("weight", "0")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t3}");
    assert_eq!(t3["target"], "10.0.0.2:8000");
    assert_eq!(t3["weight"], 0);
    let kt = create(
        &app,
        "/upstreams/keep.internal/targets",
        json!({"target": "10.0.0.1"}),
    )
    .await;
    assert_eq!(kt["upstream"]["id"], keep["id"]);

    let listed = all(&app, "/upstreams/up.internal/targets").await;
    assert_eq!(
        names(&listed, "target"),
        set(&["10.0.0.1:8000", "backend.internal:9000", "10.0.0.2:8000"])
    );
    assert_eq!(all(&app, "/upstreams/keep.internal/targets").await.len(), 1);

    // The same target twice on one upstream is a conflict.
    let (s, b) = app
        .post(
            "/upstreams/up.internal/targets",
            json!({"target": "10.0.0.1:8000"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], 5);

    // Targets are found by id under their upstream.
    let (s, b) = app
        .get(&format!("/upstreams/up.internal/targets/{}", id(&t1)))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["target"], "10.0.0.1:8000");
    let (s, _) = app
        .get(&format!("/upstreams/keep.internal/targets/{}", id(&t1)))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Deleting the upstream deletes its targets, and only its targets.
    let (s, _) = app.delete("/upstreams/up.internal").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for t in [&t1, &t2, &t3] {
        let (s, b) = app.get(&format!("/targets/{}", id(t))).await;
        assert_eq!(
            s,
            StatusCode::NOT_FOUND,
            "target survived its upstream: {b}"
        );
    }
    let remaining = all(&app, "/targets").await;
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert_eq!(remaining[0]["id"], kt["id"]);
    let (s, _) = app.get("/upstreams/up.internal/targets").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
});

both!(targets_by_host_port, |app| {
    // Kong addresses a target by its `host:port` under its upstream.
    create(&app, "/upstreams", json!({"name": "up.internal"})).await;
    create(&app, "/upstreams", json!({"name": "other.internal"})).await;
    let t = create(
        &app,
        "/upstreams/up.internal/targets",
        json!({"target": "10.0.0.1"}),
    )
    .await;
    create(
        &app,
        "/upstreams/other.internal/targets",
        json!({"target": "10.0.0.1"}),
    )
    .await;
    let (s, b) = app
        .get("/upstreams/up.internal/targets/10.0.0.1:8000")
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["id"], t["id"]);
    // PUT on an existing host:port updates it rather than conflicting.
    let (s, b) = app
        .json(
            "PUT",
            "/upstreams/up.internal/targets/10.0.0.1:8000",
            json!({"weight": 7}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["id"], t["id"]);
    assert_eq!(b["weight"], 7);
    let (s, _) = app
        .delete("/upstreams/up.internal/targets/10.0.0.1:8000")
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(all(&app, "/upstreams/up.internal/targets").await.len(), 0);
    assert_eq!(
        all(&app, "/upstreams/other.internal/targets").await.len(),
        1
    );
});

// ----------------------------------------------- consumers and credentials

both!(consumers_need_username_or_custom_id, |app| {
    let alice = create(&app, "/consumers", json!({"username": "alice"})).await;
    assert!(alice["custom_id"].is_null());
    let c = create(&app, "/consumers", json!({"custom_id": "c-1"})).await;
    assert!(c["username"].is_null());
    create(
        &app,
        "/consumers",
        json!({"username": "bob", "custom_id": "c-2"}),
    )
    .await;
    let (s, b) = app.post("/consumers", json!({"tags": ["x"]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 2);
    assert_eq!(
        b["fields"]["@entity"],
        json!(["at least one of these fields must be non-empty: 'custom_id', 'username'"])
    );
    let (s, b) = app.get("/consumers/alice").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, alice);
    let (s, b) = app.post("/consumers", json!({"username": "alice"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = app
        .post(
            "/consumers",
            json!({"username": "carol", "custom_id": "c-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["fields"], json!({"custom_id": "c-1"}));
    assert_eq!(all(&app, "/consumers").await.len(), 3);
});

both!(key_auth_key_is_shown_once, |app| {
    let alice = create(&app, "/consumers", json!({"username": "alice"})).await;
    let k = create(&app, "/consumers/alice/key-auth", json!({})).await;
    let key = k["key"].as_str().expect("generated key").to_string();
    assert!(key.len() >= 16 && key != "<redacted>", "{k}");
    assert_eq!(k["consumer"], json!({"id": id(&alice)}));

    let (s, b) = app
        .get(&format!("/consumers/alice/key-auth/{}", id(&k)))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["key"], "<redacted>");
    assert_eq!(b["id"], k["id"]);
    let (s, b) = app.get("/consumers/alice/key-auth").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(b["data"][0]["key"], "<redacted>");
    assert!(!b.to_string().contains(&key), "key leaked in list: {b}");
    let (_, b) = app.get("/key-auths").await;
    assert!(
        !b.to_string().contains(&key),
        "key leaked in top-level list: {b}"
    );
    assert_eq!(b["data"][0]["key"], "<redacted>");

    // An explicit key is echoed on create, found by its value, then hidden.
    let k2 = create(
        &app,
        "/consumers/alice/key-auths",
        json!({"key": "my-secret-key"}),
    )
    .await;
    assert_eq!(k2["key"], "my-secret-key");
    let (s, b) = app.get("/consumers/alice/key-auth/my-secret-key").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["id"], k2["id"]);
    assert_eq!(b["key"], "<redacted>");
    let (s, b) = app
        .post("/consumers/alice/key-auth", json!({"key": "my-secret-key"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], 5);
    assert!(
        !b.to_string().contains("my-secret-key"),
        "a 409 must not echo the key: {b}"
    );
    assert_eq!(b["fields"]["key"], "<redacted>");
    assert_eq!(all(&app, "/consumers/alice/key-auth").await.len(), 2);

    // Updates answer as reads do: the key stays hidden.
    let (s, b) = app
        .json(
            "PATCH",
            &format!("/key-auths/{}", id(&k2)),
            json!({"tags": ["t"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["key"], "<redacted>");
    let (s, b) = app
        .json(
            "PUT",
            &format!("/consumers/alice/key-auth/{}", id(&k2)),
            json!({"key": "rotated-key"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["key"], "<redacted>");
    let (s, b) = app
        .json(
            "PATCH",
            &format!(
                "/consumers/alice/jwt/{}",
                id(&create(&app, "/consumers/alice/jwt", json!({})).await)
            ),
            json!({"tags": ["t"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["secret"], "<redacted>");
});

both!(jwt_and_acl_credentials, |app| {
    create(&app, "/consumers", json!({"username": "alice"})).await;
    let j = create(&app, "/consumers/alice/jwt", json!({})).await;
    assert_eq!(j["algorithm"], "HS256");
    let key = j["key"].as_str().expect("generated key").to_string();
    let secret = j["secret"].as_str().expect("generated secret").to_string();
    assert!(
        !key.is_empty() && !secret.is_empty() && secret != "<redacted>",
        "{j}"
    );
    let (s, b) = app.get(&format!("/consumers/alice/jwt/{}", id(&j))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["key"], key.as_str());
    assert_eq!(b["secret"], "<redacted>");
    let (_, b) = app.get("/consumers/alice/jwt").await;
    assert!(!b.to_string().contains(&secret), "secret leaked: {b}");

    let (s, b) = app
        .post("/consumers/alice/jwt", json!({"algorithm": "RS256"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["fields"]["rsa_public_key"], "required field missing");
    let (_, _, public) = self_signed("jwt.example.com");
    let rs = create(
        &app,
        "/consumers/alice/jwt",
        json!({"algorithm": "RS256", "rsa_public_key": public, "key": "iss-1"}),
    )
    .await;
    assert_eq!(rs["algorithm"], "RS256");
    assert_eq!(rs["key"], "iss-1");
    assert!(
        rs["secret"].is_null(),
        "no secret is generated for RS256: {rs}"
    );
    assert_eq!(rs["rsa_public_key"], public.as_str());
    assert_eq!(all(&app, "/consumers/alice/jwt").await.len(), 2);

    let a = create(&app, "/consumers/alice/acls", json!({"group": "admins"})).await;
    assert_eq!(a["group"], "admins");
    let (s, b) = app
        .form(
            "POST",
            "/consumers/alice/acls",
            &[("group", "ops"), ("tags[]", "t")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        names(&all(&app, "/consumers/alice/acls").await, "group"),
        set(&["admins", "ops"])
    );
    let (s, b) = app
        .post("/consumers/alice/acls", json!({"group": "admins"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = app.post("/consumers/alice/acls", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["fields"]["group"], "required field missing");
});

both!(consumer_delete_cascades, |app| {
    let alice = create(&app, "/consumers", json!({"username": "alice"})).await;
    create(&app, "/consumers", json!({"username": "bob"})).await;
    let ka = create(&app, "/consumers/alice/key-auth", json!({})).await;
    let jw = create(&app, "/consumers/alice/jwt", json!({})).await;
    let ac = create(&app, "/consumers/alice/acls", json!({"group": "g"})).await;
    let pl = create(
        &app,
        "/consumers/alice/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 5}}),
    )
    .await;
    assert_eq!(pl["consumer"], json!({"id": id(&alice)}));
    let bob_key = create(&app, "/consumers/bob/key-auth", json!({})).await;
    let bob_pl = create(
        &app,
        "/consumers/bob/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 5}}),
    )
    .await;
    let global = create(
        &app,
        "/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 50}}),
    )
    .await;

    let (s, _) = app.delete("/consumers/alice").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for (path, e) in [
        ("/key-auths", &ka),
        ("/jwts", &jw),
        ("/acls", &ac),
        ("/plugins", &pl),
    ] {
        let (s, b) = app.get(&format!("{path}/{}", id(e))).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}/{} survived: {b}", id(e));
    }
    assert_eq!(
        names(&all(&app, "/key-auths").await, "id"),
        set(&[&id(&bob_key)])
    );
    assert_eq!(all(&app, "/jwts").await.len(), 0);
    assert_eq!(all(&app, "/acls").await.len(), 0);
    assert_eq!(
        names(&all(&app, "/plugins").await, "id"),
        set(&[&id(&bob_pl), &id(&global)])
    );
    let (s, _) = app.get("/consumers/alice/key-auth").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
});

// ----------------------------------------------------------------- plugins

both!(plugins_scopes_and_defaults, |app| {
    let svc = create(&app, "/services", json!({"name": "ps", "host": "h"})).await;
    create(&app, "/services", json!({"name": "ps2", "host": "h"})).await;
    let route = create(
        &app,
        "/services/ps/routes",
        json!({"name": "pr", "paths": ["/p"]}),
    )
    .await;
    let consumer = create(&app, "/consumers", json!({"username": "pc"})).await;

    let g = create(
        &app,
        "/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 5}}),
    )
    .await;
    assert_eq!(g["enabled"], true);
    assert_eq!(g["protocols"], json!(["grpc", "grpcs", "http", "https"]));
    assert!(
        g["service"].is_null() && g["route"].is_null() && g["consumer"].is_null(),
        "{g}"
    );
    let c = &g["config"];
    assert_eq!(c["minute"], 5);
    assert_eq!(c["policy"], "local");
    assert_eq!(c["limit_by"], "consumer");
    assert_eq!(c["fault_tolerant"], true);
    assert_eq!(c["hide_client_headers"], false);
    assert_eq!(c["error_code"], 429);
    assert_eq!(c["error_message"], "API rate limit exceeded");
    assert_eq!(c["redis"]["port"], 6379);
    assert_eq!(c["redis"]["timeout"], 2000);
    assert!(c["second"].is_null() && c["hour"].is_null(), "{c}");

    let (s, sp) = app
        .form(
            "POST",
            "/services/ps/plugins",
            &[
                ("name", "rate-limiting"),
                ("config.minute", "100"),
                ("config.policy", "local"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sp}");
    assert_eq!(sp["service"], json!({"id": id(&svc)}));
    assert_eq!(sp["config"]["minute"].as_f64(), Some(100.0), "{sp}");
    assert_eq!(sp["config"]["policy"], "local");
    assert_eq!(sp["config"]["limit_by"], "consumer");

    let rp = create(
        &app,
        &format!("/routes/{}/plugins", id(&route)),
        json!({"name": "rate-limiting", "config": {"second": 2}}),
    )
    .await;
    assert_eq!(rp["route"], json!({"id": id(&route)}));
    assert!(rp["service"].is_null());
    let cp = create(
        &app,
        "/consumers/pc/plugins",
        json!({"name": "rate-limiting", "config": {"hour": 1000}}),
    )
    .await;
    assert_eq!(cp["consumer"], json!({"id": id(&consumer)}));
    let other = create(
        &app,
        "/plugins",
        json!({"name": "cors", "service": {"name": "ps"}}),
    )
    .await;
    assert_eq!(other["service"]["id"], svc["id"]);

    assert_eq!(
        names(&all(&app, "/services/ps/plugins").await, "id"),
        set(&[&id(&sp), &id(&other)])
    );
    assert_eq!(
        names(&all(&app, "/routes/pr/plugins").await, "id"),
        set(&[&id(&rp)])
    );
    assert_eq!(
        names(&all(&app, "/consumers/pc/plugins").await, "id"),
        set(&[&id(&cp)])
    );
    assert_eq!(all(&app, "/plugins").await.len(), 5);

    // The same plugin twice on one scope conflicts; another scope is fine.
    let (s, b) = app
        .post(
            "/services/ps/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["code"], 5);
    assert_eq!(b["name"], "unique constraint violation");
    let (s, b) = app
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = app
        .post(
            "/routes/pr/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    create(
        &app,
        "/services/ps2/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 1}}),
    )
    .await;
    assert_eq!(all(&app, "/plugins").await.len(), 6);

    // Deleting the service cascades its plugins (but routes must go first).
    let (s, _) = app.delete("/routes/pr").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.get(&format!("/plugins/{}", id(&rp))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "route plugin survived its route");
    let (s, b) = app.delete("/services/ps").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, _) = app.get(&format!("/plugins/{}", id(&sp))).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "service plugin survived its service"
    );
    assert_eq!(all(&app, "/plugins").await.len(), 3);
});

both!(plugin_patch_merges_config_and_toggles, |app| {
    create(&app, "/services", json!({"name": "ps", "host": "h"})).await;
    let p = create(
        &app,
        "/services/ps/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 100, "error_message": "slow down", "hide_client_headers": true}}),
    )
    .await;
    let pid = id(&p);
    let (s, b) = app
        .json(
            "PATCH",
            &format!("/plugins/{pid}"),
            json!({"config": {"hour": 1000}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["config"]["hour"], 1000);
    assert_eq!(b["config"]["minute"], 100);
    assert_eq!(b["config"]["error_message"], "slow down");
    assert_eq!(b["config"]["hide_client_headers"], true);
    assert_eq!(b["service"], p["service"]);

    let (s, b) = app
        .form(
            "PATCH",
            &format!("/plugins/{pid}"),
            &[("config.minute", "150")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["config"]["minute"].as_f64(), Some(150.0));
    assert_eq!(b["config"]["hour"], 1000);
    assert_eq!(b["config"]["error_message"], "slow down");

    // Nested PATCH works too.
    let (s, b) = app
        .json(
            "PATCH",
            &format!("/services/ps/plugins/{pid}"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["enabled"], false);
    let (_, got) = app.get(&format!("/plugins/{pid}")).await;
    assert_eq!(got["enabled"], false);
    assert_eq!(got["config"]["hour"], 1000);
    let (s, b) = app
        .form("PATCH", &format!("/plugins/{pid}"), &[("enabled", "true")])
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["enabled"], true);

    // A config PATCH that breaks the config is refused whole.
    let (s, b) = app
        .json(
            "PATCH",
            &format!("/plugins/{pid}"),
            json!({"config": {"second": 5000}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (_, after) = app.get(&format!("/plugins/{pid}")).await;
    assert!(after["config"]["second"].is_null(), "{after}");
});

both!(plugin_secrets_are_redacted, |app| {
    let p = create(
        &app,
        "/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "redis", "redis": {"host": "r.internal", "password": "hunter2"}}}),
    )
    .await;
    assert!(!p.to_string().contains("hunter2"), "{p}");
    let (s, b) = app.get(&format!("/plugins/{}", id(&p))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["config"]["redis"]["password"], "<redacted>");
    assert_eq!(b["config"]["redis"]["host"], "r.internal");
    let (_, b) = app.get("/plugins").await;
    assert!(!b.to_string().contains("hunter2"), "{b}");
    // PATCHing something else keeps the stored secret (not "<redacted>").
    let (s, _) = app
        .json(
            "PATCH",
            &format!("/plugins/{}", id(&p)),
            json!({"config": {"minute": 6}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let stored = app.store.get("plugins", &id(&p)).await.unwrap().unwrap();
    assert_eq!(stored["config"]["redis"]["password"], "hunter2");
});

// ------------------------------------------------------ certificates, SNIs

both!(certificates_and_snis, |app| {
    let (cert, key, _) = self_signed("a.example.com");
    let c = create(
        &app,
        "/certificates",
        json!({"cert": cert, "key": key, "snis": ["b.example.com", "a.example.com"], "tags": ["tls"]}),
    )
    .await;
    let cid = id(&c);
    assert_eq!(c["snis"], json!(["a.example.com", "b.example.com"]));
    assert_eq!(c["key"], "<redacted>");
    assert_eq!(c["cert"], cert.as_str());
    assert!(!c.to_string().contains("PRIVATE KEY"), "{c}");

    let (s, b) = app.get(&format!("/certificates/{cid}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["snis"], json!(["a.example.com", "b.example.com"]));
    assert_eq!(b["key"], "<redacted>");
    assert!(!b.to_string().contains("PRIVATE KEY"), "{b}");
    let (_, b) = app.get("/certificates").await;
    assert!(!b.to_string().contains("PRIVATE KEY"), "{b}");
    assert_eq!(
        b["data"][0]["snis"],
        json!(["a.example.com", "b.example.com"])
    );

    let snis = all(&app, "/snis").await;
    assert_eq!(
        names(&snis, "name"),
        set(&["a.example.com", "b.example.com"])
    );
    assert!(
        snis.iter().all(|s| s["certificate"] == json!({"id": cid})),
        "{snis:?}"
    );
    let (s, b) = app.get("/snis/a.example.com").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["certificate"]["id"], cid.as_str());
    assert_eq!(
        all(&app, &format!("/certificates/{cid}/snis")).await.len(),
        2
    );

    // The stored key is the real one.
    let stored = app.store.get("certificates", &cid).await.unwrap().unwrap();
    assert_eq!(stored["key"], key.as_str());

    // Changing the shorthand changes the SNI entities.
    let (s, b) = app
        .json(
            "PATCH",
            &format!("/certificates/{cid}"),
            json!({"snis": ["a.example.com", "c.example.com"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["snis"], json!(["a.example.com", "c.example.com"]));
    assert_eq!(
        names(&all(&app, "/snis").await, "name"),
        set(&["a.example.com", "c.example.com"])
    );
    let (s, _) = app.get("/snis/b.example.com").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // An SNI added directly is listed on the certificate too.
    let (s, b) = app
        .post(
            "/snis",
            json!({"name": "*.wild.example.com", "certificate": {"id": cid}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (_, b) = app.get(&format!("/certificates/{cid}")).await;
    assert_eq!(
        b["snis"],
        json!(["*.wild.example.com", "a.example.com", "c.example.com"])
    );
});

// ----------------------------------------------------------------- listing

both!(pagination_walks_every_entity_once, |app| {
    let mut want = BTreeSet::new();
    for i in 0..7 {
        let b = create(
            &app,
            "/services",
            json!({"name": format!("svc-{i}"), "host": "h"}),
        )
        .await;
        want.insert(id(&b));
    }
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = "/services?size=2".to_string();
    loop {
        let (s, b) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {b}");
        pages += 1;
        let data = b["data"].as_array().unwrap();
        assert!(data.len() <= 2, "{b}");
        seen.extend(data.iter().map(id));
        if b["next"].is_null() {
            assert!(
                b.get("offset").is_none_or(Value::is_null),
                "offset without next: {b}"
            );
            break;
        }
        let offset = b["offset"].as_str().expect("offset with next");
        let next = b["next"].as_str().unwrap().to_string();
        assert!(next.contains(offset), "{b}");
        assert!(next.starts_with("/services?"), "{b}");
        // The offset alone, without next's URL, gives the same page.
        let (_, same) = app.get(&format!("/services?size=2&offset={offset}")).await;
        let (_, via_next) = app.get(&next).await;
        assert_eq!(same["data"], via_next["data"]);
        path = next;
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 4);
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), want);

    // Exactly a page: no next.
    let (_, b) = app.get("/services?size=7").await;
    assert_eq!(b["data"].as_array().map(Vec::len), Some(7));
    assert!(b["next"].is_null(), "{b}");

    // Nested listings page too.
    create(&app, "/services", json!({"name": "nested", "host": "h"})).await;
    for i in 0..3 {
        create(
            &app,
            "/services/nested/routes",
            json!({"paths": [format!("/r{i}")]}),
        )
        .await;
    }
    create(&app, "/routes", json!({"paths": ["/elsewhere"]})).await;
    let (_, b) = app.get("/services/nested/routes?size=2").await;
    assert_eq!(b["data"].as_array().map(Vec::len), Some(2));
    let next = b["next"].as_str().expect("next page").to_string();
    assert!(next.starts_with("/services/nested/routes?"), "{next}");
    let (_, b2) = app.get(&next).await;
    assert_eq!(b2["data"].as_array().map(Vec::len), Some(1));
    assert!(b2["next"].is_null());
});

both!(bad_paging_parameters, |app| {
    create(&app, "/services", json!({"name": "s", "host": "h"})).await;
    for q in [
        "size=0",
        "size=1001",
        "size=x",
        "size=-1",
        "offset=!!!",
        "offset=%FF%FE",
    ] {
        let (s, b) = app.get(&format!("/services?{q}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {b}");
        assert!(b["message"].is_string(), "{q}: {b}");
    }
    let (s, b) = app.get("/services?size=1000").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = app.get("/services?size=1").await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = app.get("/tags/x?size=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
});

both!(tag_filters, |app| {
    create(
        &app,
        "/services",
        json!({"name": "s-a", "host": "h", "tags": ["a"]}),
    )
    .await;
    create(
        &app,
        "/services",
        json!({"name": "s-b", "host": "h", "tags": ["b"]}),
    )
    .await;
    let ab = create(
        &app,
        "/services",
        json!({"name": "s-ab", "host": "h", "tags": ["a", "b", "c"]}),
    )
    .await;
    create(&app, "/services", json!({"name": "s-none", "host": "h"})).await;
    let r = create(
        &app,
        "/routes",
        json!({"paths": ["/t"], "tags": ["a"], "service": {"id": id(&ab)}}),
    )
    .await;
    let c = create(
        &app,
        "/consumers",
        json!({"username": "tagged", "tags": ["a", "z"]}),
    )
    .await;

    assert_eq!(
        names(&all(&app, "/services?tags=a,b").await, "name"),
        set(&["s-ab"])
    );
    assert_eq!(
        names(&all(&app, "/services?tags=a/b").await, "name"),
        set(&["s-a", "s-b", "s-ab"])
    );
    assert_eq!(
        names(&all(&app, "/services?tags=a").await, "name"),
        set(&["s-a", "s-ab"])
    );
    assert_eq!(
        names(&all(&app, "/services?tags=a,b,c").await, "name"),
        set(&["s-ab"])
    );
    assert_eq!(all(&app, "/services?tags=nope").await.len(), 0);
    assert_eq!(all(&app, "/services?tags=a,nope").await.len(), 0);
    assert_eq!(
        names(&all(&app, "/services?tags=nope/b").await, "name"),
        set(&["s-b", "s-ab"])
    );
    let (s, b) = app.get("/services?tags=a,b/c").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // Paging keeps the tag filter.
    let (_, p1) = app.get("/services?tags=a/b&size=2").await;
    let next = p1["next"].as_str().expect("next").to_string();
    assert!(next.contains("tags="), "{next}");
    let (_, p2) = app.get(&next).await;
    let mut got: Vec<Value> = p1["data"].as_array().unwrap().clone();
    got.extend(p2["data"].as_array().unwrap().iter().cloned());
    assert_eq!(names(&got, "name"), set(&["s-a", "s-b", "s-ab"]));
    assert!(p2["next"].is_null());

    // /tags/{tag} spans collections.
    let (s, b) = app.get("/tags/a").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let rows: BTreeSet<(String, String)> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            assert_eq!(row["tag"], "a");
            (
                row["entity_name"].as_str().unwrap().to_string(),
                row["entity_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let s_a = app.get("/services/s-a").await.1;
    let want: BTreeSet<(String, String)> = [
        ("services".to_string(), id(&s_a)),
        ("services".to_string(), id(&ab)),
        ("routes".to_string(), id(&r)),
        ("consumers".to_string(), id(&c)),
    ]
    .into_iter()
    .collect();
    assert_eq!(rows, want);
    // ...and pages.
    let mut seen = BTreeSet::new();
    let mut path = "/tags/a?size=1".to_string();
    for _ in 0..10 {
        let (s, b) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        for row in b["data"].as_array().unwrap() {
            assert!(seen.insert((
                row["entity_name"].as_str().unwrap().to_string(),
                row["entity_id"].as_str().unwrap().to_string()
            )));
        }
        match b["next"].as_str() {
            Some(n) => path = n.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, want);
    let (_, b) = app.get("/tags/z").await;
    assert_eq!(b["data"].as_array().map(Vec::len), Some(1));

    // Tags follow updates: removing a tag removes the entity from filters.
    let (s, _) = app
        .json("PATCH", "/services/s-ab", json!({"tags": ["c"]}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        names(&all(&app, "/services?tags=a").await, "name"),
        set(&["s-a"])
    );
    let (_, b) = app.get("/tags/a").await;
    assert_eq!(b["data"].as_array().map(Vec::len), Some(3));
});

// --------------------------------------------------------------- revisions

both!(revision_header_counts_writes, |app| {
    let r0 = app.revision().await;
    let (s, svc, rev) = send_rev(
        &app,
        "POST",
        "/services",
        Some(json!({"name": "rv", "host": "h"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    assert_eq!(rev, Some(r0 + 1));
    let (s, _, rev) = send_rev(&app, "PATCH", "/services/rv", Some(json!({"retries": 1}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rev, Some(r0 + 2));
    let (s, route, rev) = send_rev(
        &app,
        "POST",
        "/services/rv/routes",
        Some(json!({"paths": ["/rv"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(rev, Some(r0 + 3));
    let (s, _, rev) = send_rev(&app, "PUT", "/services/rv2", Some(json!({"host": "h"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(rev, Some(r0 + 4));
    let (s, _, rev) = send_rev(&app, "DELETE", &format!("/routes/{}", id(&route)), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(rev, Some(r0 + 5));
    // A cascade is one write.
    create(&app, "/upstreams", json!({"name": "u"})).await;
    create(&app, "/upstreams/u/targets", json!({"target": "10.0.0.1"})).await;
    create(&app, "/upstreams/u/targets", json!({"target": "10.0.0.2"})).await;
    assert_eq!(app.revision().await, r0 + 8);
    let (s, _, rev) = send_rev(&app, "DELETE", "/upstreams/u", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(rev, Some(r0 + 9));
    // So is a certificate with its SNIs.
    let (cert, key, _) = self_signed("rev.example.com");
    let (s, _, rev) = send_rev(
        &app,
        "POST",
        "/certificates",
        Some(json!({"cert": cert, "key": key, "snis": ["rev.example.com"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(rev, Some(r0 + 10));
    assert_eq!(app.revision().await, r0 + 10);
    // Reads carry no revision header and change nothing.
    let (s, _, rev) = send_rev(&app, "GET", "/services/rv", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rev, None);
    assert_eq!(app.revision().await, r0 + 10);
});

both!(noop_writes_make_no_revision, |app| {
    create(&app, "/services", json!({"name": "same", "host": "h"})).await;
    let r = app.revision().await;
    // The same PUT twice, a second apart: the second changes nothing.
    let (s, first, rev) =
        send_rev(&app, "PUT", "/services/same", Some(json!({"host": "h2"}))).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(rev, Some(r + 1));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, second, rev) =
        send_rev(&app, "PUT", "/services/same", Some(json!({"host": "h2"}))).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(
        rev,
        Some(r + 1),
        "an identical PUT must not make a revision"
    );
    assert_eq!(app.revision().await, r + 1);
    // Deleting what is not there succeeds and changes nothing.
    let (s, _, _) = send_rev(&app, "DELETE", "/services/never-was", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.revision().await, r + 1);
});
