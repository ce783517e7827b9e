//! The log phase's hook on a response body.

use super::BoxError;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// What runs once a response has been sent: the request's log phase.
pub trait OnFinish: Send + 'static {
    /// `sent`: body bytes written; `aborted`: the client went away first.
    fn finish(self, sent: u64, aborted: bool);
}

/// A response body that calls its [`OnFinish`] once, when the body ends or
/// is dropped unfinished (the client went away).
pub struct Finish<B: HttpBody, F: OnFinish> {
    inner: B,
    sent: u64,
    then: Option<F>,
}

impl<B: HttpBody, F: OnFinish> Finish<B, F> {
    pub fn new(inner: B, then: F) -> Finish<B, F> {
        Finish {
            inner,
            sent: 0,
            then: Some(then),
        }
    }

    fn done(&mut self, aborted: bool) {
        if let Some(f) = self.then.take() {
            f.finish(self.sent, aborted);
        }
    }
}

impl<B, F> HttpBody for Finish<B, F>
where
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
    F: OnFinish + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.done(false);
                }
            }
            Poll::Ready(None) => self.done(false),
            Poll::Ready(Some(Err(_))) => self.done(true),
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

impl<B: HttpBody, F: OnFinish> Drop for Finish<B, F> {
    fn drop(&mut self) {
        // Not polled to its end: an empty body hyper never polled (sent
        // whole), or the client went away mid-body.
        let whole = self.inner.is_end_stream();
        self.done(!whole);
    }
}
