//! What a plugin answers instead of forwarding: Kong's `{"message": ...}`
//! errors, and the few other answers the phases give (a CORS preflight, a
//! cached response), with extra headers.

use crate::body::{Body, empty, full};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Response, StatusCode};

#[derive(Debug)]
pub struct Reject {
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Answer,
}

/// The body of the answer.
#[derive(Debug)]
pub enum Answer {
    /// Kong's `{"message": ...}`.
    Message,
    /// Another JSON body (the jwt plugin's claim errors).
    Json(Box<serde_json::Value>),
    /// None at all (a CORS preflight).
    Empty,
    /// A stored response (a proxy-cache hit): its own headers and body.
    Stored(Box<(http::HeaderMap, bytes::Bytes)>),
}

impl Reject {
    pub fn new(status: u16, message: impl Into<String>) -> Reject {
        Reject {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            headers: Vec::new(),
            body: Answer::Message,
        }
    }

    /// An answer with no body, e.g. a CORS preflight's 200.
    pub fn answer(status: u16, headers: Vec<(HeaderName, HeaderValue)>) -> Reject {
        Reject {
            headers,
            body: Answer::Empty,
            ..Reject::new(status, "")
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reject {
        self.headers.push((name, value));
        self
    }

    /// The JSON text of a `Message` or `Json` answer (what Kong's
    /// `kong.response.error` / `exit` send).
    pub fn json(&self) -> String {
        match &self.body {
            Answer::Json(b) => b.to_string(),
            _ => serde_json::json!({ "message": self.message }).to_string(),
        }
    }
}

impl Reject {
    /// The answer as Kong sends it, in place of the upstream's.
    pub fn into_response(self) -> Response<Body> {
        let mut resp = match self.body {
            Answer::Stored(c) => {
                let (headers, body) = *c;
                let mut resp = Response::new(full(body));
                *resp.headers_mut() = headers;
                resp
            }
            Answer::Empty => Response::new(empty()),
            Answer::Message | Answer::Json(_) => {
                let body = self.json();
                let mut resp = Response::new(full(body.clone()));
                let h = resp.headers_mut();
                h.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
                h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                resp
            }
        };
        *resp.status_mut() = self.status;
        for (k, v) in self.headers {
            resp.headers_mut().append(k, v);
        }
        resp
    }
}
