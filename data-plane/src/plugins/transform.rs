//! What request-transformer and response-transformer share: Kong's
//! `name:value` config entries, form and query arguments as nginx reads
//! and writes them, and Kong's rules for JSON fields.

use serde::Deserialize;
use serde_json::{Map, Value};

pub(super) fn header_name(s: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("{s:?} is not a header name"))
}

/// `name:value` header entries; one with an empty value does nothing in
/// Kong (its value is nil), so it is dropped.
pub(super) fn header_values(
    entries: &[String],
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
    entries
        .iter()
        .filter_map(|e| split_pair(e))
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| -> Result<_, String> {
            let value = http::HeaderValue::from_bytes(v.as_bytes())
                .map_err(|_| format!("header {n}: {v:?} is not a header value"))?;
            Ok((header_name(n)?, value))
        })
        .collect()
}

/// Kong's `pair:match("^([^:]+):*(.-)$")`: the name up to the first colon,
/// the value after the colons that follow it (empty when there is none).
/// None for an empty name, which Kong's pattern does not match.
pub(super) fn split_pair(pair: &str) -> Option<(&str, &str)> {
    let (name, value) = match pair.split_once(':') {
        Some((n, v)) => (n, v.trim_start_matches(':')),
        None => (pair, ""),
    };
    (!name.is_empty()).then_some((name, value))
}

/// A config array that may be absent or `null`: both mean empty.
pub(super) fn list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Kong templates (`$(headers.host)`) are not evaluated by gantry-proxy;
/// says so once per config rather than per request.
pub(super) fn warn_templates<'a>(plugin: &str, values: impl IntoIterator<Item = &'a str>) {
    if let Some(v) = values.into_iter().find(|v| v.contains("$(")) {
        tracing::warn!(
            plugin,
            value = v,
            "template values are not evaluated by gantry-proxy; sent literally"
        );
    }
}

/// One argument's value as `ngx.decode_args` gives it: a bare name is
/// `true`, a repeated name a list (whose entries may be bare too).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Arg {
    Flag,
    One(Vec<u8>),
    Many(Vec<Option<Vec<u8>>>),
}

/// Decoded arguments (a query string or a form body), in their order;
/// names are unique, as in the Lua table Kong works on.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Args(pub Vec<(Vec<u8>, Arg)>);

impl Args {
    /// `&`-separated `name=value` pairs, `+` and `%XX` decoded; an empty
    /// name is skipped, as nginx does.
    pub fn parse(s: &[u8]) -> Args {
        let mut out = Args::default();
        for part in s.split(|b| *b == b'&') {
            let (k, v) = match part.iter().position(|b| *b == b'=') {
                Some(i) => (&part[..i], Some(&part[i + 1..])),
                None => (part, None),
            };
            if k.is_empty() {
                continue;
            }
            out.push(decode(k), v.map(decode));
        }
        out
    }

    /// Kong's `http_method` change to GET: a form body's arguments join
    /// the query, after the values a name already has there.
    pub fn merge(&mut self, other: Args) {
        for (k, arg) in other.0 {
            match arg {
                Arg::Flag => self.push(k, None),
                Arg::One(v) => self.push(k, Some(v)),
                Arg::Many(l) => l.into_iter().for_each(|v| self.push(k.clone(), v)),
            }
        }
    }

    /// Adds a value after any the name already has (a repeated argument).
    fn push(&mut self, name: Vec<u8>, value: Option<Vec<u8>>) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, arg)) => {
                let prev = std::mem::replace(arg, Arg::Flag);
                *arg = match prev {
                    Arg::Flag => Arg::Many(vec![None, value]),
                    Arg::One(v) => Arg::Many(vec![Some(v), value]),
                    Arg::Many(mut l) => {
                        l.push(value);
                        Arg::Many(l)
                    }
                }
            }
            None => self.0.push((
                name,
                match value {
                    Some(v) => Arg::One(v),
                    None => Arg::Flag,
                },
            )),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arg> {
        self.0
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, a)| a)
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| k != name.as_bytes());
    }

    /// Lua's `t[name] = arg`: replaced in place, added at the end, or
    /// removed when `None`.
    pub fn set(&mut self, name: &str, arg: Option<Arg>) {
        match (self.0.iter_mut().find(|(k, _)| k == name.as_bytes()), arg) {
            (Some((_, a)), Some(arg)) => *a = arg,
            (None, Some(arg)) => self.0.push((name.as_bytes().to_vec(), arg)),
            (_, None) => self.remove(name),
        }
    }

    /// Kong's `rename`: the new name takes the old one's value, whatever
    /// it had, and the old name goes. An absent old name therefore
    /// removes the new one, and renaming a name to itself removes it.
    pub fn rename(&mut self, old: &str, new: &str) {
        let v = self.get(old).cloned();
        self.set(new, v);
        self.remove(old);
    }

    /// Kong's `append_value`: a single value becomes a list of two, a
    /// list grows, and anything else (absent, or a bare name) becomes a
    /// list of just this value.
    pub fn append(&mut self, name: &str, value: &str) {
        let v = value.as_bytes().to_vec();
        let next = match self.get(name) {
            Some(Arg::One(cur)) => Arg::Many(vec![Some(cur.clone()), Some(v)]),
            Some(Arg::Many(l)) => {
                let mut l = l.clone();
                l.push(Some(v));
                Arg::Many(l)
            }
            _ => Arg::Many(vec![Some(v)]),
        };
        self.set(name, Some(next));
    }

    /// `ngx.encode_args`: a bare name alone, lists as repeated names,
    /// everything but RFC 3986's unreserved characters percent-encoded.
    /// `sorted`: names in byte order, as `kong.service.request.set_query`
    /// writes a query string.
    pub fn encode(&self, sorted: bool) -> String {
        let mut order: Vec<&(Vec<u8>, Arg)> = self.0.iter().collect();
        if sorted {
            order.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let mut out = String::new();
        let mut one = |k: &[u8], v: Option<&[u8]>| {
            if !out.is_empty() {
                out.push('&');
            }
            escape(k, &mut out);
            if let Some(v) = v {
                out.push('=');
                escape(v, &mut out);
            }
        };
        for (k, arg) in order {
            match arg {
                Arg::Flag => one(k, None),
                Arg::One(v) => one(k, Some(v.as_slice())),
                Arg::Many(l) => l.iter().for_each(|v| one(k, v.as_deref())),
            }
        }
        out
    }
}

