//! xDS over mutual TLS with node identity, end to end: real `gantry-cp`
//! and `gantry-proxy` processes, certificates issued by `gantry-cp certs`.
//!
//! 1. `a_named_node_syncs_and_routes`: a node whose certificate names its
//!    id syncs, shows its certificate in `/fleet`, and carries traffic.
//! 2. `refused_nodes_never_see_config`: a client certificate from another
//!    CA, a server certificate from another CA, no client certificate, and
//!    a node id the certificate does not name (PERMISSION_DENIED, logged
//!    with both names): none is in `/fleet`, none receives a resource.
//! 3. `rotation_under_load`: the server's and the node's certificates are
//!    rewritten under continuous requests: both are picked up without a
//!    restart, 0 requests fail.
//! 4. `plaintext_xds_off_loopback_is_refused` unless `--xds-insecure`.
//! 5. `proxy_admin_off_loopback_needs_a_token`, and the control plane's
//!    purge fan-out sends it.
//! 6. `the_stream_says_permission_denied_and_csds_needs_a_certificate`:
//!    raw gRPC over mutual TLS: the exact status code; CSDS with and
//!    without a client certificate.
//! 7. `ca_rotation_under_load`: the fleet moved to a new CA (bundles on
//!    both sides, then new certificates, then the old CA dropped) under
//!    continuous requests, 0 failed; an old-CA certificate is then refused.
//! 8. `proxy_tls_flags_are_checked_at_start`: https:// without a CA, a CA
//!    beside a plaintext address, half a key pair, a mismatched key.
//! 9. `the_trust_domain_scopes_spiffe_names_and_bootstrap_keys_work`: a
//!    SPIFFE name counts only in `--xds-trust-domain`; the TLS options work
//!    as gantry-proxy bootstrap keys.
//!
//! Run: `cargo build --workspace --bins && cargo nextest run -p gantry-e2e --test xds_mtls`.

