//! HTTP bodies, below both `proxy` and `plugins`: the one body type the
//! request path handles, and every wrapper around it.
//!
//! - [`client`]: a request body as the client sends it, counted and timed,
//!   its failures recorded as the client's.
//! - [`finish`]: runs the request's log phase once a response body has
//!   been sent, or dropped unfinished.
//! - [`tee`]: a streamed request body copied to mirrors as it flows.
//! - [`resumed`]: a body whose start was read ahead, put back together.

mod client;
mod finish;
mod resumed;
mod tee;

pub use client::{ClientBody, Fault, Stalled, TooLarge};
pub use finish::{Finish, OnFinish};
pub use resumed::Resumed;
pub use tee::{Copy, Tee};

use bytes::Bytes;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy handles: a streamed downstream body, a buffered
/// one for retries, or one the proxy writes itself.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// No body.
pub fn empty() -> Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body held whole.
pub fn full(b: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The whole body, if it ends within `limit` bytes. (Not `Limited`: its
/// generic error bound trips hyper's higher-ranked `Send` check on the
/// connection future once the body is boxed.)
pub async fn collect_limited(mut body: Body, limit: usize) -> Option<Bytes> {
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if buf.len() + data.len() > limit {
                return None;
            }
            buf.extend_from_slice(&data);
        }
    }
    Some(buf.freeze())
}
