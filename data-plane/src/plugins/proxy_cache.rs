//! `proxy-cache`: responses kept in memory per proxy, least recently used
//! evicted beyond `max_size_bytes` per `memory.dictionary_name`; Kong's
//! `X-Cache-Status` (Miss, Hit, Refresh, Bypass), `X-Cache-Key` and `Age`.
//!
//! Only responses with a declared `Content-Length` within the entry limit
//! are stored (the body is read whole before it is sent on); others pass
//! through as `Bypass`.

use bytes::Bytes;
use http::header::{AGE, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub static X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");
pub static X_CACHE_KEY: HeaderName = HeaderName::from_static("x-cache-key");

/// The largest single response stored.
pub const MAX_ENTRY: usize = 1 << 20;

#[derive(Debug)]
pub struct ProxyCache {
    methods: Vec<Method>,
    codes: Vec<u16>,
    content_types: Vec<String>,
    ttl: Duration,
    storage_ttl: Option<Duration>,
    cache_control: bool,
    ignore_uri_case: bool,
    vary_query: Vec<String>,
    vary_headers: Vec<HeaderName>,
    dictionary: String,
    max_bytes: usize,
    show_age: bool,
    show_status: bool,
    show_key: bool,
}

#[derive(Deserialize)]
struct Config {
    response_code: Vec<u16>,
    request_method: Vec<String>,
    content_type: Vec<String>,
    #[serde(default)]
    cache_ttl: Option<u64>,
    #[serde(default)]
    storage_ttl: Option<u64>,
    #[serde(default)]
    cache_control: bool,
    #[serde(default)]
    ignore_uri_case: bool,
    #[serde(default)]
    vary_query_params: Option<Vec<String>>,
    #[serde(default)]
    vary_headers: Option<Vec<String>>,
    #[serde(default)]
    memory: Option<Memory>,
    #[serde(default)]
    max_size_bytes: Option<u64>,
    #[serde(default)]
    response_headers: Option<ShownHeaders>,
}

#[derive(Deserialize)]
struct Memory {
    dictionary_name: Option<String>,
}

#[derive(Deserialize)]
struct ShownHeaders {
    age: Option<bool>,
    #[serde(rename = "X-Cache-Status")]
    status: Option<bool>,
    #[serde(rename = "X-Cache-Key")]
    key: Option<bool>,
}

/// What the request phase decided, for the response phase.
pub struct Lookup {
    pub key: u64,
    /// The full key, stored with the entry and compared on every hit.
    pub text: String,
    /// The key as `X-Cache-Key` shows it.
    pub key_text: HeaderValue,
}

/// The request phase's verdict.
pub enum Decision {
    /// Not a cacheable request: `X-Cache-Status: Bypass`.
    Bypass,
    /// Answer from the cache.
    Hit(Cached),
    /// Forward, then store if the response qualifies (`Miss`, or
    /// `Refresh` when the client asked to revalidate).
    Fetch(Lookup, &'static str),
}

impl ProxyCache {
    pub fn compile(v: &serde_json::Value) -> Result<ProxyCache, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let shown = c.response_headers.unwrap_or(ShownHeaders {
            age: None,
            status: None,
            key: None,
        });
        Ok(ProxyCache {
            methods: c
                .request_method
                .iter()
                .map(|m| {
                    Method::from_bytes(m.as_bytes()).map_err(|_| format!("request_method {m:?}"))
                })
                .collect::<Result<_, _>>()?,
            codes: c.response_code,
            content_types: c
                .content_type
                .iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect(),
            ttl: Duration::from_secs(c.cache_ttl.unwrap_or(300)),
            storage_ttl: c.storage_ttl.map(Duration::from_secs),
            cache_control: c.cache_control,
            ignore_uri_case: c.ignore_uri_case,
            vary_query: c.vary_query_params.unwrap_or_default(),
            vary_headers: c
                .vary_headers
                .unwrap_or_default()
                .iter()
                .map(|h| {
                    HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("vary_headers: {h:?} is not a header name"))
                })
                .collect::<Result<_, _>>()?,
            dictionary: c
                .memory
                .and_then(|m| m.dictionary_name)
                .unwrap_or_else(|| "kong_db_cache".into()),
            max_bytes: c.max_size_bytes.unwrap_or(100 << 20) as usize,
            show_age: shown.age.unwrap_or(true),
            show_status: shown.status.unwrap_or(true),
            show_key: shown.key.unwrap_or(true),
        })
    }

    /// Kong's cache key: the route, the consumer, the method, the path,
    /// the query (only `vary_query_params` when set, sorted) and the
    /// `vary_headers` values.
    fn key(
        &self,
        plugin_id: &str,
        route_id: &str,
        consumer: Option<&str>,
        method: &Method,
        pq: &str,
        headers: &HeaderMap,
    ) -> String {
        let (path, query) = pq.split_once('?').unwrap_or((pq, ""));
        let path = if self.ignore_uri_case {
            path.to_ascii_lowercase()
        } else {
            path.to_string()
        };
        let mut args: Vec<&str> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter(|kv| {
                self.vary_query.is_empty()
                    || self
                        .vary_query
                        .iter()
                        .any(|q| kv.split('=').next() == Some(q.as_str()))
            })
            .collect();
        args.sort_unstable();
        let mut k = format!(
            "{plugin_id}|{route_id}|{}|{method}|{path}|{}",
            consumer.unwrap_or(""),
            args.join("&")
        );
        for h in &self.vary_headers {
            k.push('|');
            for v in headers.get_all(h) {
                k.push_str(&String::from_utf8_lossy(v.as_bytes()));
                k.push(',');
            }
        }
        k
    }

    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        store: &Store,
        plugin_id: &str,
        route_id: &str,
        consumer: Option<&str>,
        method: &Method,
        pq: &str,
        headers: &HeaderMap,
    ) -> Decision {
        if !self.methods.contains(method) {
            return Decision::Bypass;
        }
        let cc = directives(headers);
        if self.cache_control && cc.iter().any(|d| d == "no-store") {
            return Decision::Bypass;
        }
        let text = self.key(plugin_id, route_id, consumer, method, pq, headers);
        let key = store.hash(&text);
        let key_text =
            HeaderValue::from_str(&format!("{key:016x}")).unwrap_or(HeaderValue::from_static(""));
        if self.cache_control && cc.iter().any(|d| d == "no-cache" || d == "max-age=0") {
            return Decision::Fetch(
                Lookup {
                    key,
                    text,
                    key_text,
                },
                "Refresh",
            );
        }
        match store.get(&self.dictionary, key, &text) {
            Some(c) => Decision::Hit(c),
            None => Decision::Fetch(
                Lookup {
                    key,
                    text,
                    key_text,
                },
                "Miss",
            ),
        }
    }

    /// The headers a hit is answered with.
    pub fn hit_headers(&self, c: &Cached) -> HeaderMap {
        let mut h = c.headers.clone();
        if self.show_status {
            h.insert(X_CACHE_STATUS.clone(), HeaderValue::from_static("Hit"));
        }
        if self.show_key {
            h.insert(X_CACHE_KEY.clone(), c.key_text.clone());
        }
        if self.show_age {
            h.insert(AGE, HeaderValue::from(c.stored.elapsed().as_secs()));
        }
        h
    }

    /// The status headers of a non-hit answer.
    pub fn mark(&self, h: &mut HeaderMap, status: &'static str, key: Option<&HeaderValue>) {
        if self.show_status {
            h.insert(X_CACHE_STATUS.clone(), HeaderValue::from_static(status));
        }
        if self.show_key
            && let Some(k) = key
        {
            h.insert(X_CACHE_KEY.clone(), k.clone());
        }
    }

    /// Whether an upstream response may be stored, and for how long.
    pub fn storable(&self, status: u16, headers: &HeaderMap) -> Option<Duration> {
        if !self.codes.contains(&status) {
            return None;
        }
        let ct = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())?;
        // Kong matches the whole value, parameters included, or `*/*`.
        let base = ct.split(';').next().unwrap_or("").trim();
        if !self
            .content_types
            .iter()
            .any(|t| t == "*/*" || *t == ct || *t == base)
        {
            return None;
        }
        let len = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())?;
        if len > MAX_ENTRY.min(self.max_bytes) {
            return None;
        }
        let mut ttl = self.ttl;
        if self.cache_control {
            let cc = directives(headers);
            if cc
                .iter()
                .any(|d| d == "no-store" || d == "no-cache" || d == "private")
            {
                return None;
            }
            let age = |name: &str| {
                cc.iter()
                    .find_map(|d| d.strip_prefix(name)?.parse::<u64>().ok())
            };
            if let Some(s) = age("s-maxage=").or_else(|| age("max-age=")) {
                if s == 0 {
                    return None;
                }
                ttl = Duration::from_secs(s);
            }
        }
        Some(ttl)
    }

    pub fn store(&self, store: &Store, lookup: Lookup, entry: Cached, ttl: Duration) {
        let keep = self.storage_ttl.unwrap_or(ttl).max(ttl);
        store.put(
            &self.dictionary,
            self.max_bytes,
            lookup.key,
            lookup.text,
            entry,
            ttl,
            keep,
        );
    }
}

