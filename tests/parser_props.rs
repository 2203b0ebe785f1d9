//! Property tests for the parsers that read from the network outside SCTP, on stable and in plain `cargo test`:
//! the discovery datagram (`discovery::Datagram`), the roster messages (`registry::wire::{ClientMsg,
//! ServerMsg}`), the chat frames (`peer::frame::{Frame, Reader}`) and the saved roster read from disk
//! (`registry::saved`) and key files (`identity`). For each:
//!
//! - every value the strategies generate encodes and parses back to itself;
//! - arbitrary bytes (and bytes that start like a real message, to get past the first checks) never panic,
//!   and what parses re-encodes consistently (the checks shared with the fuzz targets,
//!   `fuzz/src/parser_checks.rs`);
//! - every truncation of a valid encoding is an error (for the stream `Reader`: no frame yet);
//! - every single-bit flip of a valid encoding never panics, and never parses back to the original value
//!   (the layouts have no ignored bits, except the discovery header's reserved bytes);
//! - the `Reader` yields exactly the encoded frames however the stream is chunked, holds at most one frame,
//!   and refuses an oversized length prefix before buffering its body;
//! - encoders cap over-long strings at a char boundary, so what they send always parses.
//!
//! Case counts are modest so that the file runs in seconds in a debug build; `PROPTEST_CASES` raises them.
//! Runs are deterministic (fixed RNG), and failures are not persisted to files.

use std::net::{IpAddr, SocketAddr};

use multiproto::codec::Malformed;
use multiproto::discovery::{
    Auth, DaemonInfo, Datagram, DiscoveryError, Hello, MAGIC, MAX_DATAGRAM, VERSION,
};
use multiproto::group::{ChannelName, MAX_CHANNELS_PER_CLIENT, Scope};
use multiproto::nick::Nick;
use multiproto::peer::frame::{Frame, FrameError, MAX_FRAME, MAX_TEXT, Reader};
use multiproto::registry::wire::{
    ClientMsg, Entry, Extra, MAX_AWAY, MAX_ENTRY_LEN, MAX_REASON, Register, RegisterResult,
    Request, ServerMsg, Status,
};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};

// Shared with the fuzz crate, so `cargo test` applies the fuzz targets' checks too.
#[path = "../fuzz/src/parser_checks.rs"]
mod parser_checks;

use parser_checks::{MAX_REGISTER_NICK, utf8_prefix};

#[path = "common/props.rs"]
mod props;

use props::{around, bytes, fuzz_seeds as seeds, utf8};

// The fixed RNG of `runner` is its own; the `proptest!` blocks need the seeded config for determinism.
fn config(cases: u32) -> ProptestConfig {
    props::config(cases, 0x6d70_726f)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        config(cases),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

/// Each single-bit flip of `enc`, as (byte index, flipped copy).
fn bit_flips(enc: &[u8]) -> impl Iterator<Item = (usize, Vec<u8>)> + '_ {
    (0..enc.len() * 8).map(move |bit| {
        let mut bad = enc.to_vec();
        bad[bit / 8] ^= 1 << (bit % 8);
        (bit / 8, bad)
    })
}

// ---------------------------------------------------------------------------------------------------------
// Strategies. Values are built through the public API only; the ranges are what the parsers accept (nonzero
// daemon ports, page < pages, from < to, strings within the length fields).

