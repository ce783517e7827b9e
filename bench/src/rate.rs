//! Latency at a fixed request rate (open loop): requests are sent on a
//! fixed schedule whatever the answers do, and each latency is measured
//! from the moment its request was due, so a stall shows up in the tail
//! instead of silently lowering the rate (no coordinated omission).

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
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), a.url.clone());
        tasks.push(tokio::spawn(async move {
            let ok = match client.get(url).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (due.elapsed(), ok)
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut errors = 0u64;
    for t in tasks {
        let (d, ok) = t.await.context("request task")?;
        if ok {
            lat.push(d);
        } else {
            errors += 1;
        }
    }
    if lat.is_empty() {
        bail!("every request to {} failed", a.url);
    }
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    let achieved = lat.len() as f64 / a.seconds as f64;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "url": a.url, "rate": a.rate, "achieved": achieved, "sent": total,
                "errors": errors, "p50_us": q(0.50), "p90_us": q(0.90), "p99_us": q(0.99),
                "p999_us": q(0.999), "max_us": q(1.0),
            })
        );
    } else {
        println!("| url | rate | p50 | p99 | p99.9 | max | errors |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {} | {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {errors} |",
            a.url,
            a.rate,
            q(0.50),
            q(0.99),
            q(0.999),
            q(1.0)
        );
    }
    Ok(())
}
