//! gantry-proxy fails closed: whatever order listeners (which carry the
//! consumers, credentials and plugin instances) and route configurations
//! (which name the instances each route runs) arrive in, and whatever was
//! refused before, a route whose policies the proxy does not hold as the
//! control plane last sent them answers 500, never the upstream.
//!
//! A scripted xDS server feeds the real `gantry-proxy` binary, so the tests
//! can send what a control plane of another version might: updates the
//! proxy refuses, and route configurations ahead of their listener.

use gantry_e2e::resources::*;
use gantry_e2e::script::Ads;
use gantry_e2e::{Proxy, ProxyOptions, TempDir, Upstream, ads, eventually, send_json};
use gantry_shared::key_digest::key_digest;
use gantry_shared::proto::plugins as pb;
use serde_json::{Value, json};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(15);
const BASE_PORT: u16 = 10_000;

fn key_auth(id: &str) -> pb::Plugin {
    plugin(id, "key-auth", json!({ "key_names": ["apikey"] }))
}

fn consumer(keys: &[&str]) -> pb::Consumer {
    pb::Consumer {
        id: "c-alice".into(),
        username: "alice".into(),
        keyauth_credentials: keys
            .iter()
            .map(|k| pb::KeyAuthCredential {
                id: format!("cred-{k}"),
                key_digest: key_digest(&SALT, k).to_vec(),
            })
            .collect(),
        ..Default::default()
    }
}

/// The salt the scripted control plane digests keys with.
const SALT: [u8; 32] = [7; 32];

fn gateway(keys: &[&str], plugins: Vec<pb::Plugin>) -> pb::Gateway {
    pb::Gateway {
        consumers: vec![consumer(keys)],
        plugins,
        key_salt: SALT.to_vec(),
        ..Default::default()
    }
}

/// A plugin instance gantry-proxy refuses to compile, as a newer control
/// plane could send one.
fn refused_plugin() -> pb::Plugin {
    plugin("p-bad", "no-such-plugin", json!({}))
}

/// `/open` without plugins, `/keyed` with key-auth instance `ka`.
fn routes(
    extra: Vec<envoy_types::pb::envoy::config::route::v3::Route>,
) -> (String, envoy_types::pb::google::protobuf::Any) {
    let mut rs = extra;
    rs.push(with_plugins(
        route(prefix("/keyed"), "a"),
        &["ka"],
        &["key-auth"],
    ));
    rs.push(route(prefix("/open"), "a"));
    route_config("rc", rs)
}

struct Rig {
    server: Ads,
    /// The scripted server's task (the runtime ends it with the test).
    serve: tokio::task::JoinHandle<()>,
    proxy: Proxy,
    _upstream: Upstream,
}

impl Rig {
    async fn start(gw: &pb::Gateway, opts: ProxyOptions) -> Rig {
        let upstream = Upstream::start("a").await;
        let server = Ads::default();
        server.set("1", ads::CLUSTER, vec![cluster("a", upstream.port)]);
        server.set(
            "1",
            ads::LISTENER,
            vec![plugin_listener("http", BASE_PORT, "rc", gw)],
        );
        server.set("1", ads::ROUTE, vec![routes(Vec::new())]);
        let (xds, serve) = server.serve().await;
        let mut proxy = Proxy::spawn(&xds, BASE_PORT, BASE_PORT + 1, "fail-closed", opts);
        proxy.wait_ready(None, CONVERGE).await;
        let rig = Rig {
            server,
            serve,
            proxy,
            _upstream: upstream,
        };
        rig.until("/open", None, 200).await;
        rig
    }

