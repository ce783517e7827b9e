//! The operators' Kong files from the articles Gantry grew from
//! (`tests/fixtures/articles/`, copied unchanged from the project's shared
//! examples), imported as they are and served as the articles say.

use gantry_e2e::prometheus::Prometheus;
use gantry_e2e::{Cp, Proxy, Upstream, http_client, now_s, sign};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(15);

fn article(name: &str) -> String {
    let path = format!("{}/fixtures/articles/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Article 002's kong.yml: jwt, Redis rate limiting, prometheus and CORS
/// on one service. It imports as it is; a request without a token is
/// refused, one with a consumer's token reaches the upstream the file
/// names, CORS answers for the allowed origin, and the proxy serves Kong's
/// prometheus metrics (node gauges only: the file switches no per-route
/// metric on, Kong's defaults).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn article002_kong_imports_and_serves() {
    let up = Upstream::start_at("user-service", 19001).await;
    let cp = Cp::start().await;
    let rev = cp
        .post("/config", json!({"config": article("article002-kong.yml")}))
        .await
        .committed();
    // The file has no consumers; one is added the way an operator would.
    cp.post("/consumers", json!({"username": "app"}))
        .await
        .expect(201);
    cp.post(
        "/consumers/app/jwt",
        json!({"key": "app-issuer", "secret": "app-secret-0123456789abcdef0123456789"}),
    )
    .await
    .expect(201);
    let proxy = Proxy::start(&cp, "gantry-article002").await;
    cp.wait_synced(&proxy.node_id, rev + 2, CONVERGE).await;

    let c = http_client();
    let url = format!("{}/api/v1/users", proxy.proxy_url());
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401, "jwt is enforced");
    assert_eq!(up.requests(), 0);

    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"app-secret-0123456789abcdef0123456789"),
        json!({"iss": "app-issuer", "exp": now_s() + 300}),
    );
    let r = c
        .get(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["upstream"], "user-service");
    assert_eq!(seen["path"], "/api/v1/users", "strip_path: false");
    assert_eq!(seen["headers"]["x-consumer-username"], "app");
    assert_eq!(h["x-ratelimit-limit-minute"], "60", "{h:?}");
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    // A method the route does not list is not routed.
    let r = c
        .delete(&url)
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Kong's prometheus: the node gauges, scraped by a real Prometheus.
    let prom = Prometheus::scraping_proxy(&proxy).await;
    let node = &proxy.node_id;
    prom.until(&format!(r#"kong_node_info{{node_id="{node}"}}"#), |v| {
        v == 1.0
    })
    .await;
    prom.until("kong_control_plane_connected", |v| v == 1.0)
        .await;
    prom.until("kong_datastore_reachable", |v| v == 1.0).await;
    prom.until(
        &format!(r#"kong_nginx_requests_total{{node_id="{node}",subsystem="http"}}"#),
        |v| v >= 3.0,
    )
    .await;
    // Per-route series stay off, as the file leaves them.
    prom.until("count(kong_http_requests_total) or vector(0)", |v| v == 0.0)
        .await;
}

/// Every other article file: imported as it is and answering as the
/// article says (authentication enforced where it is configured), or
/// refused where Kong refuses it. `article004-declarative.yml` (Kong's
/// `oauth2`) waits for the OAuth2 work and is not listed here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn article_files_import_and_route() {
    let users = Upstream::start_at("u19001", 19001).await;
    let products = Upstream::start_at("u19002", 19002).await;
    let cp = Cp::start().await;
    let proxy = Proxy::start(&cp, "gantry-articles").await;
    let c = http_client();
    // (file, [(method, path, status)])
    type Checks = &'static [(&'static str, &'static str, u16)];
    let cases: &[(&str, Checks)] = &[
        (
            "article000-template.yml",
            &[
                ("GET", "/v1/users", 401),
                ("POST", "/graphql", 401),
                ("DELETE", "/v1/users", 404),
            ],
        ),
        (
            "article001-kong.yml",
            &[
                ("GET", "/api/v1/users", 401),
                ("GET", "/api/v1/products/1", 200),
            ],
        ),
        ("article002-orders.yml", &[("GET", "/api/v1/orders", 401)]),
        ("article003-catalog.yml", &[("GET", "/api/v1/catalog", 401)]),
        (
            "article004-billing.yml",
            &[
                ("GET", "/api/v1/billing", 401),
                ("POST", "/api/v1/invoices", 404),
            ],
        ),
    ];
    for (file, checks) in cases {
        let rev = cp
            .post("/config", json!({"config": article(file)}))
            .await
            .committed();
        cp.wait_synced(&proxy.node_id, rev, CONVERGE).await;
        for (method, path, status) in *checks {
            let r = c
                .request(
                    method.parse().unwrap(),
                    format!("{}{path}", proxy.proxy_url()),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), *status, "{file}: {method} {path}");
        }
        if *file == "article001-kong.yml" {
            // The product route strips its prefix (strip_path: true).
            let r = c
                .get(format!("{}/api/v1/products/7", proxy.proxy_url()))
                .send()
                .await
                .unwrap();
            let seen: serde_json::Value = r.json().await.unwrap();
            assert_eq!(
                (seen["upstream"].as_str(), seen["path"].as_str()),
                (Some("u19002"), Some("/7"))
            );
        }
    }
    assert!(
        users.requests() == 0,
        "authentication let a request through"
    );
    drop(products);

    // The rename "X-Custom-Auth: Authorization" has a space before the
    // new name: Kong refuses the file, and so does Gantry, naming it.
    let before = cp.revision().await;
    let r = cp
        .post(
            "/config",
            json!({"config": article("article002-transformers.yml")}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.to_string().contains("Authorization"), "{}", r.body);
    assert_eq!(
        cp.revision().await,
        before,
        "a refused file changes nothing"
    );
}
