//! Where routes that each list their own hosts go among Envoy's virtual
//! hosts.
//!
//! Kong matches a request against every route at once; Envoy first picks
//! one virtual host by domain and never falls back from it. So each
//! distinct domain gets a virtual host holding every route that could match
//! a request landing there (the routes listing a pattern that covers the
//! domain, and every host-less route), in precedence order, and `*` gets
//! the host-less routes alone.
//!
//! One layout serves both flavours: the translator uses it to write Envoy's
//! route configurations, gantry-proxy to build its tables from Gantry's
//! route entries, so the two cannot disagree on where a route is reachable.

use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use gantry_shared::proto::route::RouteEntry;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

/// Name of the virtual host holding only host-less routes (domain `*`).
pub const CATCH_ALL: &str = "catch-all";

/// A route host as Envoy matches it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPat {
    Exact(String),
    /// `*.example.com`, kept as `.example.com`.
    Suffix(String),
    /// `example.*`, kept as `example.`.
    Prefix(String),
}

impl HostPat {
    pub fn parse(h: &str) -> HostPat {
        let h = h.to_ascii_lowercase();
        if let Some(s) = h.strip_prefix('*') {
            HostPat::Suffix(s.to_string())
        } else if let Some(p) = h.strip_suffix('*') {
            HostPat::Prefix(p.to_string())
        } else {
            HostPat::Exact(h)
        }
    }

    /// The pattern as an Envoy domain.
    pub fn domain(&self) -> String {
        match self {
            HostPat::Exact(h) => h.clone(),
            HostPat::Suffix(s) => format!("*{s}"),
            HostPat::Prefix(p) => format!("{p}*"),
        }
    }

    /// Whether a route listing `self` could match a request that Envoy
    /// sends to the virtual host for `d`. Envoy tries exact domains, then
    /// suffix wildcards (longest first), then prefix wildcards, so a request
    /// in a suffix vhost matched no exact domain and a request in a prefix
    /// vhost matched no suffix one.
    pub fn covers(&self, d: &HostPat) -> bool {
        match (self, d) {
            (HostPat::Exact(a), HostPat::Exact(b)) => a == b,
            (HostPat::Suffix(s), HostPat::Exact(h)) => h.len() > s.len() && h.ends_with(s.as_str()),
            (HostPat::Prefix(p), HostPat::Exact(h)) => {
                h.len() > p.len() && h.starts_with(p.as_str())
            }
            (HostPat::Suffix(a), HostPat::Suffix(b)) => b.ends_with(a.as_str()),
            (HostPat::Prefix(a), HostPat::Prefix(b)) => b.starts_with(a.as_str()),
            // Partial overlaps (`api.*` vs `*.example.com`) cannot be expressed
            // with Envoy's domain selection; the more specific vhost wins.
            _ => false,
        }
    }
}

/// Routes that list the same hosts: their patterns (none: host-less) and
/// their routes, as indices.
pub struct Group {
    pub hosts: Vec<HostPat>,
    pub routes: Range<u32>,
}

/// One virtual host of a layout.
#[derive(Clone, Debug, PartialEq)]
pub struct LaidOut {
    pub name: String,
    pub domain: String,
    /// Route indices in first-match order.
    pub routes: Vec<u32>,
}

/// The virtual hosts for `groups`, by domain, then the catch-all last;
/// `order` ranks two route indices (the first-match order within a host).
pub fn lay_out(groups: &[Group], order: impl Fn(&u32, &u32) -> Ordering) -> Vec<LaidOut> {
    let mut hostless: Vec<u32> = Vec::new();
    let mut domains: BTreeMap<String, &HostPat> = BTreeMap::new();
    let mut listing: HashMap<&HostPat, Vec<usize>> = HashMap::new();
    let mut wildcards: Vec<(&HostPat, usize)> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        if g.hosts.is_empty() {
            hostless.extend(g.routes.clone());
        }
        for h in &g.hosts {
            domains.entry(h.domain()).or_insert(h);
            listing.entry(h).or_default().push(i);
            if !matches!(h, HostPat::Exact(_)) {
                wildcards.push((h, i));
            }
        }
    }
    hostless.sort_by(&order);

    let mut vhosts = Vec::with_capacity(domains.len() + 1);
    for (domain, pat) in domains {
        let mut ids: BTreeSet<usize> = listing.get(pat).into_iter().flatten().copied().collect();
        ids.extend(
            wildcards
                .iter()
                .filter(|(w, _)| w.covers(pat))
                .map(|(_, i)| *i),
        );
        let mut own: Vec<u32> = ids.iter().flat_map(|i| groups[*i].routes.clone()).collect();
        own.sort_by(&order);
        let name = if domain == CATCH_ALL {
            format!("host:{domain}")
        } else {
            domain.clone()
        };
        vhosts.push(LaidOut {
            name,
            domain,
            routes: merge(&own, &hostless, &order),
        });
    }
    vhosts.push(LaidOut {
        name: CATCH_ALL.into(),
        domain: "*".into(),
        routes: hostless,
    });
    vhosts
}

