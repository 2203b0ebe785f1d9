//! Roster broadcasts sealed once, authenticated for each client: what makes a delta sent to 10 000 clients,
//! or a snapshot page sent to every client that joined in one turn, cost one encryption and one shared
//! buffer, not one of each per client.
//!
//! The daemon holds a broadcast key, random per start, and gives it to each client inside the client's own
//! Noise session, with a MAC key of that client's own. A roster message shared by many clients is encrypted
//! once (ChaCha20-Poly1305 under the broadcast key, a sequence number as nonce) into a *body* message that
//! every one of them is sent, byte for byte the same (the SCTP layer shares it, never copies it). Just before
//! it, each client is sent a small *tag* message of its own: a counter and SipHash-2-4-128 under that
//! client's MAC key over the counter and the whole body. Only the daemon (and that client) can make it, so
//! another client, who holds the broadcast key too, can neither forge a body into someone else's association
//! nor replay one: the counter must be the next one expected (the carrier is an ordered stream), and a body
//! is accepted only right after a tag that covers it.
//!
//! Messages: tag `[kind::BROADCAST][counter u64][mac 16]`, body `[kind::BROADCAST_BODY][sequence u64]
//! [ciphertext ‖ AEAD tag]`.

use std::hash::Hasher as _;
use std::sync::Arc;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use siphasher::sip128::{Hasher128, SipHasher24};

use super::{NoiseError, TAG_LEN, kind};

/// Bytes of the broadcast key.
pub const KEY_LEN: usize = 32;
/// Bytes of a client's MAC key.
pub const MAC_KEY_LEN: usize = 16;
/// Bytes of a per-client tag.
pub const MAC_LEN: usize = 16;
/// Bytes of a tag message.
pub const TAG_MESSAGE_LEN: usize = 1 + 8 + MAC_LEN;
/// Bytes a body message adds to its plaintext.
pub const BODY_OVERHEAD: usize = 1 + 8 + TAG_LEN;

/// The daemon's broadcast sealer.
pub struct Sealer {
    aead: ChaCha20Poly1305,
    key: [u8; KEY_LEN],
    next: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("next", &self.next).finish()
    }
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_le_bytes());
    Nonce::from(n)
}

impl Sealer {
    /// A sealer with a fresh random `key` (never reused across daemon starts: its sequence starts at 0).
    pub fn new(key: [u8; KEY_LEN]) -> Sealer {
        Sealer {
            aead: ChaCha20Poly1305::new(&key.into()),
            key,
            next: 0,
        }
    }

    /// The key, to give each client inside its session.
    pub fn key(&self) -> [u8; KEY_LEN] {
        self.key
    }

    /// Encrypts a shared roster message once: the body message every client receiving it is sent.
    pub fn seal(&mut self, plain: &[u8]) -> Arc<[u8]> {
        let seq = self.next;
        self.next += 1;
        let mut m = Vec::with_capacity(BODY_OVERHEAD + plain.len());
        m.push(kind::BROADCAST_BODY);
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(plain);
        // Only a plaintext over 2^38 bytes fails; roster messages are at most 64 KiB.
        if let Ok(tag) = self
            .aead
            .encrypt_in_place_detached(&nonce(seq), &[], &mut m[9..])
        {
            m.extend_from_slice(&tag);
        }
        m.into()
    }
}

/// The sequence number of a body message (for a reader of many clients' copies that opens each body once).
pub fn sequence(body: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(body.get(1..9)?.try_into().ok()?))
}

/// Opens a body message with the broadcast key.
pub fn open(key: &[u8; KEY_LEN], body: &[u8]) -> Result<Vec<u8>, NoiseError> {
    if body.len() < BODY_OVERHEAD || body[0] != kind::BROADCAST_BODY {
        return Err(NoiseError::Rejected);
    }
    let seq = sequence(body).ok_or(NoiseError::Rejected)?;
    let (ct, tag) = body[9..].split_at(body.len() - 9 - TAG_LEN);
    let mut plain = ct.to_vec();
    ChaCha20Poly1305::new(&(*key).into())
        .decrypt_in_place_detached(&nonce(seq), &[], &mut plain, tag.into())
        .map_err(|_| NoiseError::Rejected)?;
    Ok(plain)
}

fn mac(key: &[u8; MAC_KEY_LEN], counter: u64, body: &[u8]) -> [u8; MAC_LEN] {
    let mut h = SipHasher24::new_with_key(key);
    h.write(&counter.to_be_bytes());
    h.write(body);
    h.finish128().as_bytes()
}

/// The daemon's authenticator of one client's copies: its MAC key and the next counter.
pub struct Tagger {
    key: [u8; MAC_KEY_LEN],
    next: u64,
}

impl std::fmt::Debug for Tagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tagger").field("next", &self.next).finish()
    }
}

impl Tagger {
    /// An authenticator under `key`, counting from 0.
    pub fn new(key: [u8; MAC_KEY_LEN]) -> Tagger {
        Tagger { key, next: 0 }
    }

    /// The MAC key, to give the client inside its session.
    pub fn key(&self) -> [u8; MAC_KEY_LEN] {
        self.key
    }

