//! Kong's plugins end to end: a real `gantry-cp` configured through its
//! admin API, a real `gantry-proxy` (three for the shared Redis limit),
//! real upstreams and the machine's real Redis.
//!
//! 1. `key_auth_acl_and_consumer_headers`: key-auth's success and refusal
//!    paths (Kong's statuses, messages and `WWW-Authenticate`), hidden
//!    credentials, anonymous consumers, the identity headers the upstream
//!    gets (client-sent copies replaced), ACL allow and deny, a
//!    consumer-scoped plugin replacing the route's, bad configs refused
//!    with nothing stored, and keys never in the proxy's log.
//! 2. `rate_limiting_counts_exactly`: a fixed and a sliding window at
//!    their limits, Kong's headers on every answer, 429 with Retry-After,
//!    the count starting again past the boundary.
//! 3. `redis_limit_holds_across_three_proxies`: one limit shared through
//!    Redis by three proxies under concurrent load; a Redis that cannot be
//!    reached with `fault_tolerant` true (requests pass) and false (500).
//!    `redis_sync_rate_counts_locally_and_reconciles`: `sync_rate` keeps
//!    counts in each proxy and reconciles them through Redis; a Redis
//!    that stops and comes back loses nothing counted meanwhile.
//! 4. `transformers`: request-transformer (headers, query, JSON and form
//!    bodies, method, path, Host; bodies past the buffer refused) and
//!    response-transformer (headers, typed JSON fields, Content-Length).
//!
//! Run: `cargo build --workspace --bins && cargo nextest run -p gantry-e2e --test plugins`.

