//! Noise sessions, sans-IO: the mutual authentication and encryption of client↔daemon and chat traffic.
//!
//! Every session is a Noise handshake between two long-term [`Identity`] keys, then a transport in which each
//! message is sealed with ChaCha20-Poly1305 under a fresh key per direction and a nonce counting up (so a
//! replayed, reordered or altered message fails to open). Both carriers deliver in order (an ordered SCTP
//! stream, a TCP connection), so the next nonce is always the expected one.
//!
//! # Patterns
//! - **IK** when the initiator knows the responder's key (a pinned daemon; a chat peer whose key the
//!   authenticated roster gave): one round trip, and the initiator's first message already proves it talks to
//!   the key it expects.
//! - **XX** on first contact (a daemon reached by address with nothing pinned): one and a half round trips;
//!   the responder's key arrives in the handshake and the caller decides whether to trust it (pin it).
//!
//! With a network secret, both become their `psk` variants (`IKpsk2`, `XXpsk3`): without the secret nobody
//! completes a handshake, so nobody registers, reads the roster or delivers a message.
//!
//! The prologue names the protocol and its version ([`Context`]), so a handshake of one can never be replayed
//! into the other.
//!
//! # Framing
//! [`Frame`] is the first byte of every message on the carrier: which handshake starts, a handshake
//! continuation, sealed data, a roster broadcast ([`broadcast`]), or a refusal in words. Parsing is bounded
//! and total.
//!
//! # Randomness
//! Ephemeral keys come from a seed handed in per handshake (the cores seed it from their CSPRNG, which real
//! programs seed from the OS): nothing here reads the OS, and the whole-system simulation stays repeatable.

#![forbid(unsafe_code)]

pub mod broadcast;
pub mod ticket;

use std::fmt;

use blake2::{Blake2s256, Digest};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use snow::params::NoiseParams;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

use crate::codec::Malformed;
use crate::identity::{Identity, KEY_LEN, PublicKey};
use ticket::{Grant, SECRET_LEN, Ticket};

/// Bytes the AEAD tag adds to every sealed message.
pub const TAG_LEN: usize = 16;
/// Largest Noise message (the specification's limit).
pub const MAX_MESSAGE: usize = 65535;
/// Largest plaintext one sealed message carries.
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE - TAG_LEN;
/// Bytes a sealed data frame adds to its plaintext: the kind byte and the tag.
pub const SEALED_OVERHEAD: usize = 1 + TAG_LEN;
/// Largest refusal text accepted.
pub const MAX_REFUSAL: usize = 1024;
/// Bytes of a pre-shared key.
pub const PSK_LEN: usize = 32;

/// Which Noise handshake pattern.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// The initiator knows the responder's static key: 1 round trip.
    Ik,
    /// Neither knows the other's key: 1.5 round trips, the responder's key learned in the handshake.
    Xx,
    /// Resumption with a ticket ([`ticket`]): `NNpsk0` under the ticket's secret, 1 round trip, one X25519
    /// multiplication a side; both keys are known from the earlier session the ticket came from.
    Resume,
}

/// What a session carries; its prologue, so a handshake for one cannot complete as the other.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Context {
    /// Client ↔ daemon: registration and the roster (roster protocol 4).
    Roster,
    /// Client ↔ client: chat (chat protocol 2).
    Chat,
}

impl Context {
    fn prologue(self) -> &'static [u8] {
        match self {
            Context::Roster => b"multiproto roster 4",
            Context::Chat => b"multiproto chat 2",
        }
    }
}

/// The network secret's pre-shared key (from `--secret-file`), and the discovery MAC key beside it.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk {
    noise: [u8; PSK_LEN],
    mac: [u8; 32],
}

impl Psk {
    /// Derives both keys from the secret's bytes (each is BLAKE2s-256 of its own label and the secret, so
    /// neither reveals the other or the secret).
    pub fn from_secret(secret: &[u8]) -> Psk {
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut h = Blake2s256::new();
            h.update(label);
            h.update((secret.len() as u64).to_le_bytes());
            h.update(secret);
            h.finalize().into()
        };
        Psk {
            noise: derive(b"multiproto noise psk v1"),
            mac: derive(b"multiproto discovery mac v1"),
        }
    }

    /// The key discovery datagrams are authenticated with.
    pub fn discovery_key(&self) -> &[u8; 32] {
        &self.mac
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.write_str("Psk(..)")
    }
}

