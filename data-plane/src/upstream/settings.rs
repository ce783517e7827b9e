//! What TLS to an upstream is made of: the compiled form of a cluster's
//! `UpstreamTlsContext` (`config::upstream_tls` compiles it), and what the
//! plugins' outbound clients verify against.

use rustls_pki_types::CertificateDer;
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// `UpstreamTlsContext.sni` (None: no SNI unless auto_sni applies).
    pub sni: Option<String>,
    /// `upstream_http_protocol_options.auto_sni`: SNI from the upstream
    /// request's Host (after any host rewrite).
    pub auto_sni: bool,
    /// `auto_san_validation`: with `verify`, the peer must be valid for
    /// the SNI sent.
    pub auto_san_validation: bool,
    /// `UpstreamTlsContext.auto_host_sni`: SNI from the endpoint's hostname.
    pub auto_host_sni: bool,
    pub alpn: Vec<Vec<u8>>,
    /// None: the peer is not verified (Envoy's behaviour without a
    /// validation context).
    pub verify: Option<UpstreamVerify>,
    /// SDS name of the client certificate presented to the upstream.
    pub client_certificate: Option<String>,
}

/// How the upstream's certificate is verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamVerify {
    /// The trusted CA certificates (empty only with `accept_untrusted`).
    pub trusted_ca: Vec<CertificateDer<'static>>,
    /// The peer must be valid for one of these (none: any name).
    pub san: Vec<SanMatch>,
    /// `max_verify_depth`: at most this many intermediates.
    pub max_depth: Option<u32>,
    /// `trust_chain_verification: ACCEPT_UNTRUSTED`: the chain is not
    /// checked (SAN matchers still are).
    pub accept_untrusted: bool,
}

/// A `match_typed_subject_alt_names` entry (exact matches; a DNS name
/// matches certificate wildcards as Envoy's does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SanMatch {
    Dns(String),
    Ip(IpAddr),
}
