//! `response-transformer`: Kong's `remove`, `rename`, `replace`, `add` and
//! `append` (in that order) on the upstream response's headers and, when
//! the response is JSON, on its body's top-level fields (`json`, typed by
//! `json_types`).
//!
//! A JSON body is read whole to be rewritten, up to the listener's buffer
//! limit; a larger one (declared or found while reading) is passed on
//! untouched, as is a compressed one or one that is not a JSON object.

use super::transform::{self, header_name, header_values, split_pair, truthy};
use crate::body::{Body, Resumed};
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug)]
pub struct ResponseTransformer {
    headers: HeaderOps,
    json: JsonOps,
}

#[derive(Debug, Default)]
struct HeaderOps {
    remove: Vec<HeaderName>,
    rename: Vec<(HeaderName, HeaderName)>,
    replace: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    append: Vec<(HeaderName, HeaderValue)>,
}

/// Values already typed: a string, or what `json_types` made of it.
#[derive(Debug, Default)]
struct JsonOps {
    remove: Vec<String>,
    rename: Vec<(String, String)>,
    replace: Vec<(String, Value)>,
    add: Vec<(String, Value)>,
    append: Vec<(String, Value)>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    remove: Option<Part>,
    rename: Option<Part>,
    replace: Option<Part>,
    add: Option<Part>,
    append: Option<Part>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Part {
    #[serde(deserialize_with = "transform::list")]
    headers: Vec<String>,
    #[serde(deserialize_with = "transform::list")]
    json: Vec<String>,
    #[serde(deserialize_with = "transform::list")]
    json_types: Vec<String>,
}

impl ResponseTransformer {
    pub fn compile(v: &Value) -> Result<ResponseTransformer, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let [remove, rename, replace, add, append] =
            [c.remove, c.rename, c.replace, c.add, c.append].map(Option::unwrap_or_default);
        transform::warn_templates(
            "response-transformer",
            [&replace, &add, &append]
                .into_iter()
                .flat_map(|p| p.headers.iter().chain(&p.json))
                .map(String::as_str),
        );
        let headers = HeaderOps {
            // Kong does not check these names; one that is not a header
            // name can never be present, so it is dropped.
            remove: remove
                .headers
                .iter()
                .filter_map(|e| split_pair(e))
                .filter_map(|(n, _)| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            rename: rename
                .headers
                .iter()
                .filter_map(|e| split_pair(e))
                .filter(|(_, new)| !new.is_empty())
                .map(|(old, new)| -> Result<_, String> {
                    Ok((header_name(old)?, header_name(new)?))
                })
                .collect::<Result<_, String>>()?,
            replace: header_values(&replace.headers)?,
            add: header_values(&add.headers)?,
            append: header_values(&append.headers)?,
        };
        let json = JsonOps {
            remove: remove
                .json
                .iter()
                .filter_map(|e| split_pair(e))
                .map(|(n, _)| n.to_string())
                .collect(),
            rename: rename
                .json
                .iter()
                .filter_map(|e| split_pair(e))
                .filter(|(_, new)| !new.is_empty())
                .map(|(o, n)| (o.to_string(), n.to_string()))
                .collect(),
            replace: typed_values(&replace),
            add: typed_values(&add),
            append: typed_values(&append),
        };
        Ok(ResponseTransformer { headers, json })
    }

