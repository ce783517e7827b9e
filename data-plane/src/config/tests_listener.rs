//! Listeners as the translator emits them, and filter chain selection.

use super::testutil::*;
use super::*;
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;

fn compile_listener(l: &Listener) -> Result<ListenerConfig, String> {
    listener::compile(&l.name, l)
}

#[test]
fn http_listener_as_translated() {
    let lc = compile_listener(&http_listener("http", 8000, "http")).unwrap();
    assert_eq!(lc.name, "http");
    assert_eq!(lc.address, "0.0.0.0:8000".parse().unwrap());
    assert_eq!(lc.route_config, "http");
    assert_eq!(lc.stat_prefix, "http");
    assert!(lc.use_remote_address);
    assert!(lc.websocket);
    assert_eq!(lc.codec, Codec::Auto);
    assert_eq!(lc.server_name.as_ref().unwrap(), "envoy");
    assert!(!lc.suppress_envoy_headers);
    assert!(lc.skipped_filters.is_empty());
    assert!(lc.tls.is_none());
    assert_eq!(lc.per_connection_buffer_limit, 1024 * 1024);
}

#[test]
fn https_listener_chains_by_sni() {
    let l = https_listener(
        "https",
        8443,
        vec![
            tls_chain(
                "cert.a",
                &["a.example.com", "*.example.com"],
                &["cert.a", "cert.a.alt"],
                "https",
            ),
            tls_chain(
                "cert.b",
                &["B.example.com", "*.b.example.com"],
                &["cert.b"],
                "https",
            ),
            tls_chain("cert.default", &[], &["cert.default"], "https"),
        ],
    );
    let lc = compile_listener(&l).unwrap();
    assert_eq!(lc.route_config, "https");
    let tls = lc.tls.as_ref().unwrap();
    assert!(tls.tls_inspector);
    assert_eq!(tls.chains[0].secret, "cert.a");
    assert_eq!(tls.chains[0].secrets, vec!["cert.a", "cert.a.alt"]);
    assert_eq!(
        tls.chains[0].alpn,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    // Server names are compared lower-cased.
    assert_eq!(
        tls.chains[1].server_names,
        vec!["b.example.com", "*.b.example.com"]
    );
    let pick = |sni: Option<&str>| tls.select(sni).map(|c| c.secret.as_str());
    let cases: &[(Option<&str>, Option<&str>)] = &[
        (Some("a.example.com"), Some("cert.a")),
        (Some("b.example.com"), Some("cert.b")),
        (Some("B.EXAMPLE.COM"), Some("cert.b")),
        // Wildcards, longest first.
        (Some("x.b.example.com"), Some("cert.b")),
        (Some("x.y.b.example.com"), Some("cert.b")),
        (Some("x.example.com"), Some("cert.a")),
        (Some("x.y.example.com"), Some("cert.a")),
        // `*.example.com` does not cover example.com itself.
        (Some("example.com"), Some("cert.default")),
        (Some("other.org"), Some("cert.default")),
        (None, Some("cert.default")),
        (Some(""), Some("cert.default")),
        (Some("é.example.com"), Some("cert.a")),
        (Some("x."), Some("cert.default")),
    ];
    for (sni, want) in cases {
        assert_eq!(pick(*sni), *want, "sni {sni:?}");
    }

    // Without a catch-all chain, an unknown name gets no chain (Envoy closes).
    let l = https_listener(
        "https",
        8443,
        vec![tls_chain(
            "cert.a",
            &["a.example.com"],
            &["cert.a"],
            "https",
        )],
    );
    let lc = compile_listener(&l).unwrap();
    assert!(
        lc.tls
            .as_ref()
            .unwrap()
            .select(Some("z.example.com"))
            .is_none()
    );
    assert!(lc.tls.as_ref().unwrap().select(None).is_none());

    // Without the TLS inspector the SNI is never known: only a catch-all.
    let mut l = https_listener(
        "https",
        8443,
        vec![
            tls_chain("cert.a", &["a.example.com"], &["cert.a"], "https"),
            tls_chain("cert.default", &[], &["cert.default"], "https"),
        ],
    );
    l.listener_filters.clear();
    let lc = compile_listener(&l).unwrap();
    assert_eq!(
        lc.tls
            .as_ref()
            .unwrap()
            .select(Some("a.example.com"))
            .unwrap()
            .secret,
        "cert.default"
    );
}

#[test]
fn filter_chain_conflicts_are_errors() {
    let dup = https_listener(
        "https",
        8443,
        vec![
            tls_chain("a", &["a.example.com"], &["a"], "https"),
            tls_chain("b", &["A.example.com"], &["b"], "https"),
        ],
    );
    assert!(
        compile_listener(&dup)
            .unwrap_err()
            .contains("multiple filter chains with the same matching rules")
    );
    let two_catch_all = https_listener(
        "https",
        8443,
        vec![
            tls_chain("a", &[], &["a"], "https"),
            tls_chain("b", &[], &["b"], "https"),
        ],
    );
    assert!(
        compile_listener(&two_catch_all)
            .unwrap_err()
            .contains("same matching rules")
    );
    let different_routes = https_listener(
        "https",
        8443,
        vec![
            tls_chain("a", &["a"], &["a"], "r1"),
            tls_chain("b", &["b"], &["b"], "r2"),
        ],
    );
    assert!(
        compile_listener(&different_routes)
            .unwrap_err()
            .contains("different HTTP connection manager")
    );
    let mut mixed = http_listener("l", 1, "r");
    mixed
        .filter_chains
        .push(tls_chain("b", &["b"], &["b"], "r"));
    assert!(
        compile_listener(&mixed)
            .unwrap_err()
            .contains("mixing plain and TLS")
    );
    let mut none = http_listener("l", 1, "r");
    none.filter_chains.clear();
    assert!(
        compile_listener(&none)
            .unwrap_err()
            .contains("no filter chains")
    );
    let no_secret = https_listener("https", 8443, vec![tls_chain("a", &["a"], &[], "r")]);
    assert!(
        compile_listener(&no_secret)
            .unwrap_err()
            .contains("no TLS certificate")
    );
}

#[test]
fn addresses_must_be_ip_literals() {
    let mut l = http_listener("l", 8000, "r");
    l.address = Some(socket("localhost", 8000));
    assert!(
        compile_listener(&l)
            .unwrap_err()
            .contains("malformed IP address")
    );
    l.address = Some(socket("::", 8000));
    assert_eq!(
        compile_listener(&l).unwrap().address,
        "[::]:8000".parse().unwrap()
    );
    l.address = None;
    assert!(
        compile_listener(&l)
            .unwrap_err()
            .contains("address is required")
    );
}

fn with_filters(filters: Vec<HttpFilter>) -> Listener {
    let mut l = http_listener("l", 8000, "r");
    l.filter_chains[0].filters = vec![hcm_filter(hcm_with("r", filters))];
    l
}

fn gantry_filter(optional: bool) -> HttpFilter {
    HttpFilter {
        name: "gantry.filters.http.rate_limiting".into(),
        is_optional: optional,
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/gantry.filters.v1.RateLimiting".into(),
            value: vec![],
        })),
        ..Default::default()
    }
}

