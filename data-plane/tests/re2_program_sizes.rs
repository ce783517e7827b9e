//! RE2 program sizes as Envoy 1.40 reports them.
//!
//! `fixtures/re2_program_sizes.tsv` holds what Envoy 1.40 (default
//! runtime: Latin-1 mode) said about each pattern, one per line: the
//! program size, or `ERR:` and its refusal, a tab, then the pattern. Each
//! line was measured by loading the pattern as a route's `safe_regex`
//! into `envoy --mode validate` with `re2.max_program_size.error_level`
//! set to 0, so every regex is refused with its size.

use gantry_proxy::re2::size::{ENVOY_ERROR_LEVEL, envoy_check, program_size};

const FIXTURE: &str = include_str!("fixtures/re2_program_sizes.tsv");

#[test]
fn every_measured_pattern_has_envoys_size_or_error() {
    let mut wrong = Vec::new();
    let mut n = 0;
    for line in FIXTURE.lines() {
        let (want, pattern) = line.split_once('\t').expect("size<TAB>pattern");
        n += 1;
        let got = match program_size(pattern) {
            Ok(size) => size.to_string(),
            Err(e) => format!("ERR:{e}"),
        };
        if got != want {
            wrong.push(format!("{pattern:?}: Envoy {want}, here {got}"));
        }
    }
    assert!(n > 2000, "{n} lines");
    assert!(
        wrong.is_empty(),
        "{} of {n} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn refusals_carry_envoys_words() {
    let at = |p: &str| envoy_check(p, ENVOY_ERROR_LEVEL);
    assert_eq!(at("a{96}"), Ok(100));
    assert_eq!(
        at("a{97}"),
        Err(
            "regex 'a{97}' RE2 program size of 101 > max program size of 100 set for the \
             error level threshold. Increase configured max program size if necessary."
                .into()
        )
    );
    assert_eq!(at("a{1001}"), Err("invalid repetition size: {1001}".into()));
    assert_eq!(
        at(&"x{1000}".repeat(700)),
        Err("pattern too large - compile failed".into())
    );
}
