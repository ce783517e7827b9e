//! Kong's `ca_certificates` and the services that trust them: CRUD, Kong's
//! validation and error bodies, references from `services.ca_certificates`
//! (checked on write, refused on delete), and export/import, on both store
//! backends. Certificates are fixtures made with the openssl CLI (see
//! fixtures/README.md).

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CA: &str = include_str!("fixtures/ca.pem");
const CA2: &str = include_str!("fixtures/ca2.pem");
const LEAF: &str = include_str!("fixtures/leaf.pem");
const EXPIRED: &str = include_str!("fixtures/expired-ca.pem");
/// `openssl x509 -in fixtures/ca.pem -outform DER | sha256sum`
const CA_DIGEST: &str = "cebaa152495b496fc82916aa41c1152c22b9ed32d2ec5fc2715f8d8494536b85";
const CA2_DIGEST: &str = "a75d5498284a6825261618953ee0d7c3899dcbd0919c445349e07b7592a2eca9";

const NOT_CA: &str =
    "certificate does not appear to be a CA because it is missing the \"CA\" basic constraint";
const EXPIRED_MSG: &str = "certificate expired, \"Not After\" time is in the past";

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

async fn create(app: &TestApp, path: &str, body: Value) -> Value {
    let (s, b) = app.post(path, body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "POST {path} {body}: {b}");
    b
}

async fn list(app: &TestApp, path: &str) -> Vec<Value> {
    let (s, b) = app.get(path).await;
    assert_eq!(s, StatusCode::OK, "GET {path}: {b}");
    b["data"].as_array().cloned().unwrap_or_default()
}

/// Everything a failed write must leave alone.
async fn state(app: &TestApp) -> (i64, Vec<Value>, Vec<Value>) {
    (
        app.revision().await,
        list(app, "/ca_certificates?size=1000").await,
        list(app, "/services?size=1000").await,
    )
}

fn assert_schema_entity(s: StatusCode, b: &Value, msg: &str) {
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 2, "{b}");
    assert_eq!(b["name"], "schema violation", "{b}");
    assert_eq!(b["message"], format!("schema violation ({msg})"), "{b}");
    assert_eq!(b["fields"], json!({"@entity": [msg]}), "{b}");
}

