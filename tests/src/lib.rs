//! Cross-process end-to-end harness: a real `gantry-cp` process, a real
//! Envoy started from the bootstraps shipped in `deploy/envoy/`, and real
//! HTTP upstreams, all on 127.0.0.1 with ephemeral ports.
//!
//! Every process is killed when its handle drops, every test gets its own
//! database (a SQLite file in a temp dir, or a unique `gt_*` Postgres
//! schema) and its own ports, so tests run in parallel. When a test panics,
//! the tail of each process's log is printed as its handle drops.
//!
//! Control-plane tests that need only `gantry-cp` live in
//! `control-plane/tests/`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Small things
// ---------------------------------------------------------------------------

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A port nobody listens on right now (bind :0, read it, let it go).
/// Racy across concurrent tests when the port is bound much later (as
/// Envoy's listener port is); the harness uses [`reserve_port`].
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A port held for one test until dropped: the lowest free one from
/// 20000–32000, below the kernel's ephemeral range (so no `bind(:0)` or
/// outgoing connection gets it), claimed with an advisory lock on
/// `$TMPDIR/gantry-e2e-ports/<port>.lock`, which every concurrent test
/// process respects and which dies with its process. (Lowest first, so the
/// lock files are few and reused.)
pub struct Port {
    pub port: u16,
    _lock: std::fs::File,
}

const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

pub fn reserve_port() -> Port {
    let dir = std::env::temp_dir().join("gantry-e2e-ports");
    std::fs::create_dir_all(&dir).expect("port lock dir");
    for port in PORT_RANGE {
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
        else {
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        // Locked by us; make sure nothing outside the harness holds it.
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Port { port, _lock: file };
        }
    }
    panic!("no free port in {PORT_RANGE:?}");
}

