//! SDS: one TLS certificate secret per certificate that has SNIs (plus
//! one for its alternate pair), and one per certificate a TLS service
//! presents upstream as its client certificate. Never logged: `Secret`s
//! carry private keys.

use super::model::Model;
use super::secret_name;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, TlsCertificate, secret,
};
use std::collections::BTreeSet;

pub fn build(m: &Model) -> Vec<Secret> {
    let mut out = Vec::new();
    // Only certificates some cluster uses: a private key is not handed to
    // proxies that have no use for it.
    let clients: BTreeSet<&str> = m
        .services
        .values()
        .filter(|s| s.tls())
        .filter_map(|s| m.client_certificate_of(s))
        .map(|c| c.id.as_str())
        .collect();
    for c in m.certificates.values() {
        let serves = !c.snis.is_empty();
        if serves || clients.contains(c.id.as_str()) {
            out.push(tls_secret(secret_name(&c.id, false), &c.cert, &c.key));
        }
        // The alternate pair serves downstream handshakes only.
        if serves && let Some((cert, key)) = &c.alt {
            out.push(tls_secret(secret_name(&c.id, true), cert, key));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn inline(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineString(s.to_string())),
        ..Default::default()
    })
}

/// A private key, or the environment variable a vault reference names:
/// the node reads it from its own environment (Envoy's
/// `environment_variable` data source), so the key never passes here.
fn private_key(key: &str) -> Option<DataSource> {
    match gantry_shared::vault::Reference::parse(key) {
        Ok(r) if gantry_shared::vault::is_reference(key) => Some(DataSource {
            specifier: Some(Specifier::EnvironmentVariable(r.env)),
            ..Default::default()
        }),
        _ => inline(key),
    }
}

fn tls_secret(name: String, cert: &str, key: &str) -> Secret {
    Secret {
        name,
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(cert),
            private_key: private_key(key),
            ..Default::default()
        })),
    }
}
