//! CSDS (`envoy.service.status.v3.ClientStatusDiscoveryService`): what each
//! node on this replica was sent and whether it ACKed it, for standard
//! xDS tooling.

use super::XdsContext;
use super::fleet::{ControlPlaneId, NodeEntry, SyncState};
use envoy_types::pb::envoy::admin::v3::UpdateFailureState;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryService;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::Struct;
use envoy_types::pb::google::protobuf::Timestamp;
use gantry_shared::proto::value::{object, string};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub struct Csds {
    pub ctx: Arc<XdsContext>,
}

fn matches(req: &ClientStatusRequest, n: &NodeEntry) -> bool {
    req.node_matchers.iter().all(|m| {
        match m.node_id.as_ref().and_then(|s| s.match_pattern.as_ref()) {
            Some(MatchPattern::Exact(id)) => &n.node_id == id,
            Some(MatchPattern::Prefix(p)) => n.node_id.starts_with(p.as_str()),
            _ => true,
        }
    })
}

fn status_of(s: SyncState) -> ConfigStatus {
    match s {
        SyncState::Synced => ConfigStatus::Synced,
        SyncState::Stale => ConfigStatus::Stale,
        SyncState::Nacked => ConfigStatus::Error,
        SyncState::NotSent => ConfigStatus::NotSent,
    }
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// The refusal a NACKed type carries, as Envoy reports its own (the
/// reason is the node's `error_detail`, verbatim).
fn error_state(s: &super::fleet::TypeStatus) -> Option<UpdateFailureState> {
    if s.state != SyncState::Nacked {
        return None;
    }
    let nack = s.last_nack.as_ref()?;
    Some(UpdateFailureState {
        failed_configuration: None,
        last_update_attempt: Some(timestamp(nack.at)),
        details: nack.error.clone(),
        version_info: nack.version.clone(),
    })
}

/// Which replica the node is on, as node metadata: CSDS is answered per
/// replica, and tooling that asks several can tell the answers apart.
fn replica_metadata(cp: &ControlPlaneId) -> Struct {
    let replica = object([
        ("id".to_string(), string(&cp.id)),
        ("hostname".to_string(), string(&cp.hostname)),
        ("xds_listen".to_string(), string(&cp.xds_listen)),
    ]);
    Struct {
        fields: [("gantry_control_plane".to_string(), replica)].into(),
    }
}

fn client_config(n: &NodeEntry, cp: &ControlPlaneId, with_contents: bool) -> ClientConfig {
    let mut generic = Vec::new();
    for (t, s) in &n.types {
        let error = error_state(s);
        for r in &s.resources {
            generic.push(GenericXdsConfig {
                type_url: t.to_string(),
                name: r.name.to_string(),
                version_info: s.version_sent.clone().unwrap_or_default(),
                // Secrets are the node's, not the reader's.
                xds_config: with_contents.then(|| gantry_shared::redact::resource(&r.any)),
                last_updated: Some(timestamp(s.sent_at)),
                config_status: status_of(s.state) as i32,
                error_state: error.clone(),
                ..Default::default()
            });
        }
    }
    ClientConfig {
        node: Some(Node {
            id: n.node_id.clone(),
            cluster: n.group.clone(),
            metadata: Some(replica_metadata(cp)),
            ..Default::default()
        }),
        generic_xds_configs: generic,
        ..Default::default()
    }
}

impl Csds {
    fn answer(&self, req: &ClientStatusRequest) -> ClientStatusResponse {
        let config = self
            .ctx
            .fleet
            .local()
            .iter()
            .filter(|n| matches(req, n))
            .map(|n| client_config(n, &self.ctx.fleet.cp, !req.exclude_resource_contents))
            .collect();
        ClientStatusResponse { config }
    }
}

#[tonic::async_trait]
impl ClientStatusDiscoveryService for Csds {
    type StreamClientStatusStream =
        Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send + 'static>>;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        let ctx = self.ctx.clone();
        let out = request.into_inner().map(move |req| {
            let req = req?;
            Ok(Csds { ctx: ctx.clone() }.answer(&req))
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        Ok(Response::new(self.answer(request.get_ref())))
    }
}
