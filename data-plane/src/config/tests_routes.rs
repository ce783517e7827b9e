//! Route selection, rewrites, redirects and route policies, each case
//! asserting what Envoy does with the same configuration and request.

use super::testutil::*;
use super::*;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, RuntimeFractionalPercent, data_source, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, QueryParameterMatcher, RedirectAction, RetryPolicy as PbRetryPolicy,
    Route as PbRoute, RouteAction, WeightedCluster,
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    retry_policy::RetryBackOff,
    route::Action as PbAction,
    route_action::{
        ClusterSpecifier, HashPolicy as PbHashPolicy, HostRewriteSpecifier, RequestMirrorPolicy,
        hash_policy::{Header as PbHashHeader, PolicySpecifier},
    },
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, StringMatcher as PbStringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, Int64Range};
use std::time::Duration;

// --- virtual host selection --------------------------------------------------

fn domains_config(ignore_port: bool) -> RouteConfiguration {
    let vh = |name: &str, domains: &[&str]| vhost(name, domains, vec![prefix(name, "/", "c")]);
    let mut rc = route_config(
        "rc",
        vec![
            vh("exact", &["api.example.com"]),
            vh("with-port", &["api.example.com:8080"]),
            vh("suffix-long", &["*-bar.foo.com"]),
            vh("suffix", &["*.foo.com"]),
            vh("prefix-long", &["foo.bar.*"]),
            vh("prefix", &["foo.*"]),
            vh("mixed-case", &["MiXeD.Example.com"]),
            vh("default", &["*"]),
        ],
    );
    rc.ignore_port_in_host_matching = ignore_port;
    rc
}

#[test]
fn virtual_host_selection_order() {
    let t = table(&domains_config(false));
    let cases: &[(&str, &str)] = &[
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),
        ("mixed.example.com", "mixed-case"),
        // Exact, then the longest suffix wildcard...
        ("x-bar.foo.com", "suffix-long"),
        ("x.foo.com", "suffix"),
        ("a.b.foo.com", "suffix"),
        // ...a wildcard must match at least one character...
        (".foo.com", "default"),
        // ...suffix wildcards before prefix wildcards...
        ("foo.foo.com", "suffix"),
        // ...then the longest prefix wildcard, then `*`.
        ("foo.bar.baz", "prefix-long"),
        ("foo.x", "prefix"),
        ("foo.", "default"),
        ("other.example.com", "default"),
        ("", "default"),
        // Without ignore_port_in_host_matching the port is part of the host.
        ("api.example.com:8080", "with-port"),
        ("api.example.com:9090", "default"),
        ("x.foo.com:443", "default"),
    ];
    for (host, want) in cases {
        let got = t.virtual_host(host).map(|v| v.name.as_str());
        assert_eq!(got, Some(*want), "host {host:?}");
    }
}

#[test]
fn virtual_host_selection_ignoring_ports() {
    let t = table(&domains_config(true));
    let cases: &[(&str, &str)] = &[
        ("api.example.com:8080", "exact"),
        ("api.example.com:", "exact"),
        ("API.EXAMPLE.COM:443", "exact"),
        ("x.foo.com:80", "suffix"),
        ("foo.x:1", "prefix"),
        // IPv6 literals keep their brackets; only a port after `]` goes.
        ("[::1]:8080", "default"),
        ("[::1]", "default"),
    ];
    for (host, want) in cases {
        let got = t.virtual_host(host).map(|v| v.name.as_str());
        assert_eq!(got, Some(*want), "host {host:?}");
    }
    let mut rc = route_config(
        "rc",
        vec![vhost("v6", &["[::1]"], vec![prefix("r", "/", "c")])],
    );
    rc.ignore_port_in_host_matching = true;
    let t = table(&rc);
    assert_eq!(
        t.virtual_host("[::1]:80").map(|v| v.name.as_str()),
        Some("v6")
    );
    // No `*` virtual host: nothing matches, a 404.
    assert!(t.virtual_host("other").is_none());
    assert!(select(&t, "other", "/").is_none());
}

#[test]
fn only_a_default_virtual_host_takes_every_host() {
    let t = table(&route_config(
        "rc",
        vec![vhost("all", &["*"], vec![prefix("r", "/", "c")])],
    ));
    for host in ["", "a", "a:1", "[::1]:2"] {
        assert_eq!(t.virtual_host(host).unwrap().name, "all");
    }
}

#[test]
fn domain_conflicts_are_errors() {
    let dup = route_config(
        "rc",
        vec![
            vhost("a", &["x.com"], vec![]),
            vhost("b", &["X.COM"], vec![]),
        ],
    );
    assert!(table_err(&dup).contains("Duplicate entry of domain x.com"));
    let two_defaults = route_config(
        "rc",
        vec![vhost("a", &["*"], vec![]), vhost("b", &["*"], vec![])],
    );
    assert!(table_err(&two_defaults).contains("Only a single wildcard domain"));
    let dup_wild = route_config(
        "rc",
        vec![
            vhost("a", &["*.x.com"], vec![]),
            vhost("b", &["*.x.com"], vec![]),
        ],
    );
    assert!(table_err(&dup_wild).contains("Duplicate entry of domain *.x.com"));
    let no_domains = route_config("rc", vec![vhost("a", &[], vec![])]);
    assert!(table_err(&no_domains).contains("domains must not be empty"));
}

// --- path matching -----------------------------------------------------------

fn path_table() -> RouteTable {
    let mut ci = prefix("ci", "/CaSe", "c");
    ci.r#match.as_mut().unwrap().case_sensitive = boolv(false);
    table(&route_config(
        "rc",
        vec![vhost(
            "v",
            &["*"],
            vec![
                route_with("exact", PathSpecifier::Path("/exact".into()), action("c")),
                route_with(
                    "separated",
                    PathSpecifier::PathSeparatedPrefix("/sep".into()),
                    action("c"),
                ),
                route_with(
                    "regex",
                    PathSpecifier::SafeRegex(regex(r"/items/\d+")),
                    action("c"),
                ),
                prefix("api", "/api", "c"),
                ci,
                prefix("catch-all", "/", "c"),
            ],
        )],
    ))
}

#[test]
fn path_matchers_and_first_match_order() {
    let t = path_table();
    let cases: &[(&str, &str)] = &[
        ("/exact", "exact"),
        ("/exact?x=1", "exact"),
        ("/exact#frag", "exact"),
        ("/exact/", "catch-all"),
        ("/EXACT", "catch-all"),
        ("/sep", "separated"),
        ("/sep/", "separated"),
        ("/sep/x", "separated"),
        ("/sep?x", "separated"),
        ("/sepx", "catch-all"),
        ("/items/12", "regex"),
        ("/items/12?q=1", "regex"),
        ("/items/12/x", "catch-all"),
        ("/items/١٢", "catch-all"),
        ("/api", "api"),
        // A prefix does not respect segments.
        ("/apix", "api"),
        ("/api/v1", "api"),
        ("/API", "catch-all"),
        ("/case/x", "ci"),
        ("/CASE", "ci"),
        ("/", "catch-all"),
    ];
    for (path, want) in cases {
        assert_eq!(
            selected_name(&t, "h", path).as_deref(),
            Some(*want),
            "path {path:?}"
        );
    }
}

#[test]
fn prefix_matches_the_path_without_its_query() {
    let t = table(&route_config(
        "rc",
        vec![vhost("v", &["*"], vec![prefix("q", "/a?b", "c")])],
    ));
    assert!(selected_name(&t, "h", "/a?b").is_none());
}

#[test]
fn path_parameters_are_ignored_when_configured() {
    let mut rc = route_config(
        "rc",
        vec![vhost(
            "v",
            &["*"],
            vec![route_with(
                "p",
                PathSpecifier::Path("/a".into()),
                action("c"),
            )],
        )],
    );
    assert!(selected_name(&table(&rc), "h", "/a;x=1").is_none());
    rc.ignore_path_parameters_in_path_matching = true;
    let t = table(&rc);
    assert_eq!(selected_name(&t, "h", "/a;x=1").as_deref(), Some("p"));
    assert_eq!(selected_name(&t, "h", "/a;x=1?q=1").as_deref(), Some("p"));
}

