//! A streamed request body copied to mirrors as it flows. The copy is
//! bounded: if a mirror falls more than `TEE_BUDGET` bytes behind, its
//! copy is aborted rather than buffered without limit; the real request
//! never waits.

use super::{Body, BoxError};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

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
