//! gantry-cp's own metrics, served at `/metrics` on the admin listener in
//! Prometheus' text format: the xDS streams and what they were sent,
//! ACKed and refused, how long a commit takes to reach the fleet, the
//! snapshot builds, and the store's writes.
//!
//! Counters and histograms are process-wide (one control plane per
//! process) and updated where the event happens; what describes the fleet
//! now (streams, nodes by state) is read from it at scrape time.

use crate::xds::{Fleet, SyncState};
use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// The resource type's short name (CDS, EDS, ...).
    pub r#type: &'static str,
    pub flavour: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    flavour: &'static str,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Seconds, from a millisecond up to a minute.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
    .into_iter()
}

fn histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

pub struct Metrics {
    pub responses: Family<TypeLabels, Counter>,
    pub acks: Family<TypeLabels, Counter>,
    pub nacks: Family<TypeLabels, Counter>,
    /// A response sent → the node's ACK of it.
    pub ack_latency: Family<TypeLabels, Histogram, fn() -> Histogram>,
    /// A revision first seen by the snapshot builder → a node synced on it.
    pub commit_to_ack: Histogram,
    pub translation: Histogram,
    pub translation_failures: Counter,
    pub revision: Gauge,
    pub store_write: Histogram,
    pub store_write_failures: Counter,
    streams: Family<StreamLabels, Gauge>,
    nodes: Family<StateLabel, Gauge>,
    registry: Registry,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            responses: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            ack_latency: Family::new_with_constructor(histogram),
            commit_to_ack: histogram(),
            translation: histogram(),
            translation_failures: Counter::default(),
            revision: Gauge::default(),
            store_write: histogram(),
            store_write_failures: Counter::default(),
            streams: Family::default(),
            nodes: Family::default(),
            registry: Registry::with_prefix("gantry_cp"),
        };
        let r = &mut m.registry;
        r.register(
            "xds_responses",
            "xDS responses sent, by resource type and node flavour",
            m.responses.clone(),
        );
        r.register("xds_acks", "xDS responses ACKed by nodes", m.acks.clone());
        r.register(
            "xds_nacks",
            "xDS responses refused (NACKed) by nodes",
            m.nacks.clone(),
        );
        r.register(
            "xds_ack_latency_seconds",
            "From an xDS response sent to the node's ACK of it",
            m.ack_latency.clone(),
        );
        r.register(
            "commit_to_ack_seconds",
            "From a revision reaching the snapshot builder to a node synced on it (every type ACKed)",
            m.commit_to_ack.clone(),
        );
        r.register(
            "translation_seconds",
            "Time to translate a revision into every flavour's snapshot",
            m.translation.clone(),
        );
        r.register(
            "translation_failures",
            "Revisions that could not be translated (proxies keep the last good snapshot)",
            m.translation_failures.clone(),
        );
        r.register(
            "revision",
            "The revision of the snapshot being served",
            m.revision.clone(),
        );
        r.register(
            "store_write_seconds",
            "Admin write transactions, from the writer lock taken to commit",
            m.store_write.clone(),
        );
        r.register(
            "store_write_failures",
            "Write transactions whose commit failed",
            m.store_write_failures.clone(),
        );
        r.register(
            "xds_streams",
            "Open xDS streams on this replica, by node flavour and protocol",
            m.streams.clone(),
        );
        r.register(
            "xds_nodes",
            "Nodes on this replica by sync state",
            m.nodes.clone(),
        );
        m
    }

    /// The text exposition, with the fleet's current shape read in.
    pub fn render(&self, fleet: &Fleet) -> String {
        let mut streams: BTreeMap<(&'static str, &'static str), i64> = BTreeMap::new();
        let mut nodes: BTreeMap<&'static str, i64> =
            [("synced", 0), ("stale", 0), ("nacked", 0), ("not_sent", 0)]
                .into_iter()
                .collect();
        for n in fleet.local() {
            *streams.entry((n.flavour.as_str(), n.protocol)).or_default() += 1;
            let state = match n.state() {
                SyncState::Synced => "synced",
                SyncState::Stale => "stale",
                SyncState::Nacked => "nacked",
                SyncState::NotSent => "not_sent",
            };
            *nodes.entry(state).or_default() += 1;
        }
        // Streams that closed since the last scrape read 0, not stale.
        self.streams.clear();
        for ((flavour, protocol), n) in streams {
            self.streams
                .get_or_create(&StreamLabels { flavour, protocol })
                .set(n);
        }
        for (state, n) in nodes {
            self.nodes.get_or_create(&StateLabel { state }).set(n);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
