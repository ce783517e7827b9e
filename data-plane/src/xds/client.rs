//! The delta-ADS stream: connect, (re)subscribe, apply each response as a
//! whole-configuration candidate, ACK or NACK, reconnect with backoff.

use super::backoff::Backoff;
use super::refs::references;
use super::snapshot_file;
use super::state::{Decoded, Dump, Held, Kind, State, Update, decode, now_ms, wanted};
use crate::config::ResourceSet;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Endpoint;

/// The user agent the control plane picks the resource flavour by.
pub const USER_AGENT_NAME: &str = "gantry-proxy";
/// google.rpc.Code.INVALID_ARGUMENT, the code of every NACK.
const INVALID_ARGUMENT: i32 = 3;
/// Large configurations come in one message per type; the control plane
/// encodes up to 256 MiB.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Where and who to connect as.
#[derive(Clone, Debug, Default)]
pub struct ClientConfig {
    /// Control-plane addresses such as `http://127.0.0.1:18000` (a bare
    /// `host:port` means `http://`): the first is tried first, and each
    /// failure moves on to the next, round-robin.
    pub addresses: Vec<String>,
    /// `node.id`.
    pub node_id: String,
    /// `node.cluster`: the gateway group.
    pub cluster: String,
    /// Where the last good configuration is kept (see [`super::snapshot_file`]).
    pub snapshot_file: Option<PathBuf>,
    /// This proxy's admin endpoint as the control plane should reach it
    /// (node metadata `gantry_admin`), for the proxy-cache purge it fans out.
    pub admin_address: Option<String>,
    /// TLS for `https://` addresses: the control plane's CA and this
    /// node's client certificate (see [`super::tls`]).
    pub tls: Option<Arc<super::tls::ClientTls>>,
}

/// Timing knobs; the defaults are the production values.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Backoff ceiling after the first failure (doubles per failure).
    pub backoff_base: Duration,
    /// Backoff ceiling cap.
    pub backoff_max: Duration,
    /// A stream that stayed up this long resets the backoff, and the next
    /// attempt goes to the same address.
    pub healthy_after: Duration,
    /// TCP + HTTP/2 connect, and again for the stream to open.
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval (a dead control plane is noticed within
    /// interval + timeout even when nothing is pushed).
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff_base: super::backoff::BASE,
            backoff_max: super::backoff::MAX,
            healthy_after: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// What the proxy does with a complete, consistent update: compile and swap
/// it in (`Ok`) or refuse it (`Err(reason)` becomes the NACK's
/// `error_detail`; the proxy keeps serving its last good config).
pub trait Applier: Send + Sync + 'static {
    fn apply(&self, set: &ResourceSet, version: &str) -> Result<(), String>;
    /// After a refusal: the running configuration stays, with `fences`
    /// (see [`crate::config::Fences`]) taking effect now. Cannot fail: a
    /// fence that did not take effect would let refused policies lapse.
    fn fence(&self, fences: &crate::config::Fences);
}

/// Why a response is refused before it reaches the applier, with each of
/// its resources (decoded where it could be), for the fences.
type Refusal = (String, Vec<(String, Option<Decoded>)>);

/// Where the configuration being served came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// Nothing applied yet.
    #[default]
    None,
    /// The snapshot file, at boot; nothing from a control plane yet.
    Snapshot,
    /// A control plane.
    ControlPlane,
}

/// The connection state, for `/ready` and the admin page.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClientStatus {
    pub node_id: String,
    /// The address of the open stream, if any.
    pub connected: Option<String>,
    /// When the open stream was opened (Unix ms).
    pub connected_since_ms: Option<u64>,
    pub config_source: ConfigSource,
    /// Per type, by short name (CDS, EDS, SDS, LDS, RDS).
    pub types: BTreeMap<String, TypeStatus>,
    /// The most recent NACK, of any type.
    pub last_nack: Option<NackStatus>,
    /// Names the applied listeners and clusters reference but the client
    /// does not hold (yet), as `"RDS/name"`. Empty once in sync.
    pub missing: Vec<String>,
    /// What refused updates took out of service, as `"LDS/name: reason"`.
    pub fences: Vec<String>,
    /// Why the last stream ended or the last attempt failed.
    pub last_error: Option<String>,
    /// Streams opened since start.
    pub streams_opened: u64,
}

