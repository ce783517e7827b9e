//! Reading a pattern the way RE2 reads it in Latin-1 mode: every byte is
//! one character, so a UTF-8 `é` is the two characters `Ã©`, escapes stop
//! at `\xFF`, and the error messages quote those characters.

use super::Re2Error;
use super::classes::{ByteSet, is_capture_name, perl_class, posix_class, unicode_class};
use super::stack::ParseStack;
use super::tree::{Assert, Flags, Node, Quant, Re};

pub(super) const BAD_ESCAPE: &str = "invalid escape sequence";
pub(super) const BAD_CLASS_RANGE: &str = "invalid character class range";
pub(super) const MISSING_BRACKET: &str = "missing ]";
pub(super) const MISSING_PAREN: &str = "missing )";
pub(super) const UNEXPECTED_PAREN: &str = "unexpected )";
pub(super) const TRAILING_BACKSLASH: &str = "trailing \\";
pub(super) const REPEAT_ARGUMENT: &str = "no argument for repetition operator";
pub(super) const REPEAT_SIZE: &str = "invalid repetition size";
pub(super) const REPEAT_OP: &str = "bad repetition operator";
pub(super) const BAD_PERL_OP: &str = "invalid perl operator";
pub(super) const BAD_UTF8: &str = "invalid UTF-8";
pub(super) const BAD_NAMED_CAPTURE: &str = "invalid named capture group";

/// RE2's message: what is wrong, then the offending text (as Latin-1
/// characters, which is how RE2 sees and quotes them).
pub(super) fn error(what: &str, text: &[u8]) -> Re2Error {
    if text.is_empty() {
        return Re2Error::Syntax(what.to_string());
    }
    let quoted: String = text.iter().map(|&b| b as char).collect();
    Re2Error::Syntax(format!("{what}: {quoted}"))
}

pub(super) fn parse(pattern: &[u8]) -> Result<Re, Re2Error> {
    let t = pattern;
    let mut st = ParseStack::new(pattern);
    let mut pos = 0;
    // Where the previous repetition operator began: RE2 refuses `a**`.
    let mut last_repeat: Option<usize> = None;
    while pos < t.len() {
        let mut this_repeat = None;
        match t[pos] {
            b'(' if t.get(pos + 1) == Some(&b'?') => group(&mut st, t, &mut pos)?,
            b'(' => {
                st.open(true);
                pos += 1;
            }
            b'|' => {
                st.bar();
                pos += 1;
            }
            b')' => {
                st.close()?;
                pos += 1;
            }
            b'^' => {
                let a = if st.flags.has(Flags::MULTI_LINE) {
                    Assert::BeginLine
                } else {
                    Assert::BeginText
                };
                st.simple(Node::Assert(a));
                pos += 1;
            }
            b'$' => {
                st.dollar();
                pos += 1;
            }
            b'.' => {
                st.dot();
                pos += 1;
            }
            b'[' => {
                let set = class(st.flags, t, &mut pos)?;
                st.class(set);
            }
            c @ (b'*' | b'+' | b'?') => {
                let q = match c {
                    b'*' => Quant::Star,
                    b'+' => Quant::Plus,
                    _ => Quant::Quest,
                };
                let start = pos;
                pos += 1;
                let lazy = t.get(pos) == Some(&b'?');
                if lazy {
                    pos += 1;
                }
                if let Some(prev) = last_repeat {
                    return Err(error(REPEAT_OP, &t[prev..pos]));
                }
                st.quantify(q, &t[start..pos], lazy)?;
                this_repeat = Some(start);
            }
            b'{' => match counted(t, pos) {
                None => {
                    st.literal(b'{');
                    pos += 1;
                }
                Some((min, max, end)) => {
                    let start = pos;
                    pos = end;
                    let lazy = t.get(pos) == Some(&b'?');
                    if lazy {
                        pos += 1;
                    }
                    if let Some(prev) = last_repeat {
                        return Err(error(REPEAT_OP, &t[prev..pos]));
                    }
                    st.repeat(min, max, &t[start..pos], lazy)?;
                    this_repeat = Some(start);
                }
            },
            b'\\' => backslash(&mut st, t, &mut pos)?,
            b => {
                st.literal(b);
                pos += 1;
            }
        }
        last_repeat = this_repeat;
    }
    st.finish()
}

