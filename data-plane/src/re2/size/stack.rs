//! RE2's parse stack. RE2 does not build the tree from a grammar: it
//! pushes each piece and rewrites the top of the stack as it goes, and
//! those rewrites decide what is compiled. Literals merge into strings
//! only when a following piece is pushed; `**`-like operator stacks
//! collapse; one-byte classes become literals; at `|` and `)` the pieces
//! are collapsed into concatenations and factored alternations.

use super::Re2Error;
use super::classes::ByteSet;
use super::factor::factor;
use super::parse::{MISSING_PAREN, REPEAT_ARGUMENT, REPEAT_SIZE, UNEXPECTED_PAREN, error};
use super::tree::{Assert, Flags, Node, Quant, Re, alternate, concat};

/// RE2 refuses counts above 1000, and nested counts whose product is.
pub(super) const MAX_REPEAT: u32 = 1000;

pub(super) struct ParseStack<'a> {
    pub flags: Flags,
    items: Vec<Re>,
    captures: u32,
    /// The whole pattern: RE2 quotes it in paren errors.
    pattern: &'a [u8],
}

impl<'a> ParseStack<'a> {
    pub fn new(pattern: &'a [u8]) -> Self {
        ParseStack {
            flags: Flags::default(),
            items: Vec::new(),
            captures: 0,
            pattern,
        }
    }

    /// Pushes a finished piece. Pending literals merge first; a class of
    /// one byte becomes that literal, and `[Aa]` a case-folded `a`.
    pub fn push(&mut self, mut re: Re) {
        self.merge_literals(None);
        if let Node::Class(set, true) = &re.node {
            let first = set.ranges().next().map(|r| r.0);
            match (set.len(), first) {
                (1, Some(b)) => re = Re::new(Node::Lit(b), self.flags),
                (2, Some(b @ b'A'..=b'Z')) if set.contains(b + 32) => {
                    re = Re::new(Node::Lit(b + 32), self.flags.with(Flags::FOLD));
                }
                _ => {}
            }
        }
        self.items.push(re);
    }

    fn push_here(&mut self, node: Node) {
        let f = self.flags;
        self.push(Re::new(node, f));
    }

    /// If the two top pieces are literals with the same case folding,
    /// appends the top one to the one below. With `next`, the freed top
    /// slot takes that literal (and true is returned); otherwise it goes.
    fn merge_literals(&mut self, next: Option<u8>) -> bool {
        let n = self.items.len();
        if n < 2 {
            return false;
        }
        let (below, top) = self.items.split_at_mut(n - 1);
        let (lower, upper) = (&mut below[n - 2], &mut top[0]);
        if !lower.is_literal()
            || !upper.is_literal()
            || lower.flags.has(Flags::FOLD) != upper.flags.has(Flags::FOLD)
        {
            return false;
        }
        if let Node::Lit(b) = lower.node {
            lower.node = Node::Str(vec![b]);
        }
        let Node::Str(s) = &mut lower.node else {
            unreachable!()
        };
        match &upper.node {
            Node::Lit(b) => s.push(*b),
            Node::Str(t) => s.extend_from_slice(t),
            _ => unreachable!(),
        }
        if let Some(b) = next {
            *upper = Re::new(Node::Lit(b), self.flags);
            return true;
        }
        self.items.pop();
        false
    }

    pub fn literal(&mut self, b: u8) {
        if self.flags.has(Flags::FOLD) && b.is_ascii_alphabetic() {
            let mut set = ByteSet::default();
            set.add_folding(b, b, true);
            let f = self.flags.without(Flags::FOLD);
            self.push(Re::new(Node::Class(set, true), f));
            return;
        }
        if !self.merge_literals(Some(b)) {
            self.push_here(Node::Lit(b));
        }
    }

    pub fn simple(&mut self, node: Node) {
        self.push_here(node);
    }

    /// A class built by the parser (never case-folding itself: folding
    /// was applied while building it).
    pub fn class(&mut self, set: ByteSet) {
        let f = self.flags.without(Flags::FOLD);
        self.push(Re::new(Node::Class(set, true), f));
    }

    pub fn dollar(&mut self) {
        if self.flags.has(Flags::MULTI_LINE) {
            self.push_here(Node::Assert(Assert::EndLine));
        } else {
            let f = self.flags.with(Flags::WAS_DOLLAR);
            self.push(Re::new(Node::Assert(Assert::EndText), f));
        }
    }

    /// `.` is `[^\n]` unless `(?s)`.
    pub fn dot(&mut self) {
        if self.flags.has(Flags::DOT_NL) {
            self.push_here(Node::AnyChar);
            return;
        }
        let mut set = ByteSet::default();
        set.add(0, b'\n' - 1);
        set.add(b'\n' + 1, 0xFF);
        self.class(set);
    }

    fn has_operand(&self) -> bool {
        self.items.last().is_some_and(|t| !t.is_marker())
    }

