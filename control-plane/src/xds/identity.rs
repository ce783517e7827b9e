//! Node identity: which node ids a client certificate names.
//!
//! A node may stream as `node.id` only if its certificate names that id,
//! as a DNS SAN equal to it or as the URI SAN
//! `spiffe://<trust-domain>/node/<node-id>` in the configured trust domain.
//! The subject CN never counts (it is not a name a CA constrains).

use serde::Serialize;
use x509_parser::prelude::*;

/// What the server knows about a connection's client certificate, parsed
/// once per connection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerIdentity {
    /// DNS SANs, as written.
    pub dns: Vec<String>,
    /// URI SANs, as written.
    pub uris: Vec<String>,
    /// Serial number, hex (for `/fleet` and the logs).
    pub serial: String,
    /// Expiry (Unix seconds).
    pub not_after: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("the client certificate cannot be parsed: {0}")]
pub struct IdentityError(String);

impl PeerIdentity {
    /// Reads the names of a DER certificate (the chain's first).
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError(e.to_string()))?;
        let mut id = PeerIdentity {
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_after: cert.validity().not_after.timestamp(),
            ..Default::default()
        };
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError(e.to_string()))?;
        for n in sans.iter().flat_map(|s| s.value.general_names.iter()) {
            match n {
                GeneralName::DNSName(d) => id.dns.push(d.to_string()),
                GeneralName::URI(u) => id.uris.push(u.to_string()),
                _ => {}
            }
        }
        Ok(id)
    }

    /// Whether this certificate names `node_id` in `trust_domain`.
    pub fn names(&self, node_id: &str, trust_domain: &str) -> bool {
        if node_id.is_empty() {
            return false;
        }
        // Exact: node ids are case-sensitive, and a wildcard SAN names no
        // node in particular.
        if self.dns.iter().any(|d| d == node_id && !d.contains('*')) {
            return true;
        }
        self.uris
            .iter()
            .any(|u| spiffe_node(u, trust_domain) == Some(node_id))
    }

    /// Every name, for a refusal's log line.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self
            .dns
            .iter()
            .map(|d| format!("DNS:{d}"))
            .chain(self.uris.iter().map(|u| format!("URI:{u}")))
            .collect();
        if names.is_empty() {
            "no DNS or URI names".to_string()
        } else {
            names.join(", ")
        }
    }
}

/// The node id of a `spiffe://<trust_domain>/node/<id>` URI, if it is one
/// in that trust domain.
fn spiffe_node<'a>(uri: &'a str, trust_domain: &str) -> Option<&'a str> {
    let rest = uri
        .get(..9)
        .filter(|s| s.eq_ignore_ascii_case("spiffe://"))
        .map(|_| &uri[9..])?;
    let (td, path) = rest.split_once('/')?;
    if !td.eq_ignore_ascii_case(trust_domain) {
        return None;
    }
    let id = path.strip_prefix("node/")?;
    // One segment, no query or fragment (SPIFFE IDs carry neither).
    if id.is_empty() || id.contains(['/', '?', '#', '%']) {
        return None;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(dns: &[&str], uris: &[&str]) -> PeerIdentity {
        PeerIdentity {
            dns: dns.iter().map(|s| s.to_string()).collect(),
            uris: uris.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_id_is_named_by_dns_or_spiffe_san() {
        let c = id(&["edge-1"], &["spiffe://gantry/node/edge_2"]);
        assert!(c.names("edge-1", "gantry"));
        assert!(c.names("edge_2", "gantry"));
        assert!(!c.names("edge-3", "gantry"));
        assert!(!c.names("EDGE-1", "gantry"));
        assert!(!c.names("", "gantry"));
        // Another trust domain's URI names nothing here.
        assert!(!c.names("edge_2", "example.org"));
        assert!(id(&[], &["SPIFFE://Gantry/node/x"]).names("x", "gantry"));
        for bad in [
            "spiffe://gantry/node/x/y",
            "spiffe://gantry/nodes/x",
            "spiffe://gantry/node/x?y",
            "spiffe://gantry/node/",
            "https://gantry/node/x",
            "spiffe://gantry.evil/node/x",
        ] {
            assert!(!id(&[], &[bad]).names("x", "gantry"), "{bad}");
        }
        assert!(!id(&["*.gantry"], &[]).names("*.gantry", "gantry"));
    }
}
