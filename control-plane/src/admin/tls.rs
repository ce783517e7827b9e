//! The admin API over TLS (`--admin-tls-cert`, `--admin-tls-key`). The
//! certificate is re-read when its files change, so a renewed one is
//! served without a restart; a new pair that does not load is logged and
//! the previous one kept.

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the key does not fit: {0}")]
    Key(rustls::Error),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// Reads a certificate chain and its key, checking that they match.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            path: cert.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        path: key.to_path_buf(),
        source,
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, der, &provider).map_err(TlsError::Key)
}

/// Serves whatever certificate was loaded last.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What identifies a file's version: modification time and length.
fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl ReloadingCert {
    /// Loads the pair; fails when it does not load now.
    pub fn open(cert: PathBuf, key: PathBuf) -> Result<Arc<ReloadingCert>, TlsError> {
        let ck = load(&cert, &key)?;
        Ok(Arc::new(ReloadingCert {
            cert,
            key,
            current: ArcSwap::from_pointee(ck),
        }))
    }

    /// Checks the files every `every` and swaps in a changed pair.
    pub fn spawn_watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut seen = (stamp(&me.cert), stamp(&me.key));
            loop {
                tokio::time::sleep(every).await;
                let now = (stamp(&me.cert), stamp(&me.key));
                if now == seen {
                    continue;
                }
                // Remembered even when loading fails: the next write to
                // either file is tried again, a broken one is logged once.
                seen = now;
                match load(&me.cert, &me.key) {
                    Ok(ck) => {
                        me.current.store(Arc::new(ck));
                        tracing::info!(cert = %me.cert.display(), "admin API certificate reloaded");
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "admin API certificate not reloaded; serving the previous one"
                    ),
                }
            }
        })
    }

    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let mut cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|b| b.with_no_client_auth().with_cert_resolver(self.clone()))
                // The ring provider supports the default versions.
                .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

/// A listener whose connections have finished their TLS handshake.
/// Handshakes run in their own tasks, so a slow client holds up no one.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: wait, then go on.
                        tracing::warn!(error = %e, "admin API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "admin API TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "admin API TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            rx,
            local,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task ended (it does not, unless aborted): no more
            // connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn a_pair_loads_only_when_the_key_fits_the_certificate() {
        let rsa = (
            fixture("secure.example.com.rsa.crt"),
            fixture("secure.example.com.rsa.key"),
        );
        let ec = (
            fixture("secure.example.com.ec.crt"),
            fixture("secure.example.com.ec.key"),
        );
        assert!(load(&rsa.0, &rsa.1).is_ok());
        assert!(load(&ec.0, &ec.1).is_ok());
        assert!(matches!(load(&rsa.0, &ec.1), Err(TlsError::Key(_))));
        assert!(matches!(
            load(&rsa.1, &rsa.1),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(matches!(
            load(&fixture("missing.crt"), &rsa.1),
            Err(TlsError::Pem { .. })
        ));
    }
}
