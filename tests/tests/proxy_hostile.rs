//! gantry-proxy treats bad clients as bad clients: broken framing, odd
//! paths and half-sent requests get the client an error, as Envoy answers
//! them, and never count against an upstream or slip past a route's
//! policies. Requests are sent byte for byte over raw TCP.

use gantry_e2e::{Cp, Proxy, Upstream, eventually};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONVERGE: Duration = Duration::from_secs(15);

/// What came back for one raw request: the status (0 when the connection
/// closed without a response) and the whole response text.
struct Raw {
    status: u16,
    text: String,
}

async fn raw(port: u16, request: &[u8]) -> Raw {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the proxy");
    s.write_all(request).await.expect("send");
    let mut buf = Vec::new();
    // Until the server closes, or a response is complete enough to judge.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if complete(&buf) {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Raw { status, text }
}

/// Headers and a Content-Length body all in.
fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    len.is_some_and(|n| buf.len() >= end + 4 + n)
}

/// A control plane, one proxy and an upstream behind a Kong service with
/// passive health checks that eject the target after 3 failures.
async fn gateway(node: &str) -> (Cp, Proxy, Upstream) {
    let cp = Cp::start().await;
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(&cp, node).await;
    cp.post(
        "/upstreams",
        json!({"name": "pool", "healthchecks": {"passive": {"unhealthy":
            {"http_failures": 3, "tcp_failures": 3, "timeouts": 3}}}}),
    )
    .await
    .expect(201);
    cp.post(
        "/upstreams/pool/targets",
        json!({"target": format!("127.0.0.1:{}", up.port)}),
    )
    .await
    .expect(201);
    cp.post(
        "/services",
        json!({"name": "svc", "host": "pool", "port": up.port}),
    )
    .await
    .expect(201);
    let rev = cp
        .post(
            "/services/svc/routes",
            json!({"name": "api", "paths": ["/api"]}),
        )
        .await
        .committed();
    cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
    let port = proxy.http_port;
    eventually(
        "the route serves",
        CONVERGE,
        Duration::from_millis(20),
        || async move {
            match raw(port, b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .status
            {
                200 => Ok(()),
                s => Err(s.to_string()),
            }
        },
    )
    .await;
    (cp, proxy, up)
}

/// Malformed chunked bodies are the client's fault: each gets a 400, and
/// none counts against the only target (once, three of them ejected it
/// and every client got 503 for 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_400_and_never_eject_the_upstream() {
    let (_cp, proxy, up) = gateway("hostile-chunks").await;
    let port = proxy.http_port;
    let head = "POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let bodies: [&[u8]; 4] = [
        b"zz\r\nhello\r\n0\r\n\r\n",  // a size that is not hex
        b"5\nhello\n0\n\n",           // bare LF line endings
        b"5\r\nhelloXX\r\n0\r\n\r\n", // more data than the size said
        b"ffffffffffffffffffff\r\n",  // a size that overflows
    ];
    for round in 0..3 {
        for (i, b) in bodies.iter().enumerate() {
            let mut req = head.as_bytes().to_vec();
            req.extend_from_slice(b);
            let r = raw(port, &req).await;
            assert_eq!(r.status, 400, "round {round}, body {i}: {}", r.text);
        }
    }
    // A body cut short: the client hangs up mid-body.
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-ten-b")
            .await
            .unwrap();
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The target is still in: requests keep reaching it.
    let before = up.requests();
    for _ in 0..5 {
        let r = raw(port, b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(up.requests(), before + 5);
    let (_, stats) = proxy.admin_get("/stats/prometheus").await;
    assert!(
        !stats
            .lines()
            .any(|l| l.starts_with("gantry_outlier_ejections_total") && !l.ends_with(" 0")),
        "no ejection: {stats}"
    );
}
