//! xDS over mutual TLS: the server's rustls config, rebuilt from its files
//! when they change, and the TLS connections tonic serves, each carrying
//! its client certificate's names to the ADS streams.
//!
//! Every connection takes the config current at its handshake, so a
//! rotated certificate or CA bundle applies to new connections while open
//! streams carry on (their nodes keep their config).

use super::identity::PeerIdentity;
use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more wait in the accept queue.
const MAX_HANDSHAKES: usize = 512;

/// The files the server's TLS config is made of.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA certificates client certificates must chain to (PEM bundle).
    pub client_ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("the TLS configuration is refused: {0}")]
    Config(#[from] rustls::Error),
    #[error("the client CA bundle is refused: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

struct Loaded {
    config: Arc<ServerConfig>,
    digest: u64,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_err(path: &Path, what: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

fn digest(parts: &[&[u8]]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let (cert, key, ca) = (
        read(&files.cert)?,
        read(&files.key)?,
        read(&files.client_ca)?,
    );
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(&files.cert, e))?;
    if chain.is_empty() {
        return Err(pem_err(&files.cert, "no certificate"));
    }
    let private = PrivateKeyDer::from_pem_slice(&key).map_err(|e| pem_err(&files.key, e))?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        let c = c.map_err(|e| pem_err(&files.client_ca, e))?;
        roots
            .add(c)
            .map_err(|e| pem_err(&files.client_ca, format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(pem_err(&files.client_ca, "no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Mandatory client authentication: no certificate, no connection.
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    // with_single_cert checks that the key is the certificate's: a reload
    // that catches the files mid-rotation fails here and is retried.
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        digest: digest(&[&cert, &key, &ca]),
    })
}

/// The xDS server's TLS config, reloaded from its files.
pub struct ServerTls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    /// Digest of the files in use, and of the last set refused (logged once).
    state: Mutex<(u64, Option<u64>)>,
}

impl ServerTls {
    /// Loads the files; an error here stops start-up.
    pub fn load(files: TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        let l = load(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            current: ArcSwap::new(l.config),
            state: Mutex::new((l.digest, None)),
        }))
    }

    /// Re-reads the files; swaps the config in when they changed and make
    /// a valid set. Returns whether it swapped.
    pub fn reload(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Result<Vec<Vec<u8>>, TlsError> =
            [&self.files.cert, &self.files.key, &self.files.client_ca]
                .into_iter()
                .map(|p| read(p))
                .collect();
        let now = match &bytes {
            Ok(b) => digest(&[&b[0], &b[1], &b[2]]),
            Err(_) => 0,
        };
        if bytes.is_ok() && now == state.0 {
            return false;
        }
        match load(&self.files) {
            Ok(l) => {
                self.current.store(l.config);
                *state = (l.digest, None);
                tracing::info!(cert = %self.files.cert.display(), client_ca = %self.files.client_ca.display(), "xDS TLS certificates reloaded");
                true
            }
            Err(e) => {
                // Files caught mid-rotation usually: keep serving with the
                // old set, say so once per distinct bad set.
                if state.1 != Some(now) {
                    tracing::warn!(error = %e, "xDS TLS files changed but cannot be used; keeping the previous certificates");
                    state.1 = Some(now);
                }
                false
            }
        }
    }

    /// Polls the files every `every` until the task is aborted.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let m = me.clone();
                let _ = tokio::task::spawn_blocking(move || m.reload()).await;
            }
        })
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

/// What an ADS or CSDS request learns about its connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The client certificate's names.
    pub identity: Arc<PeerIdentity>,
}

/// One accepted, authenticated connection.
pub struct TlsConn {
    io: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

async fn handshake(tcp: TcpStream, remote: SocketAddr, tls: &ServerTls) -> Option<TlsConn> {
    let _ = tcp.set_nodelay(true);
    let accept = tls.acceptor().accept(tcp);
    let io = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            // Closed before a word (a TCP health check, a port scan).
            tracing::debug!(peer = %remote, error = %e, "xDS connection closed before the TLS handshake");
            return None;
        }
        Ok(Err(e)) => {
            tracing::warn!(peer = %remote, error = %e, "xDS TLS handshake refused");
            return None;
        }
        Err(_) => {
            tracing::warn!(peer = %remote, "xDS TLS handshake timed out");
            return None;
        }
    };
    // The verifier required a certificate, so there is one.
    let leaf = io.get_ref().1.peer_certificates()?.first()?.clone();
    match PeerIdentity::from_der(&leaf) {
        Ok(identity) => Some(TlsConn {
            io,
            info: PeerInfo {
                remote: Some(remote),
                identity: Arc::new(identity),
            },
        }),
        Err(e) => {
            tracing::warn!(peer = %remote, error = %e, "xDS client certificate refused");
            None
        }
    }
}

/// Accepts TCP connections and yields those whose TLS handshake (client
/// certificate included) succeeds; stops when the receiver is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = tx.closed() => return,
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, usually: let some close.
                    tracing::warn!(error = %e, "xDS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                let conn = handshake(tcp, remote, &tls).await;
                drop(permit);
                if let Some(c) = conn {
                    let _ = tx.send(Ok(c)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;

    #[test]
    fn a_rotation_is_taken_only_once_consistent() {
        let dir = std::env::temp_dir().join(format!("gantry-tls-{}", uuid::Uuid::new_v4()));
        let ca = certs::new_ca("gantry", 1).unwrap();
        let (ca_path, _) = certs::write_pair(&dir, "ca", &ca).unwrap();
        let issue = || certs::issue_server(&ca.cert_pem, &ca.key_pem, &["x".into()], 1).unwrap();
        let (cert, key) = certs::write_pair(&dir, "server", &issue()).unwrap();
        let tls = ServerTls::load(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: ca_path,
        })
        .unwrap();
        let first = tls.current.load_full();
        assert!(!tls.reload(), "nothing changed");

        // Caught mid-rotation: a new certificate beside the old key.
        let next = issue();
        certs::write_atomic(&cert, next.cert_pem.as_bytes(), 0o644).unwrap();
        assert!(
            !tls.reload(),
            "a key that is not the certificate's is refused"
        );
        assert!(Arc::ptr_eq(&first, &tls.current.load_full()));
        // Its key arrives: taken.
        certs::write_atomic(&key, next.key_pem.as_bytes(), 0o600).unwrap();
        assert!(tls.reload());
        assert!(!Arc::ptr_eq(&first, &tls.current.load_full()));
        // A truncated file is refused too, and the last good set stays.
        let good = tls.current.load_full();
        std::fs::write(&cert, &next.cert_pem.as_bytes()[..40]).unwrap();
        assert!(!tls.reload());
        assert!(Arc::ptr_eq(&good, &tls.current.load_full()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
