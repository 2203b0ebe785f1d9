//! Nicknames: 1–32 letters and digits of any script, `-`, `_` and `.` (DESIGN.md), in Unicode's NFC form,
//! checked once where they enter (the command line, a HELLO, a roster entry, a chat frame) and stored inline,
//! so every protocol that carries one (discovery, the roster, chat) shares this one type.
//!
//! # The rule
//! A nickname is at most [`MAX_NICK_CHARS`] characters and [`MAX_NICK_BYTES`] bytes of UTF-8 (the byte bound
//! keeps [`Nick`] a 64-byte inline value and fits the wire's one-byte length; 32 Latin, Greek or Cyrillic
//! letters fit in it, or 21 Chinese or Japanese ones). Its characters are `-`, `_`, `.` and the letters,
//! digits and combining marks that Unicode's identifier profile (UTS #39, `IdentifierStatus=Allowed`)
//! allows: that excludes control and invisible formatting characters, symbols, compatibility forms
//! (`²`, `ﬁ`, fullwidth letters) and obsolete scripts, as those tables define them. It cannot start with a
//! combining mark, nor stack one mark twice or more than four in a row (UTS #39 §5.4), so it cannot draw
//! over the text around it. ASCII nicknames are stored byte for byte as typed.
//!
//! [`Nick::new`] normalises to NFC (a decomposed `e` + U+0301 becomes `é`); [`Nick::from_bytes`], for bytes
//! from the network, accepts only NFC, since every sender normalised already and one spelling per name keeps
//! equality byte equality. Case-insensitive comparison ([`Nick::same_folded`]) and the look-alike key the
//! daemon keeps nicknames apart by ([`Nick::look_alike`]) are computed on demand, never stored.
//!
//! Nothing here panics. [`Nick::new`] allocates only for a non-ASCII input (its NFC form); folding and
//! look-alike keys allocate for non-ASCII nicknames.

#![forbid(unsafe_code)]

use std::fmt;
use std::hash::{Hash, Hasher};

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use unicode_script::{Script, UnicodeScript};
use unicode_security::GeneralSecurityProfile;

/// Most characters in a nickname.
pub const MAX_NICK_CHARS: usize = 32;

/// Most bytes of UTF-8 in a nickname: with its length byte, a [`Nick`] is 64 bytes.
pub const MAX_NICK_BYTES: usize = 63;

/// Most combining marks in a row (UTS #39 §5.4, "more than 4 nonspacing marks").
const MAX_MARKS_IN_A_ROW: usize = 4;

/// A nickname (see the module docs for the rule), valid UTF-8 in NFC, stored inline.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nick {
    len: u8,
    bytes: [u8; MAX_NICK_BYTES],
}

const _: () = assert!(size_of::<Nick>() == 64);

/// Why a nickname was refused. Each message names the rule, and the character that breaks it as typed with
/// its code point (`'☃' (U+2603)`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NickError {
    /// Empty.
    Empty,
    /// More than [`MAX_NICK_CHARS`] characters (how many it has).
    TooLong(usize),
    /// More than [`MAX_NICK_BYTES`] bytes of UTF-8 (how many it has).
    TooManyBytes(usize),
    /// A character that is not a letter, digit, combining mark, `-`, `_` or `.` the rule allows.
    BadChar(char),
    /// Starts with a combining mark (it would draw over whatever precedes the nickname).
    MarkFirst(char),
    /// A combining mark repeated, or more than four in a row.
    Marks(char),
    /// Bytes from the network that are not UTF-8.
    NotUtf8,
    /// Bytes from the network not in NFC (every sender normalises first).
    NotNfc,
}

/// A character as typed, with its code point: `'é' (U+00E9)`; invisible ones escaped (`'\u{200b}'`).
pub struct Shown(pub char);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (U+{:04X})", self.0, u32::from(self.0))
    }
}

