//! Roster broadcasts sealed once, authenticated for each client: what makes a delta sent to 10 000 clients,
//! or a snapshot page sent to every client that joined in one turn, cost one encryption and one shared
//! buffer, not one of each per client.
//!
//! The daemon holds a broadcast key, random per start, and gives it to each client inside the client's own
//! Noise session, with a MAC key of that client's own. A roster message shared by many clients is encrypted
//! once (ChaCha20-Poly1305 under the broadcast key, a sequence number as nonce) into a *body* that every one
//! of them is sent, byte for byte the same. In front of it, in the same message, each client's copy carries
//! a *head* of its own: a counter and SipHash-2-4-128 under that client's MAC key over the counter and the
//! body's [`digest`] (BLAKE2s-256 of the whole body, computed once per body by the daemon: a MAC over the
//! body itself cost the daemon a pass over every snapshot page for every client, 4 GB of SipHash to hand a
//! 10 000-client roster to 10 000 clients). The SCTP layer sends head and body as one user message (one DATA chunk when it fits) without
//! copying the body ([`crate::sctp::Payload::Headed`]). Only the daemon (and that client) can make the head,
//! so another client, who holds the broadcast key too, can neither forge a body into someone else's
//! association nor replay one: the counter must be the next one expected (the carrier is an ordered stream),
//! and the MAC must cover that counter and the digest of every byte of the body (a second body with the same
//! digest would be a BLAKE2s collision).
//!
//! A broadcast frame: `[kind::BROADCAST][counter u64][mac 16][body]`, the body `[kind::BROADCAST_BODY]
//! [sequence u64][ciphertext ‖ AEAD tag]`. The body keeps its own kind byte, though it no longer travels as a
//! message of its own ([`super::Frame::parse`] refuses a bare one): its layout, what the MAC covers and what
//! [`open`] checks stay as they were, and the byte keeps number 7 from ever meaning another top-level kind.
//!
//! Nothing here panics on input; opening allocates the plaintext, tagging nothing.

use std::hash::Hasher as _;
use std::sync::Arc;

use blake2::{Blake2s256, Digest as _};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use siphasher::sip128::{Hasher128, SipHasher24};

use super::{NoiseError, TAG_LEN, kind};
use crate::codec::{Malformed, Reader, TRUNCATED};

/// Bytes of the broadcast key.
pub const KEY_LEN: usize = 32;
/// Bytes of a client's MAC key.
pub const MAC_KEY_LEN: usize = 16;
/// Bytes of a per-client MAC.
pub const MAC_LEN: usize = 16;
/// Bytes of a broadcast frame's head, in front of its body: the kind byte, the counter and the MAC.
pub const HEAD_LEN: usize = 1 + 8 + MAC_LEN;
/// Bytes a body adds to its plaintext.
pub const BODY_OVERHEAD: usize = 1 + 8 + TAG_LEN;
/// Bytes a broadcast frame adds to its plaintext.
pub const OVERHEAD: usize = HEAD_LEN + BODY_OVERHEAD;
/// Largest plaintext a broadcast carries: its frame, kind byte aside, within [`super::MAX_MESSAGE`] (roster
/// messages are at most 60 KiB).
pub const MAX_PLAINTEXT: usize = super::MAX_MESSAGE + 1 - OVERHEAD;

/// A broadcast frame as read ([`super::Frame::Broadcast`]): nothing checked yet but its layout.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Tagged<'a> {
    /// The counter the daemon gave this copy.
    pub counter: u64,
    /// The MAC over the counter and the body's digest.
    pub mac: [u8; MAC_LEN],
    /// The body: kind byte, sequence number, ciphertext and AEAD tag, as [`Sealer::seal`] made it.
    pub body: &'a [u8],
}