/// Why a handshake or a sealed message failed. Deliberately coarse: a peer learns nothing from which check
/// failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NoiseError {
    /// Authentication failed (a wrong key, a wrong secret, an altered or replayed message), or the message
    /// does not fit the handshake step.
    Rejected,
    /// A message or payload over the size limits.
    TooLarge,
    /// Called out of turn (a bug in the caller, never caused by a peer alone).
    OutOfTurn,
}

impl fmt::Display for NoiseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoiseError::Rejected => "authentication failed",
            NoiseError::TooLarge => "message too large",
            NoiseError::OutOfTurn => "handshake step out of turn",
        })
    }
}

impl std::error::Error for NoiseError {}

impl From<snow::Error> for NoiseError {
    fn from(e: snow::Error) -> NoiseError {
        match e {
            snow::Error::State(_) => NoiseError::OutOfTurn,
            _ => NoiseError::Rejected,
        }
    }
}

/// A seed for one purpose derived from a core's seed (BLAKE2s of a label and the seed): the SCTP endpoint and
/// the handshakes of one core draw from independent streams.
pub fn derive_seed(seed: &[u8; 32], label: &str) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(label.as_bytes());
    h.update(seed);
    h.finalize().into()
}

/// Random seeds for handshakes, one per handshake, from a core's seed.
pub struct Seeds(ChaCha20Rng);

impl Seeds {
    /// The stream of seeds derived from `seed`.
    pub fn new(seed: &[u8; 32]) -> Seeds {
        Seeds(ChaCha20Rng::from_seed(derive_seed(
            seed,
            "multiproto handshakes",
        )))
    }

    /// The next handshake's seed.
    pub fn next_seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.0.fill_bytes(&mut s);
        s
    }
}

impl fmt::Debug for Seeds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seeds(..)")
    }
}

/// `snow`'s default primitives, with the random numbers from a seed instead of the OS, and X25519 that knows
/// our own key pair (`local`): snow derives the public key from the secret each time a handshake is built, a
/// base-point multiplication we already did once when the identity was loaded (about 5 % of a full
/// handshake's instructions, on each side).
struct Seeded {
    seed: [u8; 32],
    local: Option<([u8; 32], [u8; 32])>,
}

struct SeededRng(ChaCha20Rng);

impl Random for SeededRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// X25519 for snow (the same operations as its default: clamped scalars, the Montgomery ladder, the public
/// key by the base-point table), through x25519-dalek, with our identity's public key already known.
struct Dh25519 {
    private: [u8; 32],
    public: [u8; 32],
    local: Option<([u8; 32], [u8; 32])>,
}

impl Dh for Dh25519 {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        KEY_LEN
    }
    fn priv_len(&self) -> usize {
        KEY_LEN
    }
    fn set(&mut self, privkey: &[u8]) {
        // snow hands over exactly `priv_len` bytes.
        self.private.copy_from_slice(&privkey[..KEY_LEN]);
        self.public = match self.local {
            Some((private, public)) if private == self.private => public,
            _ => x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(self.private))
                .to_bytes(),
        };
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut k = [0u8; 32];
        rng.try_fill_bytes(&mut k)?;
        self.local = None;
        self.set(&k);
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.private
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let Some(peer) = pubkey.first_chunk::<32>() else {
            return Err(snow::Error::Dh);
        };
        let shared = x25519_dalek::x25519(self.private, *peer);
        out[..KEY_LEN].copy_from_slice(&shared);
        Ok(())
    }
}

