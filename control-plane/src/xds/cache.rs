//! The snapshot cache: the newest revision translated into Envoy
//! resources per proxy flavour, each resource with a content-hash version.
//! Streams watch it; a burst of revisions becomes one snapshot.

use crate::metrics::METRICS;
use crate::store::Store;
use crate::translator::{self, Flavour, ProxyOptions, RouteTable, Translation};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use gantry_shared::xds;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One resource as sent: name, version (content hash) and the packed proto.
#[derive(Debug)]
pub struct Resource {
    /// Shared with every stream's bookkeeping of what its node has.
    pub name: Arc<str>,
    pub version: Arc<str>,
    pub any: Any,
}

pub type TypeMap = BTreeMap<String, Arc<Resource>>;

/// Everything one flavour of proxy gets at one revision.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub revision: i64,
    /// Each type's map on its own `Arc`, so a stream can hold one type of
    /// an older snapshot (held.rs) without the rest.
    pub types: HashMap<&'static str, Arc<TypeMap>>,
    /// Enabled plugins this snapshot's flavour does not enforce.
    pub unenforced_plugins: Vec<String>,
}

impl Snapshot {
    pub fn of(&self, type_url: &str) -> Option<&TypeMap> {
        self.types.get(type_url).map(|m| &**m)
    }

    /// One type's map, shared.
    pub fn shared(&self, type_url: &str) -> Option<Arc<TypeMap>> {
        self.types.get(type_url).cloned()
    }
}

/// The published state: snapshots per flavour, and the newest revision
/// that failed to translate (published snapshots stay at the last good one).
#[derive(Debug, Default)]
pub struct Snapshots {
    pub revision: i64,
    pub flavours: HashMap<Flavour, Arc<Snapshot>>,
    pub error: Option<TranslationFailure>,
    /// When the builder learned of `revision` (for commit → ACK).
    pub seen_at: Option<Instant>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TranslationFailure {
    pub revision: i64,
    pub error: String,
}

impl Snapshots {
    /// When the builder learned of `revision`, if these snapshots are it.
    pub fn seen_at(&self, revision: i64) -> Option<Instant> {
        self.seen_at.filter(|_| self.revision == revision)
    }

    pub fn for_flavour(&self, f: Flavour) -> Option<Arc<Snapshot>> {
        self.flavours.get(&f).cloned()
    }
}

fn version_of(any: &Any) -> String {
    let digest = Sha256::digest(&any.value);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn resource(name: String, any: Any) -> (String, Arc<Resource>) {
    let version = version_of(&any);
    let r = Resource {
        name: name.as_str().into(),
        version: version.into(),
        any,
    };
    (name, Arc::new(r))
}

fn pack<T: Message + prost::Name>(items: Vec<T>, name: impl Fn(&T) -> String) -> TypeMap {
    items
        .into_iter()
        .map(|r| resource(name(&r), pack_any(r)))
        .collect()
}

pub fn snapshot_of(revision: i64, r: Translation) -> Snapshot {
    snapshots_of(revision, vec![r]).remove(0)
}

/// Snapshots of one revision's translations (one per flavour). What an
/// earlier flavour already has is shared rather than kept twice: a route
/// table built from the same routes is not encoded again, and any resource
/// with the same name and content hash is the same `Arc`.
pub fn snapshots_of(revision: i64, translations: Vec<Translation>) -> Vec<Snapshot> {
    let mut out: Vec<Snapshot> = Vec::with_capacity(translations.len());
    let mut tables: Vec<(RouteTable, Arc<Resource>)> = Vec::new();
    for r in translations {
        let unenforced_plugins = r.unenforced_plugins;
        let mut types = HashMap::new();
        types.insert(xds::LISTENER, pack(r.listeners, |l| l.name.clone()));
        // Route tables encode straight to bytes: their repeated routes are
        // never copied out as messages, and shared routes encode once.
        let fresh: Vec<&RouteTable> = r
            .routes
            .iter()
            .filter(|t| !tables.iter().any(|(seen, _)| same_table(seen, t)))
            .collect();
        let encoded = translator::encode_tables(&fresh);
        for (t, value) in fresh.into_iter().zip(encoded) {
            let any = Any {
                type_url: xds::ROUTE.to_string(),
                value,
            };
            tables.push((t.clone(), resource(t.name().to_string(), any).1));
        }
        let routes = r
            .routes
            .iter()
            .filter_map(|t| tables.iter().find(|(seen, _)| same_table(seen, t)))
            .map(|(t, res)| (t.name().to_string(), res.clone()))
            .collect();
        types.insert(xds::ROUTE, routes);
        // gantry-proxy's tables carry their routes as entries (Envoy's, none).
        let with_entries: Vec<&RouteTable> =
            r.routes.iter().filter(|t| !t.entries.is_empty()).collect();
        let entries = translator::encode_entries(&with_entries)
            .into_iter()
            .flatten()
            .map(|(name, value)| {
                let any = Any {
                    type_url: xds::ROUTE_ENTRY.to_string(),
                    value,
                };
                resource(name, any)
            })
            .collect();
        types.insert(xds::ROUTE_ENTRY, entries);
        types.insert(xds::CLUSTER, pack(r.clusters, |l| l.name.clone()));
        types.insert(xds::ENDPOINT, pack(r.endpoints, |l| l.cluster_name.clone()));
        types.insert(xds::SECRET, pack(r.secrets, |l| l.name.clone()));
        for (t, map) in types.iter_mut() {
            for prev in &out {
                let Some(earlier) = prev.of(t) else { continue };
                for (name, res) in map.iter_mut() {
                    if let Some(e) = earlier.get(name)
                        && e.version == res.version
                    {
                        *res = e.clone();
                    }
                }
            }
        }
        out.push(Snapshot {
            revision,
            types: types.into_iter().map(|(t, m)| (t, Arc::new(m))).collect(),
            unenforced_plugins,
        });
    }
    out
}

/// What did not change since `prev` is `prev`'s own: each resource with
/// the same name and version is its `Arc`, and a type's map with nothing
/// changed is its map. Streams then tell unchanged resources, and whole
/// unchanged types, by pointer, and one copy of each is alive.
fn carry_over(next: &mut Snapshot, prev: &Snapshot) {
    for (t, map) in next.types.iter_mut() {
        let Some(old) = prev.shared(t) else { continue };
        let Some(m) = Arc::get_mut(map) else { continue };
        let mut all_same = m.len() == old.len();
        for (name, r) in m.iter_mut() {
            match old.get(name) {
                Some(o) if o.version == r.version => *r = o.clone(),
                _ => all_same = false,
            }
        }
        if all_same {
            *map = old;
        }
    }
}

/// Tables built from the same routes into the same shape encode the same
/// (as route configurations: their entries travel on their own).
fn same_table(a: &RouteTable, b: &RouteTable) -> bool {
    Arc::ptr_eq(&a.routes, &b.routes) && a.shell == b.shell && a.vhosts == b.vhosts
}

pub const FLAVOURS: [Flavour; 2] = [Flavour::GantryProxy, Flavour::Envoy];

#[derive(Clone)]
pub struct SnapshotCache {
    tx: Arc<watch::Sender<Arc<Snapshots>>>,
}

impl SnapshotCache {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(Snapshots {
            revision: -1,
            ..Default::default()
        }));
        SnapshotCache { tx: Arc::new(tx) }
    }

