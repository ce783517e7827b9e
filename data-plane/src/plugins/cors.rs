//! `cors`: answers preflight requests itself (unless `preflight_continue`)
//! and adds CORS headers to every other answer, Kong 3's way.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;
use serde::Deserialize;

static ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");
static REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");

#[derive(Debug)]
pub struct Cors {
    origins: Origins,
    headers: Option<HeaderValue>,
    exposed: Option<HeaderValue>,
    methods: HeaderValue,
    max_age: Option<HeaderValue>,
    credentials: bool,
    private_network: bool,
    pub preflight_continue: bool,
    allow_origin_absent: bool,
}

#[derive(Debug)]
enum Origins {
    /// No list, or `*` in it.
    Any,
    /// One plain origin: always sent as is.
    Fixed(HeaderValue),
    /// Exact origins and anchored regexes, matched against `Origin`.
    List(Vec<Match>),
}

#[derive(Debug)]
enum Match {
    Exact(String),
    Regex(Regex),
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    origins: Option<Vec<String>>,
    #[serde(default)]
    headers: Option<Vec<String>>,
    #[serde(default)]
    exposed_headers: Option<Vec<String>>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    max_age: Option<f64>,
    #[serde(default)]
    credentials: bool,
    #[serde(default)]
    private_network: bool,
    #[serde(default)]
    preflight_continue: bool,
    #[serde(default)]
    allow_origin_absent: Option<bool>,
}

fn joined(list: &[String], field: &str) -> Result<Option<HeaderValue>, String> {
    if list.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&list.join(","))
        .map(Some)
        .map_err(|_| format!("{field}: not a valid header value"))
}

/// Kong sets a single origin directly when it does not look like a regex.
fn plain(o: &str) -> bool {
    o.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'-'))
}

