//! The fleet: every proxy connected to this replica, per resource type
//! what was sent, ACKed and NACKed; mirrored into the store so every
//! replica's `/fleet` shows nodes served by the others too.

use super::cache::Resource;
use crate::store::{Store, StoreError, now_ms};
use crate::translator::Flavour;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncState {
    Synced,
    Stale,
    Nacked,
    NotSent,
}

#[derive(Clone, Debug, Serialize)]
pub struct Nack {
    pub version: String,
    pub error: String,
    pub at: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TypeStatus {
    pub version_sent: Option<String>,
    pub version_acked: Option<String>,
    pub last_nack: Option<Nack>,
    pub state: SyncState,
    /// What was last sent, for CSDS.
    #[serde(skip)]
    pub resources: Vec<Arc<Resource>>,
    #[serde(skip)]
    pub sent_at: i64,
}

impl Default for TypeStatus {
    fn default() -> Self {
        TypeStatus {
            version_sent: None,
            version_acked: None,
            last_nack: None,
            state: SyncState::NotSent,
            resources: Vec::new(),
            sent_at: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct NodeEntry {
    pub node_id: String,
    pub group: String,
    pub flavour: Flavour,
    pub user_agent: String,
    /// gantry-proxy's admin endpoint, as the node advertised it.
    pub admin: Option<String>,
    pub connected_at: i64,
    pub protocol: &'static str,
    /// The revision of the snapshot this node should be on.
    pub target_revision: i64,
    /// The newest revision the node was seen synced on (every type ACKed).
    pub synced_revision: i64,
    pub types: BTreeMap<&'static str, TypeStatus>,
    /// The client certificate the node connected with (mutual TLS).
    pub certificate: Option<Arc<super::identity::PeerIdentity>>,
}

impl NodeEntry {
    /// The worst state across types: one NACK or stale type marks the node.
    pub fn state(&self) -> SyncState {
        let states: Vec<SyncState> = self.types.values().map(|t| t.state).collect();
        if states.is_empty() {
            SyncState::NotSent
        } else if states.contains(&SyncState::Nacked) {
            SyncState::Nacked
        } else if states.contains(&SyncState::Stale) {
            SyncState::Stale
        } else if states.contains(&SyncState::NotSent) {
            SyncState::NotSent
        } else {
            SyncState::Synced
        }
    }

    pub fn view(&self, cp: &ControlPlaneId) -> Value {
        let types: serde_json::Map<String, Value> = self
            .types
            .iter()
            .map(|(t, s)| {
                (
                    gantry_shared::xds::short_name(t).to_string(),
                    serde_json::to_value(s).unwrap_or_default(),
                )
            })
            .collect();
        let state = self.state();
        serde_json::json!({
            "node_id": self.node_id,
            "group": self.group,
            "flavour": self.flavour.as_str(),
            "user_agent": self.user_agent,
            "admin_address": self.admin,
            "protocol": self.protocol,
            "connected_since": self.connected_at,
            "control_plane": cp,
            "state": state,
            "revision": if state == SyncState::Synced { Some(self.target_revision) } else { None },
            "target_revision": self.target_revision,
            "types": types,
            "certificate": self.certificate.as_deref(),
        })
    }
}

/// Which replica serves a node.
#[derive(Clone, Debug, Serialize)]
pub struct ControlPlaneId {
    pub id: String,
    pub hostname: String,
    pub xds_listen: String,
}

pub struct Fleet {
    pub cp: ControlPlaneId,
    nodes: Mutex<HashMap<u64, NodeEntry>>,
    next: AtomicU64,
    dirty: AtomicBool,
}

/// How long a replica's rows stay visible without a refresh.
const STALE_AFTER: Duration = Duration::from_secs(15);

impl Fleet {
    pub fn new(xds_listen: String) -> Arc<Fleet> {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Arc::new(Fleet {
            cp: ControlPlaneId {
                id: uuid::Uuid::new_v4().to_string(),
                hostname,
                xds_listen,
            },
            nodes: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            dirty: AtomicBool::new(true),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, NodeEntry>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, entry: NodeEntry) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, entry);
        self.dirty.store(true, Ordering::Relaxed);
        id
    }

    pub fn update(&self, stream: u64, f: impl FnOnce(&mut NodeEntry)) {
        if let Some(e) = self.lock().get_mut(&stream) {
            f(e);
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    pub fn remove(&self, stream: u64) {
        self.lock().remove(&stream);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Nodes on this replica.
    pub fn local(&self) -> Vec<NodeEntry> {
        let mut v: Vec<NodeEntry> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| {
            a.node_id
                .cmp(&b.node_id)
                .then(a.connected_at.cmp(&b.connected_at))
        });
        v
    }

    /// Every node on every replica: this one's live, others' from the store.
    pub async fn all(&self, store: &Store) -> Result<Vec<Value>, StoreError> {
        let mut out: Vec<Value> = self.local().iter().map(|n| n.view(&self.cp)).collect();
        let rows =
            sqlx::query("SELECT status FROM fleet_nodes WHERE cp_id <> $1 AND updated_at > $2")
                .bind(self.cp.id.as_str())
                .bind(now_ms() - STALE_AFTER.as_millis() as i64)
                .fetch_all(store.pool())
                .await?;
        for r in rows {
            let s: String = r.try_get(0)?;
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a["node_id"].as_str().cmp(&b["node_id"].as_str()));
        Ok(out)
    }

    /// Mirrors this replica's nodes into the store: on change within
    /// `every`, and as a heartbeat at least every few seconds.
    pub fn spawn_mirror(
        self: &Arc<Self>,
        store: Store,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let fleet = self.clone();
        tokio::spawn(async move {
            // A replica restarted on this host and address: its old rows
            // describe connections that died with it.
            if let Err(e) = sqlx::query(
                "DELETE FROM fleet_nodes WHERE cp_host = $1 AND cp_xds = $2 AND cp_id <> $3",
            )
            .bind(fleet.cp.hostname.as_str())
            .bind(fleet.cp.xds_listen.as_str())
            .bind(fleet.cp.id.as_str())
            .execute(store.pool())
            .await
            {
                tracing::warn!(error = %e, "could not clear a previous run's fleet rows");
            }
            let mut tick = tokio::time::interval(every);
            let mut last_write = std::time::Instant::now() - Duration::from_secs(60);
            loop {
                tick.tick().await;
                let heartbeat = last_write.elapsed() >= STALE_AFTER / 3;
                if !fleet.dirty.swap(false, Ordering::Relaxed) && !heartbeat {
                    continue;
                }
                if let Err(e) = fleet.write(&store).await {
                    tracing::warn!(error = %e, "fleet mirror write failed");
                    fleet.dirty.store(true, Ordering::Relaxed);
                } else {
                    last_write = std::time::Instant::now();
                }
            }
        })
    }

    async fn write(&self, store: &Store) -> Result<(), StoreError> {
        let now = now_ms();
        let nodes = self.local();
        let mut tx = store.pool().begin().await?;
        sqlx::query("DELETE FROM fleet_nodes WHERE cp_id = $1")
            .bind(self.cp.id.as_str())
            .execute(&mut *tx)
            .await?;
        // One row per node id: a node with two streams here shows its newest.
        let mut seen = std::collections::HashSet::new();
        for n in nodes.iter().rev() {
            if !seen.insert(n.node_id.clone()) {
                continue;
            }
            sqlx::query(
                "INSERT INTO fleet_nodes (node_id, cp_id, cp_host, cp_xds, status, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(n.node_id.as_str())
            .bind(self.cp.id.as_str())
            .bind(self.cp.hostname.as_str())
            .bind(self.cp.xds_listen.as_str())
            .bind(n.view(&self.cp).to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // Rows of replicas that died without cleaning up.
        sqlx::query("DELETE FROM fleet_nodes WHERE updated_at < $1")
            .bind(now - 10 * STALE_AFTER.as_millis() as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes this replica's rows (clean shutdown).
    pub async fn clear(&self, store: &Store) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM fleet_nodes WHERE cp_id = $1")
            .bind(self.cp.id.as_str())
            .execute(store.pool())
            .await?;
        Ok(())
    }
}
