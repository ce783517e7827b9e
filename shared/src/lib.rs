//! Code both planes share: logging set-up and the xDS vocabulary.

pub mod key_digest;
pub mod proto;
pub mod telemetry;
pub mod vault;
pub mod xds;