#[test]
fn bad_path_specifiers_are_errors() {
    for (spec, needle) in [
        (PathSpecifier::SafeRegex(regex("(")), "match.safe_regex"),
        (PathSpecifier::SafeRegex(regex("")), "must not be empty"),
        (
            PathSpecifier::PathSeparatedPrefix("/a/".into()),
            "path_separated_prefix",
        ),
        (
            PathSpecifier::PathSeparatedPrefix("/a?b".into()),
            "path_separated_prefix",
        ),
    ] {
        let rc = route_config(
            "rc",
            vec![vhost("v", &["*"], vec![route_with("r", spec, action("c"))])],
        );
        let e = table_err(&rc);
        assert!(e.contains(needle) && e.contains("route \"r\""), "{e}");
    }
    let mut no_path = prefix("r", "/", "c");
    no_path.r#match.as_mut().unwrap().path_specifier = None;
    let e = table_err(&route_config("rc", vec![vhost("v", &["*"], vec![no_path])]));
    assert!(e.contains("no path specifier"), "{e}");
}

// --- header, method and query matching --------------------------------------

fn hm(
    name: &str,
    spec: HeaderMatchSpecifier,
) -> envoy_types::pb::envoy::config::route::v3::HeaderMatcher {
    header(name, spec)
}

fn matches(
    h: envoy_types::pb::envoy::config::route::v3::HeaderMatcher,
    method: http::Method,
    req: &[(&str, &str)],
) -> bool {
    let t = table(&route_config(
        "rc",
        vec![vhost(
            "v",
            &["*"],
            vec![with_headers(prefix("r", "/", "c"), vec![h])],
        )],
    ));
    t.select("host.example.com", "/p?q=1", &method, &headers(req))
        .is_some()
}

fn sm(p: MatchPattern, ignore_case: bool) -> HeaderMatchSpecifier {
    HeaderMatchSpecifier::StringMatch(PbStringMatcher {
        ignore_case,
        match_pattern: Some(p),
    })
}

#[test]
fn header_matchers() {
    use HeaderMatchSpecifier as S;
    use http::Method as M;
    let get = M::GET;
    type Case<'a> = (
        envoy_types::pb::envoy::config::route::v3::HeaderMatcher,
        M,
        Vec<(&'a str, &'a str)>,
        bool,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            hm("x-a", S::ExactMatch("v".into())),
            get.clone(),
            vec![("x-a", "v")],
            true,
        ),
        (
            hm("x-a", S::ExactMatch("v".into())),
            get.clone(),
            vec![("x-a", "V")],
            false,
        ),
        // The legacy exact_match with an empty value matches any value.
        (
            hm("x-a", S::ExactMatch(String::new())),
            get.clone(),
            vec![("x-a", "anything")],
            true,
        ),
        (
            hm("X-A", S::ExactMatch("v".into())),
            get.clone(),
            vec![("x-a", "v")],
            true,
        ),
        (
            hm("x-a", S::PrefixMatch("ab".into())),
            get.clone(),
            vec![("x-a", "abc")],
            true,
        ),
        (
            hm("x-a", S::SuffixMatch("bc".into())),
            get.clone(),
            vec![("x-a", "abc")],
            true,
        ),
        (
            hm("x-a", S::ContainsMatch("b".into())),
            get.clone(),
            vec![("x-a", "abc")],
            true,
        ),
        (
            hm("x-a", S::ContainsMatch("B".into())),
            get.clone(),
            vec![("x-a", "abc")],
            false,
        ),
        (
            hm("x-a", S::SafeRegexMatch(regex("a.c"))),
            get.clone(),
            vec![("x-a", "abc")],
            true,
        ),
        // Regexes are a full match.
        (
            hm("x-a", S::SafeRegexMatch(regex("b"))),
            get.clone(),
            vec![("x-a", "abc")],
            false,
        ),
        (
            hm("x-a", S::RangeMatch(Int64Range { start: -10, end: 0 })),
            get.clone(),
            vec![("x-a", "-1")],
            true,
        ),
        (
            hm("x-a", S::RangeMatch(Int64Range { start: -10, end: 0 })),
            get.clone(),
            vec![("x-a", "0")],
            false,
        ),
        (
            hm("x-a", S::RangeMatch(Int64Range { start: 0, end: 10 })),
            get.clone(),
            vec![("x-a", "x")],
            false,
        ),
        (
            hm("x-a", S::PresentMatch(true)),
            get.clone(),
            vec![("x-a", "")],
            true,
        ),
        (hm("x-a", S::PresentMatch(true)), get.clone(), vec![], false),
        (hm("x-a", S::PresentMatch(false)), get.clone(), vec![], true),
        (
            hm("x-a", S::PresentMatch(false)),
            get.clone(),
            vec![("x-a", "1")],
            false,
        ),
        // String matchers.
        (
            hm("x-a", sm(MatchPattern::Exact("AbC".into()), true)),
            get.clone(),
            vec![("x-a", "aBc")],
            true,
        ),
        (
            hm("x-a", sm(MatchPattern::Prefix("AB".into()), true)),
            get.clone(),
            vec![("x-a", "abc")],
            true,
        ),
        (
            hm("x-a", sm(MatchPattern::Suffix("BC".into()), true)),
            get.clone(),
            vec![("x-a", "abc")],
            true,
        ),
        (
            hm("x-a", sm(MatchPattern::Contains("B".into()), true)),
            get.clone(),
            vec![("x-a", "abc")],
            true,
        ),
        (
            hm("x-a", sm(MatchPattern::SafeRegex(regex("[a-c]+")), false)),
            get.clone(),
            vec![("x-a", "abc")],
            true,
        ),
        // A header on several lines: the values joined with `,` match, and
        // so does any one line (what Envoy 1.40 answers; see the
        // differential tests in tests/tests/proxy.rs).
        (
            hm("x-a", S::ExactMatch("1,2".into())),
            get.clone(),
            vec![("x-a", "1"), ("x-a", "2")],
            true,
        ),
        (
            hm("x-a", S::ExactMatch("1".into())),
            get.clone(),
            vec![("x-a", "1"), ("x-a", "2")],
            true,
        ),
        (
            hm("x-a", S::ExactMatch("3".into())),
            get.clone(),
            vec![("x-a", "1"), ("x-a", "2")],
            false,
        ),
        // The method and the authority are pseudo-headers.
        (
            hm(":method", S::ExactMatch("POST".into())),
            M::POST,
            vec![],
            true,
        ),
        (
            hm(":method", S::ExactMatch("POST".into())),
            get.clone(),
            vec![],
            false,
        ),
        (
            hm(
                ":method",
                sm(MatchPattern::SafeRegex(regex("^(?:GET|HEAD)$")), false),
            ),
            M::HEAD,
            vec![],
            true,
        ),
        (
            hm(":authority", S::SuffixMatch(".example.com".into())),
            get.clone(),
            vec![],
            true,
        ),
        (
            hm(":path", S::ExactMatch("/p?q=1".into())),
            get.clone(),
            vec![],
            true,
        ),
        // HTTP/1 Host becomes :authority in Envoy: a `host` matcher finds nothing.
        (
            hm("host", S::PresentMatch(true)),
            get.clone(),
            vec![("host", "h")],
            false,
        ),
        // A name no request here can carry never matches.
        (
            hm("bad header", S::PresentMatch(false)),
            get.clone(),
            vec![],
            true,
        ),
        // No specifier: a presence match.
        (
            envoy_types::pb::envoy::config::route::v3::HeaderMatcher {
                name: "x-a".into(),
                ..Default::default()
            },
            get.clone(),
            vec![("x-a", "1")],
            true,
        ),
    ];
    for (i, (h, method, req, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            matches(h.clone(), method, &req),
            want,
            "case {i}: {h:?} {req:?}"
        );
    }
}

#[test]
fn inverted_and_missing_headers() {
    use HeaderMatchSpecifier as S;
    let inv = |spec: S, missing_as_empty: bool| {
        envoy_types::pb::envoy::config::route::v3::HeaderMatcher {
            name: "x-a".into(),
            invert_match: true,
            treat_missing_header_as_empty: missing_as_empty,
            header_match_specifier: Some(spec),
        }
    };
    let get = http::Method::GET;
    // Inverted: the value must not match...
    assert!(matches(
        inv(S::ExactMatch("v".into()), false),
        get.clone(),
        &[("x-a", "w")]
    ));
    assert!(!matches(
        inv(S::ExactMatch("v".into()), false),
        get.clone(),
        &[("x-a", "v")]
    ));
    // ...but a missing header matches nothing, inverted or not...
    assert!(!matches(
        inv(S::ExactMatch("v".into()), false),
        get.clone(),
        &[]
    ));
    // ...unless it is treated as empty.
    assert!(matches(
        inv(S::ExactMatch("v".into()), true),
        get.clone(),
        &[]
    ));
    assert!(matches(
        inv(S::RangeMatch(Int64Range { start: 0, end: 10 }), true),
        get.clone(),
        &[]
    ));
    // Inverted presence.
    assert!(matches(inv(S::PresentMatch(true), false), get.clone(), &[]));
    assert!(!matches(
        inv(S::PresentMatch(true), false),
        get.clone(),
        &[("x-a", "1")]
    ));
    // A missing header treated as empty against an empty exact value.
    let empty = envoy_types::pb::envoy::config::route::v3::HeaderMatcher {
        name: "x-a".into(),
        treat_missing_header_as_empty: true,
        header_match_specifier: Some(sm(MatchPattern::Exact(String::new()), false)),
        ..Default::default()
    };
    assert!(matches(empty, get, &[]));
}

