//! `key-auth`: a key from a header or the query string, matched against
//! the consumers' keyauth credentials (Kong's messages and statuses).

use super::Identity;
use super::consumers::Directory;
use super::reject::Reject;
use super::transform::form_decode;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;

#[derive(Debug)]
pub struct KeyAuth {
    /// Header names (lower-cased) and the same names for the query.
    names: Vec<(HeaderName, String)>,
    hide_credentials: bool,
    /// Index of the anonymous consumer; a missing one is Kong's 500.
    anonymous: Anonymous,
    in_header: bool,
    in_query: bool,
    run_on_preflight: bool,
    challenge: HeaderValue,
}

#[derive(Debug)]
enum Anonymous {
    None,
    Consumer(String),
}

#[derive(Deserialize)]
struct Config {
    key_names: Vec<String>,
    #[serde(default)]
    hide_credentials: bool,
    #[serde(default)]
    anonymous: Option<String>,
    #[serde(default = "yes")]
    key_in_header: bool,
    #[serde(default = "yes")]
    key_in_query: bool,
    #[serde(default = "yes")]
    run_on_preflight: bool,
    #[serde(default)]
    realm: Option<String>,
}

fn yes() -> bool {
    true
}

impl KeyAuth {
    pub fn compile(v: &serde_json::Value) -> Result<KeyAuth, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let names = c
            .key_names
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                    .map(|h| (h, n.clone()))
                    .map_err(|_| format!("key_names: {n:?} is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let realm = c.realm.unwrap_or_else(|| "kong".into());
        let challenge = HeaderValue::from_str(&format!("Key realm=\"{realm}\""))
            .map_err(|_| "realm is not a valid header value".to_string())?;
        Ok(KeyAuth {
            names,
            hide_credentials: c.hide_credentials,
            anonymous: match c.anonymous {
                Some(a) if !a.is_empty() => Anonymous::Consumer(a),
                _ => Anonymous::None,
            },
            in_header: c.key_in_header,
            in_query: c.key_in_query,
            run_on_preflight: c.run_on_preflight,
            challenge,
        })
    }

    pub fn has_anonymous(&self) -> bool {
        matches!(self.anonymous, Anonymous::Consumer(_))
    }

    pub fn authenticate<'d>(
        &self,
        dir: &'d Directory,
        headers: &mut HeaderMap,
        pq: &mut String,
        method: &Method,
    ) -> Result<Identity<'d>, Reject> {
        if !self.run_on_preflight && method == Method::OPTIONS {
            return Ok(Identity::default());
        }
        match self.find(dir, headers, pq) {
            Ok(who) => Ok(who),
            Err(reject) => match &self.anonymous {
                Anonymous::None => Err(reject),
                Anonymous::Consumer(name) => match dir.find(name) {
                    Some(c) => Ok(Identity {
                        consumer: Some(c),
                        ..Default::default()
                    }),
                    None => Err(Reject::new(500, "An unexpected error occurred")),
                },
            },
        }
    }

    fn find<'d>(
        &self,
        dir: &'d Directory,
        headers: &mut HeaderMap,
        pq: &mut String,
    ) -> Result<Identity<'d>, Reject> {
        for (header, name) in &self.names {
            let mut key: Option<String> = None;
            if self.in_header {
                let mut values = headers.get_all(header).iter();
                if let Some(v) = values.next() {
                    if values.next().is_some() {
                        return Err(Reject::new(401, "Duplicate API key found"));
                    }
                    key = Some(String::from_utf8_lossy(v.as_bytes()).into_owned());
                }
            }
            if key.is_none() && self.in_query {
                let mut found = query_values(pq, name);
                if let Some(v) = found.next() {
                    if found.next().is_some() {
                        return Err(Reject::new(401, "Duplicate API key found"));
                    }
                    key = Some(v);
                }
            }
            let Some(key) = key else { continue };
            if self.hide_credentials {
                headers.remove(header);
                remove_query_arg(pq, name);
            }
            if key.is_empty() {
                break;
            }
            return match dir.by_key(&key) {
                Some((c, cred)) => Ok(Identity {
                    consumer: Some(c),
                    credential: Some(cred),
                    credential_label: Some(cred),
                }),
                None => Err(Reject::new(401, "Invalid authentication credentials")),
            };
        }
        Err(Reject::new(401, "No API key found in request")
            .with_header(http::header::WWW_AUTHENTICATE, self.challenge.clone()))
    }
}

/// The decoded values of a query argument.
pub(super) fn query_values<'a>(pq: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    let query = pq.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(move |kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (form_decode(k) == name).then(|| form_decode(v))
        })
}

/// Drops every occurrence of a query argument, keeping the rest in order.
pub(super) fn remove_query_arg(pq: &mut String, name: &str) {
    let Some((path, query)) = pq.split_once('?') else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let k = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv);
            !kv.is_empty() && form_decode(k) != name
        })
        .collect();
    let mut out = path.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    *pq = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_arguments_are_found_decoded_and_removed() {
        let pq = "/p?a=1&apikey=k%2By+z&b=2";
        assert_eq!(
            query_values(pq, "apikey").collect::<Vec<_>>(),
            vec!["k+y z"]
        );
        let mut s = pq.to_string();
        remove_query_arg(&mut s, "apikey");
        assert_eq!(s, "/p?a=1&b=2");
        let mut s = "/p?apikey=1".to_string();
        remove_query_arg(&mut s, "apikey");
        assert_eq!(s, "/p");
        assert_eq!(form_decode("%4"), "%4");
        assert_eq!(form_decode("%41%"), "A%");
    }
}
