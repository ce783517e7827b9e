//! gantry-proxy, end to end: the real `gantry-proxy` binary following a
//! real `gantry-cp` (or, for the NACK test, a scripted delta-ADS server in
//! this file), carrying traffic to real upstreams.
//!
//! 1. `same_answers_as_envoy`: one gantry-cp feeding one Envoy 1.40 and
//!    one gantry-proxy; the same request through each must get the same
//!    answer (status, upstream, path+query, headers the upstream saw).
//!    Envoy is the referee: where they differ, gantry-proxy is wrong.
//! 2. `config_churn_under_load`: a config change every 50 ms for 30 s
//!    (`GANTRY_E2E_CHURN_SECS`) while traffic flows: no request fails, and
//!    the proxy's memory stays flat.
//! 3. `nack_keeps_the_last_good_config`: a RouteConfiguration the proxy
//!    cannot compile is NACKed with a reason naming it, traffic carries on
//!    on the old config, and the next good one is ACKed and applied.
//! 4. `protocols`: h2c, WebSocket, TLS by SNI, gRPC unary and streaming.
//! 5. `survives_a_control_plane_restart`: SIGKILL and restart gantry-cp
//!    under traffic.
//! 6. `sigterm_drains_in_flight_requests`.
//!
//! Run: `cargo build --workspace --bins && cargo nextest run -p gantry-e2e --test proxy --no-capture`.
//! `GANTRY_E2E_PROXY_LOG` sets gantry-proxy's RUST_LOG; `GANTRY_E2E_KEEP=1`
//! keeps the temp dirs.

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use gantry_e2e::load::Load;
use gantry_e2e::{Cp, Envoy, Proxy, ProxyOptions, Upstream, ads, eventually};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a change may take to reach a proxy.
const CONVERGE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(10);

/// A client that neither follows redirects nor uses a proxy from the
/// environment.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .expect("http client")
}

/// Polls a GET through `base` until `ok(status, body)` holds.
async fn until(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    host: Option<&str>,
    ok: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    eventually(&format!("GET {base}{path}"), CONVERGE, POLL, || {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let ok = &ok;
        async move {
            match gantry_e2e::send_json(req).await {
                Ok((s, b)) if ok(s, &b) => Ok((s, b)),
                Ok((s, b)) => Err(format!("{s} {b}")),
                Err(e) => Err(format!("{e}")),
            }
        }
    })
    .await
}

/// `/stats/prometheus` lines of gantry-proxy that start with `prefix`.
async fn proxy_stats(proxy: &Proxy, prefix: &str) -> Vec<String> {
    let (_, text) = proxy.admin_get("/stats/prometheus").await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

// ===========================================================================
// 1. The same request through Envoy and through gantry-proxy
// ===========================================================================

#[derive(Clone, Copy, Debug, PartialEq)]
enum BodyCmp {
    /// Local replies must be byte-for-byte the same.
    Exact,
    /// Both bodies start with this (Envoy's detail after it is its own).
    Prefix(&'static str),
}

#[derive(Clone, Debug)]
struct Case {
    name: String,
    method: reqwest::Method,
    path: String,
    host: String,
    headers: Vec<(String, String)>,
    body: Option<&'static str>,
    /// Sent byte for byte instead (method, path, host and headers unused).
    raw: Option<String>,
    cmp: BodyCmp,
    /// What the case is about (checked against Envoy, so that a case that
    /// stops testing what it says fails loudly).
    want_status: u16,
    want_upstream: Option<&'static str>,
}

fn case(name: &str, method: &str, path: &str) -> Case {
    Case {
        name: name.to_string(),
        method: method.parse().expect("method"),
        path: path.to_string(),
        // Always an explicit Host: the two listeners are on different
        // ports, and a defaulted Host would carry them.
        host: "gw.test".into(),
        headers: Vec::new(),
        body: None,
        raw: None,
        cmp: BodyCmp::Exact,
        want_status: 200,
        want_upstream: None,
    }
}

impl Case {
    fn host(mut self, h: &str) -> Self {
        self.host = h.to_string();
        self
    }
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    fn body(mut self, b: &'static str) -> Self {
        self.body = Some(b);
        self
    }
    fn raw(mut self, r: &str) -> Self {
        self.raw = Some(r.to_string());
        self
    }
    fn prefix(mut self, p: &'static str) -> Self {
        self.cmp = BodyCmp::Prefix(p);
        self
    }
    fn to(mut self, upstream: &'static str) -> Self {
        self.want_status = 200;
        self.want_upstream = Some(upstream);
        self
    }
    fn status(mut self, s: u16) -> Self {
        self.want_status = s;
        self.want_upstream = None;
        self
    }
}

/// What one request got: from the upstream (what it saw) or a local reply.
#[derive(Clone, Debug, Default)]
struct Seen {
    status: u16,
    upstream: Option<String>,
    method: Option<String>,
    path: Option<String>,
    /// Normalised request headers the upstream saw.
    headers: BTreeMap<String, String>,
    /// The raw ones (for the informational notes).
    raw_headers: BTreeMap<String, String>,
    location: Option<String>,
    content_type: Option<String>,
    /// The response's `server` header.
    server: Option<String>,
    body: String,
    error: Option<String>,
}

/// Drops what legitimately differs between two proxies: request-id and
/// client-address values (presence kept), Envoy's own `x-envoy-*` headers
/// except the timeout it announces, and framing headers.
fn normalise(h: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in h {
        let v = v.as_str().unwrap_or_default().to_string();
        let k = k.to_ascii_lowercase();
        match k.as_str() {
            "x-request-id" | "x-forwarded-for" => {
                out.insert(k, "<present>".into());
            }
            "content-length" | "transfer-encoding" => {}
            "x-envoy-expected-rq-timeout-ms" => {
                out.insert(k, v);
            }
            _ if k.starts_with("x-envoy-") => {}
            _ => {
                out.insert(k, v);
            }
        }
    }
    out
}

async fn send_case(client: &reqwest::Client, base: &str, c: &Case) -> Seen {
    if let Some(raw) = &c.raw {
        return send_raw(base, raw).await;
    }
    let mut req = client
        .request(c.method.clone(), format!("{base}{}", c.path))
        .header("host", &c.host);
    for (k, v) in &c.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(b) = c.body {
        req = req.body(b);
    }
    let r = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Seen {
                error: Some(format!("{e:?}")),
                ..Default::default()
            };
        }
    };
    let status = r.status().as_u16();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (location, content_type, server) =
        (header("location"), header("content-type"), header("server"));
    let bytes = r.bytes().await.unwrap_or_default();
    seen(status, location, content_type, server, &bytes)
}

/// Writes a request byte for byte (it should say `Connection: close`)
/// and reads the response to the end of the connection.
async fn send_raw(base: &str, raw: &str) -> Seen {
    let port: u16 = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in base url");
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(raw.as_bytes()).await?;
        // Read until the response is complete (Envoy delays closing the
        // connection after an error reply by a second).
        let mut out = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
            if response_complete(&out) {
                break;
            }
        }
        Ok::<_, std::io::Error>(out)
    };
    let bytes = match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Seen {
                error: Some(format!("io: {e}")),
                ..Default::default()
            };
        }
        Err(_) => {
            return Seen {
                error: Some("no response in 10 s".into()),
                ..Default::default()
            };
        }
    };
    let mut rest: &[u8] = &bytes;
    loop {
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Seen {
                error: Some(format!(
                    "no response head: {:?}",
                    String::from_utf8_lossy(rest)
                )),
                ..Default::default()
            };
        };
        let head = String::from_utf8_lossy(&rest[..end]).to_string();
        let body = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            rest = body;
            continue;
        }
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body = if headers
            .get("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            dechunk(body)
        } else {
            body.to_vec()
        };
        return seen(
            status,
            headers.get("location").cloned(),
            headers.get("content-type").cloned(),
            headers.get("server").cloned(),
            &body,
        );
    }
}

