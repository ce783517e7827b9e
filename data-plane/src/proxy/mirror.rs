//! Request mirroring (Envoy's `request_mirror_policies`): a sampled copy
//! of the request goes to another cluster, fire and forget; its answer is
//! read and dropped and never delays or changes the real response.
//!
//! A streamed body is copied as it flows (`Tee`). The copy is bounded: if
//! the mirror falls more than `TEE_BUDGET` bytes behind, it is aborted
//! rather than buffering without limit; the real request never waits.

use super::lb::ClusterState;
use super::upstream::{Body, BoxError};
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// How far (in bytes) a mirror's copy of a streamed body may lag.
const TEE_BUDGET: usize = 1024 * 1024;

type Item = Result<Frame<Bytes>, BoxError>;

#[derive(Debug)]
struct MirrorAborted(&'static str);

impl std::fmt::Display for MirrorAborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for MirrorAborted {}

/// The original body, copying each frame to the mirrors' bodies.
pub struct Tee {
    inner: Body,
    copies: Vec<(mpsc::UnboundedSender<Item>, Arc<AtomicUsize>)>,
    ended: bool,
}

/// The mirror side of a `Tee`.
pub struct Copy {
    rx: mpsc::UnboundedReceiver<Item>,
    lag: Arc<AtomicUsize>,
}

impl Tee {
    /// Wraps `inner`, returning one copy per mirror.
    pub fn new(inner: Body, n: usize) -> (Tee, Vec<Copy>) {
        let mut copies = Vec::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let lag = Arc::new(AtomicUsize::new(0));
            copies.push((tx, lag.clone()));
            out.push(Copy { rx, lag });
        }
        (
            Tee {
                inner,
                copies,
                ended: false,
            },
            out,
        )
    }

    fn abort(&mut self, why: &'static str) {
        for (tx, _) in self.copies.drain(..) {
            let _ = tx.send(Err(Box::new(MirrorAborted(why))));
        }
    }
}

impl HttpBody for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                this.copies.retain(|(tx, lag)| {
                    if lag.fetch_add(len, Ordering::Relaxed) + len > TEE_BUDGET {
                        let _ = tx.send(Err(Box::new(MirrorAborted("mirror fell behind"))));
                        return false;
                    }
                    let copy = match frame.data_ref() {
                        Some(d) => Frame::data(d.clone()),
                        None => match frame.trailers_ref() {
                            Some(t) => Frame::trailers(t.clone()),
                            None => return true,
                        },
                    };
                    tx.send(Ok(copy)).is_ok()
                });
            }
            Poll::Ready(Some(Err(_))) => this.abort("request body failed"),
            Poll::Ready(None) => {
                this.ended = true;
                this.copies.clear();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if !self.ended && !self.inner.is_end_stream() {
            self.abort("request ended early");
        }
    }
}

impl HttpBody for Copy {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(Ok(f))) = &polled {
            let len = f.data_ref().map_or(0, Bytes::len);
            self.lag.fetch_sub(len, Ordering::Relaxed);
        }
        polled
    }
}

impl Copy {
    pub fn boxed(self) -> Body {
        BodyExt::boxed(self)
    }
}

/// Envoy's shadow host: `-shadow` appended to the host, before any port.
pub fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            format!("{h}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    }
}

/// Sends `req` (already addressed to an endpoint of `cluster`) and
/// drains the answer, bounded by `timeout`.
pub fn spawn(cluster: Arc<ClusterState>, req: Request<Body>, timeout: Option<Duration>) {
    tokio::spawn(async move {
        let sent = async {
            match cluster.client.request(req).await {
                Ok(resp) => {
                    let _ = resp.into_body().collect().await;
                }
                Err(e) => tracing::debug!(cluster = %cluster.name, error = %e, "mirror failed"),
            }
        };
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, sent).await;
            }
            None => sent.await,
        }
    });
}

/// Sets the shadow Host on a mirrored request.
pub fn set_shadow_host(req: &mut Request<Body>, suffix: bool) {
    if !suffix {
        return;
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(shadow_host);
    if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        req.headers_mut().insert(http::header::HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    #[test]
    fn shadow_host_goes_before_the_port() {
        assert_eq!(shadow_host("api.example.com"), "api.example.com-shadow");
        assert_eq!(shadow_host("api:8080"), "api-shadow:8080");
        assert_eq!(shadow_host("[::1]:80"), "[::1]-shadow:80");
    }

    #[tokio::test]
    async fn a_tee_copies_every_frame_and_ends_cleanly() {
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
        ];
        let inner = StreamBody::new(futures::stream::iter(chunks)).boxed();
        let (tee, mut copies) = Tee::new(inner, 2);
        let original = tee.collect().await.expect("original").to_bytes();
        assert_eq!(original, "hello world");
        for c in copies.drain(..) {
            assert_eq!(c.collect().await.expect("copy").to_bytes(), "hello world");
        }
    }

    #[tokio::test]
    async fn a_copy_is_aborted_when_the_request_body_fails_or_is_dropped() {
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"part"))),
            Err("client went away".into()),
        ];
        let inner = StreamBody::new(futures::stream::iter(chunks)).boxed();
        let (tee, mut copies) = Tee::new(inner, 1);
        assert!(tee.collect().await.is_err());
        assert!(copies.remove(0).collect().await.is_err());

        let inner = Full::new(Bytes::from_static(b"never read"))
            .map_err(|never| match never {})
            .boxed();
        let (tee, mut copies) = Tee::new(inner, 1);
        drop(tee);
        assert!(copies.remove(0).collect().await.is_err());
    }

    #[tokio::test]
    async fn a_copy_that_falls_too_far_behind_is_aborted() {
        let big = Bytes::from(vec![b'x'; TEE_BUDGET / 2 + 1]);
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(big.clone())), Ok(Frame::data(big))];
        let inner = StreamBody::new(futures::stream::iter(chunks)).boxed();
        let (tee, mut copies) = Tee::new(inner, 1);
        // The original is whole even though its mirror was cut off.
        assert_eq!(
            tee.collect().await.expect("original").to_bytes().len(),
            TEE_BUDGET + 2
        );
        assert!(copies.remove(0).collect().await.is_err());
    }
}
