//! `jwt`: Kong's jwt plugin (a token signed with a consumer's jwt
//! credential, found by the token's `key_claim_name` claim) and Gantry's
//! issuer providers after Envoy's jwt_authn (a JWKS per issuer).
//!
//! Verified tokens are cached, so a hot token is not re-verified on every
//! request; time-dependent checks (`exp`, `nbf`, `maximum_expiration`) are
//! still made on every request.

use super::Identity;
use super::consumers::Directory;
use super::jwks;
use super::reject::Reject;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

pub struct Jwt {
    uri_param_names: Vec<String>,
    cookie_names: Vec<String>,
    header_names: Vec<HeaderName>,
    key_claim_name: String,
    secret_is_base64: bool,
    verify_exp: bool,
    verify_nbf: bool,
    maximum_expiration: f64,
    anonymous: Option<String>,
    run_on_preflight: bool,
    providers: Vec<Provider>,
    claims_to_headers: Vec<(String, HeaderName)>,
    forward: bool,
    challenge: HeaderValue,
    challenge_error: HeaderValue,
    cache: Cache,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("key_claim_name", &self.key_claim_name)
            .field("providers", &self.providers.len())
            .finish()
    }
}

/// An issuer whose tokens are verified with a JWKS (Envoy's jwt_authn
/// provider): no consumer is identified by it.
struct Provider {
    issuer: Option<String>,
    audiences: Vec<String>,
    keys: Keys,
}

/// A JWKS key: (kid, algorithm, key).
pub type Key = (Option<String>, Option<Algorithm>, DecodingKey);

enum Keys {
    Local(Vec<Key>),
    /// Fetched and cached in [`jwks::Registry`], by URI.
    Remote(String, jwks::Settings),
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    uri_param_names: Option<Vec<String>>,
    #[serde(default)]
    cookie_names: Option<Vec<String>>,
    #[serde(default)]
    header_names: Option<Vec<String>>,
    #[serde(default)]
    key_claim_name: Option<String>,
    #[serde(default)]
    secret_is_base64: bool,
    #[serde(default)]
    claims_to_verify: Option<Vec<String>>,
    #[serde(default)]
    maximum_expiration: Option<f64>,
    #[serde(default)]
    anonymous: Option<String>,
    #[serde(default)]
    run_on_preflight: Option<bool>,
    #[serde(default)]
    realm: Option<String>,
    #[serde(default)]
    providers: Option<Vec<ProviderConfig>>,
    #[serde(default)]
    claims_to_headers: Option<Vec<ClaimHeader>>,
    #[serde(default)]
    forward: Option<bool>,
}

#[derive(Deserialize)]
struct ProviderConfig {
    name: String,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    audiences: Option<Vec<String>>,
    #[serde(default)]
    local_jwks: Option<String>,
    #[serde(default)]
    remote_jwks: Option<Value>,
}

#[derive(Deserialize)]
struct ClaimHeader {
    claim: String,
    header: String,
}

fn header_name(n: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{n:?} is not a header name"))
}

