use super::super::testutil::*;
use super::super::{Flavour, ProxyOptions, TranslateError, translate};
use super::*;
use envoy_types::pb::envoy::config::route::v3::Route as ER;
use serde_json::json;

fn rc<'a>(res: &'a super::super::Resources, name: &str) -> &'a RouteConfiguration {
    res.routes.iter().find(|r| r.name == name).expect(name)
}

fn vhost<'a>(c: &'a RouteConfiguration, name: &str) -> &'a VirtualHost {
    c.virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vhost {name} in {}", c.name))
}

fn names(v: &VirtualHost) -> Vec<&str> {
    v.routes.iter().map(|r| r.name.as_str()).collect()
}

fn action(r: &ER) -> &RouteAction {
    match &r.action {
        Some(Action::Route(a)) => a,
        other => panic!("not a route action: {other:?}"),
    }
}

fn with_created(mut s: crate::store::Stored, t: i64) -> crate::store::Stored {
    s.data["created_at"] = json!(t);
    s
}

#[test]
fn precedence_follows_kong() {
    let svc = service("svc", "10.0.0.1", 80);
    let ents = vec![
        with_created(route("plain-short", &svc, json!({"paths": ["/a"]})), 10),
        with_created(route("plain-long", &svc, json!({"paths": ["/a/b"]})), 11),
        with_created(route("regex-lo", &svc, json!({"paths": ["~/a/\\d+"]})), 12),
        with_created(
            route(
                "regex-hi",
                &svc,
                json!({"paths": ["~/a/x"], "regex_priority": 5}),
            ),
            13,
        ),
        // regex_priority only orders regex paths.
        with_created(
            route(
                "plain-prio",
                &svc,
                json!({"paths": ["/q"], "regex_priority": 100}),
            ),
            14,
        ),
        with_created(
            route(
                "methods",
                &svc,
                json!({"paths": ["/a"], "methods": ["GET"]}),
            ),
            15,
        ),
        with_created(route("newer", &svc, json!({"paths": ["/zz"]})), 21),
        with_created(route("older", &svc, json!({"paths": ["/yy"]})), 20),
        with_created(
            route("two-paths", &svc, json!({"paths": ["/m", "/mmmmm"]})),
            30,
        ),
        svc,
    ];
    let res = run(&ents);
    let all = vhost(rc(&res, "http"), CATCH_ALL);
    assert_eq!(
        names(all),
        vec![
            // more match categories first
            "methods#0",
            // regex before prefix, higher regex_priority first
            "regex-hi#0",
            "regex-lo#0",
            // longer prefix first; each path of a route sorts on its own
            "two-paths#1",
            "plain-long#0",
            // same length: older first
            "older#0",
            "newer#0",
            "plain-short#0",
            "plain-prio#0",
            "two-paths#0",
        ]
    );
    // The same order serves HTTPS.
    assert_eq!(names(vhost(rc(&res, "https"), CATCH_ALL)), names(all));
}

#[test]
fn path_matches_and_methods_and_headers() {
    let svc = service("svc", "10.0.0.1", 80);
    let ents = vec![
        route(
            "r",
            &svc,
            json!({
                "paths": ["/p", "~/users/(?<id>\\d+)$"],
                "methods": ["POST", "GET"],
                "headers": {"X-One": ["Alpha"], "x-many": ["a.b", "~*^v[0-9]+$"]}
            }),
        ),
        route("nopath", &svc, json!({"hosts": ["h.example.com"]})),
        svc,
    ];
    let res = run(&ents);
    let v = vhost(rc(&res, "http"), CATCH_ALL);
    let m0 = v.routes[0].r#match.as_ref().unwrap();
    let m1 = v.routes[1].r#match.as_ref().unwrap();
    // the regex path sorts first
    assert_eq!(v.routes[0].name, "r#1");
    assert_eq!(
        m0.path_specifier,
        Some(PathSpecifier::SafeRegex(regex(
            "(?:/users/(?<id>\\d+)$).*".into()
        )))
    );
    assert_eq!(m1.path_specifier, Some(PathSpecifier::Prefix("/p".into())));
    let hs = &m0.headers;
    assert_eq!(hs.len(), 3);
    assert_eq!(hs[0].name, ":method");
    assert_eq!(
        hs[0].header_match_specifier,
        Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            ignore_case: false,
            match_pattern: Some(MatchPattern::SafeRegex(regex("^(?:GET|POST)$".into()))),
        }))
    );
    assert_eq!(hs[1].name, "x-many");
    assert_eq!(
        hs[1].header_match_specifier,
        Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            ignore_case: false,
            match_pattern: Some(MatchPattern::SafeRegex(regex(
                "(?i)^(?:a\\.b|.*(?:^v[0-9]+$).*)$".into()
            ))),
        }))
    );
    assert_eq!(hs[2].name, "x-one");
    assert_eq!(
        hs[2].header_match_specifier,
        Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            ignore_case: true,
            match_pattern: Some(MatchPattern::Exact("Alpha".into())),
        }))
    );
    // A route without paths matches every path.
    let h = vhost(rc(&res, "http"), "h.example.com");
    let np = h.routes.iter().find(|r| r.name == "nopath#0").unwrap();
    assert_eq!(
        np.r#match.as_ref().unwrap().path_specifier,
        Some(PathSpecifier::Prefix("/".into()))
    );
}

