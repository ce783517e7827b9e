//! The fleet's gRPC codec. A simulated proxy needs a response's version,
//! nonce and resource names, and the bodies only of clusters and
//! listeners (to follow their references); decoding every route
//! configuration into Envoy's types would spend the shared CPU on the
//! bench rather than on the control plane. So responses are decoded into
//! a slim mirror of `DeltaDiscoveryResponse` whose resource bodies stay
//! bytes (sliced, not copied, from the receive buffer), and the encoded
//! size comes from the gRPC frame itself.

use bytes::{Buf, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

pub const DELTA_ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// `google.protobuf.Any` with its payload left encoded.
#[derive(Clone, PartialEq, Message)]
pub struct RawAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `envoy.service.discovery.v3.Resource`: the fields a client reads.
#[derive(Clone, PartialEq, Message)]
pub struct RawResource {
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(message, optional, tag = "2")]
    pub resource: Option<RawAny>,
}

/// `envoy.service.discovery.v3.DeltaDiscoveryResponse`, same field numbers.
#[derive(Clone, PartialEq, Message)]
pub struct RawDeltaResponse {
    #[prost(string, tag = "1")]
    pub system_version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<RawResource>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// A response and the size of its encoding.
pub struct Counted {
    pub bytes: usize,
    pub msg: RawDeltaResponse,
}

#[derive(Clone, Copy, Default)]
pub struct DeltaCodec;

pub struct Enc;
pub struct Dec;

impl Codec for DeltaCodec {
    type Encode = DeltaDiscoveryRequest;
    type Decode = Counted;
    type Encoder = Enc;
    type Decoder = Dec;

    fn encoder(&mut self) -> Enc {
        Enc
    }

    fn decoder(&mut self) -> Dec {
        Dec
    }
}

impl Encoder for Enc {
    type Item = DeltaDiscoveryRequest;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding a request: {e}")))
    }
}

impl Decoder for Dec {
    type Item = Counted;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Counted>, Status> {
        let bytes = src.remaining();
        let msg = RawDeltaResponse::decode(src)
            .map_err(|e| Status::internal(format!("decoding a response: {e}")))?;
        Ok(Some(Counted { bytes, msg }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
    use envoy_types::util::pack_any;

    #[test]
    fn mirrors_the_envoy_message() {
        let full = DeltaDiscoveryResponse {
            system_version_info: "42".into(),
            resources: vec![Resource {
                name: "service.a".into(),
                version: "abc".into(),
                resource: Some(pack_any(Cluster {
                    name: "service.a".into(),
                    ..Default::default()
                })),
                aliases: vec!["x".into()],
                ..Default::default()
            }],
            type_url: "t".into(),
            removed_resources: vec!["gone".into()],
            nonce: "7".into(),
            ..Default::default()
        };
        let raw = RawDeltaResponse::decode(full.encode_to_vec().as_slice()).unwrap();
        assert_eq!(raw.system_version_info, "42");
        assert_eq!(raw.type_url, "t");
        assert_eq!(raw.nonce, "7");
        assert_eq!(raw.removed_resources, ["gone"]);
        let r = &raw.resources[0];
        assert_eq!((r.name.as_str(), r.version.as_str()), ("service.a", "abc"));
        let c = Cluster::decode(r.resource.as_ref().unwrap().value.clone()).unwrap();
        assert_eq!(c.name, "service.a");
    }
}
