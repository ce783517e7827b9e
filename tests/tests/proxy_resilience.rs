//! gantry-proxy's resilience features against real upstreams: passive
//! health (outlier detection, the same as a real Envoy on the same control
//! plane), per-try timeouts, the max_requests circuit breaker, and request
//! mirroring. The last three have no Kong knob, so a scripted xDS server
//! feeds them as Envoy resources.

use envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers;
use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use envoy_types::pb::envoy::config::route::v3::{RetryPolicy, Route};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use gantry_e2e::resources::*;
use gantry_e2e::script::Ads;
use gantry_e2e::{Cp, Envoy, Proxy, ProxyOptions, Upstream, ads, eventually, send_json};
use serde_json::json;
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(15);
/// The listener port the scripted config names; the proxy's offset moves it.
const BASE_PORT: u16 = 10_000;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("http client")
}

fn ms(n: i64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: n / 1000,
        nanos: ((n % 1000) * 1_000_000) as i32,
    })
}

fn action(r: &mut Route) -> &mut envoy_types::pb::envoy::config::route::v3::RouteAction {
    match r.action.as_mut() {
        Some(Action::Route(a)) => a,
        _ => panic!("a forwarding route"),
    }
}

/// What a scripted test holds on to: dropping it stops the server.
struct Scripted {
    proxy: Proxy,
    task: tokio::task::JoinHandle<()>,
    _probe: Upstream,
}

