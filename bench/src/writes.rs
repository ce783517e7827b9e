//! `admin-writes`: committed admin writes per second with concurrent
//! clients, each POSTing new routes and PATCHing its own, for a fixed time.

use crate::admin::Admin;
use crate::report::{Table, ms, percentile, verdict};
use anyhow::{Context, bail};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct WritesArgs {
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    pub admin: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long the clients write.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Services the routes hang off (created first).
    #[arg(long, default_value_t = 10)]
    pub services: usize,
    /// Every n-th write of a client POSTs a new route; the others PATCH
    /// the paths of a route the client created.
    #[arg(long, default_value_t = 4)]
    pub post_every: usize,
    /// Target in writes per second.
    #[arg(long, default_value_t = 500.0)]
    pub target: f64,
    /// Shown in the title (the script passes the backend).
    #[arg(long, default_value = "")]
    pub label: String,
    #[arg(long)]
    pub smoke: bool,
}

#[derive(Default)]
struct ClientResult {
    latencies: Vec<Duration>,
    posts: usize,
    patches: usize,
}

async fn client(
    admin: Admin,
    c: usize,
    a: WritesArgs,
    until: Instant,
) -> anyhow::Result<ClientResult> {
    let mut r = ClientResult::default();
    let mut mine: Vec<String> = Vec::new();
    let mut k = 0usize;
    while Instant::now() < until {
        let t = Instant::now();
        if mine.is_empty() || k.is_multiple_of(a.post_every.max(1)) {
            let name = format!("w{c}-{k}");
            let body = json!({"name": name, "paths": [format!("/w{c}/{k}")]});
            let svc = format!("ws-svc{}", (c + k) % a.services.max(1));
            admin
                .write(
                    reqwest::Method::POST,
                    &format!("/services/{svc}/routes"),
                    Some(&body),
                )
                .await?;
            mine.push(name);
            r.posts += 1;
        } else {
            let name = &mine[k % mine.len()];
            let body = json!({"paths": [format!("/w{c}/{k}")]});
            admin
                .write(
                    reqwest::Method::PATCH,
                    &format!("/routes/{name}"),
                    Some(&body),
                )
                .await?;
            r.patches += 1;
        }
        r.latencies.push(t.elapsed());
        k += 1;
    }
    Ok(r)
}

pub async fn run(a: WritesArgs) -> anyhow::Result<()> {
    let admin = Admin::new(&a.admin)?;
    for i in 0..a.services.max(1) {
        let body =
            json!({"name": format!("ws-svc{i}"), "url": format!("http://10.9.0.{}:8080", i % 250)});
        admin
            .write(
                reqwest::Method::PUT,
                &format!("/services/ws-svc{i}"),
                Some(&body),
            )
            .await
            .context("creating the services")?;
    }
    let start_rev = admin.settled_revision(Duration::from_secs(60)).await?;
    let start = Instant::now();
    let until = start + Duration::from_secs(a.secs);
    let tasks: Vec<_> = (0..a.clients.max(1))
        .map(|c| tokio::spawn(client(admin.clone(), c, a.clone(), until)))
        .collect();
    let mut all = ClientResult::default();
    let mut failures = Vec::new();
    for t in tasks {
        match t.await.context("client task")? {
            Ok(r) => {
                all.latencies.extend(r.latencies);
                all.posts += r.posts;
                all.patches += r.patches;
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let elapsed = start.elapsed();
    if let Some(f) = failures.first() {
        bail!(
            "{} of {} clients failed; first: {f}",
            failures.len(),
            a.clients
        );
    }
    let end_rev = admin.settled_revision(Duration::from_secs(120)).await?;
    let n = all.latencies.len();
    let rate = n as f64 / elapsed.as_secs_f64();
    let mut t = Table::new(
        format!(
            "Admin writes{}: {} concurrent clients for {} s (1 POST of a new route in {}, else PATCH of the client's routes' paths)",
            if a.label.is_empty() {
                String::new()
            } else {
                format!(" on {}", a.label)
            },
            a.clients,
            a.secs,
            a.post_every.max(1)
        ),
        &["measurement", "value", "target"],
    );
    t.row(vec![
        "committed writes per second".into(),
        format!(
            "{rate:.0} ({n} writes: {} POST, {} PATCH)",
            all.posts, all.patches
        ),
        format!("≥ {}/s: {}", a.target, verdict(rate >= a.target, a.smoke)),
    ]);
    t.row(vec![
        "write latency p50 / p99 / max".into(),
        format!(
            "{} / {} / {}",
            ms(percentile(&all.latencies, 50.0)),
            ms(percentile(&all.latencies, 99.0)),
            ms(percentile(&all.latencies, 100.0))
        ),
        "-".into(),
    ]);
    t.row(vec![
        "revisions committed (one per write)".into(),
        format!("{}", end_rev - start_rev),
        "-".into(),
    ]);
    t.print();
    if (end_rev - start_rev) as usize != n {
        bail!(
            "{n} writes succeeded but the revision moved by {}",
            end_rev - start_rev
        );
    }
    Ok(())
}
