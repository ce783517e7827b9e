//! The admin API against hostile input: depth, width, size and encodings.
//! Each request gets a 4xx in Kong's shape, the process stays up, and
//! nothing changes. How long and how much memory such requests take is
//! measured by `bench/` (`gantry-bench admin-hostile`), not asserted here.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn refused(
    app: &TestApp,
    method: &str,
    path: &str,
    ct: &str,
    body: String,
) -> (StatusCode, Value) {
    let before = app.revision().await;
    let (s, b) = app.raw(method, path, ct, body).await;
    assert!(s.is_client_error(), "{method} {path}: {s} {b}");
    assert_eq!(app.revision().await, before, "{b}");
    // Still serving.
    let (st, _) = app.get("/status").await;
    assert_eq!(st, StatusCode::OK);
    (s, b)
}

const FORM: &str = "application/x-www-form-urlencoded";

both!(deep_form_keys, |app| {
    // 10 KB of `x.a.a.a...=1`: once enough to overflow gantry-cp's stack.
    let body = format!("name=s&host=h&x{}=1", ".a".repeat(5000));
    let (s, b) = refused(&app, "POST", "/services", FORM, body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("nested too deeply")),
        "{b}"
    );
    // Deep brackets too.
    let body = format!("name=s&host=h&x{}=1", "[1]".repeat(5000));
    refused(&app, "POST", "/services", FORM, body).await;
});

both!(sparse_form_indexes, |app| {
    // 3,000 keys `kN[10001]=x` (42 KB): once 4 GB of nulls.
    let body: Vec<String> = (0..3000).map(|n| format!("k{n}[10001]=x")).collect();
    let (_, b) = refused(&app, "POST", "/services", FORM, body.join("&")).await;
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("Too many arguments") || m.contains("gap")),
        "{b}"
    );
    let body: Vec<String> = (0..900).map(|n| format!("k{n}[10001]=x")).collect();
    let (_, b) = refused(&app, "POST", "/services", FORM, body.join("&")).await;
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("leaves a gap")),
        "{b}"
    );
    let (_, b) = refused(
        &app,
        "POST",
        "/services",
        FORM,
        format!("name=s&host=h&tags[{}]=x", u64::MAX),
    )
    .await;
    assert!(b["message"].is_string(), "{b}");
    // Kong's argument limit.
    let body: Vec<String> = (0..1001).map(|n| format!("tags[]=t{n}")).collect();
    let (_, b) = refused(
        &app,
        "POST",
        "/services",
        FORM,
        format!("name=s&host=h&{}", body.join("&")),
    )
    .await;
    assert_eq!(b["message"], "Too many arguments");
    // In-order, out-of-order and appended indexes still work.
    let (s, b) = app
        .form(
            "POST",
            "/services",
            &[
                ("name", "ok"),
                ("host", "h"),
                ("tags[2]", "b"),
                ("tags[1]", "a"),
                ("tags[]", "c"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["tags"], json!(["a", "b", "c"]));
});