/// Milliseconds since the epoch (the unit of `/fleet`'s timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A directory under the system temp dir, removed on drop
/// (kept when `GANTRY_E2E_KEEP` is set, for post-mortems).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("GANTRY_E2E_KEEP").is_some() {
            eprintln!("keeping {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `f` until it returns `Ok`, every `every`, for at most `timeout`;
/// panics with `what` and the last `Err` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}: {e}");
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `GET url` until it answers `status` (a route or policy arriving
/// at a proxy), for at most `timeout`.
pub async fn until_status(url: &str, status: u16, timeout: Duration) {
    let c = http_client();
    eventually(
        &format!("GET {url} -> {status}"),
        timeout,
        Duration::from_millis(20),
        || {
            let req = c.get(url);
            async move {
                match req.send().await {
                    Ok(r) if r.status().as_u16() == status => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// An HTTP client that never goes through a proxy from the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

// ---------------------------------------------------------------------------
// gantry-cp
// ---------------------------------------------------------------------------

/// Where `gantry-cp` was built: `GANTRY_CP_BIN`, else
/// `$CARGO_TARGET_DIR/debug/gantry-cp`, else `<root>/target/debug/gantry-cp`.
pub fn cp_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GANTRY_CP_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_relative() {
                repo_root().join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug").join("gantry-cp");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --workspace --bins, or ./scripts/test.sh)",
        bin.display()
    );
    bin
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The Postgres URL tests use, when one is configured.
pub fn pg_url() -> Option<String> {
    std::env::var("GANTRY_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// An admin API reply: status, JSON body (Null when none) and the
/// revision the write committed (`x-gantry-revision`), if any.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub revision: Option<i64>,
}

impl Reply {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected admin API reply: {}",
            self.body
        );
        self.body
    }
    /// Asserts a 2xx status and returns the committed revision.
    #[track_caller]
    pub fn committed(&self) -> i64 {
        assert!(
            (200..300).contains(&self.status),
            "admin write failed ({}): {}",
            self.status,
            self.body
        );
        self.revision
            .expect("a write reply carries x-gantry-revision")
    }
}

/// How a `gantry-cp` is started besides its arguments; the default is
/// what `Cp::start_with_args` does (no token, plain HTTP).
#[derive(Clone, Debug, Default)]
pub struct CpOptions {
    /// Bootstrap admin token, given as `GANTRY_ADMIN_TOKEN`; `Cp::client`
    /// sends it as `Kong-Admin-Token`.
    pub admin_token: Option<String>,
    /// The admin API is served over TLS (the test passes the TLS flags):
    /// start-up waits for its port to accept, not for `/status` over HTTP.
    pub admin_tls: bool,
    /// `RUST_LOG` of the process (default: `GANTRY_E2E_CP_LOG`, else info).
    pub rust_log: Option<String>,
    /// Extra environment variables (they win over the harness's own).
    pub env: Vec<(String, String)>,
    /// Postgres server to use instead of `GANTRY_TEST_DATABASE_URL`'s
    /// (e.g. a [`postgres::PrivatePostgres`] the test restarts).
    pub database_url: Option<String>,
}

/// A `gantry-cp` process on its own database and ports.
pub struct Cp {
    child: Child,
    args: Vec<String>,
    opts: CpOptions,
    pub base: String,
    pub admin_port: u16,
    pub xds_port: u16,
    pub proxy_http_port: u16,
    pub proxy_https_port: u16,
    pub backend: Backend,
    pub client: reqwest::Client,
    log: PathBuf,
    pg_schema: Option<(String, String)>,
    _ports: Vec<Port>,
    _dir: TempDir,
}

/// The keyring (secrets at rest) every gantry-cp a test starts uses.
pub const TEST_KEYRING: &str = "ktest 3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn spawn_cp(args: &[String], log: &Path, opts: &CpOptions) -> Child {
    // Append: a restarted process keeps the first one's log above its own.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("cp log file");
    let mut cmd = Command::new(cp_binary());
    if let Some(t) = &opts.admin_token {
        cmd.env("GANTRY_ADMIN_TOKEN", t);
    }
    cmd.args(args)
        // One keyring for every replica a test starts on one database.
        .env("GANTRY_KEYRING", TEST_KEYRING)
        .env(
            "RUST_LOG",
            opts.rust_log.clone().unwrap_or_else(|| {
                std::env::var("GANTRY_E2E_CP_LOG").unwrap_or_else(|_| "info".into())
            }),
        )
        .env_remove("GANTRY_LOG_FORMAT")
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn gantry-cp")
}

impl Cp {
    /// A control plane on a fresh SQLite file.
    pub async fn start() -> Cp {
        Self::start_on(Backend::Sqlite).await
    }

    /// A control plane on the given backend; Postgres needs
    /// `GANTRY_TEST_DATABASE_URL` and gets a unique `gt_*` schema.
    pub async fn start_on(backend: Backend) -> Cp {
        Self::start_with_args(backend, &[]).await
    }

    /// A control plane with extra command-line arguments.
    pub async fn start_with_args(backend: Backend, extra: &[&str]) -> Cp {
        Self::start_with(backend, extra, CpOptions::default()).await
    }

    /// A control plane with extra arguments and environment variables
    /// (which win over the harness's own, e.g. `RUST_LOG`, `GANTRY_KEYRING`).
    pub async fn start_with_env(backend: Backend, extra: &[&str], env: &[(&str, &str)]) -> Cp {
        let opts = CpOptions {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        Self::start_with(backend, extra, opts).await
    }

    /// A control plane with extra arguments and options (token, TLS, log).
    pub async fn start_with(backend: Backend, extra: &[&str], opts: CpOptions) -> Cp {
        let dir = TempDir::new("gantry-e2e-cp");
        let (url, schema) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("gantry.db").display()),
                None,
            ),
            Backend::Postgres => {
                let url = opts
                    .database_url
                    .clone()
                    .unwrap_or_else(|| pg_url().expect("GANTRY_TEST_DATABASE_URL is not set"));
                (url, Some(format!("gt_{}", uuid::Uuid::new_v4().simple())))
            }
        };
        let ports: Vec<Port> = (0..4).map(|_| reserve_port()).collect();
        let [admin_port, xds_port, proxy_http_port, proxy_https_port] =
            [ports[0].port, ports[1].port, ports[2].port, ports[3].port];
        let log = dir.path().join("gantry-cp.log");
        let mut args: Vec<String> = vec!["--database-url".into(), url.clone()];
        if let Some(s) = &schema {
            args.extend(["--database-schema".into(), s.clone()]);
        }
        args.extend([
            "--admin-listen".into(),
            format!("127.0.0.1:{admin_port}"),
            "--xds-listen".into(),
            format!("127.0.0.1:{xds_port}"),
            "--xds-debounce-ms".into(),
            "10".into(),
            "--proxy-listen-address".into(),
            "127.0.0.1".into(),
            "--proxy-http-port".into(),
            proxy_http_port.to_string(),
            "--proxy-https-port".into(),
            proxy_https_port.to_string(),
        ]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let child = spawn_cp(&args, &log, &opts);
        let client = match &opts.admin_token {
            None => http_client(),
            Some(t) => {
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert(
                    "kong-admin-token",
                    reqwest::header::HeaderValue::from_str(t).expect("token header"),
                );
                reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(10))
                    .default_headers(headers)
                    .build()
                    .expect("http client")
            }
        };
        let mut cp = Cp {
            child,
            args,
            opts,
            base: format!("http://127.0.0.1:{admin_port}"),
            admin_port,
            xds_port,
            proxy_http_port,
            proxy_https_port,
            backend,
            client,
            log,
            pg_schema: schema.map(|s| (url, s)),
            _ports: ports,
            _dir: dir,
        };
        cp.wait_up().await;
        cp
    }

    /// Another replica on the same database (and the same proxy listener
    /// ports, so it serves the same snapshot), on admin and xDS ports of
    /// its own. The first control plane owns the database schema.
    pub async fn replica(&self) -> Cp {
        let dir = TempDir::new("gantry-e2e-cp");
        let ports: Vec<Port> = (0..2).map(|_| reserve_port()).collect();
        let (admin_port, xds_port) = (ports[0].port, ports[1].port);
        let mut args = self.args.clone();
        for (flag, port) in [("--admin-listen", admin_port), ("--xds-listen", xds_port)] {
            if let Some(i) = args.iter().position(|a| a == flag) {
                args[i + 1] = format!("127.0.0.1:{port}");
            }
        }
        let log = dir.path().join("gantry-cp.log");
        let child = spawn_cp(&args, &log, &self.opts);
        let mut cp = Cp {
            child,
            args,
            opts: self.opts.clone(),
            base: format!("http://127.0.0.1:{admin_port}"),
            admin_port,
            xds_port,
            proxy_http_port: self.proxy_http_port,
            proxy_https_port: self.proxy_https_port,
            backend: self.backend,
            client: self.client.clone(),
            log,
            pg_schema: None,
            _ports: ports,
            _dir: dir,
        };
        cp.wait_up().await;
        cp
    }

    /// SIGKILLs the process (the database and ports stay), as a crash would.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the process again on the same database and ports (after
    /// [`Cp::kill`]); waits until it serves.
    pub async fn restart(&mut self) {
        kill(&mut self.child);
        self.child = spawn_cp(&self.args, &self.log, &self.opts);
        self.wait_up().await;
    }

    /// [`Cp::restart`] with these environment variables changed.
    pub async fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        for (k, v) in env {
            self.opts.env.retain(|(ek, _)| ek != k);
            self.opts.env.push((k.to_string(), v.to_string()));
        }
        self.restart().await;
    }

    async fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "gantry-cp exited at start-up ({status}):\n{}",
                    tail(&self.log, 40)
                );
            }
            let admin_up = if self.opts.admin_tls {
                tokio::net::TcpStream::connect(("127.0.0.1", self.admin_port))
                    .await
                    .is_ok()
            } else {
                matches!(
                    self.client.get(format!("{}/status", self.base)).send().await,
                    Ok(r) if r.status().is_success()
                )
            };
            let xds_up = tokio::net::TcpStream::connect(("127.0.0.1", self.xds_port))
                .await
                .is_ok();
            if admin_up && xds_up {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "gantry-cp did not come up (admin {admin_up}, xds {xds_up}):\n{}",
                    tail(&self.log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn xds_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.xds_port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The directory holding this control plane's SQLite file and log.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The command-line arguments it runs with (database, ports...).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The SQLite database file, on the SQLite backend.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        (self.backend == Backend::Sqlite).then(|| self._dir.path().join("gantry.db"))
    }

    /// The process id (to tell a restart from a reload).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", tail(&self.log, 20)));
        let status = r.status().as_u16();
        let revision = r
            .headers()
            .get("x-gantry-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = r.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            revision,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// The newest committed configuration revision.
    pub async fn revision(&self) -> i64 {
        let st = self.get("/status").await.expect(200);
        st["configuration_revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no configuration_revision in /status: {st}"))
    }

    /// `GET /fleet`.
    pub async fn fleet(&self) -> Value {
        self.get("/fleet").await.expect(200)
    }

    /// `GET /fleet/{node}`, None while the node is unknown.
    pub async fn fleet_node(&self, node_id: &str) -> Option<Value> {
        let r = self.get(&format!("/fleet/{node_id}")).await;
        match r.status {
            200 => Some(r.body),
            404 => None,
            s => panic!("GET /fleet/{node_id}: {s} {}", r.body),
        }
    }

    /// Waits until `node_id` is SYNCED at `revision` or later; returns its
    /// fleet view. On timeout the panic shows the node and the snapshot
    /// (a translation error or a NACK is usually the reason).
    pub async fn wait_synced(&self, node_id: &str, revision: i64, timeout: Duration) -> Value {
        self.wait_synced_since(node_id, revision, 0, timeout).await
    }

    /// [`Cp::wait_synced`] for a stream opened at or after `connected_after`
    /// (ms since the epoch, see [`now_ms`]): after a restart, `/fleet` also
    /// shows the dead process's last word on the node for a while.
    pub async fn wait_synced_since(
        &self,
        node_id: &str,
        revision: i64,
        connected_after: i64,
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let node = self.fleet_node(node_id).await;
            if let Some(n) = &node
                && n["state"] == "SYNCED"
                && n["revision"].as_i64().is_some_and(|r| r >= revision)
                && n["connected_since"].as_i64().unwrap_or(0) >= connected_after
            {
                return node.unwrap();
            }
            if Instant::now() >= deadline {
                let fleet = self.fleet().await;
                panic!(
                    "node {node_id} not SYNCED at revision {revision} after {timeout:?}\n\
                     node: {}\nsnapshot: {}\ngantry-cp log:\n{}",
                    serde_json::to_string_pretty(&node).unwrap_or_default(),
                    fleet["snapshot"],
                    tail(&self.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        kill(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "---- gantry-cp log (admin :{}, xds :{}) ----\n{}\n----",
                self.admin_port,
                self.xds_port,
                tail(&self.log, 60)
            );
        }
        if let Some((url, schema)) = self.pg_schema.take() {
            // Drop may run inside the test's runtime: clean up from a thread.
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

// ---------------------------------------------------------------------------
// Envoy
// ---------------------------------------------------------------------------

static ENVOY_BIN: OnceLock<PathBuf> = OnceLock::new();

/// The Envoy binary: `GANTRY_ENVOY_BIN`, else what `scripts/envoy.sh`
/// installs (run once per test binary). The script prints a Python wrapper
/// that execs the real binary; the real one is used when it is there.
pub fn envoy_binary() -> PathBuf {
    ENVOY_BIN
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("GANTRY_ENVOY_BIN") {
                return PathBuf::from(p);
            }
            let script = repo_root().join("scripts").join("envoy.sh");
            let out = Command::new(&script)
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
            assert!(out.status.success(), "{} failed", script.display());
            let printed = String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string();
            let wrapper = PathBuf::from(&printed);
            assert!(
                wrapper.exists(),
                "scripts/envoy.sh printed {printed:?}, which does not exist"
            );
            // <venv>/bin/envoy → <venv>/lib/python3.*/site-packages/envoy/_bin/envoy
            if let Some(venv) = wrapper.parent().and_then(|b| b.parent())
                && let Ok(libs) = std::fs::read_dir(venv.join("lib"))
            {
                for lib in libs.flatten() {
                    let real = lib.path().join("site-packages/envoy/_bin/envoy");
                    if real.exists() {
                        return real;
                    }
                }
            }
            wrapper
        })
        .clone()
}

/// The bootstrap shipped for operators, as the harness renders it.
pub fn shipped_bootstrap(delta: bool) -> PathBuf {
    repo_root().join("deploy/envoy").join(if delta {
        "bootstrap-delta-ads.yaml"
    } else {
        "bootstrap-ads.yaml"
    })
}

/// The shipped bootstrap with this node id, xDS port and admin port.
pub fn render_bootstrap(delta: bool, node_id: &str, xds_port: u16, admin_port: u16) -> String {
    let path = shipped_bootstrap(delta);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out = text;
    for (from, to) in [
        ("  id: envoy-1\n", format!("  id: {node_id}\n")),
        ("port_value: 18000\n", format!("port_value: {xds_port}\n")),
        ("port_value: 9901\n", format!("port_value: {admin_port}\n")),
    ] {
        assert_eq!(
            out.matches(from).count(),
            1,
            "{} should contain {from:?} exactly once",
            path.display()
        );
        out = out.replace(from, &to);
    }
    let api_type = if delta {
        "api_type: DELTA_GRPC"
    } else {
        "api_type: GRPC"
    };
    assert!(
        out.contains(api_type),
        "{} should say {api_type}",
        path.display()
    );
    out
}

/// The shipped mutual-TLS bootstrap (`deploy/envoy/bootstrap-ads-mtls.yaml`)
/// with this node id, ports, and certificates from `cert_dir` (which holds
/// `node.pem`, `node-key.pem` and `ca.pem`); `delta` picks the ADS flavour.
pub fn render_mtls_bootstrap(
    delta: bool,
    node_id: &str,
    xds_port: u16,
    admin_port: u16,
    cert_dir: &Path,
) -> String {
    let path = repo_root().join("deploy/envoy/bootstrap-ads-mtls.yaml");
    let mut out = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    for (from, to) in [
        ("  id: envoy-1\n", format!("  id: {node_id}\n")),
        ("port_value: 18000\n", format!("port_value: {xds_port}\n")),
        ("port_value: 9901\n", format!("port_value: {admin_port}\n")),
        (
            "api_type: DELTA_GRPC\n",
            format!("api_type: {}\n", if delta { "DELTA_GRPC" } else { "GRPC" }),
        ),
    ] {
        assert_eq!(
            out.matches(from).count(),
            1,
            "{} should contain {from:?} exactly once",
            path.display()
        );
        out = out.replace(from, &to);
    }
    let dir = format!("{}/", cert_dir.display());
    for f in ["node.pem }", "node-key.pem }", "ca.pem }"] {
        let from = format!("/etc/gantry/xds/{f}");
        assert_eq!(out.matches(&from).count(), 1, "{from} once");
        out = out.replace(&from, &format!("{dir}{f}"));
    }
    out
}

/// The section of an Envoy-layout `/config_dump` whose `@type` is
/// `envoy.admin.v3.<kind>` (`RoutesConfigDump`, ...); null when absent.
pub fn dump_section(dump: &Value, kind: &str) -> Value {
    let kind = format!("type.googleapis.com/envoy.admin.v3.{kind}");
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["@type"] == kind.as_str())
        .cloned()
        .unwrap_or(Value::Null)
}

/// A real Envoy following a `Cp` over ADS.
pub struct Envoy {
    child: Child,
    pub node_id: String,
    pub delta: bool,
    pub admin_port: u16,
    pub proxy_port: u16,
    pub admin: String,
    pub client: reqwest::Client,
    log: PathBuf,
    _port: Port,
    _dir: TempDir,
}

impl Envoy {
    /// Starts Envoy from the shipped bootstrap (`delta` picks DELTA_GRPC)
    /// and waits until its admin `/ready` says LIVE, which Envoy says only
    /// after its initial CDS and LDS fetch from `cp`.
    pub async fn start(cp: &Cp, node_id: &str, delta: bool) -> Envoy {
        let mut envoy = Self::spawn(cp, node_id, delta);
        envoy.wait_ready(cp, Duration::from_secs(30)).await;
        envoy
    }

    /// Starts Envoy without waiting for it.
    pub fn spawn(cp: &Cp, node_id: &str, delta: bool) -> Envoy {
        Self::spawn_rendered(cp, node_id, delta, |admin_port| {
            render_bootstrap(delta, node_id, cp.xds_port, admin_port)
        })
    }

    /// Starts Envoy from the shipped mutual-TLS bootstrap with the
    /// certificates in `cert_dir` (see [`render_mtls_bootstrap`]), without
    /// waiting for it.
    pub fn spawn_mtls(cp: &Cp, node_id: &str, delta: bool, cert_dir: &Path) -> Envoy {
        Self::spawn_rendered(cp, node_id, delta, |admin_port| {
            render_mtls_bootstrap(delta, node_id, cp.xds_port, admin_port, cert_dir)
        })
    }

    /// Starts Envoy from the bootstrap `render(admin_port)` gives.
    fn spawn_rendered(
        cp: &Cp,
        node_id: &str,
        delta: bool,
        render: impl FnOnce(u16) -> String,
    ) -> Envoy {
        let dir = TempDir::new("gantry-e2e-envoy");
        let admin = reserve_port();
        let admin_port = admin.port;
        let bootstrap = dir.path().join("bootstrap.yaml");
        std::fs::write(&bootstrap, render(admin_port)).expect("write bootstrap");
        let log = dir.path().join("envoy.log");
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&bootstrap)
            .args(["--concurrency", "1"])
            .args(["--disable-hot-restart"])
            .args(["--base-id", &admin_port.to_string()])
            .args([
                "-l",
                &std::env::var("GANTRY_E2E_ENVOY_LOG").unwrap_or_else(|_| "warning".into()),
            ])
            .args(
                std::env::var("GANTRY_E2E_ENVOY_COMPONENT_LOG")
                    .ok()
                    .map(|c| vec!["--component-log-level".to_string(), c])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("envoy log file"))
            .spawn()
            .expect("spawn envoy");
        Envoy {
            child,
            node_id: node_id.to_string(),
            delta,
            admin_port,
            proxy_port: cp.proxy_http_port,
            admin: format!("http://127.0.0.1:{admin_port}"),
            client: http_client(),
            log,
            _port: admin,
            _dir: dir,
        }
    }

    pub async fn wait_ready(&mut self, cp: &Cp, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let last;
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("envoy exited ({status}):\n{}", tail(&self.log, 60));
            }
            match self
                .client
                .get(format!("{}/ready", self.admin))
                .send()
                .await
            {
                Ok(r) => {
                    let ok = r.status().is_success();
                    last = r.text().await.unwrap_or_default();
                    if ok && last.trim() == "LIVE" {
                        return;
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                panic!(
                    "envoy {} not ready after {timeout:?} (/ready: {}); fleet view: {}\nenvoy log:\n{}",
                    self.node_id,
                    last.trim(),
                    cp.fleet_node(&self.node_id).await.unwrap_or(Value::Null),
                    tail(&self.log, 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `http://127.0.0.1:<gantry-cp's --proxy-http-port>`: Envoy's listener.
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Envoy's stderr so far (warnings and errors: `-l warning`, unless
    /// `GANTRY_E2E_ENVOY_LOG` / `GANTRY_E2E_ENVOY_COMPONENT_LOG` say more).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The warning, error and critical lines of Envoy's log.
    pub fn warnings(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("][warning][") || l.contains("][error][") || l.contains("][critical][")
            })
            .map(str::to_string)
            .collect()
    }

    /// Lines of Envoy's log that say it rejected config from gantry-cp.
    pub fn rejections(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" rejected"))
            .map(str::to_string)
            .collect()
    }

    pub async fn admin_get(&self, path: &str) -> String {
        let r = self
            .client
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .unwrap_or_else(|e| panic!("envoy admin {path}: {e}"));
        r.text().await.unwrap_or_default()
    }

    /// `GET /config_dump` (with `include_eds`), as JSON.
    pub async fn config_dump(&self) -> Value {
        let text = self.admin_get("/config_dump?include_eds").await;
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("config_dump is not JSON: {e}: {text}"))
    }

    /// The config_dump section of this `@type` (`envoy.admin.v3.<kind>`,
    /// e.g. "RoutesConfigDump", "ClustersConfigDump", "ListenersConfigDump").
    pub async fn config_dump_of(&self, kind: &str) -> Value {
        dump_section(&self.config_dump().await, kind)
    }

    /// Stats whose names match `filter` (a regex), as (name, value); only
    /// counters and gauges (histograms have no single value).
    pub async fn stats(&self, filter: &str) -> Vec<(String, u64)> {
        let text = self
            .admin_get(&format!("/stats?filter={}", url_escape(filter)))
            .await;
        text.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// One counter or gauge by exact name.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let re = format!("^{}$", name.replace('.', "\\."));
        self.stats(&re)
            .await
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// A request through Envoy's listener.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.proxy_url()))
    }

    /// GET through Envoy's listener: status and JSON body (Null if not JSON).
    pub async fn get(&self, path: &str) -> Result<(u16, Value), reqwest::Error> {
        send_json(self.request(reqwest::Method::GET, path)).await
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        kill(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "---- envoy {} log (admin :{}, {}) ----\n{}\n----",
                self.node_id,
                self.admin_port,
                if self.delta { "DELTA_GRPC" } else { "GRPC" },
                tail(&self.log, 60)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// gantry-proxy
// ---------------------------------------------------------------------------

/// Where `gantry-proxy` was built: `GANTRY_PROXY_BIN`, else
/// `$CARGO_TARGET_DIR/debug/gantry-proxy`, else `<root>/target/debug/gantry-proxy`.
pub fn proxy_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GANTRY_PROXY_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_relative() {
                repo_root().join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug").join("gantry-proxy");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// Claims `port` as [`reserve_port`] does, if it is free.
pub fn try_reserve_port(port: u16) -> Option<Port> {
    let dir = std::env::temp_dir().join("gantry-e2e-ports");
    std::fs::create_dir_all(&dir).ok()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{port}.lock")))
        .ok()?;
    file.try_lock().ok()?;
    std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
    Some(Port { port, _lock: file })
}

/// Two held ports `delta` apart (`second.port == first.port + delta`).
pub fn reserve_port_pair(delta: i32) -> (Port, Port) {
    for p in PORT_RANGE {
        let Ok(q) = u16::try_from(i32::from(p) + delta) else {
            continue;
        };
        if q < 1024 || q == p {
            continue;
        }
        let Some(first) = try_reserve_port(p) else {
            continue;
        };
        if let Some(second) = try_reserve_port(q) {
            return (first, second);
        }
        drop(first);
    }
    panic!("no two free ports {delta} apart in {PORT_RANGE:?}");
}

/// How to run a `gantry-proxy`.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// `--workers` (default 2).
    pub workers: usize,
    /// `--drain-timeout-ms` (default: the binary's).
    pub drain_timeout_ms: Option<u64>,
    /// `--snapshot-cache`.
    pub snapshot_cache: Option<PathBuf>,
    /// `--cluster` (the gateway group; default "default").
    pub group: Option<String>,
    /// `--admin-advertise` (default: the admin endpoint's own address).
    pub admin_advertise: Option<String>,
    /// `RUST_LOG` (default: `GANTRY_E2E_PROXY_LOG`, else `info`).
    pub log: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// More command-line arguments (e.g. `--xds-ca`, `--admin-token`).
    pub extra_args: Vec<String>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            workers: 2,
            drain_timeout_ms: None,
            snapshot_cache: None,
            group: None,
            admin_advertise: None,
            log: None,
            env: Vec::new(),
            extra_args: Vec::new(),
        }
    }
}

/// A `gantry-proxy` process following an xDS server. The control plane
/// tells every proxy to listen on its `--proxy-http-port` and
/// `--proxy-https-port`; this one gets a `--port-offset` that moves both
/// onto ports held for it (so it runs beside an Envoy, or another proxy,
/// on the same host). Killed (SIGKILL) on drop, with its log tail printed
/// if the test panicked.
pub struct Proxy {
    child: Child,
    pub pid: u32,
    pub node_id: String,
    pub admin_port: u16,
    pub admin: String,
    /// Where its `http` listener lands: the control plane's port + offset.
    pub http_port: u16,
    /// Where its `https` listener lands (once there is a certificate).
    pub https_port: u16,
    pub offset: i32,
    pub client: reqwest::Client,
    log: PathBuf,
    exit: Option<std::process::ExitStatus>,
    _ports: Vec<Port>,
    _dir: TempDir,
}

impl Proxy {
    /// Starts a proxy following `cp` and waits until `/ready` says LIVE
    /// (its first configuration is in and its listeners are bound).
    pub async fn start(cp: &Cp, node_id: &str) -> Proxy {
        Self::start_with(cp, node_id, ProxyOptions::default()).await
    }

    pub async fn start_with(cp: &Cp, node_id: &str, opts: ProxyOptions) -> Proxy {
        let mut p = Self::spawn(
            &cp.xds_url(),
            cp.proxy_http_port,
            cp.proxy_https_port,
            node_id,
            opts,
        );
        p.wait_ready(Some(cp), Duration::from_secs(30)).await;
        p
    }

    /// Starts a proxy without waiting for it. `http_port` / `https_port`
    /// are the listener ports its xDS server will send; the proxy is given
    /// an offset that lands them on ports held for it.
    pub fn spawn(
        xds_url: &str,
        http_port: u16,
        https_port: u16,
        node_id: &str,
        opts: ProxyOptions,
    ) -> Proxy {
        let dir = TempDir::new("gantry-e2e-proxy");
        let admin = reserve_port();
        let admin_port = admin.port;
        let delta = i32::from(https_port) - i32::from(http_port);
        let (http, https) = reserve_port_pair(delta);
        let offset = i32::from(http.port) - i32::from(http_port);
        let log = dir.path().join("gantry-proxy.log");
        let mut cmd = Command::new(proxy_binary());
        cmd.args(["--xds-address", xds_url])
            .args(["--node-id", node_id])
            .args(["--workers", &opts.workers.to_string()])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .arg(format!("--port-offset={offset}"));
        if let Some(ms) = opts.drain_timeout_ms {
            cmd.args(["--drain-timeout-ms", &ms.to_string()]);
        }
        if let Some(p) = &opts.snapshot_cache {
            cmd.arg("--snapshot-cache").arg(p);
        }
        if let Some(g) = &opts.group {
            cmd.args(["--cluster", g]);
        }
        if let Some(a) = &opts.admin_advertise {
            cmd.args(["--admin-advertise", a]);
        }
        cmd.args(&opts.extra_args);
        cmd.env_remove("GANTRY_PROXY_ADMIN_ADVERTISE");
        let child = cmd
            .env(
                "RUST_LOG",
                opts.log.clone().unwrap_or_else(|| {
                    std::env::var("GANTRY_E2E_PROXY_LOG").unwrap_or_else(|_| "info".into())
                }),
            )
            .env_remove("GANTRY_LOG_FORMAT")
            .env_remove("GANTRY_XDS_ADDRESS")
            .env_remove("GANTRY_PORT_OFFSET")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("proxy log file"))
            .spawn()
            .expect("spawn gantry-proxy");
        Proxy {
            pid: child.id(),
            child,
            node_id: node_id.to_string(),
            admin_port,
            admin: format!("http://127.0.0.1:{admin_port}"),
            http_port: http.port,
            https_port: https.port,
            offset,
            client: http_client(),
            log,
            exit: None,
            _ports: vec![admin, http, https],
            _dir: dir,
        }
    }

    /// Waits until `/ready` says LIVE; panics with the log tail (and the
    /// fleet view, given the control plane) otherwise.
    pub async fn wait_ready(&mut self, cp: Option<&Cp>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let last;
            if let Some(status) = self.try_exit() {
                panic!(
                    "gantry-proxy {} exited ({status}):\n{}",
                    self.node_id,
                    tail(&self.log, 60)
                );
            }
            match self
                .client
                .get(format!("{}/ready", self.admin))
                .send()
                .await
            {
                Ok(r) => {
                    let ok = r.status().is_success();
                    last = r.text().await.unwrap_or_default();
                    if ok && last.trim() == "LIVE" {
                        return;
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                let fleet = match cp {
                    Some(cp) => cp.fleet_node(&self.node_id).await.unwrap_or(Value::Null),
                    None => Value::Null,
                };
                panic!(
                    "gantry-proxy {} not ready after {timeout:?} (/ready: {}); /xds: {}; fleet view: {fleet}\nlog:\n{}",
                    self.node_id,
                    last.trim(),
                    self.xds_status().await,
                    tail(&self.log, 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `http://127.0.0.1:<http_port>`: the proxy's `http` listener.
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// A request through the proxy's `http` listener.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.proxy_url()))
    }

    /// GET through the proxy: status and JSON body (Null if not JSON).
    pub async fn get(&self, path: &str) -> Result<(u16, Value), reqwest::Error> {
        send_json(self.request(reqwest::Method::GET, path)).await
    }

    /// GET on the admin endpoint: status and body text.
    /// `GET /config_dump` with `query` (e.g. `?include_eds`), as JSON.
    pub async fn config_dump(&self, query: &str) -> Value {
        let (status, text) = self.admin_get(&format!("/config_dump{query}")).await;
        assert_eq!(status, 200, "config_dump{query}: {text}");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("config_dump is not JSON: {e}: {text}"))
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        match self
            .client
            .get(format!("{}{path}", self.admin))
            .send()
            .await
        {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    /// The admin `/xds` (the xDS client's state), Null if unreachable.
    pub async fn xds_status(&self) -> Value {
        let (s, body) = self.admin_get("/xds").await;
        if s == 200 {
            serde_json::from_str(&body).unwrap_or(Value::Null)
        } else {
            Value::Null
        }
    }

    /// Resident memory in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`...) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {} failed", self.pid);
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits (polling) for the process to exit; None if it is still
    /// running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.exit.is_none() {
            kill(&mut self.child);
        }
        if std::thread::panicking() {
            eprintln!(
                "---- gantry-proxy {} log (admin :{}, http :{}, offset {}) ----\n{}\n----",
                self.node_id,
                self.admin_port,
                self.http_port,
                self.offset,
                tail(&self.log, 60)
            );
        }
    }
}

fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends a request; returns its status and JSON body (Null if not JSON).
pub async fn send_json(req: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
    let r = req.send().await?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

// ---------------------------------------------------------------------------
// Upstreams
// ---------------------------------------------------------------------------

/// A real HTTP/1.1 server answering every request with 200 and
/// `{"upstream", "method", "path", "headers", "body"}`, so a test sees what
/// was forwarded to it. Counts requests; stops on drop.
pub struct Upstream {
    pub name: String,
    pub port: u16,
    count: Arc<AtomicU64>,
    last: Arc<Mutex<Option<Value>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
    task: tokio::task::JoinHandle<()>,
    /// Held while a fixed port is in use (see [`Upstream::start_at`]).
    _port_lock: Option<std::fs::File>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Self::start_with_delay(name, Duration::ZERO).await
    }

    /// The same on a fixed port, for files that name their upstream's
    /// address (the articles' Kong files). Tests wanting the same port
    /// take turns: the port's lock is held until the upstream is dropped.
    pub async fn start_at(name: &str, port: u16) -> Upstream {
        let dir = std::env::temp_dir().join("gantry-e2e-ports");
        std::fs::create_dir_all(&dir).expect("port lock dir");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("fixed-{port}.lock")))
            .expect("port lock");
        let lock = tokio::task::spawn_blocking(move || {
            lock.lock().expect("lock the port");
            lock
        })
        .await
        .expect("lock task");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let mut u = Self::serve(name, listener, Duration::ZERO);
        u._port_lock = Some(lock);
        u
    }

    /// The same, answering each request only after `delay` (a slow
    /// upstream, for timeouts and draining). A request is counted when it
    /// arrives, so [`Upstream::requests`] shows one in flight.
    pub async fn start_with_delay(name: &str, delay: Duration) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Self::serve(name, listener, delay)
    }

    fn serve(name: &str, listener: tokio::net::TcpListener, delay: Duration) -> Upstream {
        let port = listener.local_addr().expect("addr").port();
        let count = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(None));
        let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
        let (n, c, l) = (name.to_string(), count.clone(), last.clone());
        let st = status.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (n, c, l, st) = (n.clone(), c.clone(), l.clone(), st.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (n, c, l) = (n.clone(), c.clone(), l.clone());
                        let status = st.load(Ordering::Relaxed);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let mut headers = Map::new();
                            for (k, v) in &parts.headers {
                                let v = String::from_utf8_lossy(v.as_bytes()).to_string();
                                match headers.get_mut(k.as_str()) {
                                    Some(Value::String(prev)) => {
                                        prev.push_str(", ");
                                        prev.push_str(&v);
                                    }
                                    _ => {
                                        headers.insert(k.as_str().to_string(), Value::String(v));
                                    }
                                }
                            }
                            let seen = json!({
                                "upstream": n,
                                "method": parts.method.as_str(),
                                "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                                "headers": headers,
                                "body": String::from_utf8_lossy(&body),
                            });
                            c.fetch_add(1, Ordering::Relaxed);
                            *l.lock().unwrap_or_else(|e| e.into_inner()) = Some(seen.clone());
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let resp = hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(seen.to_string())))
                                .expect("response");
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            name: name.to_string(),
            port,
            count,
            last,
            status,
            task,
            _port_lock: None,
        }
    }

    /// The status every later answer has (200 at start).
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
    }

    /// What the last request looked like.
    pub fn last(&self) -> Option<Value> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// A hand-driven ADS client (for protocol tests: NACKs, resends)
