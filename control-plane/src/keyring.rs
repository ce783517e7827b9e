//! The keyring that encrypts secrets at rest: credential secrets,
//! certificate private keys and plugin secrets are stored encrypted
//! (XChaCha20-Poly1305, random 192-bit nonce per value) under a key that
//! is never in the database, so a copy of the database or of its backups
//! opens nothing.
//!
//! A keyring is text, one key per line: `<id> <base64 of 32 bytes>`; the
//! first line's key encrypts, every line's key decrypts. It comes from a
//! file (`--keyring-file`) or the environment (`GANTRY_KEYRING`, the same
//! text). Rotation: put a new first line, then `gantry-cp keyring rotate`
//! re-encrypts every stored value under it; then the old line can go.
//!
//! The database remembers each key id it has seen with a one-way
//! fingerprint, so a replica started with a different key under the same
//! id, or without a key the data needs, refuses to start instead of
//! failing reads later.

use crate::store::{Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Digest;
use sqlx::Row;
use std::path::{Path, PathBuf};

/// Marks an encrypted value: `$gantry-enc$v1$<key id>$<base64>`.
pub const PREFIX: &str = "$gantry-enc$v1$";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Binds ciphertexts to this use (exports are sealed under another key).
const AAD: &[u8] = b"gantry-at-rest-v1";
const ID_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("keyring line {line}: {reason}")]
    Parse { line: usize, reason: String },
    #[error("the keyring holds no key")]
    Empty,
    #[error("reading the keyring {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Says which key, never anything of the value.
    #[error(
        "a stored secret is encrypted with keyring key '{0}', which this keyring does not hold"
    )]
    UnknownKey(String),
    #[error("a stored secret is malformed or was altered")]
    Malformed,
    #[error(
        "keyring key '{0}' is not the key this database was encrypted with (same id, another key)"
    )]
    WrongKey(String),
    #[error(
        "the database's secrets are encrypted with keyring key '{0}', which this keyring does not hold: give every control-plane replica the same keyring (--keyring-file or GANTRY_KEYRING)"
    )]
    MissingKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
    fingerprint: String,
}

/// Never prints a key.
pub struct Keyring {
    /// The first encrypts.
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("ids", &ids).finish()
    }
}

/// Where the keyring comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The keyring's text itself (`GANTRY_KEYRING`).
    Inline(String),
    /// A file; `create` makes one with a fresh key when it is missing
    /// (the zero-setup default, `./gantry.keyring`).
    File { path: PathBuf, create: bool },
}

impl Keyring {
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        let mut keys: Vec<Key> = Vec::new();
        // `;` separates keys as well as newlines, for one-line env values;
        // a comment runs to the end of its line.
        let entries = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim_start().starts_with('#'))
            .flat_map(|(i, l)| l.split(';').map(move |e| (i, e)));
        for (i, line) in entries {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let err = |reason: &str| KeyringError::Parse {
                line: i + 1,
                reason: reason.into(),
            };
            let mut parts = line.split_whitespace();
            let (Some(id), Some(b64), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(err("expected `<id> <base64 key>`"));
            };
            if id.len() > ID_MAX
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err("the id must be 1 to 64 letters, digits, '-' or '_'"));
            }
            let bytes = STANDARD
                .decode(b64)
                .map_err(|_| err("the key is not base64"))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| err("the key must be 32 bytes"))?;
            if keys.iter().any(|k| k.id == id) {
                return Err(err("the id is used twice"));
            }
            keys.push(Key {
                id: id.to_string(),
                cipher: XChaCha20Poly1305::new(&key.into()),
                fingerprint: fingerprint(&key),
            });
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring { keys })
    }

    pub fn load(source: &Source) -> Result<Keyring, KeyringError> {
        match source {
            Source::Inline(text) => Keyring::parse(text),
            Source::File { path, create } => {
                let io = |source| KeyringError::Io {
                    path: path.clone(),
                    source,
                };
                if *create && !path.exists() {
                    write_new(path).map_err(io)?;
                    tracing::info!(path = %path.display(), "created a keyring for secrets at rest; every control-plane replica on this database needs this file");
                }
                Keyring::parse(&std::fs::read_to_string(path).map_err(io)?)
            }
        }
    }

    /// A fresh keyring line: a random id and key.
    pub fn new_line() -> String {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let id: [u8; 4] = rand::random();
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        format!("k{hex} {}", STANDARD.encode(&key[..]))
    }

    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    pub fn is_encrypted(s: &str) -> bool {
        s.starts_with(PREFIX)
    }

    /// The id of the key a value is encrypted with.
    pub fn key_id(s: &str) -> Option<&str> {
        s.strip_prefix(PREFIX)?.split_once('$').map(|(id, _)| id)
    }

    pub fn encrypt(&self, plaintext: &str) -> String {
        let k = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption fails only past 256 GiB; the empty body then fails
        // loudly on decryption rather than store the plaintext.
        let ct = k
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
        format!("{PREFIX}{}${}", k.id, STANDARD.encode(blob))
    }

    pub fn decrypt(&self, s: &str) -> Result<String, KeyringError> {
        let body = s.strip_prefix(PREFIX).ok_or(KeyringError::Malformed)?;
        let (id, b64) = body.split_once('$').ok_or(KeyringError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| KeyringError::UnknownKey(id.to_string()))?;
        let blob = STANDARD.decode(b64).map_err(|_| KeyringError::Malformed)?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(KeyringError::Malformed);
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| KeyringError::Malformed)?;
        let pt = key
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: AAD })
            .map_err(|_| KeyringError::Malformed)?;
        String::from_utf8(pt).map_err(|_| KeyringError::Malformed)
    }

    /// Records this keyring's ids in the database and checks it against
    /// what the database already knows: a key under a known id must be the
    /// same key, and every key the stored secrets use must be held.
    pub async fn register(&self, store: &Store) -> Result<(), KeyringError> {
        for k in &self.keys {
            sqlx::query(
                "INSERT INTO keyring_keys (id, fingerprint) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&k.id)
            .bind(&k.fingerprint)
            .execute(store.pool())
            .await
            .map_err(StoreError::from)?;
        }
        let rows = sqlx::query("SELECT id, fingerprint FROM keyring_keys")
            .fetch_all(store.pool())
            .await
            .map_err(StoreError::from)?;
        for r in rows {
            let id: String = r.try_get(0).map_err(StoreError::from)?;
            let fp: String = r.try_get(1).map_err(StoreError::from)?;
            match self.keys.iter().find(|k| k.id == id) {
                Some(k) if k.fingerprint != fp => return Err(KeyringError::WrongKey(id)),
                Some(_) => {}
                // Another replica's key (or one not yet rotated away):
                // writing beside it would leave secrets one of the two
                // cannot read.
                None => return Err(KeyringError::MissingKey(id)),
            }
        }
        Ok(())
    }
}

