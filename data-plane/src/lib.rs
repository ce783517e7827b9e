//! gantry-proxy: the data plane. An xDS client feeds Envoy resources,
//! which are compiled into an immutable runtime and swapped in atomically;
//! the proxy serves every request from the runtime it started on.

pub mod body;
pub mod config;
pub mod memory;
pub mod plugins;
pub mod proxy;
pub mod re2;
pub mod upstream;
pub mod xds;