// ---------------------------------------------------------------------------

pub mod load;
pub mod postgres;
pub mod prometheus;
pub mod relay;
pub mod resources;
pub mod script;

pub mod ads {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    };
    use std::time::Duration;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Streaming;

    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const ROUTE_ENTRY: &str = gantry_shared::xds::ROUTE_ENTRY;
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

    /// A node description; `user_agent_name` "envoy" asks for Envoy's flavour.
    pub fn node(id: &str) -> Node {
        Node {
            id: id.to_string(),
            cluster: "probes".to_string(),
            user_agent_name: "envoy".to_string(),
            ..Default::default()
        }
    }

    async fn client(xds_url: &str) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
        let channel = tonic::transport::Endpoint::from_shared(xds_url.to_string())
            .expect("xds url")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to the xDS server");
        AggregatedDiscoveryServiceClient::new(channel)
    }

    /// A state-of-the-world ADS stream.
    pub struct Sotw {
        pub tx: mpsc::Sender<DiscoveryRequest>,
        pub rx: Streaming<DiscoveryResponse>,
    }

    impl Sotw {
        pub async fn connect(xds_url: &str) -> Sotw {
            let mut c = client(xds_url).await;
            let (tx, rx) = mpsc::channel(16);
            let resp = c
                .stream_aggregated_resources(ReceiverStream::new(rx))
                .await
                .expect("open the ADS stream");
            Sotw {
                tx,
                rx: resp.into_inner(),
            }
        }

        pub async fn send(&self, r: DiscoveryRequest) {
            self.tx.send(r).await.expect("ADS stream open");
        }

        /// The next response, or None if none arrives within `timeout`.
        pub async fn recv(&mut self, timeout: Duration) -> Option<DiscoveryResponse> {
            match tokio::time::timeout(timeout, self.rx.message()).await {
                Ok(Ok(Some(m))) => Some(m),
                Ok(Ok(None)) => panic!("the control plane closed the ADS stream"),
                Ok(Err(e)) => panic!("ADS stream error: {e}"),
                Err(_) => None,
            }
        }
    }

    /// A delta (incremental) ADS stream.
    pub struct Delta {
        pub tx: mpsc::Sender<DeltaDiscoveryRequest>,
        pub rx: Streaming<DeltaDiscoveryResponse>,
    }

    impl Delta {
        pub async fn connect(xds_url: &str) -> Delta {
            let mut c = client(xds_url).await;
            let (tx, rx) = mpsc::channel(16);
            let resp = c
                .delta_aggregated_resources(ReceiverStream::new(rx))
                .await
                .expect("open the delta ADS stream");
            Delta {
                tx,
                rx: resp.into_inner(),
            }
        }

        pub async fn send(&self, r: DeltaDiscoveryRequest) {
            self.tx.send(r).await.expect("delta ADS stream open");
        }

        pub async fn recv(&mut self, timeout: Duration) -> Option<DeltaDiscoveryResponse> {
            match tokio::time::timeout(timeout, self.rx.message()).await {
                Ok(Ok(Some(m))) => Some(m),
                Ok(Ok(None)) => panic!("the control plane closed the delta ADS stream"),
                Ok(Err(e)) => panic!("delta ADS stream error: {e}"),
                Err(_) => None,
            }
        }
    }
}