/// A backslash outside a class.
fn backslash(st: &mut ParseStack, t: &[u8], pos: &mut usize) -> Result<(), Re2Error> {
    let next = t.get(*pos + 1).copied();
    let simple = match next {
        Some(b'b') => Some(Node::Assert(Assert::WordBoundary)),
        Some(b'B') => Some(Node::Assert(Assert::NotWordBoundary)),
        Some(b'A') => Some(Node::Assert(Assert::BeginText)),
        Some(b'z') => Some(Node::Assert(Assert::EndText)),
        Some(b'C') => Some(Node::AnyByte),
        _ => None,
    };
    if let Some(node) = simple {
        st.simple(node);
        *pos += 2;
        return Ok(());
    }
    match next {
        Some(b'Q') => {
            // Literal text up to `\E` or the end.
            *pos += 2;
            while *pos < t.len() {
                if t[*pos] == b'\\' && t.get(*pos + 1) == Some(&b'E') {
                    *pos += 2;
                    break;
                }
                st.literal(t[*pos]);
                *pos += 1;
            }
        }
        Some(b'p' | b'P') => {
            let mut set = ByteSet::default();
            unicode_group(st.flags, t, pos, &mut set)?;
            st.class(set);
        }
        Some(c) if perl_class(c).is_some() => {
            let (group, negated) = perl_class(c).unwrap();
            let mut set = ByteSet::default();
            set.add_named(&group, negated, st.flags.has(Flags::FOLD));
            st.class(set);
            *pos += 2;
        }
        _ => {
            let b = escape(t, pos)?;
            st.literal(b);
        }
    }
    Ok(())
}

fn is_octal(b: Option<&u8>) -> bool {
    matches!(b, Some(b'0'..=b'7'))
}

fn hex(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

/// An escaped character (at a backslash); anything above `\xFF` is
/// invalid in Latin-1.
fn escape(t: &[u8], pos: &mut usize) -> Result<u8, Re2Error> {
    let begin = *pos;
    if *pos + 1 >= t.len() {
        return Err(error(TRAILING_BACKSLASH, &[]));
    }
    let c = t[*pos + 1];
    *pos += 2;
    let bad = |end: usize| error(BAD_ESCAPE, &t[begin..end.min(t.len())]);
    match c {
        b'0'..=b'7' => {
            // `\1`-`\7` alone would be a backreference, which RE2 lacks.
            if c != b'0' && !is_octal(t.get(*pos)) {
                return Err(bad(*pos));
            }
            let mut code = (c - b'0') as u32;
            for _ in 0..2 {
                if !is_octal(t.get(*pos)) {
                    break;
                }
                code = code * 8 + (t[*pos] - b'0') as u32;
                *pos += 1;
            }
            u8::try_from(code).map_err(|_| bad(*pos))
        }
        b'x' => {
            let Some(&c) = t.get(*pos) else {
                return Err(bad(*pos));
            };
            *pos += 1;
            if c == b'{' {
                // Any number of hex digits in braces, at least one.
                let Some(&first) = t.get(*pos) else {
                    // RE2 fails reading past the end before it can
                    // quote anything.
                    return Err(error(BAD_UTF8, &[]));
                };
                *pos += 1;
                let (mut c, mut digits, mut code) = (first, 0, 0u32);
                while let Some(d) = hex(c) {
                    digits += 1;
                    code = code * 16 + d;
                    if code > 0xFF {
                        return Err(bad(*pos));
                    }
                    let Some(&n) = t.get(*pos) else {
                        return Err(bad(*pos));
                    };
                    c = n;
                    *pos += 1;
                }
                if c != b'}' || digits == 0 {
                    return Err(bad(*pos));
                }
                return Ok(code as u8);
            }
            let Some(&c1) = t.get(*pos) else {
                return Err(bad(*pos));
            };
            *pos += 1;
            match (hex(c), hex(c1)) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ => Err(bad(*pos)),
            }
        }
        b'n' => Ok(b'\n'),
        b'r' => Ok(b'\r'),
        b't' => Ok(b'\t'),
        b'a' => Ok(0x07),
        b'f' => Ok(0x0C),
        b'v' => Ok(0x0B),
        // Escaped punctuation is always itself; letters, digits and
        // non-ASCII characters are not escapes RE2 knows.
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(c),
        _ => Err(bad(*pos)),
    }
}

