//! `translate`: the control plane's translation of a large configuration,
//! timed in-process with gantry-cp's own store and translator, in the
//! stages a snapshot rebuild goes through (read entities, translate, pack
//! and hash resources, both flavours).

use crate::report::{Table, bytes, ms, percentile, verdict};
use crate::synth::{self, Shape};
use anyhow::Context;
use gantry_cp::store::{Store, StoreConfig};
use gantry_cp::translator::{self, Flavour, ProxyOptions};
use gantry_cp::xds::SnapshotCache;
use gantry_cp::xds::cache::snapshot_of;
use prost::Message;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct TranslateArgs {
    #[arg(long, default_value_t = 10_000)]
    pub routes: usize,
    #[arg(long, default_value_t = 1_000)]
    pub services: usize,
    /// Every n-th service goes through an upstream (an EDS cluster).
    #[arg(long, default_value_t = 10)]
    pub upstream_every: usize,
    /// Timed repetitions of each stage (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// Target for one translation, in ms.
    #[arg(long, default_value_t = 200.0)]
    pub target_ms: f64,
    #[arg(long)]
    pub smoke: bool,
}

fn time<T>(
    n: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(Vec<Duration>, T)> {
    let mut v = Vec::with_capacity(n);
    let mut last = None;
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let out = f()?;
        v.push(t.elapsed());
        last = Some(out);
    }
    Ok((v, last.context("no iteration ran")?))
}

pub async fn run(a: TranslateArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("gantry-bench-translate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(&a, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(a: &TranslateArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let mut cfg = StoreConfig::new(format!("sqlite://{}", dir.join("translate.db").display()));
    cfg.feed_poll = Duration::ZERO;
    let store = Store::open(&cfg)
        .await
        .context("opening a scratch SQLite store")?;
    let shape = Shape {
        services: a.services,
        routes: a.routes,
        upstream_every: a.upstream_every,
    };
    // The same path as `POST /config`: parse, flatten (schema validation
    // and defaults), replace in one transaction.
    let t = Instant::now();
    let sealer = gantry_cp::seal::Sealer::load(&store).await?;
    let doc = serde_json::to_vec(&synth::document(&shape))?;
    let doc = gantry_cp::declarative::parse_document(&doc)?;
    let desired = gantry_cp::declarative::flatten(&doc, &sealer)?;
    let mut tx = store.begin_write("bench").await?;
    gantry_cp::declarative::replace(&mut tx, desired).await?;
    tx.commit("config", "bench").await?;
    let imported = t.elapsed();

    let opts = ProxyOptions::default();
    let (load, entities) = {
        let mut v = Vec::new();
        let mut last = None;
        for _ in 0..a.iterations.max(1) {
            let t = Instant::now();
            last = Some(store.all_current().await?);
            v.push(t.elapsed());
        }
        (v, last.context("no iteration ran")?)
    };
    let (tr, tables) = time(a.iterations, || {
        translator::translate_tables(&entities, Flavour::Envoy, &opts).map_err(anyhow::Error::from)
    })?;
    let mut pack = Vec::new();
    for _ in 0..a.iterations.max(1) {
        let t = tables.clone();
        let started = Instant::now();
        let snap = snapshot_of(1, t);
        pack.push(started.elapsed());
        drop(snap);
    }
    let (plain, res) = time(a.iterations, || {
        translator::translate(&entities, Flavour::Envoy, &opts).map_err(anyhow::Error::from)
    })?;
    let rds_bytes: usize = res.routes.iter().map(Message::encoded_len).sum();
    let vhosts = res
        .routes
        .first()
        .map(|r| r.virtual_hosts.len())
        .unwrap_or(0);
    let entries: usize = res
        .routes
        .iter()
        .flat_map(|r| r.virtual_hosts.iter())
        .map(|v| v.routes.len())
        .sum();
    let clusters = res.clusters.len();
    drop(res);
    let cache = SnapshotCache::new();
    let mut rebuild = Vec::new();
    for _ in 0..a.iterations.max(1) {
        let t = Instant::now();
        cache.rebuild(&store, &opts).await?;
        rebuild.push(t.elapsed());
    }
    store.close().await;

    let med = |v: &[Duration]| percentile(v, 50.0);
    let translate = med(&tr);
    let mut t = Table::new(
        format!(
            "Translation: {} routes / {} services ({} clusters, {} virtual hosts per route configuration, {} route entries, {} of RDS), median of {}",
            a.routes,
            a.services,
            clusters,
            vhosts,
            entries,
            bytes(rds_bytes as u64),
            a.iterations.max(1)
        ),
        &["stage", "time", "target"],
    );
    t.row(vec![
        "translate (entities → validated resources, route tables; what a rebuild runs)".into(),
        format!(
            "{} (first {}, min {})",
            ms(translate),
            ms(tr[0]),
            ms(percentile(&tr, 0.0))
        ),
        format!(
            "≤ {} ms: {}",
            a.target_ms,
            verdict(translate.as_secs_f64() * 1000.0 <= a.target_ms, a.smoke)
        ),
    ]);
    t.row(vec![
        "encode + hash the resources (one flavour)".into(),
        ms(med(&pack)),
        "-".into(),
    ]);
    t.row(vec![
        "translate to plain messages (`translate()`, repeated routes copied out)".into(),
        ms(med(&plain)),
        "-".into(),
    ]);
    t.row(vec![
        "read every entity from the store (SQLite)".into(),
        ms(med(&load)),
        "-".into(),
    ]);
    t.row(vec![
        "whole snapshot rebuild as the CP runs it (read + both flavours)".into(),
        ms(med(&rebuild)),
        "-".into(),
    ]);
    t.row(vec![
        "(import of the generated config through POST /config's path)".into(),
        ms(imported),
        "-".into(),
    ]);
    t.print();
    Ok(())
}
