//! RE2 semantics on top of the `regex` crate, as Envoy 1.40 runs RE2.
//!
//! What is refused: exactly what Envoy refuses, computed by `re2_size`:
//! RE2's syntax errors in RE2's words, "pattern too large", and any regex
//! whose RE2 program has more than `re2.max_program_size.error_level`
//! instructions (Envoy's default, 100), with Envoy's message. The verdict
//! is memoised per pattern while a configuration compiles.
//!
//! What matches: Envoy runs RE2 in Latin-1 mode (runtime feature
//! `envoy.reloadable_features.re2_use_latin1_mode`, on by default), so
//! every byte of a pattern is one character and every byte of the input
//! is one character. Patterns are translated for `regex::bytes` with
//! Unicode off, which matches the same way:
//!
//! * a pattern byte of 0x80 or above is that byte (`é` in a pattern is two
//!   characters); `.` and `[^a]` match one byte, so `^.$` does not match
//!   a UTF-8 `é`; `(?i)` folds ASCII letters only;
//! * classes are translated to the bytes RE2 puts in them: `\pL` is the
//!   ASCII and Latin-1 letters, `\p{Greek}` is empty, `\d \w \s` are
//!   ASCII (RE2's `\s` is `[\t\n\f\r ]`), and `[`, `&`, `~` inside a class
//!   are literals;
//! * a `{` that does not start a repetition is a literal; escaped
//!   punctuation is always a literal (`\<` is `<`); `\Q...\E`, octal
//!   escapes and `\C` (any byte) are RE2's;
//! * RE2 takes capture names the `regex` crate does not (a leading digit,
//!   Latin-1 letters, repeated names): groups are translated unnamed and
//!   names are looked up here, the leftmost group of a name first.
//!
//! Matching is a full match (`RE2::FullMatch`), as everywhere Envoy uses a
//! `RegexMatcher` to match; rewriting is `RE2::GlobalReplace`, with RE2's
//! rewrite-string syntax (`\0`..`\9`, `\\`).

pub mod size;

use regex_automata::util::syntax;
use regex_automata::{Input, meta};
use size::{MAX_PROGRAM_SIZE, class_bytes, counted, envoy_check, escape_class_bytes, escaped_byte};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;

type Memo<R> = RefCell<Option<HashMap<String, Result<R, String>>>>;

thread_local! {
    /// Compiled regexes by pattern while a compile runs: the translator
    /// repeats the same routes in every virtual host, and compiling (and
    /// sizing) each pattern once keeps large configurations fast.
    static CACHE: Memo<Compiled> = const { RefCell::new(None) };
    static REWRITE_CACHE: Memo<(Matcher, Names)> = const { RefCell::new(None) };
    static VERDICT_CACHE: Memo<()> = const { RefCell::new(None) };
}

/// Runs `f` with regex compilation memoised; the memo is dropped after.
pub(crate) fn with_cache<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CACHE.with(|c| *c.borrow_mut() = None);
            REWRITE_CACHE.with(|c| *c.borrow_mut() = None);
            VERDICT_CACHE.with(|c| *c.borrow_mut() = None);
        }
    }
    CACHE.with(|c| *c.borrow_mut() = Some(HashMap::new()));
    REWRITE_CACHE.with(|c| *c.borrow_mut() = Some(HashMap::new()));
    VERDICT_CACHE.with(|c| *c.borrow_mut() = Some(HashMap::new()));
    let _reset = Reset;
    f()
}

fn memo<R: Clone>(
    cache: &'static std::thread::LocalKey<Memo<R>>,
    key: &str,
    build: impl FnOnce() -> Result<R, String>,
) -> Result<R, String> {
    if let Some(hit) = cache.with(|c| c.borrow().as_ref().and_then(|m| m.get(key).cloned())) {
        return hit;
    }
    let v = build();
    cache.with(|c| {
        if let Some(m) = c.borrow_mut().as_mut() {
            m.insert(key.to_string(), v.clone());
        }
    });
    v
}

