//! Whole-translator tests: listeners and secrets, determinism, validation
//! and a timing print.

use super::testutil::*;
use super::*;
use crate::store::Stored;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{data_source, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{filter, listener_filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route as EnvoyRoute, RouteAction, VirtualHost, route::Action, route_action::ClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, secret,
};
use prost::Message;
use serde_json::json;
use std::time::Instant;

fn hcm(l: &Listener, chain: usize) -> HttpConnectionManager {
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[chain].filters[0].config_type
    else {
        panic!("no typed config")
    };
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    HttpConnectionManager::decode(any.value.as_slice()).unwrap()
}

fn sample() -> Vec<Stored> {
    let web = service("web", "10.0.0.1", 8080);
    let api = service_with("api", "api.pool", 80, json!({"path": "/v1"}));
    let up = upstream("api.pool", json!({"algorithm": "least-connections"}));
    let mut ents = vec![
        route(
            "home",
            &web,
            json!({"paths": ["/"], "hosts": ["example.com", "*.example.com"]}),
        ),
        route(
            "api",
            &api,
            json!({"paths": ["/api", "~/items/\\d+$"], "methods": ["GET"]}),
        ),
        route(
            "secure",
            &web,
            json!({"protocols": ["https"], "paths": ["/secure"]}),
        ),
        target(&up.id, "10.0.0.5:9000", 10),
        target(&up.id, "10.0.0.6:9000", 20),
        web,
        api,
        up,
    ];
    ents.extend(certificate(
        "c1111111-1111-4111-8111-111111111111",
        &["a.example.com", "*.b.example.com"],
    ));
    ents.extend(certificate("c2222222-2222-4222-8222-222222222222", &[]));
    ents
}

#[test]
fn route_tables_encode_as_their_configurations() {
    let ents = hosts_sample();
    let t = translate_tables(&ents, Flavour::Envoy, &ProxyOptions::default()).unwrap();
    let mut repeated = false;
    for tb in &t.routes {
        let config = tb.to_config();
        assert_eq!(tb.encode(), config.encode_to_vec(), "{}", tb.name());
        let copies: usize = config.virtual_hosts.iter().map(|v| v.routes.len()).sum();
        repeated |= copies > tb.routes.len();
    }
    assert!(
        repeated,
        "the sample repeats host-less routes across virtual hosts"
    );
    let res = t.clone().into_resources();
    validate::validate(&res).unwrap();
    assert_eq!(res.routes.len(), t.routes.len());
}

/// The sample of `route_tables_encode_as_their_configurations`: host-less
/// routes, exact and wildcard hosts, an HTTPS-only route.
fn hosts_sample() -> Vec<Stored> {
    let web = service("web2", "10.0.0.9", 8080);
    let mut ents = sample();
    ents.extend([
        route(
            "h1",
            &web,
            json!({"hosts": ["a.example.com"], "paths": ["/h1"]}),
        ),
        route(
            "h2",
            &web,
            json!({"hosts": ["*.example.com", "api.*"], "paths": ["~/h2/\\d+"]}),
        ),
        route(
            "tls-only",
            &web,
            json!({"protocols": ["https"], "hosts": ["s.example.com"]}),
        ),
        route("bare", &web, json!({"methods": ["GET", "PUT"]})),
        web,
    ]);
    ents
}

#[test]
fn route_entries_encode_as_their_messages() {
    let t = translate_tables(
        &hosts_sample(),
        Flavour::GantryProxy,
        &ProxyOptions::default(),
    )
    .unwrap();
    let tables: Vec<&RouteTable> = t.routes.iter().collect();
    let encoded = encode_entries(&tables);
    let mut n = 0;
    for (tb, enc) in t.routes.iter().zip(&encoded) {
        let msgs = tb.entry_messages();
        assert_eq!(msgs.len(), enc.len());
        for (m, (name, bytes)) in msgs.iter().zip(enc) {
            assert_eq!(&m.name, name);
            assert_eq!(&m.encode_to_vec(), bytes, "{name}");
            n += 1;
        }
    }
    assert!(n > 5, "the sample has entries ({n})");
}

/// What gantry-proxy's compiler makes of a flavour's routes: per route
/// configuration, each virtual host's name, domains and route names in
/// first-match order.
/// A virtual host as compiled: name, domains, route names.
type HostView = (String, Vec<String>, Vec<String>);

fn compiled_hosts(r: &Resources) -> Vec<(String, Vec<HostView>)> {
    let set = gantry_proxy::config::ResourceSet {
        routes: r
            .routes
            .iter()
            .map(|x| (x.name.clone(), x.clone()))
            .collect(),
        route_entries: r
            .route_entries
            .iter()
            .map(|x| (x.name.clone(), x.clone()))
            .collect(),
        clusters: r
            .clusters
            .iter()
            .map(|x| (x.name.clone(), x.clone()))
            .collect(),
        endpoints: r
            .endpoints
            .iter()
            .map(|x| (x.cluster_name.clone(), x.clone()))
            .collect(),
        ..Default::default()
    };
    let c = gantry_proxy::config::compile(&set).unwrap();
    let mut out: Vec<_> = c
        .routes
        .iter()
        .map(|(name, t)| {
            let hosts = t
                .virtual_hosts
                .iter()
                .map(|v| {
                    (
                        v.name.clone(),
                        v.domains.clone(),
                        v.routes.iter().map(|r| r.name.clone()).collect(),
                    )
                })
                .collect();
            (name.clone(), hosts)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn gantry_proxy_lays_out_entries_as_envoy_gets_them() {
    let ents = hosts_sample();
    let opts = ProxyOptions::default();
    let envoy = translate(&ents, Flavour::Envoy, &opts).unwrap();
    let gantry = translate(&ents, Flavour::GantryProxy, &opts).unwrap();
    let (e, g) = (compiled_hosts(&envoy), compiled_hosts(&gantry));
    assert_eq!(e, g);
    let copies: usize = e
        .iter()
        .flat_map(|(_, hosts)| hosts.iter().map(|h| h.2.len()))
        .sum();
    let entries: usize = gantry.route_entries.iter().map(|x| x.routes.len()).sum();
    assert!(
        copies > entries,
        "Envoy's virtual hosts repeat host-less routes ({copies}), entries do not ({entries})"
    );
    // What gantry-proxy's /config_dump shows: the shell with its entries
    // laid out is, message for message, the configuration Envoy is sent.
    for shell in &gantry.routes {
        let mut entries: Vec<_> = gantry
            .route_entries
            .iter()
            .filter(|x| x.route_configuration == shell.name)
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let sent = envoy.routes.iter().find(|r| r.name == shell.name).unwrap();
        assert_eq!(
            &gantry_proxy::config::assemble(shell, &entries),
            sent,
            "{}",
            shell.name
        );
    }
}

#[test]
fn the_regex_fast_path_accepts_only_valid_regexes() {
    // Every string up to four characters over an alphabet of literals and
    // metacharacters: whatever the fast path lets through, Envoy takes
    // (gantry-proxy's full check: RE2 syntax and program size).
    let alphabet = [
        'a', '/', '\\', '.', '^', '$', '?', '*', '+', '-', '<', '(', ')', '|', '#', ' ', '{', '[',
    ];
    let mut passed = 0;
    let mut s = String::new();
    fn walk(s: &mut String, alphabet: &[char], depth: usize, passed: &mut usize) {
        if anchored_literal(s) {
            *passed += 1;
            let full = gantry_proxy::config::check_regex(s);
            assert!(full.is_ok(), "fast path accepted {s:?}: {full:?}");
        }
        if depth == 0 {
            return;
        }
        for c in alphabet {
            s.push(*c);
            walk(s, alphabet, depth - 1, passed);
            s.pop();
        }
    }
    walk(&mut s, &alphabet, 4, &mut passed);
    assert!(passed > 300, "{passed}");
    // However long the literal, RE2 keeps it out of the program.
    let long = format!("^/{}/?", "a\\.b-".repeat(2000));
    assert!(anchored_literal(&long));
    gantry_proxy::config::check_regex(&long).unwrap();
    for re in ["^/orders/?", "^/r1\\.2/?", "^/", "^/$|^", "\\?.*", "^/a$"] {
        assert_eq!(
            anchored_literal(re),
            re.starts_with("^/") && !re.contains('|'),
            "{re}"
        );
        regex_ok(re).unwrap();
    }
    assert!(!anchored_literal("^a**"));
    assert!(!anchored_literal("^\\d"));
    assert!(!anchored_literal("^/a\\/?"));
    assert!(regex_ok("(").is_err());
    // The fleet's program-size limit (4096): 4 + one per byte.
    assert!(regex_ok(&"a".repeat(4092)).is_ok());
    assert!(
        regex_ok(&"a".repeat(4093))
            .unwrap_err()
            .contains("RE2 program size of 4097 > max program size of 4096")
    );
}

#[test]
fn flavour_from_user_agent() {
    assert_eq!(
        Flavour::from_user_agent("gantry-proxy"),
        Flavour::GantryProxy
    );
    assert_eq!(Flavour::from_user_agent("envoy"), Flavour::Envoy);
    assert_eq!(Flavour::from_user_agent(""), Flavour::Envoy);
    assert_eq!(Flavour::GantryProxy.as_str(), "gantry-proxy");
    assert_eq!(Flavour::Envoy.as_str(), "envoy");
    let o = ProxyOptions::default();
    assert_eq!(
        (o.listen_address.as_str(), o.http_port, o.https_port),
        ("0.0.0.0", 8000, 8443)
    );
}

#[test]
fn http_listener_uses_rds_over_ads() {
    let res = run(&[service("s", "10.0.0.1", 80)]);
    assert_eq!(res.listeners.len(), 1, "no certificates, no https listener");
    let l = &res.listeners[0];
    assert_eq!(l.name, "http");
    assert_eq!(l.address, Some(clusters::socket("0.0.0.0", 8000)));
    let h = hcm(l, 0);
    assert_eq!(h.stat_prefix, "http");
    assert!(h.use_remote_address.unwrap().value);
    let Some(RouteSpecifier::Rds(rds)) = &h.route_specifier else {
        panic!()
    };
    assert_eq!(rds.route_config_name, "http");
    assert_eq!(rds.config_source, Some(ads_source()));
    assert_eq!(h.http_filters.len(), 1);
    assert_eq!(h.http_filters[0].name, "envoy.filters.http.router");
    // Both route configurations always exist.
    assert_eq!(
        res.routes
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        vec!["http", "https"]
    );
}

#[test]
fn tls_listener_has_a_chain_per_certificate_with_sds() {
    let res = run(&sample());
    assert_eq!(
        res.listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        vec!["http", "https"]
    );
    let l = &res.listeners[1];
    assert_eq!(l.address, Some(clusters::socket("0.0.0.0", 8443)));
    assert_eq!(l.listener_filters.len(), 1);
    assert_eq!(
        l.listener_filters[0].name,
        "envoy.filters.listener.tls_inspector"
    );
    assert!(matches!(
        l.listener_filters[0].config_type,
        Some(listener_filter::ConfigType::TypedConfig(_))
    ));
    // Only the certificate with SNIs gets a chain.
    assert_eq!(l.filter_chains.len(), 1);
    let fc = &l.filter_chains[0];
    assert_eq!(fc.name, "cert.c1111111-1111-4111-8111-111111111111");
    assert_eq!(
        fc.filter_chain_match.as_ref().unwrap().server_names,
        vec!["*.b.example.com", "a.example.com"]
    );
    let ts = fc.transport_socket.as_ref().unwrap();
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!()
    };
    let tls = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
    let ctx = tls.common_tls_context.unwrap();
    assert_eq!(ctx.alpn_protocols, vec!["h2", "http/1.1"]);
    assert_eq!(ctx.tls_certificate_sds_secret_configs.len(), 1);
    assert_eq!(
        ctx.tls_certificate_sds_secret_configs[0].name,
        "cert.c1111111-1111-4111-8111-111111111111"
    );
    assert_eq!(
        ctx.tls_certificate_sds_secret_configs[0].sds_config,
        Some(ads_source())
    );
    let h = hcm(l, 0);
    assert_eq!(h.stat_prefix, "https");
    let Some(RouteSpecifier::Rds(rds)) = &h.route_specifier else {
        panic!()
    };
    assert_eq!(rds.route_config_name, "https");

    assert_eq!(res.secrets.len(), 1);
    let s = &res.secrets[0];
    assert_eq!(s.name, "cert.c1111111-1111-4111-8111-111111111111");
    let Some(secret::Type::TlsCertificate(tc)) = &s.r#type else {
        panic!()
    };
    let Some(data_source::Specifier::InlineString(chain)) =
        &tc.certificate_chain.as_ref().unwrap().specifier
    else {
        panic!()
    };
    assert!(chain.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(tc.private_key.is_some());
}

#[test]
fn sni_on_two_certificates_is_an_error() {
    let mut ents = certificate("c1111111-1111-4111-8111-111111111111", &["a.example.com"]);
    let mut other = certificate("c2222222-2222-4222-8222-222222222222", &[]);
    // An inline list on the second certificate (as an older store might keep).
    other[0].data["snis"] = json!(["a.example.com"]);
    ents.extend(other);
    let err = translate(&ents, Flavour::Envoy, &ProxyOptions::default()).unwrap_err();
    assert_eq!(
        err,
        TranslateError::SniConflict {
            certificate: "c2222222-2222-4222-8222-222222222222".into(),
            sni: "a.example.com".into(),
            other: "c1111111-1111-4111-8111-111111111111".into(),
        }
    );
    assert!(err.to_string().contains("a.example.com"));
}

fn encoded(r: &Resources) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    out.extend(r.listeners.iter().map(Message::encode_to_vec));
    out.extend(r.routes.iter().map(Message::encode_to_vec));
    out.extend(r.clusters.iter().map(Message::encode_to_vec));
    out.extend(r.endpoints.iter().map(Message::encode_to_vec));
    out.extend(r.secrets.iter().map(Message::encode_to_vec));
    out
}

#[test]
fn output_is_deterministic() {
    let mut ents = sample();
    ents.push(service_with(
        "g",
        "10.0.0.9",
        50051,
        json!({"protocol": "grpcs"}),
    ));
    let a = run(&ents);
    let b = run(&ents);
    assert_eq!(encoded(&a), encoded(&b));
    // Input order does not matter either.
    ents.reverse();
    let c = run(&ents);
    assert_eq!(encoded(&a), encoded(&c));
    // gantry-proxy gets the same resources, its routes as route entries.
    let g = translate(&ents, Flavour::GantryProxy, &ProxyOptions::default()).unwrap();
    let g2 = translate(&ents, Flavour::GantryProxy, &ProxyOptions::default()).unwrap();
    assert_eq!(encoded(&g), encoded(&g2));
    assert_eq!(g.route_entries, g2.route_entries);
    for r in &g.routes {
        assert!(
            r.virtual_hosts.is_empty(),
            "{}: routes travel as entries",
            r.name
        );
    }
    assert!(a.route_entries.is_empty(), "Envoy nodes get RDS alone");
}

#[test]
fn sample_config_shapes() {
    let res = run(&sample());
    let names: Vec<&str> = res.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["service.api", "service.web"]);
    let api = &res.clusters[0];
    assert_eq!(
        api.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    );
    assert_eq!(res.endpoints.len(), 1);
    assert_eq!(res.endpoints[0].endpoints[0].lb_endpoints.len(), 2);
}

#[test]
fn malformed_entities_are_named() {
    let mut s = service("s", "10.0.0.1", 80);
    s.data["host"] = json!(42);
    let err = translate(&[s.clone()], Flavour::Envoy, &ProxyOptions::default()).unwrap_err();
    assert_eq!(
        err,
        TranslateError::Malformed {
            kind: "services".into(),
            id: s.id.clone(),
            reason: "host must be a string".into()
        }
    );
}

#[test]
fn duplicate_cluster_names_are_rejected() {
    // A service named like another's id yields the same cluster name.
    let a = service("a", "10.0.0.1", 80);
    let mut b = service("b", "10.0.0.2", 80);
    b.data["name"] = serde_json::Value::Null;
    let mut a2 = a.clone();
    a2.data["name"] = json!(b.id);
    let err = translate(&[a2, b.clone()], Flavour::Envoy, &ProxyOptions::default()).unwrap_err();
    assert_eq!(
        err,
        TranslateError::DuplicateName {
            kind: "cluster".into(),
            name: format!("service.{}", b.id)
        }
    );
}

#[test]
fn out_of_range_durations_are_rejected() {
    let mut s = service("slow", "10.0.0.1", 80);
    s.data["connect_timeout"] = json!(1i64 << 31);
    let err = translate(&[s], Flavour::Envoy, &ProxyOptions::default()).unwrap_err();
    assert_eq!(
        err,
        TranslateError::DurationOutOfRange {
            kind: "cluster".into(),
            name: "service.slow".into(),
            field: "connect_timeout".into(),
            value_ms: 1 << 31,
        }
    );
    let mut s = service("zero", "10.0.0.1", 80);
    s.data["read_timeout"] = json!(0);
    let r = route("r", &s, json!({"paths": ["/"]}));
    let err = translate(&[s, r], Flavour::Envoy, &ProxyOptions::default()).unwrap_err();
    assert!(
        matches!(err, TranslateError::DurationOutOfRange { ref name, .. } if name == "r#0"),
        "{err}"
    );
}

#[test]
fn validation_catches_dangling_references() {
    let good = run(&sample());
    validate::validate(&good).unwrap();

    let mut r = good.clone();
    r.clusters.retain(|c| c.name != "service.web");
    r.endpoints.retain(|e| e.cluster_name != "service.web");
    assert!(matches!(
        validate::validate(&r),
        Err(TranslateError::MissingCluster { ref cluster, .. }) if cluster == "service.web"
    ));

    let mut r = good.clone();
    r.endpoints.clear();
    assert_eq!(
        validate::validate(&r),
        Err(TranslateError::MissingAssignment {
            cluster: "service.api".into()
        })
    );

    let mut r = good.clone();
    r.routes.retain(|x| x.name != "https");
    assert_eq!(
        validate::validate(&r),
        Err(TranslateError::MissingRouteConfig {
            listener: "https".into(),
            name: "https".into()
        })
    );

    let mut r = good.clone();
    r.secrets.clear();
    assert!(matches!(
        validate::validate(&r),
        Err(TranslateError::MissingSecret { .. })
    ));

    let mut r = good.clone();
    let dup = r.clusters[0].clone();
    r.clusters.push(dup);
    assert!(matches!(
        validate::validate(&r),
        Err(TranslateError::DuplicateName { .. })
    ));

    let mut r = good.clone();
    let vh = r.routes[0].virtual_hosts[0].clone();
    r.routes[0].virtual_hosts.push(VirtualHost {
        name: "again".into(),
        ..vh
    });
    assert!(matches!(
        validate::validate(&r),
        Err(TranslateError::DuplicateDomain { .. })
    ));

    let mut r = good.clone();
    r.routes[0].virtual_hosts[0].routes.push(EnvoyRoute {
        name: "broken#0".into(),
        r#match: Some(envoy_types::pb::envoy::config::route::v3::RouteMatch {
            path_specifier: Some(
                envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::SafeRegex(
                    envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                        regex: "(".into(),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster("service.web".into())),
            ..Default::default()
        })),
        ..Default::default()
    });
    assert!(matches!(
        validate::validate(&r),
        Err(TranslateError::InvalidRegex { ref route, .. }) if route == "broken#0"
    ));
}

