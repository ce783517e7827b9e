//! A stream's requests, read from its HTTP/2 body: length-prefixed
//! protobuf messages, as gRPC frames them.
//!
//! Read here rather than by tonic's `Streaming`, whose buffer keeps the
//! size of the largest request for the life of the stream. A reconnecting
//! gantry-proxy's first request names every route entry it holds (hundreds
//! of KiB with thousands of routes); after a control plane restarts, every
//! node sends one at once. Here a buffer grown for such a request is
//! dropped once the request is decoded.

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use std::marker::PhantomData;
use tonic::Status;

/// A stream's read buffer to begin with (requests are usually small).
const INITIAL: usize = 1024;
/// A buffer grown past this is replaced after the message that grew it.
const KEEP_AT_MOST: usize = 32 * 1024;

pub struct Requests<M> {
    body: tonic::body::Body,
    buf: BytesMut,
    max: usize,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message + Default> Requests<M> {
    /// Requests longer than `max` bytes end the stream.
    pub fn new(body: tonic::body::Body, max: usize) -> Self {
        Requests {
            body,
            buf: BytesMut::with_capacity(INITIAL),
            max,
            _message: PhantomData,
        }
    }

    /// The next request; None when the client closed its side.
    pub async fn message(&mut self) -> Result<Option<M>, Status> {
        loop {
            if self.buf.len() >= 5 {
                if self.buf[0] != 0 {
                    return Err(Status::unimplemented(
                        "compressed requests are not accepted (no grpc-encoding was offered)",
                    ));
                }
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if len > self.max {
                    return Err(Status::resource_exhausted(format!(
                        "a request of {len} bytes is over the limit of {}",
                        self.max
                    )));
                }
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    let bytes = self.buf.split_to(len).freeze();
                    let m = M::decode(bytes).map_err(|e| {
                        Status::invalid_argument(format!("the request does not decode: {e}"))
                    })?;
                    if self.buf.capacity() > KEEP_AT_MOST {
                        let mut fresh = BytesMut::with_capacity(INITIAL.max(self.buf.len()));
                        fresh.extend_from_slice(&self.buf);
                        self.buf = fresh;
                    }
                    return Ok(Some(m));
                }
                self.buf.reserve(5 + len - self.buf.len());
            }
            match self.body.frame().await {
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(Status::invalid_argument("the last request was cut short")),
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes};
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use http_body::Frame;

    type Req = DeltaDiscoveryRequest;

    fn framed(m: &Req) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = vec![0u8];
        out.put_u32(body.len() as u32);
        out.extend(body);
        out
    }

    /// A body delivering `bytes` in chunks of `chunk`.
    fn body(bytes: Vec<u8>, chunk: usize) -> tonic::body::Body {
        let frames: Vec<Result<Frame<Bytes>, Status>> = bytes
            .chunks(chunk)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        tonic::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    fn req(type_url: &str, names: usize) -> Req {
        Req {
            type_url: type_url.into(),
            initial_resource_versions: (0..names)
                .map(|i| (format!("http/route-{i:06}"), format!("{i:016x}")))
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn messages_split_anyhow_decode_and_a_large_one_leaves_no_large_buffer() {
        let (big, small) = (req("a", 5_000), req("b", 0));
        let mut bytes = framed(&big);
        bytes.extend(framed(&small));
        for chunk in [1, 7, 1000, 1 << 20] {
            let mut r = Requests::<Req>::new(body(bytes.clone(), chunk), 1 << 24);
            assert_eq!(r.message().await.unwrap(), Some(big.clone()));
            assert!(
                r.buf.capacity() <= KEEP_AT_MOST,
                "the buffer a {} byte request grew is let go ({} kept)",
                framed(&big).len(),
                r.buf.capacity()
            );
            assert_eq!(r.message().await.unwrap(), Some(small.clone()));
            assert_eq!(r.message().await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn oversized_compressed_and_cut_short_requests_end_the_stream() {
        let m = framed(&req("a", 100));
        let mut r = Requests::<Req>::new(body(m.clone(), 64), 100);
        assert_eq!(
            r.message().await.unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        let mut compressed = m.clone();
        compressed[0] = 1;
        let mut r = Requests::<Req>::new(body(compressed, 64), 1 << 20);
        assert_eq!(
            r.message().await.unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        let mut r = Requests::<Req>::new(body(m[..m.len() - 1].to_vec(), 64), 1 << 20);
        assert_eq!(
            r.message().await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
