//! What the admin API accepts, every proxy can apply: writes gantry-proxy's
//! own compiler would refuse get a 400 naming the field, and change
//! nothing, on both store backends. (The issue's reproductions: a Redis
//! option gantry-proxy cannot honour, a consumer name that cannot be a
//! header, regexes RE2 refuses.)

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn schema_error(app: &TestApp, path: &str, body: Value) -> Value {
    let before = app.revision().await;
    let (s, b) = app.post(path, body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "POST {path} {body}: {b}");
    assert_eq!(b["code"], 2, "{b}");
    assert_eq!(b["name"], "schema violation", "{b}");
    assert_eq!(
        app.revision().await,
        before,
        "a refused write made a revision"
    );
    b["fields"].clone()
}

both!(plugin_configs_gantry_proxy_cannot_run, |app| {
    let (s, _) = app
        .post("/services", json!({"name": "s", "url": "http://h:80"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let f = schema_error(
        &app,
        "/services/s/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "redis",
               "redis": {"host": "127.0.0.1", "port": 6379, "ssl": true}}}),
    )
    .await;
    assert!(
        f["config"]
            .as_str()
            .is_some_and(|m| m.contains("redis.ssl")),
        "{f}"
    );
    // The same through PATCH of an accepted instance.
    let (s, p) = app
        .post(
            "/services/s/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let before = app.revision().await;
    let (s, b) = app
        .json(
            "PATCH",
            &format!("/plugins/{}", p["id"].as_str().unwrap()),
            json!({"config": {"policy": "redis", "redis": {"host": "r", "ssl": true}}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(app.revision().await, before);
});

both!(consumer_names_that_cannot_be_headers, |app| {
    for (field, value) in [
        ("username", "alice\r\nx-admin: 1"),
        ("custom_id", "a\nb"),
        ("username", "nul\u{0}"),
    ] {
        let f = schema_error(&app, "/consumers", json!({ field: value })).await;
        assert!(
            f[field]
                .as_str()
                .is_some_and(|m| m.contains("control characters") || m.contains("NUL")),
            "{f}"
        );
    }
    // A tab or non-ASCII is a valid header value: accepted, as in Kong.
    let (s, b) = app.post("/consumers", json!({"username": "Zoë\tQ"})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
});

both!(regexes_re2_refuses, |app| {
    let (s, _) = app
        .post("/services", json!({"name": "s", "url": "http://h:80"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    for re in [
        r"~/(?x)a b",
        r"~/a{1001}",
        r"~/(?-u:\w)",
        r"~/(?=x)",
        r"~/(",
    ] {
        let f = schema_error(&app, "/services/s/routes", json!({ "paths": [re] })).await;
        let m = f["paths"][0].as_str().unwrap_or_default();
        assert!(m.starts_with("invalid regex:"), "{re}: {f}");
    }
    // The fleet's RE2 program-size limit (4096, Envoy's error_level in the
    // shipped bootstraps) applies to the regex Envoy is given,
    // `(?:<path>).*` (Kong's path regexes match a prefix): 4096 for
    // `...e{89}`, 4097 for `...e{90}`. The refusal carries Envoy's words.
    let long = |n: u32| format!("/a{{1000}}b{{1000}}c{{1000}}d{{1000}}e{{{n}}}");
    let f = schema_error(
        &app,
        "/services/s/routes",
        json!({"paths": [format!("~{}", long(90))]}),
    )
    .await;
    assert_eq!(
        f["paths"][0],
        format!(
            "invalid regex: '{0}' (regex '(?:{0}).*' RE2 program size of 4097 > max program \
             size of 4096 set for the error level threshold. Increase configured max program \
             size if necessary.)",
            long(90)
        ),
        "{f}"
    );
    // What a field check cannot see, admission does: a header regex is
    // emitted as `(?i)^(?:.*(?:<re>).*)$` (4097 for ...e{91}).
    let header = |n: u32| format!("~*a{{1000}}b{{1000}}c{{1000}}d{{1000}}e{{{n}}}");
    let f = schema_error(
        &app,
        "/services/s/routes",
        json!({"paths": ["/h"], "headers": {"x-a": [header(91)]}}),
    )
    .await;
    assert!(
        f["@entity"][0]
            .as_str()
            .is_some_and(|m| m.contains("RE2 program size of 4097 > max program size of 4096")),
        "{f}"
    );
    // What RE2 and its size limit take is taken, including a path Envoy's
    // default limit of 100 would refuse.
    let (s, b) = app
        .post(
            "/services/s/routes",
            json!({"paths": [r"~/users/(?<id>\d+)$", format!("~{}", long(89)), r"~/\Qa.b\E",
                             r"~/tokens/[a-f0-9]{64}$"],
                   "headers": {"x-a": [header(90)]}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
});

// A whole declarative document is admitted whole: one entity gantry-proxy
// would refuse fails the document, and nothing of it is stored.
both!(declarative_documents_are_admitted_whole, |app| {
    let before = app.revision().await;
    let doc = json!({
        "_format_version": "3.0",
        "consumers": [{"username": "ok"}, {"username": "bad\r\nname"}],
        "services": [{"name": "s", "url": "http://h:80", "routes": [{"name": "r", "paths": ["/r"]}]}],
    });
    let (s, b) = app.post("/config", doc).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(app.revision().await, before, "{b}");
    let doc = json!({
        "_format_version": "3.0",
        "services": [{"name": "s", "url": "http://h:80",
            "plugins": [{"name": "rate-limiting", "config": {"minute": 1, "policy": "redis",
                         "redis": {"host": "r", "ssl": true}}}]}],
    });
    let (s, b) = app.post("/config", doc).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.to_string().contains("redis.ssl"), "{b}");
    assert_eq!(app.revision().await, before);
});

// What only gantry-proxy's compiler sees (the schema takes it): a
// certificate whose key is another certificate's is refused on the
// entity, when it is written, not when an SNI first uses it.
both!(certificates_gantry_proxy_cannot_load, |app| {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tls");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
    let (rsa_crt, rsa_key, ec_key) = (
        read("secure.example.com.rsa.crt"),
        read("secure.example.com.rsa.key"),
        read("secure.example.com.ec.key"),
    );
    let f = schema_error(
        &app,
        "/certificates",
        json!({"cert": rsa_crt, "key": ec_key}),
    )
    .await;
    let m = f["@entity"][0].as_str().unwrap_or_default();
    assert!(m.contains("does not match"), "{f}");
    assert!(!m.contains("PRIVATE KEY"), "no key material in errors: {m}");
    let (s, b) = app
        .post(
            "/certificates",
            json!({"cert": rsa_crt, "key": rsa_key, "snis": ["secure.example.com"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
});
