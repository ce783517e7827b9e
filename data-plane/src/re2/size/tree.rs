//! The syntax tree RE2 builds from a pattern, with the rewrites it applies
//! while building it that change what gets compiled.

use super::classes::ByteSet;

/// The flags that can change inside a pattern. Envoy fixes every other RE2
/// option (Perl classes, `\b`, one-line `^`/`$` by default, Latin-1), so
/// they are not represented. RE2 compares whole flag words when it decides
/// whether two nodes merge, so these are compared as a whole too.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(super) struct Flags(u8);

impl Flags {
    /// `(?i)`.
    pub const FOLD: Flags = Flags(1);
    /// `(?s)`: `.` matches a newline.
    pub const DOT_NL: Flags = Flags(2);
    /// `(?m)`: `^` and `$` match at line boundaries.
    pub const MULTI_LINE: Flags = Flags(4);
    /// `(?U)`, flipped per operator by a trailing `?`.
    pub const LAZY: Flags = Flags(8);
    /// Marks an end-of-text assertion written `$` rather than `\z`: RE2
    /// keeps the two apart when it compares nodes.
    pub const WAS_DOLLAR: Flags = Flags(16);

    pub fn has(self, f: Flags) -> bool {
        self.0 & f.0 != 0
    }
    pub fn with(self, f: Flags) -> Flags {
        Flags(self.0 | f.0)
    }
    pub fn without(self, f: Flags) -> Flags {
        Flags(self.0 & !f.0)
    }
    pub fn toggled(self, f: Flags) -> Flags {
        Flags(self.0 ^ f.0)
    }
}

/// `*`, `+` or `?`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Quant {
    Star,
    Plus,
    Quest,
}

/// Zero-width assertions; each compiles to one instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Assert {
    BeginLine,
    EndLine,
    BeginText,
    EndText,
    WordBoundary,
    NotWordBoundary,
}

#[derive(Clone, Debug)]
pub(super) enum Node {
    NoMatch,
    Empty,
    Lit(u8),
    /// Two or more literal bytes in a row.
    Str(Vec<u8>),
    Concat(Vec<Re>),
    Alt(Vec<Re>),
    Quant(Quant, Box<Re>),
    /// `{min,max}`; `max` is `None` for `{min,}`.
    Repeat(Box<Re>, u32, Option<u32>),
    Capture(Box<Re>, u32),
    /// `(?s).`: any byte.
    AnyChar,
    /// `\C`.
    AnyByte,
    Assert(Assert),
    /// The flag says the class was just built by the parser: when it is
    /// pushed, a one-byte class becomes a literal and `[Aa]` a folded one.
    Class(ByteSet, bool),
    /// Parse-stack marker for `(`, with its capture index if it captures.
    Open(Option<u32>),
    /// Parse-stack marker for `|`.
    Bar,
}

#[derive(Clone, Debug)]
pub(super) struct Re {
    pub node: Node,
    pub flags: Flags,
}

impl Re {
    pub fn new(node: Node, flags: Flags) -> Re {
        Re { node, flags }
    }

    pub fn is_marker(&self) -> bool {
        matches!(self.node, Node::Open(_) | Node::Bar)
    }

    pub fn is_empty(&self) -> bool {
        matches!(self.node, Node::Empty)
    }

    pub fn is_literal(&self) -> bool {
        matches!(self.node, Node::Lit(_) | Node::Str(_))
    }

    /// A single-byte matcher: what repeats may be merged over.
    pub fn is_single_byte(&self) -> bool {
        matches!(
            self.node,
            Node::Lit(_) | Node::Class(..) | Node::AnyChar | Node::AnyByte
        )
    }

    pub fn quant(&self) -> Option<Quant> {
        match self.node {
            Node::Quant(q, _) => Some(q),
            _ => None,
        }
    }

    /// The operand of a `*`, `+`, `?` or `{n,m}`.
    pub fn repeated(&self) -> Option<&Re> {
        match &self.node {
            Node::Quant(_, s) | Node::Repeat(s, ..) => Some(s),
            _ => None,
        }
    }

