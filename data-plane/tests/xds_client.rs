//! The delta-ADS client against a scripted in-test ADS server: the test
//! reads every request the client sends and decides every response.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use gantry_proxy::config::{Fences, ResourceSet};
use gantry_proxy::xds::{Applier, ClientConfig, ClientStatus, ConfigSource, Tuning, XdsClient};
use gantry_shared::xds::{CLUSTER, ENDPOINT, LISTENER, ROUTE, ROUTE_ENTRY, SECRET};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- server

/// One client stream, as the test sees it.
struct Conn {
    requests: mpsc::UnboundedReceiver<DeltaDiscoveryRequest>,
    responses: mpsc::UnboundedSender<Result<DeltaDiscoveryResponse, Status>>,
}

struct TestAds {
    conns: mpsc::UnboundedSender<Conn>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for TestAds {
    type StreamAggregatedResourcesStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        _: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta only"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (resp_tx, resp_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                if req_tx.send(r).is_err() {
                    break;
                }
            }
        });
        let _ = self.conns.send(Conn {
            requests: req_rx,
            responses: resp_tx,
        });
        Ok(Response::new(UnboundedReceiverStream::new(resp_rx)))
    }
}

struct Server {
    address: String,
    conns: mpsc::UnboundedReceiver<Conn>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (tx, conns) = mpsc::unbounded_channel();
        let incoming = futures::stream::unfold(listener, |l| async move {
            let next = l.accept().await.map(|(s, _)| s);
            Some((next, l))
        });
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(TestAds { conns: tx }))
                .serve_with_incoming(incoming)
                .await;
        });
        Server {
            address,
            conns,
            task,
        }
    }

    async fn accept(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("the client connects")
            .expect("server running")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    async fn recv(&mut self) -> DeltaDiscoveryRequest {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("a request in time")
            .expect("stream open")
    }

    /// Nothing more arrives for a while.
    async fn quiet(&mut self) {
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(300), self.requests.recv()).await
        {
            panic!("unexpected request: {}", describe(&r));
        }
    }

    fn push(
        &self,
        type_url: &str,
        version: &str,
        nonce: &str,
        resources: Vec<Resource>,
        removed: &[&str],
    ) {
        self.responses
            .send(Ok(DeltaDiscoveryResponse {
                system_version_info: version.into(),
                type_url: type_url.into(),
                resources,
                removed_resources: removed.iter().map(|s| s.to_string()).collect(),
                nonce: nonce.into(),
                ..Default::default()
            }))
            .unwrap();
    }

    async fn expect_ack(&mut self, type_url: &str, nonce: &str) {
        let r = self.recv().await;
        assert_eq!(r.type_url, type_url, "{}", describe(&r));
        assert_eq!(r.response_nonce, nonce, "{}", describe(&r));
        assert!(
            r.error_detail.is_none(),
            "expected an ACK: {}",
            describe(&r)
        );
    }

    async fn expect_nack(&mut self, type_url: &str, nonce: &str) -> String {
        let r = self.recv().await;
        assert_eq!(r.type_url, type_url, "{}", describe(&r));
        assert_eq!(r.response_nonce, nonce, "{}", describe(&r));
        let e = r.error_detail.expect("a NACK");
        assert_eq!(e.code, 3);
        e.message
    }

    async fn expect_subs(&mut self, type_url: &str, subscribe: &[&str], unsubscribe: &[&str]) {
        let r = self.recv().await;
        assert_eq!(r.type_url, type_url, "{}", describe(&r));
        assert!(r.response_nonce.is_empty(), "{}", describe(&r));
        assert_eq!(
            sorted(&r.resource_names_subscribe),
            set(subscribe),
            "{}",
            describe(&r)
        );
        assert_eq!(
            sorted(&r.resource_names_unsubscribe),
            set(unsubscribe),
            "{}",
            describe(&r)
        );
    }
}

fn describe(r: &DeltaDiscoveryRequest) -> String {
    format!(
        "type={} nonce={:?} sub={:?} unsub={:?} initial={:?} error={:?}",
        r.type_url,
        r.response_nonce,
        r.resource_names_subscribe,
        r.resource_names_unsubscribe,
        r.initial_resource_versions,
        r.error_detail.as_ref().map(|e| &e.message)
    )
}

fn sorted(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn versions(v: &[(&str, &str)]) -> HashMap<String, String> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

// ---------------------------------------------------------------- resources

fn res(name: &str, version: &str, any: Any) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(any),
        ..Default::default()
    }
}

