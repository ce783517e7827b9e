//! `request-transformer`: Kong's `remove`, `rename`, `replace`, `add` and
//! `append` (in that order) on the headers, the query string and the body
//! (JSON or form-encoded) of the request sent upstream, plus `http_method`
//! and `replace.uri`.
//!
//! [`RequestTransformer::access`] runs in the access phase and changes the
//! method, the headers and the query; what needs the body is left in a
//! [`Pending`] that the forwarding path runs, reading the body whole but
//! bounded. Template values (`$(headers.host)`) are sent literally.

use super::reject::Reject;
use super::size_limit::TOO_LARGE;
use super::transform::{self, Arg, Args, header_name, header_values, split_pair, truthy};
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, Entry, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

#[derive(Debug)]
pub struct RequestTransformer {
    /// Kong can set only the methods in its list; another is its 500, per request.
    method: Option<Result<Method, String>>,
    /// `replace.uri`, escaped; one not starting with `/` is Kong's 500.
    uri: Option<Result<String, String>>,
    headers: HeaderOps,
    query: ArgOps,
    body: ArgOps,
}

/// Kong's `kong.service.request.set_method` list.
const KONG_METHODS: [&str; 15] = [
    "GET",
    "HEAD",
    "PUT",
    "POST",
    "DELETE",
    "OPTIONS",
    "MKCOL",
    "COPY",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
    "PATCH",
    "TRACE",
];

#[derive(Debug, Default)]
struct HeaderOps {
    remove: Vec<HeaderName>,
    rename: Vec<(HeaderName, HeaderName)>,
    replace: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    append: Vec<(HeaderName, HeaderValue)>,
}

/// Operations on named arguments: the query string, or body fields.
#[derive(Debug, Default)]
struct ArgOps {
    remove: Vec<String>,
    rename: Vec<(String, String)>,
    replace: Vec<(String, String)>,
    add: Vec<(String, String)>,
    append: Vec<(String, String)>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    http_method: Option<String>,
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
    querystring: Vec<String>,
    #[serde(deserialize_with = "transform::list")]
    body: Vec<String>,
    uri: Option<String>,
}

/// What the body is, as Kong tells it from `Content-Type` (a substring
/// match, JSON first).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Content {
    Json,
    Multipart,
    Form,
}

