//! Kong's jwt and rate-limiting through a real Envoy 1.40 (Envoy's own
//! `jwt_authn` and `local_ratelimit` filters, emitted by
//! `control-plane/src/translator/envoy_native.rs`) and through
//! gantry-proxy, both fed by the same gantry-cp: the same requests get the
//! same statuses. What Envoy cannot express is listed for its node at
//! `/fleet` as `unenforced_plugins`, and leaves when it goes.
//!
//! 1. `envoy_enforces_jwt_like_gantry_proxy`: HS256 and RS256 consumer
//!    credentials; valid, missing, expired, without `exp`, forged, wrong
//!    issuer, the other credential's algorithm, a token in the query, and
//!    `maximum_expiration`.
//! 2. `envoy_enforces_rate_limiting_like_gantry_proxy`: a limit of N per
//!    minute admits exactly N, then 429 with `Retry-After`, by service and
//!    by client address; after a config change gantry-proxy's counts hold
//!    and Envoy's buckets are full again (a documented difference).
//! 3. `envoy_applies_header_transforms_like_gantry_proxy`: header-only
//!    request- and response-transformer as Envoy's `header_mutation`.
//!
//! Run: `cargo build --workspace --bins && cargo nextest run -p gantry-e2e --test envoy_plugins`.

use gantry_e2e::{Cp, Envoy, Proxy, Upstream, http_client as client, now_s, rsa_pair, sign};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(15);

/// Status and headers of one request.
async fn send(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let _ = r.bytes().await;
    (status, headers)
}

/// Envoy and gantry-proxy from one control plane, with an echo upstream
/// behind service `svc`, each of `routes` at `/<name>`.
struct Bench {
    cp: Cp,
    envoy: Envoy,
    proxy: Proxy,
    _up: Upstream,
}

impl Bench {
    async fn start(name: &str, routes: &[&str]) -> Bench {
        let cp = Cp::start().await;
        let mut envoy = Envoy::spawn(&cp, &format!("envoy-{name}"), true);
        let up = Upstream::start("echo").await;
        let proxy = Proxy::start(&cp, &format!("gantry-{name}")).await;
        envoy.wait_ready(&cp, Duration::from_secs(20)).await;
        cp.post("/services", json!({"name": "svc", "url": up.url()}))
            .await
            .expect(201);
        for r in routes {
            cp.post(
                "/services/svc/routes",
                json!({"name": r, "paths": [format!("/{r}")]}),
            )
            .await
            .expect(201);
        }
        Bench {
            cp,
            envoy,
            proxy,
            _up: up,
        }
    }

    /// Waits until both nodes run revision `rev` and Envoy took it whole.
    async fn synced(&self, rev: i64) {
        self.cp
            .wait_synced(&self.envoy.node_id, rev, CONVERGE)
            .await;
        self.cp
            .wait_synced(&self.proxy.node_id, rev, CONVERGE)
            .await;
        let rejected = self.envoy.rejections();
        assert!(
            rejected.is_empty(),
            "Envoy rejected the config: {rejected:?}"
        );
    }