#[test]
fn http_filter_chain_rules() {
    // Optional filters this proxy does not implement are skipped.
    let lc = compile_listener(&with_filters(vec![gantry_filter(true), router_filter()])).unwrap();
    assert_eq!(
        lc.skipped_filters,
        vec!["gantry.filters.http.rate_limiting"]
    );
    // Required ones are refused.
    let e =
        compile_listener(&with_filters(vec![gantry_filter(false), router_filter()])).unwrap_err();
    assert!(
        e.contains("gantry.filters.http.rate_limiting") && e.contains("not marked is_optional"),
        "{e}"
    );
    // The router is required, and last.
    let e = compile_listener(&with_filters(vec![gantry_filter(true)])).unwrap_err();
    assert!(e.contains("must be the router"), "{e}");
    let e =
        compile_listener(&with_filters(vec![router_filter(), gantry_filter(true)])).unwrap_err();
    assert!(e.contains("must be the last filter"), "{e}");
    // A router named but without config.
    let bare = HttpFilter {
        name: "envoy.filters.http.router".into(),
        ..Default::default()
    };
    assert!(compile_listener(&with_filters(vec![bare])).is_ok());
}

#[test]
fn only_the_connection_manager_over_rds_is_supported() {
    let mut l = http_listener("l", 8000, "r");
    l.filter_chains[0].filters = vec![Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
                .into(),
            value: vec![],
        })),
    }];
    assert!(compile_listener(&l).unwrap_err().contains("tcp_proxy"));

    let mut h = hcm_with("r", vec![router_filter()]);
    h.route_specifier = Some(RouteSpecifier::RouteConfig(Default::default()));
    let mut l = http_listener("l", 8000, "r");
    l.filter_chains[0].filters = vec![hcm_filter(h)];
    assert!(
        compile_listener(&l)
            .unwrap_err()
            .contains("inline route_config is not supported")
    );

    let mut h = hcm_with("r", vec![router_filter()]);
    h.skip_xff_append = true;
    let mut l = http_listener("l", 8000, "r");
    l.filter_chains[0].filters = vec![hcm_filter(h)];
    let e = compile_listener(&l).unwrap_err();
    assert!(
        e.contains("http_connection_manager: unsupported field set: skip_xff_append"),
        "{e}"
    );
    // Escaped slashes are kept; Envoy's other actions are refused.
    let mut h = hcm_with("r", vec![router_filter()]);
    h.normalize_path = boolv(true);
    h.path_with_escaped_slashes_action = 2;
    let mut l = http_listener("l", 8000, "r");
    l.filter_chains[0].filters = vec![hcm_filter(h)];
    let e = compile_listener(&l).unwrap_err();
    assert!(
        e.contains("path_with_escaped_slashes_action 2 is not supported"),
        "{e}"
    );

    let mut h = hcm_with("r", vec![router_filter()]);
    h.stat_prefix.clear();
    let mut l = http_listener("l", 8000, "r");
    l.filter_chains[0].filters = vec![hcm_filter(h)];
    assert!(compile_listener(&l).unwrap_err().contains("stat_prefix"));

    // A router with suppressed x-envoy headers.
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            envoy_types::pb::envoy::extensions::filters::http::router::v3::Router {
                suppress_envoy_headers: true,
                ..Default::default()
            },
        ))),
        ..Default::default()
    };
    assert!(
        compile_listener(&with_filters(vec![router]))
            .unwrap()
            .suppress_envoy_headers
    );
}

