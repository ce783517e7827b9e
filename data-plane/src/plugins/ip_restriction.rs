//! `ip-restriction`: allow and deny lists of addresses and CIDRs, IPv4 and
//! IPv6, checked against the client address (trusted proxies applied).
//! Deny is checked first, as in Kong.

use super::reject::Reject;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

#[derive(Debug)]
pub struct IpRestriction {
    allow: Option<Vec<IpNet>>,
    deny: Vec<IpNet>,
    status: u16,
    message: String,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Option<Vec<String>>,
    #[serde(default)]
    status: Option<f64>,
    #[serde(default)]
    message: Option<String>,
}

fn nets(list: &[String], field: &str) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{field}: invalid ip or cidr range: {s:?}"))
        })
        .collect()
}

impl IpRestriction {
    pub fn compile(v: &serde_json::Value) -> Result<IpRestriction, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let allow = match c.allow {
            Some(a) if !a.is_empty() => Some(nets(&a, "allow")?),
            _ => None,
        };
        let deny = nets(&c.deny.unwrap_or_default(), "deny")?;
        if allow.is_none() && deny.is_empty() {
            return Err("at least one of allow or deny must be non-empty".into());
        }
        let status = c.status.unwrap_or(403.0);
        if !(100.0..=599.0).contains(&status) {
            return Err(format!("status {status} is not an HTTP status"));
        }
        Ok(IpRestriction {
            allow,
            deny,
            status: status as u16,
            message: c
                .message
                .unwrap_or_else(|| "Your IP address is not allowed".into()),
        })
    }

    pub fn check(&self, client: IpAddr) -> Result<(), Reject> {
        let denied = self.deny.iter().any(|n| n.contains(&client))
            || self
                .allow
                .as_ref()
                .is_some_and(|a| !a.iter().any(|n| n.contains(&client)));
        if denied {
            return Err(Reject::new(self.status, self.message.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deny_first_then_allow() {
        let r =
            IpRestriction::compile(&json!({"allow": ["10.0.0.0/8", "::1"], "deny": ["10.0.0.9"]}))
                .unwrap();
        assert!(r.check("10.1.2.3".parse().unwrap()).is_ok());
        assert!(r.check("::1".parse().unwrap()).is_ok());
        let e = r.check("10.0.0.9".parse().unwrap()).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.message.as_str()),
            (403, "Your IP address is not allowed")
        );
        assert!(r.check("192.0.2.1".parse().unwrap()).is_err());
        let d = IpRestriction::compile(
            &json!({"deny": ["2001:db8::/32"], "status": 401, "message": "go away"}),
        )
        .unwrap();
        assert!(
            d.check("2001:db8::5".parse().unwrap())
                .is_err_and(|e| e.status == 401 && e.message == "go away")
        );
        assert!(d.check("2001:db9::5".parse().unwrap()).is_ok());
    }
}
