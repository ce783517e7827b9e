//! Kong's log serializer (`kong.log.serialize()`): one JSON object per
//! request, the same for every log plugin.
//!
//! **Difference:** Kong redacts only `Authorization` and
//! `Proxy-Authorization`. Entries leave the gateway for log servers, so
//! every credential Gantry knows the place of is redacted too: cookies,
//! API-key headers and query arguments (in `querystring`, `uri`, `url` and
//! `upstream_uri`).

use crate::plugins::transform::form_decode;
use http::HeaderMap;
use serde_json::{Map, Value, json};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

const REDACTED: &str = "REDACTED";

/// Request headers whose values are credentials.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "apikey",
    "x-api-key",
    "api-key",
];

/// Query arguments whose values are credentials (key-auth's default
/// `apikey`, and the names tokens usually travel under).
const SECRET_ARGS: &[&str] = &[
    "apikey",
    "api_key",
    "api-key",
    "key",
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "jwt",
    "client_secret",
    "password",
    "code",
];

/// What the request phases recorded for the log plugins.
pub struct Request {
    pub started_at: SystemTime,
    pub client_ip: IpAddr,
    pub request_id: String,
    pub method: String,
    pub scheme: &'static str,
    /// Host as the client sent it, without the port.
    pub host: String,
    /// The listener's port.
    pub port: u16,
    /// Path and query as received.
    pub uri: String,
    /// As forwarded: after the plugins (identity headers included).
    pub headers: HeaderMap,
    pub tls: bool,
    /// `{"route": ..., "service": ...}` from gantry-cp.
    pub context: Option<Arc<str>>,
    pub consumer: Option<Consumer>,
}

pub struct Consumer {
    pub id: String,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    /// The credential's id (none for an anonymous consumer).
    pub credential: Option<String>,
}

/// What is known once the response has been sent.
pub struct Done<'a> {
    pub status: u16,
    pub response_headers: &'a HeaderMap,
    pub request_size: u64,
    pub response_size: u64,
    pub upstream_uri: Option<&'a str>,
    pub upstream_status: Option<u16>,
    /// Each attempt's endpoint, `ip:port`.
    pub tries: &'a [String],
    pub kong_ms: u64,
    pub proxy_ms: Option<u64>,
    pub request_ms: u64,
    /// The upstream answered (Kong's source `upstream`), else the gateway.
    pub from_upstream: bool,
}

pub fn serialize(r: &Request, d: &Done<'_>) -> Vec<u8> {
    let url = format!("{}://{}:{}{}", r.scheme, r.host, r.port, redact_uri(&r.uri));
    let mut request = json!({
        "id": r.request_id,
        "uri": redact_uri(&r.uri),
        "url": url,
        "querystring": querystring(&r.uri),
        "method": r.method,
        "headers": headers(&r.headers, true),
        "size": d.request_size,
    });
    if r.tls {
        request["tls"] = json!({"version": "TLSv1.3"});
    }
    let started_ms = r
        .started_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut root = json!({
        "request": request,
        "upstream_uri": d.upstream_uri.map(redact_uri).unwrap_or_default(),
        "upstream_status": d.upstream_status.map(|s| s.to_string()).unwrap_or_default(),
        "response": {
            "status": d.status,
            "headers": headers(d.response_headers, false),
            "size": d.response_size,
        },
        "latencies": {
            "kong": d.kong_ms,
            "proxy": d.proxy_ms.map_or(-1, |p| p as i64),
            "request": d.request_ms,
            "receive": 0,
        },
        "tries": d.tries.iter().map(|t| {
            let (ip, port) = t.rsplit_once(':').unwrap_or((t, ""));
            json!({"ip": ip.trim_start_matches('[').trim_end_matches(']'), "port": port.parse::<u16>().ok()})
        }).collect::<Vec<_>>(),
        "client_ip": r.client_ip.to_string(),
        "started_at": started_ms,
        "source": if d.from_upstream { "upstream" } else { "kong" },
        "workspace_name": "default",
    });
    if let Some(ctx) = r
        .context
        .as_deref()
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
    {
        root["route"] = ctx["route"].clone();
        root["service"] = ctx["service"].clone();
    }
    if let Some(c) = &r.consumer {
        root["consumer"] = json!({"id": c.id, "username": c.username, "custom_id": c.custom_id});
        if let Some(cred) = &c.credential {
            root["authenticated_entity"] = json!({"id": cred, "consumer_id": c.id});
        }
    }
    serde_json::to_vec(&root).unwrap_or_default()
}

/// Headers as Kong's `get_headers()`: lower-case names, a repeated header
/// as an array.
fn headers(h: &HeaderMap, request: bool) -> Value {
    let mut out = Map::new();
    for name in h.keys() {
        let n = name.as_str();
        let secret = if request {
            SECRET_HEADERS.contains(&n)
        } else {
            n == "set-cookie"
        };
        let values: Vec<Value> = h
            .get_all(name)
            .iter()
            .map(|v| match secret {
                true => Value::from(REDACTED),
                false => Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            })
            .collect();
        let v = match <[Value; 1]>::try_from(values) {
            Ok([one]) => one,
            Err(many) => Value::Array(many),
        };
        out.insert(n.to_string(), v);
    }
    Value::Object(out)
}

