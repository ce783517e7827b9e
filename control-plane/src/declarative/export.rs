//! Writes the current entities as a Kong 3.0 document that imports back to
//! exactly the same entities: same ids, same created_at, same values.

use crate::entities::secrets;
use crate::entities::{ALL, EntityDef, def};
use crate::schema::{Record, Ty};
use crate::seal::Sealer;
use crate::store::Stored;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Where an entity nests when it has exactly this one reference set:
/// (kind, foreign-key field). Everything else stays at the top level with
/// `{"id": ...}` references (global plugins, plugins on several scopes,
/// routes without a service, services with a client certificate...).
const NEST: &[(&str, &str)] = &[
    ("snis", "certificate"),
    ("routes", "service"),
    ("targets", "upstream"),
    ("keyauth_credentials", "consumer"),
    ("jwt_secrets", "consumer"),
    ("acls", "consumer"),
    ("plugins", "route"),
    ("plugins", "service"),
    ("plugins", "consumer"),
];

/// Exports entities as a `_format_version: "3.0"` document, nested the way
/// Kong documents are written, secrets sealed with `sealer`, null fields
/// left out where leaving them out imports as null again.
pub fn export(entities: &[Stored], sealer: &Sealer) -> Value {
    let order = |kind: &str| ALL.iter().position(|d| d.name == kind);
    let mut sorted: Vec<(&'static EntityDef, &Stored)> = entities
        .iter()
        .filter_map(|s| def(&s.kind).map(|d| (d, s)))
        .collect();
    // Stable output for diffs: by kind, then creation, then id.
    sorted.sort_by_key(|(d, s)| {
        (
            order(d.name),
            s.data["created_at"].as_i64().unwrap_or(0),
            s.id.clone(),
        )
    });
    let index: HashMap<(&str, &str), usize> = sorted
        .iter()
        .enumerate()
        .map(|(i, (d, s))| ((d.name, s.id.as_str()), i))
        .collect();

    // (parent position, foreign-key field) for each nested entity.
    let homes: Vec<Option<(usize, &str)>> = sorted
        .iter()
        .map(|(d, s)| {
            let set: Vec<_> = d
                .foreign
                .iter()
                .filter(|f| !f.many && !s.data[f.field].is_null())
                .collect();
            let [f] = set.as_slice() else { return None };
            if !NEST.contains(&(d.name, f.field)) {
                return None;
            }
            let pid = s.data[f.field]["id"].as_str()?;
            index.get(&(f.kind, pid)).map(|p| (*p, f.field))
        })
        .collect();

    let mut nodes: Vec<Option<Value>> = sorted
        .iter()
        .zip(&homes)
        .map(|((d, s), home)| {
            let mut v = s.data.clone();
            let _ = secrets::for_each_secret::<()>(d, &mut v, &mut |_, secret| {
                // A vault reference is exported as written, as Kong does.
                if let Some(plain) = secret.as_str()
                    && !gantry_shared::vault::is_reference(plain)
                {
                    *secret = Value::String(sealer.seal(plain));
                }
                Ok(())
            });
            strip_nulls(&d.schema, &mut v);
            if d.name == "plugins"
                && let (Some(cs), Some(cfg)) = (
                    v["name"].as_str().and_then(crate::plugins::config_schema),
                    v.get_mut("config"),
                )
            {
                strip_nulls(cs, cfg);
            }
            if let (Some((_, fk)), Some(o)) = (home, v.as_object_mut()) {
                o.shift_remove(*fk);
            }
            Some(v)
        })
        .collect();

    // Children by parent, in sorted order (so grouped by kind in `ALL` order).
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); sorted.len()];
    for (i, home) in homes.iter().enumerate() {
        if let Some((parent, _)) = home {
            children[*parent].push(i);
        }
    }
    let mut doc = Map::new();
    doc.insert("_format_version".into(), Value::String("3.0".into()));
    for (i, (d, _)) in sorted.iter().enumerate() {
        if homes[i].is_none() {
            let node = build(i, &sorted, &children, &mut nodes);
            if let Value::Array(list) = doc
                .entry(d.name)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                list.push(node);
            }
        }
    }
    Value::Object(doc)
}

/// An entity with its nested entities under their collection names.
fn build(
    i: usize,
    sorted: &[(&'static EntityDef, &Stored)],
    children: &[Vec<usize>],
    nodes: &mut [Option<Value>],
) -> Value {
    let mut node = nodes[i].take().unwrap_or(Value::Null);
    for &c in &children[i] {
        let kind = sorted[c].0.name;
        let child = build(c, sorted, children, nodes);
        if let Some(o) = node.as_object_mut()
            && let Value::Array(list) = o.entry(kind).or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(child);
        }
    }
    node
}

/// Drops null fields that validation turns back into null: no default and
/// not a record (records without a value are filled with their defaults).
fn strip_nulls(schema: &Record, v: &mut Value) {
    let Value::Object(o) = v else { return };
    o.retain(|k, fv| match schema.get(k) {
        Some(f) => !(fv.is_null() && f.default.is_none() && !matches!(f.ty, Ty::Record(_))),
        None => !fv.is_null(),
    });
    for (name, f) in &schema.fields {
        if let (Ty::Record(r), Some(fv)) = (&f.ty, o.get_mut(*name)) {
            strip_nulls(r, fv);
        }
    }
}
