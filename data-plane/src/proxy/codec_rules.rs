//! Requests Envoy refuses before routing, answered as Envoy answers them
//! (measured on Envoy 1.40 with the same requests, see
//! tests/tests/proxy_hostile.rs). hyper's HTTP/1 parser is looser in these
//! places, so they are checked on the parsed request; where hyper is
//! stricter than Envoy, docs/proxy.md records it.
//!
//! Codec errors get Envoy's reason phrase as a `text/plain` body and close
//! the connection; the connection manager's own refusals (no Host, QUERY
//! without a content type) have an empty body.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::{Method, Request, StatusCode, Version};

/// Why a request is refused, and how Envoy words it.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// Envoy's reason phrase as the body; empty for the connection
    /// manager's refusals.
    pub body: &'static str,
    /// Codec errors end the connection.
    pub close: bool,
}

const fn codec(status: StatusCode, body: &'static str) -> Refusal {
    Refusal {
        status,
        body,
        close: true,
    }
}

/// The methods Envoy's HTTP/1 parser accepts; any other token is a codec
/// error. (M-SEARCH is refused by Envoy 1.40, MSEARCH accepted.)
const METHODS: &[&str] = &[
    "ACL",
    "BIND",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MOVE",
    "MSEARCH",
    "NOTIFY",
    "OPTIONS",
    "PATCH",
    "POST",
    "PROPFIND",
    "PROPPATCH",
    "PURGE",
    "PUT",
    "QUERY",
    "REBIND",
    "REPORT",
    "SEARCH",
    "SOURCE",
    "SUBSCRIBE",
    "TRACE",
    "UNBIND",
    "UNLINK",
    "UNLOCK",
    "UNSUBSCRIBE",
];

/// Whether `v` is an authority Envoy accepts in `Host` (`HeaderUtility::
/// authorityIsValid`): RFC 3986's reg-name, IP literal and port characters.
fn authority_ok(v: &[u8]) -> bool {
    v.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@[]%".contains(&b))
}

/// The size of an HTTP/1 request head as sent: the request line, each
/// header line and the blank line (whitespace hyper trimmed not counted).
fn head_size<B>(req: &Request<B>) -> usize {
    let u = req.uri();
    let target = u.path_and_query().map_or(1, |p| p.as_str().len())
        + u.scheme_str().map_or(0, |s| s.len() + 3)
        + u.authority().map_or(0, |a| a.as_str().len());
    let line = req.method().as_str().len() + 1 + target + 1 + 8 + 2;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum();
    line + headers + 2
}

/// Checks a request as Envoy's HTTP/1 codec and connection manager do;
/// `max_head` is the listener's `max_request_headers_kb` in bytes.
pub fn check<B>(req: &Request<B>, max_head: usize) -> Option<Refusal> {
    let http1 = matches!(
        req.version(),
        Version::HTTP_11 | Version::HTTP_10 | Version::HTTP_09
    );
    if req.version() == Version::HTTP_10 || req.version() == Version::HTTP_09 {
        return Some(codec(StatusCode::UPGRADE_REQUIRED, "Upgrade Required"));
    }
    if http1 && head_size(req) > max_head {
        return Some(codec(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request Header Fields Too Large",
        ));
    }
    if http1 && !METHODS.contains(&req.method().as_str()) {
        return Some(codec(StatusCode::BAD_REQUEST, "Bad Request"));
    }
    let h = req.headers();
    if http1 {
        // Framing: one Content-Length, or chunked alone.
        let mut te = h.get_all(TRANSFER_ENCODING).iter();
        if let Some(first) = te.next() {
            if te.next().is_some() || !first.as_bytes().eq_ignore_ascii_case(b"chunked") {
                return Some(codec(StatusCode::NOT_IMPLEMENTED, "Not Implemented"));
            }
            if h.contains_key(CONTENT_LENGTH) {
                return Some(codec(StatusCode::BAD_REQUEST, "Bad Request"));
            }
        }
        if h.get_all(CONTENT_LENGTH).iter().nth(1).is_some() {
            return Some(codec(StatusCode::BAD_REQUEST, "Bad Request"));
        }
        // `*` is only OPTIONS', which no route serves.
        if req.uri().path() == "*" && req.uri().authority().is_none() {
            return Some(if req.method() == Method::OPTIONS {
                Refusal {
                    status: StatusCode::NOT_FOUND,
                    body: "",
                    close: false,
                }
            } else {
                codec(StatusCode::BAD_REQUEST, "Bad Request")
            });
        }
    }
    let mut hosts = h.get_all(HOST).iter();
    match hosts.next() {
        Some(v) if !authority_ok(v.as_bytes()) => {
            return Some(codec(StatusCode::BAD_REQUEST, "Bad Request"));
        }
        Some(_) => {}
        None if http1 && req.uri().authority().is_none() => {
            return Some(Refusal {
                status: StatusCode::BAD_REQUEST,
                body: "",
                close: true,
            });
        }
        None => {}
    }
    if req.method().as_str() == "QUERY" && !h.contains_key(CONTENT_TYPE) {
        return Some(Refusal {
            status: StatusCode::BAD_REQUEST,
            body: "",
            close: true,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn status(r: &Request<()>) -> Option<u16> {
        check(r, 60 * 1024).map(|x| x.status.as_u16())
    }

    #[test]
    fn methods_envoy_knows() {
        for m in ["GET", "PROPFIND", "PURGE", "MSEARCH", "TRACE"] {
            assert_eq!(status(&req(m, "/", &[("host", "a")])), None, "{m}");
        }
        for m in ["CONNECTX", "FOO_BAR", "M-SEARCH", "get"] {
            assert_eq!(status(&req(m, "/", &[("host", "a")])), Some(400), "{m}");
        }
        assert_eq!(status(&req("QUERY", "/", &[("host", "a")])), Some(400));
        assert_eq!(
            status(&req(
                "QUERY",
                "/",
                &[("host", "a"), ("content-type", "application/json")]
            )),
            None
        );
    }

    #[test]
    fn hosts_and_framing() {
        assert_eq!(status(&req("GET", "/", &[])), Some(400));
        assert_eq!(status(&req("GET", "http://x/", &[])), None, "absolute form");
        assert_eq!(
            status(&req("GET", "/", &[("host", "")])),
            None,
            "empty Host is forwarded"
        );
        assert_eq!(status(&req("GET", "/", &[("host", "a b")])), Some(400));
        assert_eq!(status(&req("GET", "/", &[("host", "a/b")])), Some(400));
        assert_eq!(status(&req("GET", "/", &[("host", "u@a:80")])), None);
        let te = |v: &str| req("POST", "/", &[("host", "a"), ("transfer-encoding", v)]);
        assert_eq!(status(&te("chunked")), None);
        assert_eq!(status(&te("CHUNKED")), None);
        assert_eq!(status(&te("gzip, chunked")), Some(501));
        assert_eq!(
            status(&req(
                "POST",
                "/",
                &[
                    ("host", "a"),
                    ("transfer-encoding", "chunked"),
                    ("content-length", "5")
                ]
            )),
            Some(400)
        );
        assert_eq!(
            status(&req(
                "POST",
                "/",
                &[
                    ("host", "a"),
                    ("content-length", "5"),
                    ("content-length", "5")
                ]
            )),
            Some(400)
        );
    }
}