#[test]
fn vhosts_expand_hosts_wildcards_and_catch_all() {
    let svc = service("svc", "10.0.0.1", 80);
    let ents = vec![
        route(
            "exact",
            &svc,
            json!({"hosts": ["API.example.com"], "paths": ["/e"]}),
        ),
        route(
            "suffix",
            &svc,
            json!({"hosts": ["*.example.com"], "paths": ["/s"]}),
        ),
        route(
            "prefix",
            &svc,
            json!({"hosts": ["example.*"], "paths": ["/p"]}),
        ),
        route("any", &svc, json!({"paths": ["/any"]})),
        route(
            "tls-port",
            &svc,
            json!({"hosts": ["api.example.com:8443"], "paths": ["/t"]}),
        ),
        route(
            "both",
            &svc,
            json!({"hosts": ["other.test", "api.example.com:8000"], "paths": ["/b"]}),
        ),
        svc,
    ];
    let res = run(&ents);
    let http = rc(&res, "http");
    assert!(http.ignore_port_in_host_matching);
    let vh: Vec<(&str, &[String])> = http
        .virtual_hosts
        .iter()
        .map(|v| (v.name.as_str(), v.domains.as_slice()))
        .collect();
    assert_eq!(
        vh.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![
            "*.example.com",
            "api.example.com",
            "example.*",
            "other.test",
            CATCH_ALL
        ]
    );
    assert_eq!(vh[4].1, ["*".to_string()]);
    // Routes with hosts have one more match category than host-less ones.
    assert_eq!(
        names(vhost(http, "*.example.com")),
        vec!["suffix#0", "any#0"]
    );
    // An exact vhost also gets the wildcard routes that match its host, and
    // `host:port` routes whose port is this listener's.
    assert_eq!(
        names(vhost(http, "api.example.com")),
        // plain hosts before wildcards, then older first
        vec!["exact#0", "both#0", "suffix#0", "any#0"]
    );
    assert_eq!(names(vhost(http, "example.*")), vec!["prefix#0", "any#0"]);
    assert_eq!(names(vhost(http, "other.test")), vec!["both#0", "any#0"]);
    assert_eq!(names(vhost(http, CATCH_ALL)), vec!["any#0"]);

    let https = rc(&res, "https");
    assert_eq!(
        names(vhost(https, "api.example.com")),
        vec!["exact#0", "tls-port#0", "suffix#0", "any#0"]
    );
    assert_eq!(names(vhost(https, "other.test")), vec!["both#0", "any#0"]);
}