/// What kind of character `c` is, for a refusal: the reason it is not allowed, in a few words.
fn kind(c: char) -> &'static str {
    use unicode_security::general_security_profile::IdentifierType as T;
    if c.is_control() {
        return "a control character";
    }
    if c.is_whitespace() {
        return "a space";
    }
    match c.identifier_type() {
        Some(T::Default_Ignorable) => "an invisible formatting character",
        _ if !c.is_alphanumeric() && !is_combining_mark(c) => "a symbol or punctuation",
        Some(T::Not_NFKC) => {
            "a compatibility form of another character (UTS #39 keeps it out of names)"
        }
        _ => "of an obsolete, technical or little-used kind (UTS #39 keeps it out of names)",
    }
}

impl fmt::Display for NickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NickError::Empty => f.write_str("a nickname cannot be empty"),
            NickError::TooLong(n) => write!(
                f,
                "a nickname has at most {MAX_NICK_CHARS} characters (this one has {n})"
            ),
            NickError::TooManyBytes(n) => write!(
                f,
                "a nickname has at most {MAX_NICK_BYTES} bytes of UTF-8, e.g. 21 Chinese characters (this one \
                 has {n})"
            ),
            NickError::BadChar(c) => write!(
                f,
                "a nickname may contain only letters and digits (of any script), '-', '_' and '.': {} is {}",
                Shown(c),
                kind(c)
            ),
            NickError::MarkFirst(c) => write!(
                f,
                "a nickname cannot start with a combining mark: {} has no letter to sit on",
                Shown(c)
            ),
            NickError::Marks(c) => write!(
                f,
                "a nickname cannot stack combining marks (the same one twice, or more than \
                 {MAX_MARKS_IN_A_ROW} in a row): {} is one too many",
                Shown(c)
            ),
            NickError::NotUtf8 => f.write_str("a nickname must be UTF-8"),
            NickError::NotNfc => {
                f.write_str("a nickname on the wire must be in Unicode's NFC form")
            }
        }
    }
}

impl std::error::Error for NickError {}

/// Which bytes may appear in an ASCII nickname (as a table: every roster entry's nickname is checked).
static NICK_BYTE: [bool; 256] = {
    // 256 entries (every byte of UTF-8 false from 128 on), so a lookup needs no bounds check.
    let mut t = [false; 256];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
        c += 1;
    }
    t
};

/// Whether `c` may appear in a nickname (where in it is checked by [`check_str`]).
fn allowed(c: char) -> bool {
    if c.is_ascii() {
        return NICK_BYTE[c as usize];
    }
    // The identifier profile also allows a few joiners and punctuation (U+200C, U+00B7, U+2019, ...): only its
    // letters, digits and marks are ours.
    c.identifier_allowed() && (c.is_alphanumeric() || is_combining_mark(c))
}

/// Checks a nickname already in UTF-8 (NFC is checked by the caller where it matters).
fn check_str(s: &str) -> Result<(), NickError> {
    if s.is_empty() {
        return Err(NickError::Empty);
    }
    let chars = s.chars().count();
    if chars > MAX_NICK_CHARS {
        return Err(NickError::TooLong(chars));
    }
    if s.len() > MAX_NICK_BYTES {
        return Err(NickError::TooManyBytes(s.len()));
    }
    let (mut run, mut prev) = (0, None);
    for (i, c) in s.chars().enumerate() {
        if !allowed(c) {
            return Err(NickError::BadChar(c));
        }
        if c.is_ascii() || !is_combining_mark(c) {
            run = 0;
            prev = None;
            continue;
        }
        if i == 0 {
            return Err(NickError::MarkFirst(c));
        }
        run += 1;
        if run > MAX_MARKS_IN_A_ROW || prev == Some(c) {
            return Err(NickError::Marks(c));
        }
        prev = Some(c);
    }
    Ok(())
}

/// Full Unicode case folding of `s` (canonical caseless form, Unicode §3.13: NFD, fold, then NFC so equal
/// names compare equal byte for byte). ASCII folds to lower case without allocating tables.
fn fold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars().nfd().default_case_fold().nfc().collect()
}

impl Nick {
    /// Validates and stores a nickname typed by a person or sent by a client: normalised to NFC first.
    pub fn new(s: &str) -> Result<Nick, NickError> {
        if s.is_ascii() {
            return Self::from_bytes(s.as_bytes());
        }
        if unicode_normalization::is_nfc_quick(s.chars())
            == unicode_normalization::IsNormalized::Yes
        {
            return Self::from_bytes(s.as_bytes());
        }
        // Bounded before normalising: a megabyte of input is refused by its length, not normalised first.
        let chars = s.chars().count();
        if chars > 4 * MAX_NICK_CHARS {
            return Err(NickError::TooLong(chars));
        }
        let nfc: String = s.nfc().collect();
        Self::from_bytes(nfc.as_bytes())
    }

