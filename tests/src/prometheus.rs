//! A real Prometheus server of the test's own (Debian's `prometheus`,
//! installed by `scripts/prometheus.sh`): it scrapes the targets it is
//! given every 200 ms, and the test asks it PromQL over its HTTP API.

use crate::{Port, TempDir, repo_root, reserve_port};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static BIN: OnceLock<PathBuf> = OnceLock::new();

/// The Prometheus binary `scripts/prometheus.sh` installs (once per test
/// binary), or `GANTRY_PROMETHEUS_BIN`.
pub fn binary() -> PathBuf {
    BIN.get_or_init(|| {
        let script = repo_root().join("scripts").join("prometheus.sh");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed", script.display());
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
        PathBuf::from(printed)
    })
    .clone()
}

/// A target to scrape: a job name, `host:port`, the metrics path, and a
/// bearer token if the endpoint needs one.
pub struct Target<'a> {
    pub job: &'a str,
    pub address: String,
    pub path: &'a str,
    pub token: Option<&'a str>,
}

pub struct Prometheus {
    child: Child,
    pub url: String,
    client: reqwest::Client,
    _port: Port,
    dir: TempDir,
}

impl Prometheus {
    /// Starts a server scraping `targets` and waits until it answers.
    pub async fn scraping(targets: &[Target<'_>]) -> Prometheus {
        let dir = TempDir::new("gantry-e2e-prometheus");
        let port = reserve_port();
        let mut config = String::from(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\nscrape_configs:\n",
        );
        for t in targets {
            config.push_str(&format!(
                "  - job_name: {}\n    metrics_path: {}\n    static_configs:\n      - targets: ['{}']\n",
                t.job, t.path, t.address
            ));
            if let Some(token) = t.token {
                config.push_str(&format!(
                    "    authorization:\n      type: Bearer\n      credentials: {token}\n"
                ));
            }
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", port.port))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting prometheus: {e}"));
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{}", port.port),
            client: reqwest::Client::new(),
            _port: port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = p
                .client
                .get(format!("{}/-/ready", p.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never became ready:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Scraping one gantry-proxy's admin `/metrics` (job `gantry-proxy`).
    pub async fn scraping_proxy(proxy: &crate::Proxy) -> Prometheus {
        Prometheus::scraping(&[Target {
            job: "gantry-proxy",
            address: format!("127.0.0.1:{}", proxy.admin_port),
            path: "/metrics",
            token: None,
        }])
        .await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant PromQL query: each series' labels and value.
    pub async fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let r: Value = self
            .client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .expect("prometheus query")
            .json()
            .await
            .expect("prometheus answers JSON");
        assert_eq!(r["status"], "success", "{promql}: {r}");
        r["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let v = s["value"][1].as_str().and_then(|v| v.parse().ok());
                (s["metric"].clone(), v.unwrap_or(f64::NAN))
            })
            .collect()
    }

    /// Waits (up to 20 s) until `promql` returns one series whose value
    /// satisfies `ok`; returns it.
    pub async fn until(&self, promql: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.query(promql).await;
            if let [(_, v)] = got.as_slice()
                && ok(*v)
            {
                return *v;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} never gave the expected value; last: {got:?}\nprometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every PromQL expression of a Grafana dashboard under `deploy/grafana/`,
/// with its template variables set to match everything.
pub fn dashboard_queries(file: &str) -> Vec<String> {
    let path = repo_root().join("deploy/grafana").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let d: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(
                    e.replace("$__rate_interval", "1m")
                        .replace("$service", ".*")
                        .replace("$route", ".*")
                        .replace("$instance", ".*"),
                );
            }
        }
    }
    assert!(!out.is_empty(), "{} has no queries", path.display());
    out
}

impl Prometheus {
    /// Every query of dashboard `file` runs, and every metric it reads is
    /// stored, except those in `absent` (series made only by events).
    pub async fn serves_dashboard(&self, file: &str, absent: &[&str]) {
        let queries = dashboard_queries(file);
        let mut names: Vec<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
        names.sort();
        names.dedup();
        for name in names.iter().filter(|n| !absent.contains(&n.as_str())) {
            self.until(&format!("count({{__name__=\"{name}\"}})"), |v| v >= 1.0)
                .await;
        }
        for q in &queries {
            // `query` asserts Prometheus accepted and ran it.
            self.query(q).await;
        }
    }
}

/// The metric names a PromQL expression reads (`kong_*`, `gantry_*`).
pub fn metric_names(promql: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = promql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (promql[i..].starts_with("kong_") || promql[i..].starts_with("gantry_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = promql[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(promql.len(), |n| i + n);
            names.push(promql[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}
