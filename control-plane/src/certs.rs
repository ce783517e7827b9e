//! The fleet's xDS certificates (`gantry-cp certs`): a CA, a certificate
//! per node naming its node id, and the xDS server's own certificate.
//!
//! A node certificate names its node id twice where it can: as a DNS SAN
//! (when the id is a valid DNS name) and as the SPIFFE URI SAN
//! `spiffe://<trust-domain>/node/<node-id>`; the xDS server accepts a node
//! id named either way ([`crate::xds::identity`]).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The trust domain when none is given (`--trust-domain`, `--xds-trust-domain`).
pub const DEFAULT_TRUST_DOMAIN: &str = "gantry";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("trust domain {0:?} is not valid: lowercase letters, digits, '.', '-' and '_' only")]
    TrustDomain(String),
    #[error(
        "node id {0:?} cannot be named by a certificate: it must be a DNS name or use only letters, digits, '.', '-' and '_'"
    )]
    NodeId(String),
    #[error("{0:?} is not a host name or IP address")]
    Host(String),
    #[error("at least one --host is needed")]
    NoHost,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        source: rcgen::Error,
    },
}

/// A certificate and its private key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Checks a SPIFFE trust domain name (lowercase, as the SPIFFE ID spec
/// requires, so comparisons need no case folding).
pub fn check_trust_domain(td: &str) -> Result<(), CertError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(CertError::TrustDomain(td.to_string()))
    }
}

