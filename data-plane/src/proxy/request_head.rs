//! Each HTTP/1 request head, watched as its bytes arrive, for what Envoy
//! does at that level and hyper does not:
//!
//! - **`request_headers_timeout`**: from the first byte of a head to its
//!   end. Past it Envoy answers 408 `request header timeout` and closes;
//!   so does this watcher. A connection idle between requests is not
//!   timed (hyper's own timer, set longer, bounds those).
//! - **Smuggling framing**, below.
//!
//! A request with both `Content-Length` and `Transfer-Encoding`, or with
//! two `Content-Length` lines, is the classic shape of request smuggling.
//! hyper handles both the way RFC 9112 allows an intermediary to (the
//! length dropped, or the duplicates merged) and hands on a request that
//! no longer shows them; Envoy refuses them with 400. To answer as Envoy
//! does, the bytes of each HTTP/1 request head are watched as they are
//! read, and the request path learns which request on the connection had
//! such a head (the n-th head read is the n-th request served).
//!
//! Only heads are looked at: a body is skipped by its `Content-Length`, or
//! followed chunk by chunk. Anything the watcher cannot follow (HTTP/2, an
//! upgrade, framing hyper itself will refuse) ends the watch for the
//! connection; hyper answers what follows.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the watcher found, shared with the request path.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// The 1-based index of the first request whose head had smuggling
    /// framing; 0: none.
    first_bad: AtomicU64,
    /// Requests served so far on the connection.
    served: AtomicU64,
}

impl Verdicts {
    /// Called once per request, in order: whether this one's head had
    /// `Content-Length` with `Transfer-Encoding`, or two `Content-Length`s.
    pub fn next_request_is_bad(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::AcqRel) + 1;
        self.first_bad.load(Ordering::Acquire) == n
    }
}

/// Where the watcher is in the byte stream.
enum State {
    /// Reading a head: the current line's start (lower-cased, bounded) and
    /// what the head said so far.
    Head(Head),
    /// Skipping this many body bytes.
    Body(u64),
    Chunked(Chunk),
    /// Not following any more.
    Off,
}

#[derive(Default)]
struct Head {
    /// A byte of this head has arrived (leading empty lines aside).
    started: bool,
    /// The current line, as far as it matters (a header name and a short value).
    line: Vec<u8>,
    /// Lines in this head so far (0 while on the request line).
    lines: usize,
    content_lengths: u32,
    transfer_encodings: u32,
    length: Option<u64>,
    chunked: bool,
    /// An upgrade or CONNECT: what follows may not be HTTP/1.
    leaves_http: bool,
}

enum Chunk {
    /// Reading a size line.
    Size {
        size: u64,
        digits: u32,
        ext: bool,
    },
    /// Skipping chunk data, then its CRLF.
    Data(u64),
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers {
        empty_line: bool,
    },
}

const LINE_KEEP: usize = 64;

pub struct Watched<S> {
    inner: S,
    state: State,
    heads: u64,
    verdicts: Arc<Verdicts>,
    /// `request_headers_timeout`, and the running head's deadline.
    timeout: Option<Duration>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Envoy's answer when a head takes too long.
const HEAD_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 22\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nrequest header timeout";

impl<S> Watched<S> {
    pub fn new(inner: S, verdicts: Arc<Verdicts>, timeout: Option<Duration>) -> Watched<S> {
        Watched {
            inner,
            state: State::Head(Head::default()),
            heads: 0,
            verdicts,
            timeout,
            deadline: None,
        }
    }

    /// Whether a head has begun and not yet ended.
    fn mid_head(&self) -> bool {
        matches!(&self.state, State::Head(h) if h.started)
    }

