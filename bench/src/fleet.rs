//! A fleet of simulated proxies: N delta-ADS streams, each on its own
//! HTTP/2 connection with its own node id, behaving like Envoy: wildcard
//! CDS and LDS, then the RDS names its listeners' connection managers
//! reference, the EDS names its EDS clusters reference and the SDS names
//! TLS contexts reference; every response is ACKed, none is NACKed.
//!
//! Every response a stream gets is logged with the `system_version_info`
//! it carries: the control plane stamps a delta response with the revision
//! of the snapshot it comes from, and a snapshot is built from a revision
//! at or after the write that triggered it. So "all streams have ACKed a
//! response with version >= R" is "the write that committed R reached
//! everyone".

use crate::codec::{Counted, DELTA_ADS_PATH, DeltaCodec, RawDeltaResponse};
use anyhow::{Context, bail};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{Node, TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext,
    common_tls_context::ValidationContextType,
};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use gantry_shared::xds::{CLUSTER, ENDPOINT, LISTENER, ROUTE, ROUTE_ENTRY, SECRET, short_name};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Envoy's default HTTP/2 windows for its xDS connection (256 MiB), so a
/// large route configuration is not throttled by flow control.
const WINDOW: u32 = 256 * 1024 * 1024;

/// One response as the stream saw it.
#[derive(Clone, Debug)]
struct Event {
    version: i64,
    type_url: &'static str,
    bytes: u64,
    resources: usize,
    removed: usize,
    acked_at: Instant,
}

#[derive(Default)]
struct StreamStats {
    /// The highest `system_version_info` this stream has ACKed.
    acked: AtomicI64,
    events: Mutex<Vec<Event>>,
    /// Streams opened, and streams lost (reconnecting fleets only).
    connects: AtomicU64,
    disconnects: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    start: Instant,
    /// When any stream last received a response (ns since `start`).
    last_rx: AtomicU64,
    failed: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Shared {
    fn touch(&self) {
        let ns = self.start.elapsed().as_nanos() as u64;
        self.last_rx.fetch_max(ns, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_nanos(self.last_rx.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    fn fail(&self, msg: String) {
        let mut e = lock(&self.error);
        if e.is_none() {
            *e = Some(msg);
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            bail!(
                "a stream failed: {}",
                lock(&self.error).clone().unwrap_or_default()
            );
        }
        Ok(())
    }
}

/// Which kind of node the streams play: the control plane sends each
/// flavour its own resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeKind {
    /// Envoy: route configurations over RDS.
    Envoy,
    /// gantry-proxy: route configurations' routes as Gantry route entries.
    GantryProxy,
}

impl NodeKind {
    pub fn user_agent(self) -> &'static str {
        match self {
            NodeKind::Envoy => "envoy",
            NodeKind::GantryProxy => "gantry-proxy",
        }
    }

    /// The types a fresh stream subscribes to without names, as that
    /// proxy starts.
    fn wildcards(self) -> &'static [&'static str] {
        match self {
            NodeKind::Envoy => &[CLUSTER, LISTENER],
            NodeKind::GantryProxy => &[CLUSTER, LISTENER, ROUTE_ENTRY],
        }
    }
}

pub struct Fleet {
    streams: Vec<Arc<StreamStats>>,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub node_prefix: String,
}

/// What one change cost and how long it took to reach every stream.
#[derive(Clone, Debug)]
pub struct Change {
    pub revision: i64,
    /// Write response to the first, median and last stream's final ACK.
    pub first: Duration,
    pub median: Duration,
    pub all: Duration,
    /// Encoded DeltaDiscoveryResponse bytes a stream received for it.
    pub bytes_min: u64,
    pub bytes_max: u64,
    /// Responses and resources per stream (the most any stream got).
    pub responses: usize,
    pub resources: usize,
    pub removed: usize,
    /// Types that carried the change, e.g. "RDS".
    pub types: BTreeSet<&'static str>,
    /// Responses that arrived after the previous change had been closed
    /// (a sign the quiet period was too short).
    pub late: usize,
}

impl Fleet {
    /// Opens `n` streams, at most `concurrency` connecting at a time.
    pub fn connect(
        xds: &str,
        n: usize,
        node_prefix: &str,
        concurrency: usize,
        kind: NodeKind,
    ) -> anyhow::Result<Fleet> {
        Self::start(xds, n, node_prefix, concurrency, kind, false)
    }

