//! What the `ca_certificates` schema needs to know about a PEM
//! certificate: Kong's checks (one certificate, not expired, a CA) and its
//! `cert_digest`.

use sha2::{Digest, Sha256};
use x509_parser::pem::Pem;

const BEGIN_CERT: &str = "-----BEGIN CERTIFICATE-----";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("invalid certificate: could not parse PEM certificate")]
    Pem,
    #[error("invalid certificate: {0}")]
    X509(String),
}

/// The facts of the first certificate in a PEM document.
#[derive(Debug)]
pub struct CertFacts {
    /// `-----BEGIN CERTIFICATE-----` blocks in the document.
    pub count: usize,
    /// Unix seconds.
    pub not_after: i64,
    /// The basic constraints extension says `CA:TRUE`.
    pub ca: bool,
    /// Lowercase hex SHA-256 of the certificate's DER, as Kong's
    /// `cert_digest` (OpenSSL's `X509_digest`).
    pub digest: String,
}

/// Parses the first `CERTIFICATE` block of `pem`, skipping other blocks as
/// OpenSSL's `PEM_read_bio_X509` (what Kong uses) does.
pub fn inspect(pem: &str) -> Result<CertFacts, CertError> {
    let block = Pem::iter_from_buffer(pem.as_bytes())
        .map_while(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .ok_or(CertError::Pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
        .map_err(|e| CertError::X509(e.to_string()))?;
    // A malformed or duplicated extension leaves the flag unproven: not a CA.
    let ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let digest = Sha256::digest(&block.contents)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(CertFacts {
        count: pem.matches(BEGIN_CERT).count(),
        not_after: cert.validity().not_after.timestamp(),
        ca,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = include_str!("../../tests/fixtures/ca.pem");
    const LEAF: &str = include_str!("../../tests/fixtures/leaf.pem");
    const EXPIRED: &str = include_str!("../../tests/fixtures/expired-ca.pem");

    #[test]
    fn facts_of_fixtures() {
        let ca = inspect(CA).unwrap();
        assert!(ca.ca);
        assert_eq!(ca.count, 1);
        assert!(ca.not_after > chrono::Utc::now().timestamp());
        assert_eq!(ca.digest.len(), 64);
        assert!(
            ca.digest
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert!(!inspect(LEAF).unwrap().ca);
        let exp = inspect(EXPIRED).unwrap();
        assert!(exp.ca);
        // 2021-01-01T00:00:00Z
        assert_eq!(exp.not_after, 1_609_459_200);
        assert_eq!(inspect(&format!("{CA}{LEAF}")).unwrap().count, 2);
    }

    #[test]
    fn digest_is_over_der_not_pem_text() {
        // Line endings and surrounding text do not change the digest.
        let crlf = CA.replace('\n', "\r\n");
        let noisy = format!("subject=whatever\n{CA}\n\n");
        let d = inspect(CA).unwrap().digest;
        assert_eq!(inspect(&crlf).unwrap().digest, d);
        assert_eq!(inspect(&noisy).unwrap().digest, d);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(inspect("nope").unwrap_err(), CertError::Pem);
        let bad_der = "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(inspect(bad_der), Err(CertError::X509(_))));
        let key_only = "-----BEGIN PRIVATE KEY-----\nMIIBAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(inspect(key_only).unwrap_err(), CertError::Pem);
    }
}
