//! Admin API RBAC in Kong Enterprise's shape: users hold tokens, roles
//! hold endpoint and entity permissions, users have roles.
//!
//! Gantry's addition is the team scope: a role with `tags` grants its
//! permissions only on entities that carry one of those tags (see
//! `perm.rs`). Users and roles are not proxy configuration: they live in
//! their own tables (`store.rs`), outside config revisions and exports.

pub mod perm;
pub mod store;
pub mod token;

pub use perm::{Action, EndpointRule, EntityRef, EntityRule, Principal, RoleGrant};
pub use store::RbacError;
