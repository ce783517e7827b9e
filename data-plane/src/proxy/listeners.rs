//! Listeners added and removed at run time. New addresses are bound before
//! a config is accepted (a bind failure refuses the config); removed ones
//! stop accepting and drain their connections.

use super::handler::{self, ConnInfo};
use super::request_head::Watched;
use super::runtime::Shared;
use super::tls;
use crate::config::{HttpLimits, ListenerConfig};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Active {
    addr: SocketAddr,
    tls: bool,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Default)]
pub struct ListenerSet {
    active: HashMap<String, Active>,
}

pub struct Plan {
    start: Vec<(String, SocketAddr, bool, std::net::TcpListener)>,
    stop: Vec<String>,
}

fn offset_addr(a: SocketAddr, offset: i32) -> Result<SocketAddr, String> {
    let port = i32::from(a.port()) + offset;
    let port = u16::try_from(port)
        .map_err(|_| format!("port {} + offset {offset} is out of range", a.port()))?;
    Ok(SocketAddr::new(a.ip(), port))
}

impl ListenerSet {
    /// Binds what is new; nothing changes until `commit`.
    pub fn plan(&self, wanted: &[ListenerConfig], offset: i32) -> Result<Plan, String> {
        let mut start = Vec::new();
        let mut keep = std::collections::HashSet::new();
        for l in wanted {
            let addr = offset_addr(l.address, offset)?;
            let tls = l.tls.is_some();
            if let Some(a) = self.active.get(&l.name)
                && a.addr == addr
                && a.tls == tls
            {
                keep.insert(l.name.clone());
                continue;
            }
            let sock = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("Listener {}: cannot bind {addr}: {e}", l.name))?;
            sock.set_nonblocking(true)
                .map_err(|e| format!("Listener {}: {e}", l.name))?;
            start.push((l.name.clone(), addr, tls, sock));
        }
        let stop = self
            .active
            .keys()
            .filter(|n| !keep.contains(*n))
            .cloned()
            .collect();
        Ok(Plan { start, stop })
    }

    pub fn commit(&mut self, plan: Plan, shared: &Arc<Shared>) {
        for name in plan.stop {
            if let Some(a) = self.active.remove(&name) {
                tracing::info!(listener = %name, addr = %a.addr, "listener removed; draining");
                let _ = a.stop.send(true);
            }
        }
        for (name, addr, is_tls, sock) in plan.start {
            let (stop, rx) = watch::channel(false);
            let task = tokio::spawn(serve(name.clone(), sock, is_tls, shared.clone(), rx));
            tracing::info!(listener = %name, %addr, tls = is_tls, "listener started");
            self.active.insert(
                name,
                Active {
                    addr,
                    tls: is_tls,
                    stop,
                    task,
                },
            );
        }
    }

    pub fn stop_all(&mut self) -> Vec<JoinHandle<()>> {
        self.active
            .drain()
            .map(|(_, a)| {
                let _ = a.stop.send(true);
                a.task
            })
            .collect()
    }
}

/// A connection's HTTP settings: Envoy's limits on the request line and
/// headers (431 past them) and the time allowed to send them.
fn connection_builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    let mut h1 = b.http1();
    h1.timer(TokioTimer::new())
        // The exact limit is checked on the parsed head (`codec_rules`);
        // this bounds what is buffered before that.
        .max_buf_size((limits.max_request_headers + 4096).max(8192))
        .max_headers(limits.max_headers)
        // `request_headers_timeout` is Envoy's, from a head's first byte
        // (`request_head`). hyper's own timer also runs while a kept-alive
        // connection waits for its next request: set to the stream idle
        // timeout, it bounds idle connections and half-sent heads when
        // `request_headers_timeout` is off (Envoy then ends those with its
        // 408 `stream timeout`).
        .header_read_timeout(limits.stream_idle_timeout);
    b.http2()
        .max_header_list_size(u32::try_from(limits.max_request_headers).unwrap_or(u32::MAX));
    b
}

async fn serve(
    name: String,
    sock: std::net::TcpListener,
    is_tls: bool,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(sock) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listener = %name, error = %e, "cannot serve listener");
            return;
        }
    };
    let name: Arc<str> = Arc::from(name);
    let acceptor = is_tls.then(|| tls::acceptor(shared.clone(), name.clone()));
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(listener = %name, error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let info = ConnInfo::new(name.clone(), remote, is_tls);
                let framing = info.framing.clone();
                // The limits of the config current when the connection opens.
                let limits = shared
                    .current()
                    .listeners
                    .get(name.as_ref())
                    .map(|l| l.limits.clone())
                    .unwrap_or_default();
                let builder = connection_builder(&limits);
                let head_timeout = limits.request_headers_timeout;
                let watcher = graceful.watcher();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    shared.stats.downstream_cx_active.inc();
                    shared.stats.downstream_cx_total.inc();
                    let svc_shared = shared.clone();
                    let svc = hyper::service::service_fn(move |req| handler::handle(req, info.clone(), svc_shared.clone()));
                    match acceptor {
                        None => {
                            let stream = Watched::new(stream, framing, head_timeout);
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                        Some(acc) => match acc.accept(stream).await {
                            Ok(tls_stream) => {
                                let tls_stream = Watched::new(tls_stream, framing, head_timeout);
                                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), svc);
                                let _ = watcher.watch(conn.into_owned()).await;
                            }
                            Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                        },
                    }
                    shared.stats.downstream_cx_active.dec();
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let timeout = shared.options.drain_timeout;
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, ?timeout, "drain timeout: closing remaining connections");
    }
}
