//! The proxy: listeners, the request path, upstream pools and load
//! balancing, all reading the runtime that is current when a request starts.

pub mod access_log;
pub mod admin;
pub mod codec_rules;
pub mod config_dump;
pub mod handler;
pub mod headers;
pub mod health;
pub mod kong_metrics;
pub mod lb;
pub mod listeners;
pub mod mirror;
pub mod outlier;
pub mod phases;
pub mod request_head;
pub mod runtime;
pub mod stats;
pub mod tls;
