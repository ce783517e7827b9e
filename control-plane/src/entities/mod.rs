//! Kong's entities: their schemas, keys and references, and the
//! operations (create, upsert, update, delete) that keep them consistent
//! inside one write transaction.

pub(crate) mod checks;
mod defs;
mod ops;
pub(crate) mod secrets;
mod x509;

pub use defs::{ALL, EntityDef, Foreign, TAG_MAX, def, def_by_path};
/// Validation and normalisation without a transaction (declarative import).
pub(crate) use ops::check;
pub use ops::{
    EntityError, Parent, create, delete, redacted, resolve_id, resolve_in, update, upsert,
};
