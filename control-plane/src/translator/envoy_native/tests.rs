//! What Envoy nodes get for jwt and rate-limiting: the filters, each
//! route's config, and what `/fleet` lists as unenforced.

use super::{JWT_AUTHN, LOCAL_RATELIMIT};
use crate::store::Stored;
use crate::translator::testutil::{route, service, stored};
use crate::translator::{Flavour, ProxyOptions, Translation, translate_flavours};
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, PerRouteConfig, jwt_requirement::RequiresType,
    per_route_config::RequirementSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_filter,
};
use prost::Message;
use serde_json::{Value, json};

fn translate(entities: &[Stored]) -> (Translation, Translation) {
    let mut t = translate_flavours(
        entities,
        &[Flavour::Envoy, Flavour::GantryProxy],
        &ProxyOptions::default(),
    )
    .unwrap_or_else(|e| panic!("translate failed: {e}"));
    let gantry = t.pop().unwrap();
    (t.pop().unwrap(), gantry)
}

fn filters(t: &Translation) -> Vec<HttpFilter> {
    let Some(ConfigType::TypedConfig(any)) =
        &t.listeners[0].filter_chains[0].filters[0].config_type
    else {
        panic!("no HCM")
    };
    HttpConnectionManager::decode(any.value.as_slice())
        .unwrap()
        .http_filters
}

fn filter<M: Message + Default>(t: &Translation, name: &str) -> Option<(bool, M)> {
    let f = filters(t).into_iter().find(|f| f.name == name)?;
    let Some(http_filter::ConfigType::TypedConfig(any)) = f.config_type else {
        panic!("untyped {name}")
    };
    Some((f.disabled, M::decode(any.value.as_slice()).unwrap()))
}

/// The per-route config of `filter` on the Envoy routes of Kong route
/// `name` (the same on each), unwrapped from its `FilterConfig`.
fn per_route<M: Message + Default>(t: &Translation, name: &str, filter: &str) -> Option<M> {
    let routes = t
        .routes
        .iter()
        .map(|rt| rt.to_config())
        .flat_map(|rc| rc.virtual_hosts)
        .flat_map(|vh| vh.routes)
        .filter(|r| r.name.starts_with(&format!("{name}#")))
        .collect::<Vec<_>>();
    assert!(!routes.is_empty(), "no route {name}");
    let any = routes[0].typed_per_filter_config.get(filter)?;
    let fc = FilterConfig::decode(any.value.as_slice()).unwrap();
    assert!(
        !fc.disabled && !fc.is_optional,
        "{name}: {filter} turned on"
    );
    Some(M::decode(fc.config.unwrap().value.as_slice()).unwrap())
}

fn plugin(name: &str, scope: Value, config: Value) -> Stored {
    let mut v = json!({"name": name, "config": config});
    for (k, val) in scope.as_object().unwrap() {
        v[k] = val.clone();
    }
    stored("plugins", v)
}

/// A fixed RSA test key (generated with openssl), shared with the jwt
/// module's own tests.
pub(super) const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA7bMRZ6bkW2OSrujy/nFP
cv0hk8LiHY8cjWJYIpCzsydalczpltm0vX0YqcOARAk8TxaDQ8h2ghwp+ij3w2u6
BNgykh4MK6bsCsa79LLMStuN9UQFhyVbHTCsVw/ebHqLLx2t/NYP8YHzB6aNvo7F
AcsDVbMswxPYnUGSlEBBmuchi4YI+GjxfLcPqb34svYDl/f57vMfOHg7Cr8AC2Yg
xS+S12jchOesk4v81Im3/J6V1O8d/aGplD3/EINjuRSE5gXxpd/aTE4f3QrR7WGy
P5rYEL688TgTgKbuwAsSgpx9yb+tc+dC+PScLQ/hg6NCnhw7MrcxwimX5/gZbI68
1wIDAQAB
-----END PUBLIC KEY-----
";