/// Envoy's verdict on `pattern` as a `RegexMatcher`: refused as Envoy
/// refuses it (the message names the pattern), or taken.
fn envoy_accepts(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("regex must not be empty".into());
    }
    memo(&VERDICT_CACHE, pattern, || {
        envoy_check(pattern, MAX_PROGRAM_SIZE)
            .map(drop)
            .map_err(|reason| format!("invalid regex {pattern:?}: {reason}"))
    })
}

/// Capture group names and their group numbers, in pattern order.
type Names = Arc<[(Box<str>, usize)]>;

/// A compiled pattern, shared by every route that uses it.
type Matcher = Arc<meta::Regex>;

#[derive(Clone)]
struct Compiled {
    full: Matcher,
    prefix: Arc<[u8]>,
    names: Names,
}

/// A compiled RE2 pattern that matches a whole input (`RE2::FullMatch`).
#[derive(Clone)]
pub struct Re2 {
    pattern: Arc<str>,
    compiled: Compiled,
}

/// A matcher over bytes, configured as `regex::bytes` is (no Unicode,
/// matches may split UTF-8) with one difference: no fully compiled DFA.
/// That DFA is built up front for every small pattern, and a configuration
/// with thousands of regex routes held tens of MiB of them; the lazy DFA
/// builds only the states traffic reaches, per thread that uses it.
fn bytes_regex(translated: &str) -> Result<Matcher, String> {
    meta::Builder::new()
        .configure(
            meta::Config::new()
                .utf8_empty(false)
                .nfa_size_limit(Some(10 * (1 << 20)))
                .hybrid_cache_capacity(2 * (1 << 20))
                .dfa(false),
        )
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .build(translated)
        .map(Arc::new)
        .map_err(|e| last_line(&e.to_string()))
}

/// The longest literal every match of `translated` starts with: the common
/// prefix of a finite prefix-literal set (sound: a match cannot start any
/// other way), or nothing when the set is infinite.
fn literal_prefix(translated: &str) -> Arc<[u8]> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let Ok(hir) = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(translated)
    else {
        return Arc::from(&b""[..]);
    };
    let mut ex = Extractor::new();
    ex.kind(ExtractKind::Prefix);
    let seq = ex.extract(&hir);
    Arc::from(seq.longest_common_prefix().unwrap_or(b""))
}

impl fmt::Debug for Re2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Re2({:?})", self.pattern)
    }
}

impl Re2 {
    pub fn new(pattern: &str) -> Result<Re2, String> {
        envoy_accepts(pattern)?;
        let compiled = memo(&CACHE, pattern, || {
            let invalid = |e: String| format!("invalid regex {pattern:?}: {e}");
            let t = translate(pattern).map_err(invalid)?;
            let full = bytes_regex(&format!(r"\A(?:{})\z", t.pattern)).map_err(invalid)?;
            Ok(Compiled {
                full,
                prefix: literal_prefix(&t.pattern),
                names: t.names,
            })
        })?;
        Ok(Re2 {
            pattern: pattern.into(),
            compiled,
        })
    }

    /// Bytes every match starts with (possibly none), for route indexing.
    pub fn literal_prefix(&self) -> &[u8] {
        &self.compiled.prefix
    }

    /// Whether the whole input matches.
    pub fn full_match(&self, input: &[u8]) -> bool {
        self.compiled.full.is_match(input)
    }

