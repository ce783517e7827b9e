//! Request bodies as Kong reads them: JSON, or form-encoded with Kong's
//! key conventions (`paths[]=/a`, `config.minute=5`, `service.id=x`,
//! `headers[x-a][]=1`).

use super::error::ApiError;
use crate::schema::Input;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde_json::{Map, Value};

/// The admin API's body limit, as Kong's admin `client_max_body_size`.
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// An entity body with how it arrived (form bodies are all strings).
pub struct Body {
    pub value: Value,
    pub mode: Input,
}

/// The raw bytes and content type, for `/config` which also takes YAML.
pub struct RawBody {
    pub bytes: Bytes,
    pub content_type: String,
}

pub async fn read_limited(req: Request) -> Result<RawBody, ApiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    Ok(RawBody {
        bytes,
        content_type,
    })
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        read_limited(req).await
    }
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let raw = read_limited(req).await?;
        parse_entity_body(&raw)
    }
}

pub fn parse_entity_body(raw: &RawBody) -> Result<Body, ApiError> {
    let ct = raw
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if raw.bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body {
            value: Value::Object(Map::new()),
            mode: Input::Json,
        });
    }
    match ct {
        "application/x-www-form-urlencoded" => Ok(Body {
            value: parse_form(&raw.bytes)?,
            mode: Input::Form,
        }),
        "application/json" | "" => {
            let value: Value = serde_json::from_slice(&raw.bytes)
                .map_err(|_| ApiError::bad_request("Cannot parse JSON body"))?;
            if !value.is_object() {
                return Err(ApiError::bad_request(
                    "Cannot parse JSON body: expected an object",
                ));
            }
            Ok(Body {
                value,
                mode: Input::Json,
            })
        }
        other if other.ends_with("+json") => {
            let value: Value = serde_json::from_slice(&raw.bytes)
                .map_err(|_| ApiError::bad_request("Cannot parse JSON body"))?;
            Ok(Body {
                value,
                mode: Input::Json,
            })
        }
        other => Err(ApiError::UnsupportedMediaType(other.to_string())),
    }
}

/// At most this many form pairs, as Kong's admin API (`Too many arguments`).
pub const MAX_FORM_PAIRS: usize = 1000;
/// At most this many segments in one form key (`config.a.b[1].c`): bodies
/// nest no deeper than the schemas they fill.
pub const MAX_FORM_DEPTH: usize = 32;

/// Builds a JSON tree from form pairs. `a.b=1` and `a[b]=1` nest, `a[]=x`
/// appends, `a[2]=x` sets an index (from 1, as Kong's), and a repeated
/// plain key becomes an array. Indexes are kept sparse while parsing, so a large
/// index costs nothing; one that leaves a gap is refused.
pub fn parse_form(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut root = Node::Obj(Vec::new());
    for (n, (k, v)) in form_urlencoded::parse(bytes).enumerate() {
        if n >= MAX_FORM_PAIRS {
            return Err(ApiError::bad_request("Too many arguments"));
        }
        insert_path(&mut root, &k, v.into_owned())
            .map_err(|m| ApiError::bad_request(format!("invalid form key '{}': {m}", clip(&k))))?;
    }
    root.into_value()
        .map_err(|m| ApiError::bad_request(format!("invalid form body: {m}")))
}

/// A key as quoted in an error: hostile keys can be long.
fn clip(k: &str) -> String {
    match k.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &k[..i]),
        None => k.to_string(),
    }
}

/// A form tree while it is built: objects keep insertion order, arrays are
/// sparse (index to node) until the end.
enum Node {
    Obj(Vec<(String, Node)>),
    Arr(std::collections::BTreeMap<usize, Node>),
    Leaf(String),
    /// A repeated plain key.
    Many(Vec<String>),
}

impl Node {
    fn into_value(self) -> Result<Value, String> {
        Ok(match self {
            Node::Leaf(s) => Value::String(s),
            Node::Many(v) => Value::Array(v.into_iter().map(Value::String).collect()),
            Node::Obj(fields) => {
                let mut m = Map::new();
                for (k, n) in fields {
                    m.insert(k, n.into_value()?);
                }
                Value::Object(m)
            }
            Node::Arr(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, (idx, n)) in items.into_iter().enumerate() {
                    if idx != i {
                        return Err(format!("index {} leaves a gap", idx + 1));
                    }
                    out.push(n.into_value()?);
                }
                Value::Array(out)
            }
        })
    }
}

enum Seg<'a> {
    Key(&'a str),
    Append,
    Index(usize),
}

