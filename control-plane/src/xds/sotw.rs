//! State-of-the-world ADS: every response carries the whole set of the
//! type's resources the node subscribed to.
//!
//! Protocol rules kept here: one nonce per response and requests with a
//! stale nonce ignored; ACK vs NACK by `error_detail`; content the node
//! NACKed is not sent again (the next different content is); named
//! resources are sent when they come to exist; make-before-break: clusters
//! and their endpoints are pushed and ACKed before listeners and routes
//! that use them, and clusters a node's routes may still use are kept
//! until its new routes are ACKed, with their endpoints (held.rs).

use super::cache::{Resource, Snapshot};
use super::fleet::SyncState;
use super::held::HeldEndpoints;
use super::session::{Protocol, Session, content_key};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use gantry_shared::xds::{self, PUSH_ORDER};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

struct Sent {
    nonce: String,
    version: String,
    key: u64,
    resources: Vec<Arc<Resource>>,
}

#[derive(Default)]
struct TypeState {
    /// None: wildcard (everything of the type).
    names: Option<BTreeSet<String>>,
    sent: Option<Sent>,
    /// name → version of what the node last ACKed.
    acked: HashMap<Arc<str>, Arc<str>>,
    nacked: Option<u64>,
    /// The nonce of the last response the node has ACKed or NACKed: a
    /// later request carrying it again asks anew (see `on_request`).
    answered: Option<String>,
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
    type Request = DiscoveryRequest;
    const NAME: &'static str = "sotw";

    fn node(req: &DiscoveryRequest) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
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

    async fn on_request(&mut self, r: DiscoveryRequest) -> Result<(), ()> {
        Stream::on_request(self, r).await
    }

    async fn push_all(&mut self) -> Result<(), ()> {
        Stream::push_all(self).await
    }
}

impl Stream {
    async fn on_request(&mut self, r: DiscoveryRequest) -> Result<(), ()> {
        let Some(t) = known_type(&r.type_url) else {
            tracing::debug!(type_url = %r.type_url, "ignoring request for an unknown type");
            return Ok(());
        };
        let st = self.types.entry(t).or_default();
        let mut reasked = false;
        if !r.response_nonce.is_empty() {
            match &st.sent {
                // The latest response, answered already: the node asks
                // again for what it has. Envoy does so when a changed
                // cluster re-subscribes its endpoints, and warms that
                // cluster (holding its CDS ACK) until it gets a response,
                // changed or not, or its initial fetch times out (15 s).
                Some(sent)
                    if sent.nonce == r.response_nonce
                        && st.answered.as_deref() == Some(&*r.response_nonce) =>
                {
                    reasked = true;
                }
                Some(sent) if sent.nonce == r.response_nonce => {
                    st.answered = Some(sent.nonce.clone());
                    if let Some(err) = &r.error_detail {
                        st.nacked = Some(sent.key);
                        let version = sent.version.clone();
                        self.session.nacked(t, &version, &err.message);
                    } else {
                        st.acked = sent
                            .resources
                            .iter()
                            .map(|r| (r.name.clone(), r.version.clone()))
                            .collect();
                        st.nacked = None;
                        self.session.acked(t, &r.version_info);
                    }
                }
                // A stale nonce: the node answers an older response; a
                // newer one is on its way to it.
                _ => return Ok(()),
            }
        }
        let names = if (xds::is_wildcard_type(t) && r.resource_names.is_empty())
            || r.resource_names.iter().any(|n| n == "*")
        {
            None
        } else {
            Some(r.resource_names.iter().cloned().collect())
        };
        let changed = self.types.get(t).map(|s| s.names != names).unwrap_or(true);
        if let Some(st) = self.types.get_mut(t) {
            st.names = names;
        }
        self.maybe_send(t, changed || reasked).await?;
        // An ACK can unblock what waits on it: listeners and routes wait
        // for warm clusters, cluster removals wait for new routes.
        self.push_all().await
    }