/// Whether `b` holds a whole final response (after any 1xx heads).
fn response_complete(mut b: &[u8]) -> bool {
    loop {
        let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
        let body = &b[end + 4..];
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            b = body;
            continue;
        }
        let header = |name: &str| {
            head.split("\r\n")
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
        };
        if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            return body.len() >= n;
        }
        if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            return body.ends_with(b"0\r\n\r\n");
        }
        // Neither: the body runs to the end of the connection.
        return false;
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

fn seen(
    status: u16,
    location: Option<String>,
    content_type: Option<String>,
    server: Option<String>,
    bytes: &[u8],
) -> Seen {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if v.get("upstream").is_some() && v.get("headers").is_some() => {
            let raw = v["headers"].as_object().cloned().unwrap_or_default();
            Seen {
                status,
                upstream: v["upstream"].as_str().map(str::to_string),
                method: v["method"].as_str().map(str::to_string),
                path: v["path"].as_str().map(str::to_string),
                headers: normalise(&raw),
                raw_headers: raw
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
                location,
                content_type: None,
                server,
                body: String::new(),
                error: None,
            }
        }
        _ => Seen {
            status,
            location,
            content_type,
            server,
            body: String::from_utf8_lossy(bytes).to_string(),
            ..Default::default()
        },
    }
}

/// The fields where gantry-proxy's answer differs from Envoy's.
fn differences(c: &Case, envoy: &Seen, gantry: &Seen) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut diff = |field: &str, e: String, g: String| {
        if e != g {
            out.push((field.to_string(), e, g));
        }
    };
    diff(
        "error",
        format!("{:?}", envoy.error),
        format!("{:?}", gantry.error),
    );
    diff(
        "status",
        envoy.status.to_string(),
        gantry.status.to_string(),
    );
    diff(
        "upstream",
        format!("{:?}", envoy.upstream),
        format!("{:?}", gantry.upstream),
    );
    diff(
        "method",
        format!("{:?}", envoy.method),
        format!("{:?}", gantry.method),
    );
    diff(
        "path",
        format!("{:?}", envoy.path),
        format!("{:?}", gantry.path),
    );
    let keys: std::collections::BTreeSet<&String> =
        envoy.headers.keys().chain(gantry.headers.keys()).collect();
    for k in keys {
        diff(
            &format!("header {k}"),
            format!("{:?}", envoy.headers.get(k)),
            format!("{:?}", gantry.headers.get(k)),
        );
    }
    diff(
        "location",
        format!("{:?}", envoy.location),
        format!("{:?}", gantry.location),
    );
    if envoy.upstream.is_none() {
        diff(
            "content-type",
            format!("{:?}", envoy.content_type),
            format!("{:?}", gantry.content_type),
        );
    }
    match c.cmp {
        BodyCmp::Exact => diff("body", envoy.body.clone(), gantry.body.clone()),
        BodyCmp::Prefix(p) => {
            let cut = |s: &str| {
                if s.starts_with(p) {
                    format!("{p}…")
                } else {
                    s.to_string()
                }
            };
            diff("body", cut(&envoy.body), cut(&gantry.body))
        }
    }
    out
}

/// Differences in what the normalisation hides, reported but not failed on.
fn notes(c: &Case, envoy: &Seen, gantry: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    if envoy.server != gantry.server {
        out.push(format!(
            "response server header: envoy {:?} / gantry-proxy {:?}",
            envoy.server, gantry.server
        ));
    }
    if envoy.upstream.is_none() || gantry.upstream.is_none() {
        if let BodyCmp::Prefix(_) = c.cmp
            && envoy.body != gantry.body
        {
            out.push(format!(
                "body: envoy {:?} / gantry-proxy {:?}",
                envoy.body, gantry.body
            ));
        }
        return out;
    }
    for k in ["x-forwarded-for", "x-request-id"] {
        let (e, g) = (envoy.raw_headers.get(k), gantry.raw_headers.get(k));
        let sent = c
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str());
        let describe = |v: Option<&String>| match (v, sent) {
            (None, _) => "absent".to_string(),
            (Some(v), Some(s)) if v == s => format!("{v:?} (the client's)"),
            // Request ids are random: only whether one was made matters.
            (Some(_), _) if k == "x-request-id" => "generated".to_string(),
            (Some(v), _) => format!("{v:?}"),
        };
        let (de, dg) = (describe(e), describe(g));
        if de != dg {
            out.push(format!("{k}: envoy {de} / gantry-proxy {dg}"));
        }
    }
    let envoy_only: Vec<&String> = envoy
        .raw_headers
        .keys()
        .filter(|k| k.starts_with("x-envoy-") && !gantry.raw_headers.contains_key(*k))
        .collect();
    let gantry_only: Vec<&String> = gantry
        .raw_headers
        .keys()
        .filter(|k| k.starts_with("x-envoy-") && !envoy.raw_headers.contains_key(*k))
        .collect();
    if !envoy_only.is_empty() || !gantry_only.is_empty() {
        out.push(format!(
            "x-envoy-* headers only Envoy sent {envoy_only:?}, only gantry-proxy sent {gantry_only:?}"
        ));
    }
    out
}

fn print_table(title: &str, rows: &[(String, String, String, String)]) {
    if rows.is_empty() {
        return;
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).min(48);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(5).min(36);
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(5).min(60);
    eprintln!("---- {title} ----");
    eprintln!(
        "{:w0$} | {:w1$} | {:w2$} | gantry-proxy",
        "case", "field", "envoy"
    );
    for (c, f, e, g) in rows {
        eprintln!("{c:w0$} | {f:w1$} | {e:w2$} | {g}");
    }
}

