//! Incremental (delta) ADS: only resources whose version differs from
//! what the node has are sent, and removals are named.
//!
//! Kept here: wildcard and named subscriptions with subscribe/unsubscribe;
//! `initial_resource_versions` on reconnect, so a node that already has a
//! resource is not sent it again; `removed_resources`; resource versions
//! the node NACKed are not sent again; named resources are sent when they
//! come to exist; make-before-break order with cluster removals held back
//! until the node's routes no longer need them, and the endpoints of a
//! cluster the node still has kept with it (held.rs).

use super::cache::{Resource, TypeMap};
use super::fleet::SyncState;
use super::held::HeldEndpoints;
use super::session::{Protocol, Session};
use super::versions::Versions;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use gantry_shared::xds::{self, PUSH_ORDER};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

/// A response awaiting its ACK: what the node had before, to restore on NACK.
struct Pending {
    nonce: String,
    version: String,
    previous: Vec<(Arc<str>, Option<Arc<str>>)>,
    sent: Vec<(Arc<str>, Arc<str>)>,
    removed: Vec<Arc<str>>,
    /// Once applied, the node has exactly this map (the type's whole
    /// snapshot): its ACK rebases what the stream records on it.
    complete: Option<Arc<TypeMap>>,
}

#[derive(Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// name → version the node has (as far as we know). Names and
    /// versions are the snapshot's, shared: a stream holds pointers, and
    /// for a wildcard type in sync only a pointer to the snapshot's map.
    known: Versions,
    /// name → version the node refused.
    nacked: HashMap<Arc<str>, Arc<str>>,
    /// name → version the node has ACKed (or said it had on reconnect).
    acked: Versions,
    /// Responses awaiting their ACK or NACK, oldest first: the node
    /// answers each, in order.
    pending: VecDeque<Pending>,
    responded: bool,
    /// Names the node subscribed to that the next response answers
    /// whatever it knows: with the resource (a re-subscription to a name
    /// it has; Envoy sends one when a changed cluster re-subscribes its
    /// endpoints, and warms the cluster until answered), or in
    /// `removed_resources` when there is no such resource, so the node
    /// need not wait for its initial-fetch timeout to learn that.
    answer: BTreeSet<Arc<str>>,
}

pub struct Stream {
    session: Session,
    types: HashMap<&'static str, TypeState>,
    held: HeldEndpoints,
    tx: mpsc::Sender<Result<bytes::Bytes, Status>>,
}

fn known_type(t: &str) -> Option<&'static str> {
    PUSH_ORDER.iter().copied().find(|k| *k == t)
}

impl Protocol for Stream {
    type Request = DeltaDiscoveryRequest;
    const NAME: &'static str = "delta";

    fn node(
        req: &DeltaDiscoveryRequest,
    ) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }

    fn open(session: Session, tx: mpsc::Sender<Result<bytes::Bytes, Status>>) -> Self {
        Stream {
            session,
            types: HashMap::new(),
            held: HeldEndpoints::default(),
            tx,
        }
    }

    fn session(&self) -> &Session {
        &self.session
    }

    async fn on_request(&mut self, r: DeltaDiscoveryRequest) -> Result<(), ()> {
        Stream::on_request(self, r).await
    }

    async fn push_all(&mut self) -> Result<(), ()> {
        Stream::push_all(self).await
    }
}

impl Stream {
    async fn on_request(&mut self, r: DeltaDiscoveryRequest) -> Result<(), ()> {
        let Some(t) = known_type(&r.type_url) else {
            tracing::debug!(type_url = %r.type_url, "ignoring request for an unknown type");
            return Ok(());
        };
        let first = !self.types.contains_key(t);
        let snapshot = self.session.snapshot();
        let st = self.types.entry(t).or_default();
        if first {
            st.wildcard = xds::is_wildcard_type(t) && r.resource_names_subscribe.is_empty();
            // A wildcard node's holdings as the difference from the
            // snapshot it most likely has.
            let base = snapshot.filter(|_| st.wildcard).and_then(|s| s.shared(t));
            st.known = Versions::from_initial(&r.initial_resource_versions, base);
            st.acked = st.known.clone();
        }
        for n in &r.resource_names_subscribe {
            if n == "*" {
                st.wildcard = true;
                continue;
            }
            // Said to be had in this request (a reconnect): nothing to answer
            // if it is current.
            if !r.initial_resource_versions.contains_key(n) {
                st.answer.insert(Arc::from(n.as_str()));
            }
            st.names.insert(n.clone());
        }
        for n in &r.resource_names_unsubscribe {
            if n == "*" {
                st.wildcard = false;
            } else {
                st.names.remove(n);
                st.answer.remove(n.as_str());
                st.known.remove(n.as_str());
                st.acked.remove(n.as_str());
            }
        }
        if !r.response_nonce.is_empty() && st.pending.iter().any(|p| p.nonce == r.response_nonce) {
            // Answers to older responses the node skipped count as ACKs.
            while let Some(p) = st.pending.pop_front() {
                let answered = p.nonce == r.response_nonce;
                match (&r.error_detail, answered) {
                    (Some(err), true) => {
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
                    }
                    _ => {
                        for (name, version) in &p.sent {
                            st.nacked.remove(name);
                            st.acked.insert(name.clone(), version.clone());
                        }
                        for name in &p.removed {
                            st.acked.remove(name);
                        }
                        if let Some(map) = p.complete {
                            st.acked.rebase(map.clone());
                            if st.pending.is_empty() {
                                st.known.rebase(map);
                            }
                        }
                        if answered {
                            self.session.acked(t, &p.version);
                        }
                    }
                }
                if answered {
                    break;
                }
            }
        }
        // An ACK can unblock what waits on it: listeners and routes wait
        // for warm clusters, cluster removals wait for new routes.
        self.push_all().await
    }