    async fn try_get(&self, path: &str, key: Option<&str>) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.proxy.request(reqwest::Method::GET, path);
        if let Some(k) = key {
            req = req.header("apikey", k);
        }
        send_json(req).await
    }

    /// GET through the proxy with an optional `apikey`.
    async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        self.try_get(path, key).await.expect("the proxy answers")
    }

    async fn until(&self, path: &str, key: Option<&str>, want: u16) -> Value {
        eventually(
            &format!("GET {path} -> {want}"),
            CONVERGE,
            Duration::from_millis(20),
            || async move {
                match self.try_get(path, key).await {
                    Ok((s, b)) if s == want => Ok(b),
                    Ok((s, b)) => Err(format!("{s} {b}")),
                    // The listener may still be binding.
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
    }

    /// Pushes and waits for the proxy's answer: `Some(reason)` for a NACK.
    async fn push(
        &self,
        version: &str,
        type_url: &str,
        items: Vec<(String, envoy_types::pb::google::protobuf::Any)>,
    ) -> Option<String> {
        let nonce = self.server.push(version, type_url, items).await;
        let reply = self.server.reply_to(&nonce, CONVERGE).await;
        reply.error_detail.map(|e| e.message)
    }

    async fn listener(&self, version: &str, gw: &pb::Gateway) -> Option<String> {
        self.push(
            version,
            ads::LISTENER,
            vec![plugin_listener("http", BASE_PORT, "rc", gw)],
        )
        .await
    }

    /// A request must never reach the upstream: several tries, all 500.
    async fn refused(&self, path: &str, key: Option<&str>) {
        for _ in 0..5 {
            let (s, b) = self.get(path, key).await;
            assert_eq!(
                s, 500,
                "GET {path} must be refused while its policies are not held: {b}"
            );
            assert_eq!(b["message"], "An unexpected error occurred", "{b}");
        }
    }
}

/// The reproduction, turned around: a revocation (a deleted key)
/// arrives in a listener the proxy refuses (it also carries a plugin this
/// proxy cannot run). The key must not keep working: the routes that run
/// plugins answer 500 until a listener is accepted, the others serve on.
/// A restart from the snapshot file, control plane gone, keeps the fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_revocation_fences_the_routes_it_protects() {
    let dir = TempDir::new("gantry-fail-closed");
    let snapshot = dir.path().join("snapshot.json");
    let opts = || ProxyOptions {
        snapshot_cache: Some(snapshot.clone()),
        ..Default::default()
    };
    let rig = Rig::start(&gateway(&["k1"], vec![key_auth("ka")]), opts()).await;
    rig.until("/keyed", Some("k1"), 200).await;
    assert_eq!(rig.get("/keyed", None).await.0, 401);

    let nack = rig
        .listener("2", &gateway(&[], vec![key_auth("ka"), refused_plugin()]))
        .await
        .expect("a listener with a plugin gantry-proxy cannot run is NACKed");
    assert!(nack.contains("no-such-plugin"), "{nack}");
    rig.refused("/keyed", Some("k1")).await;
    assert_eq!(
        rig.get("/open", None).await.0,
        200,
        "routes without plugins serve on"
    );
    let status = rig.proxy.xds_status().await;
    assert!(
        status["fences"][0]
            .as_str()
            .is_some_and(|f| f.starts_with("LDS/http: ")),
        "/xds lists the fence: {status}"
    );
    let stats = rig.proxy.admin_get("/stats/prometheus").await.1;
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("gantry_policy_refused_total ") && !l.ends_with(" 0")),
        "{stats}"
    );

    // A proxy restarted from its snapshot, with no control plane, stays fenced.
    let Rig {
        server,
        serve,
        proxy,
        _upstream: upstream,
        ..
    } = rig;
    serve.abort();
    drop(proxy);
    drop(server);
    let mut again = Proxy::spawn(
        "http://127.0.0.1:9",
        BASE_PORT,
        BASE_PORT + 1,
        "fail-closed",
        opts(),
    );
    again.wait_ready(None, CONVERGE).await;
    for _ in 0..5 {
        let (s, b) = send_json(
            again
                .request(reqwest::Method::GET, "/keyed")
                .header("apikey", "k1"),
        )
        .await
        .unwrap();
        assert_eq!(s, 500, "{b}");
    }
    let (s, _) = send_json(again.request(reqwest::Method::GET, "/open"))
        .await
        .unwrap();
    assert_eq!(s, 200);
    drop(again);
    drop(upstream);

    // Once an update of the listener is accepted, the revocation holds.
    let rig = Rig::start(
        &gateway(&["k1"], vec![key_auth("ka")]),
        ProxyOptions::default(),
    )
    .await;
    rig.listener("2", &gateway(&[], vec![key_auth("ka"), refused_plugin()]))
        .await
        .expect("NACK");
    rig.refused("/keyed", Some("k1")).await;
    assert_eq!(
        rig.listener("3", &gateway(&[], vec![key_auth("ka")])).await,
        None
    );
    rig.until("/keyed", Some("k1"), 401).await;
    assert!(
        rig.proxy.xds_status().await["fences"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

/// A route that gains a policy its listener does not carry (the listener
/// that would carry it was refused, or has not arrived yet): the route
/// configuration is accepted and the route answers 500, in both orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_naming_a_plugin_its_listener_lacks_is_refused_not_served() {
    let rig = Rig::start(
        &gateway(&["k1"], vec![key_auth("ka")]),
        ProxyOptions::default(),
    )
    .await;
    assert_eq!(rig.get("/other", None).await.0, 404);

    // The listener adding instance `ka2` is refused; the route naming it is not.
    rig.listener(
        "2",
        &gateway(
            &["k1"],
            vec![key_auth("ka"), key_auth("ka2"), refused_plugin()],
        ),
    )
    .await
    .expect("NACK");
    let other = with_plugins(route(prefix("/other"), "a"), &["ka2"], &["key-auth"]);
    assert_eq!(
        rig.push("3", ads::ROUTE, vec![routes(vec![other.clone()])])
            .await,
        None
    );
    rig.refused("/other", None).await;
    rig.refused("/other", Some("k1")).await;

    // The listener arrives: the policy applies.
    assert_eq!(
        rig.listener(
            "4",
            &gateway(&["k1"], vec![key_auth("ka"), key_auth("ka2")])
        )
        .await,
        None
    );
    rig.until("/other", None, 401).await;
    rig.until("/other", Some("k1"), 200).await;

    // Routes first, listener second: refused in between, enforced after.
    let deny = plugin(
        "ip1",
        "ip-restriction",
        json!({ "deny": ["127.0.0.1", "::1"] }),
    );
    let open = with_plugins(route(prefix("/other"), "a"), &["ip1"], &["ip-restriction"]);
    assert_eq!(
        rig.push("5", ads::ROUTE, vec![routes(vec![open])]).await,
        None
    );
    rig.refused("/other", None).await;
    assert_eq!(
        rig.listener(
            "6",
            &gateway(&["k1"], vec![key_auth("ka"), key_auth("ka2"), deny])
        )
        .await,
        None
    );
    rig.until("/other", None, 403).await;
}

/// A route configuration the proxy refuses that adds a policy: which old
/// route would catch the new route's requests is unknown, so the whole
/// route configuration stops serving until one is accepted. One without
/// any policy in either version is simply kept (Envoy's NACK).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_route_configuration_with_policies_stops_serving_it() {
    let rig = Rig::start(
        &gateway(&["k1"], vec![key_auth("ka")]),
        ProxyOptions::default(),
    )
    .await;
    let bad_regex = route(safe_regex("("), "a");
    let nack = rig
        .push("2", ads::ROUTE, vec![routes(vec![bad_regex.clone()])])
        .await
        .expect("an invalid regex is NACKed");
    assert!(nack.contains("rc"), "{nack}");
    rig.refused("/open", None).await;
    rig.refused("/keyed", Some("k1")).await;
    assert_eq!(
        rig.push("3", ads::ROUTE, vec![routes(Vec::new())]).await,
        None
    );
    rig.until("/open", None, 200).await;
    rig.until("/keyed", Some("k1"), 200).await;

    // Without plugins anywhere, a refused route configuration is just kept.
    assert_eq!(
        rig.push(
            "4",
            ads::ROUTE,
            vec![route_config("rc", vec![route(prefix("/"), "a")])]
        )
        .await,
        None
    );
    rig.until("/keyed", None, 200).await;
    rig.push(
        "5",
        ads::ROUTE,
        vec![route_config("rc", vec![bad_regex, route(prefix("/"), "a")])],
    )
    .await
    .expect("NACK");
    for _ in 0..5 {
        assert_eq!(rig.get("/anything", None).await.0, 200);
    }
}

