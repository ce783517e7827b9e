//! Applies a desired configuration as one replacement of the current one,
//! inside the caller's write transaction (so it commits as one revision).
//!
//! Order matters because of foreign keys and unique keys:
//! 1. plan: give every desired entity its final id (its own; else the
//!    current entity with the same unique or cache key; else the current
//!    entity with the same content, for kinds without keys; else a new one);
//! 2. evict: a current entity that is going away but holds a unique key a
//!    desired entity needs is removed first, or the upsert would collide
//!    with it (same name, different id, as when importing another
//!    instance's export);
//! 3. upsert what is new or changed, parents before children (`ALL`), with
//!    all of `ops::upsert`'s validation, reference and uniqueness checks;
//! 4. delete what is no longer desired, children before parents. By now
//!    every kept entity points at desired parents only, so no delete is
//!    refused for references and no cascade reaches a kept entity.

use super::flatten::ref_target;
use super::{DeclarativeError, generated, is_provisional};
use crate::entities::{ALL, EntityDef, EntityError, check, def, delete, redacted, upsert};
use crate::schema::{self, Input, entity_error};
use crate::store::{Stored, WriteTx};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};

/// Replaces the whole current configuration inside `tx` with `desired` and
/// returns the number of entity changes (cascades included). Entities equal
/// to the current ones, timestamps aside, are not rewritten.
pub async fn replace(
    tx: &mut WriteTx,
    desired: Vec<(&'static EntityDef, Value)>,
) -> Result<usize, DeclarativeError> {
    let start = tx.changes();
    let cur = Current::new(tx.all_current().await?);
    let plan = plan(&cur, desired)?;
    let planned: HashSet<(&str, &str)> = plan.iter().map(|p| (p.d.name, p.id.as_str())).collect();

    let mut evicted: HashSet<(&str, &str)> = HashSet::new();
    for p in &plan {
        for key in p.d.keys(&p.value) {
            let Some(holder) = cur.holder(p.d.name, &key) else {
                continue;
            };
            let h = (p.d.name, holder.id.as_str());
            if holder.id == p.id || planned.contains(&h) || !evicted.insert(h) {
                continue;
            }
            // Its references are left to steps 3 and 4: kept referrers are
            // re-pointed by their upsert, the others deleted.
            tx.delete(&holder.kind, &holder.id, Some(&redacted(p.d, &holder.data)))
                .await?;
        }
    }

    for d in ALL.iter() {
        let mut pending: Vec<&Planned> = plan
            .iter()
            .filter(|p| {
                p.d.name == d.name && cur.get(d.name, &p.id).is_none_or(|c| differs(&p.value, c))
            })
            .collect();
        // A rename chain (a takes b's old name while b takes a new one)
        // succeeds in some order: retry what collided until nothing moves.
        while !pending.is_empty() {
            let mut deferred = Vec::new();
            let mut last = None;
            for p in &pending {
                match upsert(tx, p.d, &p.id, p.value.clone(), Input::Json, None).await {
                    Ok(_) => {}
                    Err(e @ EntityError::Unique(_)) => {
                        deferred.push(*p);
                        last = Some((*p, e));
                    }
                    Err(e) => return Err(context(p.d, &p.value, e)),
                }
            }
            if deferred.len() == pending.len()
                && let Some((p, e)) = last
            {
                return Err(context(p.d, &p.value, e));
            }
            pending = deferred;
        }
    }

    for d in ALL.iter().rev() {
        for s in cur.list.iter().filter(|s| s.kind == d.name) {
            let k = (d.name, s.id.as_str());
            if planned.contains(&k) || evicted.contains(&k) {
                continue;
            }
            // Already gone by cascade is fine: delete succeeds on nothing.
            delete(tx, d, &s.id, None)
                .await
                .map_err(|e| context(d, &s.data, e))?;
        }
    }
    Ok(tx.changes() - start)
}

struct Planned {
    d: &'static EntityDef,
    id: String,
    value: Value,
}

/// The configuration as the transaction found it.
struct Current {
    list: Vec<Stored>,
    by_id: HashMap<(String, String), usize>,
    by_key: HashMap<(String, String), usize>,
}

impl Current {
    fn new(list: Vec<Stored>) -> Self {
        let mut by_id = HashMap::new();
        let mut by_key = HashMap::new();
        for (i, s) in list.iter().enumerate() {
            by_id.insert((s.kind.clone(), s.id.clone()), i);
            for k in def(&s.kind).map(|d| d.keys(&s.data)).unwrap_or_default() {
                by_key.insert((s.kind.clone(), k), i);
            }
        }
        Current {
            list,
            by_id,
            by_key,
        }
    }

    fn get(&self, kind: &str, id: &str) -> Option<&Value> {
        self.by_id
            .get(&(kind.to_string(), id.to_string()))
            .map(|i| &self.list[*i].data)
    }

    fn holder(&self, kind: &str, key: &str) -> Option<&Stored> {
        self.by_key
            .get(&(kind.to_string(), key.to_string()))
            .map(|i| &self.list[*i])
    }

    /// The current entity this desired one is, when the document gave no id.
    fn matching(
        &self,
        d: &EntityDef,
        v: &Value,
        claimed: &HashSet<(&str, String)>,
    ) -> Option<String> {
        let free = |id: &String| !claimed.contains(&(d.name, id.clone()));
        let keys = d.keys(v);
        if !keys.is_empty() {
            return keys
                .iter()
                .filter_map(|k| self.holder(d.name, k))
                .map(|s| s.id.clone())
                .find(free);
        }
        // No key to go by (certificates, nameless services, credentials
        // whose key is generated): the same content is the same entity.
        self.list
            .iter()
            .filter(|s| s.kind == d.name && same_content(d, v, &s.data))
            .map(|s| s.id.clone())
            .find(free)
    }
}

/// Gives every desired entity its final id and points its references at
/// final ids, parents first so children can be matched by cache keys that
/// contain their parent's id.
fn plan(
    cur: &Current,
    desired: Vec<(&'static EntityDef, Value)>,
) -> Result<Vec<Planned>, DeclarativeError> {
    let mut groups: Vec<Vec<Value>> = vec![Vec::new(); ALL.len()];
    for (d, v) in desired {
        match ALL.iter().position(|a| a.name == d.name) {
            Some(i) => groups[i].push(v),
            None => {
                return Err(context(
                    d,
                    &v,
                    EntityError::Schema(entity_error("unknown entity kind")),
                ));
            }
        }
    }
    // (kind, id or endpoint key as the input wrote it) -> final id
    let mut ids: HashMap<(&str, String), String> = HashMap::new();
    let mut keys: HashMap<(&str, String), String> = HashMap::new();
    let mut claimed: HashSet<(&str, String)> = HashSet::new();
    let mut out = Vec::new();
    for (d, inputs) in ALL.iter().zip(groups) {
        let mut vals = Vec::with_capacity(inputs.len());
        for input in inputs {
            // Normalised again so callers other than `flatten` (rollback
            // to a stored revision) get the same matching and comparison.
            let mut v = check(d, &input, Input::Json).map_err(|e| context(d, &input, e))?;
            for f in d.foreign {
                if v[f.field].is_null() {
                    continue;
                }
                if f.many {
                    let mut out = Vec::new();
                    for want in v[f.field].as_array().into_iter().flatten() {
                        let want = want.as_str().unwrap_or_default().to_string();
                        let Some(id) = ids.get(&(f.kind, want.clone())) else {
                            let e = EntityError::ForeignKey {
                                field: f.field.into(),
                                kind: f.kind.into(),
                                id: want,
                            };
                            return Err(context(d, &v, e));
                        };
                        out.push(Value::String(id.clone()));
                    }
                    v[f.field] = Value::Array(out);
                    continue;
                }
                let want = ref_target(&v[f.field]);
                let key = (f.kind, want.clone());
                let Some(id) = ids.get(&key).or_else(|| keys.get(&key)) else {
                    let e = EntityError::ForeignKey {
                        field: f.field.into(),
                        kind: f.kind.into(),
                        id: want,
                    };
                    return Err(context(d, &v, e));
                };
                v[f.field] = json!({ "id": id });
            }
            if d.name == "certificates" {
                // SNIs arrive as entities; the shorthand would add more.
                v["snis"] = Value::Null;
            }
            vals.push(v);
        }
        // Ids the input names are claimed before any matching by key, so
        // matching never hands out an id the input uses elsewhere.
        let mut finals: Vec<Option<String>> = vals
            .iter()
            .map(|v| {
                v["id"]
                    .as_str()
                    .filter(|id| !is_provisional(id))
                    .map(str::to_string)
            })
            .collect();
        for (v, id) in vals.iter().zip(&finals) {
            if let Some(id) = id
                && !claimed.insert((d.name, id.clone()))
            {
                return Err(context(d, v, EntityError::PrimaryKey(id.clone())));
            }
        }
        for (v, slot) in vals.iter().zip(finals.iter_mut()) {
            if slot.is_none() {
                let id = cur
                    .matching(d, v, &claimed)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                claimed.insert((d.name, id.clone()));
                *slot = Some(id);
            }
        }
        for (mut v, id) in vals.into_iter().zip(finals) {
            let id = id.unwrap_or_default();
            if let Some(given) = v["id"].as_str() {
                ids.insert((d.name, given.to_string()), id.clone());
            }
            ids.insert((d.name, id.clone()), id.clone());
            if let Some(k) = d.endpoint_key.and_then(|k| v[k].as_str()) {
                keys.entry((d.name, k.to_string()))
                    .or_insert_with(|| id.clone());
            }
            v["id"] = Value::String(id.clone());
            if let Some(c) = cur.get(d.name, &id) {
                for g in generated(d.name) {
                    if v[g].is_null() && !c[g].is_null() {
                        v[g] = c[g].clone();
                    }
                }
            }
            out.push(Planned { d, id, value: v });
        }
    }
    Ok(out)
}

const TIMESTAMPS: [&str; 2] = ["created_at", "updated_at"];

/// Whether a write would change anything but timestamps.
fn differs(desired: &Value, current: &Value) -> bool {
    let (Some(a), Some(b)) = (desired.as_object(), current.as_object()) else {
        return desired != current;
    };
    let null = Value::Null;
    a.iter().chain(b.iter()).any(|(k, _)| {
        !TIMESTAMPS.contains(&k.as_str()) && a.get(k).unwrap_or(&null) != b.get(k).unwrap_or(&null)
    })
}

/// Equal but for id, timestamps, and generated fields the input left out.
fn same_content(d: &EntityDef, desired: &Value, current: &Value) -> bool {
    let (Some(a), Some(b)) = (desired.as_object(), current.as_object()) else {
        return false;
    };
    let null = Value::Null;
    a.iter().chain(b.iter()).all(|(k, _)| {
        let av = a.get(k).unwrap_or(&null);
        k == "id"
            || TIMESTAMPS.contains(&k.as_str())
            || (av.is_null() && generated(d.name).any(|g| g == k))
            || av == b.get(k).unwrap_or(&null)
    })
}

/// Names the failing entity without showing a secret.
fn context(d: &'static EntityDef, v: &Value, e: EntityError) -> DeclarativeError {
    let source = match e {
        EntityError::Unique(mut u) => {
            schema::redact(&d.schema, &mut u);
            EntityError::Unique(u)
        }
        other => other,
    };
    let label_field = if d.name == "plugins" {
        Some("name")
    } else {
        d.endpoint_key
            .filter(|k| !d.schema.get(k).is_some_and(|f| f.secret))
    };
    let entity = label_field
        .and_then(|k| v.get(k).and_then(Value::as_str))
        .or_else(|| {
            v.get("id")
                .and_then(Value::as_str)
                .filter(|id| !is_provisional(id))
        })
        .unwrap_or("(without id)")
        .to_string();
    DeclarativeError::Entity {
        collection: d.name,
        entity,
        source,
    }
}
