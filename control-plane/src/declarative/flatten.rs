//! Turns a document into a flat list of validated entity inputs.

use super::{DeclarativeError, Seg, path_label, provisional_id, put_error};
use crate::entities::secrets;
use crate::entities::{ALL, EntityDef, EntityError, check, def};
use crate::schema::{FieldErrors, Input, entity_error};
use crate::seal::Sealer;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};

/// `_format_version`s Kong 3.x loads; older ones get the 3.0 route-path
/// migration applied.
const VERSIONS: &[&str] = &["1.1", "2.1", "3.0"];
/// Top-level keys Kong accepts that carry no entities.
const META: &[&str] = &[
    "_format_version",
    "_transform",
    "_comment",
    "_workspace",
    "_info",
];

struct Entry {
    d: &'static EntityDef,
    value: Value,
    path: Vec<Seg>,
}

struct Flattener<'a> {
    sealer: &'a Sealer,
    /// Format < 3.0: regex route paths lack the `~` prefix.
    legacy_paths: bool,
    entries: Vec<Entry>,
    errors: FieldErrors,
}

/// Flattens a document into entity inputs in dependency order (`ALL`),
/// each validated and normalised, each with an id (a provisional one when
/// the document has none, see `super::provisional_id`), and every
/// reference — nested, or by id or endpoint key at top level — turned into
/// `{"id": ...}` of an entity in the document. Sealed secrets are unsealed.
pub fn flatten(
    doc: &Value,
    sealer: &Sealer,
) -> Result<Vec<(&'static EntityDef, Value)>, DeclarativeError> {
    let Some(obj) = doc.as_object() else {
        return Err(DeclarativeError::Invalid(entity_error(
            "expected an object",
        )));
    };
    let mut f = Flattener {
        sealer,
        legacy_paths: false,
        entries: Vec::new(),
        errors: Map::new(),
    };
    match obj.get("_format_version") {
        None | Some(Value::Null) => f.err(&[Seg::Key("_format_version")], "required field missing"),
        Some(v) => {
            // YAML reads an unquoted 3.0 as a number; accept it.
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            if VERSIONS.contains(&s.as_str()) {
                f.legacy_paths = s != "3.0";
            } else {
                f.err(
                    &[Seg::Key("_format_version")],
                    &format!("expected one of: {}", VERSIONS.join(", ")),
                );
            }
        }
    }
    for (k, v) in obj {
        if META.contains(&k.as_str()) {
            continue;
        }
        match def(k) {
            Some(d) => f.collection(d, v, vec![Seg::Key(d.name)], None)?,
            None => {
                put_error(&mut f.errors, &[], json!({ k.as_str(): "unknown field" }));
            }
        }
    }
    // References and duplicates are only meaningful once every entity
    // validated; checking them earlier would echo the schema errors.
    if f.errors.is_empty() {
        f.resolve_references();
    }
    if f.errors.is_empty() {
        f.check_duplicates();
    }
    if !f.errors.is_empty() {
        return Err(DeclarativeError::Invalid(f.errors));
    }
    let order = |d: &EntityDef| {
        ALL.iter()
            .position(|a| a.name == d.name)
            .unwrap_or(usize::MAX)
    };
    let mut entries = f.entries;
    entries.sort_by_key(|e| order(e.d));
    Ok(entries.into_iter().map(|e| (e.d, e.value)).collect())
}

/// Kinds that may nest under `d`, with the foreign key that nesting sets
/// (Kong nests along every foreign key: routes in services, snis in
/// certificates, plugins in routes, services and consumers...).
fn children(d: &EntityDef) -> impl Iterator<Item = (&'static EntityDef, &'static str)> + '_ {
    ALL.iter().flat_map(move |c| {
        c.foreign
            .iter()
            .filter(|f| f.kind == d.name && !f.many)
            .map(move |f| (c, f.field))
    })
}

