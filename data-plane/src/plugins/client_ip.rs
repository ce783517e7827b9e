//! The client's address: the TCP peer, or, when the peer is a trusted
//! proxy (Kong's `trusted_ips`), the address it forwarded in
//! `real_ip_header`. A header from any other peer changes nothing.

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct ClientIp {
    trusted: Vec<IpNet>,
    header: Option<HeaderName>,
}

impl ClientIp {
    pub fn compile(trusted: &[String], header: &str) -> Result<ClientIp, String> {
        let trusted = trusted
            .iter()
            .map(|t| {
                t.parse::<IpNet>()
                    .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("trusted_ips: {t:?} is not an IP address or CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let header = match header {
            "" => None,
            h => Some(
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("real_ip_header: {h:?} is not a header name"))?,
            ),
        };
        Ok(ClientIp { trusted, header })
    }

    /// As nginx's realip with `real_ip_recursive off` (Kong's default): the
    /// last address of the header, when the peer is trusted.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusted.iter().any(|n| n.contains(&peer)) {
            return peer;
        }
        let Some(h) = &self.header else {
            return peer;
        };
        headers
            .get_all(h)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|a| a.trim().parse::<IpAddr>().ok())
            .map(canonical)
            .unwrap_or(peer)
    }
}

/// IPv4-mapped IPv6 peers compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn only_trusted_peers_forward_the_client_address() {
        let c = ClientIp::compile(&["10.0.0.0/8".into(), "::1".into()], "x-forwarded-for").unwrap();
        let h = headers("1.2.3.4, 5.6.7.8");
        assert_eq!(
            c.resolve("10.1.2.3".parse().unwrap(), &h),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            c.resolve("::1".parse().unwrap(), &h),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        // A spoofed header from an untrusted peer changes nothing.
        assert_eq!(
            c.resolve("192.0.2.9".parse().unwrap(), &h),
            "192.0.2.9".parse::<IpAddr>().unwrap()
        );
        // A trusted peer with garbage in the header: the peer itself.
        assert_eq!(
            c.resolve("10.0.0.1".parse().unwrap(), &headers("nonsense")),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(ClientIp::compile(&["10.0.0.0/33".into()], "x").is_err());
    }
}