    /// Whether `b` is a valid nickname in NFC, without storing it (a reader that only looks at it borrows
    /// it).
    #[inline]
    pub fn check(b: &[u8]) -> Result<(), NickError> {
        // Every roster entry carries a nickname (10⁸ of them reach the load harness in a 10 000-client
        // storm): a valid ASCII one is one table lookup per byte, checked for the whole name at once, inlined
        // into the entry reader; anything else (empty, too long, a bad byte, non-ASCII) takes the slow path.
        if !b.is_empty()
            && b.len() <= MAX_NICK_CHARS
            && b.iter().fold(true, |ok, &c| ok & NICK_BYTE[usize::from(c)])
        {
            return Ok(());
        }
        Self::check_slow(b)
    }

    /// [`Nick::check`] for what is not a valid ASCII nickname: says what is wrong, or checks it as Unicode.
    #[cold]
    #[inline(never)]
    fn check_slow(b: &[u8]) -> Result<(), NickError> {
        if b.is_empty() {
            return Err(NickError::Empty);
        }
        if b.is_ascii() {
            if b.len() > MAX_NICK_CHARS {
                return Err(NickError::TooLong(b.len()));
            }
            let bad = b
                .iter()
                .find(|&&c| !NICK_BYTE[usize::from(c)])
                .copied()
                .unwrap_or(0);
            return Err(NickError::BadChar(char::from(bad)));
        }
        let s = std::str::from_utf8(b).map_err(|_| NickError::NotUtf8)?;
        check_str(s)?;
        if !unicode_normalization::is_nfc(s) {
            return Err(NickError::NotNfc);
        }
        Ok(())
    }

