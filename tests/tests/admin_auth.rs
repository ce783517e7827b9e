//! The real `gantry-cp` binary's admin API security: it refuses to serve
//! beyond loopback with no token, serves TLS whose certificate is renewed
//! in place (no restart), and never lets a token out: not in its debug
//! log, not in its database file, not in any read.

use gantry_e2e::{
    Backend, Cp, CpOptions, Port, TempDir, cp_binary, http_client, reserve_port, tail,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `gantry-cp` with `args` (plus `env`) until it exits or 5 s pass:
/// `Some(stderr)` when it exited, `None` when it kept running.
fn run_briefly(args: &[String], env: &[(&str, &str)]) -> Option<(bool, String)> {
    let dir = TempDir::new("gantry-e2e-refuse");
    let log = dir.path().join("cp.log");
    let mut cmd = Command::new(cp_binary());
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env_remove("GANTRY_ADMIN_TOKEN")
        .env("GANTRY_KEYRING", gantry_e2e::TEST_KEYRING)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn gantry-cp");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some((
                status.success(),
                std::fs::read_to_string(&log).unwrap_or_default(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Arguments for a gantry-cp with its admin API on every address, and the
/// ports it uses: held until the test ends, because the process binds them
/// only after start-up (released earlier, another test could take them).
fn public_args(db: &Path) -> (Vec<String>, [Port; 2]) {
    let (admin, xds) = (reserve_port(), reserve_port());
    let args = vec![
        "--database-url".into(),
        format!("sqlite://{}", db.display()),
        "--admin-listen".into(),
        format!("0.0.0.0:{}", admin.port),
        "--xds-listen".into(),
        format!("127.0.0.1:{}", xds.port),
    ];
    (args, [admin, xds])
}

#[test]
fn a_public_admin_listener_needs_a_token_or_admin_insecure() {
    let dir = TempDir::new("gantry-e2e-public");
    let (args, _a) = public_args(&dir.path().join("a.db"));
    let (ok, log) = run_briefly(&args, &[]).expect("gantry-cp should refuse to start");
    assert!(!ok);
    assert!(
        log.contains("refusing to serve the admin API on 0.0.0.0")
            && log.contains("--admin-token")
            && log.contains("--admin-insecure"),
        "{log}"
    );
    // With a token, or explicitly insecure, it serves.
    let token = [("GANTRY_ADMIN_TOKEN", "a-long-enough-bootstrap-token")];
    let (args, _b) = public_args(&dir.path().join("b.db"));
    assert!(run_briefly(&args, &token).is_none());
    let (mut insecure, _c) = public_args(&dir.path().join("c.db"));
    insecure.push("--admin-insecure".into());
    assert!(run_briefly(&insecure, &[]).is_none());
    // A short token is refused outright.
    let short = [("GANTRY_ADMIN_TOKEN", "short")];
    let (args, _d) = public_args(&dir.path().join("d.db"));
    let (ok, log) = run_briefly(&args, &short).expect("exits");
    assert!(!ok && log.contains("at least 16 characters"), "{log}");
}

/// A CA, and leaf certificates for 127.0.0.1 it issues.
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gantry test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        Pki {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).expect("ca"),
        }
    }

    /// Writes a new leaf to `cert`/`key`; returns its DER.
    fn issue(&self, cert: &Path, key: &Path, cn: &str) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let k = rcgen::KeyPair::generate().expect("key");
        let c = params.signed_by(&k, &self.ca).expect("leaf");
        // The key first: the watcher may look between the two writes, and
        // a new key with the old certificate is a mismatch it must survive.
        std::fs::write(key, k.serialize_pem()).expect("write key");
        std::fs::write(cert, c.pem()).expect("write cert");
        c.der().clone()
    }
}