async fn json_ok(r: gantry_e2e::Reply) -> Value {
    assert!(
        (200..300).contains(&r.status),
        "admin write failed ({}): {}",
        r.status,
        r.body
    );
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_envoy() {
    let cp = Cp::start().await;
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let d = Upstream::start("d").await;
    let w1 = Upstream::start("w1").await;
    let w2 = Upstream::start("w2").await;
    let slow = Upstream::start_with_delay("slow", Duration::from_secs(1)).await;
    // Held and never listened on: connecting to it is refused.
    let closed = gantry_e2e::reserve_port();

    // Both proxies boot while the configuration is written.
    let envoy_fut = Envoy::start(&cp, "envoy-diff", true);
    let proxy_fut = Proxy::start(&cp, "gantry-diff");
    let (envoy, proxy) = tokio::join!(envoy_fut, proxy_fut);

    // --- services and upstreams -------------------------------------------
    for (name, url) in [
        ("sa", a.url()),
        ("sb", b.url()),
        ("sc", c.url()),
        ("sd", d.url()),
        ("sbase", format!("{}/base", a.url())),
        ("sbase2", format!("{}/base/", a.url())),
        ("sclosed", format!("http://127.0.0.1:{}", closed.port)),
    ] {
        json_ok(
            cp.post("/services", json!({"name": name, "url": url}))
                .await,
        )
        .await;
    }
    json_ok(
        cp.post(
            "/services",
            json!({"name": "sslow", "url": slow.url(), "read_timeout": 200}),
        )
        .await,
    )
    .await;
    for (up, targets) in [
        ("empty-up", vec![]),
        ("wup", vec![(w1.addr(), 80), (w2.addr(), 20)]),
        ("single-up", vec![(c.addr(), 100)]),
    ] {
        json_ok(cp.post("/upstreams", json!({"name": up})).await).await;
        for (t, w) in targets {
            json_ok(
                cp.post(
                    &format!("/upstreams/{up}/targets"),
                    json!({"target": t, "weight": w}),
                )
                .await,
            )
            .await;
        }
    }
    for (name, host) in [
        ("sempty", "empty-up"),
        ("swt", "wup"),
        ("ssingle", "single-up"),
    ] {
        json_ok(
            cp.post(
                "/services",
                json!({"name": name, "host": host, "port": 80, "protocol": "http"}),
            )
            .await,
        )
        .await;
    }

    // --- routes (in creation order: ties go to the older route) ------------
    let hp = cp.proxy_http_port;
    let routes: Vec<(&str, Value)> = vec![
        // hosts
        ("sa", json!({"name": "r-exact", "hosts": ["exact.test"]})),
        ("sb", json!({"name": "r-wild", "hosts": ["*.wild.test"]})),
        (
            "sc",
            json!({"name": "r-special", "hosts": ["special.wild.test"]}),
        ),
        ("sc", json!({"name": "r-pre", "hosts": ["pre.*"]})),
        (
            "sb",
            json!({"name": "r-ported", "hosts": [format!("ported.test:{hp}")]}),
        ),
        (
            "sb",
            json!({"name": "r-otherport", "hosts": ["otherport.test:1"]}),
        ),
        ("sb", json!({"name": "r-open", "paths": ["/open"]})),
        ("sc", json!({"name": "r-nopath", "hosts": ["nopath.test"]})),
        // paths, strip_path, path_handling
        ("sa", json!({"name": "r-pfx", "paths": ["/pfx"]})),
        (
            "sb",
            json!({"name": "r-rx", "paths": ["~/rx/\\d+$"], "strip_path": false}),
        ),
        (
            "sa",
            json!({"name": "r-keep", "paths": ["/keep"], "strip_path": false}),
        ),
        ("sbase", json!({"name": "r-s0", "paths": ["/s0"]})),
        (
            "sbase",
            json!({"name": "r-s1", "paths": ["/s1"], "path_handling": "v1"}),
        ),
        (
            "sbase",
            json!({"name": "r-n0", "paths": ["/n0"], "strip_path": false}),
        ),
        (
            "sbase",
            json!({"name": "r-n1", "paths": ["/n1"], "strip_path": false, "path_handling": "v1"}),
        ),
        ("sbase2", json!({"name": "r-t0", "paths": ["/t0"]})),
        (
            "sbase2",
            json!({"name": "r-t1", "paths": ["/t1"], "path_handling": "v1"}),
        ),
        (
            "sbase2",
            json!({"name": "r-u0", "paths": ["/u0"], "strip_path": false}),
        ),
        ("sbase", json!({"name": "r-rs", "paths": ["~/rs/[a-z]+"]})),
        (
            "sbase",
            json!({"name": "r-rs1", "paths": ["~/rs1/[a-z]+"], "path_handling": "v1"}),
        ),
        // methods
        (
            "sa",
            json!({"name": "r-meth", "paths": ["/meth"], "methods": ["GET", "POST"]}),
        ),
        (
            "sb",
            json!({"name": "r-put", "paths": ["/meth"], "methods": ["PUT"]}),
        ),
        // headers
        (
            "sa",
            json!({"name": "r-hver", "paths": ["/hdr"], "headers": {"x-ver": ["v1"]}}),
        ),
        (
            "sb",
            json!({"name": "r-htier", "paths": ["/hdr"], "headers": {"x-tier": ["gold", "silver"]}}),
        ),
        (
            "sd",
            json!({"name": "r-hre", "paths": ["/hdr"], "headers": {"x-chan": ["~*^beta"]}}),
        ),
        ("sc", json!({"name": "r-hfall", "paths": ["/hdr"]})),
        // preserve_host
        (
            "sa",
            json!({"name": "r-keephost", "hosts": ["keep.test"], "preserve_host": true}),
        ),
        ("sa", json!({"name": "r-rwhost", "hosts": ["rewrite.test"]})),
        ("ssingle", json!({"name": "r-single", "paths": ["/single"]})),
        (
            "ssingle",
            json!({"name": "r-single-keep", "hosts": ["single.test"], "preserve_host": true}),
        ),
        // https only, on the http listener
        (
            "sa",
            json!({"name": "r-sec426", "paths": ["/secure"], "protocols": ["https"]}),
        ),
        (
            "sa",
            json!({"name": "r-sec301", "paths": ["/secure301"], "protocols": ["https"], "https_redirect_status_code": 301}),
        ),
        (
            "sa",
            json!({"name": "r-sec308", "paths": ["/secure308"], "protocols": ["https"], "https_redirect_status_code": 308}),
        ),
        // precedence
        (
            "sa",
            json!({"name": "r-prio-hi", "paths": ["~/prio/.*"], "regex_priority": 10}),
        ),
        ("sb", json!({"name": "r-prio-lo", "paths": ["~/prio/x.*"]})),
        ("sa", json!({"name": "r-long", "paths": ["/long"]})),
        ("sb", json!({"name": "r-longer", "paths": ["/long/er"]})),
        ("sa", json!({"name": "r-cond", "paths": ["/cond"]})),
        (
            "sb",
            json!({"name": "r-cond-post", "paths": ["/cond"], "methods": ["POST"]}),
        ),
        ("sa", json!({"name": "r-rvp-prefix", "paths": ["/rvp/abc"]})),
        ("sb", json!({"name": "r-rvp-regex", "paths": ["~/rvp/a"]})),
        (
            "sc",
            json!({"name": "r-hostpath", "hosts": ["hp.test"], "paths": ["/hp"]}),
        ),
        ("sd", json!({"name": "r-hostonly", "hosts": ["hp.test"]})),
        // errors and the rest
        ("sclosed", json!({"name": "r-closed", "paths": ["/closed"]})),
        ("sempty", json!({"name": "r-empty", "paths": ["/empty"]})),
        ("sslow", json!({"name": "r-slow", "paths": ["/slow"]})),
        ("swt", json!({"name": "r-wsplit", "paths": ["/wsplit"]})),
        ("sa", json!({"name": "r-doomed", "paths": ["/doomed"]})),
    ];
    let mut rev = 0;
    for (svc, body) in &routes {
        let r = cp
            .post(&format!("/services/{svc}/routes"), body.clone())
            .await;
        assert_eq!(r.status, 201, "route {body}: {}", r.body);
        rev = r.committed();
    }
    let started = Instant::now();
    cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    eprintln!(
        "{} routes; both SYNCED at revision {rev} {:?} after the last write",
        routes.len(),
        started.elapsed()
    );

    // --- the table ---------------------------------------------------------
    let phost = format!("ported.test:{hp}");
    let cases: Vec<Case> = vec![
        // hosts
        case("exact host", "GET", "/").host("exact.test").to("a"),
        case("exact host, other case", "GET", "/x").host("EXACT.Test").to("a"),
        case("exact host with a port", "GET", "/x").host("exact.test:8080").to("a"),
        case("exact host with a trailing dot", "GET", "/x").host("exact.test.").status(404),
        case("*.suffix host", "GET", "/w").host("api.wild.test").to("b"),
        case("*.suffix host, deeper", "GET", "/w").host("x.y.wild.test").to("b"),
        case("*.suffix host, other case", "GET", "/w").host("API.Wild.TEST").to("b"),
        case("*.suffix host, bare domain", "GET", "/w").host("wild.test").status(404),
        case("exact beats *.suffix", "GET", "/w").host("special.wild.test").to("c"),
        case("prefix.* host", "GET", "/p?x=1").host("pre.example.org").to("c"),
        case("prefix.* host with a port", "GET", "/p").host("pre.example.org:99").to("c"),
        case("catch-all route, any host", "GET", "/open/x").host("anything.test").to("b"),
        case("host route beats path route", "GET", "/open/x").host("exact.test").to("a"),
        case("host:port route, bare Host", "GET", "/hp").host("ported.test").to("b"),
        case("host:port route, Host with port", "GET", "/hp").host(&phost).to("b"),
        case("host:port route of another port", "GET", "/hp").host("otherport.test").status(404),
        case("no host matches", "GET", "/x").host("nowhere.test").status(404),
        case("host+path beats host", "GET", "/hp/x").host("hp.test").to("c"),
        case("host only, other path", "GET", "/other").host("hp.test").to("d"),
        // paths
        case("prefix, stripped", "GET", "/pfx/one?q=1&r=2").to("a"),
        case("prefix, the whole path", "GET", "/pfx").to("a"),
        case("prefix, trailing slash", "GET", "/pfx/").to("a"),
        case("prefix, not at a segment end", "GET", "/pfxtra").to("a"),
        case("prefix, query only", "GET", "/pfx?x=1").to("a"),
        case("prefix, percent-encoded", "GET", "/pfx/a%20b%2Fc").to("a"),
        case("prefix, other case", "GET", "/PFX/x").status(404),
        // Normalised first (`%78` is `x`): the route matches.
        case("prefix, percent-encoded in the prefix", "GET", "/pf%78/x").to("a"),
        case("regex", "GET", "/rx/123").to("b"),
        case("regex with a query", "GET", "/rx/42?x=y").to("b"),
        case("regex, no match", "GET", "/rx/abc").status(404),
        case("regex, anchored at the start", "GET", "/x/rx/1").status(404),
        case("no paths (host only)", "GET", "/any/deep?z=1").host("nopath.test").to("c"),
        // strip_path / path_handling / service path
        case("strip_path=false", "GET", "/keep/x?y=1").to("a"),
        case("v0 strip, service path", "GET", "/s0/x?y=1").to("a"),
        case("v0 strip, service path, whole", "GET", "/s0").to("a"),
        case("v0 strip, service path, slash", "GET", "/s0/").to("a"),
        case("v1 strip, service path", "GET", "/s1/x").to("a"),
        case("v1 strip, service path, whole", "GET", "/s1").to("a"),
        case("v0 no strip, service path", "GET", "/n0/x").to("a"),
        case("v1 no strip, service path", "GET", "/n1/x").to("a"),
        case("v0 strip, service path/", "GET", "/t0/x").to("a"),
        case("v0 strip, service path/, whole", "GET", "/t0").to("a"),
        case("v1 strip, service path/", "GET", "/t1/x?k=v").to("a"),
        case("v1 strip, service path/, whole", "GET", "/t1").to("a"),
        case("v0 no strip, service path/", "GET", "/u0/x").to("a"),
        case("regex, v0 strip, service path", "GET", "/rs/abc/def?k=v").to("a"),
        case("regex, v0 strip, whole match", "GET", "/rs/abc").to("a"),
        case("regex, v1 strip, service path", "GET", "/rs1/abc/def").to("a"),
        // methods
        case("method GET of GET|POST", "GET", "/meth").to("a"),
        case("method POST of GET|POST", "POST", "/meth").body("hello").to("a"),
        case("method PUT (single)", "PUT", "/meth/x").body("{}").to("b"),
        case("method not listed", "DELETE", "/meth").status(404),
        case("method HEAD", "HEAD", "/meth").status(404),
        case("method in lower case", "get", "/meth").status(400),
        // headers
        case("header", "GET", "/hdr").header("x-ver", "v1").to("a"),
        case("header, other case", "GET", "/hdr").header("x-ver", "V1").to("a"),
        case("header, one of two values", "GET", "/hdr").header("x-tier", "silver").to("b"),
        case("header, two values, other case", "GET", "/hdr").header("x-tier", "GOLD").to("b"),
        case("header, value not listed", "GET", "/hdr").header("x-tier", "bronze").to("c"),
        case("header regex", "GET", "/hdr").header("x-chan", "Beta-2").to("d"),
        case("header regex, no match", "GET", "/hdr").header("x-chan", "alpha").to("c"),
        case("header absent: fallback route", "GET", "/hdr").to("c"),
        // Envoy 1.40 matches each header line on its own.
        case("header repeated, same value", "GET", "/hdr")
            .header("x-ver", "v1")
            .header("x-ver", "v1")
            .to("a"),
        case("header repeated, one value listed", "GET", "/hdr")
            .header("x-tier", "bronze")
            .header("x-tier", "gold")
            .to("b"),
        case("header, comma-joined values", "GET", "/hdr")
            .header("x-tier", "gold, silver")
            .to("c"),
        case("two header routes match", "GET", "/hdr")
            .header("x-ver", "v1")
            .header("x-tier", "gold")
            .status(200),
        // preserve_host / host rewrite
        case("preserve_host=true", "GET", "/ph").host("keep.test").to("a"),
        case("preserve_host=true, Host as sent", "GET", "/ph").host("KEEP.test:81").to("a"),
        case("preserve_host=false", "GET", "/ph").host("rewrite.test").to("a"),
        case("upstream target's host", "GET", "/single/x").to("c"),
        case("upstream, preserve_host=true", "GET", "/y").host("single.test").to("c"),
        // https only, over plain http
        case("https-only: 426", "GET", "/secure/x").status(426),
        case("https-only: 301", "GET", "/secure301/x?y=1").host("red.test").status(301),
        case("https-only: 301, Host with port", "GET", "/secure301").host("red.test:8080").status(301),
        case("https-only: 308, POST", "POST", "/secure308/x").host("red.test").body("x").status(308),
        // precedence
        case("regex_priority", "GET", "/prio/xyz").to("a"),
        case("longer prefix wins", "GET", "/long/er/x").to("b"),
        case("shorter prefix", "GET", "/long/x").to("a"),
        case("more conditions win", "POST", "/cond").body("").to("b"),
        case("fewer conditions", "GET", "/cond").to("a"),
        case("regex before prefix", "GET", "/rvp/abc").to("b"),
        // forwarded headers
        case("client X-Forwarded-For", "GET", "/pfx/xff")
            .header("x-forwarded-for", "10.1.2.3")
            .to("a"),
        case("client X-Forwarded-Proto", "GET", "/pfx/xfp")
            .header("x-forwarded-proto", "https")
            .to("a"),
        case("client X-Request-Id", "GET", "/pfx/rid")
            .header("x-request-id", "client-id-1")
            .to("a"),
        case("hop-by-hop headers", "GET", "/pfx/hop")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .to("a"),
        case("TE: trailers", "GET", "/pfx/te").header("te", "trailers").to("a"),
        case("TE: gzip", "GET", "/pfx/te").header("te", "gzip").to("a"),
        case("client Via and X-Forwarded-Host", "GET", "/pfx/via")
            .header("via", "1.1 other")
            .header("x-forwarded-host", "orig.test")
            .to("a"),
        case("repeated header", "GET", "/pfx/rep")
            .header("x-multi", "one")
            .header("x-multi", "two")
            .to("a"),
        case("client timeout header", "GET", "/pfx/t")
            .header("x-envoy-expected-rq-timeout-ms", "5")
            .header("x-envoy-upstream-rq-timeout-ms", "1")
            .to("a"),
        case("header name with an underscore", "GET", "/pfx/u").header("x_under", "1").to("a"),
        // requests only a raw socket sends
        case("absolute-form request target", "GET", "")
            .raw("GET http://exact.test/abs HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n")
            .to("a"),
        case("HTTP/1.0 without Host", "GET", "")
            .raw("GET /pfx/old HTTP/1.0\r\n\r\n")
            .status(426),
        case("HTTP/1.0 with Host", "GET", "")
            .raw("GET /pfx/old HTTP/1.0\r\nHost: gw.test\r\n\r\n")
            .status(426),
        case("dot segments", "GET", "")
            .raw("GET /pfx/../keep/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
            .to("a"),
        // A fragment in the request target is a recorded difference
        // (docs/proxy.md): Envoy answers 400, gantry-proxy drops it.
        // Slashes merged before routing.
        case("double slash", "GET", "")
            .raw("GET //pfx/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
            .to("a"),
        case("Expect: 100-continue", "POST", "")
            .raw("POST /meth HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhello")
            .to("a"),
        case("chunked request body", "POST", "")
            .raw("POST /meth HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            .to("a"),
        case("two Host headers", "GET", "")
            .raw("GET /x HTTP/1.1\r\nHost: exact.test\r\nHost: other.test\r\nConnection: close\r\n\r\n")
            .status(404),
        // errors
        case("no route", "GET", "/no/such/route").status(404),
        case("service on a closed port", "GET", "/closed/x")
            .status(503)
            .prefix("upstream connect error or disconnect/reset before headers."),
        case("upstream without targets", "GET", "/empty").status(503),
        case("upstream timeout", "GET", "/slow").status(504),
        case("route to be deleted", "GET", "/doomed/x").to("a"),
    ];

    let http = raw_client();
    let envoy_base = envoy.proxy_url();
    let proxy_base = proxy.proxy_url();
    let mut diffs = Vec::new();
    let mut info = Vec::new();
    let mut unexpected = Vec::new();
    let t0 = Instant::now();
    let mut run = async |cases: &[Case], diffs: &mut Vec<_>, info: &mut Vec<_>| {
        for c in cases {
            let timed = async |base: &str| {
                let t = Instant::now();
                let s = send_case(&http, base, c).await;
                (s, t.elapsed())
            };
            let ((e, te), (g, tg)) = tokio::join!(timed(&envoy_base), timed(&proxy_base));
            if te.max(tg) > Duration::from_millis(500) {
                eprintln!("slow case {:?}: envoy {te:?}, gantry-proxy {tg:?}", c.name);
            }
            let found = differences(c, &e, &g);
            // Compact: when the answer itself differs, what the upstream saw
            // is beside the point.
            let answer_differs = found
                .iter()
                .any(|(f, _, _)| f == "status" || f == "upstream");
            for (f, ev, gv) in found {
                if answer_differs && (f.starts_with("header ") || f == "method" || f == "path") {
                    continue;
                }
                diffs.push((c.name.clone(), f, ev, gv));
            }
            for n in notes(c, &e, &g) {
                info.push((c.name.clone(), n));
            }
            let want_upstream = c.want_upstream.map(str::to_string);
            if e.status != c.want_status
                || (c.want_upstream.is_some() && e.upstream != want_upstream)
            {
                unexpected.push(format!(
                    "{}: Envoy answered {} from {:?} {:?} (the case expects {} from {:?})",
                    c.name, e.status, e.upstream, e.body, c.want_status, c.want_upstream
                ));
            }
        }
    };
    run(&cases, &mut diffs, &mut info).await;

    // A deleted route: 404 through both once both run the new revision.
    let rev = cp.delete("/routes/r-doomed").await.committed();
    cp.wait_synced(&envoy.node_id, rev, CONVERGE).await;
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let after = vec![
        case("deleted route", "GET", "/doomed/x").status(404),
        case("other routes after a delete", "GET", "/pfx/still").to("a"),
    ];
    run(&after, &mut diffs, &mut info).await;
    let ncases = cases.len() + after.len();
    eprintln!("{ncases} cases through both in {:?}", t0.elapsed());

    // Weighted targets: both split 80/20 within tolerance.
    const N: usize = 200;
    let mut shares = Vec::new();
    for (who, base) in [("envoy", &envoy_base), ("gantry-proxy", &proxy_base)] {
        let mut heavy = 0;
        let mut other = Vec::new();
        for i in 0..N {
            let s = send_case(
                &http,
                base,
                &case("weighted", "GET", &format!("/wsplit/{i}")),
            )
            .await;
            match (s.status, s.upstream.as_deref()) {
                (200, Some("w1")) => heavy += 1,
                (200, Some("w2")) => {}
                x => other.push(format!("{x:?} {}", s.body)),
            }
        }
        assert!(
            other.is_empty(),
            "{who}: weighted requests failed: {other:?}"
        );
        let share = heavy as f64 * 100.0 / N as f64;
        eprintln!(
            "weights 80/20 through {who}: {heavy}/{} over {N} ({share:.1}% to w1)",
            N - heavy
        );
        shares.push(share);
    }
    for (who, share) in ["envoy", "gantry-proxy"].iter().zip(&shares) {
        if !(70.0..=90.0).contains(share) {
            diffs.push((
                "weighted targets 80/20".into(),
                format!("{who} share"),
                "80 ± 10 %".into(),
                format!("{share:.1} %"),
            ));
        }
    }

    // Informational notes, each once, with the cases it was seen in.
    let mut grouped: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (c, n) in &info {
        grouped.entry(n.as_str()).or_default().push(c.as_str());
    }
    if !grouped.is_empty() {
        eprintln!("---- informational: what the comparison normalises away ----");
        for (n, cs) in &grouped {
            let shown: Vec<&str> = cs.iter().take(6).copied().collect();
            let more = if cs.len() > 6 {
                format!(" +{}", cs.len() - 6)
            } else {
                String::new()
            };
            eprintln!(
                "{n}\n    in {} case(s): {}{more}",
                cs.len(),
                shown.join("; ")
            );
        }
    }
    print_table("differences: gantry-proxy vs Envoy", &diffs);
    same_routes_in_both_dumps(&envoy, &proxy).await;
    if !unexpected.is_empty() {
        eprintln!("---- cases Envoy answered differently than the case expects ----");
        for u in &unexpected {
            eprintln!("{u}");
        }
    }
    let differing: std::collections::BTreeSet<&str> = diffs.iter().map(|d| d.0.as_str()).collect();
    eprintln!(
        "{ncases} cases + weighted split: {} case(s) differ ({} fields), {} distinct informational notes",
        differing.len(),
        diffs.len(),
        grouped.len()
    );
    assert!(
        unexpected.is_empty(),
        "{} cases no longer test what they say (see above)",
        unexpected.len()
    );
    assert!(
        diffs.is_empty(),
        "gantry-proxy answered {} case(s) differently from Envoy (table above): {differing:?}",
        differing.len()
    );
}

/// Route configuration → its virtual hosts (name, domains) → each route's
/// name and `match`, from an Envoy-layout `/config_dump`.
type RouteView = BTreeMap<String, Vec<(String, Value, Vec<(String, Value)>)>>;

fn route_view(dump: &Value) -> RouteView {
    let section = gantry_e2e::dump_section(dump, "RoutesConfigDump");
    let mut out = RouteView::new();
    for rc in section["dynamic_route_configs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let rc = &rc["route_config"];
        let vhosts = rc["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|vh| {
                let routes = vh["routes"].as_array().into_iter().flatten();
                let routes = routes.map(|r| {
                    (
                        r["name"].as_str().unwrap_or("").to_string(),
                        r["match"].clone(),
                    )
                });
                (
                    vh["name"].as_str().unwrap_or("").to_string(),
                    vh["domains"].clone(),
                    routes.collect(),
                )
            });
        out.insert(
            rc["name"].as_str().unwrap_or("").to_string(),
            vhosts.collect(),
        );
    }
    out
}

/// gantry-proxy's `/config_dump` shows the routes an Envoy node runs for
/// the same configuration, in the same JSON: its route entries laid out
/// in the virtual hosts Envoy is sent, each match rendered as Envoy
/// renders it.
async fn same_routes_in_both_dumps(envoy: &Envoy, proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let from_envoy = route_view(&envoy.config_dump().await);
        let from_proxy = route_view(&proxy.config_dump("").await);
        let routes: usize = from_envoy.values().flatten().map(|v| v.2.len()).sum();
        assert!(routes > 10, "Envoy's dump shows its routes: {from_envoy:?}");
        if from_envoy == from_proxy {
            return;
        }
        if Instant::now() > deadline {
            for (name, vhosts) in &from_envoy {
                let theirs = from_proxy.get(name);
                for (i, vh) in vhosts.iter().enumerate() {
                    let other = theirs.and_then(|t| t.get(i));
                    if other != Some(vh) {
                        eprintln!(
                            "{name} vhost #{i}\n  envoy:        {vh:?}\n  gantry-proxy: {other:?}"
                        );
                    }
                }
            }
            panic!("gantry-proxy's /config_dump routes differ from Envoy's (above)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ===========================================================================
// 2. Config swaps under load
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_churn_under_load() {
    let secs: u64 = std::env::var("GANTRY_E2E_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let cp = Cp::start().await;
    let x = Upstream::start("x").await;
    let y = Upstream::start("y").await;
    let extra = Upstream::start("extra").await;
    let proxy = Proxy::start(&cp, "gantry-churn").await;
    for (name, up) in [("sx", &x), ("sy", &y), ("sextra", &extra)] {
        json_ok(
            cp.post("/services", json!({"name": name, "url": up.url()}))
                .await,
        )
        .await;
    }
    let rev = cp
        .post(
            "/services/sx/routes",
            json!({"name": "live", "paths": ["/live"]}),
        )
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let client = raw_client();
    until(&client, &proxy.proxy_url(), "/live", None, |s, _| s == 200).await;

    let urls = (0..2)
        .map(|w| format!("{}/live/w{w}", proxy.proxy_url()))
        .collect();
    let load = Load::start(&client, urls, Duration::from_millis(1));
    // Let the pools and the allocator settle before the first sample.
    eventually("traffic to flow", CONVERGE, POLL, || async {
        if load.ok() >= 200 {
            Ok(())
        } else {
            Err(format!("{} OK so far", load.ok()))
        }
    })
    .await;
    let rss_start = proxy.rss_kib().expect("VmRSS");
    let ok_before = load.ok();

    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut changes, mut last, mut on_y) = (0u64, rev, false);
    let mut slow_writes = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let i = changes;
        let t = Instant::now();
        let r = match i % 4 {
            0 => {
                cp.post(
                    "/services/sextra/routes",
                    json!({"name": "extra", "paths": [format!("/extra-{i}")]}),
                )
                .await
            }
            1 => cp.delete("/routes/extra").await,
            2 => {
                cp.patch("/routes/live", json!({"tags": [format!("churn-{i}")]}))
                    .await
            }
            _ => {
                on_y = !on_y;
                let svc = if on_y { "sy" } else { "sx" };
                cp.patch("/routes/live", json!({"service": {"name": svc}}))
                    .await
            }
        };
        if t.elapsed() > Duration::from_millis(50) {
            slow_writes += 1;
        }
        last = r.committed();
        changes += 1;
    }
    let churn = started.elapsed();
    let rss_end = proxy.rss_kib().expect("VmRSS");
    let ok_during = load.ok() - ok_before;
    let synced = Instant::now();
    cp.wait_synced(&proxy.node_id, last, CONVERGE).await;
    let synced = synced.elapsed();
    // The final service answers.
    let want = if on_y { "y" } else { "x" };
    until(&client, &proxy.proxy_url(), "/live/final", None, |s, b| {
        s == 200 && b["upstream"] == want
    })
    .await;
    let (total, failures, seen) = load.finish().await;
    let applied = proxy_stats(&proxy, "gantry_config_applied").await;
    let rejected = proxy_stats(&proxy, "gantry_config_rejected").await;
    eprintln!(
        "churn: {changes} changes in {churn:?} ({slow_writes} admin writes took > 50 ms), \
         proxy SYNCED at revision {last} {synced:?} after the last; {ok_during} requests OK during \
         the churn, {total} in all ({seen:?}), {} failed",
        failures.len()
    );
    eprintln!("churn: gantry-proxy stats {applied:?} {rejected:?}");
    let growth = (rss_end as f64 - rss_start as f64) * 100.0 / rss_start as f64;
    eprintln!(
        "churn: gantry-proxy VmRSS {rss_start} KiB at the start, {rss_end} KiB at the end ({growth:+.1}%)"
    );
    assert!(
        failures.is_empty(),
        "{} requests failed during config churn, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok_during >= 500, "too little traffic flowed: {ok_during}");
    assert!(
        seen.contains_key("x") && seen.contains_key("y"),
        "the route never moved: {seen:?}"
    );
    assert!(
        (rss_end as f64) < rss_start as f64 * 1.5,
        "gantry-proxy grew from {rss_start} KiB to {rss_end} KiB over {changes} config changes"
    );
}

// ===========================================================================
// 3. NACK: a configuration gantry-proxy cannot compile
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_keeps_the_last_good_config() {
    use gantry_e2e::resources::*;
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let server = gantry_e2e::script::Ads::default();
    let xds_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds_port = xds_listener.local_addr().unwrap().port();
    let incoming = futures::stream::unfold(xds_listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    let svc = server.service();
    let serve = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
    });

    // The listener's port as the server says it; the proxy's offset moves it.
    const BASE_PORT: u16 = 10_000;
    server.set("1", ads::LISTENER, vec![listener("http", BASE_PORT, "rc")]);
    server.set(
        "1",
        ads::CLUSTER,
        vec![cluster("a", a.port), cluster("b", b.port)],
    );
    server.set(
        "1",
        ads::ROUTE,
        vec![route_config("rc", vec![route(prefix("/"), "a")])],
    );
    let mut proxy = Proxy::spawn(
        &format!("http://127.0.0.1:{xds_port}"),
        BASE_PORT,
        BASE_PORT + 1,
        "gantry-nack",
        ProxyOptions::default(),
    );
    proxy.wait_ready(None, CONVERGE).await;
    let client = raw_client();
    let base = proxy.proxy_url();
    until(&client, &base, "/x", None, |s, b| {
        s == 200 && b["upstream"] == "a"
    })
    .await;

    // Traffic throughout.
    let load = Load::start(
        &client,
        vec![format!("{base}/steady")],
        Duration::from_millis(2),
    );

    // An invalid regex: NACKed, naming the resource; the old routes stay.
    let bad = route_config(
        "rc",
        vec![route(safe_regex("("), "b"), route(prefix("/"), "b")],
    );
    let nonce = server.push("2", ads::ROUTE, vec![bad]).await;
    let reply = server.reply_to(&nonce, CONVERGE).await;
    let detail = reply.error_detail.clone();
    eprintln!("NACK of version 2: {detail:?}");
    let detail = detail.expect("the invalid route configuration is NACKed (error_detail set)");
    assert_eq!(reply.type_url, ads::ROUTE);
    assert_ne!(detail.code, 0, "{detail:?}");
    assert!(
        detail.message.contains("rc"),
        "the NACK's error_detail names the resource (\"rc\"): {:?}",
        detail.message
    );
    let status = proxy.xds_status().await;
    eprintln!("/xds after the NACK: last_nack {}", status["last_nack"]);
    assert_eq!(status["last_nack"]["version"], "2", "{status}");
    for _ in 0..20 {
        let (s, body) = gantry_e2e::send_json(client.get(format!("{base}/still")))
            .await
            .unwrap();
        assert_eq!((s, body["upstream"].as_str()), (200, Some("a")), "{body}");
    }

    // A valid update is ACKed and applied.
    let good = route_config("rc", vec![route(prefix("/"), "b")]);
    let nonce = server.push("3", ads::ROUTE, vec![good]).await;
    let reply = server.reply_to(&nonce, CONVERGE).await;
    assert!(
        reply.error_detail.is_none(),
        "version 3 was NACKed: {:?}",
        reply.error_detail
    );
    until(&client, &base, "/x", None, |s, b| {
        s == 200 && b["upstream"] == "b"
    })
    .await;
    let status = proxy.xds_status().await;
    assert_eq!(status["types"]["RDS"]["version"], "3", "{status}");

    let (ok, failures, seen) = load.finish().await;
    eprintln!(
        "NACK: {ok} requests during the NACK and the fix ({seen:?}), {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "requests failed: {:?}",
        &failures[..failures.len().min(5)]
    );
    serve.abort();
}

// ===========================================================================
// 4. Protocols: h2c, WebSocket, TLS by SNI, gRPC
// ===========================================================================

/// An upstream that accepts WebSocket upgrades (hyper) and echoes every
/// data frame back.
async fn ws_echo_upstream() -> (u16, tokio::task::JoinHandle<()>) {
    use base64::Engine;
    use sha1::Digest;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |mut req: hyper::Request<hyper::body::Incoming>| async move {
                        let key = req
                            .headers()
                            .get("sec-websocket-key")
                            .map(|k| k.as_bytes().to_vec())
                            .unwrap_or_default();
                        let is_ws = req
                            .headers()
                            .get("upgrade")
                            .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
                        if !is_ws {
                            return Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(400)
                                    .body(Full::new(Bytes::from_static(b"not a websocket request")))
                                    .unwrap(),
                            );
                        }
                        let mut h = sha1::Sha1::new();
                        h.update(&key);
                        h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
                        let accept = base64::engine::general_purpose::STANDARD.encode(h.finalize());
                        let path = req.uri().path().to_string();
                        let upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let Ok(up) = upgrade.await else { return };
                            let mut io = TokioIo::new(up);
                            let _ = echo_frames(&mut io, &path).await;
                        });
                        Ok(hyper::Response::builder()
                            .status(101)
                            .header("upgrade", "websocket")
                            .header("connection", "Upgrade")
                            .header("sec-websocket-accept", accept)
                            .body(Full::new(Bytes::new()))
                            .unwrap())
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, task)
}

/// Reads one WebSocket frame: (opcode, unmasked payload).
async fn read_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await?;
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await?;
        len = u64::from_be_bytes(b);
    }
    let mut mask = [0u8; 4];
    if masked {
        s.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((opcode, payload))
}

/// Writes one final frame, masked (client to server) or not.
async fn write_frame<S: tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> std::io::Result<()> {
    let mut f = vec![0x80 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n < 65536 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    s.write_all(&f).await?;
    s.flush().await
}

async fn echo_frames<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
) -> std::io::Result<()> {
    loop {
        let (op, payload) = read_frame(s).await?;
        match op {
            0x8 => {
                write_frame(s, 0x8, &payload, None).await?;
                return Ok(());
            }
            0x9 => write_frame(s, 0xA, &payload, None).await?,
            _ => {
                let mut out = format!("{path}:").into_bytes();
                out.extend_from_slice(&payload);
                write_frame(s, op, &out, None).await?;
            }
        }
    }
}

/// Reads an HTTP/1.1 response head (up to the blank line).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(
            n == 1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_string()
}