/// What a rotation did.
#[derive(Debug, Default)]
pub struct Rotated {
    /// Secret values now under the primary key that were under another.
    pub values: usize,
    /// Entity versions rewritten (history included).
    pub versions: usize,
    /// Key ids the database no longer needs.
    pub retired: Vec<String>,
}

impl Keyring {
    /// Forgets every key id but the primary's (after a rotation has moved
    /// every secret under it), so the other lines can leave the keyring.
    pub async fn retire_all_but_primary(&self, store: &Store) -> Result<Vec<String>, KeyringError> {
        let mut retired = Vec::new();
        let known = sqlx::query("SELECT id FROM keyring_keys")
            .fetch_all(store.pool())
            .await
            .map_err(StoreError::from)?;
        for r in known {
            let id: String = r.try_get(0).map_err(StoreError::from)?;
            if id != self.primary_id() {
                sqlx::query("DELETE FROM keyring_keys WHERE id = $1")
                    .bind(&id)
                    .execute(store.pool())
                    .await
                    .map_err(StoreError::from)?;
                retired.push(id);
            }
        }
        Ok(retired)
    }
}

/// One-way: names a key without revealing it.
fn fingerprint(key: &[u8; 32]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"gantry keyring fingerprint v1");
    h.update(key);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a keyring file readable by its owner only.
fn write_new(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(
        f,
        "# Gantry keyring: `<id> <base64 key>` per line. The first encrypts, all decrypt.\n# Every control-plane replica on the same database needs the same keyring.\n{}",
        Keyring::new_line()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_rotation_and_refusals() {
        let old = Keyring::parse(&Keyring::new_line()).unwrap();
        let ct = old.encrypt("hunter2");
        assert!(Keyring::is_encrypted(&ct) && !ct.contains("hunter2"));
        assert_eq!(Keyring::key_id(&ct), Some(old.primary_id()));
        assert_eq!(old.decrypt(&ct).unwrap(), "hunter2");

        // A keyring without the key names the key it lacks.
        let fresh = Keyring::parse(&Keyring::new_line()).unwrap();
        assert!(matches!(
            fresh.decrypt(&ct),
            Err(KeyringError::UnknownKey(id)) if id == old.primary_id()
        ));

        let mut tampered = ct.clone();
        tampered.pop();
        tampered.push('A');
        assert!(old.decrypt(&tampered).is_err());
        assert!(format!("{old:?}").contains("ids"));
    }

    #[test]
    fn two_lines_first_encrypts_both_decrypt() {
        let (a, b) = (Keyring::new_line(), Keyring::new_line());
        let only_a = Keyring::parse(&a).unwrap();
        let both = Keyring::parse(&format!("# comment\n{b}\n{a}\n")).unwrap();
        let under_a = only_a.encrypt("s");
        assert_eq!(both.decrypt(&under_a).unwrap(), "s");
        let under_b = both.encrypt("s");
        assert_ne!(Keyring::key_id(&under_b), Keyring::key_id(&under_a));
        assert!(only_a.decrypt(&under_b).is_err());
        // `;` separates keys for one-line environment values.
        assert_eq!(
            Keyring::parse(&format!("{b};{a}"))
                .unwrap()
                .decrypt(&under_a)
                .unwrap(),
            "s"
        );
    }

    #[test]
    fn a_created_keyring_file_loads_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("gantry-keyring-{}", rand::random::<u64>()));
        let src = Source::File {
            path: path.clone(),
            create: true,
        };
        let a = Keyring::load(&src).unwrap();
        let b = Keyring::load(&src).unwrap();
        assert_eq!(a.primary_id(), b.primary_id(), "created once, then read");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(b.decrypt(&a.encrypt("x")).unwrap(), "x");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn bad_text_is_refused_without_echoing_keys() {
        for bad in [
            "",
            "# only a comment",
            "k1",
            "k1 notbase64!",
            "k1 AAAA",
            "bad id! AAAA",
        ] {
            let e = Keyring::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("AAAA"), "{e}");
        }
        let line = Keyring::new_line();
        assert!(
            Keyring::parse(&format!("{line}\n{line}")).is_err(),
            "duplicate id"
        );
    }
}
