//! Gantry's own protos, generated from `proto/` at build time.

pub mod plugins {
    //! `gantry.filters.http.plugins.v1`: Kong's plugins as one HTTP filter.
    include!(concat!(
        env!("OUT_DIR"),
        "/gantry.filters.http.plugins.v1.rs"
    ));

    /// The filter's name in a listener's HTTP filter chain, and the key of
    /// its per-route config.
    pub const FILTER_NAME: &str = "gantry.filters.http.plugins";
    pub const GATEWAY_TYPE: &str = "type.googleapis.com/gantry.filters.http.plugins.v1.Gateway";
    pub const PER_ROUTE_TYPE: &str = "type.googleapis.com/gantry.filters.http.plugins.v1.PerRoute";

    /// The Kong plugins gantry-proxy runs. It refuses a config naming any
    /// other; the control plane lists the others per node at `/fleet`.
    pub const GANTRY_PROXY_RUNS: &[&str] = &[
        "acl",
        "correlation-id",
        "cors",
        "ip-restriction",
        "jwt",
        "key-auth",
        "proxy-cache",
        "rate-limiting",
        "request-size-limiting",
        "request-transformer",
        "request-validator",
        "response-transformer",
    ];
}
