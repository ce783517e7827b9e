//! Remote JWKS for the jwt plugin's issuer providers, after Envoy's
//! jwt_authn `remote_jwks`: fetched over HTTP(S) with a timeout, cached by
//! URI in [`super::State`] (so a config swap does not refetch), refreshed
//! in the background every `cache_duration`.
//!
//! While refreshes fail, the last good key set serves until
//! `stale_while_error` (but never less than `cache_duration`) has passed
//! since it was fetched; then the provider's tokens are refused. A token
//! whose `kid` is not in the set triggers one refetch, at most every
//! [`KID_REFETCH_EVERY`] per URI, so key rotation is seen at once.
//!
//! The request path reads the registry and the key set through `ArcSwap`:
//! no lock is taken unless a fetch is due. Key material and tokens are
//! never logged; the URI and errors are.

use super::jwt::Key;
use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// An unknown `kid` refetches at most this often per URI.
pub const KID_REFETCH_EVERY: Duration = Duration::from_secs(10);
/// With no usable key set, a failed fetch is not retried on demand
/// sooner than this (requests in between are refused at once rather than
/// each waiting for a dead server's timeout).
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);
/// A JWKS larger than this is refused.
const MAX_BODY: usize = 1 << 20;
/// "never" in the millisecond atomics below.
const NEVER: u64 = u64::MAX;

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("uri {0:?} is not an http(s) URI")]
    Uri(String),
    #[error("no trusted CA certificates for https")]
    NoRoots,
    #[error("request failed: {0}")]
    Request(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("status {0}")]
    Status(u16),
    #[error("body: {0}")]
    Body(String),
    #[error("not a JWKS: {0}")]
    Parse(String),
    #[error("the JWKS has no usable keys")]
    Empty,
    #[error("a recent fetch failed; not retrying yet")]
    Backoff,
}

/// The `remote_jwks` settings of a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub cache_duration: Duration,
    pub stale_while_error: Duration,
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cache_duration: Duration::from_secs(300),
            stale_while_error: Duration::from_secs(3600),
            timeout: Duration::from_millis(5000),
        }
    }
}

/// How a JWKS document is fetched (a trait so the cache rules can be
/// tested without a server).
pub trait Fetch: Send + Sync {
    fn fetch<'a>(
        &'a self,
        uri: &'a str,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, JwksError>> + Send + 'a>>;
}

/// A parsed key set and when it was fetched.
pub struct KeySet {
    pub keys: Vec<Key>,
    pub fetched_at: Instant,
    /// Changes with every fetch: verified tokens remember it, so a cached
    /// verification does not outlive the set that verified it.
    pub generation: u64,
}

impl KeySet {
    fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|(k, _, _)| k.as_deref() == Some(kid))
    }
}

/// Parses a JWKS document into keys; keys that cannot be used are skipped
/// (as Envoy does), a set with none is an error.
pub fn parse(text: &[u8]) -> Result<Vec<Key>, JwksError> {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(text).map_err(|e| JwksError::Parse(e.to_string()))?;
    let keys: Vec<Key> = set
        .keys
        .iter()
        .filter_map(|k| {
            let key = DecodingKey::from_jwk(k).ok()?;
            let alg = k
                .common
                .key_algorithm
                .and_then(|a| Algorithm::from_str(&a.to_string()).ok());
            Some((k.common.key_id.clone(), alg, key))
        })
        .collect();
    if keys.is_empty() {
        return Err(JwksError::Empty);
    }
    Ok(keys)
}

/// One URI's cache.
pub struct Source {
    uri: String,
    fetcher: Arc<dyn Fetch>,
    current: ArcSwapOption<KeySet>,
    // Settings as milliseconds: the latest config's win, without a lock.
    cache_ms: AtomicU64,
    stale_ms: AtomicU64,
    timeout_ms: AtomicU64,
    /// Times below are milliseconds since `base` (NEVER: not yet).
    base: Instant,
    last_kid_refetch: AtomicU64,
    last_failure: AtomicU64,
    generation: AtomicU64,
    /// Completed fetches, successful or not.
    attempts: AtomicU64,
    /// When a config last used it (to the second): a URI no config
    /// uses any more stops being polled once its set would have expired.
    last_used: AtomicU64,
    /// One fetch at a time per URI; waiters then use its result.
    fetching: tokio::sync::Mutex<()>,
    refresher: AtomicBool,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(NEVER - 1)
}

