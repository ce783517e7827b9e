//! The ADS gRPC service, written out rather than generated, for memory.
//!
//! tonic's generated server encodes every response of a stream into one
//! buffer that lives as long as the stream and keeps the size of the
//! largest response it ever held (the first snapshot, usually): at 10,000
//! streams that alone is a gigabyte. Here each response is encoded into a
//! frame of its own, exactly sized, and freed once HTTP/2 has written it,
//! so an idle stream holds nothing but its bookkeeping.
//!
//! The protocol is the same: `application/grpc`, length-prefixed protobuf
//! messages, `grpc-status` in the trailers. Requests are read by
//! `requests.rs`, which does not keep a large request's buffer.

use super::cache::Resource;
use super::session::{self, Protocol};
use super::{XdsContext, delta, sotw};
use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::Message;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};
use tonic::server::NamedService;
use tonic::{Code, Status};

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// Requests larger than this are refused (a node's request is small; this
/// only bounds a broken or hostile client).
const MAX_REQUEST: usize = 64 * 1024 * 1024;

/// Responses queued per stream before back-pressure reaches the snapshot
/// watcher; a slow node then simply gets the newest snapshot later.
const STREAM_BUFFER: usize = 16;

#[derive(Clone)]
pub struct Ads {
    pub ctx: Arc<XdsContext>,
    pub stop: watch::Receiver<bool>,
}

impl NamedService for Ads {
    const NAME: &'static str = SERVICE;
}

type Req = http::Request<tonic::body::Body>;
type Resp = http::Response<tonic::body::Body>;

impl tower::Service<Req> for Ads {
    type Response = Resp;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Resp, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Envoy sends identity-encoded messages; anything else is refused
        // rather than misread.
        let compressed = req
            .headers()
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() != b"identity");
        let resp = if compressed {
            status_only(Status::unimplemented(
                "compressed requests are not supported",
            ))
        } else {
            let peer = peer_of(&req);
            match req.uri().path() {
                DELTA => self.open::<delta::Stream>(req.into_body(), peer),
                SOTW => self.open::<sotw::Stream>(req.into_body(), peer),
                other => status_only(Status::unimplemented(format!("no method {other}"))),
            }
        };
        std::future::ready(Ok(resp))
    }
}

/// Who is on the other end: the address, and over mutual TLS the client
/// certificate's names.
fn peer_of(req: &Req) -> session::Peer {
    if let Some(p) = req.extensions().get::<super::tls::PeerInfo>() {
        return session::Peer {
            addr: p.remote,
            identity: Some(p.identity.clone()),
        };
    }
    session::Peer {
        addr: req
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|c| c.remote_addr()),
        identity: None,
    }
}

impl Ads {
    fn open<P>(&self, body: tonic::body::Body, peer: session::Peer) -> Resp
    where
        P: Protocol + 'static,
        P::Request: Message + Default,
    {
        let requests = super::requests::Requests::new(body, MAX_REQUEST);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(session::drive::<P>(
            self.ctx.clone(),
            requests,
            tx,
            self.stop.clone(),
            peer,
        ));
        grpc_response(rx)
    }
}

/// One message as a gRPC frame: uncompressed flag, length, bytes.
pub fn frame<M: Message>(m: &M) -> Bytes {
    let len = m.encoded_len();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    b.put_u32(len as u32);
    // Cannot fail: the buffer was sized for the message.
    let _ = m.encode(&mut b);
    b.freeze()
}