impl CryptoResolver for Seeded {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRng(ChaCha20Rng::from_seed(self.seed))))
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            snow::params::DHChoice::Curve25519 => Some(Box::new(Dh25519 {
                private: [0; 32],
                public: [0; 32],
                local: self.local,
            })),
            _ => None,
        }
    }
    fn resolve_hash(&self, choice: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

fn params(pattern: Pattern, psk: bool) -> NoiseParams {
    let name = match (pattern, psk) {
        (Pattern::Ik, false) => "Noise_IK_25519_ChaChaPoly_BLAKE2s",
        (Pattern::Ik, true) => "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s",
        (Pattern::Xx, false) => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
        (Pattern::Xx, true) => "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s",
        // The network secret is in the ticket key instead: a ticket opens only under the secret it was
        // issued under.
        (Pattern::Resume, _) => "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s",
    };
    // The four names are constants this build supports; a failure would show in every test.
    name.parse()
        .unwrap_or_else(|_| unreachable!("{name} parses"))
}

/// A handshake in progress (either side).
pub struct Handshake {
    hs: Box<snow::HandshakeState>,
    pattern: Pattern,
    /// The peer's key when the handshake itself carries none (a resumption): vouched for by the ticket.
    vouched: Option<PublicKey>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("pattern", &self.pattern)
            .field("initiator", &self.hs.is_initiator())
            .finish()
    }
}

impl Handshake {
    /// Starts a handshake as the initiator: IK towards `peer` if its key is known, else XX.
    pub fn initiate(
        ctx: Context,
        me: &Identity,
        peer: Option<&PublicKey>,
        psk: Option<&Psk>,
        seed: [u8; 32],
    ) -> Handshake {
        let pattern = if peer.is_some() {
            Pattern::Ik
        } else {
            Pattern::Xx
        };
        Self::build(ctx, pattern, me, peer, psk, seed, true)
    }

    /// Starts a handshake as the responder to a first message of `pattern` (see [`Frame::Init`]).
    pub fn respond(
        ctx: Context,
        pattern: Pattern,
        me: &Identity,
        psk: Option<&Psk>,
        seed: [u8; 32],
    ) -> Handshake {
        Self::build(ctx, pattern, me, None, psk, seed, false)
    }

    /// Starts a resumption as the initiator (the client), with a ticket the daemon `ticket.daemon` issued.
    pub fn resume(ctx: Context, ticket: &Ticket, seed: [u8; 32]) -> Handshake {
        Self::build_resume(
            ctx,
            &ticket.ticket,
            &ticket.secret,
            ticket.daemon,
            seed,
            true,
        )
    }

    /// Answers a resumption (the daemon) whose `ticket` opened to `grant`.
    pub fn respond_resume(ctx: Context, ticket: &[u8], grant: &Grant, seed: [u8; 32]) -> Handshake {
        Self::build_resume(ctx, ticket, &grant.secret, grant.client, seed, false)
    }

    /// A resumption: `NNpsk0` under the ticket's secret, the prologue the context's and then the ticket (so a
    /// first message cannot be moved onto another ticket); the peer's key is the one the ticket vouches for.
    fn build_resume(
        ctx: Context,
        ticket: &[u8],
        secret: &[u8; SECRET_LEN],
        vouched: PublicKey,
        seed: [u8; 32],
        initiator: bool,
    ) -> Handshake {
        let mut prologue = Vec::with_capacity(ctx.prologue().len() + ticket.len());
        prologue.extend_from_slice(ctx.prologue());
        prologue.extend_from_slice(ticket);
        let b = snow::Builder::with_resolver(
            params(Pattern::Resume, false),
            Box::new(Seeded { seed, local: None }),
        )
        .prologue(&prologue)
        .and_then(|b| b.psk(0, secret))
        .unwrap_or_else(|_| unreachable!("fixed-size parameters, set once"));
        Self::finish(b, Pattern::Resume, Some(vouched), initiator)
    }

    fn build(
        ctx: Context,
        pattern: Pattern,
        me: &Identity,
        peer: Option<&PublicKey>,
        psk: Option<&Psk>,
        seed: [u8; 32],
        initiator: bool,
    ) -> Handshake {
        let secret = me.secret_bytes();
        let mut b = snow::Builder::with_resolver(
            params(pattern, psk.is_some()),
            Box::new(Seeded {
                seed,
                local: Some((secret, me.public().0)),
            }),
        );
        // Each setter fails only for lengths snow does not expect; ours are fixed at 32 bytes, so these
        // cannot fail (the tests build every combination).
        b = b
            .local_private_key(&secret)
            .unwrap_or_else(|_| unreachable!());
        b = b
            .prologue(ctx.prologue())
            .unwrap_or_else(|_| unreachable!());
        if let Some(k) = peer {
            b = b.remote_public_key(&k.0).unwrap_or_else(|_| unreachable!());
        }
        if let Some(p) = psk {
            let at = match pattern {
                Pattern::Ik => 2,
                Pattern::Xx => 3,
                Pattern::Resume => 0,
            };
            b = b.psk(at, &p.noise).unwrap_or_else(|_| unreachable!());
        }
        Self::finish(b, pattern, None, initiator)
    }

