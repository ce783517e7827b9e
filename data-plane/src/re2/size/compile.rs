//! Turning the simplified tree into RE2's instructions, allocated in the
//! order RE2 allocates them (children first, left to right): the later
//! flattening depends on that order.
//!
//! What each piece costs before flattening: a byte or a byte range is one
//! instruction; a class is one per range (its A-Z ranges are dropped when
//! the class folds case), joined by one alternative per extra range; a
//! capture is two; `*`, `+`, `?` and each `|` are one; an assertion is
//! one; a group is free. Leading `^` and trailing `$` are removed first,
//! and a pattern not anchored at the start gets a two-instruction `.*?`
//! loop in front of it.

use super::tree::{Assert, Flags, Node, Quant, Re, concat};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Op {
    Fail,
    Alt,
    /// An alternative RE2 recognises as "any byte forever, or match".
    AltMatch,
    ByteRange,
    Capture,
    EmptyWidth,
    Match,
    Nop,
}

/// One instruction, with only what the size depends on.
#[derive(Clone, Copy, Debug)]
pub(super) struct Inst {
    pub op: Op,
    pub out: u32,
    pub out1: u32,
    pub lo: u8,
    pub hi: u8,
}

impl Inst {
    fn new(op: Op) -> Inst {
        Inst {
            op,
            out: 0,
            out1: 0,
            lo: 0,
            hi: 0,
        }
    }
}

/// The instructions and the two entry points (0 for "cannot match").
pub(super) struct Program {
    pub inst: Vec<Inst>,
    pub start: u32,
    pub start_unanchored: u32,
}

/// Dangling exits of a fragment, threaded through the instructions' own
/// `out`/`out1` fields (`index << 1 | 1` names `out1`), as RE2 does.
#[derive(Clone, Copy, Default)]
struct Exits {
    head: u32,
    tail: u32,
}

impl Exits {
    fn one(slot: u32) -> Exits {
        Exits {
            head: slot,
            tail: slot,
        }
    }
}

/// A compiled piece: its entry (0 = matches nothing) and its exits.
#[derive(Clone, Copy, Default)]
struct Frag {
    begin: u32,
    exits: Exits,
    nullable: bool,
}

const NO_MATCH: Frag = Frag {
    begin: 0,
    exits: Exits { head: 0, tail: 0 },
    nullable: false,
};

struct Compiler {
    inst: Vec<Inst>,
    limit: usize,
    failed: bool,
    /// RE2 also gives up after visiting twice as many nodes as it may
    /// allocate instructions.
    visits_left: i64,
}

impl Compiler {
    fn alloc(&mut self, inst: Inst) -> Option<u32> {
        if self.failed || self.inst.len() >= self.limit {
            self.failed = true;
            return None;
        }
        self.inst.push(inst);
        Some(self.inst.len() as u32 - 1)
    }

    fn slot(&mut self, slot: u32) -> &mut u32 {
        let i = &mut self.inst[(slot >> 1) as usize];
        if slot & 1 == 1 {
            &mut i.out1
        } else {
            &mut i.out
        }
    }

    fn patch(&mut self, exits: Exits, to: u32) {
        let mut at = exits.head;
        while at != 0 {
            let s = self.slot(at);
            at = std::mem::replace(s, to);
        }
    }

    fn join(&mut self, a: Exits, b: Exits) -> Exits {
        if a.head == 0 {
            return b;
        }
        if b.head == 0 {
            return a;
        }
        *self.slot(a.tail) = b.head;
        Exits {
            head: a.head,
            tail: b.tail,
        }
    }

    fn cat(&mut self, a: Frag, b: Frag) -> Frag {
        if a.begin == 0 || b.begin == 0 {
            return NO_MATCH;
        }
        let first = self.inst[a.begin as usize];
        // A lone no-op in front is skipped rather than linked.
        if first.op == Op::Nop && a.exits.head == a.begin << 1 && first.out == 0 {
            self.patch(a.exits, b.begin);
            return b;
        }
        self.patch(a.exits, b.begin);
        Frag {
            begin: a.begin,
            exits: b.exits,
            nullable: a.nullable && b.nullable,
        }
    }

