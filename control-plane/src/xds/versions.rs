//! What a delta stream's node has of one type: resource name → version.
//!
//! For a wildcard type that is, most of the time, exactly one snapshot's
//! map (gantry-proxy's route entries: one resource per Kong route), so it
//! is kept as that map, shared by every stream on it, plus what differs
//! from it. A node in sync costs a pointer, not a copy of every name, and
//! a reconnecting node that already has everything costs nothing more.

use super::cache::{Resource, TypeMap};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Versions {
    base: Option<Arc<TypeMap>>,
    /// Where the node differs from `base`: Some(version) it has, None a
    /// name of `base` it does not have.
    diff: HashMap<Arc<str>, Option<Arc<str>>>,
}

impl Versions {
    /// A reconnecting node's `initial_resource_versions`, kept as the
    /// difference from `base` when there is one (wildcard types).
    pub fn from_initial(initial: &HashMap<String, String>, base: Option<Arc<TypeMap>>) -> Self {
        // A node that has nothing is not described against a map: it
        // will be rebased on the one it is sent.
        let mut v = Versions {
            base: base.filter(|_| !initial.is_empty()),
            diff: HashMap::new(),
        };
        if let Some(b) = &v.base {
            for r in b.values() {
                if !initial.contains_key(&*r.name) {
                    v.diff.insert(r.name.clone(), None);
                }
            }
        }
        for (n, ver) in initial {
            match v.base.as_ref().and_then(|b| b.get(n)) {
                Some(r) if *r.version == **ver => {}
                // The snapshot's name, shared.
                Some(r) => {
                    v.diff.insert(r.name.clone(), Some(Arc::from(ver.as_str())));
                }
                None => {
                    v.diff
                        .insert(Arc::from(n.as_str()), Some(Arc::from(ver.as_str())));
                }
            }
        }
        v
    }

    /// The node has exactly `map`.
    pub fn rebase(&mut self, map: Arc<TypeMap>) {
        self.base = Some(map);
        // Not `clear`: the table it had (a whole first sync's names) is freed.
        self.diff = HashMap::new();
    }