/// `Cache-Control` directives, lower-cased, without spaces.
fn directives(h: &HeaderMap) -> Vec<String> {
    h.get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase().replace(' ', ""))
        .filter(|d| !d.is_empty())
        .collect()
}

/// A stored response.
#[derive(Clone)]
pub struct Cached {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub stored: Instant,
    pub key_text: HeaderValue,
}

struct Entry {
    text: String,
    cached: Cached,
    fresh_until: Instant,
    keep_until: Instant,
    tick: u64,
    size: usize,
}

#[derive(Default)]
struct Region {
    entries: HashMap<u64, Entry>,
    /// Least recently used first.
    order: BTreeMap<u64, u64>,
    bytes: usize,
    tick: u64,
}

/// Every dictionary's entries; they outlive config swaps.
#[derive(Default)]
pub struct Store {
    regions: Mutex<HashMap<String, Region>>,
}

impl Store {
    fn get(&self, dict: &str, key: u64, text: &str) -> Option<Cached> {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let r = regions.get_mut(dict)?;
        let now = Instant::now();
        let e = r.entries.get_mut(&key)?;
        if e.text != text {
            return None;
        }
        if e.fresh_until <= now {
            if e.keep_until <= now {
                r.remove(key);
            }
            return None;
        }
        r.tick += 1;
        r.order.remove(&e.tick);
        e.tick = r.tick;
        r.order.insert(e.tick, key);
        Some(e.cached.clone())
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        dict: &str,
        max: usize,
        key: u64,
        text: String,
        cached: Cached,
        ttl: Duration,
        keep: Duration,
    ) {
        let size = cached.body.len()
            + text.len()
            + cached
                .headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 32)
                .sum::<usize>()
            + 128;
        if size > max {
            return;
        }
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let r = regions.entry(dict.to_string()).or_default();
        r.remove(key);
        while r.bytes + size > max {
            let Some((_, oldest)) = r.order.pop_first() else {
                break;
            };
            r.remove(oldest);
        }
        let now = Instant::now();
        r.tick += 1;
        r.order.insert(r.tick, key);
        r.bytes += size;
        r.entries.insert(
            key,
            Entry {
                text,
                cached,
                fresh_until: now + ttl,
                keep_until: now + keep,
                tick: r.tick,
                size,
            },
        );
    }

    /// Drops every entry (`DELETE /proxy-cache` on the proxy's admin port).
    pub fn purge_all(&self) -> usize {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let n = regions.values().map(|r| r.entries.len()).sum();
        regions.clear();
        n
    }

    /// Drops one entry by its `X-Cache-Key`, in any dictionary.
    pub fn purge(&self, key_hex: &str) -> bool {
        let Ok(key) = u64::from_str_radix(key_hex, 16) else {
            return false;
        };
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        regions.values_mut().any(|r| r.remove(key))
    }

    /// The first 64 bits of the key text's SHA-256: the same on every
    /// proxy and every version, so an `X-Cache-Key` seen from one proxy
    /// purges the entry fleet-wide (hits still compare the whole text).
    pub fn hash(&self, text: &str) -> u64 {
        use sha2::Digest;
        let d = sha2::Sha256::digest(text.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_be_bytes(b)
    }
}

impl Region {
    fn remove(&mut self, key: u64) -> bool {
        match self.entries.remove(&key) {
            Some(e) => {
                self.order.remove(&e.tick);
                self.bytes -= e.size;
                true
            }
            None => false,
        }
    }
}
