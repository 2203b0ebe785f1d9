//! Remembered keys, like SSH's `known_hosts`: which daemon key a client trusts for a group
//! (`known_daemons`), and later which key each peer it talked to had. Pure: parsing and writing the text; the
//! file itself is [`crate::io::known_keys`]'s.
//!
//! # Format
//! UTF-8 text, one entry per line: a scope (a group `group@239.255.77.77:10001`, a daemon address
//! `daemon@10.0.0.5:9899`, a nickname), a space, the public key in 64 lowercase hex digits, and optionally
//! ` # ` and a comment (the key's fingerprint, for people reading the file). Blank lines and lines starting
//! with `#` are ignored. A scope appears once; a file is at most [`MAX_FILE`] bytes and [`MAX_ENTRIES`]
//! entries. Anything else is an error naming the line, never a guess: this file decides whom a client trusts.

#![forbid(unsafe_code)]

use std::fmt;

use crate::identity::{KEY_LEN, PublicKey};

/// Largest file read.
pub const MAX_FILE: usize = 256 * 1024;
/// Most entries kept.
pub const MAX_ENTRIES: usize = 4096;
/// Longest scope.
pub const MAX_SCOPE: usize = 128;

/// Why a file could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KnownKeysError {
    /// Larger than [`MAX_FILE`].
    TooLarge,
    /// Not UTF-8.
    NotText,
    /// More than [`MAX_ENTRIES`] entries.
    TooMany,
    /// A line that is not an entry (1-based line number, what is wrong).
    Line(usize, &'static str),
}

impl fmt::Display for KnownKeysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KnownKeysError::TooLarge => write!(f, "larger than {MAX_FILE} bytes"),
            KnownKeysError::NotText => f.write_str("not UTF-8 text"),
            KnownKeysError::TooMany => write!(f, "more than {MAX_ENTRIES} entries"),
            KnownKeysError::Line(n, why) => write!(f, "line {n}: {why}"),
        }
    }
}

impl std::error::Error for KnownKeysError {}

/// Whether `s` can be a scope: non-empty, at most [`MAX_SCOPE`] bytes, no whitespace, no control
/// characters, not starting with `#`.
pub fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SCOPE
        && !s.starts_with('#')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// What a key seen for a scope is, against the one remembered (trust on first use, like SSH's
/// `known_hosts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vetted {
    /// The key remembered for the scope.
    Known,
    /// None was remembered; this one now is (unless the list is full).
    First,
    /// Another key was remembered: this one is not to be trusted until the user accepts it.
    Changed(PublicKey),
}

/// The remembered keys, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownKeys {
    entries: Vec<(String, PublicKey)>,
}

impl KnownKeys {
    /// Parses a file (see the module docs).
    pub fn parse(bytes: &[u8]) -> Result<KnownKeys, KnownKeysError> {
        if bytes.len() > MAX_FILE {
            return Err(KnownKeysError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| KnownKeysError::NotText)?;
        let mut k = KnownKeys::default();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim_end();
            if line.trim_start().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why| KnownKeysError::Line(n, why);
            let (entry, _comment) = match line.split_once(" # ") {
                Some((e, c)) => (e, Some(c)),
                None => (line, None),
            };
            let mut parts = entry.split(' ');
            let scope = parts.next().ok_or(bad("no scope"))?;
            let hex = parts.next().ok_or(bad("no key after the scope"))?;
            if parts.next().is_some() {
                return Err(bad("more than a scope and a key"));
            }
            if !valid_scope(scope) {
                return Err(bad("invalid scope"));
            }
            let raw = data_encoding::HEXLOWER
                .decode(hex.as_bytes())
                .map_err(|_| bad("the key is not 64 lowercase hex digits"))?;
            let key: [u8; KEY_LEN] = raw
                .try_into()
                .map_err(|_| bad("the key is not 64 lowercase hex digits"))?;
            if k.get(scope).is_some() {
                return Err(bad("a scope listed twice"));
            }
            if k.entries.len() >= MAX_ENTRIES {
                return Err(KnownKeysError::TooMany);
            }
            k.entries.push((scope.to_string(), PublicKey(key)));
        }
        Ok(k)
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut s = String::from(
            "# multiproto remembered keys: scope, public key, fingerprint. Edit with care.\n",
        );
        for (scope, key) in &self.entries {
            s.push_str(scope);
            s.push(' ');
            s.push_str(&data_encoding::HEXLOWER.encode(&key.0));
            s.push_str(" # ");
            s.push_str(&key.fingerprint().to_string());
            s.push('\n');
        }
        s
    }

    /// The key remembered for `scope`.
    pub fn get(&self, scope: &str) -> Option<PublicKey> {
        self.entries
            .iter()
            .find(|(s, _)| s == scope)
            .map(|(_, k)| *k)
    }

