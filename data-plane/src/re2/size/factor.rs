//! Alternation factoring: RE2 rewrites `abc|abd` as `ab(?:c|d)` before
//! compiling, so shared prefixes are compiled once. Three passes run over
//! the alternatives in order, each acting on runs of neighbours:
//!
//! 1. a common leading literal string is taken out;
//! 2. a common leading piece is taken out when it is simple enough to be
//!    safe to share (an assertion, a class, a fixed repeat of one byte);
//! 3. runs of single literals and classes become one class.
//!
//! After passes 1 and 2 the remaining suffixes of each run are factored in
//! turn, so the result can nest.

use super::classes::ByteSet;
use super::tree::{Flags, Node, Re, alternate, concat, literal_string, same};

/// A run of alternatives `start..start + len` sharing `prefix`.
struct Run {
    prefix: Re,
    start: usize,
    len: usize,
}

pub(super) fn factor(subs: Vec<Re>, flags: Flags) -> Vec<Re> {
    let mut subs = subs;
    for pass in 1..=3 {
        let runs = match pass {
            1 => literal_prefix_runs(&mut subs),
            2 => leading_piece_runs(&mut subs),
            _ => byte_runs(&subs, flags),
        };
        if !runs.is_empty() {
            subs = splice(subs, runs, pass == 3, flags);
        }
    }
    subs
}

/// Replaces each run by its prefix followed by the alternation of the
/// (factored) rest of its members, or, when `merged`, by the prefix alone.
/// Plain loops: this recurses, and iterator adapters would add frames.
fn splice(subs: Vec<Re>, runs: Vec<Run>, merged: bool, flags: Flags) -> Vec<Re> {
    let mut out = Vec::with_capacity(subs.len());
    let mut subs = subs.into_iter();
    let mut next = 0;
    for run in runs {
        while next < run.start {
            out.push(subs.next().unwrap());
            next += 1;
        }
        let mut members = Vec::with_capacity(run.len);
        for _ in 0..run.len {
            members.push(subs.next().unwrap());
        }
        next += run.len;
        if merged {
            out.push(run.prefix);
        } else {
            let suffixes = alternate(factor(members, flags), flags);
            out.push(concat(vec![run.prefix, suffixes], flags));
        }
    }
    out.extend(subs);
    out
}

/// The literal an alternative starts with (through leading
/// concatenations), and whether it folds case.
fn leading_literal(re: &Re) -> (&[u8], bool) {
    let mut re = re;
    while let Node::Concat(v) = &re.node {
        match v.first() {
            Some(first) => re = first,
            None => break,
        }
    }
    let fold = re.flags.has(Flags::FOLD);
    match &re.node {
        Node::Lit(b) => (std::slice::from_ref(b), fold),
        Node::Str(s) => (s, fold),
        _ => (&[], fold),
    }
}

/// Drops the first `n` bytes of the leading literal. Emptied leading
/// pieces are removed from the enclosing concatenations, but RE2 only
/// tidies the four outermost ones.
fn drop_leading_literal(re: &mut Re, n: usize, depth: usize) {
    if let Node::Concat(subs) = &mut re.node {
        drop_leading_literal(&mut subs[0], n, depth + 1);
        if depth < 4 && subs[0].is_empty() {
            match subs.len() {
                0 | 1 => re.node = Node::Empty,
                2 => *re = subs.pop().unwrap(),
                _ => {
                    subs.remove(0);
                }
            }
        }
        return;
    }
    match &mut re.node {
        Node::Lit(_) => re.node = Node::Empty,
        Node::Str(s) if n >= s.len() => re.node = Node::Empty,
        Node::Str(s) if n == s.len() - 1 => re.node = Node::Lit(s[s.len() - 1]),
        Node::Str(s) => {
            s.drain(..n);
        }
        _ => {}
    }
}

