//! Code both planes share: logging set-up and the xDS vocabulary.

pub mod telemetry;
pub mod xds;
