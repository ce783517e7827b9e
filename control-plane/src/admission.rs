//! Admission: a write is committed only if every proxy can apply it.
//!
//! Before a write commits, what it created or changed is translated for
//! both node flavours and compiled by gantry-proxy's own compiler (the
//! `gantry_proxy::config` crate module, not a restatement of it). Whatever
//! gantry-proxy would refuse is refused here, with a 400, and nothing is
//! stored: a NACK from the fleet is then a bug, never the routine outcome
//! of an accepted write that would freeze every later change.
//!
//! An entity write is checked with its neighbourhood, not the whole
//! configuration, so its cost does not grow with the configuration: the
//! entity, everything it references (a route's service, a plugin's route
//! and consumer, a credential's consumer, a service's upstream and its
//! targets and certificates), and what its own translation feeds (a
//! service's routes, a consumer's credentials, a certificate's SNIs). What
//! the translator reads only from the whole (route precedence, SNI
//! uniqueness) is held by the store's constraints; a whole document
//! (`POST /config`, a rollback, `gantry-cp apply`) is checked whole.

use crate::entities::def;
use crate::schema::{FieldErrors, Input, entity_error};
use crate::store::{StoreError, Stored, WriteTx};
use crate::translator::{self, Flavour, ProxyOptions};
use gantry_proxy::config::ResourceSet;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// What the fleet would refuse, said on the entity (Kong's `@entity`).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdmissionError {
    /// Kong's field-error tree for the refusal.
    pub fn fields(&self) -> FieldErrors {
        entity_error(self.to_string())
    }
}

/// Checks the entities the transaction wrote, with their neighbourhood.
pub async fn check_written(tx: &mut WriteTx, opts: &ProxyOptions) -> Result<(), AdmissionError> {
    let seeds: Vec<(String, String)> = tx.written().to_vec();
    if seeds.is_empty() {
        return Ok(());
    }
    let entities = neighbourhood(tx, &seeds).await?;
    check_off_runtime(entities, opts).await
}

/// Checks the whole configuration as the transaction leaves it.
pub async fn check_all(tx: &mut WriteTx, opts: &ProxyOptions) -> Result<(), AdmissionError> {
    let entities = tx.all_current().await?;
    check_off_runtime(entities, opts).await
}

/// Up to this many entities, a check takes well under a millisecond and
/// runs where it is; handing it to a blocking thread would cost the
/// writer (who holds the write lock) two thread switches.
const INLINE_CHECK: usize = 32;

/// Translating and compiling a large configuration takes CPU for a while:
/// on a blocking thread, so the admin API's other requests are served.
async fn check_off_runtime(
    entities: Vec<Stored>,
    opts: &ProxyOptions,
) -> Result<(), AdmissionError> {
    if entities.len() <= INLINE_CHECK {
        return check(&entities, opts);
    }
    let opts = opts.clone();
    tokio::task::spawn_blocking(move || check(&entities, &opts))
        .await
        .map_err(|e| AdmissionError::Refused(format!("the check did not finish: {e}")))?
}

/// Translates `entities` for both flavours and compiles gantry-proxy's
/// resources with gantry-proxy's compiler.
pub fn check(entities: &[Stored], opts: &ProxyOptions) -> Result<(), AdmissionError> {
    let mut translations =
        translator::translate_flavours(entities, &[Flavour::GantryProxy, Flavour::Envoy], opts)
            .map_err(|e| AdmissionError::Refused(e.to_string()))?;
    let proxy = translations.swap_remove(0).into_resources();
    let set = ResourceSet {
        listeners: by_name(proxy.listeners, |l| &l.name),
        routes: by_name(proxy.routes, |r| &r.name),
        route_entries: by_name(proxy.route_entries, |e| &e.name),
        clusters: by_name(proxy.clusters, |c| &c.name),
        endpoints: by_name(proxy.endpoints, |e| &e.cluster_name),
        secrets: by_name(proxy.secrets, |s| &s.name),
        fences: Default::default(),
    };
    // Vault references are checked, not resolved: the node resolves them
    // from its own environment (and refuses, fenced, if it cannot).
    gantry_shared::vault::with_deferred(|| gantry_proxy::config::compile(&set))
        .map(drop)
        .map_err(|e| AdmissionError::Refused(format!("gantry-proxy would refuse it: {e}")))
}

