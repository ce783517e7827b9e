//! What SotW and delta streams share: who the node is, the snapshot it
//! follows, nonces, and the fleet bookkeeping of sends, ACKs and NACKs.

use super::XdsContext;
use super::cache::{Resource, Snapshot, SnapshotCache};
use super::fleet::{Fleet, Nack, NodeEntry, SyncState, TypeStatus};
use super::identity::PeerIdentity;
use crate::metrics::{METRICS, TypeLabels};
use crate::store::now_ms;
use crate::translator::Flavour;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::core::v3::Node as ProtoNode;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// The other end of a stream.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub addr: Option<std::net::SocketAddr>,
    /// The client certificate's names (xDS over mutual TLS).
    pub identity: Option<Arc<PeerIdentity>>,
}

/// The node as it introduced itself on its first request.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub id: String,
    pub group: String,
    pub flavour: Flavour,
    pub user_agent: String,
    /// gantry-proxy's admin endpoint, from node metadata `gantry_admin`.
    pub admin: Option<String>,
}

impl NodeInfo {
    pub fn from_node(n: &Node) -> NodeInfo {
        let version = match &n.user_agent_version_type {
            Some(envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(v)) => v.clone(),
            Some(envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentBuildVersion(b)) => b
                .version
                .as_ref()
                .map(|v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let group = if n.cluster.is_empty() {
            "default".to_string()
        } else {
            n.cluster.clone()
        };
        NodeInfo {
            id: n.id.clone(),
            group,
            flavour: Flavour::from_user_agent(&n.user_agent_name),
            user_agent: format!("{}/{}", n.user_agent_name, version)
                .trim_end_matches('/')
                .to_string(),
            admin: n
                .metadata
                .as_ref()
                .and_then(|m| m.fields.get("gantry_admin"))
                .and_then(|v| match &v.kind {
                    Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => {
                        Some(s.clone())
                    }
                    _ => None,
                }),
        }
    }
}

/// Where the control plane may call a node's advertised admin endpoint
/// (the proxy-cache purge). Node metadata is the node's own claim, so an
/// address is not taken on its word: the advertised port is called on the
/// address the node's xDS connection comes from, unless the advertised
/// host is an IP in `networks` (`--proxy-admin-networks`, for proxies whose
/// connections arrive through NAT or a balancer). `None`: nowhere.
pub fn admin_target(
    advertised: &str,
    peer: Option<std::net::IpAddr>,
    networks: &[ipnet::IpNet],
) -> Option<String> {
    let rest = advertised
        .split_once("://")
        .map_or(advertised, |(_, r)| r)
        .trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>()
        && (Some(ip) == peer || networks.iter().any(|n| n.contains(&ip)))
    {
        return Some(std::net::SocketAddr::new(ip, port).to_string());
    }
    peer.map(|ip| std::net::SocketAddr::new(ip, port).to_string())
}

/// One stream's link to the cache and the fleet.
pub struct Session {
    pub node: NodeInfo,
    pub fleet: Arc<Fleet>,
    pub fleet_id: u64,
    pub cache: SnapshotCache,
    nonce: u64,
}

impl Session {
    pub fn open(
        node: NodeInfo,
        fleet: Arc<Fleet>,
        cache: SnapshotCache,
        protocol: &'static str,
        certificate: Option<Arc<PeerIdentity>>,
    ) -> Session {
        let target = cache.current().revision;
        let fleet_id = fleet.register(NodeEntry {
            node_id: node.id.clone(),
            group: node.group.clone(),
            flavour: node.flavour,
            user_agent: node.user_agent.clone(),
            admin: node.admin.clone(),
            connected_at: now_ms(),
            protocol,
            target_revision: target,
            synced_revision: -1,
            types: Default::default(),
            certificate,
        });
        tracing::info!(node = %node.id, group = %node.group, flavour = node.flavour.as_str(), protocol, "proxy connected");
        Session {
            node,
            fleet,
            fleet_id,
            cache,
            nonce: 0,
        }
    }

    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.cache.current().for_flavour(self.node.flavour)
    }

    pub fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    fn labels(&self, type_url: &'static str) -> TypeLabels {
        TypeLabels {
            r#type: gantry_shared::xds::short_name(type_url),
            flavour: self.node.flavour.as_str(),
        }
    }

    pub fn sent(&self, type_url: &'static str, version: &str, resources: Vec<Arc<Resource>>) {
        METRICS
            .responses
            .get_or_create(&self.labels(type_url))
            .inc();
        self.fleet.update(self.fleet_id, |e| {
            let t = e.types.entry(type_url).or_default();
            t.version_sent = Some(version.to_string());
            t.resources = resources;
            t.sent_at = now_ms();
            t.state = SyncState::Stale;
        });
    }

    pub fn acked(&self, type_url: &'static str, version: &str) {
        let labels = self.labels(type_url);
        METRICS.acks.get_or_create(&labels).inc();
        let now = now_ms();
        self.fleet.update(self.fleet_id, |e| {
            let t = e.types.entry(type_url).or_default();
            if t.version_sent.as_deref() == Some(version)
                && t.version_acked.as_deref() != Some(version)
            {
                let took = Duration::from_millis(now.saturating_sub(t.sent_at).max(0) as u64);
                METRICS
                    .ack_latency
                    .get_or_create(&labels)
                    .observe(took.as_secs_f64());
            }
            t.version_acked = Some(version.to_string());
        });
    }

    pub fn nacked(&self, type_url: &'static str, version: &str, error: &str) {
        METRICS.nacks.get_or_create(&self.labels(type_url)).inc();
        // Every write was admitted by gantry-proxy's own compiler, so a
        // gantry-proxy's NACK means the two disagree (versions, or a bug).
        // Envoy nodes may refuse what only Envoy checks.
        match self.node.flavour {
            Flavour::GantryProxy => {
                tracing::error!(node = %self.node.id, user_agent = %self.node.user_agent, r#type = gantry_shared::xds::short_name(type_url), version, error, "gantry-proxy NACKed an admitted configuration: its routes with policies fail closed until a later update is accepted; a control plane and proxy of different versions, or a bug")
            }
            Flavour::Envoy => {
                tracing::warn!(node = %self.node.id, user_agent = %self.node.user_agent, r#type = gantry_shared::xds::short_name(type_url), version, error, "Envoy NACKed")
            }
        }
        self.fleet.update(self.fleet_id, |e| {
            let t = e.types.entry(type_url).or_default();
            t.last_nack = Some(Nack {
                version: version.to_string(),
                error: error.to_string(),
                at: now_ms(),
            });
        });
    }

    /// Records the snapshot revision the node should reach and each
    /// type's state against it.
    pub fn states(&self, revision: i64, states: &[(&'static str, SyncState)]) {
        let synced = !states.is_empty() && states.iter().all(|(_, s)| *s == SyncState::Synced);
        let seen_at = self.cache.current().seen_at(revision);
        self.fleet.update(self.fleet_id, |e| {
            // Once per node and revision: the commit reached this node.
            if synced && e.synced_revision < revision {
                e.synced_revision = revision;
                if let Some(t) = seen_at {
                    METRICS.commit_to_ack.observe(t.elapsed().as_secs_f64());
                }
            }
            e.target_revision = revision;
            for (t, st) in states {
                let s: &mut TypeStatus = e.types.entry(t).or_default();
                s.state = *st;
            }
        });
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        tracing::info!(node = %self.node.id, "proxy disconnected");
        self.fleet.remove(self.fleet_id);
    }
}

/// A key for a set of (name, version) pairs: equal keys mean equal content.
pub fn content_key<'a>(resources: impl Iterator<Item = &'a Arc<Resource>>) -> u64 {
    let mut h = DefaultHasher::new();
    for r in resources {
        r.name.hash(&mut h);
        r.version.hash(&mut h);
    }
    h.finish()
}

/// One ADS stream's protocol (state-of-the-world or delta): what it does
/// with a request, and how it pushes a new snapshot.
pub trait Protocol: Sized + Send {
    type Request: prost::Message + Default + Send + 'static;
    const NAME: &'static str;
    fn node(req: &Self::Request) -> Option<&ProtoNode>;
    fn open(
        session: Session,
        tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, tonic::Status>>,
    ) -> Self;
    fn session(&self) -> &Session;
    fn on_request(&mut self, r: Self::Request) -> impl Future<Output = Result<(), ()>> + Send;
    fn push_all(&mut self) -> impl Future<Output = Result<(), ()>> + Send;
}

/// Runs one stream: the first request names the node; then requests,
/// new snapshots and shutdown are handled as they come.
pub async fn drive<P: Protocol>(
    ctx: Arc<XdsContext>,
    mut requests: super::requests::Requests<P::Request>,
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, tonic::Status>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    peer: Peer,
) {
    let first = match requests.message().await {
        Ok(Some(r)) => r,
        _ => return,
    };
    let Some(mut node) = P::node(&first).map(NodeInfo::from_node) else {
        let _ = tx
            .send(Err(tonic::Status::invalid_argument(
                "the first request must carry the node",
            )))
            .await;
        return;
    };
    // Over mutual TLS the node id is what the certificate says, checked
    // here, where the id is first known: before the node is in the fleet
    // and before any resource is sent.
    if let Some(td) = &ctx.trust_domain {
        let named = peer
            .identity
            .as_ref()
            .is_some_and(|c| c.names(&node.id, td));
        if !named {
            let names = peer
                .identity
                .as_ref()
                .map_or_else(|| "no certificate".to_string(), |c| c.describe());
            tracing::warn!(node = %node.id, certificate = %names, trust_domain = %td, peer = ?peer.addr, "xDS stream refused: the client certificate does not name the node id");
            let _ = tx
                .send(Err(tonic::Status::permission_denied(format!(
                    "node id {:?} is not named by the client certificate",
                    node.id
                ))))
                .await;
            return;
        }
    }
    node.admin = node
        .admin
        .as_deref()
        .and_then(|a| admin_target(a, peer.addr.map(|p| p.ip()), &ctx.admin_networks));
    let session = Session::open(
        node,
        ctx.fleet.clone(),
        ctx.cache.clone(),
        P::NAME,
        peer.identity.clone(),
    );
    let mut snapshots = ctx.cache.subscribe();
    let mut s = P::open(session, tx);
    if s.on_request(first).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            msg = requests.message() => match msg {
                Ok(Some(r)) => if s.on_request(r).await.is_err() { return },
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(node = %s.session().node.id, error = %e, "stream ended");
                    return;
                }
            },
            // The control plane is stopping: end the stream so the node
            // reconnects to another replica (or to this one, restarted).
            _ = stop.changed() => return,
            changed = snapshots.changed() => {
                if changed.is_err() { return }
                if s.push_all().await.is_err() { return }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::admin_target;

    #[test]
    fn an_advertised_admin_address_is_tied_to_the_connection() {
        let peer = Some("10.0.0.7".parse().unwrap());
        // The node's own address: as advertised.
        assert_eq!(
            admin_target("10.0.0.7:9901", peer, &[]).as_deref(),
            Some("10.0.0.7:9901")
        );
        assert_eq!(
            admin_target("http://10.0.0.7:9901/", peer, &[]).as_deref(),
            Some("10.0.0.7:9901")
        );
        // Anywhere else (the metadata server, an internal service, a name):
        // the advertised port on the connection's address.
        for a in [
            "169.254.169.254:80",
            "127.0.0.1:8001",
            "db.internal:5432",
            "[::1]:22",
        ] {
            let port = a.rsplit_once(':').unwrap().1;
            assert_eq!(
                admin_target(a, peer, &[]),
                Some(format!("10.0.0.7:{port}")),
                "{a}"
            );
        }
        // Unless the operator allowed that network.
        let nets = ["192.168.0.0/16".parse().unwrap()];
        assert_eq!(
            admin_target("192.168.1.2:9901", peer, &nets).as_deref(),
            Some("192.168.1.2:9901")
        );
        // Nothing to call: no port, port 0, or no known peer.
        assert_eq!(admin_target("10.0.0.7", peer, &[]), None);
        assert_eq!(admin_target("10.0.0.7:0", peer, &[]), None);
        assert_eq!(admin_target("1.2.3.4:9901", None, &[]), None);
    }
}