/// Merges two index lists, each sorted by `order`, into one.
fn merge(a: &[u32], b: &[u32], order: impl Fn(&u32, &u32) -> Ordering) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j >= b.len() || (i < a.len() && order(&a[i], &b[j]) != Ordering::Greater);
        if take_a {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out
}

/// The routes of `entries` (taken in the order given) and the virtual
/// hosts they go in, as indices into those routes: the layout an Envoy
/// node is sent for the same routes. For showing what a gantry-proxy runs
/// in Envoy's terms.
pub fn entry_layout<'a>(entries: &[&'a RouteEntry]) -> (Vec<&'a Route>, Vec<LaidOut>) {
    let mut routes = Vec::new();
    let mut ranks: Vec<&[u8]> = Vec::new();
    let mut groups = Vec::with_capacity(entries.len());
    for e in entries {
        let mut hosts: Vec<HostPat> = e.domains.iter().map(|d| HostPat::parse(d)).collect();
        hosts.sort();
        hosts.dedup();
        let start = routes.len() as u32;
        for r in &e.routes {
            // The proxy refuses an entry with a route missing; none is held.
            if let Some(route) = &r.route {
                routes.push(route);
                ranks.push(&r.rank);
            }
        }
        groups.push(Group {
            hosts,
            routes: start..routes.len() as u32,
        });
    }
    let order = |a: &u32, b: &u32| ranks[*a as usize].cmp(ranks[*b as usize]).then(a.cmp(b));
    let laid = lay_out(&groups, order);
    (routes, laid)
}

/// The route configuration an Envoy node is sent for `shell` (a
/// configuration's own settings) and the route entries that fill it.
pub fn assemble(shell: &RouteConfiguration, entries: &[&RouteEntry]) -> RouteConfiguration {
    let (routes, laid) = entry_layout(entries);
    let mut out = shell.clone();
    out.virtual_hosts = laid
        .into_iter()
        .map(|v| VirtualHost {
            name: v.name,
            domains: vec![v.domain],
            routes: v
                .routes
                .iter()
                .map(|i| routes[*i as usize].clone())
                .collect(),
            ..Default::default()
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(hosts: &[&str], routes: Range<u32>) -> Group {
        Group {
            hosts: hosts.iter().map(|h| HostPat::parse(h)).collect(),
            routes,
        }
    }

    #[test]
    fn hostless_routes_are_in_every_host_and_wildcards_cover_exact_hosts() {
        // Lower index = higher precedence.
        let groups = [
            group(&[], 0..1),
            group(&["API.example.com"], 1..2),
            group(&["*.example.com"], 2..3),
            group(&[], 3..4),
        ];
        let v = lay_out(&groups, |a, b| a.cmp(b));
        let seen: Vec<(&str, &[u32])> = v
            .iter()
            .map(|l| (l.domain.as_str(), l.routes.as_slice()))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("*.example.com", &[0, 2, 3][..]),
                ("api.example.com", &[0, 1, 2, 3][..]),
                ("*", &[0, 3][..]),
            ]
        );
        assert_eq!(v[2].name, CATCH_ALL);
    }

    #[test]
    fn a_host_named_catch_all_does_not_take_the_catch_all_name() {
        let v = lay_out(&[group(&["catch-all"], 0..1)], |a, b| a.cmp(b));
        assert_eq!(v[0].name, "host:catch-all");
        assert_eq!(v[1].name, "catch-all");
    }
}
