//! RE2 semantics on top of the `regex` crate.
//!
//! Envoy compiles every `safe_regex` with Google RE2. The `regex` crate
//! shares RE2's design (no backtracking, leftmost-first, same flag set), but
//! differs in a few places that change what matches; patterns are rewritten
//! into an equivalent `regex` pattern so that they match what RE2 matches:
//!
//! * `\d \w \s \b` are ASCII-only in RE2 (Unicode in `regex`): rewritten to
//!   explicit ASCII classes and `(?-u:\b)`. RE2's `\s` is `[\t\n\f\r ]`.
//! * Inside a class, RE2 treats `[` (not starting `[:name:]`), `&` and `~`
//!   as literals; `regex` uses them for nesting and set operations.
//! * A `{` that does not start a valid repetition is a literal in RE2.
//! * An escaped punctuation character is always a literal in RE2 (`\<` is
//!   `<`, not a word-start assertion).
//! * `\Q...\E` quoting and octal escapes (`\0`, `\012`) are RE2-only.
//! * RE2 rejects what `regex` would accept: look-around, `(?x)` and other
//!   flags than `imsU`, `\C`, repetition counts above 1000.
//!
//! Not reproduced: RE2's program-size limit. Envoy refuses a regex whose
//! compiled RE2 program is larger than the runtime value
//! `re2.max_program_size.error_level` (100 unless the bootstrap raises it);
//! the size of an RE2 program cannot be computed without RE2, so such
//! regexes compile here.
//!
//! Matching is a full match (`RE2::FullMatch`), as everywhere Envoy uses a
//! `RegexMatcher` to match; rewriting is `RE2::GlobalReplace`, with RE2's
//! rewrite-string syntax (`\0`..`\9`, `\\`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

type Memo<R> = RefCell<Option<HashMap<String, Result<R, String>>>>;

thread_local! {
    /// Compiled regexes by pattern while a compile runs: the translator
    /// repeats the same routes in every virtual host, and compiling each
    /// pattern once keeps large configurations fast.
    static CACHE: Memo<(regex::bytes::Regex, Arc<[u8]>)> = const { RefCell::new(None) };
    static REWRITE_CACHE: Memo<regex::Regex> = const { RefCell::new(None) };
}

/// Runs `f` with regex compilation memoised; the memo is dropped after.
pub(crate) fn with_cache<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CACHE.with(|c| *c.borrow_mut() = None);
            REWRITE_CACHE.with(|c| *c.borrow_mut() = None);
        }
    }
    CACHE.with(|c| *c.borrow_mut() = Some(HashMap::new()));
    REWRITE_CACHE.with(|c| *c.borrow_mut() = Some(HashMap::new()));
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

/// A compiled RE2 pattern that matches a whole input (`RE2::FullMatch`).
#[derive(Clone)]
pub struct Re2 {
    pattern: Arc<str>,
    full: regex::bytes::Regex,
    prefix: Arc<[u8]>,
}

/// The longest literal every match of `translated` starts with: the common
/// prefix of a finite prefix-literal set (sound: a match cannot start any
/// other way), or nothing when the set is infinite.
fn literal_prefix(translated: &str) -> Arc<[u8]> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let Ok(hir) = regex_syntax::ParserBuilder::new()
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
        if pattern.is_empty() {
            return Err("regex must not be empty".into());
        }
        let (full, prefix) = memo(&CACHE, pattern, || {
            let t = translate(pattern).map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
            let full = regex::bytes::RegexBuilder::new(&format!(r"\A(?:{t})\z"))
                .build()
                .map_err(|e| format!("invalid regex {pattern:?}: {}", last_line(&e.to_string())))?;
            Ok((full, literal_prefix(&t)))
        })?;
        Ok(Re2 {
            pattern: pattern.into(),
            full,
            prefix,
        })
    }

    /// Bytes every match starts with (possibly none), for route indexing.
    pub fn literal_prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Whether the whole input matches.
    pub fn full_match(&self, input: &[u8]) -> bool {
        self.full.is_match(input)
    }

    /// A named group of a whole-input match (request-validator's path
    /// parameters, as Kong's URI captures).
    pub fn named_group<'a>(&self, input: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.full.captures(input)?.name(name).map(|m| m.as_bytes())
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

