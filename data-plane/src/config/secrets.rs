//! SDS: TLS certificate secrets (inline PEM chain and key) into rustls
//! certified keys (ring provider). Errors never quote key material.

use super::routes::data_source;
use super::{fields, reject_rest};
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS certificate secret compiles to a certified key; other secret types
/// (validation contexts, session ticket keys, generic secrets) are not used
/// by anything this proxy supports and compile to nothing.
pub(crate) fn compile(s: &Secret) -> Result<Option<CertifiedKey>, String> {
    let Some(secret::Type::TlsCertificate(tc)) = &s.r#type else {
        return Ok(None);
    };
    let mut rest = tc.clone();
    let chain = rest
        .certificate_chain
        .take()
        .ok_or("tls_certificate.certificate_chain is required")?;
    let key = rest
        .private_key
        .take()
        .ok_or("tls_certificate.private_key is required")?;
    let ocsp = rest.ocsp_staple.take();
    reject_rest(&rest, fields::TLS_CERTIFICATE, "tls_certificate")?;

    let chain = data_source(&chain, "certificate_chain")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("Failed to load certificate chain from <inline>: {e}"))?;
    if certs.is_empty() {
        return Err("Failed to load certificate chain from <inline>: no certificate found".into());
    }
    // A key the node reads from its own environment (a vault reference),
    // checked without that environment (admission): the chain is checked,
    // the key stands in.
    if gantry_shared::vault::is_deferred()
        && matches!(key.specifier, Some(Specifier::EnvironmentVariable(_)))
    {
        return Ok(Some(CertifiedKey::new(certs, stand_in_key()?)));
    }
    let key = data_source(&key, "private_key")?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        format!(
            "Failed to load private key from <inline>: {}",
            pem_error(&e)
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("Failed to load private key from <inline>: {e}"))?;
    let mut ck = CertifiedKey::new(certs, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err("the private key does not match the certificate's public key".into());
        }
        Err(e) => return Err(format!("invalid certificate: {e}")),
    }
    if let Some(o) = ocsp {
        let v = data_source(&o, "ocsp_staple")?;
        if !v.is_empty() {
            ck.ocsp = Some(v.to_vec());
        }
    }
    Ok(Some(ck))
}

/// The PEM error without echoing input.
fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::NoItemsFound => "no private key found".into(),
        Error::MissingSectionEnd { .. } => "a PEM section has no end marker".into(),
        Error::IllegalSectionStart { .. } => "a PEM section start is malformed".into(),
        Error::Base64Decode(_) => "invalid base64 in a PEM section".into(),
        _ => "invalid PEM".into(),
    }
}

/// A fresh P-256 signing key, standing in for one a node will read.
fn stand_in_key() -> Result<std::sync::Arc<dyn rustls::sign::SigningKey>, String> {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| "could not make a stand-in key".to_string())?;
    let der = PrivateKeyDer::Pkcs8(pkcs8.as_ref().to_vec().into());
    rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| e.to_string())
}