    fn finish(
        b: snow::Builder<'_>,
        pattern: Pattern,
        vouched: Option<PublicKey>,
        initiator: bool,
    ) -> Handshake {
        let hs = if initiator {
            b.build_initiator()
        } else {
            b.build_responder()
        };
        Handshake {
            hs: Box::new(hs.unwrap_or_else(|_| unreachable!("a complete builder builds"))),
            pattern,
            vouched,
        }
    }

    /// The pattern.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// Whether the next step is ours to write.
    pub fn is_my_turn(&self) -> bool {
        self.hs.is_my_turn()
    }

    /// Whether every handshake message has been written and read.
    pub fn is_finished(&self) -> bool {
        self.hs.is_handshake_finished()
    }

    /// Writes our next handshake message, carrying `payload` (encrypted once the pattern allows), into
    /// `out`; returns its length.
    pub fn write(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, NoiseError> {
        if !self.hs.is_my_turn() || self.is_finished() {
            return Err(NoiseError::OutOfTurn);
        }
        Ok(self.hs.write_message(payload, out)?)
    }

    /// Writes our next handshake message into a new vector, after `prefix`.
    pub fn write_vec(&mut self, prefix: &[u8], payload: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let mut v = vec![0u8; prefix.len() + payload.len() + 128];
        v[..prefix.len()].copy_from_slice(prefix);
        let n = self.write(payload, &mut v[prefix.len()..])?;
        v.truncate(prefix.len() + n);
        Ok(v)
    }

    /// Reads the peer's next handshake message, whose payload (none, in our protocols: what a session
    /// carries is sealed after it) is dropped. A message that fails leaves the handshake unusable.
    pub fn read_only(&mut self, msg: &[u8]) -> Result<(), NoiseError> {
        let mut payload = vec![0u8; msg.len()];
        self.read(msg, &mut payload).map(|_| ())
    }

    /// The responder's step: reads the initiator's message ([`Handshake::read_only`]) and writes the
    /// answer, a [`kind::HANDSHAKE`] frame.
    pub fn answer(&mut self, msg: &[u8]) -> Result<Vec<u8>, NoiseError> {
        self.read_only(msg)?;
        self.write_vec(&[kind::HANDSHAKE], &[])
    }

    /// Reads the peer's next handshake message; its payload goes into `payload` (at least as long as
    /// `msg`). A message that fails leaves the handshake unusable: drop it.
    pub fn read(&mut self, msg: &[u8], payload: &mut [u8]) -> Result<usize, NoiseError> {
        if self.hs.is_my_turn() || self.is_finished() {
            return Err(NoiseError::OutOfTurn);
        }
        if msg.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLarge);
        }
        Ok(self.hs.read_message(msg, payload)?)
    }

    /// The peer's static key, once the handshake has carried it (IK: the responder after the first
    /// message; XX: the initiator after the second, the responder after the third; a resumption: the key
    /// its ticket vouches for, from the start).
    pub fn remote(&self) -> Option<PublicKey> {
        let Some(k) = self.hs.get_remote_static() else {
            return self.vouched;
        };
        let k: [u8; KEY_LEN] = k.try_into().ok()?;
        Some(PublicKey(k))
    }

    /// The finished handshake as a transport session, with the peer's authenticated key.
    pub fn into_session(mut self) -> Result<(Session, PublicKey), NoiseError> {
        if !self.is_finished() {
            return Err(NoiseError::OutOfTurn);
        }
        let remote = self.remote().ok_or(NoiseError::Rejected)?;
        // Noise's Split(): the first key for what the initiator sends, the second for what it receives.
        let (k1, k2) = self.hs.dangerously_get_raw_split();
        let (send, recv) = if self.hs.is_initiator() {
            (k1, k2)
        } else {
            (k2, k1)
        };
        Ok((
            Session {
                send: Half { key: send, n: 0 },
                recv: Half { key: recv, n: 0 },
            },
            remote,
        ))
    }
}

