//! Secrets out of reach, checked on real processes: every secret a test
//! creates (a key-auth key, a jwt HMAC secret, a certificate's private
//! key, a Redis password) is looked for, byte for byte, in the database
//! file, both processes' logs at `RUST_LOG=debug`, the admin API's read
//! responses and exports, gantry-proxy's `/config_dump`, and the xDS feed
//! of each flavour. What must travel (an HS256 secret to its verifier, a
//! private key to the listener that terminates TLS, a Redis password to
//! the proxy that connects) is asserted to go only where it is used.
//!
//! 1. `no_secret_in_the_clear`: the grep above.
//! 3. `a_vault_reference_is_resolved_by_the_node`: a certificate whose key
//!    is `{vault://env/...}` is stored and shown as the reference; the
//!    proxy with the variable serves TLS with it, one without refuses the
//!    config naming the variable.
//! 4. `an_unresolvable_reference_fences_the_routes_it_would_protect`: the
//!    order of events for fail-closed (good config, then a policy whose
//!    secret the node cannot read).
//! 2. `keyring_rotation_and_a_wrong_keyring`: `gantry-cp keyring rotate`
//!    moves every secret under a new key; the old key can then leave the
//!    keyring; a keyring without the database's key refuses to start.

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use gantry_e2e::ads::{LISTENER, Sotw, node};
use gantry_e2e::{Backend, Cp, Proxy, ProxyOptions, Upstream, eventually, http_client};
use prost::Message;
use serde_json::json;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(15);

fn fixture_key() -> (String, String, String) {
    let dir = gantry_e2e::repo_root().join("tests/fixtures/tls");
    let cert = std::fs::read_to_string(dir.join("secure.example.com.ec.crt")).unwrap();
    let key = std::fs::read_to_string(dir.join("secure.example.com.ec.key")).unwrap();
    // The private key's base64 body: what a leak would show.
    let body: String = key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    (cert, key, body)
}

