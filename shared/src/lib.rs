//! Code both planes share: logging set-up and the xDS vocabulary.

pub mod descriptors;
pub mod key_digest;
pub mod proto;
pub mod redact;
pub mod telemetry;
pub mod vault;
pub mod xds;