    /// [`Fleet::connect`] with streams that reconnect when they end, with
    /// jittered backoff, resuming with what they hold (as a proxy does).
    pub fn connect_reconnecting(
        xds: &str,
        n: usize,
        node_prefix: &str,
        concurrency: usize,
        kind: NodeKind,
    ) -> anyhow::Result<Fleet> {
        Self::start(xds, n, node_prefix, concurrency, kind, true)
    }

    fn start(
        xds: &str,
        n: usize,
        node_prefix: &str,
        concurrency: usize,
        kind: NodeKind,
        reconnect: bool,
    ) -> anyhow::Result<Fleet> {
        let endpoint = tonic::transport::Endpoint::from_shared(xds.to_string())
            .with_context(|| format!("xDS address {xds}"))?
            .connect_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .initial_stream_window_size(WINDOW)
            .initial_connection_window_size(WINDOW);
        let shared = Arc::new(Shared {
            start: Instant::now(),
            last_rx: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        });
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut streams = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let stats = Arc::new(StreamStats {
                acked: AtomicI64::new(-1),
                events: Mutex::new(Vec::new()),
                connects: AtomicU64::new(0),
                disconnects: AtomicU64::new(0),
            });
            streams.push(stats.clone());
            let node_id = format!("{node_prefix}-{i}");
            let (endpoint, shared, gate) = (endpoint.clone(), shared.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) =
                    run_stream(endpoint, &node_id, kind, stats, &shared, gate, reconnect).await
                {
                    shared.fail(format!("{node_id}: {e:#}"));
                }
            }));
        }
        Ok(Fleet {
            streams,
            shared,
            tasks,
            node_prefix: node_prefix.to_string(),
        })
    }

    /// Waits until every stream has ACKed a response of revision `rev` or
    /// later and no stream has received anything for `quiet` (follow-ups
    /// such as EDS after CDS, or routes after clusters warm, have landed).
    async fn wait(&self, rev: i64, quiet: Duration, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.shared.check()?;
            let behind = self
                .streams
                .iter()
                .filter(|s| s.acked.load(Ordering::Relaxed) < rev)
                .count();
            if behind == 0 && self.shared.quiet_for() >= quiet {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{behind} of {} streams never ACKed revision {rev} within {timeout:?}",
                    self.streams.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until every stream has ACKed revision `rev` or later (and
    /// things are quiet), keeping what the streams recorded.
    pub async fn reach(&self, rev: i64, quiet: Duration, timeout: Duration) -> anyhow::Result<()> {
        self.wait(rev, quiet, timeout).await
    }

    /// Waits for the initial sync at revision `rev`; returns the encoded
    /// bytes one stream received for it (the largest).
    pub async fn settle(
        &self,
        rev: i64,
        quiet: Duration,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        self.wait(rev, quiet, timeout).await?;
        let mut most = 0;
        for s in &self.streams {
            let ev = std::mem::take(&mut *lock(&s.events));
            most = most.max(ev.iter().map(|e| e.bytes).sum());
        }
        Ok(most)
    }

    /// Waits until the write that committed `rev` at `written_at` has
    /// reached every stream, and accounts for it.
    pub async fn change(
        &self,
        rev: i64,
        written_at: Instant,
        quiet: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Change> {
        self.wait(rev, quiet, timeout).await?;
        let mut finals = Vec::with_capacity(self.streams.len());
        let mut c = Change {
            revision: rev,
            first: Duration::ZERO,
            median: Duration::ZERO,
            all: Duration::ZERO,
            bytes_min: u64::MAX,
            bytes_max: 0,
            responses: 0,
            resources: 0,
            removed: 0,
            types: BTreeSet::new(),
            late: 0,
        };
        for s in &self.streams {
            let ev = std::mem::take(&mut *lock(&s.events));
            let (mine, late): (Vec<&Event>, Vec<&Event>) =
                ev.iter().partition(|e| e.version >= rev);
            c.late += late.len();
            let last = mine
                .iter()
                .map(|e| e.acked_at)
                .max()
                .context("a stream reached the revision without a response for it")?;
            finals.push(last.saturating_duration_since(written_at));
            let bytes: u64 = mine.iter().map(|e| e.bytes).sum();
            c.bytes_min = c.bytes_min.min(bytes);
            c.bytes_max = c.bytes_max.max(bytes);
            c.responses = c.responses.max(mine.len());
            c.resources = c.resources.max(mine.iter().map(|e| e.resources).sum());
            c.removed = c.removed.max(mine.iter().map(|e| e.removed).sum());
            c.types.extend(mine.iter().map(|e| short_name(e.type_url)));
        }
        finals.sort();
        c.first = finals.first().copied().unwrap_or_default();
        c.median = finals.get(finals.len() / 2).copied().unwrap_or_default();
        c.all = finals.last().copied().unwrap_or_default();
        Ok(c)
    }

    /// Per stream, the (revision, when) of each response it ACKed since
    /// the last accounting, which it clears.
    pub fn take_acks(&self) -> Vec<Vec<(i64, Instant)>> {
        self.streams
            .iter()
            .map(|s| {
                std::mem::take(&mut *lock(&s.events))
                    .into_iter()
                    .map(|e| (e.version, e.acked_at))
                    .collect()
            })
            .collect()
    }

    /// Streams that have opened at least `n` times.
    pub fn opened_at_least(&self, n: u64) -> usize {
        self.streams
            .iter()
            .filter(|s| s.connects.load(Ordering::Relaxed) >= n)
            .count()
    }

    /// Streams lost so far, all streams together.
    pub fn disconnects(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| s.disconnects.load(Ordering::Relaxed))
            .sum()
    }

    /// The most bytes one stream received since the last accounting,
    /// which it clears.
    pub fn take_bytes(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| {
                std::mem::take(&mut *lock(&s.events))
                    .iter()
                    .map(|e| e.bytes)
                    .sum()
            })
            .max()
            .unwrap_or(0)
    }

    /// Checks the control plane's own view: every stream of this fleet is
    /// in `/fleet`, SYNCED at revision `rev` or later.
    pub async fn verify(&self, admin: &crate::admin::Admin, rev: i64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let fleet = admin.get("/fleet").await?;
            let prefix = format!("{}-", self.node_prefix);
            let mine: Vec<&serde_json::Value> = fleet["data"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|n| {
                            n["node_id"]
                                .as_str()
                                .is_some_and(|id| id.starts_with(&prefix))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let synced = mine
                .iter()
                .filter(|n| n["state"] == "SYNCED" && n["revision"].as_i64() >= Some(rev))
                .count();
            if mine.len() == self.streams.len() && synced == mine.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let example = mine
                    .iter()
                    .find(|n| n["state"] != "SYNCED")
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                bail!(
                    "/fleet shows {} of {} streams, {synced} SYNCED at revision {rev}; e.g. {example}",
                    mine.len(),
                    self.streams.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Closes every stream (dropping a task drops its connection).
    pub async fn close(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The names a set of resources references, per type.
#[derive(Default)]
struct Refs {
    /// resource name -> (type, referenced name), from clusters and listeners.
    from_clusters: HashMap<String, Vec<(&'static str, String)>>,
    from_listeners: HashMap<String, Vec<(&'static str, String)>>,
    subscribed: BTreeMap<&'static str, BTreeSet<String>>,
}

impl Refs {
    fn wanted(&self) -> BTreeMap<&'static str, BTreeSet<String>> {
        let mut w: BTreeMap<&'static str, BTreeSet<String>> = [
            (ENDPOINT, BTreeSet::new()),
            (ROUTE, BTreeSet::new()),
            (SECRET, BTreeSet::new()),
        ]
        .into();
        for (t, name) in self
            .from_clusters
            .values()
            .chain(self.from_listeners.values())
            .flatten()
        {
            w.entry(t).or_default().insert(name.clone());
        }
        w
    }

    /// The subscription requests that bring the named types in line with
    /// what clusters and listeners reference now.
    fn requests(&mut self) -> Vec<DeltaDiscoveryRequest> {
        let mut out = Vec::new();
        for (t, want) in self.wanted() {
            let have = self.subscribed.entry(t).or_default();
            let sub: Vec<String> = want.difference(have).cloned().collect();
            let unsub: Vec<String> = have.difference(&want).cloned().collect();
            if sub.is_empty() && unsub.is_empty() {
                continue;
            }
            *have = want;
            out.push(DeltaDiscoveryRequest {
                type_url: t.to_string(),
                resource_names_subscribe: sub,
                resource_names_unsubscribe: unsub,
                ..Default::default()
            });
        }
        out
    }
}

fn tls_names(c: Option<&CommonTlsContext>, out: &mut Vec<(&'static str, String)>) {
    let Some(c) = c else { return };
    for s in &c.tls_certificate_sds_secret_configs {
        out.push((SECRET, s.name.clone()));
    }
    match &c.validation_context_type {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            out.push((SECRET, s.name.clone()))
        }
        Some(ValidationContextType::CombinedValidationContext(cv)) => {
            if let Some(s) = &cv.validation_context_sds_secret_config {
                out.push((SECRET, s.name.clone()));
            }
        }
        _ => {}
    }
}

fn socket_names(
    ts: Option<&TransportSocket>,
    out: &mut Vec<(&'static str, String)>,
) -> anyhow::Result<()> {
    let Some(transport_socket::ConfigType::TypedConfig(any)) =
        ts.and_then(|t| t.config_type.as_ref())
    else {
        return Ok(());
    };
    if any.type_url.ends_with(".UpstreamTlsContext") {
        let tls = UpstreamTlsContext::decode(any.value.as_slice()).context("UpstreamTlsContext")?;
        tls_names(tls.common_tls_context.as_ref(), out);
    } else if any.type_url.ends_with(".DownstreamTlsContext") {
        let tls =
            DownstreamTlsContext::decode(any.value.as_slice()).context("DownstreamTlsContext")?;
        tls_names(tls.common_tls_context.as_ref(), out);
    }
    Ok(())
}

fn cluster_refs(c: &Cluster) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    if c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)) {
        let name = c
            .eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| c.name.clone());
        out.push((ENDPOINT, name));
    }
    socket_names(c.transport_socket.as_ref(), &mut out)?;
    Ok(out)
}

fn chain_refs(fc: &FilterChain, out: &mut Vec<(&'static str, String)>) -> anyhow::Result<()> {
    for f in &fc.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            continue;
        };
        if !any.type_url.ends_with(".HttpConnectionManager") {
            continue;
        }
        let hcm =
            HttpConnectionManager::decode(any.value.as_slice()).context("HttpConnectionManager")?;
        if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
            out.push((ROUTE, rds.route_config_name.clone()));
        }
    }
    socket_names(fc.transport_socket.as_ref(), out)
}

fn listener_refs(l: &Listener) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    for fc in l
        .filter_chains
        .iter()
        .chain(l.default_filter_chain.as_ref())
    {
        chain_refs(fc, &mut out)?;
    }
    Ok(out)
}

fn known_type(t: &str) -> anyhow::Result<&'static str> {
    [CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE, ROUTE_ENTRY]
        .into_iter()
        .find(|k| *k == t)
        .with_context(|| format!("response of an unexpected type {t}"))
}