async fn until_status(proxy: &Proxy, path: &str, key: Option<&str>, status: u16) {
    let c = http_client();
    let url = format!("{}{path}", proxy.proxy_url());
    eventually(
        &format!("GET {url} -> {status}"),
        CONVERGE,
        Duration::from_millis(20),
        || {
            let mut req = c.get(&url);
            if let Some(k) = key {
                req = req.header("apikey", k);
            }
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

/// The listener bytes a node of the given flavour receives.
async fn feed(cp: &Cp, user_agent: &str) -> Vec<u8> {
    let mut s = Sotw::connect(&cp.xds_url()).await;
    let mut n = node(&format!("probe-{user_agent}"));
    n.user_agent_name = user_agent.into();
    s.send(DiscoveryRequest {
        node: Some(n),
        type_url: LISTENER.into(),
        ..Default::default()
    })
    .await;
    let r = s
        .recv(CONVERGE)
        .await
        .expect("a listener response from the control plane");
    r.encode_to_vec()
}

/// Every node's config as CSDS shows it, contents included.
async fn csds(cp: &Cp) -> Vec<u8> {
    use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
    use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
    let mut c = ClientStatusDiscoveryServiceClient::connect(cp.xds_url())
        .await
        .expect("CSDS client");
    let r = c
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .expect("CSDS answer")
        .into_inner();
    let secrets = r
        .config
        .iter()
        .flat_map(|n| &n.generic_xds_configs)
        .filter(|g| g.type_url.ends_with("tls.v3.Secret"))
        .count();
    assert!(secrets > 0, "CSDS shows the node's certificate secret");
    r.encode_to_vec()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_clear() {
    let cp = Cp::start_with_env(Backend::Sqlite, &[], &[("RUST_LOG", "debug")]).await;
    let up = Upstream::start("secrets").await;
    let proxy = Proxy::start_with(
        &cp,
        "gantry-secrets",
        ProxyOptions {
            log: Some("debug".into()),
            ..Default::default()
        },
    )
    .await;

    let tag = uuid::Uuid::new_v4().simple().to_string();
    let api_key = format!("ka-{tag}");
    let jwt_secret = format!("jwt-{tag}");
    let redis_pw = format!("redis-{tag}");
    let (cert, key, key_body) = fixture_key();

    cp.post("/services", json!({"name": "s", "url": up.url()}))
        .await
        .expect(201);
    cp.post(
        "/services/s/routes",
        json!({"name": "ka", "paths": ["/ka"]}),
    )
    .await
    .expect(201);
    cp.post("/routes/ka/plugins", json!({"name": "key-auth"}))
        .await
        .expect(201);
    cp.post(
        "/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 10000, "policy": "local",
               "redis": {"password": redis_pw}}}),
    )
    .await
    .expect(201);
    cp.post("/consumers", json!({"username": "alice"}))
        .await
        .expect(201);
    let created = cp
        .post("/consumers/alice/key-auth", json!({"key": api_key}))
        .await
        .expect(201);
    cp.post(
        "/consumers/alice/jwt",
        json!({"key": "alice-iss", "secret": jwt_secret}),
    )
    .await
    .expect(201);
    cp.post(
        "/certificates",
        json!({"cert": cert, "key": key, "snis": ["secure.example.com"]}),
    )
    .await
    .expect(201);
    // The key works through the proxy, so it reached the proxy in a form
    // the proxy can check, and nothing else does.
    until_status(&proxy, "/ka", Some(&api_key), 200).await;
    until_status(&proxy, "/ka", None, 401).await;
    until_status(&proxy, "/ka", Some("not-the-key"), 401).await;

    // Every place a secret could leak, as text or bytes.
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    for path in [
        "/consumers/alice/key-auth",
        "/consumers/alice/jwt",
        "/key-auths",
        "/jwts",
        "/certificates",
        "/plugins",
        "/config",
        "/audit",
        "/config/revisions",
    ] {
        let r = cp.get(path).await;
        places.push((format!("GET {path}"), r.body.to_string().into_bytes()));
    }
    let id = created["id"].as_str().unwrap();
    places.push((
        "GET /key-auths/{id}".into(),
        cp.get(&format!("/key-auths/{id}"))
            .await
            .body
            .to_string()
            .into_bytes(),
    ));
    let (_, dump) = proxy.admin_get("/config_dump?include_eds").await;
    // The dump shows the resources themselves, secrets redacted in place:
    // the plugin filter with its consumers, the certificate without its key.
    for shown in [
        "gantry.filters.http.plugins.v1.Gateway",
        "\"jwt_secrets\"",
        "\"private_key\":{\"inline_string\":\"[redacted]\"}",
        // Inside the plugin's config, itself a JSON string.
        r#"\"password\":\"[redacted]\""#,
    ] {
        assert!(dump.contains(shown), "the dump shows {shown}: {dump}");
    }
    assert!(!dump.contains("not rendered"), "{dump}");
    places.push(("gantry-proxy /config_dump".into(), dump.into_bytes()));
    let export = std::process::Command::new(gantry_e2e::cp_binary())
        .args(&cp.args()[..2])
        .arg("export")
        .env("GANTRY_KEYRING", gantry_e2e::TEST_KEYRING)
        .output()
        .expect("gantry-cp export");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    places.push(("gantry-cp export".into(), export.stdout));
    for f in ["gantry.db", "gantry.db-wal", "gantry.db-shm"] {
        if let Ok(b) = std::fs::read(cp.dir().join(f)) {
            places.push((format!("database file {f}"), b));
        }
    }
    places.push(("gantry-cp log (debug)".into(), cp.log().into_bytes()));
    places.push(("gantry-proxy log (debug)".into(), proxy.log().into_bytes()));
    let envoy_feed = feed(&cp, "envoy").await;
    let gantry_feed = feed(&cp, "gantry-proxy").await;
    places.push(("an Envoy node's listeners".into(), envoy_feed.clone()));
    places.push(("CSDS".into(), csds(&cp).await));

    for (what, bytes) in &places {
        for (name, secret) in [
            ("the key-auth key", api_key.as_str()),
            ("the jwt secret", jwt_secret.as_str()),
            ("the Redis password", redis_pw.as_str()),
            ("the private key", &key_body[..40]),
        ] {
            if what == "an Envoy node's listeners"
                && matches!(name, "the jwt secret" | "the key-auth key")
            {
                // Envoy's own filters need them as they are: jwt_authn
                // verifies HS256 with the secret, api_key_auth compares
                // keys as given (docs/security.md says so). Checked below
                // to be in those filters only.
                continue;
            }
            assert!(!contains(bytes, secret), "{name} found in {what}");
        }
    }
    // gantry-proxy's feed: the key only as a digest; what it must use
    // (the HMAC secret it verifies with, the Redis password it connects
    // with) is there, and only there.
    assert!(
        !contains(&gantry_feed, &api_key),
        "key-auth key in gantry-proxy's feed"
    );
    assert!(contains(&gantry_feed, &jwt_secret));
    assert!(contains(&gantry_feed, &redis_pw));
    assert!(
        !contains(&envoy_feed, "gantry.filters.http.plugins"),
        "Envoy nodes get no Gantry plugin filter"
    );
    // On an Envoy node the key sits in api_key_auth's config and nowhere
    // else: dropping that filter's config leaves no copy.
    assert!(contains(&envoy_feed, "envoy.filters.http.api_key_auth"));
    assert_eq!(
        envoy_feed
            .windows(api_key.len())
            .filter(|w| *w == api_key.as_bytes())
            .count(),
        2,
        "once per listener (HTTP and HTTPS), in its api_key_auth filter"
    );
}

/// Service `s` on `up` with route `/ka` behind key-auth, and consumer
/// `alice` holding `key`.
async fn key_auth_route(cp: &Cp, up: &Upstream, key: &str) {
    cp.post("/services", json!({"name": "s", "url": up.url()}))
        .await
        .expect(201);
    cp.post(
        "/services/s/routes",
        json!({"name": "ka", "paths": ["/ka"]}),
    )
    .await
    .expect(201);
    cp.post("/routes/ka/plugins", json!({"name": "key-auth"}))
        .await
        .expect(201);
    cp.post("/consumers", json!({"username": "alice"}))
        .await
        .expect(201);
    cp.post("/consumers/alice/key-auth", json!({"key": key}))
        .await
        .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyring_rotation_and_a_wrong_keyring() {
    let old_line = gantry_e2e::TEST_KEYRING;
    let mut cp = Cp::start().await;
    let up = Upstream::start("rotate").await;
    key_auth_route(&cp, &up, "rotate-me-key").await;
    // A second version of the credential, so history is rotated too.
    cp.patch(
        "/consumers/alice/key-auth/rotate-me-key",
        json!({"tags": ["t"]}),
    )
    .await
    .expect(200);
    cp.kill();

    let db = cp.args()[..2].to_vec();
    let run = |keyring: &str, args: &[&str]| {
        std::process::Command::new(gantry_e2e::cp_binary())
            .args(&db)
            .args(args)
            .env("GANTRY_KEYRING", keyring)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run gantry-cp")
    };
    let fresh = run(old_line, &["keyring", "new"]);
    assert!(fresh.status.success());
    let new_line = String::from_utf8(fresh.stdout).unwrap().trim().to_string();
    let new_id = new_line.split_whitespace().next().unwrap().to_string();

    // Without the database's key: refused, naming the key, not a secret.
    let refused = run(&new_line, &["export"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("ktest") && err.contains("keyring"), "{err}");

    // New key first, old kept: rotate moves every value under the new key.
    let both = format!("{new_line}\n{old_line}");
    let out = run(&both, &["keyring", "rotate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("re-encrypted 2 secret values in 2 entity versions"),
        "{said}"
    );
    assert!(said.contains("ktest"), "the old key is retired: {said}");
    let mut db_bytes = std::fs::read(cp.dir().join("gantry.db")).unwrap();
    db_bytes.extend(std::fs::read(cp.dir().join("gantry.db-wal")).unwrap_or_default());
    assert!(!contains(&db_bytes, "rotate-me-key"));
    assert!(contains(&db_bytes, &format!("$gantry-enc$v1${new_id}$")));

    // The new key alone now opens everything: the proxy authenticates.
    let export = run(&new_line, &["export"]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    assert!(String::from_utf8_lossy(&export.stdout).contains("keyauth_credentials"));
    cp.restart_with_env(&[("GANTRY_KEYRING", new_line.as_str())])
        .await;
    let proxy = Proxy::start(&cp, "gantry-rotated").await;
    until_status(&proxy, "/ka", Some("rotate-me-key"), 200).await;
    until_status(&proxy, "/ka", Some("another-key"), 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_reference_is_resolved_by_the_node() {
    let cp = Cp::start().await;
    let up = Upstream::start("vault").await;
    let (cert, key, key_body) = fixture_key();
    let reference = "{vault://env/gantry-e2e-tls-key}";
    cp.post("/services", json!({"name": "s", "url": up.url()}))
        .await
        .expect(201);
    cp.post("/services/s/routes", json!({"name": "r", "paths": ["/v"]}))
        .await
        .expect(201);
    let c = cp
        .post(
            "/certificates",
            json!({"cert": cert, "key": reference, "snis": ["secure.example.com"]}),
        )
        .await
        .expect(201);
    assert_eq!(c["key"], reference, "a reference is shown as written");
    let shown = cp
        .get(&format!("/certificates/{}", c["id"].as_str().unwrap()))
        .await;
    assert_eq!(shown.body["key"], reference);
    let bad = cp
        .post(
            "/certificates",
            json!({"cert": cert, "key": "{vault://aws/tls-key}"}),
        )
        .await
        .expect(400);
    assert!(
        bad["fields"]["key"]
            .as_str()
            .unwrap()
            .contains("only the env vault"),
        "{bad}"
    );

    let with = Proxy::start_with(
        &cp,
        "gantry-vault-with",
        ProxyOptions {
            env: vec![("GANTRY_E2E_TLS_KEY".into(), key.clone())],
            ..Default::default()
        },
    )
    .await;
    let without = Proxy::start(&cp, "gantry-vault-without").await;

    // The node with the variable terminates TLS with the referenced key.
    let dir = gantry_e2e::TempDir::new("gantry-vault-ca");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    let port = with.https_port;
    eventually(
        "TLS with the referenced key",
        CONVERGE,
        Duration::from_millis(100),
        || {
            let ca = ca.clone();
            async move {
                let out = tokio::process::Command::new("curl")
                    .args([
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "--max-time",
                        "5",
                        "--cacert",
                    ])
                    .arg(&ca)
                    .args(["--resolve", &format!("secure.example.com:{port}:127.0.0.1")])
                    .arg(format!("https://secure.example.com:{port}/v"))
                    .output()
                    .await
                    .map_err(|e| e.to_string())?;
                let code = String::from_utf8_lossy(&out.stdout).to_string();
                if code == "200" {
                    Ok(())
                } else {
                    Err(format!("{code} {}", String::from_utf8_lossy(&out.stderr)))
                }
            }
        },
    )
    .await;

    // The node without it refuses the config and says which variable.
    eventually(
        "a refusal naming the variable",
        CONVERGE,
        Duration::from_millis(100),
        || {
            let cp = &cp;
            async move {
                let n = cp.fleet_node("gantry-vault-without").await;
                let text = n.map(|v| v.to_string()).unwrap_or_default();
                if text.contains("GANTRY_E2E_TLS_KEY") {
                    Ok(())
                } else {
                    Err(text)
                }
            }
        },
    )
    .await;
    // The key itself never passed the control plane.
    let export = cp.get("/config").await.body.to_string();
    assert!(export.contains(reference));
    assert!(!export.contains(&key_body[..40]));
    drop(without);
}

/// The order of events fail-closed is about: a node serves a key-auth
/// route, then a rate-limiting policy arrives whose Redis password is a
/// vault reference the node cannot resolve (admitted: the control plane
/// defers references). The node refuses that config, names the variable,
/// and the plugin routes answer 500 rather than run without the new
/// policy; a route without plugins serves on. Setting nothing right
/// afterwards (deleting the policy) brings the key-auth route back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_reference_fences_the_routes_it_would_protect() {
    let cp = Cp::start().await;
    let up = Upstream::start("fence").await;
    key_auth_route(&cp, &up, "fence-key").await;
    cp.post(
        "/services/s/routes",
        json!({"name": "open", "paths": ["/open"]}),
    )
    .await
    .expect(201);
    let proxy = Proxy::start(&cp, "gantry-fence").await;
    until_status(&proxy, "/ka", Some("fence-key"), 200).await;
    until_status(&proxy, "/open", None, 200).await;

    let limit = cp
        .post(
            "/routes/ka/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 100, "policy": "redis",
                   "redis": {"host": "127.0.0.1", "password": "{vault://env/gantry-e2e-unset-redis-pw}"}}}),
        )
        .await
        .expect(201);
    until_status(&proxy, "/ka", Some("fence-key"), 500).await;
    until_status(&proxy, "/open", None, 200).await;
    eventually(
        "a NACK naming the variable",
        CONVERGE,
        Duration::from_millis(100),
        || {
            let cp = &cp;
            async move {
                let text = cp
                    .fleet_node("gantry-fence")
                    .await
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                if text.contains("GANTRY_E2E_UNSET_REDIS_PW") {
                    Ok(())
                } else {
                    Err(text)
                }
            }
        },
    )
    .await;

    cp.delete(&format!("/plugins/{}", limit["id"].as_str().unwrap()))
        .await
        .expect(204);
    until_status(&proxy, "/ka", Some("fence-key"), 200).await;
    until_status(&proxy, "/ka", None, 401).await;
}
