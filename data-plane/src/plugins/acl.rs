//! `acl`: allow or deny by the consumer's groups (Kong 3's rules: no
//! consumer is 401, a consumer outside the allowed groups is 403).

use super::Identity;
use super::consumers::X_CONSUMER_GROUPS;
use super::reject::Reject;
use http::HeaderMap;
use serde::Deserialize;

#[derive(Debug)]
pub struct Acl {
    groups: Vec<String>,
    deny: bool,
    hide_groups_header: bool,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Option<Vec<String>>,
    #[serde(default)]
    hide_groups_header: bool,
}

const FORBIDDEN: &str = "You cannot consume this service";

impl Acl {
    pub fn compile(v: &serde_json::Value) -> Result<Acl, String> {
        let c = Config::deserialize(v).map_err(|e| e.to_string())?;
        let (groups, deny) = match (c.allow, c.deny) {
            (Some(a), None) if !a.is_empty() => (a, false),
            (None | Some(_), Some(d)) if !d.is_empty() => (d, true),
            _ => return Err("exactly one of allow or deny must be non-empty".into()),
        };
        Ok(Acl {
            groups,
            deny,
            hide_groups_header: c.hide_groups_header,
        })
    }

    pub fn check(&self, who: Identity<'_>, headers: &mut HeaderMap) -> Result<(), Reject> {
        let Some(c) = who.consumer else {
            return Err(Reject::new(401, "Unauthorized"));
        };
        if c.groups.is_empty() && !self.deny {
            return Err(match who.credential {
                Some(_) => Reject::new(403, FORBIDDEN),
                None => Reject::new(401, "Unauthorized"),
            });
        }
        let member = self
            .groups
            .iter()
            .any(|g| c.groups.binary_search(g).is_ok());
        if member == self.deny {
            return Err(Reject::new(403, FORBIDDEN));
        }
        if !self.hide_groups_header
            && let Some(v) = &c.groups_value
        {
            headers.insert(X_CONSUMER_GROUPS.clone(), v.clone());
        }
        Ok(())
    }
}
