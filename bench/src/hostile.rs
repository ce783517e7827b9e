//! `admin-hostile`: what hostile requests cost a running gantry-cp. Each
//! request is sent alone and timed; the control plane's peak RSS is read
//! after each; then `/status` is timed while two hostile documents are
//! parsed at once. The tests check the answers (`control-plane/tests/
//! admin_hostile.rs`); this measures time and memory.

use crate::procstat;
use crate::report::{Table, mib, ms, verdict};
use anyhow::Context;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct HostileArgs {
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    pub admin: String,
    /// gantry-cp's pid, for its memory.
    #[arg(long)]
    pub cp_pid: u32,
    #[arg(long, default_value_t = 100)]
    pub clk_tck: u64,
    /// Target: every hostile request answered within this many ms.
    #[arg(long, default_value_t = 1000)]
    pub target_ms: u64,
    /// Target: the peak RSS grows by at most this many MiB over the run.
    #[arg(long, default_value_t = 100)]
    pub target_growth_mib: u64,
    #[arg(long)]
    pub smoke: bool,
}

struct Case {
    name: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let form = "application/x-www-form-urlencoded";
    let tags: Vec<String> = (0..100_000).map(|n| format!("\"t{n}\"")).collect();
    vec![
        Case {
            name: "form key 5,000 levels deep (10 KB)",
            path: "/services",
            content_type: form,
            body: format!("name=s&host=h&x{}=1", ".a".repeat(5000)).into_bytes(),
        },
        Case {
            name: "3,000 sparse form indexes `kN[10001]=x` (42 KB)",
            path: "/services",
            content_type: form,
            body: (0..3000)
                .map(|n| format!("k{n}[10001]=x"))
                .collect::<Vec<_>>()
                .join("&")
                .into_bytes(),
        },
        Case {
            name: "/config: 100 KB of nested `[`",
            path: "/config",
            content_type: "application/json",
            body: "[".repeat(100_000).into_bytes(),
        },
        Case {
            name: "/config: 25,000 nested `{a: ` (YAML)",
            path: "/config",
            content_type: "application/yaml",
            body: "{a: ".repeat(25_000).into_bytes(),
        },
        Case {
            name: "a service with 100,000 tags",
            path: "/services",
            content_type: "application/json",
            body: format!(r#"{{"name":"s","host":"h","tags":[{}]}}"#, tags.join(",")).into_bytes(),
        },
        Case {
            name: "a 9.9 MiB service name",
            path: "/services",
            content_type: "application/json",
            body: format!(r#"{{"name":"{}","host":"h"}}"#, "n".repeat(9_900_000)).into_bytes(),
        },
        Case {
            name: "a 400,000-character route path",
            path: "/routes",
            content_type: "application/json",
            body: format!(r#"{{"paths":["/{}"]}}"#, "a".repeat(400_000)).into_bytes(),
        },
    ]
}

pub async fn run(a: HostileArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTP client")?;
    let base = a.admin.trim_end_matches('/').to_string();
    let start = procstat::read(a.cp_pid, a.clk_tck)?;
    let mut t = Table::new(
        format!(
            "Hostile admin requests: each alone, answered within {} ms, peak RSS grows at most {} MiB",
            a.target_ms, a.target_growth_mib
        ),
        &["request", "status", "time", "peak RSS after", "target"],
    );
    let target = Duration::from_millis(a.target_ms);
    for c in cases() {
        let t0 = Instant::now();
        let resp = http
            .post(format!("{base}{}", c.path))
            .header("content-type", c.content_type)
            .body(c.body)
            .send()
            .await
            .with_context(|| format!("{}: gantry-cp did not answer", c.name))?;
        let took = t0.elapsed();
        let status = resp.status().as_u16();
        let _ = resp.bytes().await;
        let p = procstat::read(a.cp_pid, a.clk_tck)
            .with_context(|| format!("gantry-cp is gone after: {}", c.name))?;
        t.row(vec![
            c.name.into(),
            status.to_string(),
            ms(took),
            mib(p.hwm),
            verdict(took <= target && (400..500).contains(&status), a.smoke),
        ]);
    }
    // Two hostile documents at once; the admin API keeps answering.
    let heavy = |n: usize| {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            let body = if n == 0 {
                "{a: ".repeat(25_000)
            } else {
                "[".repeat(100_000)
            };
            http.post(format!("{base}/config"))
                .header("content-type", "application/yaml")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let (h1, h2) = (heavy(0), heavy(1));
    let t0 = Instant::now();
    let s = http.get(format!("{base}/status")).send().await?.status();
    let status_took = t0.elapsed();
    let (s1, s2) = (h1.await??, h2.await??);
    t.row(vec![
        format!("GET /status during two hostile documents (answered {s1}, {s2})"),
        s.as_u16().to_string(),
        ms(status_took),
        "-".into(),
        verdict(status_took <= target && s.is_success(), a.smoke),
    ]);
    let end = procstat::read(a.cp_pid, a.clk_tck)?;
    let growth = end.hwm.saturating_sub(start.hwm);
    t.row(vec![
        "peak RSS growth over the run".into(),
        "-".into(),
        "-".into(),
        format!("{} → {}", mib(start.hwm), mib(end.hwm)),
        verdict(growth <= a.target_growth_mib * 1024 * 1024, a.smoke),
    ]);
    t.print();
    Ok(())
}
