//! gantry-proxy rewrites request paths as Envoy 1.40 does with
//! `normalize_path` and `merge_slashes`, checked against what Envoy did
//! with 1,499 targets (tests/fixtures/envoy_path_normalization.tsv).

use gantry_proxy::config::path_normalize::{PathRules, Refused, apply};

/// `\xNN` back to the byte.
fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && i + 4 <= b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).expect("the corpus is UTF-8 once unescaped")
}

#[test]
fn paths_are_rewritten_as_envoy_rewrites_them() {
    let text = include_str!("fixtures/envoy_path_normalization.tsv");
    let (mut checked, mut wrong) = (0, Vec::new());
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut f = line.split('\t');
        let (Some(cfg), Some(input), Some(want)) = (f.next(), f.next(), f.next()) else {
            panic!("malformed line {line:?}");
        };
        let rules = match cfg {
            "norm" => PathRules {
                normalize: true,
                merge_slashes: false,
            },
            "merge" => PathRules {
                normalize: false,
                merge_slashes: true,
            },
            "norm+merge" => PathRules {
                normalize: true,
                merge_slashes: true,
            },
            other => panic!("unknown config {other}"),
        };
        let input = unescape(input);
        // hyper drops a fragment before the request path sees it (a
        // recorded difference: Envoy refuses it).
        if input.contains('#') {
            continue;
        }
        let lower = input.to_ascii_lowercase();
        let scheme = ["http://", "https://"]
            .into_iter()
            .find(|p| lower.starts_with(p));
        let pq = match scheme.map(|p| &input[p.len()..]) {
            Some(rest) => match rest.find('/') {
                Some(i) => rest[i..].to_string(),
                None => continue,
            },
            None => input.clone(),
        };
        let got = match apply(&pq, rules) {
            Ok(p) => p.into_owned(),
            Err(Refused) => "REFUSED".to_string(),
        };
        let want = unescape(want);
        // Envoy's access log shows the path without the query.
        let got_path = got.split('?').next().unwrap_or_default().to_string();
        let want_path = want.split('?').next().unwrap_or_default();
        checked += 1;
        if got_path != want_path {
            wrong.push(format!(
                "{cfg} {input:?}: Envoy {want:?}, gantry-proxy {got:?}"
            ));
        }
    }
    assert!(checked > 4000, "only {checked} corpus lines checked");
    assert!(
        wrong.is_empty(),
        "{} of {checked} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