#[test]
fn https_only_routes_redirect_or_426_on_http() {
    let svc = service("svc", "10.0.0.1", 80);
    let ents = vec![
        route(
            "r301",
            &svc,
            json!({"protocols": ["https"], "paths": ["/a"], "https_redirect_status_code": 301}),
        ),
        route(
            "r308",
            &svc,
            json!({"protocols": ["https"], "paths": ["/b"], "https_redirect_status_code": 308}),
        ),
        route(
            "r426",
            &svc,
            json!({"protocols": ["https"], "paths": ["/c"]}),
        ),
        route(
            "http-only",
            &svc,
            json!({"protocols": ["http"], "paths": ["/d"]}),
        ),
        svc,
    ];
    let res = run(&ents);
    let http = vhost(rc(&res, "http"), CATCH_ALL);
    let by = |n: &str| http.routes.iter().find(|r| r.name == n).unwrap();
    assert_eq!(
        by("r301#0").action,
        Some(Action::Redirect(RedirectAction {
            response_code: RedirectResponseCode::MovedPermanently as i32,
            scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::HttpsRedirect(true)),
            port_redirect: 443,
            ..Default::default()
        }))
    );
    let Some(Action::Redirect(r)) = &by("r308#0").action else {
        panic!()
    };
    assert_eq!(
        r.response_code,
        RedirectResponseCode::PermanentRedirect as i32
    );
    let Some(Action::DirectResponse(d)) = &by("r426#0").action else {
        panic!()
    };
    assert_eq!(d.status, 426);
    assert_eq!(
        d.body.as_ref().unwrap().specifier,
        Some(data_source::Specifier::InlineString(UPGRADE_BODY.into()))
    );
    assert!(matches!(by("http-only#0").action, Some(Action::Route(_))));
    // Over TLS the HTTPS-only routes proxy, and the HTTP-only one is absent.
    let https = vhost(rc(&res, "https"), CATCH_ALL);
    assert_eq!(names(https), vec!["r301#0", "r308#0", "r426#0"]);
    assert!(
        https
            .routes
            .iter()
            .all(|r| matches!(r.action, Some(Action::Route(_))))
    );
}

#[test]
fn action_timeout_retries_and_host_rewrite() {
    let plain = service_with(
        "plain",
        "backend.internal",
        8080,
        json!({"read_timeout": 2500, "retries": 3}),
    );
    let p80 = service_with("p80", "backend.internal", 80, json!({"retries": 0}));
    let tls = service_with("tls", "secure.internal", 443, json!({"protocol": "https"}));
    let tls80 = service_with("tls80", "secure.internal", 80, json!({"protocol": "https"}));
    let pool = service("pooled", "pool", 80);
    let ents = vec![
        route("a", &plain, json!({"paths": ["/a"]})),
        route(
            "keep",
            &plain,
            json!({"paths": ["/keep"], "preserve_host": true}),
        ),
        route("b", &p80, json!({"paths": ["/b"]})),
        route("c", &tls, json!({"paths": ["/c"]})),
        route("d", &tls80, json!({"paths": ["/d"]})),
        route("e", &pool, json!({"paths": ["/e"]})),
        upstream("pool", json!({})),
        plain,
        p80,
        tls,
        tls80,
        pool,
    ];
    let res = run(&ents);
    let v = vhost(rc(&res, "http"), CATCH_ALL);
    let by = |n: &str| action(v.routes.iter().find(|r| r.name == n).unwrap());
    let a = by("a#0");
    assert_eq!(
        a.cluster_specifier,
        Some(ClusterSpecifier::Cluster("service.plain".into()))
    );
    assert_eq!(a.timeout, Some(ms(2500)));
    assert_eq!(
        a.retry_policy,
        Some(RetryPolicy {
            retry_on: RETRY_ON.into(),
            num_retries: Some(UInt32Value { value: 3 }),
            ..Default::default()
        })
    );
    assert_eq!(
        a.host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral(
            "backend.internal:8080".into()
        ))
    );
    assert_eq!(by("keep#0").host_rewrite_specifier, None);
    let b = by("b#0");
    assert_eq!(b.retry_policy, None);
    assert_eq!(
        b.host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral(
            "backend.internal".into()
        ))
    );
    assert_eq!(
        by("c#0").host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral(
            "secure.internal".into()
        ))
    );
    // Kong appends the port when it is not the scheme's default.
    assert_eq!(
        by("d#0").host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral(
            "secure.internal:80".into()
        ))
    );
    assert_eq!(
        by("e#0").host_rewrite_specifier,
        Some(HostRewriteSpecifier::AutoHostRewrite(BoolValue {
            value: true
        }))
    );
}

