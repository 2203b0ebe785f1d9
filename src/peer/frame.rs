//! Chat frames on a TCP connection between two clients: a 4-byte big-endian length (of what follows), a type
//! byte, and the body. Layouts in `docs/PROTOCOL.md`.
//!
//! [`Reader`] reassembles frames from whatever pieces TCP delivers, never buffering more than one maximal
//! frame, and rejects an oversized length before reading its body. The framing is shared: a file transfer's
//! connection (issue 16) carries its frames the same way, through the same [`Reassembler`]
//! (generic over the frame type, [`Body`]) and [`framed`].

use std::fmt;
use std::marker::PhantomData;

use crate::codec::{self, Malformed, Put};
use crate::group::{ChannelName, Scope};
use crate::nick::Nick;

/// Largest message text, in bytes of UTF-8: what the frame's 16-bit length field holds, 64 KiB less one byte
/// (a long paste, a log excerpt; it was 4 KiB, and longer lines were refused).
pub const MAX_TEXT: usize = u16::MAX as usize;
/// Largest frame body accepted (a MSG with the largest text and its fields).
pub const MAX_FRAME: usize = MAX_TEXT + 64;
/// Protocol version carried in HELLO.
pub const VERSION: u8 = 1;

const HELLO: u8 = 1;
const MSG: u8 = 2;
const ACK: u8 = 3;
/// A MSG said in a scope other than one-to-one (to everyone, in a channel): the scope follows the sent time.
/// A one-to-one message stays a MSG, so it reads the same to a peer from before channels.
const MSG_IN: u8 = 4;

/// Scope kinds in a MSG_IN.
const SCOPE_EVERYONE: u8 = 1;
const SCOPE_CHANNEL: u8 = 2;

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame on a connection, both ways: who is speaking.
    Hello {
        /// The speaker's nickname.
        nick: Nick,
        /// Its instance id (changes each start).
        instance: u64,
    },
    /// A message.
    Msg {
        /// Unique per sender instance.
        id: u64,
        /// When the sender sent it (Unix ms, the sender's clock).
        sent_ms: u64,
        /// Where it was said: to the receiver alone, to everyone, in a channel.
        scope: Scope,
        /// The text (UTF-8, at most [`MAX_TEXT`] bytes), unsanitised.
        text: String,
    },
    /// The receiver has the message with this id.
    Ack {
        /// The message's id.
        id: u64,
    },
}

/// Why a connection's input was refused (a chat connection's, or a file transfer's: they share the framing).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// The length prefix exceeds the frame type's largest body ([`MAX_FRAME`] for chat frames).
    Oversized,
    /// A frame that does not parse (unknown type, bad lengths or values, a string not UTF-8 or too long).
    Malformed,
}

impl FrameError {
    /// A short name for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameError::Oversized => "oversized frame",
            FrameError::Malformed => "malformed frame",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Frame {
    /// Appends the frame, length prefix included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        framed(out, |out| match self {
            Frame::Hello { nick, instance } => {
                out.put_u8(HELLO);
                out.put_u8(VERSION);
                out.put_u64(*instance);
                out.put_nick(nick);
            }
            Frame::Msg {
                id,
                sent_ms,
                scope,
                text,
            } => {
                out.put_u8(if *scope == Scope::Direct { MSG } else { MSG_IN });
                out.put_u64(*id);
                out.put_u64(*sent_ms);
                match scope {
                    Scope::Direct => {}
                    Scope::Everyone => out.put_u8(SCOPE_EVERYONE),
                    Scope::Channel(c) => {
                        out.put_u8(SCOPE_CHANNEL);
                        out.put_u8(c.as_bytes().len() as u8);
                        out.put_bytes(c.as_bytes());
                    }
                }
                // Cut at a char boundary, so an over-long text still makes a frame the peer accepts.
                let t = crate::utf8_prefix(text, MAX_TEXT).as_bytes();
                out.put_u16(t.len() as u16);
                out.put_bytes(t);
            }
            Frame::Ack { id } => {
                out.put_u8(ACK);
                out.put_u64(*id);
            }
        });
    }

    /// Parses a frame body (type byte onwards). Every field is checked and nothing may follow the frame.
    pub fn parse(b: &[u8]) -> Result<Frame, FrameError> {
        Self::read(&mut codec::Reader::new(b)).map_err(|_| FrameError::Malformed)
    }

    fn read(r: &mut codec::Reader<'_>) -> Result<Frame, Malformed> {
        let f = match r.u8()? {
            HELLO => {
                if r.u8()? != VERSION {
                    return Err(Malformed("version"));
                }
                let instance = r.u64()?;
                Frame::Hello {
                    nick: r.nick()?,
                    instance,
                }
            }
            t @ (MSG | MSG_IN) => {
                let id = r.u64()?;
                let sent_ms = r.u64()?;
                let scope = if t == MSG {
                    Scope::Direct
                } else {
                    match r.u8()? {
                        SCOPE_EVERYONE => Scope::Everyone,
                        SCOPE_CHANNEL => {
                            let n = usize::from(r.u8()?);
                            Scope::Channel(
                                ChannelName::from_bytes(r.take(n)?)
                                    .map_err(|_| Malformed("channel name"))?,
                            )
                        }
                        _ => return Err(Malformed("scope")),
                    }
                };
                let n = usize::from(r.u16()?);
                if n > MAX_TEXT {
                    return Err(Malformed("text too long"));
                }
                let text = String::from_utf8(r.take(n)?.to_vec())
                    .map_err(|_| Malformed("text not UTF-8"))?;
                Frame::Msg {
                    id,
                    sent_ms,
                    scope,
                    text,
                }
            }
            ACK => Frame::Ack { id: r.u64()? },
            _ => return Err(Malformed("frame type")),
        };
        r.end()?;
        Ok(f)
    }
}

