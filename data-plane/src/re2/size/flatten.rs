//! The size RE2 reports is that of its program after "flattening", which
//! is why it cannot be summed piece by piece.
//!
//! Flattening removes the alternatives: the program becomes one list per
//! "root", holding every instruction that consumes a byte, captures,
//! asserts or matches and that the root reaches through alternatives
//! alone. The roots are the fail instruction, the two entry points, every
//! instruction that follows a consuming/capturing/asserting one, and any
//! instruction that can be reached from more than one root's alternatives
//! (a "dominator" root, typical of loops over optional pieces). A list
//! that reaches another root holds one extra instruction (a jump) instead
//! of that root's instructions. So a piece costs once per list it appears
//! in, and optional pieces in a row make lists overlap.
//!
//! Before that, RE2 skips no-op instructions and marks "any byte forever,
//! then match" loops, which cost one extra instruction in their list.

use super::compile::{Inst, Op, Program};

/// A set of instruction indices that remembers insertion order.
struct OrderedSet {
    order: Vec<u32>,
    member: Vec<bool>,
}

impl OrderedSet {
    fn new(n: usize) -> Self {
        OrderedSet {
            order: Vec::new(),
            member: vec![false; n],
        }
    }
    fn clear(&mut self) {
        for &i in &self.order {
            self.member[i as usize] = false;
        }
        self.order.clear();
    }
    fn contains(&self, i: u32) -> bool {
        self.member[i as usize]
    }
    /// Inserts `i`; false if it was there.
    fn insert(&mut self, i: u32) -> bool {
        if self.member[i as usize] {
            return false;
        }
        self.member[i as usize] = true;
        self.order.push(i);
        true
    }
}

pub(super) fn size(mut p: Program) -> usize {
    skip_nops(&mut p.inst, p.start);
    mark_match_loops(&mut p.inst, p.start);
    flattened_len(&p.inst, p.start, p.start_unanchored)
}

fn past_nops(inst: &[Inst], mut j: u32) -> u32 {
    while j != 0 && inst[j as usize].op == Op::Nop {
        j = inst[j as usize].out;
    }
    j
}

/// Points every exit past no-ops, for what the anchored entry reaches.
fn skip_nops(inst: &mut [Inst], start: u32) {
    let mut seen = OrderedSet::new(inst.len());
    if start != 0 {
        seen.insert(start);
    }
    let mut k = 0;
    while k < seen.order.len() {
        let id = seen.order[k] as usize;
        k += 1;
        let out = past_nops(inst, inst[id].out);
        inst[id].out = out;
        if out != 0 {
            seen.insert(out);
        }
        if inst[id].op == Op::Alt {
            let out1 = past_nops(inst, inst[id].out1);
            inst[id].out1 = out1;
            if out1 != 0 {
                seen.insert(out1);
            }
        }
    }
}

fn leads_to_match(inst: &[Inst], mut id: u32) -> bool {
    loop {
        let i = &inst[id as usize];
        match i.op {
            Op::Capture | Op::Nop => id = i.out,
            Op::Match => return true,
            _ => return false,
        }
    }
}

/// Marks alternatives between "any byte, back here" and a match.
fn mark_match_loops(inst: &mut [Inst], start: u32) {
    let mut seen = OrderedSet::new(inst.len());
    if start != 0 {
        seen.insert(start);
    }
    let mut k = 0;
    while k < seen.order.len() {
        let id = seen.order[k];
        k += 1;
        let i = inst[id as usize];
        if i.out != 0 {
            seen.insert(i.out);
        }
        if i.op != Op::Alt {
            continue;
        }
        if i.out1 != 0 {
            seen.insert(i.out1);
        }
        let any_byte_back = |j: u32| {
            let j = &inst[j as usize];
            j.op == Op::ByteRange && j.out == id && j.lo == 0 && j.hi == 0xFF
        };
        if (any_byte_back(i.out) && leads_to_match(inst, i.out1))
            || (leads_to_match(inst, i.out) && any_byte_back(i.out1))
        {
            inst[id as usize].op = Op::AltMatch;
        }
    }
}

/// Instructions in insertion order, each with whether it is a root.
struct Roots {
    order: Vec<u32>,
    is_root: Vec<bool>,
}

impl Roots {
    fn add(&mut self, id: u32) {
        if !self.is_root[id as usize] {
            self.is_root[id as usize] = true;
            self.order.push(id);
        }
    }
    fn has(&self, id: u32) -> bool {
        self.is_root[id as usize]
    }
}

/// Walks what `root` reaches through alternatives and no-ops, not going
/// past other roots; calls `leaf` on each instruction where it stops.
fn closure(
    inst: &[Inst],
    roots: &Roots,
    root: u32,
    seen: &mut OrderedSet,
    mut leaf: impl FnMut(u32, &Inst),
) {
    seen.clear();
    let mut stack = vec![root];
    while let Some(mut id) = stack.pop() {
        while seen.insert(id) {
            let i = &inst[id as usize];
            if id != root && roots.has(id) {
                leaf(id, i);
                break;
            }
            match i.op {
                Op::Alt | Op::AltMatch => {
                    if i.op == Op::AltMatch {
                        leaf(id, i);
                    }
                    stack.push(i.out1);
                    id = i.out;
                }
                Op::Nop => id = i.out,
                _ => {
                    leaf(id, i);
                    break;
                }
            }
        }
    }
}

fn flattened_len(inst: &[Inst], start: u32, start_unanchored: u32) -> usize {
    let n = inst.len();
    let mut roots = Roots {
        order: Vec::new(),
        is_root: vec![false; n],
    };
    roots.add(0);
    roots.add(start_unanchored);
    roots.add(start);

    // What follows a consuming instruction is a root; note who branches
    // to what, for the dominator pass.
    let mut preds: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut seen = OrderedSet::new(n);
    let mut stack = vec![start_unanchored];
    while let Some(mut id) = stack.pop() {
        while seen.insert(id) {
            let i = inst[id as usize];
            match i.op {
                Op::Alt | Op::AltMatch => {
                    preds[i.out as usize].push(id);
                    preds[i.out1 as usize].push(id);
                    stack.push(i.out1);
                    id = i.out;
                }
                Op::ByteRange | Op::Capture | Op::EmptyWidth => {
                    roots.add(i.out);
                    id = i.out;
                }
                Op::Nop => id = i.out,
                Op::Match | Op::Fail => break,
            }
        }
    }

    // An instruction a root reaches that is also branched to from outside
    // that root's reach must be a root itself. RE2 checks the roots found
    // so far from the highest index down, seeing the ones it adds.
    let mut sorted = roots.order.clone();
    sorted.sort_unstable();
    for &root in sorted[1..].iter().rev() {
        if root == start_unanchored || root == start {
            continue;
        }
        closure(inst, &roots, root, &mut seen, |_, _| {});
        for k in 0..seen.order.len() {
            let id = seen.order[k];
            if preds[id as usize].iter().any(|&p| !seen.contains(p)) {
                roots.add(id);
            }
        }
    }

    // Each root's list: its leaves, one jump per other root reached, and
    // one extra instruction per marked match loop.
    let mut total = 0;
    for k in 0..roots.order.len() {
        let root = roots.order[k];
        closure(inst, &roots, root, &mut seen, |_, _| total += 1);
    }
    total
}