/// An established session: seals what we send, opens what the peer sends, each direction in order.
///
/// Noise's transport phase, kept as two keys and two counters (80 bytes, nothing on the heap) rather than in
/// `snow`'s transport state (a boxed cipher per direction, about 260 bytes with the allocator's share): the
/// daemon holds one per client, 100 000 of them. The messages are the same: ChaCha20-Poly1305 under the
/// direction's key, the nonce 4 zero bytes and the counter little-endian, no associated data.
pub struct Session {
    send: Half,
    recv: Half,
}

/// One direction of a session.
struct Half {
    key: [u8; 32],
    n: u64,
}

/// Noise's nonce for message `n` of a ChaCha20-Poly1305 session: 32 zero bits, then `n` little-endian.
fn transport_nonce(n: u64) -> ring::aead::Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_le_bytes());
    ring::aead::Nonce::assume_unique_for_key(b)
}

/// A session direction's key as ring takes it. ChaCha20-Poly1305 here is ring's (assembly, picked for the
/// CPU at run time): the same cipher as snow's and the broadcast's RustCrypto one, bit for bit, but several
/// times faster on the 64 KiB messages a file transfer seals, and no slower on a 50-byte roster delta (see
/// PERF.md, issue 16).
fn transport_key(key: &[u8; 32]) -> ring::aead::LessSafeKey {
    // A 32-byte key is always a valid ChaCha20-Poly1305 key.
    let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
        .unwrap_or_else(|_| unreachable!("a 32-byte ChaCha20-Poly1305 key"));
    ring::aead::LessSafeKey::new(unbound)
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Session(..)")
    }
}

impl Session {
    /// Seals `plain` into `out` (at least `plain.len() + TAG_LEN` bytes); returns the sealed length.
    pub fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, NoiseError> {
        if plain.len() > MAX_PLAINTEXT {
            return Err(NoiseError::TooLarge);
        }
        let len = plain.len() + TAG_LEN;
        // The last nonce is reserved (Noise §5.1); a session never gets near it.
        if out.len() < len || self.send.n == u64::MAX {
            return Err(NoiseError::TooLarge);
        }
        out[..plain.len()].copy_from_slice(plain);
        self.seal_in_place(&mut out[..len])
    }

    /// Seals in place: `buf` holds the plaintext and then [`TAG_LEN`] bytes of room for the tag; the
    /// ciphertext replaces the plaintext and the tag fills the room. Returns `buf.len()`. What a sender of
    /// bulk data uses: the plaintext is put where it is sent from, and never copied again.
    pub fn seal_in_place(&mut self, buf: &mut [u8]) -> Result<usize, NoiseError> {
        let Some(plain) = buf.len().checked_sub(TAG_LEN) else {
            return Err(NoiseError::TooLarge);
        };
        // The last nonce is reserved (Noise §5.1); a session never gets near it.
        if plain > MAX_PLAINTEXT || self.send.n == u64::MAX {
            return Err(NoiseError::TooLarge);
        }
        let (text, room) = buf.split_at_mut(plain);
        let tag = transport_key(&self.send.key)
            .seal_in_place_separate_tag(
                transport_nonce(self.send.n),
                ring::aead::Aad::empty(),
                text,
            )
            .map_err(|_| NoiseError::TooLarge)?;
        room.copy_from_slice(tag.as_ref());
        self.send.n += 1;
        Ok(buf.len())
    }

    /// Seals `plain` into a new vector, after `prefix` (the frame's kind byte).
    pub fn seal_vec(&mut self, prefix: &[u8], plain: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let mut v = vec![0u8; prefix.len() + plain.len() + TAG_LEN];
        v[..prefix.len()].copy_from_slice(prefix);
        let n = self.seal(plain, &mut v[prefix.len()..])?;
        v.truncate(prefix.len() + n);
        Ok(v)
    }

