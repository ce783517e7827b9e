//! Incremental (delta) ADS: only resources whose version differs from
//! what the node has are sent, and removals are named.
//!
//! Kept here: wildcard and named subscriptions with subscribe/unsubscribe;
//! `initial_resource_versions` on reconnect, so a node that already has a
//! resource is not sent it again; `removed_resources`; resource versions
//! the node NACKed are not sent again; named resources are sent when they
//! come to exist; make-before-break order with cluster removals held back
//! until the node's routes no longer need them.

use super::XdsContext;
use super::session::{NodeInfo, Session};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use gantry_shared::xds::{self, PUSH_ORDER};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

/// A response awaiting its ACK: what the node had before, to restore on NACK.
struct Pending {
    nonce: String,
    version: String,
    previous: Vec<(String, Option<String>)>,
    sent: Vec<(String, String)>,
}

#[derive(Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// name → version the node has (as far as we know).
    known: HashMap<String, String>,
    /// name → version the node refused.
    nacked: HashMap<String, String>,
    pending: Option<Pending>,
    responded: bool,
}

struct Stream {
    session: Session,
    types: HashMap<&'static str, TypeState>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

fn known_type(t: &str) -> Option<&'static str> {
    PUSH_ORDER.iter().copied().find(|k| *k == t)
}

pub async fn run(
    ctx: Arc<XdsContext>,
    mut requests: tonic::Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) {
    let first = match requests.message().await {
        Ok(Some(r)) => r,
        _ => return,
    };
    let Some(node) = first.node.as_ref().map(NodeInfo::from_node) else {
        let _ = tx
            .send(Err(Status::invalid_argument(
                "the first request must carry the node",
            )))
            .await;
        return;
    };
    let session = Session::open(node, ctx.fleet.clone(), ctx.cache.clone(), "delta");
    let mut snapshots = ctx.cache.subscribe();
    let mut s = Stream {
        session,
        types: HashMap::new(),
        tx,
    };
    if s.on_request(first).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            msg = requests.message() => match msg {
                Ok(Some(r)) => if s.on_request(r).await.is_err() { return },
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(node = %s.session.node.id, error = %e, "stream ended");
                    return;
                }
            },
            changed = snapshots.changed() => {
                if changed.is_err() { return }
                if s.on_snapshot().await.is_err() { return }
            }
        }
    }
}

impl Stream {
    async fn on_request(&mut self, r: DeltaDiscoveryRequest) -> Result<(), ()> {
        let Some(t) = known_type(&r.type_url) else {
            tracing::debug!(type_url = %r.type_url, "ignoring request for an unknown type");
            return Ok(());
        };
        let first = !self.types.contains_key(t);
        let st = self.types.entry(t).or_default();
        if first {
            st.wildcard = xds::is_wildcard_type(t) && r.resource_names_subscribe.is_empty();
            st.known = r.initial_resource_versions.clone().into_iter().collect();
        }
        for n in &r.resource_names_subscribe {
            if n == "*" {
                st.wildcard = true;
            } else {
                st.names.insert(n.clone());
            }
        }
        for n in &r.resource_names_unsubscribe {
            if n == "*" {
                st.wildcard = false;
            } else {
                st.names.remove(n);
                st.known.remove(n);
            }
        }
        if !r.response_nonce.is_empty() {
            let matches = st
                .pending
                .as_ref()
                .is_some_and(|p| p.nonce == r.response_nonce);
            if matches && let Some(p) = st.pending.take() {
                if let Some(err) = &r.error_detail {
                    for (name, version) in &p.sent {
                        st.nacked.insert(name.clone(), version.clone());
                    }
                    for (name, prev) in p.previous {
                        match prev {
                            Some(v) => st.known.insert(name, v),
                            None => st.known.remove(&name),
                        };
                    }
                    self.session.nacked(t, &p.version, &err.message);
                } else {
                    for (name, _) in &p.sent {
                        st.nacked.remove(name);
                    }
                    let current = self.is_current(t);
                    self.session.acked(t, &p.version, current);
                }
            }
        }
        self.maybe_send(t).await?;
        if t == xds::ROUTE || t == xds::LISTENER {
            self.maybe_send(xds::CLUSTER).await?;
        }
        Ok(())
    }