#[test]
fn bad_header_matchers_are_errors() {
    use HeaderMatchSpecifier as S;
    for (h, needle) in [
        (hm("x-a", S::SafeRegexMatch(regex("("))), "invalid regex"),
        (
            hm("x-a", sm(MatchPattern::SafeRegex(regex("a")), true)),
            "ignore_case has no effect for safe_regex",
        ),
        (
            hm("x-a", S::PrefixMatch(String::new())),
            "must not be empty",
        ),
        (hm("", S::PresentMatch(true)), "must not be empty"),
        (
            hm("bad\nheader", S::PresentMatch(true)),
            "invalid header name",
        ),
    ] {
        let rc = route_config(
            "rc",
            vec![vhost(
                "v",
                &["*"],
                vec![with_headers(prefix("r", "/", "c"), vec![h])],
            )],
        );
        let e = table_err(&rc);
        assert!(e.contains(needle), "{e}");
    }
}

#[test]
fn query_parameter_matchers() {
    let qp = |name: &str, spec: Option<QueryParameterMatchSpecifier>| QueryParameterMatcher {
        name: name.into(),
        query_parameter_match_specifier: spec,
    };
    let exact = |v: &str| {
        Some(QueryParameterMatchSpecifier::StringMatch(PbStringMatcher {
            match_pattern: Some(MatchPattern::Exact(v.into())),
            ..Default::default()
        }))
    };
    let cases = [
        (qp("a", exact("1")), "/p?a=1", true),
        (qp("a", exact("1")), "/p?b=2&a=1", true),
        (qp("a", exact("1")), "/p?a=2", false),
        // Only the first value counts.
        (qp("a", exact("1")), "/p?a=2&a=1", false),
        // Values are not decoded.
        (qp("a", exact("x y")), "/p?a=x%20y", false),
        (qp("a", exact("x%20y")), "/p?a=x%20y", true),
        (qp("a", exact("")), "/p?a", true),
        (
            qp("a", Some(QueryParameterMatchSpecifier::PresentMatch(true))),
            "/p?a",
            true,
        ),
        (
            qp("a", Some(QueryParameterMatchSpecifier::PresentMatch(true))),
            "/p?b",
            false,
        ),
        (qp("a", None), "/p?a=1", true),
        (qp("a", None), "/p", false),
    ];
    for (q, path, want) in cases {
        let mut r = prefix("r", "/", "c");
        r.r#match.as_mut().unwrap().query_parameters = vec![q.clone()];
        let t = table(&route_config("rc", vec![vhost("v", &["*"], vec![r])]));
        assert_eq!(
            selected_name(&t, "h", path).is_some(),
            want,
            "{q:?} on {path}"
        );
    }
}

#[test]
fn grpc_match() {
    let mut r = prefix("grpc", "/", "c");
    r.r#match.as_mut().unwrap().grpc = Some(Default::default());
    let t = table(&route_config("rc", vec![vhost("v", &["*"], vec![r])]));
    let sel = |ct: &str| {
        t.select(
            "h",
            "/s/M",
            &http::Method::POST,
            &headers(&[("content-type", ct)]),
        )
        .is_some()
    };
    assert!(sel("application/grpc"));
    assert!(sel("application/grpc+proto"));
    assert!(!sel("application/grpc-web"));
    assert!(!sel("application/json"));
}

// --- rewrites ----------------------------------------------------------------

fn rewrite_table(path: PathSpecifier, a: RouteAction) -> RouteTable {
    table(&route_config(
        "rc",
        vec![vhost("v", &["*"], vec![route_with("r", path, a)])],
    ))
}

fn rewritten(t: &RouteTable, path: &str) -> String {
    let s = select(t, "h", path).expect("a route matches");
    forward(s.route)
        .rewrite_path(&s.route.path_match, path)
        .into_owned()
}

#[test]
fn prefix_rewrite() {
    let pr = |p: &str| RouteAction {
        prefix_rewrite: p.into(),
        ..action("c")
    };
    let cases: Vec<(PathSpecifier, &str, &str, &str)> = vec![
        (
            PathSpecifier::Prefix("/api".into()),
            "/v1",
            "/api/users?x=1",
            "/v1/users?x=1",
        ),
        // Envoy's documented pair: /prefix/ -> / works, /prefix -> / doubles the slash.
        (
            PathSpecifier::Prefix("/prefix/".into()),
            "/",
            "/prefix/etc",
            "/etc",
        ),
        (
            PathSpecifier::Prefix("/prefix".into()),
            "/",
            "/prefix/etc",
            "//etc",
        ),
        (PathSpecifier::Prefix("/api".into()), "/v1", "/api", "/v1"),
        (
            PathSpecifier::Path("/old".into()),
            "/new",
            "/old?q=1",
            "/new?q=1",
        ),
        (
            PathSpecifier::PathSeparatedPrefix("/sep".into()),
            "/x",
            "/sep/a?b",
            "/x/a?b",
        ),
        // A regex route replaces the whole path; the query stays.
        (
            PathSpecifier::SafeRegex(regex("/items/[0-9]+")),
            "/item",
            "/items/12?x=1",
            "/item?x=1",
        ),
    ];
    for (spec, rewrite, path, want) in cases {
        let t = rewrite_table(spec.clone(), pr(rewrite));
        assert_eq!(rewritten(&t, path), want, "{spec:?} {rewrite:?} {path:?}");
    }
    // Case-insensitive prefixes replace as many bytes as the prefix has.
    let mut r = route_with("r", PathSpecifier::Prefix("/API".into()), pr("/v2"));
    r.r#match.as_mut().unwrap().case_sensitive = boolv(false);
    let t = table(&route_config("rc", vec![vhost("v", &["*"], vec![r])]));
    assert_eq!(rewritten(&t, "/api/x"), "/v2/x");
}

#[test]
fn regex_rewrite_keeps_the_query() {
    let rr = |p: &str, s: &str| RouteAction {
        regex_rewrite: Some(RegexMatchAndSubstitute {
            pattern: Some(regex(p)),
            substitution: s.into(),
        }),
        ..action("c")
    };
    let cases = [
        (
            r"^/service/([^/]+)(/.*)$",
            r"\2/instance/\1",
            "/service/foo/v1/api?x=1&y",
            "/v1/api/instance/foo?x=1&y",
        ),
        ("one", "two", "/one/one?one=1", "/two/two?one=1"),
        // The translator's Kong v1 strip for prefix /foo and service path /svc/.
        ("^/foo/?", "/svc/", "/foo/bar?q", "/svc/bar?q"),
        ("^/foo/?", "/svc/", "/foo", "/svc/"),
        // The translator's no-strip v0 rewrite for service path /svc.
        ("^/$|^", "/svc", "/a/b", "/svc/a/b"),
        ("^/$|^", "/svc", "/?x=1", "/svc?x=1"),
    ];
    for (p, s, path, want) in cases {
        let t = rewrite_table(PathSpecifier::Prefix("/".into()), rr(p, s));
        assert_eq!(rewritten(&t, path), want, "{p:?} -> {s:?} on {path:?}");
    }
    // Both rewrites at once is an error.
    let mut both = rr("a", "b");
    both.prefix_rewrite = "/x".into();
    let e = table_err(&route_config(
        "rc",
        vec![vhost(
            "v",
            &["*"],
            vec![route_with("r", PathSpecifier::Prefix("/".into()), both)],
        )],
    ));
    assert!(
        e.contains("Specify only one of prefix_rewrite, regex_rewrite"),
        "{e}"
    );
    // No rewrite: the path as it came.
    let t = rewrite_table(PathSpecifier::Prefix("/".into()), action("c"));
    assert_eq!(rewritten(&t, "/a?b"), "/a?b");
    assert!(!forward(&t.virtual_hosts[0].routes[0]).has_path_rewrite());
}