impl Flattener<'_> {
    fn err(&mut self, path: &[Seg], msg: &str) {
        put_error(&mut self.errors, path, Value::String(msg.into()));
    }

    fn collection(
        &mut self,
        d: &'static EntityDef,
        v: &Value,
        path: Vec<Seg>,
        parent: Option<(&'static str, &str)>,
    ) -> Result<(), DeclarativeError> {
        let items = match v {
            Value::Null => return Ok(()),
            Value::Array(a) => a,
            _ => {
                self.err(&path, "expected an array");
                return Ok(());
            }
        };
        for (i, item) in items.iter().enumerate() {
            let mut p = path.clone();
            p.push(Seg::Index(i));
            self.entity(d, item, p, parent)?;
        }
        Ok(())
    }

    fn entity(
        &mut self,
        d: &'static EntityDef,
        item: &Value,
        path: Vec<Seg>,
        parent: Option<(&'static str, &str)>,
    ) -> Result<(), DeclarativeError> {
        let mut obj = match item {
            Value::Object(o) => o.clone(),
            // Kong's shorthand: `snis: [example.com]` under a certificate.
            Value::String(s) if d.name == "snis" && parent.is_some() => {
                let mut o = Map::new();
                o.insert("name".into(), Value::String(s.clone()));
                o
            }
            _ => {
                self.err(&path, "expected a record");
                return Ok(());
            }
        };
        let nested: Vec<_> = children(d)
            .filter_map(|(c, fk)| obj.remove(c.name).map(|cv| (c, fk, cv)))
            .collect();
        if let Some((fk, pid)) = parent {
            obj.insert(fk.into(), json!({ "id": pid }));
        }
        if obj.get("id").is_none_or(Value::is_null) {
            obj.insert("id".into(), Value::String(provisional_id()));
        }
        let id = match &obj["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut input = Value::Object(obj);
        let sealer = self.sealer;
        secrets::for_each_secret::<DeclarativeError>(d, &mut input, &mut |field, v| {
            let Some(s) = v.as_str().filter(|s| Sealer::is_sealed(s)) else {
                return Ok(());
            };
            *v = Value::String(sealer.unseal(s).map_err(|e| {
                DeclarativeError::Unseal(format!("{} field '{field}': {e}", path_label(&path)))
            })?);
            Ok(())
        })?;
        if self.legacy_paths && d.name == "routes" {
            migrate_paths(&mut input);
        }
        match check(d, &input, Input::Json) {
            Ok(value) => self.entries.push(Entry {
                d,
                value,
                path: path.clone(),
            }),
            Err(EntityError::Schema(e)) => put_error(&mut self.errors, &path, Value::Object(e)),
            Err(other) => put_error(
                &mut self.errors,
                &path,
                Value::Object(entity_error(other.to_string())),
            ),
        }
        for (c, fk, cv) in nested {
            let mut p = path.clone();
            p.push(Seg::Key(c.name));
            self.collection(c, &cv, p, Some((fk, &id)))?;
        }
        Ok(())
    }

    /// Points every reference at an entity of the document: by id, else by
    /// the target's endpoint key (name, username...), as Kong resolves them.
    fn resolve_references(&mut self) {
        let mut by_id: HashMap<(&str, String), String> = HashMap::new();
        let mut by_key: HashMap<(&str, String), String> = HashMap::new();
        for e in &self.entries {
            let id = e.value["id"].as_str().unwrap_or_default().to_string();
            if let Some(k) = e.d.endpoint_key.and_then(|k| e.value[k].as_str()) {
                by_key
                    .entry((e.d.name, k.to_string()))
                    .or_insert_with(|| id.clone());
            }
            by_id.entry((e.d.name, id.clone())).or_insert(id);
        }
        let mut errors = Vec::new();
        for e in &mut self.entries {
            for f in e.d.foreign {
                let r = &e.value[f.field];
                if r.is_null() {
                    continue;
                }
                if f.many {
                    // Arrays of ids (Kong's `ca_certificates`): ids only.
                    for want in r.as_array().into_iter().flatten().filter_map(Value::as_str) {
                        if !by_id.contains_key(&(f.kind, want.to_string())) {
                            errors.push((
                                e.path.clone(),
                                json!({ f.field: format!("invalid reference '{}: {want}' (no such entry in '{}')", f.field, f.kind) }),
                            ));
                        }
                    }
                    continue;
                }
                let want = ref_target(r);
                let key = (f.kind, want.clone());
                match by_id.get(&key).or_else(|| by_key.get(&key)) {
                    Some(id) => e.value[f.field] = json!({ "id": id }),
                    None => errors.push((
                        e.path.clone(),
                        json!({ f.field: format!("invalid reference '{}: {want}' (no such entry in '{}')", f.field, f.kind) }),
                    )),
                }
            }
        }
        for (p, err) in errors {
            put_error(&mut self.errors, &p, err);
        }
    }

    /// Kong refuses a document that declares one entity twice.
    fn check_duplicates(&mut self) {
        let mut seen: HashSet<(&str, String)> = HashSet::new();
        let mut errors = Vec::new();
        for e in &self.entries {
            let id = e.value["id"].as_str().unwrap_or_default();
            if !seen.insert((e.d.name, format!("id={id}"))) {
                errors.push((
                    e.path.clone(),
                    e.d.name,
                    format!("primary key set to '{id}'"),
                ));
                continue;
            }
            for key in e.d.keys(&e.value) {
                if !seen.insert((e.d.name, key.clone())) {
                    errors.push((e.path.clone(), e.d.name, describe_key(e.d, &key, &e.value)));
                }
            }
        }
        for (p, kind, what) in errors {
            let msg = format!("uniqueness violation: '{kind}' entity with {what} already declared");
            put_error(&mut self.errors, &p, Value::Object(entity_error(msg)));
        }
    }
}

/// The id or endpoint key a reference names.
pub(super) fn ref_target(r: &Value) -> String {
    ["id", "name", "username"]
        .iter()
        .find_map(|k| r.get(*k).and_then(Value::as_str))
        .or_else(|| r.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Words for a duplicated key; never shows a secret (a key-auth key).
fn describe_key(d: &EntityDef, key: &str, v: &Value) -> String {
    if key.starts_with("cache=") {
        let (refs, own): (Vec<&str>, Vec<&str>) = d
            .cache_key
            .iter()
            .partition(|f| d.foreign.iter().any(|fk| fk.field == **f));
        let own: Vec<String> = own
            .iter()
            .map(|f| format!("{f} set to '{}'", v[*f].as_str().unwrap_or_default()))
            .collect();
        return format!("{} for the same {}", own.join(" and "), refs.join(", "));
    }
    let (field, val) = key.split_once('=').unwrap_or((key, ""));
    if d.schema.get(field).is_some_and(|f| f.secret) {
        return format!("the same {field}");
    }
    format!("{field} set to '{val}'")
}

/// Kong 3.0 marks regex paths with `~`; older formats did not, so Kong
/// prefixes every path that is not plain characters when loading them.
fn migrate_paths(route: &mut Value) {
    let Some(paths) = route.get_mut("paths").and_then(Value::as_array_mut) else {
        return;
    };
    for p in paths {
        if let Some(s) = p.as_str() {
            let plain = s.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~' | '/' | '%')
            });
            if !plain && !s.starts_with('~') {
                *p = Value::String(format!("~{s}"));
            }
        }
    }
}