    /// A named group of a whole-input match (request-validator's path
    /// parameters, as Kong's URI captures).
    pub fn named_group<'a>(&self, input: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let index = group_index(&self.compiled.names, name)?;
        let re = &self.compiled.full;
        let mut caps = re.create_captures();
        re.captures(input, &mut caps);
        caps.get_group(index).map(|span| &input[span.range()])
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

fn group_index(names: &Names, name: &str) -> Option<usize> {
    names.iter().find(|(n, _)| &**n == name).map(|(_, i)| *i)
}

/// Whether Envoy takes `pattern` as a `RegexMatcher` (RE2's syntax and
/// its program size), without building a matcher: for validating many
/// patterns at once. What [`Re2::new`] and [`RegexRewrite::new`] accept
/// passes; so does a pattern only their build refuses (one the `regex`
/// crate cannot build, which RE2 can).
pub fn check_syntax(pattern: &str) -> Result<(), String> {
    envoy_accepts(pattern)?;
    // What RE2 takes translates into what the `regex` crate parses, but
    // for its nesting limit (250 groups and repetitions), which takes more
    // than a hundred groups to reach.
    if pattern.bytes().filter(|&b| b == b'(').count() < 100 {
        return Ok(());
    }
    let t = translate(pattern)?;
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(&t.pattern)
        .map(drop)
        .map_err(|e| last_line(&e.to_string()))
}

/// Whether RE2 compiles `pattern` at all, whatever its program size: for
/// a regex Envoy is never given as such (a Kong route regex, which the
/// translator wraps before emitting it; what it emits is checked whole).
pub fn check_re2_syntax(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("regex must not be empty".into());
    }
    size::program_size(pattern)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// One segment of an RE2 rewrite string.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Group(usize),
    /// An invalid escape: RE2's `Rewrite` stops there (keeping what it
    /// already appended) and `GlobalReplace` carries on with the next match.
    Stop,
}

/// `RegexMatchAndSubstitute`: RE2's `GlobalReplace(pattern, substitution)`.
#[derive(Clone)]
pub struct RegexRewrite {
    pattern: Arc<str>,
    substitution: Arc<str>,
    re: Rewriter,
    segs: Vec<Seg>,
    /// False when the substitution names a group the pattern does not
    /// have: `GlobalReplace` then returns without changing anything.
    applies: bool,
}

impl fmt::Debug for RegexRewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RegexRewrite({:?} -> {:?})",
            self.pattern, self.substitution
        )
    }
}