impl Source {
    pub fn new(uri: &str, settings: Settings, fetcher: Arc<dyn Fetch>) -> Source {
        let s = Source {
            uri: uri.to_string(),
            fetcher,
            current: ArcSwapOption::empty(),
            cache_ms: AtomicU64::new(0),
            stale_ms: AtomicU64::new(0),
            timeout_ms: AtomicU64::new(0),
            base: Instant::now(),
            last_kid_refetch: AtomicU64::new(NEVER),
            last_failure: AtomicU64::new(NEVER),
            generation: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            fetching: tokio::sync::Mutex::new(()),
            refresher: AtomicBool::new(false),
        };
        s.set_settings(settings);
        s
    }

    fn set_settings(&self, s: Settings) {
        // Compared first: the request path mostly finds them unchanged.
        for (a, v) in [
            (&self.cache_ms, ms(s.cache_duration)),
            (&self.stale_ms, ms(s.stale_while_error)),
            (&self.timeout_ms, ms(s.timeout)),
        ] {
            if a.load(Ordering::Relaxed) != v {
                a.store(v, Ordering::Relaxed);
            }
        }
    }

    fn touch(&self) {
        let t = self.since_base(Instant::now());
        // Written about once a second at most: the request path mostly
        // only reads it.
        if t.saturating_sub(self.last_used.load(Ordering::Relaxed)) >= 1000 {
            self.last_used.store(t, Ordering::Relaxed);
        }
    }

    fn window(&self) -> Duration {
        let s = self.settings();
        s.stale_while_error.max(s.cache_duration)
    }

    fn settings(&self) -> Settings {
        Settings {
            cache_duration: Duration::from_millis(self.cache_ms.load(Ordering::Relaxed)),
            stale_while_error: Duration::from_millis(self.stale_ms.load(Ordering::Relaxed)),
            timeout: Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed)),
        }
    }

    fn since_base(&self, now: Instant) -> u64 {
        ms(now.saturating_duration_since(self.base))
    }

    /// The key set, if it may still be used at `now`.
    pub fn usable(&self, now: Instant) -> Option<Arc<KeySet>> {
        let set = self.current.load_full()?;
        (now.saturating_duration_since(set.fetched_at) < self.window()).then_some(set)
    }

    /// The key set to verify a token with `kid`: the cached one, or one
    /// fetched now when there is none usable (bounded by `timeout`), or
    /// refetched once when `kid` is unknown (rate-limited).
    pub async fn keys(
        self: &Arc<Self>,
        now: Instant,
        kid: Option<&str>,
    ) -> Result<Arc<KeySet>, JwksError> {
        self.start_refresher();
        match self.usable(now) {
            Some(set) => {
                let Some(kid) = kid else { return Ok(set) };
                if set.has_kid(kid) || !self.kid_refetch_allowed(now) {
                    return Ok(set);
                }
                tracing::info!(uri = %self.uri, "jwks: a token names an unknown kid; refetching");
                match self.fetch(now, Some(set.generation)).await {
                    Ok(new) => Ok(new),
                    // The old set still serves; the token will fail on
                    // its signature if no key fits.
                    Err(_) => Ok(set),
                }
            }
            None => {
                let seen = self.current.load().as_ref().map(|s| s.generation);
                let failed = self.last_failure.load(Ordering::Relaxed);
                if failed != NEVER
                    && self.since_base(now).saturating_sub(failed) < ms(RETRY_AFTER_FAILURE)
                {
                    return Err(JwksError::Backoff);
                }
                self.fetch(now, seen).await
            }
        }
    }

    /// Claims the unknown-kid refetch slot, if [`KID_REFETCH_EVERY`] has
    /// passed since the last one.
    fn kid_refetch_allowed(&self, now: Instant) -> bool {
        let t = self.since_base(now);
        let last = self.last_kid_refetch.load(Ordering::Relaxed);
        if last != NEVER && t.saturating_sub(last) < ms(KID_REFETCH_EVERY) {
            return false;
        }
        // Only one of concurrent requests wins the slot.
        self.last_kid_refetch
            .compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Fetches and stores a key set. `seen`: the generation the caller
    /// found; if another fetch replaced it meanwhile, that one is used.
    async fn fetch(&self, now: Instant, seen: Option<u64>) -> Result<Arc<KeySet>, JwksError> {
        let attempts = self.attempts.load(Ordering::Acquire);
        let _one = self.fetching.lock().await;
        let cur = self.current.load_full();
        if let Some(cur) = &cur
            && Some(cur.generation) != seen
        {
            return Ok(cur.clone());
        }
        // Another fetch finished (and failed) while this one waited: its
        // result stands, rather than each waiter paying a dead server's
        // timeout in turn. (Callers holding a usable set keep using it.)
        if self.attempts.load(Ordering::Acquire) != attempts {
            return Err(JwksError::Backoff);
        }
        let timeout = self.settings().timeout;
        let got = match tokio::time::timeout(timeout, self.fetcher.fetch(&self.uri, timeout)).await
        {
            Ok(r) => r.and_then(|body| parse(&body)),
            Err(_) => Err(JwksError::Timeout(timeout)),
        };
        self.attempts.fetch_add(1, Ordering::Release);
        match got {
            Ok(keys) => {
                let set = Arc::new(KeySet {
                    keys,
                    fetched_at: now,
                    generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
                });
                self.current.store(Some(set.clone()));
                self.last_failure.store(NEVER, Ordering::Relaxed);
                tracing::debug!(uri = %self.uri, keys = set.keys.len(), "jwks fetched");
                Ok(set)
            }
            Err(e) => {
                self.last_failure
                    .store(self.since_base(now), Ordering::Relaxed);
                tracing::warn!(uri = %self.uri, error = %e, "jwks fetch failed");
                Err(e)
            }
        }
    }

    /// Refreshes every `cache_duration`, for as long as the source lives
    /// (the registry keeps it across config swaps).
    fn start_refresher(self: &Arc<Self>) {
        if self.refresher.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let every = match weak.upgrade() {
                    Some(s) => s.settings().cache_duration.max(Duration::from_secs(1)),
                    None => return,
                };
                tokio::time::sleep(every).await;
                let Some(s) = weak.upgrade() else { return };
                let idle = s
                    .since_base(Instant::now())
                    .saturating_sub(s.last_used.load(Ordering::Relaxed));
                if idle > ms(s.window()) {
                    continue;
                }
                let seen = s.current.load().as_ref().map(|k| k.generation);
                // Errors are logged by fetch; the old set keeps serving.
                let _ = s.fetch(Instant::now(), seen).await;
            }
        });
    }
}

