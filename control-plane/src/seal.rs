//! Sealing of secrets in exported declarative documents.
//!
//! An export must never show a credential in plaintext, yet importing it
//! again, on any replica of the same database, must restore the credential.
//! So secrets are encrypted (XChaCha20-Poly1305, random 192-bit nonce per
//! value, which makes random nonces safe) under one key per database, kept
//! in the `seal_keys` table and created by whichever replica needs it first.

use crate::store::{Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sqlx::Row;

/// Marks a sealed value; the version lets the format change later.
pub const PREFIX: &str = "$gantry-sealed$v1$";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Binds ciphertexts to this use, so they cannot be replayed elsewhere
/// that the same key might ever serve.
const AAD: &[u8] = b"gantry-sealed-v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// Deliberately says nothing about the value itself.
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value cannot be opened: it was sealed by another database, or altered")]
    WrongKey,
}

#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// Salt of key-auth digests on the wire, derived from the key so every
    /// replica on the database agrees (see `gantry_shared::key_digest`).
    key_salt: [u8; 32],
}

/// Never prints the key.
impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { .. }")
    }
}

impl Sealer {
    /// Loads the database's seal key, creating it on first use. The insert
    /// ignores a conflict and everyone then reads the row, so replicas that
    /// race here still end up sharing one key.
    pub async fn load(store: &Store) -> Result<Sealer, StoreError> {
        if let Some(s) = Self::read_key(store).await? {
            return Ok(s);
        }
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        sqlx::query("INSERT INTO seal_keys (id, key) VALUES (1, $1) ON CONFLICT DO NOTHING")
            .bind(STANDARD.encode(&key[..]))
            .execute(store.pool())
            .await?;
        Self::read_key(store)
            .await?
            .ok_or_else(|| StoreError::Corrupt("seal key missing after creation".into()))
    }

    async fn read_key(store: &Store) -> Result<Option<Sealer>, StoreError> {
        let row = sqlx::query("SELECT key FROM seal_keys WHERE id = 1")
            .fetch_optional(store.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let encoded: String = row.try_get(0)?;
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| StoreError::Corrupt("seal key is not valid base64".into()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt("seal key is not 32 bytes long".into()))?;
        Ok(Some(Sealer::from_key(key)))
    }

    /// A sealer over a known key (tests, tooling).
    pub fn from_key(key: [u8; 32]) -> Sealer {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"gantry key-auth digest salt v1");
        h.update(key);
        Sealer {
            cipher: XChaCha20Poly1305::new(&key.into()),
            key_salt: h.finalize().into(),
        }
    }

    /// The salt key-auth keys are digested with before they go to a node.
    /// One-way from the seal key: knowing it opens nothing.
    pub fn key_salt(&self) -> [u8; 32] {
        self.key_salt
    }

    /// `$gantry-sealed$v1$` + base64(nonce || ciphertext || tag).
    pub fn seal(&self, plaintext: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption only fails for inputs beyond 256 GiB; should it ever,
        // the empty body makes the value fail loudly on unseal rather than
        // leak the plaintext or panic in a request.
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: AAD,
                },
            )
            .unwrap_or_default();
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce[..]);
        blob.extend_from_slice(&ct);
        format!("{PREFIX}{}", STANDARD.encode(blob))
    }

    /// Opens a sealed value; anything without the prefix is plaintext and
    /// comes back unchanged, so hand-written documents import as they are.
    pub fn unseal(&self, s: &str) -> Result<String, SealError> {
        let Some(body) = s.strip_prefix(PREFIX) else {
            return Ok(s.to_string());
        };
        let blob = STANDARD
            .decode(body.trim())
            .map_err(|_| SealError::Malformed)?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let pt = self
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: AAD })
            .map_err(|_| SealError::WrongKey)?;
        String::from_utf8(pt).map_err(|_| SealError::Malformed)
    }

    pub fn is_sealed(s: &str) -> bool {
        s.starts_with(PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fresh_nonce_each_time() {
        let s = Sealer::from_key([7; 32]);
        let a = s.seal("hunter2");
        let b = s.seal("hunter2");
        assert!(Sealer::is_sealed(&a) && a.starts_with("$gantry-sealed$v1$"));
        assert_ne!(a, b, "nonces must differ");
        assert!(!a.contains("hunter2"));
        assert_eq!(s.unseal(&a).unwrap(), "hunter2");
        assert_eq!(s.unseal(&b).unwrap(), "hunter2");
        assert_eq!(s.unseal(&s.seal("")).unwrap(), "");
        assert_eq!(s.unseal(&s.seal("ünïcødé ✓")).unwrap(), "ünïcødé ✓");
    }

    #[test]
    fn plaintext_passes_through() {
        let s = Sealer::from_key([1; 32]);
        assert!(!Sealer::is_sealed("my-key"));
        assert_eq!(s.unseal("my-key").unwrap(), "my-key");
    }

    #[test]
    fn other_key_tampering_and_garbage_fail_without_echoing() {
        let a = Sealer::from_key([1; 32]);
        let b = Sealer::from_key([2; 32]);
        let sealed = a.seal("top-secret");
        assert_eq!(b.unseal(&sealed), Err(SealError::WrongKey));
        let mut raw = STANDARD.decode(&sealed[PREFIX.len()..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            a.unseal(&format!("{PREFIX}{}", STANDARD.encode(raw))),
            Err(SealError::WrongKey)
        );
        assert_eq!(
            a.unseal(&format!("{PREFIX}!!notbase64")),
            Err(SealError::Malformed)
        );
        assert_eq!(
            a.unseal(&format!("{PREFIX}AAAA")),
            Err(SealError::Malformed)
        );
        assert!(!SealError::WrongKey.to_string().contains("top-secret"));
        assert_eq!(format!("{a:?}"), "Sealer { .. }");
    }
}
