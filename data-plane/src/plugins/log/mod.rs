//! Kong's log plugins: `http-log`, `file-log`, `tcp-log`, `udp-log`.
//!
//! Each request an instance applies to is serialized as Kong's
//! `kong.log.serialize()` ([`serialize`]) in the log phase, once the
//! response has been sent, and queued ([`queue`]); a worker per instance
//! sends it off the request path ([`sinks`]). A dead or slow log server
//! loses entries by count (`gantry_log_entries_dropped_total`); it never
//! slows or fails a request.

pub mod queue;
pub mod serialize;
mod sinks;

use bytes::Bytes;
use queue::{QUEUES, Queue, QueueConf};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// One compiled log plugin instance: where its entries queue.
pub struct LogPlugin {
    queue: Arc<Queue>,
}

impl std::fmt::Debug for LogPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogPlugin").finish_non_exhaustive()
    }
}

impl LogPlugin {
    pub fn push(&self, entry: Bytes) {
        self.queue.push(entry);
    }

    pub fn compile(name: &str, v: &serde_json::Value) -> Result<LogPlugin, String> {
        no_lua(v)?;
        // Identical configs share a queue, as Kong names queues by config.
        let key = format!("{name}\n{v}");
        let (plugin, conf, sink): (&'static str, QueueConf, sinks::Sink) = match name {
            "http-log" => {
                let (conf, sink) = http(v)?;
                ("http-log", conf, sink)
            }
            "file-log" => ("file-log", QueueConf::default(), file(v)?),
            "tcp-log" => ("tcp-log", QueueConf::default(), tcp(v)?),
            "udp-log" => ("udp-log", QueueConf::default(), udp(v)?),
            other => return Err(format!("{other} is not a log plugin")),
        };
        let mut sink = Some(sink);
        let queue = QUEUES.get(plugin, key, conf, || {
            sink.take().expect("the sink is made once")
        });
        Ok(LogPlugin { queue })
    }
}

fn no_lua(v: &serde_json::Value) -> Result<(), String> {
    match v.get("custom_fields_by_lua") {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::Object(o)) if o.is_empty() => Ok(()),
        Some(_) => Err("custom_fields_by_lua is not supported: gantry-proxy runs no Lua".into()),
    }
}

fn millis(v: Option<f64>, default: u64) -> Duration {
    v.filter(|n| n.is_finite() && *n >= 0.0)
        .map_or(Duration::from_millis(default), |n| {
            Duration::from_millis(n as u64)
        })
}

#[derive(Deserialize)]
struct HttpConf {
    http_endpoint: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    headers: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    queue: Option<QueueConf>,
}

fn http(v: &serde_json::Value) -> Result<(QueueConf, sinks::Sink), String> {
    use base64::Engine;
    let c = HttpConf::deserialize(v).map_err(|e| e.to_string())?;
    let endpoint = match gantry_shared::vault::resolve(&c.http_endpoint)
        .map_err(|e| format!("http_endpoint: {e}"))?
    {
        // Checked by the control plane, resolved only on the node.
        d if d == gantry_shared::vault::DEFERRED_VALUE => "http://deferred.invalid/".to_string(),
        e => e,
    };
    let url = url::Url::parse(&endpoint).map_err(|_| "http_endpoint: not a URL".to_string())?;
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        _ => return Err("http_endpoint: the scheme must be http or https".into()),
    };
    let authorization = match (url.username(), url.password()) {
        ("", None) => None,
        (u, p) => {
            use super::request_validator::percent_decode;
            let u = percent_decode(u.as_bytes());
            let p = percent_decode(p.unwrap_or("").as_bytes());
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            Some(
                http::HeaderValue::from_str(&format!("Basic {token}"))
                    .map_err(|_| "http_endpoint: bad user info".to_string())?,
            )
        }
    };
    let mut bare = url.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let uri: http::Uri = bare
        .as_str()
        .parse()
        .map_err(|_| "http_endpoint: not a URI".to_string())?;
    let method = match c.method.as_deref().unwrap_or("POST") {
        "POST" => http::Method::POST,
        "PUT" => http::Method::PUT,
        "PATCH" => http::Method::PATCH,
        m => return Err(format!("method {m:?} is not one of POST, PUT, PATCH")),
    };
    let content_type = c.content_type.as_deref().unwrap_or("application/json");
    let content_type = http::HeaderValue::from_str(content_type)
        .map_err(|_| format!("content_type {content_type:?} is not a header value"))?;
    let mut headers = Vec::new();
    for (k, v) in c.headers.unwrap_or_default() {
        let v = gantry_shared::vault::resolve(&v).map_err(|e| format!("headers.{k}: {e}"))?;
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("headers: {k:?} is not a header name"))?;
        let value = http::HeaderValue::from_str(&v)
            .map_err(|_| format!("headers.{k}: not a header value"))?;
        headers.push((name, value));
    }
    let conf = c.queue.unwrap_or_default();
    conf.check()?;
    let timeout = millis(c.timeout, 10_000);
    let client = super::outbound::client(https, timeout)?;
    Ok((
        conf,
        sinks::Sink::Http(Box::new(sinks::Http {
            uri,
            method,
            content_type,
            authorization,
            headers,
            timeout,
            client,
        })),
    ))
}

#[derive(Deserialize)]
struct FileConf {
    path: String,
    #[serde(default)]
    reopen: bool,
}

fn file(v: &serde_json::Value) -> Result<sinks::Sink, String> {
    let c = FileConf::deserialize(v).map_err(|e| e.to_string())?;
    if c.path.is_empty() || c.path.contains(['*', '&', '%', '\\', '`']) {
        return Err("path: not a valid filename".into());
    }
    Ok(sinks::Sink::File(sinks::File {
        path: c.path.into(),
        reopen: c.reopen,
        file: None,
    }))
}

#[derive(Deserialize)]
struct SocketConf {
    host: String,
    port: u16,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    keepalive: Option<f64>,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    tls_sni: Option<String>,
}

fn tcp(v: &serde_json::Value) -> Result<sinks::Sink, String> {
    let c = SocketConf::deserialize(v).map_err(|e| e.to_string())?;
    let tls = match c.tls {
        false => None,
        true => {
            let name = c.tls_sni.clone().unwrap_or_else(|| c.host.clone());
            let name = rustls_pki_types::ServerName::try_from(name)
                .map_err(|_| "tls_sni: not a server name".to_string())?;
            Some((super::outbound::tls_config()?, name))
        }
    };
    Ok(sinks::Sink::Tcp(sinks::Tcp {
        host: c.host,
        port: c.port,
        timeout: millis(c.timeout, 10_000),
        keepalive: millis(c.keepalive, 60_000),
        tls,
        conn: None,
    }))
}

fn udp(v: &serde_json::Value) -> Result<sinks::Sink, String> {
    let c = SocketConf::deserialize(v).map_err(|e| e.to_string())?;
    Ok(sinks::Sink::Udp(sinks::Udp {
        host: c.host,
        port: c.port,
        timeout: millis(c.timeout, 10_000),
        socket: None,
    }))
}
