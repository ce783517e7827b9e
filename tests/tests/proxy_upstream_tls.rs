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

/// A throwaway PKI made with the openssl CLI: a CA, a server certificate
/// for `localhost` and a client certificate it signed, and an unrelated CA.
struct Pki {
    ca: String,
    other_ca: String,
    server: (String, String),
    client: (String, String),
}

fn openssl(dir: &std::path::Path, args: &[String]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn pki() -> Pki {
    let dir = gantry_e2e::TempDir::new("gantry-e2e-pki");
    let d = dir.path();
    let read = |f: &str| std::fs::read_to_string(d.join(f)).expect("read pem");
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for ca in ["ca", "other"] {
        let mut a = args(&format!(
            "req -x509 {ec} -days 2 -keyout {ca}.key -out {ca}.crt \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
        a.extend(["-subj".into(), format!("/CN=Gantry e2e {ca} CA")]);
        openssl(d, &a);
    }
    for (name, ext) in [
        (
            "server",
            "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        ),
        (
            "client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        ),
    ] {
        std::fs::write(d.join(format!("{name}.ext")), ext).expect("ext file");
        openssl(
            d,
            &args(&format!(
                "req {ec} -subj /CN=gantry-e2e-{name} -keyout {name}.key -out {name}.csr"
            )),
        );
        openssl(
            d,
            &args(&format!(
                "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
                 -extfile {name}.ext -out {name}.crt"
            )),
        );
    }
    Pki {
        ca: read("ca.crt"),
        other_ca: read("other.crt"),
        server: (read("server.crt"), read("server.key")),
        client: (read("client.crt"), read("client.key")),
    }
}

/// A TLS upstream serving `server`, asking for a client certificate signed
/// by `client_ca` (and refusing the handshake without one); answers with
/// the client certificate's subject seen.
async fn mtls_upstream(server: &(String, String), client_ca: &str) -> u16 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(server.0.as_bytes())
        .collect::<Result<_, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(server.1.as_bytes()).expect("key");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
        roots.add(c.expect("ca")).expect("add ca");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("client verifier");
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("tls config");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.len())
                    .unwrap_or(0);
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        format!("client certificates: {client}"),
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

/// Kong's `tls_verify` + `ca_certificates` + `client_certificate`, through
/// gantry-proxy and a real Envoy from the same control plane: a verified
/// upstream answers; a CA that did not sign it, or a missing client
/// certificate, fails the handshake (503) on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_upstream_tls_with_client_certificates_like_envoy() {
    let pki = pki();
    let port = mtls_upstream(&pki.server, &pki.ca).await;
    let cp = Cp::start().await;
    let mut envoy = gantry_e2e::Envoy::spawn(&cp, "envoy-mtls", true);
    let proxy = Proxy::start(&cp, "gantry-mtls").await;
    envoy.wait_ready(&cp, Duration::from_secs(15)).await;
    let ca = cp
        .post("/ca_certificates", json!({"cert": pki.ca}))
        .await
        .expect(201);
    let other = cp
        .post("/ca_certificates", json!({"cert": pki.other_ca}))
        .await
        .expect(201);
    let client = cp
        .post(
            "/certificates",
            json!({"cert": pki.client.0, "key": pki.client.1}),
        )
        .await
        .expect(201);
    let url = format!("https://localhost:{port}");
    let services = [
        ("verified", json!([ca["id"]]), Some(client["id"].clone())),
        ("wrong-ca", json!([other["id"]]), Some(client["id"].clone())),
        ("no-client-cert", json!([ca["id"]]), None),
    ];
    let mut rev = 0;
    for (name, cas, cert) in &services {
        let mut body =
            json!({"name": name, "url": url, "tls_verify": true, "ca_certificates": cas});
        if let Some(c) = cert {
            body["client_certificate"] = json!({"id": c});
        }
        cp.post("/services", body).await.expect(201);
        rev = cp
            .post(
                &format!("/services/{name}/routes"),
                json!({"name": name, "paths": [format!("/{name}")]}),
            )
            .await
            .committed();
    }
    cp.wait_synced(&envoy.node_id, rev, Duration::from_secs(15))
        .await;
    cp.wait_synced(&proxy.node_id, rev, Duration::from_secs(15))
        .await;

    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for (who, base) in [
        ("envoy", envoy.proxy_url()),
        ("gantry-proxy", proxy.proxy_url()),
    ] {
        let get = |path: &str| {
            let req = http.get(format!("{base}{path}"));
            async move {
                let r = req.send().await.expect("request");
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            }
        };
        // Clusters can still be warming for a moment after the ACK.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (status, body) = loop {
            let got = get("/verified").await;
            if got.0 == 200 || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            (status, body.as_str()),
            (200, "client certificates: 1"),
            "{who}: a verified upstream, with the client certificate presented"
        );
        let (status, body) = get("/wrong-ca").await;
        assert_eq!(
            status, 503,
            "{who}: an upstream signed by another CA: {body}"
        );
        let (status, body) = get("/no-client-cert").await;
        assert_eq!(
            status, 503,
            "{who}: no client certificate for an mTLS upstream: {body}"
        );
    }
}