/// `\pN`, `\p{Name}`, `\PN`, `\p{^Name}` (at the backslash), added to `set`.
fn unicode_group(
    flags: Flags,
    t: &[u8],
    pos: &mut usize,
    set: &mut ByteSet,
) -> Result<(), Re2Error> {
    let start = *pos;
    let mut negated = t[*pos + 1] == b'P';
    *pos += 2;
    let name = match t.get(*pos) {
        // RE2 reads nothing here and ends up quoting just `\p`.
        None => return Err(error(BAD_CLASS_RANGE, &t[start..])),
        Some(b'{') => {
            let Some(len) = t[*pos..].iter().position(|&b| b == b'}') else {
                return Err(error(BAD_CLASS_RANGE, &t[start..]));
            };
            let name = &t[*pos + 1..*pos + len];
            *pos += len + 1;
            name
        }
        Some(_) => {
            *pos += 1;
            &t[*pos - 1..*pos]
        }
    };
    let name = match name.strip_prefix(b"^") {
        Some(n) => {
            negated = !negated;
            n
        }
        None => name,
    };
    let Some(group) = unicode_class(name) else {
        return Err(error(BAD_CLASS_RANGE, &t[start..*pos]));
    };
    set.add_named(&group, negated, flags.has(Flags::FOLD));
    Ok(())
}

/// A bracketed class (at its `[`).
fn class(flags: Flags, t: &[u8], pos: &mut usize) -> Result<ByteSet, Re2Error> {
    let whole = *pos;
    let fold = flags.has(Flags::FOLD);
    let mut set = ByteSet::default();
    *pos += 1;
    let negated = t.get(*pos) == Some(&b'^');
    if negated {
        *pos += 1;
    }
    let mut first = true;
    while *pos < t.len() && (t[*pos] != b']' || first) {
        first = false;
        let rest = &t[*pos..];
        // `[:name:]`: RE2 looks for the closing `:]` anywhere after it.
        if rest.len() > 2
            && rest.starts_with(b"[:")
            && let Some(end) = rest[2..].windows(2).position(|w| w == b":]")
        {
            let name = &rest[2..2 + end];
            let Some((group, negated)) = posix_class(name) else {
                return Err(error(BAD_CLASS_RANGE, &rest[..end + 4]));
            };
            set.add_named(&group, negated, fold);
            *pos += end + 4;
            continue;
        }
        if rest.len() > 2 && rest[0] == b'\\' && matches!(rest[1], b'p' | b'P') {
            unicode_group(flags, t, pos, &mut set)?;
            continue;
        }
        if rest.len() >= 2
            && rest[0] == b'\\'
            && let Some((group, negated)) = perl_class(rest[1])
        {
            set.add_named(&group, negated, fold);
            *pos += 2;
            continue;
        }
        let range_start = *pos;
        let lo = class_char(t, pos, whole)?;
        let mut hi = lo;
        // `a-]` is `a` and `-`.
        if t.len() - *pos >= 2 && t[*pos] == b'-' && t[*pos + 1] != b']' {
            *pos += 1;
            hi = class_char(t, pos, whole)?;
            if hi < lo {
                return Err(error(BAD_CLASS_RANGE, &t[range_start..*pos]));
            }
        }
        set.add_folding(lo, hi, fold);
    }
    if *pos >= t.len() {
        return Err(error(MISSING_BRACKET, &t[whole..]));
    }
    *pos += 1;
    Ok(if negated { set.negated() } else { set })
}

fn class_char(t: &[u8], pos: &mut usize, whole: usize) -> Result<u8, Re2Error> {
    match t.get(*pos) {
        None => Err(error(MISSING_BRACKET, &t[whole..])),
        Some(b'\\') => escape(t, pos),
        Some(&b) => {
            *pos += 1;
            Ok(b)
        }
    }
}

/// `{n}`, `{n,}` or `{n,m}` at `pos`: the bounds and where it ends. RE2
/// reads anything else (or a number of ten digits) as a literal `{`.
pub(crate) fn counted(t: &[u8], pos: usize) -> Option<(u32, Option<u32>, usize)> {
    let mut p = pos + 1;
    let min = number(t, &mut p)?;
    let max = match t.get(p)? {
        b',' => {
            p += 1;
            if *t.get(p)? == b'}' {
                None
            } else {
                Some(number(t, &mut p)?)
            }
        }
        _ => Some(min),
    };
    (t.get(p) == Some(&b'}')).then_some((min, max, p + 1))
}

/// A decimal number without leading zeros.
fn number(t: &[u8], p: &mut usize) -> Option<u32> {
    if !t.get(*p)?.is_ascii_digit()
        || (t[*p] == b'0' && t.get(*p + 1).is_some_and(u8::is_ascii_digit))
    {
        return None;
    }
    let mut n: u32 = 0;
    while let Some(&d) = t.get(*p).filter(|d| d.is_ascii_digit()) {
        if n >= 100_000_000 {
            return None;
        }
        n = n * 10 + (d - b'0') as u32;
        *p += 1;
    }
    Some(n)
}