both!(deep_json, |app| {
    for body in [
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!(r#"{{"name":"s","host":"h","tags":{}}}"#, "[".repeat(5000)),
        format!("{}1{}", r#"{"a":"#.repeat(5000), "}".repeat(5000)),
    ] {
        let (s, _) = refused(&app, "POST", "/services", "application/json", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
});

both!(hostile_declarative_documents, |app| {
    // 100 KB of nested `[` (JSON first, then YAML): once 20 s and a stalled
    // admin API; refused by a linear scan now.
    for (ct, body) in [
        ("application/json", "[".repeat(100_000)),
        ("application/yaml", "[".repeat(100_000)),
        ("application/yaml", "{a: ".repeat(25_000)),
        (
            "application/yaml",
            format!("_format_version: \"3.0\"\nservices: {}", "[".repeat(2000)),
        ),
    ] {
        let (s, b) = refused(&app, "POST", "/config", ct, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    }
    // Two at once, with the admin API answering meanwhile.
    let heavy = || {
        let (client, base) = (app.client.clone(), app.base.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/config"))
                .header("content-type", "application/yaml")
                .body("{a: ".repeat(25_000))
                .send()
                .await
                .map(|r| r.status())
        })
    };
    let (a, b) = (heavy(), heavy());
    let t = std::time::Instant::now();
    let (s, _) = app.get("/status").await;
    eprintln!(
        "GET /status during two hostile documents: {:?}",
        t.elapsed()
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a.await.unwrap().unwrap(), StatusCode::BAD_REQUEST);
    assert_eq!(b.await.unwrap().unwrap(), StatusCode::BAD_REQUEST);
});

both!(wide_and_long_values, |app| {
    // 100,000 tags: once 26 s; now refused by count, checked in one pass.
    let tags: Vec<String> = (0..100_000).map(|n| format!("t{n}")).collect();
    let body = json!({"name": "s", "host": "h", "tags": tags}).to_string();
    let (_, b) = refused(&app, "POST", "/services", "application/json", body).await;
    assert_eq!(b["fields"]["tags"], "length must be at most 128", "{b}");
    // A route path of 400,000 characters.
    let (s, _) = app
        .post("/services", json!({"name": "s", "host": "h"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let body = json!({"paths": [format!("/{}", "a".repeat(400_000))]}).to_string();
    let (_, b) = refused(&app, "POST", "/services/s/routes", "application/json", body).await;
    assert_eq!(
        b["fields"]["paths"][0], "length must be at most 8192",
        "{b}"
    );
    // 10,000 hosts on one route.
    let hosts: Vec<String> = (0..10_000).map(|n| format!("h{n}.example.com")).collect();
    let body = json!({"paths": ["/x"], "hosts": hosts}).to_string();
    let (_, b) = refused(&app, "POST", "/services/s/routes", "application/json", body).await;
    assert_eq!(b["fields"]["hosts"], "length must be at most 1000", "{b}");
    // A header matcher value of 100 KB.
    let body = json!({"paths": ["/x"], "headers": {"x-a": ["v".repeat(100_000)]}}).to_string();
    refused(&app, "POST", "/services/s/routes", "application/json", body).await;
});

both!(encodings, |app| {
    for (ct, body) in [
        (
            "application/json",
            String::from_utf8_lossy(b"{\"name\":\"\xff\xfe\"}").into_owned(),
        ),
        (
            "application/json",
            "\u{feff}{\"name\":\"s\",\"host\":\"h\",\"port\":\"x\"}".to_string(),
        ),
        (FORM, "name=%ZZ&host=%".to_string()),
        (FORM, "name=s&host=h&port=%E0%A4%A".to_string()),
        (
            "application/json; charset=utf-16",
            "{\"name\":1}".to_string(),
        ),
        ("text/plain", "name=s".to_string()),
    ] {
        let (s, b) = app.raw("POST", "/services", ct, body.clone()).await;
        assert!(
            s.is_client_error() || s == StatusCode::CREATED,
            "{ct} {body:?}: {s} {b}"
        );
        assert_ne!(s, StatusCode::INTERNAL_SERVER_ERROR);
    }
    // Raw invalid UTF-8 as a form body and as a document.
    let (s, _) = app
        .raw("POST", "/services", FORM, b"name=\xff\xfe&host=h".to_vec())
        .await;
    assert!(s.is_client_error() || s == StatusCode::CREATED, "{s}");
    let (s, b) = app
        .raw(
            "POST",
            "/config",
            "application/yaml",
            b"\xff\xfe\x00".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (st, _) = app.get("/status").await;
    assert_eq!(st, StatusCode::OK);
});

// Browsers: a page on another site can make the visitor's browser send
// requests to the loopback admin API. A cross-site write is refused (CSRF),
// and so is any request naming another host (DNS rebinding).
both!(browsers, |app| {
    let before = app.revision().await;
    let send = |method: reqwest::Method, path: &str, headers: &[(&str, &str)]| {
        let mut r = app
            .client
            .request(method, format!("{}{path}", app.base))
            .header("content-type", FORM)
            .body("name=csrf&host=h");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send()
    };
    let r = send(
        reqwest::Method::POST,
        "/services",
        &[("origin", "http://evil.example")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let b: Value = r.json().await.unwrap();
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("cross-site")),
        "{b}"
    );
    let r = send(
        reqwest::Method::DELETE,
        "/services/x",
        &[("sec-fetch-site", "cross-site")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = send(reqwest::Method::POST, "/services", &[("origin", "null")])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = send(
        reqwest::Method::GET,
        "/services",
        &[("host", "evil.example")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = send(
        reqwest::Method::POST,
        "/services",
        &[("host", "evil.example:8001")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.revision().await, before);

    // Same origin (a page the admin API served), and tools that send no
    // Origin at all, are served.
    let host = app.base.trim_start_matches("http://").to_string();
    let r = send(
        reqwest::Method::POST,
        "/services",
        &[("origin", &app.base), ("sec-fetch-site", "same-origin")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{host}");
    let r = app
        .client
        .get(format!("{}/services/csrf", app.base))
        .header(
            "host",
            format!("localhost:{}", host.rsplit(':').next().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
});