/// Whether `pattern` is a regex RE2 accepts, without compiling it (cheap:
/// for validating many patterns at once). What [`Re2::new`] and
/// [`RegexRewrite::new`] accept passes; so does a pattern only their
/// compile refuses (one whose compiled size exceeds the `regex` crate's
/// limits).
pub fn check_syntax(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("regex must not be empty".into());
    }
    let t = translate(pattern)?;
    regex_syntax::Parser::new()
        .parse(&t)
        .map(drop)
        .map_err(|e| last_line(&e.to_string()))
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
    re: regex::Regex,
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
        if pattern.is_empty() {
            return Err("regex must not be empty".into());
        }
        super::check_header_value(substitution.as_bytes(), "substitution")?;
        let re = memo(&REWRITE_CACHE, pattern, || {
            let t = translate(pattern).map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
            regex::RegexBuilder::new(&t)
                .build()
                .map_err(|e| format!("invalid regex {pattern:?}: {}", last_line(&e.to_string())))
        })?;
        let (segs, max_group) = parse_rewrite(substitution);
        let applies = max_group < re.captures_len();
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

    /// Replaces every non-overlapping match, leftmost first; an empty match
    /// right after the previous match is skipped (as RE2 does). Borrowed
    /// when nothing matched.
    pub fn replace_all<'a>(&self, input: &'a str) -> Cow<'a, str> {
        if !self.applies {
            return Cow::Borrowed(input);
        }
        let mut out = String::new();
        let mut last = 0;
        let mut count = 0;
        for caps in self.re.captures_iter(input) {
            let Some(m) = caps.get(0) else { continue };
            out.push_str(&input[last..m.start()]);
            for seg in &self.segs {
                match seg {
                    Seg::Lit(l) => out.push_str(l),
                    Seg::Group(n) => {
                        if let Some(g) = caps.get(*n) {
                            out.push_str(g.as_str());
                        }
                    }
                    Seg::Stop => break,
                }
            }
            last = m.end();
            count += 1;
        }
        if count == 0 {
            return Cow::Borrowed(input);
        }
        out.push_str(&input[last..]);
        Cow::Owned(out)
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

const POSIX: [&str; 14] = [
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

/// Rewrites an RE2 pattern into a `regex`-crate pattern with the same
/// meaning, or says why RE2 would reject it.
pub(crate) fn translate(p: &str) -> Result<String, String> {
    let c: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len() + 16);
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '\\' => {
                i += 1;
                escape(&c, &mut i, false, &mut out)?;
                continue;
            }
            '[' => {
                i += 1;
                class(&c, &mut i, &mut out)?;
                continue;
            }
            '(' if c.get(i + 1) == Some(&'?') => {
                i += 2;
                group_flags(&c, &mut i, &mut out)?;
                continue;
            }
            '{' => {
                if let Some((text, n, m)) = repetition(&c, i) {
                    if n > 1000 || m.is_some_and(|m| m > 1000 || m < n) {
                        return Err(format!("bad repetition operator: {text}"));
                    }
                    out.push_str(&text);
                    i += text.chars().count();
                } else {
                    out.push_str(r"\{");
                    i += 1;
                }
                continue;
            }
            '}' => out.push_str(r"\}"),
            ch => out.push(ch),
        }
        i += 1;
    }
    Ok(out)
}

