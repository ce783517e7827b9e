//! Kong's `rate-limiting` for Envoy nodes, as a route's own
//! `envoy.filters.http.local_ratelimit` token bucket: `max_tokens` and
//! `tokens_per_fill` the limit, `fill_interval` the window.
//!
//! Envoy's per-route bucket belongs to that route, and gantry-proxy counts
//! per instance (and client), so an instance is expressed only where the
//! two count the same requests: it applies to one route, no other
//! rate-limiting instance (consumer-scoped ones included) applies there,
//! its policy is `local` with one window, and it counts by something
//! Envoy can key a bucket by (see [`key`]).

use crate::translator::model::{Model, PluginInst, Route};
use crate::translator::plugins::Resolved;
use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::RateLimit;
use envoy_types::pb::envoy::config::route::v3::rate_limit::Action;
use envoy_types::pb::envoy::config::route::v3::rate_limit::action::{
    ActionSpecifier, RemoteAddress,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    LocalRateLimitDescriptor, rate_limit_descriptor,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::r#type::v3::{
    FractionalPercent, HttpStatus, StatusCode, TokenBucket, fractional_percent::DenominatorType,
};
use envoy_types::pb::google::protobuf::{BoolValue, Duration, UInt32Value};
use serde_json::Value;

pub const LOCAL_RATELIMIT: &str = "envoy.filters.http.local_ratelimit";

/// Kong's windows, in seconds (month and year are Kong's fixed 30 and 365
/// days, as gantry-proxy counts them).
const PERIODS: [(&str, i64); 6] = [
    ("second", 1),
    ("minute", 60),
    ("hour", 3_600),
    ("day", 86_400),
    ("month", 30 * 86_400),
    ("year", 365 * 86_400),
];

/// Client addresses (buckets) Envoy keeps per route for `limit_by: ip`
/// before it forgets the least recently seen (Envoy's default is 20).
const MAX_CLIENTS: u32 = 65_536;

/// The listener's filter config: no bucket of its own (routes bring theirs).
pub fn filter() -> LocalRateLimit {
    LocalRateLimit {
        stat_prefix: "rate_limiting".into(),
        ..Default::default()
    }
}

/// What a bucket is keyed by.
#[derive(Debug, PartialEq)]
enum Key {
    /// One bucket for the route.
    Route,
    /// One per client address (the TCP peer, as Envoy's `remote_address`).
    ClientIp,
}

/// Whether instance `p` applies to `route` (Kong's scopes, as `resolve`).
fn applies(p: &PluginInst, route: &Route) -> bool {
    let Some(service) = route.service.as_deref() else {
        return false;
    };
    match (&p.route, &p.service) {
        (Some(r), s) => *r == route.id && s.as_deref().is_none_or(|s| s == service),
        (None, Some(s)) => s == service,
        (None, None) => true,
    }
}

/// The bucket's key for `p` on route `r`, when Envoy can key by what
/// gantry-proxy counts by: the service (one route: the route's bucket),
/// the client address, and consumer or credential on a route with no
/// authentication plugin (so no consumer: gantry-proxy falls back to the
/// address). header, path and consumer-group are left to gantry-proxy.
fn key(r: &Resolved<'_>, limit_by: &str) -> Option<Key> {
    match limit_by {
        "service" => Some(Key::Route),
        "ip" => Some(Key::ClientIp),
        "consumer" | "credential"
            if !r.default.contains_key("key-auth") && !r.default.contains_key("jwt") =>
        {
            Some(Key::ClientIp)
        }
        _ => None,
    }
}

/// The one window configured, as (seconds, limit).
fn window(c: &Value) -> Option<(i64, u32)> {
    let mut set = PERIODS
        .iter()
        .filter_map(|(name, secs)| c[*name].as_f64().map(|l| (*secs, l)));
    let (secs, limit) = set.next()?;
    if set.next().is_some() || limit.fract() != 0.0 || !(1.0..=f64::from(u32::MAX)).contains(&limit)
    {
        return None;
    }
    Some((secs, limit as u32))
}

/// Kong's `error_code` as Envoy's status, when Envoy can send it (429 is
/// Envoy's default).
fn status(c: &Value) -> Option<Option<HttpStatus>> {
    let code = c["error_code"].as_f64().unwrap_or(429.0);
    if code == 429.0 {
        return Some(None);
    }
    if code.fract() != 0.0 || !(400.0..600.0).contains(&code) {
        return None;
    }
    StatusCode::try_from(code as i32)
        .ok()
        .map(|s| Some(HttpStatus { code: s as i32 }))
}

fn all() -> Option<RuntimeFractionalPercent> {
    Some(RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 100,
            denominator: DenominatorType::Hundred as i32,
        }),
        runtime_key: String::new(),
    })
}

/// Route `r`'s local_ratelimit config for its rate-limiting instance, when
/// Envoy counts as gantry-proxy does.
pub fn route<'a>(m: &Model, r: &Resolved<'a>) -> Option<(&'a PluginInst, LocalRateLimit)> {
    // Every rate-limiting instance that applies here stacks on
    // gantry-proxy: only one, and none for a consumer.
    let [p] = r.rate_limits.as_slice() else {
        return None;
    };
    if !r.consumer_rate_limits.is_empty() || p.consumer.is_some() {
        return None;
    }
    // Its counters are the instance's: one route only.
    if m.routes.iter().filter(|route| applies(p, route)).count() != 1 {
        return None;
    }
    let c = &p.config;
    if c["policy"].as_str().unwrap_or("local") != "local" {
        return None;
    }
    let (secs, limit) = window(c)?;
    let status = status(c)?;
    let key = key(r, c["limit_by"].as_str().unwrap_or("consumer"))?;
    let bucket = TokenBucket {
        max_tokens: limit,
        tokens_per_fill: Some(UInt32Value { value: limit }),
        fill_interval: Some(Duration {
            seconds: secs,
            nanos: 0,
        }),
    };
    let mut cfg = LocalRateLimit {
        stat_prefix: "rate_limiting".into(),
        status,
        token_bucket: Some(bucket),
        filter_enabled: all(),
        filter_enforced: all(),
        // gantry-proxy always says when to come back.
        enable_retry_after_header: true,
        ..Default::default()
    };
    if key == Key::ClientIp {
        cfg.rate_limits = vec![RateLimit {
            actions: vec![Action {
                action_specifier: Some(ActionSpecifier::RemoteAddress(RemoteAddress {})),
            }],
            ..Default::default()
        }];
        // A descriptor with no value: one bucket per address.
        cfg.descriptors = vec![LocalRateLimitDescriptor {
            entries: vec![rate_limit_descriptor::Entry {
                key: "remote_address".into(),
                value: String::new(),
            }],
            token_bucket: Some(bucket),
            shadow_mode: false,
        }];
        cfg.always_consume_default_token_bucket = Some(BoolValue { value: false });
        cfg.max_dynamic_descriptors = Some(UInt32Value { value: MAX_CLIENTS });
    }
    Some((p, cfg))
}
