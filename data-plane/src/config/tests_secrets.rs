//! TLS certificate secrets, with certificates made by openssl at test time.

use super::*;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{TlsCertificate, secret};
use std::path::PathBuf;
use std::process::Command;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "gantry-config-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (cert PEM, key PEM) for CN=a.example.com; `ec` for an ECDSA P-256 key.
fn make_cert(tag: &str, ec: bool) -> (String, String) {
    let d = TempDir::new(tag);
    let (k, c) = (d.0.join("k.pem"), d.0.join("c.pem"));
    let newkey = if ec {
        vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    } else {
        vec!["-newkey", "rsa:2048"]
    };
    let out = Command::new("openssl")
        .args(["req", "-x509"])
        .args(&newkey)
        .args([
            "-nodes",
            "-subj",
            "/CN=a.example.com",
            "-days",
            "1",
            "-keyout",
        ])
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(c).unwrap(),
        std::fs::read_to_string(k).unwrap(),
    )
}

fn inline(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineString(s.into())),
        ..Default::default()
    })
}

/// The translator's secret.
fn tls_secret(name: &str, cert: &str, key: &str) -> Secret {
    Secret {
        name: name.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(cert),
            private_key: inline(key),
            ..Default::default()
        })),
    }
}

fn compile_secret(s: Secret) -> Result<Compiled, CompileError> {
    let mut set = ResourceSet::default();
    set.secrets.insert(s.name.clone(), s);
    compile(&set)
}

#[test]
fn tls_certificates_compile_and_mismatches_are_refused() {
    let (cert, key) = make_cert("rsa", false);
    let (ec_cert, ec_key) = make_cert("ec", true);

    let c = compile_secret(tls_secret("cert.1", &cert, &key)).unwrap();
    let ck = &c.certificates["cert.1"];
    assert_eq!(ck.cert.len(), 1);
    assert!(ck.keys_match().is_ok());
    let c = compile_secret(tls_secret("cert.1.alt", &ec_cert, &ec_key)).unwrap();
    assert!(c.certificates.contains_key("cert.1.alt"));

    // The chain may carry intermediates; all are kept in order.
    let chain = format!("{cert}{ec_cert}");
    let c = compile_secret(tls_secret("chain", &chain, &key)).unwrap();
    assert_eq!(c.certificates["chain"].cert.len(), 2);

    let cases: Vec<(Secret, &str)> = vec![
        (tls_secret("mismatch", &cert, &ec_key), "does not match"),
        (
            tls_secret("no-cert", "", &key),
            "Failed to load certificate chain",
        ),
        (
            tls_secret(
                "garbage-cert",
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                &key,
            ),
            "certificate chain",
        ),
        (
            tls_secret("no-key", &cert, ""),
            "Failed to load private key",
        ),
        (
            tls_secret("cert-as-key", &cert, &cert),
            "Failed to load private key",
        ),
        (
            Secret {
                name: "missing".into(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: inline(&cert),
                    ..Default::default()
                })),
            },
            "private_key is required",
        ),
        (
            Secret {
                name: "file".into(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: Some(DataSource {
                        specifier: Some(Specifier::Filename("/etc/cert.pem".into())),
                        ..Default::default()
                    }),
                    private_key: inline(&key),
                    ..Default::default()
                })),
            },
            "inline only",
        ),
        (
            Secret {
                name: "password".into(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: inline(&cert),
                    private_key: inline(&key),
                    password: inline("x"),
                    ..Default::default()
                })),
            },
            "unsupported field set: password",
        ),
    ];
    for (s, needle) in cases {
        let name = s.name.clone();
        let e = compile_secret(s).unwrap_err();
        assert_eq!((e.kind, e.name.as_str()), ("Secret", name.as_str()));
        assert!(e.reason.contains(needle), "{e}");
        // Never key material in an error.
        assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
    }
}

#[test]
fn other_secret_types_compile_to_nothing() {
    let s = Secret {
        name: "validation".into(),
        r#type: Some(secret::Type::ValidationContext(Default::default())),
    };
    assert!(compile_secret(s).unwrap().certificates.is_empty());
}