/// `(?` at `pos`: a named group, a flag change, or a flag group.
fn group(st: &mut ParseStack, t: &[u8], pos: &mut usize) -> Result<(), Re2Error> {
    let s = &t[*pos..];
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    // Look-around: RE2 names the operator in its refusal.
    if (s.len() > 3 && matches!(at(2), b'=' | b'!'))
        || (s.len() > 4 && at(2) == b'<' && matches!(at(3), b'=' | b'!'))
    {
        let n = if at(2) == b'<' { 4 } else { 3 };
        return Err(error(BAD_PERL_OP, &s[..n]));
    }
    if (s.len() > 4 && at(2) == b'P' && at(3) == b'<') || (s.len() > 3 && at(2) == b'<') {
        let begin = if at(2) == b'P' { 4 } else { 3 };
        let Some(end) = s[begin..]
            .iter()
            .position(|&b| b == b'>')
            .map(|e| begin + e)
        else {
            return Err(error(BAD_NAMED_CAPTURE, s));
        };
        if !is_capture_name(&s[begin..end]) {
            return Err(error(BAD_NAMED_CAPTURE, &s[..end + 1]));
        }
        st.open(true);
        *pos += end + 1;
        return Ok(());
    }
    let mut flags = st.flags;
    let mut negated = false;
    let mut saw_flag = false;
    let mut i = 2;
    loop {
        let Some(&c) = s.get(i) else {
            return Err(error(BAD_PERL_OP, &s[..i]));
        };
        i += 1;
        let flag = match c {
            b'i' => Flags::FOLD,
            b'm' => Flags::MULTI_LINE,
            b's' => Flags::DOT_NL,
            b'U' => Flags::LAZY,
            b'-' if !negated => {
                negated = true;
                saw_flag = false;
                continue;
            }
            b':' => {
                // The group remembers the flags from before it.
                st.open(false);
                break;
            }
            b')' => break,
            _ => return Err(error(BAD_PERL_OP, &s[..i])),
        };
        saw_flag = true;
        flags = if negated {
            flags.without(flag)
        } else {
            flags.with(flag)
        };
    }
    if negated && !saw_flag {
        return Err(error(BAD_PERL_OP, &s[..i]));
    }
    st.flags = flags;
    *pos += i;
    Ok(())
}

/// For the matcher's translation, which must match what RE2 matches: the
/// bytes of the bracketed class at `pos`, read as RE2 reads it.
pub(crate) fn class_bytes(t: &[u8], pos: &mut usize, fold: bool) -> Result<Vec<(u8, u8)>, String> {
    let flags = if fold { Flags::FOLD } else { Flags::default() };
    let set = class(flags, t, pos).map_err(|e| e.to_string())?;
    Ok(set.ranges().collect())
}

/// For the matcher's translation: at a backslash, the bytes of a class
/// escape (`\d`, `\W`, `\pL`, `\P{Greek}`, ...), or `None` for any other.
pub(crate) fn escape_class_bytes(
    t: &[u8],
    pos: &mut usize,
    fold: bool,
) -> Result<Option<Vec<(u8, u8)>>, String> {
    let mut set = ByteSet::default();
    match t.get(*pos + 1) {
        Some(b'p' | b'P') => {
            let flags = if fold { Flags::FOLD } else { Flags::default() };
            unicode_group(flags, t, pos, &mut set).map_err(|e| e.to_string())?;
        }
        Some(&c) => {
            let Some((group, negated)) = perl_class(c) else {
                return Ok(None);
            };
            set.add_named(&group, negated, fold);
            *pos += 2;
        }
        None => return Ok(None),
    }
    Ok(Some(set.ranges().collect()))
}

/// For the matcher's translation: the byte an escape at `pos` stands for.
pub(crate) fn escaped_byte(t: &[u8], pos: &mut usize) -> Result<u8, String> {
    escape(t, pos).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(p: &str) -> String {
        match parse(p.as_bytes()) {
            Err(Re2Error::Syntax(m)) => m,
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn messages_quote_latin1_characters() {
        assert_eq!(err("("), "missing ): (");
        assert_eq!(err("a)"), "unexpected ): a)");
        assert_eq!(err(r"\x{100}"), r"invalid escape sequence: \x{100");
        assert_eq!(err("a**"), "bad repetition operator: **");
        assert_eq!(err("(?=a)"), "invalid perl operator: (?=");
        assert_eq!(err("(?P<é>x)"), "invalid named capture group: (?P<Ã©>");
        assert_eq!(err(r"\é"), "invalid escape sequence: \\Ã");
        assert_eq!(err("a{1001}"), "invalid repetition size: {1001}");
        assert_eq!(err("[a"), "missing ]: [a");
    }
}
