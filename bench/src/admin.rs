//! The admin API as the benchmarks use it: every write returns the
//! revision it committed (the `X-Gantry-Revision` header), which is what
//! the xDS side later reports as `system_version_info`.

use anyhow::{Context, bail};
use serde_json::Value;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Admin {
    base: String,
    http: reqwest::Client,
}

/// A committed write: its revision and when its response arrived.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    pub revision: i64,
    pub at: Instant,
}

impl Admin {
    pub fn new(base: &str) -> anyhow::Result<Admin> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Admin {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// A JSON write (POST, PATCH, PUT, DELETE); any non-2xx is an error
    /// carrying the body, since a failed write makes the run meaningless.
    pub async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Written> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let at = Instant::now();
        let status = resp.status();
        let revision = resp
            .headers()
            .get("x-gantry-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok());
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("{method} {url}: {status}: {text}");
        }
        let revision =
            revision.with_context(|| format!("{method} {url}: no X-Gantry-Revision header"))?;
        Ok(Written { revision, at })
    }

    /// Replaces the whole configuration (`POST /config`).
    pub async fn apply(&self, doc: &Value) -> anyhow::Result<Written> {
        self.write(reqwest::Method::POST, "/config", Some(doc))
            .await
            .context("applying the declarative configuration")
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        resp.json()
            .await
            .with_context(|| format!("GET {url}: body"))
    }

    /// Waits until the admin API answers and the snapshot cache has
    /// caught up with the newest revision; returns that revision.
    pub async fn settled_revision(&self, within: Duration) -> anyhow::Result<i64> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(st) = self.get("/status").await {
                let rev = st["configuration_revision"].as_i64();
                let snap = st["xds"]["snapshot_revision"].as_i64();
                if let (Some(rev), Some(snap)) = (rev, snap)
                    && snap >= rev
                {
                    if let Some(e) = st["xds"]["translation_error"].as_object() {
                        bail!("the control plane cannot translate revision {rev}: {e:?}");
                    }
                    return Ok(rev);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the control plane at {} did not settle within {within:?}",
                    self.base
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
