//! The state cookie (RFC 9260 §5.1.3, §5.1.5): everything the listener needs to create an association,
//! handed to the peer in INIT ACK and trusted only when it comes back in COOKIE ECHO with a valid MAC.
//!
//! This is what keeps the listener stateless until the handshake completes: an INIT allocates nothing. The MAC
//! is SipHash-2-4 with a 128-bit output, keyed by a 128-bit secret that rotates; the current and the previous
//! secret are accepted, so a rotation never breaks a handshake in progress. The peer's transport address (IP
//! and UDP port) is covered by the MAC but not carried in the cookie: the verifier takes it from the packet, so
//! a cookie replayed from another address fails.
//!
//! Why SipHash and not HMAC-SHA256: RFC 9260 §5.1.3 leaves the MAC to the receiver and asks for a fast one,
//! because every INIT and every COOKIE ECHO costs one, and that is what a cookie flood spends. SipHash is a
//! keyed pseudo-random function made to authenticate short inputs; our input is 50 to 62 bytes, and one MAC
//! costs a few hundred instructions where HMAC-SHA256 costs two SHA-256 blocks (about 6 800 instructions
//! without the SHA extensions). A forger still has to guess a 128-bit tag under a random 128-bit key that
//! changes every rotation.
//!
//! Layout (all big-endian, 60 bytes):
//! ```text
//!  0 version=1 | 1 key index | 2..4 peer SCTP port | 4..8 created (ms) | 8..12 life (ms)
//! 12..16 local tag | 16..20 peer tag | 20..24 local initial TSN | 24..28 peer initial TSN
//! 28..32 peer a_rwnd | 32..34 outbound streams | 34..36 inbound streams
//! 36..40 local tie-tag | 40..44 peer tie-tag | 44..60 SipHash-2-4-128 (little-endian)
//! ```

use std::net::{IpAddr, SocketAddr};

use siphasher::sip128::{Hash128, SipHasher};

use super::wire::{Tsn, be16, be32};

/// Encoded cookie length.
pub const COOKIE_LEN: usize = 60;
const BODY_LEN: usize = 44;
const MAC_LEN: usize = 16;
const VERSION: u8 = 1;

/// The MAC input: the body, the peer's IP address (16 bytes for IPv6) and UDP port.
const MAC_INPUT_MAX: usize = BODY_LEN + 16 + 2;

/// The association parameters a cookie carries.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CookieState {
    /// The peer's SCTP port.
    pub peer_port: u16,
    /// When the cookie was made, in endpoint milliseconds (wrapping).
    pub created_ms: u32,
    /// How long it stays valid, in milliseconds.
    pub life_ms: u32,
    /// Our verification tag for the association.
    pub local_tag: u32,
    /// The peer's verification tag.
    pub peer_tag: u32,
    /// Our initial TSN.
    pub local_tsn: Tsn,
    /// The peer's initial TSN.
    pub peer_tsn: Tsn,
    /// The peer's receive window.
    pub peer_rwnd: u32,
    /// Negotiated outbound streams.
    pub out_streams: u16,
    /// Negotiated inbound streams.
    pub in_streams: u16,
    /// Our tag in the association that existed when the cookie was made (0 if none), RFC 9260 §5.2.2.
    pub local_tie: u32,
    /// The peer's tag in that association (0 if none).
    pub peer_tie: u32,
}

/// Why a cookie was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CookieError {
    /// Wrong length, version, key index or MAC: not ours, or tampered with.
    Invalid,
    /// Authentic but older than its life; carries the state and how far past its life it is, in µs
    /// (RFC 9260 §3.3.10.3 reports this).
    Stale(CookieState, u32),
}

/// The rotating cookie secrets.
pub struct CookieKeys {
    current: SipHasher,
    previous: Option<SipHasher>,
    index: u8,
    rotated_ms: u64,
}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieKeys")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// A cookie secret: SipHash's 128-bit key.
pub type Secret = [u8; 16];

impl CookieKeys {
    /// Starts with one secret, created at `now_ms`.
    pub fn new(secret: Secret, now_ms: u64) -> Self {
        CookieKeys {
            current: SipHasher::new_with_key(&secret),
            previous: None,
            index: 0,
            rotated_ms: now_ms,
        }
    }

