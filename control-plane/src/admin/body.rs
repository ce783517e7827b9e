//! Request bodies as Kong reads them: JSON, or form-encoded with Kong's
//! key conventions (`paths[]=/a`, `config.minute=5`, `service.id=x`).

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

/// Builds a JSON tree from form pairs. `a.b=1` nests, `a[]=x` appends,
/// `a[2]=x` sets an index, and a repeated plain key becomes an array.
pub fn parse_form(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut root = Value::Object(Map::new());
    for (k, v) in form_urlencoded::parse(bytes) {
        insert_path(&mut root, &k, Value::String(v.into_owned()))
            .map_err(|m| ApiError::bad_request(format!("invalid form key '{k}': {m}")))?;
    }
    Ok(root)
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
            } else {
                Seg::Index(inner.parse().map_err(|_| "index must be a number")?)
            });
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err("unexpected text after ']'");
            }
        }
    }
    Ok(out)
}

fn insert_path(root: &mut Value, key: &str, val: Value) -> Result<(), &'static str> {
    let segs = segments(key)?;
    let mut cur = root;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match seg {
            Seg::Key(k) => {
                let obj = cur.as_object_mut().ok_or("conflicting keys")?;
                if last {
                    match obj.get_mut(*k) {
                        // Kong: a repeated plain key collects its values.
                        Some(Value::Array(a)) => a.push(val),
                        Some(existing) => {
                            let prev = existing.take();
                            *existing = Value::Array(vec![prev, val]);
                        }
                        None => {
                            obj.insert((*k).to_string(), val);
                        }
                    }
                    return Ok(());
                }
                let next_is_array = matches!(segs[i + 1], Seg::Append | Seg::Index(_));
                cur = obj.entry(k.to_string()).or_insert_with(|| {
                    if next_is_array {
                        Value::Array(Vec::new())
                    } else {
                        Value::Object(Map::new())
                    }
                });
            }
            Seg::Append | Seg::Index(_) => {
                let arr = cur.as_array_mut().ok_or("conflicting keys")?;
                let idx = match seg {
                    Seg::Index(n) => n.saturating_sub(1), // Kong's form indexes start at 1
                    _ => arr.len(),
                };
                if idx > 10_000 {
                    return Err("index too large");
                }
                while arr.len() <= idx {
                    arr.push(Value::Null);
                }
                if last {
                    arr[idx] = val;
                    return Ok(());
                }
                if arr[idx].is_null() {
                    arr[idx] = Value::Object(Map::new());
                }
                cur = &mut arr[idx];
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
    fn bad_form_keys_are_rejected() {
        assert!(parse_form(b"a[=1").is_err());
        assert!(parse_form(b"a=1&a.b=2").is_err());
    }
}