    /// Transforms the upstream's response: headers, then a JSON body.
    pub async fn apply(&self, resp: Response<Body>, buffer: u32) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        self.headers.apply(&mut parts.headers);
        if self.json.is_empty() || !json_body(parts.status, &parts.headers, buffer) {
            return Response::from_parts(parts, body);
        }
        let limit = buffer as usize;
        let mut body = body;
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            // Too large, trailers, or an error: what was read goes on,
            // then the rest as it comes, untouched.
            let resumed = |buf: BytesMut, next, rest| {
                Resumed {
                    head: Some(buf.freeze()),
                    next: Some(next),
                    rest,
                }
                .boxed()
            };
            let data = match frame {
                Ok(f) => match f.into_data() {
                    Ok(data) => data,
                    Err(trailers) => {
                        let b = resumed(buf, Ok(trailers), Some(body));
                        return Response::from_parts(parts, b);
                    }
                },
                Err(e) => return Response::from_parts(parts, resumed(buf, Err(e), None)),
            };
            if buf.len() + data.len() > limit {
                let b = resumed(buf, Ok(Frame::data(data)), Some(body));
                return Response::from_parts(parts, b);
            }
            buf.extend_from_slice(&data);
        }
        let raw = buf.freeze();
        let out = match self.json.rewrite(&raw) {
            Some(b) => {
                parts
                    .headers
                    .insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
                Bytes::from(b)
            }
            None => raw,
        };
        Response::from_parts(
            parts,
            Full::new(out).map_err(|never| match never {}).boxed(),
        )
    }
}

/// `json` entries with the `json_types` at the same position; one whose
/// value cannot be had (not a number) is dropped, as Kong skips it.
fn typed_values(p: &Part) -> Vec<(String, Value)> {
    p.json
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let (name, value) = split_pair(e)?;
            let v = typed(value, p.json_types.get(i).map(String::as_str))?;
            Some((name.to_string(), v))
        })
        .collect()
}

/// Kong's `json_value`: a string, or cast to `number` (Lua's `tonumber`)
/// or `boolean` (`true` only for the text `true`).
fn typed(value: &str, ty: Option<&str>) -> Option<Value> {
    // Kong reads an empty value as nil, which cjson writes as `null`: it
    // ends up as the text "null".
    let value = if value.is_empty() { "null" } else { value };
    match ty {
        Some("number") => lua_number(value),
        Some("boolean") => Some(Value::Bool(value == "true")),
        _ => Some(Value::String(value.to_string())),
    }
}

/// Lua's `tonumber`: decimal or `0x` hex, blanks around allowed; integral
/// values are written as integers, as cjson does.
fn lua_number(s: &str) -> Option<Value> {
    let t = s.trim();
    let f = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => i64::from_str_radix(h, 16).ok()? as f64,
        None => t.parse::<f64>().ok()?,
    };
    // cjson refuses to write NaN and infinities.
    if !f.is_finite() {
        return None;
    }
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.fract() == 0.0 && f.abs() < EXACT {
        Some(Value::from(f as i64))
    } else {
        serde_json::Number::from_f64(f).map(Value::Number)
    }
}

/// Whether the body is one to rewrite: JSON by its (transformed)
/// `Content-Type`, not compressed, and not declared larger than the buffer.
fn json_body(status: StatusCode, h: &HeaderMap, buffer: u32) -> bool {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return false;
    }
    let json = h
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json);
    let compressed = h
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let too_large = h
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > u64::from(buffer));
    if json && too_large {
        tracing::debug!("response-transformer: JSON body larger than the buffer passed untouched");
    }
    json && !compressed && !too_large
}

/// Kong's media-type test: one of the comma-separated types is exactly
/// `application/json`, parameters aside, in any case.
fn is_json(ct: &str) -> bool {
    ct.split(',').any(|t| {
        t.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/json")
    })
}

impl HeaderOps {
    /// Kong's `transform_headers`. Rename, replace and add test the
    /// headers as the upstream sent them (Kong reads them once, before
    /// any change), not as the earlier steps left them.
    fn apply(&self, h: &mut HeaderMap) {
        let before = (!self.rename.is_empty() || !self.replace.is_empty() || !self.add.is_empty())
            .then(|| h.clone());
        for n in &self.remove {
            h.remove(n);
        }
        if let Some(before) = &before {
            for (old, new) in &self.rename {
                if !before.contains_key(old) {
                    continue;
                }
                // Set, then the old one cleared: a rename to itself removes it.
                h.remove(new);
                for v in before.get_all(old) {
                    h.append(new.clone(), v.clone());
                }
                h.remove(old);
            }
            for (n, v) in &self.replace {
                if before.contains_key(n) {
                    h.insert(n.clone(), v.clone());
                }
            }
            for (n, v) in &self.add {
                if !before.contains_key(n) {
                    h.insert(n.clone(), v.clone());
                }
            }
        }
        for (n, v) in &self.append {
            h.append(n.clone(), v.clone());
        }
    }
}

