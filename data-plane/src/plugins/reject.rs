//! Kong's error responses: `{"message": ...}` as JSON, with extra headers.

use http::{HeaderName, HeaderValue, StatusCode};

#[derive(Debug)]
pub struct Reject {
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A body other than `{"message": ...}` (the jwt plugin's claim errors).
    pub body: Option<Box<serde_json::Value>>,
    /// No body at all (a CORS preflight answer).
    pub empty: bool,
    /// A stored response (a proxy-cache hit): its headers and body.
    pub cached: Option<Box<(http::HeaderMap, bytes::Bytes)>>,
}

impl Reject {
    pub fn new(status: u16, message: impl Into<String>) -> Reject {
        Reject {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            headers: Vec::new(),
            body: None,
            empty: false,
            cached: None,
        }
    }

    /// An answer with no body, e.g. a CORS preflight's 200.
    pub fn answer(status: u16, headers: Vec<(HeaderName, HeaderValue)>) -> Reject {
        Reject {
            headers,
            empty: true,
            ..Reject::new(status, "")
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reject {
        self.headers.push((name, value));
        self
    }

    /// The body Kong's `kong.response.error` sends.
    pub fn body(&self) -> String {
        if let Some(b) = &self.body {
            return b.to_string();
        }
        serde_json::json!({ "message": self.message }).to_string()
    }
}
