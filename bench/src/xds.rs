//! `xds-fleet` (write → every stream ACKed, and memory with N streams)
//! and `xds-bytes` (bytes per change against config size).

use crate::admin::{Admin, Written};
use crate::fleet::{Change, Fleet, NodeKind};
use crate::procstat::{self, ProcStat};
use crate::report::{Table, bytes, mib, ms, percentile, verdict};
use crate::synth::{self, Shape};
use anyhow::{Context, bail};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct Common {
    /// The control plane's admin API.
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    pub admin: String,
    /// The control plane's xDS server.
    #[arg(long, default_value = "http://127.0.0.1:18000")]
    pub xds: String,
    /// The gantry-cp process, for RSS and CPU time from /proc.
    #[arg(long)]
    pub cp_pid: Option<u32>,
    /// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    pub clk_tck: u64,
    /// A change is complete once every stream has ACKed it and no stream
    /// has received anything for this long (follow-up responses landed).
    #[arg(long, default_value_t = 150)]
    pub quiet_ms: u64,
    /// Pause between writes, so each change is measured alone.
    #[arg(long, default_value_t = 100)]
    pub gap_ms: u64,
    /// Streams connecting at the same time.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Give up on a change (and fail) after this long.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Every n-th service goes through an upstream (an EDS cluster).
    #[arg(long, default_value_t = 10)]
    pub upstream_every: usize,
    /// A tiny run for CI: numbers are printed, targets are not judged.
    #[arg(long)]
    pub smoke: bool,
}

