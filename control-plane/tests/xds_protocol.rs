//! The xDS protocol rules, each driven by a hand-written ADS client
//! against the real server: nonces, ACK/NACK, no resend of refused
//! content, wildcard and named subscriptions, delta subscribe/unsubscribe,
//! initial_resource_versions, removals, make-before-break and debounce.

mod common;

use common::{Backend, TestApp};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use gantry_shared::xds::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use prost::Message;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(10);

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        cluster: "edge".into(),
        user_agent_name: "envoy".into(),
        ..Default::default()
    }
}

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
    node: Node,
    first: bool,
}

impl Sotw {
    async fn connect(app: &TestApp, id: &str) -> Sotw {
        let mut client = AggregatedDiscoveryServiceClient::connect(app.xds.clone().expect("xds"))
            .await
            .expect("connect");
        let (tx, rx) = mpsc::channel(16);
        let resp = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("stream");
        Sotw {
            tx,
            rx: resp.into_inner(),
            node: node(id),
            first: true,
        }
    }

    /// Connected and subscribed like Envoy (CDS, LDS wildcard, then RDS
    /// by name), every answer ACKed, until the fleet shows it SYNCED.
    async fn synced(app: &TestApp, id: &str) -> Sotw {
        let mut c = Sotw::connect(app, id).await;
        for (t, names) in [(CLUSTER, &[][..]), (LISTENER, &[]), (ROUTE, &["http"])] {
            c.send(t, names, "", "", None).await;
            let r = c.recv().await;
            c.ack(&r, names).await;
        }
        wait_fleet(app, id, |v| v["state"] == "SYNCED").await;
        c
    }

    async fn send(
        &mut self,
        type_url: &str,
        names: &[&str],
        version: &str,
        nonce: &str,
        error: Option<&str>,
    ) {
        let req = DiscoveryRequest {
            version_info: version.into(),
            node: if std::mem::take(&mut self.first) {
                Some(self.node.clone())
            } else {
                None
            },
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            error_detail: error.map(|m| RpcStatus {
                code: 3,
                message: m.into(),
                details: vec![],
            }),
            ..Default::default()
        };
        self.tx.send(req).await.expect("send");
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("ok")
            .expect("open")
    }

    async fn nothing_for(&mut self, d: Duration) {
        if let Ok(m) = tokio::time::timeout(d, self.rx.message()).await {
            panic!(
                "expected no response, got {:?}",
                m.map(|r| r.map(|r| (r.type_url, r.version_info)))
            );
        }
    }

    async fn ack(&mut self, r: &DiscoveryResponse, names: &[&str]) {
        let (t, v, n) = (r.type_url.clone(), r.version_info.clone(), r.nonce.clone());
        self.send(&t, names, &v, &n, None).await;
    }
}

fn cluster_names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).expect("cluster").name)
        .collect()
}

