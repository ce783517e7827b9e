//! The consumer directory: consumers, their ACL groups, and an index of
//! credentials. It holds secrets: nothing here is ever logged.

use super::jwt::JwtCredential;
use gantry_shared::key_digest::{DIGEST_LEN, SALT_LEN, key_digest};
use gantry_shared::proto::plugins as pb;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::collections::HashMap;

pub static X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
pub static X_CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
pub static X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
pub static X_CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
pub static X_ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");
pub static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");

pub struct Consumer {
    pub id: String,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    /// Sorted.
    pub groups: Vec<String>,
    /// The identity headers' values, built once.
    id_value: HeaderValue,
    username_value: Option<HeaderValue>,
    custom_id_value: Option<HeaderValue>,
    /// `X-Consumer-Groups`: the groups joined by ", ".
    pub groups_value: Option<HeaderValue>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("id", &self.id).finish()
    }
}

/// A key-auth credential, found by its key's digest.
pub struct KeyCredential {
    pub id: String,
    pub consumer: usize,
}

#[derive(Default)]
pub struct Directory {
    consumers: Vec<Consumer>,
    /// Consumer id or username -> index (Kong's `anonymous` takes either).
    by_name: HashMap<String, usize>,
    /// Salt of the key digests (see `gantry_shared::key_digest`).
    key_salt: Vec<u8>,
    /// A key's digest -> its credential: the proxy never holds the keys.
    keys: HashMap<[u8; DIGEST_LEN], KeyCredential>,
    jwt: Vec<JwtCredential>,
    /// A jwt credential's `key` -> index in `jwt`.
    jwt_keys: HashMap<String, usize>,
}

/// Whether a consumer's id, username or custom id can be sent upstream in
/// its identity headers (`X-Consumer-*`); the directory refuses one that
/// cannot, and the control plane refuses to store it.
pub fn is_header_safe(v: &str) -> bool {
    HeaderValue::from_str(v).is_ok()
}

impl Directory {
    pub fn compile(list: &[pb::Consumer], key_salt: &[u8]) -> Result<Directory, String> {
        let mut d = Directory::default();
        let any_keys = list.iter().any(|c| !c.keyauth_credentials.is_empty());
        if any_keys && key_salt.len() != SALT_LEN {
            return Err(format!(
                "key_salt: expected {SALT_LEN} bytes, got {}",
                key_salt.len()
            ));
        }
        d.key_salt = key_salt.to_vec();
        for (i, c) in list.iter().enumerate() {
            let value = |field: &str, v: &str| {
                HeaderValue::from_str(v)
                    .map_err(|_| format!("consumer {}: {field} is not a valid header value", c.id))
            };
            let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
            let groups_value = match c.groups.is_empty() {
                true => None,
                false => Some(value("groups", &c.groups.join(", "))?),
            };
            d.consumers.push(Consumer {
                id: c.id.clone(),
                username: opt(&c.username),
                custom_id: opt(&c.custom_id),
                groups: c.groups.clone(),
                id_value: value("id", &c.id)?,
                username_value: opt(&c.username)
                    .map(|u| value("username", &u))
                    .transpose()?,
                custom_id_value: opt(&c.custom_id)
                    .map(|u| value("custom_id", &u))
                    .transpose()?,
                groups_value,
            });
            d.by_name.insert(c.id.clone(), i);
            if !c.username.is_empty() {
                d.by_name.entry(c.username.clone()).or_insert(i);
            }
            for k in &c.keyauth_credentials {
                let digest: [u8; DIGEST_LEN] =
                    k.key_digest.as_slice().try_into().map_err(|_| {
                        format!(
                            "key-auth credential {}: key_digest must be {DIGEST_LEN} bytes",
                            k.id
                        )
                    })?;
                if d.keys
                    .insert(
                        digest,
                        KeyCredential {
                            id: k.id.clone(),
                            consumer: i,
                        },
                    )
                    .is_some()
                {
                    // Says which credential, never the key.
                    return Err(format!(
                        "key-auth credential {}: the key is not unique",
                        k.id
                    ));
                }
            }
            for j in &c.jwt_secrets {
                if d.jwt_keys.insert(j.key.clone(), d.jwt.len()).is_some() {
                    return Err(format!("jwt credential {}: the key is not unique", j.id));
                }
                d.jwt.push(JwtCredential::compile(j, i));
            }
        }
        Ok(d)
    }

    pub fn jwt_by_key(&self, key: &str) -> Option<(usize, &JwtCredential)> {
        let i = *self.jwt_keys.get(key)?;
        Some((i, &self.jwt[i]))
    }

    pub fn jwt_credential(&self, i: usize) -> (&Consumer, &JwtCredential) {
        let j = &self.jwt[i];
        (&self.consumers[j.consumer], j)
    }

    pub fn len(&self) -> usize {
        self.consumers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
    }

    /// By id or username.
    pub fn find(&self, name: &str) -> Option<&Consumer> {
        self.by_name.get(name).map(|i| &self.consumers[*i])
    }

    pub fn by_key(&self, key: &str) -> Option<(&Consumer, &str)> {
        if self.keys.is_empty() {
            return None;
        }
        let k = self.keys.get(&key_digest(&self.key_salt, key))?;
        Some((&self.consumers[k.consumer], k.id.as_str()))
    }
}

/// Client-sent identity headers never reach the upstream: only what the
/// gateway established does.
pub fn strip_identity_headers(h: &mut HeaderMap) {
    for n in [
        &X_CONSUMER_ID,
        &X_CONSUMER_CUSTOM_ID,
        &X_CONSUMER_USERNAME,
        &X_CREDENTIAL_IDENTIFIER,
        &X_ANONYMOUS_CONSUMER,
        &X_CONSUMER_GROUPS,
    ] {
        h.remove(n);
    }
}

/// Kong's `set_consumer`: the consumer's headers, the credential's id, or
/// `X-Anonymous-Consumer: true` when there is no credential.
pub fn set_identity_headers(h: &mut HeaderMap, c: &Consumer, credential: Option<&str>) {
    // `credential` is what X-Credential-Identifier says: key-auth's id,
    // jwt's key.
    h.insert(X_CONSUMER_ID.clone(), c.id_value.clone());
    match &c.custom_id_value {
        Some(v) => h.insert(X_CONSUMER_CUSTOM_ID.clone(), v.clone()),
        None => h.remove(&X_CONSUMER_CUSTOM_ID),
    };
    match &c.username_value {
        Some(v) => h.insert(X_CONSUMER_USERNAME.clone(), v.clone()),
        None => h.remove(&X_CONSUMER_USERNAME),
    };
    match credential.and_then(|id| HeaderValue::from_str(id).ok()) {
        Some(v) => {
            h.insert(X_CREDENTIAL_IDENTIFIER.clone(), v);
            h.remove(&X_ANONYMOUS_CONSUMER);
        }
        None => {
            h.remove(&X_CREDENTIAL_IDENTIFIER);
            h.insert(
                X_ANONYMOUS_CONSUMER.clone(),
                HeaderValue::from_static("true"),
            );
        }
    }
}
