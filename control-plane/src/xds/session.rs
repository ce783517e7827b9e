//! What SotW and delta streams share: who the node is, the snapshot it
//! follows, nonces, and the fleet bookkeeping of sends, ACKs and NACKs.

use super::cache::{Resource, Snapshot, SnapshotCache};
use super::fleet::{Fleet, Nack, NodeEntry, SyncState, TypeStatus};
use crate::store::now_ms;
use crate::translator::Flavour;
use envoy_types::pb::envoy::config::core::v3::Node;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The node as it introduced itself on its first request.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub id: String,
    pub group: String,
    pub flavour: Flavour,
    pub user_agent: String,
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
        }
    }
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
    ) -> Session {
        let target = cache.current().revision;
        let fleet_id = fleet.register(NodeEntry {
            node_id: node.id.clone(),
            group: node.group.clone(),
            flavour: node.flavour,
            user_agent: node.user_agent.clone(),
            connected_at: now_ms(),
            protocol,
            target_revision: target,
            types: Default::default(),
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

    pub fn sent(&self, type_url: &'static str, version: &str, resources: Vec<Arc<Resource>>) {
        self.fleet.update(self.fleet_id, |e| {
            let t = e.types.entry(type_url).or_default();
            t.version_sent = Some(version.to_string());
            t.resources = resources;
            t.sent_at = now_ms();
            t.state = SyncState::Stale;
        });
    }

    pub fn acked(&self, type_url: &'static str, version: &str) {
        self.fleet.update(self.fleet_id, |e| {
            e.types.entry(type_url).or_default().version_acked = Some(version.to_string());
        });
    }

    pub fn nacked(&self, type_url: &'static str, version: &str, error: &str) {
        tracing::warn!(node = %self.node.id, r#type = gantry_shared::xds::short_name(type_url), version, error, "proxy NACKed");
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
        self.fleet.update(self.fleet_id, |e| {
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
