//! Endpoints for clusters a node still has after they left the snapshot.
//!
//! Make-before-break keeps a cluster at the node until its routes move off
//! it. If that cluster is an EDS cluster the node has not got endpoints for
//! yet, Envoy warms it and holds back its CDS ACK until they come; were they
//! served only from the current snapshot, which no longer has them, nothing
//! would move until Envoy's initial fetch times out (15 s). So a stream
//! serves them as of the snapshot its clusters were sent from: it keeps
//! that snapshot's endpoint map (not the whole snapshot, whose routes and
//! secrets are the bulk of it).

use super::cache::{Resource, Snapshot, TypeMap};
use gantry_shared::xds;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Default)]
pub struct HeldEndpoints {
    /// The endpoints of the snapshot the node's clusters were last sent
    /// from.
    from: Option<Arc<TypeMap>>,
    /// Endpoints of clusters that were sent but are absent from `from`
    /// (kept across several snapshots), carried from the one that had them.
    /// Empty but for the moments a cluster is on its way out.
    kept: HashMap<Arc<str>, Arc<Resource>>,
    /// Clusters the node had that a CDS response changed: their endpoints
    /// are due again, changed or not. Envoy warms a changed EDS cluster
    /// (holding its CDS ACK, and with it every later route) until it gets
    /// a response with the cluster's endpoints, or until its initial fetch
    /// times out (15 s); over delta it does not ask for them again, and
    /// over SotW it asks with what it had. Both protocols take these.
    due: BTreeSet<Arc<str>>,
}

impl HeldEndpoints {
    /// Records that the node was sent `clusters` from `snap`.
    pub fn clusters_sent<'a>(
        &mut self,
        snap: &Snapshot,
        clusters: impl IntoIterator<Item = &'a Arc<str>>,
    ) {
        let now = snap.of(xds::ENDPOINT);
        let kept = clusters
            .into_iter()
            .filter(|c| now.is_none_or(|e| !e.contains_key(&***c)))
            .filter_map(|c| Some((c.clone(), self.get(c)?.clone())))
            .collect();
        self.kept = kept;
        self.from = snap.shared(xds::ENDPOINT);
    }

    /// Records that a CDS response changed these clusters the node had.
    pub fn clusters_changed(&mut self, names: impl IntoIterator<Item = Arc<str>>) {
        self.due.extend(names);
    }

    /// Whether some changed cluster's endpoints are still to be sent.
    pub fn endpoints_due(&self) -> bool {
        !self.due.is_empty()
    }

    /// The clusters whose endpoints are due, now being sent.
    pub fn take_due(&mut self) -> BTreeSet<Arc<str>> {
        std::mem::take(&mut self.due)
    }

    /// The endpoints cluster `name` was sent with, for when the current
    /// snapshot has none.
    pub fn get(&self, name: &str) -> Option<&Arc<Resource>> {
        self.kept
            .get(name)
            .or_else(|| self.from.as_ref()?.get(name))
    }
}
