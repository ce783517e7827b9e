//! RE2 semantics: what Envoy's google_re2 engine matches and rewrites.

use super::re2::{Re2, RegexRewrite};

fn m(re: &str, input: &str) -> bool {
    Re2::new(re)
        .unwrap_or_else(|e| panic!("{re}: {e}"))
        .full_match(input.as_bytes())
}

#[test]
fn full_match_semantics() {
    let cases: &[(&str, &str, bool)] = &[
        // RE2::FullMatch anchors both ends.
        ("b", "abc", false),
        ("a.c", "abc", true),
        ("a|ab", "ab", true),
        ("/items/[0-9]+", "/items/12", true),
        ("/items/[0-9]+", "/items/12/x", false),
        // `.` does not match a newline unless (?s).
        ("a.b", "a\nb", false),
        ("(?s)a.b", "a\nb", true),
        ("(?i)abc", "ABC", true),
        ("(?i:a)bc", "ABC", false),
        // Perl classes are ASCII-only in RE2.
        (r"\d+", "123", true),
        (r"\d+", "١٢٣", false),
        (r"\w+", "abc_1", true),
        (r"\w+", "é", false),
        (r"\W", "é", true),
        (r"\s", " ", true),
        (r"\s", "\u{a0}", false),
        // RE2's \s has no vertical tab.
        (r"\s", "\u{b}", false),
        (r"[\d]+", "42", true),
        (r"[^\d]", "x", true),
        (r"[\D]", "x", true),
        (r"[\D]", "4", false),
        // ASCII word boundary: é is not a word character for RE2.
        (r"a\b.", "aé", true),
        (r"a\B.", "ab", true),
        (r"a\B.", "aé", false),
        // Set-operation syntax of the regex crate is literal in RE2.
        ("[a&&b]+", "&&", true),
        ("[a~~b]", "~", true),
        ("[[]", "[", true),
        ("[]a]+", "]a", true),
        ("[[:alpha:]]+", "abc", true),
        ("[[:^digit:]]", "x", true),
        // A `{` that is not a repetition is a literal.
        ("a{", "a{", true),
        ("a{x}", "a{x}", true),
        ("a{2}", "aa", true),
        ("a{1,}", "aaa", true),
        ("a{1,2}", "aaa", false),
        ("}", "}", true),
        // Escaped punctuation is always literal (not \< word start).
        (r"\<a\>", "<a>", true),
        (r"\.", ".", true),
        (r"\Q*.+\E", "*.+", true),
        (r"\Qa.b", "a.b", true),
        (r"\Qa.b", "axb", false),
        // Octal escapes.
        (r"\101", "A", true),
        (r"\0", "\0", true),
        (r"\x41\x{42}", "AB", true),
        (r"\pL+", "é", true),
        (r"\p{Greek}", "α", true),
        ("(?P<name>a)(?<other>b)", "ab", true),
        (r"\Aab\z", "ab", true),
    ];
    for (re, input, want) in cases {
        assert_eq!(m(re, input), *want, "{re:?} on {input:?}");
    }
}

#[test]
fn patterns_re2_rejects() {
    for re in [
        "",
        "(?=a)",
        "(?!a)",
        "(?<=a)b",
        "(?x)a",
        "(?#comment)",
        r"\C",
        r"\1",
        r"\8",
        "a{1001}",
        "a{2,1}",
        "[[:foo:]]",
        "(?)",
        "(abc",
        r"\",
        "[a",
        r"\e",
    ] {
        assert!(Re2::new(re).is_err(), "{re:?} should be refused");
    }
}

fn rw(pattern: &str, sub: &str, input: &str) -> String {
    RegexRewrite::new(pattern, sub)
        .unwrap_or_else(|e| panic!("{pattern}: {e}"))
        .replace_all(input)
        .into_owned()
}

#[test]
fn global_replace_semantics() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // Envoy's documented examples.
        (
            r"^/service/([^/]+)(/.*)$",
            r"\2/instance/\1",
            "/service/foo/v1/api",
            "/v1/api/instance/foo",
        ),
        ("one", "two", "/xxx/one/yyy/one/zzz", "/xxx/two/yyy/two/zzz"),
        ("(?i)/xxx/", "/yyy/", "/aaa/XxX/bbb", "/aaa/yyy/bbb"),
        // Matches do not overlap.
        ("(?i)/xxx/", "/yyy/", "/XXX/xxx/zzz", "/yyy/xxx/zzz"),
        // ASCII word boundaries.
        (r"\bfoo\b", "bar", "/foo/foobar/éfoo", "/bar/foobar/ébar"),
        (r"o\B", "0", "foo", "f0o"),
        // \0 is the whole match, \\ a backslash.
        ("b+", r"[\0]", "abbbc", "a[bbb]c"),
        ("b", r"\\", "abc", r"a\c"),
        // Empty matches: not right after the previous match.
        ("x*", "-", "abc", "-a-b-c-"),
        ("a*", "-", "baaac", "-b-c-"),
        ("x*", "-", "ax", "-a-"),
        // No match: unchanged.
        ("zzz", "y", "abc", "abc"),
        // A group the pattern does not have: RE2 changes nothing.
        ("(a)", r"\2", "abc", "abc"),
        // An invalid escape stops that rewrite; the rest of the input stays.
        ("b", r"X\qY", "abcb", "aXcX"),
        // The translator's Kong v0 strip rewrite for prefix /foo, service path /svc.
        (r"^/foo$|^(/)foo/?", r"/svc\1", "/foo", "/svc"),
        (r"^/foo$|^(/)foo/?", r"/svc\1", "/foo/bar", "/svc/bar"),
        (r"^/foo$|^(/)foo/?", r"/svc\1", "/foobar", "/svc/bar"),
        // Unicode: an empty match never splits a character.
        ("x*", "-", "é", "-é-"),
    ];
    for (p, s, input, want) in cases {
        assert_eq!(rw(p, s, input), *want, "{p:?} -> {s:?} on {input:?}");
    }
}

#[test]
fn substitution_must_be_a_header_value() {
    assert!(RegexRewrite::new("a", "b\nc").is_err());
    assert!(RegexRewrite::new("(", "b").is_err());
}