    /// Offers every subscribed type in make-before-break order, then
    /// records each type's state in the fleet.
    async fn push_all(&mut self) -> Result<(), ()> {
        for t in PUSH_ORDER {
            if self.types.contains_key(t) {
                self.maybe_send(t, false).await?;
            }
        }
        let Some(snap) = self.session.snapshot() else {
            return Ok(());
        };
        let states: Vec<(&'static str, SyncState)> = self
            .types
            .keys()
            .map(|t| (*t, self.state_of(&snap, t)))
            .collect();
        self.session.states(snap.revision, &states);
        Ok(())
    }

    fn state_of(&self, snap: &Snapshot, t: &'static str) -> SyncState {
        let Some(st) = self.types.get(t) else {
            return SyncState::NotSent;
        };
        if st.nacked.is_some() && st.nacked == st.sent.as_ref().map(|s| s.key) {
            return SyncState::Nacked;
        }
        if self.is_current(snap, t) {
            return SyncState::Synced;
        }
        if st.sent.is_none() {
            SyncState::NotSent
        } else {
            SyncState::Stale
        }
    }

    /// What the node should have of type `t` now.
    fn desired_in(&self, snap: &Snapshot, t: &'static str) -> Vec<Arc<Resource>> {
        let empty = super::cache::TypeMap::default();
        let all = snap.of(t).unwrap_or(&empty);
        match self.types.get(t).and_then(|s| s.names.as_ref()) {
            None => all.values().cloned().collect(),
            Some(names) if t == xds::ENDPOINT => names
                .iter()
                .filter_map(|n| all.get(n).or_else(|| self.held.get(n)).cloned())
                .collect(),
            Some(names) => names.iter().filter_map(|n| all.get(n).cloned()).collect(),
        }
    }

    /// Whether the node ACKed exactly what it should have of type `t`.
    fn is_current(&self, snap: &Snapshot, t: &'static str) -> bool {
        let Some(st) = self.types.get(t) else {
            return true;
        };
        let desired = self.desired_in(snap, t);
        let all_there = desired
            .iter()
            .all(|r| st.acked.get(&r.name) == Some(&r.version));
        // A wildcard type must also have lost what no longer exists.
        let nothing_extra = st.names.is_some() || st.acked.len() == desired.len();
        all_there && nothing_extra
    }

    /// Whether every cluster of the snapshot, and the endpoints of every
    /// EDS cluster, are ACKed: only then may routes point at them, or
    /// Envoy answers 503 while a new cluster warms.
    fn clusters_warm(&self, snap: &Snapshot) -> bool {
        let Some(cds) = self.types.get(xds::CLUSTER) else {
            return true;
        };
        let clusters_acked = snap
            .of(xds::CLUSTER)
            .map(|all| {
                all.values()
                    .all(|r| cds.acked.get(&r.name) == Some(&r.version))
            })
            .unwrap_or(true);
        if !clusters_acked {
            return false;
        }
        let Some(eps) = snap.of(xds::ENDPOINT).filter(|e| !e.is_empty()) else {
            return true;
        };
        let Some(eds) = self.types.get(xds::ENDPOINT) else {
            return false;
        };
        eps.values()
            .all(|r| eds.acked.get(&r.name) == Some(&r.version))
    }

    async fn maybe_send(&mut self, t: &'static str, subscription_changed: bool) -> Result<(), ()> {
        let Some(snap) = self.session.snapshot() else {
            return Ok(());
        };
        let mut desired = self.desired_in(&snap, t);
        if (t == xds::LISTENER || t == xds::ROUTE || t == xds::ROUTE_ENTRY)
            && !self.clusters_warm(&snap)
        {
            return Ok(());
        }
        if t == xds::CLUSTER
            && !(self.is_current(&snap, xds::LISTENER)
                && self.is_current(&snap, xds::ROUTE)
                && self.is_current(&snap, xds::ROUTE_ENTRY))
        {
            // Make-before-break: keep what was sent until routes move off it.
            if let Some(sent) = self.types.get(t).and_then(|s| s.sent.as_ref()) {
                let have: BTreeSet<&str> = desired.iter().map(|r| &*r.name).collect();
                let keep: Vec<Arc<Resource>> = sent
                    .resources
                    .iter()
                    .filter(|r| !have.contains(&*r.name))
                    .cloned()
                    .collect();
                desired.extend(keep);
                desired.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
        let key = content_key(desired.iter());
        // Endpoints of changed clusters go again, changed or not (held.rs).
        let due = t == xds::ENDPOINT && self.held.endpoints_due();
        if due {
            self.held.take_due();
        }
        let Some(st) = self.types.get(t) else {
            return Ok(());
        };
        if st.sent.as_ref().is_some_and(|s| s.key == key) && !subscription_changed && !due {
            return Ok(());
        }
        if st.nacked == Some(key) {
            return Ok(());
        }
        if st.names.is_some() && desired.is_empty() {
            // Named resources that do not exist (yet): sent when they appear.
            return Ok(());
        }
        let nonce = self.session.next_nonce();
        let version = snap.revision.to_string();
        let resp = DiscoveryResponse {
            version_info: version.clone(),
            resources: desired.iter().map(|r| r.any.clone()).collect(),
            type_url: t.to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        // Encoded here: the stream's queue holds frames, not messages.
        self.tx
            .send(Ok(super::grpc::frame(&resp)))
            .await
            .map_err(|_| ())?;
        drop(resp);
        tracing::debug!(node = %self.session.node.id, r#type = xds::short_name(t), version, n = desired.len(), "sent");
        self.session.sent(t, &version, desired.clone());
        if t == xds::CLUSTER {
            self.held
                .clusters_sent(&snap, desired.iter().map(|r| &r.name));
            if let Some(had) = self.types.get(t).and_then(|s| s.sent.as_ref()) {
                let had: HashMap<&str, &Arc<str>> = had
                    .resources
                    .iter()
                    .map(|r| (&*r.name, &r.version))
                    .collect();
                let changed: Vec<Arc<str>> = desired
                    .iter()
                    .filter(|r| had.get(&*r.name).is_some_and(|v| **v != r.version))
                    .map(|r| r.name.clone())
                    .collect();
                self.held.clusters_changed(changed);
            }
        }
        if let Some(st) = self.types.get_mut(t) {
            st.sent = Some(Sent {
                nonce,
                version,
                key,
                resources: desired,
            });
        }
        Ok(())
    }
}