#[test]
fn hash_policies_from_upstream() {
    let mk = |name: &str, extra: serde_json::Value| {
        let mut v = json!({"algorithm": "consistent-hashing"});
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        upstream(name, v)
    };
    let cases = vec![
        (
            "hdr",
            json!({"hash_on": "header", "hash_on_header": "X-User", "hash_fallback": "ip"}),
        ),
        (
            "cookie",
            json!({"hash_on": "cookie", "hash_on_cookie": "sess", "hash_on_cookie_path": "/app"}),
        ),
        ("consumer", json!({"hash_on": "consumer"})),
        ("path", json!({"hash_on": "path"})),
        (
            "query",
            json!({"hash_on": "query_arg", "hash_on_query_arg": "user"}),
        ),
        (
            "capture",
            json!({"hash_on": "uri_capture", "hash_on_uri_capture": "id"}),
        ),
        ("none", json!({})),
    ];
    let mut ents = Vec::new();
    for (n, extra) in cases {
        let s = service(n, &format!("{n}.pool"), 80);
        ents.push(route(n, &s, json!({"paths": ["/x", "~/u/(?<id>\\d+)"]})));
        ents.push(s);
        ents.push(mk(&format!("{n}.pool"), extra));
    }
    let rr = service("rr", "rr.pool", 80);
    ents.push(route("rr", &rr, json!({"paths": ["/rr"]})));
    ents.push(rr);
    ents.push(upstream("rr.pool", json!({"hash_on": "ip"})));
    let res = run(&ents);
    let v = vhost(rc(&res, "http"), CATCH_ALL);
    let hp = |n: &str| {
        action(v.routes.iter().find(|r| r.name == n).unwrap())
            .hash_policy
            .clone()
    };
    let spec = |h: &HashPolicy| h.policy_specifier.clone().unwrap();

    let h = hp("hdr#0");
    assert_eq!(h.len(), 2);
    assert!(h[0].terminal && !h[1].terminal);
    assert_eq!(spec(&h[0]), header_hash("x-user", None));
    assert_eq!(
        spec(&h[1]),
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    );
    let c = hp("cookie#0");
    assert_eq!(
        spec(&c[0]),
        PolicySpecifier::Cookie(Cookie {
            name: "sess".into(),
            path: "/app".into(),
            ttl: Some(Duration::default()),
            ..Default::default()
        })
    );
    assert_eq!(
        spec(&hp("consumer#0")[0]),
        header_hash("x-consumer-id", None)
    );
    let PolicySpecifier::Header(p) = spec(&hp("path#0")[0]) else {
        panic!()
    };
    assert_eq!(p.header_name, ":path");
    assert_eq!(
        spec(&hp("query#0")[0]),
        PolicySpecifier::QueryParameter(QueryParameter {
            name: "user".into()
        })
    );
    // uri_capture hashes on the named group of the matched regex path; the
    // prefix path has no captures, so no hash.
    let PolicySpecifier::Header(cap) = spec(&hp("capture#1")[0]) else {
        panic!()
    };
    let sub = cap.regex_rewrite.unwrap();
    assert_eq!(sub.pattern.unwrap().regex, "^(?:/u/(?<id>\\d+)).*");
    assert_eq!(sub.substitution, "\\1");
    assert!(hp("capture#0").is_empty());
    assert!(hp("none#0").is_empty());
    // Hashing only applies to consistent-hashing upstreams.
    assert!(hp("rr#0").is_empty());
}