#[test]
fn host_rewrite_variants() {
    let with = |h: Option<HostRewriteSpecifier>| {
        let t = rewrite_table(
            PathSpecifier::Prefix("/".into()),
            RouteAction {
                host_rewrite_specifier: h,
                ..action("c")
            },
        );
        forward(&t.virtual_hosts[0].routes[0]).host_rewrite.clone()
    };
    assert_eq!(with(None), HostRewrite::None);
    assert_eq!(
        with(Some(HostRewriteSpecifier::HostRewriteLiteral(
            "api.internal:8080".into()
        ))),
        HostRewrite::Literal("api.internal:8080".into())
    );
    assert_eq!(
        with(Some(HostRewriteSpecifier::AutoHostRewrite(
            Default::default()
        ))),
        HostRewrite::None
    );
    assert_eq!(
        with(Some(HostRewriteSpecifier::AutoHostRewrite(
            envoy_types::pb::google::protobuf::BoolValue { value: true }
        ))),
        HostRewrite::Auto
    );
    let e = table_err(&route_config(
        "rc",
        vec![vhost(
            "v",
            &["*"],
            vec![route_with(
                "r",
                PathSpecifier::Prefix("/".into()),
                RouteAction {
                    host_rewrite_specifier: Some(HostRewriteSpecifier::HostRewriteHeader(
                        "x".into(),
                    )),
                    ..action("c")
                },
            )],
        )],
    ));
    assert!(e.contains("host_rewrite_header is not supported"), "{e}");
}

// --- clusters, timeouts, retries ----------------------------------------------