impl RegexRewrite {
    pub fn new(pattern: &str, substitution: &str) -> Result<RegexRewrite, String> {
        envoy_accepts(pattern)?;
        if substitution.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
            return Err("substitution: value contains NUL, CR or LF".into());
        }
        let re = match AnchoredLiteral::parse(pattern) {
            Some(lit) => Rewriter::Literal(lit),
            None => Rewriter::Regex(
                memo(&REWRITE_CACHE, pattern, || {
                    let invalid = |e: String| format!("invalid regex {pattern:?}: {e}");
                    let t = translate(pattern).map_err(invalid)?;
                    Ok((bytes_regex(&t.pattern).map_err(invalid)?, t.names))
                })?
                .0,
            ),
        };
        let (segs, max_group) = parse_rewrite(substitution);
        let groups = match &re {
            Rewriter::Regex(re) => re.group_info().group_len(regex_automata::PatternID::ZERO),
            // Group 0, the whole match.
            Rewriter::Literal(_) => 1,
        };
        let applies = max_group < groups;
        Ok(RegexRewrite {
            pattern: pattern.into(),
            substitution: substitution.into(),
            re,
            segs,
            applies,
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn substitution(&self) -> &str {
        &self.substitution
    }

    /// [`Self::replace_all_bytes`] on text. A result that is no longer
    /// UTF-8 (a match that split a multi-byte character, which Envoy's
    /// Latin-1 RE2 can do) has the broken sequences replaced.
    pub fn replace_all<'a>(&self, input: &'a str) -> Cow<'a, str> {
        match self.replace_all_bytes(input.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(input),
            Cow::Owned(b) => Cow::Owned(match String::from_utf8(b) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
        }
    }

    /// Replaces every non-overlapping match, leftmost first. An empty match
    /// right where the previous match ended is skipped, and the search
    /// moves on by one byte (one character in Latin-1), as RE2 does.
    /// Borrowed when nothing matched.
    pub fn replace_all_bytes<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        if !self.applies {
            return Cow::Borrowed(input);
        }
        let re = match &self.re {
            Rewriter::Regex(re) => re,
            Rewriter::Literal(lit) => {
                // `^` matches only at the start, so there is one match at most.
                let Some(end) = lit.match_at_start(input) else {
                    return Cow::Borrowed(input);
                };
                let mut out = Vec::with_capacity(input.len() + self.substitution.len());
                for seg in &self.segs {
                    match seg {
                        Seg::Lit(l) => out.extend_from_slice(l.as_bytes()),
                        Seg::Group(_) => out.extend_from_slice(&input[..end]),
                        Seg::Stop => break,
                    }
                }
                out.extend_from_slice(&input[end..]);
                return Cow::Owned(out);
            }
        };
        let mut out = Vec::new();
        let mut at = 0;
        let mut last_end = None;
        let mut count = 0;
        let mut locs = re.create_captures();
        while at <= input.len() {
            re.search_captures(&Input::new(input).range(at..), &mut locs);
            let Some(m) = locs.get_match() else {
                break;
            };
            out.extend_from_slice(&input[at..m.start()]);
            if m.is_empty() && last_end == Some(m.start()) {
                if let Some(&b) = input.get(m.start()) {
                    out.push(b);
                }
                at = m.start() + 1;
                continue;
            }
            for seg in &self.segs {
                match seg {
                    Seg::Lit(l) => out.extend_from_slice(l.as_bytes()),
                    Seg::Group(n) => {
                        if let Some(span) = locs.get_group(*n) {
                            out.extend_from_slice(&input[span.range()]);
                        }
                    }
                    Seg::Stop => break,
                }
            }
            at = m.end();
            last_end = Some(at);
            count += 1;
        }
        if count == 0 {
            return Cow::Borrowed(input);
        }
        if at < input.len() {
            out.extend_from_slice(&input[at..]);
        }
        Cow::Owned(out)
    }
}

/// Whether `pattern` is `^` and a literal, ending in nothing, `/?` or `$`:
/// the rewrites matched by comparing bytes (and whose RE2 program is a
/// handful of instructions however long the literal).
pub fn is_anchored_literal(pattern: &str) -> bool {
    AnchoredLiteral::parse(pattern).is_some()
}

/// How a rewrite finds its matches.
#[derive(Clone)]
enum Rewriter {
    Regex(Matcher),
    /// `^literal`, `^literal/?` or `^literal$`: the shape of the rewrites
    /// Kong's path handling becomes, one per route. Matched by comparing
    /// bytes; a regex engine for each would hold kilobytes per route.
    Literal(AnchoredLiteral),
}

#[derive(Clone, Debug, PartialEq)]
struct AnchoredLiteral {
    literal: Box<[u8]>,
    tail: LiteralTail,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum LiteralTail {
    /// Nothing after the literal.
    Open,
    /// `/?`: one optional slash, taken when there.
    OptionalSlash,
    /// `$`: the input ends with the literal.
    End,
}

impl AnchoredLiteral {
    /// The pattern's literal, when it is `^` and a non-empty run of plain
    /// ASCII characters and escaped punctuation, ending in nothing, `/?`
    /// or `$`. Anything else (or anything unsure) is None: the regex
    /// engine's.
    fn parse(pattern: &str) -> Option<AnchoredLiteral> {
        let body = pattern.strip_prefix('^')?;
        let (body, tail) = if let Some(b) = body.strip_suffix("/?") {
            (b, LiteralTail::OptionalSlash)
        } else if let Some(b) = body.strip_suffix('$') {
            (b, LiteralTail::End)
        } else {
            (body, LiteralTail::Open)
        };
        let mut literal = Vec::with_capacity(body.len());
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(n) if n.is_ascii_punctuation() => literal.push(n as u8),
                    _ => return None,
                },
                '.' | '^' | '$' | '|' | '?' | '*' | '+' | '(' | ')' | '[' | ']' | '{' | '}' => {
                    return None;
                }
                c if c.is_ascii_alphanumeric() || c.is_ascii_punctuation() || c == ' ' => {
                    literal.push(c as u8)
                }
                _ => return None,
            }
        }
        // `^/?` alone is the engine's.
        if literal.is_empty() {
            return None;
        }
        Some(AnchoredLiteral {
            literal: literal.into(),
            tail,
        })
    }

    /// Where the one possible match ends, when the input has it.
    fn match_at_start(&self, input: &[u8]) -> Option<usize> {
        let rest = input.strip_prefix(&*self.literal)?;
        let n = self.literal.len();
        match self.tail {
            LiteralTail::Open => Some(n),
            LiteralTail::OptionalSlash => Some(n + usize::from(rest.first() == Some(&b'/'))),
            LiteralTail::End => rest.is_empty().then_some(n),
        }
    }
}