impl ClientStatus {
    /// A configuration is being served (from the snapshot or a control plane).
    pub fn has_config(&self) -> bool {
        self.config_source != ConfigSource::None
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TypeStatus {
    /// `system_version_info` of the last update of this type accepted
    /// (ACKed, or loaded from the snapshot file).
    pub version: Option<String>,
    /// Resources held.
    pub resources: usize,
    /// Names subscribed to on the open stream (named types only).
    pub subscribed: Option<usize>,
    pub last_nack: Option<NackStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NackStatus {
    pub type_url: String,
    pub version: String,
    pub nonce: String,
    pub error: String,
    pub at_ms: u64,
}

/// A handle on the resources the client holds, readable while it runs.
#[derive(Clone)]
pub struct HeldResources(Arc<Mutex<State>>);

impl HeldResources {
    /// Every resource the last accepted configuration holds, with the
    /// version it arrived with: copied out under the lock (wire bytes, no
    /// decoding), so rendering them holds nothing up.
    pub fn snapshot(&self) -> Dump {
        lock(&self.0).dump()
    }
}

/// The delta-ADS client. Build it, optionally [boot from the snapshot
/// file](XdsClient::boot_from_snapshot), take a [status watch](XdsClient::status),
/// then spawn [`XdsClient::run`].
pub struct XdsClient {
    cfg: ClientConfig,
    applier: Arc<dyn Applier>,
    /// Shared with the admin's `/config_dump`, which reads the held
    /// resources on request; the client holds the lock only briefly and
    /// never across an await.
    state: Arc<Mutex<State>>,
    status: watch::Sender<ClientStatus>,
    tuning: Tuning,
}

impl XdsClient {
    pub fn new(cfg: ClientConfig, applier: Arc<dyn Applier>) -> Self {
        let (status, _) = watch::channel(ClientStatus {
            node_id: cfg.node_id.clone(),
            ..Default::default()
        });
        XdsClient {
            cfg,
            applier,
            state: Arc::default(),
            status,
            tuning: Tuning::default(),
        }
    }

    /// Replaces the timing knobs (tests use short ones).
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }

    /// A watch of the connection state.
    pub fn status(&self) -> watch::Receiver<ClientStatus> {
        self.status.subscribe()
    }

    /// What the client holds, for rendering on request (`/config_dump`).
    pub fn resources(&self) -> HeldResources {
        HeldResources(self.state.clone())
    }

    /// Loads the last good snapshot from `snapshot_file` (if any) and
    /// applies it, for static stability at boot. `Ok(false)`: no file
    /// configured or none written yet. `Err`: unreadable, undecodable, or
    /// refused by the applier (the state stays empty then).
    pub fn boot_from_snapshot(&self) -> Result<bool, String> {
        let Some(path) = &self.cfg.snapshot_file else {
            return Ok(false);
        };
        let file = match snapshot_file::read(path) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(false),
            Err(e) => return Err(e.to_string()),
        };
        if file.node_id != self.cfg.node_id {
            tracing::warn!(node = %self.cfg.node_id, snapshot_node = %file.node_id, "the snapshot file was written by another node id; using it anyway");
        }
        let mut st = State::from_snapshot(&file).map_err(|e| format!("{}: {e}", path.display()))?;
        let version = st.last_version().unwrap_or("snapshot").to_string();
        self.applier
            .apply(&st.full_set(), &version)
            .map_err(|e| format!("the snapshot (version {version}) was refused: {e}"))?;
        st.mark_applied();
        tracing::info!(node = %self.cfg.node_id, version, path = %path.display(), "booted from the snapshot file");
        self.status.send_modify(|s| {
            s.config_source = ConfigSource::Snapshot;
            fill_types(s, &st, None);
        });
        *lock(&self.state) = st;
        Ok(true)
    }

    /// Runs until the task is aborted: connects, resyncs, reconnects with
    /// backoff and jitter forever. Nothing is cleared while disconnected.
    pub async fn run(self) {
        let XdsClient {
            cfg,
            applier,
            state,
            status,
            tuning,
        } = self;
        let addresses: Vec<String> = cfg.addresses.iter().map(|a| normalize(a)).collect();
        if addresses.is_empty() {
            tracing::error!(node = %cfg.node_id, "no control-plane address: xDS client idle");
            std::future::pending::<()>().await;
            return;
        }
        let mut conn = Conn {
            node: node(&cfg),
            cfg,
            applier,
            status,
            state,
            subs: BTreeMap::new(),
            tuning,
            source: ConfigSource::None,
            rotated: false,
        };
        if conn.st().applied() {
            conn.source = ConfigSource::Snapshot;
        }
        let mut backoff = Backoff::new(tuning.backoff_base, tuning.backoff_max);
        let mut index = 0usize;
        loop {
            let address = addresses
                .get(index % addresses.len())
                .cloned()
                .unwrap_or_default();
            let mut opened = None;
            let reason = conn.session(&address, &mut opened).await;
            if std::mem::take(&mut conn.rotated) {
                // Not a failure: straight back to the same address.
                tracing::info!(node = %conn.cfg.node_id, address, "{reason}");
                conn.subs.clear();
                backoff.reset();
                continue;
            }
            let healthy = opened.is_some_and(|t: Instant| t.elapsed() >= tuning.healthy_after);
            if healthy {
                backoff.reset();
            } else {
                index = (index + 1) % addresses.len();
            }
            // Loud on the first failure and every tenth after; a control
            // plane down for hours does not flood the log.
            let loud = backoff.failures().is_multiple_of(10);
            let delay = backoff.next_delay();
            let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            let next = addresses.get(index).map(String::as_str).unwrap_or("");
            if loud {
                tracing::warn!(node = %conn.cfg.node_id, address, error = %reason, retry_in_ms, next, failures = backoff.failures(), "xDS stream down; serving the last good configuration");
            } else {
                tracing::debug!(node = %conn.cfg.node_id, address, error = %reason, retry_in_ms, next, failures = backoff.failures(), "xDS stream down; serving the last good configuration");
            }
            conn.subs.clear();
            conn.status.send_modify(|s| {
                s.connected = None;
                s.connected_since_ms = None;
                s.last_error = Some(reason);
                for t in s.types.values_mut() {
                    t.subscribed = None;
                }
            });
            tokio::time::sleep(delay).await;
        }
    }
}

/// `host:port` means `http://host:port` (the stream is plaintext HTTP/2);
/// `https://` addresses use the configured TLS.
fn normalize(address: &str) -> String {
    let a = address.trim();
    if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

/// Node metadata key of the advertised admin endpoint.
pub const ADMIN_METADATA: &str = "gantry_admin";

fn node(cfg: &ClientConfig) -> Node {
    use envoy_types::pb::google::protobuf::Struct;
    let metadata = cfg.admin_address.as_ref().map(|a| Struct {
        fields: [(
            ADMIN_METADATA.to_string(),
            gantry_shared::proto::value::string(a),
        )]
        .into(),
    });
    Node {
        id: cfg.node_id.clone(),
        cluster: cfg.cluster.clone(),
        metadata,
        user_agent_name: USER_AGENT_NAME.into(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").into(),
        )),
        ..Default::default()
    }
}

/// Requests on the open stream; the node goes on the first one only.
struct Out {
    tx: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    node: Option<Node>,
}

impl Out {
    fn send(&mut self, mut req: DeltaDiscoveryRequest) -> Result<(), String> {
        if let Some(n) = self.node.take() {
            req.node = Some(n);
        }
        self.tx
            .send(req)
            .map_err(|_| "the request stream closed".to_string())
    }
}

/// Everything that outlives one stream.
struct Conn {
    cfg: ClientConfig,
    node: Node,
    applier: Arc<dyn Applier>,
    status: watch::Sender<ClientStatus>,
    state: Arc<Mutex<State>>,
    /// Named subscriptions on the open stream, per named type.
    subs: BTreeMap<Kind, BTreeSet<String>>,
    tuning: Tuning,
    source: ConfigSource,
    /// The last stream ended for a certificate rotation, not a failure.
    rotated: bool,
}

impl Conn {
    /// The held state, locked for one step (never across an await).
    fn st(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves when the TLS files were swapped; never without TLS.
async fn changed(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

impl Conn {
    /// One stream, from connect to its end; returns why it ended.
    async fn session(&mut self, address: &str, opened: &mut Option<Instant>) -> String {
        let t = self.tuning;
        let endpoint = match Endpoint::from_shared(address.to_string()) {
            Ok(e) => e,
            Err(e) => return format!("invalid control-plane address {address:?}: {}", chain(&e)),
        };
        let endpoint = endpoint
            .connect_timeout(t.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(t.keepalive_interval)
            .keep_alive_timeout(t.keepalive_timeout)
            .keep_alive_while_idle(true);
        let https = address.starts_with("https://");
        // New certificates end this stream so the next one presents them;
        // watched from before the connector takes the current ones, so a
        // change during the connect is not missed.
        let mut rotated = match (&self.cfg.tls, https) {
            (Some(tls), true) => Some(tls.changes()),
            _ => None,
        };
        let connected = match (&self.cfg.tls, https) {
            (Some(tls), true) => endpoint.connect_with_connector(tls.connector()).await,
            (None, true) => {
                return format!("{address} is https:// but no CA is configured (--xds-ca)");
            }
            (_, false) => endpoint.connect().await,
        };
        let channel = match connected {
            Ok(c) => c,
            Err(e) => return format!("connect: {}", chain(&e)),
        };
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut out = Out {
            tx,
            node: Some(self.node.clone()),
        };
        self.subs.clear();
        if let Err(e) = self.initial_requests(&mut out) {
            return e;
        }
        let call = client.delta_aggregated_resources(UnboundedReceiverStream::new(rx));
        let mut inbound = match tokio::time::timeout(t.connect_timeout, call).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                // A refused handshake hides in the status's sources.
                return format!("opening the stream: {} {}", status.code(), chain(&status));
            }
            Err(_) => return "opening the stream: timed out".into(),
        };
        *opened = Some(Instant::now());
        tracing::info!(node = %self.cfg.node_id, address, "xDS stream open");
        self.status.send_modify(|s| {
            s.connected = Some(address.to_string());
            s.connected_since_ms = Some(now_ms());
            s.streams_opened += 1;
        });
        self.publish();
        loop {
            let next = tokio::select! {
                m = inbound.message() => m,
                _ = changed(&mut rotated) => {
                    self.rotated = true;
                    return "new TLS certificates: reconnecting with them".into();
                }
            };
            match next {
                Ok(Some(resp)) => {
                    if let Err(e) = self.on_response(resp, &mut out).await {
                        return e;
                    }
                }
                Ok(None) => return "the control plane closed the stream".into(),
                Err(status) => {
                    return format!("stream error: {} {}", status.code(), status.message());
                }
            }
        }
    }

    /// Wildcard CDS and LDS, and the named types for what the held
    /// configuration references, each with `initial_resource_versions` of
    /// what is held, in push order.
    fn initial_requests(&mut self, out: &mut Out) -> Result<(), String> {
        let refs = references(self.st().set());
        for kind in Kind::ALL {
            let initial = self.st().versions(kind);
            if kind.is_wildcard() {
                out.send(DeltaDiscoveryRequest {
                    type_url: kind.type_url().into(),
                    initial_resource_versions: initial,
                    ..Default::default()
                })?;
                continue;
            }
            let names = wanted(&refs, kind).cloned().unwrap_or_default();
            if names.is_empty() {
                continue;
            }
            out.send(DeltaDiscoveryRequest {
                type_url: kind.type_url().into(),
                resource_names_subscribe: names.iter().cloned().collect(),
                initial_resource_versions: initial
                    .into_iter()
                    .filter(|(n, _)| names.contains(n))
                    .collect(),
                ..Default::default()
            })?;
            self.subs.insert(kind, names);
        }
        tracing::debug!(node = %self.cfg.node_id, "subscriptions sent");
        Ok(())
    }

    /// Subscribes to the names the state references and does not subscribe
    /// to yet; unsubscribes from those no longer referenced.
    fn sync_subscriptions(&mut self, out: &mut Out) -> Result<(), String> {
        let refs = references(self.st().set());
        for kind in Kind::ALL.into_iter().filter(|k| !k.is_wildcard()) {
            let empty = BTreeSet::new();
            let want = wanted(&refs, kind).unwrap_or(&empty);
            let have = self.subs.entry(kind).or_default();
            let subscribe: Vec<String> = want.difference(have).cloned().collect();
            let unsubscribe: Vec<String> = have.difference(want).cloned().collect();
            if subscribe.is_empty() && unsubscribe.is_empty() {
                continue;
            }
            tracing::debug!(node = %self.cfg.node_id, r#type = kind.short(), subscribe = subscribe.len(), unsubscribe = unsubscribe.len(), "subscriptions changed");
            *have = want.clone();
            out.send(DeltaDiscoveryRequest {
                type_url: kind.type_url().into(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..Default::default()
            })?;
        }
        Ok(())
    }

    async fn on_response(
        &mut self,
        resp: DeltaDiscoveryResponse,
        out: &mut Out,
    ) -> Result<(), String> {
        let nonce = resp.nonce.clone();
        let version = resp.system_version_info.clone();
        let Some(kind) = Kind::from_type_url(&resp.type_url) else {
            let reason = format!("unsupported resource type {:?}", resp.type_url);
            return self.nack(out, None, &resp.type_url, &nonce, &version, reason);
        };
        let update = match self.update_from(kind, resp) {
            Ok(u) => u,
            Err((reason, refused)) => {
                let refused: Vec<(&str, Option<&Decoded>)> = refused
                    .iter()
                    .map(|(n, d)| (n.as_str(), d.as_ref()))
                    .collect();
                self.refused(|st| st.refuse(kind, &refused, &reason)).await;
                return self.nack(out, Some(kind), kind.type_url(), &nonce, &version, reason);
            }
        };
        if self.st().is_noop(&update) {
            tracing::debug!(node = %self.cfg.node_id, r#type = kind.short(), version, "no change");
            self.st().record_version(kind, version);
            self.source = ConfigSource::ControlPlane;
            self.ack(out, kind, &nonce)?;
            self.publish();
            return Ok(());
        }
        let (upserts, removals) = (update.upserts.len(), update.removals.len());
        let names: Vec<String> = update.upserts.iter().map(|(n, _, _)| n.clone()).collect();
        let candidate = self.st().candidate(update);
        let applier = self.applier.clone();
        let verdict = tokio::task::spawn_blocking(move || {
            let result = applier.apply(&candidate.set, &candidate.version);
            (candidate, result)
        })
        .await;
        match verdict {
            Ok((candidate, Ok(()))) => {
                let pruned = candidate.pruned().count();
                self.st().commit(candidate);
                // The decoded route configurations were just dropped.
                tokio::task::spawn_blocking(crate::memory::release_freed_memory);
                self.source = ConfigSource::ControlPlane;
                tracing::info!(node = %self.cfg.node_id, r#type = kind.short(), version, upserts, removals, pruned, "applied");
                self.ack(out, kind, &nonce)?;
                self.sync_subscriptions(out)?;
                self.publish();
                self.save_snapshot().await;
                Ok(())
            }
            Ok((candidate, Err(reason))) => {
                self.refused(|st| st.refuse_candidate(&candidate, &reason))
                    .await;
                self.nack(out, Some(kind), kind.type_url(), &nonce, &version, reason)
            }
            Err(e) => {
                let reason = if e.is_panic() {
                    "the configuration could not be applied (the compiler panicked)".to_string()
                } else {
                    "the configuration could not be applied".to_string()
                };
                // The candidate went down with the task: fence every
                // resource of the type the response named.
                let refused: Vec<(&str, Option<&Decoded>)> =
                    names.iter().map(|n| (n.as_str(), None)).collect();
                self.refused(|st| st.refuse(kind, &refused, &reason)).await;
                self.nack(out, Some(kind), kind.type_url(), &nonce, &version, reason)
            }
        }
    }

    /// Records a refusal in the state; when it fences something, the
    /// proxy enforces the fences at once and the snapshot file keeps them.
    async fn refused(&mut self, record: impl FnOnce(&mut State) -> bool) {
        let fences = {
            let mut st = self.st();
            if !record(&mut st) {
                return;
            }
            st.set().fences.clone()
        };
        tracing::warn!(node = %self.cfg.node_id, fences = ?fences.describe(), "refused update fences routes until it is replaced");
        self.applier.fence(&fences);
        self.publish();
        self.save_snapshot().await;
    }

    /// Decodes a response into an update, or says which resource is wrong
    /// and gives every resource of the response, decoded where it could be.
    fn update_from(&self, kind: Kind, resp: DeltaDiscoveryResponse) -> Result<Update, Refusal> {
        let subscribed = self.subs.get(&kind);
        let mut upserts = Vec::with_capacity(resp.resources.len());
        let mut failed: Option<String> = None;
        let mut undecoded: Vec<String> = Vec::new();
        for r in resp.resources {
            let name = r.name;
            if name.is_empty() {
                failed.get_or_insert_with(|| format!("a {} resource has no name", kind.short()));
                continue;
            }
            if !kind.is_wildcard() && !subscribed.is_some_and(|s| s.contains(&name)) {
                // Sent before our unsubscribe reached the server.
                tracing::debug!(node = %self.cfg.node_id, r#type = kind.short(), name, "ignoring a resource not subscribed to");
                continue;
            }
            let Some(any) = r.resource else {
                // A body-less resource refreshes one we hold (TTL heartbeat).
                if self.st().held_version(kind, &name) == Some(r.version.as_str()) {
                    continue;
                }
                failed.get_or_insert_with(|| {
                    format!("{} resource {name:?} has no body", kind.short())
                });
                undecoded.push(name);
                continue;
            };
            let decoded = match decode(kind, &any) {
                Ok(d) => d,
                Err(e) => {
                    failed.get_or_insert_with(|| format!("{} resource {name:?} {e}", kind.short()));
                    undecoded.push(name);
                    continue;
                }
            };
            upserts.push((
                name,
                Held {
                    version: r.version,
                    any,
                },
                decoded,
            ));
        }
        if let Some(reason) = failed {
            let mut refused: Vec<(String, Option<Decoded>)> =
                upserts.into_iter().map(|(n, _, d)| (n, Some(d))).collect();
            refused.extend(undecoded.into_iter().map(|n| (n, None)));
            return Err((reason, refused));
        }
        let mut removals = resp.removed_resources;
        removals.extend(resp.removed_resource_names.into_iter().map(|r| r.name));
        Ok(Update {
            kind,
            version: resp.system_version_info,
            upserts,
            removals,
        })
    }

    fn ack(&mut self, out: &mut Out, kind: Kind, nonce: &str) -> Result<(), String> {
        out.send(DeltaDiscoveryRequest {
            type_url: kind.type_url().into(),
            response_nonce: nonce.into(),
            ..Default::default()
        })
    }

    fn nack(
        &mut self,
        out: &mut Out,
        kind: Option<Kind>,
        type_url: &str,
        nonce: &str,
        version: &str,
        reason: String,
    ) -> Result<(), String> {
        tracing::warn!(node = %self.cfg.node_id, r#type = gantry_shared::xds::short_name(type_url), version, error = %reason, "NACK: keeping the last good configuration");
        let nack = NackStatus {
            type_url: type_url.into(),
            version: version.into(),
            nonce: nonce.into(),
            error: reason.clone(),
            at_ms: now_ms(),
        };
        self.status.send_modify(|s| {
            s.last_nack = Some(nack.clone());
            if let Some(k) = kind {
                s.types.entry(k.short().into()).or_default().last_nack = Some(nack.clone());
            }
        });
        out.send(DeltaDiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            error_detail: Some(RpcStatus {
                code: INVALID_ARGUMENT,
                message: reason,
                details: Vec::new(),
            }),
            ..Default::default()
        })
    }

    /// Publishes the per-type state.
    fn publish(&self) {
        let source = self.source;
        self.status.send_modify(|s| {
            if source != ConfigSource::None {
                s.config_source = source;
            }
            fill_types(s, &self.st(), Some(&self.subs));
        });
    }

    async fn save_snapshot(&self) {
        let Some(path) = self.cfg.snapshot_file.clone() else {
            return;
        };
        let file = self.st().to_snapshot(&self.cfg.node_id);
        let written = tokio::task::spawn_blocking(move || snapshot_file::write(&path, &file)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(node = %self.cfg.node_id, error = %e, "could not write the snapshot file")
            }
            Err(e) => {
                tracing::warn!(node = %self.cfg.node_id, error = %e, "could not write the snapshot file")
            }
        }
    }
}

fn fill_types(s: &mut ClientStatus, st: &State, subs: Option<&BTreeMap<Kind, BTreeSet<String>>>) {
    for k in Kind::ALL {
        let t = s.types.entry(k.short().into()).or_default();
        t.version = st.system_version(k).map(str::to_string);
        t.resources = st.count(k);
        t.subscribed = match subs {
            Some(subs) if !k.is_wildcard() => Some(subs.get(&k).map_or(0, BTreeSet::len)),
            _ => None,
        };
    }
    s.fences = st.set().fences.describe();
    s.missing = st
        .missing()
        .into_iter()
        .map(|(k, n)| format!("{}/{n}", k.short()))
        .collect();
}

/// An error with its sources (tonic's transport errors say little at the top).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = inner.source();
    }
    s
}
