//! The runtime: an immutable, compiled view of one config version, swapped
//! in atomically. A request loads it once and finishes on it, whatever is
//! swapped in meanwhile; long-lived state (pools, endpoint counters) is
//! carried from one runtime to the next by cluster name.

use super::health::HealthCheckers;
use super::lb::ClusterState;
use super::listeners::ListenerSet;
use super::stats::Stats;
use crate::config::{Compiled, Fences, ListenerConfig, ResourceSet, compile};
use crate::xds::Applier;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
pub struct Runtime {
    pub version: String,
    pub compiled: Compiled,
    pub clusters: HashMap<String, Arc<ClusterState>>,
    pub listeners: HashMap<String, ListenerConfig>,
    pub applied_at: std::time::SystemTime,
    /// What refused updates took out of service.
    pub fences: Arc<Fences>,
}

impl Runtime {
    /// Whether a request on `listener` routed to a route that runs
    /// plugins (or not) is fenced by a refused update.
    pub fn fenced(&self, listener: &str, route_config: &str, has_plugins: bool) -> bool {
        !self.fences.is_empty() && self.fences.refuses(listener, route_config, has_plugins)
    }
}

impl Runtime {
    fn empty() -> Runtime {
        Runtime {
            version: String::new(),
            compiled: Compiled::default(),
            clusters: HashMap::new(),
            listeners: HashMap::new(),
            applied_at: std::time::SystemTime::now(),
            fences: Arc::default(),
        }
    }
}

/// Options that shape how listeners are bound on this host.
#[derive(Clone, Debug, Default)]
pub struct ProxyOptions {
    /// Added to every listener port, so several proxies share a host.
    pub port_offset: i32,
    /// How long removed listeners and a stopping proxy let requests finish.
    pub drain_timeout: Duration,
    /// The JSON access log, when one is configured.
    pub access_log: Option<Arc<super::access_log::AccessLog>>,
    /// The xDS node id, Kong's `node_id` label.
    pub node_id: String,
}

pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub stats: Stats,
    /// Set once the first config is in (the admin `/ready`).
    pub ready: AtomicBool,
    pub options: ProxyOptions,
    /// Plugin state (rate-limit counters, Redis connections).
    pub plugins: crate::plugins::State,
    listeners: Mutex<ListenerSet>,
    health: HealthCheckers,
}

impl Shared {
    pub fn new(options: ProxyOptions) -> Arc<Shared> {
        Arc::new(Shared {
            runtime: ArcSwap::from_pointee(Runtime::empty()),
            stats: Stats::new(options.access_log.as_ref().map(|l| l.dropped.clone())),
            ready: AtomicBool::new(false),
            options,
            plugins: crate::plugins::State::default(),
            listeners: Mutex::new(ListenerSet::default()),
            health: HealthCheckers::default(),
        })
    }

    pub fn current(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Compiles `set`, binds any new listener address, then swaps the new
    /// runtime in. Any failure leaves the running config untouched.
    pub fn install(self: &Arc<Self>, set: &ResourceSet, version: &str) -> Result<(), String> {
        let compiled = compile(set).map_err(|e| e.to_string())?;
        let prev = self.current();
        let clusters = compiled
            .clusters
            .iter()
            .map(|(name, cfg)| {
                (
                    name.clone(),
                    Arc::new(ClusterState::build(
                        cfg,
                        prev.clusters.get(name).map(|c| c.as_ref()),
                        &compiled.certificates,
                        &self.stats,
                    )),
                )
            })
            .collect();
        let listeners: HashMap<String, ListenerConfig> = compiled
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.clone()))
            .collect();
        let mut set_guard = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let plan = set_guard.plan(&compiled.listeners, self.options.port_offset)?;
        self.runtime.store(Arc::new(Runtime {
            version: version.to_string(),
            compiled,
            clusters,
            listeners,
            applied_at: std::time::SystemTime::now(),
            fences: Arc::new(set.fences.clone()),
        }));
        set_guard.commit(plan, self);
        let rt = self.current();
        self.health.reconcile(&rt.compiled.clusters, &rt.clusters);
        self.ready.store(true, Ordering::Release);
        self.stats.config_applied.inc();
        tracing::info!(version, "config applied");
        crate::memory::release_freed_memory();
        Ok(())
    }

    /// Swaps in the running configuration with `fences`: nothing is
    /// compiled, so this cannot fail.
    pub fn fence(&self, fences: &Fences) {
        let cur = self.current();
        if *cur.fences == *fences {
            return;
        }
        let mut next = Runtime::clone(&cur);
        next.fences = Arc::new(fences.clone());
        self.runtime.store(Arc::new(next));
    }

    /// Stops every listener and waits (bounded by the drain timeout) for
    /// requests in flight to finish.
    pub async fn drain(self: &Arc<Self>) {
        let tasks = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop_all();
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// The xDS client's hook: what it applies, the proxy runs.
pub struct Core(pub Arc<Shared>);

impl Applier for Core {
    fn apply(&self, set: &ResourceSet, version: &str) -> Result<(), String> {
        self.0.install(set, version).inspect_err(|e| {
            self.0.stats.config_rejected.inc();
            tracing::warn!(version, error = %e, "config refused; keeping the last good one");
        })
    }

    fn fence(&self, fences: &Fences) {
        self.0.fence(fences);
    }
}
