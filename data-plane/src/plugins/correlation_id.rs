//! `correlation-id`: a request id in `header_name` when the client sent
//! none, optionally echoed on the response.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct CorrelationId {
    header: HeaderName,
    generator: Generator,
    pub echo_downstream: bool,
    counter: AtomicU64,
    /// uuid#counter: one uuid per instance, then `#n`.
    base: String,
}

#[derive(Debug, Clone, Copy)]
enum Generator {
    Uuid,
    UuidCounter,
    Tracker,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    header_name: Option<String>,
    #[serde(default)]
    generator: Option<String>,
    #[serde(default)]
    echo_downstream: bool,
}

impl CorrelationId {
    pub fn compile(v: &serde_json::Value) -> Result<CorrelationId, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let name = c.header_name.unwrap_or_else(|| "Kong-Request-ID".into());
        let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("header_name {name:?} is not a header name"))?;
        let generator = match c.generator.as_deref().unwrap_or("uuid#counter") {
            "uuid" => Generator::Uuid,
            "uuid#counter" => Generator::UuidCounter,
            "tracker" => Generator::Tracker,
            other => return Err(format!("generator {other:?} is not supported")),
        };
        Ok(CorrelationId {
            header,
            generator,
            echo_downstream: c.echo_downstream,
            counter: AtomicU64::new(0),
            base: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// The request's id: the client's, else a new one set on the request.
    pub fn apply(
        &self,
        headers: &mut HeaderMap,
        local: std::net::SocketAddr,
    ) -> Option<(HeaderName, HeaderValue)> {
        let existing = headers.get(&self.header).filter(|v| !v.is_empty()).cloned();
        let value = match existing {
            Some(v) => v,
            None => {
                let id = match self.generator {
                    Generator::Uuid => uuid::Uuid::new_v4().to_string(),
                    Generator::UuidCounter => {
                        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
                        format!("{}#{n}", self.base)
                    }
                    // Kong's tracker: server address, port, pid, a
                    // per-instance counter and the time in ms.
                    Generator::Tracker => {
                        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
                        let ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis())
                            .unwrap_or(0);
                        format!(
                            "{}-{}-{}-{n}-{ms}",
                            local.ip(),
                            local.port(),
                            std::process::id()
                        )
                    }
                };
                let v = HeaderValue::from_str(&id).ok()?;
                headers.insert(self.header.clone(), v.clone());
                v
            }
        };
        self.echo_downstream.then(|| (self.header.clone(), value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ADDR: std::net::SocketAddr = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        8000,
    ));

    #[test]
    fn generates_keeps_and_echoes() {
        let c = CorrelationId::compile(&json!({"echo_downstream": true})).unwrap();
        let mut h = HeaderMap::new();
        let (name, v1) = c.apply(&mut h, ADDR).unwrap();
        assert_eq!(name, "kong-request-id");
        assert!(v1.to_str().unwrap().ends_with("#1"));
        assert_eq!(h.get("kong-request-id"), Some(&v1));
        let mut h2 = HeaderMap::new();
        let (_, v2) = c.apply(&mut h2, ADDR).unwrap();
        assert!(v2.to_str().unwrap().ends_with("#2"));
        // The client's own id is kept.
        let mut h3 = HeaderMap::new();
        h3.insert("kong-request-id", HeaderValue::from_static("mine"));
        assert_eq!(c.apply(&mut h3, ADDR).unwrap().1, "mine");
        let quiet =
            CorrelationId::compile(&json!({"generator": "uuid", "header_name": "X-Req"})).unwrap();
        let mut h4 = HeaderMap::new();
        assert!(quiet.apply(&mut h4, ADDR).is_none());
        assert_eq!(h4.get("x-req").unwrap().len(), 36);
    }
}