/// `{n}`, `{n,}` or `{n,m}` at `c[i]`: its text and bounds.
fn repetition(c: &[char], i: usize) -> Option<(String, u64, Option<u64>)> {
    let mut j = i + 1;
    let digits = |j: &mut usize| -> Option<u64> {
        let start = *j;
        while *j < c.len() && c[*j].is_ascii_digit() {
            *j += 1;
        }
        if *j == start {
            return None;
        }
        let s: String = c[start..*j].iter().collect();
        Some(s.parse::<u64>().unwrap_or(u64::MAX))
    };
    let n = digits(&mut j)?;
    let m = if c.get(j) == Some(&',') {
        j += 1;
        if c.get(j) == Some(&'}') {
            None
        } else {
            Some(digits(&mut j)?)
        }
    } else {
        Some(n)
    };
    if c.get(j) != Some(&'}') {
        return None;
    }
    let text: String = c[i..=j].iter().collect();
    // `{n}` has m == n; `{n,}` has none.
    Some((text, n, m))
}

/// After `(?`: named groups and flag groups RE2 accepts.
fn group_flags(c: &[char], i: &mut usize, out: &mut String) -> Result<(), String> {
    let rest: String = c[*i..].iter().take(3).collect();
    if rest.starts_with("P<")
        || (rest.starts_with('<') && !rest.starts_with("<=") && !rest.starts_with("<!"))
    {
        let skip = if rest.starts_with("P<") { 2 } else { 1 };
        let start = *i + skip;
        let mut j = start;
        while j < c.len() && c[j] != '>' {
            if !(c[j].is_alphanumeric() || c[j] == '_') {
                return Err("invalid named capture group".into());
            }
            j += 1;
        }
        if j >= c.len() || j == start {
            return Err("invalid named capture group".into());
        }
        out.push_str("(?P<");
        out.extend(&c[start..j]);
        out.push('>');
        *i = j + 1;
        return Ok(());
    }
    let mut j = *i;
    let mut flags = String::new();
    let mut neg = false;
    let mut any = false;
    while j < c.len() {
        match c[j] {
            ':' | ')' => {
                if (neg && flags.ends_with('-')) || (!any && c[j] == ')') {
                    return Err("missing or invalid flags".into());
                }
                out.push_str("(?");
                out.push_str(&flags);
                out.push(c[j]);
                *i = j + 1;
                return Ok(());
            }
            '-' if !neg => {
                neg = true;
                flags.push('-');
            }
            f @ ('i' | 'm' | 's' | 'U') => {
                any = true;
                flags.push(f);
            }
            _ => return Err("invalid or unsupported Perl syntax".into()),
        }
        j += 1;
    }
    Err("missing closing )".into())
}

/// A bracketed class, after its `[`.
fn class(c: &[char], i: &mut usize, out: &mut String) -> Result<(), String> {
    out.push('[');
    if c.get(*i) == Some(&'^') {
        out.push('^');
        *i += 1;
    }
    // A leading `]` is a literal.
    if c.get(*i) == Some(&']') {
        out.push_str(r"\]");
        *i += 1;
    }
    while *i < c.len() {
        match c[*i] {
            ']' => {
                out.push(']');
                *i += 1;
                return Ok(());
            }
            '\\' => {
                *i += 1;
                escape(c, i, true, out)?;
            }
            '[' if c.get(*i + 1) == Some(&':') => {
                let rest: String = c[*i + 2..].iter().collect();
                let Some(end) = rest.find(":]") else {
                    out.push_str(r"\[");
                    *i += 1;
                    continue;
                };
                let name = &rest[..end];
                let bare = name.strip_prefix('^').unwrap_or(name);
                if !POSIX.contains(&bare) {
                    return Err(format!("invalid character class range: [:{name}:]"));
                }
                out.push_str("[:");
                out.push_str(name);
                out.push_str(":]");
                *i += 2 + name.chars().count() + 2;
            }
            '[' => {
                out.push_str(r"\[");
                *i += 1;
            }
            '&' => {
                out.push_str(r"\x{26}");
                *i += 1;
            }
            '~' => {
                out.push_str(r"\x{7E}");
                *i += 1;
            }
            ch => {
                out.push(ch);
                *i += 1;
            }
        }
    }
    Err("missing closing ]".into())
}