/// The whole set: missing RDS and SDS references compile; errors name the
/// resource.
#[test]
fn compile_names_the_failing_resource() {
    let mut set = ResourceSet::default();
    set.listeners
        .insert("http".into(), http_listener("http", 8000, "not-yet"));
    set.listeners.insert(
        "https".into(),
        https_listener(
            "https",
            8443,
            vec![tls_chain(
                "c",
                &["a.example.com"],
                &["cert.missing"],
                "https",
            )],
        ),
    );
    set.routes.insert(
        "https".into(),
        route_config(
            "https",
            vec![vhost(
                "v",
                &["*"],
                vec![prefix("r", "/", "no-such-cluster")],
            )],
        ),
    );
    let c = compile(&set).unwrap();
    assert_eq!(
        c.listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["http", "https"]
    );
    assert!(c.routes.contains_key("https") && !c.routes.contains_key("not-yet"));
    assert!(c.certificates.is_empty());

    let mut bad = set.clone();
    bad.routes.insert(
        "broken".into(),
        route_config("broken", vec![vhost("v", &["*"], vec![route_with(
            "r",
            envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::SafeRegex(regex("(")),
            action("c"),
        )])]),
    );
    let e = compile(&bad).unwrap_err();
    assert_eq!((e.kind, e.name.as_str()), ("RouteConfiguration", "broken"));
    assert!(
        e.to_string()
            .starts_with("RouteConfiguration broken: virtual host \"v\": route \"r\": "),
        "{e}"
    );

    let mut bad = set.clone();
    bad.listeners.get_mut("http").unwrap().address = Some(socket("not-an-ip", 1));
    let e = compile(&bad).unwrap_err();
    assert_eq!((e.kind, e.name.as_str()), ("Listener", "http"));

    let mut bad = set.clone();
    bad.listeners
        .insert("z".into(), http_listener("z", 8000, "r"));
    let e = compile(&bad).unwrap_err();
    assert_eq!((e.kind, e.name.as_str()), ("Listener", "z"));
    assert!(e.reason.contains("duplicate address"), "{e}");

    let mut bad = set.clone();
    bad.clusters.insert(
        "c".into(),
        Cluster {
            name: "other".into(),
            ..Default::default()
        },
    );
    let e = compile(&bad).unwrap_err();
    assert_eq!((e.kind, e.name.as_str()), ("Cluster", "c"));
    assert!(e.reason.contains("name field says \"other\""), "{e}");
}

#[test]
fn server_name_is_refused_only_where_envoy_refuses_it() {
    let with = |name: &str| {
        let mut l = http_listener("http", 8000, "http");
        let mut h = hcm_with("http", vec![router_filter()]);
        h.server_name = name.into();
        l.filter_chains[0].filters = vec![hcm_filter(h)];
        compile_listener(&l)
    };
    assert_eq!(with("gantry").unwrap().server_name.unwrap(), "gantry");
    // Envoy's HTTP_HEADER_VALUE (not strict): NUL, CR and LF refused.
    assert!(with("a\r\nb").unwrap_err().contains("server_name"));
    // Accepted as Envoy accepts it; a header cannot carry it, so none is sent.
    assert!(with("a\u{1}b").unwrap().server_name.is_none());
}