    async fn on_snapshot(&mut self) -> Result<(), ()> {
        for t in PUSH_ORDER {
            if self.types.contains_key(t) {
                self.maybe_send(t).await?;
            }
        }
        let Some(snap) = self.session.snapshot() else {
            return Ok(());
        };
        let current: Vec<(&'static str, bool)> = self
            .types
            .keys()
            .map(|t| (*t, self.is_current(t)))
            .collect();
        self.session.retarget(snap.revision, &current);
        Ok(())
    }

    /// Whether the node has exactly what it should of type `t`, ACKed.
    fn is_current(&self, t: &'static str) -> bool {
        let (Some(snap), Some(st)) = (self.session.snapshot(), self.types.get(t)) else {
            return true;
        };
        if st.pending.is_some() {
            return false;
        }
        let empty = Default::default();
        let all = snap.of(t).unwrap_or(&empty);
        let wanted_ok = all
            .values()
            .filter(|r| st.wildcard || st.names.contains(&r.name))
            .all(|r| st.known.get(&r.name) == Some(&r.version));
        let nothing_stale = st
            .known
            .keys()
            .all(|n| all.contains_key(n) || !(st.wildcard || st.names.contains(n)));
        wanted_ok && nothing_stale
    }

    async fn maybe_send(&mut self, t: &'static str) -> Result<(), ()> {
        let Some(snap) = self.session.snapshot() else {
            return Ok(());
        };
        let hold_cluster_removals =
            t == xds::CLUSTER && !(self.is_current(xds::LISTENER) && self.is_current(xds::ROUTE));
        let Some(st) = self.types.get(t) else {
            return Ok(());
        };
        let empty = Default::default();
        let all = snap.of(t).unwrap_or(&empty);
        let updates: Vec<_> = all
            .values()
            .filter(|r| st.wildcard || st.names.contains(&r.name))
            .filter(|r| st.known.get(&r.name) != Some(&r.version))
            .filter(|r| st.nacked.get(&r.name) != Some(&r.version))
            .cloned()
            .collect();
        let removed: Vec<String> = if hold_cluster_removals {
            Vec::new()
        } else {
            let mut v: Vec<String> = st
                .known
                .keys()
                .filter(|n| (st.wildcard || st.names.contains(*n)) && !all.contains_key(*n))
                .cloned()
                .collect();
            v.sort();
            v
        };
        let first_wildcard_answer = st.wildcard && !st.responded;
        if updates.is_empty() && removed.is_empty() && !first_wildcard_answer {
            return Ok(());
        }
        let nonce = self.session.next_nonce();
        let version = snap.revision.to_string();
        let resp = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: updates
                .iter()
                .map(|r| Resource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.any.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: t.to_string(),
            removed_resources: removed.clone(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        self.tx.send(Ok(resp)).await.map_err(|_| ())?;
        tracing::debug!(node = %self.session.node.id, r#type = xds::short_name(t), version, updated = updates.len(), removed = removed.len(), "sent");
        let Some(st) = self.types.get_mut(t) else {
            return Ok(());
        };
        let mut previous = Vec::new();
        let mut sent = Vec::new();
        for r in &updates {
            previous.push((
                r.name.clone(),
                st.known.insert(r.name.clone(), r.version.clone()),
            ));
            sent.push((r.name.clone(), r.version.clone()));
        }
        for n in &removed {
            previous.push((n.clone(), st.known.remove(n)));
        }
        st.responded = true;
        // A newer response supersedes an unanswered one: the node ACKs or
        // NACKs the newest, and applies both in order.
        st.pending = Some(Pending {
            nonce,
            version: version.clone(),
            previous,
            sent,
        });
        let all_sent: Vec<_> = all
            .values()
            .filter(|r| st.known.contains_key(&r.name))
            .cloned()
            .collect();
        self.session.sent(t, &version, all_sent);
        Ok(())
    }
}