impl Jwt {
    pub fn compile(v: &Value) -> Result<Jwt, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let claims = c.claims_to_verify.unwrap_or_default();
        let realm = c.realm.unwrap_or_else(|| "kong".into());
        let challenge = format!("Bearer realm=\"{realm}\"");
        let providers = c
            .providers
            .unwrap_or_default()
            .into_iter()
            .map(provider)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Jwt {
            uri_param_names: c.uri_param_names.unwrap_or_else(|| vec!["jwt".into()]),
            cookie_names: c.cookie_names.unwrap_or_default(),
            header_names: c
                .header_names
                .unwrap_or_else(|| vec!["authorization".into()])
                .iter()
                .map(|h| header_name(h))
                .collect::<Result<_, _>>()?,
            key_claim_name: c.key_claim_name.unwrap_or_else(|| "iss".into()),
            secret_is_base64: c.secret_is_base64,
            verify_exp: claims.iter().any(|x| x == "exp"),
            verify_nbf: claims.iter().any(|x| x == "nbf"),
            maximum_expiration: c.maximum_expiration.unwrap_or(0.0),
            anonymous: c.anonymous.filter(|a| !a.is_empty()),
            run_on_preflight: c.run_on_preflight.unwrap_or(true),
            providers,
            claims_to_headers: c
                .claims_to_headers
                .unwrap_or_default()
                .into_iter()
                .map(|ch| Ok((ch.claim, header_name(&ch.header)?)))
                .collect::<Result<_, String>>()?,
            forward: c.forward.unwrap_or(true),
            challenge: HeaderValue::from_str(&challenge)
                .map_err(|_| "realm is not a valid header value".to_string())?,
            challenge_error: HeaderValue::from_str(&format!(
                "{challenge}, error=\"invalid_token\""
            ))
            .map_err(|_| "realm is not a valid header value".to_string())?,
            cache: Cache::default(),
        })
    }

    pub async fn authenticate<'d>(
        &self,
        jwks: &jwks::Registry,
        dir: &'d Directory,
        headers: &mut HeaderMap,
        pq: &mut String,
        method: &Method,
        now: f64,
    ) -> Result<Identity<'d>, Reject> {
        if !self.run_on_preflight && method == Method::OPTIONS {
            return Ok(Identity::default());
        }
        match self.verify(jwks, dir, headers, pq, now).await {
            Ok(who) => Ok(who),
            Err(reject) => match &self.anonymous {
                None => Err(reject),
                Some(name) => match dir.find(name) {
                    Some(c) => Ok(Identity {
                        consumer: Some(c),
                        ..Default::default()
                    }),
                    None => Err(Reject::new(500, "An unexpected error occurred")),
                },
            },
        }
    }

    fn unauthorized(&self, message: &str) -> Reject {
        Reject::new(401, message)
            .with_header(http::header::WWW_AUTHENTICATE, self.challenge_error.clone())
    }

    async fn verify<'d>(
        &self,
        jwks: &jwks::Registry,
        dir: &'d Directory,
        headers: &mut HeaderMap,
        pq: &mut String,
        now: f64,
    ) -> Result<Identity<'d>, Reject> {
        let token = match self.token(headers, pq)? {
            Some(t) => t,
            None => {
                return Err(Reject::new(401, "Unauthorized")
                    .with_header(http::header::WWW_AUTHENTICATE, self.challenge.clone()));
            }
        };
        // A cached verification by a remote key set holds only while that
        // very set is current and usable (not rotated, not too stale).
        let cached = self.cache.get(&token.value).filter(|v| match v.remote {
            None => true,
            Some((i, generation)) => match self.providers.get(i).map(|p| &p.keys) {
                Some(Keys::Remote(uri, settings)) => jwks
                    .source(uri, *settings)
                    .usable(std::time::Instant::now())
                    .is_some_and(|s| s.generation == generation),
                _ => false,
            },
        });
        let verified = match cached {
            Some(v) => v,
            None => {
                let v = Arc::new(self.verify_token(jwks, dir, &token.value).await?);
                self.cache.put(&token.value, v.clone());
                v
            }
        };
        self.check_time(&verified, now)?;
        if !self.forward {
            token.remove(headers, pq);
        }
        for (h, v) in &verified.headers {
            headers.insert(h.clone(), v.clone());
        }
        Ok(match verified.credential {
            Some(i) => {
                let (c, cred) = dir.jwt_credential(i);
                Identity {
                    consumer: Some(c),
                    credential: Some(cred.id.as_str()),
                    credential_label: Some(cred.key.as_str()),
                }
            }
            None => Identity::default(),
        })
    }

    /// Kong's `verify_registered_claims` and `check_maximum_expiration`.
    fn check_time(&self, v: &Verified, now: f64) -> Result<(), Reject> {
        let mut errors = serde_json::Map::new();
        // Kong: a claim asked for must be a number; a missing one is not.
        if self.verify_nbf {
            match v.nbf {
                Claim::Missing | Claim::NotNumber => {
                    errors.insert("nbf".into(), "must be a number".into());
                }
                Claim::Number(n) if n > now.floor() => {
                    errors.insert("nbf".into(), "token not valid yet".into());
                }
                Claim::Number(_) => {}
            }
        }
        if self.verify_exp {
            match v.exp {
                Claim::Missing | Claim::NotNumber => {
                    errors.insert("exp".into(), "must be a number".into());
                }
                Claim::Number(n) if n <= now.floor() => {
                    errors.insert("exp".into(), "token expired".into());
                }
                Claim::Number(_) => {}
            }
        }
        if errors.is_empty() && self.maximum_expiration > 0.0 {
            let too_long = match v.exp {
                Claim::Number(exp) => exp - now.floor() > self.maximum_expiration,
                _ => true,
            };
            if too_long {
                errors.insert("exp".into(), "exceeds maximum allowed expiration".into());
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        let mut r = self.unauthorized("");
        r.body = super::reject::Answer::Json(Box::new(Value::Object(errors)));
        Err(r)
    }

    /// Kong's `retrieve_tokens`: query arguments, cookies, then
    /// `Bearer` headers; several distinct tokens are refused.
    fn token(&self, headers: &HeaderMap, pq: &str) -> Result<Option<Token>, Reject> {
        let mut found: Option<Token> = None;
        let mut add = |t: Token| -> Result<(), Reject> {
            match &found {
                Some(f) if f.value != t.value => Err(self.unauthorized("Multiple tokens provided")),
                Some(_) => Ok(()),
                None => {
                    found = Some(t);
                    Ok(())
                }
            }
        };
        for name in &self.uri_param_names {
            for v in super::key_auth::query_values(pq, name) {
                if !v.is_empty() {
                    add(Token {
                        value: v,
                        from: Source::Query(name.clone()),
                    })?;
                }
            }
        }
        for name in &self.cookie_names {
            if let Some(v) = cookie(headers, name) {
                add(Token {
                    value: v,
                    from: Source::Cookie,
                })?;
            }
        }
        for h in &self.header_names {
            let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(t) = bearer(v) {
                add(Token {
                    value: t.to_string(),
                    from: Source::Header(h.clone()),
                })?;
            }
        }
        Ok(found)
    }

    async fn verify_token(
        &self,
        jwks: &jwks::Registry,
        dir: &Directory,
        token: &str,
    ) -> Result<Verified, Reject> {
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(self.unauthorized("Bad token; invalid JSON"));
        };
        let decode = |s: &str| -> Option<Value> {
            let bytes = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()?;
            serde_json::from_slice::<Value>(&bytes)
                .ok()
                .filter(Value::is_object)
        };
        let (Some(header), Some(claims)) = (decode(h64), decode(p64)) else {
            return Err(self.unauthorized("Bad token; invalid JSON"));
        };
        let alg_name = header["alg"].as_str().unwrap_or_default();
        // `alg: none` and anything unknown are refused before any key is tried.
        let Ok(alg) = Algorithm::from_str(alg_name) else {
            return Err(self.unauthorized("Invalid algorithm"));
        };
        let message = &token[..h64.len() + 1 + p64.len()];

        // Gantry's providers first: an issuer they know is theirs.
        let iss = claims["iss"].as_str();
        for (index, p) in self.providers.iter().enumerate() {
            if p.issuer.as_deref().is_some_and(|i| Some(i) != iss) {
                continue;
            }
            let kid = header["kid"].as_str();
            // Held for the loop below: a remote set is read once, lock-free.
            let remote_set;
            let (keys, remote) = match &p.keys {
                Keys::Local(k) => (k.as_slice(), None),
                Keys::Remote(uri, settings) => {
                    let src = jwks.source(uri, *settings);
                    match src.keys(std::time::Instant::now(), kid).await {
                        Ok(set) => remote_set = set,
                        // Envoy's jwt_authn wording; never a pass.
                        Err(_) => return Err(self.unauthorized("Jwks remote fetch is failed")),
                    }
                    (
                        remote_set.keys.as_slice(),
                        Some((index, remote_set.generation)),
                    )
                }
            };
            let ok = keys.iter().any(|(k, a, key)| {
                (kid.is_none() || k.is_none() || k.as_deref() == kid)
                    && a.is_none_or(|a| a == alg)
                    && jsonwebtoken::crypto::verify(sig, message.as_bytes(), key, alg)
                        .unwrap_or(false)
            });
            if !ok {
                return Err(self.unauthorized("Invalid signature"));
            }
            if !p.audiences.is_empty() && !audience_ok(&claims["aud"], &p.audiences) {
                return Err(self.unauthorized("Audiences in Jwt are not allowed"));
            }
            let mut v = self.verified(None, &claims);
            v.remote = remote;
            return Ok(v);
        }

        let key = match claims
            .get(&self.key_claim_name)
            .or_else(|| header.get(&self.key_claim_name))
        {
            None | Some(Value::Null) => {
                return Err(
                    self.unauthorized(&format!("No mandatory '{}' in claims", self.key_claim_name))
                );
            }
            Some(Value::String(s)) if s.is_empty() => {
                return Err(
                    self.unauthorized(&format!("Invalid '{}' in claims", self.key_claim_name))
                );
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let Some((index, cred)) = dir.jwt_by_key(&key) else {
            return Err(self.unauthorized(&format!(
                "No credentials found for given '{}'",
                self.key_claim_name
            )));
        };
        if cred.algorithm != alg_name {
            return Err(self.unauthorized("Invalid algorithm"));
        }
        let decoding = match &cred.key_material {
            CredentialKey::Secret(s) if self.secret_is_base64 => {
                DecodingKey::from_base64_secret(s).ok()
            }
            CredentialKey::Secret(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            CredentialKey::Public(k) => k.clone(),
        };
        let Some(decoding) = decoding else {
            return Err(self.unauthorized("Invalid key/secret"));
        };
        if !jsonwebtoken::crypto::verify(sig, message.as_bytes(), &decoding, alg).unwrap_or(false) {
            return Err(self.unauthorized("Invalid signature"));
        }
        Ok(self.verified(Some(index), &claims))
    }

    fn verified(&self, credential: Option<usize>, claims: &Value) -> Verified {
        let claim = |name: &str| match claims.get(name) {
            None | Some(Value::Null) => Claim::Missing,
            Some(v) => v.as_f64().map(Claim::Number).unwrap_or(Claim::NotNumber),
        };
        let headers = self
            .claims_to_headers
            .iter()
            .filter_map(|(c, h)| {
                let v = match claims.get(c)? {
                    Value::String(s) => s.clone(),
                    Value::Array(a) => a
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| x.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    Value::Null => return None,
                    other => other.to_string(),
                };
                Some((h.clone(), HeaderValue::from_str(&v).ok()?))
            })
            .collect();
        Verified {
            credential,
            remote: None,
            exp: claim("exp"),
            nbf: claim("nbf"),
            headers,
        }
    }
}

fn provider(p: ProviderConfig) -> Result<Provider, String> {
    if let Some(remote) = &p.remote_jwks {
        // Fetched on first use, not here: compiling must not block on
        // the network, and a swap reuses the cached set.
        let (uri, settings) =
            jwks::compile(remote).map_err(|e| format!("provider {}: {e}", p.name))?;
        return Ok(Provider {
            issuer: p.issuer.filter(|i| !i.is_empty()),
            audiences: p.audiences.unwrap_or_default(),
            keys: Keys::Remote(uri, settings),
        });
    }
    let text = p
        .local_jwks
        .ok_or_else(|| format!("provider {}: local_jwks is required", p.name))?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&text).map_err(|e| format!("provider {}: local_jwks: {e}", p.name))?;
    let keys = set
        .keys
        .iter()
        .map(|k| {
            let key = DecodingKey::from_jwk(k)
                .map_err(|e| format!("provider {}: a JWKS key: {e}", p.name))?;
            let alg = k
                .common
                .key_algorithm
                .and_then(|a| Algorithm::from_str(&a.to_string()).ok());
            Ok((k.common.key_id.clone(), alg, key))
        })
        .collect::<Result<Vec<_>, String>>()?;
    if keys.is_empty() {
        return Err(format!("provider {}: local_jwks has no keys", p.name));
    }
    Ok(Provider {
        issuer: p.issuer.filter(|i| !i.is_empty()),
        audiences: p.audiences.unwrap_or_default(),
        keys: Keys::Local(keys),
    })
}

fn audience_ok(aud: &Value, allowed: &[String]) -> bool {
    match aud {
        Value::String(a) => allowed.iter().any(|x| x == a),
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| allowed.iter().any(|x| x == a)),
        _ => false,
    }
}

/// The token after `Bearer ` (Kong: `\s*[Bb]earer\s+(.+)`).
fn bearer(v: &str) -> Option<&str> {
    let v = v.trim_start();
    let rest = v
        .strip_prefix("Bearer")
        .or_else(|| v.strip_prefix("bearer"))?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let t = rest.trim_start();
    (!t.is_empty()).then_some(t)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

enum Source {
    Query(String),
    Cookie,
    Header(HeaderName),
}

struct Token {
    value: String,
    from: Source,
}

impl Token {
    /// `forward: false`: the token does not go upstream.
    fn remove(&self, headers: &mut HeaderMap, pq: &mut String) {
        match &self.from {
            Source::Query(name) => super::key_auth::remove_query_arg(pq, name),
            Source::Header(h) => {
                headers.remove(h);
            }
            // A cookie header carries others too; it is left as it is.
            Source::Cookie => {}
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Claim {
    Missing,
    NotNumber,
    Number(f64),
}

/// What a verified token established (shared with the cache: a hit
/// copies a pointer, not the claim headers).
struct Verified {
    /// Index of the consumer jwt credential (None: a provider verified it).
    credential: Option<usize>,
    /// Verified by a remote JWKS: (provider index, key set generation).
    remote: Option<(usize, u64)>,
    exp: Claim,
    nbf: Claim,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Verified tokens, by the whole token (a hash alone could let a forged
/// token collide into a valid entry). Bounded: when a shard is full it is
/// emptied, which costs one verification per live token.
type Shard = Mutex<HashMap<Box<str>, Arc<Verified>>>;

struct Cache {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

const CACHE_SHARDS: usize = 16;
const CACHE_PER_SHARD: usize = 4096;

impl Default for Cache {
    fn default() -> Self {
        Cache {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Cache {
    fn shard(&self, token: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(token) as usize) % CACHE_SHARDS]
    }

    fn get(&self, token: &str) -> Option<Arc<Verified>> {
        let m = self.shard(token).lock().unwrap_or_else(|e| e.into_inner());
        m.get(token).cloned()
    }

    fn put(&self, token: &str, v: Arc<Verified>) {
        let mut m = self.shard(token).lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= CACHE_PER_SHARD {
            m.clear();
        }
        m.insert(token.into(), v);
    }
}

/// A consumer's jwt credential, ready to verify with.
pub struct JwtCredential {
    pub id: String,
    pub key: String,
    pub algorithm: String,
    pub consumer: usize,
    key_material: CredentialKey,
}

impl JwtCredential {
    pub fn compile(
        c: &gantry_shared::proto::plugins::JwtCredential,
        consumer: usize,
    ) -> JwtCredential {
        let key_material = if c.algorithm.starts_with("HS") {
            CredentialKey::Secret(c.secret.clone())
        } else {
            let pem = c.rsa_public_key.as_bytes();
            let key = match &c.algorithm[..2] {
                "RS" | "PS" => DecodingKey::from_rsa_pem(pem).ok(),
                "ES" => DecodingKey::from_ec_pem(pem).ok(),
                _ => DecodingKey::from_ed_pem(pem).ok(),
            };
            if key.is_none() {
                // By id: the key material is not for logs.
                tracing::warn!(credential = %c.id, "jwt credential: the public key cannot be read; its tokens will be refused");
            }
            CredentialKey::Public(key)
        };
        JwtCredential {
            id: c.id.clone(),
            key: c.key.clone(),
            algorithm: c.algorithm.clone(),
            consumer,
            key_material,
        }
    }
}

enum CredentialKey {
    Secret(String),
    Public(Option<DecodingKey>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_follows_kongs_pattern() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("  bearer   abc"), Some("abc"));
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
