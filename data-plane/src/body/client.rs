//! [`ClientBody`] is a request body as the client sends it. Reading it can
//! fail in ways that are the client's doing, not the upstream's:
//!
//! - **A broken body** (a malformed chunk, the connection cut mid-body).
//!   The upstream attempt streaming it fails too, but that must not count
//!   against the endpoint (three such requests would otherwise eject a
//!   healthy one through outlier detection) nor be retried: [`Fault`]
//!   tells the request path which side failed.
//! - **Too large** for request-size-limiting, when the length was not
//!   declared up front: counted as it streams, refused once over.
//! - **Stalled** past the listener's `stream_idle_timeout`: Envoy's 408
//!   `stream timeout`.

use super::BoxError;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

/// What went wrong reading a client's body, once it did, and how much
/// of it was read.
#[derive(Clone, Default)]
pub struct Fault(Arc<Reading>);

#[derive(Default)]
struct Reading {
    fault: AtomicU8,
    bytes: AtomicU64,
}

const BROKEN: u8 = 1;
const TOO_LARGE: u8 = 2;
const STALLED: u8 = 3;

impl Fault {
    /// The client's body could not be read.
    pub fn broken(&self) -> bool {
        self.0.fault.load(Ordering::Acquire) == BROKEN
    }

    /// The body went over the size limit it was counted against.
    pub fn too_large(&self) -> bool {
        self.0.fault.load(Ordering::Acquire) == TOO_LARGE
    }

    /// The client stopped sending the body for the idle timeout.
    pub fn stalled(&self) -> bool {
        self.0.fault.load(Ordering::Acquire) == STALLED
    }

    fn set(&self, what: u8) {
        let _ = self
            .0
            .fault
            .compare_exchange(0, what, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Body bytes read from the client so far.
    pub fn bytes_read(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body larger than the request-size-limiting plugin allows")]
pub struct TooLarge;

#[derive(Debug, thiserror::Error)]
#[error("the client stopped sending the request body")]
pub struct Stalled;

pub struct ClientBody {
    inner: Incoming,
    fault: Fault,
    /// Bytes still allowed, when counted against a limit.
    remaining: Option<u64>,
    /// How long the body may stall, and when it will have.
    idle: Option<(std::time::Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl ClientBody {
    pub fn new(
        inner: Incoming,
        fault: &Fault,
        limit: Option<u64>,
        idle: Option<std::time::Duration>,
    ) -> ClientBody {
        ClientBody {
            inner,
            fault: fault.clone(),
            remaining: limit,
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
        }
    }
}

// Concrete rather than generic over the inner body: a generic bound on
// `B::Error` makes the connection's service future fail hyper's
// higher-ranked `Send` checks.
impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some((d, sleep)) = this.idle.as_mut() {
            if polled.is_ready() {
                sleep.as_mut().reset(tokio::time::Instant::now() + *d);
            } else if sleep.as_mut().poll(cx).is_ready() {
                this.fault.set(STALLED);
                return Poll::Ready(Some(Err(Box::new(Stalled))));
            }
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.fault
                        .0
                        .bytes
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                if let (Some(left), Some(d)) = (this.remaining.as_mut(), frame.data_ref()) {
                    let n = d.len() as u64;
                    if n > *left {
                        this.fault.set(TOO_LARGE);
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    *left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fault.set(BROKEN);
                Poll::Ready(Some(Err(Box::new(e))))
            }
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
