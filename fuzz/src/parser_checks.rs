//! Checks shared by the `discovery`, `roster_wire` and `chat_frame` fuzz targets and `tests/parser_props.rs`
//! (which includes this file with `#[path]`), so the fuzzers and `cargo test` hold the parsers to the same
//! rules. Each entry point takes arbitrary bytes and panics on any inconsistency:
//!
//! - [`discovery`]: `Datagram::parse` never panics, its error matches what the header says, and a datagram
//!   that parses is re-encoded by `Datagram::write` to the same bytes (bar the reserved bytes 6..8 and any
//!   trailing bytes, which the parser ignores by design), which parse back to the same value.
//! - [`roster`]: `ClientMsg::parse` and `ServerMsg::parse` never panic, and what parses re-encodes to exactly
//!   the input (the layout has no ignored bits); the encoders, given the input as an arbitrary string for the
//!   nickname / reason fields, produce messages that parse back (over-long strings cut at a char boundary).
//! - [`chat`]: `Frame::parse` on the bytes as a frame body, with the same exact re-encoding rule; then the
//!   bytes as a TCP stream into `Reader`, whole and in chunks, compared with an independent model decoder
//!   (same frames, same error, same bytes held), with the reader's buffer bounded after every push; and
//!   `Frame::encode` of a MSG with the input as text parses back. The stream model, the chunked feeding and
//!   the framing's properties ([`stream_of`], [`framing_properties`], [`oversized_prefix_refused`]) are generic
//!   over the frame type (`peer::frame::Body`): a file transfer's frames share the framing, and
//!   `transfer_checks` holds them to the same rules.
//! - [`key_file`]: `Identity::from_file` (a key file read from disk) never panics, refuses anything larger
//!   than `MAX_KEY_FILE`, and what it accepts writes back (`to_file`) to a file that reads back as the same key.
//! - [`saved_roster`]: `registry::saved::decode` (the daemon's `roster.json`, read from disk at start) never
//!   panics; what it accepts holds only valid, distinct nicknames and no removed entries, and re-encodes to an
//!   image that decodes back to the same roster.
//!
//! # `chat` input format
//!
//! ```text
//! byte 0        k = byte 0 % 8: how many chunk-size bytes follow (0: feed the stream one byte at a time)
//! k bytes       chunk sizes, used in a cycle (0 = push an empty slice)
//! the rest      the stream
//! ```

use std::net::IpAddr;

use multiproto::codec::Malformed;
use multiproto::discovery::{
    Auth, Datagram, DiscoveryError, MAC_LEN, MAGIC, MAX_DATAGRAM, VERSION,
};
use multiproto::nick::Nick;
use multiproto::peer::frame::{Body, Frame, FrameError, MAX_FRAME, MAX_TEXT, Reassembler};
use multiproto::registry::saved;
use multiproto::registry::wire::{
    ClientMsg, MAX_REASON, Register, RegisterResult, ServerMsg, Status,
};

/// Length of the discovery header (magic, version, type, reserved, instance), per `docs/PROTOCOL.md`.
pub const DISCOVERY_HEADER: usize = 16;
/// Longest nickname a REGISTER can carry: its length field is one byte.
pub const MAX_REGISTER_NICK: usize = 255;
/// Minimum encoded size of a roster entry, which the entry-count check relies on: nick 1+1, instance 8,
/// kind 1, `since` and flaps at least a byte each, IPv4 address 4, port 2.
const MIN_ENTRY_LEN: usize = 2 + 8 + 1 + 1 + 4 + 2 + 1;

/// The longest prefix of `s` that is at most `max` bytes and ends on a char boundary: what the encoders must
/// send for an over-long string. Written from `char_indices`, independently of the library's own helper.
pub fn utf8_prefix(s: &str, max: usize) -> &str {
    let end = s
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|&end| end <= max)
        .last()
        .unwrap_or(0);
    &s[..end]
}

// ---------------------------------------------------------------------------------------------------------
// Discovery.

/// The MAC key the discovery checks verify with (a network secret's, as a fuzzer cannot guess one: inputs
/// with a valid MAC come only from the seeds and their mutations of the body).
pub const DISCOVERY_MAC_KEY: [u8; 32] = [0x5a; 32];