/// The same through route entries (gantry-proxy's routes, one resource per
/// Kong route): a refused entry that adds a policy stops its whole route
/// configuration, policy-free routes in other entries included, until
/// that entry's next update is accepted; then everything serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_route_entry_with_policies_stops_its_route_configuration() {
    let rig = Rig::start(
        &gateway(&["k1"], vec![key_auth("ka")]),
        ProxyOptions::default(),
    )
    .await;
    let keyed = || with_plugins(route(prefix("/keyed"), "a"), &["ka"], &["key-auth"]);
    // The routes move from the configuration into two entries.
    assert_eq!(
        rig.push("2", ads::ROUTE, vec![entries_config("rc")]).await,
        None
    );
    assert_eq!(
        rig.push(
            "3",
            ads::ROUTE_ENTRY,
            vec![
                route_entry("rc", "keyed", 1, vec![keyed()]),
                route_entry("rc", "open", 2, vec![route(prefix("/open"), "a")]),
            ],
        )
        .await,
        None
    );
    rig.until("/open", None, 200).await;
    rig.until("/keyed", Some("k1"), 200).await;
    assert_eq!(rig.get("/keyed", None).await.0, 401, "key-auth runs");

    // An update of the keyed entry that cannot compile.
    let nack = rig
        .push(
            "4",
            ads::ROUTE_ENTRY,
            vec![route_entry(
                "rc",
                "keyed",
                1,
                vec![keyed(), route(safe_regex("("), "a")],
            )],
        )
        .await
        .expect("an invalid regex is NACKed");
    assert!(nack.contains("rc/keyed"), "{nack}");
    rig.refused("/keyed", Some("k1")).await;
    rig.refused("/open", None).await;

    // Another entry's update does not lift it; the refused entry's does.
    assert_eq!(
        rig.push(
            "5",
            ads::ROUTE_ENTRY,
            vec![route_entry(
                "rc",
                "open",
                2,
                vec![route(prefix("/open"), "a")]
            )],
        )
        .await,
        None
    );
    rig.refused("/open", None).await;
    assert_eq!(
        rig.push(
            "6",
            ads::ROUTE_ENTRY,
            vec![route_entry("rc", "keyed", 1, vec![keyed()])]
        )
        .await,
        None
    );
    rig.until("/open", None, 200).await;
    rig.until("/keyed", Some("k1"), 200).await;
}