    /// Offers every subscribed type in make-before-break order, then
    /// records each type's state in the fleet.
    async fn push_all(&mut self) -> Result<(), ()> {
        for t in PUSH_ORDER {
            if self.types.contains_key(t) {
                self.maybe_send(t).await?;
            }
        }
        let Some(snap) = self.session.snapshot() else {
            return Ok(());
        };
        let states: Vec<(&'static str, SyncState)> = self
            .types
            .iter()
            .map(|(t, st)| {
                let state = if st.pending.is_empty() && self.is_current(t) {
                    SyncState::Synced
                } else if !st.nacked.is_empty() && st.pending.is_empty() {
                    SyncState::Nacked
                } else if st.responded {
                    SyncState::Stale
                } else {
                    SyncState::NotSent
                };
                (*t, state)
            })
            .collect();
        self.session.states(snap.revision, &states);
        Ok(())
    }

    /// Whether every cluster, and every EDS cluster's endpoints, are ACKed:
    /// only then may listeners and routes point at them.
    fn clusters_warm(&self) -> bool {
        let (Some(snap), Some(cds)) = (self.session.snapshot(), self.types.get(xds::CLUSTER))
        else {
            return true;
        };
        let acked = |st: &TypeState, t: &str| {
            snap.of(t)
                .map(|all| st.acked.stale(all).next().is_none())
                .unwrap_or(true)
        };
        if !acked(cds, xds::CLUSTER) {
            return false;
        }
        if snap.of(xds::ENDPOINT).is_none_or(|e| e.is_empty()) {
            return true;
        }
        self.types
            .get(xds::ENDPOINT)
            .is_some_and(|eds| acked(eds, xds::ENDPOINT))
    }

    /// Whether the node has exactly what it should of type `t`, ACKed.
    fn is_current(&self, t: &'static str) -> bool {
        let (Some(snap), Some(st)) = (self.session.snapshot(), self.types.get(t)) else {
            return true;
        };
        if !st.pending.is_empty() {
            return false;
        }
        let empty = Default::default();
        let all = snap.of(t).unwrap_or(&empty);
        if st.wildcard {
            return snap.shared(t).is_some_and(|m| st.acked.is_exactly(&m))
                || st.acked.has_exactly(all);
        }
        let wanted_ok = all
            .values()
            .filter(|r| st.wildcard || st.names.contains(&*r.name))
            .all(|r| st.acked.get(&r.name) == Some(&r.version));
        let nothing_stale = st
            .acked
            .keys()
            .all(|n| all.contains_key(&**n) || !(st.wildcard || st.names.contains(&**n)));
        wanted_ok && nothing_stale
    }

    async fn maybe_send(&mut self, t: &'static str) -> Result<(), ()> {
        let Some(snap) = self.session.snapshot() else {
            return Ok(());
        };
        if (t == xds::LISTENER || t == xds::ROUTE || t == xds::ROUTE_ENTRY) && !self.clusters_warm()
        {
            return Ok(());
        }
        let hold_cluster_removals = t == xds::CLUSTER
            && !(self.is_current(xds::LISTENER)
                && self.is_current(xds::ROUTE)
                && self.is_current(xds::ROUTE_ENTRY));
        // Endpoints of changed clusters go again, changed or not (held.rs).
        if t == xds::ENDPOINT && self.held.endpoints_due() {
            let due = self.held.take_due();
            if let Some(st) = self.types.get_mut(t) {
                let subscribed: Vec<Arc<str>> = due
                    .into_iter()
                    .filter(|n| st.wildcard || st.names.contains(&**n))
                    .collect();
                st.answer.extend(subscribed);
            }
        }
        let Some(st) = self.types.get(t) else {
            return Ok(());
        };
        let empty = TypeMap::default();
        let all = snap.of(t).unwrap_or(&empty);
        // The clusters the node has: their endpoints stay while they do.
        let node_clusters = self
            .types
            .get(xds::CLUSTER)
            .filter(|_| t == xds::ENDPOINT)
            .map(|c| &c.known);
        let map = snap.shared(t);
        let in_sync = map.as_ref().is_some_and(|m| st.known.is_exactly(m))
            && st.answer.is_empty()
            && st.nacked.is_empty()
            && node_clusters.is_none();
        if in_sync && st.responded {
            return Ok(());
        }
        let mut skipped = false;
        let candidates: Vec<&Arc<Resource>> = if st.wildcard && st.nacked.is_empty() {
            st.known.stale(all).collect()
        } else {
            all.values()
                .filter(|r| st.wildcard || st.names.contains(&*r.name))
                // After a NACK the node holds its old version and has fenced
                // what the refusal touched: any other version, even the one
                // it holds, is sent, so the fence can lift.
                .filter(|r| {
                    st.known.get(&r.name) != Some(&r.version) || st.nacked.contains_key(&r.name)
                })
                .collect()
        };
        let mut updates: Vec<_> = candidates
            .into_iter()
            .filter(|r| {
                let refused = st.nacked.get(&r.name) == Some(&r.version);
                skipped |= refused;
                !refused
            })
            .cloned()
            .collect();
        if let Some(clusters) = node_clusters {
            // Endpoints the node never got for a cluster it still has
            // that has left the snapshot.
            updates.extend(
                st.names
                    .iter()
                    .filter(|n| {
                        !all.contains_key(*n)
                            && clusters.contains_key(n.as_str())
                            && !st.known.contains_key(n.as_str())
                    })
                    .filter_map(|n| self.held.get(n))
                    .filter(|r| st.nacked.get(&r.name) != Some(&r.version))
                    .cloned(),
            );
        }
        let mut removed: Vec<Arc<str>> = if hold_cluster_removals {
            Vec::new()
        } else {
            let gone: Vec<Arc<str>> = if st.wildcard {
                st.known.missing_from(all).cloned().collect()
            } else {
                st.known
                    .keys()
                    .filter(|n| st.names.contains(&***n) && !all.contains_key(&***n))
                    .cloned()
                    .collect()
            };
            gone.into_iter()
                .filter(|n| node_clusters.is_none_or(|c| !c.contains_key(n)))
                .collect()
        };
        // Subscriptions answered whatever the node has: the resource, or
        // its absence.
        for n in &st.answer {
            if updates.iter().any(|r| r.name == *n) || removed.contains(n) {
                continue;
            }
            let held = || {
                node_clusters
                    .filter(|c| c.contains_key(n))
                    .and_then(|_| self.held.get(n))
            };
            match all.get(&**n).or_else(held) {
                Some(r) if st.nacked.get(&r.name) != Some(&r.version) => updates.push(r.clone()),
                // Refused at this version: not offered again.
                Some(_) => {}
                // A cluster kept for make-before-break is not denied.
                None if hold_cluster_removals && st.known.contains_key(n) => {}
                None => removed.push(n.clone()),
            }
        }
        removed.sort();
        // After this response the node has exactly the type's snapshot:
        // what the stream records of it can be that map, shared.
        let complete = map.filter(|_| {
            st.wildcard && !hold_cluster_removals && node_clusters.is_none() && !skipped
        });
        let first_wildcard_answer = st.wildcard && !st.responded;
        if updates.is_empty() && removed.is_empty() && !first_wildcard_answer {
            if let Some(st) = self.types.get_mut(t) {
                st.answer.clear();
                if let Some(map) = complete
                    && st.pending.is_empty()
                {
                    st.known.rebase(map.clone());
                    st.acked.rebase(map);
                }
            }
            return Ok(());
        }
        let nonce = self.session.next_nonce();
        let version = snap.revision.to_string();
        // Encoded here: the stream's queue holds frames, not messages.
        let frame = super::grpc::delta_frame(&version, t, &nonce, &updates, &removed);
        self.tx.send(Ok(frame)).await.map_err(|_| ())?;
        tracing::debug!(node = %self.session.node.id, r#type = xds::short_name(t), version, updated = updates.len(), removed = removed.len(), "sent");
        let Some(st) = self.types.get_mut(t) else {
            return Ok(());
        };
        st.answer.clear();
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
        if let Some(map) = &complete {
            st.known.rebase(map.clone());
        }
        if t == xds::CLUSTER {
            self.held.clusters_sent(&snap, st.known.keys());
            self.held.clusters_changed(
                previous
                    .iter()
                    .filter(|(n, prev)| {
                        prev.as_ref()
                            .is_some_and(|p| st.known.get(n).is_some_and(|v| v != p))
                    })
                    .map(|(n, _)| n.clone()),
            );
        }
        st.responded = true;
        st.pending.push_back(Pending {
            nonce,
            version: version.clone(),
            previous,
            sent,
            removed,
            complete,
        });
        let exactly = snap.shared(t).is_some_and(|m| st.known.is_exactly(&m));
        let all_sent: Vec<_> = all
            .values()
            .filter(|r| exactly || st.known.contains_key(&r.name))
            .cloned()
            .collect();
        self.session.sent(t, &version, all_sent);
        Ok(())
    }
}
