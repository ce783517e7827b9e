//! The client's view of its configuration: every resource it holds, per
//! type, with its version and wire form, and the decoded `ResourceSet` the
//! proxy was last given.
//!
//! An update is never applied in place: [`State::candidate`] builds the set
//! the update would produce, the applier compiles it, and only an accepted
//! candidate is [committed](State::commit). A refused one leaves the state
//! exactly as it was.

use super::refs::{Refs, references};
use super::snapshot_file::{self, Entry, SnapshotFile};
use crate::config::ResourceSet;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use gantry_shared::proto::route::RouteEntry;
use gantry_shared::xds;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The five xDS resource types, in make-before-break push order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Cluster,
    Endpoint,
    Secret,
    Listener,
    Route,
    /// Gantry's route entries, filling the route configurations.
    RouteEntry,
}

impl Kind {
    /// In `gantry_shared::xds::PUSH_ORDER`.
    pub const ALL: [Kind; 6] = [
        Kind::Cluster,
        Kind::Endpoint,
        Kind::Secret,
        Kind::Listener,
        Kind::Route,
        Kind::RouteEntry,
    ];
    /// The types subscribed to by name.
    pub const NAMED: [Kind; 3] = [Kind::Endpoint, Kind::Secret, Kind::Route];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cluster => xds::CLUSTER,
            Kind::Endpoint => xds::ENDPOINT,
            Kind::Secret => xds::SECRET,
            Kind::Listener => xds::LISTENER,
            Kind::Route => xds::ROUTE,
            Kind::RouteEntry => xds::ROUTE_ENTRY,
        }
    }

    pub fn from_type_url(type_url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == type_url)
    }

    /// CDS, EDS, SDS, LDS, RDS.
    pub fn short(self) -> &'static str {
        xds::short_name(self.type_url())
    }

    /// Listeners, clusters and route entries are subscribed to without names.
    pub fn is_wildcard(self) -> bool {
        xds::is_wildcard_type(self.type_url())
    }
}

/// The names of `kind` the references ask for (`None` for wildcard types).
pub fn wanted(refs: &Refs, kind: Kind) -> Option<&BTreeSet<String>> {
    match kind {
        Kind::Route => Some(&refs.routes),
        Kind::Endpoint => Some(&refs.endpoints),
        Kind::Secret => Some(&refs.secrets),
        Kind::Cluster | Kind::Listener | Kind::RouteEntry => None,
    }
}

/// A resource decoded from its `Any`.
#[derive(Clone, Debug)]
/// (Boxed: the protos are large and of very different sizes.)
pub enum Decoded {
    Listener(Box<Listener>),
    Route(Box<RouteConfiguration>),
    RouteEntry(Box<RouteEntry>),
    Cluster(Box<Cluster>),
    Endpoint(Box<ClusterLoadAssignment>),
    Secret(Box<Secret>),
}

/// Decodes a resource of `kind`; the `Any` must carry exactly that type.
pub fn decode(kind: Kind, any: &Any) -> Result<Decoded, String> {
    if any.type_url != kind.type_url() {
        return Err(format!(
            "carries {:?} where {} was expected",
            any.type_url,
            kind.type_url()
        ));
    }
    let v = any.value.as_slice();
    let d = match kind {
        Kind::Listener => Listener::decode(v).map(|x| Decoded::Listener(Box::new(x))),
        Kind::Route => RouteConfiguration::decode(v).map(|x| Decoded::Route(Box::new(x))),
        Kind::RouteEntry => RouteEntry::decode(v).map(|x| Decoded::RouteEntry(Box::new(x))),
        Kind::Cluster => Cluster::decode(v).map(|x| Decoded::Cluster(Box::new(x))),
        Kind::Endpoint => ClusterLoadAssignment::decode(v).map(|x| Decoded::Endpoint(Box::new(x))),
        Kind::Secret => Secret::decode(v).map(|x| Decoded::Secret(Box::new(x))),
    };
    d.map_err(|e| format!("does not decode: {e}"))
}