impl Body for Frame {
    const MAX: usize = MAX_FRAME;
    fn parse_body(b: &[u8]) -> Result<Frame, FrameError> {
        Frame::parse(b)
    }
}

/// Appends one frame to `out`: a 4-byte big-endian length, then what `body` writes (the type byte and the
/// fields). The caller keeps the body within its frame type's [`Body::MAX`].
pub fn framed(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.put_u32(0);
    body(out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A frame type carried with this framing (a 4-byte length, then the type byte and the body): what
/// [`Reassembler`] needs to reassemble it.
pub trait Body: Sized {
    /// Largest body (type byte onwards) a length prefix may announce; a longer one is refused before any of
    /// it is buffered.
    const MAX: usize;
    /// Parses one body, strictly (the whole of `b`, nothing after the frame).
    fn parse_body(b: &[u8]) -> Result<Self, FrameError>;
}

/// Reassembles chat frames from a byte stream.
pub type Reader = Reassembler<Frame>;

/// Reassembles frames of type `F` from a byte stream ([`Reader`] for chat frames,
/// a file transfer's own for its frames).
pub struct Reassembler<F> {
    buf: Vec<u8>,
    /// Set by the first error; the stream is then out of step for good, so later input is refused unread.
    failed: Option<FrameError>,
    /// `fn() -> F`: the reader makes `F`s but holds none, so it is `Send` and `Sync` whatever `F` is.
    frames: PhantomData<fn() -> F>,
}

impl<F> Default for Reassembler<F> {
    fn default() -> Self {
        Reassembler {
            buf: Vec::new(),
            failed: None,
            frames: PhantomData,
        }
    }
}

impl<F> fmt::Debug for Reassembler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reassembler")
            .field("buffered", &self.buf.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl<F: Body> Reassembler<F> {
    /// Whether part of a frame is waiting for the rest.
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes read from the connection and returns every complete frame, or the first error (after which
    /// the connection must be closed; every later call returns the same error and buffers nothing).
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<F>) -> Result<(), FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let r = self.push_inner(bytes, out);
        if let Err(e) = r {
            self.failed = Some(e);
            self.buf = Vec::new();
        }
        r
    }

    fn push_inner(&mut self, mut bytes: &[u8], out: &mut Vec<F>) -> Result<(), FrameError> {
        while !bytes.is_empty() {
            // A whole frame at the front of `bytes`, with nothing held before it, is parsed where it is,
            // not copied into the buffer first (the common case for a transfer's DATA frames). The checks
            // are the buffered path's: the length's bounds before anything else.
            if self.buf.is_empty()
                && let Some(l) = bytes.get(..4)
            {
                let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                if len > F::MAX {
                    return Err(FrameError::Oversized);
                }
                if len == 0 {
                    return Err(FrameError::Malformed);
                }
                if bytes.len() >= 4 + len {
                    out.push(F::parse_body(&bytes[4..4 + len])?);
                    bytes = &bytes[4 + len..];
                    continue;
                }
            }
            // Fill the length prefix, then exactly the frame it announces, so the buffer never holds more
            // than one frame.
            let need = if self.buf.len() < 4 {
                4 - self.buf.len()
            } else {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                4 + len - self.buf.len()
            };
            let take = need.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len > F::MAX {
                    return Err(FrameError::Oversized);
                }
                if len == 0 {
                    return Err(FrameError::Malformed);
                }
            }
            if self.buf.len() > 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if self.buf.len() == 4 + len {
                    out.push(F::parse_body(&self.buf[4..])?);
                    self.buf.clear();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Hello {
                nick: Nick::new("alice").unwrap(),
                instance: 42,
            },
            Frame::Msg {
                id: 7,
                sent_ms: 1_700_000_000_000,
                scope: Scope::Direct,
                text: "héllo ✓".into(),
            },
            Frame::Msg {
                id: 8,
                sent_ms: 1,
                scope: Scope::Direct,
                text: "x".repeat(MAX_TEXT),
            },
            Frame::Msg {
                id: 9,
                sent_ms: 2,
                scope: Scope::Everyone,
                text: "to all".into(),
            },
            Frame::Msg {
                id: 10,
                sent_ms: 3,
                scope: Scope::Channel(ChannelName::new(&format!("#{}", "o".repeat(31))).unwrap()),
                text: "x".repeat(MAX_TEXT),
            },
            Frame::Ack { id: 7 },
        ]
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut stream = Vec::new();
        for f in frames() {
            f.encode(&mut stream);
        }
        for cut in 0..=stream.len() {
            let mut r = Reader::default();
            let mut out = Vec::new();
            r.push(&stream[..cut], &mut out).unwrap();
            r.push(&stream[cut..], &mut out).unwrap();
            assert_eq!(out, frames(), "cut at {cut}");
            assert!(!r.is_partial());
        }
        // One byte at a time.
        let mut r = Reader::default();
        let mut out = Vec::new();
        for b in &stream {
            r.push(std::slice::from_ref(b), &mut out).unwrap();
            assert!(r.buffered() <= 4 + MAX_FRAME);
        }
        assert_eq!(out, frames());
    }

    #[test]
    fn oversized_and_malformed_are_refused() {
        let mut r = Reader::default();
        let mut out = Vec::new();
        assert_eq!(
            r.push(&u32::MAX.to_be_bytes(), &mut out),
            Err(FrameError::Oversized)
        );
        // The error sticks: more input is refused without being buffered (a zero length would otherwise
        // never consume anything, an oversized one would buffer without end).
        assert_eq!(r.push(&[0; 100], &mut out), Err(FrameError::Oversized));
        assert_eq!(r.buffered(), 0);
        let mut r = Reader::default();
        assert_eq!(r.push(&[0, 0, 0, 0], &mut out), Err(FrameError::Malformed));
        assert_eq!(
            r.push(&[0, 0, 0, 0, 1], &mut out),
            Err(FrameError::Malformed)
        );
        assert_eq!(r.buffered(), 0);
        for body in [
            &[9u8][..],
            &[ACK, 1, 2],
            &[HELLO, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'a'],
            &[MSG, 0],
            // A scope of an unknown kind, and a channel name not in its one spelling.
            &[
                MSG_IN, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 3, 0, 1, b'x',
            ],
            &[
                MSG_IN, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, b'#', b'A', 0, 1,
                b'x',
            ],
        ] {
            let mut b = (body.len() as u32).to_be_bytes().to_vec();
            b.extend_from_slice(body);
            let mut r = Reader::default();
            assert_eq!(r.push(&b, &mut out), Err(FrameError::Malformed), "{body:?}");
        }
        // Text that is not UTF-8.
        let mut b = Vec::new();
        Frame::Msg {
            id: 1,
            sent_ms: 1,
            scope: Scope::Direct,
            text: "ab".into(),
        }
        .encode(&mut b);
        let n = b.len();
        b[n - 1] = 0xff;
        let mut r = Reader::default();
        assert_eq!(r.push(&b, &mut out), Err(FrameError::Malformed));
        assert!(out.is_empty());
    }
}
