//! A candidate index over a virtual host's routes: each route is filed
//! under the literal its path must start with (a prefix or exact path, or
//! the literal prefix of a regex), so a request only tries the routes
//! whose literal starts its path. Candidates are tried in the routes'
//! configured order, so first-match semantics are exactly those of a
//! linear scan; only routes that cannot match are skipped.

use super::routes::{MatchKind, Route};
use std::collections::HashMap;
use std::sync::Arc;

/// Below this many routes a linear scan is as fast as the index.
const MIN_ROUTES: usize = 16;
/// Lookups per request are bounded by the number of distinct literal
/// lengths; past this many lists the merge falls back to a scan.
const MAX_LISTS: usize = 48;

/// Literal bytes → route positions, ascending.
type ByLiteral = HashMap<Box<[u8]>, Vec<u32>>;

#[derive(Clone, Debug, Default)]
pub struct PathIndex {
    /// Routes every request must try (no usable literal).
    always: Vec<u32>,
    /// By literal length, ascending.
    by_len: Vec<(usize, ByLiteral)>,
    enabled: bool,
}

/// The bytes a path must start with for the route to match; empty when
/// there is no such literal (or case folding makes one unusable).
fn literal(r: &Route) -> &[u8] {
    match &r.path_match {
        MatchKind::Prefix(p) | MatchKind::Path(p) | MatchKind::PathSeparatedPrefix(p)
            if r.case_sensitive =>
        {
            p.as_bytes()
        }
        MatchKind::Regex(re) => re.literal_prefix(),
        _ => b"",
    }
}

impl PathIndex {
    pub fn build(routes: &[Arc<Route>]) -> PathIndex {
        if routes.len() < MIN_ROUTES {
            return PathIndex::default();
        }
        let mut always = Vec::new();
        let mut by_len: std::collections::BTreeMap<usize, ByLiteral> =
            std::collections::BTreeMap::new();
        for (i, r) in routes.iter().enumerate() {
            let lit = literal(r);
            if lit.is_empty() {
                always.push(i as u32);
            } else {
                by_len
                    .entry(lit.len())
                    .or_default()
                    .entry(lit.into())
                    .or_default()
                    .push(i as u32);
            }
        }
        let by_len: Vec<_> = by_len.into_iter().collect();
        // An index with too many distinct lengths would cost more per
        // request than it saves.
        let enabled = by_len.len() < MAX_LISTS;
        PathIndex {
            always,
            by_len,
            enabled,
        }
    }

    /// The first route, in configured order, for which `matches` holds,
    /// trying only candidates for `path` (without its query string).
    pub fn first<'a>(
        &self,
        routes: &'a [Arc<Route>],
        path: &[u8],
        mut matches: impl FnMut(&Route) -> bool,
    ) -> Option<&'a Route> {
        if !self.enabled {
            return routes.iter().map(|r| &**r).find(|r| matches(r));
        }
        // The candidate lists for this path, merged by position without
        // allocating.
        let mut lists: [&[u32]; MAX_LISTS] = [&[]; MAX_LISTS];
        let mut n = 0;
        if !self.always.is_empty() {
            lists[n] = &self.always;
            n += 1;
        }
        for (len, map) in &self.by_len {
            if *len > path.len() {
                break;
            }
            if let Some(l) = map.get(&path[..*len]) {
                lists[n] = l;
                n += 1;
            }
        }
        let lists = &mut lists[..n];
        loop {
            let mut best: Option<(usize, u32)> = None;
            for (j, l) in lists.iter().enumerate() {
                if let Some(&head) = l.first()
                    && best.is_none_or(|(_, b)| head < b)
                {
                    best = Some((j, head));
                }
            }
            let (j, pos) = best?;
            lists[j] = &lists[j][1..];
            let r = &*routes[pos as usize];
            if matches(r) {
                return Some(r);
            }
        }
    }
}
