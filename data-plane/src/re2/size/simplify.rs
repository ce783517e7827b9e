//! What RE2 does to the tree between parsing and compiling.
//!
//! * A pattern that starts with `^` and a literal keeps the literal out of
//!   the program (RE2 matches it separately, as a prefix to look for).
//! * Neighbouring repeats of the same single-byte piece merge (`a*a+` is
//!   `a{1,}`, `a+aab` is `a{3,}b`), which changes how they are expanded.
//! * Counted repeats are expanded into copies: `x{3}` is `xxx`, `x{2,}` is
//!   `xx+`, `x{1,3}` is `x(x(x)?)?`. This is where large programs come from.
//! * An empty class matches nothing.

use super::tree::{Assert, Flags, Node, Quant, Re, concat, literal_string, quantify, same};

/// What is compiled: without a leading `^literal`, when there is one.
pub(super) fn strip_required_prefix(re: Re) -> Re {
    let Node::Concat(subs) = &re.node else {
        return re;
    };
    let anchors = subs
        .iter()
        .take_while(|s| matches!(s.node, Node::Assert(Assert::BeginText)))
        .count();
    if anchors == 0 || anchors >= subs.len() || !subs[anchors].is_literal() {
        return re;
    }
    let flags = re.flags;
    let Node::Concat(mut subs) = re.node else {
        unreachable!()
    };
    concat(subs.split_off(anchors + 1), flags)
}

pub(super) fn simplify(re: Re) -> Re {
    expand(merge_repeats(re)).0
}

/// Whether `second` can be merged into the repeat `first`.
fn mergeable(first: &Re, second: &Re) -> bool {
    let Some(piece) = first.repeated() else {
        return false;
    };
    if !piece.is_single_byte() {
        return false;
    }
    if let Some(other) = second.repeated()
        && same(piece, other)
        && first.flags.has(Flags::LAZY) == second.flags.has(Flags::LAZY)
    {
        return true;
    }
    if same(piece, second) {
        return true;
    }
    // `a*` followed by a string starting with `a`.
    matches!((&piece.node, &second.node), (Node::Lit(b), Node::Str(s))
        if s[0] == *b && piece.flags.has(Flags::FOLD) == second.flags.has(Flags::FOLD))
}

/// `(min, max)` of a repeat node; `None` max is unbounded.
fn bounds(re: &Re) -> (u32, Option<u32>) {
    match &re.node {
        Node::Quant(Quant::Star, _) => (0, None),
        Node::Quant(Quant::Plus, _) => (1, None),
        Node::Quant(Quant::Quest, _) => (0, Some(1)),
        Node::Repeat(_, min, max) => (*min, *max),
        _ => unreachable!(),
    }
}

/// Merges `subs[i + 1]` into the repeat `subs[i]`. The merged repeat goes
/// in the second slot and the first becomes empty, so the next pair sees
/// it; if a string was only partly absorbed, its rest stays second.
fn merge_pair(subs: &mut [Re], i: usize) {
    let piece = subs[i].repeated().unwrap().clone();
    let (mut min, mut max) = bounds(&subs[i]);
    let add = |max: Option<u32>, n: Option<u32>| max.zip(n).map(|(a, b)| a + b);
    let mut rest = None;
    let second = &subs[i + 1];
    match &second.node {
        Node::Quant(..) | Node::Repeat(..) => {
            let (n, m) = bounds(second);
            min += n;
            max = add(max, m);
        }
        Node::Str(s) => {
            let Node::Lit(b) = piece.node else {
                unreachable!()
            };
            let n = s.iter().take_while(|&&c| c == b).count() as u32;
            min += n;
            max = max.map(|m| m + n);
            if (n as usize) < s.len() {
                rest = Some(literal_string(&s[n as usize..], second.flags));
            }
        }
        _ => {
            min += 1;
            max = max.map(|m| m + 1);
        }
    }
    let merged = Re::new(Node::Repeat(Box::new(piece), min, max), subs[i].flags);
    match rest {
        None => {
            subs[i] = Re::new(Node::Empty, Flags::default());
            subs[i + 1] = merged;
        }
        Some(r) => {
            subs[i] = merged;
            subs[i + 1] = r;
        }
    }
}

fn map_all(v: Vec<Re>, f: fn(Re) -> Re) -> Vec<Re> {
    // A plain loop: iterator adapters would add stack frames per level.
    let mut out = Vec::with_capacity(v.len());
    for s in v {
        out.push(f(s));
    }
    out
}