#[test]
fn weighted_clusters_pick_in_proportion() {
    let wc = |ws: &[(&str, u32)]| WeightedCluster {
        clusters: ws
            .iter()
            .map(|(n, w)| ClusterWeight {
                name: n.to_string(),
                weight: u32v(*w),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let t = rewrite_table(
        PathSpecifier::Prefix("/".into()),
        RouteAction {
            cluster_specifier: Some(ClusterSpecifier::WeightedClusters(wc(&[
                ("a", 1),
                ("b", 3),
                ("z", 0),
            ]))),
            ..Default::default()
        },
    );
    let choice = &forward(&t.virtual_hosts[0].routes[0]).cluster;
    // rand % total falls into [0,1) for a, [1,4) for b.
    assert_eq!(choice.pick(|| 0), "a");
    assert_eq!(choice.pick(|| 1), "b");
    assert_eq!(choice.pick(|| 3), "b");
    assert_eq!(choice.pick(|| 4), "a");
    let mut counts = std::collections::HashMap::new();
    for r in 0..4000u64 {
        *counts
            .entry(choice.pick(|| r.wrapping_mul(2654435761)))
            .or_insert(0) += 1;
    }
    assert_eq!(counts.get("a"), Some(&1000));
    assert_eq!(counts.get("b"), Some(&3000));
    assert_eq!(counts.get("z"), None);
    assert_eq!(choice.clusters(), vec!["a", "b", "z"]);

    for (ws, needle) in [
        (
            wc(&[("a", 0)]),
            "Sum of weights in the weighted_cluster must be greater than 0.",
        ),
        (wc(&[("a", u32::MAX), ("b", 1)]), "exceeds"),
        (wc(&[]), "must not be empty"),
    ] {
        let e = table_err(&route_config(
            "rc",
            vec![vhost(
                "v",
                &["*"],
                vec![route_with(
                    "r",
                    PathSpecifier::Prefix("/".into()),
                    RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::WeightedClusters(ws)),
                        ..Default::default()
                    },
                )],
            )],
        ));
        assert!(e.contains(needle), "{e}");
    }
}

#[test]
fn timeouts() {
    let with = |t: Option<envoy_types::pb::google::protobuf::Duration>| {
        let tb = rewrite_table(
            PathSpecifier::Prefix("/".into()),
            RouteAction {
                timeout: t,
                ..action("c")
            },
        );
        forward(&tb.virtual_hosts[0].routes[0]).timeout
    };
    assert_eq!(with(None), Some(Duration::from_secs(15)));
    assert_eq!(with(Some(ms(0))), None);
    assert_eq!(with(Some(ms(60_000))), Some(Duration::from_secs(60)));
    let neg = envoy_types::pb::google::protobuf::Duration {
        seconds: -1,
        nanos: 0,
    };
    let e = table_err(&route_config(
        "rc",
        vec![vhost(
            "v",
            &["*"],
            vec![route_with(
                "r",
                PathSpecifier::Prefix("/".into()),
                RouteAction {
                    timeout: Some(neg),
                    ..action("c")
                },
            )],
        )],
    ));
    assert!(e.contains("route.timeout"), "{e}");
}

fn retry_of(p: PbRetryPolicy) -> Result<RetryPolicy, String> {
    let rc = route_config(
        "rc",
        vec![vhost(
            "v",
            &["*"],
            vec![route_with(
                "r",
                PathSpecifier::Prefix("/".into()),
                RouteAction {
                    retry_policy: Some(p),
                    ..action("c")
                },
            )],
        )],
    );
    routes::compile("rc", &rc, &BTreeMap::new()).map(|t| {
        forward(&t.virtual_hosts[0].routes[0])
            .retry
            .clone()
            .unwrap()
    })
}

#[test]
fn retry_policy_parsing() {
    // What the translator emits for a Kong service with retries = 5.
    let p = retry_of(PbRetryPolicy {
        retry_on: "connect-failure,refused-stream,reset-before-request".into(),
        num_retries: u32v(5),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(p.num_retries, 5);
    assert!(p.retry_on.contains(RetryOn::CONNECT_FAILURE));
    assert!(p.retry_on.contains(RetryOn::REFUSED_STREAM));
    assert!(p.retry_on.contains(RetryOn::RESET_BEFORE_REQUEST));
    assert!(!p.retry_on.contains(RetryOn::RESET));
    assert!(!p.retry_on.contains(RetryOn::FIVE_XX));
    // Envoy's defaults: one retry, 25 ms base back-off, ten times that at most.
    assert_eq!(p.backoff_base, Duration::from_millis(25));
    assert_eq!(p.backoff_max, Duration::from_millis(250));
    assert_eq!(p.per_try_timeout, None);
    let d = retry_of(PbRetryPolicy::default()).unwrap();
    assert_eq!(d.num_retries, 1);
    assert_eq!(d.retry_on, RetryOn(0));

    // Tokens are trimmed, unknown ones ignored, gRPC ones understood.
    let p = retry_of(PbRetryPolicy {
        retry_on: " 5xx , gateway-error,,bogus,retriable-status-codes,unavailable".into(),
        retriable_status_codes: vec![409, 429],
        per_try_timeout: Some(ms(250)),
        retry_back_off: Some(RetryBackOff {
            base_interval: Some(ms(100)),
            max_interval: None,
        }),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        p.retry_on,
        RetryOn(
            RetryOn::FIVE_XX.0
                | RetryOn::GATEWAY_ERROR.0
                | RetryOn::RETRIABLE_STATUS_CODES.0
                | RetryOn::GRPC_UNAVAILABLE.0
        )
    );
    assert_eq!(p.retriable_status_codes, vec![409, 429]);
    assert_eq!(p.per_try_timeout, Some(Duration::from_millis(250)));
    assert_eq!(p.backoff_base, Duration::from_millis(100));
    assert_eq!(p.backoff_max, Duration::from_secs(1));

    let e = retry_of(PbRetryPolicy {
        retry_back_off: Some(RetryBackOff {
            base_interval: Some(ms(100)),
            max_interval: Some(ms(50)),
        }),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        e.contains("max_interval must greater than or equal to the base_interval"),
        "{e}"
    );
    let e = retry_of(PbRetryPolicy {
        retry_back_off: Some(RetryBackOff::default()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.contains("base_interval is required"), "{e}");
    let e = retry_of(PbRetryPolicy {
        rate_limited_retry_back_off: Some(Default::default()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        e.contains("unsupported field set: rate_limited_retry_back_off"),
        "{e}"
    );
}

#[test]
fn virtual_host_retry_and_mirror_policies_are_inherited() {
    let mirror = |c: &str, pct: Option<u32>| RequestMirrorPolicy {
        cluster: c.into(),
        runtime_fraction: pct.map(|n| RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: n,
                denominator: 0,
            }),
            runtime_key: "k".into(),
        }),
        ..Default::default()
    };
    let mut vh = vhost(
        "v",
        &["*"],
        vec![
            prefix("inherits", "/a", "c"),
            route_with(
                "own",
                PathSpecifier::Prefix("/".into()),
                RouteAction {
                    retry_policy: Some(PbRetryPolicy {
                        retry_on: "5xx".into(),
                        ..Default::default()
                    }),
                    request_mirror_policies: vec![mirror("route-shadow", None)],
                    ..action("c")
                },
            ),
        ],
    );
    vh.retry_policy = Some(PbRetryPolicy {
        retry_on: "reset".into(),
        num_retries: u32v(2),
        ..Default::default()
    });
    let mut rc = route_config("rc", vec![vh]);
    rc.request_mirror_policies = vec![mirror("config-shadow", Some(25))];
    let t = table(&rc);
    let a = forward(&t.virtual_hosts[0].routes[0]);
    assert_eq!(a.retry.as_ref().unwrap().retry_on, RetryOn::RESET);
    assert_eq!(a.retry.as_ref().unwrap().num_retries, 2);
    assert_eq!(a.mirrors.len(), 1);
    assert_eq!(a.mirrors[0].cluster, "config-shadow");
    assert_eq!(
        (a.mirrors[0].numerator, a.mirrors[0].denominator),
        (25, 100)
    );
    assert!(a.mirrors[0].sampled(124) && !a.mirrors[0].sampled(125));
    let own = forward(&t.virtual_hosts[0].routes[1]);
    assert_eq!(own.retry.as_ref().unwrap().retry_on, RetryOn::FIVE_XX);
    assert_eq!(own.mirrors[0].cluster, "route-shadow");
    assert!(own.mirrors[0].sampled(99));
    assert!(!own.mirrors[0].disable_shadow_host_suffix_append);
}

#[test]
fn hash_policies_as_the_translator_emits_them() {
    let t = rewrite_table(
        PathSpecifier::Prefix("/".into()),
        RouteAction {
            hash_policy: vec![
                PbHashPolicy {
                    terminal: true,
                    policy_specifier: Some(PolicySpecifier::Header(PbHashHeader {
                        header_name: ":path".into(),
                        regex_rewrite: Some(RegexMatchAndSubstitute {
                            pattern: Some(regex(r"\?.*")),
                            substitution: String::new(),
                        }),
                    })),
                },
                PbHashPolicy {
                    terminal: false,
                    policy_specifier: Some(PolicySpecifier::Header(PbHashHeader {
                        header_name: "x-consumer-id".into(),
                        regex_rewrite: None,
                    })),
                },
            ],
            ..action("c")
        },
    );
    let f = forward(&t.virtual_hosts[0].routes[0]);
    assert_eq!(f.hash_policies.len(), 2);
    assert!(f.hash_policies[0].terminal());
    assert!(!f.hash_policies[1].terminal());
    let h = headers(&[
        ("x-consumer-id", "b"),
        ("x-consumer-id", "a"),
        ("cookie", "s=1; id=\"42\""),
    ]);
    let req = RequestView {
        authority: "h",
        path_and_query: "/a/b?x=1&k=v",
        method: &http::Method::GET,
        scheme: None,
        headers: &h,
    };
    match &f.hash_policies[0] {
        HashPolicy::Header {
            name,
            source: HeaderSource::Path,
            rewrite: Some(_),
            ..
        } => assert_eq!(name, ":path"),
        other => panic!("{other:?}"),
    }
    // :path is hashed without its query (the translator's rewrite).
    assert_eq!(f.hash_policies[0].value(&req).as_deref(), Some("/a/b"));
    // Several values are sorted before hashing.
    assert_eq!(f.hash_policies[1].value(&req).as_deref(), Some("a,b"));
    assert_eq!(cookie_value(&h, "id").as_deref(), Some("42"));
    assert_eq!(cookie_value(&h, "s").as_deref(), Some("1"));
    assert_eq!(cookie_value(&h, "none"), None);
    let q = HashPolicy::QueryParameter {
        name: "k".into(),
        terminal: false,
    };
    assert_eq!(q.value(&req).as_deref(), Some("v"));
}

#[test]
fn retry_decisions_on_responses() {
    let p = retry_of(PbRetryPolicy {
        retry_on: "5xx,retriable-4xx,retriable-headers,unavailable".into(),
        retriable_headers: vec![header(
            "x-retry",
            HeaderMatchSpecifier::ExactMatch("yes".into()),
        )],
        ..Default::default()
    })
    .unwrap();
    let none = http::HeaderMap::new();
    assert!(p.should_retry_status(503) && p.should_retry_status(500) && p.should_retry_status(409));
    assert!(!p.should_retry_status(404) && !p.should_retry_status(200));
    assert!(p.should_retry_response(200, &headers(&[("x-retry", "yes")])));
    assert!(p.should_retry_response(200, &headers(&[("grpc-status", "14")])));
    assert!(!p.should_retry_response(200, &headers(&[("grpc-status", "13")])));
    // Never when the upstream Envoy says it is overloaded...
    assert!(!p.should_retry_response(503, &headers(&[("x-envoy-overloaded", "true")])));
    // ...and a rate limit only with envoy-ratelimited.
    assert!(!p.should_retry_response(503, &headers(&[("x-envoy-ratelimited", "true")])));
    assert!(p.should_retry_response(503, &none));
    let gw = retry_of(PbRetryPolicy {
        retry_on: "gateway-error".into(),
        ..Default::default()
    })
    .unwrap();
    assert!(
        gw.should_retry_status(502) && gw.should_retry_status(504) && !gw.should_retry_status(500)
    );
    let codes = retry_of(PbRetryPolicy {
        retry_on: "retriable-status-codes".into(),
        retriable_status_codes: vec![418],
        ..Default::default()
    })
    .unwrap();
    assert!(codes.should_retry_status(418) && !codes.should_retry_status(503));

    let only_get = retry_of(PbRetryPolicy {
        retriable_request_headers: vec![header(
            ":method",
            HeaderMatchSpecifier::ExactMatch("GET".into()),
        )],
        ..Default::default()
    })
    .unwrap();
    let view = |m: &'static http::Method| RequestView {
        authority: "h",
        path_and_query: "/",
        method: m,
        scheme: None,
        headers: Box::leak(Box::new(http::HeaderMap::new())),
    };
    assert!(only_get.applies_to(&view(&http::Method::GET)));
    assert!(!only_get.applies_to(&view(&http::Method::POST)));
    assert!(p.applies_to(&view(&http::Method::POST)));
}

// --- redirects and direct responses ------------------------------------------

fn redirect_route(path: PathSpecifier, a: RedirectAction) -> RouteTable {
    table(&route_config(
        "rc",
        vec![vhost(
            "v",
            &["*"],
            vec![PbRoute {
                name: "r".into(),
                r#match: Some(envoy_types::pb::envoy::config::route::v3::RouteMatch {
                    path_specifier: Some(path),
                    ..Default::default()
                }),
                action: Some(PbAction::Redirect(a)),
                ..Default::default()
            }],
        )],
    ))
}

fn location(t: &RouteTable, scheme: &str, host: &str, path: &str) -> (u16, String) {
    let s = select(t, host, path).expect("a route matches");
    let Action::Redirect(r) = &s.route.action else {
        panic!("not a redirect")
    };
    let req = RedirectRequest {
        scheme,
        forwarded_proto: scheme,
        authority: host,
        path_and_query: path,
    };
    assert!(matches!(
        s.matched,
        MatchKind::Prefix(_) | MatchKind::Regex(_)
    ));
    // The simple form assumes x-forwarded-proto is the scheme.
    assert_eq!(r.location(scheme, host, path), r.location_for(&req));
    (r.status, r.location_for(&req))
}

#[test]
fn redirect_locations() {
    let https = || RedirectAction {
        scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::HttpsRedirect(true)),
        ..Default::default()
    };
    let p = || PathSpecifier::Prefix("/".into());
    type Case = (
        PathSpecifier,
        RedirectAction,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            p(),
            https(),
            "http",
            "example.com",
            "/a?b=1",
            "https://example.com/a?b=1",
        ),
        // The request scheme's default port goes when the scheme changes...
        (
            p(),
            https(),
            "http",
            "example.com:80",
            "/a",
            "https://example.com/a",
        ),
        // ...any other port stays.
        (
            p(),
            https(),
            "http",
            "example.com:8080",
            "/a",
            "https://example.com:8080/a",
        ),
        (
            p(),
            https(),
            "https",
            "example.com:443",
            "/a",
            "https://example.com:443/a",
        ),
        (p(), https(), "http", "[::1]:80", "/", "https://[::1]/"),
        // The translator's Kong upgrade: https_redirect + port_redirect 443.
        (
            p(),
            RedirectAction {
                port_redirect: 443,
                ..https()
            },
            "http",
            "example.com:8000",
            "/x?y",
            "https://example.com:443/x?y",
        ),
        (
            p(),
            RedirectAction {
                port_redirect: 8443,
                ..Default::default()
            },
            "http",
            "[::1]:8000",
            "/",
            "http://[::1]:8443/",
        ),
        (
            p(),
            RedirectAction {
                host_redirect: "new.example.com".into(),
                ..Default::default()
            },
            "http",
            "example.com:8080",
            "/a?b",
            "http://new.example.com/a?b",
        ),
        (
            p(),
            RedirectAction {
                scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::SchemeRedirect(
                    "https".into(),
                )),
                host_redirect: "h".into(),
                port_redirect: 9,
                ..Default::default()
            },
            "http",
            "example.com",
            "/a",
            "https://h:9/a",
        ),
        // path_redirect keeps the request's query unless it has its own.
        (
            p(),
            RedirectAction {
                path_rewrite_specifier: Some(PathRewriteSpecifier::PathRedirect("/new".into())),
                ..Default::default()
            },
            "http",
            "e.com",
            "/old?q=1",
            "http://e.com/new?q=1",
        ),
        (
            p(),
            RedirectAction {
                path_rewrite_specifier: Some(PathRewriteSpecifier::PathRedirect("/new?x=2".into())),
                strip_query: true,
                ..Default::default()
            },
            "http",
            "e.com",
            "/old?q=1",
            "http://e.com/new?x=2",
        ),
        (
            p(),
            RedirectAction {
                path_rewrite_specifier: Some(PathRewriteSpecifier::PathRedirect("new".into())),
                strip_query: true,
                ..Default::default()
            },
            "http",
            "e.com",
            "/old?q=1",
            "http://e.com/new",
        ),
        (
            p(),
            RedirectAction {
                strip_query: true,
                ..Default::default()
            },
            "http",
            "e.com",
            "/a?q",
            "http://e.com/a",
        ),
        // prefix_rewrite replaces the matched prefix.
        (
            PathSpecifier::Prefix("/v1".into()),
            RedirectAction {
                path_rewrite_specifier: Some(PathRewriteSpecifier::PrefixRewrite("/v2".into())),
                ..Default::default()
            },
            "https",
            "e.com",
            "/v1/rest?q",
            "https://e.com/v2/rest?q",
        ),
        (
            PathSpecifier::SafeRegex(regex("/v1/.*")),
            RedirectAction {
                path_rewrite_specifier: Some(PathRewriteSpecifier::PrefixRewrite("/v2".into())),
                ..Default::default()
            },
            "https",
            "e.com",
            "/v1/rest?q",
            "https://e.com/v2?q",
        ),
        (
            p(),
            RedirectAction {
                path_rewrite_specifier: Some(PathRewriteSpecifier::RegexRewrite(
                    RegexMatchAndSubstitute {
                        pattern: Some(regex("^/old/(.*)$")),
                        substitution: r"/new/\1".into(),
                    },
                )),
                ..Default::default()
            },
            "http",
            "e.com",
            "/old/x?y",
            "http://e.com/new/x?y",
        ),
        // A regex rewrite that yields nothing leaves the path alone.
        (
            p(),
            RedirectAction {
                path_rewrite_specifier: Some(PathRewriteSpecifier::RegexRewrite(
                    RegexMatchAndSubstitute {
                        pattern: Some(regex(".*")),
                        substitution: String::new(),
                    },
                )),
                ..Default::default()
            },
            "http",
            "e.com",
            "/keep?y",
            "http://e.com/keep?y",
        ),
    ];
    for (i, (path, a, scheme, host, req_path, want)) in cases.into_iter().enumerate() {
        let t = redirect_route(path, a);
        assert_eq!(location(&t, scheme, host, req_path).1, want, "case {i}");
    }
}