/// Updates the reference map from a CDS or LDS response.
fn follow(refs: &mut Refs, t: &'static str, r: &RawDeltaResponse) -> anyhow::Result<()> {
    let map = match t {
        CLUSTER => &mut refs.from_clusters,
        LISTENER => &mut refs.from_listeners,
        _ => return Ok(()),
    };
    for name in &r.removed_resources {
        map.remove(name);
    }
    for res in &r.resources {
        let any = res
            .resource
            .as_ref()
            .with_context(|| format!("{} {} without a body", short_name(t), res.name))?;
        let names = if t == CLUSTER {
            cluster_refs(&Cluster::decode(any.value.clone()).context("Cluster")?)?
        } else {
            listener_refs(&Listener::decode(any.value.clone()).context("Listener")?)?
        };
        map.insert(res.name.clone(), names);
    }
    Ok(())
}

/// What a stream holds across reconnects: per type, resource name → version
/// (what it sends as `initial_resource_versions`), and the references
/// that decide its named subscriptions.
#[derive(Default)]
struct Held {
    versions: BTreeMap<&'static str, HashMap<String, String>>,
    refs: Refs,
}

/// Reconnect delays as gantry-proxy's client takes them: full jitter
/// under a ceiling that starts at 100 ms and doubles to 10 s.
fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.min(7))
        .min(Duration::from_secs(10));
    // A fresh RandomState is randomly keyed: its hash is a random number.
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    ceiling.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64)
}

