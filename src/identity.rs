//! Long-term identities: every `mpc` and every `mpd` holds an X25519 key pair (the kind Noise's `25519`
//! handshakes use), and people compare keys by their [`Fingerprint`]. Pure: keys are made from 32 random bytes
//! handed in, and key files are parsed and written as bytes; where the bytes come from and go to is
//! [`crate::io::keyfile`]'s business.
//!
//! # Fingerprints
//! BLAKE2s-256 of a domain-separation label and the public key, cut to its first 20 bytes (160 bits), in
//! lowercase base32 (RFC 4648: `a`–`z`, `2`–`7`, nothing that reads like another character aloud) as eight
//! groups of four: `mpk:7dq3-bz4k-…`. Short enough to read over the phone, long enough that nobody can make
//! a key with someone else's fingerprint.
//!
//! # Key files
//! Text, so a person can see what it is: a first line `multiproto-key-v1`, then `secret ` and the 32-byte
//! secret in 64 lowercase hex digits. Nothing else; the public key is derived from the secret, so the two
//! can never disagree. Files are at most [`MAX_KEY_FILE`] bytes and parsed strictly.

#![forbid(unsafe_code)]

use std::fmt;

use blake2::{Blake2s256, Digest};
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

/// Bytes of a key (public or secret).
pub const KEY_LEN: usize = 32;
/// Bytes of a fingerprint before encoding.
pub const FINGERPRINT_LEN: usize = 20;
/// Largest key file accepted.
pub const MAX_KEY_FILE: usize = 256;
/// First line of a key file.
const HEADER: &str = "multiproto-key-v1";
/// Hashed before the key, so a fingerprint of ours never equals some other protocol's hash of the same key.
const FINGERPRINT_LABEL: &[u8] = b"multiproto fingerprint v1";

/// A public key.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// The key's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Blake2s256::new();
        h.update(FINGERPRINT_LABEL);
        h.update(self.0);
        let digest = h.finalize();
        let mut f = [0u8; FINGERPRINT_LEN];
        f.copy_from_slice(&digest[..FINGERPRINT_LEN]);
        Fingerprint(f)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// A key pair: the secret (kept on disk, mode 0600) and the public key derived from it.
#[derive(Clone)]
pub struct Identity {
    secret: StaticSecret,
    public: PublicKey,
}

impl Identity {
    /// The identity whose secret is `bytes` (clamped as X25519 requires; any 32 bytes make a valid key).
    pub fn from_secret(bytes: [u8; KEY_LEN]) -> Identity {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey(XPublic::from(&secret).to_bytes());
        Identity { secret, public }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret's bytes (for the handshake and the key file; never logged).
    pub fn secret_bytes(&self) -> [u8; KEY_LEN] {
        self.secret.to_bytes()
    }

    /// The key file's contents for this identity.
    pub fn to_file(&self) -> String {
        format!(
            "{HEADER}\nsecret {}\n",
            data_encoding::HEXLOWER.encode(&self.secret_bytes())
        )
    }

    /// Reads a key file; every deviation from the layout in the module docs is an error.
    pub fn from_file(bytes: &[u8]) -> Result<Identity, KeyFileError> {
        if bytes.len() > MAX_KEY_FILE {
            return Err(KeyFileError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| KeyFileError::NotText)?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(KeyFileError::NotAKeyFile);
        }
        let hex = lines
            .next()
            .and_then(|l| l.strip_prefix("secret "))
            .ok_or(KeyFileError::NoSecret)?;
        if lines.any(|l| !l.is_empty()) {
            return Err(KeyFileError::Trailing);
        }
        let raw = data_encoding::HEXLOWER
            .decode(hex.as_bytes())
            .map_err(|_| KeyFileError::BadSecret)?;
        let secret: [u8; KEY_LEN] = raw.try_into().map_err(|_| KeyFileError::BadSecret)?;
        Ok(Identity::from_secret(secret))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        write!(f, "Identity({})", self.public.fingerprint())
    }
}

/// Why a key file could not be read.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KeyFileError {
    /// Larger than any key file.
    TooLarge,
    /// Not UTF-8 text.
    NotText,
    /// The first line is not `multiproto-key-v1`.
    NotAKeyFile,
    /// No `secret` line.
    NoSecret,
    /// The secret is not 64 lowercase hex digits.
    BadSecret,
    /// More lines follow the secret.
    Trailing,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyFileError::TooLarge => "too large to be a key file",
            KeyFileError::NotText => "not text",
            KeyFileError::NotAKeyFile => "does not start with `multiproto-key-v1`",
            KeyFileError::NoSecret => "has no `secret` line",
            KeyFileError::BadSecret => "its secret is not 64 lowercase hex digits",
            KeyFileError::Trailing => "has lines after the secret",
        })
    }
}