fn insert(set: &mut ResourceSet, name: String, d: Decoded) {
    match d {
        Decoded::Listener(x) => {
            set.listeners.insert(name, *x);
        }
        Decoded::Route(x) => {
            set.routes.insert(name, *x);
        }
        Decoded::RouteEntry(x) => {
            set.route_entries.insert(name, *x);
        }
        Decoded::Cluster(x) => {
            set.clusters.insert(name, *x);
        }
        Decoded::Endpoint(x) => {
            set.endpoints.insert(name, *x);
        }
        Decoded::Secret(x) => {
            set.secrets.insert(name, *x);
        }
    }
}

fn remove(set: &mut ResourceSet, kind: Kind, name: &str) {
    match kind {
        Kind::Listener => {
            set.listeners.remove(name);
        }
        Kind::Route => {
            set.routes.remove(name);
        }
        Kind::RouteEntry => {
            set.route_entries.remove(name);
        }
        Kind::Cluster => {
            set.clusters.remove(name);
        }
        Kind::Endpoint => {
            set.endpoints.remove(name);
        }
        Kind::Secret => {
            set.secrets.remove(name);
        }
    }
}

/// A resource as received: its version and wire form.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub version: String,
    pub any: Any,
}

/// What the client holds, copied out for rendering.
pub struct Dump {
    /// In push order, then by name.
    pub resources: Vec<(Kind, String, Held)>,
    /// The `system_version_info` of each type's last accepted update.
    pub system_versions: BTreeMap<Kind, String>,
}

/// One response's worth of changes to one type.
#[derive(Clone, Debug)]
pub struct Update {
    pub kind: Kind,
    /// The response's `system_version_info`.
    pub version: String,
    pub upserts: Vec<(String, Held, Decoded)>,
    pub removals: Vec<String>,
}

/// The state an update would produce, awaiting the applier's verdict.
#[derive(Clone)]
pub struct Candidate {
    pub kind: Kind,
    pub version: String,
    /// The whole configuration to hand to the applier.
    pub set: ResourceSet,
    changes: Vec<(Kind, String, Option<Held>)>,
}

impl Candidate {
    /// Named resources dropped because nothing references them any more.
    pub fn pruned(&self) -> impl Iterator<Item = (Kind, &str)> {
        self.changes
            .iter()
            .filter(move |(k, _, h)| *k != self.kind && h.is_none())
            .map(|(k, n, _)| (*k, n.as_str()))
    }
}

#[derive(Clone, Default)]
pub struct State {
    /// The accepted configuration, decoded, except route configurations
    /// and route entries: those are most of a large configuration's bytes
    /// and decode to several times their size, so only their `held` bytes
    /// stay, and they are decoded again while a candidate is compiled.
    set: ResourceSet,
    held: BTreeMap<Kind, BTreeMap<String, Held>>,
    system_versions: BTreeMap<Kind, String>,
    last_version: Option<String>,
    applied: bool,
}

impl State {
    /// The configuration last accepted by the applier, without its route
    /// configurations (see [`State::full_set`]).
    pub fn set(&self) -> &ResourceSet {
        &self.set
    }

    /// The configuration last accepted, whole: route configurations
    /// decoded from their held bytes.
    pub fn full_set(&self) -> ResourceSet {
        let mut set = self.set.clone();
        self.decode_routes(&mut set, (Kind::Route, |_: &str| false));
        set
    }