use gantry_e2e::{
    Backend, Cp, Proxy, ProxyOptions, TempDir, Upstream, cp_binary, eventually, proxy_binary,
    reserve_port, tail,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(25);

/// Runs `gantry-cp certs <args>`; panics with its output on failure.
fn certs(args: &[&str]) {
    let out = Command::new(cp_binary())
        .arg("certs")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run gantry-cp certs");
    assert!(
        out.status.success(),
        "gantry-cp certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A CA made by `gantry-cp certs ca`, and what it issues.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(root: &Path, name: &str) -> Pki {
        let dir = root.join(name);
        certs(&["ca", "--out", s(&dir)]);
        Pki { dir }
    }
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn issue(&self, kind: &str, out: &Path, more: &[&str]) {
        let (ca, key) = (self.ca(), self.dir.join("ca-key.pem"));
        let mut args = vec![
            kind,
            "--ca-cert",
            s(&ca),
            "--ca-key",
            s(&key),
            "--out",
            s(out),
        ];
        args.extend_from_slice(more);
        certs(&args);
    }
    /// The xDS server's certificate for 127.0.0.1 (and the name the
    /// shipped Envoy bootstrap checks): `<out>/server.pem`, `server-key.pem`.
    fn server(&self, out: &Path) {
        self.issue(
            "server",
            out,
            &[
                "--host",
                "127.0.0.1",
                "--host",
                "localhost",
                "--host",
                "gantry-cp",
            ],
        );
    }
    /// A node certificate for `node_id`: `<out>/node.pem`, `node-key.pem`.
    fn node(&self, node_id: &str, out: &Path) {
        self.issue("node", out, &["--node-id", node_id]);
    }
}

/// gantry-cp serving xDS over mutual TLS with `server_dir`'s certificate,
/// trusting `client_ca`.
async fn tls_cp(server_dir: &Path, client_ca: &Path, extra: &[&str]) -> Cp {
    let (cert, key) = (
        server_dir.join("server.pem"),
        server_dir.join("server-key.pem"),
    );
    let mut args = vec![
        "--xds-tls-cert",
        s(&cert),
        "--xds-tls-key",
        s(&key),
        "--xds-client-ca",
        s(client_ca),
        "--xds-tls-reload-ms",
        "200",
    ];
    args.extend_from_slice(extra);
    Cp::start_with_args(Backend::Sqlite, &args).await
}

fn tls_url(cp: &Cp) -> String {
    format!("https://127.0.0.1:{}", cp.xds_port)
}

/// gantry-proxy dialling `cp` over TLS, trusting `ca`, presenting the
/// certificate in `node_dir` if any. Not waited for.
fn tls_proxy(cp: &Cp, node_id: &str, ca: &Path, node_dir: Option<&Path>) -> Proxy {
    let mut extra: Vec<String> = vec![
        "--xds-ca".into(),
        s(ca).into(),
        "--xds-tls-reload-ms".into(),
        "200".into(),
    ];
    if let Some(d) = node_dir {
        extra.extend([
            "--xds-cert".into(),
            s(&d.join("node.pem")).into(),
            "--xds-key".into(),
            s(&d.join("node-key.pem")).into(),
        ]);
    }
    Proxy::spawn(
        &tls_url(cp),
        cp.proxy_http_port,
        cp.proxy_https_port,
        node_id,
        ProxyOptions {
            extra_args: extra,
            ..Default::default()
        },
    )
}

/// A service and a route `/m` to `up`; returns the revision.
async fn route(cp: &Cp, up: &Upstream) -> i64 {
    cp.post("/services", json!({"name": "m", "url": up.url()}))
        .await
        .committed();
    cp.post("/services/m/routes", json!({"name": "m", "paths": ["/m"]}))
        .await
        .committed()
}

async fn until_routes(proxy: &Proxy) {
    eventually("GET /m through the proxy", CONVERGE, POLL, || async {
        match proxy.get("/m").await {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_node_syncs_and_routes() {
    let tmp = TempDir::new("gantry-mtls");
    let pki = Pki::new(tmp.path(), "ca");
    let (srv, node) = (tmp.path().join("srv"), tmp.path().join("edge-1"));
    pki.server(&srv);
    pki.node("edge-1", &node);
    let cp = tls_cp(&srv, &pki.ca(), &[]).await;
    let up = Upstream::start("m").await;
    let rev = route(&cp, &up).await;

    let mut proxy = tls_proxy(&cp, "edge-1", &pki.ca(), Some(&node));
    proxy.wait_ready(Some(&cp), CONVERGE).await;
    let seen = cp.wait_synced("edge-1", rev, CONVERGE).await;
    assert_eq!(
        seen["certificate"]["dns"],
        json!(["edge-1"]),
        "the fleet shows the certificate the node connected with: {seen}"
    );
    assert_eq!(
        seen["certificate"]["uris"],
        json!(["spiffe://gantry/node/edge-1"])
    );
    until_routes(&proxy).await;
    assert!(cp.log().contains("xDS over mutual TLS"), "{}", cp.log());

    // Plaintext to the TLS port gets nowhere.
    let plain = Proxy::spawn(
        &cp.xds_url(),
        cp.proxy_http_port,
        cp.proxy_https_port,
        "edge-plain",
        ProxyOptions::default(),
    );
    wait_refused(&plain).await;
    assert!(cp.fleet_node("edge-plain").await.is_none());
}

/// Waits until the proxy has tried and failed; returns its `/xds`.
async fn wait_refused(p: &Proxy) -> Value {
    eventually(
        &format!("{} to be refused", p.node_id),
        CONVERGE,
        POLL,
        || async {
            let x = p.xds_status().await;
            if x["last_error"].is_string() {
                Ok(x)
            } else {
                Err(x.to_string())
            }
        },
    )
    .await
}

/// A refused node holds nothing and is nowhere in the fleet.
async fn assert_never_served(cp: &Cp, p: &Proxy) -> Value {
    let x = p.xds_status().await;
    assert_eq!(x["config_source"], "none", "{}: {x}", p.node_id);
    for (t, v) in x["types"].as_object().into_iter().flatten() {
        assert_eq!(v["resources"], 0, "{} received {t}: {x}", p.node_id);
        assert!(v["version"].is_null(), "{} received {t}: {x}", p.node_id);
    }
    assert!(
        cp.fleet_node(&p.node_id).await.is_none(),
        "{} is in /fleet",
        p.node_id
    );
    let fleet = cp.fleet().await;
    assert!(
        !fleet.to_string().contains(&format!("\"{}\"", p.node_id)),
        "{} in {fleet}",
        p.node_id
    );
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_nodes_never_see_config() {
    let tmp = TempDir::new("gantry-mtls");
    let pki = Pki::new(tmp.path(), "ca");
    let other = Pki::new(tmp.path(), "other-ca");
    let srv = tmp.path().join("srv");
    pki.server(&srv);
    let dir = |n: &str| tmp.path().join(n);
    pki.node("edge-good", &dir("edge-good"));
    pki.node("edge-named", &dir("edge-named"));
    other.node("edge-foreign", &dir("edge-foreign"));
    pki.node("edge-distrust", &dir("edge-distrust"));
    let cp = tls_cp(&srv, &pki.ca(), &[]).await;
    let up = Upstream::start("m").await;
    let rev = route(&cp, &up).await;

    // A good node beside them: there is config to be had.
    let mut good = tls_proxy(&cp, "edge-good", &pki.ca(), Some(&dir("edge-good")));
    good.wait_ready(Some(&cp), CONVERGE).await;
    cp.wait_synced("edge-good", rev, CONVERGE).await;

    // A client certificate from a CA gantry-cp does not trust.
    let foreign = tls_proxy(&cp, "edge-foreign", &pki.ca(), Some(&dir("edge-foreign")));
    // A good client certificate, but the node does not trust the server's.
    let distrust = tls_proxy(
        &cp,
        "edge-distrust",
        &other.ca(),
        Some(&dir("edge-distrust")),
    );
    // No client certificate at all.
    let anonymous = tls_proxy(&cp, "edge-anonymous", &pki.ca(), None);
    // A valid certificate for another node id.
    let imposter = tls_proxy(&cp, "edge-imposter", &pki.ca(), Some(&dir("edge-named")));

    let x = wait_refused(&foreign).await;
    assert_eq!(x["streams_opened"], 0, "refused at the handshake: {x}");
    let x = wait_refused(&distrust).await;
    assert_eq!(x["streams_opened"], 0, "refused at the handshake: {x}");
    let err = x["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    let x = wait_refused(&anonymous).await;
    assert_eq!(x["streams_opened"], 0, "refused at the handshake: {x}");
    let x = eventually("the imposter to be denied", CONVERGE, POLL, || async {
        let x = imposter.xds_status().await;
        let e = x["last_error"].as_str().unwrap_or_default().to_string();
        if e.contains("not named by the client certificate") {
            Ok(x)
        } else {
            Err(x.to_string())
        }
    })
    .await;
    let err = x["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("permission"),
        "the stream ends in PERMISSION_DENIED: {err}"
    );

    // gantry-cp says why, with both names for the imposter.
    let log = cp.log();
    assert!(
        log.lines().any(|l| l.contains("handshake refused")
            && (l.contains("UnknownIssuer") || l.contains("unknown issuer"))),
        "wrong CA logged:\n{}",
        tail(cp.log_path(), 40)
    );
    assert!(
        log.lines()
            .any(|l| l.contains("handshake refused") && l.contains("no certificates")),
        "no client certificate logged:\n{}",
        tail(cp.log_path(), 40)
    );
    assert!(
        log.lines().any(|l| l.contains("not name the node id")
            && l.contains("edge-imposter")
            && l.contains("DNS:edge-named")
            && l.contains("spiffe://gantry/node/edge-named")),
        "the refusal names the node id and the certificate's names:\n{}",
        tail(cp.log_path(), 40)
    );

    // Give them time to retry: still nothing, still nowhere.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in [&foreign, &distrust, &anonymous, &imposter] {
        assert_never_served(&cp, p).await;
    }
    assert!(cp.fleet_node("edge-good").await.is_some());
}

/// The certificate a fresh handshake with the xDS server is answered with.
async fn server_leaf(port: u16, ca: &Path, node_dir: &Path) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(node_dir.join("node.pem"))
            .map_err(|e| e.to_string())?
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
    let key =
        PrivateKeyDer::from_pem_file(node_dir.join("node-key.pem")).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no server certificate")?;
    Ok(leaf.to_vec())
}

fn leaf_der(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .expect("pem")
        .next()
        .expect("a certificate")
        .expect("valid pem")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load() {
    let tmp = TempDir::new("gantry-mtls");
    let pki = Pki::new(tmp.path(), "ca");
    let (srv, node) = (tmp.path().join("srv"), tmp.path().join("edge-rot"));
    pki.server(&srv);
    pki.node("edge-rot", &node);
    let cp = tls_cp(&srv, &pki.ca(), &[]).await;
    let up = Upstream::start("m").await;
    let rev = route(&cp, &up).await;
    let mut proxy = tls_proxy(&cp, "edge-rot", &pki.ca(), Some(&node));
    proxy.wait_ready(Some(&cp), CONVERGE).await;
    let before = cp.wait_synced("edge-rot", rev, CONVERGE).await;
    until_routes(&proxy).await;
    let serial = before["certificate"]["serial"].clone();
    let since = before["connected_since"].clone();
    assert!(serial.is_string(), "{before}");

    // Continuous requests from 4 clients until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let url = format!("{}/m", proxy.proxy_url());
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        load.push(tokio::spawn(async move {
            let client = gantry_e2e::http_client();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("status {}", r.status())),
                    Err(e) => failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(e.to_string()),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Three rounds: the server's certificate, then the node's, each
    // rewritten in place.
    let (mut serial, mut since) = (serial, since);
    for round in 1..=3 {
        let old_server = leaf_der(&srv.join("server.pem"));
        pki.server(&srv);
        let new_server = leaf_der(&srv.join("server.pem"));
        assert_ne!(old_server, new_server);
        let started = Instant::now();
        eventually(
            "new handshakes to get the new server certificate",
            CONVERGE,
            POLL,
            || async {
                let got = server_leaf(cp.xds_port, &pki.ca(), &node).await?;
                if got == new_server {
                    Ok(())
                } else {
                    Err("still the old certificate".to_string())
                }
            },
        )
        .await;
        eprintln!(
            "round {round}: server certificate picked up in {:?}",
            started.elapsed()
        );
        // The open stream was not dropped for it.
        let n = cp.fleet_node("edge-rot").await.expect("still connected");
        assert_eq!(n["connected_since"], since, "{n}");
        assert_eq!(n["state"], "SYNCED", "{n}");

        // The node's: the proxy reconnects with it (and meets the
        // server's new one).
        pki.node("edge-rot", &node);
        let started = Instant::now();
        let after = eventually(
            "the node to reconnect with its new certificate",
            CONVERGE,
            POLL,
            || async {
                match cp.fleet_node("edge-rot").await {
                    Some(n) if n["certificate"]["serial"] != serial && n["state"] == "SYNCED" => {
                        Ok(n)
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        eprintln!(
            "round {round}: node certificate picked up in {:?}",
            started.elapsed()
        );
        assert_ne!(after["connected_since"], since);
        serial = after["certificate"]["serial"].clone();
        since = after["connected_since"].clone();
    }
    assert!(proxy.log().contains("xDS TLS certificates reloaded"));
    assert!(cp.log().contains("xDS TLS certificates reloaded"));
    assert_eq!(
        proxy.xds_status().await["streams_opened"],
        4,
        "one stream, then one per node rotation"
    );

    // A config change after both rotations still arrives.
    let rev = cp
        .post(
            "/services/m/routes",
            json!({"name": "m2", "paths": ["/m2"]}),
        )
        .await
        .committed();
    cp.wait_synced("edge-rot", rev, CONVERGE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    let failed = failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!("{ok} requests, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(ok > 50, "only {ok} requests went through");
    assert_eq!(proxy.get("/m2").await.map(|r| r.0).ok(), Some(200));
}

/// A child process killed on drop.
struct Kid(Child, PathBuf);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Kid {
    fn spawn(bin: PathBuf, args: &[String], log: PathBuf) -> Kid {
        let child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .env_remove("GANTRY_PROXY_ADMIN_TOKEN")
            .env_remove("GANTRY_XDS_INSECURE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn");
        Kid(child, log)
    }
    async fn exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_xds_off_loopback_is_refused() {
    let tmp = TempDir::new("gantry-mtls");
    let (admin, xds) = (reserve_port(), reserve_port());
    let args = |more: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--database-url".into(),
            format!("sqlite://{}", tmp.path().join("cp.db").display()),
            "--admin-listen".into(),
            format!("127.0.0.1:{}", admin.port),
            "--xds-listen".into(),
            format!("0.0.0.0:{}", xds.port),
        ];
        a.extend(more.iter().map(|s| s.to_string()));
        a
    };
    let mut refused = Kid::spawn(cp_binary(), &args(&[]), tmp.path().join("refused.log"));
    let status = refused
        .exit(Duration::from_secs(20))
        .await
        .expect("gantry-cp refuses to start");
    assert!(!status.success());
    let log = refused.log();
    assert!(
        log.contains("not a loopback address") && log.contains("--xds-insecure"),
        "{log}"
    );

    let mut insecure = Kid::spawn(
        cp_binary(),
        &args(&["--xds-insecure"]),
        tmp.path().join("insecure.log"),
    );
    let client = gantry_e2e::http_client();
    let deadline = Instant::now() + CONVERGE;
    loop {
        if let Ok(Some(s)) = insecure.0.try_wait() {
            panic!("exited {s}: {}", insecure.log());
        }
        let up = client
            .get(format!("http://127.0.0.1:{}/status", admin.port))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "not up: {}", insecure.log());
        tokio::time::sleep(POLL).await;
    }
    assert!(insecure.exit(Duration::ZERO).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_admin_off_loopback_needs_a_token() {
    let tmp = TempDir::new("gantry-mtls");
    let admin = reserve_port();
    let args = |more: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--admin-listen".into(),
            format!("0.0.0.0:{}", admin.port),
            "--xds-address".into(),
            // Nothing listens there: the admin endpoint is what is tested.
            format!("http://127.0.0.1:{}", reserve_port().port),
            "--node-id".into(),
            "edge-admin".into(),
        ];
        a.extend(more.iter().map(|s| s.to_string()));
        a
    };
    let mut refused = Kid::spawn(proxy_binary(), &args(&[]), tmp.path().join("refused.log"));
    let status = refused
        .exit(Duration::from_secs(20))
        .await
        .expect("gantry-proxy refuses to start");
    assert!(!status.success());
    assert!(refused.log().contains("--admin-token"), "{}", refused.log());

    let _tokened = Kid::spawn(
        proxy_binary(),
        &args(&["--admin-token", "s3cret-token"]),
        tmp.path().join("tokened.log"),
    );
    let client = gantry_e2e::http_client();
    let base = format!("http://127.0.0.1:{}", admin.port);
    // Probes need no token.
    eventually("the admin endpoint", CONVERGE, POLL, || async {
        match client.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status() == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let ready = client
        .get(format!("{base}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 503, "no config yet, but not 401");
    for (auth, want) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("s3cret-token"), 401),
        (Some("Bearer s3cret-token"), 200),
    ] {
        for path in ["/config_dump", "/xds", "/stats/prometheus"] {
            let mut req = client.get(format!("{base}{path}"));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let got = req.send().await.expect("admin").status().as_u16();
            assert_eq!(got, want, "{path} with {auth:?}");
        }
    }
    let del = client
        .delete(format!("{base}/proxy-cache"))
        .send()
        .await
        .expect("purge");
    assert_eq!(del.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_fan_out_sends_the_proxy_admin_token() {
    let cp = Cp::start_with_args(Backend::Sqlite, &["--proxy-admin-token", "s3cret-token"]).await;
    let proxy = Proxy::start_with(
        &cp,
        "edge-purge",
        ProxyOptions {
            extra_args: vec!["--admin-token".into(), "s3cret-token".into()],
            ..Default::default()
        },
    )
    .await;
    // The proxy insists on the token...
    let r = proxy
        .client
        .delete(format!("{}/proxy-cache", proxy.admin))
        .send()
        .await
        .expect("purge");
    assert_eq!(r.status(), 401);
    // ...and the control plane's fan-out has it.
    cp.delete("/proxy-cache").await.expect(204);
}

// ---------------------------------------------------------------------------
// Raw gRPC over mutual TLS: the exact status code, and CSDS.
// ---------------------------------------------------------------------------

/// A rustls client config trusting `ca`, presenting `node_dir`'s
/// certificate if given.
fn client_config(ca: &Path, node_dir: Option<&Path>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("ca pem")).expect("ca cert");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut cfg = match node_dir {
        Some(d) => {
            let chain = CertificateDer::pem_file_iter(d.join("node.pem"))
                .expect("node.pem")
                .collect::<Result<Vec<_>, _>>()
                .expect("node pem");
            let key = PrivateKeyDer::from_pem_file(d.join("node-key.pem")).expect("key");
            b.with_client_auth_cert(chain, key).expect("client cert")
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// Dials 127.0.0.1 over TLS for tonic.
#[derive(Clone)]
struct Dial(Arc<rustls::ClientConfig>);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tonic::codegen::Service<tonic::codegen::http::Uri> for Dial {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let cfg = self.0.clone();
        Box::pin(async move {
            let port = uri.port_u16().ok_or("no port")?;
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let name = ServerName::try_from("127.0.0.1")?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

async fn channel(
    cp: &Cp,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(tls_url(cp))
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(Dial(cfg))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_says_permission_denied_and_csds_needs_a_certificate() {
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
    use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;

    let tmp = TempDir::new("gantry-mtls");
    let pki = Pki::new(tmp.path(), "ca");
    let (srv, named) = (tmp.path().join("srv"), tmp.path().join("edge-named"));
    pki.server(&srv);
    pki.node("edge-named", &named);
    let cp = tls_cp(&srv, &pki.ca(), &[]).await;
    let up = Upstream::start("m").await;
    route(&cp, &up).await;

    // A stream claiming a node id the certificate does not name.
    let ch = channel(&cp, client_config(&pki.ca(), Some(&named)))
        .await
        .expect("the handshake succeeds: the certificate is good");
    let mut ads = AggregatedDiscoveryServiceClient::new(ch.clone());
    let first = DeltaDiscoveryRequest {
        node: Some(gantry_e2e::ads::node("edge-other")),
        type_url: gantry_e2e::ads::CLUSTER.into(),
        ..Default::default()
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rx = ads
            .delta_aggregated_resources(tokio_stream::iter([first]))
            .await?
            .into_inner();
        let mut got = 0usize;
        loop {
            match rx.message().await {
                Ok(Some(r)) => got += r.resources.len(),
                Ok(None) => return Ok(got),
                Err(s) => return Err(s),
            }
        }
    })
    .await
    .expect("the stream ends");
    let status = outcome.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("edge-other"), "{status:?}");

    // The same certificate under its own node id gets resources.
    let own = DeltaDiscoveryRequest {
        node: Some(gantry_e2e::ads::node("edge-named")),
        type_url: gantry_e2e::ads::CLUSTER.into(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(own).await.expect("send");
    let mut stream = ads
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    // The snapshot may still be at revision 0 (empty) for a moment.
    let got = tokio::time::timeout(CONVERGE, async {
        loop {
            match stream.message().await {
                Ok(Some(r)) if !r.resources.is_empty() => return Ok(r),
                Ok(Some(_)) => continue,
                Ok(None) => return Err("the stream ended".to_string()),
                Err(s) => return Err(format!("{s:?}")),
            }
        }
    })
    .await
    .expect("resources in time");
    assert!(got.is_ok(), "{got:?}");

    // CSDS with a client certificate: it sees the connected node.
    let mut csds = ClientStatusDiscoveryServiceClient::new(ch);
    let seen = eventually("CSDS to list edge-named", CONVERGE, POLL, || {
        let mut csds = csds.clone();
        async move {
            let r = csds
                .fetch_client_status(ClientStatusRequest::default())
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let ids: Vec<String> = r
                .config
                .iter()
                .filter_map(|c| c.node.as_ref().map(|n| n.id.clone()))
                .collect();
            if ids.contains(&"edge-named".to_string()) {
                Ok(ids)
            } else {
                Err(format!("{ids:?}"))
            }
        }
    })
    .await;
    assert!(!seen.contains(&"edge-other".to_string()), "{seen:?}");
    let _ = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await;
    drop(tx);

    // CSDS without a client certificate: no connection at all.
    let anonymous = channel(&cp, client_config(&pki.ca(), None)).await;
    let refused = match anonymous {
        Err(e) => Some(format!("{e:?}")),
        Ok(ch) => ClientStatusDiscoveryServiceClient::new(ch)
            .fetch_client_status(ClientStatusRequest::default())
            .await
            .err()
            .map(|e| format!("{e:?}")),
    };
    // Under TLS 1.3 the client may only learn it was refused as the
    // connection closes; gantry-cp says why.
    let refused = refused.expect("CSDS without a client certificate is refused");
    eventually("gantry-cp to log the refusal", CONVERGE, POLL, || async {
        if cp
            .log()
            .lines()
            .any(|l| l.contains("handshake refused") && l.contains("no certificates"))
        {
            Ok(())
        } else {
            Err(refused.clone())
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Moving the fleet to a new CA under load.
// ---------------------------------------------------------------------------

fn bundle(out: &Path, cas: &[&Path]) {
    let mut pem = String::new();
    for c in cas {
        pem.push_str(&std::fs::read_to_string(c).expect("ca"));
    }
    // By rename, as an operator's tooling would.
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, pem).expect("write bundle");
    std::fs::rename(&tmp, out).expect("rename bundle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ca_rotation_under_load() {
    let tmp = TempDir::new("gantry-mtls");
    let old = Pki::new(tmp.path(), "old-ca");
    let new = Pki::new(tmp.path(), "new-ca");
    let (srv, node) = (tmp.path().join("srv"), tmp.path().join("edge-ca"));
    // gantry-cp's client CA bundle and the node's CA bundle.
    let (cp_ca, node_ca) = (tmp.path().join("cp-ca.pem"), tmp.path().join("node-ca.pem"));
    bundle(&cp_ca, &[&old.ca()]);
    bundle(&node_ca, &[&old.ca()]);
    old.server(&srv);
    old.node("edge-ca", &node);
    let cp = tls_cp(&srv, &cp_ca, &[]).await;
    let up = Upstream::start("m").await;
    let rev = route(&cp, &up).await;
    let mut proxy = tls_proxy(&cp, "edge-ca", &node_ca, Some(&node));
    proxy.wait_ready(Some(&cp), CONVERGE).await;
    let first = cp.wait_synced("edge-ca", rev, CONVERGE).await;
    until_routes(&proxy).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let url = format!("{}/m", proxy.proxy_url());
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        load.push(tokio::spawn(async move {
            let client = gantry_e2e::http_client();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("status {}", r.status())),
                    Err(e) => failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(e.to_string()),
                }
            }
        }));
    }

    // Wait for the node to be connected with a certificate other than
    // `not`, SYNCED.
    let reconnected = |not: Value| {
        let cp = &cp;
        async move {
            eventually("the node to reconnect", CONVERGE, POLL, || {
                let not = not.clone();
                async move {
                    match cp.fleet_node("edge-ca").await {
                        Some(n)
                            if n["certificate"]["serial"] != not["certificate"]["serial"]
                                || n["connected_since"] != not["connected_since"] =>
                        {
                            if n["state"] == "SYNCED" {
                                Ok(n)
                            } else {
                                Err(n.to_string())
                            }
                        }
                        other => Err(format!("{other:?}")),
                    }
                }
            })
            .await
        }
    };
    // 1. Both sides trust both CAs (the node reconnects: its CA file changed).
    bundle(&cp_ca, &[&old.ca(), &new.ca()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    bundle(&node_ca, &[&old.ca(), &new.ca()]);
    let second = reconnected(first).await;
    // 2. Certificates from the new CA, server first.
    new.server(&srv);
    let started = Instant::now();
    eventually("the new server certificate", CONVERGE, POLL, || async {
        let got = server_leaf(cp.xds_port, &node_ca, &node).await?;
        if got == leaf_der(&srv.join("server.pem")) {
            Ok(())
        } else {
            Err("old".to_string())
        }
    })
    .await;
    eprintln!("new-CA server certificate in {:?}", started.elapsed());
    new.node("edge-ca", &node);
    let third = reconnected(second).await;
    // 3. The old CA is trusted no more.
    bundle(&cp_ca, &[&new.ca()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    bundle(&node_ca, &[&new.ca()]);
    reconnected(third).await;
    // A certificate from the old CA is now refused at the handshake.
    let old_node = tmp.path().join("old-node");
    old.node("edge-ca", &old_node);
    let stale = tls_proxy(&cp, "edge-ca-old", &node_ca, Some(&old_node));
    let x = wait_refused(&stale).await;
    assert_eq!(x["streams_opened"], 0, "{x}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    let failed = failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!("{ok} requests, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(ok > 50, "only {ok} requests went through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_tls_flags_are_checked_at_start() {
    let tmp = TempDir::new("gantry-mtls");
    let pki = Pki::new(tmp.path(), "ca");
    let node = tmp.path().join("edge-1");
    pki.node("edge-1", &node);
    let ca = pki.ca();
    let cert = node.join("node.pem");
    let wrong_key = pki.dir.join("ca-key.pem");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // https:// with no CA to check gantry-cp's certificate against.
        (
            vec!["--xds-address", "https://127.0.0.1:1"],
            "needs --xds-ca",
        ),
        // A CA beside a plaintext address: no silent fallback.
        (
            vec!["--xds-address", "http://127.0.0.1:1", "--xds-ca", s(&ca)],
            "must be https://",
        ),
        // Half a key pair.
        (
            vec![
                "--xds-address",
                "https://127.0.0.1:1",
                "--xds-ca",
                s(&ca),
                "--xds-cert",
                s(&cert),
            ],
            "--xds-key",
        ),
        // A key that is not the certificate's.
        (
            vec![
                "--xds-address",
                "https://127.0.0.1:1",
                "--xds-ca",
                s(&ca),
                "--xds-cert",
                s(&cert),
                "--xds-key",
                s(&wrong_key),
            ],
            "loading the xDS TLS files",
        ),
    ];
    for (i, (args, says)) in cases.into_iter().enumerate() {
        let admin = reserve_port();
        let mut a: Vec<String> = vec!["--admin-listen".into(), format!("127.0.0.1:{}", admin.port)];
        a.extend(args.iter().map(|s| s.to_string()));
        let mut p = Kid::spawn(proxy_binary(), &a, tmp.path().join(format!("p{i}.log")));
        let status = p
            .exit(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{args:?}: still running"));
        assert!(!status.success(), "{args:?}");
        assert!(p.log().contains(says), "{args:?}: {}", p.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_domain_scopes_spiffe_names_and_bootstrap_keys_work() {
    let tmp = TempDir::new("gantry-mtls");
    let pki = Pki::new(tmp.path(), "ca");
    let srv = tmp.path().join("srv");
    pki.server(&srv);
    // Node ids that are not DNS names: only the SPIFFE URI can name them.
    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    pki.issue(
        "node",
        &ours,
        &["--node-id", "edge_ours", "--trust-domain", "example.org"],
    );
    pki.issue("node", &theirs, &["--node-id", "edge_theirs"]);
    let cp = tls_cp(&srv, &pki.ca(), &["--xds-trust-domain", "example.org"]).await;
    let up = Upstream::start("m").await;
    let rev = route(&cp, &up).await;

    // The flags as bootstrap keys.
    let bootstrap = tmp.path().join("proxy.yaml");
    std::fs::write(
        &bootstrap,
        format!(
            "xds_ca: {}\nxds_cert: {}\nxds_key: {}\n",
            s(&pki.ca()),
            s(&ours.join("node.pem")),
            s(&ours.join("node-key.pem"))
        ),
    )
    .expect("bootstrap");
    let mut good = Proxy::spawn(
        &tls_url(&cp),
        cp.proxy_http_port,
        cp.proxy_https_port,
        "edge_ours",
        ProxyOptions {
            extra_args: vec!["--bootstrap".into(), s(&bootstrap).into()],
            ..Default::default()
        },
    );
    good.wait_ready(Some(&cp), CONVERGE).await;
    let seen = cp.wait_synced("edge_ours", rev, CONVERGE).await;
    assert_eq!(
        seen["certificate"]["uris"],
        json!(["spiffe://example.org/node/edge_ours"]),
        "{seen}"
    );
    assert_eq!(seen["certificate"]["dns"], json!([]), "{seen}");
    until_routes(&good).await;

    // spiffe://gantry/node/edge_theirs is in another trust domain.
    let stranger = tls_proxy(&cp, "edge_theirs", &pki.ca(), Some(&theirs));
    eventually(
        "the other trust domain to be denied",
        CONVERGE,
        POLL,
        || async {
            let x = stranger.xds_status().await;
            let e = x["last_error"].as_str().unwrap_or_default().to_string();
            if e.contains("not named by the client certificate") {
                Ok(())
            } else {
                Err(x.to_string())
            }
        },
    )
    .await;
    assert_never_served(&cp, &stranger).await;
    assert!(
        cp.log().lines().any(|l| l.contains("edge_theirs")
            && l.contains("spiffe://gantry/node/edge_theirs")
            && l.contains("example.org")),
        "{}",
        tail(cp.log_path(), 20)
    );
}
