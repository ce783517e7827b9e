//! Secrets at rest: the store's [`SecretCodec`], which encrypts every
//! field an entity's schema marks secret (key-auth keys, jwt secrets,
//! certificate private keys, plugin secrets such as Redis passwords) with
//! the keyring before it is written, and opens it when read.
//!
//! Vault references (`{vault://env/NAME}`) are not secrets but pointers
//! to one: they are stored as written.

use crate::entities::{def, secrets};
use crate::keyring::{Keyring, KeyringError};
use crate::store::{SecretCodec, Store, StoreError};
use serde_json::Value;
use sqlx::Row;
use std::sync::Arc;

pub struct AtRest {
    keyring: Arc<Keyring>,
}

impl AtRest {
    pub fn new(keyring: Arc<Keyring>) -> Arc<AtRest> {
        Arc::new(AtRest { keyring })
    }
}

/// Whether a secret field's value is a vault reference, stored as written.
pub fn is_reference(s: &str) -> bool {
    s.starts_with("{vault://") && s.ends_with('}')
}

/// What a rotation did.
#[derive(Debug, Default)]
pub struct Rotated {
    /// Secret values moved under the primary key (from another key, or
    /// from plaintext written before encryption at rest).
    pub values: usize,
    /// Entity versions rewritten (history included).
    pub versions: usize,
    /// Key ids the database no longer needs.
    pub retired: Vec<String>,
}

impl AtRest {
    /// Secret values of an entity not under the primary key.
    fn stale(&self, kind: &str, data: &mut Value) -> usize {
        let Some(d) = def(kind) else { return 0 };
        let primary = self.keyring.primary_id();
        let mut n = 0;
        let _ = secrets::for_each_secret::<()>(d, data, &mut |_, v| {
            if let Some(s) = v.as_str()
                && !is_reference(s)
                && Keyring::key_id(s) != Some(primary)
            {
                n += 1;
            }
            Ok(())
        });
        n
    }

    /// Re-encrypts every stored secret, in every version (history too),
    /// under the keyring's primary key, then forgets the other key ids:
    /// after it, the keyring's other lines can be removed. Rewriting a
    /// version in place is not a revision: its content is unchanged.
    pub async fn rotate(&self, store: &Store) -> Result<Rotated, KeyringError> {
        let mut out = Rotated::default();
        for (seq, kind, raw) in store.raw_versions().await? {
            let mut v: Value =
                serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let stale = self.stale(&kind, &mut v);
            if stale == 0 {
                continue;
            }
            self.open(&kind, &mut v)?;
            self.seal(&kind, &mut v);
            store.rewrite_version(seq, &v.to_string()).await?;
            out.values += stale;
            out.versions += 1;
        }
        out.retired = self.keyring.retire_all_but_primary(store).await?;
        Ok(out)
    }
}

impl AtRest {
    /// Once per database: encrypts the secrets stored before encryption at
    /// rest existed, and re-indexes secret unique keys (key-auth keys) by
    /// digest. Returns how many values it encrypted (None: already done).
    pub async fn upgrade(&self, store: &Store) -> Result<Option<usize>, KeyringError> {
        let pool = store.pool();
        let pending = sqlx::query("SELECT id FROM at_rest_pending")
            .fetch_optional(pool)
            .await
            .map_err(StoreError::from)?;
        if pending.is_none() {
            return Ok(None);
        }
        let mut sealed = 0;
        for (seq, kind, raw) in store.raw_versions().await? {
            let mut v: Value =
                serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if self.plaintext(&kind, &mut v) == 0 {
                continue;
            }
            sealed += self.plaintext(&kind, &mut v);
            self.seal(&kind, &mut v);
            store.rewrite_version(seq, &v.to_string()).await?;
        }
        for d in crate::entities::ALL.iter() {
            for field in d.unique {
                let probe = d.key_entry(field, "");
                if probe == format!("{field}=") {
                    continue; // not a secret field
                }
                let rows =
                    sqlx::query("SELECT key, id FROM entity_keys WHERE kind = $1 AND key LIKE $2")
                        .bind(d.name)
                        .bind(format!("{field}=%"))
                        .fetch_all(pool)
                        .await
                        .map_err(StoreError::from)?;
                for r in rows {
                    let key: String = r.try_get(0).map_err(StoreError::from)?;
                    let value = &key[field.len() + 1..];
                    // Already a digest, or too long to have been kept
                    // (stored as its own SHA-256): nothing in clear.
                    if value.starts_with("digest:") || value.starts_with("sha256:") {
                        continue;
                    }
                    sqlx::query("UPDATE entity_keys SET key = $1 WHERE kind = $2 AND key = $3")
                        .bind(d.key_entry(field, value))
                        .bind(d.name)
                        .bind(&key)
                        .execute(pool)
                        .await
                        .map_err(StoreError::from)?;
                }
            }
        }
        sqlx::query("DELETE FROM at_rest_pending")
            .execute(pool)
            .await
            .map_err(StoreError::from)?;
        Ok(Some(sealed))
    }