/// A self-signed end-entity certificate for `name`: (cert PEM, key PEM).
fn self_signed(dir: &std::path::Path, name: &str) -> (String, String) {
    let cnf = dir.join(format!("{name}.cnf"));
    std::fs::write(
        &cnf,
        format!(
            "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n\
             [dn]\nCN = {name}\n\
             [ext]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = digitalSignature\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = DNS:{name}\n"
        ),
    )
    .unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-config"])
        .arg(&cnf)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(cert).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    )
}

fn cert_der(pem: &str) -> rustls_pki_types::CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
}

/// A TLS handshake with `sni`, trusting only `trust`; the certificate served.
async fn tls_connect(
    port: u16,
    sni: &str,
    trust: &str,
    alpn: &[u8],
) -> Result<
    (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        rustls_pki_types::CertificateDer<'static>,
    ),
    String,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der(trust)).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name =
        rustls_pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no peer certificate")?;
    Ok((tls, served.into_owned()))
}

/// One HTTP/1.1 GET over an established stream: (status, JSON body).
async fn get_over<S>(io: S, host: &str, path: &str) -> (u16, Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("http/1.1 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocols() {
    let cp = Cp::start().await;
    let a = Upstream::start("a").await;
    let (ws_port, _ws) = ws_echo_upstream().await;
    let proxy = Proxy::start(&cp, "gantry-protocols").await;
    let dir = gantry_e2e::TempDir::new("gantry-e2e-certs");
    let (cert_a, key_a) = self_signed(dir.path(), "a.test");
    let (cert_b, key_b) = self_signed(dir.path(), "b.test");

    json_ok(
        cp.post("/services", json!({"name": "echo", "url": a.url()}))
            .await,
    )
    .await;
    json_ok(
        cp.post(
            "/services/echo/routes",
            json!({"name": "h", "paths": ["/h"]}),
        )
        .await,
    )
    .await;
    json_ok(
        cp.post(
            "/services",
            json!({"name": "ws", "url": format!("http://127.0.0.1:{ws_port}")}),
        )
        .await,
    )
    .await;
    json_ok(
        cp.post(
            "/services/ws/routes",
            json!({"name": "ws", "paths": ["/ws"], "strip_path": false}),
        )
        .await,
    )
    .await;
    // gRPC upstream: gantry-cp's own xDS port (ADS streaming, CSDS unary).
    json_ok(
        cp.post(
            "/services",
            json!({"name": "xds", "protocol": "grpc", "host": "127.0.0.1", "port": cp.xds_port}),
        )
        .await,
    )
    .await;
    json_ok(
        cp.post(
            "/services/xds/routes",
            json!({"name": "grpc", "protocols": ["grpc"], "paths": ["/envoy.service."], "strip_path": false}),
        )
        .await,
    )
    .await;
    for (cert, key, sni) in [(&cert_a, &key_a, "a.test"), (&cert_b, &key_b, "b.test")] {
        json_ok(
            cp.post(
                "/certificates",
                json!({"cert": cert, "key": key, "snis": [sni]}),
            )
            .await,
        )
        .await;
    }
    let rev = cp.revision().await;
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let client = raw_client();
    until(&client, &proxy.proxy_url(), "/h/ready", None, |s, _| {
        s == 200
    })
    .await;

    // --- h2c (HTTP/2 prior knowledge), many streams on one connection ----
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.http_port))
        .await
        .unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake with gantry-proxy");
    tokio::spawn(conn);
    let mut streams = Vec::new();
    for i in 0..20 {
        let mut sender = sender.clone();
        streams.push(tokio::spawn(async move {
            let req = hyper::Request::builder()
                .uri(format!("http://h2.test/h/{i}?q={i}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.expect("h2 request");
            let version = resp.version();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (
                version,
                status,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            )
        }));
    }
    for (i, s) in streams.into_iter().enumerate() {
        let (version, status, body) = s.await.unwrap();
        assert_eq!(version, hyper::Version::HTTP_2);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["upstream"], "a");
        assert_eq!(body["path"], format!("/{i}?q={i}"));
    }
    eprintln!("h2c: 20 concurrent streams on one connection, all 200");

    // --- WebSocket ---------------------------------------------------------
    let mut ws = tokio::net::TcpStream::connect(("127.0.0.1", proxy.http_port))
        .await
        .unwrap();
    ws.write_all(
        b"GET /ws/chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut ws).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let big = "x".repeat(300);
    for (i, msg) in ["hello gantry", big.as_str(), "third"].iter().enumerate() {
        write_frame(&mut ws, 0x1, msg.as_bytes(), Some([1, 2, 3, i as u8]))
            .await
            .unwrap();
        let (op, payload) = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut ws))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(op, 0x1);
        assert_eq!(String::from_utf8_lossy(&payload), format!("/ws/chat:{msg}"));
    }
    write_frame(&mut ws, 0x8, &[0x03, 0xe8], Some([9, 9, 9, 9]))
        .await
        .unwrap();
    let (op, _) = read_frame(&mut ws).await.unwrap();
    assert_eq!(op, 0x8, "close echoed");
    eprintln!("websocket: upgrade, 3 echoed frames (one of 300 bytes), close");

    // --- TLS, one certificate per SNI -------------------------------------
    let tls = eventually("the https listener", CONVERGE, POLL, || async {
        tls_connect(proxy.https_port, "a.test", &cert_a, b"http/1.1").await
    })
    .await;
    let (stream_a, served_a) = tls;
    assert_eq!(
        served_a,
        cert_der(&cert_a),
        "a.test got a.test's certificate"
    );
    let (s, body) = get_over(stream_a, "a.test", "/h/tls").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["headers"]["x-forwarded-proto"], "https", "{body}");
    let (stream_b, served_b) = tls_connect(proxy.https_port, "b.test", &cert_b, b"http/1.1")
        .await
        .expect("b.test");
    assert_eq!(
        served_b,
        cert_der(&cert_b),
        "b.test got b.test's certificate"
    );
    let (s, body) = get_over(stream_b, "b.test", "/h/tls").await;
    assert_eq!(s, 200, "{body}");
    // b.test with only a.test's certificate trusted: refused by the client.
    let wrong = tls_connect(proxy.https_port, "b.test", &cert_a, b"http/1.1").await;
    assert!(
        wrong.is_err(),
        "b.test must not be served a.test's certificate"
    );
    // HTTP/2 over TLS (ALPN h2).
    let (stream, _) = tls_connect(proxy.https_port, "a.test", &cert_a, b"h2")
        .await
        .expect("h2 over TLS");
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN picks h2"
    );
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake over TLS");
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            hyper::Request::builder()
                .uri("https://a.test/h/h2tls")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .expect("h2 request over TLS");
    assert_eq!(resp.status(), 200);
    eprintln!("tls: a.test and b.test each served their own certificate; h2 over TLS OK");

    // --- gRPC through the proxy: unary (CSDS) and streaming (ADS) ---------
    // (Bounded: a proxy that waits for the end of a request body before
    // forwarding it hangs a streaming call forever.)
    const GRPC: Duration = Duration::from_secs(10);
    {
        use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
        use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
        let channel = tonic::transport::Endpoint::from_shared(proxy.proxy_url())
            .unwrap()
            .connect()
            .await
            .expect("channel through gantry-proxy");
        let mut csds = ClientStatusDiscoveryServiceClient::new(channel);
        let r = tokio::time::timeout(
            GRPC,
            csds.fetch_client_status(ClientStatusRequest::default()),
        )
        .await
        .expect("a unary CSDS call through gantry-proxy answers in time")
        .expect("unary CSDS call through gantry-proxy");
        eprintln!(
            "grpc: unary CSDS call through gantry-proxy OK ({} configs)",
            r.get_ref().config.len()
        );
    }
    let streaming = async {
        let mut stream = ads::Delta::connect(&proxy.proxy_url()).await;
        stream
            .send(DeltaDiscoveryRequest {
                node: Some(ads::node("grpc-through-gantry")),
                type_url: ads::CLUSTER.into(),
                ..Default::default()
            })
            .await;
        let resp = stream
            .recv(GRPC)
            .await
            .expect("a CDS response through gantry-proxy");
        assert_eq!(resp.type_url, ads::CLUSTER);
        assert!(!resp.resources.is_empty());
        // A second message each way on the same stream: ACK, then subscribe to EDS.
        stream
            .send(DeltaDiscoveryRequest {
                type_url: ads::CLUSTER.into(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            })
            .await;
        stream
            .send(DeltaDiscoveryRequest {
                type_url: ads::LISTENER.into(),
                ..Default::default()
            })
            .await;
        let resp = stream
            .recv(GRPC)
            .await
            .expect("an LDS response on the same stream");
        assert_eq!(resp.type_url, ads::LISTENER);
    };
    tokio::time::timeout(GRPC * 2, streaming).await.expect(
        "a bidirectional gRPC stream (ADS) through gantry-proxy: no response headers or \
         messages before the client ends its request stream",
    );
    eprintln!("grpc: bidirectional ADS stream through gantry-proxy OK");
}