#[test]
fn jwt_as_jwt_authn() {
    let s = service("s", "example.com", 80);
    let [j, open, anon] =
        ["j", "open", "anon"].map(|n| route(n, &s, json!({"paths": [format!("/{n}")]})));
    let alice = stored("consumers", json!({"username": "alice"}));
    let bob = stored("consumers", json!({"username": "bob"}));
    let hs = stored(
        "jwt_secrets",
        json!({"consumer": {"id": alice.id}, "key": "alice-iss", "algorithm": "HS256", "secret": "alice-secret"}),
    );
    let rs = stored(
        "jwt_secrets",
        json!({"consumer": {"id": bob.id}, "key": "bob-iss", "algorithm": "RS256", "rsa_public_key": RSA_PUBLIC}),
    );
    let on_j = plugin(
        "jwt",
        json!({"route": {"id": j.id}}),
        json!({"claims_to_verify": ["exp"], "maximum_expiration": 600, "cookie_names": ["tok"]}),
    );
    let ents = vec![
        s.clone(),
        j,
        open.clone(),
        anon.clone(),
        alice,
        bob,
        hs.clone(),
        rs.clone(),
        on_j.clone(),
    ];
    let (envoy, gantry) = translate(&ents);
    assert!(
        envoy.unenforced_plugins.is_empty(),
        "{:?}",
        envoy.unenforced_plugins
    );

    let (disabled, auth): (bool, JwtAuthentication) = filter(&envoy, JWT_AUTHN).expect("jwt_authn");
    assert!(disabled, "off until a route turns it on");
    assert!(
        filter::<JwtAuthentication>(&gantry, JWT_AUTHN).is_none(),
        "Envoy only"
    );
    let names = [
        format!("jwt.{}.{}", on_j.id, hs.id),
        format!("jwt.{}.{}", on_j.id, rs.id),
    ];
    let hs_p = &auth.providers[&names[0]];
    assert_eq!(hs_p.issuer, "alice-iss");
    // `exp` is verified: a token without one is refused (c6cf701).
    assert!(hs_p.forward && hs_p.require_expiration);
    assert_eq!(hs_p.clock_skew_seconds, 1);
    assert_eq!(hs_p.max_lifetime.as_ref().map(|d| d.seconds), Some(600));
    assert_eq!(hs_p.from_params, vec!["jwt"]);
    assert_eq!(hs_p.from_cookies, vec!["tok"]);
    assert_eq!(
        hs_p.from_headers
            .iter()
            .map(|h| (h.name.as_str(), h.value_prefix.as_str()))
            .collect::<Vec<_>>(),
        vec![("authorization", "Bearer "), ("authorization", "bearer ")]
    );
    assert_eq!(auth.providers[&names[1]].issuer, "bob-iss");
    let Some(RequiresType::RequiresAny(any)) = &auth.requirement_map[&on_j.id].requires_type else {
        panic!("any of the instance's providers")
    };
    let mut got: Vec<String> = any
        .requirements
        .iter()
        .map(|r| match &r.requires_type {
            Some(RequiresType::ProviderName(n)) => n.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort();
    let mut want = names.to_vec();
    want.sort();
    assert_eq!(got, want);

    let per: PerRouteConfig = per_route(&envoy, "j", JWT_AUTHN).expect("j requires a token");
    assert_eq!(
        per.requirement_specifier,
        Some(RequirementSpecifier::RequirementName(on_j.id.clone()))
    );
    assert!(per_route::<PerRouteConfig>(&envoy, "open", JWT_AUTHN).is_none());

    // The listener encodes the same every time (the maps in key order).
    let (again, _) = translate(&ents);
    assert_eq!(
        envoy.listeners[0].encode_to_vec(),
        again.listeners[0].encode_to_vec()
    );

    // An instance that looks for tokens alike shares the providers; one
    // with a `providers` entry gets its own set.
    let same = plugin(
        "jwt",
        json!({"route": {"id": open.id}}),
        json!({"claims_to_verify": ["exp"], "maximum_expiration": 600, "cookie_names": ["tok"]}),
    );
    let idp = plugin(
        "jwt",
        json!({"route": {"id": anon.id}}),
        json!({"claims_to_verify": ["exp", "nbf"], "providers": [{"name": "idp", "issuer": "https://idp",
               "local_jwks": "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}"}]}),
    );
    let mut with = ents.clone();
    with.extend([same.clone(), idp.clone()]);
    let (both, _) = translate(&with);
    assert!(
        both.unenforced_plugins.is_empty(),
        "{:?}",
        both.unenforced_plugins
    );
    let (_, auth): (bool, JwtAuthentication) = filter(&both, JWT_AUTHN).unwrap();
    assert_eq!(auth.providers.len(), 2 + 3, "{:?}", auth.providers.keys());
    assert_eq!(
        auth.requirement_map[&same.id],
        auth.requirement_map[&on_j.id]
    );
    let p = &auth.providers[&format!("jwt.{}.provider.0", idp.id)];
    assert_eq!(p.issuer, "https://idp");
    assert!(p.max_lifetime.is_none());
    let per: PerRouteConfig = per_route(&both, "open", JWT_AUTHN).expect("open now has jwt");
    assert_eq!(
        per.requirement_specifier,
        Some(RequirementSpecifier::RequirementName(same.id.clone()))
    );

    // What Envoy cannot say is left to gantry-proxy and listed at /fleet.
    for cfg in [
        json!({"anonymous": "alice", "claims_to_verify": ["exp"]}),
        json!({"run_on_preflight": false, "claims_to_verify": ["exp"]}),
        json!({}),
        json!({"key_claim_name": "sub", "claims_to_verify": ["exp"]}),
        json!({"claims_to_verify": ["exp"], "claims_to_headers": [{"claim": "t", "header": "x-t"}]}),
        json!({"claims_to_verify": ["exp"], "providers": [{"name": "idp", "audiences": ["a"],
               "local_jwks": "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}"}]}),
    ] {
        let p = plugin("jwt", json!({"route": {"id": anon.id}}), cfg.clone());
        let mut with = ents.clone();
        with.push(p);
        let (envoy, gantry) = translate(&with);
        assert_eq!(envoy.unenforced_plugins, vec!["jwt"], "{cfg}");
        assert!(gantry.unenforced_plugins.is_empty());
        assert!(
            per_route::<PerRouteConfig>(&envoy, "anon", JWT_AUTHN).is_none(),
            "{cfg}"
        );
        assert!(per_route::<PerRouteConfig>(&envoy, "j", JWT_AUTHN).is_some());
    }
}

#[test]
fn rate_limiting_as_local_ratelimit() {
    let s = service("s", "example.com", 80);
    let other = service("other", "example.org", 80);
    let names = [
        "svc", "ip", "anon", "auth", "redis", "two", "stack", "shared1", "shared2",
    ];
    let routes: Vec<Stored> = names
        .iter()
        .map(|n| {
            let svc = if n.starts_with("shared") { &other } else { &s };
            route(n, svc, json!({"paths": [format!("/{n}")]}))
        })
        .collect();
    let on = |i: usize| json!({"route": {"id": routes[i].id}});
    let c = stored("consumers", json!({"username": "c"}));
    let rl = |scope: Value, cfg: Value| plugin("rate-limiting", scope, cfg);
    let svc = rl(on(0), json!({"minute": 5, "limit_by": "service"}));
    let ip = rl(
        on(1),
        json!({"second": 3, "limit_by": "ip", "error_code": 503}),
    );
    let anon = rl(on(2), json!({"hour": 7}));
    let auth = rl(on(3), json!({"hour": 7}));
    let mut ents = vec![s.clone(), other.clone(), c.clone()];
    ents.extend(routes.iter().cloned());
    ents.extend([
        svc.clone(),
        ip.clone(),
        anon.clone(),
        auth.clone(),
        plugin("key-auth", on(3), json!({})),
        rl(
            on(4),
            json!({"minute": 5, "policy": "redis", "redis": {"host": "r"}}),
        ),
        rl(on(5), json!({"second": 1, "minute": 5, "limit_by": "ip"})),
        rl(on(6), json!({"minute": 5, "limit_by": "ip"})),
        rl(
            json!({"route": {"id": routes[6].id}, "consumer": {"id": c.id}}),
            json!({"minute": 9, "limit_by": "ip"}),
        ),
        // One instance for two routes: gantry-proxy counts them together.
        rl(
            json!({"service": {"id": other.id}}),
            json!({"minute": 5, "limit_by": "service"}),
        ),
    ]);
    let (envoy, gantry) = translate(&ents);

    let (disabled, _): (bool, LocalRateLimit) = filter(&envoy, LOCAL_RATELIMIT).expect("filter");
    assert!(disabled);
    assert!(filter::<LocalRateLimit>(&gantry, LOCAL_RATELIMIT).is_none());

    let bucket = |l: &LocalRateLimit| {
        let b = l.token_bucket.unwrap();
        (
            b.max_tokens,
            b.tokens_per_fill.unwrap().value,
            b.fill_interval.unwrap().seconds,
        )
    };
    let l: LocalRateLimit = per_route(&envoy, "svc", LOCAL_RATELIMIT).expect("svc");
    assert_eq!(bucket(&l), (5, 5, 60));
    assert_eq!(l.status, None, "429, Envoy's default");
    assert!(l.enable_retry_after_header);
    for f in [&l.filter_enabled, &l.filter_enforced] {
        assert_eq!(f.as_ref().unwrap().default_value.unwrap().numerator, 100);
    }
    assert!(l.descriptors.is_empty() && l.rate_limits.is_empty());

    let l: LocalRateLimit = per_route(&envoy, "ip", LOCAL_RATELIMIT).expect("ip");
    assert_eq!(bucket(&l), (3, 3, 1));
    assert_eq!(l.status.map(|s| s.code), Some(503));
    assert_eq!(l.descriptors.len(), 1);
    assert_eq!(l.descriptors[0].entries[0].key, "remote_address");
    assert_eq!(
        l.descriptors[0].entries[0].value, "",
        "one bucket per address"
    );
    assert_eq!(l.rate_limits.len(), 1);
    assert_eq!(
        l.always_consume_default_token_bucket.map(|b| b.value),
        Some(false)
    );

    // limit_by consumer with no authentication on the route: the address.
    let l: LocalRateLimit = per_route(&envoy, "anon", LOCAL_RATELIMIT).expect("anon");
    assert_eq!(bucket(&l), (7, 7, 3600));
    assert_eq!(l.descriptors.len(), 1);

    for n in ["auth", "redis", "two", "stack", "shared1", "shared2"] {
        assert!(
            per_route::<LocalRateLimit>(&envoy, n, LOCAL_RATELIMIT).is_none(),
            "{n} is left to gantry-proxy"
        );
    }
    assert_eq!(envoy.unenforced_plugins, vec!["rate-limiting"]);
    assert!(gantry.unenforced_plugins.is_empty());

    // Only expressible instances: nothing unenforced.
    let mut only = vec![s, other, c];
    only.extend(routes.iter().cloned());
    only.extend([svc, ip, anon]);
    let (envoy, _) = translate(&only);
    assert!(
        envoy.unenforced_plugins.is_empty(),
        "{:?}",
        envoy.unenforced_plugins
    );
}