/// The JWKS caches by URI; lives in [`super::State`].
#[derive(Default)]
pub struct Registry {
    sources: ArcSwap<HashMap<String, Arc<Source>>>,
    /// Taken only to add a URI.
    adding: Mutex<()>,
    fetcher: OnceLock<Arc<dyn Fetch>>,
}

impl Registry {
    #[cfg(test)]
    pub fn with_fetcher(f: Arc<dyn Fetch>) -> Registry {
        let r = Registry::default();
        let _ = r.fetcher.set(f);
        r
    }

    /// The cache for `uri`, with the latest settings applied.
    pub fn source(&self, uri: &str, settings: Settings) -> Arc<Source> {
        if let Some(s) = self.sources.load().get(uri) {
            s.set_settings(settings);
            s.touch();
            return s.clone();
        }
        let _g = self.adding.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = self.sources.load().get(uri) {
            s.set_settings(settings);
            return s.clone();
        }
        let fetcher = self
            .fetcher
            .get_or_init(|| Arc::new(HttpFetch::default()))
            .clone();
        let s = Arc::new(Source::new(uri, settings, fetcher));
        let mut map = HashMap::clone(&self.sources.load());
        map.insert(uri.to_string(), s.clone());
        self.sources.store(Arc::new(map));
        s
    }
}

/// Fetches over HTTP or HTTPS with the proxy's hyper client; HTTPS peers
/// are verified against the system's CA bundle and must be valid for the
/// URI's host.
#[derive(Default)]
struct HttpFetch {
    plain: OnceLock<crate::upstream::UpstreamClient>,
    tls: OnceLock<Result<crate::upstream::UpstreamClient, ()>>,
}