// ===========================================================================
// 5. gantry-cp killed and restarted under traffic
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_control_plane_restart() {
    let mut cp = Cp::start().await;
    let up = Upstream::start("r").await;
    let proxy = Proxy::start(&cp, "gantry-restart").await;
    json_ok(
        cp.post("/services", json!({"name": "rsvc", "url": up.url()}))
            .await,
    )
    .await;
    let rev = cp
        .post(
            "/services/rsvc/routes",
            json!({"name": "r", "paths": ["/r"]}),
        )
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let client = raw_client();
    until(&client, &proxy.proxy_url(), "/r", None, |s, _| s == 200).await;

    let load = Load::start(
        &client,
        vec![format!("{}/r/x", proxy.proxy_url())],
        Duration::from_millis(2),
    );
    eventually("traffic before the kill", CONVERGE, POLL, || async {
        if load.ok() >= 50 {
            Ok(())
        } else {
            Err(format!("{} OK", load.ok()))
        }
    })
    .await;
    let before_kill = load.ok();
    cp.kill();
    let down = Instant::now();
    eventually(
        "gantry-proxy to notice gantry-cp is gone",
        CONVERGE,
        POLL,
        || async {
            let st = proxy.xds_status().await;
            if st["connected"].is_null() {
                Ok(())
            } else {
                Err(format!("{st}"))
            }
        },
    )
    .await;
    let noticed = down.elapsed();
    let served = load.ok();
    eventually(
        "traffic while gantry-cp is down",
        CONVERGE,
        POLL,
        || async {
            if load.ok() >= served + 50 {
                Ok(())
            } else {
                Err(format!("{} OK", load.ok()))
            }
        },
    )
    .await;
    let during_outage = load.ok() - before_kill;
    let restarted_at = gantry_e2e::now_ms();
    cp.restart().await;
    cp.wait_synced_since(&proxy.node_id, rev, restarted_at, Duration::from_secs(30))
        .await;
    let resynced = down.elapsed();
    // New changes flow again.
    cp.post(
        "/services/rsvc/routes",
        json!({"name": "r2", "paths": ["/r2"]}),
    )
    .await
    .committed();
    until(&client, &proxy.proxy_url(), "/r2", None, |s, _| s == 200).await;
    let (ok, failures, _) = load.finish().await;
    let st = proxy.xds_status().await;
    eprintln!(
        "cp restart: proxy noticed in {noticed:?}, SYNCED again {resynced:?} after the kill; \
         {} requests in all ({before_kill} before the kill, {during_outage} while gantry-cp was down), \
         {} failed; streams opened {}",
        ok,
        failures.len(),
        st["streams_opened"]
    );
    assert!(
        failures.is_empty(),
        "requests failed: {:?}",
        &failures[..failures.len().min(5)]
    );
}

