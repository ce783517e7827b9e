//! `request-size-limiting`: a declared `Content-Length` over the limit is
//! refused at once; a body of unknown length is counted as it streams and
//! the request refused (413) as soon as it goes over, without buffering.

use super::reject::Reject;
use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use serde::Deserialize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

#[derive(Debug)]
pub struct SizeLimit {
    bytes: u64,
    require_content_length: bool,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    allowed_payload_size: Option<f64>,
    #[serde(default)]
    size_unit: Option<String>,
    #[serde(default)]
    require_content_length: bool,
}

pub const TOO_LARGE: &str = "Request size limit exceeded";

impl SizeLimit {
    pub fn compile(v: &serde_json::Value) -> Result<SizeLimit, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let unit: u64 = match c.size_unit.as_deref().unwrap_or("megabytes") {
            "megabytes" => 1 << 20,
            "kilobytes" => 1 << 10,
            "bytes" => 1,
            other => return Err(format!("size_unit {other:?} is not supported")),
        };
        let n = c.allowed_payload_size.unwrap_or(128.0);
        if n.is_nan() || n < 0.0 {
            return Err("allowed_payload_size must be at least 0".into());
        }
        Ok(SizeLimit {
            bytes: (n * unit as f64) as u64,
            require_content_length: c.require_content_length,
        })
    }

    /// Checks the declared length. `Ok(Some(n))`: the body's length is not
    /// declared, and must be counted as it streams, up to `n` bytes.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<u64>, Reject> {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(n) if n > self.bytes => Err(Reject::new(413, TOO_LARGE)),
            Some(_) => Ok(None),
            None if self.require_content_length && has_body(headers) => Err(Reject::new(
                411,
                "A valid Content-Length header is required",
            )),
            None => Ok(Some(self.bytes)),
        }
    }
}

fn has_body(h: &HeaderMap) -> bool {
    h.contains_key(http::header::TRANSFER_ENCODING)
}

/// A request body that fails once more than `remaining` bytes went by,
/// and says so in `exceeded` (the handler then answers 413).
pub struct Counted<B> {
    inner: B,
    remaining: u64,
    pub exceeded: Arc<AtomicBool>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, limit: u64) -> Counted<B> {
        Counted {
            inner,
            remaining: limit,
            exceeded: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body larger than the request-size-limiting plugin allows")]
pub struct TooLarge;

// Concrete rather than generic over the inner body: a generic bound on
// `B::Error` makes the connection's service future fail hyper's
// higher-ranked `Send` checks.
impl Body for Counted<hyper::body::Incoming> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > this.remaining {
                        this.exceeded.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
