//! Latency at a fixed request rate (open loop): requests are sent on a
//! fixed schedule whatever the answers do, and each latency is measured
//! from the moment its request was due, so a stall shows up in the tail
//! instead of silently lowering the rate (no coordinated omission). Each
//! is also measured from its actual send, which leaves out the tool's own
//! lateness against the schedule (reported too).

use anyhow::{Context, bail};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct RateArgs {
    /// The URL to GET.
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// How long to send.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(a: RateArgs) -> anyhow::Result<()> {
    if a.rate == 0 {
        bail!("--rate must be positive");
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()
        .context("http client")?;
    // Warm the connection pool so connects are not measured.
    for _ in 0..8 {
        client.get(&a.url).send().await?.bytes().await?;
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(a.rate));
    let total = a.rate as u64 * a.seconds;
    let start = Instant::now() + Duration::from_millis(50);
    // tokio's timer ticks in whole milliseconds, which would add up to a
    // millisecond of the tool's own lateness to every request. The
    // schedule runs on a thread of its own with a 1 µs timer slack, and
    // hands each due instant to the runtime.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let schedule = std::thread::spawn(move || {
        // SAFETY: prctl with PR_SET_TIMERSLACK (in nanoseconds) only
        // changes this thread's timer slack; a failure leaves the default
        // (50 µs).
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
        }
        for i in 0..total {
            let due = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                break;
            }
        }
    });
    let mut tasks = Vec::with_capacity(total as usize);
    while let Some(due) = rx.recv().await {
        let (client, url) = (client.clone(), a.url.clone());
        tasks.push(tokio::spawn(async move {
            // How late the tool itself was: reported, so the precision of
            // the schedule is on record next to the latencies.
            let sent = Instant::now();
            let late = sent.saturating_duration_since(due);
            let ok = match client.get(url).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (due.elapsed(), sent.elapsed(), late, ok)
        }));
    }
    if schedule.join().is_err() {
        bail!("the schedule thread panicked");
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut from_send = Vec::with_capacity(tasks.len());
    let mut lateness = Vec::with_capacity(tasks.len());
    let mut errors = 0u64;
    for t in tasks {
        let (d, s, late, ok) = t.await.context("request task")?;
        lateness.push(late);
        if ok {
            lat.push(d);
            from_send.push(s);
        } else {
            errors += 1;
        }
    }
    if lat.is_empty() {
        bail!("every request to {} failed", a.url);
    }
    lat.sort_unstable();
    from_send.sort_unstable();
    lateness.sort_unstable();
    let quantile = |v: &[Duration], p: f64| {
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e6
    };
    let q = |p: f64| quantile(&lat, p);
    let achieved = lat.len() as f64 / a.seconds as f64;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "url": a.url, "rate": a.rate, "achieved": achieved, "sent": total,
                "errors": errors, "p50_us": q(0.50), "p90_us": q(0.90), "p99_us": q(0.99),
                "p999_us": q(0.999), "max_us": q(1.0),
                "late_p50_us": quantile(&lateness, 0.50), "late_p99_us": quantile(&lateness, 0.99),
                "sent_p50_us": quantile(&from_send, 0.50), "sent_p99_us": quantile(&from_send, 0.99),
            })
        );
    } else {
        println!(
            "| url | rate | p50 | p99 | p99.9 | max | errors | from send p50 / p99 | tool late p50 / p99 |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {} | {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {errors} | {:.0} / {:.0} µs | {:.0} / {:.0} µs |",
            a.url,
            a.rate,
            q(0.50),
            q(0.99),
            q(0.999),
            q(1.0),
            quantile(&from_send, 0.50),
            quantile(&from_send, 0.99),
            quantile(&lateness, 0.50),
            quantile(&lateness, 0.99),
        );
    }
    Ok(())
}
