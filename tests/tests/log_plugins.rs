//! Kong's log plugins through gantry-proxy, into real sinks the test runs:
//! an HTTP log server (http-log), a file (file-log), a TCP server
//! (tcp-log) and a UDP socket (udp-log). Each entry is Kong's serializer
//! JSON with no credential in it; a dead log server loses entries by
//! count and never fails a request.

use bytes::Bytes;
use gantry_e2e::{Cp, Proxy, TempDir, Upstream, eventually, http_client, until_status};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(15);

/// An HTTP log server: records each request's method, headers and JSON body.
struct LogServer {
    port: u16,
    got: Arc<Mutex<Vec<(String, Value, hyper::HeaderMap)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LogServer {
    async fn start() -> LogServer {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<(String, Value, hyper::HeaderMap)>>> = Arc::default();
        let g = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let g = g.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let g = g.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            g.lock()
                                .unwrap()
                                .push((parts.method.to_string(), v, parts.headers));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        LogServer { port, got, task }
    }

    /// Every entry received, batches flattened.
    fn entries(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, v, _)| match v {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            })
            .collect()
    }
}

impl Drop for LogServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A service `user-service`, route `users-api` on `/users` with key-auth,
/// consumer alice with key `alice-secret-key`.
async fn keyed_route(cp: &Cp, up: &Upstream) {
    cp.post(
        "/services",
        json!({"name": "user-service", "url": up.url()}),
    )
    .await
    .expect(201);
    cp.post(
        "/services/user-service/routes",
        json!({"name": "users-api", "paths": ["/users"]}),
    )
    .await
    .expect(201);
    cp.post("/routes/users-api/plugins", json!({"name": "key-auth"}))
        .await
        .expect(201);
    cp.post(
        "/consumers",
        json!({"username": "alice", "custom_id": "a-1"}),
    )
    .await
    .expect(201);
    cp.post(
        "/consumers/alice/key-auth",
        json!({"key": "alice-secret-key"}),
    )
    .await
    .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_log_batches_kongs_entries_without_credentials() {
    let cp = Cp::start().await;
    let up = Upstream::start("users").await;
    let sink = LogServer::start().await;
    keyed_route(&cp, &up).await;
    cp.post(
        "/services/user-service/plugins",
        json!({"name": "http-log", "config": {
            "http_endpoint": format!("http://logger:s3cret-pass@127.0.0.1:{}/logs", sink.port),
            "method": "PUT",
            "headers": {"X-Log-Token": "log-token-value"},
            "queue": {"max_batch_size": 5, "max_coalescing_delay": 0.2}}}),
    )
    .await
    .expect(201);
    // The endpoint and header values are secrets: not shown on read.
    let listed = cp.get("/plugins").await.body.to_string();
    assert!(
        !listed.contains("s3cret-pass") && !listed.contains("log-token-value"),
        "{listed}"
    );

    let proxy = Proxy::start(&cp, "gantry-http-log").await;
    let base = proxy.proxy_url();
    until_status(&format!("{base}/users"), 401, CONVERGE).await;
    // Every write made, not only the route polled for (a snapshot may lag
    // the last write by a moment).
    cp.wait_synced(&proxy.node_id, cp.revision().await, CONVERGE)
        .await;
    let c = http_client();
    for i in 0..6 {
        let r = c
            .get(format!("{base}/users/{i}?apikey=alice-secret-key&page={i}"))
            .header("cookie", "session=cookie-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let entries = eventually("six entries", CONVERGE, Duration::from_millis(50), || {
        let e = sink.entries();
        async move {
            let mine: Vec<Value> = e
                .into_iter()
                .filter(|e| e["response"]["status"] == 200)
                .collect();
            if mine.len() >= 6 {
                Ok(mine)
            } else {
                Err(format!("{} so far", mine.len()))
            }
        }
    })
    .await;
    assert_eq!(entries.len(), 6, "each request once");
    // Batched: at least one request to the log server carried several.
    let (method, headers) = {
        let got = sink.got.lock().unwrap();
        assert!(
            got.iter()
                .any(|(_, v, _)| v.as_array().is_some_and(|a| a.len() > 1)),
            "no batch"
        );
        (got[0].0.clone(), got[0].2.clone())
    };
    assert_eq!(method, "PUT");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-log-token"], "log-token-value");
    assert_eq!(
        headers["authorization"],
        format!("Basic {}", base64_of("logger:s3cret-pass"))
    );

    let e = &entries[0];
    assert_eq!(e["route"]["name"], "users-api", "{e}");
    assert_eq!(e["service"]["name"], "user-service");
    assert_eq!(e["consumer"]["username"], "alice");
    assert_eq!(e["consumer"]["custom_id"], "a-1");
    assert!(e["authenticated_entity"]["id"].is_string(), "{e}");
    assert_eq!(e["request"]["method"], "GET");
    assert_eq!(e["request"]["querystring"]["apikey"], "REDACTED");
    assert!(e["request"]["querystring"]["page"].is_string());
    assert_eq!(e["request"]["headers"]["cookie"], "REDACTED");
    assert_eq!(e["request"]["headers"]["x-consumer-username"], "alice");
    assert_eq!(e["source"], "upstream");
    assert_eq!(e["upstream_status"], "200");
    assert_eq!(e["tries"][0]["port"], up.port);
    // strip_path: the route's prefix is not sent upstream.
    let upstream_uri = e["upstream_uri"].as_str().unwrap();
    assert!(
        upstream_uri.starts_with("/")
            && !upstream_uri.starts_with("/users")
            && upstream_uri.contains("apikey=REDACTED"),
        "{e}"
    );
    assert!(
        e["latencies"]["request"].as_u64().is_some()
            && e["latencies"]["proxy"].as_i64().unwrap() >= 0
    );
    assert!(e["started_at"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert!(e["response"]["size"].as_u64().unwrap() > 0);
    for e in &entries {
        let text = e.to_string();
        for secret in ["alice-secret-key", "cookie-secret"] {
            assert!(!text.contains(secret), "{secret} logged: {text}");
        }
    }

    // A refusal is logged too, with no upstream.
    let r = c.get(format!("{base}/users/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let refused = eventually(
        "the 401's entry",
        CONVERGE,
        Duration::from_millis(50),
        || {
            let e = sink.entries();
            async move {
                e.into_iter()
                    .find(|e| e["response"]["status"] == 401 && e["request"]["uri"] == "/users/x")
                    .ok_or_else(|| "not yet".to_string())
            }
        },
    )
    .await;
    assert_eq!(refused["source"], "kong");
    assert_eq!(refused["latencies"]["proxy"], -1);
    assert_eq!(refused["tries"], json!([]));
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_log_server_loses_entries_by_count_not_requests() {
    let cp = Cp::start().await;
    let up = Upstream::start("users").await;
    let dead = gantry_e2e::reserve_port();
    keyed_route(&cp, &up).await;
    cp.post(
        "/plugins",
        json!({"name": "http-log", "config": {
            "http_endpoint": format!("http://127.0.0.1:{}/logs", dead.port),
            "queue": {"max_entries": 5, "max_retry_time": 1, "initial_retry_delay": 0.1}}}),
    )
    .await
    .expect(201);
    let proxy = Proxy::start(&cp, "gantry-dead-log").await;
    let base = proxy.proxy_url();
    until_status(&format!("{base}/users"), 401, CONVERGE).await;
    // Every write made, not only the route polled for (a snapshot may lag
    // the last write by a moment).
    cp.wait_synced(&proxy.node_id, cp.revision().await, CONVERGE)
        .await;
    let c = http_client();
    for _ in 0..40 {
        let r = c
            .get(format!("{base}/users"))
            .header("apikey", "alice-secret-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let metrics = format!("http://127.0.0.1:{}/metrics", proxy.admin_port);
    eventually(
        "entries dropped and counted",
        CONVERGE,
        Duration::from_millis(100),
        || {
            let url = metrics.clone();
            async move {
                let text = http_client()
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .text()
                    .await
                    .map_err(|e| e.to_string())?;
                let full = count(
                    &text,
                    r#"gantry_log_entries_dropped_total{plugin="http-log",reason="queue_full"}"#,
                );
                let failed = count(
                    &text,
                    r#"gantry_log_entries_dropped_total{plugin="http-log",reason="send_failed"}"#,
                );
                // 40 requests, at most 5 waiting: most are dropped at once;
                // the batch being retried is given up after a second.
                if full >= 30.0 && failed >= 1.0 {
                    Ok(())
                } else {
                    Err(format!("full {full}, failed {failed}"))
                }
            }
        },
    )
    .await;
}

fn count(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_tcp_and_udp_log_write_an_entry_per_request() {
    let cp = Cp::start().await;
    let up = Upstream::start("users").await;
    keyed_route(&cp, &up).await;
    let dir = TempDir::new("gantry-e2e-file-log");
    let path = dir.path().join("kong.log");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    for (name, config) in [
        ("file-log", json!({"path": path.display().to_string()})),
        ("tcp-log", json!({"host": "127.0.0.1", "port": tcp_port})),
        ("udp-log", json!({"host": "127.0.0.1", "port": udp_port})),
    ] {
        cp.post(
            "/routes/users-api/plugins",
            json!({"name": name, "config": config}),
        )
        .await
        .expect(201);
    }
    let proxy = Proxy::start(&cp, "gantry-file-log").await;
    let base = proxy.proxy_url();
    until_status(&format!("{base}/users"), 401, CONVERGE).await;
    // Every write made, not only the route polled for (a snapshot may lag
    // the last write by a moment).
    cp.wait_synced(&proxy.node_id, cp.revision().await, CONVERGE)
        .await;
    let c = http_client();
    for i in 0..3 {
        let r = c
            .get(format!("{base}/users/n{i}"))
            .header("apikey", "alice-secret-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let is_mine = |v: &Value| {
        v["request"]["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("/users/n"))
    };

    // file-log: one JSON line per entry.
    let lines = eventually(
        "three file-log lines",
        CONVERGE,
        Duration::from_millis(50),
        || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            async move {
                let v: Vec<Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                let mine: Vec<Value> = v.into_iter().filter(is_mine).collect();
                if mine.len() == 3 {
                    Ok(mine)
                } else {
                    Err(format!("{} lines", mine.len()))
                }
            }
        },
    )
    .await;
    assert_eq!(lines[0]["consumer"]["username"], "alice");
    assert!(
        !std::fs::read_to_string(&path)
            .unwrap()
            .contains("alice-secret-key")
    );

    // tcp-log: newline-terminated JSON on one connection.
    let (mut s, _) = tokio::time::timeout(CONVERGE, tcp.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    while got.len() < 3 {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(CONVERGE, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "tcp-log closed early");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let v: Value = serde_json::from_slice(&line).unwrap();
            if is_mine(&v) {
                got.push(v);
            }
        }
    }
    assert_eq!(got[2]["route"]["name"], "users-api");

    // udp-log: a datagram per entry.
    let mut n = 0;
    while n < 3 {
        let mut d = vec![0u8; 65536];
        let len = tokio::time::timeout(CONVERGE, udp.recv(&mut d))
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&d[..len]).unwrap();
        if is_mine(&v) {
            assert_eq!(v["service"]["name"], "user-service");
            n += 1;
        }
    }
}

/// A log plugin the node cannot set up (its endpoint is a vault reference
/// to a variable the node does not have) is refused by the node, and the
/// route it applies to answers 500 rather than forwarding unlogged; the
/// route without it serves on; removing the plugin restores the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_plugin_the_node_cannot_set_up_fences_its_route() {
    let cp = Cp::start().await;
    let up = Upstream::start("users").await;
    keyed_route(&cp, &up).await;
    cp.post(
        "/services/user-service/routes",
        json!({"name": "open", "paths": ["/open"]}),
    )
    .await
    .expect(201);
    let proxy = Proxy::start(&cp, "gantry-log-fence").await;
    let base = proxy.proxy_url();
    until_status(&format!("{base}/open"), 200, CONVERGE).await;
    let keyed = || {
        http_client()
            .get(format!("{base}/users"))
            .header("apikey", "alice-secret-key")
    };
    eventually(
        "the keyed route serves",
        CONVERGE,
        Duration::from_millis(50),
        || async {
            let s = keyed().send().await.map_err(|e| e.to_string())?.status();
            if s == 200 { Ok(()) } else { Err(s.to_string()) }
        },
    )
    .await;

    let log = cp
        .post(
            "/routes/users-api/plugins",
            json!({"name": "http-log", "config": {
                "http_endpoint": "{vault://env/gantry-e2e-unset-log-endpoint}"}}),
        )
        .await
        .expect(201);
    eventually(
        "the keyed route refused",
        CONVERGE,
        Duration::from_millis(50),
        || async {
            let s = keyed().send().await.map_err(|e| e.to_string())?.status();
            if s == 500 { Ok(()) } else { Err(s.to_string()) }
        },
    )
    .await;
    up.reset();
    for _ in 0..5 {
        assert_eq!(keyed().send().await.unwrap().status(), 500);
    }
    assert_eq!(
        up.requests(),
        0,
        "a request went upstream without its log plugin"
    );
    assert_eq!(
        http_client()
            .get(format!("{base}/open"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let node = cp
        .fleet_node("gantry-log-fence")
        .await
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(node.contains("GANTRY_E2E_UNSET_LOG_ENDPOINT"), "{node}");

    cp.delete(&format!("/plugins/{}", log["id"].as_str().unwrap()))
        .await
        .expect(204);
    eventually(
        "the keyed route back",
        CONVERGE,
        Duration::from_millis(50),
        || async {
            let s = keyed().send().await.map_err(|e| e.to_string())?.status();
            if s == 200 { Ok(()) } else { Err(s.to_string()) }
        },
    )
    .await;
}
