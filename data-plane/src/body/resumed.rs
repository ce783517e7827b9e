//! A body whose start was read ahead (to look at it), put back together.

use super::{Body, BoxError};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A body whose start was already read: that, then the frame (or error)
/// read after it, then the rest as it comes.
pub struct Resumed {
    pub head: Option<Bytes>,
    pub next: Option<Result<Frame<Bytes>, BoxError>>,
    pub rest: Option<Body>,
}

impl HttpBody for Resumed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(h) = this.head.take().filter(|h| !h.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(h))));
        }
        if let Some(n) = this.next.take() {
            return Poll::Ready(Some(n));
        }
        match &mut this.rest {
            Some(r) => Pin::new(r).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.as_ref().is_none_or(Bytes::is_empty)
            && self.next.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let mut held = self.head.as_ref().map_or(0, |h| h.len() as u64);
        if let Some(Ok(f)) = &self.next {
            held += f.data_ref().map_or(0, |d| d.len() as u64);
        }
        let mut hint = SizeHint::new();
        match &self.rest {
            Some(r) => {
                let r = r.size_hint();
                hint.set_lower(r.lower() + held);
                if let Some(u) = r.upper() {
                    hint.set_upper(u + held);
                }
            }
            None => hint.set_exact(held),
        }
        hint
    }
}
