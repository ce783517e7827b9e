//! Secrets at rest, on both backends: what the admin API stores is
//! encrypted under the keyring, found by its digest, and a database
//! written in clear by an earlier version is encrypted on first start.

mod common;

use common::{Backend, Db, TestApp, with_keyring};
use gantry_cp::entities::{self, def};
use gantry_cp::schema::Input;
use gantry_cp::store::Store;
use reqwest::StatusCode;
use serde_json::json;

async fn raw(store: &Store) -> String {
    store
        .raw_versions()
        .await
        .expect("versions")
        .into_iter()
        .map(|(_, _, data)| data)
        .collect::<Vec<_>>()
        .join("\n")
}

async fn admin_stores_ciphertext_and_finds_by_digest(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (s, _) = app.post("/consumers", json!({"username": "alice"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, cred) = app
        .post("/consumers/alice/key-auth", json!({"key": "stored-key-1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "local",
                   "redis": {"password": "stored-pw-1"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let stored = raw(&app.store).await;
    assert!(!stored.contains("stored-key-1"), "{stored}");
    assert!(!stored.contains("stored-pw-1"));
    assert!(stored.contains("$gantry-enc$v1$kinproc$"));

    // Found by the key in the URL (its digest), unique by it, and read
    // back as the proxies need it.
    let (s, got) = app.get("/key-auths/stored-key-1").await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["id"], cred["id"]);
    let (s, dup) = app
        .post("/consumers/alice/key-auth", json!({"key": "stored-key-1"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{dup}");
    // A vault reference is stored, shown and exported as written: it
    // names the secret, it is not one.
    let (s, p) = app
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "route": null, "config": {"minute": 7, "policy": "local",
                   "redis": {"password": "{vault://env/redis-pw}", "username": "{vault://env/redis-user}"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "one global rate-limiting: {p}");
    let (s, c) = app.post("/consumers", json!({"username": "carol"})).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let (s, p) = app
        .post(
            "/consumers/carol/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 7, "policy": "local",
                   "redis": {"password": "{vault://env/redis-pw}"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["config"]["redis"]["password"], "{vault://env/redis-pw}");
    assert!(raw(&app.store).await.contains("{vault://env/redis-pw}"));
    let (_, export) = app.get("/config").await;
    assert!(export.to_string().contains("{vault://env/redis-pw}"));
    let (s, bad) = app
        .post(
            "/consumers/carol/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 7, "policy": "local",
                   "redis": {"password": "{vault://env/a/b}"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    assert!(
        bad.to_string().contains("only whole environment variables"),
        "{bad}"
    );

    let all = app.store.all_current().await.expect("current");
    let k = all
        .iter()
        .find(|e| e.kind == "keyauth_credentials")
        .expect("credential");
    assert_eq!(k.data["key"], "stored-key-1");
}

async fn clear_secrets_are_encrypted_on_first_start(backend: Backend) {
    let db = Db::new(backend);
    // An earlier version: no encryption at rest.
    let plain = Store::open(&db.config()).await.expect("open");
    let mut tx = plain.begin_write("test").await.expect("tx");
    let c = entities::create(
        &mut tx,
        def("consumers").unwrap(),
        json!({"username": "bob"}),
        Input::Json,
        None,
    )
    .await
    .expect("consumer");
    let k = entities::create(
        &mut tx,
        def("keyauth_credentials").unwrap(),
        json!({"key": "clear-key-1", "consumer": {"id": c["id"]}}),
        Input::Json,
        None,
    )
    .await
    .expect("credential");
    tx.commit("create", "seed").await.expect("commit");
    assert!(raw(&plain).await.contains("clear-key-1"));
    let id = k["id"].as_str().unwrap();
    let kind = "keyauth_credentials";
    let d = def(kind).unwrap();
    plain.close().await;

    let store = with_keyring(Store::open(&db.config()).await.expect("reopen")).await;
    let stored = raw(&store).await;
    assert!(!stored.contains("clear-key-1"), "{stored}");
    assert_eq!(
        store
            .find_key(kind, &d.key_entry("key", "clear-key-1"))
            .await
            .unwrap()
            .as_deref(),
        Some(id),
        "the key index is by digest now"
    );
    assert_eq!(store.find_key(kind, "key=clear-key-1").await.unwrap(), None);
    assert_eq!(
        store.get(kind, id).await.unwrap().unwrap()["key"],
        "clear-key-1"
    );
    // Once: a second start finds nothing to do.
    let again = with_keyring(Store::open(&db.config()).await.expect("reopen")).await;
    assert_eq!(raw(&again).await, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_stores_ciphertext_and_finds_by_digest_sqlite() {
    admin_stores_ciphertext_and_finds_by_digest(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_stores_ciphertext_and_finds_by_digest_postgres() {
    admin_stores_ciphertext_and_finds_by_digest(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_secrets_are_encrypted_on_first_start_sqlite() {
    clear_secrets_are_encrypted_on_first_start(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_secrets_are_encrypted_on_first_start_postgres() {
    clear_secrets_are_encrypted_on_first_start(Backend::Postgres).await;
}