fn nick() -> impl Strategy<Value = Nick> {
    prop_oneof![
        "[A-Za-z0-9._-]{1,32}".prop_map(|s| Nick::new(&s).unwrap()),
        // Unicode ones, up to the byte bound (21 characters of up to 3 bytes).
        "[A-Za-z0-9._\\-éßДжαλ李た김]{1,21}".prop_map(|s| Nick::new(&s).unwrap()),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn daemon_info() -> impl Strategy<Value = DaemonInfo> {
    (
        any::<u64>(),
        1..=u16::MAX,
        1..=u16::MAX,
        prop::option::of(ip()),
        any::<[u8; 32]>(),
        any::<bool>(),
    )
        .prop_map(
            |(instance, sctp_udp_port, sctp_port, addr, key, needs_secret)| DaemonInfo {
                instance,
                sctp_udp_port,
                sctp_port,
                addr,
                key: multiproto::identity::PublicKey(key),
                needs_secret,
            },
        )
}

fn datagram() -> impl Strategy<Value = Datagram> {
    prop_oneof![
        (any::<u64>(), any::<u16>()).prop_map(|(instance, sctp_udp_port)| Datagram::Hello(Hello {
            instance,
            sctp_udp_port,
        })),
        (any::<u64>(), daemon_info()).prop_map(|(to, daemon)| Datagram::Welcome { to, daemon }),
        daemon_info().prop_map(Datagram::Announce),
    ]
}

fn register() -> impl Strategy<Value = Register> {
    (
        any::<u8>(),
        any::<u64>(),
        utf8(MAX_REGISTER_NICK, 80),
        any::<u16>(),
        prop::option::of(ip()),
    )
        .prop_map(|(flags, instance, nick, chat_port, chat_ip)| Register {
            flags,
            instance,
            nick,
            chat_port,
            chat_ip,
        })
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        4 => register().prop_map(ClientMsg::Register),
        1 => Just(ClientMsg::Resync),
        1 => nick().prop_map(|nick| ClientMsg::KeyQuery { nick }),
        1 => channel().prop_map(|channel| ClientMsg::Join { channel }),
        1 => channel().prop_map(|channel| ClientMsg::Part { channel }),
        1 => prop::option::of(utf8(MAX_AWAY, 60)).prop_map(|message| ClientMsg::Away { message }),
        1 => utf8(255, 80).prop_map(|nick| ClientMsg::Rename { nick }),
    ]
}

fn channel() -> impl Strategy<Value = ChannelName> {
    "#[a-zA-Z0-9._-]{1,31}".prop_map(|c| ChannelName::new(&c).unwrap())
}

fn register_result() -> impl Strategy<Value = RegisterResult> {
    prop::sample::select(vec![
        RegisterResult::Ok,
        RegisterResult::NickTaken,
        RegisterResult::InvalidNick,
        RegisterResult::Full,
        RegisterResult::BadRequest,
        RegisterResult::NickOwned,
    ])
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        nick(),
        any::<u64>(),
        prop::sample::select(vec![Status::Offline, Status::Online, Status::Removed]),
        any::<u64>(),
        ip(),
        any::<u16>(),
        any::<u32>(),
        extra(),
    )
        .prop_map(
            |(nick, instance, status, since_ms, ip, port, flaps, extra)| Entry {
                nick,
                instance,
                status,
                since_ms,
                // `SocketAddr::new` leaves an IPv6 address's flow info and scope id at 0, as the wire has neither.
                chat: SocketAddr::new(ip, port),
                flaps,
                extra,
            },
        )
}

/// An entry's optional fields: none (most entries), or channels (in order, each once, up to the cap), an
/// away message up to its bound, a rename.
fn extra() -> impl Strategy<Value = Option<Box<Extra>>> {
    let channels = proptest::collection::btree_set(channel(), 0..=MAX_CHANNELS_PER_CLIENT)
        .prop_map(|s| s.into_iter().collect::<Vec<_>>());
    let away = prop::option::of("\\PC{0,40}".prop_map(|a| utf8_prefix(&a, MAX_AWAY).to_string()));
    prop_oneof![
        2 => Just(None),
        1 => (channels, away, prop::option::of(nick())).prop_map(|(channels, away, renamed_to)| {
            let x = Extra { channels, away, renamed_to };
            (!x.is_empty()).then(|| Box::new(x))
        }),
    ]
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    prop_oneof![
        (
            prop::sample::select(vec![
                Request::Join,
                Request::Part,
                Request::Away,
                Request::Rename
            ]),
            any::<bool>(),
            utf8(MAX_REASON, 300)
        )
            .prop_map(|(request, ok, reason)| ServerMsg::Answer {
                request,
                ok,
                reason
            }),
        (
            register_result(),
            any::<u64>(),
            any::<u32>(),
            utf8(MAX_REASON, 300)
        )
            .prop_map(
                |(result, daemon, retry_after_ms, reason)| ServerMsg::Registered {
                    result,
                    daemon,
                    retry_after_ms,
                    reason,
                }
            ),
        (
            any::<u64>(),
            (1..=u16::MAX).prop_flat_map(|pages| (0..pages, Just(pages))),
            prop::collection::vec(entry(), 0..6)
        )
            .prop_map(|(version, (page, pages), entries)| ServerMsg::Snapshot {
                version,
                page,
                pages,
                entries,
            }),
        (
            (0..u64::MAX).prop_flat_map(|from| (Just(from), from + 1..=u64::MAX)),
            prop::collection::vec(entry(), 0..6)
        )
            .prop_map(|((from, to), entries)| ServerMsg::Delta { from, to, entries }),
        (any::<[u8; 32]>(), any::<[u8; 16]>())
            .prop_map(|(key, mac_key)| ServerMsg::BroadcastKeys { key, mac_key }),
        (
            any::<u32>(),
            any::<[u8; 32]>(),
            prop::collection::vec(any::<u8>(), multiproto::secure::ticket::TICKET_LEN)
        )
            .prop_map(|(lifetime_s, secret, t)| ServerMsg::Ticket {
                lifetime_s,
                secret,
                ticket: t.try_into().expect("TICKET_LEN bytes"),
            }),
        (nick(), prop::option::of(any::<[u8; 32]>())).prop_map(|(nick, key)| ServerMsg::Key {
            nick,
            key: key.map(multiproto::identity::PublicKey)
        }),
    ]
}