impl<'a> Tagged<'a> {
    /// Reads a frame's bytes after its kind byte: the counter, the MAC, and a body at least as long as an
    /// empty plaintext's that starts with its kind byte.
    pub fn parse(rest: &'a [u8]) -> Result<Tagged<'a>, Malformed> {
        let mut r = Reader::new(rest);
        let counter = r.u64()?;
        let mac = r.array()?;
        let body = r.rest();
        if body.len() < BODY_OVERHEAD {
            return Err(TRUNCATED);
        }
        if body[0] != kind::BROADCAST_BODY {
            return Err(Malformed("broadcast body kind"));
        }
        Ok(Tagged { counter, mac, body })
    }

    /// The whole frame, kind byte first (a copy: the daemon sends the head and the shared body as two parts
    /// of one message instead).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEAD_LEN + self.body.len());
        v.push(kind::BROADCAST);
        v.extend_from_slice(&self.counter.to_be_bytes());
        v.extend_from_slice(&self.mac);
        v.extend_from_slice(self.body);
        v
    }
}

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

    /// Encrypts a shared roster message (at most [`MAX_PLAINTEXT`] bytes) once: the body every client
    /// receiving it is sent.
    pub fn seal(&mut self, plain: &[u8]) -> Arc<[u8]> {
        debug_assert!(plain.len() <= MAX_PLAINTEXT, "no client would read it");
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

/// Bytes of a body's digest.
pub const DIGEST_LEN: usize = 32;

/// What a client's MAC covers of a body: BLAKE2s-256 of all of it (kind byte, sequence, ciphertext, AEAD
/// tag). Collision-resistant, so a head for one body is a head for no other; computed once per body, however
/// many clients are sent it.
pub fn digest(body: &[u8]) -> [u8; DIGEST_LEN] {
    let mut h = Blake2s256::new();
    h.update(b"multiproto broadcast body v1");
    h.update(body);
    h.finalize().into()
}

fn mac(key: &[u8; MAC_KEY_LEN], counter: u64, digest: &[u8; DIGEST_LEN]) -> [u8; MAC_LEN] {
    let mut h = SipHasher24::new_with_key(key);
    h.write(&counter.to_be_bytes());
    h.write(digest);
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

    /// The head of this client's copy of `body`: the kind byte, the next counter, and the MAC over both.
    /// Sent with the body as one message ([`crate::sctp::Payload::Headed`]).
    pub fn head(&mut self, body: &[u8]) -> [u8; HEAD_LEN] {
        self.head_of(&digest(body))
    }

    /// [`Tagger::head`] of the body whose [`digest`] this is (the daemon digests a body once for all the
    /// clients it goes to).
    pub fn head_of(&mut self, digest: &[u8; DIGEST_LEN]) -> [u8; HEAD_LEN] {
        let counter = self.next;
        self.next += 1;
        let mut h = [0u8; HEAD_LEN];
        h[0] = kind::BROADCAST;
        h[1..9].copy_from_slice(&counter.to_be_bytes());
        h[9..].copy_from_slice(&mac(&self.key, counter, digest));
        h
    }
}

/// A client's receiver of broadcasts: the keys its session gave and the next counter.
pub struct Receiver {
    key: [u8; KEY_LEN],
    mac_key: [u8; MAC_KEY_LEN],
    next: u64,
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
        }
    }

    /// The broadcast key.
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// Checks a broadcast frame's head: accepted only if its counter is the next one and its MAC, under our
    /// MAC key, covers that counter and the whole body's digest (then the counter moves on). `Ok` with the body for
    /// the caller to [`open`] (or to look up, if it opened that sequence already); a frame refused leaves
    /// the counter where it was.
    pub fn accept<'a>(&mut self, t: &Tagged<'a>) -> Result<&'a [u8], NoiseError> {
        if t.counter != self.next {
            return Err(NoiseError::Rejected);
        }
        self.accept_digest(t, &digest(t.body))
    }

    /// [`Receiver::accept`] for a reader that computed the body's [`digest`] already (the load harness
    /// reads one body for thousands of simulated clients).
    pub fn accept_digest<'a>(
        &mut self,
        t: &Tagged<'a>,
        digest: &[u8; DIGEST_LEN],
    ) -> Result<&'a [u8], NoiseError> {
        if t.counter != self.next {
            return Err(NoiseError::Rejected);
        }
        let want = mac(&self.mac_key, t.counter, digest);
        // Constant time: a forger learns nothing from how long the comparison took.
        let diff = want.iter().zip(t.mac).fold(0u8, |a, (x, y)| a | (x ^ y));
        if diff != 0 {
            return Err(NoiseError::Rejected);
        }
        self.next += 1;
        Ok(t.body)
    }

    /// [`Receiver::accept`], then [`open`]: the plaintext of a broadcast frame meant for us.
    pub fn open(&mut self, t: &Tagged<'_>) -> Result<Vec<u8>, NoiseError> {
        let body = self.accept(t)?;
        open(&self.key, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::Frame;

    /// A client's copy of `body` as it travels: the head its tagger makes, then the body, one message.
    fn frame(t: &mut Tagger, body: &[u8]) -> Vec<u8> {
        [&t.head(body)[..], body].concat()
    }

    fn parse(f: &[u8]) -> Tagged<'_> {
        match Frame::parse(f) {
            Ok(Frame::Broadcast(t)) => t,
            other => panic!("not a broadcast: {other:?}"),
        }
    }

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
        let (fa, fb) = (frame(&mut daemon_a, &body), frame(&mut daemon_b, &body));
        assert_eq!(fa.len(), b"a delta".len() + OVERHEAD);
        assert_eq!(
            &fa[HEAD_LEN..],
            &body[..],
            "the body follows the head untouched"
        );
        // b's copy does not open at a (another client's MAC), before or after a's own.
        assert!(a.accept(&parse(&fb)).is_err());
        assert_eq!(a.open(&parse(&fa)).unwrap(), b"a delta");
        assert_eq!(b.open(&parse(&fb)).unwrap(), b"a delta");
        assert!(a.accept(&parse(&fb)).is_err());
        // Replayed: its counter is no longer the next one.
        assert!(a.accept(&parse(&fa)).is_err());
        // Altered after tagging, anywhere in the counter, the MAC or the body (the body's kind byte aside,
        // which the parser refuses): refused, and the counter stays for the genuine copy.
        let next = s.seal(b"next");
        let fa = frame(&mut daemon_a, &next);
        for i in (1..fa.len()).filter(|&i| i != HEAD_LEN) {
            let mut flipped = fa.clone();
            flipped[i] ^= 1;
            assert!(a.accept(&parse(&flipped)).is_err(), "byte {i} flipped");
        }
        let mut flipped = fa.clone();
        flipped[HEAD_LEN] ^= 1;
        assert!(Frame::parse(&flipped).is_err());
        assert_eq!(a.open(&parse(&fa)).unwrap(), b"next");
        // A skipped counter: the daemon's third copy reaches a before its second.
        let (x, y) = (s.seal(b"x"), s.seal(b"y"));
        let (fx, fy) = (frame(&mut daemon_a, &x), frame(&mut daemon_a, &y));
        assert!(a.accept(&parse(&fy)).is_err());
        assert_eq!(a.open(&parse(&fx)).unwrap(), b"x");
        assert_eq!(a.open(&parse(&fy)).unwrap(), b"y");
        // A client holding the broadcast key forges a body and a head with a's next counter: no MAC key, not
        // accepted; nor is a's genuine head in front of another body.
        let forged = s.seal(b"forged");
        let mut forger = Tagger::new([9; 16]);
        let mut f = frame(&mut forger, &forged);
        f[1..9].copy_from_slice(&4u64.to_be_bytes());
        assert_eq!(parse(&f).counter, 4);
        assert!(a.accept(&parse(&f)).is_err());
        let genuine = frame(&mut daemon_a, &s.seal(b"genuine"));
        let spliced = [&genuine[..HEAD_LEN], &forged[..]].concat();
        assert!(a.accept(&parse(&spliced)).is_err());
        assert_eq!(a.open(&parse(&genuine)).unwrap(), b"genuine");
        // Another broadcast key opens nothing; the sequence numbers count every seal.
        assert!(open(&[2; KEY_LEN], &next).is_err());
        assert_eq!(sequence(&next), Some(1));
        assert_eq!(sequence(&forged), Some(4));
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        let mut r = Receiver::new([5; 32], [5; 16]);
        for n in 0..80 {
            let junk = vec![0u8; n];
            assert!(open(&[5; 32], &junk).is_err());
            let mut f = junk.clone();
            f.insert(0, kind::BROADCAST);
            if n >= 24 + BODY_OVERHEAD {
                f[25] = kind::BROADCAST_BODY;
            }
            match Frame::parse(&f) {
                Ok(Frame::Broadcast(t)) => {
                    assert!(n >= 24 + BODY_OVERHEAD);
                    assert_eq!(t.to_vec(), f);
                    assert!(r.accept(&t).is_err());
                    assert!(r.open(&t).is_err());
                }
                other => assert!(n < 24 + BODY_OVERHEAD && other.is_err(), "{n}: {other:?}"),
            }
        }
        assert_eq!(sequence(&[1, 2]), None);
    }

    #[test]
    fn the_largest_plaintext_makes_the_largest_frame() {
        let mut s = Sealer::new([1; KEY_LEN]);
        let mut t = Tagger::new([2; 16]);
        let mut r = Receiver::new([1; 32], [2; 16]);
        let big = vec![3u8; MAX_PLAINTEXT];
        let f = frame(&mut t, &s.seal(&big));
        assert_eq!(f.len(), crate::secure::MAX_MESSAGE + 1);
        assert_eq!(r.open(&parse(&f)).unwrap(), big);
        let mut longer = f.clone();
        longer.push(0);
        assert!(Frame::parse(&longer).is_err());
    }
}