async fn service(app: &TestApp, name: &str) {
    let (s, body) = app
        .post(
            "/services",
            json!({"name": name, "url": format!("http://127.0.0.1:9/{name}")}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
}

async fn fleet_node(app: &TestApp, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (s, v) = app.get(&format!("/fleet/{id}")).await;
        if s == 200 {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {id} never showed in /fleet"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_fleet(app: &TestApp, id: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = fleet_node(app, id).await;
        if f(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fleet never reached the state: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the snapshot carries every committed revision, so a node
/// that connects now starts from the current config.
async fn settle(app: &TestApp) {
    let want = app.revision().await;
    wait_status(app, |st| st["xds"]["snapshot_revision"] == want).await;
}

async fn app() -> TestApp {
    TestApp::start_with_xds(Backend::Sqlite, Duration::from_millis(5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_nonces_acks_and_stale_nonces() {
    let app = app().await;
    service(&app, "a").await;
    settle(&app).await;
    let mut c = Sotw::connect(&app, "n1").await;
    c.send(CLUSTER, &[], "", "", None).await;
    let r1 = c.recv().await;
    assert_eq!(cluster_names(&r1), ["service.a"]);
    assert_eq!(
        r1.version_info,
        app.revision().await.to_string(),
        "version is the revision"
    );
    c.ack(&r1, &[]).await;
    let v = wait_fleet(&app, "n1", |v| v["types"]["CDS"]["state"] == "SYNCED").await;
    assert_eq!(v["group"], "edge");
    assert_eq!(v["flavour"], "envoy");
    assert_eq!(v["protocol"], "sotw");
    assert_eq!(v["types"]["CDS"]["version_acked"], r1.version_info);

    service(&app, "b").await;
    let r2 = c.recv().await;
    assert_ne!(r2.nonce, r1.nonce, "a nonce per response");
    assert_eq!(cluster_names(&r2), ["service.a", "service.b"]);
    // A NACK carrying the old nonce is stale: ignored, not recorded.
    c.send(
        CLUSTER,
        &[],
        &r1.version_info,
        &r1.nonce,
        Some("stale complaint"),
    )
    .await;
    c.nothing_for(Duration::from_millis(300)).await;
    let v = fleet_node(&app, "n1").await;
    assert!(v["types"]["CDS"]["last_nack"].is_null(), "{v}");
    c.ack(&r2, &[]).await;
    wait_fleet(&app, "n1", |v| {
        v["state"] == "SYNCED" && v["types"]["CDS"]["version_acked"] == r2.version_info.as_str()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_nacked_content_is_not_resent_but_the_next_is() {
    let app = app().await;
    service(&app, "a").await;
    settle(&app).await;
    let mut c = Sotw::connect(&app, "n2").await;
    c.send(CLUSTER, &[], "", "", None).await;
    let r1 = c.recv().await;
    c.send(
        CLUSTER,
        &[],
        "",
        &r1.nonce,
        Some("cluster service.a: bad thing"),
    )
    .await;
    let v = wait_fleet(&app, "n2", |v| v["state"] == "NACKED").await;
    assert_eq!(
        v["types"]["CDS"]["last_nack"]["error"],
        "cluster service.a: bad thing"
    );
    assert_eq!(v["types"]["CDS"]["last_nack"]["version"], r1.version_info);
    // No resend loop: the same content is not offered again...
    c.nothing_for(Duration::from_millis(700)).await;
    // ...even when an unrelated revision changes nothing for this type.
    let (s, _) = app.post("/consumers", json!({"username": "x"})).await;
    assert_eq!(s, 201);
    c.nothing_for(Duration::from_millis(500)).await;
    // A revision with different clusters is sent.
    service(&app, "b").await;
    let r2 = c.recv().await;
    assert_eq!(cluster_names(&r2), ["service.a", "service.b"]);
    c.ack(&r2, &[]).await;
    wait_fleet(&app, "n2", |v| v["state"] == "SYNCED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_named_resources_are_sent_when_they_appear() {
    let app = app().await;
    settle(&app).await;
    let mut c = Sotw::connect(&app, "n3").await;
    c.send(ENDPOINT, &["service.later"], "", "", None).await;
    c.nothing_for(Duration::from_millis(500)).await;
    let (s, _) = app.post("/upstreams", json!({"name": "later.up"})).await;
    assert_eq!(s, 201);
    let (s, _) = app
        .post(
            "/upstreams/later.up/targets",
            json!({"target": "10.1.2.3:8080", "weight": 7}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = app
        .post("/services", json!({"name": "later", "host": "later.up"}))
        .await;
    assert_eq!(s, 201);
    let r = c.recv().await;
    assert_eq!(r.type_url, ENDPOINT);
    assert_eq!(r.resources.len(), 1);
    let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
        r.resources[0].value.as_slice(),
    )
    .expect("cla");
    assert_eq!(cla.cluster_name, "service.later");
    let text = format!("{cla:?}");
    assert!(text.contains("10.1.2.3") && text.contains("8080"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_make_before_break() {
    let app = app().await;
    service(&app, "old").await;
    let (s, _) = app
        .post(
            "/services/old/routes",
            json!({"name": "r", "paths": ["/x"]}),
        )
        .await;
    assert_eq!(s, 201);
    settle(&app).await;
    let mut c = Sotw::synced(&app, "n4").await;

    // Move the route to a new service and delete the old one, in one revision.
    let doc = json!({"_format_version": "3.0", "services": [
        {"name": "new", "url": "http://127.0.0.1:9/new", "routes": [{"name": "r", "paths": ["/x"]}]}
    ]});
    let (s, body) = app.post("/config", doc).await;
    assert_eq!(s, 201, "{body}");
    let first = c.recv().await;
    assert_eq!(first.type_url, CLUSTER, "clusters first");
    assert_eq!(
        cluster_names(&first),
        ["service.new", "service.old"],
        "the old cluster stays while routes use it"
    );
    c.ack(&first, &[]).await;
    let second = c.recv().await;
    assert_eq!(second.type_url, ROUTE, "then routes");
    let rc = envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(
        second.resources[0].value.as_slice(),
    )
    .expect("route config");
    let text = format!("{rc:?}");
    assert!(
        text.contains("service.new") && !text.contains("service.old"),
        "{text}"
    );
    c.ack(&second, &["http"]).await;
    let last = c.recv().await;
    assert_eq!(last.type_url, CLUSTER, "stale clusters removed last");
    assert_eq!(cluster_names(&last), ["service.new"]);
    c.ack(&last, &[]).await;
    wait_fleet(&app, "n4", |v| v["state"] == "SYNCED").await;
}

/// A config with every service in `services` and route `r` on `to`;
/// "eds" is backed by an upstream, so its cluster is an EDS cluster.
fn route_on(to: &str, services: &[&str]) -> Value {
    let svc = |n: &&str| {
        let mut s = if *n == "eds" {
            json!({"name": n, "host": "pool", "port": 80})
        } else {
            json!({"name": n, "url": format!("http://127.0.0.1:9/{n}")})
        };
        if *n == to {
            s["routes"] = json!([{"name": "r", "paths": ["/x"]}]);
        }
        s
    };
    let upstreams = if services.contains(&"eds") {
        json!([{"name": "pool", "targets": [{"target": "127.0.0.1:9"}]}])
    } else {
        json!([])
    };
    json!({"_format_version": "3.0", "upstreams": upstreams,
           "services": services.iter().map(svc).collect::<Vec<_>>()})
}

async fn post_config(app: &TestApp, doc: Value) {
    let (s, body) = app.post("/config", doc).await;
    assert_eq!(s, 201, "{body}");
}

/// The route moves to a new EDS service, and on again (that service
/// deleted) before the node has asked for the new cluster's endpoints, as
/// happens when writes come quickly. Make-before-break keeps the cluster
/// at the node; its endpoints must come too, or Envoy holds its CDS ACK
/// while the cluster warms and nothing moves until its initial fetch
/// times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_a_cluster_kept_for_make_before_break_gets_its_endpoints() {
    let app = app().await;
    post_config(&app, route_on("old", &["old"])).await;
    settle(&app).await;
    let mut c = Sotw::synced(&app, "n-held").await;

    post_config(&app, route_on("eds", &["old", "eds"])).await;
    let mut cds = c.recv().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert!(cluster_names(&cds).contains(&"service.eds".to_string()));
    // Warming service.eds, the node holds this ACK back; meanwhile the
    // route moves on and service.eds is deleted.
    post_config(&app, route_on("third", &["third"])).await;
    settle(&app).await;
    c.send(ENDPOINT, &["service.eds"], "", "", None).await;
    let eds = loop {
        let r = c.recv().await;
        match r.type_url.as_str() {
            t if t == ENDPOINT => break r,
            t if t == CLUSTER => cds = r,
            t => panic!("{t} before the clusters are warm"),
        }
    };
    let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
        eds.resources[0].value.as_slice(),
    )
    .expect("endpoints");
    assert_eq!(cla.cluster_name, "service.eds");
    c.ack(&eds, &["service.eds"]).await;
    // Warm: the node ACKs its clusters, and everything else follows.
    c.ack(&cds, &[]).await;
    let mut clusters = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while clusters != ["service.third"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never converged: {clusters:?}"
        );
        let r = c.recv().await;
        match r.type_url.as_str() {
            t if t == CLUSTER => {
                clusters = cluster_names(&r);
                c.ack(&r, &[]).await;
            }
            t if t == ROUTE => c.ack(&r, &["http"]).await,
            t if t == ENDPOINT => c.ack(&r, &["service.eds"]).await,
            _ => c.ack(&r, &[]).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_a_cluster_kept_for_make_before_break_keeps_its_endpoints() {
    let app = app().await;
    post_config(&app, route_on("old", &["old"])).await;
    settle(&app).await;
    let mut c = Delta::connect(&app, "d-held").await;
    for (t, names) in [(CLUSTER, vec![]), (LISTENER, vec![]), (ROUTE, vec!["http"])] {
        c.send(DeltaDiscoveryRequest {
            type_url: t.into(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        })
        .await;
        let r = c.recv().await;
        c.ack(&r).await;
    }
    wait_fleet(&app, "d-held", |v| v["state"] == "SYNCED").await;

    post_config(&app, route_on("eds", &["old", "eds"])).await;
    let mut cds = c.recv().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(names(&cds), ["service.eds"]);
    post_config(&app, route_on("third", &["third"])).await;
    settle(&app).await;
    c.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec!["service.eds".into()],
        ..Default::default()
    })
    .await;
    let eds = loop {
        let r = c.recv().await;
        match r.type_url.as_str() {
            t if t == ENDPOINT => break r,
            t if t == CLUSTER => cds = r,
            t => panic!("{t} before the clusters are warm"),
        }
    };
    assert_eq!(names(&eds), ["service.eds"]);
    assert!(eds.removed_resources.is_empty());
    c.ack(&eds).await;
    c.ack(&cds).await;
    // The endpoints leave with the cluster, not before.
    let mut eds_removed_while_cluster_held = false;
    let mut cluster_gone = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cluster_gone {
        assert!(tokio::time::Instant::now() < deadline, "never converged");
        let r = c.recv().await;
        if r.type_url == CLUSTER && r.removed_resources.contains(&"service.eds".to_string()) {
            cluster_gone = true;
        }
        if r.type_url == ENDPOINT && r.removed_resources.contains(&"service.eds".to_string()) {
            eds_removed_while_cluster_held = true;
        }
        c.ack(&r).await;
    }
    assert!(
        !eds_removed_while_cluster_held,
        "service.eds lost its endpoints while the node still had the cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_becomes_one_push() {
    let app = TestApp::start_with_xds(Backend::Sqlite, Duration::from_millis(400)).await;
    service(&app, "s0").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    settle(&app).await;
    let mut c = Sotw::connect(&app, "n5").await;
    c.send(CLUSTER, &[], "", "", None).await;
    let r = c.recv().await;
    c.ack(&r, &[]).await;
    for i in 1..=8 {
        service(&app, &format!("s{i}")).await;
    }
    let r = c.recv().await;
    assert_eq!(
        cluster_names(&r).len(),
        9,
        "one push carries the whole burst"
    );
    assert_eq!(r.version_info, app.revision().await.to_string());
    c.ack(&r, &[]).await;
    c.nothing_for(Duration::from_millis(700)).await;
}

struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: tonic::Streaming<DeltaDiscoveryResponse>,
    node: Node,
    first: bool,
}

impl Delta {
    async fn connect(app: &TestApp, id: &str) -> Delta {
        let mut client = AggregatedDiscoveryServiceClient::connect(app.xds.clone().expect("xds"))
            .await
            .expect("connect");
        let (tx, rx) = mpsc::channel(16);
        let resp = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("stream");
        Delta {
            tx,
            rx: resp.into_inner(),
            node: node(id),
            first: true,
        }
    }

    async fn send(&mut self, req: DeltaDiscoveryRequest) {
        let node = if std::mem::take(&mut self.first) {
            Some(self.node.clone())
        } else {
            None
        };
        self.tx
            .send(DeltaDiscoveryRequest { node, ..req })
            .await
            .expect("send");
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("ok")
            .expect("open")
    }

    async fn nothing_for(&mut self, d: Duration) {
        if let Ok(m) = tokio::time::timeout(d, self.rx.message()).await {
            panic!(
                "expected no response, got {:?}",
                m.map(|r| r.map(|r| (r.type_url, r.resources.len(), r.removed_resources)))
            );
        }
    }

    async fn ack(&mut self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    r.resources.iter().map(|x| x.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_wildcard_updates_removals_and_reconnect() {
    let app = app().await;
    service(&app, "a").await;
    service(&app, "b").await;
    settle(&app).await;
    let mut c = Delta::connect(&app, "d1").await;
    c.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await;
    let r = c.recv().await;
    assert_eq!(names(&r), ["service.a", "service.b"]);
    assert!(
        r.resources.iter().all(|x| !x.version.is_empty()),
        "per-resource versions"
    );
    let versions: Vec<(String, String)> = r
        .resources
        .iter()
        .map(|x| (x.name.clone(), x.version.clone()))
        .collect();
    c.ack(&r).await;
    let v = wait_fleet(&app, "d1", |v| v["state"] == "SYNCED").await;
    assert_eq!(v["protocol"], "delta");

    // Only the changed resource travels.
    let (s, _) = app
        .json("PATCH", "/services/b", json!({"connect_timeout": 1234}))
        .await;
    assert_eq!(s, 200);
    let r = c.recv().await;
    assert_eq!(names(&r), ["service.b"]);
    assert!(r.removed_resources.is_empty());
    let before = versions
        .iter()
        .find(|(n, _)| n == "service.b")
        .map(|(_, v)| v.as_str());
    assert_ne!(
        Some(r.resources[0].version.as_str()),
        before,
        "a changed resource gets a new version"
    );
    c.ack(&r).await;

    // Deleting names the removal.
    let (s, _) = app.delete("/services/a").await;
    assert_eq!(s, 204);
    let r = c.recv().await;
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, ["service.a"]);
    c.ack(&r).await;
    drop(c);

    // Reconnect knowing service.a (now gone) and an up-to-date service.b:
    // only the removal is sent, service.b is not sent again.
    settle(&app).await;
    let mut c = Delta::connect(&app, "d1b").await;
    settle(&app).await;
    let mut probe = Delta::connect(&app, "d1probe").await;
    probe
        .send(DeltaDiscoveryRequest {
            type_url: CLUSTER.into(),
            ..Default::default()
        })
        .await;
    let current = probe.recv().await;
    let b_version = current
        .resources
        .iter()
        .find(|x| x.name == "service.b")
        .expect("b")
        .version
        .clone();
    c.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        initial_resource_versions: [
            ("service.a".to_string(), "old".to_string()),
            ("service.b".to_string(), b_version),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    })
    .await;
    let r = c.recv().await;
    assert!(
        r.resources.is_empty(),
        "service.b is already current: {:?}",
        names(&r)
    );
    assert_eq!(r.removed_resources, ["service.a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_named_subscribe_unsubscribe_and_nack() {
    let app = app().await;
    for n in ["up1", "up2"] {
        let (s, _) = app
            .post("/upstreams", json!({"name": format!("{n}.internal")}))
            .await;
        assert_eq!(s, 201);
        let (s, _) = app
            .post(
                &format!("/upstreams/{n}.internal/targets"),
                json!({"target": "10.0.0.1:80"}),
            )
            .await;
        assert_eq!(s, 201);
        let (s, _) = app
            .post(
                "/services",
                json!({"name": n, "host": format!("{n}.internal")}),
            )
            .await;
        assert_eq!(s, 201);
    }
    settle(&app).await;
    let mut c = Delta::connect(&app, "d2").await;
    c.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec!["service.up1".into(), "service.missing".into()],
        ..Default::default()
    })
    .await;
    let r = c.recv().await;
    assert_eq!(
        names(&r),
        ["service.up1"],
        "only what is subscribed and exists"
    );
    assert_eq!(
        r.removed_resources,
        ["service.missing"],
        "a subscribed name that does not exist is named as removed"
    );
    c.ack(&r).await;
    c.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec!["service.up2".into()],
        resource_names_unsubscribe: vec!["service.up1".into()],
        ..Default::default()
    })
    .await;
    let r = c.recv().await;
    assert_eq!(names(&r), ["service.up2"]);
    // NACK it: the same version is not offered again.
    c.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        response_nonce: r.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "no thanks".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    let v = wait_fleet(&app, "d2", |v| v["state"] == "NACKED").await;
    assert_eq!(v["types"]["EDS"]["last_nack"]["error"], "no thanks");
    c.nothing_for(Duration::from_millis(600)).await;
    // A change to the unsubscribed one is not sent; a change to the
    // subscribed one is, as is a subscribed name that comes to exist.
    let (s, _) = app
        .post(
            "/upstreams/up1.internal/targets",
            json!({"target": "10.0.0.9:80"}),
        )
        .await;
    assert_eq!(s, 201);
    c.nothing_for(Duration::from_millis(400)).await;
    let (s, _) = app
        .post(
            "/upstreams/up2.internal/targets",
            json!({"target": "10.0.0.8:80"}),
        )
        .await;
    assert_eq!(s, 201);
    let r = c.recv().await;
    assert_eq!(names(&r), ["service.up2"]);
    c.ack(&r).await;
    let (s, _) = app.post("/upstreams", json!({"name": "m.internal"})).await;
    assert_eq!(s, 201);
    let (s, _) = app
        .post(
            "/upstreams/m.internal/targets",
            json!({"target": "10.0.0.7:80"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = app
        .post(
            "/services",
            json!({"name": "missing", "host": "m.internal"}),
        )
        .await;
    assert_eq!(s, 201);
    let r = c.recv().await;
    assert_eq!(names(&r), ["service.missing"]);
    c.ack(&r).await;
    wait_fleet(&app, "d2", |v| v["state"] == "SYNCED").await;
}

/// A revision the admin API would refuse can still reach the store (an
/// older Gantry, a hand edit): it must be reported, and nothing pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untranslatable_revisions_are_reported_and_not_pushed() {
    let app = app().await;
    service(&app, "a").await;
    let (s, route) = app
        .post("/services/a/routes", json!({"name": "r", "paths": ["/ok"]}))
        .await;
    assert_eq!(s, 201);
    settle(&app).await;
    let mut c = Sotw::connect(&app, "n6").await;
    c.send(CLUSTER, &[], "", "", None).await;
    let r = c.recv().await;
    c.ack(&r, &[]).await;
    let good = app.revision().await;
    wait_status(&app, |st| st["xds"]["snapshot_revision"] == good).await;

    let mut bad = route.clone();
    bad["paths"] = json!(["~/unclosed("]);
    let id = route["id"].as_str().expect("id");
    let mut tx = app.store.begin_write("test").await.expect("tx");
    let index = gantry_cp::store::Index {
        keys: vec!["name=r".into()],
        refs: vec![(
            "services".into(),
            route["service"]["id"].as_str().expect("service").into(),
        )],
        tags: vec![],
    };
    tx.put("routes", id, &bad, &index, "update", None, None)
        .await
        .expect("put");
    tx.commit("update", "corrupt route").await.expect("commit");
    let st = wait_status(&app, |st| !st["xds"]["translation_error"].is_null()).await;
    assert_eq!(st["xds"]["translation_error"]["revision"], good + 1);
    assert!(
        st["xds"]["translation_error"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("r"),
        "{st}"
    );
    assert_eq!(
        st["xds"]["snapshot_revision"], good,
        "the last good snapshot stays"
    );
    c.nothing_for(Duration::from_millis(400)).await;

    // Fixing it through the API publishes again.
    let (s, _) = app
        .json("PATCH", "/routes/r", json!({"paths": ["/fixed"]}))
        .await;
    assert_eq!(s, 200);
    let st = wait_status(&app, |st| st["xds"]["translation_error"].is_null()).await;
    assert_eq!(st["xds"]["snapshot_revision"], app.revision().await);
}

async fn wait_status(app: &TestApp, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, st) = app.get("/status").await;
        if f(&st) {
            return st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never reached the state: {st}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

use envoy_types::pb::envoy::service::status::v3::ClientConfig;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;

/// CSDS's answer for one node.
async fn csds_node(
    client: &mut ClientStatusDiscoveryServiceClient<tonic::transport::Channel>,
    node: &str,
) -> ClientConfig {
    use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
    client
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .expect("fetch")
        .into_inner()
        .config
        .into_iter()
        .find(|c| c.node.as_ref().is_some_and(|n| n.id == node))
        .unwrap_or_else(|| panic!("{node} listed"))
}

/// The first entry of `type_url` in a node's CSDS answer.
fn csds_entry<'a>(cfg: &'a ClientConfig, type_url: &str) -> &'a GenericXdsConfig {
    cfg.generic_xds_configs
        .iter()
        .find(|g| g.type_url == type_url)
        .unwrap_or_else(|| panic!("a {type_url} entry"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csds_reports_what_each_node_was_sent() {
    let app = app().await;
    service(&app, "a").await;
    settle(&app).await;
    let mut c = Sotw::connect(&app, "csds-node").await;
    c.send(CLUSTER, &[], "", "", None).await;
    let r = c.recv().await;
    c.ack(&r, &[]).await;
    wait_fleet(&app, "csds-node", |v| v["state"] == "SYNCED").await;
    let mut client = ClientStatusDiscoveryServiceClient::connect(app.xds.clone().expect("xds"))
        .await
        .expect("csds");
    let cfg = csds_node(&mut client, "csds-node").await;
    let cds = csds_entry(&cfg, CLUSTER);
    assert_eq!(cds.name, "service.a");
    assert_eq!(cds.version_info, r.version_info);
    assert_eq!(cds.config_status, 1, "SYNCED");
    assert!(cds.xds_config.is_some());
    assert!(cds.error_state.is_none(), "an ACKed type has no error");
    // Which replica answers: the one in /fleet.
    let fleet = wait_fleet(&app, "csds-node", |v| v["state"] == "SYNCED").await;
    let meta = cfg
        .node
        .as_ref()
        .and_then(|n| n.metadata.as_ref())
        .expect("node metadata");
    let replica = format!("{:?}", meta.fields["gantry_control_plane"]);
    let id = fleet["control_plane"]["id"].as_str().expect("replica id");
    assert!(replica.contains(id), "{replica} names {id}");

    // A NACK shows as ERROR with the node's reason and the refused version.
    service(&app, "b").await;
    let r2 = c.recv().await;
    c.send(
        CLUSTER,
        &[],
        &r.version_info,
        &r2.nonce,
        Some("cluster service.b: refused here"),
    )
    .await;
    wait_fleet(&app, "csds-node", |v| v["state"] == "NACKED").await;
    let cfg = csds_node(&mut client, "csds-node").await;
    let cds = csds_entry(&cfg, CLUSTER).clone();
    assert_eq!(cds.config_status, 4, "ERROR");
    let err = cds.error_state.expect("error_state on a NACKed type");
    assert_eq!(err.details, "cluster service.b: refused here");
    assert_eq!(err.version_info, r2.version_info);
    assert!(err.last_update_attempt.is_some_and(|t| t.seconds > 0));
}

/// Upstreams with one target each and a service on each (EDS clusters).
async fn eds_services(app: &TestApp, names: &[&str]) {
    for n in names {
        let (s, _) = app
            .post("/upstreams", json!({"name": format!("{n}.internal")}))
            .await;
        assert_eq!(s, 201);
        let (s, _) = app
            .post(
                &format!("/upstreams/{n}.internal/targets"),
                json!({"target": "10.0.0.1:80"}),
            )
            .await;
        assert_eq!(s, 201);
        let (s, _) = app
            .post(
                "/services",
                json!({"name": n, "host": format!("{n}.internal")}),
            )
            .await;
        assert_eq!(s, 201);
    }
}

/// Delta: every subscription is answered. A re-subscription to a name the
/// node has (Envoy's changed cluster re-subscribing its endpoints) gets the
/// resource again though it has not changed; a name that does not exist is
/// named in `removed_resources`, at once and again when re-subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_every_subscription_is_answered() {
    let app = app().await;
    eds_services(&app, &["up1", "up2"]).await;
    settle(&app).await;
    let mut c = Delta::connect(&app, "d-answer").await;
    c.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await;
    let r = c.recv().await;
    assert_eq!(names(&r), ["service.up1", "service.up2"]);
    c.ack(&r).await;
    c.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec!["service.up1".into(), "service.up2".into()],
        ..Default::default()
    })
    .await;
    let r = c.recv().await;
    assert_eq!(names(&r), ["service.up1", "service.up2"]);
    assert!(r.removed_resources.is_empty());
    let version = r.resources[0].version.clone();
    c.ack(&r).await;
    wait_fleet(&app, "d-answer", |v| v["state"] == "SYNCED").await;
    c.nothing_for(Duration::from_millis(300)).await;

    // Re-subscribed, unchanged: sent again, only it.
    c.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec!["service.up1".into()],
        ..Default::default()
    })
    .await;
    let r = c.recv().await;
    assert_eq!(names(&r), ["service.up1"]);
    assert_eq!(r.resources[0].version, version, "the same resource");
    assert!(r.removed_resources.is_empty());
    c.ack(&r).await;
    wait_fleet(&app, "d-answer", |v| v["state"] == "SYNCED").await;
    c.nothing_for(Duration::from_millis(300)).await;

    // A changed cluster: its endpoints follow it, unchanged, unasked (Envoy
    // warms the cluster until they come and does not ask for them).
    let (s, _) = app
        .json("PATCH", "/services/up2", json!({"connect_timeout": 1234}))
        .await;
    assert_eq!(s, 200);
    let r = c.recv().await;
    assert_eq!(r.type_url, CLUSTER);
    assert_eq!(names(&r), ["service.up2"]);
    let e = c.recv().await;
    assert_eq!(e.type_url, ENDPOINT);
    assert_eq!(names(&e), ["service.up2"]);
    assert!(e.removed_resources.is_empty());
    c.ack(&r).await;
    c.ack(&e).await;
    wait_fleet(&app, "d-answer", |v| v["state"] == "SYNCED").await;
    c.nothing_for(Duration::from_millis(300)).await;

    // A name that does not exist: its absence, each time it is asked for.
    for _ in 0..2 {
        c.send(DeltaDiscoveryRequest {
            type_url: ENDPOINT.into(),
            resource_names_subscribe: vec!["service.nope".into()],
            ..Default::default()
        })
        .await;
        let r = c.recv().await;
        assert!(r.resources.is_empty(), "{:?}", names(&r));
        assert_eq!(r.removed_resources, ["service.nope"]);
        c.ack(&r).await;
        c.nothing_for(Duration::from_millis(300)).await;
    }
    wait_fleet(&app, "d-answer", |v| v["state"] == "SYNCED").await;

    // A reconnect that says it has a current resource is not sent it.
    drop(c);
    let mut c = Delta::connect(&app, "d-answer2").await;
    c.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec!["service.up1".into()],
        initial_resource_versions: [("service.up1".to_string(), version)].into_iter().collect(),
        ..Default::default()
    })
    .await;
    c.nothing_for(Duration::from_millis(400)).await;
    wait_fleet(&app, "d-answer2", |v| v["state"] == "SYNCED").await;
}

/// SotW: a request that carries the nonce of a response already ACKed asks
/// again (Envoy's changed cluster re-subscribing its endpoints, names and
/// version unchanged) and is answered with what the node should have; the
/// ACK of that answer is not answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_a_request_asking_again_is_answered() {
    let app = app().await;
    eds_services(&app, &["up1"]).await;
    settle(&app).await;
    let mut c = Sotw::connect(&app, "n-reask").await;
    c.send(CLUSTER, &[], "", "", None).await;
    let cds = c.recv().await;
    c.ack(&cds, &[]).await;
    c.send(ENDPOINT, &["service.up1"], "", "", None).await;
    let eds = c.recv().await;
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(eds.resources.len(), 1);
    c.ack(&eds, &["service.up1"]).await;
    wait_fleet(&app, "n-reask", |v| v["state"] == "SYNCED").await;
    c.nothing_for(Duration::from_millis(300)).await;

    // The cluster changes; its endpoints do not. They follow the cluster
    // anyway: Envoy warms the changed cluster until they come.
    let (s, _) = app
        .json("PATCH", "/services/up1", json!({"connect_timeout": 1234}))
        .await;
    assert_eq!(s, 200);
    let cds = c.recv().await;
    assert_eq!(cds.type_url, CLUSTER);
    let eds2 = c.recv().await;
    assert_eq!(eds2.type_url, ENDPOINT);
    assert_eq!(eds2.resources, eds.resources, "the same endpoints");
    c.ack(&cds, &[]).await;
    c.ack(&eds2, &["service.up1"]).await;
    c.nothing_for(Duration::from_millis(300)).await;

    // The node asks again, as it last had them: answered.
    c.send(
        ENDPOINT,
        &["service.up1"],
        &eds2.version_info,
        &eds2.nonce,
        None,
    )
    .await;
    let again = c.recv().await;
    assert_eq!(again.type_url, ENDPOINT);
    assert_ne!(again.nonce, eds2.nonce);
    assert_eq!(again.resources, eds.resources, "the same endpoints");
    c.ack(&again, &["service.up1"]).await;
    c.nothing_for(Duration::from_millis(400)).await;
    wait_fleet(&app, "n-reask", |v| v["state"] == "SYNCED").await;
}

/// The value of the sample `series` (name and labels, as exposed) in a
/// Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    let r = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_streams_pushes_acks_nacks_and_commits() {
    let app = app().await;
    service(&app, "a").await;
    settle(&app).await;
    let mut c = Sotw::synced(&app, "m1").await;
    // A new cluster, refused by the node.
    service(&app, "b").await;
    let r = c.recv().await;
    assert_eq!(r.type_url, CLUSTER);
    c.send(CLUSTER, &[], "", &r.nonce, Some("cluster service.b: no"))
        .await;
    wait_fleet(&app, "m1", |v| v["state"] == "NACKED").await;

    let text = scrape(&app).await;
    let want =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        want(r#"gantry_cp_xds_streams{flavour="envoy",protocol="sotw"}"#),
        1.0
    );
    assert_eq!(want(r#"gantry_cp_xds_nodes{state="nacked"}"#), 1.0);
    assert_eq!(want(r#"gantry_cp_xds_nodes{state="synced"}"#), 0.0);
    assert_eq!(
        want(r#"gantry_cp_xds_responses_total{type="CDS",flavour="envoy"}"#),
        2.0
    );
    assert_eq!(
        want(r#"gantry_cp_xds_acks_total{type="CDS",flavour="envoy"}"#),
        1.0
    );
    assert_eq!(
        want(r#"gantry_cp_xds_nacks_total{type="CDS",flavour="envoy"}"#),
        1.0
    );
    assert_eq!(
        want(r#"gantry_cp_xds_ack_latency_seconds_count{type="RDS",flavour="envoy"}"#),
        1.0
    );
    // The node synced once, on the first revision it was sent.
    assert_eq!(want("gantry_cp_commit_to_ack_seconds_count"), 1.0);
    assert_eq!(want("gantry_cp_revision"), app.revision().await as f64);
    assert!(want("gantry_cp_translation_seconds_count") >= 2.0);
    assert_eq!(want("gantry_cp_store_write_seconds_count"), 2.0);
    assert_eq!(want("gantry_cp_store_write_failures_total"), 0.0);

    // A closed stream leaves the gauges.
    drop(c);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(&app).await;
        if sample(&text, r#"gantry_cp_xds_nodes{state="nacked"}"#) == Some(0.0) {
            assert_eq!(
                sample(
                    &text,
                    r#"gantry_cp_xds_streams{flavour="envoy",protocol="sotw"}"#
                ),
                None
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
