//! Admin tokens: generated as 32 random bytes (base64url), stored only as
//! their SHA-256. A plain digest suffices because generated tokens carry
//! 256 bits of entropy; there is nothing to brute-force. The hex digest is
//! also the indexed lookup key, and the final comparison is constant time.

use base64::Engine;
use sha2::{Digest, Sha256};

/// A fresh token.
pub fn generate() -> String {
    use chacha20poly1305::aead::OsRng;
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a token: lowercase hex SHA-256.
pub fn digest(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in d {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_long_distinct_and_url_safe() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(digest(&a).len(), 64);
        assert!(constant_time_eq(
            digest(&a).as_bytes(),
            digest(&a).as_bytes()
        ));
        assert!(!constant_time_eq(
            digest(&a).as_bytes(),
            digest(&b).as_bytes()
        ));
    }
}