    /// The tag message that goes to this client right before `body`.
    pub fn tag(&mut self, body: &[u8]) -> Vec<u8> {
        let counter = self.next;
        self.next += 1;
        let mut t = Vec::with_capacity(TAG_MESSAGE_LEN);
        t.push(kind::BROADCAST);
        t.extend_from_slice(&counter.to_be_bytes());
        t.extend_from_slice(&mac(&self.key, counter, body));
        t
    }
}

/// A client's receiver of broadcasts: the keys its session gave, the next counter, and the tag waiting for
/// its body.
pub struct Receiver {
    key: [u8; KEY_LEN],
    mac_key: [u8; MAC_KEY_LEN],
    next: u64,
    pending: Option<(u64, [u8; MAC_LEN])>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("next", &self.next)
            .finish()
    }
}

impl Receiver {
    /// A receiver of the keys a session gave.
    pub fn new(key: [u8; KEY_LEN], mac_key: [u8; MAC_KEY_LEN]) -> Receiver {
        Receiver {
            key,
            mac_key,
            next: 0,
            pending: None,
        }
    }

    /// The broadcast key.
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// A tag message (after its kind byte): kept for the body that follows if its counter is the next one.
    pub fn tag(&mut self, rest: &[u8]) -> Result<(), NoiseError> {
        let counter: [u8; 8] = rest
            .get(..8)
            .and_then(|c| c.try_into().ok())
            .ok_or(NoiseError::Rejected)?;
        let tag: [u8; MAC_LEN] = rest
            .get(8..)
            .and_then(|t| t.try_into().ok())
            .ok_or(NoiseError::Rejected)?;
        let counter = u64::from_be_bytes(counter);
        if counter != self.next {
            return Err(NoiseError::Rejected);
        }
        self.pending = Some((counter, tag));
        Ok(())
    }

    /// A body message, whole: accepted only if the tag just before it covers it (then the counter moves
    /// on); `Ok` with the body for the caller to open (or to look up, if it opened that sequence already).
    pub fn body<'a>(&mut self, body: &'a [u8]) -> Result<&'a [u8], NoiseError> {
        let (counter, tag) = self.pending.take().ok_or(NoiseError::Rejected)?;
        let want = mac(&self.mac_key, counter, body);
        // Constant time: a forger learns nothing from how long the comparison took.
        let diff = want.iter().zip(tag).fold(0u8, |a, (x, y)| a | (x ^ y));
        if diff != 0 {
            return Err(NoiseError::Rejected);
        }
        self.next += 1;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_opens_at_each_client_and_nowhere_else() {
        let mut s = Sealer::new([1; KEY_LEN]);
        let body = s.seal(b"a delta");
        assert_eq!(body.len(), b"a delta".len() + BODY_OVERHEAD);
        let (mut daemon_a, mut daemon_b) = (Tagger::new([2; 16]), Tagger::new([3; 16]));
        let (mut a, mut b) = (
            Receiver::new([1; 32], [2; 16]),
            Receiver::new([1; 32], [3; 16]),
        );
        let (ta, tb) = (daemon_a.tag(&body), daemon_b.tag(&body));
        assert_eq!(ta.len(), TAG_MESSAGE_LEN);
        a.tag(&ta[1..]).unwrap();
        let got = a.body(&body).unwrap();
        assert_eq!(open(a.key(), got).unwrap(), b"a delta");
        // b's tag does not open a's body; a replayed tag is not the next one; a body without a tag is not
        // taken.
        b.tag(&tb[1..]).unwrap();
        assert!(b.body(&body).is_ok());
        assert!(a.tag(&tb[1..]).is_err());
        assert!(a.tag(&ta[1..]).is_err());
        assert!(a.body(&body).is_err());
        // A client holding the broadcast key forges a body and a tag for a: no MAC key, not accepted.
        let forged = s.seal(b"forged");
        let mut forger = Tagger::new([9; 16]);
        let _ = forger.tag(&forged);
        let mut t = forger.tag(&forged);
        t[1..9].copy_from_slice(&1u64.to_be_bytes());
        a.tag(&t[1..]).unwrap();
        assert!(a.body(&forged).is_err());
        // A body altered after tagging fails the tag; another broadcast key opens nothing.
        let next = s.seal(b"next");
        let t = daemon_a.tag(&next);
        let mut altered = next.to_vec();
        altered[12] ^= 1;
        a.tag(&t[1..]).unwrap();
        assert!(a.body(&altered).is_err());
        assert!(open(&[2; KEY_LEN], &next).is_err());
        assert!(open(&[1; KEY_LEN], &altered).is_err());
        assert_eq!(open(&[1; KEY_LEN], &next).unwrap(), b"next");
        assert_eq!(
            sequence(&next),
            Some(2),
            "the forger's seal took sequence 1"
        );
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        let mut r = Receiver::new([5; 32], [5; 16]);
        for n in 0..64 {
            let junk = vec![0xa5u8; n];
            assert!(r.tag(&junk).is_err());
            assert!(r.body(&junk).is_err());
            assert!(open(&[5; 32], &junk).is_err());
        }
        assert_eq!(sequence(&[1, 2]), None);
    }
}
