//! Observability, checked the way an operator checks it: a real
//! Prometheus scrapes gantry-cp's `/metrics` and PromQL over what it
//! stored gives the expected series and values.

use gantry_e2e::prometheus::{Prometheus, Target};
use gantry_e2e::{Cp, Proxy, Upstream};
use serde_json::json;

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
}
