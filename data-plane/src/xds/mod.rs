//! The delta-ADS client (xDS v3, `DeltaAggregatedResources`).
//!
//! - On connect: wildcard CDS, LDS and Gantry's route entries, then RDS,
//!   EDS and SDS by name, for exactly the names the held listeners and
//!   clusters reference ([`refs`]); `initial_resource_versions` of
//!   everything held, per type.
//! - Each response is turned into a candidate whole configuration (held
//!   state + that response's updates and removals) and handed to the
//!   [`Applier`]: accepted → committed, ACKed, subscriptions follow the new
//!   references, snapshot file rewritten; refused (or undecodable) → NACK
//!   with `error_detail` (code 3), state untouched.
//! - Reconnects forever with full-jitter exponential backoff ([`backoff`]),
//!   failing over across addresses; nothing is cleared while disconnected.
//! - `https://` addresses are dialled over TLS, mutual with a client
//!   certificate, reloaded from files on change ([`tls`]).
//! - The last good state is kept on disk ([`snapshot_file`]) so that a
//!   restart without a control plane still serves.

pub mod backoff;
mod client;
pub mod refs;
pub mod snapshot_file;
pub mod state;
pub mod tls;

pub use client::{
    Applier, ClientConfig, ClientStatus, ConfigSource, HeldResources, NackStatus, Tuning,
    TypeStatus, USER_AGENT_NAME, XdsClient,
};