    /// Opens a sealed message into `out` (at least as long as `sealed`); returns the plaintext length. A
    /// message that fails (altered, replayed, out of order, sealed by someone else) is rejected and the
    /// session stays as it was, still expecting the same next message.
    pub fn open(&mut self, sealed: &[u8], out: &mut [u8]) -> Result<usize, NoiseError> {
        if sealed.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLarge);
        }
        let Some(len) = sealed.len().checked_sub(TAG_LEN) else {
            return Err(NoiseError::Rejected);
        };
        if out.len() < sealed.len() || self.recv.n == u64::MAX {
            return Err(NoiseError::Rejected);
        }
        out[..sealed.len()].copy_from_slice(sealed);
        let n = self.open_in_place(&mut out[..sealed.len()])?;
        debug_assert_eq!(n, len);
        Ok(n)
    }

    /// Opens the sealed message `buf` holds (ciphertext, then the tag) in place; returns the plaintext's
    /// length, at the front of `buf`. Rejected as [`Session::open`] rejects, the session unchanged.
    pub fn open_in_place(&mut self, buf: &mut [u8]) -> Result<usize, NoiseError> {
        if buf.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLarge);
        }
        let Some(len) = buf.len().checked_sub(TAG_LEN) else {
            return Err(NoiseError::Rejected);
        };
        if self.recv.n == u64::MAX {
            return Err(NoiseError::Rejected);
        }
        transport_key(&self.recv.key)
            .open_in_place(transport_nonce(self.recv.n), ring::aead::Aad::empty(), buf)
            .map_err(|_| NoiseError::Rejected)?;
        // Only a message that opened moves the counter: a replayed or forged one leaves the session as it was.
        self.recv.n += 1;
        Ok(len)
    }

    /// Opens a sealed message into a new vector.
    pub fn open_vec(&mut self, sealed: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let mut v = vec![0u8; sealed.len()];
        let n = self.open(sealed, &mut v)?;
        v.truncate(n);
        Ok(v)
    }
}

/// The initiator's side of a session over one carrier (the client's association to the daemon; a chat
/// connection), from the first handshake message to the open session: what [`crate::client::Client`] and the
/// load harness's simulated clients both run.
#[derive(Debug)]
pub enum Initiator {
    /// No session (none started, or it failed).
    Idle,
    /// The handshake is under way.
    Handshake(Handshake),
    /// The session is open.
    Open(Session),
}

/// What one message did to an [`Initiator`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to act on (a message out of place, or one that did not open: dropped).
    Nothing,
    /// The session opened: the responder proved it holds `key`. Send `reply` (XX's last handshake message)
    /// first, if there is one, then sealed data.
    Opened {
        /// The responder's key.
        key: PublicKey,
        /// The handshake message still to send.
        reply: Option<Vec<u8>>,
    },
    /// A sealed message, opened.
    Data(Vec<u8>),
    /// The responder holds `key`, which the caller does not accept; the session is dropped.
    NotAccepted(PublicKey),
    /// The responder refused, in these (unauthenticated) words; the session is dropped.
    Refused(String),
    /// The handshake failed (the responder does not hold the key we expected, a wrong secret, garbage).
    Failed,
    /// The responder did not accept our resumption ticket: forget it and make a full handshake (IK) to
    /// `key`, the daemon the ticket came from, on the same carrier.
    ResumeRefused(PublicKey),
}

impl Initiator {
    /// Starts a session: IK to `peer` if its key is known, else XX. Returns the initiator and the first
    /// message to send.
    pub fn start(
        ctx: Context,
        me: &Identity,
        peer: Option<&PublicKey>,
        psk: Option<&Psk>,
        seed: [u8; 32],
    ) -> (Initiator, Result<Vec<u8>, NoiseError>) {
        let mut hs = Handshake::initiate(ctx, me, peer, psk, seed);
        let first = hs.write_vec(&[Frame::init_kind(hs.pattern(), psk.is_some())], &[]);
        (Initiator::Handshake(hs), first)
    }

    /// Starts a resumption with `ticket` (see [`ticket`]); `psk` only says whether we have the network
    /// secret (the ticket key holds it). Returns the initiator and the first message to send.
    pub fn resume(
        ctx: Context,
        ticket: &Ticket,
        psk: bool,
        seed: [u8; 32],
    ) -> (Initiator, Result<Vec<u8>, NoiseError>) {
        let mut hs = Handshake::resume(ctx, ticket, seed);
        let mut head = Vec::with_capacity(1 + ticket::TICKET_LEN);
        head.push(Frame::init_kind(Pattern::Resume, psk));
        head.extend_from_slice(&ticket.ticket);
        let first = hs.write_vec(&head, &[]);
        (Initiator::Handshake(hs), first)
    }