/// A `DeltaDiscoveryResponse` as a gRPC frame, written straight from the
/// snapshot's resources: each payload is copied once into the frame, with
/// no per-resource message built first (a first sync of 20,000 route
/// entries would otherwise clone every payload, then encode it again).
pub fn delta_frame(
    version: &str,
    type_url: &str,
    nonce: &str,
    resources: &[Arc<Resource>],
    removed: &[Arc<str>],
) -> Bytes {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let field = |tag: u32, len: usize| key_len(tag) + encoded_len_varint(len as u64) + len;
    let bytes_field = |tag: u32, len: usize| if len == 0 { 0 } else { field(tag, len) };
    let any_len =
        |r: &Resource| bytes_field(1, r.any.type_url.len()) + bytes_field(2, r.any.value.len());
    let resource_len = |r: &Resource| {
        bytes_field(1, r.version.len()) + field(2, any_len(r)) + bytes_field(3, r.name.len())
    };
    let len = bytes_field(1, version.len())
        + resources
            .iter()
            .map(|r| field(2, resource_len(r)))
            .sum::<usize>()
        + bytes_field(4, type_url.len())
        + bytes_field(5, nonce.len())
        + removed.iter().map(|n| field(6, n.len())).sum::<usize>();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    b.put_u32(len as u32);
    let put = |b: &mut BytesMut, tag: u32, v: &[u8]| {
        if !v.is_empty() {
            encode_key(tag, WireType::LengthDelimited, b);
            encode_varint(v.len() as u64, b);
            b.put_slice(v);
        }
    };
    put(&mut b, 1, version.as_bytes());
    for r in resources {
        encode_key(2, WireType::LengthDelimited, &mut b);
        encode_varint(resource_len(r) as u64, &mut b);
        put(&mut b, 1, r.version.as_bytes());
        encode_key(2, WireType::LengthDelimited, &mut b);
        encode_varint(any_len(r) as u64, &mut b);
        put(&mut b, 1, r.any.type_url.as_bytes());
        put(&mut b, 2, &r.any.value);
        put(&mut b, 3, r.name.as_bytes());
    }
    put(&mut b, 4, type_url.as_bytes());
    put(&mut b, 5, nonce.as_bytes());
    // Repeated strings are written even when empty.
    for n in removed {
        encode_key(6, WireType::LengthDelimited, &mut b);
        encode_varint(n.len() as u64, &mut b);
        b.put_slice(n.as_bytes());
    }
    b.freeze()
}

fn trailers(s: &Status) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if s.add_header(&mut h).is_err() {
        // A message that cannot be a header value: the code alone.
        h.clear();
        h.insert("grpc-status", http::HeaderValue::from(s.code() as i32));
    }
    h
}

/// The response body: each queued message as its own frame, then the
/// status as trailers when the session ends (OK) or fails (its status).
fn grpc_response(rx: mpsc::Receiver<Result<Bytes, Status>>) -> Resp {
    let frames = futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        let f = match rx.recv().await {
            Some(Ok(b)) => return Some((Ok::<_, Infallible>(Frame::data(b)), Some(rx))),
            Some(Err(s)) => Frame::trailers(trailers(&s)),
            None => Frame::trailers(trailers(&Status::new(Code::Ok, ""))),
        };
        Some((Ok(f), None))
    });
    let mut r = http::Response::new(tonic::body::Body::new(http_body_util::StreamBody::new(
        frames,
    )));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    r
}

/// A response with no messages: the status in the headers (gRPC's
/// "trailers-only" form).
fn status_only(s: Status) -> Resp {
    s.into_http()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, Resource as PbResource,
    };
    use envoy_types::pb::google::protobuf::Any;

    #[test]
    fn a_frame_is_the_length_prefixed_message() {
        let m = DeltaDiscoveryResponse {
            nonce: "7".into(),
            system_version_info: "v1".into(),
            ..Default::default()
        };
        let f = frame(&m);
        assert_eq!(f[0], 0, "uncompressed");
        let len = u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        assert_eq!(len, f.len() - 5);
        assert_eq!(DeltaDiscoveryResponse::decode(&f[5..]).unwrap(), m);
    }

    #[test]
    fn a_delta_frame_is_the_response_prost_would_write() {
        let r = |name: &str, version: &str, value: &[u8]| {
            Arc::new(Resource {
                name: name.into(),
                version: version.into(),
                any: Any {
                    type_url: "type.googleapis.com/x.Y".into(),
                    value: value.to_vec(),
                },
            })
        };
        let resources = vec![
            r("a", "1", b"abc"),
            r("b/c", "02", &[0u8; 300]),
            r("e", "3", b""),
        ];
        let removed: Vec<Arc<str>> = vec!["gone".into(), "".into()];
        let f = delta_frame("7", "type.googleapis.com/x.Y", "n9", &resources, &removed);
        assert_eq!(f[0], 0);
        let len = u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        assert_eq!(len, f.len() - 5);
        let got = DeltaDiscoveryResponse::decode(&f[5..]).unwrap();
        let want = DeltaDiscoveryResponse {
            system_version_info: "7".into(),
            resources: resources
                .iter()
                .map(|r| PbResource {
                    name: r.name.to_string(),
                    version: r.version.to_string(),
                    resource: Some(r.any.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: "type.googleapis.com/x.Y".into(),
            removed_resources: vec!["gone".into(), "".into()],
            nonce: "n9".into(),
            ..Default::default()
        };
        assert_eq!(got, want);
        assert_eq!(len, want.encoded_len(), "the same size as prost's");
    }
}
