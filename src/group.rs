//! Conversations beyond two people: channel names, and the scope a message is sent in (to one person, to a
//! channel's members, to everyone online). The daemon holds who is in which channel as part of each roster
//! entry ([`crate::registry::wire::Entry::channels`]); the text still goes peer to peer, and a message's
//! scope travels in its chat frame so the receiver shows where it was said.

#![forbid(unsafe_code)]

use std::fmt;

/// Longest channel name in bytes, `#` included.
pub const MAX_CHANNEL: usize = 32;

/// Channels one client may be in at once: bounds its roster entry (every client downloads every entry).
pub const MAX_CHANNELS_PER_CLIENT: usize = 32;

/// A channel's name: `#` and 1–31 letters a–z, digits, `-`, `_` or `.`, stored in lower case so that `#Ops`
/// and `#ops` are one channel (as on IRC). Stored inline, like [`crate::nick::Nick`].
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct ChannelName {
    len: u8,
    bytes: [u8; MAX_CHANNEL],
}

/// Why a channel name was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// Does not start with `#`.
    NoHash,
    /// Nothing after the `#`.
    Empty,
    /// Longer than [`MAX_CHANNEL`] bytes.
    TooLong,
    /// A character other than letters a–z/A–Z, digits, `-`, `_`, `.`.
    BadChar(char),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::NoHash => f.write_str("a channel name starts with '#' (like #ops)"),
            ChannelError::Empty => f.write_str("a channel name needs a name after '#'"),
            ChannelError::TooLong => write!(
                f,
                "a channel name has at most {} characters after '#'",
                MAX_CHANNEL - 1
            ),
            ChannelError::BadChar(c) => write!(
                f,
                "a channel name may contain only letters a-z, digits, '-', '_' and '.' after '#': {c:?} \
                 (U+{:04X}) is not one of them",
                u32::from(*c)
            ),
        }
    }
}

impl std::error::Error for ChannelError {}

fn allowed(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')
}

impl ChannelName {
    /// Validates a name as typed (any case) and stores it in lower case.
    pub fn new(s: &str) -> Result<ChannelName, ChannelError> {
        let rest = s.strip_prefix('#').ok_or(ChannelError::NoHash)?;
        if rest.is_empty() {
            return Err(ChannelError::Empty);
        }
        if let Some(c) = rest.chars().find(|c| !c.is_ascii() || !allowed(*c as u8)) {
            return Err(ChannelError::BadChar(c));
        }
        if s.len() > MAX_CHANNEL {
            return Err(ChannelError::TooLong);
        }
        let mut bytes = [0u8; MAX_CHANNEL];
        for (d, c) in bytes.iter_mut().zip(s.bytes()) {
            *d = c.to_ascii_lowercase();
        }
        Ok(ChannelName {
            len: s.len() as u8,
            bytes,
        })
    }

    /// Validates a name read from the network: it must already be in the stored form (lower case), so a
    /// name has one encoding and two peers never disagree on whether two names are one channel.
    pub fn from_bytes(b: &[u8]) -> Result<ChannelName, ChannelError> {
        let s = std::str::from_utf8(b).map_err(|_| ChannelError::BadChar('\u{fffd}'))?;
        let c = ChannelName::new(s)?;
        if c.as_bytes() != b {
            return Err(ChannelError::BadChar(
                s.chars()
                    .find(char::is_ascii_uppercase)
                    .unwrap_or('\u{fffd}'),
            ));
        }
        Ok(c)
    }

    /// The name, `#` included.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or("#")
    }

    /// The name's bytes, `#` included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

// In byte order of the names (`#c10` before `#c2`), the order entries list their channels in on the wire.
impl Ord for ChannelName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl PartialOrd for ChannelName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::str::FromStr for ChannelName {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelName::new(s)
    }
}

/// Where a message was said: what the receiver shows with it, and what `listen --json` reports as `"to"`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// To one person.
    #[default]
    Direct,
    /// To everyone online (`msg *`).
    Everyone,
    /// To the members of a channel.
    Channel(ChannelName),
}

impl Scope {
    /// How `listen --json` and the history name it: `""` for one-to-one (the caller puts the receiver's
    /// nickname), `"*"`, or the channel's name.
    pub fn label(&self) -> &str {
        match self {
            Scope::Direct => "",
            Scope::Everyone => "*",
            Scope::Channel(c) => c.as_str(),
        }
    }

    /// The scope a label names (the inverse of [`Scope::label`]); `None` for anything else.
    pub fn from_label(s: &str) -> Option<Scope> {
        match s {
            "" => Some(Scope::Direct),
            "*" => Some(Scope::Everyone),
            _ => ChannelName::new(s).ok().map(Scope::Channel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_folded_to_lower_case_and_checked() {
        let a = ChannelName::new("#Ops").unwrap();
        assert_eq!(a.as_str(), "#ops");
        assert_eq!(a, ChannelName::new("#ops").unwrap());
        assert_eq!(ChannelName::new("ops"), Err(ChannelError::NoHash));
        assert_eq!(ChannelName::new("#"), Err(ChannelError::Empty));
        assert_eq!(ChannelName::new("#a b"), Err(ChannelError::BadChar(' ')));
        assert_eq!(ChannelName::new("#café"), Err(ChannelError::BadChar('é')));
        assert!(ChannelName::new(&format!("#{}", "a".repeat(31))).is_ok());
        assert_eq!(
            ChannelName::new(&format!("#{}", "a".repeat(32))),
            Err(ChannelError::TooLong)
        );
        // The network form has one spelling.
        assert!(ChannelName::from_bytes(b"#ops").is_ok());
        assert!(ChannelName::from_bytes(b"#Ops").is_err());
        assert!(ChannelName::from_bytes(b"#o\xffs").is_err());
        let msg = ChannelName::new("#a/b").unwrap_err().to_string();
        assert!(msg.contains("'/'") && msg.contains("U+002F"), "{msg}");
    }

    #[test]
    fn scope_labels_round_trip() {
        for s in [
            Scope::Direct,
            Scope::Everyone,
            Scope::Channel(ChannelName::new("#dev").unwrap()),
        ] {
            assert_eq!(Scope::from_label(s.label()), Some(s));
        }
        assert_eq!(Scope::from_label("bob"), None);
    }
}