impl JsonOps {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }

    /// Kong's `transform_json_body`; None leaves the body as it was (not
    /// a JSON object).
    fn rewrite(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let mut m = transform::json_object(raw)?;
        self.apply(&mut m);
        serde_json::to_vec(&Value::Object(m)).ok()
    }

    fn apply(&self, m: &mut Map<String, Value>) {
        for n in &self.remove {
            m.shift_remove(n);
        }
        for (old, new) in &self.rename {
            // Any value, null and false included, moves.
            if let Some(v) = m.shift_remove(old)
                && old != new
            {
                m.insert(new.clone(), v);
            }
        }
        // Lua's truth: replace needs a field present and not false, add
        // one absent or false.
        for (n, v) in &self.replace {
            if truthy(m.get(n)) {
                m.insert(n.clone(), v.clone());
            }
        }
        for (n, v) in &self.add {
            if !truthy(m.get(n)) {
                m.insert(n.clone(), v.clone());
            }
        }
        for (n, v) in &self.append {
            transform::append_json(m, n, v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::BoxError;
    use serde_json::json;

    fn rt(cfg: Value) -> ResponseTransformer {
        ResponseTransformer::compile(&cfg).unwrap()
    }

    fn full(b: impl Into<Bytes>) -> Body {
        Full::new(b.into()).map_err(|never| match never {}).boxed()
    }

    fn json_response(body: &str) -> Response<Body> {
        let mut r = Response::new(full(body.to_string()));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        r.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        r
    }

    async fn body_of(r: Response<Body>) -> (http::response::Parts, Bytes) {
        let (p, b) = r.into_parts();
        (p, b.collect().await.unwrap().to_bytes())
    }

    fn all(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn headers_against_what_the_upstream_sent() {
        let t = rt(json!({
            "remove": {"headers": ["X-Gone", "X-Back", "not a name"]},
            "rename": {"headers": ["X-Old:X-New", "X-Gone:X-Ghost", "X-Self:X-Self"]},
            "replace": {"headers": ["X-Rep:new", "X-Missing:no", "X-Gone:again"]},
            "add": {"headers": ["X-Back:again", "X-Add:yes", "X-Rep:not-added"]},
            "append": {"headers": ["X-App:2", "X-Fresh:1", "X-Empty:"]}
        }));
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-gone", "1"),
            ("x-back", "b"),
            ("x-old", "a"),
            ("x-old", "b"),
            ("x-self", "s"),
            ("x-rep", "old"),
            ("x-app", "1"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        t.headers.apply(&mut h);
        // Removed, and renamed or replaced from what the upstream sent.
        assert_eq!(all(&h, "x-ghost"), ["1"]);
        assert_eq!(all(&h, "x-gone"), ["again"]);
        // The upstream sent it: add does not bring it back.
        assert!(!h.contains_key("x-back"));
        assert_eq!(all(&h, "x-new"), ["a", "b"]);
        assert!(!h.contains_key("x-old") && !h.contains_key("x-self"));
        assert_eq!(all(&h, "x-rep"), ["new"]);
        assert!(!h.contains_key("x-missing"));
        assert_eq!(all(&h, "x-add"), ["yes"]);
        assert_eq!(all(&h, "x-app"), ["1", "2"]);
        assert_eq!(all(&h, "x-fresh"), ["1"]);
        assert!(!h.contains_key("x-empty"));
    }

    #[test]
    fn json_fields_and_types() {
        let t = rt(json!({
            "remove": {"json": ["secret"]},
            "rename": {"json": ["old:new", "nul:was_null", "ghost:x"]},
            "replace": {"json": ["rep:7", "off:x", "none:x"], "json_types": ["number"]},
            "add": {"json": ["n:1.5", "b:true", "s:1", "off:false", "keep:x", "bad:abc", "e:"],
                    "json_types": ["number", "boolean", "string", "boolean", "string", "number"]},
            "append": {"json": ["list:x", "str:y", "num:0x10"],
                       "json_types": ["string", "string", "number"]}
        }));
        let out = t
            .json
            .rewrite(
                br#"{"secret":1,"old":"o","nul":null,"rep":"r","off":false,"keep":0,
                     "list":[1],"str":"s","num":3}"#,
            )
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"new":"o","was_null":null,"rep":7,"off":false,"keep":0,"n":1.5,"b":true,
                   "s":"1","e":"null","list":[1,"x"],"str":["s","y"],"num":[16]})
        );
        assert!(t.json.rewrite(b"[1]").is_none());
        assert!(t.json.rewrite(b"not json").is_none());
        assert_eq!(lua_number(" 10 "), Some(json!(10)));
        assert_eq!(lua_number("1e3"), Some(json!(1000)));
        assert_eq!(lua_number("-0.25"), Some(json!(-0.25)));
        assert_eq!(lua_number("nan"), None);
        assert_eq!(lua_number(""), None);
    }

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("text/plain, application/json"));
        assert!(!is_json("application/json-seq"));
        assert!(!is_json("application/problem+json"));
        assert!(!is_json("text/json"));
    }

    #[tokio::test]
    async fn body_rewritten_with_its_length() {
        let t = rt(json!({"remove": {"json": ["b"]}, "add": {"headers": ["X-A:1"]}}));
        let (p, b) = body_of(t.apply(json_response(r#"{"a":1,"b":2}"#), 1 << 20).await).await;
        assert_eq!(b, r#"{"a":1}"#);
        assert_eq!(p.headers[CONTENT_LENGTH], "7");
        assert_eq!(p.headers["x-a"], "1");
        // Not JSON by type, compressed, not an object: untouched.
        let mut r = json_response(r#"{"b":2}"#);
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(body_of(t.apply(r, 1 << 20).await).await.1, r#"{"b":2}"#);
        let mut r = json_response(r#"{"b":2}"#);
        r.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(body_of(t.apply(r, 1 << 20).await).await.1, r#"{"b":2}"#);
        let (p, b) = body_of(t.apply(json_response("[1, 2]"), 1 << 20).await).await;
        assert_eq!(b, "[1, 2]");
        assert_eq!(p.headers[CONTENT_LENGTH], "6");
        // The content type as the header transforms left it.
        let renamed = rt(json!({"rename": {"headers": ["Content-Type:X-Type"]},
                                "remove": {"json": ["b"]}}));
        let (p, b) = body_of(renamed.apply(json_response(r#"{"b":2}"#), 1 << 20).await).await;
        assert_eq!(b, r#"{"b":2}"#);
        assert!(p.headers.get(CONTENT_TYPE).is_none());
    }

    #[tokio::test]
    async fn larger_than_the_buffer_passes_untouched() {
        let t = rt(json!({"remove": {"json": ["b"]}}));
        let body = r#"{"a":"0123456789","b":2}"#;
        // Declared too large: not read at all.
        let (_, b) = body_of(t.apply(json_response(body), 8).await).await;
        assert_eq!(b, body);
        // Undeclared, streamed in pieces: what was read, then the rest.
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = body
            .as_bytes()
            .chunks(5)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let stream = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        let mut r = Response::new(stream.boxed());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let (p, b) = body_of(t.apply(r, 12).await).await;
        assert_eq!(b, body);
        assert!(p.headers.get(CONTENT_LENGTH).is_none());
        // The same within the buffer is rewritten.
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = body
            .as_bytes()
            .chunks(5)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let stream = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        let mut r = Response::new(stream.boxed());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let (_, b) = body_of(t.apply(r, 1 << 20).await).await;
        assert_eq!(b, r#"{"a":"0123456789"}"#);
    }
}
