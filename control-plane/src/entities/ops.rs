//! Entity operations with Kong's semantics, inside one write transaction:
//! validation, generated fields, foreign keys, uniqueness, cascades.

use super::defs::{EntityDef, def};
use crate::schema::{self, FieldErrors, Input, Ty, field_error, summarize, validate};
use crate::store::{Index, Store, StoreError, WriteTx};
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum EntityError {
    #[error("{}", summarize(.0))]
    Schema(FieldErrors),
    #[error("UNIQUE violation detected on '{0}'")]
    Unique(Value),
    #[error("primary key violation on key '{{id=\"{0}\"}}'")]
    PrimaryKey(String),
    #[error("the foreign key '{{id=\"{id}\"}}' does not reference an existing '{kind}' entity.")]
    ForeignKey {
        field: String,
        kind: String,
        id: String,
    },
    #[error("an existing '{by}' entity references this '{kind}' entity")]
    Referenced { kind: String, by: String },
    /// Kong's DAO-level refusal for references held in an array of ids
    /// (`ca certificate <id> is still referenced by services (id = <id>)`).
    #[error("{} {id} is still referenced by {by} (id = {by_id})", singular(.kind))]
    StillReferenced {
        kind: &'static str,
        id: String,
        by: &'static str,
        by_id: String,
    },
    #[error("Not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Kong's words for one entity of a kind: `ca_certificates` is "ca certificate".
fn singular(kind: &str) -> String {
    kind.strip_suffix('s').unwrap_or(kind).replace('_', " ")
}

/// The foreign key a nested URL imposes: `/services/{id}/routes` gives
/// routes `service = {id}`.
#[derive(Clone, Debug)]
pub struct Parent {
    pub field: &'static str,
    pub id: String,
}

/// Lookups shared by reads (the store) and writes (a transaction).
pub trait Lookup {
    fn get(
        &mut self,
        kind: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<Value>, StoreError>> + Send;
    fn find_key(
        &mut self,
        kind: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
}

impl Lookup for WriteTx {
    async fn get(&mut self, kind: &str, id: &str) -> Result<Option<Value>, StoreError> {
        WriteTx::get(self, kind, id).await
    }
    async fn find_key(&mut self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        WriteTx::find_key(self, kind, key).await
    }
}

impl Lookup for &Store {
    async fn get(&mut self, kind: &str, id: &str) -> Result<Option<Value>, StoreError> {
        Store::get(self, kind, id).await
    }
    async fn find_key(&mut self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        Store::find_key(self, kind, key).await
    }
}

/// Finds an entity by id, or by its endpoint key (name, username...).
pub async fn resolve_id<L: Lookup>(
    l: &mut L,
    d: &EntityDef,
    id_or_key: &str,
) -> Result<Option<(String, Value)>, StoreError> {
    // No stored id or key holds NUL (strings refuse it); Postgres could
    // not even be asked.
    if id_or_key.contains('\0') {
        return Ok(None);
    }
    if super::checks::is_uuid(id_or_key)
        && let Some(v) = l.get(d.name, id_or_key).await?
    {
        return Ok(Some((id_or_key.to_string(), v)));
    }
    if let Some(k) = d.endpoint_key
        && let Some(id) = l.find_key(d.name, &d.key_entry(k, id_or_key)).await?
        && let Some(v) = l.get(d.name, &id).await?
    {
        return Ok(Some((id, v)));
    }
    Ok(None)
}

/// Finds an entity as a URL names it, under its parent when nested. A
/// target is unique only within its upstream, so its `host[:port]` names
/// it only under `/upstreams/{u}/targets/`.
pub async fn resolve_in<L: Lookup>(
    l: &mut L,
    d: &EntityDef,
    id_or_key: &str,
    parent: Option<&Parent>,
) -> Result<Option<(String, Value)>, StoreError> {
    if let Some(found) = resolve_id(l, d, id_or_key).await? {
        return Ok(Some(found));
    }
    if d.name == "targets"
        && let Some(p) = parent.filter(|p| p.field == "upstream")
    {
        let key = format!("cache={}|{}", p.id, target_with_port(id_or_key));
        if let Some(id) = l.find_key(d.name, &key).await?
            && let Some(v) = l.get(d.name, &id).await?
        {
            return Ok(Some((id, v)));
        }
    }
    Ok(None)
}

/// Kong stores targets with their port: `host` becomes `host:8000`.
fn target_with_port(t: &str) -> String {
    if super::checks::split_host_port(t).1.is_some() {
        t.to_string()
    } else if t.starts_with('[') {
        format!("{t}:8000")
    } else if t.contains(':') {
        format!("[{t}]:8000")
    } else {
        format!("{t}:8000")
    }
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A copy safe to show: secrets replaced, plugin configs included.
pub fn redacted(d: &EntityDef, v: &Value) -> Value {
    let mut out = v.clone();
    schema::redact(&d.schema, &mut out);
    if d.name == "plugins"
        && let Some(s) = out["name"].as_str().and_then(crate::plugins::config_schema)
    {
        schema::redact(s, &mut out["config"]);
    }
    out
}

/// Kong's shorthands, expanded before validation.
fn expand_shorthands(d: &EntityDef, input: &mut Value) -> Result<(), FieldErrors> {
    let Some(obj) = input.as_object_mut() else {
        return Ok(());
    };
    if d.name == "services"
        && let Some(u) = obj.remove("url").filter(|u| !u.is_null())
    {
        let Some(s) = u.as_str() else {
            return Err(field_error("url", "expected a string"));
        };
        if s.len() > super::checks::HOST_MAX || !crate::schema::matches(super::checks::URL, s) {
            return Err(field_error("url", format!("invalid url: {s}")));
        }
        let parsed =
            url::Url::parse(s).map_err(|_| field_error("url", format!("invalid url: {s}")))?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| field_error("url", "missing host in url"))?;
        let scheme = parsed.scheme().to_string();
        let port = parsed
            .port()
            .map(i64::from)
            .unwrap_or(match scheme.as_str() {
                "https" | "grpcs" | "wss" | "tls" => 443,
                _ => 80,
            });
        // Kong keeps `path` null for `http://host`, "/" for `http://host/`.
        let after_authority = s.split_once("://").map(|(_, r)| r).unwrap_or("");
        let path = match after_authority.find('/') {
            Some(_) => Value::String(parsed.path().to_string()),
            None => Value::Null,
        };
        obj.insert("protocol".into(), Value::String(scheme));
        obj.insert(
            "host".into(),
            Value::String(host.trim_matches(['[', ']']).to_string()),
        );
        obj.insert("port".into(), Value::from(port));
        obj.insert("path".into(), path);
    }
    Ok(())
}

/// Validates and normalises input for `d` (schema, then plugin config).
pub(crate) fn check(d: &EntityDef, input: &Value, mode: Input) -> Result<Value, EntityError> {
    let mut input = input.clone();
    expand_shorthands(d, &mut input).map_err(EntityError::Schema)?;
    let mut v = validate(&d.schema, &input, mode).map_err(EntityError::Schema)?;
    if d.name == "plugins" {
        check_plugin(&mut v, mode).map_err(EntityError::Schema)?;
    }
    if d.name == "targets"
        && let Some(t) = v["target"].as_str()
    {
        v["target"] = Value::String(target_with_port(t));
    }
    if d.name == "ca_certificates" {
        // Kong computes the digest on write; whatever the client sent is replaced.
        let facts = super::x509::inspect(v["cert"].as_str().unwrap_or_default())
            .map_err(|e| EntityError::Schema(field_error("cert", e.to_string())))?;
        v["cert_digest"] = Value::String(facts.digest);
    }
    Ok(v)
}

fn check_plugin(v: &mut Value, mode: Input) -> Result<(), FieldErrors> {
    let name = v["name"].as_str().unwrap_or_default().to_string();
    v["config"] = crate::plugins::validate_config(&name, &v["config"], mode)?;
    // What gantry-proxy cannot run is refused here, not NACKed by the fleet.
    if gantry_proxy::plugins::SUPPORTED.contains(&name.as_str()) {
        gantry_proxy::plugins::check_config(&name, &v["config"])
            .map_err(|e| field_error("config", e))?;
    }
    if !v["consumer"].is_null() && !crate::plugins::allows_consumer(&name) {
        return Err(field_error("consumer", "value must be null"));
    }
    if v["protocols"].is_null() {
        v["protocols"] = json!(crate::plugins::default_protocols(&name));
    }
    Ok(())
}

/// Sets the parent's foreign key on nested writes; what the body said
/// there is checked first, so a malformed value is refused, not dropped.
fn apply_parent(
    d: &EntityDef,
    input: &mut Value,
    parent: Option<&Parent>,
    mode: Input,
) -> Result<(), EntityError> {
    if let Some(p) = parent {
        check_replaced(d, input, &[p.field], mode)?;
        if let Some(obj) = input.as_object_mut() {
            obj.insert(p.field.to_string(), json!({ "id": p.id }));
        }
    }
    Ok(())
}

/// Checks the body's values of fields the URL is about to replace.
fn check_replaced(
    d: &EntityDef,
    input: &Value,
    fields: &[&str],
    mode: Input,
) -> Result<(), EntityError> {
    let mut errors = Map::new();
    for name in fields {
        if let (Some(v), Some(f)) = (input.get(*name), d.schema.get(name))
            && let Err(e) = schema::check_value(f, v, mode)
        {
            errors.insert((*name).to_string(), e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(EntityError::Schema(errors))
    }
}

fn belongs(v: &Value, parent: Option<&Parent>) -> bool {
    parent.is_none_or(|p| v[p.field]["id"].as_str() == Some(p.id.as_str()))
}

/// POST: creates a new entity.
pub async fn create(
    tx: &mut WriteTx,
    d: &'static EntityDef,
    mut input: Value,
    mode: Input,
    parent: Option<&Parent>,
) -> Result<Value, EntityError> {
    apply_parent(d, &mut input, parent, mode)?;
    let v = check(d, &input, mode)?;
    if let Some(id) = v["id"].as_str()
        && tx.get(d.name, id).await?.is_some()
    {
        return Err(EntityError::PrimaryKey(id.to_string()));
    }
    save(tx, d, v, None).await
}

/// PUT: creates or replaces the entity named by `id_or_key`.
pub async fn upsert(
    tx: &mut WriteTx,
    d: &'static EntityDef,
    id_or_key: &str,
    mut input: Value,
    mode: Input,
    parent: Option<&Parent>,
) -> Result<(Value, bool), EntityError> {
    apply_parent(d, &mut input, parent, mode)?;
    let existing = resolve_in(tx, d, id_or_key, parent).await?;
    if let Some((_, ev)) = &existing
        && !belongs(ev, parent)
    {
        return Err(EntityError::NotFound);
    }
    let by_id = super::checks::is_uuid(id_or_key);
    let mut replaced = vec!["id"];
    if let (false, Some(k)) = (by_id, d.endpoint_key) {
        replaced.push(k);
    }
    check_replaced(d, &input, &replaced, mode)?;
    if let Some(obj) = input.as_object_mut() {
        match (&existing, d.endpoint_key) {
            (Some((id, _)), _) => {
                obj.insert("id".into(), Value::String(id.clone()));
            }
            (None, _) if by_id => {
                obj.insert("id".into(), Value::String(id_or_key.to_string()));
            }
            (None, None) => return Err(EntityError::NotFound),
            (None, Some(_)) => {}
        }
        // As Kong's `upsert_by_<key>`: the key in the URL is the entity's,
        // whether it is created or replaced.
        if let (false, Some(k)) = (by_id, d.endpoint_key) {
            obj.insert(k.into(), Value::String(id_or_key.to_string()));
        }
    }
    let v = check(d, &input, mode)?;
    let created = existing.is_none();
    Ok((save(tx, d, v, existing.map(|(_, v)| v)).await?, created))
}

/// PATCH: merges `patch` into the existing entity.
pub async fn update(
    tx: &mut WriteTx,
    d: &'static EntityDef,
    id_or_key: &str,
    mut patch: Value,
    mode: Input,
    parent: Option<&Parent>,
) -> Result<Value, EntityError> {
    let Some((id, existing)) = resolve_in(tx, d, id_or_key, parent).await? else {
        return Err(EntityError::NotFound);
    };
    if !belongs(&existing, parent) {
        return Err(EntityError::NotFound);
    }
    apply_parent(d, &mut patch, parent, mode)?;
    // The id is the URL's; one in the body must still be an id.
    check_replaced(d, &patch, &["id"], mode)?;
    let mut merged = existing.clone();
    if d.name == "services" && patch.get("url").is_some() {
        // The url shorthand replaces all four of its fields.
        for f in ["protocol", "host", "port", "path"] {
            merged.as_object_mut().map(|o| o.remove(f));
        }
    }
    if d.name == "plugins" {
        // Legacy shorthands move to their place before the merge, as in
        // Kong, so a PATCH of `redis_host` updates `redis.host`.
        let name = patch["name"]
            .as_str()
            .or(existing["name"].as_str())
            .unwrap_or_default()
            .to_string();
        if let Some(cfg) = patch.get_mut("config").filter(|c| c.is_object()) {
            crate::plugins::normalize(&name, cfg).map_err(|e| {
                let mut m = Map::new();
                m.insert("config".into(), Value::Object(e));
                EntityError::Schema(m)
            })?;
        }
    }
    merge(&d.schema, &mut merged, &patch);
    if let Some(o) = merged.as_object_mut() {
        o.insert("id".into(), Value::String(id));
    }
    let v = check(d, &merged, mode)?;
    save(tx, d, v, Some(existing)).await
}

/// Deep-merges records (and plugin configs); everything else is replaced.
fn merge(s: &schema::Record, base: &mut Value, patch: &Value) {
    let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) else {
        *base = patch.clone();
        return;
    };
    for (k, pv) in p {
        match (s.get(k).map(|f| &f.ty), b.get_mut(k)) {
            (Some(Ty::Record(r)), Some(bv)) if bv.is_object() && pv.is_object() => merge(r, bv, pv),
            (Some(Ty::Json), Some(bv)) if bv.is_object() && pv.is_object() => merge_json(bv, pv),
            _ => {
                b.insert(k.clone(), pv.clone());
            }
        }
    }
}

fn merge_json(base: &mut Value, patch: &Value) {
    match (base.as_object_mut(), patch.as_object()) {
        (Some(b), Some(p)) => {
            for (k, pv) in p {
                match b.get_mut(k) {
                    Some(bv) if bv.is_object() && pv.is_object() => merge_json(bv, pv),
                    _ => {
                        b.insert(k.clone(), pv.clone());
                    }
                }
            }
        }
        _ => *base = patch.clone(),
    }
}

/// Resolves references, fills generated fields, enforces uniqueness and
/// writes the entity.
async fn save(
    tx: &mut WriteTx,
    d: &'static EntityDef,
    mut v: Value,
    existing: Option<Value>,
) -> Result<Value, EntityError> {
    let id = match v["id"].as_str() {
        Some(id) => id.to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    v["id"] = Value::String(id.clone());
    let now = now_s();
    v["created_at"] = match (&existing, &v["created_at"]) {
        (Some(e), _) if !e["created_at"].is_null() => e["created_at"].clone(),
        (_, Value::Number(n)) => Value::Number(n.clone()),
        _ => Value::from(now),
    };
    if d.updated_at {
        v["updated_at"] = Value::from(now);
    }
    match d.name {
        "keyauth_credentials" if v["key"].is_null() => v["key"] = Value::String(random_token()),
        "jwt_secrets" => {
            if v["key"].is_null() {
                v["key"] = Value::String(random_token());
            }
            if v["secret"].is_null() && v["algorithm"].as_str().is_some_and(|a| a.starts_with("HS"))
            {
                v["secret"] = Value::String(random_token());
            }
        }
        _ => {}
    }
    // The certificate's `snis` shorthand becomes SNI entities.
    let cert_snis = if d.name == "certificates" {
        v.get_mut("snis").map(Value::take)
    } else {
        None
    };

    let mut refs = Vec::new();
    for f in d.foreign {
        let r = &v[f.field];
        if r.is_null() {
            continue;
        }
        let target = def(f.kind).expect("foreign kinds are defined");
        if f.many {
            // An array of ids: each must exist; the array is kept as given.
            for want in r.as_array().into_iter().flatten().filter_map(Value::as_str) {
                let Some((rid, _)) = resolve_id(tx, target, want).await? else {
                    return Err(EntityError::ForeignKey {
                        field: f.field.into(),
                        kind: f.kind.into(),
                        id: want.into(),
                    });
                };
                let pair = (f.kind.to_string(), rid);
                if !refs.contains(&pair) {
                    refs.push(pair);
                }
            }
            continue;
        }
        let want = r["id"]
            .as_str()
            .or_else(|| r["name"].as_str())
            .or_else(|| r["username"].as_str())
            .unwrap_or_default();
        let Some((rid, _)) = resolve_id(tx, target, want).await? else {
            return Err(EntityError::ForeignKey {
                field: f.field.into(),
                kind: f.kind.into(),
                id: want.into(),
            });
        };
        v[f.field] = json!({ "id": rid });
        refs.push((f.kind.to_string(), rid));
    }
    let keys = d.keys(&v);
    for key in &keys {
        if let Some(other) = tx.find_key(d.name, key).await?
            && other != id
        {
            return Err(EntityError::Unique(unique_fields(d, key, &v)));
        }
    }
    let tags = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let index = Index { keys, refs, tags };
    let op = if existing.is_some() {
        "update"
    } else {
        "create"
    };
    let before = existing.as_ref().map(|e| redacted(d, e));
    // A write that would change nothing but `updated_at` changes nothing:
    // no new version, no revision (the certificate's SNIs may still move).
    let unchanged = existing.as_ref().is_some_and(|e| {
        let mut same = v.clone();
        if d.updated_at {
            same["updated_at"] = e["updated_at"].clone();
        }
        *e == same
    });
    if unchanged {
        if let Some(e) = &existing {
            v = e.clone();
        }
    } else {
        let after = redacted(d, &v);
        tx.put(d.name, &id, &v, &index, op, before.as_ref(), Some(&after))
            .await?;
    }
    if let Some(Value::Array(names)) = cert_snis {
        sync_cert_snis(tx, &id, &names).await?;
    }
    Ok(v)
}

/// The fields a unique key is made of, as the 409 shows them: a secret one
/// (a key-auth key) redacted, so a conflict does not echo it.
fn unique_fields(d: &EntityDef, key: &str, v: &Value) -> Value {
    let mut out = if key.starts_with("cache=") {
        let mut m = Map::new();
        for f in d.cache_key {
            m.insert((*f).to_string(), v[*f].clone());
        }
        Value::Object(m)
    } else {
        let (f, val) = key.split_once('=').unwrap_or((key, ""));
        json!({ f: val })
    };
    schema::redact(&d.schema, &mut out);
    out
}

/// Makes the certificate's SNIs exactly `names`. Boxed: it creates SNIs
/// through `create`, which reaches back here for certificates.
fn sync_cert_snis<'a>(
    tx: &'a mut WriteTx,
    cert_id: &'a str,
    names: &'a [Value],
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), EntityError>> + Send + 'a>> {
    Box::pin(sync_cert_snis_inner(tx, cert_id, names))
}

async fn sync_cert_snis_inner(
    tx: &mut WriteTx,
    cert_id: &str,
    names: &[Value],
) -> Result<(), EntityError> {
    let sd = def("snis").expect("snis are defined");
    let mut wanted: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
    for (kind, sid) in tx.referencing("certificates", cert_id).await? {
        if kind != "snis" {
            continue;
        }
        let Some(sv) = tx.get("snis", &sid).await? else {
            continue;
        };
        let name = sv["name"].as_str().unwrap_or_default();
        if let Some(pos) = wanted.iter().position(|w| *w == name) {
            wanted.remove(pos);
        } else {
            delete(tx, sd, &sid, None).await?;
        }
    }
    for name in wanted {
        create(
            tx,
            sd,
            json!({ "name": name, "certificate": { "id": cert_id } }),
            Input::Json,
            None,
        )
        .await?;
    }
    Ok(())
}

/// DELETE: removes the entity and what cascades from it. Deleting what
/// does not exist succeeds, as in Kong.
pub async fn delete(
    tx: &mut WriteTx,
    d: &'static EntityDef,
    id_or_key: &str,
    parent: Option<&Parent>,
) -> Result<(), EntityError> {
    let Some((id, existing)) = resolve_in(tx, d, id_or_key, parent).await? else {
        return Ok(());
    };
    if !belongs(&existing, parent) {
        return Err(EntityError::NotFound);
    }
    delete_id(tx, d, &id, &existing).await
}

fn delete_id<'a>(
    tx: &'a mut WriteTx,
    d: &'static EntityDef,
    id: &'a str,
    existing: &'a Value,
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), EntityError>> + Send + 'a>> {
    Box::pin(async move {
        let referrers = tx.referencing(d.name, id).await?;
        // Refuse before cascading anything, so the error names the blocker.
        for (rk, rid) in &referrers {
            let rd = def(rk).expect("referencing kinds are defined");
            let Some(f) = rd.foreign_field(d.name).filter(|f| !f.cascade) else {
                continue;
            };
            return Err(if f.many {
                EntityError::StillReferenced {
                    kind: d.name,
                    id: id.to_string(),
                    by: rd.name,
                    by_id: rid.clone(),
                }
            } else {
                EntityError::Referenced {
                    kind: d.name.into(),
                    by: rk.clone(),
                }
            });
        }
        for (rk, rid) in referrers {
            let rd = def(&rk).expect("referencing kinds are defined");
            if let Some(rv) = tx.get(&rk, &rid).await? {
                delete_id(tx, rd, &rid, &rv).await?;
            }
        }
        tx.delete(d.name, id, Some(&redacted(d, existing))).await?;
        Ok(())
    })
}