fn segments(key: &str) -> Result<Vec<Seg<'_>>, &'static str> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() {
            return Err("empty name");
        }
        out.push(Seg::Key(name));
        while !rest.is_empty() {
            let close = rest.find(']').ok_or("unclosed '['")?;
            let inner = &rest[1..close];
            out.push(if inner.is_empty() {
                Seg::Append
            } else if inner.bytes().all(|b| b.is_ascii_digit()) {
                match inner.parse::<usize>() {
                    Ok(n) if n >= 1 => Seg::Index(n - 1),
                    _ => return Err("index must be a number from 1"),
                }
            } else {
                // Kong's arguments decoder: a key that is not a number
                // names a map entry (`headers[x-a][]=1`, `config[minute]=5`).
                Seg::Key(inner)
            });
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err("unexpected text after ']'");
            }
        }
        if out.len() > MAX_FORM_DEPTH {
            return Err("nested too deeply");
        }
    }
    Ok(out)
}

fn insert_path(root: &mut Node, key: &str, val: String) -> Result<(), &'static str> {
    let segs = segments(key)?;
    let mut cur = root;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let fresh = || match segs.get(i + 1) {
            Some(Seg::Append | Seg::Index(_)) => Node::Arr(Default::default()),
            _ => Node::Obj(Vec::new()),
        };
        match seg {
            Seg::Key(k) => {
                let Node::Obj(fields) = cur else {
                    return Err("conflicting keys");
                };
                let pos = match fields.iter().position(|(f, _)| f == k) {
                    Some(p) => p,
                    None if last => {
                        fields.push((k.to_string(), Node::Leaf(val)));
                        return Ok(());
                    }
                    None => {
                        fields.push((k.to_string(), fresh()));
                        fields.len() - 1
                    }
                };
                let slot = &mut fields[pos].1;
                if last {
                    // Kong: a repeated plain key collects its values.
                    return match slot {
                        Node::Leaf(prev) => {
                            let prev = std::mem::take(prev);
                            *slot = Node::Many(vec![prev, val]);
                            Ok(())
                        }
                        Node::Many(v) => {
                            v.push(val);
                            Ok(())
                        }
                        _ => Err("conflicting keys"),
                    };
                }
                cur = slot;
            }
            Seg::Append | Seg::Index(_) => {
                let Node::Arr(items) = cur else {
                    return Err("conflicting keys");
                };
                let idx = match seg {
                    Seg::Index(n) => *n,
                    _ => items.last_key_value().map_or(0, |(k, _)| k + 1),
                };
                if last {
                    items.insert(idx, Node::Leaf(val));
                    return Ok(());
                }
                cur = items.entry(idx).or_insert_with(fresh);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kong_form_conventions() {
        let v = parse_form(
            b"name=x&paths[]=/a&paths[]=/b&config.minute=100&config.allow[]=10.0.0.0/8&service.id=abc&methods=GET&methods=POST&hosts[2]=b&hosts[1]=a",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"name":"x","paths":["/a","/b"],"config":{"minute":"100","allow":["10.0.0.0/8"]},
                   "service":{"id":"abc"},"methods":["GET","POST"],"hosts":["a","b"]})
        );
    }

    #[test]
    fn bracketed_names_are_map_keys() {
        let v = parse_form(
            b"headers[x-a][]=1&headers[x-a][]=2&config[minute]=5&config[limit_by]=ip&service[id]=s&paths[1]=/a",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"headers":{"x-a":["1","2"]},"config":{"minute":"5","limit_by":"ip"},
                   "service":{"id":"s"},"paths":["/a"]})
        );
        // A name and an index for the same key conflict.
        assert!(parse_form(b"a[x]=1&a[1]=2").is_err());
    }

    #[test]
    fn bad_form_keys_are_rejected() {
        assert!(parse_form(b"a[=1").is_err());
        assert!(parse_form(b"a=1&a.b=2").is_err());
        assert!(parse_form(b"a[0]=1").is_err(), "indexes start at 1");
        assert!(parse_form(b"a[2]=1").is_err(), "a gap");
    }

    #[test]
    fn hostile_forms_are_bounded() {
        // Deep keys: refused before anything nests.
        let deep = format!("x{}=1", ".a".repeat(5000));
        assert!(parse_form(deep.as_bytes()).is_err());
        // Sparse indexes allocate nothing: refused as a gap.
        let sparse: Vec<String> = (0..3000).map(|n| format!("k{n}[10001]=x")).collect();
        assert!(parse_form(sparse.join("&").as_bytes()).is_err());
        let huge = format!("a[{}]=1", usize::MAX);
        assert!(parse_form(huge.as_bytes()).is_err());
        // Kong's argument limit.
        let many: Vec<String> = (0..1001).map(|n| format!("k{n}=x")).collect();
        assert!(parse_form(many.join("&").as_bytes()).is_err());
        let ok: Vec<String> = (0..1000).map(|n| format!("k{n}=x")).collect();
        assert!(parse_form(ok.join("&").as_bytes()).is_ok());
    }
}