fn rebuild(re: Re, f: fn(Re) -> Re) -> Re {
    let flags = re.flags;
    let node = match re.node {
        Node::Concat(v) => Node::Concat(map_all(v, f)),
        Node::Alt(v) => Node::Alt(map_all(v, f)),
        Node::Quant(q, s) => Node::Quant(q, Box::new(f(*s))),
        Node::Repeat(s, min, max) => Node::Repeat(Box::new(f(*s)), min, max),
        Node::Capture(s, i) => Node::Capture(Box::new(f(*s)), i),
        node => node,
    };
    Re::new(node, flags)
}

fn merge_repeats(re: Re) -> Re {
    let re = rebuild(re, merge_repeats);
    let flags = re.flags;
    let Node::Concat(mut subs) = re.node else {
        return re;
    };
    if !subs.windows(2).any(|w| mergeable(&w[0], &w[1])) {
        return Re::new(Node::Concat(subs), flags);
    }
    for i in 0..subs.len() - 1 {
        if mergeable(&subs[i], &subs[i + 1]) {
            merge_pair(&mut subs, i);
        }
    }
    subs.retain(|s| !s.is_empty());
    Re::new(Node::Concat(subs), flags)
}

fn is_assertion(re: &Re) -> bool {
    matches!(re.node, Node::Assert(_))
}

/// `x{min,max}` as copies of `x`.
fn expand_repeat(x: Re, mut min: u32, mut max: Option<u32>, flags: Flags) -> Re {
    // Repeating an assertion cannot change what matches: at most once.
    let all_assertions = match &x.node {
        Node::Concat(v) | Node::Alt(v) => v.iter().all(is_assertion),
        _ => is_assertion(&x),
    };
    if all_assertions {
        min = min.min(1);
        max = max.map(|m| m.min(1));
    }
    let Some(max) = max else {
        return match min {
            0 => quantify(Quant::Star, x, flags),
            1 => quantify(Quant::Plus, x, flags),
            _ => {
                let mut subs = vec![x.clone(); min as usize - 1];
                subs.push(quantify(Quant::Plus, x, flags));
                concat(subs, flags)
            }
        };
    };
    match (min, max) {
        (0, 0) => return Re::new(Node::Empty, flags),
        (1, 1) => return x,
        _ => {}
    }
    let prefix = (min > 0).then(|| concat(vec![x.clone(); min as usize], flags));
    if max == min {
        return prefix.unwrap_or(Re::new(Node::NoMatch, flags));
    }
    // The optional copies nest: x(x(x)?)?, built from the inside out.
    let mut optional = quantify(Quant::Quest, x.clone(), flags);
    for _ in min + 1..max {
        let inner = Re::new(Node::Concat(vec![x.clone(), optional]), flags);
        optional = quantify(Quant::Quest, inner, flags);
    }
    match prefix {
        None => optional,
        Some(p) => Re::new(Node::Concat(vec![p, optional]), flags),
    }
}

/// Returns the simplified node and whether anything changed below or at
/// it: a `*`/`+`/`?` RE2 leaves untouched is not re-collapsed with an
/// identical operator inside it, one it rebuilt is.
fn expand(re: Re) -> (Re, bool) {
    let flags = re.flags;
    match re.node {
        Node::Concat(v) => {
            let (v, changed) = expand_all(v);
            (Re::new(Node::Concat(v), flags), changed)
        }
        Node::Alt(v) => {
            let (v, changed) = expand_all(v);
            (Re::new(Node::Alt(v), flags), changed)
        }
        Node::Capture(s, i) => {
            let (s, changed) = expand(*s);
            (Re::new(Node::Capture(Box::new(s), i), flags), changed)
        }
        Node::Quant(q, s) => {
            let (s, changed) = expand(*s);
            if s.is_empty() {
                return (s, true);
            }
            if !changed {
                return (Re::new(Node::Quant(q, Box::new(s)), flags), false);
            }
            if s.quant() == Some(q) && s.flags == flags {
                return (s, true);
            }
            (Re::new(Node::Quant(q, Box::new(s)), flags), true)
        }
        Node::Repeat(s, min, max) => {
            let (s, _) = expand(*s);
            if s.is_empty() {
                return (s, true);
            }
            (expand_repeat(s, min, max, flags), true)
        }
        Node::Class(set, _) if set.is_empty() => (Re::new(Node::NoMatch, flags), true),
        node => (Re::new(node, flags), false),
    }
}

fn expand_all(v: Vec<Re>) -> (Vec<Re>, bool) {
    let mut changed = false;
    let mut out = Vec::with_capacity(v.len());
    for s in v {
        let (s, c) = expand(s);
        changed |= c;
        out.push(s);
    }
    (out, changed)
}
