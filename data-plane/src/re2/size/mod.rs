//! RE2's program size for a pattern, computed the way RE2 (BSD-3-Clause)
//! builds its program; the numbers were checked against Envoy 1.40.
//!
//! Envoy refuses a regex whose RE2 program has more instructions than the
//! runtime value `re2.max_program_size.error_level` (100 by default), so
//! a configuration gantry-proxy takes must have the same sizes. The size
//! is not a property of the pattern's text: RE2 rewrites the pattern as it
//! parses it (`parse`, `stack`, `factor`), simplifies it (`simplify`),
//! compiles it (`compile`) and flattens the program (`flatten`), and each
//! step changes the count. Each module follows one step.
//!
//! Envoy 1.40 runs RE2 in Latin-1 mode (the runtime feature
//! `envoy.reloadable_features.re2_use_latin1_mode`, on by default): each
//! byte of the pattern is one character. That is the only mode here.

mod classes;
mod compile;
mod factor;
mod flatten;
mod parse;
mod simplify;
mod stack;
mod tree;

pub(crate) use parse::{class_bytes, counted, escape_class_bytes, escaped_byte};

use std::fmt;

/// Envoy's default `re2.max_program_size.error_level`.
pub const ENVOY_ERROR_LEVEL: usize = 100;

/// The RE2 program size the fleet runs with: Envoy's
/// `re2.max_program_size.error_level` as the shipped Envoy bootstraps set
/// it (deploy/envoy/bootstrap-*.yaml). Kong puts no limit on route
/// regexes, and Envoy's default of 100 already refuses everyday ones such
/// as `~/tokens/[a-f0-9]{64}$` (143). An Envoy node on another bootstrap
/// must set at least this, or it refuses what gantry-cp admits.
pub const MAX_PROGRAM_SIZE: usize = 4096;

/// RE2's budget for a program: two thirds of its default 8 MiB `max_mem`
/// (Envoy 1.40 does not change it), less the program's fixed part, at 8
/// bytes an instruction. Measured on Envoy 1.40: 698,996 instructions
/// compile, one more is "pattern too large".
const MAX_INSTRUCTIONS: usize = 698_996;

/// Why RE2, and so Envoy, would not compile a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Re2Error {
    /// RE2's syntax error, worded as RE2 words it (Envoy passes it on).
    Syntax(String),
    /// The program would not fit RE2's memory budget.
    TooLarge,
}

impl fmt::Display for Re2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Re2Error::Syntax(m) => f.write_str(m),
            Re2Error::TooLarge => f.write_str("pattern too large - compile failed"),
        }
    }
}

/// The number of instructions in RE2's program for `pattern`, as Envoy
/// compiles it, or why RE2 refuses the pattern.
pub fn program_size(pattern: &str) -> Result<usize, Re2Error> {
    let p = pattern.as_bytes();
    let stack = stack_needed(p);
    if stack <= INLINE_STACK {
        return size_of(p);
    }
    // Every step recurses over the tree. A deep one runs on a thread with
    // a stack sized for it, so no pattern can overflow the caller's.
    std::thread::scope(|s| {
        match std::thread::Builder::new()
            .name("re2-size".into())
            .stack_size(stack.saturating_add(256 << 10))
            .spawn_scoped(s, || size_of(p))
        {
            Ok(h) => h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
            // No room for such a stack: refuse, as RE2 would have no room
            // for such a program.
            Err(_) => Err(Re2Error::TooLarge),
        }
    })
}

/// Envoy's check of a regex at error level `level`: the size when Envoy
/// takes it, else Envoy's message (RE2's for a pattern it refuses).
pub fn envoy_check(pattern: &str, level: usize) -> Result<usize, String> {
    match program_size(pattern) {
        Ok(size) if size > level => Err(format!(
            "regex '{pattern}' RE2 program size of {size} > max program size of {level} set for \
             the error level threshold. Increase configured max program size if necessary."
        )),
        Ok(size) => Ok(size),
        Err(e) => Err(e.to_string()),
    }
}

