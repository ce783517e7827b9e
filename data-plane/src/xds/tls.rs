//! The xDS client's TLS: the control plane's CA and this node's client
//! certificate, read from files and re-read when they change.
//!
//! A connection uses the config current when it is made. When the files
//! change to a valid set, subscribers of [`ClientTls::changes`] hear it and
//! the client reconnects with the new certificate; the configuration being
//! served is untouched meanwhile.

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;

/// The files the client's TLS config is made of.
#[derive(Clone, Debug)]
pub struct ClientTlsFiles {
    /// CA certificates the control plane's certificate must chain to.
    pub ca: PathBuf,
    /// This node's certificate chain and key (mutual TLS); both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
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
    #[error("--xds-cert and --xds-key go together")]
    HalfPair,
    #[error("the TLS configuration is refused: {0}")]
    Config(#[from] rustls::Error),
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

impl ClientTlsFiles {
    fn paths(&self) -> Vec<&PathBuf> {
        [Some(&self.ca), self.cert.as_ref(), self.key.as_ref()]
            .into_iter()
            .flatten()
            .collect()
    }

    fn digest(&self) -> Result<u64, TlsError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in self.paths() {
            read(p)?.hash(&mut h);
        }
        Ok(h.finish())
    }

    fn load(&self) -> Result<(Arc<ClientConfig>, u64), TlsError> {
        let digest = self.digest()?;
        let ca = read(&self.ca)?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            let c = c.map_err(|e| pem_err(&self.ca, e))?;
            roots
                .add(c)
                .map_err(|e| pem_err(&self.ca, format!("not a CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(pem_err(&self.ca, "no certificate"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(&read(cert)?)
                        .collect::<Result<_, _>>()
                        .map_err(|e| pem_err(cert, e))?;
                if chain.is_empty() {
                    return Err(pem_err(cert, "no certificate"));
                }
                let private =
                    PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| pem_err(key, e))?;
                // Checks the key is the certificate's: files caught
                // mid-rotation are refused here and retried.
                builder.with_client_auth_cert(chain, private)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::HalfPair),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok((Arc::new(config), digest))
    }
}

/// The client's TLS config, reloaded from its files.
pub struct ClientTls {
    files: ClientTlsFiles,
    current: ArcSwap<ClientConfig>,
    /// Digest of the files in use, and of the last set refused (logged once).
    state: Mutex<(u64, Option<u64>)>,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads the files; an error here stops start-up.
    pub fn load(files: ClientTlsFiles) -> Result<Arc<ClientTls>, TlsError> {
        let (config, digest) = files.load()?;
        Ok(Arc::new(ClientTls {
            files,
            current: ArcSwap::new(config),
            state: Mutex::new((digest, None)),
            changed: watch::channel(0).0,
        }))
    }

    /// Re-reads the files; swaps the config in (and tells subscribers)
    /// when they changed and make a valid set.
    pub fn reload(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.files.digest().unwrap_or(0);
        if now != 0 && now == state.0 {
            return false;
        }
        match self.files.load() {
            Ok((config, digest)) => {
                self.current.store(config);
                *state = (digest, None);
                self.changed.send_modify(|n| *n += 1);
                tracing::info!(files = ?self.files.paths(), "xDS TLS certificates reloaded; reconnecting with them");
                true
            }
            Err(e) => {
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

    /// Ticks each time a new config is swapped in.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A connector for one channel, with the config current now.
    pub fn connector(&self) -> Connector {
        Connector {
            config: self.current.load_full(),
        }
    }
}

/// Dials `https://host:port` and verifies the server's certificate
/// against the URL's host (a DNS name or an IP address).
#[derive(Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("the xDS address has no host")?;
            let port = uri.port_u16().unwrap_or(443);
            // `[::1]` in a URL is `::1` on the wire and in the certificate.
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(bare.to_string())
                .map_err(|e| format!("{host:?} cannot be verified against a certificate: {e}"))?;
            let tcp = TcpStream::connect((bare, port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    struct Pair {
        cert: String,
        key: String,
    }

    fn ca() -> (Issuer<'static, KeyPair>, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        (Issuer::new(p, key), cert.pem())
    }

    fn leaf(issuer: &Issuer<'static, KeyPair>) -> Pair {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["edge-1".to_string()])
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    #[test]
    fn new_files_are_taken_once_consistent_and_announced() {
        let dir = std::env::temp_dir().join(format!("gantry-xds-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (issuer, ca_pem) = ca();
        let files = ClientTlsFiles {
            ca: dir.join("ca.pem"),
            cert: Some(dir.join("node.pem")),
            key: Some(dir.join("node-key.pem")),
        };
        let write = |p: &Option<PathBuf>, s: &str| std::fs::write(p.as_ref().unwrap(), s).unwrap();
        std::fs::write(&files.ca, &ca_pem).unwrap();
        let first = leaf(&issuer);
        write(&files.cert, &first.cert);
        write(&files.key, &first.key);
        let tls = ClientTls::load(files.clone()).unwrap();
        let mut changes = tls.changes();
        assert!(!tls.reload(), "nothing changed");
        assert!(!changes.has_changed().unwrap());

        // A new certificate beside the old key: refused, nothing announced.
        let next = leaf(&issuer);
        write(&files.cert, &next.cert);
        assert!(!tls.reload());
        assert!(!changes.has_changed().unwrap());
        // With its key: taken and announced.
        write(&files.key, &next.key);
        assert!(tls.reload());
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        // A missing file: the last good config stays.
        std::fs::remove_file(&files.ca).unwrap();
        assert!(!tls.reload());
        assert!(!changes.has_changed().unwrap());
        // Half a pair is refused at load.
        std::fs::write(&files.ca, &ca_pem).unwrap();
        let half = ClientTlsFiles { key: None, ..files };
        assert!(matches!(ClientTls::load(half), Err(TlsError::HalfPair)));
        let _ = std::fs::remove_dir_all(dir);
    }
}