#[test]
fn redirect_response_codes() {
    for (code, want) in [
        (RedirectResponseCode::MovedPermanently, 301),
        (RedirectResponseCode::Found, 302),
        (RedirectResponseCode::SeeOther, 303),
        (RedirectResponseCode::TemporaryRedirect, 307),
        (RedirectResponseCode::PermanentRedirect, 308),
    ] {
        let t = redirect_route(
            PathSpecifier::Prefix("/".into()),
            RedirectAction {
                response_code: code as i32,
                ..Default::default()
            },
        );
        assert_eq!(location(&t, "http", "e.com", "/").0, want);
    }
    let e = table_err(&route_config(
        "rc",
        vec![vhost(
            "v",
            &["*"],
            vec![PbRoute {
                name: "r".into(),
                r#match: Some(envoy_types::pb::envoy::config::route::v3::RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(PbAction::Redirect(RedirectAction {
                    response_code: 9,
                    ..Default::default()
                })),
                ..Default::default()
            }],
        )],
    ));
    assert!(e.contains("response_code 9"), "{e}");
}

fn direct_table(
    status: u32,
    body: Option<data_source::Specifier>,
    max: Option<u32>,
) -> Result<RouteTable, String> {
    let mut rc = route_config(
        "rc",
        vec![vhost(
            "v",
            &["*"],
            vec![PbRoute {
                name: "d".into(),
                r#match: Some(envoy_types::pb::envoy::config::route::v3::RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(PbAction::DirectResponse(DirectResponseAction {
                    status,
                    body: body.map(|s| DataSource {
                        specifier: Some(s),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
        )],
    );
    rc.max_direct_response_body_size_bytes =
        max.map(|v| envoy_types::pb::google::protobuf::UInt32Value { value: v });
    routes::compile("rc", &rc, &BTreeMap::new())
}

#[test]
fn direct_responses() {
    use data_source::Specifier as S;
    let body_of = |t: &RouteTable| match &t.virtual_hosts[0].routes[0].action {
        Action::Direct { status, body } => (*status, body.clone()),
        other => panic!("{other:?}"),
    };
    // The translator's Kong 426.
    let t = direct_table(
        426,
        Some(S::InlineString(
            r#"{"message":"Please use HTTPS protocol"}"#.into(),
        )),
        None,
    )
    .unwrap();
    assert_eq!(
        body_of(&t),
        (
            426,
            bytes::Bytes::from_static(br#"{"message":"Please use HTTPS protocol"}"#)
        )
    );
    let t = direct_table(200, Some(S::InlineBytes(vec![0, 1, 2])), None).unwrap();
    assert_eq!(body_of(&t).1.as_ref(), &[0, 1, 2]);
    let t = direct_table(204, None, None).unwrap();
    assert!(body_of(&t).1.is_empty());
    // At most 4096 bytes unless the route configuration allows more.
    let big = "x".repeat(4097);
    let e = direct_table(200, Some(S::InlineString(big.clone())), None).unwrap_err();
    assert!(
        e.contains("response body size is 4097 bytes; maximum is 4096"),
        "{e}"
    );
    assert!(direct_table(200, Some(S::InlineString(big)), Some(5000)).is_ok());
    assert!(
        direct_table(600, None, None)
            .unwrap_err()
            .contains("[200, 600)")
    );
    assert!(direct_table(199, None, None).is_err());
    assert!(
        direct_table(200, Some(S::Filename("/etc/passwd".into())), None)
            .unwrap_err()
            .contains("inline only")
    );

    // Envoy sets Location to the request URL for 201 and 3xx direct responses.
    let req = RedirectRequest {
        scheme: "http",
        forwarded_proto: "http",
        authority: "e.com:80",
        path_and_query: "/a?b",
    };
    assert_eq!(
        direct_response_location(301, &req).as_deref(),
        Some("http://e.com:80/a?b")
    );
    assert_eq!(
        direct_response_location(201, &req).as_deref(),
        Some("http://e.com:80/a?b")
    );
    assert_eq!(direct_response_location(200, &req), None);
}

// --- header mutations ---------------------------------------------------------

#[test]
fn header_mutation_levels_in_envoy_order() {
    use HeaderAppendAction as A;
    let mut r = prefix("r", "/", "c");
    r.response_headers_to_add = vec![hv("x-level", "route", A::OverwriteIfExistsOrAdd)];
    r.request_headers_to_add = vec![hv("x-route", "1", A::AppendIfExistsOrAdd)];
    let mut vh = vhost("v", &["*"], vec![r]);
    vh.response_headers_to_add = vec![hv("x-level", "vhost", A::OverwriteIfExistsOrAdd)];
    let mut rc = route_config("rc", vec![vh]);
    rc.response_headers_to_add = vec![hv("x-level", "config", A::OverwriteIfExistsOrAdd)];
    rc.response_headers_to_remove = vec!["server".into()];

    let t = table(&rc);
    let route = &t.virtual_hosts[0].routes[0];
    let mut h = headers(&[("server", "upstream")]);
    route.response_headers.apply(&mut h);
    // By default the least specific level is applied last and wins.
    assert_eq!(h.get("x-level").unwrap(), "config");
    assert!(h.get("server").is_none());

    rc.most_specific_header_mutations_wins = true;
    let t = table(&rc);
    let mut h = http::HeaderMap::new();
    t.virtual_hosts[0].routes[0].response_headers.apply(&mut h);
    assert_eq!(h.get("x-level").unwrap(), "route");

    let mut h = http::HeaderMap::new();
    route.request_headers.apply(&mut h);
    assert_eq!(h.get("x-route").unwrap(), "1");
}

#[test]
fn header_append_actions() {
    use HeaderAppendAction as A;
    let mut r = prefix("r", "/", "c");
    r.request_headers_to_remove = vec!["x-gone".into(), "X-Replaced".into()];
    r.request_headers_to_add = vec![
        hv("x-append", "2", A::AppendIfExistsOrAdd),
        hv("x-absent", "new", A::AddIfAbsent),
        hv("x-present", "new", A::AddIfAbsent),
        hv("x-over", "new", A::OverwriteIfExistsOrAdd),
        hv("x-if-exists", "new", A::OverwriteIfExists),
        hv("x-if-exists-missing", "new", A::OverwriteIfExists),
        // Removed first, then added back.
        hv("x-replaced", "added", A::AppendIfExistsOrAdd),
        // Empty values are skipped unless kept.
        hv("x-empty", "", A::AppendIfExistsOrAdd),
        // %% is a literal %.
        hv("x-pct", "100%%", A::AppendIfExistsOrAdd),
    ];
    let mut keep = hv("x-kept-empty", "", A::AppendIfExistsOrAdd);
    keep.keep_empty_value = true;
    r.request_headers_to_add.push(keep);
    // The deprecated `append: false` is an overwrite.
    let mut legacy = hv("x-legacy", "v", A::AppendIfExistsOrAdd);
    legacy.append = boolv(false);
    r.request_headers_to_add.push(legacy);
    let t = table(&route_config("rc", vec![vhost("v", &["*"], vec![r])]));
    let mut h = headers(&[
        ("x-append", "1"),
        ("x-present", "old"),
        ("x-over", "a"),
        ("x-over", "b"),
        ("x-if-exists", "old"),
        ("x-gone", "1"),
        ("x-replaced", "old"),
        ("x-legacy", "old"),
    ]);
    t.virtual_hosts[0].routes[0].request_headers.apply(&mut h);
    let all = |n: &str| {
        h.get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("x-append"), ["1", "2"]);
    assert_eq!(all("x-absent"), ["new"]);
    assert_eq!(all("x-present"), ["old"]);
    assert_eq!(all("x-over"), ["new"]);
    assert_eq!(all("x-if-exists"), ["new"]);
    assert!(all("x-if-exists-missing").is_empty());
    assert!(all("x-gone").is_empty());
    assert_eq!(all("x-replaced"), ["added"]);
    assert!(all("x-empty").is_empty());
    assert_eq!(all("x-kept-empty"), [""]);
    assert_eq!(all("x-pct"), ["100%"]);
    assert_eq!(all("x-legacy"), ["v"]);
}

#[test]
fn bad_header_mutations_are_errors() {
    use HeaderAppendAction as A;
    let cases: Vec<(PbRoute, &str)> = vec![
        (
            PbRoute {
                request_headers_to_add: vec![hv(":path", "/x", A::AppendIfExistsOrAdd)],
                ..prefix("r", "/", "c")
            },
            ":-prefixed or host headers may not be modified",
        ),
        (
            PbRoute {
                request_headers_to_add: vec![hv("Host", "x", A::AppendIfExistsOrAdd)],
                ..prefix("r", "/", "c")
            },
            ":-prefixed or host headers may not be modified",
        ),
        (
            PbRoute {
                request_headers_to_remove: vec!["host".into()],
                ..prefix("r", "/", "c")
            },
            "may not be removed",
        ),
        (
            PbRoute {
                request_headers_to_add: vec![hv(
                    "x-ip",
                    "%DOWNSTREAM_REMOTE_ADDRESS%",
                    A::AppendIfExistsOrAdd,
                )],
                ..prefix("r", "/", "c")
            },
            "command operators are not supported",
        ),
        (
            PbRoute {
                request_headers_to_add: vec![HeaderValueOptionExt::both(hv(
                    "x",
                    "v",
                    A::AddIfAbsent,
                ))],
                ..prefix("r", "/", "c")
            },
            "both append and append_action are set",
        ),
    ];
    for (r, needle) in cases {
        let e = table_err(&route_config("rc", vec![vhost("v", &["*"], vec![r])]));
        assert!(e.contains(needle), "{e}");
    }
}

struct HeaderValueOptionExt;
impl HeaderValueOptionExt {
    fn both(
        mut o: envoy_types::pb::envoy::config::core::v3::HeaderValueOption,
    ) -> envoy_types::pb::envoy::config::core::v3::HeaderValueOption {
        o.append = boolv(true);
        o
    }
}

// --- unsupported settings and cluster references -----------------------------

#[test]
fn unsupported_settings_are_refused_by_name() {
    let mut runtime = prefix("r", "/", "c");
    runtime.r#match.as_mut().unwrap().runtime_fraction = Some(Default::default());
    let e = table_err(&route_config("rc", vec![vhost("v", &["*"], vec![runtime])]));
    assert!(
        e.contains("route \"r\": match: unsupported field set: runtime_fraction"),
        "{e}"
    );

    let hedge = route_with(
        "h",
        PathSpecifier::Prefix("/".into()),
        RouteAction {
            hedge_policy: Some(Default::default()),
            ..action("c")
        },
    );
    let e = table_err(&route_config("rc", vec![vhost("v", &["*"], vec![hedge])]));
    assert!(e.contains("unsupported field set: hedge_policy"), "{e}");

    let mut vh = vhost("v", &["*"], vec![]);
    vh.require_tls = 1;
    let e = table_err(&route_config("rc", vec![vh]));
    assert!(
        e.contains("virtual host \"v\": virtual host: unsupported field set: require_tls"),
        "{e}"
    );

    let mut rc = route_config("rc", vec![]);
    rc.vhost_header = "x-host".into();
    assert!(table_err(&rc).contains("unsupported field set: vhost_header"));

    // Settings with no effect without their filters are accepted.
    let mut r = prefix("r", "/", "c");
    r.typed_per_filter_config
        .insert("envoy.filters.http.cors".into(), Default::default());
    let mut a = action("c");
    a.rate_limits = vec![Default::default()];
    r.action = Some(PbAction::Route(a));
    assert!(
        routes::compile(
            "rc",
            &route_config("rc", vec![vhost("v", &["*"], vec![r])]),
            &BTreeMap::new()
        )
        .is_ok()
    );
}

#[test]
fn unknown_clusters_compile_unless_validated() {
    let mut rc = route_config(
        "rc",
        vec![vhost("v", &["*"], vec![prefix("r", "/", "missing")])],
    );
    let t = table(&rc);
    let f = forward(&t.virtual_hosts[0].routes[0]);
    assert_eq!(f.cluster.pick(|| 0), "missing");
    // Envoy answers 503 (NC) unless cluster_not_found_response_code says otherwise.
    assert_eq!(f.cluster_not_found_status, 503);
    rc.validate_clusters = boolv(true);
    let e = table_err(&rc);
    assert!(e.contains("route: unknown cluster 'missing'"), "{e}");
    let mut known = BTreeMap::new();
    known.insert(
        "missing".to_string(),
        Cluster {
            name: "missing".into(),
            ..Default::default()
        },
    );
    assert!(routes::compile("rc", &rc, &known).is_ok());

    let t = rewrite_table(
        PathSpecifier::Prefix("/".into()),
        RouteAction {
            cluster_not_found_response_code: 1,
            ..action("c")
        },
    );
    assert_eq!(
        forward(&t.virtual_hosts[0].routes[0]).cluster_not_found_status,
        404
    );
}

#[test]
fn websocket_per_route() {
    use envoy_types::pb::envoy::config::route::v3::route_action::UpgradeConfig;
    let t = rewrite_table(
        PathSpecifier::Prefix("/".into()),
        RouteAction {
            upgrade_configs: vec![UpgradeConfig {
                upgrade_type: "WebSocket".into(),
                enabled: boolv(false),
                ..Default::default()
            }],
            ..action("c")
        },
    );
    assert_eq!(
        forward(&t.virtual_hosts[0].routes[0]).websocket,
        Some(false)
    );
    let t = rewrite_table(PathSpecifier::Prefix("/".into()), action("c"));
    assert_eq!(forward(&t.virtual_hosts[0].routes[0]).websocket, None);
}

/// A route configuration shaped like the translator's `http` one: a host
/// virtual host with Kong-ordered routes, and the catch-all.
#[test]
fn translator_shaped_configuration() {
    use envoy_types::pb::envoy::config::route::v3::HeaderMatcher as PbHM;
    let method = PbHM {
        name: ":method".into(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(PbStringMatcher {
            ignore_case: false,
            match_pattern: Some(MatchPattern::SafeRegex(regex("^(?:GET|POST)$"))),
        })),
        ..Default::default()
    };
    let version = PbHM {
        name: "x-version".into(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(PbStringMatcher {
            ignore_case: true,
            match_pattern: Some(MatchPattern::Exact("v2".into())),
        })),
        ..Default::default()
    };
    let kong_regex = route_with(
        "users#0",
        PathSpecifier::SafeRegex(regex(r"(?:/users/(?P<id>\d+)).*")),
        RouteAction {
            host_rewrite_specifier: Some(HostRewriteSpecifier::HostRewriteLiteral(
                "users.internal".into(),
            )),
            timeout: Some(ms(60_000)),
            ..action("service.users")
        },
    );
    let api = with_headers(
        route_with(
            "api#0",
            PathSpecifier::Prefix("/api".into()),
            RouteAction {
                regex_rewrite: Some(RegexMatchAndSubstitute {
                    pattern: Some(regex(r"^/api$|^(/)api/?")),
                    substitution: r"/v2\1".into(),
                }),
                ..action("service.api")
            },
        ),
        vec![method, version],
    );
    let mut rc = route_config(
        "http",
        vec![
            vhost(
                "api.example.com",
                &["api.example.com"],
                vec![kong_regex, api.clone()],
            ),
            vhost(
                "catch-all",
                &["*"],
                vec![prefix("fallback#0", "/", "service.default")],
            ),
        ],
    );
    rc.ignore_port_in_host_matching = true;
    let t = table(&rc);
    let h = headers(&[("x-version", "V2")]);
    let s = t
        .select(
            "api.example.com:8000",
            "/users/42/profile",
            &http::Method::GET,
            &h,
        )
        .unwrap();
    assert_eq!(
        (s.vhost, s.route.name.as_str()),
        ("api.example.com", "users#0")
    );
    assert_eq!(
        forward(s.route).host_rewrite,
        HostRewrite::Literal("users.internal".into())
    );
    let s = t
        .select("API.example.com", "/api/items?x=1", &http::Method::POST, &h)
        .unwrap();
    assert_eq!(s.route.name, "api#0");
    assert_eq!(
        forward(s.route).rewrite_path(&s.route.path_match, "/api/items?x=1"),
        "/v2/items?x=1"
    );
    // The method does not match: no route in that virtual host (404), even
    // though the catch-all virtual host has one.
    assert!(
        t.select("api.example.com", "/api", &http::Method::DELETE, &h)
            .is_none()
    );
    let s = t
        .select("other.example.com", "/api", &http::Method::DELETE, &h)
        .unwrap();
    assert_eq!(
        (s.vhost, s.route.name.as_str()),
        ("catch-all", "fallback#0")
    );
}

/// The translator repeats every host-less route in every virtual host:
/// each distinct regex is compiled once per compile.
#[test]
fn large_repetitive_configuration_compiles_quickly() {
    let routes: Vec<PbRoute> = (0..50)
        .map(|i| {
            with_headers(
                route_with(
                    &format!("r{i}"),
                    PathSpecifier::SafeRegex(regex(&format!(r"(?:/svc{i}/(?P<id>\d+)).*"))),
                    RouteAction {
                        regex_rewrite: Some(RegexMatchAndSubstitute {
                            pattern: Some(regex(&format!(r"^/svc{i}/?"))),
                            substitution: "/".into(),
                        }),
                        ..action("c")
                    },
                ),
                vec![header(
                    "x-h",
                    HeaderMatchSpecifier::StringMatch(PbStringMatcher {
                        ignore_case: false,
                        match_pattern: Some(MatchPattern::SafeRegex(regex(&format!(
                            "(?i)^(?:a{i}|b{i})$"
                        )))),
                    }),
                )],
            )
        })
        .collect();
    let vhosts = (0..400)
        .map(|v| {
            vhost(
                &format!("h{v}.example.com"),
                &[&format!("h{v}.example.com")],
                routes.clone(),
            )
        })
        .collect();
    let mut set = ResourceSet::default();
    set.routes.insert("rc".into(), route_config("rc", vhosts));
    let start = std::time::Instant::now();
    let c = compile(&set).unwrap();
    let took = start.elapsed();
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    let t = &c.routes["rc"];
    let h = headers(&[("x-h", "A7")]);
    let s = t
        .select("h399.example.com", "/svc7/12?q", &http::Method::GET, &h)
        .unwrap();
    assert_eq!(s.route.name, "r7");
    assert_eq!(
        forward(s.route).rewrite_path(s.matched, "/svc7/12?q"),
        "/12?q"
    );
}

#[test]
fn the_route_index_selects_exactly_what_a_linear_scan_does() {
    use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier as P;
    // Many routes of every kind, overlapping on purpose, in a deliberate
    // order (an earlier broad route must still win over a later narrow one).
    let mut routes = Vec::new();
    for i in 0..60 {
        routes.push(prefix(
            &format!("p{i}"),
            &format!("/api/v{}/items{i}", i % 3),
            "c",
        ));
        routes.push(route_with(
            &format!("x{i}"),
            P::Path(format!("/exact/{i}")),
            action("c"),
        ));
        routes.push(route_with(
            &format!("r{i}"),
            P::SafeRegex(regex(&format!("/api/v{}/re{i}/[0-9]+", i % 3))),
            action("c"),
        ));
        if i % 10 == 0 {
            // No literal prefix: always a candidate.
            routes.push(route_with(
                &format!("any{i}"),
                P::SafeRegex(regex(&format!("(/a|/b)pi/v1/anywhere{i}"))),
                action("c"),
            ));
            routes.push(route_with(
                &format!("sep{i}"),
                P::PathSeparatedPrefix(format!("/api/v1/items{i}")),
                action("c"),
            ));
        }
        if i == 30 {
            // A broad prefix in the middle shadows everything after it
            // under /api/v2.
            routes.push(prefix("broad", "/api/v2", "c"));
        }
    }
    let mut ci = prefix("case-insensitive", "/CASE/", "c");
    if let Some(m) = ci.r#match.as_mut() {
        m.case_sensitive = boolv(false);
    }
    routes.push(ci);
    routes.push(prefix("fallback", "/", "c"));
    let t = table(&route_config("rc", vec![vhost("all", &["*"], routes)]));
    assert!(t.virtual_hosts[0].routes.len() > 100);
    let mut paths = vec![
        "/".to_string(),
        "/nothing".into(),
        "/case/x".into(),
        "/CASE/y".into(),
        "/api/v1/items".into(),
        "/api".into(),
        "/bpi/v1/anywhere20".into(),
        "/api/v1/anywhere40".into(),
    ];
    for i in 0..60 {
        for v in 0..3 {
            paths.push(format!("/api/v{v}/items{i}"));
            paths.push(format!("/api/v{v}/items{i}/sub?q=1"));
            paths.push(format!("/api/v{v}/items{i}x"));
            paths.push(format!("/api/v{v}/re{i}/123"));
            paths.push(format!("/api/v{v}/re{i}/abc"));
        }
        paths.push(format!("/exact/{i}"));
        paths.push(format!("/exact/{i}/"));
    }
    let h = http::HeaderMap::new();
    for p in &paths {
        let view = RequestView {
            authority: "example.com",
            path_and_query: p,
            method: &http::Method::GET,
            scheme: None,
            headers: &h,
        };
        let indexed = t.select_request(&view).map(|s| s.route.name.clone());
        let linear = t.select_linear(&view).map(|r| r.name.clone());
        assert_eq!(indexed, linear, "path {p}");
    }
    // The broad route really shadows later ones, and earlier ones still win.
    assert_eq!(
        selected_name(&t, "x", "/api/v2/re45/1").as_deref(),
        Some("broad")
    );
    assert_eq!(
        selected_name(&t, "x", "/api/v2/items2").as_deref(),
        Some("p2")
    );
}

#[test]
fn a_route_repeated_in_many_virtual_hosts_is_compiled_once() {
    let shared = || prefix("shared", "/s", "c");
    let t = table(&route_config(
        "rc",
        vec![
            vhost(
                "a",
                &["a.example.com"],
                vec![prefix("own-a", "/a", "c"), shared()],
            ),
            vhost("b", &["b.example.com"], vec![shared()]),
            vhost("all", &["*"], vec![shared()]),
        ],
    ));
    let a = &t.virtual_hosts[0].routes[1];
    let b = &t.virtual_hosts[1].routes[0];
    let all = &t.virtual_hosts[2].routes[0];
    assert!(std::sync::Arc::ptr_eq(a, b) && std::sync::Arc::ptr_eq(b, all));
}
