//! Nicknames: 1–32 characters from letters, digits, `-`, `_` and `.` (DESIGN.md), checked once where they
//! enter (the command line, a HELLO, a roster entry, a chat frame) and stored inline, so every protocol that
//! carries one (discovery, the roster, chat) shares this one type.

#![forbid(unsafe_code)]

use std::fmt;

/// Longest nickname, in bytes.
pub const MAX_NICK: usize = 32;

/// A nickname: 1–32 characters from letters, digits, `-`, `_` and `.` (DESIGN.md), stored inline.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nick {
    len: u8,
    bytes: [u8; MAX_NICK],
}

/// Why a nickname was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NickError {
    /// Empty.
    Empty,
    /// Longer than 32 characters.
    TooLong,
    /// A character outside the ASCII letters and digits, `-`, `_`, `.`.
    BadChar(char),
}

impl fmt::Display for NickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NickError::Empty => f.write_str("a nickname cannot be empty"),
            NickError::TooLong => write!(f, "a nickname has at most {MAX_NICK} characters"),
            // Says which rule and which character: "letters" alone read as a contradiction for 'é'.
            NickError::BadChar(c) if !c.is_ascii() && c.is_alphanumeric() => write!(
                f,
                "a nickname may contain only unaccented letters a-z and A-Z, digits, '-', '_' and '.' for \
                 now: {c:?} is not one of them"
            ),
            NickError::BadChar(c) => write!(
                f,
                "a nickname may contain only letters, digits, '-', '_' and '.' (not {c:?})"
            ),
        }
    }
}

impl std::error::Error for NickError {}

/// Which bytes may appear in a nickname ([`Nick::allowed`], as a table).
static NICK_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
        c += 1;
    }
    t
};

impl Nick {
    /// Validates and stores a nickname.
    pub fn new(s: &str) -> Result<Nick, NickError> {
        Self::from_bytes(s.as_bytes()).map_err(|e| match e {
            // Report the character as the user typed it, not its first byte.
            NickError::BadChar(_) => NickError::BadChar(
                s.chars()
                    .find(|c| !Self::allowed(*c))
                    .unwrap_or(char::REPLACEMENT_CHARACTER),
            ),
            e => e,
        })
    }

    /// Whether `b` is a valid nickname, without storing it (a reader that only looks at it borrows it).
    pub fn check(b: &[u8]) -> Result<(), NickError> {
        if b.is_empty() {
            return Err(NickError::Empty);
        }
        if b.len() > MAX_NICK {
            return Err(NickError::TooLong);
        }
        // Every roster entry carries a nickname (10⁸ of them reach the load harness in a 10 000-client storm):
        // one table lookup per byte, checked for the whole name at once.
        if !b.iter().fold(true, |ok, &c| ok & NICK_BYTE[usize::from(c)]) {
            let bad = b
                .iter()
                .find(|&&c| !NICK_BYTE[usize::from(c)])
                .copied()
                .unwrap_or(0);
            return Err(NickError::BadChar(char::from(bad)));
        }
        Ok(())
    }

    fn allowed(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
    }

    /// Validates raw bytes from the network.
    pub fn from_bytes(b: &[u8]) -> Result<Nick, NickError> {
        Self::check(b)?;
        let mut bytes = [0u8; MAX_NICK];
        for (d, &c) in bytes.iter_mut().zip(b) {
            *d = c;
        }
        Ok(Nick {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The nickname.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The nickname's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
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
    fn the_byte_table_agrees_with_the_rule_for_every_byte() {
        for c in 0..=255u8 {
            let ok = Nick::allowed(char::from(c));
            assert_eq!(Nick::from_bytes(&[b'a', c, b'z']).is_ok(), ok, "byte {c}");
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
        assert_eq!(Nick::new(&"x".repeat(33)), Err(NickError::TooLong));
        assert!(Nick::new(&"x".repeat(32)).is_ok());
        assert_eq!(Nick::new("a b"), Err(NickError::BadChar(' ')));
        assert_eq!(Nick::new("zoë"), Err(NickError::BadChar('ë')));
        // The message names the rule a letter like 'é' breaks, rather than "only letters".
        let why = Nick::new("José").unwrap_err().to_string();
        assert!(
            why.contains("unaccented letters a-z") && why.contains("'é'"),
            "{why}"
        );
        assert!(
            Nick::new("a b")
                .unwrap_err()
                .to_string()
                .contains("(not ' ')")
        );
        assert_eq!(
            Nick::from_bytes(&[b'a', 0xff]),
            Err(NickError::BadChar('\u{ff}'))
        );
    }
}