    fn alt(&mut self, a: Frag, b: Frag) -> Frag {
        if a.begin == 0 {
            return b;
        }
        if b.begin == 0 {
            return a;
        }
        let Some(id) = self.alloc(Inst {
            out: a.begin,
            out1: b.begin,
            ..Inst::new(Op::Alt)
        }) else {
            return NO_MATCH;
        };
        let exits = self.join(a.exits, b.exits);
        Frag {
            begin: id,
            exits,
            nullable: a.nullable || b.nullable,
        }
    }

    /// The alternative of a loop or option: preferring `a` unless lazy.
    fn choice(&mut self, a: &Frag, lazy: bool) -> Option<(u32, Exits)> {
        let (out, out1) = if lazy { (0, a.begin) } else { (a.begin, 0) };
        let id = self.alloc(Inst {
            out,
            out1,
            ..Inst::new(Op::Alt)
        })?;
        Some((id, Exits::one(id << 1 | u32::from(!lazy))))
    }

    fn plus(&mut self, a: Frag, lazy: bool) -> Frag {
        let Some((id, exits)) = self.choice(&a, lazy) else {
            return NO_MATCH;
        };
        self.patch(a.exits, id);
        Frag {
            begin: a.begin,
            exits,
            nullable: a.nullable,
        }
    }

    fn star(&mut self, a: Frag, lazy: bool) -> Frag {
        // A loop over something that can match empty is built as (a+)? to
        // keep the priorities right, which costs one more instruction.
        if a.nullable {
            let p = self.plus(a, lazy);
            return self.quest(p, lazy);
        }
        let Some((id, exits)) = self.choice(&a, lazy) else {
            return NO_MATCH;
        };
        self.patch(a.exits, id);
        Frag {
            begin: id,
            exits,
            nullable: true,
        }
    }

    fn quest(&mut self, a: Frag, lazy: bool) -> Frag {
        if a.begin == 0 {
            return self.nop();
        }
        let Some((id, exits)) = self.choice(&a, lazy) else {
            return NO_MATCH;
        };
        let exits = self.join(exits, a.exits);
        Frag {
            begin: id,
            exits,
            nullable: true,
        }
    }

    /// One instruction whose `out` is the fragment's only exit.
    fn single(&mut self, inst: Inst, nullable: bool) -> Frag {
        match self.alloc(inst) {
            Some(id) => Frag {
                begin: id,
                exits: Exits::one(id << 1),
                nullable,
            },
            None => NO_MATCH,
        }
    }

    fn byte_range(&mut self, lo: u8, hi: u8) -> Frag {
        self.single(
            Inst {
                lo,
                hi,
                ..Inst::new(Op::ByteRange)
            },
            false,
        )
    }

    fn nop(&mut self) -> Frag {
        self.single(Inst::new(Op::Nop), true)
    }

    fn capture(&mut self, a: Frag) -> Frag {
        if a.begin == 0 {
            return NO_MATCH;
        }
        let Some(open) = self.alloc(Inst {
            out: a.begin,
            ..Inst::new(Op::Capture)
        }) else {
            return NO_MATCH;
        };
        let Some(close) = self.alloc(Inst::new(Op::Capture)) else {
            return NO_MATCH;
        };
        self.patch(a.exits, close);
        Frag {
            begin: open,
            exits: Exits::one(close << 1),
            nullable: a.nullable,
        }
    }

    /// A class: one byte range per run, chained by alternatives. When the
    /// class treats A-Z like a-z, only the lower-case runs are kept (each
    /// then matches both cases).
    fn class(&mut self, ranges: &[(u8, u8)], folds_ascii: bool) -> Frag {
        let mut entry = 0;
        let mut exits = Exits::default();
        for &(lo, hi) in ranges {
            if folds_ascii && b'A' <= lo && hi <= b'Z' {
                continue;
            }
            let f = self.byte_range(lo, hi);
            exits = self.join(exits, f.exits);
            if entry == 0 {
                entry = f.begin;
                continue;
            }
            entry = self
                .alloc(Inst {
                    out: entry,
                    out1: f.begin,
                    ..Inst::new(Op::Alt)
                })
                .unwrap_or_default();
        }
        Frag {
            begin: entry,
            exits,
            nullable: false,
        }
    }

