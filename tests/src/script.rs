//! A scripted delta-ADS server: serves what the test puts in, records
//! every request, and pushes updates on demand.

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

type Tx = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

#[derive(Default)]
struct Inner {
    /// type url → name → (version, resource)
    resources: BTreeMap<String, BTreeMap<String, (String, Any)>>,
    version: String,
    stream: Option<Tx>,
    requests: Vec<DeltaDiscoveryRequest>,
    nonce: u64,
}

#[derive(Clone, Default)]
pub struct Ads {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

impl Ads {
    /// Sets what the server holds (nothing is pushed).
    pub fn set(&self, version: &str, type_url: &str, items: Vec<(String, Any)>) {
        let mut g = self.inner.lock().unwrap();
        g.version = version.to_string();
        let m = g.resources.entry(type_url.to_string()).or_default();
        for (name, any) in items {
            m.insert(name, (version.to_string(), any));
        }
    }

    /// Pushes resources of one type on the open stream; returns the nonce.
    pub async fn push(&self, version: &str, type_url: &str, items: Vec<(String, Any)>) -> String {
        self.set(version, type_url, items.clone());
        let (tx, resp) = {
            let mut g = self.inner.lock().unwrap();
            g.nonce += 1;
            let resp = DeltaDiscoveryResponse {
                system_version_info: version.to_string(),
                type_url: type_url.to_string(),
                nonce: format!("n{}", g.nonce),
                resources: items
                    .into_iter()
                    .map(|(name, any)| Resource {
                        name,
                        version: version.to_string(),
                        resource: Some(any),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            (g.stream.clone().expect("a stream is open"), resp)
        };
        let nonce = resp.nonce.clone();
        tx.send(Ok(resp)).await.expect("stream open");
        nonce
    }

    /// Waits for the request answering `nonce` (an ACK or a NACK).
    pub async fn reply_to(&self, nonce: &str, timeout: Duration) -> DeltaDiscoveryRequest {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if let Some(r) = self
                .inner
                .lock()
                .unwrap()
                .requests
                .iter()
                .find(|r| r.response_nonce == nonce)
            {
                return r.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no reply to nonce {nonce} within {timeout:?}; requests: {:#?}",
                    self.requests()
                );
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }

    pub fn requests(&self) -> Vec<DeltaDiscoveryRequest> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Serves on a fresh local port; returns the address (`http://...`)
    /// and the server task (abort it to stop).
    pub async fn serve(&self) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the scripted xDS server");
        let port = listener.local_addr().expect("addr").port();
        let incoming = futures::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        let svc = self.service();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        (format!("http://127.0.0.1:{port}"), task)
    }

    pub fn service(&self) -> AggregatedDiscoveryServiceServer<Ads> {
        AggregatedDiscoveryServiceServer::new(self.clone())
    }

    /// Answers a subscription (a request without a nonce).
    fn answer(&self, req: &DeltaDiscoveryRequest) -> Option<(Tx, DeltaDiscoveryResponse)> {
        let mut g = self.inner.lock().unwrap();
        let tx = g.stream.clone()?;
        let held = g.resources.get(&req.type_url).cloned().unwrap_or_default();
        let wildcard = gantry_shared::xds::is_wildcard_type(&req.type_url);
        let resources: Vec<Resource> = held
            .into_iter()
            .filter(|(n, _)| wildcard || req.resource_names_subscribe.contains(n))
            .map(|(name, (version, any))| Resource {
                name,
                version,
                resource: Some(any),
                ..Default::default()
            })
            .collect();
        if resources.is_empty() && !wildcard {
            return None;
        }
        g.nonce += 1;
        Some((
            tx,
            DeltaDiscoveryResponse {
                system_version_info: g.version.clone(),
                type_url: req.type_url.clone(),
                nonce: format!("n{}", g.nonce),
                resources,
                ..Default::default()
            },
        ))
    }
}

type DeltaStream =
    Pin<Box<dyn futures::Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;
type SotwStream = Pin<Box<dyn futures::Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        _: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Err(Status::unimplemented("delta only"))
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        self.inner.lock().unwrap().stream = Some(tx);
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                me.inner.lock().unwrap().requests.push(r.clone());
                me.notify.notify_waiters();
                if r.response_nonce.is_empty()
                    && let Some((tx, resp)) = me.answer(&r)
                {
                    let _ = tx.send(Ok(resp)).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
