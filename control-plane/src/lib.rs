//! Gantry's control plane: the config store, the Kong-shaped admin API,
//! config revisions and the audit trail.

pub mod admin;
pub mod admission;
pub mod at_rest;
pub mod certs;
pub mod declarative;
pub mod entities;
pub mod keyring;
pub mod memory;
pub mod metrics;
pub mod plugins;
pub mod rbac;
pub mod schema;
pub mod seal;
pub mod store;
pub mod translator;
pub mod xds;
