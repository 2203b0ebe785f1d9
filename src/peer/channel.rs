//! The Noise layer of one chat connection: what TCP carries is a stream of Noise messages, each behind a
//! 2-byte big-endian length (the framing Noise suggests for streams), each opening with a
//! [`crate::secure::Frame`] kind byte. Inside the session the chat frames ([`super::frame`]) travel as a
//! plaintext byte stream, split into sealed messages wherever convenient.
//!
//! The connection's opener is the initiator: IK to the key the (authenticated) roster gives for the nickname
//! it writes to, so only that key's holder can read what follows; XX to an address given directly, whose
//! key nobody vouches for. The acceptor is the responder and learns the opener's key from the handshake:
//! the key, not a nickname the opener claims, is who it is.
//!
//! Bounded: one Noise message (at most 65 537 bytes with its length) is buffered at a time; plaintext queued
//! before the session opens is bounded by the caller's frame queue.

use crate::identity::{Identity, PublicKey};
use crate::secure::{
    Context, Frame, Handshake, Initiator, MAX_MESSAGE, Psk, SEALED_OVERHEAD, Seeds, Step, kind,
};

/// Bytes of the length prefix of each Noise message on the stream.
const LEN: usize = 2;
/// Plaintext sealed into one Noise message at most (the limit less the kind byte and the tag).
const CHUNK: usize = MAX_MESSAGE - 1 - crate::secure::TAG_LEN;

/// What the Noise layer needs from the peer: our key, the network secret, and seeds for handshakes.
pub struct Keys<'a> {
    /// Our identity.
    pub me: &'a Identity,
    /// The network secret, if any.
    pub psk: Option<&'a Psk>,
    /// Where handshake seeds come from.
    pub seeds: &'a mut Seeds,
}

/// Why a connection's Noise layer gave up (the connection is then closed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// The bytes are not a Noise message stream of ours, or a message arrived out of place.
    Malformed,
    /// The handshake failed: the other end does not hold the key we expected, or not our secret.
    Handshake,
    /// A sealed message did not open (forged, replayed, altered).
    Forged,
    /// The other end refused, and said why (its words, unauthenticated).
    Refused(String),
    /// The other end's key (XX, an address given directly) is one we do not accept.
    NotAccepted(PublicKey),
}

enum State {
    /// We opened the connection.
    Out(Initiator),
    /// We accepted it; no message yet.
    In,
    /// We accepted it and answered an XX first message; its last message is due.
    InHandshake(Handshake),
    /// Session open.
    Open(crate::secure::Session),
}

/// One chat connection's Noise layer.
pub struct Channel {
    state: State,
    /// A Noise message being received, with its length prefix.
    buf: Vec<u8>,
    /// Plaintext written before the session opened, sealed once it does.
    early: Vec<u8>,
    /// The other end's key, once the handshake proved it.
    remote: Option<PublicKey>,
}

impl Channel {
    /// The opener's side: IK to `peer` if its key is known, else XX. Returns the channel and the bytes to
    /// write first.
    pub fn outgoing(keys: &mut Keys<'_>, peer: Option<&PublicKey>) -> (Channel, Vec<u8>) {
        let seed = keys.seeds.next_seed();
        let (init, first) = Initiator::start(Context::Chat, keys.me, peer, keys.psk, seed);
        let mut wire = Vec::new();
        if let Ok(m) = first {
            put(&mut wire, &m);
        }
        let ch = Channel {
            state: State::Out(init),
            buf: Vec::new(),
            early: Vec::new(),
            remote: None,
        };
        (ch, wire)
    }

    /// The acceptor's side.
    pub fn incoming() -> Channel {
        Channel {
            state: State::In,
            buf: Vec::new(),
            early: Vec::new(),
            remote: None,
        }
    }

