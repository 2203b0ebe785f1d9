//! Resumption tickets: how a client that had a session with the daemon opens the next one (after the
//! daemon restarted, or its association failed) with one X25519 multiplication a side instead of four.
//!
//! At the end of every full handshake the daemon hands the client, inside the session, a random *resumption
//! secret* and a *ticket*: that secret, the client's key and an expiry time, encrypted and authenticated
//! (ChaCha20-Poly1305) under a *ticket key* only the daemon can derive. The daemon keeps nothing: the
//! ticket carries its own state, so a daemon that restarted still reads the tickets it issued before.
//!
//! To resume, the client sends the ticket beside the first message of a `Noise_NNpsk0` handshake whose
//! pre-shared key is the resumption secret, with the ticket in the prologue. The daemon opens the ticket,
//! learns the secret and the client's key, and answers. Only the holder of the secret (the client the
//! ticket was issued to) can complete the handshake, and only the holder of the ticket key (the daemon
//! that issued it) can learn the secret, so both ends are authenticated as in the full handshake; the
//! ephemeral-ephemeral DH keeps each resumed session's keys secret even from someone who later learns the
//! ticket key. This is the shape of TLS 1.3's `psk_dhe_ke` resumption (RFC 8446 §2.2), built from Noise's
//! own PSK modifier.
//!
//! The ticket key is derived from the daemon's long-term secret and, with a network secret, from that too:
//! rotating either one invalidates every ticket (the client then falls back to a full handshake at once).
//!
//! Layout of a ticket ([`TICKET_LEN`] bytes): `nonce 12 ‖ ciphertext of (client key 32 ‖ secret 32 ‖
//! expiry, Unix ms, u64 big-endian) ‖ AEAD tag 16`.

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};

use super::{Psk, TAG_LEN};
use crate::identity::{Identity, KEY_LEN, PublicKey};

/// Bytes of a resumption secret.
pub const SECRET_LEN: usize = 32;
/// Bytes of a ticket's nonce.
const NONCE_LEN: usize = 12;
/// Bytes of a ticket's plaintext: the client's key, the secret, the expiry.
const PLAIN_LEN: usize = KEY_LEN + SECRET_LEN + 8;
/// Bytes of a ticket.
pub const TICKET_LEN: usize = NONCE_LEN + PLAIN_LEN + TAG_LEN;
/// Associated data of every ticket: a ticket of another format or purpose never opens as one of these.
const AD: &[u8] = b"multiproto roster ticket v1";

/// The daemon's ticket key: issues tickets and opens them.
pub struct TicketKey(ChaCha20Poly1305);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("TicketKey(..)")
    }
}

/// What a ticket the daemon issued says, once opened.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    /// The client it was issued to (proved by that client's full handshake).
    pub client: PublicKey,
    /// The resumption secret (the resumed handshake's pre-shared key).
    pub secret: [u8; SECRET_LEN],
    /// When it expires, Unix ms.
    pub expires_ms: u64,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("client", &self.client.fingerprint())
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// Why a ticket was not accepted.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TicketError {
    /// Not one this daemon issued under its current keys (altered, forged, another daemon's, or from
    /// before a key or secret rotation), or not a ticket at all.
    Invalid,
    /// Issued here, but past its expiry.
    Expired,
}

impl TicketKey {
    /// The ticket key of a daemon with `identity` (and the network secret `psk`, if any): BLAKE2s of a
    /// label, the identity's secret and the secret's key, so it is the same after a restart and different
    /// after a rotation of either.
    pub fn derive(identity: &Identity, psk: Option<&Psk>) -> TicketKey {
        let mut h = Blake2s256::new();
        h.update(b"multiproto roster ticket key v1");
        h.update(identity.secret_bytes());
        if let Some(p) = psk {
            h.update(p.noise);
        }
        let key: [u8; 32] = h.finalize().into();
        TicketKey(ChaCha20Poly1305::new(&key.into()))
    }

    /// A ticket for `grant`, under a `nonce` never used before with this key (the caller's CSPRNG: 96 random
    /// bits, so no two tickets of one key share one in practice).
    pub fn issue(&self, grant: &Grant, nonce: [u8; NONCE_LEN]) -> [u8; TICKET_LEN] {
        let mut t = [0u8; TICKET_LEN];
        t[..NONCE_LEN].copy_from_slice(&nonce);
        let plain = &mut t[NONCE_LEN..NONCE_LEN + PLAIN_LEN];
        plain[..KEY_LEN].copy_from_slice(&grant.client.0);
        plain[KEY_LEN..KEY_LEN + SECRET_LEN].copy_from_slice(&grant.secret);
        plain[KEY_LEN + SECRET_LEN..].copy_from_slice(&grant.expires_ms.to_be_bytes());
        // Encrypting 72 bytes cannot fail (the AEAD's limit is 2^38 bytes).
        if let Ok(tag) = self
            .0
            .encrypt_in_place_detached(&Nonce::from(nonce), AD, plain)
        {
            t[NONCE_LEN + PLAIN_LEN..].copy_from_slice(&tag);
        }
        t
    }

    /// Opens a ticket at wall-clock time `now_ms`: what it grants, if this daemon issued it under its current
    /// keys and it has not expired.
    pub fn open(&self, ticket: &[u8], now_ms: u64) -> Result<Grant, TicketError> {
        if ticket.len() != TICKET_LEN {
            return Err(TicketError::Invalid);
        }
        let (nonce, rest) = ticket.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(PLAIN_LEN);
        let mut plain = [0u8; PLAIN_LEN];
        plain.copy_from_slice(ct);
        self.0
            .decrypt_in_place_detached(Nonce::from_slice(nonce), AD, &mut plain, tag.into())
            .map_err(|_| TicketError::Invalid)?;
        let mut client = [0u8; KEY_LEN];
        client.copy_from_slice(&plain[..KEY_LEN]);
        let mut secret = [0u8; SECRET_LEN];
        secret.copy_from_slice(&plain[KEY_LEN..KEY_LEN + SECRET_LEN]);
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&plain[KEY_LEN + SECRET_LEN..]);
        let grant = Grant {
            client: PublicKey(client),
            secret,
            expires_ms: u64::from_be_bytes(expires),
        };
        if now_ms >= grant.expires_ms {
            return Err(TicketError::Expired);
        }
        Ok(grant)
    }
}

/// What a client keeps of a ticket: enough to resume with the daemon that issued it.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The daemon that issued it (resume only with a daemon that proves this key, i.e. the pinned one).
    pub daemon: PublicKey,
    /// The ticket, opaque to the client.
    pub ticket: [u8; TICKET_LEN],
    /// The resumption secret.
    pub secret: [u8; SECRET_LEN],
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Ticket")
            .field("daemon", &self.daemon.fingerprint())
            .finish()
    }
}
