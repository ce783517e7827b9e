//! The xDS server: config revisions translated into Envoy resources and
//! streamed over ADS, state-of-the-world and delta, with the fleet's sync
//! state kept per node and type, and CSDS for standard tooling.

pub mod cache;
mod csds;
mod delta;
pub mod fleet;
mod session;
mod sotw;

pub use cache::{SnapshotCache, Snapshots};
pub use fleet::Fleet;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// What every stream needs.
pub struct XdsContext {
    pub cache: SnapshotCache,
    pub fleet: Arc<Fleet>,
}

#[derive(Clone)]
pub struct AdsServer {
    ctx: Arc<XdsContext>,
    stop: tokio::sync::watch::Receiver<bool>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Responses queued per stream before back-pressure reaches the snapshot
/// watcher; a slow node then simply gets the newest snapshot later.
const STREAM_BUFFER: usize = 16;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(session::drive::<sotw::Stream>(
            self.ctx.clone(),
            request.into_inner(),
            tx,
            self.stop.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(session::drive::<delta::Stream>(
            self.ctx.clone(),
            request.into_inner(),
            tx,
            self.stop.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves ADS and CSDS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<XdsContext>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let ads = AdsServer {
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
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(
            AggregatedDiscoveryServiceServer::new(ads)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(256 * 1024 * 1024),
        )
        .add_service(ClientStatusDiscoveryServiceServer::new(csds))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// Binds the xDS address (kept separate so callers learn the port early).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
