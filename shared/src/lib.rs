//! Code both planes share: logging set-up and the xDS vocabulary.

pub mod proto;
pub mod telemetry;
pub mod xds;