impl RequestTransformer {
    pub fn compile(v: &Value) -> Result<RequestTransformer, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let [remove, rename, replace, add, append] =
            [c.remove, c.rename, c.replace, c.add, c.append].map(Option::unwrap_or_default);
        transform::warn_templates(
            "request-transformer",
            [&remove, &rename, &replace, &add, &append]
                .into_iter()
                .flat_map(|p| p.headers.iter().chain(&p.querystring).chain(&p.body))
                .chain(replace.uri.as_ref())
                .map(String::as_str),
        );
        let method = c.http_method.map(|m| {
            if KONG_METHODS.contains(&m.as_str()) {
                Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())
            } else {
                Err(format!("invalid method: {m}"))
            }
        });
        let uri = replace.uri.as_deref().filter(|u| !u.is_empty()).map(|u| {
            if u.starts_with('/') {
                Ok(escape_path(u))
            } else {
                Err(format!("path must start with /: {u:?}"))
            }
        });
        let headers = HeaderOps {
            remove: names(&remove.headers)?,
            rename: pairs(&rename.headers)
                .into_iter()
                .map(|(o, n)| -> Result<_, String> { Ok((header_name(&o)?, header_name(&n)?)) })
                .collect::<Result<_, String>>()?,
            replace: header_values(&replace.headers)?,
            add: header_values(&add.headers)?,
            append: header_values(&append.headers)?,
        };
        let args = |part: fn(&Part) -> &Vec<String>| ArgOps {
            remove: part(&remove)
                .iter()
                .filter_map(|e| split_pair(e))
                .map(|(n, _)| n.to_string())
                .collect(),
            rename: pairs(part(&rename)),
            replace: pairs(part(&replace)),
            add: pairs(part(&add)),
            append: pairs(part(&append)),
        };
        Ok(RequestTransformer {
            method,
            uri,
            headers,
            query: args(|p| &p.querystring),
            body: args(|p| &p.body),
        })
    }

    /// The access phase, in Kong's order: uri, method, headers, (body,)
    /// query. Errors are Kong's 500 for a method or path it cannot set.
    pub fn access(
        self: &Arc<Self>,
        headers: &mut HeaderMap,
        pq: &mut String,
        method: &mut Method,
    ) -> Result<Pending, Reject> {
        if let Some(Err(e)) = &self.uri {
            return Err(unexpected(e));
        }
        let mut merge_form = false;
        if let Some(m) = &self.method {
            let m = m.as_ref().map_err(|e| unexpected(e))?;
            // Kong looks at the body's type before the headers change.
            merge_form = [Method::GET, Method::HEAD, Method::TRACE].contains(m)
                && content(headers) == Some(Content::Form);
            *method = m.clone();
        }
        let host = self.headers.apply(headers);
        let body = match content(headers) {
            Some(c @ (Content::Json | Content::Form)) if !self.body.is_empty() => Some(c),
            // Multipart bodies are passed untouched (not implemented).
            _ => None,
        };
        // With a form body joining the query, the query's own transforms
        // wait for it (Kong merges first).
        if !merge_form {
            self.rewrite_query(pq, None);
        }
        Ok(Pending {
            plugin: self.clone(),
            host,
            body,
            merge_form,
        })
    }

    /// Kong's `transform_querystrings`, after `extra` (a form body's
    /// arguments) joined the query. The query is rewritten, names in
    /// order, only when something applies; otherwise it stays as sent.
    fn rewrite_query(&self, pq: &mut String, extra: Option<Args>) {
        let extra = extra.filter(|a| !a.0.is_empty());
        if extra.is_none() && self.query.is_empty() {
            return;
        }
        let (path, query) = pq.split_once('?').unwrap_or((pq.as_str(), ""));
        let mut args = Args::parse(query.as_bytes());
        if let Some(extra) = extra {
            args.merge(extra);
        }
        self.query.apply_args(&mut args, true);
        let q = args.encode(true);
        let mut out = String::with_capacity(path.len() + 1 + q.len());
        out.push_str(path);
        if !q.is_empty() {
            out.push('?');
            out.push_str(&q);
        }
        *pq = out;
    }

    /// A JSON body rewritten, or None to leave it as sent (not a JSON
    /// object, or nothing applied).
    fn json_body(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let has_content = !raw.is_empty();
        // Kong treats an empty body as `{}`: `add` and `append` still apply.
        let mut m = if has_content {
            transform::json_object(raw)?
        } else {
            Map::new()
        };
        if !self.body.apply_json(&mut m, has_content) {
            return None;
        }
        serde_json::to_vec(&Value::Object(m)).ok()
    }

    /// A form body rewritten (fields keep their order), or None.
    fn form_body(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let mut a = Args::parse(raw);
        self.body
            .apply_args(&mut a, !raw.is_empty())
            .then(|| a.encode(false).into_bytes())
    }
}

/// Kong's plugin error: logged, and 500 to the client.
fn unexpected(e: &str) -> Reject {
    tracing::warn!(error = %e, "request-transformer cannot apply its config");
    Reject::new(500, "An unexpected error occurred")
}

/// Names only: anything after a colon is ignored, as in Kong.
fn names(entries: &[String]) -> Result<Vec<HeaderName>, String> {
    entries
        .iter()
        .filter_map(|e| split_pair(e))
        .map(|(n, _)| header_name(n))
        .collect()
}