    /// Whether the session is open.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_)) || matches!(&self.state, State::Out(i) if i.is_open())
    }

    /// The other end's key, once proved.
    pub fn remote(&self) -> Option<PublicKey> {
        self.remote
    }

    /// Seals `plain` onto `wire` if the session is open, else keeps it until it opens.
    pub fn write(&mut self, plain: &[u8], wire: &mut Vec<u8>) {
        if !self.is_open() {
            self.early.extend_from_slice(plain);
            return;
        }
        self.seal_into(plain, wire);
    }

    fn seal_into(&mut self, plain: &[u8], wire: &mut Vec<u8>) {
        for chunk in plain.chunks(CHUNK) {
            match &mut self.state {
                // The common case, sealed in place at the end of `wire` (no buffer per message).
                State::Open(s) => {
                    let at = wire.len();
                    let sealed = SEALED_OVERHEAD + chunk.len();
                    // A chunk is at most CHUNK bytes, so its sealed form fits the u16 length. The plaintext
                    // is copied once, to where it goes out from, and sealed there.
                    wire.extend_from_slice(&(sealed as u16).to_be_bytes());
                    wire.push(kind::DATA);
                    wire.extend_from_slice(chunk);
                    wire.extend_from_slice(&[0; crate::secure::TAG_LEN]);
                    if s.seal_in_place(&mut wire[at + LEN + 1..]).is_err() {
                        wire.truncate(at);
                    }
                }
                State::Out(i) => {
                    if let Some(m) = i.seal(chunk) {
                        put(wire, &m);
                    }
                }
                _ => {}
            }
        }
    }

    /// Bytes read from the connection: opened plaintext goes to `plain`, what must be written back (the
    /// responder's handshake answer, plaintext held until the session opened) to `wire`. `keys` is used when
    /// the first message arrives on an accepted connection; `accept` decides whether a key learned in an XX
    /// handshake we opened may be followed.
    pub fn read(
        &mut self,
        mut bytes: &[u8],
        keys: &mut Keys<'_>,
        accept: impl Fn(&PublicKey) -> bool,
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<(), ChannelError> {
        while !bytes.is_empty() {
            // Whole messages at the front of `bytes`, with nothing buffered before them, are handled where
            // they are, not copied into the buffer first (the common case for bulk data).
            if self.buf.is_empty()
                && let Some(len) = bytes
                    .get(..LEN)
                    .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                && len > 0
                && bytes.len() >= LEN + len
            {
                let (msg, rest) = bytes.split_at(LEN + len);
                self.message(&msg[LEN..], keys, &accept, plain, wire)?;
                bytes = rest;
                continue;
            }
            // The length prefix, then exactly the message it announces: never more than one buffered.
            let need = if self.buf.len() < LEN {
                LEN - self.buf.len()
            } else {
                LEN + usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]])) - self.buf.len()
            };
            let take = need.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() < LEN {
                continue;
            }
            let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
            if len == 0 {
                return Err(ChannelError::Malformed);
            }
            if self.buf.len() < LEN + len {
                continue;
            }
            // Taken for the call and given back emptied, so the next message reuses its allocation.
            let mut msg = std::mem::take(&mut self.buf);
            self.message(&msg[LEN..], keys, &accept, plain, wire)?;
            msg.clear();
            self.buf = msg;
        }
        Ok(())
    }

    fn message(
        &mut self,
        msg: &[u8],
        keys: &mut Keys<'_>,
        accept: &impl Fn(&PublicKey) -> bool,
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<(), ChannelError> {
        match &mut self.state {
            State::Out(init) => match init.handle(msg, accept) {
                Step::Nothing => Err(ChannelError::Malformed),
                Step::Data(p) => {
                    plain.extend_from_slice(&p);
                    Ok(())
                }
                Step::Opened { key, reply } => {
                    self.remote = Some(key);
                    if let Some(m) = reply {
                        put(wire, &m);
                    }
                    self.flush_early(wire);
                    Ok(())
                }
                Step::NotAccepted(k) => Err(ChannelError::NotAccepted(k)),
                Step::Refused(why) => Err(ChannelError::Refused(why)),
                Step::Failed => Err(ChannelError::Handshake),
                // Chat never resumes (tickets are the daemon's), so nothing can refuse one.
                Step::ResumeRefused(_) => Err(ChannelError::Malformed),
            },
            State::In => {
                let Ok(Frame::Init {
                    pattern,
                    psk,
                    noise,
                }) = Frame::parse(msg)
                else {
                    return Err(ChannelError::Malformed);
                };
                if psk != keys.psk.is_some() {
                    // Say why, so an honest client with the wrong setting learns what to change.
                    let why = if psk {
                        "this client has no network secret"
                    } else {
                        "this client requires the network secret (--secret-file)"
                    };
                    put(wire, &Frame::refusal(why));
                    return Err(ChannelError::Handshake);
                }
                let seed = keys.seeds.next_seed();
                let mut hs = Handshake::respond(Context::Chat, pattern, keys.me, keys.psk, seed);
                let reply = hs.answer(noise).map_err(|_| ChannelError::Handshake)?;
                put(wire, &reply);
                if hs.is_finished() {
                    self.open(hs, wire)
                } else {
                    self.state = State::InHandshake(hs);
                    Ok(())
                }
            }
            State::InHandshake(hs) => {
                let Ok(Frame::Handshake(noise)) = Frame::parse(msg) else {
                    return Err(ChannelError::Malformed);
                };
                hs.read_only(noise).map_err(|_| ChannelError::Handshake)?;
                let State::InHandshake(hs) = std::mem::replace(&mut self.state, State::In) else {
                    return Err(ChannelError::Malformed);
                };
                self.open(hs, wire)
            }
            State::Open(s) => {
                let Ok(Frame::Data(sealed)) = Frame::parse(msg) else {
                    return Err(ChannelError::Malformed);
                };
                // Copied once, to the end of `plain`, and opened there.
                let at = plain.len();
                plain.extend_from_slice(sealed);
                match s.open_in_place(&mut plain[at..]) {
                    Ok(n) => {
                        plain.truncate(at + n);
                        Ok(())
                    }
                    Err(_) => {
                        plain.truncate(at);
                        Err(ChannelError::Forged)
                    }
                }
            }
        }
    }

    fn open(&mut self, hs: Handshake, wire: &mut Vec<u8>) -> Result<(), ChannelError> {
        let (session, key) = hs.into_session().map_err(|_| ChannelError::Handshake)?;
        self.state = State::Open(session);
        self.remote = Some(key);
        self.flush_early(wire);
        Ok(())
    }

    fn flush_early(&mut self, wire: &mut Vec<u8>) {
        let early = std::mem::take(&mut self.early);
        if !early.is_empty() {
            self.seal_into(&early, wire);
        }
    }
}

/// Appends one Noise message with its length prefix (messages are at most 65 535 bytes by construction).
fn put(wire: &mut Vec<u8>, msg: &[u8]) {
    let len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
    wire.extend_from_slice(&len.to_be_bytes());
    wire.extend_from_slice(&msg[..usize::from(len)]);
}