use gantry_e2e::{
    Cp, Proxy, Upstream, clear_of_minute_boundary, eventually, http_client as client, now_s,
    rsa_pair, secs_into_minute, send_json, sign,
};
use serde_json::{Value, json};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(15);

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A header the upstream received, from the echo body.
    fn upstream_header(&self, name: &str) -> Option<&str> {
        self.body["headers"][name].as_str()
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.expect("body");
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Waits until a request through `proxy` answers `status`.
async fn until_status(proxy: &Proxy, path: &str, status: u16) {
    let c = client();
    let url = format!("{}{path}", proxy.proxy_url());
    eventually(
        &format!("GET {url} -> {status}"),
        CONVERGE,
        Duration::from_millis(20),
        || {
            let req = c.get(&url);
            async move {
                match send_json(req).await {
                    Ok((s, _)) if s == status => Ok(()),
                    Ok((s, b)) => Err(format!("{s} {b}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_acl_and_consumer_headers() {
    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, "gantry-auth").await;
    let c = client();
    let base = proxy.proxy_url();

    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    for (name, path) in [
        ("open", "/open"),
        ("ka", "/ka"),
        ("acl", "/acl"),
        ("anon", "/anon"),
        ("deny", "/deny"),
    ] {
        cp.post(
            "/services/svc/routes",
            json!({"name": name, "paths": [path]}),
        )
        .await
        .expect(201);
    }
    let alice = cp
        .post(
            "/consumers",
            json!({"username": "alice", "custom_id": "A-1"}),
        )
        .await
        .expect(201);
    let bob = cp
        .post("/consumers", json!({"username": "bob"}))
        .await
        .expect(201);
    cp.post("/consumers", json!({"username": "guest"}))
        .await
        .expect(201);
    let alice_cred = cp
        .post(
            "/consumers/alice/key-auth",
            json!({"key": "alice-secret-key"}),
        )
        .await
        .expect(201);
    cp.post("/consumers/bob/key-auth", json!({"key": "bob-secret-key"}))
        .await
        .expect(201);
    cp.post("/consumers/alice/acls", json!({"group": "gold"}))
        .await
        .expect(201);
    cp.post("/consumers/alice/acls", json!({"group": "admins"}))
        .await
        .expect(201);
    cp.post("/consumers/bob/acls", json!({"group": "banned"}))
        .await
        .expect(201);

    // Bad configs are refused with the field and the reason; nothing is stored.
    let before = cp.get("/plugins").await.expect(200)["data"]
        .as_array()
        .unwrap()
        .len();
    let bad = cp
        .post(
            "/routes/ka/plugins",
            json!({"name": "key-auth", "config": {"key_names": ["not ok"]}}),
        )
        .await
        .expect(400);
    assert_eq!(bad["name"], "schema violation", "{bad}");
    assert!(
        bad["fields"]["config"]["key_names"]
            .to_string()
            .contains("bad header name"),
        "{bad}"
    );
    let bad = cp
        .post(
            "/routes/acl/plugins",
            json!({"name": "acl", "config": {"allow": ["a"], "deny": ["b"]}}),
        )
        .await
        .expect(400);
    assert!(bad.to_string().contains("exactly one of"), "{bad}");
    let bad = cp
        .post(
            "/routes/ka/plugins",
            json!({"name": "rate-limiting", "config": {"limit_by": "ip"}}),
        )
        .await
        .expect(400);
    assert!(bad.to_string().contains("at least one of"), "{bad}");
    assert_eq!(
        cp.get("/plugins").await.expect(200)["data"]
            .as_array()
            .unwrap()
            .len(),
        before
    );

    cp.post(
        "/routes/ka/plugins",
        json!({"name": "key-auth", "config": {"hide_credentials": true}}),
    )
    .await
    .expect(201);
    cp.post("/routes/acl/plugins", json!({"name": "key-auth"}))
        .await
        .expect(201);
    cp.post(
        "/routes/acl/plugins",
        json!({"name": "acl", "config": {"allow": ["gold"]}}),
    )
    .await
    .expect(201);
    cp.post("/routes/deny/plugins", json!({"name": "key-auth"}))
        .await
        .expect(201);
    cp.post(
        "/routes/deny/plugins",
        json!({"name": "acl", "config": {"deny": ["banned"], "hide_groups_header": true}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/anon/plugins",
        json!({"name": "key-auth", "config": {"anonymous": "guest"}}),
    )
    .await
    .expect(201);
    // A route-wide limit, and a tighter one for alice on the same route:
    // the consumer-scoped instance replaces the route's for her.
    cp.post(
        "/routes/ka/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 1000}}),
    )
    .await
    .expect(201);
    let rev = cp
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "route": {"id": cp.get("/routes/ka").await.expect(200)["id"]},
                   "consumer": {"id": alice["id"]}, "config": {"minute": 7}}),
        )
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    until_status(&proxy, "/ka", 401).await;

    // No key: 401, Kong's message and challenge; the upstream sees nothing.
    let seen = up.requests();
    let a = send(c.get(format!("{base}/ka"))).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body, json!({"message": "No API key found in request"}));
    assert_eq!(a.header("www-authenticate"), Some("Key realm=\"kong\""));
    assert_eq!(
        a.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    // A wrong key, and two keys.
    let a = send(c.get(format!("{base}/ka")).header("apikey", "nope")).await;
    assert_eq!(
        (a.status, &a.body),
        (
            401,
            &json!({"message": "Invalid authentication credentials"})
        )
    );
    let a = send(c.get(format!("{base}/ka?apikey=x&apikey=y"))).await;
    assert_eq!(
        (a.status, &a.body),
        (401, &json!({"message": "Duplicate API key found"}))
    );
    assert_eq!(up.requests(), seen, "refused requests reached the upstream");

    // The right key: the upstream learns who, never the key, and cannot be
    // told otherwise by the client.
    let a = send(
        c.get(format!("{base}/ka?x=1&apikey=alice-secret-key&y=2"))
            .header("x-consumer-username", "mallory")
            .header("x-consumer-id", "forged")
            .header("x-anonymous-consumer", "true"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // strip_path took `/ka`; hide_credentials took the key.
    assert_eq!(a.body["path"], "/?x=1&y=2");
    assert_eq!(a.upstream_header("x-consumer-id"), alice["id"].as_str());
    assert_eq!(a.upstream_header("x-consumer-username"), Some("alice"));
    assert_eq!(a.upstream_header("x-consumer-custom-id"), Some("A-1"));
    assert_eq!(
        a.upstream_header("x-credential-identifier"),
        alice_cred["id"].as_str()
    );
    assert_eq!(a.upstream_header("x-anonymous-consumer"), None);
    let a = send(
        c.get(format!("{base}/ka"))
            .header("apikey", "bob-secret-key"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream_header("apikey"), None, "hide_credentials");
    assert_eq!(a.upstream_header("x-consumer-id"), bob["id"].as_str());
    assert_eq!(a.upstream_header("x-consumer-custom-id"), None);

    // Consumer-scoped rate limit replaces the route's for alice only.
    let a = send(
        c.get(format!("{base}/ka"))
            .header("apikey", "alice-secret-key"),
    )
    .await;
    assert_eq!(a.header("x-ratelimit-limit-minute"), Some("7"));
    let a = send(
        c.get(format!("{base}/ka"))
            .header("apikey", "bob-secret-key"),
    )
    .await;
    assert_eq!(a.header("x-ratelimit-limit-minute"), Some("1000"));

    // ACL allow: alice is gold, bob is not.
    let a = send(
        c.get(format!("{base}/acl"))
            .header("apikey", "alice-secret-key"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream_header("x-consumer-groups"), Some("admins, gold"));
    assert_eq!(
        a.upstream_header("apikey"),
        Some("alice-secret-key"),
        "kept without hide_credentials"
    );
    let a = send(
        c.get(format!("{base}/acl"))
            .header("apikey", "bob-secret-key"),
    )
    .await;
    assert_eq!(
        (a.status, &a.body),
        (403, &json!({"message": "You cannot consume this service"}))
    );
    let a = send(c.get(format!("{base}/acl"))).await;
    assert_eq!(a.status, 401);
    // ACL deny: bob is banned; alice passes, her groups header hidden.
    let a = send(
        c.get(format!("{base}/deny"))
            .header("apikey", "bob-secret-key"),
    )
    .await;
    assert_eq!(a.status, 403);
    let a = send(
        c.get(format!("{base}/deny"))
            .header("apikey", "alice-secret-key")
            .header("x-consumer-groups", "forged"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream_header("x-consumer-groups"), None);

    // Anonymous: no key gets the guest consumer, marked as such; a wrong
    // key too (Kong); a right key is still the real consumer.
    let a = send(c.get(format!("{base}/anon"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream_header("x-consumer-username"), Some("guest"));
    assert_eq!(a.upstream_header("x-anonymous-consumer"), Some("true"));
    assert_eq!(a.upstream_header("x-credential-identifier"), None);
    let a = send(
        c.get(format!("{base}/anon"))
            .header("apikey", "alice-secret-key"),
    )
    .await;
    assert_eq!(a.upstream_header("x-consumer-username"), Some("alice"));
    assert_eq!(a.upstream_header("x-anonymous-consumer"), None);

    // A route without plugins is untouched, forged headers and all.
    let a = send(
        c.get(format!("{base}/open"))
            .header("x-consumer-id", "whatever"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream_header("x-consumer-id"), Some("whatever"));

    // Deleting the credential takes effect: bob's key stops working.
    let creds = cp.get("/consumers/bob/key-auth").await.expect(200);
    let id = creds["data"][0]["id"].as_str().unwrap().to_string();
    let rev = cp
        .delete(&format!("/consumers/bob/key-auth/{id}"))
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let a = send(
        c.get(format!("{base}/ka"))
            .header("apikey", "bob-secret-key"),
    )
    .await;
    assert_eq!(a.status, 401);

    // Keys never reach the logs, or the admin API's reads.
    let log = proxy.log() + &cp.log();
    for key in ["alice-secret-key", "bob-secret-key"] {
        assert!(!log.contains(key), "a key is in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_counts_exactly() {
    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, "gantry-rl").await;
    let c = client();
    let base = proxy.proxy_url();
    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    cp.post(
        "/services/svc/routes",
        json!({"name": "fixed", "paths": ["/fixed"]}),
    )
    .await
    .expect(201);
    cp.post(
        "/services/svc/routes",
        json!({"name": "second", "paths": ["/second"]}),
    )
    .await
    .expect(201);
    cp.post(
        "/services/svc/routes",
        json!({"name": "hidden", "paths": ["/hidden"]}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/fixed/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 3, "hour": 100, "limit_by": "ip", "window_type": "fixed"}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/second/plugins",
        json!({"name": "rate-limiting", "config": {"second": 2, "limit_by": "ip",
               "error_code": 503, "error_message": "slow down"}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/hidden/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 1, "hide_client_headers": true}}),
    )
    .await
    .expect(201);
    // Limits at two scopes: three an hour for the whole service, ten a
    // minute per client on one of its routes. Both apply.
    cp.post("/services", json!({"name": "metered", "url": up.url()}))
        .await
        .expect(201);
    for r in ["stacked", "sibling"] {
        cp.post(
            "/services/metered/routes",
            json!({"name": r, "paths": [format!("/{r}")]}),
        )
        .await
        .expect(201);
    }
    cp.post(
        "/services/metered/plugins",
        json!({"name": "rate-limiting", "config": {"hour": 3, "limit_by": "service", "window_type": "fixed"}}),
    )
    .await
    .expect(201);
    let rev = cp
        .post(
            "/routes/stacked/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 10, "limit_by": "ip", "window_type": "fixed"}}),
        )
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;

    // Stacked: each answer shows the tighter remaining per window; the
    // service's hour binds after three, and the refused request is not
    // counted by the route's minute either.
    clear_of_minute_boundary(10.0).await;
    for n in 1..=3u64 {
        let a = send(c.get(format!("{base}/stacked"))).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-ratelimit-limit-hour"), Some("3"));
        assert_eq!(
            a.header("x-ratelimit-remaining-hour"),
            Some((3 - n).to_string().as_str())
        );
        assert_eq!(a.header("x-ratelimit-limit-minute"), Some("10"));
        assert_eq!(
            a.header("x-ratelimit-remaining-minute"),
            Some((10 - n).to_string().as_str())
        );
    }
    for _ in 0..2 {
        let a = send(c.get(format!("{base}/stacked"))).await;
        assert_eq!(a.status, 429);
        assert_eq!(a.header("x-ratelimit-remaining-hour"), Some("0"));
        assert_eq!(a.header("x-ratelimit-remaining-minute"), Some("7"));
        assert!(a.header("retry-after").is_some());
    }
    // The service-wide limit holds on its other route too.
    let a = send(c.get(format!("{base}/sibling"))).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.header("x-ratelimit-limit-minute"), None);

    // Three per minute: remaining 2, 1, 0, then 429 until the minute ends.
    clear_of_minute_boundary(10.0).await;
    let seen = up.requests();
    for remaining in [2, 1, 0] {
        let a = send(c.get(format!("{base}/fixed"))).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-ratelimit-limit-minute"), Some("3"));
        assert_eq!(
            a.header("x-ratelimit-remaining-minute"),
            Some(remaining.to_string().as_str())
        );
        assert_eq!(a.header("x-ratelimit-limit-hour"), Some("100"));
        assert_eq!(
            a.header("x-ratelimit-remaining-hour"),
            Some((99 - (2 - remaining)).to_string().as_str())
        );
        // The binding window is the minute.
        assert_eq!(a.header("ratelimit-limit"), Some("3"));
        assert_eq!(
            a.header("ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
    }
    let a = send(c.get(format!("{base}/fixed"))).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body, json!({"message": "API rate limit exceeded"}));
    assert_eq!(a.header("x-ratelimit-remaining-minute"), Some("0"));
    let left = 60.0 - secs_into_minute();
    let retry: f64 = a
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(
        (retry - left).abs() <= 1.5,
        "Retry-After {retry}, {left} s left in the minute"
    );
    assert_eq!(a.header("ratelimit-reset"), a.header("retry-after"));
    assert_eq!(
        up.requests(),
        seen + 3,
        "a refused request reached the upstream"
    );
    // A refused request is not counted: the hour still says 97 left.
    let a = send(c.get(format!("{base}/fixed"))).await;
    assert_eq!(a.header("x-ratelimit-remaining-hour"), Some("97"));

    // Per second (sliding): exactly two in a second, the third refused
    // with the configured status and message; a fresh second admits again
    // once the previous second's weight has fallen.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let frac = now.as_secs_f64().fract();
    if frac > 0.5 {
        tokio::time::sleep(Duration::from_secs_f64(1.02 - frac)).await;
    }
    let second_of = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let first = second_of();
    assert_eq!(send(c.get(format!("{base}/second"))).await.status, 200);
    assert_eq!(send(c.get(format!("{base}/second"))).await.status, 200);
    let a = send(c.get(format!("{base}/second"))).await;
    let crossed = second_of() != first;
    assert_eq!((a.status, &a.body), (503, &json!({"message": "slow down"})));
    // Sliding: 2 in this second weigh more than 1 until half-way into
    // the next, 1 to 1.5 s away (rounded up). On a loaded machine the
    // third request can land in the next second, 0.5 to 1 s away.
    let retry = a.header("retry-after");
    if crossed {
        assert!(matches!(retry, Some("1" | "2")), "{retry:?}");
    } else {
        assert_eq!(retry, Some("2"));
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(send(c.get(format!("{base}/second"))).await.status, 200);

    // hide_client_headers: no counters shown, but Retry-After on the 429.
    clear_of_minute_boundary(5.0).await;
    let a = send(c.get(format!("{base}/hidden"))).await;
    assert_eq!(a.status, 200);
    assert!(
        a.headers.keys().all(|k| !k.as_str().contains("ratelimit")),
        "{:?}",
        a.headers
    );
    let a = send(c.get(format!("{base}/hidden"))).await;
    assert_eq!(a.status, 429);
    assert!(a.header("retry-after").is_some());
    assert!(
        a.headers.keys().all(|k| !k.as_str().contains("ratelimit")),
        "{:?}",
        a.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_limit_holds_across_three_proxies() {
    gantry_e2e::require_redis().await;
    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let p1 = Proxy::start(&cp, "gantry-redis-1").await;
    let p2 = Proxy::start(&cp, "gantry-redis-2").await;
    let p3 = Proxy::start(&cp, "gantry-redis-3").await;
    // A port nothing listens on: a Redis that is down.
    let dead = gantry_e2e::reserve_port();
    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    for r in ["shared", "tolerant", "strict"] {
        cp.post(
            "/services/svc/routes",
            json!({"name": r, "paths": [format!("/{r}")]}),
        )
        .await
        .expect(201);
    }
    let addr = gantry_e2e::redis_addr();
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let port: u16 = port.parse().expect("redis port");
    let redis = |port: u16| json!({"host": host, "port": port, "timeout": 500});
    cp.post(
        "/routes/shared/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 20, "policy": "redis",
               "limit_by": "service", "redis": redis(port)}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/tolerant/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "redis",
               "fault_tolerant": true, "redis": redis(dead.port)}}),
    )
    .await
    .expect(201);
    let rev = cp
        .post(
            "/routes/strict/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "redis",
                   "fault_tolerant": false, "redis": redis(dead.port)}}),
        )
        .await
        .committed();
    for p in [&p1, &p2, &p3] {
        cp.wait_synced(&p.node_id, rev, CONVERGE).await;
    }

    // 60 requests at once, spread over three proxies: exactly 20 pass.
    clear_of_minute_boundary(15.0).await;
    let c = client();
    let seen = up.requests();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let url = format!("{}/shared", [&p1, &p2, &p3][i % 3].proxy_url());
        let c = c.clone();
        tasks.push(tokio::spawn(async move { send(c.get(url)).await.status }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (20, 40), "the shared limit admitted {ok}");
    assert_eq!(up.requests(), seen + 20);
    // Every proxy now refuses, whichever served the earlier ones.
    for p in [&p1, &p2, &p3] {
        let a = send(c.get(format!("{}/shared", p.proxy_url()))).await;
        assert_eq!(a.status, 429);
        assert_eq!(a.header("x-ratelimit-remaining-minute"), Some("0"));
    }

    // Redis unreachable: fault_tolerant lets requests through, without
    // counters; otherwise Kong's 500.
    let a = send(c.get(format!("{}/tolerant", p1.proxy_url()))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-ratelimit-limit-minute"), None);
    let a = send(c.get(format!("{}/strict", p2.proxy_url()))).await;
    assert_eq!(
        (a.status, &a.body),
        (500, &json!({"message": "An unexpected error occurred"}))
    );
    drop(dead);
}

/// A Redis of the test's own, on a free port, that it can stop and start.
struct OwnRedis {
    port: u16,
    dir: gantry_e2e::TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let port = gantry_e2e::free_port();
        let mut r = OwnRedis {
            port,
            dir: gantry_e2e::TempDir::new("gantry-e2e-redis"),
            child: None,
        };
        r.up().await;
        r
    }

    async fn up(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/services.sh)");
        self.child = Some(child);
        eventually("redis up", CONVERGE, Duration::from_millis(50), || async {
            self.command(&["PING"])
                .await
                .and_then(|r| r.text())
                .filter(|o| o == "PONG")
                .ok_or_else(|| "no PONG".to_string())
        })
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn command(&self, args: &[&str]) -> Option<gantry_e2e::Resp> {
        gantry_e2e::redis_command(&format!("127.0.0.1:{}", self.port), args)
            .await
            .ok()
    }

    /// The sum of every rate-limit counter for the current hour.
    async fn hour_total(&self) -> u64 {
        let now = now_s() as u64;
        let pattern = format!("gantry:rl:*:hour:{}", now - now % 3600);
        let Some(gantry_e2e::Resp::Array(Some(keys))) = self.command(&["KEYS", &pattern]).await
        else {
            return 0;
        };
        let mut total = 0;
        for k in keys.iter().filter_map(gantry_e2e::Resp::text) {
            total += self
                .command(&["GET", &k])
                .await
                .and_then(|v| v.text()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
        total
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sync_rate_counts_locally_and_reconciles() {
    let mut redis = OwnRedis::start().await;
    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let p1 = Proxy::start(&cp, "gantry-sync-1").await;
    let p2 = Proxy::start(&cp, "gantry-sync-2").await;
    let p3 = Proxy::start(&cp, "gantry-sync-3").await;
    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    for r in ["synced", "outage"] {
        cp.post(
            "/services/svc/routes",
            json!({"name": r, "paths": [format!("/{r}")]}),
        )
        .await
        .expect(201);
    }
    let conf = |hour: u64| {
        json!({"name": "rate-limiting", "config": {"hour": hour, "policy": "redis",
               "limit_by": "service", "sync_rate": 0.2,
               "redis": {"host": "127.0.0.1", "port": redis.port, "timeout": 300}}})
    };
    cp.post("/routes/synced/plugins", conf(30))
        .await
        .expect(201);
    let rev = cp.post("/routes/outage/plugins", conf(5)).await.committed();
    for p in [&p1, &p2, &p3] {
        cp.wait_synced(&p.node_id, rev, CONVERGE).await;
    }
    let c = client();
    let status = |p: &Proxy, path: &str| {
        let url = format!("{}{path}", p.proxy_url());
        let c = c.clone();
        async move { send(c.get(url)).await }
    };

    // Ten through the first proxy; they reach Redis within an interval.
    for n in 1..=10u64 {
        let a = status(&p1, "/synced").await;
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("x-ratelimit-remaining-hour"),
            Some((30 - n).to_string().as_str())
        );
    }
    eventually(
        "p1's count in Redis",
        CONVERGE,
        Duration::from_millis(50),
        || async {
            {
                let t = redis.hour_total().await;
                (t == 10).then_some(()).ok_or(format!("{t} counted"))
            }
        },
    )
    .await;
    // The second proxy starts from Redis's 10: 20 more pass, then 429.
    let mut ok = 0;
    for _ in 0..25 {
        match status(&p2, "/synced").await.status {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 20, "the second proxy admitted {ok}");
    eventually(
        "all 30 in Redis",
        CONVERGE,
        Duration::from_millis(50),
        || async {
            {
                let t = redis.hour_total().await;
                (t == 30).then_some(()).ok_or(format!("{t} counted"))
            }
        },
    )
    .await;
    // The third has seen nothing itself, and the first has been idle for
    // longer than two intervals: both read the totals before judging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in [&p3, &p1] {
        let a = status(p, "/synced").await;
        assert_eq!(a.status, 429, "{}", p.node_id);
        assert_eq!(a.header("x-ratelimit-remaining-hour"), Some("0"));
    }
    assert_eq!(
        redis.hour_total().await,
        30,
        "refused requests were counted"
    );

    // Redis stopped: each proxy keeps counting on its own (the first
    // request, which could not read Redis, passes: fault_tolerant), so
    // the limit still holds per proxy; once Redis is back, the counts
    // reach it.
    redis.stop();
    let mut ok = 0;
    for _ in 0..8 {
        if status(&p1, "/outage").await.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 5, "the local view admitted {ok} of a limit of 5");
    redis.up().await;
    eventually(
        "the outage's counts in Redis",
        CONVERGE,
        Duration::from_millis(100),
        || async {
            {
                let t = redis.hour_total().await;
                (t == 5).then_some(()).ok_or(format!("{t} counted"))
            }
        },
    )
    .await;
}

/// A token with `{"alg": "none"}` and no signature.
fn unsigned(claims: &Value) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        e.encode(br#"{"alg":"none","typ":"JWT"}"#),
        e.encode(claims.to_string())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_verifies_like_kong() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let dir = gantry_e2e::TempDir::new("gantry-e2e-jwt");
    let (carol_private, carol_public) = rsa_pair(dir.path(), "carol");
    let (forger_private, _) = rsa_pair(dir.path(), "forger");
    let carol_key = EncodingKey::from_rsa_pem(carol_private.as_bytes()).unwrap();
    let forger_key = EncodingKey::from_rsa_pem(forger_private.as_bytes()).unwrap();
    let dave_key = EncodingKey::from_secret(b"dave-hmac-secret-0123456789abcdef");
    let provider_secret = b"provider-secret-0123456789abcdef";
    let provider_key = EncodingKey::from_secret(provider_secret);

    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, "gantry-jwt").await;
    let c = client();
    let base = proxy.proxy_url();
    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    for r in ["jwt", "short", "issuer"] {
        cp.post(
            "/services/svc/routes",
            json!({"name": r, "paths": [format!("/{r}")]}),
        )
        .await
        .expect(201);
    }
    cp.post("/consumers", json!({"username": "carol"}))
        .await
        .expect(201);
    cp.post("/consumers", json!({"username": "dave"}))
        .await
        .expect(201);
    cp.post(
        "/consumers/carol/jwt",
        json!({"key": "carol-iss", "algorithm": "RS256", "rsa_public_key": carol_public}),
    )
    .await
    .expect(201);
    let dave_cred = cp
        .post(
            "/consumers/dave/jwt",
            json!({"key": "dave-iss", "algorithm": "HS256", "secret": "dave-hmac-secret-0123456789abcdef"}),
        )
        .await
        .expect(201);
    // Reads never show the secret.
    let read = cp
        .get(&format!(
            "/consumers/dave/jwt/{}",
            dave_cred["id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert_ne!(
        read["secret"], "dave-hmac-secret-0123456789abcdef",
        "{read}"
    );
    cp.post(
        "/routes/jwt/plugins",
        json!({"name": "jwt", "config": {"claims_to_verify": ["exp", "nbf"],
               "claims_to_headers": [{"claim": "tenant", "header": "X-Tenant-ID"}]}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/short/plugins",
        json!({"name": "jwt", "config": {"claims_to_verify": ["exp"], "maximum_expiration": 60}}),
    )
    .await
    .expect(201);
    use base64::Engine;
    let jwks = json!({"keys": [{"kty": "oct", "alg": "HS256", "kid": "k1",
        "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(provider_secret)}]});
    let rev = cp
        .post(
            "/routes/issuer/plugins",
            json!({"name": "jwt", "config": {"providers": [{"name": "idp", "issuer": "https://idp.example",
                   "audiences": ["api"], "local_jwks": jwks.to_string()}],
                   "claims_to_headers": [{"claim": "roles", "header": "X-User-Roles"}]}}),
        )
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    until_status(&proxy, "/jwt", 401).await;

    let exp = now_s() + 3600;
    // The route verifies `nbf` too: Kong then needs one in every token.
    let nbf = now_s() - 10;
    let good = sign(
        Algorithm::RS256,
        &carol_key,
        json!({"iss": "carol-iss", "exp": exp, "nbf": nbf, "tenant": "t-42"}),
    );
    let bearer = |t: &str| format!("Bearer {t}");
    let get = |path: &str| c.get(format!("{base}{path}"));

    // No token: Kong's 401 and challenge.
    let a = send(get("/jwt")).await;
    assert_eq!(
        (a.status, &a.body),
        (401, &json!({"message": "Unauthorized"}))
    );
    assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"kong\""));

    // A good RS256 token: the consumer, the credential's key and the mapped
    // claim go upstream with the token. Twice: the second from the cache.
    for _ in 0..2 {
        let a = send(
            get("/jwt")
                .header("authorization", bearer(&good))
                .header("x-tenant-id", "forged"),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.upstream_header("x-consumer-username"), Some("carol"));
        assert_eq!(
            a.upstream_header("x-credential-identifier"),
            Some("carol-iss")
        );
        assert_eq!(a.upstream_header("x-tenant-id"), Some("t-42"));
        assert_eq!(
            a.upstream_header("authorization"),
            Some(bearer(&good).as_str())
        );
    }
    // HS256 in the query string.
    let hs = sign(
        Algorithm::HS256,
        &dave_key,
        json!({"iss": "dave-iss", "exp": exp, "nbf": nbf}),
    );
    let a = send(get(&format!("/jwt?jwt={hs}"))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("x-consumer-username"), Some("dave"));

    // Refusals, each with Kong's message.
    let refused = [
        (
            "expired",
            sign(
                Algorithm::RS256,
                &carol_key,
                json!({"iss": "carol-iss", "exp": now_s() - 10, "nbf": nbf}),
            ),
            json!({"exp": "token expired"}),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::RS256,
                &carol_key,
                json!({"iss": "carol-iss", "exp": exp, "nbf": now_s() + 600}),
            ),
            json!({"nbf": "token not valid yet"}),
        ),
        // Kong's `type(claim) ~= "number"`: a claim asked for and missing.
        (
            "no exp",
            sign(
                Algorithm::RS256,
                &carol_key,
                json!({"iss": "carol-iss", "nbf": now_s() - 10}),
            ),
            json!({"exp": "must be a number"}),
        ),
        (
            "neither exp nor nbf",
            sign(Algorithm::RS256, &carol_key, json!({"iss": "carol-iss"})),
            json!({"exp": "must be a number", "nbf": "must be a number"}),
        ),
        (
            "forged",
            sign(
                Algorithm::RS256,
                &forger_key,
                json!({"iss": "carol-iss", "exp": exp, "nbf": nbf}),
            ),
            json!({"message": "Invalid signature"}),
        ),
        (
            "alg none",
            unsigned(&json!({"iss": "carol-iss", "exp": exp, "nbf": nbf})),
            json!({"message": "Invalid algorithm"}),
        ),
        (
            "alg switched to HS256",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(carol_public.as_bytes()),
                json!({"iss": "carol-iss", "exp": exp, "nbf": nbf}),
            ),
            json!({"message": "Invalid algorithm"}),
        ),
        (
            "unknown issuer",
            sign(
                Algorithm::RS256,
                &carol_key,
                json!({"iss": "nobody", "exp": exp, "nbf": nbf}),
            ),
            json!({"message": "No credentials found for given 'iss'"}),
        ),
        (
            "no iss",
            sign(
                Algorithm::RS256,
                &carol_key,
                json!({"exp": exp, "nbf": nbf}),
            ),
            json!({"message": "No mandatory 'iss' in claims"}),
        ),
        (
            "garbage",
            "not.a.token".to_string(),
            json!({"message": "Bad token; invalid JSON"}),
        ),
    ];
    let seen = up.requests();
    for (what, token, body) in &refused {
        let a = send(get("/jwt").header("authorization", bearer(token))).await;
        assert_eq!((a.status, &a.body), (401, body), "{what}");
        assert_eq!(
            a.header("www-authenticate"),
            Some("Bearer realm=\"kong\", error=\"invalid_token\""),
            "{what}"
        );
    }
    // Two different tokens at once.
    let a = send(get(&format!("/jwt?jwt={hs}")).header("authorization", bearer(&good))).await;
    assert_eq!(
        (a.status, &a.body),
        (401, &json!({"message": "Multiple tokens provided"}))
    );
    assert_eq!(up.requests(), seen, "a refused token reached the upstream");

    // Two Authorization headers: Kong reads the first (`get_headers()[1]`).
    let a = send(
        get("/jwt")
            .header("authorization", bearer(&good))
            .header("authorization", "Bearer not.a.token"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = send(
        get("/jwt")
            .header("authorization", "Bearer not.a.token")
            .header("authorization", bearer(&good)),
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);

    // maximum_expiration: an hour is too long for 60 s; 30 s is fine.
    let a = send(get("/short").header("authorization", bearer(&good))).await;
    assert_eq!(
        (a.status, &a.body),
        (401, &json!({"exp": "exceeds maximum allowed expiration"}))
    );
    let brief = sign(
        Algorithm::RS256,
        &carol_key,
        json!({"iss": "carol-iss", "exp": now_s() + 30}),
    );
    assert_eq!(
        send(get("/short").header("authorization", bearer(&brief)))
            .await
            .status,
        200
    );

    // An issuer provider with a JWKS: issuer, audience and key checked.
    let idp = |aud: &str, key: &EncodingKey| {
        let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(
            &h,
            &json!({"iss": "https://idp.example", "aud": aud, "exp": exp,
            "roles": ["admin", "dev"]}),
            key,
        )
        .unwrap()
    };
    let a = send(get("/issuer").header("authorization", bearer(&idp("api", &provider_key)))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.upstream_header("x-user-roles"), Some("admin,dev"));
    let a =
        send(get("/issuer").header("authorization", bearer(&idp("other", &provider_key)))).await;
    assert_eq!(a.status, 401);
    let a = send(get("/issuer").header("authorization", bearer(&idp("api", &dave_key)))).await;
    assert_eq!(
        (a.status, &a.body),
        (401, &json!({"message": "Invalid signature"}))
    );

    // A bad plugin config is refused; nothing is stored.
    let bad = cp
        .post(
            "/routes/jwt/plugins",
            json!({"name": "jwt", "config": {"claims_to_verify": ["iat"]}}),
        )
        .await
        .expect(400);
    assert!(
        bad["fields"]["config"]["claims_to_verify"]
            .to_string()
            .contains("expected one of"),
        "{bad}"
    );

    // Tokens and secrets never reach the logs.
    let log = proxy.log() + &cp.log();
    assert!(
        !log.contains(&good) && !log.contains("dave-hmac-secret"),
        "a secret is in the logs"
    );
}

/// Every plugin replaced in one revision: the listener (new instances)
/// and the routes (naming them) arrive one after the other, and the proxy
/// must take both rather than refuse each against the other's old version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_replaced_in_one_revision() {
    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, "gantry-swap").await;
    let c = client();
    let doc = |plugins: Value| {
        json!({"_format_version": "3.0",
               "consumers": [{"username": "erin", "keyauth_credentials": [{"key": "erin-key"}]}],
               "services": [{"name": "svc", "url": up.url(),
                             "routes": [{"name": "r", "paths": ["/r"], "plugins": plugins}]}]})
    };
    let rev = cp
        .post("/config", doc(json!([{"name": "key-auth"}])))
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let url = format!("{}/r", proxy.proxy_url());
    assert_eq!(send(c.get(&url)).await.status, 401);

    let rev = cp
        .post(
            "/config",
            doc(json!([{"name": "rate-limiting", "config": {"minute": 1000}}])),
        )
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let a = send(c.get(&url)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-ratelimit-limit-minute"), Some("1000"));
}

/// Sends a POST with a chunked body of `len` bytes over a raw connection
/// (no Content-Length); returns the status and the body.
async fn chunked_post(port: u16, path: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // In 4-byte chunks, so the limit is crossed mid-stream.
    let body = vec![b'a'; len];
    for chunk in body.chunks(4) {
        let _ = s
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = s.write_all(chunk).await;
        let _ = s.write_all(b"\r\n").await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_plugins_cors_ip_size_and_correlation() {
    // The proxy's peer (127.0.0.1) is a trusted proxy: its X-Forwarded-For
    // is believed; nobody else's would be.
    let cp = Cp::start_with_args(
        gantry_e2e::Backend::Sqlite,
        &["--trusted-ips", "127.0.0.1/32"],
    )
    .await;
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, "gantry-edge").await;
    let c = client();
    let base = proxy.proxy_url();
    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    for r in ["deny", "allow", "cors", "size", "cid"] {
        cp.post(
            "/services/svc/routes",
            json!({"name": r, "paths": [format!("/{r}")]}),
        )
        .await
        .expect(201);
    }
    let plugins = [
        (
            "deny",
            json!({"name": "ip-restriction", "config": {"deny": ["203.0.113.0/24", "2001:db8::/32"]}}),
        ),
        (
            "allow",
            json!({"name": "ip-restriction", "config": {"allow": ["10.0.0.0/8"], "status": 401, "message": "nope"}}),
        ),
        (
            "cors",
            json!({"name": "cors", "config": {"origins": ["https://app.example", r"https://.*\.tenant\.example"],
            "methods": ["GET", "POST"], "headers": ["X-Custom"], "exposed_headers": ["X-Total"],
            "credentials": true, "max_age": 600}}),
        ),
        ("cors", json!({"name": "key-auth"})),
        (
            "size",
            json!({"name": "request-size-limiting", "config": {"allowed_payload_size": 10, "size_unit": "bytes"}}),
        ),
        (
            "cid",
            json!({"name": "correlation-id", "config": {"header_name": "X-Correlation-ID", "generator": "uuid", "echo_downstream": true}}),
        ),
    ];
    let mut rev = 0;
    for (route, p) in plugins {
        rev = cp
            .post(&format!("/routes/{route}/plugins"), p)
            .await
            .committed();
    }
    // A bad CIDR is refused.
    let bad = cp
        .post(
            "/routes/deny/plugins",
            json!({"name": "ip-restriction", "config": {"allow": ["10.0.0.0/33"]}}),
        )
        .await
        .expect(400);
    assert!(
        bad.to_string().contains("invalid ip or cidr range"),
        "{bad}"
    );
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    until_status(&proxy, "/allow", 401).await;

    // ip-restriction, through the trusted peer's X-Forwarded-For.
    let xff = |path: &str, ip: &str| c.get(format!("{base}{path}")).header("x-forwarded-for", ip);
    let a = send(xff("/deny", "203.0.113.7")).await;
    assert_eq!(
        (a.status, &a.body),
        (403, &json!({"message": "Your IP address is not allowed"}))
    );
    assert_eq!(send(xff("/deny", "198.51.100.1")).await.status, 200);
    assert_eq!(send(xff("/deny", "2001:db8::1")).await.status, 403);
    let a = send(xff("/allow", "192.0.2.1")).await;
    assert_eq!((a.status, &a.body), (401, &json!({"message": "nope"})));
    assert_eq!(send(xff("/allow", "10.9.8.7")).await.status, 200);
    // Several forwarded addresses: the last one (the trusted peer's view).
    assert_eq!(send(xff("/allow", "10.0.0.1, 192.0.2.1")).await.status, 401);

    // CORS: the preflight is answered before authentication, without the upstream.
    let seen = up.requests();
    let a = send(
        c.request(reqwest::Method::OPTIONS, format!("{base}/cors"))
            .header("origin", "https://x.tenant.example")
            .header("access-control-request-method", "POST"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://x.tenant.example")
    );
    assert_eq!(a.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(a.header("access-control-allow-headers"), Some("X-Custom"));
    assert_eq!(a.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(a.header("access-control-max-age"), Some("600"));
    assert_eq!(up.requests(), seen);
    // An actual request: refused by key-auth, yet with CORS headers so the
    // browser can read the 401.
    let a = send(
        c.get(format!("{base}/cors"))
            .header("origin", "https://app.example"),
    )
    .await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(a.header("access-control-expose-headers"), Some("X-Total"));
    // Another origin gets no Access-Control-Allow-Origin.
    let a = send(
        c.get(format!("{base}/cors"))
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(a.header("access-control-allow-origin"), None);

    // request-size-limiting: declared and streamed bodies.
    let a = send(c.post(format!("{base}/size")).body("0123456789ABCDEF")).await;
    assert_eq!(
        (a.status, &a.body),
        (413, &json!({"message": "Request size limit exceeded"}))
    );
    let a = send(c.post(format!("{base}/size")).body("small")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["body"], "small");
    let (status, body) = chunked_post(proxy.http_port, "/size", 40).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("Request size limit exceeded"), "{body}");
    let (status, body) = chunked_post(proxy.http_port, "/size", 8).await;
    assert_eq!(status, 200, "{body}");

    // correlation-id: generated, sent upstream and echoed; a client's own kept.
    let a = send(c.get(format!("{base}/cid"))).await;
    let id = a.header("x-correlation-id").expect("echoed").to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(a.upstream_header("x-correlation-id"), Some(id.as_str()));
    let a = send(
        c.get(format!("{base}/cid"))
            .header("x-correlation-id", "abc"),
    )
    .await;
    assert_eq!(a.header("x-correlation-id"), Some("abc"));
    assert_eq!(a.upstream_header("x-correlation-id"), Some("abc"));
}

/// A plugin config gantry-proxy cannot run is refused by the admin API
/// (400 naming the option, no revision): the fleet never sees it, never
/// NACKs, and keeps enforcing what it had. `/fleet` lists per node which
/// configured plugins its flavour does not enforce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_config_gantry_proxy_cannot_run_is_refused_by_the_admin_api() {
    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, "gantry-unsupported").await;
    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    cp.post(
        "/services/svc/routes",
        json!({"name": "r", "paths": ["/r"]}),
    )
    .await
    .expect(201);
    let rev = cp
        .post("/routes/r/plugins", json!({"name": "key-auth"}))
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let node = cp.fleet_node(&proxy.node_id).await.expect("node");
    assert_eq!(node["unenforced_plugins"], json!([]), "{node}");

    // Redis over TLS is not run by gantry-proxy yet: refused at the door.
    let refused = cp
        .post(
            "/routes/r/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "redis",
                   "redis": {"host": "127.0.0.1", "port": 6379, "ssl": true}}}),
        )
        .await
        .expect(400);
    assert!(
        refused["fields"]["config"]
            .as_str()
            .is_some_and(|m| m.contains("redis.ssl")),
        "the 400 says why: {refused}"
    );
    // Nothing reached the fleet: no NACK, key-auth enforced as before.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node = cp.fleet_node(&proxy.node_id).await.expect("node");
    assert_ne!(node["state"], "NACKED", "{node}");
    let a = send(client().get(format!("{}/r", proxy.proxy_url()))).await;
    assert_eq!(a.status, 401);
}

/// key-auth with acl, and ip-restriction, through a real Envoy 1.40 fed by
/// the same control plane (Envoy's own api_key_auth and rbac filters) and
/// through gantry-proxy: the same request gets the same status from both.
/// What Envoy cannot express is listed for its node at `/fleet`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_enforces_key_auth_acl_and_ip_rules_too() {
    let cp = Cp::start().await;
    let mut envoy = gantry_e2e::Envoy::spawn(&cp, "envoy-plugins", true);
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, "gantry-plugins").await;
    envoy.wait_ready(&cp, Duration::from_secs(20)).await;
    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    for r in ["ka", "acl", "ip", "anon", "cors"] {
        cp.post(
            "/services/svc/routes",
            json!({"name": r, "paths": [format!("/{r}")]}),
        )
        .await
        .expect(201);
    }
    cp.post(
        "/routes/cors/plugins",
        json!({"name": "cors", "config": {"origins": ["https://app.example", r"https://.*\.tenant\.example"],
               "methods": ["GET", "POST"], "headers": ["X-Custom"], "max_age": 600}}),
    )
    .await
    .expect(201);
    cp.post("/routes/cors/plugins", json!({"name": "key-auth"}))
        .await
        .expect(201);
    cp.post("/consumers", json!({"username": "frank"}))
        .await
        .expect(201);
    cp.post("/consumers", json!({"username": "gina"}))
        .await
        .expect(201);
    cp.post("/consumers/frank/key-auth", json!({"key": "frank-key"}))
        .await
        .expect(201);
    cp.post("/consumers/gina/key-auth", json!({"key": "gina-key"}))
        .await
        .expect(201);
    cp.post("/consumers/frank/acls", json!({"group": "staff"}))
        .await
        .expect(201);
    cp.post(
        "/routes/ka/plugins",
        json!({"name": "key-auth", "config": {"hide_credentials": true}}),
    )
    .await
    .expect(201);
    cp.post("/routes/acl/plugins", json!({"name": "key-auth"}))
        .await
        .expect(201);
    cp.post(
        "/routes/acl/plugins",
        json!({"name": "acl", "config": {"allow": ["staff"]}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/ip/plugins",
        json!({"name": "ip-restriction", "config": {"deny": ["127.0.0.0/8"]}}),
    )
    .await
    .expect(201);
    // Envoy has no anonymous consumer: left to gantry-proxy, and said so.
    let rev = cp
        .post(
            "/routes/anon/plugins",
            json!({"name": "key-auth", "config": {"anonymous": "gina"}}),
        )
        .await
        .committed();
    cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let rejected = envoy.rejections();
    assert!(
        rejected.is_empty(),
        "Envoy rejected the config: {rejected:?}"
    );

    let c = client();
    let cases: &[(&str, Option<&str>, u16)] = &[
        ("/ka", None, 401),
        ("/ka", Some("wrong"), 401),
        ("/ka", Some("frank-key"), 200),
        ("/acl", Some("frank-key"), 200),
        ("/acl", Some("gina-key"), 403),
        ("/acl", None, 401),
        ("/ip", None, 403),
    ];
    for (target, base) in [
        ("envoy", envoy.proxy_url()),
        ("gantry-proxy", proxy.proxy_url()),
    ] {
        for (path, key, status) in cases {
            let mut req = c.get(format!("{base}{path}"));
            if let Some(k) = key {
                req = req.header("apikey", *k);
            }
            let a = send(req).await;
            assert_eq!(a.status, *status, "{target} {path} key {key:?}: {}", a.body);
            if a.status == 200 {
                assert_eq!(
                    a.upstream_header("x-consumer-username"),
                    Some("frank"),
                    "{target}"
                );
                if *path == "/ka" {
                    assert_eq!(
                        a.upstream_header("apikey"),
                        None,
                        "{target}: hide_credentials"
                    );
                }
            }
        }
    }
    // CORS: preflights answered by the proxy before authentication, the
    // origin allowed on actual requests, on both.
    for (target, base) in [
        ("envoy", envoy.proxy_url()),
        ("gantry-proxy", proxy.proxy_url()),
    ] {
        for origin in ["https://app.example", "https://x.tenant.example"] {
            let a = send(
                c.request(reqwest::Method::OPTIONS, format!("{base}/cors"))
                    .header("origin", origin)
                    .header("access-control-request-method", "POST"),
            )
            .await;
            assert_eq!(
                a.status, 200,
                "{target} preflight from {origin}: {:?}",
                a.headers
            );
            assert_eq!(
                a.header("access-control-allow-origin"),
                Some(origin),
                "{target}"
            );
            assert!(
                a.header("access-control-allow-methods")
                    .is_some_and(|m| m.contains("POST")),
                "{target}"
            );
            assert_eq!(a.header("access-control-max-age"), Some("600"), "{target}");
        }
        let a = send(
            c.get(format!("{base}/cors"))
                .header("origin", "https://app.example")
                .header("apikey", "frank-key"),
        )
        .await;
        assert_eq!(a.status, 200, "{target}");
        assert_eq!(
            a.header("access-control-allow-origin"),
            Some("https://app.example"),
            "{target}"
        );
        let a = send(
            c.get(format!("{base}/cors"))
                .header("origin", "https://evil.example")
                .header("apikey", "frank-key"),
        )
        .await;
        assert_eq!(a.header("access-control-allow-origin"), None, "{target}");
    }
    // The anonymous route is enforced by gantry-proxy only.
    assert_eq!(
        send(c.get(format!("{}/anon", proxy.proxy_url())))
            .await
            .status,
        200
    );
    let node = cp.fleet_node(&envoy.node_id).await.expect("envoy node");
    assert_eq!(node["unenforced_plugins"], json!(["key-auth"]), "{node}");
    let node = cp.fleet_node(&proxy.node_id).await.expect("gantry node");
    assert_eq!(node["unenforced_plugins"], json!([]), "{node}");
}

/// A raw HTTP/1.1 request: the `head` lines (request line and headers,
/// without the blank line), then, when given, a chunked body in 4-byte
/// chunks. Returns the status and the response body.
async fn raw_http(port: u16, head: &str, chunked: Option<&[u8]>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut req = format!("{head}\r\nconnection: close\r\n");
    if chunked.is_some() {
        req.push_str("transfer-encoding: chunked\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    if let Some(body) = chunked {
        for chunk in body.chunks(4) {
            let _ = s
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await;
            let _ = s.write_all(chunk).await;
            let _ = s.write_all(b"\r\n").await;
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// request-transformer and response-transformer: what the upstream
/// receives (method, path and query, headers, JSON and form bodies with
/// their length, Host) and what the client gets (headers, JSON fields,
/// Content-Length); bodies past the buffer; bad configs refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transformers() {
    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, "gantry-transform").await;
    let c = client();
    let base = proxy.proxy_url();
    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    for r in ["req", "form", "method", "small", "resp", "gate"] {
        cp.post(
            "/services/svc/routes",
            json!({"name": r, "paths": [format!("/{r}")]}),
        )
        .await
        .expect(201);
    }

    // Bad configs: Kong's 400 naming the field; nothing stored.
    let count = |v: Value| v["data"].as_array().map(Vec::len).unwrap_or_default();
    let before = count(cp.get("/plugins").await.expect(200));
    let refused = [
        (
            "/routes/req/plugins",
            json!({"name": "request-transformer", "config": {"add": {"headers": ["X-No-Colon"]}}}),
            "invalid value: X-No-Colon",
        ),
        (
            "/routes/req/plugins",
            json!({"name": "request-transformer", "config": {"http_method": "get"}}),
            "invalid value: get",
        ),
        (
            "/routes/req/plugins",
            json!({"name": "request-transformer", "config": {"add": {"body": ["k:"]}}}),
            "key 'k' has no value",
        ),
        (
            "/routes/resp/plugins",
            json!({"name": "response-transformer",
                   "config": {"add": {"json": ["a:1"], "json_types": ["object"]}}}),
            "expected one of",
        ),
    ];
    for (path, body, why) in refused {
        let bad = cp.post(path, body).await.expect(400);
        assert_eq!(bad["name"], "schema violation", "{bad}");
        assert!(bad["fields"]["config"].to_string().contains(why), "{bad}");
    }
    assert_eq!(count(cp.get("/plugins").await.expect(200)), before);

    let plugins = [
        (
            "req",
            json!({"name": "request-transformer", "config": {
                "remove": {"headers": ["X-Drop"], "querystring": ["drop"], "body": ["secret"]},
                "rename": {"headers": ["X-Old:X-New"], "querystring": ["old:new"], "body": ["old:new"]},
                "replace": {"headers": ["X-Rep:replaced"], "querystring": ["rep:replaced"],
                            "body": ["rep:replaced"]},
                "add": {"headers": ["X-Add:added", "X-Keep:not-used", "X-Tpl:$(headers.host)"],
                        "querystring": ["add:added", "keep:not-used"],
                        "body": ["add:added", "keep:not-used"]},
                "append": {"headers": ["X-App:two"], "querystring": ["app:two"], "body": ["app:two"]}}}),
        ),
        (
            "form",
            json!({"name": "request-transformer", "config": {
                "remove": {"body": ["a"]}, "add": {"body": ["c:3"]}, "append": {"body": ["b:2"]}}}),
        ),
        (
            "method",
            json!({"name": "request-transformer", "config": {"http_method": "GET",
                "replace": {"uri": "/replaced/path", "headers": ["Host:internal.example"]}}}),
        ),
        (
            "small",
            json!({"name": "request-size-limiting", "config": {"allowed_payload_size": 10, "size_unit": "bytes"}}),
        ),
        (
            "small",
            json!({"name": "request-transformer", "config": {"add": {"body": ["b:2"]}}}),
        ),
        (
            "resp",
            json!({"name": "response-transformer", "config": {
                "remove": {"json": ["headers"]},
                "rename": {"json": ["upstream:served_by"]},
                "replace": {"json": ["method:PATCHED", "absent:x"], "headers": ["X-Missing:nope"]},
                "add": {"json": ["count:3", "flag:true", "method:ignored"],
                        "json_types": ["number", "boolean", "string"],
                        "headers": ["X-Added:yes", "Content-Type:text/plain"]},
                "append": {"json": ["path:/more"], "headers": ["X-Multi:a", "X-Multi:b"]}}}),
        ),
        (
            "gate",
            json!({"name": "response-transformer", "config": {
                "rename": {"headers": ["Content-Type:X-Upstream-Type"]},
                "remove": {"json": ["upstream"]}}}),
        ),
    ];
    let mut rev = 0;
    for (route, p) in plugins {
        rev = cp
            .post(&format!("/routes/{route}/plugins"), p)
            .await
            .committed();
    }
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;

    // Headers, query and JSON body, each in Kong's order: remove, rename,
    // replace, add (only when absent), append.
    let a = send(
        c.post(format!(
            "{base}/req?drop=1&old=o&rep=r&keep=k&app=one&z=a+b"
        ))
        .header("x-drop", "1")
        .header("x-old", "o")
        .header("x-rep", "r")
        .header("x-keep", "k")
        .header("x-app", "one")
        .json(&json!({"secret": "s", "old": "o", "rep": "r", "keep": "k", "app": "one", "n": 1})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["method"], "POST");
    // Rewritten with names in order, as Kong's set_query does.
    assert_eq!(
        a.body["path"],
        "/?add=added&app=one&app=two&keep=k&new=o&rep=replaced&z=a%20b"
    );
    assert_eq!(a.upstream_header("x-drop"), None);
    assert_eq!(a.upstream_header("x-old"), None);
    assert_eq!(a.upstream_header("x-new"), Some("o"));
    assert_eq!(a.upstream_header("x-rep"), Some("replaced"));
    assert_eq!(a.upstream_header("x-add"), Some("added"));
    assert_eq!(a.upstream_header("x-keep"), Some("k"));
    assert_eq!(a.upstream_header("x-app"), Some("one, two"));
    // Templates are not evaluated: sent as written.
    assert_eq!(a.upstream_header("x-tpl"), Some("$(headers.host)"));
    let sent = a.body["body"].as_str().expect("body");
    let fields: Value = serde_json::from_str(sent).expect("JSON upstream");
    assert_eq!(
        fields,
        json!({"new": "o", "rep": "replaced", "keep": "k", "app": ["one", "two"], "n": 1, "add": "added"})
    );
    assert_eq!(
        a.upstream_header("content-length"),
        Some(sent.len().to_string().as_str())
    );

    // A form body: fields keep their order, values re-encoded.
    let a = send(
        c.post(format!("{base}/form"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("a=1&b=1&d=x+y"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["body"], "b=1&b=2&d=x%20y&c=3");
    assert_eq!(a.upstream_header("content-length"), Some("19"));
    // Another content type passes untouched.
    let a = send(
        c.post(format!("{base}/form"))
            .header("content-type", "text/plain")
            .body("a=1"),
    )
    .await;
    assert_eq!(a.body["body"], "a=1");

    // http_method GET: the form body's arguments join the query; the path
    // and Host replace the route's.
    let a = send(
        c.post(format!("{base}/method?q=1"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("f=2"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["method"], "GET");
    assert_eq!(a.body["path"], "/replaced/path?f=2&q=1");
    assert_eq!(a.upstream_header("host"), Some("internal.example"));

    // Past the buffer (1 MiB): Kong's 413 before anything is forwarded.
    let seen = up.requests();
    let (status, body) = raw_http(
        proxy.http_port,
        "POST /req HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: 2000000\r\nexpect: 100-continue",
        None,
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).ok(),
        Some(json!({"message": "Request size limit exceeded"}))
    );
    // request-size-limiting still counts a chunked body the transformer
    // reads; within it, the body is rewritten with its length declared.
    let ct = "POST /small HTTP/1.1\r\nhost: x\r\ncontent-type: application/json";
    let (status, body) = raw_http(proxy.http_port, ct, Some(br#"{"a":"0123456789abcdef"}"#)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("Request size limit exceeded"), "{body}");
    assert_eq!(up.requests(), seen, "a refused body reached the upstream");
    let (status, body) = raw_http(proxy.http_port, ct, Some(br#"{"a":1}"#)).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).expect("echo");
    assert_eq!(echo["body"], r#"{"a":1,"b":"2"}"#);
    assert_eq!(echo["headers"]["content-length"], "15");
    assert_eq!(echo["headers"]["transfer-encoding"], Value::Null);

    // response-transformer: headers against what the upstream sent, JSON
    // fields typed, Content-Length recomputed.
    let r = c.get(format!("{base}/resp")).send().await.expect("resp");
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let bytes = r.bytes().await.expect("body");
    let v: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(
        v,
        json!({"served_by": "echo", "method": "PATCHED", "path": ["/", "/more"], "body": "",
               "count": 3, "flag": true})
    );
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    assert_eq!(
        header("content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(header("x-added"), Some("yes"));
    assert_eq!(header("x-missing"), None);
    let multi: Vec<&str> = h
        .get_all("x-multi")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(multi, ["a", "b"]);
    // A JSON body larger than the buffer passes untouched; headers still change.
    let a = send(
        c.post(format!("{base}/resp"))
            .header("content-type", "text/plain")
            .body("x".repeat(1_100_000)),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["upstream"], "echo");
    assert!(a.body["headers"].is_object());
    assert_eq!(a.header("x-added"), Some("yes"));
    // Once Content-Type is renamed the body is not JSON: untouched.
    let a = send(c.get(format!("{base}/gate"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), None);
    assert_eq!(a.header("x-upstream-type"), Some("application/json"));
    assert_eq!(a.body["upstream"], "echo");
}

/// proxy-cache: Miss then Hit (the upstream sees one request), Age and
/// X-Cache-Key, vary by query parameter and header, Bypass for methods and
/// content types it does not cache, `Cache-Control` honoured when asked,
/// entries expiring after `cache_ttl`, and purges on the proxy's admin port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cache_hits_misses_and_purges() {
    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, "gantry-cache").await;
    let second = Proxy::start(&cp, "gantry-cache-2").await;
    let c = client();
    let base = proxy.proxy_url();
    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    for r in ["c", "cc", "short"] {
        cp.post(
            "/services/svc/routes",
            json!({"name": r, "paths": [format!("/{r}")]}),
        )
        .await
        .expect(201);
    }
    cp.post(
        "/routes/c/plugins",
        json!({"name": "proxy-cache", "config": {"strategy": "memory", "content_type": ["application/json"],
               "vary_query_params": ["page"], "vary_headers": ["X-Tenant"]}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/cc/plugins",
        json!({"name": "proxy-cache", "config": {"strategy": "memory", "content_type": ["application/json"],
               "cache_control": true}}),
    )
    .await
    .expect(201);
    let rev = cp
        .post(
            "/routes/short/plugins",
            json!({"name": "proxy-cache", "config": {"strategy": "memory", "content_type": ["application/json"],
                   "cache_ttl": 1}}),
        )
        .await
        .committed();
    // A bad config: nothing stored.
    cp.post(
        "/routes/c/plugins",
        json!({"name": "proxy-cache", "config": {"strategy": "redis"}}),
    )
    .await
    .expect(400);
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;

    let get = |p: &str| c.get(format!("{base}{p}"));
    let seen = up.requests();
    let a = send(get("/c?page=1&junk=1")).await;
    assert_eq!(a.header("x-cache-status"), Some("Miss"));
    let key = a.header("x-cache-key").expect("key").to_string();
    let b = send(get("/c?junk=2&page=1")).await;
    assert_eq!(
        b.header("x-cache-status"),
        Some("Hit"),
        "other query args do not vary"
    );
    assert_eq!(b.header("x-cache-key"), Some(key.as_str()));
    assert!(b.header("age").is_some());
    assert_eq!(b.body, a.body, "the same body from the cache");
    assert_eq!(up.requests(), seen + 1, "a hit does not reach the upstream");
    assert_eq!(
        send(get("/c?page=2")).await.header("x-cache-status"),
        Some("Miss")
    );
    assert_eq!(
        send(get("/c?page=1").header("x-tenant", "t2"))
            .await
            .header("x-cache-status"),
        Some("Miss")
    );
    // Methods it does not cache.
    let a = send(c.post(format!("{base}/c?page=1")).body("x")).await;
    assert_eq!(a.header("x-cache-status"), Some("Bypass"));

    // cache_control: the client can refresh, and no-store bypasses.
    assert_eq!(
        send(get("/cc")).await.header("x-cache-status"),
        Some("Miss")
    );
    assert_eq!(send(get("/cc")).await.header("x-cache-status"), Some("Hit"));
    assert_eq!(
        send(get("/cc").header("cache-control", "no-cache"))
            .await
            .header("x-cache-status"),
        Some("Refresh")
    );
    assert_eq!(
        send(get("/cc").header("cache-control", "no-store"))
            .await
            .header("x-cache-status"),
        Some("Bypass")
    );

    // Entries expire after cache_ttl.
    assert_eq!(
        send(get("/short")).await.header("x-cache-status"),
        Some("Miss")
    );
    assert_eq!(
        send(get("/short")).await.header("x-cache-status"),
        Some("Hit")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        send(get("/short")).await.header("x-cache-status"),
        Some("Miss")
    );

    // Purge one entry, then everything, on the proxy's admin port.
    let admin = |m: reqwest::Method, p: &str| c.request(m, format!("{}{p}", proxy.admin));
    let r = admin(reqwest::Method::DELETE, &format!("/proxy-cache/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        send(get("/c?page=1")).await.header("x-cache-status"),
        Some("Miss")
    );
    let r = admin(reqwest::Method::DELETE, &format!("/proxy-cache/{key}ff"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(send(get("/cc")).await.header("x-cache-status"), Some("Hit"));
    let r = admin(reqwest::Method::DELETE, "/proxy-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        send(get("/cc")).await.header("x-cache-status"),
        Some("Miss")
    );

    // Through the control plane's admin API: the purge reaches every
    // proxy, each holding its own copy.
    let on = |p: &Proxy, path: &str| c.get(format!("{}{path}", p.proxy_url()));
    let mut key = String::new();
    for p in [&proxy, &second] {
        send(on(p, "/c?page=7")).await;
        let a = send(on(p, "/c?page=7")).await;
        assert_eq!(a.header("x-cache-status"), Some("Hit"), "{}", p.node_id);
        key = a.header("x-cache-key").expect("X-Cache-Key").to_string();
        send(on(p, "/cc")).await;
        assert_eq!(
            send(on(p, "/cc")).await.header("x-cache-status"),
            Some("Hit"),
            "{}",
            p.node_id
        );
    }
    let node = cp.fleet_node(&second.node_id).await.expect("node");
    assert_eq!(
        node["admin_address"],
        format!("127.0.0.1:{}", second.admin_port)
    );
    cp.delete(&format!("/proxy-cache/{key}")).await.expect(204);
    cp.delete(&format!("/proxy-cache/{key}")).await.expect(404);
    for p in [&proxy, &second] {
        assert_eq!(
            send(on(p, "/c?page=7")).await.header("x-cache-status"),
            Some("Miss"),
            "{}",
            p.node_id
        );
    }
    cp.delete("/proxy-cache").await.expect(204);
    for p in [&proxy, &second] {
        assert_eq!(
            send(on(p, "/cc")).await.header("x-cache-status"),
            Some("Miss"),
            "{}",
            p.node_id
        );
    }
    // A proxy whose admin endpoint cannot be reached: the purge says so
    // (502, naming it) rather than looking done.
    let dead = gantry_e2e::reserve_port();
    let lost = Proxy::start_with(
        &cp,
        "gantry-cache-unreachable",
        gantry_e2e::ProxyOptions {
            admin_advertise: Some(format!("127.0.0.1:{}", dead.port)),
            ..Default::default()
        },
    )
    .await;
    let body = cp.delete("/proxy-cache").await.expect(502);
    assert_eq!(body["unreachable"][0]["node_id"], lost.node_id.as_str());
    assert_eq!(body["unreachable"].as_array().map(Vec::len), Some(1));
    // Node metadata is the node's own claim: an address elsewhere (a cloud
    // metadata service, say) is never called; the advertised port is, on
    // the address the node's xDS connection comes from.
    let elsewhere = Proxy::start_with(
        &cp,
        "gantry-cache-elsewhere",
        gantry_e2e::ProxyOptions {
            admin_advertise: Some(format!("169.254.169.254:{}", dead.port)),
            ..Default::default()
        },
    )
    .await;
    let node = cp.fleet_node(&elsewhere.node_id).await.expect("node");
    assert_eq!(
        node["admin_address"],
        format!("127.0.0.1:{}", dead.port),
        "{node}"
    );
    let body = cp.delete("/proxy-cache").await.expect(502);
    assert!(!body.to_string().contains("169.254.169.254"), "{body}");
}

/// A JWKS server for `jwt_remote_jwks`: serves whatever document is set,
/// one request per connection (`Connection: close`), so stopping it stops
/// every answer.
struct JwksServer {
    url: String,
    doc: std::sync::Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(doc: String) -> JwksServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let doc = std::sync::Arc::new(std::sync::Mutex::new(doc));
        let shared = doc.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let body = shared.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        JwksServer { url, doc, task }
    }

    fn serve(&self, doc: String) {
        *self.doc.lock().unwrap() = doc;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_remote_jwks() {
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let oct = |kid: &str, secret: &[u8]| {
        json!({"keys": [{"kty": "oct", "alg": "HS256", "kid": kid,
            "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)}]})
        .to_string()
    };
    let sign_kid = |kid: &str, secret: &[u8]| {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.into());
        let claims = json!({"iss": "https://idp.example", "exp": now_s() + 3600});
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(secret)).expect("sign")
    };
    let (s1, s2) = (
        b"remote-secret-one-0123456789abcdef".as_slice(),
        b"remote-secret-two-0123456789abcdef".as_slice(),
    );
    let jwks = JwksServer::start(oct("k1", s1)).await;

    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, "gantry-jwks").await;
    let c = client();
    let url = format!("{}/remote", proxy.proxy_url());
    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    cp.post(
        "/services/svc/routes",
        json!({"name": "remote", "paths": ["/remote"]}),
    )
    .await
    .expect(201);
    // Short durations: refreshed every second, served 2 s past its fetch
    // while the server is down.
    let rev = cp
        .post(
            "/routes/remote/plugins",
            json!({"name": "jwt", "config": {"providers": [{"name": "idp",
                   "issuer": "https://idp.example",
                   "remote_jwks": {"uri": jwks.url, "cache_duration": 1,
                                   "stale_while_error": 2, "timeout": 1000}}]}}),
        )
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    until_status(&proxy, "/remote", 401).await;
    let call = |token: String| {
        send(
            c.get(&url)
                .header("authorization", format!("Bearer {token}")),
        )
    };

    // First use fetches on demand.
    let a = call(sign_kid("k1", s1)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // A token for a key the set does not have: refused.
    let a = call(sign_kid("k1", s2)).await;
    assert_eq!(
        (a.status, &a.body),
        (401, &json!({"message": "Invalid signature"}))
    );

    // Rotation: a new kid refetches at once (well before any refresh
    // would matter, the unknown kid is what triggers it).
    jwks.serve(oct("k2", s2));
    let a = call(sign_kid("k2", s2)).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // The server goes down: the last set keeps serving within
    // stale_while_error, then the provider's tokens are refused.
    let task = jwks.task;
    task.abort();
    let _ = task.await;
    let down = std::time::Instant::now();
    let a = call(sign_kid("k2", s2)).await;
    assert_eq!(a.status, 200, "stale set within the window: {}", a.body);
    let refused = loop {
        let a = call(sign_kid("k2", s2)).await;
        if a.status == 401 {
            break a;
        }
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(
            down.elapsed() < Duration::from_secs(5),
            "still served {:?} after the server went down",
            down.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        refused.body,
        json!({"message": "Jwks remote fetch is failed"})
    );
    // The last good fetch was at most a refresh (1 s) before the server
    // went down, so the set served for at least about 1 s more.
    assert!(
        down.elapsed() >= Duration::from_millis(800),
        "refused after only {:?}",
        down.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_validator_checks_body_and_params() {
    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, "gantry-validator").await;
    let c = client();
    let base = proxy.proxy_url();
    cp.post("/services", json!({"name": "svc", "url": up.url()}))
        .await
        .expect(201);
    cp.post(
        "/services/svc/routes",
        json!({"name": "v", "paths": ["/v"]}),
    )
    .await
    .expect(201);
    cp.post(
        "/services/svc/routes",
        json!({"name": "verbose", "paths": ["/verbose"]}),
    )
    .await
    .expect(201);
    let body_schema = r#"{"type":"object","required":["name"],"properties":{"name":{"type":"string"},"qty":{"type":"integer","minimum":1}}}"#;
    cp.post(
        "/routes/v/plugins",
        json!({"name": "request-validator", "config": {"body_schema": body_schema,
               "parameter_schema": [{"in": "header", "name": "X-Version", "required": true,
                                     "style": "simple", "explode": false, "schema": "{\"type\": \"integer\"}"}]}}),
    )
    .await
    .expect(201);
    cp.post(
        "/routes/verbose/plugins",
        json!({"name": "request-validator", "config": {"body_schema": body_schema, "verbose_response": true}}),
    )
    .await
    .expect(201);
    // Path parameters: the named groups of the route's regex path.
    cp.post(
        "/services/svc/routes",
        json!({"name": "users", "paths": [r"~/users/(?<user_id>[^/]+)$"]}),
    )
    .await
    .expect(201);
    let rev = cp
        .post(
            "/routes/users/plugins",
            json!({"name": "request-validator", "config": {"parameter_schema": [
                {"in": "path", "name": "user_id", "required": true, "style": "simple",
                 "explode": false, "schema": "{\"type\": \"integer\", \"minimum\": 1}"}]}}),
        )
        .await
        .committed();
    // A schema that is not JSON Schema is refused; nothing stored.
    cp.post(
        "/routes/v/plugins",
        json!({"name": "request-validator", "config": {"body_schema": "{not json"}}),
    )
    .await
    .expect(400);
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;

    let post = |path: &str, body: &str| {
        c.post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .header("x-version", "2")
            .body(body.to_string())
    };
    let seen = up.requests();
    let a = send(post("/v", r#"{"name":"widget","qty":2}"#)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["body"], r#"{"name":"widget","qty":2}"#,
        "the body reaches the upstream intact"
    );
    let a = send(post("/v", r#"{"qty":0}"#)).await;
    assert_eq!(
        (a.status, &a.body),
        (
            400,
            &json!({"message": "request body doesn't conform to schema"})
        )
    );
    let a = send(post("/v", "{oops")).await;
    assert_eq!(a.status, 400);
    let a = send(
        c.post(format!("{base}/v"))
            .header("content-type", "text/plain")
            .header("x-version", "2")
            .body(r#"{"name":"w"}"#),
    )
    .await;
    assert_eq!(
        (a.status, &a.body),
        (
            400,
            &json!({"message": "specified Content-Type is not allowed"})
        )
    );
    let a = send(
        c.post(format!("{base}/v"))
            .header("content-type", "application/json")
            .header("x-version", "two")
            .body(r#"{"name":"w"}"#),
    )
    .await;
    assert_eq!(
        (a.status, &a.body),
        (
            400,
            &json!({"message": "request param doesn't conform to schema"})
        )
    );
    assert_eq!(
        up.requests(),
        seen + 1,
        "refused requests never reach the upstream"
    );
    let a = send(c.get(format!("{base}/users/42"))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    for bad in ["/users/0", "/users/abc"] {
        let a = send(c.get(format!("{base}{bad}"))).await;
        assert_eq!(
            (a.status, &a.body),
            (
                400,
                &json!({"message": "request param doesn't conform to schema"})
            ),
            "{bad}"
        );
    }
    // verbose_response: the reason.
    let a = send(post("/verbose", r#"{"qty":"x"}"#)).await;
    assert_eq!(a.status, 400);
    // The validator's own reason: the missing `name` or the mistyped `qty`.
    let reason = a.body["message"].as_str().unwrap_or_default();
    assert!(
        reason.contains("name") || reason.contains("integer"),
        "{}",
        a.body
    );
}
