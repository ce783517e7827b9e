//! TLS to upstreams, as Envoy's `UpstreamTlsContext`: SNI and ALPN sent;
//! the peer verified against the cluster's trusted CAs and SAN matchers
//! when it has a validation context, and not at all otherwise (Envoy does
//! not verify either unless told to; Kong's `tls_verify` defaults to off
//! too); a client certificate presented when the cluster names one.

use super::{SanMatch, UpstreamVerify};
use crate::body::BoxError;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// How the peer's certificate is judged.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    /// None: anything is accepted (no validation context).
    check: Option<Check>,
}

#[derive(Debug)]
struct Check {
    roots: Option<RootCertStore>,
    /// The names the peer must be valid for, any one of them.
    names: Vec<ServerName<'static>>,
    /// `auto_san_validation`: the peer must be valid for the SNI sent.
    sni_must_match: bool,
    max_depth: Option<u32>,
}

impl Check {
    fn new(v: &UpstreamVerify, auto_san_validation: bool) -> Check {
        let roots = (!v.accept_untrusted).then(|| {
            let mut r = RootCertStore::empty();
            r.add_parsable_certificates(v.trusted_ca.iter().cloned());
            r
        });
        let names = v
            .san
            .iter()
            .filter_map(|m| match m {
                SanMatch::Dns(d) => ServerName::try_from(d.clone()).ok(),
                SanMatch::Ip(ip) => Some(ServerName::IpAddress((*ip).into())),
            })
            .collect();
        Check {
            roots,
            names,
            sni_must_match: auto_san_validation && v.san.is_empty(),
            max_depth: v.max_depth,
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(check) = &self.check else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        if let Some(roots) = &check.roots {
            if let Some(depth) = check.max_depth
                && intermediates.len() > depth as usize
            {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(DepthExceeded(
                        depth,
                    )))),
                ));
            }
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        if check.sni_must_match {
            rustls::client::verify_server_name(&cert, server_name)?;
        } else if !check.names.is_empty() {
            let mut last = None;
            for n in &check.names {
                match rustls::client::verify_server_name(&cert, n) {
                    Ok(()) => return Ok(ServerCertVerified::assertion()),
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct DepthExceeded(u32);

impl std::fmt::Display for DepthExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "certificate chain longer than max_verify_depth {}",
            self.0
        )
    }
}

impl std::error::Error for DepthExceeded {}

/// Presents the cluster's client certificate whenever the upstream asks.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// What a cluster's TLS connector is built from.
pub struct TlsSettings<'a> {
    pub sni: Option<&'a str>,
    pub alpn: Vec<Vec<u8>>,
    pub verify: Option<&'a UpstreamVerify>,
    pub auto_san_validation: bool,
    pub client_cert: Option<Arc<CertifiedKey>>,
}

#[derive(Clone)]
pub struct TlsConnector {
    http: HttpConnector,
    tls: tokio_rustls::TlsConnector,
    sni: Option<ServerName<'static>>,
}

impl TlsConnector {
    pub fn new(http: HttpConnector, t: TlsSettings<'_>) -> Result<TlsConnector, BoxError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Verifier {
            provider: provider.clone(),
            check: t.verify.map(|v| Check::new(v, t.auto_san_validation)),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut cfg = match t.client_cert {
            Some(ck) => builder.with_client_cert_resolver(Arc::new(ClientCert(ck))),
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = t.alpn;
        let sni = t
            .sni
            .map(|s| ServerName::try_from(s.to_string()))
            .transpose()?;
        Ok(TlsConnector {
            http,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            sni,
        })
    }
}

pub struct TlsConn(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        let (_, session) = self.0.inner().get_ref();
        if session.alpn_protocol() == Some(b"h2") {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        }
    }
}

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TlsConn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let tls = self.tls.clone();
        let sni = self.sni.clone();
        Box::pin(async move {
            // The TCP connection goes to the endpoint; the URI carries it.
            let plain_uri: Uri = format!(
                "http://{}",
                uri.authority().map(|a| a.as_str()).unwrap_or_default()
            )
            .parse()?;
            let tcp = tower::Service::call(&mut http, plain_uri)
                .await?
                .into_inner();
            let name = match sni {
                Some(n) => n,
                None => ServerName::try_from(uri.host().unwrap_or_default().to_string())?,
            };
            let stream = tls.connect(name, tcp).await?;
            Ok(TlsConn(TokioIo::new(stream)))
        })
    }
}
