//! gantry-proxy to a TLS upstream: a service with an `https` url is
//! reached over TLS with the service host as SNI.

use gantry_e2e::{Cp, Proxy};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CERT: &str = include_str!("../fixtures/tls/secure.example.com.rsa.crt");
const KEY: &str = include_str!("../fixtures/tls/secure.example.com.rsa.key");

/// A TLS upstream that answers with the SNI and path it saw.
async fn tls_upstream() -> (u16, Arc<Mutex<Vec<String>>>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(CERT.as_bytes())
        .collect::<Result<_, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).expect("key");
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("tls config");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let line = format!("{sni} {}", req.uri().path());
                        seen.lock().expect("lock").push(line.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(line),
                            )))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_services_are_reached_over_tls_with_sni() {
    let (port, seen) = tls_upstream().await;
    let cp = Cp::start().await;
    let proxy = Proxy::start(&cp, "tls-upstream").await;
    cp.post(
        "/services",
        json!({"name": "secure", "url": format!("https://localhost:{port}/api")}),
    )
    .await
    .expect(201);
    cp.post(
        "/services/secure/routes",
        json!({"name": "secure", "paths": ["/secure"]}),
    )
    .await
    .expect(201);
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let r = proxy
            .request(reqwest::Method::GET, "/secure/x")
            .send()
            .await
            .expect("request");
        if r.status() == 200 {
            break r.text().await.expect("body");
        }
        let status = r.status();
        assert!(
            Instant::now() < deadline,
            "never reached the TLS upstream: {status} {}",
            r.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        body, "localhost /api/x",
        "SNI is the service host, the path is rewritten"
    );
    assert!(
        seen.lock()
            .expect("lock")
            .iter()
            .all(|l| l.starts_with("localhost "))
    );
}