/// Pass 1: runs of alternatives starting with the same literal bytes
/// (with the same case folding); the prefix is the longest one they share.
fn literal_prefix_runs(subs: &mut [Re]) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut prefix: Vec<u8> = Vec::new();
    let mut fold = false;
    for i in 0..=subs.len() {
        let mut next: (Vec<u8>, bool) = (Vec::new(), false);
        if i < subs.len() {
            let (lit, f) = leading_literal(&subs[i]);
            if f == fold {
                let shared = prefix.iter().zip(lit).take_while(|(a, b)| a == b).count();
                if shared > 0 {
                    prefix.truncate(shared);
                    continue;
                }
            }
            next = (lit.to_vec(), f);
        }
        if i >= start + 2 {
            let n = prefix.len();
            for s in &mut subs[start..i] {
                drop_leading_literal(s, n, 0);
            }
            runs.push(Run {
                prefix: literal_string(&prefix, if fold { Flags::FOLD } else { Flags::default() }),
                start,
                len: i - start,
            });
        }
        if i < subs.len() {
            start = i;
            (prefix, fold) = next;
        }
    }
    runs
}

/// The first piece of an alternative: itself, or the first element of a
/// concatenation (none for an empty one).
fn leading_piece(re: &Re) -> Option<&Re> {
    match &re.node {
        Node::Empty => None,
        Node::Concat(v) if v.len() >= 2 => (!v[0].is_empty()).then(|| &v[0]),
        _ => Some(re),
    }
}

fn without_leading_piece(re: Re) -> Re {
    match re.node {
        Node::Empty => re,
        Node::Concat(mut v) if v.len() >= 2 => {
            if v[0].is_empty() {
                return Re::new(Node::Concat(v), re.flags);
            }
            v.remove(0);
            if v.len() == 1 {
                return v.pop().unwrap();
            }
            Re::new(Node::Concat(v), re.flags)
        }
        _ => Re::new(Node::Empty, re.flags),
    }
}

/// Sharing a leading piece is only safe when it cannot match in more than
/// one way: an assertion, a class, or a fixed count of a single byte.
fn shareable(first: &Re) -> bool {
    match &first.node {
        Node::Assert(_) | Node::Class(..) | Node::AnyChar | Node::AnyByte => true,
        Node::Repeat(s, min, max) => Some(*min) == *max && s.is_single_byte(),
        _ => false,
    }
}

/// Pass 2: runs of alternatives starting with the same shareable piece.
fn leading_piece_runs(subs: &mut [Re]) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut first: Option<Re> = None;
    for i in 0..=subs.len() {
        let mut next = None;
        if i < subs.len() {
            next = leading_piece(&subs[i]).cloned();
            if let (Some(f), Some(n)) = (&first, &next)
                && shareable(f)
                && same(f, n)
            {
                continue;
            }
        }
        if i >= start + 2 {
            for s in &mut subs[start..i] {
                let taken = std::mem::replace(s, Re::new(Node::NoMatch, Flags::default()));
                *s = without_leading_piece(taken);
            }
            runs.push(Run {
                prefix: first.clone().unwrap(),
                start,
                len: i - start,
            });
        }
        if i < subs.len() {
            start = i;
            first = next;
        }
    }
    runs
}

/// Pass 3: runs of literals and classes merged into one class.
fn byte_runs(subs: &[Re], flags: Flags) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut start = 0;
    let byteish = |re: &Re| matches!(re.node, Node::Lit(_) | Node::Class(..));
    for i in 0..=subs.len() {
        if i < subs.len() && i > start && byteish(&subs[start]) && byteish(&subs[i]) {
            continue;
        }
        if i >= start + 2 {
            let mut set = ByteSet::default();
            for re in &subs[start..i] {
                match &re.node {
                    Node::Class(s, _) => set.union(s),
                    Node::Lit(b) => set.add_folding(*b, *b, re.flags.has(Flags::FOLD)),
                    _ => unreachable!(),
                }
            }
            runs.push(Run {
                prefix: Re::new(Node::Class(set, false), flags.without(Flags::FOLD)),
                start,
                len: i - start,
            });
        }
        if i < subs.len() {
            start = i;
        }
    }
    runs
}