    fn walk(&mut self, re: &Re) -> Frag {
        self.visits_left -= 1;
        if self.visits_left < 0 {
            self.failed = true;
        }
        if self.failed {
            return NO_MATCH;
        }
        // A plain loop: iterator adapters would add stack frames per level.
        let mut kids = Vec::with_capacity(re.children().len());
        for c in re.children() {
            kids.push(self.walk(c));
        }
        if self.failed {
            return NO_MATCH;
        }
        let lazy = re.flags.has(Flags::LAZY);
        match &re.node {
            Node::NoMatch => NO_MATCH,
            Node::Empty => self.nop(),
            Node::Lit(b) => self.byte_range(*b, *b),
            Node::Str(s) => {
                let mut f = self.byte_range(s[0], s[0]);
                for &b in &s[1..] {
                    let g = self.byte_range(b, b);
                    f = self.cat(f, g);
                }
                f
            }
            Node::Concat(_) if kids.is_empty() => self.nop(),
            Node::Concat(_) => kids[1..].iter().fold(kids[0], |f, k| self.cat(f, *k)),
            Node::Alt(_) => kids[1..].iter().fold(kids[0], |f, k| self.alt(f, *k)),
            Node::Quant(Quant::Star, _) => self.star(kids[0], lazy),
            Node::Quant(Quant::Plus, _) => self.plus(kids[0], lazy),
            Node::Quant(Quant::Quest, _) => self.quest(kids[0], lazy),
            Node::Capture(..) => self.capture(kids[0]),
            Node::AnyChar | Node::AnyByte => self.byte_range(0, 0xFF),
            Node::Assert(_) => self.single(Inst::new(Op::EmptyWidth), true),
            Node::Class(set, _) => {
                let ranges: Vec<(u8, u8)> = set.ranges().collect();
                self.class(&ranges, set.folds_ascii())
            }
            // Simplification leaves no counted repeats; markers never
            // leave the parser.
            Node::Repeat(..) | Node::Open(_) | Node::Bar => {
                self.failed = true;
                NO_MATCH
            }
        }
    }
}

/// Removes a leading `\A`/`^` (looking at most four levels down through
/// concatenations and captures, as RE2 does): the program is then
/// anchored and needs no `.*?` loop.
fn take_anchor(re: &mut Re, depth: u32, at_end: bool) -> bool {
    if depth >= 4 {
        return false;
    }
    let end_or_begin = if at_end {
        Assert::EndText
    } else {
        Assert::BeginText
    };
    let flags = re.flags;
    match &mut re.node {
        Node::Concat(subs) if !subs.is_empty() => {
            let i = if at_end { subs.len() - 1 } else { 0 };
            if !take_anchor(&mut subs[i], depth + 1, at_end) {
                return false;
            }
            let subs = std::mem::take(subs);
            *re = concat(subs, flags);
            true
        }
        Node::Capture(s, _) => take_anchor(s, depth + 1, at_end),
        Node::Assert(a) if *a == end_or_begin => {
            re.node = Node::Empty;
            true
        }
        _ => false,
    }
}

/// Compiles `re` within `limit` instructions (`None` past it).
pub(super) fn compile(mut re: Re, limit: usize) -> Option<Program> {
    let mut c = Compiler {
        inst: vec![Inst::new(Op::Fail)],
        limit,
        failed: false,
        visits_left: 2 * limit as i64,
    };
    let anchored = take_anchor(&mut re, 0, false);
    // A trailing `$` only changes how RE2 runs the program, not its size.
    take_anchor(&mut re, 0, true);
    let body = c.walk(&re);
    if c.failed {
        return None;
    }
    let m = c.single(Inst::new(Op::Match), false);
    let m = Frag {
        exits: Exits::default(),
        ..m
    };
    let mut all = c.cat(body, m);
    let start = all.begin;
    if !anchored {
        let any = c.byte_range(0, 0xFF);
        let loop_ = c.star(any, true);
        all = c.cat(loop_, all);
    }
    if c.failed {
        return None;
    }
    let mut inst = c.inst;
    if start == 0 && all.begin == 0 {
        // Nothing can match: only the fail instruction is kept.
        inst.truncate(1);
    }
    Some(Program {
        inst,
        start,
        start_unanchored: all.begin,
    })
}