fn by_name<T>(v: Vec<T>, name: impl Fn(&T) -> &String) -> BTreeMap<String, T> {
    v.into_iter().map(|x| (name(&x).clone(), x)).collect()
}

/// What a written entity's own translation feeds, beyond what it references.
const FEEDS: &[(&str, &[&str])] = &[
    ("services", &["routes"]),
    ("consumers", &["keyauth_credentials", "jwt_secrets", "acls"]),
    ("certificates", &["snis"]),
    ("upstreams", &["targets"]),
];

/// The written entities, what their translation feeds, and everything any
/// of those references, transitively, as they stand in the transaction.
async fn neighbourhood(
    tx: &mut WriteTx,
    seeds: &[(String, String)],
) -> Result<Vec<Stored>, StoreError> {
    let mut todo: Vec<(String, String)> = Vec::new();
    for (kind, id) in seeds {
        todo.push((kind.clone(), id.clone()));
        if let Some((_, fed)) = FEEDS.iter().find(|(k, _)| k == kind) {
            for (rk, rid) in tx.referencing(kind, id).await? {
                if fed.contains(&rk.as_str()) {
                    todo.push((rk, rid));
                }
            }
        }
    }
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut out = Vec::new();
    while let Some((kind, id)) = todo.pop() {
        if !seen.insert((kind.clone(), id.clone())) {
            continue;
        }
        // Deleted in the same transaction: nothing to translate.
        let Some(data) = tx.get(&kind, &id).await? else {
            continue;
        };
        let Some(d) = def(&kind) else { continue };
        for f in d.foreign {
            let r = &data[f.field];
            if f.many {
                for rid in r.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    todo.push((f.kind.to_string(), rid.to_string()));
                }
            } else if let Some(rid) = r["id"].as_str() {
                todo.push((f.kind.to_string(), rid.to_string()));
            }
        }
        // A service names its upstream by host; the upstream's cluster
        // needs its targets.
        if kind == "services"
            && let Some(host) = data["host"].as_str()
            && let Some(uid) = tx.find_key("upstreams", &format!("name={host}")).await?
        {
            todo.push(("upstreams".into(), uid.clone()));
            for (rk, rid) in tx.referencing("upstreams", &uid).await? {
                if rk == "targets" {
                    todo.push((rk, rid));
                }
            }
        }
        out.push(Stored { kind, id, data });
    }
    // An upstream becomes a cluster only through a service naming it: one
    // stands in for the services that do.
    let hosts: BTreeSet<String> = out
        .iter()
        .filter(|s| s.kind == "services")
        .filter_map(|s| s.data["host"].as_str().map(str::to_string))
        .collect();
    let orphans: Vec<String> = out
        .iter()
        .filter(|s| s.kind == "upstreams")
        .filter_map(|s| s.data["name"].as_str())
        .filter(|n| !hosts.contains(*n))
        .map(str::to_string)
        .collect();
    for (i, name) in orphans.into_iter().enumerate() {
        out.push(stand_in(
            "services",
            i,
            json!({ "name": format!("admission-{i}"), "host": name }),
        ));
    }
    // Likewise a certificate becomes a secret only once an SNI (or a
    // service) uses it: it is checked now, not when the first SNI comes.
    let served: BTreeSet<String> = out
        .iter()
        .filter(|s| s.kind == "snis")
        .filter_map(|s| s.data["certificate"]["id"].as_str().map(str::to_string))
        .collect();
    let unserved: Vec<String> = out
        .iter()
        .filter(|s| s.kind == "certificates" && !served.contains(&s.id))
        .map(|s| s.id.clone())
        .collect();
    for (i, cert) in unserved.into_iter().enumerate() {
        let name = format!("admission-{i}.invalid");
        out.push(stand_in(
            "snis",
            i,
            json!({ "name": name, "certificate": { "id": cert } }),
        ));
    }
    Ok(out)
}

/// An entity that stands in for others during the check, as the schema
/// would store it.
fn stand_in(kind: &str, i: usize, mut input: Value) -> Stored {
    let d = def(kind).expect("stand-in kinds are defined");
    let id = format!("00000000-0000-4000-8000-{i:012}");
    input["id"] = Value::String(id.clone());
    let data = crate::schema::validate(&d.schema, &input, Input::Json).unwrap_or(input);
    Stored {
        kind: kind.into(),
        id,
        data,
    }
}