/// Form-style percent-decoding, as text (lossy on bad UTF-8): the query
/// decoding every plugin shares.
pub(super) fn form_decode(s: &str) -> String {
    String::from_utf8_lossy(&decode(s.as_bytes())).into_owned()
}

/// Form-style percent-decoding: `+` is a space; a `%` not followed by two
/// hex digits stays as it is (nginx's unescaping).
fn decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let digit = |j: usize| s.get(j).and_then(|c| hex(*c));
                match (digit(i + 1), digit(i + 2)) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn escape(s: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// A Lua truth test on a decoded JSON field: present and not `false`
/// (cjson's `null` is a truthy value in Lua).
pub(super) fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Bool(false)))
}

/// Kong's `append_value` on a JSON field: a string becomes a list of two,
/// a list grows, anything else (absent, number, boolean, null, object)
/// is replaced by a list of just this value.
pub(super) fn append_json(m: &mut Map<String, Value>, name: &str, v: Value) {
    match m.get_mut(name) {
        Some(Value::Array(l)) => l.push(v),
        Some(cur @ Value::String(_)) => {
            let s = cur.take();
            *cur = Value::Array(vec![s, v]);
        }
        _ => {
            m.insert(name.to_string(), Value::Array(vec![v]));
        }
    }
}

/// The body as a JSON object, the only shape whose fields can be
/// transformed; None for anything else (left untouched).
pub(super) fn json_object(raw: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(raw) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pairs_split_like_kong() {
        assert_eq!(split_pair("a:b"), Some(("a", "b")));
        assert_eq!(split_pair("a:::b:c"), Some(("a", "b:c")));
        assert_eq!(split_pair("a"), Some(("a", "")));
        assert_eq!(split_pair("a:"), Some(("a", "")));
        assert_eq!(split_pair(":b"), None);
    }

    #[test]
    fn args_decode_and_encode() {
        let a = Args::parse(b"b=1&a=x+y%21&flag&b=2&=skip&&c=%zz&d=");
        assert_eq!(a.get("a"), Some(&Arg::One(b"x y!".to_vec())));
        assert_eq!(
            a.get("b"),
            Some(&Arg::Many(vec![Some(b"1".to_vec()), Some(b"2".to_vec())]))
        );
        assert_eq!(a.get("flag"), Some(&Arg::Flag));
        assert_eq!(a.get("c"), Some(&Arg::One(b"%zz".to_vec())));
        assert_eq!(a.get("d"), Some(&Arg::One(Vec::new())));
        assert_eq!(a.encode(false), "b=1&b=2&a=x%20y%21&flag&c=%25zz&d=");
        // Kong's set_query: names in order, a list's values as given.
        assert_eq!(a.encode(true), "a=x%20y%21&b=1&b=2&c=%25zz&d=&flag");
        assert_eq!(Args::parse(b"").encode(true), "");
        assert_eq!(
            Args::parse(b"a%20b=%E2%82%AC").encode(true),
            "a%20b=%E2%82%AC"
        );
    }

    #[test]
    fn args_follow_lua_table_rules() {
        let mut a = Args::parse(b"a=1&f");
        a.append("a", "2");
        a.append("f", "3"); // a bare name is replaced by the list
        a.append("n", "4");
        assert_eq!(a.encode(true), "a=1&a=2&f=3&n=4");
        a.rename("missing", "a"); // takes the absent value: `a` goes
        assert_eq!(a.encode(true), "f=3&n=4");
        a.rename("n", "n"); // set, then cleared
        assert_eq!(a.encode(true), "f=3");
        a.rename("f", "g");
        a.set("h", Some(Arg::One(b"v".to_vec())));
        assert_eq!(a.encode(false), "g=3&h=v");
    }

    #[test]
    fn json_rules() {
        assert!(truthy(Some(&Value::Null)));
        assert!(truthy(Some(&json!(0))));
        assert!(!truthy(Some(&json!(false))));
        assert!(!truthy(None));
        let mut m = json_object(br#"{"s":"a","l":[1],"n":2,"o":{}}"#).unwrap();
        for k in ["s", "l", "n", "o", "new"] {
            append_json(&mut m, k, json!("x"));
        }
        assert_eq!(
            Value::Object(m),
            json!({"s":["a","x"],"l":[1,"x"],"n":["x"],"o":["x"],"new":["x"]})
        );
        assert!(json_object(b"[1]").is_none());
        assert!(json_object(b"nope").is_none());
    }
}