    pub fn children(&self) -> &[Re] {
        match &self.node {
            Node::Concat(v) | Node::Alt(v) => v,
            Node::Quant(_, s) | Node::Repeat(s, ..) | Node::Capture(s, _) => {
                std::slice::from_ref(&**s)
            }
            _ => &[],
        }
    }

    /// Marks a class as finished: it no longer turns into a literal.
    pub fn finished(mut self) -> Re {
        if let Node::Class(_, open) = &mut self.node {
            *open = false;
        }
        self
    }
}

/// `sub*`, `sub+` or `sub?`. Stacked operators with the same flags
/// collapse the way RE2 collapses them: the same operator twice is one,
/// and any two different ones make a star.
pub(super) fn quantify(q: Quant, sub: Re, flags: Flags) -> Re {
    if let Some(inner) = sub.quant()
        && sub.flags == flags
    {
        if inner == q || inner == Quant::Star {
            return sub;
        }
        let Node::Quant(_, s) = sub.node else {
            unreachable!()
        };
        return Re::new(Node::Quant(Quant::Star, s), flags);
    }
    Re::new(Node::Quant(q, Box::new(sub)), flags)
}

/// A literal string node of the right shape for its length.
pub(super) fn literal_string(bytes: &[u8], flags: Flags) -> Re {
    match bytes {
        [] => Re::new(Node::Empty, flags),
        [b] => Re::new(Node::Lit(*b), flags),
        _ => Re::new(Node::Str(bytes.to_vec()), flags),
    }
}

/// A concatenation of `subs`, or the single one.
pub(super) fn concat(mut subs: Vec<Re>, flags: Flags) -> Re {
    match subs.len() {
        0 => Re::new(Node::Empty, flags),
        1 => subs.pop().unwrap(),
        _ => Re::new(Node::Concat(subs), flags),
    }
}

/// An alternation of `subs` (already factored), or the single one.
pub(super) fn alternate(mut subs: Vec<Re>, flags: Flags) -> Re {
    match subs.len() {
        0 => Re::new(Node::NoMatch, flags),
        1 => subs.pop().unwrap(),
        _ => Re::new(Node::Alt(subs), flags),
    }
}

/// Structural equality as RE2 decides it when factoring alternations and
/// merging repeats: flags count only where they change the meaning.
/// Only called on small subtrees (leading pieces of alternatives and
/// single-byte operands), so the recursion stays shallow.
pub(super) fn same(a: &Re, b: &Re) -> bool {
    let differ = |f| a.flags.has(f) != b.flags.has(f);
    let top = match (&a.node, &b.node) {
        (Node::NoMatch, Node::NoMatch)
        | (Node::Empty, Node::Empty)
        | (Node::AnyChar, Node::AnyChar)
        | (Node::AnyByte, Node::AnyByte) => true,
        (Node::Assert(x), Node::Assert(y)) => {
            x == y && (*x != Assert::EndText || !differ(Flags::WAS_DOLLAR))
        }
        (Node::Lit(x), Node::Lit(y)) => x == y && !differ(Flags::FOLD),
        (Node::Str(x), Node::Str(y)) => x == y && !differ(Flags::FOLD),
        (Node::Alt(x), Node::Alt(y)) | (Node::Concat(x), Node::Concat(y)) => x.len() == y.len(),
        (Node::Quant(x, _), Node::Quant(y, _)) => x == y && !differ(Flags::LAZY),
        (Node::Repeat(_, n1, m1), Node::Repeat(_, n2, m2)) => {
            n1 == n2 && m1 == m2 && !differ(Flags::LAZY)
        }
        (Node::Capture(_, x), Node::Capture(_, y)) => x == y,
        (Node::Class(x, _), Node::Class(y, _)) => x == y,
        _ => false,
    };
    top && a
        .children()
        .iter()
        .zip(b.children())
        .all(|(x, y)| same(x, y))
}