/// Parses an RE2 rewrite string; returns its segments and the highest
/// group it names (`RE2::MaxSubmatch`).
fn parse_rewrite(s: &str) -> (Vec<Seg>, usize) {
    let mut segs = Vec::new();
    let mut lit = String::new();
    let mut max = 0;
    let mut stopped = false;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            if !stopped {
                lit.push(c);
            }
            continue;
        }
        match it.next() {
            Some(d @ '0'..='9') => {
                let n = d as usize - '0' as usize;
                max = max.max(n);
                if !stopped {
                    if !lit.is_empty() {
                        segs.push(Seg::Lit(std::mem::take(&mut lit)));
                    }
                    segs.push(Seg::Group(n));
                }
            }
            Some('\\') => {
                if !stopped {
                    lit.push('\\');
                }
            }
            other => {
                // MaxSubmatch still scans the rest; Rewrite stops here.
                if !stopped {
                    if !lit.is_empty() {
                        segs.push(Seg::Lit(std::mem::take(&mut lit)));
                    }
                    segs.push(Seg::Stop);
                    stopped = true;
                }
                if other.is_none() {
                    break;
                }
            }
        }
    }
    if !lit.is_empty() {
        segs.push(Seg::Lit(lit));
    }
    (segs, max)
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

/// A pattern translated for `regex::bytes` (Unicode off).
struct Translation {
    pattern: String,
    names: Names,
}

/// A byte as a `regex` literal: letters and digits as themselves (so
/// `(?i)` applies to them), anything else as `\xHH`, which is that byte
/// with Unicode off.
fn push_byte(out: &mut String, b: u8) {
    if b.is_ascii_alphanumeric() {
        out.push(b as char);
    } else {
        let _ = write!(out, r"\x{b:02X}");
    }
}

/// The bytes RE2 put in a class, as a `regex` class. Such a set is closed
/// under ASCII case folding whenever `(?i)` applied to it, so the `regex`
/// crate's own folding leaves it as it is.
fn push_class(out: &mut String, ranges: &[(u8, u8)]) {
    if ranges.is_empty() {
        out.push_str(r"[^\x00-\xFF]");
        return;
    }
    out.push('[');
    for &(lo, hi) in ranges {
        let _ = write!(out, r"\x{lo:02X}");
        if hi != lo {
            let _ = write!(out, r"-\x{hi:02X}");
        }
    }
    out.push(']');
}