// ===========================================================================
// 6. SIGTERM: in-flight requests finish, new connections are refused
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let cp = Cp::start().await;
    let slow = Upstream::start_with_delay("slow", Duration::from_secs(1)).await;
    let mut proxy = Proxy::start_with(
        &cp,
        "gantry-drain",
        ProxyOptions {
            drain_timeout_ms: Some(10_000),
            ..Default::default()
        },
    )
    .await;
    json_ok(
        cp.post("/services", json!({"name": "slow", "url": slow.url()}))
            .await,
    )
    .await;
    let rev = cp
        .post(
            "/services/slow/routes",
            json!({"name": "slow", "paths": ["/slow"]}),
        )
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let client = raw_client();
    until(&client, &proxy.proxy_url(), "/slow/warm", None, |s, _| {
        s == 200
    })
    .await;
    slow.reset();

    let inflight = tokio::spawn(gantry_e2e::send_json(
        raw_client().get(format!("{}/slow/inflight", proxy.proxy_url())),
    ));
    eventually(
        "the request to reach the upstream",
        CONVERGE,
        Duration::from_millis(5),
        || async {
            if slow.requests() >= 1 {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await;
    let term = Instant::now();
    proxy.signal("TERM");
    // New connections are refused while the in-flight request drains.
    eventually(
        "the listener to close",
        Duration::from_millis(800),
        Duration::from_millis(5),
        || async {
            match tokio::net::TcpStream::connect(("127.0.0.1", proxy.http_port)).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
                Err(e) => Err(format!("connect: {e}")),
                Ok(_) => Err("connected".to_string()),
            }
        },
    )
    .await;
    let refused_after = term.elapsed();
    assert!(
        !inflight.is_finished(),
        "the in-flight request finished before the listener closed"
    );
    let (status, body) = inflight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    let completed_after = term.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["path"], "/inflight");
    let exit = proxy.wait_exit(Duration::from_secs(15)).await;
    let exited_after = term.elapsed();
    eprintln!(
        "SIGTERM: new connections refused after {refused_after:?}, the in-flight request answered 200 \
         after {completed_after:?}, exit {exit:?} after {exited_after:?}"
    );
    let exit = exit.expect("gantry-proxy exits after draining");
    assert!(exit.success(), "gantry-proxy exited with {exit}");
}