impl std::error::Error for KeyFileError {}

/// A key's fingerprint, shown as `mpk:` and eight groups of four base32 characters.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

/// The prefix of a written fingerprint.
const FINGERPRINT_PREFIX: &str = "mpk:";

impl Fingerprint {
    /// Parses a fingerprint as shown (what a user types after `--daemon-key`): the `mpk:` prefix and the
    /// dashes are optional, case does not matter.
    pub fn parse(s: &str) -> Option<Fingerprint> {
        let s = s.trim();
        let s = s.strip_prefix(FINGERPRINT_PREFIX).unwrap_or(s);
        // RFC 4648's alphabet is upper case; we show it lower case.
        let compact: String = s
            .chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let raw = data_encoding::BASE32_NOPAD
            .decode(compact.as_bytes())
            .ok()?;
        raw.try_into().ok().map(Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b32 = data_encoding::BASE32_NOPAD
            .encode(&self.0)
            .to_ascii_lowercase();
        f.write_str(FINGERPRINT_PREFIX)?;
        for (i, chunk) in b32.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // Base32 output is ASCII.
            f.write_str(std::str::from_utf8(chunk).unwrap_or("?"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_key_is_x25519_of_the_secret() {
        // RFC 7748 §6.1: Alice's private key and public key.
        let a = data_encoding::HEXLOWER
            .decode(b"77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .unwrap();
        let id = Identity::from_secret(a.try_into().unwrap());
        assert_eq!(
            data_encoding::HEXLOWER.encode(&id.public().0),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn a_fingerprint_reads_as_eight_groups_and_parses_back() {
        let id = Identity::from_secret([7; KEY_LEN]);
        let fp = id.public().fingerprint();
        let shown = fp.to_string();
        assert!(shown.starts_with("mpk:"), "{shown}");
        let groups: Vec<&str> = shown["mpk:".len()..].split('-').collect();
        assert_eq!(groups.len(), 8, "{shown}");
        assert!(groups.iter().all(|g| {
            g.len() == 4
                && g.chars()
                    .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        }));
        assert_eq!(Fingerprint::parse(&shown), Some(fp));
        assert_eq!(
            Fingerprint::parse(&shown.to_uppercase().replace("MPK:", "")),
            Some(fp)
        );
        assert_eq!(Fingerprint::parse(&shown.replace('-', "")), Some(fp));
        assert_eq!(Fingerprint::parse("mpk:abcd"), None);
        assert_eq!(Fingerprint::parse(""), None);
        // Another key, another fingerprint.
        assert_ne!(
            Identity::from_secret([8; KEY_LEN]).public().fingerprint(),
            fp
        );
    }

    #[test]
    fn a_key_file_round_trips_and_anything_else_is_refused() {
        let id = Identity::from_secret([42; KEY_LEN]);
        let file = id.to_file();
        assert_eq!(
            Identity::from_file(file.as_bytes()).unwrap().public(),
            id.public()
        );
        let cases: [(&[u8], KeyFileError); 6] = [
            (&[b'x'; MAX_KEY_FILE + 1], KeyFileError::TooLarge),
            (&[0xff, 0xfe], KeyFileError::NotText),
            (b"ssh-ed25519 AAAA\n", KeyFileError::NotAKeyFile),
            (b"multiproto-key-v1\n", KeyFileError::NoSecret),
            (b"multiproto-key-v1\nsecret 00\n", KeyFileError::BadSecret),
            (b"multiproto-key-v1\nsecret 0000000000000000000000000000000000000000000000000000000000000000\nmore\n", KeyFileError::Trailing),
        ];
        for (bytes, want) in cases {
            assert_eq!(Identity::from_file(bytes).unwrap_err(), want);
        }
        // Upper-case hex is not the layout either.
        let hex = data_encoding::HEXLOWER.encode(&id.secret_bytes());
        let upper = format!("{HEADER}\nsecret {}\n", hex.to_uppercase());
        assert_eq!(
            Identity::from_file(upper.as_bytes()).unwrap_err(),
            KeyFileError::BadSecret
        );
        // Every truncation is refused or (cut inside the trailing newline only) the same key.
        for n in 0..file.len() {
            if let Ok(k) = Identity::from_file(&file.as_bytes()[..n]) {
                assert_eq!(k.public(), id.public(), "cut at {n}");
            }
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let id = Identity::from_secret([0xab; KEY_LEN]);
        let shown = format!("{id:?}");
        assert!(!shown.contains("abab"), "{shown}");
    }
}