/// Not an assertion: how long translation takes at 1,000 and 10,000 routes
/// over 1,000 services (debug builds are much slower than release).
#[test]
fn timing_print() {
    let services: Vec<Stored> = (0..1000)
        .map(|i| {
            service(
                &format!("svc{i}"),
                &format!("10.1.{}.{}", i / 250, i % 250),
                8080,
            )
        })
        .collect();
    // Four normalised route shapes, cloned with new ids (validating 10,000
    // routes through the schema would dominate the test's run time).
    let template = [
        route("t0", &services[0], json!({"paths": ["/t"]})),
        route(
            "t1",
            &services[0],
            json!({"paths": ["/t", "~/t/\\d+"], "methods": ["GET", "POST"]}),
        ),
        route(
            "t2",
            &services[0],
            json!({"hosts": ["t.example.com"], "paths": ["/t"]}),
        ),
        route(
            "t3",
            &services[0],
            json!({"hosts": ["*.wild.example.com"], "paths": ["/t"], "strip_path": false}),
        ),
    ];
    for n in [1_000usize, 10_000] {
        let setup = Instant::now();
        let mut ents = services.clone();
        for i in 0..n {
            let s = &services[i % services.len()];
            let mut r = template[i % 4].clone();
            r.id = uuid::Uuid::new_v4().to_string();
            r.data["id"] = json!(r.id);
            r.data["name"] = json!(format!("r{i}"));
            r.data["created_at"] = json!(1_700_000_000 + i as i64);
            r.data["service"] = json!({"id": s.id});
            match i % 4 {
                0 => r.data["paths"] = json!([format!("/r{i}")]),
                1 => r.data["paths"] = json!([format!("/r{i}"), format!("~/x{i}/\\d+")]),
                2 => {
                    r.data["hosts"] = json!([format!("h{}.example.com", i % 10)]);
                    r.data["paths"] = json!([format!("/h{i}")]);
                }
                _ => r.data["paths"] = json!([format!("/w{i}")]),
            }
            ents.push(r);
        }
        let setup = setup.elapsed();
        // What the snapshot cache runs: tables, encoded.
        let t = Instant::now();
        let tables = translate_tables(&ents, Flavour::Envoy, &ProxyOptions::default()).unwrap();
        let encoded: usize = encode_tables(&tables.routes.iter().collect::<Vec<_>>())
            .iter()
            .map(Vec::len)
            .sum();
        let cache_path = t.elapsed();
        let t = Instant::now();
        let res = run(&ents);
        let took = t.elapsed();
        let t = Instant::now();
        validate::validate(&res).unwrap();
        let validation = t.elapsed();
        let entries: usize = res
            .routes
            .iter()
            .flat_map(|r| r.virtual_hosts.iter())
            .map(|v| v.routes.len())
            .sum();
        let bytes: usize = res.routes.iter().map(Message::encoded_len).sum();
        assert_eq!(bytes, encoded);
        let vhosts = res.routes[0].virtual_hosts.len();
        eprintln!(
            "translate: {n} routes / {} services -> {} clusters, {vhosts} virtual hosts per route configuration, \
             {entries} route entries ({bytes} bytes of RDS): {cache_path:?} to translate and encode route tables (the \
             snapshot cache's path); {took:?} to translate into plain messages (validation alone ~{validation:?}; \
             building the test entities took {setup:?})",
            services.len(),
            res.clusters.len(),
        );
    }
}