/// `Datagram::parse` on arbitrary bytes: see the module documentation. Returns the parse result.
pub fn discovery(data: &[u8]) -> Result<Datagram, DiscoveryError> {
    let parsed = Datagram::parse(data, Some(&DISCOVERY_MAC_KEY));
    // The header alone decides these three outcomes (docs/PROTOCOL.md: foreign, another version, short).
    let expected = if data.len() < 4 || data[..4] != MAGIC {
        Some(DiscoveryError::Foreign)
    } else if data.len() < DISCOVERY_HEADER {
        Some(DiscoveryError::Malformed)
    } else if data[4] != VERSION {
        Some(DiscoveryError::Version(data[4]))
    } else {
        None
    };
    if let Some(e) = expected {
        assert_eq!(parsed, Err(e), "header says {e:?}");
        return parsed.map(|(d, _)| d);
    }
    let (d, auth) = match parsed {
        Ok(x) => x,
        Err(e) => {
            assert_eq!(e, DiscoveryError::Malformed);
            return Err(e);
        }
    };
    if let Datagram::Welcome { daemon, .. } | Datagram::Announce(daemon) = d {
        assert!(daemon.sctp_udp_port != 0 && daemon.sctp_port != 0);
    }
    // The MAC flag says whether the last bytes are a MAC; the fields are read from what comes before.
    let with_mac = data[6] & 1 != 0;
    assert_eq!(auth == Auth::Open, !with_mac);
    let body = if with_mac {
        &data[..data.len() - MAC_LEN]
    } else {
        data
    };
    let mut enc = Vec::new();
    d.write(&mut enc, None);
    assert!(enc.len() <= MAX_DATAGRAM);
    // The parser read exactly the fields the writer writes, from the same places: only the reserved byte
    // (written as zero, ignored when read) and trailing bytes (room for later fields) may differ.
    assert!(enc.len() <= body.len(), "parsed more than the input holds");
    assert_eq!(enc[..6], body[..6]);
    assert_eq!(enc[6], body[6] & !1, "flags other than the MAC's differ");
    assert_eq!(enc[7], 0);
    assert_eq!(enc[8..], body[8..enc.len()], "re-encoding differs");
    assert_eq!(Datagram::parse(&enc, None), Ok((d, Auth::Open)));
    // Authenticated under the key, the same datagram verifies; under another it does not.
    d.write(&mut enc, Some(&DISCOVERY_MAC_KEY));
    assert_eq!(
        Datagram::parse(&enc, Some(&DISCOVERY_MAC_KEY)),
        Ok((d, Auth::Valid))
    );
    assert_eq!(
        Datagram::parse(&enc, Some(&[0; 32])),
        Ok((d, Auth::Invalid))
    );
    Ok(d)
}

// ---------------------------------------------------------------------------------------------------------
// Roster messages.

/// The `roster_wire` fuzz target: [`roster_parse`] and [`roster_encoders`] on the same bytes. Returns both
/// parse results.
pub fn roster(data: &[u8]) -> (Result<ClientMsg, Malformed>, Result<ServerMsg, Malformed>) {
    roster_encoders(data);
    roster_parse(data)
}

