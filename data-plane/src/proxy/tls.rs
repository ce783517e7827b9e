//! Downstream TLS: the certificate is chosen per handshake from the
//! current runtime by SNI, so a rotated certificate applies to the next
//! handshake without a restart.

use super::runtime::Shared;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

struct SniResolver {
    shared: Arc<Shared>,
    listener: Arc<str>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SniResolver({})", self.listener)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let rt = self.shared.current();
        let l = rt.listeners.get(self.listener.as_ref())?;
        let tls = l.tls.as_ref()?;
        let chain = tls.select(hello.server_name())?;
        rt.compiled.certificates.get(&chain.secret).cloned()
    }
}

pub fn acceptor(shared: Arc<Shared>, listener: Arc<str>) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let alpn = {
        let rt = shared.current();
        rt.listeners
            .get(listener.as_ref())
            .and_then(|l| l.tls.as_ref())
            .and_then(|t| t.chains.first())
            .map(|c| c.alpn.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| vec![b"h2".to_vec(), b"http/1.1".to_vec()])
    };
    let mut cfg = match rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver { shared, listener })),
        Err(e) => {
            tracing::error!(error = %e, "TLS provider has no protocol versions");
            return TlsAcceptor::from(Arc::new(
                rustls::ServerConfig::builder()
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(NoCert)),
            ));
        }
    };
    cfg.alpn_protocols = alpn;
    TlsAcceptor::from(Arc::new(cfg))
}

#[derive(Debug)]
struct NoCert;

impl ResolvesServerCert for NoCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}