    /// Validates raw bytes from the network (UTF-8, already NFC).
    pub fn from_bytes(b: &[u8]) -> Result<Nick, NickError> {
        Self::check(b)?;
        let mut bytes = [0u8; MAX_NICK_BYTES];
        for (d, &c) in bytes.iter_mut().zip(b) {
            *d = c;
        }
        Ok(Nick {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The nickname.
    #[inline]
    pub fn as_str(&self) -> &str {
        // Only checked UTF-8 is ever stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The nickname's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The nickname case-folded (Unicode full case folding, in NFC): what two nicknames that differ only in
    /// case (`Bob`, `bob`; `STRAUSS`, `Strauß`) have in common.
    pub fn folded(&self) -> String {
        fold(self.as_str())
    }

    /// Whether `self` and `other` are the same nickname when case is ignored (`msg Bob` finds `bob`).
    pub fn same_folded(&self, other: &Nick) -> bool {
        let (a, b) = (self.as_str(), other.as_str());
        if a.is_ascii() && b.is_ascii() {
            return a.eq_ignore_ascii_case(b);
        }
        fold(a) == fold(b)
    }

    /// The key under which nicknames that look alike meet: UTS #39's skeleton of the case-folded NFC form,
    /// folded once more so that a prototype that is a capital (`0` → `O`) meets its small letter (`b0b` looks
    /// like `bob`). Two nicknames with equal keys may be mistaken for one another (`alice` and `аlice` with a
    /// Cyrillic `а`, `rn` and `m`, `Bob` and `bob`).
    pub fn look_alike(&self) -> String {
        let skeleton: String = unicode_security::skeleton(&self.folded()).collect();
        fold(&skeleton)
    }

    /// A 64-bit hash of [`Nick::look_alike`], for an index that should not store strings (the daemon's). Equal
    /// keys give equal hashes; equal hashes are checked against the keys before a nickname is refused.
    pub fn look_alike_hash(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.look_alike().hash(&mut h);
        h.finish()
    }

    /// What makes `self` differ from `like`, a nickname it looks like, for a refusal: its characters not in
    /// `like` (at most three), each with its script and code point, e.g. `Cyrillic 'а', U+0430`. Empty if
    /// they differ only in case.
    pub fn differences(&self, like: &Nick) -> String {
        let mut out: Vec<String> = Vec::new();
        for c in self.as_str().chars() {
            if like.as_str().contains(c)
                || like.folded().contains(c.to_lowercase().next().unwrap_or(c))
                || out.len() == 3
            {
                continue;
            }
            let what = match c.script() {
                Script::Common | Script::Inherited | Script::Unknown if c.is_numeric() => {
                    "the digit".to_string()
                }
                Script::Common | Script::Inherited | Script::Unknown if is_combining_mark(c) => {
                    "the combining mark".to_string()
                }
                Script::Common | Script::Inherited | Script::Unknown => "the character".to_string(),
                s => s.full_name().replace('_', " "),
            };
            let item = format!("{what} {c:?}, U+{:04X}", u32::from(c));
            if !out.contains(&item) {
                out.push(item);
            }
        }
        out.join(", ")
    }
}

impl fmt::Display for Nick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Nick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::str::FromStr for Nick {
    type Err = NickError;
    fn from_str(s: &str) -> Result<Nick, NickError> {
        Nick::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_table_agrees_with_the_rule_for_every_ascii_byte() {
        for c in 0..128u8 {
            let ok = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
            assert_eq!(Nick::from_bytes(&[b'a', c, b'z']).is_ok(), ok, "byte {c}");
            assert_eq!(allowed(char::from(c)), ok, "byte {c}");
            if !ok {
                assert_eq!(
                    Nick::from_bytes(&[b'a', c]),
                    Err(NickError::BadChar(char::from(c)))
                );
            }
        }
    }

    #[test]
    fn the_rules_of_nicknames() {
        assert!(Nick::new("Bob").is_ok());
        assert_eq!(Nick::new(""), Err(NickError::Empty));
        assert_eq!(Nick::new(&"x".repeat(33)), Err(NickError::TooLong(33)));
        assert!(Nick::new(&"x".repeat(32)).is_ok());
        assert_eq!(Nick::new("a b"), Err(NickError::BadChar(' ')));
        for ok in [
            "José",
            "zoë",
            "Ærøskøbing",
            "Дмитрий",
            "Αλέξανδρος",
            "李小龙",
            "たなか",
            "김민준",
            "नमस्ते",
            "محمد",
            "x_1.2-3",
        ] {
            let n = Nick::new(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(n.as_str(), ok);
        }
        // Bytes that are not UTF-8, from the network.
        assert_eq!(Nick::from_bytes(&[b'a', 0xff]), Err(NickError::NotUtf8));
    }

    #[test]
    fn ascii_nicknames_are_stored_byte_for_byte() {
        for s in ["Bob", "bob", "A.b_c-9", "x"] {
            assert_eq!(Nick::new(s).unwrap().as_bytes(), s.as_bytes());
        }
    }

    #[test]
    fn a_decomposed_letter_is_folded_to_nfc_where_it_enters() {
        let decomposed = "Jose\u{301}";
        let n = Nick::new(decomposed).unwrap();
        assert_eq!(n.as_str(), "Jos\u{e9}");
        assert_eq!(n, Nick::new("José").unwrap());
        assert_eq!(n.as_bytes().len(), 5);
        // The wire accepts only the normalised form: every sender normalised already.
        assert_eq!(
            Nick::from_bytes(decomposed.as_bytes()),
            Err(NickError::NotNfc)
        );
        assert_eq!(Nick::from_bytes(n.as_bytes()), Ok(n));
    }

    #[test]
    fn length_is_bounded_in_characters_and_in_bytes() {
        // 32 two-byte letters are 64 bytes: one too many.
        assert!(Nick::new(&"é".repeat(31)).is_ok());
        assert_eq!(Nick::new(&"é".repeat(32)), Err(NickError::TooManyBytes(64)));
        assert_eq!(Nick::new(&"é".repeat(33)), Err(NickError::TooLong(33)));
        // 21 three-byte letters fit (63 bytes), 22 do not.
        assert!(Nick::new(&"李".repeat(21)).is_ok());
        assert_eq!(
            Nick::new(&"李".repeat(22)),
            Err(NickError::TooManyBytes(66))
        );
        // Counted in characters after NFC: 32 decomposed "e\u{301}" are 32 characters once composed.
        assert_eq!(
            Nick::new(&"e\u{301}".repeat(30)).map(|n| n.as_str().chars().count()),
            Ok(30)
        );
        // A huge input is refused by its length without being normalised.
        assert_eq!(
            Nick::new(&"e\u{301}".repeat(100_000)),
            Err(NickError::TooLong(200_000))
        );
        let why = Nick::new(&"李".repeat(22)).unwrap_err().to_string();
        assert!(why.contains("63 bytes") && why.contains("has 66"), "{why}");
    }

    #[test]
    fn refused_characters_are_named_with_their_code_point_and_the_rule() {
        let cases = [
            ("snow☃man", '☃', "a symbol or punctuation"),
            ("a\u{7}b", '\u{7}', "a control character"),
            (
                "ali\u{200b}ce",
                '\u{200b}',
                "an invisible formatting character",
            ),
            (
                "zw\u{200d}j",
                '\u{200d}',
                "an invisible formatting character",
            ),
            (
                "bi\u{202e}di",
                '\u{202e}',
                "an invisible formatting character",
            ),
            ("x\u{a0}y", '\u{a0}', "a space"),
            ("x²", '²', "compatibility"),
            ("ﬁsh", 'ﬁ', "compatibility"),
            ("ｆull", 'ｆ', "compatibility"),
            ("smile😀", '😀', "a symbol"),
            ("o'neil", '\'', "a symbol or punctuation"),
        ];
        for (s, c, what) in cases {
            let e = Nick::new(s).unwrap_err();
            assert_eq!(e, NickError::BadChar(c), "{s:?}");
            let why = e.to_string();
            let point = format!("(U+{:04X})", u32::from(c));
            assert!(
                why.contains(&point) && why.contains(what) && why.contains("letters and digits"),
                "{s:?}: {why}"
            );
        }
        let why = Nick::new("snow☃man").unwrap_err().to_string();
        assert!(why.contains("'☃' (U+2603)"), "{why}");
        // The old message's contradiction is gone: 'é' is a letter, and allowed.
        assert!(Nick::new("José").is_ok());
    }

    #[test]
    fn combining_marks_sit_on_letters_and_do_not_stack() {
        // Marks that NFC cannot compose stay, on their letter (Devanagari vowel signs and virama).
        assert_eq!(Nick::new("कृष्ण").map(|n| n.as_str().chars().count()), Ok(5));
        assert_eq!(Nick::new("\u{301}bc"), Err(NickError::MarkFirst('\u{301}')));
        assert_eq!(
            Nick::new("q\u{301}\u{301}"),
            Err(NickError::Marks('\u{301}'))
        );
        let why = Nick::new("\u{301}bc").unwrap_err().to_string();
        assert!(why.contains("(U+0301)"), "{why}");
    }

    #[test]
    fn case_folding_and_look_alikes() {
        let n = |s: &str| Nick::new(s).unwrap();
        assert!(n("Bob").same_folded(&n("bOB")));
        assert!(n("STRAUSS").same_folded(&n("Strauß")));
        assert!(n("ÉMILE").same_folded(&n("émile")));
        assert!(!n("bob").same_folded(&n("rob")));
        assert_eq!(n("Bob").look_alike(), n("bob").look_alike());
        // Cyrillic а (U+0430) and Latin a.
        assert_eq!(n("\u{430}lice").look_alike(), n("alice").look_alike());
        assert_eq!(n("b0b").look_alike(), n("bob").look_alike());
        assert_eq!(n("rnike").look_alike(), n("mike").look_alike());
        assert_ne!(n("alice").look_alike(), n("alicia").look_alike());
        assert_eq!(
            n("\u{430}lice").look_alike_hash(),
            n("alice").look_alike_hash()
        );
        assert_eq!(
            n("\u{430}lice").differences(&n("alice")),
            "Cyrillic 'а', U+0430"
        );
        assert_eq!(n("b0b").differences(&n("bob")), "the digit '0', U+0030");
        assert_eq!(n("Bob").differences(&n("bob")), "");
    }
}