/// Median and max of a set of durations (sorted in place).
pub fn median_max(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// Where the tests' Redis is, as `host:port`, from `GANTRY_TEST_REDIS_URL`
/// (default `redis://127.0.0.1:6379`; `scripts/test.sh` starts it).
pub fn redis_addr() -> String {
    let url =
        std::env::var("GANTRY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rest = url.strip_prefix("redis://").unwrap_or(&url);
    let rest = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// Fails the test unless Redis answers PING: a test that needs Redis
/// never passes without it.
pub async fn require_redis() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = redis_addr();
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| {
            panic!("Redis at {addr} is not reachable ({e}); run scripts/services.sh")
        });
    s.write_all(b"PING\r\n").await.expect("write PING");
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).await.expect("read PONG");
    assert_eq!(&buf, b"+PONG\r\n", "Redis at {addr} did not answer PING");
}

/// The tests' Redis Cluster nodes, as `host:port`, from
/// `GANTRY_TEST_REDIS_CLUSTER` (comma-separated; default the three masters
/// `scripts/redis-cluster.sh` starts on 127.0.0.1:7101-7103).
pub fn redis_cluster_nodes() -> Vec<String> {
    std::env::var("GANTRY_TEST_REDIS_CLUSTER")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A Redis reply (RESP2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// A bulk or simple string as text.
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Sends one command to the Redis at `addr` (`host:port`) on a fresh
/// connection and reads its reply. No cluster redirection: a key another
/// node owns answers `Resp::Error("MOVED <slot> <host:port>")`.
pub async fn redis_command(addr: &str, args: &[&str]) -> std::io::Result<Resp> {
    use tokio::io::{AsyncWriteExt, BufReader};
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req).await?;
    let mut r = BufReader::new(s);
    tokio::time::timeout(Duration::from_secs(5), read_resp(&mut r))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "reply"))?
}

