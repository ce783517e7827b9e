//! xDS type URLs, and the order in which a management server must push
//! them so that nothing references what the proxy does not have yet.

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// Gantry's per-Kong-route share of a route configuration, served to
/// gantry-proxy nodes only (`proto/gantry/config/route/v1/route_entry.proto`).
pub const ROUTE_ENTRY: &str = crate::proto::route::TYPE;

/// Make-before-break: clusters and their endpoints first, then the
/// secrets listeners use, then listeners, then the route configurations
/// they load, then the route entries that fill those (gantry-proxy nodes).
pub const PUSH_ORDER: [&str; 6] = [CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE, ROUTE_ENTRY];

/// Types a proxy subscribes to without naming resources (Envoy's
/// wildcard types); the others are requested by name.
pub fn is_wildcard_type(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER || type_url == ROUTE_ENTRY
}

/// The short name used in logs and the fleet view.
pub fn short_name(type_url: &str) -> &str {
    match type_url {
        LISTENER => "LDS",
        ROUTE => "RDS",
        CLUSTER => "CDS",
        ENDPOINT => "EDS",
        SECRET => "SDS",
        ROUTE_ENTRY => "RouteEntry",
        other => other.rsplit('.').next().unwrap_or(other),
    }
}