async fn run_stream(
    endpoint: tonic::transport::Endpoint,
    node_id: &str,
    kind: NodeKind,
    stats: Arc<StreamStats>,
    shared: &Shared,
    gate: Arc<Semaphore>,
    reconnect: bool,
) -> anyhow::Result<()> {
    let mut held = Held::default();
    let mut attempt = 0;
    loop {
        let Err((healthy, e)) =
            one_stream(&endpoint, node_id, kind, &stats, shared, &gate, &mut held).await;
        if !reconnect {
            return Err(e);
        }
        if healthy {
            attempt = 0;
        }
        stats.disconnects.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

/// One ADS stream, from connecting to its end; the error says whether it
/// got any response (then the next attempt's backoff starts over).
async fn one_stream(
    endpoint: &tonic::transport::Endpoint,
    node_id: &str,
    kind: NodeKind,
    stats: &StreamStats,
    shared: &Shared,
    gate: &Semaphore,
    held: &mut Held,
) -> Result<std::convert::Infallible, (bool, anyhow::Error)> {
    let fail = |healthy: bool| move |e: anyhow::Error| (healthy, e);
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    let mut responses = async {
        let _permit = gate.acquire().await.context("connect gate closed")?;
        let channel = endpoint.connect().await.context("connecting")?;
        let mut grpc =
            tonic::client::Grpc::new(channel).max_decoding_message_size(1024 * 1024 * 1024);
        let node = Node {
            id: node_id.to_string(),
            cluster: "bench".into(),
            user_agent_name: kind.user_agent().into(),
            ..Default::default()
        };
        // The wildcard types, as the proxy starts, with what it holds;
        // the node rides on the first.
        for (i, t) in kind.wildcards().iter().enumerate() {
            let req = DeltaDiscoveryRequest {
                node: (i == 0).then(|| node.clone()),
                type_url: t.to_string(),
                initial_resource_versions: held.versions.get(t).cloned().unwrap_or_default(),
                ..Default::default()
            };
            tx.send(req).await.context("request queue closed")?;
        }
        // After a reconnect: the named subscriptions again, with versions.
        held.refs.subscribed.clear();
        for mut req in held.refs.requests() {
            let known = held.versions.get(req.type_url.as_str());
            req.initial_resource_versions = req
                .resource_names_subscribe
                .iter()
                .filter_map(|n| Some((n.clone(), known?.get(n)?.clone())))
                .collect();
            tx.send(req).await.context("request queue closed")?;
        }
        grpc.ready().await.context("channel not ready")?;
        let r = grpc
            .streaming(
                tonic::Request::new(ReceiverStream::new(rx)),
                http::uri::PathAndQuery::from_static(DELTA_ADS_PATH),
                DeltaCodec,
            )
            .await
            .context("opening the delta ADS stream")?;
        anyhow::Ok(r.into_inner())
    }
    .await
    .map_err(fail(false))?;
    stats.connects.fetch_add(1, Ordering::Relaxed);
    let mut healthy = false;
    loop {
        let Counted { bytes, msg: r } = match responses.message().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err((
                    healthy,
                    anyhow::anyhow!("the control plane closed the stream"),
                ));
            }
            Err(e) => return Err((healthy, anyhow::anyhow!("stream error: {e}"))),
        };
        healthy = true;
        shared.touch();
        let t = known_type(&r.type_url).map_err(fail(true))?;
        let version: i64 = r
            .system_version_info
            .parse()
            .with_context(|| {
                format!(
                    "system_version_info {:?} is not a revision",
                    r.system_version_info
                )
            })
            .map_err(fail(true))?;
        follow(&mut held.refs, t, &r).map_err(fail(true))?;
        let versions = held.versions.entry(t).or_default();
        for n in &r.removed_resources {
            versions.remove(n);
        }
        for res in &r.resources {
            versions.insert(res.name.clone(), res.version.clone());
        }
        // Subscriptions the new resources call for go out before the ACK,
        // as Envoy's ADS mux does while it applies an update.
        for req in held.refs.requests() {
            tx.send(req)
                .await
                .context("request queue closed")
                .map_err(fail(true))?;
        }
        let ack = DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        tx.send(ack)
            .await
            .context("request queue closed")
            .map_err(fail(true))?;
        let ev = Event {
            version,
            type_url: t,
            bytes: bytes as u64,
            resources: r.resources.len(),
            removed: r.removed_resources.len(),
            acked_at: Instant::now(),
        };
        lock(&stats.events).push(ev);
        stats.acked.fetch_max(version, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{RawAny, RawResource};
    use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
    use envoy_types::pb::envoy::config::listener::v3::Filter;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig;
    use envoy_types::util::pack_any;

    fn sds(n: &str) -> SdsSecretConfig {
        SdsSecretConfig {
            name: n.into(),
            sds_config: None,
        }
    }

    fn resources<T: Message + prost::Name>(items: Vec<(&str, T)>) -> Vec<RawResource> {
        items
            .into_iter()
            .map(|(n, m)| {
                let any = pack_any(m);
                RawResource {
                    name: n.into(),
                    version: String::new(),
                    resource: Some(RawAny {
                        type_url: any.type_url,
                        value: any.value.into(),
                    }),
                }
            })
            .collect()
    }

    #[test]
    fn follows_listener_and_cluster_references() {
        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                config_source: None,
                route_config_name: "http".into(),
            })),
            ..Default::default()
        };
        let tls = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![sds("cert.a")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let listener = Listener {
            name: "https".into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "hcm".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
                }],
                transport_socket: Some(TransportSocket {
                    name: "tls".into(),
                    config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let eds = Cluster {
            name: "service.a".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig::default()),
            ..Default::default()
        };
        let dns = Cluster {
            name: "service.b".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                DiscoveryType::StrictDns as i32,
            )),
            ..Default::default()
        };
        let mut refs = Refs::default();
        let cds = RawDeltaResponse {
            resources: resources(vec![("service.a", eds), ("service.b", dns)]),
            ..Default::default()
        };
        follow(&mut refs, CLUSTER, &cds).unwrap();
        let lds = RawDeltaResponse {
            resources: resources(vec![("https", listener)]),
            ..Default::default()
        };
        follow(&mut refs, LISTENER, &lds).unwrap();
        let reqs = refs.requests();
        let subs: Vec<(&str, Vec<String>)> = reqs
            .iter()
            .map(|r| (short_name(&r.type_url), r.resource_names_subscribe.clone()))
            .collect();
        assert_eq!(
            subs,
            [
                ("EDS", vec!["service.a".to_string()]),
                ("RDS", vec!["http".to_string()]),
                ("SDS", vec!["cert.a".to_string()]),
            ]
        );
        assert!(refs.requests().is_empty(), "nothing new to ask for");

        // The EDS cluster goes away: its assignment is unsubscribed.
        let gone = RawDeltaResponse {
            removed_resources: vec!["service.a".into()],
            ..Default::default()
        };
        follow(&mut refs, CLUSTER, &gone).unwrap();
        let reqs = refs.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].type_url, ENDPOINT);
        assert_eq!(reqs[0].resource_names_unsubscribe, ["service.a"]);
    }
}