fn read_resp<'a, R>(
    r: &'a mut R,
) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Resp>> + Send + 'a>>
where
    R: tokio::io::AsyncBufRead + Unpin + Send,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    Box::pin(async move {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        r.read_line(&mut line).await?;
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at_checked(1).ok_or_else(|| bad("empty reply"))?;
        let n = || rest.parse::<i64>().map_err(|_| bad(line));
        Ok(match kind {
            "+" => Resp::Simple(rest.into()),
            "-" => Resp::Error(rest.into()),
            ":" => Resp::Int(n()?),
            "$" => match usize::try_from(n()?) {
                Err(_) => Resp::Bulk(None),
                Ok(len) => {
                    let mut b = vec![0; len + 2];
                    r.read_exact(&mut b).await?;
                    b.truncate(len);
                    Resp::Bulk(Some(b))
                }
            },
            "*" => match usize::try_from(n()?) {
                Err(_) => Resp::Array(None),
                Ok(len) => {
                    let mut items = Vec::with_capacity(len);
                    for _ in 0..len {
                        items.push(read_resp(r).await?);
                    }
                    Resp::Array(Some(items))
                }
            },
            _ => return Err(bad(line)),
        })
    })
}

/// Fails the test unless every Redis Cluster node answers and reports
/// `cluster_state:ok`: a test that needs the cluster never passes without
/// it.
pub async fn require_redis_cluster() {
    for addr in redis_cluster_nodes() {
        let info = redis_command(&addr, &["CLUSTER", "INFO"])
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Redis Cluster node {addr} is not reachable ({e}); run scripts/redis-cluster.sh start"
                )
            });
        let info = info.text().unwrap_or_default();
        assert!(
            info.lines().any(|l| l.trim() == "cluster_state:ok"),
            "Redis Cluster node {addr} is not in cluster_state:ok (run scripts/redis-cluster.sh start):\n{info}"
        );
    }
}

