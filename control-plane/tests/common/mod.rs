//! Test harness: a real admin API over a real store (a SQLite file, or a
//! unique Postgres schema), served on an ephemeral port, driven over HTTP.
#![allow(dead_code)]

use gantry_cp::admin::{Admin, router};
use gantry_cp::seal::Sealer;
use gantry_cp::store::{Store, StoreConfig};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_url() -> String {
    std::env::var("GANTRY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/gantry_test".to_string())
}

/// Where one test keeps its data; removed when dropped.
pub struct Db {
    pub backend: Backend,
    pub url: String,
    pub schema: Option<String>,
    file: Option<PathBuf>,
}

impl Db {
    pub fn new(backend: Backend) -> Db {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let file = std::env::temp_dir().join(format!("gantry-test-{tag}.db"));
                Db {
                    backend,
                    url: format!("sqlite://{}", file.display()),
                    schema: None,
                    file: Some(file),
                }
            }
            Backend::Postgres => Db {
                backend,
                url: pg_url(),
                schema: Some(format!("gt_{tag}")),
                file: None,
            },
        }
    }

    pub fn config(&self) -> StoreConfig {
        let mut c = StoreConfig::new(&self.url);
        c.schema = self.schema.clone();
        c
    }

    /// Arguments for a `gantry-cp` process on this database.
    pub fn cli_args(&self) -> Vec<String> {
        let mut a = vec!["--database-url".to_string(), self.url.clone()];
        if let Some(s) = &self.schema {
            a.push("--database-schema".into());
            a.push(s.clone());
        }
        a
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
            }
        }
        if let Some(schema) = self.schema.clone() {
            let url = self.url.clone();
            // Drop runs inside the test's runtime; clean up from a thread.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// The keyring in-process control planes encrypt secrets at rest with.
pub const TEST_KEYRING: &str = "kinproc 3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// The store as `gantry-cp` runs it: secrets encrypted at rest.
pub async fn with_keyring(store: Store) -> Store {
    use gantry_cp::at_rest::AtRest;
    use gantry_cp::keyring::Keyring;
    let ring = Keyring::parse(TEST_KEYRING).expect("test keyring");
    ring.register(&store).await.expect("register keyring");
    let codec = AtRest::new(std::sync::Arc::new(ring));
    codec.upgrade(&store).await.expect("upgrade");
    store.with_secrets(codec)
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub db: Db,
    /// `http://127.0.0.1:port` of the xDS server, when started with one.
    pub xds: Option<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub async fn start(backend: Backend) -> TestApp {
        Self::start_inner(backend, None, None).await
    }

    /// With a bootstrap super-admin token; `client` sends it.
    pub async fn start_with_admin_token(backend: Backend, token: &str) -> TestApp {
        Self::start_inner(backend, None, Some(token)).await
    }

    /// Also serves xDS (snapshot builder with `debounce`, fleet, ADS, CSDS).
    pub async fn start_with_xds(backend: Backend, debounce: std::time::Duration) -> TestApp {
        Self::start_inner(backend, Some(debounce), None).await
    }

    async fn start_inner(
        backend: Backend,
        xds: Option<std::time::Duration>,
        token: Option<&str>,
    ) -> TestApp {
        use gantry_cp::xds::{Fleet, SnapshotCache, XdsContext};
        let db = Db::new(backend);
        let store = with_keyring(Store::open(&db.config()).await.expect("open store")).await;
        let sealer = Sealer::load(&store).await.expect("seal key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut admin = Admin::new(store.clone(), sealer, addr.to_string());
        if let Some(t) = token {
            admin = admin.with_admin_token(t);
        }
        let mut tasks = Vec::new();
        let mut xds_url = None;
        if let Some(debounce) = xds {
            let cache = SnapshotCache::new();
            tasks.push(cache.spawn_builder(store.clone(), Default::default(), debounce));
            let xl = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind xds");
            let xaddr = xl.local_addr().expect("xds addr");
            let fleet = Fleet::new(xaddr.to_string());
            tasks.push(fleet.spawn_mirror(store.clone(), std::time::Duration::from_millis(200)));
            let ctx = std::sync::Arc::new(XdsContext {
                cache: cache.clone(),
                fleet: fleet.clone(),
                admin_networks: Vec::new(),
                trust_domain: None,
            });
            tasks.push(tokio::spawn(async move {
                let _ = gantry_cp::xds::serve(xl, ctx, std::future::pending()).await;
            }));
            admin = admin.with_xds(cache, fleet);
            xds_url = Some(format!("http://{xaddr}"));
        }
        let app = router(admin);
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            headers.insert(
                "kong-admin-token",
                reqwest::header::HeaderValue::from_str(t).expect("token header"),
            );
        }
        TestApp {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("client"),
            store,
            db,
            xds: xds_url,
            tasks,
        }
    }

    /// Requests as the holder of `token` (none: no token at all).
    pub fn as_token(&self, token: Option<&str>) -> Caller {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            headers.insert(
                "kong-admin-token",
                reqwest::header::HeaderValue::from_str(t).expect("token header"),
            );
        }
        Caller {
            base: self.base.clone(),
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("client"),
        }
    }

    pub async fn revision(&self) -> i64 {
        self.store.current_revision().await.expect("revision")
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.delete(format!("{}{path}", self.base)))
            .await
    }

    pub async fn json(&self, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.send(
            self.client
                .request(m, format!("{}{path}", self.base))
                .json(&body),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.json("POST", path, body).await
    }

    /// A form-encoded request, as `curl -d a=b` sends it.
    pub async fn form(
        &self,
        method: &str,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.send(
            self.client
                .request(m, format!("{}{path}", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    /// A raw body with a content type.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.send(
            self.client
                .request(m, format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }
}

/// Another client of a running `TestApp`, with its own token.
pub struct Caller {
    pub base: String,
    pub client: reqwest::Client,
}

impl Caller {
    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(m, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send("POST", path, Some(body)).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs a test body against both backends: `both!(name, |app| { ... })`.
#[macro_export]
macro_rules! both {
    ($name:ident, |$app:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $app = common::TestApp::start(common::Backend::Sqlite).await;
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $app = common::TestApp::start(common::Backend::Postgres).await;
                $body
            }
        }
    };
}
