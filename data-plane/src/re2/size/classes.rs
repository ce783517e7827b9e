//! Character classes over Latin-1, and the named classes RE2 knows.
//!
//! In Latin-1 mode every character is one byte, and RE2 cuts every class
//! down to 0x00-0xFF before using it, so a class is a set of bytes. Its
//! ranges (maximal runs) are what the compiler turns into instructions.

/// A set of bytes.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub(super) struct ByteSet([u64; 4]);

impl ByteSet {
    pub fn add(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.0[(b >> 6) as usize] |= 1 << (b & 63);
        }
    }

    /// `lo-hi` under `(?i)`: Latin-1 mode folds ASCII letters only.
    pub fn add_folding(&mut self, lo: u8, hi: u8, fold: bool) {
        if lo > hi {
            return;
        }
        self.add(lo, hi);
        if !fold {
            return;
        }
        let (ulo, uhi) = (lo.max(b'A'), hi.min(b'Z'));
        if ulo <= uhi {
            self.add(ulo + 32, uhi + 32);
        }
        let (llo, lhi) = (lo.max(b'a'), hi.min(b'z'));
        if llo <= lhi {
            self.add(llo - 32, lhi - 32);
        }
    }

    pub fn contains(&self, b: u8) -> bool {
        self.0[(b >> 6) as usize] & (1 << (b & 63)) != 0
    }

    pub fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    pub fn negated(self) -> ByteSet {
        ByteSet(self.0.map(|w| !w))
    }

    pub fn union(&mut self, other: &ByteSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }

    /// The maximal runs, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u8, u8)> + '_ {
        let mut next = 0u16;
        std::iter::from_fn(move || {
            while next < 256 && !self.contains(next as u8) {
                next += 1;
            }
            if next == 256 {
                return None;
            }
            let lo = next as u8;
            while next < 256 && self.contains(next as u8) {
                next += 1;
            }
            Some((lo, (next - 1) as u8))
        })
    }

    /// Whether the class treats A-Z exactly as a-z: the compiler then
    /// needs only the lower-case ranges, marked as case-folding.
    pub fn folds_ascii(&self) -> bool {
        (b'A'..=b'Z').all(|b| self.contains(b) == self.contains(b + 32))
    }

    /// Adds `set`, or everything but `set`, as `(?i)` sees it: a negated
    /// class is the complement of the folded class.
    pub fn add_named(&mut self, set: &ByteSet, negated: bool, fold: bool) {
        let mut s = ByteSet::default();
        for (lo, hi) in set.ranges() {
            s.add_folding(lo, hi, fold);
        }
        if negated {
            s = s.negated();
        }
        self.union(&s);
    }
}

fn set_of(ranges: &[(u8, u8)]) -> ByteSet {
    let mut s = ByteSet::default();
    for &(lo, hi) in ranges {
        s.add(lo, hi);
    }
    s
}

const DIGIT: &[(u8, u8)] = &[(b'0', b'9')];
const SPACE: &[(u8, u8)] = &[(b'\t', b'\n'), (0x0C, b'\r'), (b' ', b' ')];
const WORD: &[(u8, u8)] = &[(b'0', b'9'), (b'A', b'Z'), (b'_', b'_'), (b'a', b'z')];

/// `\d \s \w` and their negations (RE2's are ASCII; `\s` has no `\v`).
pub(super) fn perl_class(c: u8) -> Option<(ByteSet, bool)> {
    let (ranges, negated) = match c {
        b'd' => (DIGIT, false),
        b'D' => (DIGIT, true),
        b's' => (SPACE, false),
        b'S' => (SPACE, true),
        b'w' => (WORD, false),
        b'W' => (WORD, true),
        _ => return None,
    };
    Some((set_of(ranges), negated))
}

