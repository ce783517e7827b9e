//! Code both planes share. Today: logging set-up; the generated protos,
//! xDS type URLs and wire model types join it with the xDS server.

pub mod telemetry;