// ---------------------------------------------------------------------------
// Shared by the plugin tests: keys, tokens, clocks
// ---------------------------------------------------------------------------

/// An RSA key pair from openssl (installed by `scripts/services.sh`):
/// (private PEM, public PEM), written under `dir`.
pub fn rsa_pair(dir: &Path, name: &str) -> (String, String) {
    let key = dir.join(format!("{name}.key"));
    let path = key.to_str().expect("a UTF-8 temp path");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        path,
    ]);
    let public = run(&["pkey", "-in", path, "-pubout"]);
    (
        std::fs::read_to_string(&key).expect("private key"),
        String::from_utf8(public).expect("public key"),
    )
}

/// Seconds since the epoch.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A JWT with `alg` over `claims`.
pub fn sign(
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    claims: Value,
) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, key).expect("sign")
}

/// How far into the current minute the clock is, in seconds.
pub fn secs_into_minute() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
        % 60.0
}

/// Sleeps until at least `margin` seconds remain in the current minute,
/// so a burst of requests is counted in one minute window.
pub async fn clear_of_minute_boundary(margin: f64) {
    let into = secs_into_minute();
    if into > 60.0 - margin {
        tokio::time::sleep(Duration::from_secs_f64(60.0 - into + 0.05)).await;
    }
}