impl HttpFetch {
    fn client(&self, https: bool) -> Result<&crate::upstream::UpstreamClient, JwksError> {
        let connect = Duration::from_secs(5);
        if !https {
            return Ok(self
                .plain
                .get_or_init(|| crate::upstream::UpstreamClient::new(connect, false, None, None)));
        }
        self.tls
            .get_or_init(|| {
                super::outbound::client(true, connect).map_err(|e| {
                    tracing::error!(error = %e, "jwks: https JWKS cannot be fetched");
                })
            })
            .as_ref()
            .map_err(|_| JwksError::NoRoots)
    }
}

impl Fetch for HttpFetch {
    fn fetch<'a>(
        &'a self,
        uri: &'a str,
        _timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, JwksError>> + Send + 'a>> {
        Box::pin(async move {
            let parsed: http::Uri = uri.parse().map_err(|_| JwksError::Uri(uri.into()))?;
            let https = match parsed.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                _ => return Err(JwksError::Uri(uri.into())),
            };
            let client = self.client(https)?;
            let body = Empty::<Bytes>::new().map_err(|e| match e {}).boxed();
            let req = http::Request::get(parsed)
                .header(http::header::ACCEPT, "application/json")
                .body(body)
                .map_err(|e| JwksError::Request(e.to_string()))?;
            let resp = client
                .request(req)
                .await
                .map_err(|e| JwksError::Request(chain(&e)))?;
            if resp.status() != http::StatusCode::OK {
                return Err(JwksError::Status(resp.status().as_u16()));
            }
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| JwksError::Body(e.to_string()))?;
            Ok(body.to_bytes())
        })
    }
}

