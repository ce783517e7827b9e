//! Forwarding headers as Envoy's connection manager sets them with
//! `use_remote_address: true`: hop-by-hop headers dropped, the client
//! address appended to X-Forwarded-For, X-Forwarded-Proto set, and an
//! X-Request-Id generated when the client sent none.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the legacy ones proxies drop.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_ENVOY_TIMEOUT: HeaderName = HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
pub static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
static X_ENVOY_EXTERNAL_ADDRESS: HeaderName = HeaderName::from_static("x-envoy-external-address");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Drops `x-envoy-*` headers a client sent: at the edge they would steer
/// the proxy (timeouts, retries) from outside.
pub fn strip_envoy_internal(h: &mut HeaderMap) {
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-envoy-"))
        .cloned()
        .collect();
    for n in names {
        h.remove(n);
    }
}

/// `x-envoy-external-address`: the client's address, for external requests.
/// `client` is the address as a header value, made once per connection.
pub fn set_external_address(h: &mut HeaderMap, client: &HeaderValue, suppressed: bool) {
    if suppressed {
        return;
    }
    h.insert(X_ENVOY_EXTERNAL_ADDRESS.clone(), client.clone());
}

/// A client address as a header value, made once per connection so
/// requests share it.
pub fn address_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(client.to_string()))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A fresh X-Request-Id, replacing any the client sent.
pub fn new_request_id(h: &mut HeaderMap) {
    h.remove(&X_REQUEST_ID);
    ensure_request_id(h);
}

/// Removes hop-by-hop headers, including those named in `Connection`.
/// `keep_upgrade` keeps `Connection: upgrade` and `Upgrade` for WebSocket.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of them: one pass over the names instead
    // of a hashed removal per hop-by-hop name.
    if !keep_upgrade && !h.keys().any(is_hop_by_hop) {
        return;
    }
    // Most requests name nothing in `Connection`: no allocation for them.
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| !(keep_upgrade && *n == header::UPGRADE))
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    // `TE: trailers` is end to end in practice (gRPC needs it); Envoy
    // forwards exactly that value and drops any other.
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for n in HOP_BY_HOP.iter() {
        if keep_upgrade && (*n == header::CONNECTION || *n == header::UPGRADE) {
            continue;
        }
        h.remove(n);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    h.remove(&PROXY_CONNECTION);
    // The proxy answers `Expect: 100-continue` itself; upstream never sees it.
    h.remove(header::EXPECT);
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn is_hop_by_hop(n: &HeaderName) -> bool {
    HOP_BY_HOP.contains(n) || *n == PROXY_CONNECTION || *n == header::EXPECT
}

/// Whether a request asks for a WebSocket upgrade.
pub fn is_websocket_upgrade(h: &HeaderMap) -> bool {
    let conn_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    conn_upgrade
        && h.get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
}

/// Appends the client address to X-Forwarded-For and sets the scheme the
/// client used, as Envoy does at the edge.
pub fn set_forwarded(h: &mut HeaderMap, client: &HeaderValue, tls: bool) {
    let xff = match h.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(prev) if !prev.is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 1 + client.len());
            v.extend_from_slice(prev);
            v.push(b',');
            v.extend_from_slice(client.as_bytes());
            HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok()
        }
        _ => Some(client.clone()),
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    h.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
}

/// Generates X-Request-Id unless the client sent one.
pub fn ensure_request_id(h: &mut HeaderMap) {
    if !h.contains_key(&X_REQUEST_ID) {
        // A v4 UUID from the thread's RNG (no getrandom syscall per
        // request), formatted on the stack.
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = id.hyphenated().encode_lower(&mut buf);
        if let Ok(v) = HeaderValue::from_str(text) {
            h.insert(X_REQUEST_ID.clone(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TE).is_none());
        assert!(h.get(header::EXPECT).is_none());
        assert!(h.get("x-kept").is_some());
        // `TE: trailers` goes through, as Envoy forwards it (gRPC needs it).
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &address_value("10.0.0.1".parse().unwrap()), false);
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "10.0.0.1");
        set_forwarded(&mut h, &address_value("10.0.0.2".parse().unwrap()), true);
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "10.0.0.1,10.0.0.2");
        assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "https");
    }

    #[test]
    fn websocket_upgrade_keeps_its_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_websocket_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }
}