    /// `*`, `+`, `?` (with `lazy` for a trailing `?`). Applied directly
    /// to the top piece: no literal merging happens first, which is why
    /// `ab*` repeats only the `b`.
    pub fn quantify(&mut self, q: Quant, text: &[u8], lazy: bool) -> Result<(), Re2Error> {
        if !self.has_operand() {
            return Err(error(REPEAT_ARGUMENT, text));
        }
        let flags = if lazy {
            self.flags.toggled(Flags::LAZY)
        } else {
            self.flags
        };
        let top = self.items.last_mut().unwrap();
        if let Some(inner) = top.quant()
            && top.flags == flags
        {
            if inner != q {
                // Two different operators in a row mean a star.
                let old = std::mem::replace(&mut top.node, Node::Empty);
                let Node::Quant(_, s) = old else {
                    unreachable!()
                };
                top.node = Node::Quant(Quant::Star, s);
            }
            return Ok(());
        }
        let sub = self.items.pop().unwrap().finished();
        self.items
            .push(Re::new(Node::Quant(q, Box::new(sub)), flags));
        Ok(())
    }

    /// `{min,max}` (max `None` for `{min,}`).
    pub fn repeat(
        &mut self,
        min: u32,
        max: Option<u32>,
        text: &[u8],
        lazy: bool,
    ) -> Result<(), Re2Error> {
        if max.is_some_and(|m| m < min) || min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT) {
            return Err(error(REPEAT_SIZE, text));
        }
        if !self.has_operand() {
            return Err(error(REPEAT_ARGUMENT, text));
        }
        let flags = if lazy {
            self.flags.toggled(Flags::LAZY)
        } else {
            self.flags
        };
        let sub = self.items.pop().unwrap().finished();
        let re = Re::new(Node::Repeat(Box::new(sub), min, max), flags);
        if (min >= 2 || max.is_some_and(|m| m >= 2)) && copies_budget(&re, MAX_REPEAT) == 0 {
            return Err(error(REPEAT_SIZE, text));
        }
        self.items.push(re);
        Ok(())
    }

    /// `(`, capturing or not. The marker keeps the flags in force before
    /// the group, restored at its `)`.
    pub fn open(&mut self, capturing: bool) {
        let index = capturing.then(|| {
            self.captures += 1;
            self.captures
        });
        self.push_here(Node::Open(index));
    }

    /// `|`: the pieces since the last marker become one concatenation,
    /// which goes below the bar (pushing a bar if there is none yet).
    pub fn bar(&mut self) {
        self.merge_literals(None);
        self.concatenate();
        let n = self.items.len();
        if n >= 2 && matches!(self.items[n - 2].node, Node::Bar) {
            if n >= 3 {
                // A dot-all alternative swallows single-byte ones on the
                // other side of the bar.
                let single =
                    |r: &Re| matches!(r.node, Node::Lit(_) | Node::Class(..) | Node::AnyChar);
                let (below, top) = (&self.items[n - 3], &self.items[n - 1]);
                if matches!(below.node, Node::AnyChar) && single(top) {
                    self.items.pop();
                    return;
                }
                if matches!(top.node, Node::AnyChar) && single(below) {
                    self.items.swap(n - 3, n - 1);
                    self.items.pop();
                    return;
                }
            }
            self.items.swap(n - 1, n - 2);
            return;
        }
        self.push_here(Node::Bar);
    }

    pub fn close(&mut self) -> Result<(), Re2Error> {
        self.alternation();
        let n = self.items.len();
        if n < 2 || !matches!(self.items[n - 2].node, Node::Open(_)) {
            return Err(error(UNEXPECTED_PAREN, self.pattern));
        }
        let inner = self.items.pop().unwrap();
        let open = self.items.pop().unwrap();
        self.flags = open.flags;
        let re = match open.node {
            Node::Open(Some(index)) => {
                Re::new(Node::Capture(Box::new(inner.finished()), index), open.flags)
            }
            _ => inner,
        };
        self.push(re);
        Ok(())
    }

    pub fn finish(mut self) -> Result<Re, Re2Error> {
        self.alternation();
        if self.items.len() != 1 {
            return Err(error(MISSING_PAREN, self.pattern));
        }
        Ok(self.items.pop().unwrap().finished())
    }

    fn concatenate(&mut self) {
        if !self.has_operand() {
            self.push_here(Node::Empty);
        }
        self.collapse(false);
    }

    fn alternation(&mut self) {
        self.bar();
        self.items.pop(); // the bar
        self.collapse(true);
    }

    /// Replaces the pieces above the last marker with their concatenation
    /// or (factored) alternation, splicing in nested ones of the same kind.
    fn collapse(&mut self, alt: bool) {
        let start = self
            .items
            .iter()
            .rposition(Re::is_marker)
            .map_or(0, |i| i + 1);
        if self.items.len() - start == 1 {
            return;
        }
        let mut subs = Vec::new();
        for it in self.items.drain(start..) {
            match it.node {
                Node::Alt(v) if alt => subs.extend(v),
                Node::Concat(v) if !alt => subs.extend(v),
                node => subs.push(Re::new(node, it.flags).finished()),
            }
        }
        let re = if alt {
            let subs = if subs.len() > 1 {
                factor(subs, self.flags)
            } else {
                subs
            };
            alternate(subs, self.flags)
        } else {
            concat(subs, self.flags)
        };
        self.items.push(re);
    }
}

/// How many more copies nested counted repetitions allow: RE2 divides its
/// budget of 1000 by each count on the way down and refuses at zero.
fn copies_budget(re: &Re, budget: u32) -> u32 {
    let mut budget = budget;
    if let Node::Repeat(_, min, max) = re.node {
        budget = budget.checked_div(max.unwrap_or(min)).unwrap_or(budget);
    }
    let mut low = budget;
    for c in re.children() {
        low = low.min(copies_budget(c, budget));
    }
    low
}