/// An error with its causes (hyper's own message is only "Connect").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A provider's `remote_jwks`, checked at compile time.
pub fn compile(v: &serde_json::Value) -> Result<(String, Settings), String> {
    let uri = v["uri"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or("remote_jwks.uri is required")?;
    match uri.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
        _ => return Err(format!("remote_jwks.uri {uri:?} is not an http(s) URI")),
    }
    let d = Settings::default();
    let num = |name: &str, default: Duration, unit: fn(u64) -> Duration| match &v[name] {
        serde_json::Value::Null => Ok(default),
        n => n
            .as_u64()
            .map(unit)
            .ok_or_else(|| format!("remote_jwks.{name} must be a non-negative integer")),
    };
    Ok((
        uri.to_string(),
        Settings {
            cache_duration: num("cache_duration", d.cache_duration, Duration::from_secs)?,
            stale_while_error: num(
                "stale_while_error",
                d.stale_while_error,
                Duration::from_secs,
            )?,
            timeout: num("timeout", d.timeout, Duration::from_millis)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Serves whichever document is set (None: fails) and counts fetches.
    #[derive(Default)]
    struct Fake {
        doc: Mutex<Option<String>>,
        calls: AtomicUsize,
    }

    impl Fake {
        fn serve(&self, kid: Option<&str>) {
            *self.doc.lock().unwrap() = kid.map(|k| {
                format!(r#"{{"keys":[{{"kty":"oct","alg":"HS256","kid":"{k}","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}}]}}"#)
            });
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Fetch for Fake {
        fn fetch<'a>(
            &'a self,
            _: &'a str,
            _: Duration,
        ) -> Pin<Box<dyn Future<Output = Result<Bytes, JwksError>> + Send + 'a>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let doc = self.doc.lock().unwrap().clone();
            Box::pin(async move { doc.map(Bytes::from).ok_or(JwksError::Status(503)) })
        }
    }

    fn settings() -> Settings {
        Settings {
            cache_duration: Duration::from_secs(10),
            stale_while_error: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
        }
    }

    fn setup() -> (Arc<Fake>, Arc<Source>, Instant) {
        let fake = Arc::new(Fake::default());
        let reg = Registry::with_fetcher(fake.clone());
        let src = reg.source("http://jwks.test/keys", settings());
        (fake, src, Instant::now())
    }

    fn kids(s: &KeySet) -> Vec<String> {
        s.keys.iter().filter_map(|k| k.0.clone()).collect()
    }

    #[tokio::test]
    async fn first_use_fetches_then_fresh_set_is_reused() {
        let (fake, src, t0) = setup();
        fake.serve(Some("a"));
        let s = src.keys(t0, Some("a")).await.unwrap();
        assert_eq!(kids(&s), ["a"]);
        let s = src
            .keys(t0 + Duration::from_secs(5), Some("a"))
            .await
            .unwrap();
        assert_eq!(kids(&s), ["a"]);
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test]
    async fn first_use_failing_is_an_error_not_a_pass() {
        let (fake, src, t0) = setup();
        assert!(src.keys(t0, None).await.is_err());
        // Within the back-off: refused without another fetch.
        assert!(matches!(
            src.keys(t0 + Duration::from_millis(100), None).await,
            Err(JwksError::Backoff)
        ));
        assert_eq!(fake.calls(), 1);
        fake.serve(Some("a"));
        assert!(src.keys(t0 + Duration::from_secs(1), None).await.is_ok());
    }

    #[tokio::test]
    async fn stale_set_serves_within_window_and_not_beyond() {
        let (fake, src, t0) = setup();
        fake.serve(Some("a"));
        src.keys(t0, None).await.unwrap();
        fake.serve(None);
        // Past cache_duration, refreshes failing: still served.
        assert!(src.usable(t0 + Duration::from_secs(30)).is_some());
        assert!(src.keys(t0 + Duration::from_secs(59), None).await.is_ok());
        // Beyond stale_while_error since it was fetched: refused.
        assert!(src.usable(t0 + Duration::from_secs(60)).is_none());
        assert!(src.keys(t0 + Duration::from_secs(61), None).await.is_err());
        // The server back: served again.
        fake.serve(Some("b"));
        let s = src.keys(t0 + Duration::from_secs(62), None).await.unwrap();
        assert_eq!(kids(&s), ["b"]);
    }

    #[tokio::test]
    async fn window_is_at_least_cache_duration() {
        let fake = Arc::new(Fake::default());
        let reg = Registry::with_fetcher(fake.clone());
        let src = reg.source(
            "http://jwks.test/keys",
            Settings {
                stale_while_error: Duration::from_secs(1),
                ..settings()
            },
        );
        let t0 = Instant::now();
        fake.serve(Some("a"));
        src.keys(t0, None).await.unwrap();
        assert!(src.usable(t0 + Duration::from_secs(5)).is_some());
        assert!(src.usable(t0 + Duration::from_secs(10)).is_none());
    }

    #[tokio::test]
    async fn unknown_kid_refetches_once_per_interval() {
        let (fake, src, t0) = setup();
        fake.serve(Some("a"));
        src.keys(t0, Some("a")).await.unwrap();
        // Rotated: the unknown kid refetches at once.
        fake.serve(Some("b"));
        let s = src
            .keys(t0 + Duration::from_secs(1), Some("b"))
            .await
            .unwrap();
        assert_eq!(kids(&s), ["b"]);
        assert_eq!(fake.calls(), 2);
        // Another unknown kid within the interval: no fetch.
        fake.serve(Some("c"));
        let s = src
            .keys(t0 + Duration::from_secs(2), Some("c"))
            .await
            .unwrap();
        assert_eq!(kids(&s), ["b"]);
        assert_eq!(fake.calls(), 2);
        // After it: one more.
        let s = src
            .keys(t0 + Duration::from_secs(1) + KID_REFETCH_EVERY, Some("c"))
            .await
            .unwrap();
        assert_eq!(kids(&s), ["c"]);
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test]
    async fn waiters_share_one_failed_fetch() {
        let (fake, src, t0) = setup();
        let (a, b) = tokio::join!(src.keys(t0, None), src.keys(t0, None));
        assert!(a.is_err() && b.is_err());
        assert_eq!(fake.calls(), 1);
    }

    #[test]
    fn registry_keeps_one_source_per_uri() {
        let fake = Arc::new(Fake::default());
        let reg = Registry::with_fetcher(fake);
        let a = reg.source("http://x/a", settings());
        let b = reg.source("http://x/a", Settings::default());
        assert!(Arc::ptr_eq(&a, &b));
        // The latest config's settings apply.
        assert_eq!(a.settings(), Settings::default());
    }

    #[test]
    fn compile_checks_uri_and_defaults() {
        let (u, s) = compile(&serde_json::json!({"uri": "https://idp/jwks"})).unwrap();
        assert_eq!((u.as_str(), s), ("https://idp/jwks", Settings::default()));
        assert!(compile(&serde_json::json!({"uri": "ftp://idp/jwks"})).is_err());
        assert!(compile(&serde_json::json!({})).is_err());
    }
}
