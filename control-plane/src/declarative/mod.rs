//! Kong's declarative configuration (`_format_version: "3.0"`): parsing a
//! document, flattening it into entity inputs, applying it as one atomic
//! replacement of the whole configuration, and exporting the current
//! configuration losslessly, with secrets sealed.
//!
//! The usual import is `parse_document` → `flatten` → `replace` inside one
//! write transaction; `export` is its inverse.

#[cfg(test)]
mod db_tests;
mod export;
mod flatten;
mod parse;
mod replace;
#[cfg(test)]
mod tests;

pub use export::export;
pub use flatten::flatten;
pub use parse::parse_document;
pub use replace::replace;

use crate::entities::EntityError;
use crate::schema::{FieldErrors, merge_errors, summarize};
use crate::store::StoreError;
use serde_json::{Map, Value};

/// Kong's error code for an invalid declarative configuration.
pub const INVALID_CODE: i64 = 14;
/// Kong's error name for an invalid declarative configuration.
pub const INVALID_NAME: &str = "invalid declarative configuration";

#[derive(Debug, thiserror::Error)]
pub enum DeclarativeError {
    /// The body is not JSON or YAML (or an empty body): a plain 400.
    #[error("failed parsing declarative configuration: {0}")]
    Parse(String),
    /// Kong's code 14; the tree follows the document's shape, by
    /// collection and index: `{"services": [{"routes": [{"paths": [...]}]}]}`.
    #[error("declarative config is invalid: {}", summarize(.0))]
    Invalid(FieldErrors),
    /// An entity that validated alone but could not be written (foreign
    /// key, uniqueness...). `entity` names it by its endpoint key or id.
    #[error("{collection} '{entity}': {source}")]
    Entity {
        collection: &'static str,
        entity: String,
        #[source]
        source: EntityError,
    },
    /// A sealed secret that cannot be opened; never contains the secret.
    #[error("{0}")]
    Unseal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DeclarativeError {
    /// The field-error tree, for the `fields` member of Kong's error body.
    pub fn fields(&self) -> Option<&FieldErrors> {
        match self {
            DeclarativeError::Invalid(f) => Some(f),
            DeclarativeError::Entity {
                source: EntityError::Schema(f),
                ..
            } => Some(f),
            _ => None,
        }
    }
}

/// One step of a position inside the document.
#[derive(Clone, Debug)]
pub(crate) enum Seg {
    Key(&'static str),
    Index(usize),
}

/// `services[0].routes[2]`, for messages that cannot carry a tree.
pub(crate) fn path_label(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Places `err` at `path` in Kong's error tree: arrays padded with nulls
/// (as Kong's sparse Lua tables encode), entity objects merged so an
/// entity's own errors sit beside its children's.
pub(crate) fn put_error(tree: &mut FieldErrors, path: &[Seg], err: Value) {
    let mut root = Value::Object(std::mem::take(tree));
    put(&mut root, path, err);
    if let Value::Object(m) = root {
        *tree = m;
    }
}

fn put(slot: &mut Value, path: &[Seg], err: Value) {
    match path.split_first() {
        None => match (slot, err) {
            (Value::Object(into), Value::Object(more)) => merge_errors(into, more),
            (slot, err) => *slot = err,
        },
        Some((Seg::Key(k), rest)) => {
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(m) = slot {
                put(m.entry(k.to_string()).or_insert(Value::Null), rest, err);
            }
        }
        Some((Seg::Index(i), rest)) => {
            if !slot.is_array() {
                *slot = Value::Array(Vec::new());
            }
            if let Value::Array(a) = slot {
                if a.len() <= *i {
                    a.resize(*i + 1, Value::Null);
                }
                put(&mut a[*i], rest, err);
            }
        }
    }
}

/// `flatten` gives every entity without an id a provisional one, so nested
/// entities can point at their parent before the store is consulted;
/// `replace` then swaps it for the id of the matching current entity (by
/// unique or cache key), keeping ids stable across re-imports of documents
/// without ids. Provisional ids are UUIDv8 with a fixed 48-bit marker, so
/// no id a user or Gantry generates is mistaken for one.
const PROVISIONAL_MARK: [u8; 6] = *b"gntry\x01";

pub(crate) fn provisional_id() -> String {
    let mut b = *uuid::Uuid::new_v4().as_bytes();
    b[..6].copy_from_slice(&PROVISIONAL_MARK);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    uuid::Uuid::from_bytes(b).to_string()
}

pub(crate) fn is_provisional(id: &str) -> bool {
    uuid::Uuid::parse_str(id)
        .is_ok_and(|u| u.get_version_num() == 8 && u.as_bytes()[..6] == PROVISIONAL_MARK)
}

/// Fields Gantry generates when absent; an import that leaves them out
/// keeps the current value instead of generating a new one.
pub(crate) const GENERATED: &[(&str, &str)] = &[
    ("keyauth_credentials", "key"),
    ("jwt_secrets", "key"),
    ("jwt_secrets", "secret"),
];

pub(crate) fn generated(kind: &str) -> impl Iterator<Item = &'static str> + '_ {
    GENERATED
        .iter()
        .filter(move |(k, _)| *k == kind)
        .map(|(_, f)| *f)
}