fn is_secret_arg(name: &str) -> bool {
    SECRET_ARGS.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// Kong's `get_query()`: `k=v` as a string, a bare `k` as `true`, a
/// repeated key as an array; credentials redacted.
fn querystring(uri: &str) -> Value {
    let mut out = Map::new();
    let Some((_, q)) = uri.split_once('?') else {
        return Value::Object(out);
    };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.split_once('=') {
            Some((k, v)) => (form_decode(k), Some(form_decode(v))),
            None => (form_decode(pair), None),
        };
        let v = match v {
            _ if is_secret_arg(&k) => Value::from(REDACTED),
            Some(v) => Value::from(v),
            None => Value::Bool(true),
        };
        match out.get_mut(&k) {
            Some(Value::Array(a)) => a.push(v),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, v]);
            }
            None => {
                out.insert(k, v);
            }
        }
    }
    Value::Object(out)
}

/// A path and query with credential arguments' values replaced.
fn redact_uri(uri: &str) -> String {
    let Some((path, q)) = uri.split_once('?') else {
        return uri.to_string();
    };
    let args: Vec<String> = q
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_arg(&form_decode(k)) => format!("{k}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", args.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> Request {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer secret-token".parse().unwrap());
        headers.insert("apikey", "secret-key".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        headers.insert("user-agent", "curl/8".parse().unwrap());
        Request {
            started_at: SystemTime::UNIX_EPOCH
                + std::time::Duration::from_millis(1_700_000_000_123),
            client_ip: "10.0.0.7".parse().unwrap(),
            request_id: "rid".into(),
            method: "GET".into(),
            scheme: "http",
            host: "api.test".into(),
            port: 8000,
            uri: uri.into(),
            headers,
            tls: false,
            context: Some(
                r#"{"route":{"id":"r1","name":"users"},"service":{"id":"s1","host":"up"}}"#.into(),
            ),
            consumer: Some(Consumer {
                id: "c1".into(),
                username: Some("alice".into()),
                custom_id: None,
                credential: Some("k1".into()),
            }),
        }
    }

    #[test]
    fn kongs_shape_with_credentials_redacted() {
        let r = request("/users?apikey=secret-q&page=2&flag&tag=a&tag=b");
        let mut resp = HeaderMap::new();
        resp.insert("set-cookie", "session=secret-cookie".parse().unwrap());
        resp.insert("content-type", "application/json".parse().unwrap());
        let d = Done {
            status: 200,
            response_headers: &resp,
            request_size: 120,
            response_size: 300,
            upstream_uri: Some("/users?apikey=secret-q&page=2"),
            upstream_status: Some(200),
            tries: &["127.0.0.1:9000".to_string()],
            kong_ms: 1,
            proxy_ms: Some(4),
            request_ms: 5,
            from_upstream: true,
        };
        let bytes = serialize(&r, &d);
        let text = String::from_utf8(bytes.clone()).unwrap();
        for secret in ["secret-token", "secret-key", "secret-q", "secret-cookie"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["request"]["headers"]["authorization"], REDACTED);
        assert_eq!(v["request"]["headers"]["x-multi"], json!(["a", "b"]));
        assert_eq!(
            v["request"]["querystring"],
            json!({"apikey": REDACTED, "page": "2", "flag": true, "tag": ["a", "b"]})
        );
        assert_eq!(
            v["request"]["url"],
            "http://api.test:8000/users?apikey=REDACTED&page=2&flag&tag=a&tag=b"
        );
        assert_eq!(v["upstream_uri"], "/users?apikey=REDACTED&page=2");
        assert_eq!(v["upstream_status"], "200");
        assert_eq!(v["response"]["status"], 200);
        assert_eq!(
            v["latencies"],
            json!({"kong": 1, "proxy": 4, "request": 5, "receive": 0})
        );
        assert_eq!(v["tries"], json!([{"ip": "127.0.0.1", "port": 9000}]));
        assert_eq!(v["route"]["name"], "users");
        assert_eq!(v["service"]["host"], "up");
        assert_eq!(v["consumer"]["username"], "alice");
        assert_eq!(
            v["authenticated_entity"],
            json!({"id": "k1", "consumer_id": "c1"})
        );
        assert_eq!(v["client_ip"], "10.0.0.7");
        assert_eq!(v["started_at"], 1_700_000_000_123u64);
        assert_eq!(v["source"], "upstream");
    }

    #[test]
    fn a_refusal_has_no_upstream() {
        let r = request("/users");
        let d = Done {
            status: 401,
            response_headers: &HeaderMap::new(),
            request_size: 50,
            response_size: 60,
            upstream_uri: None,
            upstream_status: None,
            tries: &[],
            kong_ms: 0,
            proxy_ms: None,
            request_ms: 0,
            from_upstream: false,
        };
        let v: Value = serde_json::from_slice(&serialize(&r, &d)).unwrap();
        assert_eq!(v["latencies"]["proxy"], -1);
        assert_eq!(v["source"], "kong");
        assert_eq!(v["upstream_status"], "");
        assert_eq!(v["tries"], json!([]));
    }
}