    /// Decodes the held route configurations and route entries into
    /// `set`, but those of kind `skip.0` named in `skip.1`.
    fn decode_routes(&self, set: &mut ResourceSet, skip: (Kind, impl Fn(&str) -> bool)) {
        for kind in [Kind::Route, Kind::RouteEntry] {
            for (name, h) in self.held.get(&kind).into_iter().flatten() {
                if kind == skip.0 && skip.1(name) {
                    continue;
                }
                match decode(kind, &h.any) {
                    Ok(d) => insert(set, name.clone(), d),
                    // These bytes were decoded when they arrived.
                    Err(e) => {
                        tracing::error!(r#type = kind.short(), resource = %name, error = %e, "a held resource no longer decodes")
                    }
                }
            }
        }
    }

    /// A running resource held only as bytes, decoded.
    fn running(&self, kind: Kind, name: &str) -> Option<Decoded> {
        decode(kind, &self.held.get(&kind)?.get(name)?.any).ok()
    }

    /// A copy of every held resource and each type's version.
    pub fn dump(&self) -> Dump {
        Dump {
            resources: self
                .held
                .iter()
                .flat_map(|(k, m)| m.iter().map(|(n, h)| (*k, n.clone(), h.clone())))
                .collect(),
            system_versions: self.system_versions.clone(),
        }
    }

    /// Whether the applier has accepted a configuration from this state.
    pub fn applied(&self) -> bool {
        self.applied
    }

    /// name → version of everything held of `kind` (for `initial_resource_versions`).
    pub fn versions(&self, kind: Kind) -> HashMap<String, String> {
        self.held
            .get(&kind)
            .map(|m| {
                m.iter()
                    .map(|(n, h)| (n.clone(), h.version.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn held_version(&self, kind: Kind, name: &str) -> Option<&str> {
        self.held
            .get(&kind)
            .and_then(|m| m.get(name))
            .map(|h| h.version.as_str())
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.held.get(&kind).map_or(0, BTreeMap::len)
    }

    /// The `system_version_info` of the last update of `kind` accepted.
    pub fn system_version(&self, kind: Kind) -> Option<&str> {
        self.system_versions.get(&kind).map(String::as_str)
    }

    /// The version of the last update accepted, of any type.
    pub fn last_version(&self) -> Option<&str> {
        self.last_version.as_deref()
    }

    /// Names the configuration references but does not hold.
    pub fn missing(&self) -> Vec<(Kind, String)> {
        let refs = references(&self.set);
        let mut out = Vec::new();
        for k in Kind::NAMED {
            for n in wanted(&refs, k).into_iter().flatten() {
                if self.held_version(k, n).is_none() {
                    out.push((k, n.clone()));
                }
            }
        }
        out
    }

    /// Whether the update changes nothing in a state the applier already has.
    pub fn is_noop(&self, u: &Update) -> bool {
        self.applied
            && u.upserts.is_empty()
            && u.removals
                .iter()
                .all(|n| self.held_version(u.kind, n).is_none())
    }

    /// The state with `u` applied. A listener or cluster update also drops
    /// the named resources (RDS, EDS, SDS) nothing references any more, so
    /// that what the client holds is what it is subscribed to.
    pub fn candidate(&self, u: Update) -> Candidate {
        let mut set = self.set.clone();
        let kind = u.kind;
        // What the update replaces or removes is not decoded only to be dropped.
        let replaced: std::collections::HashSet<&str> = match kind {
            Kind::Route | Kind::RouteEntry => u
                .removals
                .iter()
                .map(String::as_str)
                .chain(u.upserts.iter().map(|(n, _, _)| n.as_str()))
                .collect(),
            _ => Default::default(),
        };
        self.decode_routes(&mut set, (kind, |n: &str| replaced.contains(n)));
        drop(replaced);
        let mut changes = Vec::new();
        for name in u.removals {
            if self.held_version(kind, &name).is_some() {
                remove(&mut set, kind, &name);
                changes.push((kind, name, None));
            }
        }
        for (name, held, decoded) in u.upserts {
            insert(&mut set, name.clone(), decoded);
            changes.push((kind, name, Some(held)));
        }
        if kind.is_wildcard() {
            let refs = references(&set);
            for k in Kind::NAMED {
                let Some(keep) = wanted(&refs, k) else {
                    continue;
                };
                let stale: Vec<String> = self
                    .held
                    .get(&k)
                    .into_iter()
                    .flat_map(|m| m.keys())
                    .filter(|n| !keep.contains(*n))
                    .cloned()
                    .collect();
                for n in stale {
                    remove(&mut set, k, &n);
                    changes.push((k, n, None));
                }
            }
        }
        // An accepted update settles whatever a refusal of the same
        // resource fenced (the new version replaces the one refused).
        for (k, n, _) in &changes {
            match k {
                Kind::Listener => set.fences.listener_settled(n),
                Kind::Route => set.fences.route_config_settled(n),
                Kind::RouteEntry => set.fences.route_entry_settled(n),
                _ => false,
            };
        }
        Candidate {
            kind,
            version: u.version,
            set,
            changes,
        }
    }

    /// Records the refusal of an update of `kind`: each refused resource
    /// (`None` when it did not decode) fences what it would have changed
    /// in the policies the running configuration enforces. Returns whether
    /// the fences changed.
    pub fn refuse(
        &mut self,
        kind: Kind,
        refused: &[(&str, Option<&Decoded>)],
        reason: &str,
    ) -> bool {
        let mut changed = false;
        for (name, d) in refused {
            changed |= match (kind, d) {
                (Kind::Listener, None) => self.set.fences.listener_refused(
                    name,
                    self.set.listeners.get(*name),
                    None,
                    reason,
                ),
                (Kind::Listener, Some(Decoded::Listener(l))) => {
                    let running = self.set.listeners.get(*name);
                    self.set
                        .fences
                        .listener_refused(name, running, Some(l), reason)
                }
                (Kind::Route, d) => {
                    let running = match self.running(Kind::Route, name) {
                        Some(Decoded::Route(r)) => Some(r),
                        _ => None,
                    };
                    let refused = match d {
                        Some(Decoded::Route(r)) => Some(&**r),
                        _ => None,
                    };
                    self.set
                        .fences
                        .route_config_refused(name, running.as_deref(), refused, reason)
                }
                (Kind::RouteEntry, d) => {
                    let running = match self.running(Kind::RouteEntry, name) {
                        Some(Decoded::RouteEntry(e)) => Some(e),
                        _ => None,
                    };
                    let refused = match d {
                        Some(Decoded::RouteEntry(e)) => Some(&**e),
                        _ => None,
                    };
                    self.set
                        .fences
                        .route_entry_refused(name, running.as_deref(), refused, reason)
                }
                _ => false,
            };
        }
        changed
    }

    /// [`State::refuse`] for a candidate the applier refused: the update's
    /// resources as the candidate decoded them.
    pub fn refuse_candidate(&mut self, c: &Candidate, reason: &str) -> bool {
        let decoded: Vec<(String, Option<Decoded>)> = c
            .changes
            .iter()
            .filter(|(k, _, h)| *k == c.kind && h.is_some())
            .map(|(k, n, _)| {
                let d = match k {
                    Kind::Listener => c
                        .set
                        .listeners
                        .get(n)
                        .map(|l| Decoded::Listener(Box::new(l.clone()))),
                    Kind::Route => c
                        .set
                        .routes
                        .get(n)
                        .map(|r| Decoded::Route(Box::new(r.clone()))),
                    Kind::RouteEntry => c
                        .set
                        .route_entries
                        .get(n)
                        .map(|e| Decoded::RouteEntry(Box::new(e.clone()))),
                    _ => None,
                };
                (n.clone(), d)
            })
            .filter(|(_, d)| d.is_some())
            .collect();
        let refs: Vec<(&str, Option<&Decoded>)> = decoded
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_ref()))
            .collect();
        self.refuse(c.kind, &refs, reason)
    }

    /// Makes an accepted candidate the state.
    pub fn commit(&mut self, c: Candidate) {
        self.set = c.set;
        // Kept as held bytes only (see the field).
        self.set.routes.clear();
        self.set.route_entries.clear();
        for (k, name, held) in c.changes {
            let m = self.held.entry(k).or_default();
            match held {
                Some(h) => {
                    m.insert(name, h);
                }
                None => {
                    m.remove(&name);
                }
            }
        }
        self.record_version(c.kind, c.version);
        self.applied = true;
    }

    /// Records an update that changed nothing as accepted.
    pub fn record_version(&mut self, kind: Kind, version: String) {
        self.system_versions.insert(kind, version.clone());
        self.last_version = Some(version);
    }

    /// The whole state in the snapshot file's form.
    pub fn to_snapshot(&self, node_id: &str) -> SnapshotFile {
        let resources = self
            .held
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(k, m)| {
                let entries = m
                    .iter()
                    .map(|(n, h)| {
                        (
                            n.clone(),
                            Entry {
                                version: h.version.clone(),
                                any: snapshot_file::base64_encode(&h.any.encode_to_vec()),
                            },
                        )
                    })
                    .collect();
                (k.type_url().to_string(), entries)
            })
            .collect();
        SnapshotFile {
            format: snapshot_file::FORMAT,
            node_id: node_id.to_string(),
            written_at_ms: now_ms(),
            version: self.last_version.clone().unwrap_or_default(),
            system_versions: self
                .system_versions
                .iter()
                .map(|(k, v)| (k.type_url().to_string(), v.clone()))
                .collect(),
            resources,
            fences: self.set.fences.clone(),
        }
    }

    /// A state from a snapshot file, every resource decoded; not yet
    /// applied. Unknown types are an error (a newer format, or a corrupt file).
    pub fn from_snapshot(file: &SnapshotFile) -> Result<State, String> {
        let mut st = State::default();
        for (type_url, entries) in &file.resources {
            let kind = Kind::from_type_url(type_url)
                .ok_or_else(|| format!("unknown resource type {type_url:?}"))?;
            for (name, e) in entries {
                let bytes = snapshot_file::base64_decode(&e.any)
                    .map_err(|err| format!("{} {name:?}: {err}", kind.short()))?;
                let any = Any::decode(bytes.as_slice())
                    .map_err(|err| format!("{} {name:?}: {err}", kind.short()))?;
                let decoded =
                    decode(kind, &any).map_err(|err| format!("{} {name:?} {err}", kind.short()))?;
                if !matches!(kind, Kind::Route | Kind::RouteEntry) {
                    insert(&mut st.set, name.clone(), decoded);
                }
                st.held.entry(kind).or_default().insert(
                    name.clone(),
                    Held {
                        version: e.version.clone(),
                        any,
                    },
                );
            }
        }
        for (type_url, v) in &file.system_versions {
            if let Some(k) = Kind::from_type_url(type_url) {
                st.system_versions.insert(k, v.clone());
            }
        }
        st.last_version = (!file.version.is_empty()).then(|| file.version.clone());
        st.set.fences = file.fences.clone();
        Ok(st)
    }

    /// Marks a state built by [`State::from_snapshot`] as accepted.
    pub fn mark_applied(&mut self) {
        self.applied = true;
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
    };
    use envoy_types::util::pack_any;

    fn eds_cluster(name: &str) -> Any {
        pack_any(Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig::default()),
            ..Default::default()
        })
    }

    fn cla(name: &str) -> Any {
        pack_any(ClusterLoadAssignment {
            cluster_name: name.into(),
            ..Default::default()
        })
    }

    fn update(kind: Kind, version: &str, upserts: &[(&str, Any)], removals: &[&str]) -> Update {
        Update {
            kind,
            version: version.into(),
            upserts: upserts
                .iter()
                .map(|(n, any)| {
                    let held = Held {
                        version: format!("{n}@{version}"),
                        any: any.clone(),
                    };
                    (n.to_string(), held, decode(kind, any).unwrap())
                })
                .collect(),
            removals: removals.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn kinds_follow_push_order_and_type_urls() {
        let urls: Vec<_> = Kind::ALL.iter().map(|k| k.type_url()).collect();
        assert_eq!(urls, xds::PUSH_ORDER);
        for k in Kind::ALL {
            assert_eq!(Kind::from_type_url(k.type_url()), Some(k));
            assert_eq!(k.is_wildcard(), !Kind::NAMED.contains(&k));
        }
        assert_eq!(Kind::from_type_url("type.googleapis.com/x.Y"), None);
    }

    #[test]
    fn decode_checks_the_type() {
        assert!(decode(Kind::Cluster, &eds_cluster("a")).is_ok());
        let e = decode(Kind::Listener, &eds_cluster("a")).unwrap_err();
        assert!(e.contains("Cluster"), "{e}");
        let garbage = Any {
            type_url: xds::CLUSTER.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert!(decode(Kind::Cluster, &garbage).is_err());
    }

    #[test]
    fn candidates_leave_the_state_alone_until_committed() {
        let mut st = State::default();
        let c = st.candidate(update(Kind::Cluster, "1", &[("a", eds_cluster("a"))], &[]));
        assert_eq!(c.set.clusters.len(), 1);
        assert!(
            st.set().clusters.is_empty(),
            "refused candidates change nothing"
        );
        assert!(!st.applied());
        st.commit(c);
        assert!(st.applied());
        assert_eq!(st.held_version(Kind::Cluster, "a"), Some("a@1"));
        assert_eq!(st.system_version(Kind::Cluster), Some("1"));
        assert_eq!(st.missing(), vec![(Kind::Endpoint, "a".to_string())]);

        let c = st.candidate(update(Kind::Endpoint, "2", &[("a", cla("a"))], &[]));
        st.commit(c);
        assert!(st.missing().is_empty());
        assert_eq!(
            st.versions(Kind::Endpoint).get("a").map(String::as_str),
            Some("a@2")
        );

        // Removing the cluster drops its endpoints too (nothing references them).
        let c = st.candidate(update(Kind::Cluster, "3", &[], &["a", "never-held"]));
        assert_eq!(c.pruned().collect::<Vec<_>>(), vec![(Kind::Endpoint, "a")]);
        assert!(c.set.endpoints.is_empty());
        st.commit(c);
        assert_eq!(st.count(Kind::Cluster), 0);
        assert_eq!(st.count(Kind::Endpoint), 0);
        assert_eq!(st.last_version(), Some("3"));
    }

    #[test]
    fn noop_updates_are_recognised_once_applied() {
        let mut st = State::default();
        let empty = update(Kind::Cluster, "1", &[], &["x"]);
        assert!(
            !st.is_noop(&empty),
            "the first configuration is always applied"
        );
        st.commit(st.candidate(empty.clone()));
        assert!(st.is_noop(&empty));
        st.commit(st.candidate(update(Kind::Cluster, "2", &[("a", eds_cluster("a"))], &[])));
        assert!(!st.is_noop(&update(Kind::Cluster, "3", &[], &["a"])));
    }

    #[test]
    fn snapshot_round_trip() {
        let mut st = State::default();
        st.commit(st.candidate(update(Kind::Cluster, "1", &[("a", eds_cluster("a"))], &[])));
        st.commit(st.candidate(update(Kind::Endpoint, "2", &[("a", cla("a"))], &[])));
        let file = st.to_snapshot("n1");
        assert_eq!(file.node_id, "n1");
        assert_eq!(file.version, "2");
        let back = State::from_snapshot(&file).unwrap();
        assert!(!back.applied());
        assert_eq!(
            back.set().clusters.keys().collect::<Vec<_>>(),
            st.set().clusters.keys().collect::<Vec<_>>()
        );
        assert_eq!(back.set().clusters["a"], st.set().clusters["a"]);
        assert_eq!(back.set().endpoints["a"], st.set().endpoints["a"]);
        assert_eq!(back.held, st.held);
        assert_eq!(back.system_versions, st.system_versions);
        assert_eq!(back.last_version(), Some("2"));

        // Route entries are held as bytes, and decoded whole again.
        let e = RouteEntry {
            name: "http/r1".into(),
            route_configuration: "http".into(),
            domains: vec!["a.example.com".into()],
            routes: Vec::new(),
        };
        let any = Any {
            type_url: xds::ROUTE_ENTRY.into(),
            value: e.encode_to_vec(),
        };
        st.commit(st.candidate(update(Kind::RouteEntry, "3", &[("http/r1", any)], &[])));
        assert!(st.set().route_entries.is_empty(), "kept as bytes");
        assert_eq!(st.full_set().route_entries["http/r1"], e);
        let back = State::from_snapshot(&st.to_snapshot("n1")).unwrap();
        assert_eq!(back.full_set().route_entries["http/r1"], e);
        // A later update of another type still carries the entry to the compiler.
        let c = st.candidate(update(Kind::Cluster, "4", &[("b", eds_cluster("b"))], &[]));
        assert_eq!(c.set.route_entries["http/r1"], e);

        let mut bad = file.clone();
        if let Some(e) = bad
            .resources
            .get_mut(xds::CLUSTER)
            .and_then(|m| m.get_mut("a"))
        {
            e.any = "!!".into();
        }
        assert!(State::from_snapshot(&bad).is_err());
    }
}