/// Both roster parsers on arbitrary bytes: no panic, and what parses re-encodes to exactly the input (bar
/// reasons over `MAX_REASON`, which the encoder cuts). Returns both parse results.
pub fn roster_parse(data: &[u8]) -> (Result<ClientMsg, Malformed>, Result<ServerMsg, Malformed>) {
    let client = ClientMsg::parse(data);
    if let Ok(m) = &client {
        if let ClientMsg::Register(r) = m {
            assert!(r.nick.len() <= MAX_REGISTER_NICK);
        }
        assert_eq!(m.encode(), data, "ClientMsg re-encoding differs");
    }
    let server = ServerMsg::parse(data);
    if let Ok(m) = &server {
        match m {
            ServerMsg::Snapshot {
                page,
                pages,
                entries,
                ..
            } => {
                assert!(page < pages);
                assert!(entries.len() * MIN_ENTRY_LEN <= data.len());
            }
            ServerMsg::Delta { from, to, entries } => {
                assert!(from < to);
                assert!(entries.len() * MIN_ENTRY_LEN <= data.len());
            }
            ServerMsg::Registered { .. } => {}
            ServerMsg::Key { nick, .. } => assert!(Nick::new(nick.as_str()).is_ok()),
            ServerMsg::BroadcastKeys { .. } | ServerMsg::Ticket { .. } => {}
            ServerMsg::Answer { reason, .. } => assert!(reason.len() <= MAX_REASON),
        }
        let enc = m.encode();
        match m {
            // The parser takes reasons up to the u16 length field; the encoder sends at most MAX_REASON bytes.
            ServerMsg::Registered {
                result,
                daemon,
                retry_after_ms,
                reason,
            } if reason.len() > MAX_REASON => {
                let want = ServerMsg::Registered {
                    result: *result,
                    daemon: *daemon,
                    retry_after_ms: *retry_after_ms,
                    reason: utf8_prefix(reason, MAX_REASON).to_owned(),
                };
                assert_eq!(ServerMsg::parse(&enc), Ok(want));
            }
            // Entries' optional items of tags this version does not know are skipped (later versions add
            // fields that way): re-encoded, they are gone, and the message is otherwise the same.
            _ if enc != data => {
                assert!(enc.len() < data.len(), "ServerMsg re-encoding differs");
                assert_eq!(ServerMsg::parse(&enc).as_ref(), Ok(m));
            }
            _ => {}
        }
    }
    (client, server)
}

/// The roster encoders with `data` as an arbitrary string in the nickname and reason fields.
pub fn roster_encoders(data: &[u8]) {
    // The encoders with the input as an arbitrary string (lossy UTF-8 makes long strings of 3-byte U+FFFD,
    // so cuts inside a char are reached): what they send always parses, and is the string cut to the limit.
    let s = String::from_utf8_lossy(data);
    let reg = |nick: &str| {
        ClientMsg::Register(Register {
            flags: data.first().copied().unwrap_or(0),
            instance: s.len() as u64,
            nick: nick.to_owned(),
            chat_port: 1,
            chat_ip: Some(IpAddr::from([192, 0, 2, 1])),
        })
    };
    assert_eq!(
        ClientMsg::parse(&reg(&s).encode()),
        Ok(reg(utf8_prefix(&s, MAX_REGISTER_NICK)))
    );
    let registered = |reason: &str| ServerMsg::Registered {
        result: RegisterResult::InvalidNick,
        daemon: 7,
        retry_after_ms: 0,
        reason: reason.to_owned(),
    };
    assert_eq!(
        ServerMsg::parse(&registered(&s).encode()),
        Ok(registered(utf8_prefix(&s, MAX_REASON)))
    );
}

// ---------------------------------------------------------------------------------------------------------
// Chat frames.

/// `Frame::parse` on a frame body (type byte onwards): never panics, only `Malformed` (the length prefix is
/// the reader's business), and a frame that parses re-encodes to exactly the body behind its length prefix.
pub fn chat_body(body: &[u8]) -> Result<Frame, FrameError> {
    let parsed = Frame::parse(body);
    match &parsed {
        Ok(f) => {
            assert!(!body.is_empty() && body.len() <= MAX_FRAME);
            if let Frame::Msg { text, .. } = f {
                assert!(text.len() <= MAX_TEXT);
            }
            let mut enc = Vec::new();
            f.encode(&mut enc);
            assert_eq!(enc[..4], (body.len() as u32).to_be_bytes());
            assert_eq!(&enc[4..], body, "Frame re-encoding differs");
        }
        Err(e) => assert_eq!(*e, FrameError::Malformed),
    }
    parsed
}

/// What a byte stream decodes to: the frames completed, the error that stopped decoding (if any), and the
/// bytes the reader holds afterwards (a partial frame; none after an error, which discards the stream).
/// Chat frames unless told otherwise: a file transfer's frames share the framing and these stream checks
/// (`transfer_checks`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome<F = Frame> {
    /// Complete frames, in order.
    pub frames: Vec<F>,
    /// `Ok` if the stream was consumed without error.
    pub result: Result<(), FrameError>,
    /// `Reader::buffered()` at the end.
    pub buffered: usize,
}