/// Where a message is said: one-to-one (most), everyone, a channel.
fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        2 => Just(Scope::Direct),
        1 => Just(Scope::Everyone),
        1 => channel().prop_map(Scope::Channel),
    ]
}

/// Frames with short texts (cheap to flip bit by bit).
fn small_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (nick(), any::<u64>()).prop_map(|(nick, instance)| Frame::Hello { nick, instance }),
        (any::<u64>(), any::<u64>(), scope(), utf8(MAX_TEXT, 40)).prop_map(
            |(id, sent_ms, scope, text)| Frame::Msg {
                id,
                sent_ms,
                scope,
                text
            }
        ),
        any::<u64>().prop_map(|id| Frame::Ack { id }),
    ]
}

/// Any frame, including texts at or near `MAX_TEXT` bytes.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        3 => small_frame(),
        1 => (any::<u64>(), any::<u64>(), scope(), around(MAX_TEXT)).prop_map(|(id, sent_ms, scope, text)| {
            Frame::Msg {
                id,
                sent_ms,
                scope,
                text: utf8_prefix(&text, MAX_TEXT).to_owned(),
            }
        }),
    ]
}

fn encode_frame(f: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    f.encode(&mut out);
    out
}

// ---------------------------------------------------------------------------------------------------------
// Discovery datagrams.