/// A node id usable as one SPIFFE path segment as it is (no escaping: the
/// SPIFFE spec allows none).
pub fn is_spiffe_segment(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// A DNS name a certificate may carry as a DNS SAN: labels of letters,
/// digits and inner hyphens, at most 63 bytes each, 253 in all.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `spiffe://<trust-domain>/node/<node-id>`.
pub fn spiffe_id(trust_domain: &str, node_id: &str) -> String {
    format!("spiffe://{trust_domain}/node/{node_id}")
}

fn rc(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |source| CertError::Rcgen { what, source }
}

fn validity(params: &mut CertificateParams, days: u32) {
    // A little back-dating absorbs clock skew between hosts.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(i64::from(days));
}

fn random_serial(params: &mut CertificateParams) {
    let mut serial: [u8; 16] = rand::random();
    // Positive and without a leading zero byte (DER INTEGER rules).
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
}

/// A new CA for the fleet's xDS certificates.
pub fn new_ca(trust_domain: &str, days: u32) -> Result<Issued, CertError> {
    check_trust_domain(trust_domain)?;
    let key = KeyPair::generate().map_err(rc("generating the CA key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Gantry");
    // A distinct name per CA: certificate paths are built by issuer name,
    // so two CAs of one name would make a stranger's certificate look
    // forged (BadSignature) rather than foreign (UnknownIssuer).
    let tag: [u8; 4] = rand::random();
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    dn.push(
        DnType::CommonName,
        format!("Gantry xDS CA ({trust_domain}) {tag}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    random_serial(&mut params);
    let cert = params
        .self_signed(&key)
        .map_err(rc("signing the CA certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn issuer(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Issuer<'static, KeyPair>, CertError> {
    let key = KeyPair::from_pem(ca_key_pem).map_err(rc("reading the CA key"))?;
    Issuer::from_ca_cert_pem(ca_cert_pem, key).map_err(rc("reading the CA certificate"))
}

fn leaf(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    common_name: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    days: u32,
) -> Result<Issued, CertError> {
    let issuer = issuer(ca_cert_pem, ca_key_pem)?;
    let key = KeyPair::generate().map_err(rc("generating a key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Gantry");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    random_serial(&mut params);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rc("signing the certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The SANs naming `node_id`: DNS when it is a DNS name, SPIFFE URI when
/// it is a valid path segment; an id that fits neither is refused.
pub fn node_sans(node_id: &str, trust_domain: &str) -> Result<Vec<SanType>, CertError> {
    check_trust_domain(trust_domain)?;
    let mut sans = Vec::new();
    if is_dns_name(node_id) {
        let name = node_id
            .to_string()
            .try_into()
            .map_err(|_| CertError::NodeId(node_id.to_string()))?;
        sans.push(SanType::DnsName(name));
    }
    if is_spiffe_segment(node_id) {
        let uri = spiffe_id(trust_domain, node_id)
            .try_into()
            .map_err(|_| CertError::NodeId(node_id.to_string()))?;
        sans.push(SanType::URI(uri));
    }
    if sans.is_empty() {
        return Err(CertError::NodeId(node_id.to_string()));
    }
    Ok(sans)
}

/// A client certificate for the node `node_id`, signed by the CA.
pub fn issue_node(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    node_id: &str,
    trust_domain: &str,
    days: u32,
) -> Result<Issued, CertError> {
    let sans = node_sans(node_id, trust_domain)?;
    leaf(
        ca_cert_pem,
        ca_key_pem,
        node_id,
        sans,
        ExtendedKeyUsagePurpose::ClientAuth,
        days,
    )
}

/// The xDS server's certificate for the names and addresses nodes dial.
pub fn issue_server(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    hosts: &[String],
    days: u32,
) -> Result<Issued, CertError> {
    let first = hosts.first().ok_or(CertError::NoHost)?;
    let mut sans = Vec::new();
    for h in hosts {
        if let Ok(ip) = h.parse::<std::net::IpAddr>() {
            sans.push(SanType::IpAddress(ip));
        } else if is_dns_name(h) {
            let name = h
                .to_string()
                .try_into()
                .map_err(|_| CertError::Host(h.clone()))?;
            sans.push(SanType::DnsName(name));
        } else {
            return Err(CertError::Host(h.clone()));
        }
    }
    leaf(
        ca_cert_pem,
        ca_key_pem,
        first,
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        days,
    )
}

/// Reads a PEM file.
pub fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `<dir>/<name>.pem` and `<dir>/<name>-key.pem` (the key readable
/// by its owner only), each by rename, so a process reloading them never
/// reads half a file. Returns the two paths.
pub fn write_pair(
    dir: &Path,
    name: &str,
    issued: &Issued,
) -> Result<(PathBuf, PathBuf), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    // The key first: a reloader that sees the new certificate finds its key.
    write_atomic(&key, issued.key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert, issued.cert_pem.as_bytes(), 0o644)?;
    Ok((cert, key))
}

/// Writes a file by rename with the given mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn sans_of(pem: &str) -> Vec<String> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = p.parse_x509().unwrap();
        let mut out = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for n in &ext.value.general_names {
                match n {
                    GeneralName::DNSName(d) => out.push(format!("dns:{d}")),
                    GeneralName::URI(u) => out.push(format!("uri:{u}")),
                    GeneralName::IPAddress(ip) => out.push(format!("ip:{ip:?}")),
                    _ => {}
                }
            }
        }
        out
    }

    #[test]
    fn a_node_certificate_names_its_node_id() {
        let ca = new_ca("example.org", 10).unwrap();
        let n = issue_node(&ca.cert_pem, &ca.key_pem, "edge-1", "example.org", 10).unwrap();
        assert_eq!(
            sans_of(&n.cert_pem),
            ["dns:edge-1", "uri:spiffe://example.org/node/edge-1"]
        );
        // Not a DNS name: the SPIFFE URI alone.
        let n = issue_node(&ca.cert_pem, &ca.key_pem, "edge_1", "example.org", 10).unwrap();
        assert_eq!(
            sans_of(&n.cert_pem),
            ["uri:spiffe://example.org/node/edge_1"]
        );
        // Neither: refused.
        assert!(matches!(
            issue_node(&ca.cert_pem, &ca.key_pem, "a/b", "example.org", 10),
            Err(CertError::NodeId(_))
        ));
        assert!(matches!(
            new_ca("Example.org", 1),
            Err(CertError::TrustDomain(_))
        ));
    }

    #[test]
    fn a_server_certificate_names_hosts_and_addresses() {
        let ca = new_ca(DEFAULT_TRUST_DOMAIN, 10).unwrap();
        let s = issue_server(
            &ca.cert_pem,
            &ca.key_pem,
            &["gantry-cp".into(), "127.0.0.1".into()],
            10,
        )
        .unwrap();
        assert_eq!(sans_of(&s.cert_pem), ["dns:gantry-cp", "ip:[127, 0, 0, 1]"]);
        assert!(matches!(
            issue_server(&ca.cert_pem, &ca.key_pem, &[], 10),
            Err(CertError::NoHost)
        ));
    }
}