/// An independent decoder for a whole stream, written from `docs/PROTOCOL.md` rather than from `Reader`:
/// length prefix, refuse 0 or over the frame type's largest body (`Body::MAX`: `MAX_FRAME` for chat) as soon
/// as the prefix is complete, else wait for the body and give it to `body` (the frame type's body checks).
pub fn model_of<F: Body>(stream: &[u8], body: fn(&[u8]) -> Result<F, FrameError>) -> Outcome<F> {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        let Some(prefix) = rest.get(..4) else {
            return Outcome {
                frames,
                result: Ok(()),
                buffered: rest.len(),
            };
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let refused = if len > F::MAX {
            Some(FrameError::Oversized)
        } else if len == 0 {
            Some(FrameError::Malformed)
        } else {
            None
        };
        if let Some(e) = refused {
            return Outcome {
                frames,
                result: Err(e),
                buffered: 0,
            };
        }
        let Some(body_bytes) = rest.get(4..4 + len) else {
            return Outcome {
                frames,
                result: Ok(()),
                buffered: rest.len(),
            };
        };
        match body(body_bytes) {
            Ok(f) => frames.push(f),
            Err(e) => {
                return Outcome {
                    frames,
                    result: Err(e),
                    buffered: 0,
                };
            }
        }
        at += 4 + len;
    }
}

/// Feeds `stream` to a fresh reader of `F` frames in chunks of `sizes` (cycled; all at once if `sizes` is
/// empty or all zero), stopping at the first error as a connection would. After every push the reader holds
/// at most one maximal frame and its prefix, and says it is partial exactly when it holds bytes.
pub fn feed_into<F: Body>(stream: &[u8], sizes: &[usize]) -> Outcome<F> {
    let mut r = Reassembler::<F>::default();
    let mut frames = Vec::new();
    let whole = [stream.len()];
    let sizes = if sizes.iter().all(|&s| s == 0) {
        &whole[..]
    } else {
        sizes
    };
    let mut rest = stream;
    let mut result = Ok(());
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        result = r.push(chunk, &mut frames);
        assert!(
            r.buffered() <= 4 + F::MAX,
            "reader holds {} bytes",
            r.buffered()
        );
        assert_eq!(r.is_partial(), r.buffered() > 0);
        if let Err(e) = result {
            // The error sticks: more input is refused with it, unread.
            assert_eq!(r.push(rest, &mut frames), Err(e));
            assert_eq!(r.buffered(), 0);
            break;
        }
    }
    Outcome {
        frames,
        result,
        buffered: r.buffered(),
    }
}

/// Properties of the framing that hold for every frame type carried with it (chat frames, a transfer's), for
/// the property tests of each: `enc` is the encoding of the one frame `f`, length prefix included, and
/// `body` the frame type's body checks. Every proper prefix leaves the reader waiting with no error and the
/// bytes held; every single-bit flip never panics, and neither the body parser (for flips in the body: a
/// flip in the prefix leaves the body as it was) nor the stream ever gives `f` back, the stream read in
/// `sizes` chunks. (The body parser's verdict on a proper prefix depends on the frame type, so it is the
/// caller's.)
pub fn framing_properties<F: Body + PartialEq + std::fmt::Debug>(
    f: &F,
    enc: &[u8],
    sizes: &[usize],
    body: fn(&[u8]) -> Result<F, FrameError>,
) {
    for cut in 0..enc.len() {
        let mut r = Reassembler::<F>::default();
        let mut out = Vec::new();
        assert_eq!(r.push(&enc[..cut], &mut out), Ok(()), "cut at {cut}");
        assert!(out.is_empty() && r.buffered() == cut && r.is_partial() == (cut > 0));
    }
    for bit in 0..enc.len() * 8 {
        let mut bad = enc.to_vec();
        bad[bit / 8] ^= 1 << (bit % 8);
        if bit >= 32 {
            assert_ne!(body(&bad[4..]).as_ref(), Ok(f), "bit {bit}");
        }
        let got = stream_of(&bad, sizes, body);
        assert!(!got.frames.contains(f), "bit {bit} flip went unnoticed");
    }
}