    /// Secret values of an entity stored in clear.
    fn plaintext(&self, kind: &str, data: &mut Value) -> usize {
        let Some(d) = def(kind) else { return 0 };
        let mut n = 0;
        let _ = secrets::for_each_secret::<()>(d, data, &mut |_, v| {
            if let Some(s) = v.as_str()
                && !is_reference(s)
                && !Keyring::is_encrypted(s)
            {
                n += 1;
            }
            Ok(())
        });
        n
    }
}

impl SecretCodec for AtRest {
    fn seal(&self, kind: &str, data: &mut Value) {
        let Some(d) = def(kind) else { return };
        let _ = secrets::for_each_secret::<()>(d, data, &mut |_, v| {
            if let Some(s) = v.as_str()
                && !Keyring::is_encrypted(s)
                && !is_reference(s)
            {
                *v = Value::String(self.keyring.encrypt(s));
            }
            Ok(())
        });
    }

    fn open(&self, kind: &str, data: &mut Value) -> Result<(), StoreError> {
        let Some(d) = def(kind) else { return Ok(()) };
        secrets::for_each_secret::<StoreError>(d, data, &mut |field, v| {
            let Some(s) = v.as_str().filter(|s| Keyring::is_encrypted(s)) else {
                return Ok(());
            };
            let plain = self.keyring.decrypt(s).map_err(|e| match e {
                KeyringError::UnknownKey(_) | KeyringError::Malformed => {
                    StoreError::Corrupt(format!("{kind} field '{field}': {e}"))
                }
                other => StoreError::Corrupt(other.to_string()),
            })?;
            *v = Value::String(plain);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_fields_only_and_references_untouched() {
        let ring = Arc::new(Keyring::parse(&Keyring::new_line()).unwrap());
        let c = AtRest::new(ring);
        let mut k = json!({"id": "x", "key": "api-key-1", "consumer": {"id": "c"}, "ttl": null});
        c.seal("keyauth_credentials", &mut k);
        let stored = k.to_string();
        assert!(!stored.contains("api-key-1"), "{stored}");
        assert!(Keyring::is_encrypted(k["key"].as_str().unwrap()));
        assert_eq!(k["consumer"]["id"], "c");
        c.open("keyauth_credentials", &mut k).unwrap();
        assert_eq!(k["key"], "api-key-1");

        let mut p = json!({"name": "rate-limiting", "config": {"policy": "redis",
            "redis": {"host": "r", "password": "pw-1", "username": "{vault://env/redis-user}"}}});
        c.seal("plugins", &mut p);
        assert!(!p.to_string().contains("pw-1"));
        c.open("plugins", &mut p).unwrap();
        assert_eq!(p["config"]["redis"]["password"], "pw-1");

        let mut r = json!({"name": "rate-limiting", "config": {"redis": {"password": "{vault://env/REDIS_PW}"}}});
        c.seal("plugins", &mut r);
        assert_eq!(r["config"]["redis"]["password"], "{vault://env/REDIS_PW}");
    }

    #[test]
    fn a_foreign_key_is_a_corrupt_read_naming_the_field_not_the_value() {
        let a = AtRest::new(Arc::new(Keyring::parse(&Keyring::new_line()).unwrap()));
        let b = AtRest::new(Arc::new(Keyring::parse(&Keyring::new_line()).unwrap()));
        let mut k = json!({"key": "api-key-2"});
        a.seal("keyauth_credentials", &mut k);
        let e = b
            .open("keyauth_credentials", &mut k)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'key'") && !e.contains("api-key-2"), "{e}");
    }
}