    pub fn current(&self) -> Arc<Snapshots> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshots>> {
        self.tx.subscribe()
    }

    /// Translates `revision` for every flavour and publishes it; on a
    /// translation error the last good snapshots stay and the error is
    /// recorded, so nothing half-built is ever pushed.
    pub async fn rebuild(
        &self,
        store: &Store,
        opts: &ProxyOptions,
    ) -> Result<(), crate::store::StoreError> {
        self.rebuild_seen(store, opts, Instant::now()).await
    }

    /// [`rebuild`](Self::rebuild), for a change first seen at `seen_at`.
    async fn rebuild_seen(
        &self,
        store: &Store,
        opts: &ProxyOptions,
        seen_at: Instant,
    ) -> Result<(), crate::store::StoreError> {
        // Read the revision before the entities: if a write lands between
        // the two reads, the next rebuild will carry it.
        let revision = store.current_revision().await?;
        let entities = store.all_current().await?;
        let started = Instant::now();
        let flavours: HashMap<Flavour, Arc<Snapshot>> = match translator::translate_flavours(
            &entities, &FLAVOURS, opts,
        ) {
            Ok(ts) => {
                let prev = self.current();
                FLAVOURS
                    .into_iter()
                    .zip(snapshots_of(revision, ts))
                    .map(|(f, mut s)| {
                        if let Some(p) = prev.flavours.get(&f) {
                            carry_over(&mut s, p);
                        }
                        (f, Arc::new(s))
                    })
                    .collect()
            }
            Err(e) => {
                METRICS.translation_failures.inc();
                tracing::warn!(revision, error = %e, "revision cannot be translated; proxies keep the last good snapshot");
                let prev = self.current();
                let next = Snapshots {
                    revision: prev.revision,
                    flavours: prev.flavours.clone(),
                    seen_at: prev.seen_at,
                    error: Some(TranslationFailure {
                        revision,
                        error: e.to_string(),
                    }),
                };
                self.tx.send_replace(Arc::new(next));
                return Ok(());
            }
        };
        METRICS.translation.observe(started.elapsed().as_secs_f64());
        METRICS.revision.set(revision);
        tracing::debug!(
            revision,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        self.tx.send_replace(Arc::new(Snapshots {
            revision,
            flavours,
            error: None,
            seen_at: Some(seen_at),
        }));
        Ok(())
    }

    /// Follows the change feed: after each new revision waits `debounce`
    /// for more to arrive, then rebuilds once.
    pub fn spawn_builder(
        &self,
        store: Store,
        opts: ProxyOptions,
        debounce: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut feed = store.feed().subscribe();
            let mut seen_at = Instant::now();
            loop {
                if let Err(e) = cache.rebuild_seen(&store, &opts, seen_at).await {
                    tracing::warn!(error = %e, "snapshot rebuild failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                if feed.changed().await.is_err() {
                    return;
                }
                seen_at = Instant::now();
                if !debounce.is_zero() {
                    tokio::time::sleep(debounce).await;
                }
                feed.borrow_and_update();
            }
        })
    }
}

impl Default for SnapshotCache {
    fn default() -> Self {
        Self::new()
    }
}