both!(ca_certificates_crud, |app| {
    let a = create(&app, "/ca_certificates", json!({"cert": CA, "tags": ["a"]})).await;
    let aid = id(&a);
    assert_eq!(a["cert"], CA);
    assert_eq!(a["cert_digest"], CA_DIGEST);
    assert_eq!(a["tags"], json!(["a"]));
    assert!(a["created_at"].is_i64() && a["updated_at"].is_i64(), "{a}");

    // A digest sent by the client is replaced by the computed one, as Kong does.
    let b = create(
        &app,
        "/ca_certificates",
        json!({"cert": CA2, "cert_digest": "0000", "tags": ["b"]}),
    )
    .await;
    assert_eq!(b["cert_digest"], CA2_DIGEST);

    let (s, got) = app.get(&format!("/ca_certificates/{aid}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["cert"], CA);
    assert_eq!(got["cert_digest"], CA_DIGEST);

    assert_eq!(list(&app, "/ca_certificates").await.len(), 2);
    let tagged = list(&app, "/ca_certificates?tags=a").await;
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0]["id"], aid.as_str());
    let (s, page) = app.get("/ca_certificates?size=1").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    assert!(
        page["next"]
            .as_str()
            .is_some_and(|n| n.starts_with("/ca_certificates?offset=")),
        "{page}"
    );

    // The digest is unique: the same CA twice is a conflict.
    let (s, e) = app.post("/ca_certificates", json!({"cert": CA})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["code"], 5);
    assert_eq!(e["fields"], json!({"cert_digest": CA_DIGEST}));
    let (s, e) = app
        .json(
            "PATCH",
            &format!("/ca_certificates/{aid}"),
            json!({"cert": CA2}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");

    let (s, p) = app
        .json(
            "PATCH",
            &format!("/ca_certificates/{aid}"),
            json!({"tags": ["a", "c"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["tags"], json!(["a", "c"]));
    assert_eq!(p["cert_digest"], CA_DIGEST);

    // PUT replaces (the digest follows the new certificate) and creates by id.
    let (s, e) = app.delete(&format!("/ca_certificates/{}", id(&b))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{e}");
    let (s, p) = app
        .json(
            "PUT",
            &format!("/ca_certificates/{aid}"),
            json!({"cert": CA2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["cert_digest"], CA2_DIGEST);
    assert!(p["tags"].is_null(), "{p}");
    let new_id = "123e4567-e89b-42d3-a456-426655440000";
    let (s, p) = app
        .json(
            "PUT",
            &format!("/ca_certificates/{new_id}"),
            json!({"cert": CA}),
        )
        .await;
    assert!(s.is_success(), "{s} {p}");
    assert_eq!(p["id"], new_id);

    for i in [aid.as_str(), new_id] {
        let (s, e) = app.delete(&format!("/ca_certificates/{i}")).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{e}");
        let (s, _) = app.get(&format!("/ca_certificates/{i}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    assert!(list(&app, "/ca_certificates").await.is_empty());
});

both!(ca_certificate_bad_input_stores_nothing, |app| {
    let a = create(&app, "/ca_certificates", json!({"cert": CA})).await;
    let aid = id(&a);
    let before = state(&app).await;

    let (s, b) = app.post("/ca_certificates", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 2);
    assert_eq!(
        b["message"],
        "schema violation (cert: required field missing)"
    );
    assert_eq!(b["fields"], json!({"cert": "required field missing"}));

    let (s, b) = app
        .post("/ca_certificates", json!({"cert": "not a certificate"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 2);
    assert_eq!(
        b["fields"],
        json!({"cert": "invalid certificate: could not parse PEM certificate"})
    );
    // PEM armour around something that is not X.509.
    let (s, b) = app
        .post(
            "/ca_certificates",
            json!({"cert": "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["fields"]["cert"]
            .as_str()
            .is_some_and(|m| m.starts_with("invalid certificate: ")),
        "{b}"
    );

    let (s, b) = app.post("/ca_certificates", json!({"cert": LEAF})).await;
    assert_schema_entity(s, &b, NOT_CA);
    let (s, b) = app.post("/ca_certificates", json!({"cert": EXPIRED})).await;
    assert_schema_entity(s, &b, EXPIRED_MSG);
    let (s, b) = app
        .post("/ca_certificates", json!({"cert": format!("{CA2}{CA2}")}))
        .await;
    assert_schema_entity(s, &b, "please submit only one certificate at a time");

    // The same checks on PATCH and PUT of the existing one.
    let (s, b) = app
        .json(
            "PATCH",
            &format!("/ca_certificates/{aid}"),
            json!({"cert": LEAF}),
        )
        .await;
    assert_schema_entity(s, &b, NOT_CA);
    let (s, b) = app
        .json(
            "PUT",
            &format!("/ca_certificates/{aid}"),
            json!({"cert": EXPIRED}),
        )
        .await;
    assert_schema_entity(s, &b, EXPIRED_MSG);
    let (s, b) = app
        .json("PUT", &format!("/ca_certificates/{aid}"), json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["fields"], json!({"cert": "required field missing"}));

    assert_eq!(
        state(&app).await,
        before,
        "a refused write changed something"
    );
});

both!(services_reference_existing_ca_certificates, |app| {
    let ca = create(&app, "/ca_certificates", json!({"cert": CA})).await;
    let caid = id(&ca);
    let missing = uuid::Uuid::new_v4().to_string();

    let svc = create(
        &app,
        "/services",
        json!({
            "name": "secure",
            "url": "https://secure.example.com",
            "tls_verify": true,
            "tls_verify_depth": 2,
            "ca_certificates": [caid],
        }),
    )
    .await;
    let sid = id(&svc);
    assert_eq!(svc["ca_certificates"], json!([caid]));
    assert_eq!(svc["tls_verify"], true);
    assert_eq!(svc["tls_verify_depth"], 2);
    // Not a foreign key in Kong's sense: no nested endpoint.
    let (s, _) = app.get(&format!("/ca_certificates/{caid}/services")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let before = state(&app).await;
    let fk_message = format!(
        "the foreign key '{{id=\"{missing}\"}}' does not reference an existing 'ca_certificates' entity."
    );
    let (s, b) = app
        .post(
            "/services",
            json!({"name": "other", "url": "https://o.example.com", "ca_certificates": [caid, missing]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 4);
    assert_eq!(b["name"], "foreign key violation");
    assert_eq!(b["message"], fk_message);
    assert_eq!(b["fields"], json!({"ca_certificates": {"id": missing}}));
    let (s, b) = app
        .json(
            "PATCH",
            "/services/secure",
            json!({"ca_certificates": [missing]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["fields"], json!({"ca_certificates": {"id": missing}}));
    let (s, b) = app
        .post(
            "/services",
            json!({"name": "bad-id", "url": "https://o.example.com", "ca_certificates": ["nope"]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(
        b["fields"],
        json!({"ca_certificates": ["expected a valid UUID"]})
    );

    // A referenced CA certificate cannot be deleted (Kong's DAO refusal).
    let (s, b) = app.delete(&format!("/ca_certificates/{caid}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(
        b,
        json!({
            "code": 19,
            "name": "referenced by others",
            "message": format!("ca certificate {caid} is still referenced by services (id = {sid})"),
        })
    );
    assert_eq!(
        state(&app).await,
        before,
        "a refused write changed something"
    );

    // Once no service lists it, it goes.
    let (s, b) = app
        .json("PATCH", "/services/secure", json!({"ca_certificates": []}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app.delete(&format!("/ca_certificates/{caid}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
});

both!(ca_certificates_export_and_import, |app| {
    let ca = create(&app, "/ca_certificates", json!({"cert": CA, "tags": ["t"]})).await;
    let caid = id(&ca);
    create(
        &app,
        "/services",
        json!({"name": "secure", "url": "https://secure.example.com", "tls_verify": true, "ca_certificates": [caid]}),
    )
    .await;

    let (s, exported) = app.get("/config").await;
    assert_eq!(s, StatusCode::OK, "{exported}");
    let yaml = exported["config"].as_str().expect("yaml").to_string();
    let doc: Value = serde_yaml_ng::from_str(&yaml).expect("yaml parses");
    let cas = doc["ca_certificates"]
        .as_array()
        .expect("ca_certificates exported");
    assert_eq!(cas.len(), 1);
    assert_eq!(cas[0]["id"], caid.as_str());
    assert_eq!(cas[0]["cert"], CA);
    assert_eq!(doc["services"][0]["ca_certificates"], json!([caid]));

    // Importing the export changes nothing.
    let state_before = app.store.all_current().await.expect("state");
    let rev = app.revision().await;
    let (s, b) = app
        .raw("POST", "/config", "application/yaml", yaml.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["changes"], 0, "{b}");
    assert_eq!(app.revision().await, rev);
    assert_eq!(app.store.all_current().await.expect("state"), state_before);

    // Into an empty install: the same CA certificate, referenced the same way.
    let other = TestApp::start(app.db.backend).await;
    let (s, b) = other.raw("POST", "/config", "application/yaml", yaml).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, got) = other.get(&format!("/ca_certificates/{caid}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["cert_digest"], CA_DIGEST);
    assert_eq!(got["tags"], json!(["t"]));
    let (_, svc) = other.get("/services/secure").await;
    assert_eq!(svc["ca_certificates"], json!([caid]));

    // A document whose service trusts a CA it does not declare is refused whole.
    let missing = uuid::Uuid::new_v4().to_string();
    let before = state(&other).await;
    let (s, b) = other
        .post(
            "/config",
            json!({
                "_format_version": "3.0",
                "ca_certificates": [{"id": caid, "cert": CA}],
                "services": [{"name": "secure", "url": "https://secure.example.com", "ca_certificates": [caid, missing]}],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], 14, "{b}");
    assert!(b.to_string().contains(&missing), "{b}");
    // And one with a CA certificate that is not a CA.
    let (s, b) = other
        .post(
            "/config",
            json!({"_format_version": "3.0", "ca_certificates": [{"cert": LEAF}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b.to_string()
            .contains(NOT_CA.split(" because").next().unwrap()),
        "{b}"
    );
    assert_eq!(state(&other).await, before);
});