    /// Milliseconds since the current secret was installed.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.rotated_ms)
    }

    /// Installs a new secret; the old one stays valid for cookies already issued.
    pub fn rotate(&mut self, secret: Secret, now_ms: u64) {
        let old = std::mem::replace(&mut self.current, SipHasher::new_with_key(&secret));
        self.previous = Some(old);
        self.index = self.index.wrapping_add(1);
        self.rotated_ms = now_ms;
    }

    /// The MAC over the cookie body and the peer's transport address.
    fn mac(key: &SipHasher, body: &[u8], peer: SocketAddr) -> Hash128 {
        let mut input = [0u8; MAC_INPUT_MAX];
        input[..BODY_LEN].copy_from_slice(body);
        let mut n = BODY_LEN;
        match peer.ip() {
            IpAddr::V4(a) => {
                input[n..n + 4].copy_from_slice(&a.octets());
                n += 4;
            }
            IpAddr::V6(a) => {
                input[n..n + 16].copy_from_slice(&a.octets());
                n += 16;
            }
        }
        input[n..n + 2].copy_from_slice(&peer.port().to_be_bytes());
        key.hash(&input[..n + 2])
    }

    /// Encodes and signs `s` for the peer at `peer` (its UDP address).
    pub fn seal(&self, s: &CookieState, peer: SocketAddr) -> [u8; COOKIE_LEN] {
        let mut c = [0u8; COOKIE_LEN];
        c[0] = VERSION;
        c[1] = self.index;
        c[2..4].copy_from_slice(&s.peer_port.to_be_bytes());
        c[4..8].copy_from_slice(&s.created_ms.to_be_bytes());
        c[8..12].copy_from_slice(&s.life_ms.to_be_bytes());
        c[12..16].copy_from_slice(&s.local_tag.to_be_bytes());
        c[16..20].copy_from_slice(&s.peer_tag.to_be_bytes());
        c[20..24].copy_from_slice(&s.local_tsn.0.to_be_bytes());
        c[24..28].copy_from_slice(&s.peer_tsn.0.to_be_bytes());
        c[28..32].copy_from_slice(&s.peer_rwnd.to_be_bytes());
        c[32..34].copy_from_slice(&s.out_streams.to_be_bytes());
        c[34..36].copy_from_slice(&s.in_streams.to_be_bytes());
        c[36..40].copy_from_slice(&s.local_tie.to_be_bytes());
        c[40..44].copy_from_slice(&s.peer_tie.to_be_bytes());
        let mac = u128::from(Self::mac(&self.current, &c[..BODY_LEN], peer));
        c[BODY_LEN..].copy_from_slice(&mac.to_le_bytes());
        c
    }

    /// Checks a cookie that arrived from `peer` at `now_ms` and returns its state. Freshness is checked
    /// last, so a stale cookie is known to be authentic.
    pub fn open(
        &self,
        cookie: &[u8],
        peer: SocketAddr,
        now_ms: u64,
    ) -> Result<CookieState, CookieError> {
        if cookie.len() != COOKIE_LEN || cookie[0] != VERSION {
            return Err(CookieError::Invalid);
        }
        let key = if cookie[1] == self.index {
            &self.current
        } else if cookie[1] == self.index.wrapping_sub(1) {
            self.previous.as_ref().ok_or(CookieError::Invalid)?
        } else {
            return Err(CookieError::Invalid);
        };
        let body = &cookie[..BODY_LEN];
        if !cfg!(fuzzing) {
            let mut tag = [0u8; MAC_LEN];
            tag.copy_from_slice(&cookie[BODY_LEN..]);
            // Hash128's equality is constant-time: how much of a forged tag matched does not leak.
            if Self::mac(key, body, peer) != Hash128::from(u128::from_le_bytes(tag)) {
                return Err(CookieError::Invalid);
            }
        }
        let s = CookieState {
            peer_port: be16(body, 2),
            created_ms: be32(body, 4),
            life_ms: be32(body, 8),
            local_tag: be32(body, 12),
            peer_tag: be32(body, 16),
            local_tsn: Tsn(be32(body, 20)),
            peer_tsn: Tsn(be32(body, 24)),
            peer_rwnd: be32(body, 28),
            out_streams: be16(body, 32),
            in_streams: be16(body, 34),
            local_tie: be32(body, 36),
            peer_tie: be32(body, 40),
        };
        let age = (now_ms as u32).wrapping_sub(s.created_ms);
        // A cookie "from the future" (age wrapped negative) is as unacceptable as an old one.
        if age > s.life_ms {
            let over_us = age.wrapping_sub(s.life_ms).saturating_mul(1000);
            return Err(CookieError::Stale(s, over_us));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> CookieState {
        CookieState {
            peer_port: 5000,
            created_ms: 1000,
            life_ms: 60_000,
            local_tag: 1,
            peer_tag: 2,
            local_tsn: Tsn(3),
            peer_tsn: Tsn(4),
            peer_rwnd: 5,
            out_streams: 6,
            in_streams: 7,
            local_tie: 8,
            peer_tie: 9,
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let k = CookieKeys::new([7; 16], 0);
        let peer: SocketAddr = "127.0.0.1:9899".parse().unwrap();
        let c = k.seal(&state(), peer);
        assert_eq!(k.open(&c, peer, 1500), Ok(state()));
    }

    #[test]
    fn tampering_and_other_addresses_fail() {
        let k = CookieKeys::new([7; 16], 0);
        let peer: SocketAddr = "[::1]:9899".parse().unwrap();
        let c = k.seal(&state(), peer);
        for i in 0..COOKIE_LEN {
            let mut bad = c;
            bad[i] ^= 0x40;
            assert_eq!(
                k.open(&bad, peer, 1500),
                Err(CookieError::Invalid),
                "byte {i}"
            );
        }
        let other: SocketAddr = "[::1]:9898".parse().unwrap();
        assert_eq!(k.open(&c, other, 1500), Err(CookieError::Invalid));
        assert_eq!(k.open(&c[..59], peer, 1500), Err(CookieError::Invalid));
        let stranger = CookieKeys::new([8; 16], 0);
        assert_eq!(stranger.open(&c, peer, 1500), Err(CookieError::Invalid));
    }

    #[test]
    fn stale_and_rotation() {
        let mut k = CookieKeys::new([7; 16], 0);
        let peer: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let c = k.seal(&state(), peer);
        assert_eq!(k.open(&c, peer, 61_000), Ok(state()));
        assert_eq!(
            k.open(&c, peer, 61_002),
            Err(CookieError::Stale(state(), 2000))
        );
        // Created in the "future" relative to now: stale too.
        assert!(matches!(k.open(&c, peer, 999), Err(CookieError::Stale(..))));
        k.rotate([9; 16], 10);
        assert_eq!(
            k.open(&c, peer, 1500),
            Ok(state()),
            "previous key still accepted"
        );
        let c2 = k.seal(&state(), peer);
        k.rotate([10; 16], 20);
        assert_eq!(k.open(&c2, peer, 1500), Ok(state()));
        assert_eq!(
            k.open(&c, peer, 1500),
            Err(CookieError::Invalid),
            "two rotations ago"
        );
    }
}