/// `name:value` entries; one with an empty value does nothing in Kong
/// (its value is nil), so it is dropped.
fn pairs(entries: &[String]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter_map(|e| split_pair(e))
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Kong's `set_path` escaping: bytes a path may not hold are
/// percent-encoded (`?` and `#` among them); `%` is kept as given.
fn escape_path(p: &str) -> String {
    const KEEP: &[u8] = b"-._~!$&'()*+,;=:@/%";
    let mut out = String::with_capacity(p.len());
    for &b in p.as_bytes() {
        if b.is_ascii_alphanumeric() || KEEP.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn content(h: &HeaderMap) -> Option<Content> {
    let v = h.get(CONTENT_TYPE)?.as_bytes();
    let has = |needle: &[u8]| {
        v.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    if has(b"application/json") {
        Some(Content::Json)
    } else if has(b"multipart/form-data") {
        Some(Content::Multipart)
    } else if has(b"application/x-www-form-urlencoded") {
        Some(Content::Form)
    } else {
        None
    }
}

impl HeaderOps {
    /// Kong's `transform_headers`. Kong leaves `Host` out of the headers
    /// it transforms; replacing it (or renaming a header to it) sets the
    /// Host sent upstream instead, which is returned.
    fn apply(&self, h: &mut HeaderMap) -> Option<String> {
        let mut host = None;
        for n in &self.remove {
            if *n != HOST {
                h.remove(n);
            }
        }
        for (old, new) in &self.rename {
            if *old == HOST {
                continue;
            }
            let Entry::Occupied(e) = h.entry(old) else {
                continue;
            };
            let values: Vec<HeaderValue> = e.remove_entry_mult().1.collect();
            // Kong sets the new name, then clears the old one: renaming a
            // header to itself removes it.
            if old == new {
                continue;
            }
            if *new == HOST {
                host = values
                    .first()
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                continue;
            }
            // Every value moves; the new name's own values are replaced.
            h.remove(new);
            for v in values {
                h.append(new.clone(), v);
            }
        }
        for (n, v) in &self.replace {
            if *n == HOST {
                host = v.to_str().ok().map(str::to_string);
            } else if h.contains_key(n) {
                h.insert(n.clone(), v.clone());
            }
        }
        for (n, v) in &self.add {
            if *n != HOST && !h.contains_key(n) {
                h.insert(n.clone(), v.clone());
            }
        }
        for (n, v) in &self.append {
            if *n != HOST {
                h.append(n.clone(), v.clone());
            }
        }
        host
    }
}

impl ArgOps {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }

    /// Kong's rules on query or form arguments. `has_content`: remove,
    /// rename and replace apply to a non-empty body only. Returns whether
    /// Kong would write the arguments back (it does whenever one of those
    /// lists ran, even to no effect).
    fn apply_args(&self, a: &mut Args, has_content: bool) -> bool {
        let mut changed = false;
        if has_content && !self.remove.is_empty() {
            self.remove.iter().for_each(|n| a.remove(n));
            changed = true;
        }
        if has_content && !self.rename.is_empty() {
            self.rename.iter().for_each(|(o, n)| a.rename(o, n));
            changed = true;
        }
        if has_content {
            for (n, v) in &self.replace {
                if a.get(n).is_some() {
                    a.set(n, Some(Arg::One(v.as_bytes().to_vec())));
                    changed = true;
                }
            }
        }
        for (n, v) in &self.add {
            if a.get(n).is_none() {
                a.set(n, Some(Arg::One(v.as_bytes().to_vec())));
                changed = true;
            }
        }
        for (n, v) in &self.append {
            a.append(n, v);
            changed = true;
        }
        changed
    }

    /// The same on a JSON object's top-level fields, with Lua's truth:
    /// `replace` needs a field that is present and not `false`, `add` one
    /// that is absent or `false`. Values are strings.
    fn apply_json(&self, m: &mut Map<String, Value>, has_content: bool) -> bool {
        let mut changed = false;
        if has_content && !self.remove.is_empty() {
            for n in &self.remove {
                m.shift_remove(n);
            }
            changed = true;
        }
        if has_content && !self.rename.is_empty() {
            for (old, new) in &self.rename {
                // As in Kong: the new name takes whatever the old one held
                // (an absent old name removes it), then the old one goes.
                match m.get(old).cloned() {
                    Some(v) => m.insert(new.clone(), v),
                    None => m.shift_remove(new),
                };
                m.shift_remove(old);
            }
            changed = true;
        }
        if has_content {
            for (n, v) in &self.replace {
                if truthy(m.get(n)) {
                    m.insert(n.clone(), Value::String(v.clone()));
                    changed = true;
                }
            }
        }
        for (n, v) in &self.add {
            if !truthy(m.get(n)) {
                m.insert(n.clone(), Value::String(v.clone()));
                changed = true;
            }
        }
        for (n, v) in &self.append {
            transform::append_json(m, n, Value::String(v.clone()));
            changed = true;
        }
        changed
    }
}

/// What the request-transformer leaves for the forwarding path, which
/// holds the body.
#[derive(Debug)]
pub struct Pending {
    plugin: Arc<RequestTransformer>,
    /// The Host to send upstream, from `replace.headers`.
    host: Option<String>,
    /// The body's kind, when body transforms apply to it.
    body: Option<Content>,
    /// `http_method` GET, HEAD or TRACE with a form body: its arguments
    /// join the query.
    merge_form: bool,
}

impl Pending {
    /// Whether [`Pending::rewrite_body`] must run (and read the body).
    pub fn reads_body(&self) -> bool {
        self.body.is_some() || self.merge_form
    }

    /// The Host to send upstream instead of the route's.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// `replace.uri`: the path sent upstream in place of the route's
    /// (strip_path and the service's path no longer apply), with the
    /// request's query.
    pub fn upstream_path(&self, pq: &str) -> Option<String> {
        let path = self.plugin.uri.as_ref()?.as_ref().ok()?;
        Some(match pq.split_once('?') {
            Some((_, q)) => format!("{path}?{q}"),
            None => path.clone(),
        })
    }

    /// Reads the body, at most `buffer` bytes (and at most `counted`, the
    /// request-size-limiting allowance for a body of undeclared length),
    /// then applies the body transforms and any query change waiting for
    /// the body. Returns the body to forward; `Content-Length` is set when
    /// it changed. Too large is Kong's 413, refused before anything is
    /// forwarded.
    /// Rewrites a body already read whole (see [`read`]).
    pub fn rewrite_body(&self, headers: &mut HeaderMap, pq: &mut String, raw: Bytes) -> Bytes {
        if self.merge_form {
            self.plugin.rewrite_query(pq, Some(Args::parse(&raw)));
        }
        let rewritten = match self.body {
            Some(Content::Json) => self.plugin.json_body(&raw),
            Some(Content::Form) => self.plugin.form_body(&raw),
            _ => None,
        };
        match rewritten {
            Some(b) => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
                Bytes::from(b)
            }
            None => raw,
        }
    }
}

/// The whole body, refused with Kong's 413 past `limit` bytes (at once
/// when `Content-Length` says so).
/// Reads a request body whole, refusing (Kong's 413) past `limit` bytes,
/// declared or counted.
pub async fn read(
    headers: &HeaderMap,
    mut body: hyper::body::Incoming,
    limit: u64,
) -> Result<Bytes, Reject> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Reject::new(413, TOO_LARGE));
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            tracing::debug!(error = %e, "request body ended early");
            Reject::new(400, "Bad request")
        })?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(Reject::new(413, TOO_LARGE));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt(cfg: Value) -> Arc<RequestTransformer> {
        Arc::new(RequestTransformer::compile(&cfg).unwrap())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn all(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// Runs the access phase; returns what is pending, the path and method.
    fn access(t: &Arc<RequestTransformer>, h: &mut HeaderMap, pq: &str) -> (Pending, String) {
        let mut pq = pq.to_string();
        let mut m = Method::POST;
        let p = t.access(h, &mut pq, &mut m).unwrap();
        (p, pq)
    }

    #[test]
    fn headers_in_kongs_order() {
        let t = rt(json!({
            "remove": {"headers": ["X-Gone", "X-Back"]},
            "rename": {"headers": ["X-Old:X-New", "X-Absent:X-Other", "X-Self:X-Self"]},
            "replace": {"headers": ["X-Rep:new", "X-Missing:no", "X-Empty:"]},
            "add": {"headers": ["X-Back:again", "X-Rep:not-added", "X-Add:yes"]},
            "append": {"headers": ["X-App:2", "X-App:3", "X-Fresh:1"]}
        }));
        let mut h = headers(&[
            ("x-gone", "1"),
            ("x-back", "old"),
            ("x-old", "a"),
            ("x-old", "b"),
            ("x-new", "replaced"),
            ("x-other", "kept"),
            ("x-self", "s"),
            ("x-rep", "old"),
            ("x-empty", "kept"),
            ("x-app", "1"),
        ]);
        let (p, _) = access(&t, &mut h, "/");
        assert!(p.host().is_none());
        assert!(!h.contains_key("x-gone"));
        // Removed, then added again: Kong's table is live.
        assert_eq!(all(&h, "x-back"), ["again"]);
        assert!(!h.contains_key("x-old"));
        assert_eq!(all(&h, "x-new"), ["a", "b"]);
        assert_eq!(all(&h, "x-other"), ["kept"]);
        assert!(!h.contains_key("x-self"));
        assert_eq!(all(&h, "x-rep"), ["new"]);
        assert!(!h.contains_key("x-missing"));
        assert_eq!(all(&h, "x-empty"), ["kept"]);
        assert_eq!(all(&h, "x-add"), ["yes"]);
        assert_eq!(all(&h, "x-app"), ["1", "2", "3"]);
        assert_eq!(all(&h, "x-fresh"), ["1"]);
    }

    #[test]
    fn host_is_only_replaced_upstream() {
        let t = rt(json!({
            "remove": {"headers": ["Host"]},
            "add": {"headers": ["Host:added"]},
            "replace": {"headers": ["Host:internal.example"]}
        }));
        let mut h = headers(&[("host", "client.example")]);
        let (p, _) = access(&t, &mut h, "/");
        assert_eq!(p.host(), Some("internal.example"));
        assert_eq!(all(&h, "host"), ["client.example"]);
    }

    #[test]
    fn query_rewritten_sorted_only_when_configured() {
        let t = rt(json!({
            "remove": {"querystring": ["drop"]},
            "rename": {"querystring": ["old:new"]},
            "replace": {"querystring": ["rep:r2", "none:x"]},
            "add": {"querystring": ["add:a b", "keep:no"]},
            "append": {"querystring": ["app:2"]}
        }));
        let (_, pq) = access(
            &t,
            &mut HeaderMap::new(),
            "/p?z=a+b&drop=1&old=o&rep=r&keep=k&app=1&flag",
        );
        assert_eq!(
            pq,
            "/p?add=a%20b&app=1&app=2&flag&keep=k&new=o&rep=r2&z=a%20b"
        );
        let (_, pq) = access(&t, &mut HeaderMap::new(), "/p");
        assert_eq!(pq, "/p?add=a%20b&app=2&keep=no");
        // Nothing configured for the query: it stays as sent.
        let none = rt(json!({"add": {"headers": ["X-A:1"]}}));
        let (_, pq) = access(&none, &mut HeaderMap::new(), "/p?b=1&a=%7e+");
        assert_eq!(pq, "/p?b=1&a=%7e+");
        // Everything removed: no `?` left.
        let rm = rt(json!({"remove": {"querystring": ["a"]}}));
        let (_, pq) = access(&rm, &mut HeaderMap::new(), "/p?a=1");
        assert_eq!(pq, "/p");
    }

    fn json_cfg() -> Arc<RequestTransformer> {
        rt(json!({
            "remove": {"body": ["secret"]},
            "rename": {"body": ["old:new", "ghost:n"]},
            "replace": {"body": ["rep:r2", "off:on", "nul:set", "none:x"]},
            "add": {"body": ["add:a", "keep:no", "off:added"]},
            "append": {"body": ["app:2", "num:2", "fresh:1"]}
        }))
    }

    #[test]
    fn json_body_rules() {
        let t = json_cfg();
        let out = t
            .json_body(
                br#"{"secret":"s","old":"o","n":1,"rep":"r","off":false,"nul":null,
                     "keep":"k","app":"1","num":5,"nested":{"secret":"kept"}}"#,
            )
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"rep":"r2","off":"added","nul":"set","keep":"k","app":["1","2"],
                   "num":["2"],"nested":{"secret":"kept"},"new":"o","add":"a","fresh":["1"]})
        );
        // Renaming an absent field removed `n`; `none` was not added.
        assert!(v.get("n").is_none() && v.get("none").is_none());
        // An empty body is `{}`: only add and append apply.
        let v: Value = serde_json::from_slice(&t.json_body(b"").unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"add":"a","keep":"no","off":"added","app":["2"],"num":["2"],"fresh":["1"]})
        );
        // Not a JSON object: untouched.
        assert!(t.json_body(b"[1,2]").is_none());
        assert!(t.json_body(b"{broken").is_none());
        // Only remove configured and an empty body: nothing to write.
        let rm = rt(json!({"remove": {"body": ["a"]}}));
        assert!(rm.json_body(b"").is_none());
        assert_eq!(rm.json_body(br#"{ "b" : 1 }"#).unwrap(), br#"{"b":1}"#);
    }

    #[test]
    fn form_body_rules() {
        let t = json_cfg();
        let out = t
            .form_body(b"secret=s&old=o&rep=r&keep=k&app=1&app=1b&z=x+y")
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "rep=r2&keep=k&app=1&app=1b&app=2&z=x%20y&new=o&add=a&off=added&num=2&fresh=1"
        );
        let rm = rt(json!({"remove": {"body": ["a"]}}));
        assert!(rm.form_body(b"").is_none());
    }

    #[test]
    fn body_pending_by_content_type_after_headers() {
        let t = rt(json!({"add": {"body": ["a:1"]}}));
        for (ct, json) in [
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/x-www-form-urlencoded", true),
            ("multipart/form-data; boundary=x", false),
            ("text/plain", false),
        ] {
            let mut h = headers(&[("content-type", ct)]);
            assert_eq!(access(&t, &mut h, "/").0.reads_body(), json, "{ct}");
        }
        // The type as the header transforms left it.
        let t = rt(json!({"add": {"body": ["a:1"]},
                          "replace": {"headers": ["Content-Type:application/json"]}}));
        let mut h = headers(&[("content-type", "text/plain")]);
        assert!(access(&t, &mut h, "/").0.reads_body());
        // No body transforms: nothing pending, whatever the type.
        let t = rt(json!({"add": {"headers": ["X-A:1"]}}));
        let mut h = headers(&[("content-type", "application/json")]);
        assert!(!access(&t, &mut h, "/").0.reads_body());
    }

    #[test]
    fn method_uri_and_form_merge() {
        let t = rt(json!({
            "http_method": "GET",
            "replace": {"uri": "/new path/x?y"},
            "add": {"querystring": ["z:1"]},
            "remove": {"querystring": ["f"]}
        }));
        let mut h = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        let mut pq = "/old?q=1&f=0".to_string();
        let mut m = Method::POST;
        let p = t.access(&mut h, &mut pq, &mut m).unwrap();
        assert_eq!(m, Method::GET);
        assert!(p.reads_body());
        // The query waits for the body's arguments.
        assert_eq!(pq, "/old?q=1&f=0");
        t.rewrite_query(&mut pq, Some(Args::parse(b"b=2&q=3&f=9")));
        // Merged, then transformed (f removed), in order.
        assert_eq!(pq, "/old?b=2&q=1&q=3&z=1");
        assert_eq!(
            p.upstream_path(&pq).unwrap(),
            "/new%20path/x%3Fy?b=2&q=1&q=3&z=1"
        );
        assert_eq!(p.upstream_path("/p").unwrap(), "/new%20path/x%3Fy");
        // Without a form body the query is transformed at once.
        let mut h = HeaderMap::new();
        let (p, pq) = access(&t, &mut h, "/old?f=0");
        assert!(!p.reads_body());
        assert_eq!(pq, "/old?z=1");
        // A method Kong cannot set, a path without `/`: Kong's 500.
        for cfg in [
            json!({"http_method": "PURGE"}),
            json!({"replace": {"uri": "relative"}}),
        ] {
            let (mut pq, mut m) = ("/".to_string(), Method::GET);
            let r = rt(cfg)
                .access(&mut HeaderMap::new(), &mut pq, &mut m)
                .unwrap_err();
            assert_eq!(r.status, 500);
        }
        // No replace.uri: the route's rewrite stands.
        assert!(
            access(&rt(json!({})), &mut HeaderMap::new(), "/")
                .0
                .upstream_path("/")
                .is_none()
        );
    }

    #[test]
    fn templates_are_literal_and_bad_headers_refused() {
        let t = rt(json!({"add": {"headers": ["X-T:$(headers.host)"]}}));
        let mut h = HeaderMap::new();
        access(&t, &mut h, "/");
        assert_eq!(all(&h, "x-t"), ["$(headers.host)"]);
        assert!(RequestTransformer::compile(&json!({"add": {"headers": ["X-A:a\nb"]}})).is_err());
        assert!(
            RequestTransformer::compile(&json!({"remove": {"headers": ["bad name"]}})).is_err()
        );
        // Kong's normalized defaults and nulls compile to nothing to do.
        let t = RequestTransformer::compile(&json!({"http_method": null,
            "remove": {"body": [], "headers": [], "querystring": []},
            "replace": {"uri": null, "body": null}}))
        .unwrap();
        assert!(t.method.is_none() && t.uri.is_none() && t.body.is_empty());
    }
}