    fn watch(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(n) => {
                    let take = (*n).min(bytes.len() as u64);
                    *n -= take;
                    bytes = &bytes[take as usize..];
                    if *n == 0 {
                        self.state = State::Head(Head::default());
                    }
                }
                State::Head(h) => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if b != b'\r' && b != b'\n' {
                        h.started = true;
                    }
                    if b != b'\n' {
                        if h.line.len() < LINE_KEEP {
                            h.line.push(b.to_ascii_lowercase());
                        }
                        continue;
                    }
                    let line = std::mem::take(&mut h.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    if h.lines == 0 {
                        // Empty lines before a request line are skipped.
                        if line.is_empty() {
                            continue;
                        }
                        if line.starts_with(b"pri * http/2") || line.starts_with(b"connect ") {
                            self.state = State::Off;
                            return;
                        }
                        h.lines = 1;
                        continue;
                    }
                    if !line.is_empty() {
                        h.lines += 1;
                        header(h, line);
                        continue;
                    }
                    // The end of the head.
                    self.heads += 1;
                    if h.content_lengths > 1 || (h.content_lengths > 0 && h.transfer_encodings > 0)
                    {
                        let _ = self.verdicts.first_bad.compare_exchange(
                            0,
                            self.heads,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        // hyper closes such a connection; nothing to follow.
                        self.state = State::Off;
                        return;
                    }
                    self.state = if h.leaves_http {
                        State::Off
                    } else if h.transfer_encodings > 0 {
                        if h.chunked {
                            State::Chunked(Chunk::Size {
                                size: 0,
                                digits: 0,
                                ext: false,
                            })
                        } else {
                            State::Off
                        }
                    } else {
                        match h.length {
                            Some(0) | None => State::Head(Head::default()),
                            Some(n) => State::Body(n),
                        }
                    };
                }
                State::Chunked(c) => {
                    let next = match c {
                        Chunk::Data(n) => {
                            let take = (*n).min(bytes.len() as u64);
                            *n -= take;
                            bytes = &bytes[take as usize..];
                            if *n == 0 { Some(Chunk::DataEnd) } else { None }
                        }
                        Chunk::DataEnd => {
                            let b = bytes[0];
                            bytes = &bytes[1..];
                            match b {
                                b'\r' => None,
                                b'\n' => Some(Chunk::Size {
                                    size: 0,
                                    digits: 0,
                                    ext: false,
                                }),
                                _ => {
                                    self.state = State::Off;
                                    return;
                                }
                            }
                        }
                        Chunk::Size { size, digits, ext } => {
                            let b = bytes[0];
                            bytes = &bytes[1..];
                            match b {
                                b'\n' if *digits == 0 => {
                                    self.state = State::Off;
                                    return;
                                }
                                b'\n' if *size == 0 => Some(Chunk::Trailers { empty_line: true }),
                                b'\n' => Some(Chunk::Data(*size)),
                                _ if *ext => None,
                                b';' | b'\r' | b' ' | b'\t' => {
                                    *ext = true;
                                    None
                                }
                                _ => match (b as char).to_digit(16) {
                                    Some(d) if *digits < 16 => {
                                        *size = *size * 16 + u64::from(d);
                                        *digits += 1;
                                        None
                                    }
                                    _ => {
                                        self.state = State::Off;
                                        return;
                                    }
                                },
                            }
                        }
                        Chunk::Trailers { empty_line } => {
                            let b = bytes[0];
                            bytes = &bytes[1..];
                            match b {
                                b'\n' if *empty_line => {
                                    self.state = State::Head(Head::default());
                                    continue;
                                }
                                b'\n' => {
                                    *empty_line = true;
                                    None
                                }
                                b'\r' => None,
                                _ => {
                                    *empty_line = false;
                                    None
                                }
                            }
                        }
                    };
                    if let (Some(n), State::Chunked(c)) = (next, &mut self.state) {
                        *c = n;
                    }
                }
            }
        }
    }
}

/// One header line of a head (lower-cased, maybe cut short).
fn header(h: &mut Head, line: &[u8]) {
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return;
    };
    let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
    match name {
        b"content-length" => {
            h.content_lengths += 1;
            h.length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        }
        b"transfer-encoding" => {
            h.transfer_encodings += 1;
            h.chunked = value.ends_with(b"chunked");
        }
        b"upgrade" => h.leaves_http = true,
        _ => {}
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(d) = this.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            // Best effort, as the connection ends either way.
            let _ = Pin::new(&mut this.inner).poll_write(cx, HEAD_TIMEOUT);
            this.deadline = None;
            this.state = State::Off;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request header timeout",
            )));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r
            && !matches!(this.state, State::Off)
        {
            this.watch(&buf.filled()[before..]);
            match (this.mid_head(), this.timeout, this.deadline.is_some()) {
                (true, Some(t), false) => {
                    let mut d = Box::pin(tokio::time::sleep(t));
                    // Registered now, so the deadline wakes this read.
                    let _ = d.as_mut().poll(cx);
                    this.deadline = Some(d);
                }
                (false, _, true) => this.deadline = None,
                _ => {}
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(stream: &[u8]) -> u64 {
        let v = Verdicts::default();
        let mut w = Watched::new((), Arc::new(v), None);
        w.watch(stream);
        w.verdicts.first_bad.load(Ordering::Acquire)
    }

    #[test]
    fn smuggling_heads_are_found_wherever_they_are() {
        assert_eq!(bad(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            1
        );
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\ncontent-length: 5\r\nCONTENT-LENGTH: 5\r\n\r\nhello"),
            1
        );
        // The third request, after a sized body and a chunked one.
        let s = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\nGET /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(bad(s), 3);
        // A body that looks like a bad head is a body.
        let s = b"POST /a HTTP/1.1\r\nContent-Length: 52\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(bad(s), 0);
        // Split anywhere.
        let s: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n";
        for cut in 0..s.len() {
            let v = Arc::new(Verdicts::default());
            let mut w = Watched::new((), v.clone(), None);
            w.watch(&s[..cut]);
            w.watch(&s[cut..]);
            assert_eq!(v.first_bad.load(Ordering::Acquire), 2, "cut at {cut}");
        }
    }

    #[test]
    fn verdicts_go_to_the_right_request() {
        let v = Arc::new(Verdicts::default());
        let mut w = Watched::new((), v.clone(), None);
        w.watch(b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
        assert!(!v.next_request_is_bad());
        assert!(v.next_request_is_bad());
        assert!(!v.next_request_is_bad());
    }

    #[test]
    fn what_it_cannot_follow_ends_the_watch() {
        assert_eq!(
            bad(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
            0
        );
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
            0
        );
    }
}
