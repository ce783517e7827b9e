//! High availability, end to end: several `gantry-cp` replicas on one
//! Postgres feeding a real `gantry-proxy` under traffic.
//!
//! 1. `a_killed_replica_fails_over_under_load`: three replicas; the one
//!    the proxy streams from is SIGKILLed; no request fails, the proxy
//!    moves to another replica, and writes accepted by any replica reach it.
//! 2. `a_postgres_outage_is_survived`: the database (a server of the test's
//!    own) stops under traffic: admin requests get a prompt 503, the proxy
//!    keeps serving, and once the database is back the replicas recover by
//!    themselves with every acknowledged write in place.
//! 3. `a_proxy_cut_off_from_the_control_plane_keeps_serving_and_resyncs`:
//!    the network between the proxy and every replica stops delivering
//!    (no reset: a partition); the proxy keeps serving its last config,
//!    notices within its keepalive, and catches up once the path heals.
//!
//! Timings are printed (docs/benchmarks.md keeps them), not asserted.
//! Run: `cargo build --workspace --bins && cargo nextest run --workspace -E 'binary(ha)' --no-capture`.

use gantry_e2e::load::Load;
use gantry_e2e::postgres::PrivatePostgres;
use gantry_e2e::relay::Relay;
use gantry_e2e::{Backend, Cp, CpOptions, Proxy, ProxyOptions, Upstream, eventually, http_client};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// Waits until GET `path` through the proxy answers 200.
async fn live(proxy: &Proxy, path: &str) {
    eventually(
        &format!("GET {path} through the proxy"),
        CONVERGE,
        POLL,
        || async {
            match proxy.get(path).await {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// The control-plane address the proxy streams from right now.
async fn connected(proxy: &Proxy) -> Option<String> {
    proxy.xds_status().await["connected"]
        .as_str()
        .map(str::to_string)
}

/// Waits until the load has served `n` more requests.
async fn served(load: &Load, n: u64, what: &str) {
    let from = load.ok();
    eventually(what, CONVERGE, POLL, || async {
        match load.ok() >= from + n {
            true => Ok(()),
            false => Err(format!("{} OK", load.ok() - from)),
        }
    })
    .await;
}

fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} requests failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// Route `/{name}` on service `ha`, written through `cp`; its revision.
async fn add_route(cp: &Cp, name: &str) -> i64 {
    cp.post(
        "/services/ha/routes",
        json!({"name": name, "paths": [format!("/{name}")]}),
    )
    .await
    .committed()
}

async fn service_with_route(cp: &Cp, up: &Upstream) {
    cp.post("/services", json!({"name": "ha", "url": up.url()}))
        .await
        .committed();
    add_route(cp, "ha").await;
}

fn proxy_on(replicas: &[&Cp], node: &str) -> Proxy {
    let addresses: Vec<String> = replicas.iter().map(|c| c.xds_url()).collect();
    Proxy::spawn(
        &addresses.join(","),
        replicas[0].proxy_http_port,
        replicas[0].proxy_https_port,
        node,
        ProxyOptions::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_fails_over_under_load() {
    let mut a = Cp::start_on(Backend::Postgres).await;
    let b = a.replica().await;
    let c = a.replica().await;
    let up = Upstream::start("ha").await;
    service_with_route(&a, &up).await;
    let mut proxy = proxy_on(&[&a, &b, &c], "ha-failover");
    proxy.wait_ready(Some(&a), CONVERGE).await;
    live(&proxy, "/ha").await;
    assert_eq!(
        connected(&proxy).await,
        Some(a.xds_url()),
        "the first address is tried first"
    );

    let load = Load::start(
        &http_client(),
        vec![format!("{}/ha/x", proxy.proxy_url()); 4],
        Duration::from_millis(2),
    );
    served(&load, 100, "traffic before the kill").await;

    // A write accepted by another replica reaches the proxy on this one.
    let t = Instant::now();
    add_route(&b, "via-b").await;
    live(&proxy, "/via-b").await;
    let other_replica = t.elapsed();

    a.kill();
    let killed = Instant::now();
    let moved_to = eventually(
        "the proxy to stream from another replica",
        CONVERGE,
        POLL,
        || async {
            match connected(&proxy).await {
                Some(addr) if addr != a.xds_url() => Ok(addr),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let failover = killed.elapsed();
    assert!(
        moved_to == b.xds_url() || moved_to == c.xds_url(),
        "{moved_to} is one of the live replicas"
    );

    // Every replica converges the node to the newest revision: a write on
    // the third replica after the failover is live on the proxy.
    let t = Instant::now();
    let rev = add_route(&c, "via-c").await;
    live(&proxy, "/via-c").await;
    let after_failover = t.elapsed();
    let view = c.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let listen = moved_to.trim_start_matches("http://");
    assert_eq!(
        view["control_plane"]["xds_listen"], listen,
        "/fleet names the replica the node is on: {view}"
    );
    served(&load, 100, "traffic after the failover").await;

    let (ok, failures, _) = load.finish().await;
    eprintln!(
        "replica failover: {ok} requests, {} failed; proxy on another replica {failover:?} after the SIGKILL; \
         a write on another replica live in {other_replica:?} before, {after_failover:?} after",
        failures.len()
    );
    assert_no_failures(&failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_survived() {
    let pg = PrivatePostgres::start();
    let opts = CpOptions {
        database_url: Some(pg.url()),
        ..Default::default()
    };
    let a = Cp::start_with(Backend::Postgres, &[], opts).await;
    let b = a.replica().await;
    let up = Upstream::start("ha").await;
    service_with_route(&a, &up).await;
    add_route(&a, "acked").await;
    let mut proxy = proxy_on(&[&a, &b], "ha-pg");
    proxy.wait_ready(Some(&a), CONVERGE).await;
    live(&proxy, "/acked").await;
    let load = Load::start(
        &http_client(),
        vec![format!("{}/ha/x", proxy.proxy_url()); 4],
        Duration::from_millis(2),
    );
    served(&load, 100, "traffic before the outage").await;

    pg.stop_server();
    let down = Instant::now();
    // Every admin write is refused with a 503 that says why: the first
    // one may wait out a connect attempt, never longer.
    let mut slowest = Duration::ZERO;
    for (i, cp) in [&a, &b, &a, &b].into_iter().enumerate() {
        let t = Instant::now();
        let r = cp
            .post(
                "/services/ha/routes",
                json!({"name": format!("lost-{i}"), "paths": [format!("/lost-{i}")]}),
            )
            .await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(
            r.status, 503,
            "a write while the database is down: {}",
            r.body
        );
        let msg = r.body["message"].as_str().unwrap_or_default();
        assert!(msg.contains("database is unreachable"), "{msg}");
    }
    assert!(
        slowest < Duration::from_secs(10),
        "a refused write took {slowest:?}: a hang"
    );
    // Once the outage is known, refusals are immediate.
    let t = Instant::now();
    let r = b.get("/routes").await;
    let prompt = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    let st = a.get("/status").await.expect(200);
    assert_eq!(st["database"]["reachable"], false, "{st}");
    served(&load, 100, "traffic while the database is down").await;
    let outage = down.elapsed();

    pg.start_server();
    let back = Instant::now();
    for cp in [&a, &b] {
        eventually(
            "the replica to accept writes again",
            CONVERGE,
            Duration::from_millis(100),
            || async {
                match cp.get("/status").await.body["database"]["reachable"].as_bool() {
                    Some(true) => Ok(()),
                    other => Err(format!("reachable: {other:?}")),
                }
            },
        )
        .await;
    }
    let recovered = back.elapsed();
    // Nothing acknowledged was lost; nothing refused was stored.
    for cp in [&a, &b] {
        cp.get("/routes/acked").await.expect(200);
        assert_eq!(cp.get("/routes/lost-0").await.status, 404);
    }
    // Writes flow again, through either replica, to the proxy.
    let rev = add_route(&b, "after").await;
    live(&proxy, "/after").await;
    a.wait_synced(&proxy.node_id, rev, CONVERGE).await;

    let (ok, failures, _) = load.finish().await;
    let refused: Value = json!({"slowest": format!("{slowest:?}"), "known": format!("{prompt:?}")});
    eprintln!(
        "postgres outage: {ok} requests, {} failed; outage {outage:?}; admin refusals {refused}; \
         replicas writable {recovered:?} after the database came back",
        failures.len()
    );
    assert_no_failures(&failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_cut_off_from_the_control_plane_keeps_serving_and_resyncs() {
    let cp = Cp::start_on(Backend::Sqlite).await;
    let up = Upstream::start("ha").await;
    service_with_route(&cp, &up).await;
    let xds = format!("127.0.0.1:{}", cp.xds_port)
        .parse()
        .expect("address");
    let path = Relay::start(xds).await;
    let opts = ProxyOptions {
        extra_args: vec![
            "--xds-keepalive-interval-ms=300".into(),
            "--xds-keepalive-timeout-ms=300".into(),
        ],
        ..Default::default()
    };
    let mut proxy = Proxy::spawn(
        &path.url(),
        cp.proxy_http_port,
        cp.proxy_https_port,
        "ha-cut",
        opts,
    );
    proxy.wait_ready(Some(&cp), CONVERGE).await;
    live(&proxy, "/ha").await;
    assert_eq!(connected(&proxy).await, Some(path.url()));
    let load = Load::start(
        &http_client(),
        vec![format!("{}/ha/x", proxy.proxy_url()); 4],
        Duration::from_millis(2),
    );
    served(&load, 100, "traffic before the cut").await;

    path.cut();
    let cut = Instant::now();
    // A write made during the partition is committed but cannot arrive.
    let rev = add_route(&cp, "during-cut").await;
    let noticed = eventually(
        "the proxy to give up on the silent connection",
        CONVERGE,
        POLL,
        || async {
            match connected(&proxy).await {
                None => Ok(cut.elapsed()),
                Some(a) => Err(a),
            }
        },
    )
    .await;
    served(&load, 200, "traffic during the cut").await;
    assert_eq!(
        proxy.get("/during-cut").await.map(|(s, _)| s).ok(),
        Some(404),
        "nothing crosses the cut"
    );
    // Still cut: reconnect attempts hang and time out; the last good
    // configuration keeps serving.
    tokio::time::sleep(Duration::from_secs(2)).await;
    served(&load, 100, "traffic while reconnects fail").await;

    path.heal();
    let healed = Instant::now();
    live(&proxy, "/during-cut").await;
    let caught_up = healed.elapsed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    served(&load, 100, "traffic after the heal").await;

    let (ok, failures, _) = load.finish().await;
    eprintln!(
        "partition: {ok} requests, {} failed; the silent connection given up {noticed:?} after the cut \
         (keepalive 300 ms + 300 ms); the write made during the cut live {caught_up:?} after the heal",
        failures.len()
    );
    assert_no_failures(&failures);
}