/// `before` (frames encoded as `stream`), then a length prefix `len` over the frame type's largest body, then
/// `tail`: the prefix is refused as soon as its fourth byte arrives, before any of the body is buffered, and
/// the frames before it are still delivered; the model agrees.
pub fn oversized_prefix_refused<F: Body + PartialEq + std::fmt::Debug>(
    before: Vec<F>,
    mut stream: Vec<u8>,
    len: u32,
    tail: &[u8],
    body: fn(&[u8]) -> Result<F, FrameError>,
) {
    assert!(len as usize > F::MAX);
    let at = stream.len();
    stream.extend_from_slice(&len.to_be_bytes());
    stream.extend_from_slice(tail);
    let mut r = Reassembler::<F>::default();
    let mut out = Vec::new();
    assert_eq!(r.push(&stream[..at + 3], &mut out), Ok(()));
    assert_eq!(out, before);
    assert_eq!(
        r.push(&stream[at + 3..], &mut out),
        Err(FrameError::Oversized)
    );
    assert_eq!(r.buffered(), 0);
    assert_eq!(out, before);
    let whole = stream_of(&stream, &[1], body);
    assert_eq!(
        whole,
        Outcome {
            frames: before,
            result: Err(FrameError::Oversized),
            buffered: 0
        }
    );
}

/// Whether a framed target's fuzz seed is what a seed should be: a frame body on its own, or (in the
/// `chat` input format) a chunked stream of whole frames, every one of which parses.
pub fn frames_seed<F: Body + PartialEq + std::fmt::Debug>(
    seed: &[u8],
    body: fn(&[u8]) -> Result<F, FrameError>,
) -> bool {
    let (sizes, stream) = split_input(seed);
    let out = stream_of(stream, &sizes, body);
    let stream_ok = out.result.is_ok() && out.buffered == 0 && !out.frames.is_empty();
    stream_ok || body(seed).is_ok()
}