/// gantry-proxy fed by a scripted xDS server with `clusters` and `routes`,
/// returned once it routes (a probe route answers).
async fn scripted(
    node: &str,
    mut clusters: Vec<(String, Any)>,
    mut routes: Vec<Route>,
) -> Scripted {
    let probe = Upstream::start("probe").await;
    clusters.push(cluster("probe", probe.port));
    routes.insert(0, route(prefix("/__probe"), "probe"));
    let server = Ads::default();
    let (url, task) = server.serve().await;
    server.set("1", ads::LISTENER, vec![listener("http", BASE_PORT, "rc")]);
    server.set("1", ads::CLUSTER, clusters);
    server.set("1", ads::ROUTE, vec![route_config("rc", routes)]);
    let mut proxy = Proxy::spawn(
        &url,
        BASE_PORT,
        BASE_PORT + 1,
        node,
        ProxyOptions::default(),
    );
    proxy.wait_ready(None, CONVERGE).await;
    // Ready means a config is in; the route configuration may follow it.
    let probe_url = format!("{}/__probe", proxy.proxy_url());
    eventually(
        "the scripted routes are served",
        CONVERGE,
        Duration::from_millis(20),
        || {
            let req = client().get(probe_url.clone());
            async move {
                match req.send().await {
                    Ok(r) if r.status() == 200 => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
    Scripted {
        proxy,
        task,
        _probe: probe,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeouts_move_a_slow_attempt_to_another_endpoint() {
    let slow = Upstream::start_with_delay("slow", Duration::from_secs(3)).await;
    let fast = Upstream::start("fast").await;
    let mut to_pool = route(prefix("/pool"), "pool");
    action(&mut to_pool).timeout = ms(10_000);
    action(&mut to_pool).retry_policy = Some(RetryPolicy {
        retry_on: "5xx".into(),
        num_retries: Some(UInt32Value { value: 1 }),
        per_try_timeout: ms(300),
        ..Default::default()
    });
    let mut to_slow = route(prefix("/slow"), "slow");
    action(&mut to_slow).timeout = ms(10_000);
    action(&mut to_slow).retry_policy = to_pool_policy(&to_pool);
    let Scripted { proxy, task, .. } = scripted(
        "gantry-per-try",
        vec![
            pack("pool", static_cluster("pool", &[slow.port, fast.port])),
            pack("slow", static_cluster("slow", &[slow.port])),
        ],
        vec![to_pool, to_slow],
    )
    .await;
    let client = client();
    let base = proxy.proxy_url();

    // Round robin sends every other first attempt to the slow endpoint;
    // its per-try timeout moves the request to the fast one.
    for i in 0..6 {
        let started = Instant::now();
        let (status, body) = send_json(client.get(format!("{base}/pool/{i}")))
            .await
            .expect("request");
        let took = started.elapsed();
        assert_eq!(
            (status, body["upstream"].as_str()),
            (200, Some("fast")),
            "{body}"
        );
        assert!(
            took < Duration::from_millis(1500),
            "request {i} took {took:?}: the 300 ms per-try timeout did not cut the slow attempt"
        );
    }
    assert!(slow.requests() >= 2, "the slow endpoint was tried");

    // Every attempt slow: two per-try timeouts, then Envoy's 504, long
    // before the 10 s route timeout.
    let started = Instant::now();
    let r = client
        .get(format!("{base}/slow/x"))
        .send()
        .await
        .expect("request");
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    assert_eq!(r.text().await.unwrap(), "upstream request timeout");
    assert!(took < Duration::from_millis(2000), "took {took:?}");

    let (_, stats) = proxy.admin_get("/stats/prometheus").await;
    let per_try = stats
        .lines()
        .filter(|l| l.starts_with("gantry_upstream_rq_per_try_timeout_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(
        per_try >= 5.0,
        "per-try timeouts counted: {per_try}\n{stats}"
    );
    task.abort();
}

fn to_pool_policy(r: &Route) -> Option<RetryPolicy> {
    match r.action.as_ref() {
        Some(Action::Route(a)) => a.retry_policy.clone(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_max_requests_breaker_refuses_what_exceeds_it() {
    let slow = Upstream::start_with_delay("slow", Duration::from_millis(1500)).await;
    let mut c = static_cluster("slow", &[slow.port]);
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            max_requests: Some(UInt32Value { value: 1 }),
            ..Default::default()
        }],
        ..Default::default()
    });
    let Scripted { proxy, task, .. } = scripted(
        "gantry-breaker",
        vec![pack("slow", c)],
        vec![route(prefix("/"), "slow")],
    )
    .await;
    let client = client();
    let base = proxy.proxy_url();
    let first = tokio::spawn({
        let (client, url) = (client.clone(), format!("{base}/one"));
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    eventually(
        "the first request reaches the upstream",
        CONVERGE,
        Duration::from_millis(10),
        || async {
            if slow.requests() == 1 {
                Ok(())
            } else {
                Err(slow.requests().to_string())
            }
        },
    )
    .await;
    let r = client
        .get(format!("{base}/two"))
        .send()
        .await
        .expect("second");
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()
            .get("x-envoy-overloaded")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let text = r.text().await.unwrap();
    assert!(text.ends_with("reset reason: overflow"), "{text}");
    assert_eq!(first.await.unwrap().expect("first"), 200);
    // Once the first is done, the slot is free again.
    let r = client
        .get(format!("{base}/three"))
        .send()
        .await
        .expect("third");
    assert_eq!(r.status(), 200);
    assert_eq!(
        slow.requests(),
        2,
        "the refused request never reached the upstream"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_requests_reach_the_shadow_cluster_with_their_body() {
    let primary = Upstream::start("primary").await;
    let shadow = Upstream::start("shadow").await;
    let mut r = route(prefix("/"), "primary");
    action(&mut r).request_mirror_policies = vec![RequestMirrorPolicy {
        cluster: "shadow".into(),
        ..Default::default()
    }];
    let Scripted { proxy, task, .. } = scripted(
        "gantry-mirror",
        vec![
            pack("primary", static_cluster("primary", &[primary.port])),
            pack("shadow", static_cluster("shadow", &[shadow.port])),
        ],
        vec![r],
    )
    .await;
    let client = client();
    let base = proxy.proxy_url();
    // A body larger than any single read, streamed (no retry policy, so
    // nothing buffers it): the mirror gets a copy as it flows.
    let body: String = (0..200_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let (status, seen) = send_json(
        client
            .post(format!("{base}/orders?x=1"))
            .header("host", "api.example.com")
            .body(body.clone()),
    )
    .await
    .expect("request");
    assert_eq!((status, seen["upstream"].as_str()), (200, Some("primary")));
    assert_eq!(seen["body"].as_str().map(str::len), Some(body.len()));
    assert_eq!(seen["headers"]["host"], "api.example.com");
    let copy = eventually(
        "the shadow gets the copy",
        CONVERGE,
        Duration::from_millis(20),
        || async { shadow.last().ok_or_else(|| "nothing yet".to_string()) },
    )
    .await;
    assert_eq!(copy["method"], "POST");
    assert_eq!(copy["path"], "/orders?x=1");
    assert_eq!(copy["headers"]["host"], "api.example.com-shadow");
    assert!(
        copy["body"].as_str() == Some(body.as_str()),
        "the mirror got the whole body"
    );
    assert_eq!(primary.requests(), 1);
    assert_eq!(shadow.requests(), 1);
    task.abort();
}

/// Kong's passive health check (`healthchecks.passive.unhealthy.http_failures`)
/// becomes Envoy outlier detection; gantry-proxy and a real Envoy on the same
/// control plane both eject the failing target after that many 5xx in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_ejects_a_failing_target_like_envoy() {
    let good = Upstream::start("good").await;
    let bad = Upstream::start("bad").await;
    bad.set_status(500);
    let cp = Cp::start().await;
    let mut envoy = Envoy::spawn(&cp, "envoy-outlier", true);
    let proxy = Proxy::start(&cp, "gantry-outlier").await;
    envoy.wait_ready(&cp, CONVERGE).await;
    cp.post(
        "/upstreams",
        json!({"name": "pool", "healthchecks": {"passive": {"unhealthy": {"http_failures": 2}}}}),
    )
    .await
    .expect(201);
    for u in [&good, &bad] {
        cp.post("/upstreams/pool/targets", json!({"target": u.addr()}))
            .await
            .expect(201);
    }
    cp.post("/services", json!({"name": "svc", "host": "pool"}))
        .await
        .expect(201);
    let rev = cp
        .post(
            "/services/svc/routes",
            json!({"name": "r", "paths": ["/od"]}),
        )
        .await
        .committed();
    cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;

    let client = client();
    for (who, base) in [
        ("envoy", envoy.proxy_url()),
        ("gantry-proxy", proxy.proxy_url()),
    ] {
        good.reset();
        bad.reset();
        // Until the bad target has failed twice in a row it gets its share.
        let mut failures = 0;
        for _ in 0..40 {
            let r = client
                .get(format!("{base}/od"))
                .send()
                .await
                .expect("request");
            if r.status() == 500 {
                failures += 1;
            }
            if bad.requests() >= 2 {
                break;
            }
        }
        assert_eq!(failures, 2, "{who}: the bad target answered until ejected");
        // Ejected for 30 s: everything goes to the good one now.
        for i in 0..20 {
            let (status, body) = send_json(client.get(format!("{base}/od/{i}")))
                .await
                .expect("request");
            assert_eq!(
                (status, body["upstream"].as_str()),
                (200, Some("good")),
                "{who}: request {i} after the ejection"
            );
        }
        assert_eq!(
            bad.requests(),
            2,
            "{who}: no request reached the ejected target"
        );
    }
    let envoy_ejections = envoy
        .stat("cluster.service.svc.outlier_detection.ejections_enforced_consecutive_5xx")
        .await;
    eprintln!("envoy ejections_enforced_consecutive_5xx: {envoy_ejections:?}");
    let (_, stats) = proxy.admin_get("/stats/prometheus").await;
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("gantry_outlier_ejections_total") && l.ends_with(" 1")),
        "gantry-proxy counted one ejection:\n{stats}"
    );
}