fn size_of(p: &[u8]) -> Result<usize, Re2Error> {
    let tree = parse::parse(p)?;
    let tree = simplify::simplify(simplify::strip_required_prefix(tree));
    let program = compile::compile(tree, MAX_INSTRUCTIONS).ok_or(Re2Error::TooLarge)?;
    Ok(flatten::size(program))
}

/// Stack the steps may use on the caller's thread.
const INLINE_STACK: usize = 512 << 10;

/// A unit of stack for the estimate below: unoptimised builds use about
/// four times what optimised ones do.
const UNIT: usize = if cfg!(debug_assertions) {
    4 << 10
} else {
    1 << 10
};

/// An upper bound on the stack the steps need for `p`, from what makes
/// their trees deep: groups nest, each alternative can nest a factored
/// prefix, and counted repeats expand into nested optional copies
/// (`x{0,3}` is `(x(x(x)?)?)?`), as can runs of `?` once merged. The
/// weights are at least twice what was measured for each construct.
fn stack_needed(p: &[u8]) -> usize {
    let mut units = 16usize;
    for (i, &b) in p.iter().enumerate() {
        units += match b {
            b'(' => 2,
            b'|' => 4,
            b'*' | b'+' | b'?' => 1,
            b'{' => match parse::counted(p, i) {
                Some((min, max, _)) => max.unwrap_or(min).min(stack::MAX_REPEAT) as usize,
                None => 0,
            },
            _ => 0,
        };
    }
    units.saturating_mul(UNIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(p: &str) -> usize {
        program_size(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn sizes_envoy_reports() {
        for (p, want) in [
            ("x", 5),
            ("^x", 4),
            ("^/api/users$", 4),
            (r"^\d", 3),
            (r"\d$", 5),
            (".", 6),
            ("[^/]", 6),
            ("(?s).", 5),
            ("[A-Za-z]", 5),
            ("(?i)x", 5),
            (r"\w", 7),
            ("[0-9a-fA-F]", 6),
            ("(x)", 7),
            ("(?P<n>x)", 7),
            ("(?:x)", 5),
            ("x*", 5),
            ("x+", 6),
            (".*", 6),
            ("x{10}", 14),
            ("x{1,10}", 23),
            ("x{0,10}", 24),
            (r"\d{4}-\d{2}-\d{2}", 14),
            ("users|orders|items", 20),
            ("(users|orders|items)", 22),
            (r"^/users/(?<id>\d+)$", 8),
            (r"/users/\d+", 13),
            ("/api/v[0-9]+/.*", 15),
            ("é", 6),
            ("[é]", 6),
            (r"\p{Greek}", 1),
            (r"\pL", 11),
        ] {
            assert_eq!(size(p), want, "{p}");
        }
    }

    #[test]
    fn the_default_error_level_is_inclusive() {
        assert_eq!(envoy_check("a{96}", ENVOY_ERROR_LEVEL), Ok(100));
        assert_eq!(
            envoy_check("a{97}", ENVOY_ERROR_LEVEL).unwrap_err(),
            "regex 'a{97}' RE2 program size of 101 > max program size of 100 set for the error \
             level threshold. Increase configured max program size if necessary."
        );
        assert_eq!(
            envoy_check("(", ENVOY_ERROR_LEVEL).unwrap_err(),
            "missing ): ("
        );
    }

    #[test]
    fn too_large_for_re2_at_its_memory_budget() {
        let p = |tail: usize| format!("{}{}", "x{1000}".repeat(698), "x".repeat(tail));
        assert_eq!(program_size(&p(992)), Ok(698_996));
        assert_eq!(program_size(&p(993)), Err(Re2Error::TooLarge));
    }

    #[test]
    fn deep_nesting_is_sized_without_overflowing() {
        let deep = |open: &str, n: usize| format!("{}a{}", open.repeat(n), ")".repeat(n));
        // Non-capturing groups vanish; captures cost two each.
        assert_eq!(size(&deep("(?:", 5000)), 5);
        assert_eq!(size(&deep("(", 1000)), 2005);
        assert_eq!(size(&deep("(", 20_000)), 40_005);
        assert!(size("(?:a{0,1000}){0,1}b{0,1000}") > 1000);
    }
}
