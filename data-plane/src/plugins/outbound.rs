//! Clients for what plugins call themselves (JWKS endpoints, log servers):
//! HTTP or HTTPS with the proxy's hyper client, HTTPS peers verified
//! against the system's CA bundle and valid for the URL's host.

use crate::upstream::{UpstreamClient, UpstreamTls, UpstreamVerify};
use std::sync::Arc;
use std::time::Duration;

/// Where the system CA bundle usually is (`SSL_CERT_FILE` first).
const CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

pub fn system_roots() -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    let env = std::env::var("SSL_CERT_FILE").ok();
    env.iter()
        .map(String::as_str)
        .chain(CA_FILES.iter().copied())
        .find_map(|p| {
            let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(p)
                .ok()?
                .filter_map(Result::ok)
                .collect();
            (!certs.is_empty()).then_some(certs)
        })
        .unwrap_or_default()
}

/// A client for `http` or (`https`) URLs.
pub fn client(https: bool, connect: Duration) -> Result<UpstreamClient, String> {
    if !https {
        return Ok(UpstreamClient::new(connect, false, None, None));
    }
    let roots = system_roots();
    if roots.is_empty() {
        return Err("no system CA certificates found: https cannot be verified".into());
    }
    let tls = UpstreamTls {
        sni: None,
        auto_sni: false,
        auto_san_validation: true,
        auto_host_sni: false,
        alpn: vec![b"http/1.1".to_vec()],
        verify: Some(UpstreamVerify {
            trusted_ca: roots,
            san: Vec::new(),
            max_depth: None,
            accept_untrusted: false,
        }),
        client_certificate: None,
    };
    Ok(UpstreamClient::new(connect, false, Some(&tls), None))
}

/// TLS to a log server over a plain socket, verified against the system's CAs.
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut store = rustls::RootCertStore::empty();
    for c in system_roots() {
        let _ = store.add(c);
    }
    if store.is_empty() {
        return Err("no system CA certificates found: TLS cannot be verified".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