    /// Remembers `key` for `scope` (replacing what was there); false if the scope is invalid or the list is
    /// full.
    pub fn set(&mut self, scope: &str, key: PublicKey) -> bool {
        if !valid_scope(scope) {
            return false;
        }
        if let Some(e) = self.entries.iter_mut().find(|(s, _)| s == scope) {
            e.1 = key;
            return true;
        }
        if self.entries.len() >= MAX_ENTRIES {
            return false;
        }
        self.entries.push((scope.to_string(), key));
        true
    }

    /// Checks `key` against the one remembered for `scope`, remembering it if there was none: mpc's
    /// session and the simulation judge a peer's key with this one rule.
    pub fn vet(&mut self, scope: &str, key: PublicKey) -> Vetted {
        match self.get(scope) {
            Some(old) if old == key => Vetted::Known,
            Some(old) => Vetted::Changed(old),
            None => {
                self.set(scope, key);
                Vetted::First
            }
        }
    }

    /// Forgets `scope`'s key; whether there was one.
    pub fn remove(&mut self, scope: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(s, _)| s != scope);
        self.entries.len() < before
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn entries_round_trip_and_replace() {
        let mut k = KnownKeys::default();
        assert!(k.set("group@239.255.77.77:10001", PublicKey([1; 32])));
        assert!(k.set("daemon@10.0.0.5:9899", PublicKey([2; 32])));
        assert!(k.set("group@239.255.77.77:10001", PublicKey([3; 32])));
        assert_eq!(k.len(), 2);
        let back = KnownKeys::parse(k.to_text().as_bytes()).unwrap();
        assert_eq!(back, k);
        assert_eq!(
            back.get("group@239.255.77.77:10001"),
            Some(PublicKey([3; 32]))
        );
        assert_eq!(back.get("group@other"), None);
        assert!(!k.set("has space", PublicKey([1; 32])));
        assert!(!k.set("", PublicKey([1; 32])));
    }

    #[test]
    fn vet_remembers_the_first_key_and_flags_a_change() {
        let mut k = KnownKeys::default();
        assert_eq!(k.vet("bob", PublicKey([1; 32])), Vetted::First);
        assert_eq!(k.vet("bob", PublicKey([1; 32])), Vetted::Known);
        assert_eq!(
            k.vet("bob", PublicKey([2; 32])),
            Vetted::Changed(PublicKey([1; 32]))
        );
        // A change is not remembered: the user accepts it by forgetting the old key.
        assert_eq!(k.get("bob"), Some(PublicKey([1; 32])));
        assert!(k.remove("bob"));
        assert_eq!(k.vet("bob", PublicKey([2; 32])), Vetted::First);
    }

    #[test]
    fn bad_lines_are_named() {
        let key = "ab".repeat(32);
        let cases: [(String, KnownKeysError); 6] = [
            (
                format!("s {key}\ns {key}\n"),
                KnownKeysError::Line(2, "a scope listed twice"),
            ),
            (
                "s\n".into(),
                KnownKeysError::Line(1, "no key after the scope"),
            ),
            (
                format!("s {}\n", "AB".repeat(32)),
                KnownKeysError::Line(1, "the key is not 64 lowercase hex digits"),
            ),
            (
                format!("s {key} extra\n"),
                KnownKeysError::Line(1, "more than a scope and a key"),
            ),
            (
                format!("\n# c\ns\u{7} {key}\n"),
                KnownKeysError::Line(3, "invalid scope"),
            ),
            (
                "s abc\n".into(),
                KnownKeysError::Line(1, "the key is not 64 lowercase hex digits"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(KnownKeys::parse(text.as_bytes()), Err(want), "{text:?}");
        }
        assert_eq!(
            KnownKeys::parse(&vec![b'#'; MAX_FILE + 1]),
            Err(KnownKeysError::TooLarge)
        );
        assert_eq!(KnownKeys::parse(b"\xff"), Err(KnownKeysError::NotText));
        // Comments after the key, blank lines, comment lines are fine.
        let ok = format!("# header\n\ns {key} # mpk:whatever\n");
        assert_eq!(KnownKeys::parse(ok.as_bytes()).unwrap().len(), 1);
    }

    proptest! {
        #[test]
        fn parse_is_total_and_what_parses_writes_back_the_same(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(k) = KnownKeys::parse(&b) {
                prop_assert_eq!(KnownKeys::parse(k.to_text().as_bytes()), Ok(k));
            }
        }

        #[test]
        fn any_valid_scope_round_trips(scope in "[!-~&&[^#]][!-~]{0,40}", key in any::<[u8; 32]>()) {
            let mut k = KnownKeys::default();
            prop_assert!(k.set(&scope, PublicKey(key)));
            let back = KnownKeys::parse(k.to_text().as_bytes()).unwrap();
            prop_assert_eq!(back.get(&scope), Some(PublicKey(key)));
        }
    }
}