/// Rewrites an RE2 pattern RE2 accepts into a `regex::bytes` pattern
/// (Unicode off) that matches the same bytes, reading it as RE2 does in
/// Latin-1 mode.
fn translate(pattern: &str) -> Result<Translation, String> {
    let t = pattern.as_bytes();
    let mut out = String::with_capacity(t.len() + 16);
    let mut names: Vec<(Box<str>, usize)> = Vec::new();
    let mut captures = 0;
    // Whether `(?i)` is in force (classes are folded when read), and its
    // value outside each open group, restored at the group's `)`.
    let mut fold = false;
    let mut outer: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < t.len() {
        match t[i] {
            b'\\' => {
                // Assertions are wrapped so that a repetition of one (which
                // RE2 takes) is one for the `regex` crate too.
                let fixed = match t.get(i + 1) {
                    Some(b'b') => Some(r"(?:\b)"),
                    Some(b'B') => Some(r"(?:\B)"),
                    Some(b'A') => Some(r"(?:\A)"),
                    Some(b'z') => Some(r"(?:\z)"),
                    Some(b'C') => Some("(?s:.)"),
                    _ => None,
                };
                if let Some(f) = fixed {
                    out.push_str(f);
                    i += 2;
                } else if t.get(i + 1) == Some(&b'Q') {
                    i += 2;
                    while i < t.len() && !t[i..].starts_with(b"\\E") {
                        push_byte(&mut out, t[i]);
                        i += 1;
                    }
                    i = (i + 2).min(t.len());
                } else if let Some(ranges) = escape_class_bytes(t, &mut i, fold)? {
                    push_class(&mut out, &ranges);
                } else {
                    push_byte(&mut out, escaped_byte(t, &mut i)?);
                }
            }
            b'[' => push_class(&mut out, &class_bytes(t, &mut i, fold)?),
            b'(' if t.get(i + 1) == Some(&b'?') => {
                let rest = &t[i + 2..];
                let named = if rest.starts_with(b"P<") {
                    Some(i + 4)
                } else if rest.starts_with(b"<") {
                    Some(i + 3)
                } else {
                    None
                };
                if let Some(start) = named {
                    let end = start
                        + t[start..]
                            .iter()
                            .position(|&b| b == b'>')
                            .ok_or("invalid named capture group")?;
                    captures += 1;
                    names.push((pattern[start..end].into(), captures));
                    outer.push(fold);
                    out.push('(');
                    i = end + 1;
                    continue;
                }
                let len = rest
                    .iter()
                    .position(|&b| b == b':' || b == b')')
                    .ok_or("missing closing )")?;
                // RE2 takes repeated and cancelled flags (`(?ii)`,
                // `(?i-i)`); the `regex` crate wants each once.
                let (mut on, mut off) = (String::new(), String::new());
                let mut negated = false;
                for &c in &rest[..len] {
                    if c == b'-' {
                        negated = true;
                        continue;
                    }
                    let c = c as char;
                    on.retain(|x| x != c);
                    off.retain(|x| x != c);
                    let side = if negated { &mut off } else { &mut on };
                    side.push(c);
                }
                let new_fold = if on.contains('i') {
                    true
                } else {
                    fold && !off.contains('i')
                };
                let flags = if off.is_empty() {
                    on
                } else {
                    format!("{on}-{off}")
                };
                if rest[len] == b':' {
                    outer.push(fold);
                    out.push_str(&format!("(?{flags}:"));
                } else if !flags.is_empty() {
                    out.push_str(&format!("(?{flags})"));
                }
                fold = new_fold;
                i += 2 + len + 1;
            }
            b'(' => {
                captures += 1;
                outer.push(fold);
                out.push('(');
                i += 1;
            }
            b')' => {
                fold = outer.pop().unwrap_or(fold);
                out.push(')');
                i += 1;
            }
            b'{' => match counted(t, i) {
                Some((_, _, end)) => {
                    out.push_str(&pattern[i..end]);
                    i = end;
                }
                None => {
                    push_byte(&mut out, b'{');
                    i += 1;
                }
            },
            b'^' => {
                out.push_str("(?:^)");
                i += 1;
            }
            b'$' => {
                out.push_str("(?:$)");
                i += 1;
            }
            c @ (b'.' | b'|' | b'*' | b'+' | b'?') => {
                out.push(c as char);
                i += 1;
            }
            b => {
                push_byte(&mut out, b);
                i += 1;
            }
        }
    }
    Ok(Translation {
        pattern: out,
        names: names.into(),
    })
}