#[test]
fn invalid_regex_names_the_route() {
    let svc = service("svc", "10.0.0.1", 80);
    let mut r = route("bad", &svc, json!({"paths": ["/ok"]}));
    r.data["paths"] = json!(["~/a(("]);
    let err = translate(&[svc, r], Flavour::Envoy, &ProxyOptions::default()).unwrap_err();
    match err {
        TranslateError::InvalidRegex { route, pattern, .. } => {
            assert_eq!(route, "bad");
            assert_eq!(pattern, "~/a((");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn disabled_services_and_orphan_routes_are_skipped() {
    let on = service("on", "10.0.0.1", 80);
    let off = service_with("off", "10.0.0.2", 80, json!({"enabled": false}));
    let mut orphan = route("orphan", &on, json!({"paths": ["/o"]}));
    orphan.data["service"] = serde_json::Value::Null;
    let ents = vec![
        route("a", &on, json!({"paths": ["/a"]})),
        route("b", &off, json!({"paths": ["/b"]})),
        orphan,
        on,
        off,
    ];
    let res = run(&ents);
    assert_eq!(names(vhost(rc(&res, "http"), CATCH_ALL)), vec!["a#0"]);
    assert_eq!(
        res.clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["service.on"]
    );
}

// --- path handling --------------------------------------------------------

/// What Envoy does with a request path: the first matching route of the
/// virtual host, then its regex_rewrite (RE2 GlobalReplace semantics).
fn envoy_path(v: &VirtualHost, path: &str) -> Option<String> {
    for r in &v.routes {
        let m = r.r#match.as_ref().unwrap();
        let hit = match m.path_specifier.as_ref().unwrap() {
            PathSpecifier::Prefix(p) => path.starts_with(p.as_str()),
            PathSpecifier::Path(p) => path == p,
            PathSpecifier::SafeRegex(re) => regex::Regex::new(&format!("^(?:{})$", re.regex))
                .unwrap()
                .is_match(path),
            other => panic!("unexpected {other:?}"),
        };
        if !hit {
            continue;
        }
        let a = action(r);
        return Some(match &a.regex_rewrite {
            None => path.to_string(),
            Some(rw) => {
                let re = regex::Regex::new(&rw.pattern.as_ref().unwrap().regex).unwrap();
                re.replace_all(path, re2_rewrite(&rw.substitution).as_str())
                    .into_owned()
            }
        });
    }
    None
}

/// An RE2 rewrite string (`\1`, `\\`) in the regex crate's syntax.
fn re2_rewrite(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some(d) if d.is_ascii_digit() => out.push_str(&format!("${{{d}}}")),
                Some(o) => out.push(o),
                None => {}
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// Service path, route path (None = route matching on host only),
/// strip_path values, path_handling values, request path, expected path.
type PathCase = (
    &'static str,
    Option<&'static str>,
    &'static [bool],
    &'static [&'static str],
    &'static str,
    &'static str,
);

/// Kong's path-handling expectations (after Kong's own fixture,
/// spec/fixtures/router_path_handling_tests.lua).
#[rustfmt::skip]
const KONG_PATHS: &[PathCase] = &[
    ("/", Some("/"), &[false, true], &["v0", "v1"], "/", "/"),
    ("/", Some("/"), &[false, true], &["v0", "v1"], "/route", "/route"),
    ("/", Some("/"), &[false, true], &["v0", "v1"], "/route/", "/route/"),
    ("/", Some("/"), &[false, true], &["v0", "v1"], "/routereq", "/routereq"),
    ("/", Some("/"), &[false, true], &["v0", "v1"], "/route/req", "/route/req"),
    ("/", Some("/route"), &[false], &["v0", "v1"], "/route", "/route"),
    ("/", Some("/route"), &[false], &["v0", "v1"], "/route/", "/route/"),
    ("/", Some("/route"), &[false], &["v0", "v1"], "/routereq", "/routereq"),
    ("/", Some("/route"), &[true], &["v0", "v1"], "/route", "/"),
    ("/", Some("/route"), &[true], &["v0", "v1"], "/route/", "/"),
    ("/", Some("/route"), &[true], &["v0", "v1"], "/routereq", "/req"),
    ("/", Some("/route/"), &[false], &["v0", "v1"], "/route/", "/route/"),
    ("/", Some("/route/"), &[false], &["v0", "v1"], "/route/req", "/route/req"),
    ("/", Some("/route/"), &[true], &["v0", "v1"], "/route/", "/"),
    ("/", Some("/route/"), &[true], &["v0", "v1"], "/route/req", "/req"),
    ("/srv", Some("/rou"), &[false], &["v0"], "/roureq", "/srv/roureq"),
    ("/srv", Some("/rou"), &[false], &["v1"], "/roureq", "/srvroureq"),
    ("/srv", Some("/rou"), &[true], &["v0"], "/roureq", "/srv/req"),
    ("/srv", Some("/rou"), &[true], &["v1"], "/roureq", "/srvreq"),
    ("/srv/", Some("/rou"), &[false], &["v0", "v1"], "/rou", "/srv/rou"),
    ("/srv/", Some("/rou"), &[true], &["v0"], "/rou", "/srv"),
    ("/srv/", Some("/rou"), &[true], &["v1"], "/rou", "/srv/"),
    ("/service", Some("/"), &[false, true], &["v0", "v1"], "/", "/service"),
    ("/service", Some("/"), &[false, true], &["v0"], "/route", "/service/route"),
    ("/service", Some("/"), &[false, true], &["v1"], "/route", "/serviceroute"),
    ("/service", Some("/"), &[false, true], &["v0"], "/route/", "/service/route/"),
    ("/service", Some("/"), &[false, true], &["v1"], "/route/", "/serviceroute/"),
    ("/service", Some("/"), &[false, true], &["v0"], "/routereq", "/service/routereq"),
    ("/service", Some("/"), &[false, true], &["v1"], "/routereq", "/serviceroutereq"),
    ("/service", Some("/"), &[false, true], &["v0"], "/route/req", "/service/route/req"),
    ("/service", Some("/"), &[false, true], &["v1"], "/route/req", "/serviceroute/req"),
    ("/service", Some("/route"), &[false], &["v0"], "/route", "/service/route"),
    ("/service", Some("/route"), &[false], &["v1"], "/route", "/serviceroute"),
    ("/service", Some("/route"), &[false], &["v0"], "/route/", "/service/route/"),
    ("/service", Some("/route"), &[false], &["v1"], "/route/", "/serviceroute/"),
    ("/service", Some("/route"), &[false], &["v0"], "/routereq", "/service/routereq"),
    ("/service", Some("/route"), &[false], &["v1"], "/routereq", "/serviceroutereq"),
    ("/service", Some("/route"), &[true], &["v0", "v1"], "/route", "/service"),
    ("/service", Some("/route"), &[true], &["v0", "v1"], "/route/", "/service/"),
    ("/service", Some("/route"), &[true], &["v0"], "/routereq", "/service/req"),
    ("/service", Some("/route"), &[true], &["v1"], "/routereq", "/servicereq"),
    ("/service", Some("/route/"), &[false], &["v0"], "/route/", "/service/route/"),
    ("/service", Some("/route/"), &[false], &["v1"], "/route/", "/serviceroute/"),
    ("/service", Some("/route/"), &[false], &["v0"], "/route/req", "/service/route/req"),
    ("/service", Some("/route/"), &[false], &["v1"], "/route/req", "/serviceroute/req"),
    ("/service", Some("/route/"), &[true], &["v0", "v1"], "/route/", "/service"),
    ("/service", Some("/route/"), &[true], &["v0"], "/route/req", "/service/req"),
    ("/service", Some("/route/"), &[true], &["v1"], "/route/req", "/servicereq"),
    ("/service/", Some("/"), &[false], &["v0", "v1"], "/", "/service/"),
    ("/service/", Some("/"), &[true], &["v0"], "/", "/service"),
    ("/service/", Some("/"), &[true], &["v1"], "/", "/service/"),
    ("/service/", Some("/"), &[false, true], &["v0", "v1"], "/route/", "/service/route/"),
    ("/service/", Some("/"), &[false, true], &["v0", "v1"], "/route", "/service/route"),
    ("/service/", Some("/"), &[false, true], &["v0", "v1"], "/routereq", "/service/routereq"),
    ("/service/", Some("/"), &[false, true], &["v0", "v1"], "/route/req", "/service/route/req"),
    ("/service/", Some("/route"), &[false], &["v0", "v1"], "/route", "/service/route"),
    ("/service/", Some("/route"), &[false], &["v0", "v1"], "/route/", "/service/route/"),
    ("/service/", Some("/route"), &[false], &["v0", "v1"], "/routereq", "/service/routereq"),
    ("/service/", Some("/route"), &[true], &["v0"], "/route", "/service"),
    ("/service/", Some("/route"), &[true], &["v1"], "/route", "/service/"),
    ("/service/", Some("/route"), &[true], &["v0", "v1"], "/route/", "/service/"),
    ("/service/", Some("/route"), &[true], &["v0", "v1"], "/routereq", "/service/req"),
    ("/service/", Some("/route/"), &[false], &["v0", "v1"], "/route/", "/service/route/"),
    ("/service/", Some("/route/"), &[false], &["v0", "v1"], "/route/req", "/service/route/req"),
    ("/service/", Some("/route/"), &[true], &["v0"], "/route/", "/service"),
    ("/service/", Some("/route/"), &[true], &["v1"], "/route/", "/service/"),
    ("/service/", Some("/route/"), &[true], &["v0", "v1"], "/route/req", "/service/req"),
    ("/", None, &[false, true], &["v0", "v1"], "/", "/"),
    ("/", None, &[false, true], &["v0", "v1"], "/route", "/route"),
    ("/", None, &[false, true], &["v0", "v1"], "/route/", "/route/"),
    ("/service", None, &[false, true], &["v0", "v1"], "/", "/service"),
    ("/service", None, &[false, true], &["v0"], "/route", "/service/route"),
    ("/service", None, &[false, true], &["v1"], "/route", "/serviceroute"),
    ("/service", None, &[false, true], &["v0"], "/route/", "/service/route/"),
    ("/service", None, &[false, true], &["v1"], "/route/", "/serviceroute/"),
    ("/service/", None, &[false], &["v0", "v1"], "/", "/service/"),
    ("/service/", None, &[true], &["v0"], "/", "/service"),
    ("/service/", None, &[true], &["v1"], "/", "/service/"),
    ("/service/", None, &[false, true], &["v0", "v1"], "/route", "/service/route"),
    ("/service/", None, &[false, true], &["v0", "v1"], "/route/", "/service/route/"),
];

fn upstream_path(
    service_path: Option<&str>,
    route_path: Option<&str>,
    strip: bool,
    handling: &str,
    request: &str,
) -> Option<String> {
    let svc = service_with("svc", "10.0.0.1", 80, json!({"path": service_path}));
    let mut extra = json!({"strip_path": strip, "path_handling": handling});
    match route_path {
        Some(p) => extra["paths"] = json!([p]),
        None => extra["hosts"] = json!(["example.com"]),
    }
    let r = route("r", &svc, extra);
    let res = run(&[svc, r]);
    let c = rc(&res, "http");
    let v = vhost(
        c,
        if route_path.is_some() {
            CATCH_ALL
        } else {
            "example.com"
        },
    );
    envoy_path(v, request)
}

#[test]
fn strip_path_and_service_path_follow_kongs_table() {
    let mut checked = 0;
    for (sp, rp, strips, handlings, req, want) in KONG_PATHS {
        for strip in *strips {
            for h in *handlings {
                let got = upstream_path(Some(sp), *rp, *strip, h, req);
                assert_eq!(
                    got.as_deref(),
                    Some(*want),
                    "service {sp} route {rp:?} strip {strip} {h} request {req}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 150, "{checked}");
    // An unset service path behaves as `/`.
    assert_eq!(
        upstream_path(None, Some("/a"), true, "v0", "/a/b").as_deref(),
        Some("/b")
    );
    assert_eq!(
        upstream_path(None, Some("/a"), false, "v0", "/a/b").as_deref(),
        Some("/a/b")
    );
}

#[test]
fn strip_path_with_regex_paths() {
    let cases: &[(Option<&str>, &str, &str, &str)] = &[
        // (service path, handling, request, expected) for route ~/api/v\d+
        (None, "v0", "/api/v1/users", "/users"),
        (None, "v0", "/api/v2", "/"),
        (Some("/base"), "v0", "/api/v1/users", "/base/users"),
        (Some("/base"), "v0", "/api/v1", "/base"),
        (Some("/base/"), "v0", "/api/v1", "/base"),
        (Some("/base"), "v1", "/api/v1/users", "/base/users"),
        (Some("/base"), "v1", "/api/v1", "/base"),
        (Some("/base/"), "v1", "/api/v1/x", "/base/x"),
    ];
    for (sp, h, req, want) in cases {
        assert_eq!(
            upstream_path(*sp, Some("~/api/v\\d+"), true, h, req).as_deref(),
            Some(*want),
            "service {sp:?} {h} {req}"
        );
    }
    // Without strip_path the regex does not matter.
    assert_eq!(
        upstream_path(Some("/base"), Some("~/api/v\\d+"), false, "v0", "/api/v1/x").as_deref(),
        Some("/base/api/v1/x")
    );
    // Regex metacharacters in a prefix and in a service path are escaped (a
    // service path is RFC 3986 characters, so it holds no backslash).
    assert_eq!(
        upstream_path(Some("/b.s+"), Some("/a.b+"), true, "v0", "/a.b+/c").as_deref(),
        Some("/b.s+/c")
    );
    assert_eq!(
        upstream_path(Some("/x"), Some("/a.b+"), true, "v0", "/aXb+/c"),
        None
    );
}