impl Common {
    pub(crate) fn quiet(&self) -> Duration {
        Duration::from_millis(self.quiet_ms)
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    fn cp(&self) -> anyhow::Result<Option<ProcStat>> {
        self.cp_pid
            .map(|pid| procstat::read(pid, self.clk_tck))
            .transpose()
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// PATCH one route's paths: only the route configuration changes.
    Route,
    /// PATCH one service's connect_timeout: only its cluster changes.
    Service,
}

#[derive(clap::Args, Clone)]
pub struct FleetArgs {
    #[command(flatten)]
    pub common: Common,
    /// Simulated proxies (one delta-ADS stream and connection each).
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Admin writes, one at a time, each awaited on every stream.
    #[arg(long, default_value_t = 50)]
    pub writes: usize,
    /// Routes of the configuration applied before the streams connect.
    #[arg(long, default_value_t = 100)]
    pub routes: usize,
    #[arg(long, default_value_t = 10)]
    pub services: usize,
    #[arg(long, value_enum, default_value = "route")]
    pub write: WriteKind,
    /// Hold the synced streams this long before reading the control
    /// plane's memory (background work such as the fleet mirror runs).
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
    /// Target for p99 write → all ACKed (printed beside the number).
    #[arg(long)]
    pub target_p99_ms: Option<f64>,
    /// Target for the control plane's RSS with every stream held.
    #[arg(long)]
    pub target_rss_mib: Option<f64>,
    /// Prefix of the node ids (`<prefix>-<i>`).
    #[arg(long, default_value = "bench")]
    pub node_prefix: String,
    /// Which proxy the streams play.
    #[arg(long, value_enum, default_value = "envoy")]
    pub node_kind: NodeKind,
}

#[derive(clap::Args, Clone)]
pub struct BytesArgs {
    #[command(flatten)]
    pub common: Common,
    /// Configuration sizes (routes), one row each; services are a tenth.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub sizes: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Writes of each kind per size.
    #[arg(long, default_value_t = 5)]
    pub writes: usize,
}

/// Raising the limit is the script's job (`ulimit -n`); fail early and say
/// so rather than with EMFILE in the middle of a run.
pub(crate) fn check_fds(streams: usize) -> anyhow::Result<()> {
    let limit = procstat::open_files_limit()?;
    let need = streams as u64 + 256;
    if limit < need {
        bail!(
            "{streams} streams need about {need} open files but the limit is {limit}: \
             run `ulimit -n {need}` (or higher) first"
        );
    }
    Ok(())
}

/// Applies the generated configuration and waits for the snapshot.
pub(crate) async fn seed(admin: &Admin, shape: &Shape) -> anyhow::Result<(i64, Duration)> {
    let t = Instant::now();
    admin.apply(&synth::document(shape)).await?;
    let rev = admin.settled_revision(Duration::from_secs(600)).await?;
    Ok((rev, t.elapsed()))
}

pub(crate) async fn write(
    admin: &Admin,
    kind: WriteKind,
    k: usize,
    shape: &Shape,
) -> anyhow::Result<Written> {
    match kind {
        WriteKind::Route => {
            let i = synth::plain_route(k, shape.routes);
            let body = json!({"paths": [format!("/r{i}-v{k}")]});
            admin
                .write(
                    reqwest::Method::PATCH,
                    &format!("/routes/{}", synth::route_name(i)),
                    Some(&body),
                )
                .await
        }
        WriteKind::Service => {
            let j = k % shape.services.max(1);
            // 60,000 is Kong's default: start above it so every write changes something.
            let body = json!({"connect_timeout": 61_000 + k});
            admin
                .write(
                    reqwest::Method::PATCH,
                    &format!("/services/{}", synth::service_name(j)),
                    Some(&body),
                )
                .await
        }
    }
}

async fn changes(
    admin: &Admin,
    fleet: &Fleet,
    c: &Common,
    kind: WriteKind,
    writes: std::ops::Range<usize>,
    shape: &Shape,
) -> anyhow::Result<Vec<Change>> {
    let mut out = Vec::with_capacity(writes.len());
    let mut last = admin.settled_revision(c.timeout()).await?;
    for k in writes {
        let w = write(admin, kind, k, shape).await?;
        if w.revision <= last {
            bail!("write {k} committed no new revision (it changed nothing)");
        }
        last = w.revision;
        let ch = fleet
            .change(w.revision, w.at, c.quiet(), c.timeout())
            .await
            .with_context(|| format!("write {k} (revision {})", w.revision))?;
        out.push(ch);
        tokio::time::sleep(Duration::from_millis(c.gap_ms)).await;
    }
    Ok(out)
}

fn cpu_delta(a: Option<ProcStat>, b: Option<ProcStat>) -> Option<Duration> {
    Some(b?.cpu.saturating_sub(a?.cpu))
}

pub async fn fleet(a: FleetArgs) -> anyhow::Result<()> {
    let c = &a.common;
    check_fds(a.streams)?;
    if a.routes == 0 || a.services == 0 {
        bail!("--routes and --services must be positive (writes patch generated entities)");
    }
    let admin = Admin::new(&c.admin)?;
    let shape = Shape {
        services: a.services,
        routes: a.routes,
        upstream_every: c.upstream_every,
    };
    let (rev, seeded) = seed(&admin, &shape).await?;
    let before = c.cp()?;

    let t = Instant::now();
    let fleet = Fleet::connect(
        &c.xds,
        a.streams,
        &a.node_prefix,
        c.connect_concurrency,
        a.node_kind,
    )?;
    let initial = fleet
        .settle(rev, c.quiet(), c.timeout().max(Duration::from_secs(600)))
        .await
        .context("initial sync")?;
    let synced_in = t.elapsed().saturating_sub(c.quiet());
    let synced = c.cp()?;
    if a.hold_secs > 0 {
        tokio::time::sleep(Duration::from_secs(a.hold_secs)).await;
    }
    let held = c.cp()?;

    let results = changes(&admin, &fleet, c, a.write, 0..a.writes, &shape).await?;
    let after = c.cp()?;
    let last = results.last().map(|r| r.revision).unwrap_or(rev);
    fleet
        .verify(&admin, last)
        .await
        .context("the control plane's /fleet view")?;
    let me = procstat::read(std::process::id(), c.clk_tck)?;

    let title = format!(
        "xDS fleet: {} delta-ADS streams, {} routes / {} services, {} {:?} writes",
        a.streams, a.routes, a.services, a.writes, a.write
    );
    let mut t = Table::new(title, &["measurement", "value", "target"]);
    t.row(vec![
        "config applied and translated (POST /config → snapshot)".into(),
        ms(seeded),
        "-".into(),
    ]);
    t.row(vec![
        "all streams connected and synced".into(),
        format!("{} ({} per stream)", ms(synced_in), bytes(initial)),
        "-".into(),
    ]);
    if !results.is_empty() {
        let all: Vec<Duration> = results.iter().map(|r| r.all).collect();
        let med: Vec<Duration> = results.iter().map(|r| r.median).collect();
        let p99 = percentile(&all, 99.0);
        t.row(vec![
            "write → LAST stream ACKed: p50 / p99 / max".into(),
            format!(
                "{} / {} / {}",
                ms(percentile(&all, 50.0)),
                ms(p99),
                ms(percentile(&all, 100.0))
            ),
            match a.target_p99_ms {
                Some(x) => format!(
                    "p99 ≤ {x} ms: {}",
                    verdict(p99.as_secs_f64() * 1000.0 <= x, c.smoke)
                ),
                None => "-".into(),
            },
        ]);
        t.row(vec![
            "write → median stream ACKed: p50 / p99".into(),
            format!(
                "{} / {}",
                ms(percentile(&med, 50.0)),
                ms(percentile(&med, 99.0))
            ),
            "-".into(),
        ]);
        let b: Vec<u64> = results.iter().map(|r| r.bytes_max).collect();
        let types: std::collections::BTreeSet<&str> = results
            .iter()
            .flat_map(|r| r.types.iter().copied())
            .collect();
        t.row(vec![
            "bytes per change per stream (min–max over writes)".into(),
            format!(
                "{}–{} ({} resource(s), types {})",
                bytes(b.iter().copied().min().unwrap_or(0)),
                bytes(b.iter().copied().max().unwrap_or(0)),
                results.iter().map(|r| r.resources).max().unwrap_or(0),
                types.into_iter().collect::<Vec<_>>().join("+")
            ),
            "-".into(),
        ]);
        let late: usize = results.iter().map(|r| r.late).sum();
        if late > 0 {
            t.row(vec![
                "responses that arrived after their change was closed".into(),
                format!("{late} (raise --quiet-ms)"),
                "-".into(),
            ]);
        }
    }
    if let (Some(before), Some(synced), Some(held), Some(after)) = (before, synced, held, after) {
        let ok = a
            .target_rss_mib
            .map(|x| (held.rss as f64) <= x * 1024.0 * 1024.0);
        t.row(vec![
            format!(
                "CP RSS: before streams / {} streams synced{} / after writes (peak)",
                a.streams,
                if a.hold_secs > 0 {
                    format!(" / held {} s", a.hold_secs)
                } else {
                    String::new()
                }
            ),
            format!(
                "{} / {}{} / {} ({})",
                mib(before.rss),
                mib(synced.rss),
                if a.hold_secs > 0 {
                    format!(" / {}", mib(held.rss))
                } else {
                    String::new()
                },
                mib(after.rss),
                mib(after.hwm)
            ),
            match (a.target_rss_mib, ok) {
                (Some(x), Some(ok)) => format!("held ≤ {x} MiB: {}", verdict(ok, c.smoke)),
                _ => "-".into(),
            },
        ]);
        let per_stream = synced.rss.saturating_sub(before.rss) / a.streams.max(1) as u64;
        t.row(vec![
            "CP RSS per stream (synced − before) / streams".into(),
            format!("{:.1} KiB", per_stream as f64 / 1024.0),
            "-".into(),
        ]);
        t.row(vec![
            "CP CPU time: connect + initial sync / per write".into(),
            format!(
                "{} / {}",
                ms(cpu_delta(Some(before), Some(synced)).unwrap_or_default()),
                ms(cpu_delta(Some(held), Some(after)).unwrap_or_default() / a.writes.max(1) as u32)
            ),
            "-".into(),
        ]);
    }
    t.row(vec![
        "bench tool (same machine): RSS / CPU time".into(),
        format!("{} / {}", mib(me.rss), ms(me.cpu)),
        "-".into(),
    ]);
    t.print();
    fleet.close().await;
    Ok(())
}

pub async fn bytes_per_change(a: BytesArgs) -> anyhow::Result<()> {
    let c = &a.common;
    check_fds(a.streams)?;
    let admin = Admin::new(&c.admin)?;
    let mut t = Table::new(
        format!(
            "Delta xDS bytes per change against config size ({} streams, {} writes of each kind per size and node kind)",
            a.streams, a.writes
        ),
        &[
            "routes / services",
            "nodes",
            "initial sync per stream",
            "one-route PATCH: types, resources, bytes per stream",
            "one-service PATCH: types, resources, bytes per stream",
        ],
    );
    // Per node kind: the largest bytes per stream of each write kind, per size.
    let kinds = [NodeKind::GantryProxy, NodeKind::Envoy];
    let mut route_bytes: Vec<Vec<u64>> = vec![Vec::new(); kinds.len()];
    let mut service_bytes: Vec<Vec<u64>> = vec![Vec::new(); kinds.len()];
    for &routes in &a.sizes {
        let shape = Shape {
            services: (routes / 10).max(1),
            routes: routes.max(1),
            upstream_every: c.upstream_every,
        };
        let (rev, _) = seed(&admin, &shape).await?;
        for (k, kind) in kinds.iter().enumerate() {
            let fleet = Fleet::connect(
                &c.xds,
                a.streams,
                &format!("bytes{routes}-{}", kind.user_agent()),
                c.connect_concurrency,
                *kind,
            )?;
            let initial = fleet
                .settle(rev, c.quiet(), c.timeout().max(Duration::from_secs(600)))
                .await
                .with_context(|| format!("initial sync at {routes} routes"))?;
            // Each node kind's writes are new ones: the same patch twice changes nothing.
            let writes = k * a.writes..(k + 1) * a.writes;
            let r = changes(&admin, &fleet, c, WriteKind::Route, writes.clone(), &shape).await?;
            let s = changes(&admin, &fleet, c, WriteKind::Service, writes, &shape).await?;
            let last = s.last().or(r.last()).map(|x| x.revision).unwrap_or(rev);
            fleet.verify(&admin, last).await?;
            fleet.close().await;
            let cell = |v: &[Change]| {
                let max = v.iter().map(|x| x.bytes_max).max().unwrap_or(0);
                let types: std::collections::BTreeSet<&str> =
                    v.iter().flat_map(|x| x.types.iter().copied()).collect();
                (
                    max,
                    format!(
                        "{}, {}, {}",
                        types.into_iter().collect::<Vec<_>>().join("+"),
                        v.iter().map(|x| x.resources).max().unwrap_or(0),
                        bytes(max)
                    ),
                )
            };
            let (rb, rcell) = cell(&r);
            let (sb, scell) = cell(&s);
            route_bytes[k].push(rb);
            service_bytes[k].push(sb);
            t.row(vec![
                format!("{} / {}", shape.routes, shape.services),
                kind.user_agent().into(),
                bytes(initial),
                rcell,
                scell,
            ]);
        }
    }
    // "Independent of config size": the largest size's bytes within 2x of
    // the smallest's (the bound), for gantry-proxy nodes; Envoy's
    // route configurations are one resource, so its row is reported only.
    let flat = |v: &[u64]| {
        let (lo, hi) = (
            v.iter().copied().min().unwrap_or(0),
            v.iter().copied().max().unwrap_or(0),
        );
        (hi as f64) <= (lo as f64) * 2.0
    };
    t.row(vec![
        "target: bytes per change within 2x across sizes".into(),
        "gantry-proxy".into(),
        "-".into(),
        verdict(flat(&route_bytes[0]), c.smoke),
        verdict(flat(&service_bytes[0]), c.smoke),
    ]);
    t.print();
    Ok(())
}

#[derive(clap::Args, Clone)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// The gantry-cp binary this benchmark starts, kills and starts again
    /// (its `--admin` and `--xds` flags are ignored: it picks the ports).
    #[arg(long)]
    pub cp_bin: std::path::PathBuf,
    /// Its database (`--database-url`); kept across the restart.
    #[arg(long)]
    pub database_url: String,
    /// Working directory (its default keyring is created there).
    #[arg(long)]
    pub work_dir: std::path::PathBuf,
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    #[arg(long, default_value_t = 1000)]
    pub routes: usize,
    #[arg(long, default_value_t = 100)]
    pub services: usize,
    /// Which proxy the streams play.
    #[arg(long, value_enum, default_value = "gantry-proxy")]
    pub node_kind: NodeKind,
    /// Target for the restarted control plane's peak RSS.
    #[arg(long)]
    pub target_rss_mib: Option<f64>,
}

/// A gantry-cp process of the storm benchmark's own.
struct CpProcess {
    child: std::process::Child,
}

impl CpProcess {
    fn start(a: &StormArgs, admin: u16, xds: u16) -> anyhow::Result<CpProcess> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(a.work_dir.join("gantry-cp.log"))?;
        let child = std::process::Command::new(&a.cp_bin)
            .args(["--database-url", &a.database_url])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--xds-listen", &format!("127.0.0.1:{xds}")])
            .current_dir(&a.work_dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", a.cp_bin.display()))?;
        Ok(CpProcess { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CpProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn until_up(admin: &Admin, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while admin.get("/status").await.is_err() {
        if Instant::now() > deadline {
            bail!("gantry-cp did not answer within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `xds-storm`: N streams that hold a configuration lose their control
/// plane (SIGKILL) and reconnect at once, with jittered backoff, to it
/// restarted on the same address and database: how long until every node
/// is back and synced, what the restarted control plane's memory peaks
/// at, what the resync costs per stream, and that writes flow after it.
pub async fn storm(a: StormArgs) -> anyhow::Result<()> {
    let c = &a.common;
    check_fds(a.streams * 2)?;
    let (admin_port, xds_port) = (free_port()?, free_port()?);
    let admin_url = format!("http://127.0.0.1:{admin_port}");
    let xds_url = format!("http://127.0.0.1:{xds_port}");
    let admin = Admin::new(&admin_url)?;
    let mut cp = CpProcess::start(&a, admin_port, xds_port)?;
    until_up(&admin, Duration::from_secs(60)).await?;
    let shape = Shape {
        services: a.services,
        routes: a.routes,
        upstream_every: c.upstream_every,
    };
    let (rev, _) = seed(&admin, &shape).await?;
    let fleet = Fleet::connect_reconnecting(
        &xds_url,
        a.streams,
        "storm",
        c.connect_concurrency,
        a.node_kind,
    )?;
    let initial = fleet
        .settle(rev, c.quiet(), c.timeout().max(Duration::from_secs(600)))
        .await
        .context("initial sync")?;
    fleet.verify(&admin, rev).await?;
    let held = procstat::read(cp.pid(), c.clk_tck)?;

    cp.kill();
    let killed = Instant::now();
    // Every stream notices before the replica is back (a restart takes
    // longer than a reset reaches the clients).
    while fleet.disconnects() < a.streams as u64 {
        if killed.elapsed() > Duration::from_secs(30) {
            bail!(
                "{} of {} streams noticed the kill",
                fleet.disconnects(),
                a.streams
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fleet.take_bytes();
    let noticed = killed.elapsed();
    let cp = CpProcess::start(&a, admin_port, xds_port)?;
    let restarted = Instant::now();
    until_up(&admin, Duration::from_secs(60)).await?;
    let up = restarted.elapsed();
    while fleet.opened_at_least(2) < a.streams {
        if restarted.elapsed() > c.timeout() {
            bail!(
                "{} of {} streams reconnected within {:?}",
                fleet.opened_at_least(2),
                a.streams,
                c.timeout()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reconnected = restarted.elapsed();
    fleet.verify(&admin, rev).await?;
    let synced = restarted.elapsed();
    // Responses after the restart: what resuming with
    // `initial_resource_versions` costs per stream.
    tokio::time::sleep(c.quiet()).await;
    let resync = fleet.take_bytes();
    let after = procstat::read(cp.pid(), c.clk_tck)?;
    let writes = changes(&admin, &fleet, c, WriteKind::Route, 0..3, &shape).await?;
    fleet.close().await;

    let mut t = Table::new(
        format!(
            "Reconnect storm: {} {} streams, {} routes / {} services, gantry-cp SIGKILLed and restarted",
            a.streams,
            a.node_kind.user_agent(),
            a.routes,
            a.services
        ),
        &["measurement", "result", "target"],
    );
    t.row(vec![
        "initial sync per stream".into(),
        bytes(initial),
        "-".into(),
    ]);
    t.row(vec![
        "gantry-cp RSS holding the streams, before the kill".into(),
        mib(held.rss),
        "-".into(),
    ]);
    t.row(vec![
        "every stream saw the kill".into(),
        ms(noticed),
        "-".into(),
    ]);
    t.row(vec![
        "restarted gantry-cp answering its admin API".into(),
        ms(up),
        "-".into(),
    ]);
    t.row(vec![
        "every stream reconnected (jittered backoff)".into(),
        ms(reconnected),
        "-".into(),
    ]);
    t.row(vec![
        "every node SYNCED in /fleet".into(),
        ms(synced),
        "-".into(),
    ]);
    t.row(vec![
        "resync bytes per stream (most)".into(),
        bytes(resync),
        "-".into(),
    ]);
    let ok = a
        .target_rss_mib
        .map(|m| (after.hwm as f64) <= m * 1024.0 * 1024.0);
    t.row(vec![
        "restarted gantry-cp: peak RSS (RSS after)".into(),
        format!("{} ({})", mib(after.hwm), mib(after.rss)),
        match (a.target_rss_mib, ok) {
            (Some(m), Some(ok)) => format!("≤ {m:.0} MiB: {}", verdict(ok, c.smoke)),
            _ => "-".into(),
        },
    ]);
    let worst = writes.iter().map(|w| w.all).max().unwrap_or_default();
    t.row(vec![
        "a route write after the storm: every stream ACKed (slowest of 3)".into(),
        ms(worst),
        "-".into(),
    ]);
    t.print();
    Ok(())
}
