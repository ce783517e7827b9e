//! Where the log plugins send their entries, as Kong's handlers do:
//! http-log POSTs one JSON object (a batch of one) or a JSON array;
//! file-log appends a line per entry; tcp-log writes a line per entry on
//! a kept-alive connection (TLS optional); udp-log sends a datagram per
//! entry.

use crate::upstream::UpstreamClient;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::io::Write as _;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub enum Sink {
    Http(Box<Http>),
    File(File),
    Tcp(Tcp),
    Udp(Udp),
}

impl Sink {
    pub fn kind(&self) -> &'static str {
        match self {
            Sink::Http(_) => "http-log",
            Sink::File(_) => "file-log",
            Sink::Tcp(_) => "tcp-log",
            Sink::Udp(_) => "udp-log",
        }
    }

    pub async fn send(&mut self, batch: &[Bytes], max_batch_size: usize) -> Result<(), String> {
        match self {
            Sink::Http(h) => h.send(batch, max_batch_size).await,
            Sink::File(f) => f.send(batch).await,
            Sink::Tcp(t) => t.send(batch).await,
            Sink::Udp(u) => u.send(batch).await,
        }
    }
}

pub struct Http {
    pub uri: http::Uri,
    pub method: http::Method,
    pub content_type: http::HeaderValue,
    /// `Basic` credentials from the endpoint's user info.
    pub authorization: Option<http::HeaderValue>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub timeout: Duration,
    pub client: UpstreamClient,
}

impl Http {
    async fn send(&mut self, batch: &[Bytes], max_batch_size: usize) -> Result<(), String> {
        // Kong: with batches of one, the entry itself; else a JSON array.
        let body = match (max_batch_size, batch) {
            (1, [one]) => one.clone(),
            _ => {
                let mut b =
                    Vec::with_capacity(batch.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
                b.push(b'[');
                for (i, e) in batch.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    b.extend_from_slice(e);
                }
                b.push(b']');
                Bytes::from(b)
            }
        };
        let mut req = http::Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .header(http::header::CONTENT_TYPE, self.content_type.clone())
            .header(http::header::CONTENT_LENGTH, body.len());
        if let Some(a) = &self.authorization {
            req = req.header(http::header::AUTHORIZATION, a.clone());
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body).map_err(|e| match e {}).boxed())
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| {
                format!(
                    "failed request to {}: {e}",
                    self.uri.authority().map_or("", |a| a.as_str())
                )
            })?;
        let status = resp.status();
        // Read the answer so the connection can be reused.
        let _ = tokio::time::timeout(self.timeout, resp.into_body().collect()).await;
        if status.as_u16() < 300 {
            Ok(())
        } else {
            Err(format!("log server answered {status}"))
        }
    }
}

pub struct File {
    pub path: std::path::PathBuf,
    pub reopen: bool,
    pub file: Option<std::fs::File>,
}

impl File {
    async fn send(&mut self, batch: &[Bytes]) -> Result<(), String> {
        let mut buf = Vec::with_capacity(batch.iter().map(|e| e.len() + 1).sum());
        for e in batch {
            buf.extend_from_slice(e);
            buf.push(b'\n');
        }
        let mut file = match (self.file.take(), self.reopen) {
            (Some(f), false) => f,
            _ => open_append(&self.path)?,
        };
        let (file, written) = tokio::task::spawn_blocking(move || {
            let r = file.write_all(&buf);
            (file, r)
        })
        .await
        .map_err(|e| e.to_string())?;
        match written {
            Ok(()) => {
                self.file = Some(file);
                Ok(())
            }
            // Reopened on the next batch (the file may have been rotated away).
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }
}

fn open_append(path: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

type TcpStream = Box<dyn tokio::io::AsyncWrite + Send + Sync + Unpin>;

pub struct Tcp {
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
    pub keepalive: Duration,
    /// TLS to the log server, verified against the system's CAs, with
    /// this server name (`tls_sni`, else the host).
    pub tls: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    )>,
    pub conn: Option<(TcpStream, std::time::Instant)>,
}

impl Tcp {
    async fn send(&mut self, batch: &[Bytes]) -> Result<(), String> {
        let mut buf = Vec::with_capacity(batch.iter().map(|e| e.len() + 1).sum());
        for e in batch {
            buf.extend_from_slice(e);
            buf.push(b'\n');
        }
        let fresh = match self.conn.take() {
            Some((c, used)) if used.elapsed() < self.keepalive => Some(c),
            _ => None,
        };
        let mut conn = match fresh {
            Some(c) => c,
            None => self.connect().await?,
        };
        let wrote = tokio::time::timeout(self.timeout, async {
            conn.write_all(&buf).await?;
            conn.flush().await
        })
        .await;
        match wrote {
            Ok(Ok(())) => {
                self.conn = Some((conn, std::time::Instant::now()));
                Ok(())
            }
            Ok(Err(e)) => Err(format!("{}:{}: {e}", self.host, self.port)),
            Err(_) => Err(format!("{}:{}: timed out", self.host, self.port)),
        }
    }

    async fn connect(&self) -> Result<TcpStream, String> {
        let addr = (self.host.as_str(), self.port);
        let tcp = tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{}:{}: connect timed out", self.host, self.port))?
            .map_err(|e| format!("{}:{}: {e}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((config, name)) => {
                let tls =
                    tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), tcp);
                let s = tokio::time::timeout(self.timeout, tls)
                    .await
                    .map_err(|_| format!("{}:{}: TLS handshake timed out", self.host, self.port))?
                    .map_err(|e| format!("{}:{}: TLS: {e}", self.host, self.port))?;
                Ok(Box::new(s))
            }
        }
    }
}

pub struct Udp {
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
    pub socket: Option<tokio::net::UdpSocket>,
}

impl Udp {
    async fn send(&mut self, batch: &[Bytes]) -> Result<(), String> {
        let socket = match self.socket.take() {
            Some(s) => s,
            None => {
                let s = tokio::net::UdpSocket::bind("0.0.0.0:0")
                    .await
                    .map_err(|e| e.to_string())?;
                s.connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|e| format!("{}:{}: {e}", self.host, self.port))?;
                s
            }
        };
        for e in batch {
            tokio::time::timeout(self.timeout, socket.send(e))
                .await
                .map_err(|_| format!("{}:{}: timed out", self.host, self.port))?
                .map_err(|e| format!("{}:{}: {e}", self.host, self.port))?;
        }
        self.socket = Some(socket);
        Ok(())
    }
}