/// Splits a `chat` fuzz input into chunk sizes and the stream (see the module documentation).
pub fn split_input(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let k = usize::from(first % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(k);
    let sizes = if k == 0 {
        vec![1]
    } else {
        sizes.iter().map(|&s| usize::from(s)).collect()
    };
    (sizes, stream)
}

/// Checks a stream of chat frames: [`stream_of`] with [`chat_body`].
pub fn chat_stream(stream: &[u8], sizes: &[usize]) -> Outcome {
    stream_of(stream, sizes, chat_body)
}

/// Checks a stream: the model (with `body`, the frame type's body checks), the reader fed whole and the
/// reader fed in `sizes` chunks all agree, and every frame they produce re-encodes to its bytes. Returns the
/// common outcome.
pub fn stream_of<F: Body + PartialEq + std::fmt::Debug>(
    stream: &[u8],
    sizes: &[usize],
    body: fn(&[u8]) -> Result<F, FrameError>,
) -> Outcome<F> {
    let want = model_of(stream, body);
    assert_eq!(
        feed_into::<F>(stream, &[]),
        want,
        "reader fed whole disagrees with the model"
    );
    assert_eq!(
        feed_into::<F>(stream, sizes),
        want,
        "reader fed in chunks of {sizes:?} disagrees"
    );
    want
}

/// The `chat_frame` fuzz target: the input as a frame body, as a chunked stream (format in the module
/// documentation), and as the text of a MSG to encode.
pub fn chat(data: &[u8]) {
    let _ = chat_body(data);
    let (sizes, stream) = split_input(data);
    chat_stream(stream, &sizes);

    let text = String::from_utf8_lossy(data);
    // The scope from the input's first byte, so the fuzzer reaches the scoped encodings too.
    let scope = match data.first().map(|b| b % 3) {
        Some(1) => multiproto::group::Scope::Everyone,
        Some(2) => multiproto::group::Scope::Channel(
            multiproto::group::ChannelName::new("#fuzz").unwrap_or_else(|_| unreachable!()),
        ),
        _ => multiproto::group::Scope::Direct,
    };
    let msg = |text: &str| Frame::Msg {
        id: data.len() as u64,
        sent_ms: 1,
        scope,
        text: text.to_owned(),
    };
    let mut enc = Vec::new();
    msg(&text).encode(&mut enc);
    assert_eq!(
        Frame::parse(&enc[4..]),
        Ok(msg(utf8_prefix(&text, MAX_TEXT)))
    );
}

/// The saved roster (`roster.json`): arbitrary bytes to `saved::decode`; see the module docs.
pub fn saved_roster(data: &[u8]) {
    let Ok(d) = saved::decode(data) else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    for e in d.image.records.iter().map(|r| &r.entry) {
        assert!(
            Nick::new(e.nick.as_str()).is_ok(),
            "invalid nickname accepted: {:?}",
            e.nick
        );
        assert!(
            seen.insert(e.nick),
            "duplicate nickname accepted: {:?}",
            e.nick
        );
        assert_ne!(e.status, Status::Removed, "a removed entry loaded");
    }
    for b in &d.image.bindings {
        assert!(
            seen.insert(b.nick),
            "a binding for a nickname listed already: {:?}",
            b.nick
        );
    }
    let again = saved::decode(&saved::encode(&d.image))
        .expect("a decoded roster re-encodes to an image that decodes");
    assert_eq!(again.image, d.image);
    assert_eq!(again.skipped, 0);
}

/// A key file: arbitrary bytes to `identity::Identity::from_file`; see the module docs.
pub fn key_file(data: &[u8]) {
    use multiproto::identity::{Identity, KeyFileError, MAX_KEY_FILE};
    match Identity::from_file(data) {
        Ok(id) => {
            assert!(data.len() <= MAX_KEY_FILE);
            let back = Identity::from_file(id.to_file().as_bytes())
                .expect("a written key file reads back");
            assert_eq!(back.public(), id.public());
            assert_eq!(back.secret_bytes(), id.secret_bytes());
        }
        Err(KeyFileError::TooLarge) => assert!(data.len() > MAX_KEY_FILE),
        Err(_) => {}
    }
}

/// Remembered keys (`known_daemons`, read from disk): arbitrary bytes to `KnownKeys::parse`. What parses
/// writes back to text that parses to the same list; a file over the size limit is refused.
pub fn known_keys(data: &[u8]) {
    use multiproto::known_keys::{KnownKeys, KnownKeysError, MAX_FILE, valid_scope};
    match KnownKeys::parse(data) {
        Ok(k) => {
            assert!(data.len() <= MAX_FILE);
            let back = KnownKeys::parse(k.to_text().as_bytes()).expect("a written list reads back");
            assert_eq!(back, k);
        }
        Err(KnownKeysError::TooLarge) => assert!(data.len() > MAX_FILE),
        Err(_) => {}
    }
    // Whatever the bytes, a scope taken from them is stored only if valid.
    if let Ok(s) = std::str::from_utf8(&data[..data.len().min(64)]) {
        let mut k = KnownKeys::default();
        let stored = k.set(s, multiproto::identity::PublicKey([1; 32]));
        assert_eq!(stored, valid_scope(s));
    }
}

/// A secured carrier's messages (handshake and sealed frames, from the network): arbitrary bytes as the
/// daemon's and a client's first input. `Frame::parse` is total and reads back what it parsed; a responder
/// fed the bytes as a first handshake message never completes a session from them, a session never opens
/// them as data, and an initiator never opens a session from them.
pub fn secured(data: &[u8]) {
    use multiproto::identity::Identity;
    use multiproto::secure::ticket::{TICKET_LEN, TicketKey};
    use multiproto::secure::{Context, Frame, Handshake, Initiator, Pattern, Step};
    let me = Identity::from_secret([3; 32]);
    let peer = Identity::from_secret([4; 32]);
    match Frame::parse(data) {
        Ok(Frame::Init {
            pattern,
            psk,
            noise,
        }) => {
            assert_eq!(Frame::init_kind(pattern, psk), data[0]);
            assert_eq!(noise, &data[1..]);
            let mut hs = Handshake::respond(Context::Roster, pattern, &me, None, [1; 32]);
            let mut out = vec![0u8; noise.len()];
            let read = hs.read(noise, &mut out);
            // XX's first message is a bare ephemeral key; IK's carries the initiator's key encrypted to
            // ours (a seed can be one): one that reads names its sender.
            if pattern == Pattern::Ik && read.is_ok() {
                assert!(
                    hs.remote().is_some(),
                    "an IK first message read without a sender key"
                );
            }
            assert!(!hs.is_finished(), "one message finished a handshake");
        }
        Ok(Frame::Resume { psk, ticket, noise }) => {
            assert_eq!(Frame::init_kind(Pattern::Resume, psk), data[0]);
            assert_eq!(ticket.len(), TICKET_LEN);
            assert_eq!([ticket, noise].concat(), &data[1..]);
            // A ticket is authenticated under the daemon's ticket key: bytes made up never open, whatever
            // the clock says.
            let key = TicketKey::derive(&me, None);
            assert!(
                key.open(ticket, 0).is_err(),
                "made-up bytes opened as a ticket"
            );
        }
        Ok(Frame::ResumeRefused) => assert_eq!(data.len(), 1),
        Ok(Frame::Handshake(b) | Frame::Data(b)) => assert_eq!(b, &data[1..]),
        Ok(Frame::Broadcast(t)) => {
            assert_eq!(t.to_vec(), data, "a broadcast frame writes back as read");
            assert_eq!(t.body, &data[multiproto::secure::broadcast::HEAD_LEN..]);
            assert_eq!(t.body[0], multiproto::secure::kind::BROADCAST_BODY);
        }
        Ok(Frame::Refuse(s)) => assert_eq!(s.as_bytes(), &data[1..]),
        Err(_) => {}
    }
    // A client's broadcast receiver: arbitrary bytes as a broadcast never pass it (no MAC key to guess),
    // never panic, and leave its counter where it was (a genuine first copy still opens after).
    let mut r = multiproto::secure::broadcast::Receiver::new([6; 32], [6; 16]);
    if let Ok(Frame::Broadcast(t)) = Frame::parse(data) {
        assert!(
            r.accept(&t).is_err(),
            "random bytes passed a broadcast's MAC"
        );
        assert!(r.open(&t).is_err(), "random bytes opened as a broadcast");
        let body = multiproto::secure::broadcast::Sealer::new([6; 32]).seal(t.body);
        let head = multiproto::secure::broadcast::Tagger::new([6; 16]).head(&body);
        let genuine = [&head[..], &body[..]].concat();
        let Ok(Frame::Broadcast(g)) = Frame::parse(&genuine) else {
            panic!("a broadcast the daemon makes does not parse");
        };
        assert_eq!(r.open(&g).as_deref(), Ok(t.body), "the genuine first copy");
    }
    // An initiator waiting for the responder's answer: the bytes never open a session.
    let (mut init, first) =
        Initiator::start(Context::Roster, &me, Some(&peer.public()), None, [2; 32]);
    assert!(first.is_ok());
    match init.handle(data, |_| true) {
        Step::Opened { .. } | Step::Data(_) => panic!("random bytes opened a session"),
        _ => assert!(!init.is_open()),
    }
}

/// History search words (typed by the user, or given to `mpc search`): arbitrary bytes, read as text, make
/// a query that FTS5 runs without an error (every word a quoted string, nothing FTS5 syntax), and find a
/// message made of exactly those words when they are plain letters.
pub fn history_search(data: &[u8]) {
    use multiproto::io::history::fts_query;
    let words = String::from_utf8_lossy(data);
    let Some(q) = fts_query(&words) else {
        assert!(
            words
                .split_whitespace()
                .all(|w| w.chars().all(char::is_control)),
            "words made no query: {words:?}"
        );
        return;
    };
    let c = rusqlite::Connection::open_in_memory().expect("an in-memory database");
    c.execute_batch("CREATE VIRTUAL TABLE t USING fts5(text)")
        .expect("an FTS5 table");
    c.execute("INSERT INTO t VALUES (?1)", [words.as_ref()])
        .expect("an insert");
    let found: i64 = c
        .query_row("SELECT count(*) FROM t WHERE t MATCH ?1", [&q], |r| {
            r.get(0)
        })
        .unwrap_or_else(|e| panic!("query {q:?} from {words:?} failed: {e}"));
    if words
        .split_whitespace()
        .all(|w| w.chars().all(char::is_alphanumeric))
    {
        assert_eq!(found, 1, "{words:?} did not find itself");
    }
}