    /// Whether the session is open.
    pub fn is_open(&self) -> bool {
        matches!(self, Initiator::Open(_))
    }

    /// Seals `plain` as a data frame, if the session is open.
    pub fn seal(&mut self, plain: &[u8]) -> Option<Vec<u8>> {
        match self {
            Initiator::Open(s) => s.seal_vec(&[kind::DATA], plain).ok(),
            _ => None,
        }
    }

    /// Handles one message from the responder; `accept` decides whether a key learned in an XX handshake
    /// may be followed (IK's key was chosen before it started).
    pub fn handle(&mut self, data: &[u8], accept: impl FnOnce(&PublicKey) -> bool) -> Step {
        let Ok(frame) = Frame::parse(data) else {
            return Step::Nothing;
        };
        match (frame, &mut *self) {
            (Frame::Data(sealed), Initiator::Open(s)) => match s.open_vec(sealed) {
                Ok(plain) => Step::Data(plain),
                Err(_) => Step::Nothing,
            },
            (Frame::Handshake(noise), Initiator::Handshake(hs)) => {
                if hs.read_only(noise).is_err() {
                    *self = Initiator::Idle;
                    return Step::Failed;
                }
                let mut reply = None;
                if !hs.is_finished() {
                    // XX: the responder's key arrived; say who we are only to one we accept.
                    match hs.remote() {
                        Some(k) if accept(&k) => {}
                        Some(k) => {
                            *self = Initiator::Idle;
                            return Step::NotAccepted(k);
                        }
                        None => {
                            *self = Initiator::Idle;
                            return Step::Failed;
                        }
                    }
                    match hs.write_vec(&[kind::HANDSHAKE], &[]) {
                        Ok(m) => reply = Some(m),
                        Err(_) => {
                            *self = Initiator::Idle;
                            return Step::Failed;
                        }
                    }
                }
                let Initiator::Handshake(hs) = std::mem::replace(self, Initiator::Idle) else {
                    return Step::Failed;
                };
                match hs.into_session() {
                    Ok((session, key)) => {
                        *self = Initiator::Open(session);
                        Step::Opened { key, reply }
                    }
                    Err(_) => Step::Failed,
                }
            }
            (Frame::ResumeRefused, Initiator::Handshake(hs)) if hs.pattern == Pattern::Resume => {
                let Some(key) = hs.vouched else {
                    return Step::Nothing;
                };
                *self = Initiator::Idle;
                Step::ResumeRefused(key)
            }
            // Words from the other end before a session. On an open session a refusal cannot be the
            // responder's (it would seal it) and is ignored.
            (Frame::Refuse(why), Initiator::Handshake(_) | Initiator::Idle) => {
                *self = Initiator::Idle;
                Step::Refused(why.to_string())
            }
            _ => Step::Nothing,
        }
    }
}

/// The kind byte that opens every message of a secured carrier.
pub mod kind {
    /// First handshake message, IK.
    pub const INIT_IK: u8 = 1;
    /// First handshake message, XX.
    pub const INIT_XX: u8 = 2;
    /// A later handshake message.
    pub const HANDSHAKE: u8 = 3;
    /// A sealed transport message.
    pub const DATA: u8 = 4;
    /// A refusal, in words, before or instead of a session (unauthenticated: shown as what the other end
    /// claims, never acted on beyond giving up).
    pub const REFUSE: u8 = 5;
    /// A roster broadcast: this client's head (counter, MAC) and the body sealed once for every client
    /// ([`super::broadcast`]).
    pub const BROADCAST: u8 = 6;
    /// The first byte of a broadcast's body, inside a [`BROADCAST`] frame; never a message of its own
    /// ([`super::broadcast`] says why it stays).
    pub const BROADCAST_BODY: u8 = 7;
    /// First handshake message of a resumption: the ticket, then the Noise message ([`super::ticket`]).
    pub const INIT_RESUME: u8 = 8;
    /// The daemon did not accept a resumption's ticket (expired, from before a key rotation): the client
    /// makes a full handshake on the same association. Unauthenticated, and harmless: all it can make a
    /// client do is the full handshake.
    pub const RESUME_REFUSED: u8 = 9;
    /// Or-ed into `INIT_*`: the handshake uses the network secret.
    pub const PSK: u8 = 0x80;
}