/// GET over TLS trusting `ca`: (status, body, the certificate served).
async fn https_get(
    port: u16,
    ca: &CertificateDer<'static>,
    path: &str,
    token: &str,
) -> Result<(u16, Value, CertificateDer<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no peer certificate")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("kong-admin-token", token)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        served.into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tls_certificate_is_reloaded_without_a_restart() {
    let dir = TempDir::new("gantry-e2e-admin-tls");
    let (cert, key) = (
        dir.path().join("admin.pem"),
        dir.path().join("admin-key.pem"),
    );
    let pki = Pki::new();
    let first = pki.issue(&cert, &key, "first");
    let token = "tls-test-bootstrap-token-0123456789";
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let cp = Cp::start_with(
        Backend::Sqlite,
        &["--admin-tls-cert", &c, "--admin-tls-key", &k],
        CpOptions {
            admin_token: Some(token.into()),
            admin_tls: true,
            ..CpOptions::default()
        },
    )
    .await;
    let ca = pki.ca.der().clone();
    let (status, body, served) = https_get(cp.admin_port, &ca, "/status", token)
        .await
        .expect("https");
    assert_eq!(status, 200, "{body}");
    assert_eq!(served, first);
    let (status, _, _) = https_get(cp.admin_port, &ca, "/status", "wrong-token")
        .await
        .expect("https");
    assert_eq!(status, 401);
    // Plain HTTP on the TLS port gets nothing served.
    let plain = http_client()
        .get(format!("http://127.0.0.1:{}/status", cp.admin_port))
        .send()
        .await;
    assert!(plain.is_err() || !plain.expect("reply").status().is_success());

    let pid = cp.pid();
    let second = pki.issue(&cert, &key, "second");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, served) = https_get(cp.admin_port, &ca, "/status", token)
            .await
            .expect("https during the reload");
        assert_eq!(status, 200);
        if served == second {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served:\n{}",
            tail(cp.log_path(), 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(cp.pid(), pid, "same process");

    // A broken file is logged and the certificate in service kept.
    std::fs::write(&cert, "not a certificate").expect("write");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cp.log().contains("admin API certificate not reloaded") {
        assert!(Instant::now() < deadline, "{}", tail(cp.log_path(), 20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, served) = https_get(cp.admin_port, &ca, "/status", token)
        .await
        .expect("https after a bad file");
    assert_eq!(status, 200);
    assert_eq!(served, second);
}

/// Every place a token could leak to, as text.
fn leaks(cp: &Cp, reads: &str) -> String {
    let mut all = cp.log();
    all.push_str(reads);
    if let Some(db) = cp.sqlite_path() {
        for suffix in ["", "-wal", "-shm"] {
            if let Ok(bytes) = std::fs::read(format!("{}{suffix}", db.display())) {
                all.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_appear_only_in_the_response_that_creates_them() {
    let boot = "leak-test-bootstrap-token-0123456789";
    let mut cp = Cp::start_with(
        Backend::Sqlite,
        &[],
        CpOptions {
            admin_token: Some(boot.into()),
            rust_log: Some("debug".into()),
            ..CpOptions::default()
        },
    )
    .await;
    let mut tokens = vec![boot.to_string()];
    let created = cp
        .post("/rbac/users", json!({ "name": "gen" }))
        .await
        .expect(201);
    tokens.push(created["user_token"].as_str().expect("token").to_string());
    let chosen = "a-chosen-user-token-9876543210";
    cp.post(
        "/rbac/users",
        json!({ "name": "chosen", "user_token": chosen }),
    )
    .await
    .expect(201);
    tokens.push(chosen.to_string());
    cp.post("/rbac/users/gen/roles", json!({ "roles": "admin" }))
        .await
        .expect(201);
    cp.post("/rbac/users/chosen/roles", json!({ "roles": "read-only" }))
        .await
        .expect(201);
    cp.patch("/rbac/users/chosen", json!({ "comment": "rotated" }))
        .await
        .expect(200);

    // The tokens at work: writes, reads, refusals, bad tokens.
    let client = http_client();
    let send = |token: &str, method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = client
            .request(method, format!("{}{path}", cp.base))
            .header("kong-admin-token", token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    let r = send(
        &tokens[1],
        reqwest::Method::POST,
        "/services",
        Some(json!({ "name": "s", "url": "http://a.test" })),
    )
    .await
    .expect("request");
    assert_eq!(r.status(), 201);
    let r = send(
        chosen,
        reqwest::Method::POST,
        "/services",
        Some(json!({ "name": "t", "url": "http://a.test" })),
    )
    .await
    .expect("request");
    assert_eq!(r.status(), 403);
    let r = client
        .get(format!("{}/services", cp.base))
        .bearer_auth(chosen)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let wrong = format!("{chosen}-but-wrong");
    let r = send(&wrong, reqwest::Method::GET, "/services", None)
        .await
        .expect("request");
    assert_eq!(r.status(), 401);

    let mut reads = String::new();
    for path in [
        "/rbac/users",
        "/rbac/users/gen",
        "/rbac/users/chosen",
        "/rbac/users/gen/roles",
        "/rbac/roles",
        "/rbac/roles/admin/endpoints",
        "/audit",
        "/config",
        "/config/revisions",
        "/status",
        "/services",
    ] {
        let r = cp.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        reads.push_str(&r.body.to_string());
    }
    // Stopped cleanly, so SQLite has written everything it will.
    cp.stop();
    let haystack = leaks(&cp, &reads);
    assert!(
        haystack.contains("admin request authenticated"),
        "debug log on"
    );
    for t in &tokens {
        assert!(!haystack.contains(t.as_str()), "a token leaked: {t}");
    }
}