    pub fn get(&self, name: &str) -> Option<&Arc<str>> {
        match self.diff.get(name) {
            Some(d) => d.as_ref(),
            None => self.base.as_ref()?.get(name).map(|r| &r.version),
        }
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Records that the node has `version` of `name`; the previous one.
    pub fn insert(&mut self, name: Arc<str>, version: Arc<str>) -> Option<Arc<str>> {
        let prev = self.get(&name).cloned();
        match self.base.as_ref().and_then(|b| b.get(&*name)) {
            Some(r) if r.version == version => {
                self.diff.remove(&*name);
            }
            _ => {
                self.diff.insert(name, Some(version));
            }
        }
        prev
    }

    /// Records that the node no longer has `name`; the version it had.
    pub fn remove(&mut self, name: &str) -> Option<Arc<str>> {
        let prev = self.get(name).cloned();
        match self.base.as_ref().and_then(|b| b.get(name)) {
            Some(r) => {
                self.diff.insert(r.name.clone(), None);
            }
            None => {
                self.diff.remove(name);
            }
        }
        prev
    }

    /// Every name the node has.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        let from_base = self
            .base
            .iter()
            .flat_map(|b| b.values())
            .map(|r| &r.name)
            .filter(|n| !self.diff.contains_key(&***n));
        let from_diff = self
            .diff
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(n, _)| n);
        from_base.chain(from_diff)
    }

    /// The resources of `map` the node lacks or has at another version, in
    /// name order. `map` and the base are walked together (both sorted by
    /// name), and a resource the snapshot builder carried over from the
    /// base's snapshot is recognised by pointer, so a node one change
    /// behind costs a pass of pointer comparisons, not a lookup per name.
    pub fn stale<'a>(&'a self, map: &'a TypeMap) -> impl Iterator<Item = &'a Arc<Resource>> + 'a {
        let mut base = self.base.as_deref().map(|b| b.iter().peekable());
        map.iter().filter_map(move |(name, r)| {
            let diff = match self.diff.is_empty() {
                true => None,
                false => self.diff.get(name.as_str()),
            };
            let had: Option<&Arc<str>> = match (diff, &mut base) {
                (Some(d), _) => d.as_ref(),
                (None, None) => None,
                (None, Some(it)) => loop {
                    match it.peek() {
                        Some(&(_, b)) if Arc::ptr_eq(b, r) => {
                            it.next();
                            break Some(&b.version);
                        }
                        Some(&(n, _)) if n < name => {
                            it.next();
                        }
                        Some(&(n, b)) if n == name => {
                            it.next();
                            break Some(&b.version);
                        }
                        _ => break None,
                    }
                },
            };
            (had != Some(&r.version)).then_some(r)
        })
    }

    /// The names the node has that `map` lacks, walking the base and
    /// `map` together as [`Versions::stale`] does.
    pub fn missing_from<'a>(&'a self, map: &'a TypeMap) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        let mut there = map.iter().peekable();
        let from_base = self
            .base
            .iter()
            .flat_map(|b| b.iter())
            .filter(|(n, _)| self.diff.is_empty() || !self.diff.contains_key(n.as_str()))
            .filter_map(move |(n, r)| {
                let present = loop {
                    match there.peek() {
                        Some(&(_, m)) if Arc::ptr_eq(m, r) => {
                            there.next();
                            break true;
                        }
                        Some(&(mn, _)) if mn < n => {
                            there.next();
                        }
                        Some(&(mn, _)) => break mn == n,
                        None => break false,
                    }
                };
                (!present).then_some(&r.name)
            });
        let from_diff = self
            .diff
            .iter()
            .filter(|(n, v)| v.is_some() && !map.contains_key(&***n))
            .map(|(n, _)| n);
        from_base.chain(from_diff)
    }

    /// Whether the node has every resource of `map` at its version, and
    /// nothing else.
    pub fn has_exactly(&self, map: &TypeMap) -> bool {
        self.stale(map).next().is_none() && self.keys().count() == map.len()
    }

    /// Whether the node has exactly `map` (a pointer comparison: only a
    /// map it was rebased on is recognised).
    pub fn is_exactly(&self, map: &Arc<TypeMap>) -> bool {
        self.diff.is_empty() && self.base.as_ref().is_some_and(|b| Arc::ptr_eq(b, map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    fn map(entries: &[(&str, &str)]) -> Arc<TypeMap> {
        Arc::new(
            entries
                .iter()
                .map(|(n, v)| {
                    let r = Resource {
                        name: (*n).into(),
                        version: (*v).into(),
                        any: Any::default(),
                    };
                    (n.to_string(), Arc::new(r))
                })
                .collect(),
        )
    }

    fn sorted(v: &Versions) -> Vec<(String, String)> {
        let mut out: Vec<_> = v
            .keys()
            .map(|k| {
                (
                    k.to_string(),
                    v.get(k).map(|s| s.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn initial(entries: &[(&str, &str)]) -> HashMap<String, String> {
        entries
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_node_that_has_the_snapshot_costs_no_entries() {
        let m = map(&[("a", "1"), ("b", "2")]);
        let v = Versions::from_initial(&initial(&[("a", "1"), ("b", "2")]), Some(m.clone()));
        assert!(v.is_exactly(&m));
        assert_eq!(
            sorted(&v),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn differences_from_the_base_read_as_a_plain_map() {
        let m = map(&[("a", "1"), ("b", "2"), ("c", "3")]);
        // Has a stale a, lacks b, has c, and has x the snapshot lacks.
        let mut v = Versions::from_initial(
            &initial(&[("a", "0"), ("c", "3"), ("x", "9")]),
            Some(m.clone()),
        );
        assert!(!v.is_exactly(&m));
        assert_eq!(
            sorted(&v),
            vec![
                ("a".into(), "0".into()),
                ("c".into(), "3".into()),
                ("x".into(), "9".into())
            ]
        );
        assert!(!v.contains_key("b"));
        // Sending what differs brings it to the base, entry by entry.
        assert_eq!(v.insert("a".into(), "1".into()).as_deref(), Some("0"));
        assert_eq!(v.insert("b".into(), "2".into()), None);
        assert_eq!(v.remove("x").as_deref(), Some("9"));
        assert!(v.is_exactly(&m), "{v:?}");
        // And away from it.
        assert_eq!(v.remove("c").as_deref(), Some("3"));
        assert!(!v.contains_key("c"));
        assert_eq!(v.insert("c".into(), "4".into()), None);
        assert_eq!(v.get("c").map(|s| &**s), Some("4"));
        v.rebase(map(&[("z", "1")]));
        assert_eq!(sorted(&v), vec![("z".into(), "1".into())]);
    }

    #[test]
    fn stale_names_what_differs_by_walking_both_maps() {
        let old = map(&[("a", "1"), ("b", "2"), ("d", "4")]);
        // The next snapshot: b changed, c is new, d is gone; a carried over.
        let mut next = (*map(&[("b", "3"), ("c", "1")])).clone();
        next.insert("a".into(), old["a"].clone());
        let next = Arc::new(next);
        let names =
            |v: &Versions| -> Vec<String> { v.stale(&next).map(|r| r.name.to_string()).collect() };
        let mut v = Versions::from_initial(
            &initial(&[("a", "1"), ("b", "2"), ("d", "4")]),
            Some(old.clone()),
        );
        assert_eq!(names(&v), vec!["b", "c"]);
        assert!(!v.has_exactly(&next));
        v.insert("b".into(), "3".into());
        assert_eq!(names(&v), vec!["c"]);
        v.insert("c".into(), "1".into());
        assert!(names(&v).is_empty());
        assert!(!v.has_exactly(&next), "it still has d");
        let gone: Vec<&str> = v.missing_from(&next).map(|n| &**n).collect();
        assert_eq!(gone, vec!["d"]);
        v.remove("d");
        assert!(v.has_exactly(&next));
        assert_eq!(v.missing_from(&next).count(), 0);
        v.insert("x".into(), "1".into());
        let gone: Vec<&str> = v.missing_from(&next).map(|n| &**n).collect();
        assert_eq!(gone, vec!["x"]);
        // Without a base, the same answers from the plain map.
        let plain = Versions::from_initial(&initial(&[("a", "1"), ("c", "0")]), None);
        assert_eq!(names(&plain), vec!["b", "c"]);
    }

    #[test]
    fn without_a_base_it_is_a_plain_map() {
        let mut v = Versions::from_initial(&initial(&[("a", "1")]), None);
        assert_eq!(v.insert("b".into(), "2".into()), None);
        assert_eq!(v.remove("a").as_deref(), Some("1"));
        assert_eq!(sorted(&v), vec![("b".into(), "2".into())]);
    }
}