/// A listener whose HCM loads `route` over RDS, optionally terminating TLS
/// with SDS certificates; `tag` goes in `stat_prefix` to tell versions apart.
fn listener(name: &str, route: &str, secrets: &[&str], tag: &str) -> Any {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: None,
            route_config_name: route.into(),
        })),
        ..Default::default()
    };
    let transport_socket = (!secrets.is_empty()).then(|| TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
            DownstreamTlsContext {
                common_tls_context: Some(CommonTlsContext {
                    tls_certificate_sds_secret_configs: secrets
                        .iter()
                        .map(|s| SdsSecretConfig {
                            name: s.to_string(),
                            sds_config: None,
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))),
    });
    pack_any(Listener {
        name: name.into(),
        stat_prefix: tag.into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            transport_socket,
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// [`listener`] with the plugin filter carrying `gateway` (opaque here:
/// the recorder compiles nothing).
fn plugin_listener(name: &str, route: &str, gateway: &[u8], tag: &str) -> Any {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpFilter, http_filter,
    };
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: None,
            route_config_name: route.into(),
        })),
        http_filters: vec![HttpFilter {
            name: gantry_proxy::plugins::FILTER_NAME.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                type_url: gantry_proxy::plugins::GATEWAY_TYPE.into(),
                value: gateway.to_vec(),
            })),
            is_optional: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    pack_any(Listener {
        name: name.into(),
        stat_prefix: tag.into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// [`route_config`] whose one route runs plugins (`plugins`) or not.
fn policy_routes(name: &str, tag: &str, plugins: bool) -> Any {
    use envoy_types::pb::envoy::config::route::v3::Route;
    let mut route = Route {
        name: "r1".into(),
        ..Default::default()
    };
    if plugins {
        route.typed_per_filter_config.insert(
            gantry_proxy::plugins::FILTER_NAME.into(),
            Any {
                type_url: gantry_shared::proto::plugins::PER_ROUTE_TYPE.into(),
                value: Vec::new(),
            },
        );
    }
    pack_any(RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: tag.into(),
            domains: vec!["*".into()],
            routes: vec![route],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// An EDS cluster; `service` empty means "use the cluster name".
fn eds_cluster(name: &str, service: &str, tag: &str) -> Any {
    pack_any(Cluster {
        name: name.into(),
        alt_stat_name: tag.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: None,
            service_name: service.into(),
        }),
        ..Default::default()
    })
}

fn route_config(name: &str, tag: &str) -> Any {
    pack_any(RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: tag.into(),
            domains: vec!["*".into()],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn cla(name: &str, localities: usize) -> Any {
    pack_any(ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints::default(); localities],
        ..Default::default()
    })
}

fn secret(name: &str) -> Any {
    pack_any(Secret {
        name: name.into(),
        r#type: None,
    })
}

// ---------------------------------------------------------------- applier

/// What one `apply` saw: names per type with a distinguishing tag.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    version: String,
    listeners: BTreeMap<String, String>,
    routes: BTreeMap<String, String>,
    clusters: BTreeMap<String, String>,
    endpoints: BTreeMap<String, usize>,
    secrets: BTreeSet<String>,
}

fn seen(set: &ResourceSet, version: &str) -> Seen {
    Seen {
        version: version.into(),
        listeners: set
            .listeners
            .iter()
            .map(|(n, l)| (n.clone(), l.stat_prefix.clone()))
            .collect(),
        routes: set
            .routes
            .iter()
            .map(|(n, r)| {
                let tag = r
                    .virtual_hosts
                    .first()
                    .map(|v| v.name.clone())
                    .unwrap_or_default();
                (n.clone(), tag)
            })
            .collect(),
        clusters: set
            .clusters
            .iter()
            .map(|(n, c)| (n.clone(), c.alt_stat_name.clone()))
            .collect(),
        endpoints: set
            .endpoints
            .iter()
            .map(|(n, e)| (n.clone(), e.endpoints.len()))
            .collect(),
        secrets: set.secrets.keys().cloned().collect(),
    }
}

struct Recorder {
    calls: mpsc::UnboundedSender<Seen>,
    fail: Mutex<Option<String>>,
    /// What each `fence` call was given, and what each accepted `apply` carried.
    fences: Mutex<Vec<Fences>>,
}

impl Applier for Recorder {
    fn apply(&self, set: &ResourceSet, version: &str) -> Result<(), String> {
        let _ = self.calls.send(seen(set, version));
        match self.fail.lock().unwrap().clone() {
            Some(reason) => Err(reason),
            None => {
                self.fences.lock().unwrap().push(set.fences.clone());
                Ok(())
            }
        }
    }

    fn fence(&self, fences: &Fences) {
        self.fences.lock().unwrap().push(fences.clone());
    }
}

struct Applied {
    recorder: Arc<Recorder>,
    calls: mpsc::UnboundedReceiver<Seen>,
}

impl Applied {
    fn new() -> Applied {
        let (tx, calls) = mpsc::unbounded_channel();
        Applied {
            recorder: Arc::new(Recorder {
                calls: tx,
                fail: Mutex::new(None),
                fences: Mutex::new(Vec::new()),
            }),
            calls,
        }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.calls.recv())
            .await
            .expect("an apply in time")
            .expect("recorder alive")
    }

    fn fail_with(&self, reason: Option<&str>) {
        *self.recorder.fail.lock().unwrap() = reason.map(str::to_string);
    }

    /// The fences the proxy enforces now.
    fn fences(&self) -> Fences {
        self.recorder
            .fences
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    fn none_pending(&mut self) {
        assert!(self.calls.try_recv().is_err(), "no further apply expected");
    }
}

// ---------------------------------------------------------------- helpers

fn tuning() -> Tuning {
    Tuning {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        ..Tuning::default()
    }
}

fn config(addresses: Vec<String>, snapshot_file: Option<PathBuf>) -> ClientConfig {
    ClientConfig {
        addresses,
        node_id: "node-1".into(),
        cluster: "edge".into(),
        snapshot_file,
        admin_address: None,
        tls: None,
    }
}

struct Running {
    task: tokio::task::JoinHandle<()>,
    status: watch::Receiver<ClientStatus>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn spawn(client: XdsClient) -> Running {
    let status = client.status();
    Running {
        task: tokio::spawn(client.run()),
        status,
    }
}

async fn wait_status(
    rx: &mut watch::Receiver<ClientStatus>,
    what: &str,
    f: impl Fn(&ClientStatus) -> bool,
) -> ClientStatus {
    let r = tokio::time::timeout(WAIT, rx.wait_for(|s| f(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match r {
        Ok(Ok(s)) => s,
        _ => panic!("status never reached: {what}; now {:?}", *rx.borrow()),
    }
}

/// Reads the three wildcard requests every fresh stream starts with (CDS,
/// LDS, Gantry's route entries); returns the first two.
async fn expect_wildcards(conn: &mut Conn) -> (DeltaDiscoveryRequest, DeltaDiscoveryRequest) {
    let cds = conn.recv().await;
    assert_eq!(cds.type_url, CLUSTER, "{}", describe(&cds));
    assert!(cds.resource_names_subscribe.is_empty());
    let lds = conn.recv().await;
    assert_eq!(lds.type_url, LISTENER, "{}", describe(&lds));
    assert!(lds.resource_names_subscribe.is_empty());
    assert!(
        lds.node.is_none(),
        "the node goes on the first request only"
    );
    let entries = conn.recv().await;
    assert_eq!(entries.type_url, ROUTE_ENTRY, "{}", describe(&entries));
    assert!(entries.resource_names_subscribe.is_empty());
    (cds, lds)
}

/// The first requests of a stream, which come in push order.
async fn initial<const N: usize>(conn: &mut Conn, types: [&str; N]) -> [DeltaDiscoveryRequest; N] {
    let mut out = Vec::new();
    for t in types {
        let r = conn.recv().await;
        assert_eq!(r.type_url, t, "{}", describe(&r));
        assert!(r.response_nonce.is_empty(), "{}", describe(&r));
        assert_eq!(
            r.node.is_some(),
            out.is_empty(),
            "the node goes on the first request only"
        );
        out.push(r);
    }
    out.try_into().unwrap()
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!(
            "gantry-xds-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ))
        .join(name)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn xds_initial_requests_are_wildcard_cds_and_lds_with_the_node() {
    let mut server = Server::start().await;
    let mut applied = Applied::new();
    let client = XdsClient::new(
        config(vec![server.address.clone()], None),
        applied.recorder.clone(),
    )
    .with_tuning(tuning());
    let mut run = spawn(client);
    let mut conn = server.accept().await;
    let (cds, lds) = expect_wildcards(&mut conn).await;
    let node = cds.node.expect("the first request carries the node");
    assert_eq!(node.id, "node-1");
    assert_eq!(node.cluster, "edge");
    assert_eq!(node.user_agent_name, "gantry-proxy");
    assert_eq!(
        node.user_agent_version_type,
        Some(UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").into()
        ))
    );
    assert!(cds.initial_resource_versions.is_empty());
    assert!(lds.initial_resource_versions.is_empty());
    conn.quiet().await;
    let s = wait_status(&mut run.status, "connected", |s| s.connected.is_some()).await;
    assert_eq!(s.connected.as_deref(), Some(server.address.as_str()));
    assert!(!s.has_config());

    // An empty first answer is still a configuration (nothing to serve).
    conn.push(CLUSTER, "1", "n1", vec![], &[]);
    conn.expect_ack(CLUSTER, "n1").await;
    assert!(applied.next().await.clusters.is_empty());
    let s = wait_status(&mut run.status, "CDS acked", |s| {
        s.types.get("CDS").and_then(|t| t.version.as_deref()) == Some("1")
    })
    .await;
    assert_eq!(s.config_source, ConfigSource::ControlPlane);
}

#[tokio::test]
async fn xds_named_subscriptions_follow_listeners_and_clusters() {
    let mut server = Server::start().await;
    let mut applied = Applied::new();
    let client = XdsClient::new(
        config(vec![server.address.clone()], None),
        applied.recorder.clone(),
    )
    .with_tuning(tuning());
    let mut run = spawn(client);
    let mut conn = server.accept().await;
    expect_wildcards(&mut conn).await;

    conn.push(
        CLUSTER,
        "1",
        "n1",
        vec![
            res("c1", "a", eds_cluster("c1", "svc1", "")),
            res("c2", "a", eds_cluster("c2", "", "")),
        ],
        &[],
    );
    conn.expect_ack(CLUSTER, "n1").await;
    conn.expect_subs(ENDPOINT, &["svc1", "c2"], &[]).await;
    let s = applied.next().await;
    assert_eq!(s.version, "1");
    assert_eq!(s.clusters.keys().collect::<Vec<_>>(), ["c1", "c2"]);

    conn.push(
        LISTENER,
        "1",
        "n2",
        vec![
            res("http", "a", listener("http", "r-http", &[], "")),
            res("https", "a", listener("https", "r-https", &["cert1"], "")),
        ],
        &[],
    );
    conn.expect_ack(LISTENER, "n2").await;
    conn.expect_subs(SECRET, &["cert1"], &[]).await;
    conn.expect_subs(ROUTE, &["r-http", "r-https"], &[]).await;
    applied.next().await;

    conn.push(
        ENDPOINT,
        "1",
        "n3",
        vec![
            res("svc1", "a", cla("svc1", 1)),
            res("c2", "a", cla("c2", 2)),
        ],
        &[],
    );
    conn.expect_ack(ENDPOINT, "n3").await;
    conn.push(
        SECRET,
        "1",
        "n4",
        vec![res("cert1", "a", secret("cert1"))],
        &[],
    );
    conn.expect_ack(SECRET, "n4").await;
    conn.push(
        ROUTE,
        "1",
        "n5",
        vec![
            res("r-http", "a", route_config("r-http", "")),
            res("r-https", "a", route_config("r-https", "")),
        ],
        &[],
    );
    conn.expect_ack(ROUTE, "n5").await;
    applied.next().await;
    applied.next().await;
    let s = applied.next().await;
    assert_eq!(s.endpoints.len(), 2);
    assert_eq!(s.secrets, set(&["cert1"]));
    assert_eq!(s.routes.len(), 2);
    let st = wait_status(&mut run.status, "RDS acked", |s| {
        s.types.get("RDS").and_then(|t| t.version.as_deref()) == Some("1")
    })
    .await;
    assert!(st.missing.is_empty(), "{:?}", st.missing);
    assert_eq!(st.types["RDS"].subscribed, Some(2));

    // A cluster goes: its endpoints are unsubscribed and dropped.
    conn.push(CLUSTER, "2", "n6", vec![], &["c2"]);
    conn.expect_ack(CLUSTER, "n6").await;
    conn.expect_subs(ENDPOINT, &[], &["c2"]).await;
    let s = applied.next().await;
    assert_eq!(s.clusters.keys().collect::<Vec<_>>(), ["c1"]);
    assert_eq!(s.endpoints.keys().collect::<Vec<_>>(), ["svc1"]);

    // A listener moves to another route configuration, the other goes:
    // subscribe to the new name, unsubscribe from the old ones.
    conn.push(
        LISTENER,
        "2",
        "n7",
        vec![res("http", "b", listener("http", "r-http2", &[], ""))],
        &["https"],
    );
    conn.expect_ack(LISTENER, "n7").await;
    conn.expect_subs(SECRET, &[], &["cert1"]).await;
    conn.expect_subs(ROUTE, &["r-http2"], &["r-http", "r-https"])
        .await;
    let s = applied.next().await;
    assert_eq!(s.listeners.keys().collect::<Vec<_>>(), ["http"]);
    assert!(
        s.routes.is_empty(),
        "unreferenced route configurations are dropped"
    );
    assert!(s.secrets.is_empty());
    let st = wait_status(&mut run.status, "LDS 2", |s| {
        s.types.get("LDS").and_then(|t| t.version.as_deref()) == Some("2")
    })
    .await;
    assert_eq!(st.missing, vec!["RDS/r-http2".to_string()]);

    // A resource sent for a name no longer subscribed is ignored.
    conn.push(
        ROUTE,
        "2",
        "n8",
        vec![
            res("r-http", "b", route_config("r-http", "")),
            res("r-http2", "a", route_config("r-http2", "")),
        ],
        &[],
    );
    conn.expect_ack(ROUTE, "n8").await;
    let s = applied.next().await;
    assert_eq!(s.routes.keys().collect::<Vec<_>>(), ["r-http2"]);
    conn.quiet().await;
}

#[tokio::test]
async fn xds_nack_keeps_the_last_good_state() {
    let mut server = Server::start().await;
    let mut applied = Applied::new();
    let client = XdsClient::new(
        config(vec![server.address.clone()], None),
        applied.recorder.clone(),
    )
    .with_tuning(tuning());
    let mut run = spawn(client);
    let mut conn = server.accept().await;
    expect_wildcards(&mut conn).await;

    conn.push(
        CLUSTER,
        "1",
        "n1",
        vec![res("c1", "a", eds_cluster("c1", "", "one"))],
        &[],
    );
    conn.expect_ack(CLUSTER, "n1").await;
    conn.expect_subs(ENDPOINT, &["c1"], &[]).await;
    applied.next().await;

    applied.fail_with(Some("cluster c2: bad lb policy"));
    conn.push(
        CLUSTER,
        "2",
        "n2",
        vec![
            res("c1", "b", eds_cluster("c1", "", "one-changed")),
            res("c2", "a", eds_cluster("c2", "", "")),
        ],
        &[],
    );
    let msg = conn.expect_nack(CLUSTER, "n2").await;
    assert_eq!(msg, "cluster c2: bad lb policy");
    let refused = applied.next().await;
    assert_eq!(refused.clusters.len(), 2);
    // No subscription for what was refused.
    conn.quiet().await;
    let st = wait_status(&mut run.status, "nack", |s| s.last_nack.is_some()).await;
    let nack = st.last_nack.unwrap();
    assert_eq!(nack.version, "2");
    assert_eq!(nack.error, "cluster c2: bad lb policy");
    assert_eq!(st.types["CDS"].version.as_deref(), Some("1"));

    // The next update applies to the old state, not the refused one.
    applied.fail_with(None);
    conn.push(
        CLUSTER,
        "3",
        "n3",
        vec![res("c3", "a", eds_cluster("c3", "", "three"))],
        &[],
    );
    conn.expect_ack(CLUSTER, "n3").await;
    conn.expect_subs(ENDPOINT, &["c3"], &[]).await;
    let s = applied.next().await;
    assert_eq!(s.version, "3");
    assert_eq!(
        s.clusters,
        BTreeMap::from([("c1".into(), "one".into()), ("c3".into(), "three".into())])
    );

    // An undecodable resource is refused by name, without calling the applier.
    let garbage = Any {
        type_url: LISTENER.into(),
        value: vec![0xff, 0xff, 0xff],
    };
    conn.push(LISTENER, "4", "n4", vec![res("broken", "a", garbage)], &[]);
    let msg = conn.expect_nack(LISTENER, "n4").await;
    assert!(msg.contains("\"broken\""), "{msg}");
    // A resource of the wrong type, too.
    conn.push(
        LISTENER,
        "4",
        "n5",
        vec![res("odd", "a", cla("odd", 1))],
        &[],
    );
    let msg = conn.expect_nack(LISTENER, "n5").await;
    assert!(msg.contains("\"odd\""), "{msg}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    applied.none_pending();
}

#[tokio::test]
async fn xds_reconnect_resubscribes_with_initial_resource_versions() {
    let mut server = Server::start().await;
    let mut applied = Applied::new();
    let client = XdsClient::new(
        config(vec![server.address.clone()], None),
        applied.recorder.clone(),
    )
    .with_tuning(tuning());
    let mut run = spawn(client);
    let mut conn = server.accept().await;
    expect_wildcards(&mut conn).await;
    conn.push(
        CLUSTER,
        "1",
        "n1",
        vec![res("c1", "vc", eds_cluster("c1", "svc", ""))],
        &[],
    );
    conn.expect_ack(CLUSTER, "n1").await;
    conn.expect_subs(ENDPOINT, &["svc"], &[]).await;
    conn.push(
        LISTENER,
        "1",
        "n2",
        vec![res("l1", "vl", listener("l1", "r1", &[], ""))],
        &[],
    );
    conn.expect_ack(LISTENER, "n2").await;
    conn.expect_subs(ROUTE, &["r1"], &[]).await;
    conn.push(
        ROUTE,
        "1",
        "n3",
        vec![res("r1", "vr", route_config("r1", "first"))],
        &[],
    );
    conn.expect_ack(ROUTE, "n3").await;
    for _ in 0..3 {
        applied.next().await;
    }

    // The server drops the stream.
    drop(conn);
    wait_status(&mut run.status, "disconnected", |s| s.connected.is_none()).await;
    let mut conn = server.accept().await;
    let [cds, eds, lds, rds, entries] =
        initial(&mut conn, [CLUSTER, ENDPOINT, LISTENER, ROUTE, ROUTE_ENTRY]).await;
    assert!(entries.initial_resource_versions.is_empty());
    assert!(cds.node.is_some(), "a new stream introduces the node again");
    assert_eq!(cds.initial_resource_versions, versions(&[("c1", "vc")]));
    assert!(
        cds.resource_names_subscribe.is_empty(),
        "CDS stays wildcard"
    );
    assert_eq!(lds.initial_resource_versions, versions(&[("l1", "vl")]));
    assert!(
        lds.resource_names_subscribe.is_empty(),
        "LDS stays wildcard"
    );
    assert_eq!(sorted(&eds.resource_names_subscribe), set(&["svc"]));
    assert!(
        eds.initial_resource_versions.is_empty(),
        "nothing held for svc"
    );
    assert_eq!(sorted(&rds.resource_names_subscribe), set(&["r1"]));
    assert_eq!(rds.initial_resource_versions, versions(&[("r1", "vr")]));
    conn.quiet().await;
    let st = wait_status(&mut run.status, "reconnected", |s| s.connected.is_some()).await;
    assert_eq!(st.streams_opened, 2);
    // Nothing was cleared while disconnected.
    assert_eq!(st.types["RDS"].resources, 1);

    // A first wildcard answer with nothing new is ACKed without re-applying.
    conn.push(CLUSTER, "1", "n1", vec![], &[]);
    conn.expect_ack(CLUSTER, "n1").await;
    // Changes made while away arrive as usual.
    conn.push(
        ROUTE,
        "2",
        "n2",
        vec![res("r1", "vr2", route_config("r1", "second"))],
        &[],
    );
    conn.expect_ack(ROUTE, "n2").await;
    let s = applied.next().await;
    assert_eq!(s.routes["r1"], "second");
    assert_eq!(s.clusters.len(), 1);
    assert_eq!(s.listeners.len(), 1);
    applied.none_pending();
}

#[tokio::test]
async fn xds_fails_over_to_the_next_address() {
    // An address that refuses connections.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut server = Server::start().await;
    let applied = Applied::new();
    // The live one given as a bare host:port.
    let live = server.address.trim_start_matches("http://").to_string();
    let client = XdsClient::new(
        config(vec![dead.clone(), live], None),
        applied.recorder.clone(),
    )
    .with_tuning(tuning());
    let mut run = spawn(client);
    let mut conn = server.accept().await;
    expect_wildcards(&mut conn).await;
    let st = wait_status(&mut run.status, "connected", |s| s.connected.is_some()).await;
    assert_eq!(st.connected.as_deref(), Some(server.address.as_str()));
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("connect")),
        "{:?}",
        st.last_error
    );

    // When the live one goes away too, the client keeps trying both.
    drop(conn);
    drop(server);
    let st = wait_status(&mut run.status, "down", |s| s.connected.is_none()).await;
    assert!(st.last_error.is_some());
}

#[tokio::test]
async fn xds_snapshot_file_round_trip_and_boot() {
    let path = temp_path("snapshot.json");
    let mut server = Server::start().await;
    let mut applied = Applied::new();
    let client = XdsClient::new(
        config(vec![server.address.clone()], Some(path.clone())),
        applied.recorder.clone(),
    )
    .with_tuning(tuning());
    // No file yet.
    assert_eq!(client.boot_from_snapshot(), Ok(false));
    let run = spawn(client);
    let mut conn = server.accept().await;
    expect_wildcards(&mut conn).await;
    conn.push(
        CLUSTER,
        "7",
        "n1",
        vec![res("c1", "vc", eds_cluster("c1", "", "tag"))],
        &[],
    );
    conn.expect_ack(CLUSTER, "n1").await;
    conn.expect_subs(ENDPOINT, &["c1"], &[]).await;
    conn.push(
        ENDPOINT,
        "7",
        "n2",
        vec![res("c1", "ve", cla("c1", 3))],
        &[],
    );
    conn.expect_ack(ENDPOINT, "n2").await;
    conn.push(
        LISTENER,
        "7",
        "n3",
        vec![res("l1", "vl", listener("l1", "r1", &["cert"], "ltag"))],
        &[],
    );
    conn.expect_ack(LISTENER, "n3").await;
    conn.expect_subs(SECRET, &["cert"], &[]).await;
    conn.expect_subs(ROUTE, &["r1"], &[]).await;
    conn.push(
        SECRET,
        "7",
        "n4",
        vec![res("cert", "vs", secret("cert"))],
        &[],
    );
    conn.expect_ack(SECRET, "n4").await;
    conn.push(
        ROUTE,
        "7",
        "n5",
        vec![res("r1", "vr", route_config("r1", "rtag"))],
        &[],
    );
    conn.expect_ack(ROUTE, "n5").await;
    let mut last = None;
    for _ in 0..5 {
        last = Some(applied.next().await);
    }
    let last = last.unwrap();
    // The file is written after the apply; wait for the last one.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && text.contains("\"r1\"")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "snapshot file never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(run);
    drop(conn);
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["resources"][ROUTE]["r1"]["version"], "vr");
    assert!(json["resources"][SECRET]["cert"]["any"].is_string());
    assert_eq!(json["node_id"], "node-1");

    // A fresh process boots from it...
    let mut applied2 = Applied::new();
    let client = XdsClient::new(
        config(vec![server.address.clone()], Some(path.clone())),
        applied2.recorder.clone(),
    )
    .with_tuning(tuning());
    let status = client.status();
    assert_eq!(client.boot_from_snapshot(), Ok(true));
    let booted = applied2.next().await;
    assert_eq!(booted, last, "boot applies exactly the last good state");
    {
        let s = status.borrow();
        assert_eq!(s.config_source, ConfigSource::Snapshot);
        assert_eq!(s.types["RDS"].version.as_deref(), Some("7"));
        assert!(s.missing.is_empty());
    }
    // ...and resumes with what it holds.
    let _run = spawn(client);
    let mut conn = server.accept().await;
    let [cds, eds, sds, lds, rds, entries] = initial(
        &mut conn,
        [CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE, ROUTE_ENTRY],
    )
    .await;
    assert!(entries.initial_resource_versions.is_empty());
    assert_eq!(cds.initial_resource_versions, versions(&[("c1", "vc")]));
    assert_eq!(lds.initial_resource_versions, versions(&[("l1", "vl")]));
    assert_eq!(sorted(&eds.resource_names_subscribe), set(&["c1"]));
    assert_eq!(eds.initial_resource_versions, versions(&[("c1", "ve")]));
    assert_eq!(sorted(&sds.resource_names_subscribe), set(&["cert"]));
    assert_eq!(sds.initial_resource_versions, versions(&[("cert", "vs")]));
    assert_eq!(sorted(&rds.resource_names_subscribe), set(&["r1"]));
    assert_eq!(rds.initial_resource_versions, versions(&[("r1", "vr")]));

    // A refused snapshot leaves the client empty and says why.
    let refusing = Applied::new();
    refusing.fail_with(Some("nope"));
    let client = XdsClient::new(
        config(vec![server.address.clone()], Some(path.clone())),
        refusing.recorder.clone(),
    );
    let err = client.boot_from_snapshot().unwrap_err();
    assert!(err.contains("nope"), "{err}");
    assert!(!client.status().borrow().has_config());

    // A corrupt file is an error, not a panic.
    std::fs::write(&path, b"{\"format\": 1, \"resources\": {\"x\": {}}}").unwrap();
    let client = XdsClient::new(config(vec![], Some(path.clone())), Applied::new().recorder);
    assert!(client.boot_from_snapshot().is_err());
    std::fs::write(&path, b"garbage").unwrap();
    assert!(client.boot_from_snapshot().is_err());
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test]
async fn xds_healthy_streams_reconnect_to_the_same_address_failed_ones_move_on() {
    let mut a = Server::start().await;
    let mut b = Server::start().await;
    let applied = Applied::new();
    let client = XdsClient::new(
        config(vec![a.address.clone(), b.address.clone()], None),
        applied.recorder.clone(),
    )
    .with_tuning(Tuning {
        healthy_after: Duration::from_millis(300),
        ..tuning()
    });
    let _run = spawn(client);
    let mut conn = a.accept().await;
    expect_wildcards(&mut conn).await;
    // Healthy for long enough: back to the same address.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(conn);
    let mut conn = a.accept().await;
    expect_wildcards(&mut conn).await;
    // Dropped at once: that counts as a failure, so the next address.
    drop(conn);
    let mut conn = b.accept().await;
    expect_wildcards(&mut conn).await;
    drop(conn);
    // And round-robin back to the first.
    let mut conn = a.accept().await;
    expect_wildcards(&mut conn).await;
}

/// A refused update keeps the last good configuration but fences the
/// policies it would have changed, until an update of the same resource is
/// accepted; the fences survive a restart through the snapshot file.
#[tokio::test]
async fn xds_refused_policy_updates_fence_until_replaced() {
    let mut server = Server::start().await;
    let mut applied = Applied::new();
    let path = temp_path("fenced.json");
    let client = XdsClient::new(
        config(vec![server.address.clone()], Some(path.clone())),
        applied.recorder.clone(),
    )
    .with_tuning(tuning());
    let mut run = spawn(client);
    let mut conn = server.accept().await;
    expect_wildcards(&mut conn).await;

    conn.push(
        LISTENER,
        "1",
        "n1",
        vec![res("l1", "a", plugin_listener("l1", "http", b"g1", "one"))],
        &[],
    );
    conn.expect_ack(LISTENER, "n1").await;
    conn.expect_subs(ROUTE, &["http"], &[]).await;
    applied.next().await;
    conn.push(
        ROUTE,
        "2",
        "n2",
        vec![res("http", "a", policy_routes("http", "v1", false))],
        &[],
    );
    conn.expect_ack(ROUTE, "n2").await;
    applied.next().await;
    assert!(applied.fences().is_empty());

    // A listener refused for something other than its plugins fences nothing.
    applied.fail_with(Some("listener l1: bad address"));
    conn.push(
        LISTENER,
        "3",
        "n3",
        vec![res("l1", "b", plugin_listener("l1", "http", b"g1", "two"))],
        &[],
    );
    conn.expect_nack(LISTENER, "n3").await;
    applied.next().await;
    assert!(applied.fences().is_empty());

    // Its plugins changed (a credential revoked, say): routes with plugins stop.
    applied.fail_with(Some("plugin p1 (rate-limiting): redis.ssl"));
    conn.push(
        LISTENER,
        "4",
        "n4",
        vec![res("l1", "c", plugin_listener("l1", "http", b"g2", "one"))],
        &[],
    );
    conn.expect_nack(LISTENER, "n4").await;
    applied.next().await;
    let f = applied.fences();
    assert!(f.refuses("l1", "http", true));
    assert!(!f.refuses("l1", "http", false));
    let st = wait_status(&mut run.status, "fenced", |s| !s.fences.is_empty()).await;
    assert_eq!(
        st.fences,
        vec!["LDS/l1: plugin p1 (rate-limiting): redis.ssl".to_string()]
    );

    // A route configuration that gains a policy and is refused: all of it stops.
    applied.fail_with(Some("route r1: bad regex"));
    conn.push(
        ROUTE,
        "5",
        "n5",
        vec![res("http", "b", policy_routes("http", "v2", true))],
        &[],
    );
    conn.expect_nack(ROUTE, "n5").await;
    applied.next().await;
    assert!(applied.fences().refuses("l1", "http", false));

    // Undecodable: fenced by name.
    let garbage = Any {
        type_url: ROUTE.into(),
        value: vec![0xff, 0xff, 0xff],
    };
    conn.push(ROUTE, "6", "n6", vec![res("http", "c", garbage)], &[]);
    conn.expect_nack(ROUTE, "n6").await;

    // The fences are in the snapshot file: a restart does not lift them.
    let file = gantry_proxy::xds::snapshot_file::read(&path)
        .unwrap()
        .unwrap();
    assert_eq!(file.fences, applied.fences());

    // Accepted updates of the same resources lift them, one by one.
    applied.fail_with(None);
    conn.push(
        ROUTE,
        "7",
        "n7",
        vec![res("http", "d", policy_routes("http", "v3", true))],
        &[],
    );
    conn.expect_ack(ROUTE, "n7").await;
    applied.next().await;
    let f = applied.fences();
    assert!(f.route_configs.is_empty());
    assert!(
        f.refuses("l1", "http", true),
        "the listener is still fenced"
    );
    conn.push(
        LISTENER,
        "8",
        "n8",
        vec![res("l1", "d", plugin_listener("l1", "http", b"g3", "one"))],
        &[],
    );
    conn.expect_ack(LISTENER, "n8").await;
    applied.next().await;
    assert!(applied.fences().is_empty());
    wait_status(&mut run.status, "unfenced", |s| s.fences.is_empty()).await;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