proptest! {
    #![proptest_config(config(256))]

    /// Every datagram round-trips, fits `MAX_DATAGRAM`, and still parses with trailing bytes after it (room
    /// for fields a later version adds).
    #[test]
    fn discovery_round_trips(d in datagram(), trailing in bytes(16), mac in any::<bool>()) {
        let key = mac.then_some(&parser_checks::DISCOVERY_MAC_KEY);
        let mut enc = Vec::new();
        d.write(&mut enc, key);
        prop_assert!(enc.len() <= MAX_DATAGRAM);
        let auth = if mac { Auth::Valid } else { Auth::Open };
        prop_assert_eq!(Datagram::parse(&enc, key), Ok((d, auth)));
        prop_assert_eq!(parser_checks::discovery(&enc), Ok(d));
        if !mac {
            // Trailing bytes (fields a later version adds) are read past; after a MAC they would be the MAC.
            enc.extend_from_slice(&trailing);
            prop_assert_eq!(parser_checks::discovery(&enc), Ok(d));
        }
    }

    /// Arbitrary bytes, with or without a valid header in front, never panic, and the error is the one the
    /// header calls for.
    #[test]
    fn discovery_arbitrary_bytes(tail in bytes(64), header in 0..3u8) {
        let mut data = Vec::new();
        if header > 0 {
            data.extend_from_slice(&MAGIC);
            data.push(VERSION);
            // A type byte most of the time (1 HELLO, 2 WELCOME, 3 ANNOUNCE), then the rest as it comes.
            if header == 2 {
                data.push(1 + tail.first().copied().unwrap_or(0) % 3);
            }
        }
        data.extend_from_slice(&tail);
        let r = parser_checks::discovery(&data);
        if header == 0 && !data.starts_with(&MAGIC) {
            prop_assert_eq!(r, Err(DiscoveryError::Foreign));
        }
    }

    /// Every proper prefix of a datagram is refused: foreign without the whole magic, malformed after it.
    #[test]
    fn discovery_truncations_are_errors(d in datagram()) {
        let mut enc = Vec::new();
        d.write(&mut enc, None);
        for cut in 0..enc.len() {
            let want = if cut < 4 { DiscoveryError::Foreign } else { DiscoveryError::Malformed };
            prop_assert_eq!(parser_checks::discovery(&enc[..cut]), Err(want), "cut at {}", cut);
        }
    }

    /// A single flipped bit never panics, and changes the outcome unless it is in the reserved byte; under
    /// a MAC, it also fails the MAC.
    #[test]
    fn discovery_bit_flips(d in datagram(), mac in any::<bool>()) {
        let key = mac.then_some(&parser_checks::DISCOVERY_MAC_KEY);
        let mut enc = Vec::new();
        d.write(&mut enc, key);
        for (at, bad) in bit_flips(&enc) {
            let r = parser_checks::discovery(&bad);
            if at == 7 && !mac {
                prop_assert_eq!(r, Ok(d), "reserved byte {} is not ignored", at);
            } else if !mac {
                prop_assert_ne!(r, Ok(d), "flip in byte {} went unnoticed", at);
            } else {
                let verified = Datagram::parse(&bad, key).is_ok_and(|(_, a)| a == Auth::Valid);
                prop_assert!(!verified, "flip in byte {} kept the MAC valid", at);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Roster messages.

proptest! {
    #![proptest_config(config(256))]

    /// Client messages round-trip, and a byte more is refused (messages are exact).
    #[test]
    fn client_msgs_round_trip(m in client_msg()) {
        let mut enc = m.encode();
        prop_assert_eq!(ClientMsg::parse(&enc), Ok(m.clone()));
        prop_assert_eq!(parser_checks::roster(&enc).0, Ok(m));
        enc.push(0);
        prop_assert_eq!(ClientMsg::parse(&enc), Err(Malformed("trailing bytes")));
    }

    /// Server messages round-trip, entries stay within `MAX_ENTRY_LEN`, and a byte more is refused.
    #[test]
    fn server_msgs_round_trip(m in server_msg()) {
        let mut enc = m.encode();
        prop_assert_eq!(ServerMsg::parse(&enc), Ok(m.clone()));
        if let ServerMsg::Snapshot { entries, .. } | ServerMsg::Delta { entries, .. } = &m {
            let header = if matches!(m, ServerMsg::Snapshot { .. }) { 15 } else { 19 };
            prop_assert!(enc.len() <= header + entries.len() * MAX_ENTRY_LEN);
        }
        prop_assert_eq!(parser_checks::roster(&enc).1, Ok(m));
        enc.push(0);
        prop_assert_eq!(ServerMsg::parse(&enc), Err(Malformed("trailing bytes")));
    }

    /// Arbitrary bytes never panic either parser, whether the type byte is a real one or not; an unknown
    /// type is refused as such.
    #[test]
    fn roster_arbitrary_bytes(
        kind in prop_oneof![prop::sample::select(vec![1u8, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22]), any::<u8>()],
        tail in bytes(200),
    ) {
        let mut data = vec![kind];
        data.extend_from_slice(&tail);
        let (c, s) = parser_checks::roster(&data);
        if ![1, 2, 3, 4, 5, 6, 7].contains(&kind) {
            prop_assert_eq!(c, Err(Malformed("message type")));
        }
        if ![16, 17, 18, 19, 20, 21, 22].contains(&kind) {
            prop_assert_eq!(s, Err(Malformed("message type")));
        }
    }

    /// Every proper prefix of a message is refused by its parser.
    #[test]
    fn roster_truncations_are_errors(c in client_msg(), s in server_msg()) {
        let enc = c.encode();
        for cut in 0..enc.len() {
            prop_assert!(parser_checks::roster_parse(&enc[..cut]).0.is_err(), "client cut at {}", cut);
        }
        let enc = s.encode();
        for cut in 0..enc.len() {
            prop_assert!(parser_checks::roster_parse(&enc[..cut]).1.is_err(), "server cut at {}", cut);
        }
    }

    /// A single flipped bit never panics and never parses back to the original message.
    #[test]
    fn roster_bit_flips(c in client_msg(), s in server_msg()) {
        for (at, bad) in bit_flips(&c.encode()) {
            prop_assert_ne!(parser_checks::roster_parse(&bad).0, Ok(c.clone()), "client byte {}", at);
        }
        for (at, bad) in bit_flips(&s.encode()) {
            prop_assert_ne!(parser_checks::roster_parse(&bad).1, Ok(s.clone()), "server byte {}", at);
        }
    }

    /// Over-long strings are cut at a char boundary, so the message still parses (regression: they were cut
    /// at a byte count, possibly inside a character, and then refused as invalid UTF-8).
    #[test]
    fn roster_long_strings_are_cut_on_char_boundaries(
        nick in around(MAX_REGISTER_NICK),
        reason in around(MAX_REASON),
    ) {
        let reg = |nick: &str| ClientMsg::Register(Register {
            flags: 0,
            instance: 1,
            nick: nick.to_owned(),
            chat_port: 2,
            chat_ip: None,
        });
        prop_assert_eq!(
            ClientMsg::parse(&reg(&nick).encode()),
            Ok(reg(utf8_prefix(&nick, MAX_REGISTER_NICK)))
        );
        let refusal = |reason: &str| ServerMsg::Registered {
            result: RegisterResult::InvalidNick,
            daemon: 3,
            retry_after_ms: 0,
            reason: reason.to_owned(),
        };
        prop_assert_eq!(
            ServerMsg::parse(&refusal(&reason).encode()),
            Ok(refusal(utf8_prefix(&reason, MAX_REASON)))
        );
    }
}

#[test]
fn roster_reason_cut_inside_a_char_regression() {
    // 1023 ASCII bytes then '€' (3 bytes): a cut at exactly 1024 bytes falls inside it.
    let reason = format!("{}€", "r".repeat(MAX_REASON - 1));
    let m = ServerMsg::Registered {
        result: RegisterResult::InvalidNick,
        daemon: 1,
        retry_after_ms: 0,
        reason,
    };
    let Ok(ServerMsg::Registered { reason, .. }) = ServerMsg::parse(&m.encode()) else {
        panic!("the encoded refusal does not parse");
    };
    assert_eq!(reason, "r".repeat(MAX_REASON - 1));
}

// ---------------------------------------------------------------------------------------------------------
// Chat frames and the stream reader.

proptest! {
    #![proptest_config(config(256))]

    /// Frames round-trip: the prefix is the body's length, the body is within `MAX_FRAME`, and a reader fed
    /// the encoding yields exactly the frame and holds nothing after it.
    #[test]
    fn frames_round_trip(f in frame()) {
        let enc = encode_frame(&f);
        let body = &enc[4..];
        prop_assert_eq!(&enc[..4], &(body.len() as u32).to_be_bytes()[..]);
        prop_assert!(!body.is_empty() && body.len() <= MAX_FRAME);
        prop_assert_eq!(parser_checks::chat_body(body), Ok(f.clone()));
        let mut r = Reader::default();
        let mut out = Vec::new();
        prop_assert_eq!(r.push(&enc, &mut out), Ok(()));
        prop_assert_eq!(out, vec![f]);
        prop_assert!(!r.is_partial());
    }

    /// Arbitrary bytes, as a body, as a stream, and behind a correct length prefix, never panic; behind a
    /// correct prefix the reader's verdict is the body parser's.
    #[test]
    fn frames_arbitrary_bytes(
        kind in prop_oneof![prop::sample::select(vec![1u8, 2, 3]), any::<u8>()],
        tail in bytes(120),
        sizes in prop::collection::vec(0..16usize, 0..4),
    ) {
        let mut body = vec![kind];
        body.extend_from_slice(&tail);
        parser_checks::chat(&body);
        let mut stream = (body.len() as u32).to_be_bytes().to_vec();
        stream.extend_from_slice(&body);
        let got = parser_checks::chat_stream(&stream, &sizes);
        match Frame::parse(&body) {
            Ok(f) => prop_assert_eq!(got, parser_checks::Outcome { frames: vec![f], result: Ok(()), buffered: 0 }),
            Err(e) => prop_assert_eq!(got.result, Err(e)),
        }
    }

    /// Every proper prefix of a frame: the body parser refuses it, and the reader takes it without error,
    /// waiting for the rest. A single flipped bit never panics the body parser or the reader, and never gives
    /// the original frame back (the framing's properties, shared with the transfer frames' tests).
    #[test]
    fn frame_truncations_and_bit_flips(f in small_frame(), sizes in prop::collection::vec(1..8usize, 1..3)) {
        let enc = encode_frame(&f);
        for cut in 5..enc.len() {
            prop_assert!(parser_checks::chat_body(&enc[4..cut]).is_err(), "body cut at {}", cut);
        }
        parser_checks::framing_properties(&f, &enc, &sizes, parser_checks::chat_body);
    }

    /// A stream of frames cut into arbitrary chunks (including empty ones) yields exactly those frames in
    /// order, with the reader never holding more than one frame, and nothing left at the end.
    #[test]
    fn reader_reassembles_any_chunking(
        frames in prop::collection::vec(frame(), 1..6),
        sizes in prop::collection::vec(0..300usize, 1..8),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(encode_frame).collect();
        let got = parser_checks::chat_stream(&stream, &sizes);
        prop_assert_eq!(got, parser_checks::Outcome { frames, result: Ok(()), buffered: 0 });
    }

    /// A length prefix over `MAX_FRAME` is refused as soon as its fourth byte arrives, before any of the body
    /// is buffered, even when the body is there; frames before it are still delivered.
    #[test]
    fn reader_refuses_oversized_prefix(
        before in prop::collection::vec(small_frame(), 0..3),
        len in (MAX_FRAME as u32 + 1)..=u32::MAX,
        body in bytes(64),
    ) {
        let stream: Vec<u8> = before.iter().flat_map(encode_frame).collect();
        parser_checks::oversized_prefix_refused(before, stream, len, &body, parser_checks::chat_body);
    }

    /// Over-long texts are cut at a char boundary, so the frame still parses (regression: they were cut at
    /// `MAX_TEXT` bytes, possibly inside a character, and the peer refused the frame as invalid UTF-8).
    #[test]
    fn frame_long_texts_are_cut_on_char_boundaries(text in around(MAX_TEXT)) {
        let msg = |text: &str| Frame::Msg { id: 1, sent_ms: 2, scope: Scope::Everyone, text: text.to_owned() };
        let enc = encode_frame(&msg(&text));
        prop_assert_eq!(Frame::parse(&enc[4..]), Ok(msg(utf8_prefix(&text, MAX_TEXT))));
    }
}

#[test]
fn reader_length_bounds() {
    let mut out = Vec::new();
    // Zero is refused at once.
    let mut r = Reader::default();
    assert_eq!(
        r.push(&[0, 0, 0, 0, 2], &mut out),
        Err(FrameError::Malformed)
    );
    // MAX_FRAME itself is allowed: the reader waits for the whole body (then refuses it, as no frame is that
    // long), holding one maximal frame and no more.
    let mut r = Reader::default();
    let mut stream = (MAX_FRAME as u32).to_be_bytes().to_vec();
    stream.resize(4 + MAX_FRAME, 0);
    stream[4] = 2;
    assert_eq!(r.push(&stream[..4 + MAX_FRAME - 1], &mut out), Ok(()));
    assert_eq!(r.buffered(), 4 + MAX_FRAME - 1);
    assert_eq!(
        r.push(&stream[4 + MAX_FRAME - 1..], &mut out),
        Err(FrameError::Malformed)
    );
    assert_eq!(r.buffered(), 0, "a failed stream is discarded");
    // One more is refused once the prefix is complete, and nothing is kept.
    let mut r = Reader::default();
    assert_eq!(
        r.push(&(MAX_FRAME as u32 + 1).to_be_bytes(), &mut out),
        Err(FrameError::Oversized)
    );
    assert_eq!(r.buffered(), 0);
    assert!(out.is_empty());
}

#[test]
fn frame_text_cut_inside_a_char_regression() {
    // MAX_TEXT - 1 ASCII bytes then 'é' (2 bytes): a cut at exactly MAX_TEXT bytes falls inside it.
    let text = format!("{}é", "t".repeat(MAX_TEXT - 1));
    let mut enc = Vec::new();
    Frame::Msg {
        id: 1,
        sent_ms: 1,
        scope: Scope::Direct,
        text,
    }
    .encode(&mut enc);
    assert_eq!(
        Frame::parse(&enc[4..]),
        Ok(Frame::Msg {
            id: 1,
            sent_ms: 1,
            scope: Scope::Direct,
            text: "t".repeat(MAX_TEXT - 1),
        })
    );
}

/// The fuzz targets' entry points on a few hand-made inputs, plus the same random-input run the fuzzers do
/// (through a `TestRunner`, so it stays deterministic), so a change that breaks them fails `cargo test`.
#[test]
fn fuzz_entry_points_on_random_inputs() {
    let mut hello = Vec::new();
    Datagram::Hello(Hello {
        instance: 1,
        sctp_udp_port: 3,
    })
    .write(&mut hello, None);
    assert!(parser_checks::discovery(&hello).is_ok());
    let reg = ClientMsg::Resync.encode();
    assert!(parser_checks::roster(&reg).0.is_ok());
    let mut chat = vec![2, 3, 5];
    chat.extend(encode_frame(&Frame::Ack { id: 9 }));
    chat.extend(encode_frame(&Frame::Ack { id: 10 }));
    let (sizes, stream) = parser_checks::split_input(&chat);
    assert_eq!(sizes, vec![3, 5]);
    assert_eq!(parser_checks::chat_stream(stream, &sizes).frames.len(), 2);
    parser_checks::chat(&chat);

    runner(512)
        .run(&bytes(300), |data| {
            let _ = parser_checks::discovery(&data);
            let _ = parser_checks::roster(&data);
            parser_checks::chat(&data);
            Ok(())
        })
        .unwrap();
}

/// The fuzz seeds (`fuzz/seeds/{discovery,known_keys,roster_wire,chat_frame}`) are what their names say: valid messages,
/// so the fuzzers start from inputs that get past every check. Catches seeds left stale by a layout change.
#[test]
fn fuzz_seeds_are_valid() {
    for (name, b) in seeds("discovery") {
        assert!(parser_checks::discovery(&b).is_ok(), "discovery/{name}");
    }
    for (name, b) in seeds("known_keys") {
        let k = multiproto::known_keys::KnownKeys::parse(&b);
        assert!(k.is_ok_and(|k| !k.is_empty()), "known_keys/{name}");
        parser_checks::known_keys(&b);
    }
    for (name, b) in seeds("roster_wire") {
        let (c, s) = parser_checks::roster(&b);
        assert!(c.is_ok() || s.is_ok(), "roster_wire/{name}");
    }
    for (name, b) in seeds("chat_frame") {
        // Either a frame body on its own, or a chunked stream of whole frames.
        let ok = parser_checks::frames_seed(&b, parser_checks::chat_body);
        assert!(ok, "chat_frame/{name}");
        parser_checks::chat(&b);
    }
}

fn saved_entry() -> impl Strategy<Value = Entry> {
    (
        "[a-z][a-z0-9._-]{0,31}",
        any::<u64>(),
        prop_oneof![Just(Status::Online), Just(Status::Offline)],
        any::<u64>(),
        any::<[u8; 4]>(),
        any::<u16>(),
        any::<u32>(),
    )
        .prop_map(|(n, instance, status, since_ms, ip, port, flaps)| Entry {
            nick: Nick::new(&n).unwrap(),
            instance,
            status,
            since_ms,
            chat: SocketAddr::from((ip, port)),
            flaps,
            extra: None,
        })
}

proptest! {
    #![proptest_config(config(64))]

    /// A saved roster loads back as it was (first of each nickname kept), and every cut or flipped image is
    /// refused or loads something consistent, never panics.
    #[test]
    fn saved_roster_round_trips_and_survives_damage(
        entries in proptest::collection::vec((saved_entry(), prop::option::of(any::<[u8; 32]>())), 0..20),
        bound in proptest::collection::vec(("[a-z][a-z0-9]{0,8}", any::<[u8; 32]>(), any::<u64>()), 0..5),
        version in any::<u64>(),
        saved in any::<u64>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        use multiproto::identity::PublicKey;
        use multiproto::registry::saved::{Binding, Image, Record};
        let mut unique = std::collections::HashSet::new();
        let records: Vec<Record> = entries
            .into_iter()
            .filter(|(e, _)| unique.insert(e.nick))
            .enumerate()
            // Files from before the per-host caps have no host; both kinds load back as they were.
            .map(|(i, (entry, key))| { let host = (i % 2 == 0).then(|| entry.chat.ip()); Record { entry, key: key.map(PublicKey), host } })
            .collect();
        let bindings: Vec<Binding> = bound
            .into_iter()
            .map(|(n, k, t)| Binding { nick: Nick::new(&format!("b-{n}")).unwrap(), key: PublicKey(k), last_unix_ms: t })
            .filter(|b| unique.insert(b.nick))
            .collect();
        let img = Image { records, bindings, version, saved_unix_ms: saved };
        let image = multiproto::registry::saved::encode(&img);
        let d = multiproto::registry::saved::decode(&image).unwrap();
        prop_assert_eq!(&d.image, &img);
        prop_assert_eq!(d.skipped, 0);
        parser_checks::saved_roster(&image);
        parser_checks::saved_roster(&image[..cut.index(image.len())]);
        let mut flipped = image.clone();
        let i = flip.index(flipped.len());
        flipped[i] ^= 1 << (i % 8);
        parser_checks::saved_roster(&flipped);
    }

    #[test]
    fn saved_roster_arbitrary_bytes(b in bytes(256)) {
        parser_checks::saved_roster(&b);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Key files: a written one reads back; cut, flipped or arbitrary bytes never panic.
    #[test]
    fn key_files_round_trip_and_survive_damage(
        secret in any::<[u8; 32]>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        junk in bytes(300),
    ) {
        let id = multiproto::identity::Identity::from_secret(secret);
        let file = id.to_file().into_bytes();
        parser_checks::key_file(&file);
        parser_checks::key_file(&file[..cut.index(file.len())]);
        let mut flipped = file.clone();
        let i = flip.index(flipped.len());
        flipped[i] ^= 1 << (i % 8);
        parser_checks::key_file(&flipped);
        parser_checks::key_file(&junk);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Remembered-key files and secured frames: arbitrary bytes never panic and meet the fuzz targets' checks.
    #[test]
    fn known_keys_and_secured_frames_survive_arbitrary_bytes(b in bytes(300)) {
        parser_checks::known_keys(&b);
        parser_checks::secured(&b);
    }

    /// History search words: arbitrary bytes, and words of letters, make queries that run and find.
    #[test]
    fn history_search_words_survive_arbitrary_bytes(b in bytes(120), w in "[a-zé ]{0,30}") {
        parser_checks::history_search(&b);
        parser_checks::history_search(w.as_bytes());
    }

    /// Each kind byte followed by arbitrary bytes, so every branch of the secured checks is reached (a
    /// broadcast's body given its kind byte where it goes, so most of them parse).
    #[test]
    fn secured_frames_of_every_kind(kind in 0u8..8, psk in any::<bool>(), tail in bytes(200)) {
        let mut b = vec![if psk { kind | 0x80 } else { kind }];
        b.extend_from_slice(&tail);
        if b.len() > multiproto::secure::broadcast::HEAD_LEN && kind == multiproto::secure::kind::BROADCAST {
            b[multiproto::secure::broadcast::HEAD_LEN] = multiproto::secure::kind::BROADCAST_BODY;
        }
        parser_checks::secured(&b);
    }
}