/// An escape, after its backslash.
fn escape(c: &[char], i: &mut usize, in_class: bool, out: &mut String) -> Result<(), String> {
    let Some(&e) = c.get(*i) else {
        return Err(r"trailing \".into());
    };
    *i += 1;
    let cls = |out: &mut String, body: &str, neg: bool| {
        if in_class && !neg {
            out.push_str(body);
        } else {
            out.push('[');
            if neg {
                out.push('^');
            }
            out.push_str(body);
            out.push(']');
        }
    };
    match e {
        'd' => cls(out, "0-9", false),
        'D' => cls(out, "0-9", true),
        'w' => cls(out, "0-9A-Za-z_", false),
        'W' => cls(out, "0-9A-Za-z_", true),
        's' => cls(out, r"\t\n\f\r ", false),
        'S' => cls(out, r"\t\n\f\r ", true),
        'b' | 'B' | 'A' | 'z' if in_class => return Err(format!(r"invalid escape sequence: \{e}")),
        'b' => out.push_str(r"(?-u:\b)"),
        'B' => out.push_str(r"(?-u:\B)"),
        'A' => out.push_str(r"\A"),
        'z' => out.push_str(r"\z"),
        'a' | 'f' | 't' | 'n' | 'r' | 'v' => {
            out.push('\\');
            out.push(e);
        }
        'p' | 'P' => {
            out.push('\\');
            out.push(e);
            match c.get(*i) {
                Some('{') => {
                    let end = c[*i..]
                        .iter()
                        .position(|x| *x == '}')
                        .ok_or("invalid character class range")?;
                    out.extend(&c[*i..=*i + end]);
                    *i += end + 1;
                }
                Some(&x) if x.is_ascii_alphabetic() => {
                    out.push(x);
                    *i += 1;
                }
                _ => return Err("invalid character class range".into()),
            }
        }
        'x' => {
            out.push_str(r"\x");
            match c.get(*i) {
                Some('{') => {
                    let end = c[*i..]
                        .iter()
                        .position(|x| *x == '}')
                        .ok_or("invalid escape sequence")?;
                    out.extend(&c[*i..=*i + end]);
                    *i += end + 1;
                }
                _ => {
                    let h: String = c[*i..].iter().take(2).collect();
                    if h.len() != 2 || !h.chars().all(|x| x.is_ascii_hexdigit()) {
                        return Err(r"invalid escape sequence: \x".into());
                    }
                    out.push_str(&h);
                    *i += 2;
                }
            }
        }
        'Q' if !in_class => {
            // Literal text up to \E (or the end).
            while *i < c.len() {
                if c[*i] == '\\' && c.get(*i + 1) == Some(&'E') {
                    *i += 2;
                    return Ok(());
                }
                push_literal(out, c[*i]);
                *i += 1;
            }
        }
        'E' if !in_class => {}
        '0'..='7' => {
            // RE2: \1-\7 alone would be a backreference (unsupported); with
            // more octal digits, or starting with 0, it is an octal escape.
            let mut v = e as u32 - '0' as u32;
            let mut digits = 1;
            while digits < 3 && c.get(*i).is_some_and(|x| ('0'..='7').contains(x)) {
                v = v * 8 + (c[*i] as u32 - '0' as u32);
                *i += 1;
                digits += 1;
            }
            if e != '0' && digits == 1 {
                return Err(format!(r"invalid escape sequence: \{e}"));
            }
            out.push_str(&format!(r"\x{{{v:X}}}"));
        }
        ch if ch.is_ascii() && !ch.is_ascii_alphanumeric() => {
            out.push_str(&format!(r"\x{{{:X}}}", ch as u32));
        }
        ch => return Err(format!(r"invalid escape sequence: \{ch}")),
    }
    Ok(())
}

fn push_literal(out: &mut String, ch: char) {
    if ch.is_ascii() && !ch.is_ascii_alphanumeric() && ch != ' ' {
        out.push_str(&format!(r"\x{{{:X}}}", ch as u32));
    } else {
        out.push(ch);
    }
}