impl Cors {
    pub fn compile(v: &serde_json::Value) -> Result<Cors, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let list = c.origins.unwrap_or_default();
        let origins = if list.is_empty() || list.iter().any(|o| o == "*") {
            Origins::Any
        } else if list.len() == 1 && plain(&list[0]) {
            Origins::Fixed(
                HeaderValue::from_str(&list[0]).map_err(|_| "origins: not a header value")?,
            )
        } else {
            Origins::List(
                list.iter()
                    .map(|o| {
                        if plain(o) {
                            Ok(Match::Exact(o.to_ascii_lowercase()))
                        } else {
                            Regex::new(&format!("^(?:{o})$"))
                                .map(Match::Regex)
                                .map_err(|_| format!("origins: {o:?} is not a valid regex"))
                        }
                    })
                    .collect::<Result<_, String>>()?,
            )
        };
        let methods = c.methods.unwrap_or_else(|| {
            [
                "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT",
            ]
            .map(String::from)
            .to_vec()
        });
        Ok(Cors {
            origins,
            headers: joined(&c.headers.unwrap_or_default(), "headers")?,
            exposed: joined(&c.exposed_headers.unwrap_or_default(), "exposed_headers")?,
            methods: joined(&methods, "methods")?.unwrap_or(HeaderValue::from_static("")),
            max_age: c.max_age.map(|m| HeaderValue::from(m as u64)),
            credentials: c.credentials,
            private_network: c.private_network,
            preflight_continue: c.preflight_continue,
            allow_origin_absent: c.allow_origin_absent.unwrap_or(true),
        })
    }

    pub fn is_preflight(req: &HeaderMap, method: &Method) -> bool {
        method == Method::OPTIONS && req.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// `Access-Control-Allow-Origin` (and `Vary`) for this request's Origin.
    fn origin(&self, req: &HeaderMap, out: &mut Vec<(HeaderName, HeaderValue)>) {
        let origin = req.get(ORIGIN);
        match &self.origins {
            Origins::Any => match origin {
                // A credentialed request cannot use `*`: echo the origin.
                Some(o) if self.credentials => {
                    out.push((ACCESS_CONTROL_ALLOW_ORIGIN, o.clone()));
                    out.push((VARY, HeaderValue::from_static("Origin")));
                }
                _ => out.push((ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"))),
            },
            Origins::Fixed(v) => {
                out.push((ACCESS_CONTROL_ALLOW_ORIGIN, v.clone()));
                out.push((VARY, HeaderValue::from_static("Origin")));
            }
            Origins::List(list) => {
                out.push((VARY, HeaderValue::from_static("Origin")));
                let Some(o) = origin.and_then(|o| o.to_str().ok()) else {
                    return;
                };
                let lower = o.to_ascii_lowercase();
                let ok = list.iter().any(|m| match m {
                    Match::Exact(e) => *e == lower,
                    Match::Regex(r) => r.is_match(o),
                });
                if ok && let Some(o) = origin {
                    out.push((ACCESS_CONTROL_ALLOW_ORIGIN, o.clone()));
                }
            }
        }
    }

    /// The headers of a preflight answer (Kong answers 200 itself).
    pub fn preflight(&self, req: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(8);
        self.origin(req, &mut out);
        if self.credentials {
            out.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        let headers = self
            .headers
            .clone()
            .or_else(|| req.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned());
        if let Some(h) = headers {
            out.push((ACCESS_CONTROL_ALLOW_HEADERS, h));
        }
        out.push((ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone()));
        if let Some(m) = &self.max_age {
            out.push((ACCESS_CONTROL_MAX_AGE, m.clone()));
        }
        if self.private_network
            && req
                .get(&REQUEST_PRIVATE_NETWORK)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
        {
            out.push((
                ALLOW_PRIVATE_NETWORK.clone(),
                HeaderValue::from_static("true"),
            ));
        }
        out
    }

    /// Headers added to an ordinary (non-preflight) answer.
    pub fn actual(&self, req: &HeaderMap, out: &mut Vec<(HeaderName, HeaderValue)>) {
        if !self.allow_origin_absent && !req.contains_key(ORIGIN) {
            return;
        }
        self.origin(req, out);
        if self.credentials {
            out.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(e) = &self.exposed {
            out.push((ACCESS_CONTROL_EXPOSE_HEADERS, e.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get<'a>(h: &'a [(HeaderName, HeaderValue)], n: &str) -> Option<&'a str> {
        h.iter()
            .find(|(k, _)| k == n)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn origins_exact_regex_and_any() {
        let c = Cors::compile(
            &json!({"origins": ["https://a.example", r"https://.*\.b\.example"],
            "exposed_headers": ["X-Total"], "credentials": true, "max_age": 600}),
        )
        .unwrap();
        let mut req = HeaderMap::new();
        req.insert(ORIGIN, HeaderValue::from_static("https://x.b.example"));
        let mut out = Vec::new();
        c.actual(&req, &mut out);
        assert_eq!(
            get(&out, "access-control-allow-origin"),
            Some("https://x.b.example")
        );
        assert_eq!(get(&out, "access-control-expose-headers"), Some("X-Total"));
        assert_eq!(get(&out, "access-control-allow-credentials"), Some("true"));
        req.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
        let mut out = Vec::new();
        c.actual(&req, &mut out);
        assert_eq!(get(&out, "access-control-allow-origin"), None);
        req.insert(ORIGIN, HeaderValue::from_static("https://a.example"));
        req.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-a"),
        );
        let p = c.preflight(&req);
        assert_eq!(
            get(&p, "access-control-allow-origin"),
            Some("https://a.example")
        );
        assert_eq!(get(&p, "access-control-allow-headers"), Some("x-a"));
        assert_eq!(get(&p, "access-control-max-age"), Some("600"));
        assert!(
            get(&p, "access-control-allow-methods")
                .unwrap()
                .starts_with("GET,HEAD")
        );
        let any = Cors::compile(&json!({})).unwrap();
        let mut out = Vec::new();
        any.actual(&HeaderMap::new(), &mut out);
        assert_eq!(get(&out, "access-control-allow-origin"), Some("*"));
    }
}
