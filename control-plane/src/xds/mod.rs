//! The xDS server: config revisions translated into Envoy resources and
//! streamed over ADS, state-of-the-world and delta, with the fleet's sync
//! state kept per node and type, and CSDS for standard tooling.

pub mod cache;
mod csds;
mod delta;
pub mod fleet;
mod grpc;
mod held;
pub mod identity;
mod requests;
mod session;
mod sotw;
pub mod tls;
mod versions;

pub use cache::{SnapshotCache, Snapshots};
pub use fleet::{Fleet, SyncState};

use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What every stream needs.
pub struct XdsContext {
    pub cache: SnapshotCache,
    pub fleet: Arc<Fleet>,
    /// Where a node's advertised admin endpoint may be, beyond the address
    /// its xDS connection comes from (see [`session::admin_target`]).
    pub admin_networks: Vec<ipnet::IpNet>,
    /// The SPIFFE trust domain when nodes must prove their node id with a
    /// client certificate (xDS over mutual TLS); `None` on plaintext xDS.
    pub trust_domain: Option<String>,
}

/// How the xDS port is served.
pub enum Transport {
    /// Plaintext HTTP/2 (loopback, or `--xds-insecure`).
    Plain,
    /// Mutual TLS: every connection presents a client certificate, and
    /// every stream's node id must be named by it.
    MutualTls(Arc<tls::ServerTls>),
}

/// Serves ADS and CSDS on `listener` over plaintext until `shutdown`
/// resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<XdsContext>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_on(listener, Transport::Plain, ctx, shutdown).await
}

/// Serves ADS and CSDS on `listener` with `transport` until `shutdown`
/// resolves.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    transport: Transport,
    ctx: Arc<XdsContext>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let ads = grpc::Ads {
        ctx: ctx.clone(),
        stop,
    };
    // Open streams never finish by themselves: end them when told to stop,
    // or the server would wait for them forever.
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let csds = csds::Csds { ctx };
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(ads)
        .add_service(ClientStatusDiscoveryServiceServer::new(csds));
    match transport {
        Transport::Plain => {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    shutdown,
                )
                .await
        }
        Transport::MutualTls(t) => {
            router
                .serve_with_incoming_shutdown(tls::incoming(listener, t), shutdown)
                .await
        }
    }
}

/// Binds the xDS address (kept separate so callers learn the port early).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