/// `[:name:]` or `[:^name:]`, given `name` or `^name`.
pub(super) fn posix_class(name: &[u8]) -> Option<(ByteSet, bool)> {
    let (negated, base) = match name.strip_prefix(b"^") {
        Some(b) => (true, b),
        None => (false, name),
    };
    let ranges: &[(u8, u8)] = match base {
        b"alnum" => &[(b'0', b'9'), (b'A', b'Z'), (b'a', b'z')],
        b"alpha" => &[(b'A', b'Z'), (b'a', b'z')],
        b"ascii" => &[(0, 0x7F)],
        b"blank" => &[(b'\t', b'\t'), (b' ', b' ')],
        b"cntrl" => &[(0, 0x1F), (0x7F, 0x7F)],
        b"digit" => DIGIT,
        b"graph" => &[(0x21, 0x7E)],
        b"lower" => &[(b'a', b'z')],
        b"print" => &[(0x20, 0x7E)],
        b"punct" => &[(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
        b"space" => &[(b'\t', b'\r'), (b' ', b' ')],
        b"upper" => &[(b'A', b'Z')],
        b"word" => WORD,
        b"xdigit" => &[(b'0', b'9'), (b'A', b'F'), (b'a', b'f')],
        _ => return None,
    };
    Some((set_of(ranges), negated))
}

/// The general category of each Latin-1 code point, as runs starting at
/// the given byte (Unicode has not changed these in decades).
const CATEGORY_RUNS: &[(u8, &str)] = &[
    (0x00, "Cc"),
    (0x20, "Zs"),
    (0x21, "Po"),
    (0x24, "Sc"),
    (0x25, "Po"),
    (0x28, "Ps"),
    (0x29, "Pe"),
    (0x2A, "Po"),
    (0x2B, "Sm"),
    (0x2C, "Po"),
    (0x2D, "Pd"),
    (0x2E, "Po"),
    (0x30, "Nd"),
    (0x3A, "Po"),
    (0x3C, "Sm"),
    (0x3F, "Po"),
    (0x41, "Lu"),
    (0x5B, "Ps"),
    (0x5C, "Po"),
    (0x5D, "Pe"),
    (0x5E, "Sk"),
    (0x5F, "Pc"),
    (0x60, "Sk"),
    (0x61, "Ll"),
    (0x7B, "Ps"),
    (0x7C, "Sm"),
    (0x7D, "Pe"),
    (0x7E, "Sm"),
    (0x7F, "Cc"),
    (0xA0, "Zs"),
    (0xA1, "Po"),
    (0xA2, "Sc"),
    (0xA6, "So"),
    (0xA7, "Po"),
    (0xA8, "Sk"),
    (0xA9, "So"),
    (0xAA, "Lo"),
    (0xAB, "Pi"),
    (0xAC, "Sm"),
    (0xAD, "Cf"),
    (0xAE, "So"),
    (0xAF, "Sk"),
    (0xB0, "So"),
    (0xB1, "Sm"),
    (0xB2, "No"),
    (0xB4, "Sk"),
    (0xB5, "Ll"),
    (0xB6, "Po"),
    (0xB8, "Sk"),
    (0xB9, "No"),
    (0xBA, "Lo"),
    (0xBB, "Pf"),
    (0xBC, "No"),
    (0xBF, "Po"),
    (0xC0, "Lu"),
    (0xD7, "Sm"),
    (0xD8, "Lu"),
    (0xDF, "Ll"),
    (0xF7, "Sm"),
    (0xF8, "Ll"),
];

fn category(b: u8) -> &'static str {
    let i = CATEGORY_RUNS.partition_point(|&(start, _)| start <= b);
    CATEGORY_RUNS[i - 1].1
}

fn bytes_where(pred: impl Fn(u8) -> bool) -> ByteSet {
    let mut s = ByteSet::default();
    for b in 0..=255u8 {
        if pred(b) {
            s.add(b, b);
        }
    }
    s
}

/// The general categories RE2 has tables for (no `Cn`, no `LC`).
const CATEGORIES: &[&str] = &[
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N",
    "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So",
    "Z", "Zl", "Zp", "Zs",
];

/// The scripts RE2 (Unicode 15.1) has tables for. Only Latin and Common
/// have Latin-1 members; any other name is valid but matches nothing,
/// and a name not listed is a syntax error.
const SCRIPTS: &str = "\
    Adlam Ahom Anatolian_Hieroglyphs Arabic Armenian Avestan Balinese Bamum Bassa_Vah \
    Batak Bengali Bhaiksuki Bopomofo Brahmi Braille Buginese Buhid Canadian_Aboriginal \
    Carian Caucasian_Albanian Chakma Cham Cherokee Chorasmian Common Coptic Cuneiform \
    Cypriot Cypro_Minoan Cyrillic Deseret Devanagari Dives_Akuru Dogra Duployan \
    Egyptian_Hieroglyphs Elbasan Elymaic Ethiopic Georgian Glagolitic Gothic Grantha Greek \
    Gujarati Gunjala_Gondi Gurmukhi Han Hangul Hanifi_Rohingya Hanunoo Hatran Hebrew \
    Hiragana Imperial_Aramaic Inherited Inscriptional_Pahlavi Inscriptional_Parthian \
    Javanese Kaithi Kannada Katakana Kawi Kayah_Li Kharoshthi Khitan_Small_Script Khmer \
    Khojki Khudawadi Lao Latin Lepcha Limbu Linear_A Linear_B Lisu Lycian Lydian Mahajani \
    Makasar Malayalam Mandaic Manichaean Marchen Masaram_Gondi Medefaidrin Meetei_Mayek \
    Mende_Kikakui Meroitic_Cursive Meroitic_Hieroglyphs Miao Modi Mongolian Mro Multani \
    Myanmar Nabataean Nag_Mundari Nandinagari New_Tai_Lue Newa Nko Nushu \
    Nyiakeng_Puachue_Hmong Ogham Ol_Chiki Old_Hungarian Old_Italic Old_North_Arabian \
    Old_Permic Old_Persian Old_Sogdian Old_South_Arabian Old_Turkic Old_Uyghur Oriya Osage \
    Osmanya Pahawh_Hmong Palmyrene Pau_Cin_Hau Phags_Pa Phoenician Psalter_Pahlavi Rejang \
    Runic Samaritan Saurashtra Sharada Shavian Siddham SignWriting Sinhala Sogdian \
    Sora_Sompeng Soyombo Sundanese Syloti_Nagri Syriac Tagalog Tagbanwa Tai_Le Tai_Tham \
    Tai_Viet Takri Tamil Tangsa Tangut Telugu Thaana Thai Tibetan Tifinagh Tirhuta Toto \
    Ugaritic Vai Vithkuqi Wancho Warang_Citi Yezidi Yi Zanabazar_Square";

/// Latin-script letters in Latin-1: the letters but the micro sign.
fn is_latin_script(b: u8) -> bool {
    category(b).starts_with('L') && b != 0xB5
}

/// The Latin-1 members of `\p{name}`, or `None` if RE2 has no such name.
pub(super) fn unicode_class(name: &[u8]) -> Option<ByteSet> {
    let name = std::str::from_utf8(name).ok()?;
    if name == "Any" {
        return Some(ByteSet::default().negated());
    }
    if CATEGORIES.contains(&name) {
        // RE2 builds `C` from the listed code points: Cc, Cf, Co, Cs.
        return Some(bytes_where(|b| {
            let c = category(b);
            if name.len() == 1 {
                c.starts_with(name)
            } else {
                c == name
            }
        }));
    }
    if SCRIPTS.split_ascii_whitespace().any(|s| s == name) {
        return Some(match name {
            "Latin" => bytes_where(is_latin_script),
            "Common" => bytes_where(|b| !is_latin_script(b)),
            _ => ByteSet::default(),
        });
    }
    None
}

/// RE2 takes capture names made of letters, marks, digits and connector
/// punctuation; each byte is one Latin-1 character.
pub(super) fn is_capture_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&b| {
            matches!(
                category(b),
                "Lu" | "Ll" | "Lt" | "Lm" | "Lo" | "Nl" | "Mn" | "Mc" | "Nd" | "Pc"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_maximal_runs() {
        let mut s = ByteSet::default();
        s.add(0, 9);
        s.add(11, 255);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(0, 9), (11, 255)]);
        assert_eq!(s.len(), 255);
        assert_eq!(ByteSet::default().ranges().count(), 0);
        let mut f = ByteSet::default();
        f.add_folding(b'a', b'c', true);
        assert!(f.contains(b'B') && f.folds_ascii());
    }

    #[test]
    fn latin1_categories_and_scripts() {
        let ranges = |n: &str| {
            unicode_class(n.as_bytes())
                .unwrap()
                .ranges()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ranges("L"),
            vec![
                (0x41, 0x5A),
                (0x61, 0x7A),
                (0xAA, 0xAA),
                (0xB5, 0xB5),
                (0xBA, 0xBA),
                (0xC0, 0xD6),
                (0xD8, 0xF6),
                (0xF8, 0xFF)
            ]
        );
        assert_eq!(ranges("Cf"), vec![(0xAD, 0xAD)]);
        assert_eq!(ranges("Greek"), vec![]);
        assert!(!ranges("Latin").iter().any(|r| r.0 <= 0xB5 && 0xB5 <= r.1));
        assert!(unicode_class(b"Zzzz").is_none());
        assert!(is_capture_name("a_1\u{aa}".as_bytes()));
        // é is two Latin-1 characters, Ã and ©; © is a symbol.
        assert!(!is_capture_name("é".as_bytes()));
    }
}
