//! A cluster's `UpstreamTlsContext`: SNI, ALPN, peer verification (an
//! inline `CertificateValidationContext`: trusted CAs, SAN matchers,
//! verify depth) and a client certificate from SDS.

use super::routes::data_source;
use super::{fields, reject_rest, type_name, unpack};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, UpstreamTlsContext, certificate_validation_context,
    common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use prost::Name;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub use crate::upstream::{SanMatch, UpstreamTls, UpstreamVerify};

pub(super) fn compile(
    ts: &TransportSocket,
    auto_sni: bool,
    auto_san_validation: bool,
) -> Result<Option<UpstreamTls>, String> {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        return match ts.name.as_str() {
            "envoy.transport_sockets.raw_buffer" | "raw_buffer" => Ok(None),
            other => Err(format!(
                "transport_socket {other:?} without a typed_config is not supported"
            )),
        };
    };
    match type_name(any) {
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" => return Ok(None),
        t if t == UpstreamTlsContext::full_name() => {}
        other => return Err(format!("transport_socket {other:?} is not supported")),
    }
    let mut ctx: UpstreamTlsContext = unpack(any, "transport_socket")?;
    let sni = std::mem::take(&mut ctx.sni);
    let auto_host_sni = std::mem::take(&mut ctx.auto_host_sni);
    let mut alpn = Vec::new();
    let mut verify = None;
    let mut client_certificate = None;
    if let Some(mut common) = ctx.common_tls_context.take() {
        alpn = std::mem::take(&mut common.alpn_protocols)
            .into_iter()
            .map(String::into_bytes)
            .collect();
        match common.validation_context_type.take() {
            None => {}
            Some(ValidationContextType::ValidationContext(v)) => {
                verify = validation(v).map_err(|e| {
                    format!("transport_socket.common_tls_context.validation_context: {e}")
                })?;
            }
            Some(_) => {
                return Err("transport_socket.common_tls_context: only an inline \
                            validation_context is supported"
                    .into());
            }
        }
        let sds = std::mem::take(&mut common.tls_certificate_sds_secret_configs);
        match sds.as_slice() {
            [] => {}
            [one] if !one.name.is_empty() => client_certificate = Some(one.name.clone()),
            _ => {
                return Err("transport_socket.common_tls_context: exactly one named \
                            tls_certificate_sds_secret_config is supported"
                    .into());
            }
        }
        reject_rest(
            &common,
            fields::COMMON_TLS,
            "transport_socket.common_tls_context",
        )?;
    }
    // Session resumption tuning only.
    ctx.max_session_keys = None;
    reject_rest(
        &ctx,
        fields::UPSTREAM_TLS,
        "transport_socket (UpstreamTlsContext)",
    )?;
    Ok(Some(UpstreamTls {
        sni: (!sni.is_empty()).then_some(sni),
        auto_sni,
        auto_san_validation,
        auto_host_sni,
        alpn,
        verify,
        client_certificate,
    }))
}

/// Envoy's reading of a validation context: no CA and no SAN matcher
/// verifies nothing; SAN matchers without a CA are refused as insecure.
fn validation(mut v: CertificateValidationContext) -> Result<Option<UpstreamVerify>, String> {
    use certificate_validation_context::TrustChainVerification;
    let accept_untrusted = std::mem::take(&mut v.trust_chain_verification)
        == TrustChainVerification::AcceptUntrusted as i32;
    let trusted_ca = match v.trusted_ca.take() {
        None => Vec::new(),
        Some(ds) => trusted_ca(&ds)?,
    };
    let mut san = Vec::new();
    for m in std::mem::take(&mut v.match_typed_subject_alt_names) {
        let exact = match m.matcher.as_ref().and_then(|s| s.match_pattern.as_ref()) {
            Some(MatchPattern::Exact(e)) if !m.matcher.as_ref().is_some_and(|s| s.ignore_case) => {
                e.clone()
            }
            _ => {
                return Err(
                    "match_typed_subject_alt_names: only case-sensitive exact matchers are supported"
                        .into(),
                );
            }
        };
        san.push(match SanType::try_from(m.san_type) {
            Ok(SanType::Dns) => {
                rustls_pki_types::ServerName::try_from(exact.as_str()).map_err(|_| {
                    format!("match_typed_subject_alt_names: {exact:?} is not a DNS name")
                })?;
                SanMatch::Dns(exact)
            }
            Ok(SanType::IpAddress) => SanMatch::Ip(exact.parse().map_err(|_| {
                format!("match_typed_subject_alt_names: {exact:?} is not an IP address")
            })?),
            _ => {
                return Err(
                    "match_typed_subject_alt_names: only DNS and IP_ADDRESS are supported".into(),
                );
            }
        });
    }
    let max_depth = v.max_verify_depth.take().map(|d| d.value);
    reject_rest(&v, fields::CERT_VALIDATION, "validation_context")?;
    if trusted_ca.is_empty() && !accept_untrusted {
        if !san.is_empty() {
            return Err(
                "SAN-based verification of peer certificates without trusted CA is insecure and not allowed"
                    .into(),
            );
        }
        return Ok(None);
    }
    Ok(Some(UpstreamVerify {
        trusted_ca,
        san,
        max_depth,
        accept_untrusted,
    }))
}

/// The CA bundle: inline PEM, or a file read now (Envoy reads it when the
/// config is loaded too, and refuses the config if it cannot).
fn trusted_ca(ds: &DataSource) -> Result<Vec<CertificateDer<'static>>, String> {
    let (pem, from) = match &ds.specifier {
        Some(data_source::Specifier::Filename(path)) => (
            std::fs::read(path)
                .map_err(|e| format!("Failed to load trusted CA certificates from {path}: {e}"))?
                .into(),
            path.clone(),
        ),
        _ => (data_source(ds, "trusted_ca")?, "<inline>".to_string()),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("Failed to load trusted CA certificates from {from}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "Failed to load trusted CA certificates from {from}: no certificate found"
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    let (_, bad) = store.add_parsable_certificates(certs.iter().cloned());
    if bad > 0 && store.is_empty() {
        return Err(format!(
            "Failed to load trusted CA certificates from {from}: no usable certificate"
        ));
    }
    Ok(certs)
}
