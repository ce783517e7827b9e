//! Observability, checked the way an operator checks it: a real
//! Prometheus scrapes gantry-cp's `/metrics` and PromQL over what it
//! stored gives the expected series and values; gantry-proxy's access log
//! is read back from its file.

use gantry_e2e::prometheus::{Prometheus, Target};
use gantry_e2e::{
    Cp, Proxy, ProxyOptions, TempDir, Upstream, eventually, http_client, until_status,
};
use serde_json::{Value, json};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_control_plane() {
    let cp = Cp::start().await;
    let up = Upstream::start("obs").await;
    cp.post("/services", json!({"name": "s", "url": up.url()}))
        .await
        .expect(201);
    cp.post(
        "/services/s/routes",
        json!({"name": "r", "paths": ["/obs"]}),
    )
    .await
    .expect(201);
    let _proxy = Proxy::start(&cp, "gantry-obs").await;
    let prom = Prometheus::scraping(&[Target {
        job: "gantry-cp",
        address: format!("127.0.0.1:{}", cp.admin_port),
        path: "/metrics",
        token: None,
    }])
    .await;

    // The fleet as it is now: one gantry-proxy on a delta stream, synced
    // on the revision being served.
    prom.until(
        r#"gantry_cp_xds_streams{flavour="gantry-proxy",protocol="delta"}"#,
        |v| v == 1.0,
    )
    .await;
    prom.until(r#"gantry_cp_xds_nodes{state="synced"}"#, |v| v == 1.0)
        .await;
    let revision = cp.revision().await;
    prom.until("gantry_cp_revision", |v| v == revision as f64)
        .await;

    // A write reaches the node: one more commit → ACK observation, one
    // more store write, ACKs of route entries counted.
    let synced = prom
        .until("gantry_cp_commit_to_ack_seconds_count", |v| v >= 1.0)
        .await;
    let writes = prom
        .until("gantry_cp_store_write_seconds_count", |v| v >= 2.0)
        .await;
    cp.post(
        "/services/s/routes",
        json!({"name": "r2", "paths": ["/obs2"]}),
    )
    .await
    .expect(201);
    prom.until("gantry_cp_commit_to_ack_seconds_count", |v| {
        v == synced + 1.0
    })
    .await;
    prom.until("gantry_cp_store_write_seconds_count", |v| v == writes + 1.0)
        .await;
    prom.until("gantry_cp_revision", |v| v == (revision + 1) as f64)
        .await;
    prom.until(
        r#"sum(gantry_cp_xds_acks_total{flavour="gantry-proxy"})"#,
        |v| v >= 2.0,
    )
    .await;
    // Histograms work in PromQL: commit → ACK on one machine is well
    // under five seconds at the 99th percentile.
    prom.until(
        "histogram_quantile(0.99, sum by (le) (gantry_cp_commit_to_ack_seconds_bucket))",
        |v| v > 0.0 && v < 5.0,
    )
    .await;
    // No NACK: the series is never created (`or vector(0)` as a
    // dashboard would write it).
    prom.until("sum(gantry_cp_xds_nacks_total) or vector(0)", |v| v == 0.0)
        .await;

    // The dashboard shipped for gantry-cp reads what it serves.
    prom.serves_dashboard(
        "gantry-cp.json",
        &[
            "gantry_cp_xds_nacks_total",
            "gantry_cp_store_write_failures_total",
            "gantry_cp_translation_failures_total",
        ],
    )
    .await;
}

/// A proxy following `cp` with its access log in a file of its own, and
/// one route `/logged` to an upstream; waits until the route answers.
async fn logged_proxy(cp: &Cp, node: &str, extra: &[&str]) -> (Proxy, TempDir, Upstream) {
    let up = Upstream::start("logged").await;
    cp.post("/services", json!({"name": "s", "url": up.url()}))
        .await
        .expect(201);
    cp.post(
        "/services/s/routes",
        json!({"name": "logged", "paths": ["/logged"]}),
    )
    .await
    .expect(201);
    let dir = TempDir::new("gantry-e2e-access-log");
    let mut extra_args = vec![
        "--access-log".to_string(),
        dir.path().join("access.log").display().to_string(),
    ];
    extra_args.extend(extra.iter().map(|s| s.to_string()));
    let proxy = Proxy::start_with(
        cp,
        node,
        ProxyOptions {
            extra_args,
            ..Default::default()
        },
    )
    .await;
    until_status(&format!("{}/logged/warm", proxy.proxy_url()), 200, CONVERGE).await;
    (proxy, dir, up)
}

/// The first line of the log `f` accepts, once it is written (lines are
/// written a little after their responses, in batches).
async fn line_where(dir: &TempDir, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let path = dir.path().join("access.log");
    eventually(what, CONVERGE, Duration::from_millis(20), || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let found = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .find(|l| f(l));
        async move { found.ok_or_else(|| "not written yet".to_string()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_a_line_per_request_and_no_credentials() {
    let cp = Cp::start().await;
    let (proxy, dir, _up) = logged_proxy(&cp, "gantry-access-log", &[]).await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let secret = format!("key-{}", uuid::Uuid::new_v4().simple());
    let c = http_client();
    let r = c
        .get(format!("{}/logged/a?apikey={secret}", proxy.proxy_url()))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("authorization", format!("Bearer {secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    let seen: Value = serde_json::from_slice(&body).unwrap();
    let r = c
        .get(format!("{}/nowhere", proxy.proxy_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let ok = &line_where(&dir, "the /logged/a line", |l| l["path"] == "/logged/a").await;
    let missing = &line_where(&dir, "the /nowhere line", |l| l["path"] == "/nowhere").await;
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/logged/a", "no query string: {ok}");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert!(ok["route"].as_str().unwrap().starts_with("logged"), "{ok}");
    assert!(!ok["upstream_cluster"].as_str().unwrap().is_empty(), "{ok}");
    assert_eq!(ok["trace_id"], trace);
    // The request id the upstream received.
    assert_eq!(
        ok["request_id"], seen["headers"]["x-request-id"],
        "{ok} / {seen}"
    );
    assert_eq!(ok["bytes_sent"], body.len() as u64);
    let (total, upstream) = (
        ok["duration_ms"].as_f64().unwrap(),
        ok["upstream_ms"].as_f64().unwrap(),
    );
    assert!(upstream > 0.0 && total >= upstream, "{ok}");
    assert!(ok["start_time"].as_str().unwrap().ends_with('Z'));
    assert!(ok.get("aborted").is_none(), "{ok}");

    assert_eq!(missing["status"], 404);
    assert_eq!(missing["route"], Value::Null);
    assert_eq!(missing["trace_id"], Value::Null);

    let text = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
    assert!(
        !text.contains(&secret),
        "a credential reached the access log:\n{text}"
    );

    // A plugin's refusal is logged with the route it refused on.
    cp.post(
        "/services/s/routes",
        json!({"name": "guarded", "paths": ["/guarded"]}),
    )
    .await
    .expect(201);
    cp.post("/routes/guarded/plugins", json!({"name": "key-auth"}))
        .await
        .expect(201);
    until_status(&format!("{}/guarded", proxy.proxy_url()), 401, CONVERGE).await;
    // The refusal's line (polling answered 404 before the route arrived).
    let refused = &line_where(&dir, "the 401's line", |l| {
        l["path"] == "/guarded" && l["status"] == 401
    })
    .await;
    assert_eq!(refused["status"], 401, "{refused}");
    assert!(
        refused["route"].as_str().unwrap().starts_with("guarded"),
        "{refused}"
    );
    assert!(refused["request_id"].is_string(), "{refused}");
    assert_eq!(refused["upstream_cluster"], Value::Null, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_samples() {
    let cp = Cp::start().await;
    let (proxy, dir, _up) = logged_proxy(
        &cp,
        "gantry-access-sample",
        &["--access-log-sample-rate", "0.25"],
    )
    .await;
    let c = http_client();
    let url = format!("{}/logged/s", proxy.proxy_url());
    for _ in 0..400 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // Lines are written once a response is sent; give the writer a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(dir.path().join("access.log")).unwrap_or_default();
    let n = text.lines().filter(|l| l.contains("\"/logged/s\"")).count();
    // 400 × 0.25 = 100, binomial standard deviation about 8.7.
    assert!(
        (50..=150).contains(&n),
        "{n} of 400 logged at a 0.25 sample rate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_proxy() {
    let cp = Cp::start().await;
    let (proxy, _dir, _up) = logged_proxy(&cp, "gantry-scraped", &[]).await;
    let prom = Prometheus::scraping_proxy(&proxy).await;
    let ok = r#"sum(gantry_downstream_rq_total{job="gantry-proxy",class="2xx"}) or vector(0)"#;
    let missing = r#"sum(gantry_downstream_rq_total{job="gantry-proxy",class="4xx"}) or vector(0)"#;
    let before_ok = prom.until(ok, |v| v >= 1.0).await;
    let before_missing = prom.until(missing, |v| v >= 0.0).await;
    let c = http_client();
    for _ in 0..25 {
        let r = c
            .get(format!("{}/logged/x", proxy.proxy_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..7 {
        let r = c
            .get(format!("{}/nowhere", proxy.proxy_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    // Exactly the requests sent, by status class.
    prom.until(ok, |v| v == before_ok + 25.0).await;
    prom.until(missing, |v| v == before_missing + 7.0).await;
    prom.until(r#"gantry_no_route_total{job="gantry-proxy"}"#, |v| v >= 7.0)
        .await;
}

/// Kong's prometheus plugin with every switch on: per route and service,
/// by status, source and consumer, the latency histograms and bandwidth,
/// under Kong's names and labels, as PromQL over a real Prometheus sees
/// them; counts carry across a config swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kongs_prometheus_plugin_series() {
    let cp = Cp::start().await;
    let up = Upstream::start("users").await;
    cp.post(
        "/services",
        json!({"name": "user-service", "url": up.url()}),
    )
    .await
    .expect(201);
    cp.post(
        "/services/user-service/routes",
        json!({"name": "users-api", "paths": ["/api/v1/users"]}),
    )
    .await
    .expect(201);
    // A route without a name is labelled by its id, as in Kong.
    let unnamed = cp
        .post(
            "/services/user-service/routes",
            json!({"paths": ["/unnamed"]}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    cp.post("/consumers", json!({"username": "alice"}))
        .await
        .expect(201);
    cp.post("/consumers/alice/key-auth", json!({"key": "alice-key"}))
        .await
        .expect(201);
    cp.post(
        "/routes/users-api/plugins",
        json!({"name": "key-auth", "config": {"hide_credentials": true}}),
    )
    .await
    .expect(201);
    cp.post(
        "/plugins",
        json!({"name": "prometheus", "config": {"per_consumer": true, "status_code_metrics": true,
               "latency_metrics": true, "bandwidth_metrics": true}}),
    )
    .await
    .expect(201);
    let proxy = Proxy::start(&cp, "gantry-kong-prom").await;
    let base = proxy.proxy_url();
    until_status(&format!("{base}/unnamed"), 200, CONVERGE).await;
    // Every write made, not only the route polled for (a snapshot may lag
    // the last write by a moment).
    cp.wait_synced(&proxy.node_id, cp.revision().await, CONVERGE)
        .await;

    let c = http_client();
    let mut alice_bytes = 0;
    for _ in 0..5 {
        let r = c
            .get(format!("{base}/api/v1/users"))
            .header("apikey", "alice-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        alice_bytes += r.bytes().await.unwrap().len();
    }
    for _ in 0..3 {
        let r = c.get(format!("{base}/api/v1/users")).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    for _ in 0..2 {
        let r = c.get(format!("{base}/unnamed")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    let prom = Prometheus::scraping_proxy(&proxy).await;
    let users = r#"service="user-service",route="users-api",workspace="default""#;
    prom.until(
        &format!(
            r#"kong_http_requests_total{{{users},code="200",source="service",consumer="alice"}}"#
        ),
        |v| v == 5.0,
    )
    .await;
    prom.until(
        &format!(r#"kong_http_requests_total{{{users},code="401",source="kong",consumer=""}}"#),
        |v| v == 3.0,
    )
    .await;
    // The unnamed route: polled until it answered, then two more.
    prom.until(
        &format!(r#"kong_http_requests_total{{service="user-service",route="{unnamed}",code="200",source="service",consumer=""}}"#),
        |v| v >= 3.0,
    )
    .await;
    // Every request on the route observed once, in each histogram but the
    // upstream's, which sees only the five that reached it.
    prom.until(
        &format!(r#"kong_request_latency_ms_count{{{users}}}"#),
        |v| v == 8.0,
    )
    .await;
    prom.until(&format!(r#"kong_kong_latency_ms_count{{{users}}}"#), |v| {
        v == 8.0
    })
    .await;
    prom.until(
        &format!(r#"kong_upstream_latency_ms_count{{{users}}}"#),
        |v| v == 5.0,
    )
    .await;
    prom.until(
        &format!(
            r#"histogram_quantile(0.99, sum by (le) (kong_request_latency_ms_bucket{{{users}}}))"#
        ),
        |v| v > 0.0 && v <= 1000.0,
    )
    .await;
    // Bytes out: the bodies alice got, plus their heads.
    prom.until(
        &format!(r#"kong_bandwidth_bytes{{{users},direction="egress",consumer="alice"}}"#),
        |v| v > alice_bytes as f64 && v < (alice_bytes + 5 * 1024) as f64,
    )
    .await;
    prom.until(
        &format!(r#"kong_bandwidth_bytes{{{users},direction="ingress",consumer="alice"}}"#),
        |v| v > 5.0 * 40.0,
    )
    .await;

    // A config swap (another route) keeps the counts.
    let rev = cp
        .post(
            "/services/user-service/routes",
            json!({"name": "other", "paths": ["/other"]}),
        )
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let r = c
        .get(format!("{base}/api/v1/users"))
        .header("apikey", "alice-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    prom.until(
        &format!(
            r#"kong_http_requests_total{{{users},code="200",source="service",consumer="alice"}}"#
        ),
        |v| v == 6.0,
    )
    .await;
    prom.until(
        "sum(resets(kong_http_requests_total[1m])) or vector(0)",
        |v| v == 0.0,
    )
    .await;

    // The dashboard shipped for Kong's metrics reads what the proxy serves.
    prom.serves_dashboard("gantry-proxy-kong.json", &["kong_upstream_target_health"])
        .await;
    // Off here: Kong exports it only when an instance asks.
    assert!(prom.query("kong_upstream_target_health").await.is_empty());
}

/// `upstream_health_metrics`: each Kong upstream's targets with the state
/// active checks put them in, and `healthchecks_off` where none run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kongs_upstream_target_health() {
    let cp = Cp::start().await;
    let live = Upstream::start("live").await;
    let plain = Upstream::start("plain").await;
    let dead = gantry_e2e::reserve_port();
    cp.post(
        "/upstreams",
        json!({"name": "checked-up", "healthchecks": {"active": {"type": "tcp",
            "healthy": {"interval": 1, "successes": 1},
            "unhealthy": {"interval": 1, "tcp_failures": 1, "timeouts": 1}}}}),
    )
    .await
    .expect(201);
    for t in [live.addr(), format!("127.0.0.1:{}", dead.port)] {
        cp.post("/upstreams/checked-up/targets", json!({"target": t}))
            .await
            .expect(201);
    }
    cp.post("/upstreams", json!({"name": "plain-up"}))
        .await
        .expect(201);
    cp.post(
        "/upstreams/plain-up/targets",
        json!({"target": plain.addr()}),
    )
    .await
    .expect(201);
    for (svc, host, path) in [
        ("checked", "checked-up", "/checked"),
        ("plain", "plain-up", "/plain"),
    ] {
        cp.post("/services", json!({"name": svc, "host": host}))
            .await
            .expect(201);
        cp.post(&format!("/services/{svc}/routes"), json!({"paths": [path]}))
            .await
            .expect(201);
    }
    cp.post(
        "/plugins",
        json!({"name": "prometheus", "config": {"upstream_health_metrics": true}}),
    )
    .await
    .expect(201);
    let proxy = Proxy::start(&cp, "gantry-kong-health").await;
    until_status(&format!("{}/plain", proxy.proxy_url()), 200, CONVERGE).await;
    // Every write made, not only the route polled for (a snapshot may lag
    // the last write by a moment).
    cp.wait_synced(&proxy.node_id, cp.revision().await, CONVERGE)
        .await;
    let prom = Prometheus::scraping_proxy(&proxy).await;
    let health = |up: &str, addr: &str, state: &str| {
        format!(
            r#"kong_upstream_target_health{{upstream="{up}",target="{addr}",address="{addr}",state="{state}",subsystem="http"}}"#
        )
    };
    let dead_addr = format!("127.0.0.1:{}", dead.port);
    prom.until(&health("checked-up", &live.addr(), "healthy"), |v| v == 1.0)
        .await;
    prom.until(&health("checked-up", &dead_addr, "unhealthy"), |v| v == 1.0)
        .await;
    prom.until(&health("checked-up", &dead_addr, "healthy"), |v| v == 0.0)
        .await;
    prom.until(
        &health("plain-up", &plain.addr(), "healthchecks_off"),
        |v| v == 1.0,
    )
    .await;
    // One state at a time per target.
    let odd = prom
        .query("sum by (upstream, address) (kong_upstream_target_health) != 1")
        .await;
    assert!(odd.is_empty(), "{odd:?}");
}
