//! `xds-churn`: route churn at a steady rate for minutes, with delta
//! streams attached: whether the control plane's memory stays flat, and
//! how long each commit takes to reach every stream while it runs.

use crate::admin::{Admin, Written};
use crate::fleet::{Fleet, NodeKind};
use crate::procstat;
use crate::report::{Table, mib, ms, percentile, verdict};
use crate::synth::{self, Shape};
use crate::xds::{Common, WriteKind, check_fds, seed, write};
use anyhow::{Context, bail};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    #[arg(long, default_value_t = 5000)]
    pub routes: usize,
    #[arg(long, default_value_t = 500)]
    pub services: usize,
    /// Changes per second: creates, edits and deletes in turn.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 600)]
    pub secs: u64,
    /// How often the control plane's RSS is read.
    #[arg(long, default_value_t = 5)]
    pub sample_secs: u64,
    /// Which proxy the streams play.
    #[arg(long, value_enum, default_value = "gantry-proxy")]
    pub node_kind: NodeKind,
}

/// The k-th change: a new route, an edit of a seeded route's path, or the
/// deletion of the route created two changes before (so the number of
/// routes stays where it started).
async fn change(admin: &Admin, k: usize, shape: &Shape) -> anyhow::Result<Written> {
    match k % 3 {
        0 => {
            let s = synth::service_name(k / 3 % shape.services.max(1));
            let body = json!({"name": format!("churn-{k}"), "paths": [format!("/churn-{k}")]});
            admin
                .write(
                    reqwest::Method::POST,
                    &format!("/services/{s}/routes"),
                    Some(&body),
                )
                .await
        }
        1 => write(admin, WriteKind::Route, k, shape).await,
        _ => {
            admin
                .write(
                    reqwest::Method::DELETE,
                    &format!("/routes/churn-{}", k - 2),
                    None,
                )
                .await
        }
    }
}

pub async fn churn(a: ChurnArgs) -> anyhow::Result<()> {
    let c = &a.common;
    check_fds(a.streams)?;
    let Some(pid) = c.cp_pid else {
        bail!("--cp-pid is needed: the point is the control plane's memory");
    };
    let admin = Admin::new(&c.admin)?;
    let shape = Shape {
        services: a.services,
        routes: a.routes,
        upstream_every: c.upstream_every,
    };
    let (rev, _) = seed(&admin, &shape).await?;
    let fleet = Fleet::connect(
        &c.xds,
        a.streams,
        "churn",
        c.connect_concurrency,
        a.node_kind,
    )?;
    fleet
        .settle(rev, c.quiet(), c.timeout().max(Duration::from_secs(600)))
        .await
        .context("initial sync")?;
    fleet.take_acks();

    let start = Instant::now();
    let every = Duration::from_secs_f64(1.0 / a.rate.max(0.1));
    let run = Duration::from_secs(a.secs);
    let sample = Duration::from_secs(a.sample_secs.max(1));
    let mut samples: Vec<(Duration, u64)> =
        vec![(Duration::ZERO, procstat::read(pid, c.clk_tck)?.rss)];
    let mut writes: Vec<Written> = Vec::new();
    let mut next_sample = sample;
    let mut k = 0;
    while start.elapsed() < run {
        let due = start + every.mul_f64(k as f64);
        tokio::time::sleep_until(due.into()).await;
        writes.push(
            change(&admin, k, &shape)
                .await
                .with_context(|| format!("change {k}"))?,
        );
        k += 1;
        if start.elapsed() >= next_sample {
            samples.push((start.elapsed(), procstat::read(pid, c.clk_tck)?.rss));
            next_sample += sample;
        }
    }
    let elapsed = start.elapsed();
    let last = writes.last().map(|w| w.revision).unwrap_or(rev);
    fleet
        .reach(last, c.quiet(), c.timeout())
        .await
        .context("the last change reaching every stream")?;
    samples.push((start.elapsed(), procstat::read(pid, c.clk_tck)?.rss));
    let acks = fleet.take_acks();
    fleet.verify(&admin, last).await?;
    fleet.close().await;

    // Each commit: until every stream ACKed that revision or a later one.
    let mut lat: Vec<Duration> = Vec::with_capacity(writes.len());
    for w in &writes {
        let mut worst = Duration::ZERO;
        for stream in &acks {
            let i = stream.partition_point(|(v, _)| *v < w.revision);
            let Some((_, at)) = stream.get(i) else {
                bail!("a stream never ACKed revision {}", w.revision);
            };
            worst = worst.max(at.saturating_duration_since(w.at));
        }
        lat.push(worst);
    }
    lat.sort();
    // Flat: the last tenth of the run against the first tenth (after the
    // first sample, which is taken before any churn).
    let tenth = (samples.len() / 10).max(1);
    let mean = |s: &[(Duration, u64)]| s.iter().map(|x| x.1).sum::<u64>() / s.len().max(1) as u64;
    let early = mean(&samples[1.min(samples.len() - 1)..(1 + tenth).min(samples.len())]);
    let late = mean(&samples[samples.len().saturating_sub(tenth)..]);
    let peak = samples.iter().map(|x| x.1).max().unwrap_or(0);
    let flat = (late as f64) <= (early as f64) * 1.10;

    let mut t = Table::new(
        format!(
            "Route churn: {} changes in {:.0} s ({:.1}/s: creates, edits, deletes), {} {} streams, {} routes / {} services",
            writes.len(),
            elapsed.as_secs_f64(),
            writes.len() as f64 / elapsed.as_secs_f64(),
            a.streams,
            a.node_kind.user_agent(),
            a.routes,
            a.services
        ),
        &["measurement", "result", "target"],
    );
    t.row(vec![
        "commit → every stream ACKed: p50 / p99 / max".into(),
        format!(
            "{} / {} / {}",
            ms(percentile(&lat, 0.50)),
            ms(percentile(&lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default())
        ),
        "-".into(),
    ]);
    t.row(vec![
        "gantry-cp RSS: before churn / first tenth / last tenth / peak".into(),
        format!(
            "{} / {} / {} / {}",
            mib(samples[0].1),
            mib(early),
            mib(late),
            mib(peak)
        ),
        format!("last within 10 % of first: {}", verdict(flat, c.smoke)),
    ]);
    t.print();
    Ok(())
}
