//! The request path as Envoy's connection manager rewrites it before
//! routing and forwarding, with `normalize_path` and `merge_slashes`
//! (the translator sets both, for Kong's path handling: a route's policies
//! must not be walked around with `/pub/../adm`, `%2e%2e` or `//`).
//!
//! Every rule below was measured on Envoy 1.40 (the corpus in
//! data-plane/tests/fixtures/envoy_path_normalization.tsv is asserted by
//! tests/path_normalization.rs):
//!
//! - The query, after the first `?`, is left as it is.
//! - A segment (split on raw `/` only) that begins with `..;` or `.;`
//!   becomes `..` or `.`: the rest up to the next `/` goes.
//! - `%XX` of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded;
//!   any other escape is kept exactly, hex case included; `%00` is refused.
//!   A literal `%` that would start an escape once what follows it is
//!   decoded becomes `%25`.
//! - `" < > ^ ` { | }` are escaped (upper-case hex); `\` becomes `/`.
//! - `.` segments go, `..` takes the segment before it (an empty one too),
//!   never above the root; a trailing one leaves a trailing slash.
//! - Then, with `merge_slashes`, a path with `//` becomes its non-empty
//!   segments joined by `/`, keeping a leading and a trailing slash (so a
//!   path of slashes only becomes `//`).

use std::borrow::Cow;

/// The connection manager's path settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathRules {
    pub normalize: bool,
    pub merge_slashes: bool,
}

impl PathRules {
    pub fn any(self) -> bool {
        self.normalize || self.merge_slashes
    }
}

/// A path Envoy refuses to normalise (`path_normalization_failed`: 400).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

/// `pq` (path and query) as Envoy routes and forwards it.
pub fn apply(pq: &str, rules: PathRules) -> Result<Cow<'_, str>, Refused> {
    let (path, query) = match pq.find('?') {
        Some(i) => (&pq[..i], &pq[i..]),
        None => (pq, ""),
    };
    let mut out: Cow<'_, str> = Cow::Borrowed(path);
    if rules.normalize && needs_normalizing(path) {
        let n = normalize(path)?;
        if n != path {
            out = Cow::Owned(n);
        }
    }
    if rules.merge_slashes && out.contains("//") {
        out = Cow::Owned(merge_slashes(&out));
    }
    Ok(match out {
        Cow::Borrowed(_) => Cow::Borrowed(pq),
        Cow::Owned(mut p) => {
            p.push_str(query);
            Cow::Owned(p)
        }
    })
}

/// Whether anything in `path` could change: most paths need no work.
fn needs_normalizing(path: &str) -> bool {
    path.bytes().any(|b| {
        matches!(
            b,
            b'%' | b'.' | b'\\' | b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
    })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn normalize(path: &str) -> Result<String, Refused> {
    // `..;x` and `.;x` segments, on raw `/` boundaries, before decoding.
    let mut trimmed = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            trimmed.push('/');
        }
        if seg.starts_with("..;") {
            trimmed.push_str("..");
        } else if seg.starts_with(".;") {
            trimmed.push('.');
        } else {
            trimmed.push_str(seg);
        }
    }
    // Escapes, characters to escape, backslashes. Literal `%`s are noted:
    // one that would start an escape in the result is escaped itself.
    let b = trimmed.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len() + 8);
    let mut literal_percents: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    let v = h * 16 + l;
                    if v == 0 {
                        return Err(Refused);
                    }
                    if is_unreserved(v) {
                        out.push(v);
                    } else {
                        out.extend_from_slice(&b[i..i + 3]);
                    }
                    i += 3;
                    continue;
                }
                _ => {
                    literal_percents.push(out.len());
                    out.push(b'%');
                }
            },
            b'\\' => out.push(b'/'),
            b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}' => {
                out.extend_from_slice(format!("%{c:02X}").as_bytes());
            }
            _ => out.push(c),
        }
        i += 1;
    }
    for &p in literal_percents.iter().rev() {
        let forms_escape = matches!(
            (
                out.get(p + 1).copied().and_then(hex),
                out.get(p + 2).copied().and_then(hex)
            ),
            (Some(_), Some(_))
        );
        if forms_escape {
            out.splice(p + 1..p + 1, *b"25");
        }
    }
    let decoded = String::from_utf8(out).map_err(|_| Refused)?;
    Ok(remove_dot_segments(&decoded))
}

/// RFC 3986's dot-segment removal as Envoy does it: an empty segment is
/// a segment `..` can take; nothing goes above the root.
fn remove_dot_segments(path: &str) -> String {
    let absolute = path.starts_with('/');
    let body = path.strip_prefix('/').unwrap_or(path);
    let mut segs: Vec<&str> = Vec::new();
    let parts: Vec<&str> = body.split('/').collect();
    let n = parts.len();
    let mut trailing = false;
    for (i, s) in parts.into_iter().enumerate() {
        let last = i + 1 == n;
        match s {
            "." => trailing = last,
            ".." => {
                segs.pop();
                trailing = last;
            }
            s => {
                segs.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    if absolute {
        out.push('/');
    }
    out.push_str(&segs.join("/"));
    // A dot segment at the end leaves its slash (`/a/.` is `/a/`), after
    // an empty segment too (`//.` is `//`).
    if trailing && !segs.is_empty() {
        out.push('/');
    }
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    if path.starts_with('/') {
        out.push('/');
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    out.push_str(&segs.join("/"));
    if path.ends_with('/') {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: PathRules = PathRules {
        normalize: true,
        merge_slashes: true,
    };

    #[test]
    fn attacks_on_a_prefix_route_are_resolved() {
        for (input, want) in [
            ("/pub/../adm/secret", "/adm/secret"),
            ("/pub/%2e%2e/adm/secret", "/adm/secret"),
            ("/pub/%2E%2E/adm/secret", "/adm/secret"),
            ("/pub//../adm/secret", "/pub/adm/secret"),
            ("/pub/..;/adm", "/adm"),
            ("/%61dm", "/adm"),
            ("/pub\\..\\adm", "/adm"),
            ("//adm", "/adm"),
            ("/pub/..%2fadm/secret", "/pub/..%2fadm/secret"),
            ("/a?x=/../y", "/a?x=/../y"),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/a{b", "/a%7Bb"),
            ("/a%%41b", "/a%25Ab"),
            ("///", "//"),
        ] {
            assert_eq!(apply(input, BOTH).unwrap(), want, "{input}");
        }
        assert_eq!(apply("/a%00b", BOTH), Err(Refused));
        assert!(matches!(
            apply("/api/v1.0/users?id=3", BOTH),
            Ok(Cow::Borrowed(_))
        ));
    }
}