    fn targets(&self) -> [(&'static str, String); 2] {
        [
            ("envoy", self.envoy.proxy_url()),
            ("gantry-proxy", self.proxy.proxy_url()),
        ]
    }

    /// `/fleet`'s unenforced plugins for (Envoy, gantry-proxy).
    async fn unenforced(&self) -> (Value, Value) {
        let e = self
            .cp
            .fleet_node(&self.envoy.node_id)
            .await
            .expect("envoy");
        let g = self
            .cp
            .fleet_node(&self.proxy.node_id)
            .await
            .expect("gantry");
        (
            e["unenforced_plugins"].clone(),
            g["unenforced_plugins"].clone(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_enforces_jwt_like_gantry_proxy() {
    let dir = gantry_e2e::TempDir::new("gantry-e2e-envoy-jwt");
    let (bob_private, bob_public) = rsa_pair(dir.path(), "bob");
    let (forger_private, _) = rsa_pair(dir.path(), "forger");
    let bob = EncodingKey::from_rsa_pem(bob_private.as_bytes()).unwrap();
    let forger = EncodingKey::from_rsa_pem(forger_private.as_bytes()).unwrap();
    let alice_secret = "alice-hmac-secret-0123456789abcdef";
    let alice = EncodingKey::from_secret(alice_secret.as_bytes());
    let wrong_secret = EncodingKey::from_secret(b"not-alice-secret-0123456789abcdef");

    let b = Bench::start("jwt", &["jwt", "short", "anon"]).await;
    let cp = &b.cp;
    for u in ["alice", "bob"] {
        cp.post("/consumers", json!({"username": u}))
            .await
            .expect(201);
    }
    cp.post(
        "/consumers/alice/jwt",
        json!({"key": "alice-iss", "algorithm": "HS256", "secret": alice_secret}),
    )
    .await
    .expect(201);
    cp.post(
        "/consumers/bob/jwt",
        json!({"key": "bob-iss", "algorithm": "RS256", "rsa_public_key": bob_public}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/jwt/plugins",
        json!({"name": "jwt", "config": {"claims_to_verify": ["exp"]}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/short/plugins",
        json!({"name": "jwt", "config": {"claims_to_verify": ["exp"], "maximum_expiration": 600}}),
    )
    .await
    .expect(201);
    // Envoy has no anonymous consumer: left to gantry-proxy, and said so.
    let anon = cp
        .post(
            "/routes/anon/plugins",
            json!({"name": "jwt", "config": {"claims_to_verify": ["exp"], "anonymous": "alice"}}),
        )
        .await;
    let anon_id = anon.body["id"].as_str().unwrap().to_string();
    b.synced(anon.committed()).await;

    let now = now_s();
    let valid = |iss: &str| json!({"iss": iss, "exp": now + 300});
    let hs = |claims: Value| sign(Algorithm::HS256, &alice, claims);
    let rs = |claims: Value| sign(Algorithm::RS256, &bob, claims);
    // (what, path, token, in the query, status)
    let cases: Vec<(&str, &str, Option<String>, bool, u16)> = vec![
        ("no token", "/jwt", None, false, 401),
        (
            "HS256 valid",
            "/jwt",
            Some(hs(valid("alice-iss"))),
            false,
            200,
        ),
        (
            "HS256 in ?jwt=",
            "/jwt",
            Some(hs(valid("alice-iss"))),
            true,
            200,
        ),
        (
            "HS256 expired",
            "/jwt",
            Some(hs(json!({"iss": "alice-iss", "exp": now - 3600}))),
            false,
            401,
        ),
        // Kong: an exp asked for must be a number; a missing one is not.
        (
            "HS256 no exp",
            "/jwt",
            Some(hs(json!({"iss": "alice-iss"}))),
            false,
            401,
        ),
        (
            "HS256 forged",
            "/jwt",
            Some(sign(Algorithm::HS256, &wrong_secret, valid("alice-iss"))),
            false,
            401,
        ),
        (
            "HS256 wrong issuer",
            "/jwt",
            Some(hs(valid("mallory"))),
            false,
            401,
        ),
        (
            "RS256 valid",
            "/jwt",
            Some(rs(valid("bob-iss"))),
            false,
            200,
        ),
        (
            "RS256 expired",
            "/jwt",
            Some(rs(json!({"iss": "bob-iss", "exp": now - 3600}))),
            false,
            401,
        ),
        (
            "RS256 forged",
            "/jwt",
            Some(sign(Algorithm::RS256, &forger, valid("bob-iss"))),
            false,
            401,
        ),
        (
            "RS256 wrong issuer",
            "/jwt",
            Some(rs(valid("mallory"))),
            false,
            401,
        ),
        (
            "HS256 for an RS256 credential, keyed with its public key",
            "/jwt",
            Some(sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(bob_public.as_bytes()),
                valid("bob-iss"),
            )),
            false,
            401,
        ),
        (
            "within maximum_expiration",
            "/short",
            Some(rs(valid("bob-iss"))),
            false,
            200,
        ),
        (
            "past maximum_expiration",
            "/short",
            Some(rs(json!({"iss": "bob-iss", "exp": now + 3600}))),
            false,
            401,
        ),
        (
            "no exp with maximum_expiration",
            "/short",
            Some(rs(json!({"iss": "bob-iss"}))),
            false,
            401,
        ),
    ];
    let c = client();
    for (target, base) in b.targets() {
        for (what, path, token, in_query, want) in &cases {
            let mut req = c.get(format!("{base}{path}"));
            match token {
                Some(t) if *in_query => req = req.query(&[("jwt", t)]),
                Some(t) => req = req.bearer_auth(t),
                None => {}
            }
            let (status, _) = send(req).await;
            assert_eq!(status, *want, "{target}: {what}");
        }
    }
    // The anonymous instance is enforced by gantry-proxy only.
    let (status, _) = send(c.get(format!("{}/anon", b.proxy.proxy_url()))).await;
    assert_eq!(status, 200);
    assert_eq!(b.unenforced().await, (json!(["jwt"]), json!([])));
    let rev = cp.delete(&format!("/plugins/{anon_id}")).await.committed();
    b.synced(rev).await;
    assert_eq!(b.unenforced().await, (json!([]), json!([])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_enforces_rate_limiting_like_gantry_proxy() {
    let b = Bench::start("rl", &["by-service", "by-ip", "two-windows"]).await;
    let cp = &b.cp;
    cp.post(
        "/routes/by-service/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 3, "limit_by": "service"}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/by-ip/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 2, "limit_by": "ip"}}),
    )
    .await
    .expect(201);
    // Two windows at once: one token bucket cannot say it.
    let two = cp
        .post(
            "/routes/two-windows/plugins",
            json!({"name": "rate-limiting", "config": {"second": 5, "minute": 10}}),
        )
        .await;
    let two_id = two.body["id"].as_str().unwrap().to_string();
    b.synced(two.committed()).await;
    assert_eq!(b.unenforced().await, (json!(["rate-limiting"]), json!([])));

    let c = client();
    for (target, base) in b.targets() {
        for (path, limit) in [("/by-service", 3), ("/by-ip", 2)] {
            for i in 1..=limit {
                let (status, _) = send(c.get(format!("{base}{path}"))).await;
                assert_eq!(status, 200, "{target} {path}: request {i} of {limit}");
            }
            let (status, headers) = send(c.get(format!("{base}{path}"))).await;
            assert_eq!(status, 429, "{target} {path}: one past the limit");
            let retry: u64 = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{target} {path}: Retry-After in {headers:?}"));
            // Envoy: until its next token; gantry-proxy's sliding window
            // can make it longer than the window.
            assert!((1..=120).contains(&retry), "{target} {path}: {retry}");
        }
    }
    // A new revision (the two-window instance goes): gantry-proxy's
    // counters outlive it. Difference: Envoy rebuilds every route's bucket
    // with the new route configuration, full again.
    let rev = cp.delete(&format!("/plugins/{two_id}")).await.committed();
    b.synced(rev).await;
    assert_eq!(b.unenforced().await, (json!([]), json!([])));
    for (target, base, want) in [
        ("envoy", b.envoy.proxy_url(), 200),
        ("gantry-proxy", b.proxy.proxy_url(), 429),
    ] {
        for path in ["/by-service", "/by-ip"] {
            let (status, _) = send(c.get(format!("{base}{path}"))).await;
            assert_eq!(status, want, "{target} {path} after a config change");
        }
    }
}

/// The JSON the echo upstream answers with, and the response's headers.
async fn echo(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_applies_header_transforms_like_gantry_proxy() {
    let b = Bench::start("hdr", &["hdr", "body"]).await;
    let cp = &b.cp;
    cp.post(
        "/routes/hdr/plugins",
        json!({"name": "request-transformer", "config": {
            "remove": {"headers": ["X-Drop"]},
            "replace": {"headers": ["X-Swap:replaced", "X-Absent:never"]},
            "add": {"headers": ["X-Added:1", "X-Kept:ignored"]},
            "append": {"headers": ["X-Multi:b"]}}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/hdr/plugins",
        json!({"name": "response-transformer", "config": {
            "add": {"headers": ["X-Resp:yes"]}, "append": {"headers": ["X-Resp-Multi:one"]}}}),
    )
    .await
    .expect(201);
    // A body change: Envoy's header mutations cannot say it.
    let rev = cp
        .post(
            "/routes/body/plugins",
            json!({"name": "request-transformer", "config": {"add": {"body": ["k:v"]}}}),
        )
        .await
        .committed();
    b.synced(rev).await;
    assert_eq!(
        b.unenforced().await,
        (json!(["request-transformer"]), json!([]))
    );

    let c = client();
    let mut seen = Vec::new();
    for (target, base) in b.targets() {
        let (status, headers, body) = echo(
            c.get(format!("{base}/hdr"))
                .header("x-drop", "gone")
                .header("x-swap", "original")
                .header("x-kept", "client")
                .header("x-multi", "a"),
        )
        .await;
        assert_eq!(status, 200, "{target}");
        let h = &body["headers"];
        assert_eq!(h["x-drop"], Value::Null, "{target}: removed");
        assert_eq!(h["x-swap"], "replaced", "{target}: replaced");
        assert_eq!(h["x-absent"], Value::Null, "{target}: replace adds nothing");
        assert_eq!(h["x-added"], "1", "{target}: added");
        assert_eq!(h["x-kept"], "client", "{target}: add keeps the client's");
        assert_eq!(
            headers.get("x-resp").and_then(|v| v.to_str().ok()),
            Some("yes"),
            "{target}: response header added"
        );
        assert!(headers.contains_key("x-resp-multi"), "{target}");
        seen.push((
            h["x-multi"].clone(),
            headers.get_all("x-resp-multi").iter().count(),
        ));
    }
    assert_eq!(seen[0], seen[1], "append: Envoy and gantry-proxy agree");
}

const TLS_CERT: &str = include_str!("../fixtures/tls/secure.example.com.rsa.crt");
const TLS_KEY: &str = include_str!("../fixtures/tls/secure.example.com.rsa.key");

/// The `@type`s of Envoy's own filters that hold a credential because
/// enforcing it needs it (api_key_auth's keys, jwt_authn's HMAC secrets).
const ENVOY_CREDENTIAL_HOLDERS: &[&str] = &[
    "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
    "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuthPerRoute",
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
];

// What Envoy 1.40 shows (printed by the test below): api_key_auth's keys
// and client names as "[redacted]", SDS private keys redacted, but
// jwt_authn's `local_jwks` in full, so an HS256 credential's secret is in
// Envoy's /config_dump as a JWK (base64url). Envoy's admin endpoint must be
// kept as private as the secrets (docs/security.md).

/// `v` without the objects whose `@type` is one of `types`.
fn without_types(v: &Value, types: &[&str]) -> Value {
    match v {
        Value::Object(m) => {
            if m.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| types.contains(&t))
            {
                return json!("[credential holder]");
            }
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), without_types(v, types)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| without_types(v, types)).collect()),
        _ => v.clone(),
    }
}

/// Envoy's own `GET /config_dump` renders everything gantry-cp serves an
/// Envoy node, routes with plugins included (their per-route config is a
/// TypedStruct, a type Envoy knows), and shows no secret of the config but
/// where Envoy's own filters hold the credentials they check. gantry-proxy,
/// fed the same route configurations, enforces the same plugins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_own_config_dump_renders_routes_with_plugins() {
    let b = Bench::start("dump", &["ka", "rl", "rt", "jw"]).await;
    let cp = &b.cp;
    let api_key = "alice-api-key-0f3c9a77";
    let jwt_secret = "alice-jwt-hmac-secret-5be1d0c4e2a9";
    let redis_password = "redis-password-7d2e61";
    cp.post(
        "/certificates",
        json!({"cert": TLS_CERT, "key": TLS_KEY, "snis": ["secure.example.com"]}),
    )
    .await
    .expect(201);
    cp.post("/consumers", json!({"username": "alice"}))
        .await
        .expect(201);
    cp.post("/consumers/alice/key-auth", json!({"key": api_key}))
        .await
        .expect(201);
    cp.post(
        "/consumers/alice/jwt",
        json!({"key": "alice-iss", "algorithm": "HS256", "secret": jwt_secret}),
    )
    .await
    .expect(201);
    cp.post("/routes/ka/plugins", json!({"name": "key-auth"}))
        .await
        .expect(201);
    cp.post(
        "/routes/rl/plugins",
        json!({"name": "rate-limiting",
               "config": {"minute": 100, "policy": "local", "redis": {"password": redis_password}}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/rt/plugins",
        json!({"name": "request-transformer", "config": {"add": {"headers": ["x-added:yes"]}}}),
    )
    .await
    .expect(201);
    let rev = cp
        .post(
            "/routes/jw/plugins",
            json!({"name": "jwt", "config": {"claims_to_verify": ["exp"]}}),
        )
        .await
        .committed();
    b.synced(rev).await;

    // Both flavours enforce key-auth from the same route configuration.
    for (who, url) in b.targets() {
        let (s, _) = send(client().get(format!("{url}/ka"))).await;
        assert_eq!(s, 401, "{who}: no key");
        let (s, _) = send(client().get(format!("{url}/ka")).header("apikey", api_key)).await;
        assert_eq!(s, 200, "{who}: alice's key");
    }

    let r = b
        .envoy
        .client
        .get(format!("{}/config_dump", b.envoy.admin))
        .send()
        .await
        .expect("config_dump");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    assert_eq!(status, 200, "Envoy's /config_dump: {text}");
    // Envoy answers 200 either way; what it cannot render is a text error.
    let dump: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "Envoy's /config_dump is not JSON ({e}): {}",
            text.chars().take(400).collect::<String>()
        )
    });
    let routes = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.RoutesConfigDump")
        .expect("routes in the dump");
    let http = routes["dynamic_route_configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|rc| rc["route_config"]["name"] == "http")
        .expect("the http route configuration");
    let route = |name: &str| {
        http["route_config"]["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|vh| vh["routes"].as_array().into_iter().flatten())
            .find(|r| {
                r["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{name}#")))
            })
            .cloned()
            .unwrap_or_else(|| panic!("route {name} in the dump: {http}"))
    };
    for name in ["ka", "rl", "rt", "jw"] {
        let per = &route(name)["typed_per_filter_config"]["gantry.filters.http.plugins"];
        assert_eq!(per["is_optional"], true, "{name}: {per}");
        assert_eq!(
            per["config"]["@type"], "type.googleapis.com/xds.type.v3.TypedStruct",
            "{name}: {per}"
        );
        assert_eq!(
            per["config"]["type_url"],
            "type.googleapis.com/gantry.filters.http.plugins.v1.PerRoute"
        );
        assert!(
            per["config"]["value"]["routeId"].is_string(),
            "{name}: {per}"
        );
    }
    assert_eq!(
        route("ka")["typed_per_filter_config"]["gantry.filters.http.plugins"]["config"]["value"]["names"],
        json!(["key-auth"])
    );

    // What Envoy shows of each secret, for the record.
    let key_body: String = TLS_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .take(2)
        .collect();
    // jwt_authn holds an HMAC secret as a JWK: base64url.
    let jwt_jwk = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jwt_secret)
    };
    for (what, secret) in [
        ("api key", api_key),
        ("jwt secret", jwt_secret),
        ("jwt secret as a JWK", jwt_jwk.as_str()),
        ("redis password", redis_password),
        ("TLS private key", key_body.as_str()),
    ] {
        eprintln!(
            "Envoy's /config_dump shows the {what}: {}",
            text.contains(secret)
        );
    }
    fn holders<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Object(m) => {
                if m.get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| ENVOY_CREDENTIAL_HOLDERS.contains(&t))
                {
                    out.push(v);
                }
                m.values().for_each(|v| holders(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| holders(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    holders(&dump, &mut found);
    for h in found {
        eprintln!("Envoy's own credential holder in /config_dump: {h}");
    }
    assert!(!text.contains(&key_body), "Envoy redacts private keys");
    assert!(
        !text.contains(api_key),
        "Envoy redacts api_key_auth's credentials"
    );
    assert!(
        !text.contains(redis_password),
        "plugin secrets never reach Envoy"
    );
    let outside = without_types(&dump, ENVOY_CREDENTIAL_HOLDERS).to_string();
    for secret in [api_key, jwt_secret, jwt_jwk.as_str()] {
        assert!(
            !outside.contains(secret),
            "a credential outside Envoy's own filters that check it"
        );
    }
}