/// One message of a secured carrier.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A first handshake message.
    Init {
        /// Which handshake.
        pattern: Pattern,
        /// With the network secret.
        psk: bool,
        /// The Noise message.
        noise: &'a [u8],
    },
    /// The first message of a resumption.
    Resume {
        /// The client has the network secret.
        psk: bool,
        /// The ticket ([`ticket::TICKET_LEN`] bytes).
        ticket: &'a [u8],
        /// The Noise message.
        noise: &'a [u8],
    },
    /// The ticket of a resumption was not accepted: make a full handshake.
    ResumeRefused,
    /// A later handshake message.
    Handshake(&'a [u8]),
    /// A sealed transport message.
    Data(&'a [u8]),
    /// The other end refuses, and says why (unauthenticated).
    Refuse(&'a str),
    /// A roster broadcast (see [`broadcast`]): our counter and MAC, and the body shared by every client it
    /// is sent to. Only its layout is checked: [`broadcast::Receiver::accept`] checks the rest.
    Broadcast(broadcast::Tagged<'a>),
}

impl<'a> Frame<'a> {
    /// Parses one message; anything but one of ours, within the size limits, is an error.
    pub fn parse(b: &'a [u8]) -> Result<Frame<'a>, Malformed> {
        let (&k, rest) = b.split_first().ok_or(crate::codec::TRUNCATED)?;
        if rest.len() > MAX_MESSAGE {
            return Err(Malformed("secured message too long"));
        }
        let psk = k & kind::PSK != 0;
        match k & !kind::PSK {
            kind::INIT_IK => Ok(Frame::Init {
                pattern: Pattern::Ik,
                psk,
                noise: rest,
            }),
            kind::INIT_XX => Ok(Frame::Init {
                pattern: Pattern::Xx,
                psk,
                noise: rest,
            }),
            kind::INIT_RESUME if rest.len() >= ticket::TICKET_LEN => {
                let (ticket, noise) = rest.split_at(ticket::TICKET_LEN);
                Ok(Frame::Resume { psk, ticket, noise })
            }
            kind::INIT_RESUME => Err(Malformed("resumption without a whole ticket")),
            _ if psk => Err(Malformed("secret flag on a non-initial message")),
            kind::RESUME_REFUSED if rest.is_empty() => Ok(Frame::ResumeRefused),
            kind::RESUME_REFUSED => Err(Malformed("bytes after a resumption refusal")),
            kind::HANDSHAKE => Ok(Frame::Handshake(rest)),
            kind::DATA => Ok(Frame::Data(rest)),
            kind::BROADCAST => broadcast::Tagged::parse(rest).map(Frame::Broadcast),
            kind::REFUSE if rest.len() <= MAX_REFUSAL => std::str::from_utf8(rest)
                .map(Frame::Refuse)
                .map_err(|_| Malformed("refusal not UTF-8")),
            _ => Err(Malformed("unknown secured message kind")),
        }
    }

    /// The kind byte of a first handshake message.
    pub fn init_kind(pattern: Pattern, psk: bool) -> u8 {
        let k = match pattern {
            Pattern::Ik => kind::INIT_IK,
            Pattern::Xx => kind::INIT_XX,
            Pattern::Resume => kind::INIT_RESUME,
        };
        if psk { k | kind::PSK } else { k }
    }

    /// A refusal message: the kind byte and `why`, cut to [`MAX_REFUSAL`] bytes on a character boundary.
    pub fn refusal(why: &str) -> Vec<u8> {
        let mut end = why.len().min(MAX_REFUSAL);
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        let mut v = Vec::with_capacity(end + 1);
        v.push(kind::REFUSE);
        v.extend_from_slice(&why.as_bytes()[..end]);
        v
    }
}

#[cfg(test)]
mod tests;
