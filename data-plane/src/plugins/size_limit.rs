//! `request-size-limiting`: a declared `Content-Length` over the limit is
//! refused at once, before the body is read; a body of unknown length is
//! counted as it streams (`crate::body::ClientBody`) and the request
//! refused (413) as soon as it goes over, without buffering.

use super::reject::Reject;
use http::HeaderMap;
use serde::Deserialize;

#[derive(Debug)]
pub struct SizeLimit {
    bytes: u64,
    require_content_length: bool,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    allowed_payload_size: Option<f64>,
    #[serde(default)]
    size_unit: Option<String>,
    #[serde(default)]
    require_content_length: bool,
}

pub const TOO_LARGE: &str = "Request size limit exceeded";

impl SizeLimit {
    pub fn compile(v: &serde_json::Value) -> Result<SizeLimit, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let unit: u64 = match c.size_unit.as_deref().unwrap_or("megabytes") {
            "megabytes" => 1 << 20,
            "kilobytes" => 1 << 10,
            "bytes" => 1,
            other => return Err(format!("size_unit {other:?} is not supported")),
        };
        let n = c.allowed_payload_size.unwrap_or(128.0);
        if n.is_nan() || n < 0.0 {
            return Err("allowed_payload_size must be at least 0".into());
        }
        Ok(SizeLimit {
            bytes: (n * unit as f64) as u64,
            require_content_length: c.require_content_length,
        })
    }

    /// Checks the declared length. `Ok(Some(n))`: the body's length is not
    /// declared, and must be counted as it streams, up to `n` bytes.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<u64>, Reject> {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(n) if n > self.bytes => Err(Reject::new(413, TOO_LARGE)),
            Some(_) => Ok(None),
            None if self.require_content_length && has_body(headers) => Err(Reject::new(
                411,
                "A valid Content-Length header is required",
            )),
            None => Ok(Some(self.bytes)),
        }
    }
}

fn has_body(h: &HeaderMap) -> bool {
    h.contains_key(http::header::TRANSFER_ENCODING)
}
